package io.nbffi;

import java.util.concurrent.atomic.AtomicInteger;

/*
 * Lets pollers into Native.pop until shut; shut() returns once none is
 * inside, so the queue and method table can be given up.  Only used when a
 * runtime is closed and pop no longer blocks, so shut() spins briefly.
 */
final class Gate {

    private final AtomicInteger state = new AtomicInteger(); /* sign: shut */

    boolean enter() {
        for (;;) {
            int s = state.get();
            if (s < 0) {
                return false;
            }
            if (state.compareAndSet(s, s + 1)) {
                return true;
            }
        }
    }

    void leave() {
        state.decrementAndGet();
    }

    void shut() {
        int s;
        do {
            s = state.get();
        } while (!state.compareAndSet(s, s | Integer.MIN_VALUE));
        while ((state.get() & Integer.MAX_VALUE) != 0) {
            Thread.onSpinWait();
        }
    }
}
