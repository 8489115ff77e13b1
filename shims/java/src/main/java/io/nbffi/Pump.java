package io.nbffi;

import java.util.Objects;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CancellationException;
import java.util.concurrent.Flow;
import java.util.concurrent.TimeUnit;

/*
 * Carries a Flow.Publisher's items to a sink on the calling thread: it
 * requests as many items as the sink's window, sends each one (waiting
 * while the window is full) and requests one more per chunk sent, so at
 * most a window of items waits here.  The caller giving up cancels the
 * subscription.
 */
final class Pump implements Flow.Subscriber<byte[]> {

    /* How often a wait for the publisher checks that the caller is still
       there: the sink learns of a cancel only when it sends. */
    private static final long CHECK_NANOS = TimeUnit.MILLISECONDS.toNanos(100);

    private static final Object COMPLETE = new Object();

    private final BlockingQueue<Object> items;
    private final int window;
    private volatile Flow.Subscription subscription;

    private Pump(int window) {
        this.window = window;
        /* A window of items and the end. */
        this.items = new ArrayBlockingQueue<>(window + 1);
    }

    /* Subscribes to publisher and sends its items to sink until it ends;
       throws its error, or CancellationException when the caller gave
       up. */
    static void run(Flow.Publisher<byte[]> publisher, Request request,
        Sink sink) throws Exception {
        if (publisher == null) {
            throw new NullPointerException("publisher method returned null");
        }
        Pump p = new Pump(Math.max(1, sink.window()));
        publisher.subscribe(p);
        try {
            p.drain(request, sink);
        } catch (Exception | Error e) {
            Flow.Subscription s = p.subscription;
            if (s != null) {
                s.cancel();
            }
            throw e;
        }
    }

    @Override
    public void onSubscribe(Flow.Subscription s) {
        Objects.requireNonNull(s, "subscription");
        if (subscription != null) {
            s.cancel();
            return;
        }
        subscription = s;
        s.request(window);
    }

    @Override
    public void onNext(byte[] item) {
        Objects.requireNonNull(item, "item");
        if (!items.offer(item)) {
            fail(new IllegalStateException("publisher sent more items than"
                + " requested (Flow rule 1.1)"));
        }
    }

    @Override
    public void onError(Throwable t) {
        fail(Objects.requireNonNull(t, "throwable"));
    }

    @Override
    public void onComplete() {
        items.offer(COMPLETE);
    }

    private void fail(Throwable t) {
        items.clear();
        items.offer(new Failed(t));
    }

    private void drain(Request request, Sink sink) throws Exception {
        for (;;) {
            Object o = items.poll(CHECK_NANOS, TimeUnit.NANOSECONDS);
            if (o == null) {
                if (request.cancelled() || sink.cancelled()) {
                    throw new CancellationException("the caller gave up");
                }
                if (request.remainingNanos() <= 0) {
                    throw new CancellationException("deadline passed");
                }
                continue;
            }
            if (o == COMPLETE) {
                return;
            }
            if (o instanceof Failed) {
                Throwable t = ((Failed) o).cause;
                if (t instanceof Exception) {
                    throw (Exception) t;
                }
                if (t instanceof Error) {
                    throw (Error) t;
                }
                throw new IllegalStateException(t);
            }
            sink.send((byte[]) o);
            subscription.request(1);
        }
    }

    private static final class Failed {
        final Throwable cause;

        Failed(Throwable cause) {
            this.cause = cause;
        }
    }
}
