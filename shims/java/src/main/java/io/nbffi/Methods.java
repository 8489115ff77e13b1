package io.nbffi;

import java.nio.charset.StandardCharsets;
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

    private final Map<String, String> config;
    private final Map<String, Entry> byName = new LinkedHashMap<>();
    private final List<Entry> entries = new ArrayList<>();

    /** An empty table; {@code config} is what {@link #config()} returns. */
    public Methods(Map<String, String> config) {
        this.config = Collections.unmodifiableMap(
            new LinkedHashMap<>(config));
    }

    /**
     * A handler's table, as the runtime builds it: a new table with this
     * config, filled by {@code handler.register}.
     */
    public static Methods of(Handler handler, Map<String, String> config)
        throws Exception {
        Methods m = new Methods(config);
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
        Objects.requireNonNull(name, "name");
        int len = name.getBytes(StandardCharsets.UTF_8).length;
        if (len == 0 || len > MAX_NAME || name.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("bad method name '" + name
                + "': 1.." + MAX_NAME + " bytes of UTF-8, no NUL");
        }
        if (byName.containsKey(name)) {
            throw new IllegalArgumentException(
                "method '" + name + "' registered twice");
        }
        Entry e = new Entry(name, sync, async);
        byName.put(name, e);
        entries.add(e);
        return this;
    }

    /* Where an invocation's outcome goes; called at most once each. */
    interface Reply {
        void ok(byte[] data);

        void fail(Throwable t);
    }

    /* One registered method. */
    static final class Entry {
        final String name;
        private final SyncMethod sync;
        private final AsyncMethod async;

        Entry(String name, SyncMethod sync, AsyncMethod async) {
            this.name = name;
            this.sync = sync;
            this.async = async;
        }

        /* Runs the method; its outcome, whatever it is, reaches reply. */
        void invoke(Request request, Reply reply) {
            try {
                if (sync != null) {
                    reply.ok(sync.call(request));
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
