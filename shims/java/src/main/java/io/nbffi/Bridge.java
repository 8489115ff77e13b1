package io.nbffi;

/*
 * The entry points the C loader calls (signatures cached in
 * native/jni.c).  Everything else in Java is reached from here.
 */
final class Bridge {

    private Bridge() {
    }

    /* A started runtime, or StartException with the loader's error text. */
    static Object start(long queue, String className, String[] classpath,
        String[] args, boolean virtual, int threads, int batch,
        long closeTimeoutMs, String logLevel) throws StartException {
        return Instance.start(queue, className, classpath, args, virtual,
            threads, batch, closeTimeoutMs, logLevel);
    }

    /* Runs poller thread index of runtime until its queue ends. */
    static void poll(Object runtime, int index) {
        ((Instance) runtime).poll(index);
    }

    /*
     * Closes runtime within deadline (nbffi_now_ns clock, 0: none); true
     * at k when poller k is still inside a handler.  abort: its pollers
     * never ran (the loader failed to start them).
     */
    static boolean[] close(Object runtime, long deadline, boolean abort)
        throws InterruptedException {
        return ((Instance) runtime).close(deadline, abort);
    }
}
