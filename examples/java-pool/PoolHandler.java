package example.pool;

import io.nbffi.ErrorReply;
import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import io.nbffi.Sink;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Iterator;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;
import java.util.logging.Logger;
import java.util.stream.Stream;

/**
 * Fetches from one upstream HTTP server through a java.net.http.HttpClient
 * that keeps its connections alive between calls.  At most
 * {@code connections} requests are in flight at once, so the client never
 * opens more connections than that: the JVM-side pool that a sidecar or a
 * per-request Lua client would rebuild on every call.
 *
 * <p>Method {@code fetch}: payload is a path ("/item?id=1"), the reply is
 * the response body; a status other than 200 is an error reply with that
 * status.  cfg: {@code arg.upstream=http://127.0.0.1:8081},
 * {@code arg.connections=4}.
 *
 * <p>Method {@code lines} (called with {@code rt:stream}): the same
 * fetch, its body streamed line by line as it arrives, one chunk per
 * line.  A reader slower than the upstream slows the read of the body;
 * a reader that goes away closes the body.  The stream holds its poller
 * thread (cfg {@code threads=N}) and a pool connection until it ends.
 */
public final class PoolHandler implements Handler {

    private static final Logger LOG = Logger.getLogger("example.pool");

    private URI upstream;
    private HttpClient client;
    private Limiter limiter;

    @Override
    public void register(Methods m) {
        upstream = URI.create(m.config("upstream", "http://127.0.0.1:8081"));
        limiter = new Limiter(Integer.parseInt(m.config("connections", "4")));
        client = HttpClient.newBuilder()
            .version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(2))
            .build();
        m.async("fetch", this::fetch);
        m.stream("lines", this::lines);
    }

    private HttpRequest request(Request req) throws ErrorReply {
        String path = new String(req.bytes(), StandardCharsets.UTF_8);
        if (!path.startsWith("/")) {
            throw new ErrorReply(400, "path must start with '/': " + path);
        }
        HttpRequest.Builder b = HttpRequest.newBuilder(upstream.resolve(path));
        long left = req.remainingNanos();
        if (left != Long.MAX_VALUE) {
            /* give up when the Lua caller does */
            b.timeout(Duration.ofNanos(Math.max(left, 1)));
        }
        return b.build();
    }

    private CompletableFuture<byte[]> fetch(Request req) throws ErrorReply {
        HttpRequest hr = request(req);
        return limiter.run(() -> client.sendAsync(hr,
                HttpResponse.BodyHandlers.ofByteArray()))
            .thenApply(resp -> {
                if (resp.statusCode() != 200) {
                    throw new CompletionException(new ErrorReply(
                        resp.statusCode(),
                        "upstream answered " + resp.statusCode()));
                }
                return resp.body();
            });
    }

    private void lines(Request req, Sink sink) throws Exception {
        HttpRequest hr = request(req);
        /* A pool slot for the whole stream: held until the body ends. */
        CompletableFuture<Void> done = new CompletableFuture<>();
        CompletableFuture<Void> slot = new CompletableFuture<>();
        limiter.run(() -> {
            slot.complete(null);
            return done;
        });
        try {
            long left = req.remainingNanos();
            slot.get(left == Long.MAX_VALUE ? Long.MAX_VALUE
                : Math.max(left, 1), TimeUnit.NANOSECONDS);
            HttpResponse<Stream<String>> resp = client.send(hr,
                HttpResponse.BodyHandlers.ofLines());
            try (Stream<String> body = resp.body()) {
                if (resp.statusCode() != 200) {
                    throw new ErrorReply(resp.statusCode(),
                        "upstream answered " + resp.statusCode());
                }
                /* this line carries the caller's request id */
                LOG.info("lines: streaming " + hr.uri().getPath());
                long n = 0;
                try {
                    for (Iterator<String> it = body.iterator(); it.hasNext();
                         n++) {
                        sink.send((it.next() + "\n")
                            .getBytes(StandardCharsets.UTF_8));
                    }
                } catch (CancellationException e) {
                    LOG.info("lines: reader gone after " + n + " line(s): "
                        + e.getMessage());
                    throw e;
                }
                LOG.info("lines: " + n + " line(s) sent");
            }
        } catch (TimeoutException e) {
            throw new ErrorReply(504, "no pool connection before the"
                + " deadline");
        } finally {
            done.complete(null);
        }
    }

    @Override
    public void close() throws Exception {
        /* HttpClient is AutoCloseable from Java 21 on. */
        if (client instanceof AutoCloseable) {
            ((AutoCloseable) client).close();
        }
    }

    /** Runs at most n stages at once; the others wait, first come first. */
    static final class Limiter {
        private final Semaphore permits;
        private final ConcurrentLinkedQueue<Runnable> waiting =
            new ConcurrentLinkedQueue<>();

        Limiter(int n) {
            permits = new Semaphore(n);
        }

        <T> CompletableFuture<T> run(Supplier<CompletableFuture<T>> task) {
            CompletableFuture<T> out = new CompletableFuture<>();
            waiting.add(() -> {
                CompletableFuture<T> f;
                try {
                    f = task.get();
                } catch (RuntimeException e) {
                    f = CompletableFuture.failedFuture(e);
                }
                f.whenComplete((v, e) -> {
                    permits.release();
                    drain();
                    if (e != null) {
                        out.completeExceptionally(e);
                    } else {
                        out.complete(v);
                    }
                });
            });
            drain();
            return out;
        }

        private void drain() {
            while (!waiting.isEmpty() && permits.tryAcquire()) {
                Runnable next = waiting.poll();
                if (next == null) {
                    permits.release();
                } else {
                    next.run();
                }
            }
        }
    }
}
