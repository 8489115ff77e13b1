package io.nbffi;

import java.nio.charset.StandardCharsets;

/**
 * Events: messages the runtime sends to Lua without being asked (a name
 * and bytes, no call).  Lua handlers registered for the name in the worker
 * that loaded this runtime run with them.  From any thread, at any time
 * between {@link Handler#register} and the end of {@link Handler#close}:
 * a watcher thread, a timer, a method.  Events of one thread keep their
 * order.  {@link Methods#events()} gives the runtime's.
 */
public interface Events {

    /** Longest event name in bytes of UTF-8 (NBFFI_MAX_EVENT_NAME). */
    int MAX_NAME = 255;

    /**
     * Emits an event; never waits.  True when it was queued; false when
     * it was dropped (the worker's event queue is full or the event is
     * larger than it allows -- counted in the host's stats -- or the
     * runtime is closed).
     *
     * @throws IllegalArgumentException a name of 0 or more than
     *     {@link #MAX_NAME} bytes, or holding NUL
     */
    boolean emit(String name, byte[] data);

    /** {@link #emit(String, byte[])} of text in UTF-8. */
    default boolean emit(String name, String text) {
        return emit(name, text.getBytes(StandardCharsets.UTF_8));
    }
}
