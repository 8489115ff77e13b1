package io.nbffi;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

/*
 * A request over an nbffi task.  The task's memory is freed soon after it
 * is answered, so every native access happens between enter() and exit()
 * and the answer claims the task first: state counts the threads inside
 * (a stream's senders, a logger, a getter: several at once), and goes
 * from 0 to ANSWERED exactly once.  After that no native call touches the
 * task, whichever thread tries.  LOCKED is a short exclusive hold, for a
 * close that answers unless a payload view was handed out.
 *
 * The payload view is the exception: a direct buffer over the task's
 * memory that the handler reads without a native call.  Once one was
 * handed out, only the method's own answer may free that memory; a close
 * that gives up on the call leaves it unanswered instead (see Instance),
 * and nbffi then keeps the memory for good.
 *
 * For a stream (a call from rt:stream), the request is its sink too.
 */
final class NativeRequest implements Request, Sink, Methods.Reply {

    /* answerUnlessViewed: what it did. */
    static final int ANSWERED_NOW = 0;
    static final int ANSWERED_BEFORE = 1;
    static final int VIEWED = 2;

    private static final int ANSWERED = -1;
    private static final int LOCKED = -2;
    private static final VarHandle STATE;
    private static final ByteBuffer EMPTY =
        ByteBuffer.allocate(0).asReadOnlyBuffer();
    /* A blocked send wakes this often to see a close hurrying. */
    private static final long SEND_SLICE_NANOS =
        TimeUnit.MILLISECONDS.toNanos(50);
    private static final int UNKNOWN = -1;
    /* How long the answer of a call that timed out waits for its caller
       to give up (see fail). */
    private static final long TIMEOUT_GRACE_NANOS =
        TimeUnit.MILLISECONDS.toNanos(250);

