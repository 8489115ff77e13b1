package io.nbffi;

import java.nio.ByteBuffer;

/**
 * One call: a method name and a payload of bytes.
 *
 * <p>For calls that came through nbffi, {@link #payload()} is a read-only
 * direct buffer over the task's own memory (no copy).  That memory belongs
 * to nbffi and is <b>valid only until the call is answered</b>: when a sync
 * method returns, or when the stage of an async method completes.  Do not
 * keep the buffer, or views of it, past that point; use {@link #bytes()}
 * for a copy that lives on.  (A call its runtime closes on before it is
 * answered keeps that memory for good: a method that overruns the close
 * deadline still reads valid bytes.)
 */
public interface Request {

    /** The method name the caller used. */
    String method();

    /** The payload, read-only, positioned at 0; see the class comment. */
    ByteBuffer payload();

    /** A copy of the payload. */
    byte[] bytes();

    /** Payload length in bytes. */
    int size();

    /**
     * Nanoseconds until the caller's deadline (negative once passed), or
     * {@link Long#MAX_VALUE} when the call has none.
     */
    long remainingNanos();

    /**
     * True once the caller gave up waiting (timeout, aborted request), or
     * when the runtime is closing and about to give up on this call: a
     * long method should then stop early.
     */
    boolean cancelled();

    /**
     * A request over a heap copy of payload, without deadline: for unit
     * tests of handlers and for hosts other than nbffi.
     */
    static Request of(String method, byte[] payload) {
        return new HeapRequest(method, payload);
    }
}
