package io.nbffi;

import java.util.concurrent.CompletionStage;

/**
 * A method that answers later: the call is answered when the returned
 * stage completes, from whatever thread completes it.  The calling thread
 * is free meanwhile.  The request's payload stays valid until then.
 */
@FunctionalInterface
public interface AsyncMethod {
    CompletionStage<byte[]> call(Request request) throws Exception;
}
