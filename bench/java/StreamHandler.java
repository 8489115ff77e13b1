package bench;

import io.nbffi.Events;
import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.nio.charset.StandardCharsets;

/**
 * The streaming benchmark's handler, hosted by nbffi and by StreamSidecar
 * alike.  "chunks" (payload "N SIZE"): N chunks of SIZE bytes.  "emit"
 * (payload "N SIZE NAME"): N events NAME of SIZE bytes, from the calling
 * thread; replies "emitted=K dropped=D".
 */
public final class StreamHandler implements Handler {
    @Override
    public void register(Methods m) {
        m.stream("chunks", (req, sink) -> {
            String[] a = text(req).split(" ");
            int n = Integer.parseInt(a[0]);
            byte[] chunk = new byte[Integer.parseInt(a[1])];
            for (int i = 0; i < n; i++) {
                sink.send(chunk);
            }
        });
        Events events = m.events();
        m.sync("emit", req -> {
            String[] a = text(req).split(" ");
            int n = Integer.parseInt(a[0]);
            byte[] data = new byte[Integer.parseInt(a[1])];
            int queued = 0;
            for (int i = 0; i < n; i++) {
                if (events.emit(a[2], data)) {
                    queued++;
                }
            }
            return ("emitted=" + queued + " dropped=" + (n - queued))
                .getBytes(StandardCharsets.US_ASCII);
        });
    }

    private static String text(Request r) {
        return new String(r.bytes(), StandardCharsets.UTF_8);
    }
}
