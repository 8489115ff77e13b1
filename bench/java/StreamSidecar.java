package bench;

import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;
import io.nbffi.Sink;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * The streaming handler's "chunks" in a separate JVM on a unix stream
 * socket: a request frame (4-byte big-endian length, then "STREAM N
 * SIZE") is answered with N frames of SIZE bytes, sent as the method
 * sends them (the socket's buffer is the window), then an empty frame.
 * A thread per connection.
 *
 * <p>Usage: java -cp nbffi.jar:classes bench.StreamSidecar SOCKET
 */
public final class StreamSidecar {

    private StreamSidecar() {
    }

    public static void main(String[] args) throws Exception {
        Path path = Path.of(args[0]);
        Methods methods = Methods.of(new StreamHandler(), Map.of());
        Files.deleteIfExists(path);
        ServerSocketChannel server =
            ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path), 128);
        System.out.println("listening on " + path);
        System.out.flush();
        for (;;) {
            SocketChannel c = server.accept();
            Thread t = new Thread(() -> serve(c, methods));
            t.setDaemon(true);
            t.start();
        }
    }

    private static void serve(SocketChannel c, Methods methods) {
        ByteBuffer header = ByteBuffer.allocate(4);
        try (c) {
            for (;;) {
                header.clear();
                if (!fill(c, header)) {
                    return;
                }
                ByteBuffer body = ByteBuffer.allocate(header.getInt(0));
                if (!fill(c, body)) {
                    return;
                }
                String req = new String(body.array(), StandardCharsets.UTF_8);
                String payload = req.substring("STREAM ".length());
                methods.call(Request.of("chunks",
                        payload.getBytes(StandardCharsets.UTF_8)),
                    new FrameSink(c)).join();
                write(c, new byte[0]);
            }
        } catch (IOException | UncheckedIOException e) {
            /* the client went away */
        }
    }

    private static boolean fill(SocketChannel c, ByteBuffer b)
        throws IOException {
        while (b.hasRemaining()) {
            if (c.read(b) < 0) {
                return false;
            }
        }
        return true;
    }

    static void write(SocketChannel c, byte[] data) throws IOException {
        ByteBuffer[] frame = {
            ByteBuffer.allocate(4).putInt(0, data.length),
            ByteBuffer.wrap(data)};
        while (frame[1].hasRemaining() || frame[0].hasRemaining()) {
            c.write(frame);
        }
    }

    /* Each chunk a frame, written at once (blocking: backpressure). */
    private static final class FrameSink implements Sink {
        private final SocketChannel c;

        FrameSink(SocketChannel c) {
            this.c = c;
        }

        @Override
        public void send(byte[] chunk) {
            try {
                write(c, chunk);
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        @Override
        public void send(ByteBuffer chunk) {
            ByteBuffer b = chunk.duplicate();
            byte[] a = new byte[b.remaining()];
            b.get(a);
            send(a);
        }

        @Override
        public boolean trySend(byte[] chunk) {
            send(chunk);
            return true;
        }

        @Override
        public boolean cancelled() {
            return !c.isOpen();
        }

        @Override
        public int window() {
            return 16;
        }
    }
}
