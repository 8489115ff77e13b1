package nbffi

/*
#include <stdlib.h>
#include "nbffi.h"
#include "runtime.h"

typedef struct {
    const char  *method;
    size_t       method_len;
    const void  *payload;
    size_t       payload_len;
    int64_t      deadline;
    int64_t      now;
    const void  *meta;
    size_t       meta_len;
    unsigned     window;
} nbffi_go_task_t;

// One cgo call for everything a popped task is started with.
static void
nbffi_go_task_info(nbffi_task_t *t, nbffi_go_task_t *info)
{
    info->method = nbffi_task_method(t, &info->method_len);
    info->payload = nbffi_task_payload(t, &info->payload_len);
    info->deadline = nbffi_task_deadline(t);
    info->now = info->deadline != 0 ? nbffi_now_ns() : 0;
    info->meta = nbffi_task_meta_raw(t, &info->meta_len);
    info->window = nbffi_task_stream_window(t);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	batchSize = 64

	// The least spin of the poller (see spinner), that of libnbffi's own
	// spin in nbffi_queue_pop; the most is the runtime's
	// (nbffi_queue_spin_max, 50 us unless the host set it).
	spinMin = time.Microsecond
)

// runtime is one nbffi runtime: one queue, started by nbffi_runtime_init.
// The Go runtime is process-wide, so several of them (loaded with different
// cfg) share one set of handlers and differ by their state.
type runtime struct {
	q     *C.nbffi_queue_t
	c     *C.nbffi_go_rt_t // the runtime's C half, see runtime.h
	state any
	ctx   runtimeCtx // done when the runtime is closed

	efd     *os.File // the queue's eventfd, our own copy
	calls   flight
	watch   watcher
	windows windows // sends waiting for their stream's window

	// gate keeps goroutines of the runtime (the init hook's, handlers')
	// from emitting or logging through q once stop has reported to fini,
	// which may free the runtime then
	gate sync.RWMutex
	gone bool
}

// procsOnce sets GOMAXPROCS at the first init, see the package doc.
var procsOnce sync.Once

// startRuntime runs in nbffi_runtime_init and returns the pointer that
// libnbffi hands to nbffi_runtime_fini: the runtime's C half (runtime.h).
func startRuntime(q *C.nbffi_queue_t, cfg []byte) (unsafe.Pointer, error) {
	regMu.Lock()
	frozen.Store(true)
	hook := initFunc
	regMu.Unlock()

	procsOnce.Do(func() { setProcs(q) })

	efd, err := queueFile(q)
	if err != nil {
		return nil, err
	}

	rt := &runtime{q: q, efd: efd}
	rt.ctx.rt = rt

	if hook != nil {
		state, err := callInit(hook, &rt.ctx, cfg)
		if err != nil {
			rt.ctx.cancel(context.Canceled)
			efd.Close()
			return nil, err
		}
		rt.state = state
	}

	// C keeps no pointer to rt: fini only waits for the poller's report
	rt.c = C.nbffi_go_rt_new()
	if rt.c == nil {
		closeState(rt)
		rt.ctx.cancel(context.Canceled)
		efd.Close()
		return nil, errors.New("out of memory")
	}
	rt.calls.n = (*int64)(unsafe.Pointer(&rt.c.running))

	rt.watch.start()
	go rt.poll()
	return unsafe.Pointer(rt.c), nil
}

// setProcs sets GOMAXPROCS from the process's environment as C's getenv
// sees it now.  Go read its own copy when the library was loaded, from the
// environment block the process was started with; nginx makes a new one
// for its workers (its env directive) and points C's environ at it.
// Unset: 1.
func setProcs(q *C.nbffi_queue_t) {
	// One P by default: an idle second P makes every handler goroutine
	// wake a thread for nothing (several us and two context switches per
	// call), and nginx runs one worker, hence one Go runtime, per CPU.
	n := 1
	name := C.CString("GOMAXPROCS")
	defer C.free(unsafe.Pointer(name))
	if v := C.getenv(name); v != nil {
		s := C.GoString(v)
		if k, err := strconv.Atoi(s); err == nil && k > 0 {
			n = k
		} else {
			logText(q, LevelWarn, fmt.Sprintf("GOMAXPROCS=%q is not a "+
				"positive number: using %d", s, n))
		}
	}
	goruntime.GOMAXPROCS(n)
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

// stop runs when the poller is done: the host closed the queue and the
// tasks that were queued have started.  It makes every handler hurry
// (cancels its ctx), waits for the handlers to return, closes the state
// and reports to nbffi_runtime_fini (fini.c), which waits for the report
// until its deadline and otherwise counts the handlers still running: it
// tells libnbffi, which orphans the runtime and refuses their late
// answers.  The state of such a runtime is closed when its last handler
// returns, if ever.
func (rt *runtime) stop() {
	stayed := 1 // unless it gets to the end: libnbffi must then free nothing
	defer func() {
		if r := recover(); r != nil {
			logText(rt.q, LevelErr, fmt.Sprintf("panic in stop: %v", r))
		}
		C.nbffi_go_rt_stopped(rt.c, C.int(stayed))
	}()

	rt.efd.Close()
	rt.ctx.cancel(context.Canceled)
	rt.watch.cancelAll()
	// every ctx is cancelled: nothing is left to watch for
	rt.watch.stop()
	rt.calls.wait()
	closeState(rt)
	rt.gate.Lock()
	rt.gone = true
	rt.gate.Unlock()
	stayed = 0
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

// flight counts the running handlers, in C memory, so that fini can tell
// how many still run at its deadline without running Go code.
type flight struct {
	n       *int64 // in the runtime's C half, for fini to read
	waiting atomic.Bool
	idle    chan struct{} // signalled when n drops to 0 while waiting
}

func (f *flight) add() { atomic.AddInt64(f.n, 1) }

func (f *flight) done() {
	if atomic.AddInt64(f.n, -1) == 0 && f.waiting.Load() {
		select {
		case f.idle <- struct{}{}:
		default:
		}
	}
}

// wait returns once no handler runs.  Call it once.
func (f *flight) wait() {
	f.idle = make(chan struct{}, 1)
	f.waiting.Store(true)
	for atomic.LoadInt64(f.n) != 0 {
		<-f.idle
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
	defer rt.stop()

	var batch [batchSize]*C.nbffi_task_t
	var drain [8]byte
	s := spinner{pending: (*uint32)(unsafe.Pointer(C.nbffi_queue_pending(rt.q)))}
	s.bound(rt.q)
	s.budget = s.max
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
			s.bound(rt.q)
			// Readable once a task is queued into the empty queue, or
			// the queue is closed; the read drains it.
			parked := time.Now()
			if _, err := rt.efd.Read(drain[:]); err != nil {
				logText(rt.q, LevelErr, "reading the queue's fd: "+
					err.Error())
				return
			}
			s.woke(time.Since(parked))
			rt.windows.wake()
			continue
		}
		for _, t := range batch[:n] {
			rt.start(t)
		}
		rt.windows.wake()
	}
}

// spinner is the poller's spin before it parks, adaptive like the one of
// nbffi_queue_pop: a spin that found nothing halves the budget (down to
// none), a park that a task ended sooner than the bound raises it, since a
// spin would have caught that task.  It catches the next call of a busy
// caller without a wake-up, and costs an idle runtime nothing.
type spinner struct {
	budget  time.Duration
	max     time.Duration // the runtime's bound, read at each park
	pending *uint32       // the queue's count of queued tasks
}

func (s *spinner) bound(q *C.nbffi_queue_t) {
	s.max = time.Duration(C.nbffi_queue_spin_max(q))
	s.budget = min(s.budget, s.max)
}

// pop takes a batch without waiting, trying again for up to the budget
// while the handlers just started run (yielding to them: a short handler
// answers on this thread before the next task is looked for).  Between
// pops it watches the queue's count in memory, not through cgo: each cgo
// call puts the P in the syscall state, and sysmon hands a P that stays
// there over one of its ticks (20 us while busy) to another thread, which
// happens whenever this thread is descheduled during the call.
func (s *spinner) pop(q *C.nbffi_queue_t, batch *[batchSize]*C.nbffi_task_t) int {
	var end time.Time
	for {
		n := int(C.nbffi_queue_pop(q, &batch[0], batchSize, 0))
		if n != 0 {
			return n
		}
		if s.budget == 0 {
			return 0
		}
		if end.IsZero() {
			end = time.Now().Add(s.budget)
		}
		for atomic.LoadUint32(s.pending) == 0 {
			if time.Now().After(end) {
				if s.budget /= 2; s.budget < spinMin {
					s.budget = 0
				}
				return 0
			}
			goruntime.Gosched()
		}
	}
}

func (s *spinner) woke(slept time.Duration) {
	if slept < s.max {
		s.budget = min(max(s.budget*2, slept*2, spinMin), s.max)
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
		msg := unknownMethod(method)
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

	c := &call{rt: rt, task: t, deadline: deadline,
		window: uint32(info.window)}
	if info.meta_len > 0 {
		// a copy: goroutines of the handler may outlive the task
		c.meta = C.GoStringN((*C.char)(info.meta), C.int(info.meta_len))
	}

	rt.calls.add()
	go rt.run(c, h, payload)
}

func (rt *runtime) run(c *call, h Handler, payload []byte) {
	defer rt.calls.done()

	rt.watch.add(c)
	if rt.ctx.Err() != nil {
		// fini's cancelAll ran before the add
		c.cancel(context.Canceled)
	}
	reply, status := c.invoke(h, payload)
	if status == StatusTimeout {
		c.awaitRelease()
	}
	rt.watch.remove(c)

	c.end()
	c.respond(status, reply)
}

// unknownMethod is the reply to a call of a method without a handler: it
// names the methods there are, as the Python and Java shims do.
func unknownMethod(method string) string {
	names := make([]string, 0, len(handlers))
	for m := range handlers {
		names = append(names, m)
	}
	sort.Strings(names)
	return fmt.Sprintf("unknown method %q; methods: %s", method,
		strings.Join(names, ", "))
}
