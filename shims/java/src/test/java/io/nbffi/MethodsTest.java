package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import org.junit.jupiter.api.Test;

class MethodsTest {

    private static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static Throwable failure(CompletableFuture<byte[]> f) {
        ExecutionException e = assertThrows(ExecutionException.class, f::get);
        return e.getCause();
    }

    private final Methods m = new Methods(Map.of("greeting", "hi"))
        .sync("echo", Request::bytes)
        .async("later", r -> CompletableFuture.supplyAsync(r::bytes))
        .sync("boom", r -> {
            throw new IllegalStateException("bad " + r.method());
        })
        .async("late_boom", r -> CompletableFuture.failedFuture(
            new ErrorReply(9, "late")))
        .async("null_stage", r -> null)
        .sync("null_reply", r -> null);

    @Test
    void dispatchesByName() throws Exception {
        assertArrayEquals(b("x"), m.call(Request.of("echo", b("x"))).get());
        assertArrayEquals(b("y"), m.call(Request.of("later", b("y"))).get());
        assertNull(m.call(Request.of("null_reply", b(""))).get());
        assertEquals(List.of("echo", "later", "boom", "late_boom",
            "null_stage", "null_reply"), m.names());
    }

    @Test
    void unknownMethodIsAnErrorReplyListingTheNames() {
        ErrorReply e = assertInstanceOf(ErrorReply.class,
            failure(m.call(Request.of("nope", b("")))));
        assertEquals(ErrorReply.NO_METHOD, e.status());
        assertEquals("no method 'nope' (serves: echo, later, boom, late_boom,"
            + " null_stage, null_reply)", e.getMessage());
    }

    @Test
    void exceptionsReachTheReplyUnwrapped() {
        Throwable t = failure(m.call(Request.of("boom", b(""))));
        assertInstanceOf(IllegalStateException.class, t);
        assertEquals("bad boom", t.getMessage());

        ErrorReply e = assertInstanceOf(ErrorReply.class,
            failure(m.call(Request.of("late_boom", b("")))));
        assertEquals(9, e.status());

        t = failure(m.call(Request.of("null_stage", b(""))));
        assertInstanceOf(NullPointerException.class, t);
        assertTrue(t.getMessage().contains("'null_stage' returned null"));
    }

    @Test
    void rejectsBadNames() {
        Methods t = new Methods(Map.of());
        assertThrows(IllegalArgumentException.class,
            () -> t.sync("", Request::bytes));
        assertThrows(IllegalArgumentException.class,
            () -> t.sync("a\0b", Request::bytes));
        /* 128 two-byte characters: 256 bytes of UTF-8 */
        assertThrows(IllegalArgumentException.class,
            () -> t.sync("é".repeat(128), Request::bytes));
        t.sync("é".repeat(127), Request::bytes);
        t.sync("x", Request::bytes);
        assertThrows(IllegalArgumentException.class,
            () -> t.async("x", r -> null));
        assertThrows(NullPointerException.class, () -> t.sync("y", null));
    }

    @Test
    void configComesFromArgs() throws Exception {
        assertEquals("hi", m.config("greeting", "?"));
        assertEquals("?", m.config("other", "?"));
        assertThrows(UnsupportedOperationException.class,
            () -> m.config().put("k", "v"));
        Handler h = methods -> methods.sync("g",
            r -> b(methods.config("greeting", "none")));
        Methods built = Methods.of(h, Map.of("greeting", "hello"));
        assertArrayEquals(b("hello"),
            built.call(Request.of("g", b(""))).get());
    }
}
