package nbffi

/*
#include "nbffi.h"

typedef struct {
    const char  *method;
    size_t       method_len;
    const void  *payload;
    size_t       payload_len;
    int64_t      deadline;
    int64_t      now;
} nbffi_go_task_t;

// One cgo call for everything a popped task is started with.
static void
nbffi_go_task_info(nbffi_task_t *t, nbffi_go_task_t *info)
{
    info->method = nbffi_task_method(t, &info->method_len);
    info->payload = nbffi_task_payload(t, &info->payload_len);
    info->deadline = nbffi_task_deadline(t);
    info->now = info->deadline != 0 ? nbffi_now_ns() : 0;
}
*/
import "C"

import (
	"context"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

const (
	batchSize = 64

	// Bounds of the poller's spin (see spinner), those of libnbffi's own
	// spin in nbffi_queue_pop.
	spinMax = 50 * time.Microsecond
	spinMin = time.Microsecond
)

// runtime is one nbffi runtime: one queue, started by nbffi_runtime_init.
// The Go runtime is process-wide, so several of them (loaded with different
// cfg) share one set of handlers and differ by their state.
type runtime struct {
	q     *C.nbffi_queue_t
	state any
	ctx   runtimeCtx // done when the runtime is freed

	efd    *os.File // the queue's eventfd, our own copy
	poller sync.WaitGroup
	calls  sync.WaitGroup
	watch  watcher
}

// runtimes maps the queue that init and fini receive to its runtime.
var runtimes sync.Map // *C.nbffi_queue_t -> *runtime

// procsOnce sets GOMAXPROCS at the first init, see the package doc.
var procsOnce sync.Once

func startRuntime(q *C.nbffi_queue_t, cfg []byte) error {
	regMu.Lock()
	frozen.Store(true)
	hook := initFunc
	regMu.Unlock()

	procsOnce.Do(func() {
		// One P: an idle second P makes every handler goroutine wake a
		// thread for nothing (several us and two context switches per
		// call), and nginx runs one worker, hence one Go runtime, per CPU.
		if os.Getenv("GOMAXPROCS") == "" {
			goruntime.GOMAXPROCS(1)
		}
	})

	efd, err := queueFile(q)
	if err != nil {
		return err
	}

	rt := &runtime{q: q, efd: efd}
	rt.ctx.rt = rt

	if hook != nil {
		state, err := callInit(hook, &rt.ctx, cfg)
		if err != nil {
			rt.ctx.cancel(context.Canceled)
			efd.Close()
			return err
		}
		rt.state = state
	}

	runtimes.Store(q, rt)
	rt.watch.start()
	rt.poller.Add(1)
	go rt.poll()
	return nil
}

func callInit(hook InitFunc, ctx context.Context, cfg []byte) (state any,
	err error) {

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic in init hook: %v", r)
		}
	}()
	return hook(ctx, cfg)
}

// stopRuntime runs in nbffi_runtime_fini, after the host closed the queue.
// It returns once no goroutine will touch the queue or a task again: the
// poller has drained the queue, and every handler has returned (their ctx
// is cancelled to make them hurry).
func stopRuntime(q *C.nbffi_queue_t) {
	v, ok := runtimes.LoadAndDelete(q)
	if !ok {
		return
	}
	rt := v.(*runtime)

	rt.poller.Wait()
	rt.efd.Close()
	rt.ctx.cancel(context.Canceled)
	rt.watch.cancelAll()
	rt.calls.Wait()
	rt.watch.stop()
	closeState(rt)
}

func closeState(rt *runtime) {
	c, ok := rt.state.(io.Closer)
	if !ok {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			logText(rt.q, LevelErr, fmt.Sprintf("panic closing state: %v", r))
		}
	}()
	if err := c.Close(); err != nil {
		logText(rt.q, LevelErr, "closing state: "+err.Error())
	}
}

