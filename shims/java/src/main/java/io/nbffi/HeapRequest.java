package io.nbffi;

import java.nio.ByteBuffer;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/** A request over heap memory: see {@link Request#of}. */
final class HeapRequest implements Request {

    private final String method;
    private final byte[] payload;
    private final Map<String, String> meta;

    HeapRequest(String method, byte[] payload, Map<String, String> meta) {
        this.method = Objects.requireNonNull(method, "method");
        this.payload = payload.clone();
        this.meta = Collections.unmodifiableMap(new LinkedHashMap<>(meta));
    }

    @Override
    public Map<String, String> meta() {
        return meta;
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
