package io.nbffi;

import java.nio.ByteBuffer;
import java.util.concurrent.CancellationException;

/**
 * Where a {@link StreamMethod} sends the chunks of its reply, in order,
 * before its final answer.  Lua reads them as they come
 * ({@code for chunk, err in rt:stream(...)}).
 *
 * <p>Backpressure: at most {@link #window()} chunks are in flight (sent,
 * not yet read by Lua).  When the window is full {@link #send} waits for
 * Lua to read one, at most until the call's deadline; memory stays
 * bounded whatever the reader's speed.
 *
 * <p>Cancellation: once the caller stops reading (it broke out of its
 * loop, timed out, or its HTTP client went away), {@link #send} throws
 * {@link CancellationException} and {@link #cancelled()} is true.  Let the
 * exception end the method (or return): the runtime still answers the
 * call, and nbffi drops that answer.
 *
 * <p>A sink is valid until the method's answer; several threads may send
 * on it (chunks keep the order of the sends that returned).
 */
public interface Sink {

    /**
     * Sends one chunk (copied; may be empty), waiting while the window is
     * full.
     *
     * @throws CancellationException the caller gave up (its message says
     *     why: cancelled, deadline passed, runtime closing)
     */
    void send(byte[] chunk);

    /** {@link #send(byte[])} of the chunk's remaining bytes. */
    void send(ByteBuffer chunk);

    /**
     * Sends one chunk unless the window is full: false then, and nothing
     * was sent (try again later).
     *
     * @throws CancellationException as {@link #send(byte[])}
     */
    boolean trySend(byte[] chunk);

    /** True once the caller gave up: later sends throw. */
    boolean cancelled();

    /** Chunks that may be in flight at once (the caller's window). */
    int window();
}
