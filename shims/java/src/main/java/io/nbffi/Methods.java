package io.nbffi;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;

/**
 * The methods a {@link Handler} serves, by name, and the handler's
 * configuration (the cfg lines {@code arg.NAME=VALUE}).
 */
public final class Methods {

    /** Longest method name in bytes of UTF-8 (NBFFI_MAX_METHOD). */
    public static final int MAX_NAME = 255;

    /* The events of a table made without: names checked, all dropped. */
    private static final Events DROP = (name, data) -> {
        Names.check("event", name, Events.MAX_NAME);
        return false;
    };

    private final Map<String, String> config;
    private final Events events;
    private final Map<String, Entry> byName = new LinkedHashMap<>();
    private final List<Entry> entries = new ArrayList<>();

    /**
     * An empty table; {@code config} is what {@link #config()} returns.
     * Its {@link #events()} drop every event.
     */
    public Methods(Map<String, String> config) {
        this(config, DROP);
    }

    /** An empty table whose {@link #events()} is {@code events}. */
    public Methods(Map<String, String> config, Events events) {
        this.config = Collections.unmodifiableMap(
            new LinkedHashMap<>(config));
        this.events = Objects.requireNonNull(events, "events");
    }

    /**
     * A handler's table, as the runtime builds it: a new table with this
     * config, filled by {@code handler.register}.
     */
    public static Methods of(Handler handler, Map<String, String> config)
        throws Exception {
        return of(handler, config, DROP);
    }

    /** {@link #of(Handler, Map)} whose {@link #events()} is events. */
    public static Methods of(Handler handler, Map<String, String> config,
        Events events) throws Exception {
        Methods m = new Methods(config, events);
        handler.register(m);
        return m;
    }

    /** Serves {@code name} with a method that answers synchronously. */
    public Methods sync(String name, SyncMethod method) {
        return add(name, Objects.requireNonNull(method, "method"), null);
    }

    /** Serves {@code name} with a method that answers through a stage. */
    public Methods async(String name, AsyncMethod method) {
        return add(name, null, Objects.requireNonNull(method, "method"));
    }

    /**
     * Serves {@code name} with a method that streams its reply in chunks
     * (Lua: {@code rt:stream}).
     */
    public Methods stream(String name, StreamMethod method) {
        return add(name, new Entry(name, null, null,
            Objects.requireNonNull(method, "method"), null));
    }

    /**
     * Serves {@code name} with a method whose reply is a
     * {@link java.util.concurrent.Flow.Publisher} of chunks (Lua:
     * {@code rt:stream}).
     */
    public Methods publish(String name, PublisherMethod method) {
        return add(name, new Entry(name, null, null, null,
            Objects.requireNonNull(method, "method")));
    }

    /**
     * The runtime's events: emit from any thread, at any time until the
     * handler's close returned (see {@link Events}).  Keep it.
     */
    public Events events() {
        return events;
    }

    /** The {@code arg.NAME=VALUE} lines of the cfg, by NAME. */
    public Map<String, String> config() {
        return config;
    }

    /** {@code config().get(name)}, or {@code dflt} when absent. */
    public String config(String name, String dflt) {
        return config.getOrDefault(name, dflt);
    }

    /** The registered names, in registration order. */
    public List<String> names() {
        List<String> names = new ArrayList<>(entries.size());
        for (Entry e : entries) {
            names.add(e.name);
        }
        return names;
    }

    /**
     * Runs the method that request names, as the runtime would, and returns
     * its reply: completed exceptionally with the method's exception, or
     * with an {@link ErrorReply} of status {@link ErrorReply#NO_METHOD}.
     * For tests and for other hosts (e.g. a sidecar).
     */
    public CompletableFuture<byte[]> call(Request request) {
        return call(request, null);
    }

    /**
     * {@link #call(Request)} with a sink for the chunks of a streaming
     * method (null: a plain call, which such a method refuses).
     */
    public CompletableFuture<byte[]> call(Request request, Sink sink) {
        CompletableFuture<byte[]> f = new CompletableFuture<>();
        Reply reply = new Reply() {
            @Override
            public void ok(byte[] data) {
                f.complete(data);
            }

            @Override
            public void fail(Throwable t) {
                f.completeExceptionally(t);
            }

            @Override
            public Sink sink() {
                return sink;
            }
        };
        Entry e = byName.get(request.method());
        if (e == null) {
            reply.fail(noMethod(request.method()));
        } else {
            e.invoke(request, reply);
        }
        return f;
    }

    /* The entries, indexed like the names the C side matches against. */
    List<Entry> entries() {
        return entries;
    }

    ErrorReply noMethod(String name) {
        return new ErrorReply(ErrorReply.NO_METHOD,
            "no method '" + name + "' (serves: " + String.join(", ", names())
            + ")");
    }

    private Methods add(String name, SyncMethod sync, AsyncMethod async) {
        return add(name, new Entry(name, sync, async, null, null));
    }

    private Methods add(String name, Entry e) {
        Objects.requireNonNull(name, "name");
        Names.check("method", name, MAX_NAME);
        if (byName.containsKey(name)) {
            throw new IllegalArgumentException(
                "method '" + name + "' registered twice");
        }
        byName.put(name, e);
        entries.add(e);
        return this;
    }

    /* Where an invocation's outcome goes; called at most once each. */
    interface Reply {
        void ok(byte[] data);

        void fail(Throwable t);

        /* The stream's sink; null for a plain call. */
        default Sink sink() {
            return null;
        }
    }

    /* One registered method. */
    static final class Entry {
        final String name;
        private final SyncMethod sync;
        private final AsyncMethod async;
        private final StreamMethod stream;
        private final PublisherMethod publisher;

        Entry(String name, SyncMethod sync, AsyncMethod async,
            StreamMethod stream, PublisherMethod publisher) {
            this.name = name;
            this.sync = sync;
            this.async = async;
            this.stream = stream;
            this.publisher = publisher;
        }

        /* True for methods that answer in chunks. */
        boolean streams() {
            return stream != null || publisher != null;
        }

        /* Runs the method; its outcome, whatever it is, reaches reply. */
        void invoke(Request request, Reply reply) {
            try {
                if (sync != null) {
                    reply.ok(sync.call(request));
                    return;
                }
                if (streams()) {
                    Sink sink = reply.sink();
                    if (sink == null) {
                        throw new ErrorReply(ErrorReply.NOT_A_STREAM,
                            "method '" + name + "' streams its reply: call"
                            + " it with rt:stream");
                    }
                    if (stream != null) {
                        stream.call(request, sink);
                    } else {
                        Pump.run(publisher.call(request), request, sink);
                    }
                    reply.ok(null);
                    return;
                }
                var stage = async.call(request);
                if (stage == null) {
                    throw new NullPointerException("async method '" + name
                        + "' returned null instead of a CompletionStage");
                }
                stage.whenComplete((data, t) -> {
                    if (t == null) {
                        reply.ok(data);
                    } else {
                        reply.fail(Failure.unwrap(t));
                    }
                });
            } catch (Throwable t) {
                reply.fail(t);
            }
        }
    }
}
