package io.nbffi.reliability;

import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Logger;

/**
 * The Java fault handler of the reliability tests (see ../../../../README.md
 * in tests/reliability/handlers).  cfg {@code arg.fail_init=MSG} fails
 * register with MSG, {@code arg.hang_init=1} never returns from it.
 */
public final class Faults implements Handler {

    private static final Logger LOG = Logger.getLogger("faults");

    /* The request of the last "never" call: "late" reads it after
       "release" answered it.  (Static, but each runtime loads this class
       through its own class loader: not shared between runtimes.) */
    private static volatile Request stashed;

    private final AtomicLong flaky = new AtomicLong();
    private final List<CompletableFuture<byte[]>> held = new ArrayList<>();

    @Override
    public void register(Methods m) throws Exception {
        String fail = m.config("fail_init", null);
        if (fail != null) {
            throw new IllegalStateException(fail);
        }
        if (m.config("hang_init", null) != null) {
            Thread.sleep(Long.MAX_VALUE);
        }
        m.sync("echo", Request::bytes);
        m.sync("flaky", req -> {
            long k = flaky.incrementAndGet();
            if (k % Long.parseLong(text(req)) == 0) {
                throw new IllegalStateException("flaky: call " + k
                    + " failed");
            }
            return bytes("ok");
        });
        /* Ignores its caller giving up: answered by "release", or with
           status 3 when the runtime closes (close_timeout, or the close
           deadline if sooner; it takes no payload view, so close may). */
        m.async("never", req -> {
            stashed = req;
            CompletableFuture<byte[]> f = new CompletableFuture<>();
            synchronized (held) {
                held.add(f);
            }
            return f;
        });
        m.sync("release", req -> {
            synchronized (held) {
                for (CompletableFuture<byte[]> f : held) {
                    f.complete(bytes("late"));
                }
                held.clear();
            }
            return bytes("released");
        });
        m.sync("sleep", req -> {
            Thread.sleep(Long.parseLong(text(req)));
            return bytes("slept");
        });
        m.sync("crash", req -> {
            unsafe().putInt(Long.parseLong(text(req)), 1);
            return bytes("survived");
        });
        m.sync("log", req -> {
            LOG.warning(text(req));
            return bytes("logged");
        });
        /* Touches the task of a "never" call that its runtime answered
           when it closed: the shim refuses. */
        m.sync("late", req -> {
            try {
                return stashed.bytes();
            } catch (IllegalStateException e) {
                return bytes(e.getClass().getSimpleName() + ": "
                    + e.getMessage());
            }
        });
    }

    private static String text(Request req) {
        return new String(req.bytes(), StandardCharsets.UTF_8);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static sun.misc.Unsafe unsafe() throws Exception {
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        return (sun.misc.Unsafe) f.get(null);
    }
}
