package io.nbffi;

import java.nio.ByteBuffer;
import java.time.Instant;
import java.util.Map;
import java.util.Optional;

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
     * The caller's deadline on the wall clock, or empty when the call has
     * none: for APIs that take an Instant.  {@link #remainingNanos()} is
     * the exact one (the monotonic clock).
     */
    default Optional<Instant> deadline() {
        long left = remainingNanos();
        return left == Long.MAX_VALUE
            ? Optional.empty() : Optional.of(Instant.now().plusNanos(left));
    }

    /**
     * The call's metadata (Lua's {@code opts.meta}: a request id, a
     * {@code traceparent}, a tenant), in the caller's order; empty when
     * it sent none.  Log lines that the method's thread writes through
     * java.util.logging or System.Logger while it runs carry it too.
     */
    default Map<String, String> meta() {
        return Map.of();
    }

    /** {@code meta().get(key)}: null when the call has no such key. */
    default String meta(String key) {
        return meta().get(key);
    }

    /**
     * A request over a heap copy of payload, without deadline: for unit
     * tests of handlers and for hosts other than nbffi.
     */
    static Request of(String method, byte[] payload) {
        return new HeapRequest(method, payload, Map.of());
    }

    /** {@link #of(String, byte[])} with metadata. */
    static Request of(String method, byte[] payload, Map<String, String> meta) {
        return new HeapRequest(method, payload, meta);
    }
}
