package bench;

import io.nbffi.Handler;
import io.nbffi.Methods;
import io.nbffi.Request;

/** The benchmark's handler, hosted by nbffi and by Sidecar alike. */
public final class EchoHandler implements Handler {
    @Override
    public void register(Methods m) {
        m.sync("echo", Request::bytes);
    }
}
