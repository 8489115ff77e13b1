package bench;

import io.nbffi.Handler;
import io.nbffi.Methods;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.HexFormat;

/**
 * The hashing job of bench/run: "md5" replies with the hex MD5 of the
 * payload, the job bench/run also gives ngx.run_worker_thread.
 */
public final class HashHandler implements Handler {
    @Override
    public void register(Methods m) {
        m.sync("md5", req -> {
            MessageDigest md5 = MessageDigest.getInstance("MD5");
            md5.update(req.payload());
            return HexFormat.of().formatHex(md5.digest())
                .getBytes(StandardCharsets.US_ASCII);
        });
    }
}
