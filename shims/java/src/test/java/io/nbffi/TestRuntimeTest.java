package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

class TestRuntimeTest {

    static final AtomicInteger CLOSES = new AtomicInteger();

    /** A handler as users write them: public, no-argument constructor. */
    public static final class Greeter implements Handler {
        @Override
        public void register(Methods m) {
            String greeting = m.config("greeting", "hello");
            m.sync("hello", r -> {
                if (r.size() == 0) {
                    throw new ErrorReply(400, "empty name");
                }
                return (greeting + ", " + new String(r.bytes())).getBytes();
            });
            m.sync("boom", r -> {
                throw new IllegalStateException("exploded");
            });
            m.async("never", r -> new CompletableFuture<byte[]>());
            m.sync("nothing", r -> null);
        }

        @Override
        public void close() {
            CLOSES.incrementAndGet();
        }
    }

    @Test
    void runsTheHandlerAsTheRuntimeDoes() throws Exception {
        int closes = CLOSES.get();
        try (TestRuntime rt = TestRuntime.start(Greeter.class, "greeting=hi")) {
            assertEquals(List.of("hello", "boom", "never", "nothing"),
                rt.methods());
            TestRuntime.Reply r = rt.call("hello", "nginx");
            assertTrue(r.ok());
            assertEquals("hi, nginx", r.text());

            r = rt.call("hello", "");
            assertEquals(400, r.status());
            assertEquals("empty name", r.text());
            assertEquals("runtime error 400: empty name", r.toString());

            r = rt.call("boom", "");
            assertEquals(ErrorReply.FAILED, r.status());
            assertTrue(r.text().startsWith(
                "java.lang.IllegalStateException: exploded"), r.text());

            r = rt.call("nope", "");
            assertEquals(ErrorReply.NO_METHOD, r.status());

            r = rt.call("nothing", "");
            assertTrue(r.ok());
            assertEquals(0, r.bytes().length);

            assertThrows(TimeoutException.class,
                () -> rt.call("never", new byte[0], Duration.ofMillis(1)));
        }
        assertEquals(closes + 1, CLOSES.get());
    }

    @Test
    void badArgsAndUseAfterClose() throws Exception {
        assertThrows(IllegalArgumentException.class,
            () -> TestRuntime.start(Greeter.class, "novalue"));
        TestRuntime rt = TestRuntime.start(Greeter.class);
        assertEquals("hello, x", rt.call("hello", "x").text());
        rt.close();
        rt.close();
        assertFalse(rt.methods().isEmpty());
        assertThrows(IllegalStateException.class, () -> rt.call("hello", "x"));
    }
}
