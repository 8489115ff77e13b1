package bench;

import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * The classic alternative to nbffi: a separate JVM serving a Handler's
 * method on a unix stream socket.  Each request and reply is a frame of a
 * 4-byte big-endian length and that many bytes; connections stay open and
 * each has its own thread.
 *
 * <p>Usage: java -cp nbffi.jar:classes bench.Sidecar SOCKET CLASS METHOD
 */
public final class Sidecar {

    private static final int MAX_FRAME = 64 << 20;

    private Sidecar() {
    }

    public static void main(String[] args) throws Exception {
        Path path = Path.of(args[0]);
        Handler handler = (Handler) Class.forName(args[1])
            .getConstructor().newInstance();
        Methods methods = Methods.of(handler, Map.of());
        String method = args[2];

        Files.deleteIfExists(path);
        ServerSocketChannel server =
            ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        // a backlog for wrk's bursts of new connections (c=200)
        server.bind(UnixDomainSocketAddress.of(path), 1024);
        System.out.println("listening on " + path);
        System.out.flush();
        for (;;) {
            SocketChannel c = server.accept();
            Thread t = new Thread(() -> serve(c, methods, method));
            t.setDaemon(true);
            t.start();
        }
    }

    private static void serve(SocketChannel c, Methods methods,
        String method) {
        ByteBuffer header = ByteBuffer.allocate(4);
        try (c) {
            for (;;) {
                header.clear();
                if (!fill(c, header)) {
                    return;
                }
                int n = header.getInt(0);
                if (n < 0 || n > MAX_FRAME) {
                    System.err.println("frame of " + n + " bytes refused");
                    return;
                }
                ByteBuffer body = ByteBuffer.allocate(n);
                if (!fill(c, body)) {
                    return;
                }
                byte[] reply = methods.call(Request.of(method, body.array()))
                    .join();
                header.clear();
                header.putInt(0, reply.length);
                ByteBuffer[] out = {header, ByteBuffer.wrap(reply)};
                while (out[1].hasRemaining()) {
                    c.write(out);
                }
            }
        } catch (IOException e) {
            System.err.println("connection: " + e);
        }
    }

    /* Reads until b is full; false at end of stream. */
    private static boolean fill(SocketChannel c, ByteBuffer b)
        throws IOException {
        while (b.hasRemaining()) {
            if (c.read(b) < 0) {
                return false;
            }
        }
        return true;
    }
}
