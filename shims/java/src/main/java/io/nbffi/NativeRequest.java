package io.nbffi;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/*
 * A request over an nbffi task.  The task's memory is freed soon after it
 * is answered, so every native access happens between enter() and exit()
 * and the answer claims the task first: state goes OPEN -> BUSY -> OPEN
 * around accesses and OPEN -> ANSWERED exactly once.  After that no native
 * call touches the task, whichever thread tries.
 *
 * The payload view is the exception: a direct buffer over the task's
 * memory that the handler reads without a native call.  Once one was
 * handed out, only the method's own answer may free that memory; a close
 * that gives up on the call leaves it unanswered instead (see Instance),
 * and nbffi then keeps the memory for good.
 */
final class NativeRequest implements Request, Methods.Reply {

    /* answerUnlessViewed: what it did. */
    static final int ANSWERED_NOW = 0;
    static final int ANSWERED_BEFORE = 1;
    static final int VIEWED = 2;

    private static final int OPEN = 0;
    private static final int BUSY = 1;
    private static final int ANSWERED = 2;
    private static final VarHandle STATE;
    private static final ByteBuffer EMPTY =
        ByteBuffer.allocate(0).asReadOnlyBuffer();

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
        enter();
        try {
            return owner.hurrying() || Native.cancelled(task);
        } finally {
            exit();
        }
    }

    @Override
    public void ok(byte[] data) {
        answer(0, data);
    }

    @Override
    public void fail(Throwable t) {
        answer(Failure.status(t),
            Failure.text(t).getBytes(StandardCharsets.UTF_8));
    }

    /* Answers unless already answered; false if it was. */
    boolean answer(int status, byte[] data) {
        for (;;) {
            int s = state;
            if (s == ANSWERED) {
                return false;
            }
            if (s == OPEN && STATE.compareAndSet(this, OPEN, ANSWERED)) {
                break;
            }
            Thread.onSpinWait();
        }
        respond(status, data);
        return true;
    }

    /*
     * For a close that gives up: answers unless answered before or a
     * payload view was handed out (its reader may still run).  While BUSY
     * no view can appear.
     */
    int answerUnlessViewed(int status, byte[] data) {
        if (!tryEnter()) {
            return ANSWERED_BEFORE;
        }
        if (view != null) {
            exit();
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

    /* OPEN -> BUSY; false once answered. */
    private boolean tryEnter() {
        for (;;) {
            int s = state;
            if (s == ANSWERED) {
                return false;
            }
            if (s == OPEN && STATE.compareAndSet(this, OPEN, BUSY)) {
                return true;
            }
            Thread.onSpinWait();
        }
    }

    private void exit() {
        state = OPEN;
    }

    private IllegalStateException gone() {
        return new IllegalStateException("call '"
            + (entry == null ? "?" : entry.name)
            + "' already answered: its payload is gone");
    }
}
