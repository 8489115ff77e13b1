package io.nbffi;

/**
 * A handler hosted by nbffi inside an nginx worker.
 *
 * <p>The runtime named in the cfg line {@code class=...} is loaded, built
 * with its public no-argument constructor, and asked once to
 * {@link #register} the methods it serves.  Each call from Lua then runs
 * the method registered under the call's name.  {@link #close} runs when
 * the runtime is closed, after every call it accepted has been answered.
 *
 * <pre>{@code
 * public final class Echo implements Handler {
 *     public void register(Methods m) {
 *         m.sync("echo", req -> req.bytes());
 *         m.async("later", req -> CompletableFuture.supplyAsync(req::bytes));
 *     }
 * }
 * }</pre>
 *
 * <p>Methods may be called from several threads at once (cfg
 * {@code threads=N}, or one virtual thread per call with
 * {@code executor=virtual}); a handler must be thread-safe.
 */
public interface Handler {

    /**
     * Declares the methods this handler serves.  Called once, before the
     * first call.  An exception here fails the runtime's load with the
     * exception's text.
     */
    void register(Methods methods) throws Exception;

    /**
     * Releases the handler's resources when its runtime closes.  (Not
     * AutoCloseable: the runtime owns the handler's life, and javac would
     * warn every handler whose close may throw InterruptedException.)
     */
    default void close() throws Exception {
    }
}
