package io.nbffi;

/**
 * An expected failure: a method throws it to answer the call with a
 * runtime error carrying {@link #status()} and the message alone (any other
 * exception answers with status {@link #FAILED} and its class, message and
 * stack trace).  In Lua the call then returns {@code nil} and the message.
 */
public class ErrorReply extends Exception {

    private static final long serialVersionUID = 1L;

    /** The method threw an exception other than ErrorReply. */
    public static final int FAILED = 1;
    /** The handler registered no method of the called name. */
    public static final int NO_METHOD = 2;
    /** The runtime closed before the method answered. */
    public static final int CLOSED = 3;
    /**
     * The method gave up because the caller's deadline passed (a send
     * on a full window until then).  Lua reports such a call as
     * {@code timeout} when its caller saw the deadline first, as it
     * usually does; this status is the rare answer that came sooner.
     * The same status as Go's StatusTimeout.
     */
    public static final int TIMEOUT = 4;
    /** A streaming method called without a stream (a plain call). */
    public static final int NOT_A_STREAM = 5;

    private final int status;

    /** @param status a positive, runtime-defined error code */
    public ErrorReply(int status, String message) {
        super(message, null, false, false);
        if (status <= 0) {
            throw new IllegalArgumentException(
                "error status must be positive, got " + status);
        }
        this.status = status;
    }

    public ErrorReply(String message) {
        this(FAILED, message);
    }

    public int status() {
        return status;
    }
}
