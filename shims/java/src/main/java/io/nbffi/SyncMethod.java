package io.nbffi;

/**
 * A method that answers on the thread that called it.  Returning
 * {@code null} answers with an empty reply; throwing answers with an error
 * (see {@link ErrorReply}).
 */
@FunctionalInterface
public interface SyncMethod {
    byte[] call(Request request) throws Exception;
}
