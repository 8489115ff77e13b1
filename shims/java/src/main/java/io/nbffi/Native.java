package io.nbffi;

import java.nio.ByteBuffer;

/*
 * The native methods of libnbffi_java.so, bound with RegisterNatives when
 * the loader starts the first runtime of the process.  task, queue and
 * table are C pointers.  A task is valid from pop until respond; callers
 * guarantee that (see NativeRequest).  A task that nbffi completed as
 * closed when its runtime was orphaned stays valid for good, and respond
 * then does nothing.
 */
final class Native {

    /* pop's result at end of queue: the runtime is closed and drained. */
    static final int CLOSED = -1;

    /* Codes of send and emit (NBFFI_E*). */
    static final int OK = 0;
    static final int EPERM = -1;
    static final int E2BIG = -7;
    static final int EQFULL = -11;
    static final int ENOMEM = -12;
    static final int EINVAL = -22;
    static final int ECLOSED = -32;
    static final int ETIMEDOUT = -110;
    static final int ECANCELED = -125;

    private Native() {
    }

    /*
     * Takes up to max tasks (max <= tasks.length, 2 * max <= info.length),
     * waiting up to timeoutNs (-1: until a task comes or the queue closes).
     * For task i, info[2i] is the index of its method in table (-1: not
     * registered) and info[2i+1] its payload length.  Returns the count,
     * or CLOSED.
     */
    static native int pop(long queue, long table, long[] tasks, int[] info,
        int max, long timeoutNs);

    /* The method name (for names that are not in the table). */
    static native String method(long task);

    /* A direct buffer over the payload (length > 0), writable: wrap it. */
    static native ByteBuffer payload(long task);

    /* A copy of the payload. */
    static native byte[] bytes(long task);

    /* Deadline on the now() clock, 0 for none. */
    static native long deadline(long task);

    static native boolean cancelled(long task);

    /* Answers the task with status and the first len bytes of data
       (null: empty), copied once; the task is gone afterwards. */
    static native void respond(long task, int status, byte[] data, int len);

    /* The call's metadata as nbffi encodes it, or null when none. */
    static native byte[] meta(long task);

    /* The stream's window, 0 for a plain call. */
    static native int window(long task);

    /* nbffi_task_send of data[off, off + len), waiting up to timeoutNs
       (-1: the task's deadline) while the window is full; OK or an
       NBFFI_E* code. */
    static native int send(long task, byte[] data, int off, int len,
        long timeoutNs);

    /* A log line carrying the task's metadata. */
    static native void taskLog(long task, int level, byte[] message);

    /* nbffi_emit; OK or an NBFFI_E* code. */
    static native int emit(long queue, byte[] name, byte[] data, int off,
        int len);

    /* A log line to the host; level as nbffi_log_level_t. */
    static native void log(long queue, int level, byte[] message);

    /* nbffi_now_ns(): the clock of deadlines. */
    static native long now();

    /* A C table of method names (UTF-8) that pop matches against. */
    static native long table(byte[][] names);

    static native void freeTable(long table);
}
