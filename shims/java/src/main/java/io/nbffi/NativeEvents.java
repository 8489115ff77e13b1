package io.nbffi;

/*
 * A runtime's events: nbffi_emit on its queue while the gate is open (the
 * queue is valid until fini returns; Instance shuts the gate after the
 * handler's close).
 */
final class NativeEvents implements Events {

    private final long queue;
    private final Gate gate;

    NativeEvents(long queue, Gate gate) {
        this.queue = queue;
        this.gate = gate;
    }

    @Override
    public boolean emit(String name, byte[] data) {
        byte[] n = Names.check("event", name, MAX_NAME);
        if (!gate.enter()) {
            return false;
        }
        try {
            return Native.emit(queue, n, data, 0, data.length) == Native.OK;
        } finally {
            gate.leave();
        }
    }
}
