package io.nbffi.it;

import io.nbffi.Handler;
import io.nbffi.Methods;

/** A handler whose register fails: the runtime must not load. */
public final class FailingHandler implements Handler {
    @Override
    public void register(Methods m) {
        throw new IllegalArgumentException("arg.required is missing");
    }
}
