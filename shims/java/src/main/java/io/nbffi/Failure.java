package io.nbffi;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;

/* Turns throwables into the text of error replies and log lines. */
final class Failure {

    /* Bound on an error reply: deep recursion makes huge stack traces. */
    static final int MAX_TEXT = 64 * 1024;

    private Failure() {
    }

    /* Class, message, stack trace and causes, as printStackTrace has them. */
    static String describe(Throwable t) {
        StringWriter w = new StringWriter();
        t.printStackTrace(new PrintWriter(w));
        String s = w.toString().stripTrailing();
        return s.length() <= MAX_TEXT
            ? s : s.substring(0, MAX_TEXT) + "\n\t... (truncated)";
    }

    /* The exception a failed stage stands for, not its wrapper. */
    static Throwable unwrap(Throwable t) {
        while ((t instanceof CompletionException
                || t instanceof ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        return t;
    }

    /* Status of the error reply for t. */
    static int status(Throwable t) {
        return t instanceof ErrorReply
            ? ((ErrorReply) t).status() : ErrorReply.FAILED;
    }

    /* Text of the error reply for t: an ErrorReply's message stands alone. */
    static String text(Throwable t) {
        if (t instanceof ErrorReply) {
            String m = t.getMessage();
            return m == null ? "" : m;
        }
        return describe(t);
    }
}
