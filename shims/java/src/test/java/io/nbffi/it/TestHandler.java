package io.nbffi.it;

import io.nbffi.ErrorReply;
import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

/** The handler of the integration tests: one method per behaviour. */
public final class TestHandler implements Handler {

    private static final Logger LOG = Logger.getLogger("it.TestHandler");

    private final AtomicLong calls = new AtomicLong();
    private final CompletableFuture<byte[]> held = new CompletableFuture<>();
    private volatile Request kept;

    @Override
    public void register(Methods m) {
        m.sync("echo", Request::bytes);
        /* Reads the zero-copy view, not a copy. */
        m.sync("echo_view", req -> {
            ByteBuffer b = req.payload();
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        });
        m.sync("upper", req -> text(req).toUpperCase(Locale.ROOT)
            .getBytes(StandardCharsets.UTF_8));
        m.sync("len", req -> Integer.toString(req.size())
            .getBytes(StandardCharsets.US_ASCII));
        /* A payload of n bytes 'x' for a decimal n. */
        m.sync("make", req -> {
            byte[] b = new byte[Integer.parseInt(text(req))];
            java.util.Arrays.fill(b, (byte) 'x');
            return b;
        });
        m.sync("nothing", req -> null);
        m.sync("sleep", req -> {
            Thread.sleep(Long.parseLong(text(req)));
            return bytes("slept");
        });
        m.async("async_echo", req -> {
            byte[] b = req.bytes();
            return CompletableFuture.supplyAsync(() -> b, later(5));
        });
        /* Reads the payload view when the stage completes, on another
           thread: still valid until the answer. */
        m.async("async_view", req -> CompletableFuture.supplyAsync(() -> {
            ByteBuffer b = req.payload();
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        }, later(5)));
        /* Like sleep, but ignores interruption: a handler close cannot
           hurry. */
        m.sync("stubborn", req -> {
            pause(Long.parseLong(text(req)));
            return bytes("stubborn");
        });
        /* Payload "MS TEXT": pauses MS stubbornly, then reads its payload
           view and leaves what it read in the system property
           nbffi.it.late (one JVM: another runtime reads it with
           "property"). */
        m.sync("stubborn_view", req -> {
            ByteBuffer b = req.payload();
            String ms = StandardCharsets.UTF_8.decode(b.duplicate())
                .toString().split(" ", 2)[0];
            pause(Long.parseLong(ms));
            byte[] out = new byte[b.remaining()];
            b.get(out);
            System.setProperty("nbffi.it.late",
                new String(out, StandardCharsets.UTF_8));
            return out;
        });
        m.sync("property", req -> bytes(String.valueOf(
            System.getProperty(text(req)))));
        m.async("async_sleep", req -> CompletableFuture.supplyAsync(
            () -> bytes("slept"), later(Long.parseLong(text(req)))));
        m.sync("throw", req -> {
            throw new IllegalStateException(text(req),
                new java.io.IOException("the cause"));
        });
        m.sync("error", req -> {
            throw new ErrorReply(7, text(req));
        });
        m.async("async_throw", req -> CompletableFuture.supplyAsync(() -> {
            throw new UnsupportedOperationException(text(req));
        }, later(1)));
        m.async("async_null", req -> null);
        /* Never answers by itself: close answers it. */
        m.async("hold", req -> held);
        m.sync("log", req -> {
            String s = text(req);
            LOG.severe("severe " + s);
            LOG.warning("warning " + s);
            LOG.info("info " + s);
            LOG.fine("fine " + s);
            LOG.log(Level.WARNING, "with throwable " + s,
                new IllegalArgumentException("logged"));
            System.getLogger("it.System").log(System.Logger.Level.ERROR,
                "system logger " + s);
            return bytes("logged");
        });
        /* Keeps the request (and its payload view) past its answer... */
        m.sync("keep", req -> {
            req.payload();
            kept = req;
            return null;
        });
        /* ...which then refuses to touch the freed task. */
        m.sync("stale", req -> {
            StringBuilder sb = new StringBuilder();
            for (Runnable r : new Runnable[] {kept::payload, kept::bytes,
                                              kept::cancelled}) {
                try {
                    r.run();
                    sb.append("read freed memory;");
                } catch (IllegalStateException e) {
                    sb.append(e.getMessage()).append(';');
                }
            }
            return bytes(sb.toString());
        });
        /* Answers once the caller gave up or the runtime hurries it
           (polls: it is the handler's own loop, bounded at 30 s; an
           interrupt only ends a poll early). */
        m.sync("until_cancelled", req -> {
            LOG.info("until_cancelled: polling");
            for (int i = 0; i < 30000 && !req.cancelled(); i++) {
                try {
                    Thread.sleep(1);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            return bytes(req.cancelled() ? "cancelled" : "never");
        });
        m.sync("config", req -> bytes(m.config(text(req), "<unset>")));
        m.sync("thread", req -> bytes(Thread.currentThread().getName()
            + (isVirtual(Thread.currentThread()) ? " virtual" : "")));
        m.sync("remaining", req -> bytes(req.remainingNanos() == Long.MAX_VALUE
            ? "none" : Long.toString(req.remainingNanos())));
        m.sync("count", req -> bytes(Long.toString(calls.incrementAndGet())));
        m.sync("java", req -> bytes(System.getProperty("java.version")));
        m.sync("overflow", req -> {
            throw new StackOverflowError("deep");
        });
    }

    private static boolean isVirtual(Thread t) {
        try {
            return (Boolean) Thread.class.getMethod("isVirtual").invoke(t);
        } catch (ReflectiveOperationException e) {
            return false;
        }
    }

    /* Sleeps ms, whatever interrupts it. */
    private static void pause(long ms) {
        LOG.info("stubborn: pausing " + ms + " ms");
        long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(ms);
        boolean interrupted = false;
        for (long left; (left = end - System.nanoTime()) > 0; ) {
            try {
                TimeUnit.NANOSECONDS.sleep(left);
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private static Executor later(long ms) {
        return CompletableFuture.delayedExecutor(ms, TimeUnit.MILLISECONDS);
    }

    private static String text(Request r) {
        return new String(r.bytes(), StandardCharsets.UTF_8);
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }
}
