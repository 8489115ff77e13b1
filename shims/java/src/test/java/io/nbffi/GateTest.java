package io.nbffi;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;

class GateTest {

    @Test
    void shutWaitsForThoseInsideAndKeepsOthersOut() throws Exception {
        Gate g = new Gate();
        assertTrue(g.enter());
        CountDownLatch shutting = new CountDownLatch(1);
        AtomicBoolean shut = new AtomicBoolean();
        Thread t = new Thread(() -> {
            shutting.countDown();
            g.shut();
            shut.set(true);
        });
        t.start();
        assertTrue(shutting.await(10, TimeUnit.SECONDS));
        /* the shutter spins until this thread leaves */
        t.join(50);
        assertFalse(shut.get());
        g.leave();
        t.join(10000);
        assertTrue(shut.get());
        assertFalse(g.enter());
    }
}
