package example.pool;

import io.nbffi.ErrorReply;
import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Semaphore;
import java.util.function.Supplier;

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
 */
public final class PoolHandler implements Handler {

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
    }

    private CompletableFuture<byte[]> fetch(Request req) throws ErrorReply {
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
        HttpRequest hr = b.build();
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
