package io.nbffi;

import java.util.concurrent.Flow;

/**
 * A method that streams its reply as a {@link Flow.Publisher}: the runtime
 * subscribes, requests as many items as the caller's window holds, sends
 * each item as a chunk and requests the next one once it is sent, so the
 * publisher never runs ahead of the reader.  {@code onComplete} ends the
 * stream with success, {@code onError} with that error.  When the caller
 * gives up the subscription is cancelled.  The subscribing thread (a
 * poller, or the call's virtual thread) carries the chunks until the end.
 */
@FunctionalInterface
public interface PublisherMethod {
    Flow.Publisher<byte[]> call(Request request) throws Exception;
}