// poll pops batches until the queue is closed and empty.
//
// It never blocks in C: a goroutine that sits in a long cgo call holds a
// scheduler P in the "syscall" state, which Go's sysmon keeps taking back
// and handing to another thread that wakes up for nothing, several context
// switches per call.  Instead the poller pops without waiting, spins a
// little (yielding to the handlers), and then parks in Go's netpoller on
// the queue's eventfd, like any goroutine waiting for I/O.
func (rt *runtime) poll() {
	defer rt.poller.Done()

	var batch [batchSize]*C.nbffi_task_t
	var drain [8]byte
	s := spinner{budget: spinMax}
	for {
		n := s.pop(rt.q, &batch)
		if n < 0 {
			if n != C.NBFFI_ECLOSED {
				logText(rt.q, LevelErr, "nbffi_queue_pop: "+
					C.GoString(C.nbffi_strerror(C.int(n))))
			}
			return
		}
		if n == 0 {
			// Readable once a task is queued into the empty queue, or
			// the queue is closed; the read drains it.
			parked := time.Now()
			if _, err := rt.efd.Read(drain[:]); err != nil {
				logText(rt.q, LevelErr, "reading the queue's fd: "+
					err.Error())
				return
			}
			s.woke(time.Since(parked))
			continue
		}
		for _, t := range batch[:n] {
			rt.start(t)
		}
	}
}

// spinner is the poller's spin before it parks, adaptive like the one of
// nbffi_queue_pop: a spin that found nothing halves the budget (down to
// none), a park that a task ended sooner than spinMax raises it, since a
// spin would have caught that task.  It catches the next call of a busy
// caller without a wake-up, and costs an idle runtime nothing.
type spinner struct {
	budget time.Duration
}

// pop takes a batch without waiting, trying again for up to the budget
// while the handlers just started run (yielding to them: a short handler
// answers on this thread before the next task is looked for).
func (s *spinner) pop(q *C.nbffi_queue_t, batch *[batchSize]*C.nbffi_task_t) int {
	var end time.Time
	for {
		n := int(C.nbffi_queue_pop(q, &batch[0], batchSize, 0))
		if n != 0 {
			return n
		}
		now := time.Now()
		if end.IsZero() {
			end = now.Add(s.budget)
		} else if now.After(end) {
			if s.budget /= 2; s.budget < spinMin {
				s.budget = 0
			}
			return 0
		}
		goruntime.Gosched()
	}
}

func (s *spinner) woke(slept time.Duration) {
	if slept < spinMax {
		s.budget = min(max(s.budget*2, slept*2, spinMin), spinMax)
	}
}

// queueFile is the queue's eventfd, duplicated so that Go's netpoller can
// own (and close) its copy.
func queueFile(q *C.nbffi_queue_t) (*os.File, error) {
	fd := int(C.nbffi_queue_fd(q))
	if fd < 0 {
		return nil, fmt.Errorf("nbffi_queue_fd: %s",
			C.GoString(C.nbffi_strerror(C.int(fd))))
	}
	dup, err := syscall.Dup(fd)
	if err != nil {
		return nil, fmt.Errorf("dup of the queue's fd: %v", err)
	}
	syscall.CloseOnExec(dup)
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return nil, fmt.Errorf("queue fd: %v", err)
	}
	return os.NewFile(uintptr(dup), "nbffi-queue"), nil
}

// start answers a task for an unknown method at once, and otherwise runs
// its handler in a goroutine of its own.
func (rt *runtime) start(t *C.nbffi_task_t) {
	var info C.nbffi_go_task_t
	C.nbffi_go_task_info(t, &info)

	// A view for the lookup only: the map does not keep the key.
	method := unsafe.String((*byte)(unsafe.Pointer(info.method)),
		int(info.method_len))
	h := handlers[method]
	if h == nil {
		msg := fmt.Sprintf("unknown method %q", method)
		C.nbffi_task_respond(t, StatusUnknownMethod,
			unsafe.Pointer(unsafe.StringData(msg)), C.size_t(len(msg)))
		return
	}

	var payload []byte
	if info.payload_len > 0 {
		payload = unsafe.Slice((*byte)(info.payload), int(info.payload_len))
	}

	var deadline time.Time
	if info.deadline != 0 {
		deadline = time.Now().Add(time.Duration(info.deadline - info.now))
	}

	rt.calls.Add(1)
	go rt.run(t, h, payload, deadline)
}

func (rt *runtime) run(t *C.nbffi_task_t, h Handler, payload []byte,
	deadline time.Time) {

	defer rt.calls.Done()

	c := &call{rt: rt, task: t, deadline: deadline}
	rt.watch.add(c)
	if rt.ctx.Err() != nil {
		// fini's cancelAll ran before the add
		c.cancel(context.Canceled)
	}
	reply, status := c.invoke(h, payload)
	rt.watch.remove(c)

	c.end()
	c.respond(status, reply)
}
