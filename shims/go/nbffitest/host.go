package nbffitest

/*
#cgo CFLAGS: -I${SRCDIR}/../../../core/include
#cgo LDFLAGS: -L${SRCDIR}/../../../build/core -lnbffi
#cgo LDFLAGS: -Wl,-rpath,${SRCDIR}/../../../build/core
// the shim's C entry point (fini.c) in the dynamic symbol table of the
// test binary, where testdata/fwd.c finds it
#cgo LDFLAGS: -rdynamic

#include <malloc.h>
#include <poll.h>
#include <stdlib.h>
#include "nbffi.h"

// Waits up to ms for the host's eventfd, then drains it and reaps.
static int
testhost_reap(nbffi_host_t *h, nbffi_task_t **out, int max, int ms)
{
    struct pollfd  p;

    if (!nbffi_host_pending(h)) {
        p.fd = nbffi_host_fd(h);
        p.events = POLLIN;
        (void) poll(&p, 1, ms);
    }
    nbffi_host_drain(h);
    return nbffi_host_reap(h, out, max);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"time"
	"unsafe"
)

// Error is a negative NBFFI_E* code with the core's text.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func codeErr(rc C.int, detail string) error {
	msg := C.GoString(C.nbffi_strerror(rc))
	if detail != "" {
		msg += ": " + detail
	}
	return &Error{Code: int(rc), Msg: msg}
}

// Codes and states the tests look for.
const (
	ECLOSED   = int(C.NBFFI_ECLOSED)
	EINIT     = int(C.NBFFI_EINIT)
	ETIMEDOUT = int(C.NBFFI_ETIMEDOUT)
	EORPHANED = int(C.NBFFI_EORPHANED)

	Closed   = int(C.NBFFI_RT_CLOSED)
	Orphaned = int(C.NBFFI_RT_ORPHANED)
)

// BuildForwarder compiles testdata/fwd.c into dir and returns its path.
func BuildForwarder(dir string) (string, error) {
	_, self, _, _ := goruntime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "testdata", "fwd.c")
	out := filepath.Join(dir, "libgofwd.so")
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	cmd := exec.Command(cc, "-shared", "-fPIC", "-o", out, src, "-ldl")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", cmd, err, b)
	}
	return out, nil
}

// Host is an eventfd host that queues runtime logs.
type Host struct {
	h    *C.nbffi_host_t
	done map[*C.nbffi_task_t]bool // reaped, not yet released
}

func New() (*Host, error) {
	var h *C.nbffi_host_t
	rc := C.nbffi_host_new(&h, C.NBFFI_HOST_NOTIFY_EVENTFD|C.NBFFI_HOST_LOG_QUEUE)
	if rc != 0 {
		return nil, codeErr(rc, "")
	}
	return &Host{h: h, done: map[*C.nbffi_task_t]bool{}}, nil
}

// Free frees the host; it fails while runtimes or tasks are alive.
func (h *Host) Free() error {
	if rc := C.nbffi_host_free(h.h); rc != 0 {
		return codeErr(rc, "")
	}
	return nil
}

// Close reaps until every task posted from h is freed (released tasks are
// freed when their completion is reaped), for at most wait, then frees h.
func (h *Host) Close(wait time.Duration) error {
	for end := time.Now().Add(wait); h.Live() > 0; {
		if time.Now().After(end) {
			return fmt.Errorf("%d tasks never completed", h.Live())
		}
		h.Reap(100 * time.Millisecond)
	}
	return h.Free()
}

// Live is the number of tasks posted from h and not yet freed.
func (h *Host) Live() uint64 { return uint64(C.nbffi_host_tasks_live(h.h)) }

// Logs pops the runtime log lines queued so far.
func (h *Host) Logs() []string {
	var lines []string
	buf := make([]byte, 8192)
	for {
		var level C.int
		n := C.nbffi_host_log_next(h.h, &level,
			(*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), nil)
		if n <= 0 {
			return lines
		}
		lines = append(lines, string(buf[:n]))
	}
}

// Runtime is a loaded runtime.
type Runtime struct {
	rt *C.nbffi_runtime_t
	h  *Host
}

// Load loads lib with cfg and waits for its start to end.
func (h *Host) Load(lib string, cfg []byte) (*Runtime, error) {
	return h.LoadWithin(lib, cfg, 0)
}

// LoadWithin is Load with a start deadline start from now (0: none).
func (h *Host) LoadWithin(lib string, cfg []byte, start time.Duration) (
	*Runtime, error) {

	var deadline C.int64_t
	if start > 0 {
		deadline = C.nbffi_now_ns() + C.int64_t(start)
	}

	clib := C.CString(lib)
	defer C.free(unsafe.Pointer(clib))

	var pcfg unsafe.Pointer
	if len(cfg) > 0 {
		pcfg = C.CBytes(cfg)
		defer C.free(pcfg)
	}

	var rt *C.nbffi_runtime_t
	var t *C.nbffi_task_t
	rc := C.nbffi_runtime_load(h.h, clib, nil, pcfg, C.size_t(len(cfg)), 0, 0,
		deadline, 0, &rt, &t)
	if rc != 0 {
		return nil, codeErr(rc, "")
	}
	status, msg, err := h.lifeTask(t)
	if err == nil && status != 0 {
		err = codeErr(C.int(status), msg)
	}
	if err != nil {
		C.nbffi_runtime_free(rt)
		return nil, err
	}
	return &Runtime{rt: rt, h: h}, nil
}

// lifeTask waits for a life-cycle task and releases it.
func (h *Host) lifeTask(t *C.nbffi_task_t) (int, string, error) {
	task := &Task{t: t}
	defer h.Release(task)
	if err := h.Wait(task, time.Minute); err != nil {
		return 0, "", err
	}
	status, reply := task.Result()
	return status, string(reply), nil
}

// Close closes the runtime with a deadline timeout from now and waits for
// the close to end: status 0 (closed) or EORPHANED, with its message.
func (r *Runtime) Close(timeout time.Duration) (int, string, error) {
	var t *C.nbffi_task_t
	deadline := C.nbffi_now_ns() + C.int64_t(timeout)
	if rc := C.nbffi_runtime_close(r.rt, deadline, &t); rc != 0 {
		return 0, "", codeErr(rc, "")
	}
	return r.h.lifeTask(t)
}

// State is the runtime's nbffi_rt_state_t.
func (r *Runtime) State() int { return int(C.nbffi_runtime_state(r.rt)) }

// Free closes the runtime (without a deadline, unless closed before),
// waits for its fini and frees the handle.  The close's life-cycle task
// is reaped: only then may the host be freed.
func (r *Runtime) Free() {
	var t *C.nbffi_task_t
	if C.nbffi_runtime_close(r.rt, 0, &t) == 0 {
		r.h.lifeTask(t)
	}
	C.nbffi_runtime_free(r.rt)
}

// Stats are a runtime's counters, see nbffi_stats_t.
type Stats struct {
	Posted, Completed, Failed, TimedOut, Abandoned, InFlight, Queued uint64
}

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats {
	var s C.nbffi_stats_t
	C.nbffi_runtime_stats(r.rt, &s)
	return Stats{uint64(s.posted), uint64(s.completed), uint64(s.failed),
		uint64(s.timed_out), uint64(s.abandoned), uint64(s.in_flight),
		uint64(s.queued)}
}

// Task is a posted task.
type Task struct {
	t *C.nbffi_task_t
}

// Call posts method(payload) with a deadline timeout from now (0: none).
func (h *Host) Call(r *Runtime, method string, payload []byte,
	timeout time.Duration) (*Task, error) {

	var deadline C.int64_t
	if timeout > 0 {
		deadline = C.nbffi_now_ns() + C.int64_t(timeout)
	}

	m := []byte(method)
	var pm, pp unsafe.Pointer
	if len(m) > 0 {
		pm = unsafe.Pointer(&m[0])
	}
	if len(payload) > 0 {
		pp = unsafe.Pointer(&payload[0])
	}

	var t *C.nbffi_task_t
	rc := C.nbffi_call(h.h, r.rt, (*C.char)(pm), C.size_t(len(m)), pp,
		C.size_t(len(payload)), deadline, 0, &t)
	if rc != 0 {
		return nil, codeErr(rc, "")
	}
	return &Task{t: t}, nil
}

// ErrWait is returned when a wait ran out of time.
var ErrWait = errors.New("nbffitest: no completion in time")

// Reap waits up to wait for completions and returns how many it reaped.
func (h *Host) Reap(wait time.Duration) int {
	var out [256]*C.nbffi_task_t
	n := int(C.testhost_reap(h.h, &out[0], C.int(len(out)),
		C.int(wait/time.Millisecond)))
	for _, t := range out[:n] {
		h.done[t] = true
	}
	return n
}

// Wait reaps until t is complete, for at most wait.
func (h *Host) Wait(t *Task, wait time.Duration) error {
	end := time.Now().Add(wait)
	for !h.done[t.t] {
		left := time.Until(end)
		if left <= 0 {
			return ErrWait
		}
		h.Reap(min(left, 100*time.Millisecond))
	}
	return nil
}

// Spin spins up to d for t's completion, as a host may before it sleeps,
// and reaps it if it came.
func (h *Host) Spin(t *Task, d time.Duration) {
	if C.nbffi_host_spin(h.h, t.t, C.int64_t(d)) != 0 {
		h.Reap(0)
	}
}

// Done reports whether t was reaped.
func (h *Host) Done(t *Task) bool { return h.done[t.t] }

// Result reads a reaped task's status and a copy of its reply.
func (t *Task) Result() (int, []byte) {
	var n C.size_t
	p := C.nbffi_task_reply(t.t, &n)
	return int(C.nbffi_task_status(t.t)), C.GoBytes(p, C.int(n))
}

// Release gives up the host's reference, completed or not.
func (h *Host) Release(t *Task) {
	delete(h.done, t.t)
	C.nbffi_task_release(t.t)
}

// Do posts a call, waits for it and releases it.
func (h *Host) Do(r *Runtime, method string, payload []byte,
	timeout time.Duration) (int, []byte, error) {

	t, err := h.Call(r, method, payload, timeout)
	if err != nil {
		return 0, nil, err
	}
	defer h.Release(t)

	wait := timeout + 10*time.Second
	if err := h.Wait(t, wait); err != nil {
		return 0, nil, err
	}
	status, reply := t.Result()
	return status, reply, nil
}

// MallocInUse is the number of bytes malloc has handed out and not got
// back, in every arena (glibc's mallinfo2).
func MallocInUse() uint64 {
	m := C.mallinfo2()
	return uint64(m.uordblks) + uint64(m.hblkhd)
}

// Setenv sets name in C's environ only, as nginx's "env NAME=value;" does
// for its workers: Go's os.Getenv, which reads Go's own copy of the
// environment, does not see it.
func Setenv(name, value string) {
	n, v := C.CString(name), C.CString(value)
	defer C.free(unsafe.Pointer(n))
	defer C.free(unsafe.Pointer(v))
	C.setenv(n, v, 1)
}

// CallOpts are the options of CallEx.
type CallOpts struct {
	Timeout time.Duration     // the call's deadline from now (0: none)
	Meta    map[string]string // the call's metadata
	Stream  bool              // read chunks (NBFFI_CALL_STREAM)
	Window  uint32            // chunks in flight (0: nbffi's default)
}

// EncodeMeta encodes a metadata map as nbffi carries it, keys sorted.
func EncodeMeta(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b []byte
	for _, k := range keys {
		b = append(append(append(append(b, k...), 0), m[k]...), 0)
	}
	return b
}

// CallEx posts method(payload) with metadata, as a stream if asked.
func (h *Host) CallEx(r *Runtime, method string, payload []byte,
	o CallOpts) (*Task, error) {

	var deadline C.int64_t
	if o.Timeout > 0 {
		deadline = C.nbffi_now_ns() + C.int64_t(o.Timeout)
	}
	var flags C.unsigned
	if o.Stream {
		flags |= C.NBFFI_CALL_STREAM
	}

	m := []byte(method)
	meta := EncodeMeta(o.Meta)
	var pm, pp, pmeta unsafe.Pointer
	if len(m) > 0 {
		pm = unsafe.Pointer(&m[0])
	}
	if len(payload) > 0 {
		pp = unsafe.Pointer(&payload[0])
	}
	if len(meta) > 0 {
		pmeta = unsafe.Pointer(&meta[0])
	}

	var t *C.nbffi_task_t
	rc := C.nbffi_call_ex(h.h, r.rt, (*C.char)(pm), C.size_t(len(m)), pp,
		C.size_t(len(payload)), pmeta, C.size_t(len(meta)), deadline, flags,
		C.uint32_t(o.Window), &t)
	if rc != 0 {
		return nil, codeErr(rc, "")
	}
	return &Task{t: t}, nil
}

// NextChunk takes t's oldest unread chunk (a copy), if one is waiting.
func (t *Task) NextChunk() ([]byte, bool) {
	var p unsafe.Pointer
	var n C.size_t
	if C.nbffi_task_next_chunk(t.t, &p, &n) != 1 {
		return nil, false
	}
	return C.GoBytes(p, C.int(n)), true
}

// Chunks is the number of t's chunks sent and not yet read.
func (t *Task) Chunks() int {
	var w C.unsigned
	return int(C.nbffi_task_chunks(t.t, &w))
}

// WaitChunk waits up to wait for a chunk of the stream t and takes it:
// the chunk and true, or false once the stream ended (t reaped, no chunk
// left) or wait passed.
func (h *Host) WaitChunk(t *Task, wait time.Duration) ([]byte, bool) {
	end := time.Now().Add(wait)
	for {
		if b, ok := t.NextChunk(); ok {
			return b, true
		}
		if h.done[t.t] || time.Now().After(end) {
			return nil, false
		}
		h.Reap(10 * time.Millisecond)
		var out [64]*C.nbffi_task_t
		C.nbffi_host_reap_streams(h.h, &out[0], C.int(len(out)))
	}
}

// Event is an event a runtime emitted.
type Event struct {
	Name string
	Data []byte
}

// Events takes the events waiting now.
func (h *Host) Events() []Event {
	var evs []Event
	for {
		var ev *C.nbffi_event_t
		if C.nbffi_host_event_next(h.h, &ev) != 1 {
			return evs
		}
		var nl, dl C.size_t
		name := C.nbffi_event_name(ev, &nl)
		data := C.nbffi_event_data(ev, &dl)
		evs = append(evs, Event{C.GoStringN(name, C.int(nl)),
			C.GoBytes(data, C.int(dl))})
	}
}

// WaitEvents waits up to wait until n events came, and returns those that
// did.
func (h *Host) WaitEvents(n int, wait time.Duration) []Event {
	end := time.Now().Add(wait)
	evs := h.Events()
	for len(evs) < n && time.Now().Before(end) {
		h.Reap(10 * time.Millisecond)
		evs = append(evs, h.Events()...)
	}
	return evs
}

// EventStats are the host's event counters.
func (h *Host) EventStats() (emitted, delivered, dropped uint64) {
	var s C.nbffi_event_stats_t
	C.nbffi_host_event_stats(h.h, &s)
	return uint64(s.emitted), uint64(s.delivered), uint64(s.dropped)
}

// SetEventLimit bounds the host's event queue.
func (h *Host) SetEventLimit(events, bytes uint64) {
	C.nbffi_host_set_event_limit(h.h, C.uint64_t(events), C.uint64_t(bytes))
}

// LogLine is a runtime log line and its metadata.
type LogLine struct {
	Level int
	Text  string
	Meta  []byte // as encoded by EncodeMeta; nil when none
}

// LogLines pops the runtime log lines queued so far, with metadata.
func (h *Host) LogLines() []LogLine {
	var lines []LogLine
	buf := make([]byte, 8192)
	for {
		var level C.int
		n := C.nbffi_host_log_next(h.h, &level,
			(*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), nil)
		if n <= 0 {
			return lines
		}
		var ml C.size_t
		m := C.nbffi_host_log_meta(h.h, &ml)
		var meta []byte
		if m != nil {
			meta = C.GoBytes(m, C.int(ml))
		}
		lines = append(lines, LogLine{int(level), string(buf[:n]), meta})
	}
}
