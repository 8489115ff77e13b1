package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import org.junit.jupiter.api.Test;

class FailureTest {

    @Test
    void describeHasClassMessageStackAndCause() {
        String s = Failure.describe(new IllegalStateException("outer",
            new IOException("inner")));
        assertTrue(s.startsWith("java.lang.IllegalStateException: outer\n"
            + "\tat io.nbffi.FailureTest."), s);
        assertTrue(s.contains("Caused by: java.io.IOException: inner"), s);
        assertEquals(s.strip(), s);
    }

    @Test
    void describeIsBounded() {
        String s = Failure.describe(new RuntimeException(
            "x".repeat(2 * Failure.MAX_TEXT)));
        assertTrue(s.length() < Failure.MAX_TEXT + 100);
        assertTrue(s.endsWith("... (truncated)"));
    }

    @Test
    void unwrapFindsTheCause() {
        IOException io = new IOException("root");
        assertSame(io, Failure.unwrap(new CompletionException(
            new ExecutionException(io))));
        CompletionException bare = new CompletionException("no cause", null);
        assertSame(bare, Failure.unwrap(bare));
    }

    @Test
    void statusAndTextOfErrorReplies() {
        ErrorReply e = new ErrorReply(42, "just this");
        assertEquals(42, Failure.status(e));
        assertEquals("just this", Failure.text(e));
        assertEquals(ErrorReply.FAILED, new ErrorReply("m").status());
        assertEquals(ErrorReply.FAILED,
            Failure.status(new RuntimeException("x")));
        assertTrue(Failure.text(new RuntimeException("x"))
            .startsWith("java.lang.RuntimeException: x\n\tat "));
        assertThrows(IllegalArgumentException.class,
            () -> new ErrorReply(0, "zero"));
    }
}
