package io.nbffi.it;

import io.nbffi.ErrorReply;
import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CancellationException;
import java.util.concurrent.Executor;
import java.util.concurrent.Flow;
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
        streams(m);
        m.sync("meta", req -> {
            StringBuilder sb = new StringBuilder();
            req.meta().forEach((k, v) -> sb.append(k).append('=').append(v)
                .append(';'));
            return bytes(sb.toString());
        });
        m.sync("meta_log", req -> {
            LOG.info("meta_log " + text(req));
            return bytes(String.valueOf(req.meta("request_id")));
        });
        m.sync("deadline", req -> bytes(req.deadline()
            .map(d -> d.isAfter(java.time.Instant.now()) ? "future" : "past")
            .orElse("none")));
        /* Payload "NAME DATA": one event; "true" when it was queued. */
        m.sync("emit", req -> {
            String[] a = text(req).split(" ", 2);
            return bytes(Boolean.toString(m.events().emit(a[0],
                a.length > 1 ? a[1] : "")));
        });
        /* Payload "N SIZE": N events "burst" of SIZE bytes (the first
           bytes say which); replies how many were queued. */
        m.sync("emit_n", req -> {
            String[] a = text(req).split(" ");
            int n = Integer.parseInt(a[0]);
            byte[] data = new byte[Integer.parseInt(a[1])];
            int queued = 0;
            for (int i = 0; i < n; i++) {
                byte[] tag = bytes(Integer.toString(i));
                System.arraycopy(tag, 0, data, 0,
                    Math.min(tag.length, data.length));
                queued += m.events().emit("burst", data) ? 1 : 0;
            }
            return bytes(Integer.toString(queued));
        });
        /* An event from a thread of the handler's own, no call. */
        m.sync("emit_later", req -> {
            String t = text(req);
            Thread th = new Thread(() -> m.events().emit("later", t),
                "it-emitter");
            th.start();
            th.join();
            return bytes("started");
        });
    }

    private void streams(Methods m) {
        /* Payload "N": chunks "chunk 1" .. "chunk N". */
        m.stream("stream_n", (req, sink) -> {
            int n = Integer.parseInt(text(req));
            for (int i = 1; i <= n; i++) {
                sink.send(bytes("chunk " + i));
            }
        });
        /* Payload "N SIZE": N chunks of SIZE bytes 'x'. */
        m.stream("stream_size", (req, sink) -> {
            String[] a = text(req).split(" ");
            byte[] b = new byte[Integer.parseInt(a[1])];
            java.util.Arrays.fill(b, (byte) 'x');
            for (int i = Integer.parseInt(a[0]); i > 0; i--) {
                sink.send(b);
            }
        });
        /* Sends "tick N" until the caller gives up (30 s at most), then
           logs why, with the call's metadata. */
        m.stream("stream_forever", (req, sink) -> {
            long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            long i = 0;
            try {
                while (System.nanoTime() < end) {
                    sink.send(bytes("tick " + ++i));
                }
            } catch (CancellationException e) {
                LOG.info("stream_forever " + text(req) + " cancelled after "
                    + i + " chunk(s): " + e.getMessage()
                    + " (sink.cancelled " + sink.cancelled() + ")");
                throw e;
            }
        });
        /* Two chunks, then an error reply. */
        m.stream("stream_error", (req, sink) -> {
            sink.send(bytes("one"));
            sink.send(bytes("two"));
            throw new ErrorReply(9, "broke after two");
        });
        /* The payload's lines, one chunk each, through a Flow.Publisher
           that honours demand. */
        m.publish("publish_lines", req -> new Lines(text(req).split("\n")));
        /* The window the caller asked for. */
        m.stream("stream_window", (req, sink) ->
            sink.send(bytes(Integer.toString(sink.window()))));
    }

    /* A publisher of fixed items that emits only what was requested. */
    static final class Lines implements Flow.Publisher<byte[]> {
        private final String[] items;

        Lines(String[] items) {
            this.items = items;
        }

        @Override
        public void subscribe(Flow.Subscriber<? super byte[]> s) {
            s.onSubscribe(new Flow.Subscription() {
                private int next;
                private long demand;
                private boolean done;

                @Override
                public synchronized void request(long n) {
                    demand += n;
                    while (demand > 0 && next < items.length && !done) {
                        demand--;
                        s.onNext(bytes(items[next++]));
                    }
                    if (next == items.length && !done) {
                        done = true;
                        s.onComplete();
                    }
                }

                @Override
                public synchronized void cancel() {
                    done = true;
                }
            });
        }
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
