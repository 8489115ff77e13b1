package io.nbffi;

/**
 * A method that streams its reply: it sends chunks on the sink, then
 * returns (the stream ends with success) or throws (the stream ends with
 * that error, as a method's exception does; see {@link ErrorReply}).  It
 * holds its thread until then: a poller thread (cfg {@code threads=N}) or,
 * with {@code executor=virtual}, a virtual thread of its own.
 *
 * <pre>{@code
 * m.stream("count", (req, sink) -> {
 *     for (int i = 1; i <= 3; i++) {
 *         sink.send(Integer.toString(i).getBytes(UTF_8));
 *     }
 * });
 * }</pre>
 *
 * <p>Called with a plain {@code rt:call}, the method is not run: the call
 * fails with status {@link ErrorReply#NOT_A_STREAM}.
 */
@FunctionalInterface
public interface StreamMethod {
    void call(Request request, Sink sink) throws Exception;
}
