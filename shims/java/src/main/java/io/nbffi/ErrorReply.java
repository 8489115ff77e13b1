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
