package io.nbffi;

import java.nio.ByteBuffer;
import java.util.Objects;

/** A request over heap memory: see {@link Request#of}. */
final class HeapRequest implements Request {

    private final String method;
    private final byte[] payload;

    HeapRequest(String method, byte[] payload) {
        this.method = Objects.requireNonNull(method, "method");
        this.payload = payload.clone();
    }

    @Override
    public String method() {
        return method;
    }

    @Override
    public ByteBuffer payload() {
        return ByteBuffer.wrap(payload).asReadOnlyBuffer();
    }

    @Override
    public byte[] bytes() {
        return payload.clone();
    }

    @Override
    public int size() {
        return payload.length;
    }

    @Override
    public long remainingNanos() {
        return Long.MAX_VALUE;
    }

    @Override
    public boolean cancelled() {
        return false;
    }
}