    static {
        try {
            STATE = MethodHandles.lookup()
                .findVarHandle(NativeRequest.class, "state", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final Instance owner;
    private final long task;
    private final int size;
    final Methods.Entry entry;          /* null: method not registered */
    private volatile int state;
    private volatile ByteBuffer view;
    private volatile Map<String, String> meta;
    private volatile int window = UNKNOWN;
    private volatile String gaveUp;     /* why sends fail; null: they may */
    private volatile boolean timedOut;  /* a send saw the deadline pass */

    NativeRequest(Instance owner, long task, Methods.Entry entry, int size) {
        this.owner = owner;
        this.task = task;
        this.entry = entry;
        this.size = size;
    }

    @Override
    public String method() {
        if (entry != null) {
            return entry.name;
        }
        enter();
        try {
            return Native.method(task);
        } finally {
            exit();
        }
    }

    @Override
    public ByteBuffer payload() {
        if (size == 0) {
            return EMPTY.duplicate();
        }
        ByteBuffer v = view;
        if (v != null && state == ANSWERED) {
            throw gone();
        }
        if (v == null) {
            enter();
            try {
                v = Native.payload(task).asReadOnlyBuffer();
                /* Set before exit(): answerUnlessViewed must see it. */
                view = v;
            } finally {
                exit();
            }
        }
        return v.duplicate();
    }

    @Override
    public byte[] bytes() {
        if (size == 0) {
            return new byte[0];
        }
        enter();
        try {
            return Native.bytes(task);
        } finally {
            exit();
        }
    }

    @Override
    public int size() {
        return size;
    }

    @Override
    public long remainingNanos() {
        long deadline;
        enter();
        try {
            deadline = Native.deadline(task);
        } finally {
            exit();
        }
        return deadline == 0 ? Long.MAX_VALUE : deadline - Native.now();
    }

    @Override
    public boolean cancelled() {
        if (gaveUp != null) {
            return true;
        }
        enter();
        try {
            return owner.hurrying() || Native.cancelled(task);
        } finally {
            exit();
        }
    }

    @Override
    public Map<String, String> meta() {
        Map<String, String> m = meta;
        if (m == null) {
            enter();
            try {
                m = Names.meta(Native.meta(task));
            } finally {
                exit();
            }
            meta = m;
        }
        return m;
    }

    /* ---- Sink ---- */

    @Override
    public int window() {
        int w = window;
        if (w == UNKNOWN) {
            enter();
            try {
                w = Native.window(task);
            } finally {
                exit();
            }
            window = w;
        }
        return w;
    }

    @Override
    public void send(byte[] chunk) {
        send(chunk, 0, chunk.length);
    }

    @Override
    public void send(ByteBuffer chunk) {
        ByteBuffer b = chunk.duplicate();
        if (b.hasArray()) {
            send(b.array(), b.arrayOffset() + b.position(), b.remaining());
            return;
        }
        byte[] a = new byte[b.remaining()];
        b.get(a);
        send(a, 0, a.length);
    }

    @Override
    public boolean trySend(byte[] chunk) {
        return sendOnce(chunk, 0, chunk.length, 0) == Native.OK;
    }

    /* Waits in slices, so that a close hurrying or an interrupt ends the
       wait; the core bounds each by the task's deadline. */
    private void send(byte[] data, int off, int len) {
        for (;;) {
            if (sendOnce(data, off, len, SEND_SLICE_NANOS) == Native.OK) {
                return;
            }
            if (owner.hurrying()) {
                throw cancel("runtime closing");
            }
            if (Thread.currentThread().isInterrupted()) {
                throw cancel("interrupted while the window was full");
            }
        }
    }

    /* OK or EQFULL; throws for the rest. */
    private int sendOnce(byte[] data, int off, int len, long timeoutNs) {
        String why = gaveUp;
        if (why != null) {
            throw new CancellationException(why);
        }
        int rc;
        enter();
        try {
            rc = Native.send(task, data, off, len, timeoutNs);
        } finally {
            exit();
        }
        switch (rc) {
            case Native.OK:
            case Native.EQFULL:
                return rc;
            case Native.ECANCELED:
                throw cancel("the caller gave up (stopped reading, timed"
                    + " out or went away)");
            case Native.ETIMEDOUT:
                timedOut = true;
                throw cancel("the call's deadline passed while the window"
                    + " was full");
            case Native.ECLOSED:
                throw cancel("runtime closing");
            case Native.EPERM:
                throw new IllegalStateException("call '" + method()
                    + "' is not a stream");
            case Native.E2BIG:
                throw new IllegalArgumentException("chunk of " + len
                    + " bytes is over the runtime's max_payload");
            case Native.ENOMEM:
                throw new OutOfMemoryError("nbffi: no memory for a chunk");
            default:
                throw new IllegalStateException("nbffi_task_send: " + rc);
        }
    }

    private CancellationException cancel(String why) {
        gaveUp = why;
        return new CancellationException(why);
    }

    /* ---- logging ---- */

    /* Logs a line carrying the call's metadata; false when answered (the
       line is not written). */
    boolean log(int level, byte[] line) {
        if (!tryEnter()) {
            return false;
        }
        try {
            Native.taskLog(task, level, line);
        } finally {
            exit();
        }
        return true;
    }

    /* ---- Methods.Reply ---- */

    @Override
    public void ok(byte[] data) {
        answer(0, data);
    }

    /*
     * A method that ended because its deadline passed (its sink said so)
     * holds its answer back until the caller gave up, which it does at
     * the same deadline: Lua then reports its own "timeout", not a
     * runtime error that won the race by a few microseconds.  Never
     * longer than TIMEOUT_GRACE_NANOS; the answer then says TIMEOUT.
     */
    @Override
    public void fail(Throwable t) {
        if (timedOut && t instanceof CancellationException) {
            awaitCallerGaveUp();
            answer(ErrorReply.TIMEOUT,
                "timeout".getBytes(StandardCharsets.UTF_8));
            return;
        }
        answer(Failure.status(t),
            Failure.text(t).getBytes(StandardCharsets.UTF_8));
    }

    private void awaitCallerGaveUp() {
        long end = System.nanoTime() + TIMEOUT_GRACE_NANOS;
        while (System.nanoTime() < end && !owner.hurrying()) {
            enter();
            try {
                if (Native.cancelled(task)) {
                    return;
                }
            } finally {
                exit();
            }
            LockSupport.parkNanos(TimeUnit.MILLISECONDS.toNanos(1));
        }
    }

    @Override
    public Sink sink() {
        return window() > 0 ? this : null;
    }

    /* Answers unless already answered; false if it was.  Waits for the
       threads inside (a sender waits at most a slice). */
    boolean answer(int status, byte[] data) {
        for (int spins = 0;; spins++) {
            int s = state;
            if (s == ANSWERED) {
                return false;
            }
            if (s == 0 && STATE.compareAndSet(this, 0, ANSWERED)) {
                break;
            }
            backoff(spins);
        }
        respond(status, data);
        return true;
    }

    /*
     * For a close that gives up: answers unless answered before, a
     * payload view was handed out (its reader may still run) or a thread
     * is inside (a sender: nbffi keeps the memory it uses).
     */
    int answerUnlessViewed(int status, byte[] data) {
        for (int spins = 0;; spins++) {
            int s = state;
            if (s == ANSWERED) {
                return ANSWERED_BEFORE;
            }
            if (s > 0) {
                return VIEWED;
            }
            if (s == 0 && STATE.compareAndSet(this, 0, LOCKED)) {
                break;
            }
            backoff(spins);
        }
        if (view != null) {
            state = 0;
            return VIEWED;
        }
        state = ANSWERED;
        respond(status, data);
        return ANSWERED_NOW;
    }

    private void respond(int status, byte[] data) {
        try {
            Native.respond(task, status, data, data == null ? 0 : data.length);
        } finally {
            owner.answered(this);
        }
    }

    private void enter() {
        if (!tryEnter()) {
            throw gone();
        }
    }

    /* One more thread inside; false once answered. */
    private boolean tryEnter() {
        for (int spins = 0;; spins++) {
            int s = state;
            if (s == ANSWERED) {
                return false;
            }
            if (s >= 0 && STATE.compareAndSet(this, s, s + 1)) {
                return true;
            }
            backoff(spins);
        }
    }

    private void exit() {
        STATE.getAndAdd(this, -1);
    }

    private static void backoff(int spins) {
        if (spins < 100) {
            Thread.onSpinWait();
        } else {
            LockSupport.parkNanos(10_000);
        }
    }

    private IllegalStateException gone() {
        return new IllegalStateException("call '"
            + (entry == null ? "?" : entry.name)
            + "' already answered: its payload is gone");
    }
}
