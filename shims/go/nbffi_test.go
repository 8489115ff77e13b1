package nbffi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	nbffi "nbffi.dev/shims/go"
	"nbffi.dev/shims/go/nbffitest"
)

// The runtime library the tests load: the forwarder to this binary's shim.
var lib string

// What handlers saw, for the tests to check.
var (
	started   = make(chan string, 16)
	ctxErrs   = make(chan error, 16)
	closed    = make(chan string, 16)
	crowd     atomic.Int64
	crowdSize atomic.Int64
	crowdFull chan struct{}
	unstick   chan struct{}
	spinStop  atomic.Bool
	slowInit  chan struct{} // the init hook of cfg "slow" waits for it
)

// The reply of a "stuck" handler, large enough for malloc's count to
// show whether it was freed.
const stuckSize = 4 << 20

type state struct{ cfg string }

func (s *state) Close() error {
	closed <- s.cfg
	return nil
}

func init() {
	nbffi.OnInit(func(ctx context.Context, cfg []byte) (any, error) {
		switch string(cfg) {
		case "fail":
			return nil, errors.New("bad cfg")
		case "panic":
			panic("init exploded")
		case "slow":
			<-slowInit
		case "emitter":
			go emitUntilClosed(ctx)
		}
		nbffi.Logf(ctx, nbffi.LevelInfo, "started with %q", cfg)
		return &state{cfg: string(cfg)}, nil
	})

	handle := nbffi.Handle
	handle("echo", func(_ context.Context, p []byte) ([]byte, error) {
		return p, nil
	})
	handle("clone", func(_ context.Context, p []byte) ([]byte, error) {
		return bytes.Clone(p), nil
	})
	handle("nothing", func(context.Context, []byte) ([]byte, error) {
		return nil, nil
	})
	handle("alloc", func(ctx context.Context, p []byte) ([]byte, error) {
		// Two buffers: the reply is handed over, the other one freed.
		spare := nbffi.Alloc(ctx, 64)
		b := nbffi.Alloc(ctx, len(p)+16)
		copy(spare, "unused")
		return b[:copy(b, p)], nil
	})
	handle("alloc_inner", func(ctx context.Context, p []byte) ([]byte, error) {
		// a reply inside a buffer from Alloc, not at its start: copied
		b := nbffi.Alloc(ctx, len(p)+8)
		copy(b[8:], p)
		return b[8:], nil
	})
	handle("fail", func(_ context.Context, p []byte) ([]byte, error) {
		return nil, errors.New(string(p))
	})
	handle("fail42", func(_ context.Context, p []byte) ([]byte, error) {
		return nil, fmt.Errorf("wrapped: %w", nbffi.Errorf(42, "custom %s", p))
	})
	handle("panic", func(_ context.Context, p []byte) ([]byte, error) {
		panic(string(p))
	})
	handle("nilmap", func(context.Context, []byte) ([]byte, error) {
		var m map[string]int
		m["x"] = 1
		return nil, nil
	})
	handle("deadline", func(ctx context.Context, _ []byte) ([]byte, error) {
		d, ok := ctx.Deadline()
		if !ok {
			return []byte("none"), nil
		}
		return []byte(strconv.FormatInt(time.Until(d).Milliseconds(), 10)), nil
	})
	handle("wait", func(ctx context.Context, p []byte) ([]byte, error) {
		// Tell the test the handler runs, then wait for the ctx to end.
		started <- string(p)
		<-ctx.Done()
		ctxErrs <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	handle("waitchild", func(ctx context.Context, p []byte) ([]byte, error) {
		// a context derived from the handler's follows it
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		started <- string(p)
		<-child.Done()
		ctxErrs <- child.Err()
		return nil, child.Err()
	})
	handle("late", func(ctx context.Context, _ []byte) ([]byte, error) {
		// never waits on Done: Err alone tells the deadline passed
		d, _ := ctx.Deadline()
		time.Sleep(time.Until(d) + time.Millisecond)
		return nil, ctx.Err()
	})
	handle("cfg", func(ctx context.Context, _ []byte) ([]byte, error) {
		return []byte(nbffi.State(ctx).(*state).cfg), nil
	})
	handle("crowd", func(ctx context.Context, p []byte) ([]byte, error) {
		// Returns only once crowdSize handlers run at the same time.
		if crowd.Add(1) == crowdSize.Load() {
			close(crowdFull)
		}
		select {
		case <-crowdFull:
			return p, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	handle("log", func(ctx context.Context, p []byte) ([]byte, error) {
		nbffi.Logf(ctx, nbffi.LevelWarn, "log %s", p)
		return nil, nil
	})
	handle("stuck", func(ctx context.Context, p []byte) ([]byte, error) {
		// Ignores every ctx; once unstuck, reads its payload (kept by
		// libnbffi for a handler left behind) and replies from Alloc or
		// from the Go heap, as the payload says.
		started <- string(p)
		<-unstick
		if string(p) == "alloc" {
			return nbffi.Alloc(ctx, stuckSize), nil
		}
		return make([]byte, stuckSize), nil
	})
	handle("spin", func(_ context.Context, p []byte) ([]byte, error) {
		// Ignores every ctx, and keeps a P busy until told to stop.
		started <- string(p)
		for !spinStop.Load() {
		}
		return p, nil
	})
}

func TestMain(m *testing.M) {
	if v, ok := os.LookupEnv(procsChild); ok {
		os.Exit(reportProcs(v))
	}
	dir, err := os.MkdirTemp("", "nbffi-go-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lib, err = nbffitest.BuildForwarder(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a host with one runtime, checked for leaks when the test ends.
type env struct {
	t  *testing.T
	h  *nbffitest.Host
	rt *nbffitest.Runtime
}

func newEnv(t *testing.T, cfg string) *env {
	t.Helper()
	runtime.LockOSThread()
	h, err := nbffitest.New()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, h: h}
	if cfg != "" {
		e.rt = e.load(cfg)
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) load(cfg string) *nbffitest.Runtime {
	e.t.Helper()
	rt, err := e.h.Load(lib, []byte(cfg))
	if err != nil {
		e.t.Fatalf("load %q: %v", cfg, err)
	}
	return rt
}

func (e *env) close() {
	if e.rt != nil {
		e.rt.Free()
		e.expectClosed(e.rt)
	}
	if err := e.h.Close(10 * time.Second); err != nil {
		e.t.Errorf("host close: %v", err)
	}
	runtime.UnlockOSThread()
}

func (e *env) expectClosed(*nbffitest.Runtime) {
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		e.t.Error("the runtime's state was not closed")
	}
}

func (e *env) do(method string, payload []byte, timeout time.Duration) (int, []byte) {
	e.t.Helper()
	status, reply, err := e.h.Do(e.rt, method, payload, timeout)
	if err != nil {
		e.t.Fatalf("%s: %v", method, err)
	}
	return status, reply
}

// within waits for a value from c, failing the test after 10 s.
func within[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
		panic("unreachable")
	}
}

func TestEcho(t *testing.T) {
	e := newEnv(t, "echo")
	for _, method := range []string{"echo", "clone", "alloc", "alloc_inner"} {
		for _, n := range []int{0, 1, 512, 100 << 10, 1 << 20} {
			p := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
			status, reply := e.do(method, p, 0)
			if status != 0 || !bytes.Equal(reply, p) {
				t.Errorf("%s(%d B) = %d, %d B", method, n, status, len(reply))
			}
		}
	}
}

func TestEmptyReply(t *testing.T) {
	e := newEnv(t, "empty")
	if status, reply := e.do("nothing", []byte("x"), 0); status != 0 || len(reply) != 0 {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestUnknownMethod(t *testing.T) {
	e := newEnv(t, "unknown")
	status, reply := e.do("nope", nil, 0)
	if status != nbffi.StatusUnknownMethod ||
		!strings.HasPrefix(string(reply), `unknown method "nope"; methods: alloc, alloc_inner, `) {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t, "errors")
	if status, reply := e.do("fail", []byte("no luck"), 0); status != nbffi.StatusError || string(reply) != "no luck" {
		t.Errorf("fail: %d %q", status, reply)
	}
	if status, reply := e.do("fail42", []byte("x"), 0); status != 42 || string(reply) != "wrapped: custom x" {
		t.Errorf("fail42: %d %q", status, reply)
	}
}

func TestPanic(t *testing.T) {
	e := newEnv(t, "panics")
	status, reply := e.do("panic", []byte("boom"), 0)
	if status != nbffi.StatusPanic || string(reply) != "panic: boom" {
		t.Errorf("panic: %d %q", status, reply)
	}
	status, reply = e.do("nilmap", nil, 0)
	if status != nbffi.StatusPanic || !strings.Contains(string(reply), "assignment to entry in nil map") {
		t.Errorf("nilmap: %d %q", status, reply)
	}
	if !strings.Contains(strings.Join(e.h.Logs(), "\n"), "handler panic: boom\ngoroutine ") {
		t.Error("no stack trace of the panic in the log")
	}
	// The runtime still serves.
	if status, reply := e.do("echo", []byte("after"), 0); status != 0 || string(reply) != "after" {
		t.Errorf("echo after panic: %d %q", status, reply)
	}
}

func TestLog(t *testing.T) {
	e := newEnv(t, "log")
	e.do("log", []byte("line"), 0)
	logs := strings.Join(e.h.Logs(), "\n")
	if !strings.Contains(logs, `started with "log"`) || !strings.Contains(logs, "log line") {
		t.Errorf("logs: %q", logs)
	}
}

func TestDeadline(t *testing.T) {
	e := newEnv(t, "deadline")
	if _, reply := e.do("deadline", nil, 0); string(reply) != "none" {
		t.Errorf("no deadline: %q", reply)
	}
	_, reply := e.do("deadline", nil, time.Hour)
	left, err := strconv.ParseInt(string(reply), 10, 64)
	if err != nil || left <= 0 || left > time.Hour.Milliseconds() {
		t.Errorf("deadline of a call with one hour: %q", reply)
	}

	// A handler that waits for its ctx ends at the deadline.
	task, err := e.h.Call(e.rt, "wait", []byte("d"), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer e.h.Release(task)
	within(t, started, "start")
	if err := within(t, ctxErrs, "ctx end"); err != context.DeadlineExceeded {
		t.Errorf("ctx ended with %v", err)
	}
	if err := e.h.Wait(task, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// a host that did not give up at the deadline gets a timeout
	if status, reply := task.Result(); status != nbffi.StatusTimeout || string(reply) != "timeout" {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestDeadlineWithoutDone(t *testing.T) {
	e := newEnv(t, "late")
	status, reply := e.do("late", nil, 20*time.Millisecond)
	if status != nbffi.StatusTimeout || string(reply) != "timeout" {
		t.Errorf("got %d %q", status, reply)
	}
}

func TestCancel(t *testing.T) {
	e := newEnv(t, "cancel")
	for _, method := range []string{"wait", "waitchild"} {
		task, err := e.h.Call(e.rt, method, []byte("c"), 0)
		if err != nil {
			t.Fatal(err)
		}
		within(t, started, "start")
		// The caller gives up: the handler's ctx is cancelled, and the
		// late reply is freed by the host's reap (see the env's cleanup).
		e.h.Release(task)
		if err := within(t, ctxErrs, "ctx end"); err != context.Canceled {
			t.Errorf("%s: ctx ended with %v", method, err)
		}
	}
}

func TestCloseCancelsHandlers(t *testing.T) {
	e := newEnv(t, "")
	rt := e.load("fini")
	task, err := e.h.Call(rt, "wait", []byte("f"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.h.Release(task)
	within(t, started, "start")

	// fini cancels the handler's ctx and returns once the handler did,
	// well before the deadline: the runtime is closed, not orphaned.
	if status, msg, err := rt.Close(time.Minute); err != nil || status != 0 {
		t.Errorf("close: %d %q %v", status, msg, err)
	}
	if rt.State() != nbffitest.Closed {
		t.Errorf("state %d after close", rt.State())
	}
	e.expectClosed(rt)
	if err := within(t, ctxErrs, "ctx end"); err != context.Canceled {
		t.Errorf("ctx ended with %v", err)
	}
	if err := e.h.Wait(task, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if status, reply := task.Result(); status != nbffi.StatusError || string(reply) != "context canceled" {
		t.Errorf("got %d %q", status, reply)
	}
	rt.Free()
}

func TestCloseLeavesHandlersThatIgnoreCtx(t *testing.T) {
	const n = 8
	e := newEnv(t, "")
	rt := e.load("stuck")
	unstick = make(chan struct{})
	tasks := make([]*nbffitest.Task, n)
	for i := range tasks {
		p := []byte("alloc")
		if i%2 == 1 {
			p = []byte("heap")
		}
		var err error
		if tasks[i], err = e.h.Call(rt, "stuck", p, 0); err != nil {
			t.Fatal(err)
		}
		defer e.h.Release(tasks[i])
		within(t, started, "start")
	}

	// fini gives up at the deadline and reports the handlers that stayed:
	// the runtime is orphaned and their callers get "closed".
	status, msg, err := rt.Close(50 * time.Millisecond)
	if err != nil || status != nbffitest.EORPHANED ||
		!strings.Contains(msg, fmt.Sprintf("fini reported %d thread(s)", n)) {
		t.Errorf("close: %d %q %v", status, msg, err)
	}
	if rt.State() != nbffitest.Orphaned {
		t.Errorf("state %d after close", rt.State())
	}
	for i, task := range tasks {
		if err := e.h.Wait(task, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if status, _ := task.Result(); status != nbffitest.ECLOSED {
			t.Errorf("task %d: status %d", i, status)
		}
	}

	// Their late answers are refused, and the replies from Alloc freed;
	// the runtime's state is closed after the last of them.
	before := nbffitest.MallocInUse()
	close(unstick)
	e.expectClosed(rt)
	if after := nbffitest.MallocInUse(); after > before+stuckSize {
		t.Errorf("malloc'd bytes in use grew by %d MiB", (after-before)>>20)
	}
	rt.Free()
}

func TestCloseDeadlineWhileHandlersSpin(t *testing.T) {
	// Goroutines take turns on the Ps for 10 ms each: with this many
	// spinning, any Go code of fini would wait long past the 100 ms that
	// libnbffi gives fini after its deadline.
	const n = 16
	e := newEnv(t, "")
	rt := e.load("spin")
	spinStop.Store(false)
	for i := range n {
		task, err := e.h.Call(rt, "spin", []byte(strconv.Itoa(i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer e.h.Release(task)
		within(t, started, "start")
	}

	status, msg, err := rt.Close(50 * time.Millisecond)
	if err != nil || status != nbffitest.EORPHANED ||
		!strings.Contains(msg, fmt.Sprintf("fini reported %d thread(s)", n)) {
		t.Errorf("close: %d %q %v", status, msg, err)
	}
	spinStop.Store(true)
	e.expectClosed(rt)
	rt.Free()
}

// openFds counts this process's file descriptors.
func openFds(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

func TestLoadCloseCyclesKeepNoFd(t *testing.T) {
	e := newEnv(t, "")
	cycle := func() {
		rt := e.load("cycle")
		if _, reply, err := e.h.Do(rt, "echo", []byte("x"), 0); err != nil || string(reply) != "x" {
			t.Fatalf("echo: %q %v", reply, err)
		}
		if status, msg, err := rt.Close(time.Minute); err != nil || status != 0 {
			t.Fatalf("close: %d %q %v", status, msg, err)
		}
		rt.Free()
		e.expectClosed(rt)
	}
	cycle() // the first use of Go's netpoller opens its epoll fds
	before := openFds(t)
	for range 100 {
		cycle()
	}
	if after := openFds(t); after != before {
		t.Errorf("%d fds before 100 load/close cycles, %d after", before, after)
	}
}

// procsChild names the variable that makes this binary report the
// GOMAXPROCS a runtime gets (see reportProcs) instead of running tests.
const procsChild = "NBFFI_GO_TEST_PROCS"

// TestGOMAXPROCS runs this binary again without GOMAXPROCS in its
// environment; the child sets it in C's environ only, as nginx's env
// directive does, then loads a runtime.
func TestGOMAXPROCS(t *testing.T) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			env = append(env, kv)
		}
	}
	for _, c := range []struct{ set, want, log string }{
		{"", "GOMAXPROCS 1", ""},
		{"3", "GOMAXPROCS 3", ""},
		{"many", "GOMAXPROCS 1", `GOMAXPROCS="many" is not a positive number: using 1`},
	} {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(env, procsChild+"="+c.set, "NBFFI_GO_TEST_LIB="+lib)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want+"\n") ||
			!strings.Contains(string(out), c.log) {
			t.Errorf("GOMAXPROCS=%q in C's environ: %v\n%s", c.set, err, out)
		}
	}
}

// reportProcs is the child of TestGOMAXPROCS.
func reportProcs(set string) int {
	runtime.LockOSThread()
	if set != "" {
		nbffitest.Setenv("GOMAXPROCS", set)
	}
	h, err := nbffitest.New()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	rt, err := h.Load(os.Getenv("NBFFI_GO_TEST_LIB"), []byte("procs"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("GOMAXPROCS", runtime.GOMAXPROCS(0))
	rt.Free()
	fmt.Println(strings.Join(h.Logs(), "\n"))
	return 0
}

func TestThousandsConcurrent(t *testing.T) {
	const n = 10000
	e := newEnv(t, "crowd")
	crowd.Store(0)
	crowdSize.Store(n)
	crowdFull = make(chan struct{})

	tasks := make([]*nbffitest.Task, n)
	for i := range tasks {
		var err error
		tasks[i], err = e.h.Call(e.rt, "crowd", []byte(strconv.Itoa(i)), time.Minute)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for i, task := range tasks {
		if err := e.h.Wait(task, time.Minute); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
		if status, reply := task.Result(); status != 0 || string(reply) != strconv.Itoa(i) {
			t.Errorf("task %d: %d %q", i, status, reply)
		}
		e.h.Release(task)
	}
	if s := e.rt.Stats(); s.Completed != n {
		t.Errorf("stats: %+v", s)
	}
}

func TestRuntimesWithOwnState(t *testing.T) {
	e := newEnv(t, "")
	a, b := e.load("a"), e.load("b")
	for _, c := range []struct {
		rt   *nbffitest.Runtime
		want string
	}{{a, "a"}, {b, "b"}} {
		_, reply, err := e.h.Do(c.rt, "cfg", nil, 0)
		if err != nil || string(reply) != c.want {
			t.Errorf("cfg of %s: %q %v", c.want, reply, err)
		}
	}

	a.Free()
	if cfg := within(t, closed, "close"); cfg != "a" {
		t.Errorf("closed %q, want a", cfg)
	}
	if _, reply, err := e.h.Do(b, "cfg", nil, 0); err != nil || string(reply) != "b" {
		t.Errorf("b after a was freed: %q %v", reply, err)
	}
	b.Free()
	e.expectClosed(b)
}

func TestInitFailure(t *testing.T) {
	e := newEnv(t, "")
	for cfg, want := range map[string]string{
		"fail":  "bad cfg",
		"panic": "panic in init hook: init exploded",
	} {
		_, err := e.h.Load(lib, []byte(cfg))
		var te *nbffitest.Error
		if !errors.As(err, &te) || te.Code != nbffitest.EINIT || !strings.Contains(te.Msg, want) {
			t.Errorf("load %q: %v", cfg, err)
		}
	}
}

func TestInitPastTheStartDeadline(t *testing.T) {
	e := newEnv(t, "")
	slowInit = make(chan struct{})
	_, err := e.h.LoadWithin(lib, []byte("slow"), 20*time.Millisecond)
	var te *nbffitest.Error
	if !errors.As(err, &te) || te.Code != nbffitest.EINIT ||
		!strings.Contains(te.Msg, "init did not return within the start deadline") {
		t.Errorf("load: %v", err)
	}
	// When init returns at last, libnbffi stops the runtime it started:
	// fini runs, down to closing the state.
	close(slowInit)
	if cfg := within(t, closed, "close"); cfg != "slow" {
		t.Errorf("closed %q, want slow", cfg)
	}
}

func TestRegisterAfterStart(t *testing.T) {
	newEnv(t, "late")
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "after a runtime started") {
			t.Errorf("recovered %v", r)
		}
	}()
	nbffi.Handle("late", func(context.Context, []byte) ([]byte, error) { return nil, nil })
}
