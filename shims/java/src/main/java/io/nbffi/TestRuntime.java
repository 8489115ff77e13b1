package io.nbffi;

import java.nio.charset.StandardCharsets;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A {@link Handler} run in-process the way the Java runtime runs it, for
 * unit tests of handlers (JUnit or any other framework), without nginx,
 * libnbffi or the native loader.
 *
 * <pre>{@code
 * try (TestRuntime rt = TestRuntime.start(Hello.class, "greeting=hi")) {
 *     TestRuntime.Reply r = rt.call("hello", "nginx");
 *     assertEquals("hi, nginx", r.text());
 *     assertEquals(400, rt.call("hello", "").status());
 * }
 * }</pre>
 *
 * <p>As in the runtime: the class is built with its public no-argument
 * constructor and registers its methods once; a method that throws
 * {@link ErrorReply} answers with its status and message, any other
 * exception with status {@link ErrorReply#FAILED} and its class, message
 * and stack trace, an unknown method with {@link ErrorReply#NO_METHOD};
 * {@link #close} runs the handler's {@code close}.  The payload is a heap
 * copy and the call has no deadline ({@link Request#of}).
 * {@link #stream} collects the chunks of a streaming method (its sink's
 * window never fills), {@link #events} the events the handler emitted.
 */
public final class TestRuntime implements AutoCloseable {

    /** What {@link #call} waits for by default. */
    public static final Duration TIMEOUT = Duration.ofSeconds(10);

    private final Handler handler;
    private final Methods methods;
    private final List<Event> events = new CopyOnWriteArrayList<>();
    private boolean closed;

    private TestRuntime(Handler handler, Map<String, String> config)
        throws Exception {
        this.handler = handler;
        this.methods = Methods.of(handler, config, (name, data) -> {
            Names.check("event", name, Events.MAX_NAME);
            events.add(new Event(name, data.clone()));
            return true;
        });
    }

    /**
     * Builds {@code cls} and registers its methods; each arg is a
     * {@code NAME=VALUE} pair, as the cfg line {@code arg.NAME=VALUE}.
     */
    public static TestRuntime start(Class<? extends Handler> cls,
        String... args) throws Exception {
        Map<String, String> config = new LinkedHashMap<>();
        for (String a : args) {
            int eq = a.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException(
                    "expected NAME=VALUE, got '" + a + "'");
            }
            config.put(a.substring(0, eq), a.substring(eq + 1));
        }
        return of(cls.getConstructor().newInstance(), config);
    }

    /** Registers the methods of an existing handler with this config. */
    public static TestRuntime of(Handler handler, Map<String, String> config)
        throws Exception {
        return new TestRuntime(handler, config);
    }

    /** {@link #call(String, byte[], Duration)} with a UTF-8 payload. */
    public Reply call(String method, String payload)
        throws InterruptedException, TimeoutException {
        return call(method, payload.getBytes(StandardCharsets.UTF_8), TIMEOUT);
    }

    /** {@link #call(String, byte[], Duration)} with {@link #TIMEOUT}. */
    public Reply call(String method, byte[] payload)
        throws InterruptedException, TimeoutException {
        return call(method, payload, TIMEOUT);
    }

    /**
     * Calls {@code method} and waits up to {@code timeout} for its answer:
     * a reply, or an error reply with the status and text Lua would get
     * ({@code nil, "runtime error <status>: <text>"}).
     *
     * @throws TimeoutException the method did not answer in time
     */
    public Reply call(String method, byte[] payload, Duration timeout)
        throws InterruptedException, TimeoutException {
        return run(Request.of(method, payload), null, timeout);
    }

    /**
     * Calls {@code method} as {@code rt:stream} does, with metadata, and
     * waits up to {@link #TIMEOUT} for its end: the chunks it sent are in
     * {@link Reply#chunks()}.
     */
    public Reply stream(String method, byte[] payload,
        Map<String, String> meta) throws InterruptedException,
        TimeoutException {
        return run(Request.of(method, payload, meta), new ListSink(),
            TIMEOUT);
    }

    /** The events the handler emitted so far, oldest first. */
    public List<Event> events() {
        return List.copyOf(events);
    }

    private Reply run(Request request, ListSink sink, Duration timeout)
        throws InterruptedException, TimeoutException {
        if (closed) {
            throw new IllegalStateException("closed");
        }
        List<byte[]> chunks = sink == null ? List.of() : sink.chunks;
        try {
            byte[] data = methods.call(request, sink)
                .get(timeout.toNanos(), TimeUnit.NANOSECONDS);
            return new Reply(0, data == null ? new byte[0] : data, chunks);
        } catch (ExecutionException e) {
            Throwable t = Failure.unwrap(e);
            return new Reply(Failure.status(t),
                Failure.text(t).getBytes(StandardCharsets.UTF_8), chunks);
        }
    }

    /** The registered method names, in registration order. */
    public java.util.List<String> methods() {
        return methods.names();
    }

    /**
     * Runs the handler's {@code close}, once.  What it throws comes back
     * as an {@link IllegalStateException} (AutoCloseable.close must not
     * throw InterruptedException).
     */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            handler.close();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("handler close interrupted", e);
        } catch (Exception e) {
            throw new IllegalStateException("handler close failed: " + e, e);
        }
    }

    /** An event the handler emitted. */
    public static final class Event {
        private final String name;
        private final byte[] data;

        Event(String name, byte[] data) {
            this.name = name;
            this.data = data;
        }

        public String name() {
            return name;
        }

        public byte[] bytes() {
            return data.clone();
        }

        /** {@link #bytes()} decoded as UTF-8. */
        public String text() {
            return new String(data, StandardCharsets.UTF_8);
        }
    }

    /* A sink that keeps every chunk; its window never fills. */
    private static final class ListSink implements Sink {
        final List<byte[]> chunks = Collections.synchronizedList(
            new ArrayList<>());

        @Override
        public void send(byte[] chunk) {
            chunks.add(chunk.clone());
        }

        @Override
        public void send(ByteBuffer chunk) {
            ByteBuffer b = chunk.duplicate();
            byte[] a = new byte[b.remaining()];
            b.get(a);
            chunks.add(a);
        }

        @Override
        public boolean trySend(byte[] chunk) {
            send(chunk);
            return true;
        }

        @Override
        public boolean cancelled() {
            return false;
        }

        @Override
        public int window() {
            return 16;
        }
    }

    /** An answer: status 0 and the reply, or an error status and text. */
    public static final class Reply {
        private final int status;
        private final byte[] bytes;
        private final List<byte[]> chunks;

        Reply(int status, byte[] bytes, List<byte[]> chunks) {
            this.status = status;
            this.bytes = bytes;
            this.chunks = chunks;
        }

        /** The chunks a streaming method sent, in order (see stream). */
        public List<byte[]> chunks() {
            synchronized (chunks) {
                return List.copyOf(chunks);
            }
        }

        /** {@link #chunks()} decoded as UTF-8. */
        public List<String> texts() {
            List<String> out = new ArrayList<>();
            for (byte[] c : chunks()) {
                out.add(new String(c, StandardCharsets.UTF_8));
            }
            return out;
        }

        /** 0 for a reply, else the error status. */
        public int status() {
            return status;
        }

        /** True for a reply (status 0). */
        public boolean ok() {
            return status == 0;
        }

        /** The reply's bytes, or the error's text in UTF-8. */
        public byte[] bytes() {
            return bytes.clone();
        }

        /** {@link #bytes()} decoded as UTF-8. */
        public String text() {
            return new String(bytes, StandardCharsets.UTF_8);
        }

        @Override
        public String toString() {
            return ok() ? "reply " + text()
                : "runtime error " + status + ": " + text();
        }
    }
}
