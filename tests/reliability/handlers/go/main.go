// Command faultgo is the Go runtime of the reliability tests: the fault
// methods of ../README.md, as a c-shared library.
//
// cfg: "fail_init=MSG" fails the init hook with MSG, "hang_init=1" never
// returns from it; anything else starts a runtime.
package main

/*
// A store through an address Go cannot check: a fault in C code, which
// Go's signal handler passes on (there is no handler before it in nginx).
static void fault_crash(unsigned long addr) { *(volatile int *) addr = 1; }
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nbffi "nbffi.dev/shims/go"
)

// state is one runtime's.
type state struct {
	ctx   context.Context // done when the runtime is closed
	flaky atomic.Uint64

	mu      sync.Mutex
	release chan struct{} // closed by "release"
}

func init() {
	nbffi.OnInit(open)
	nbffi.Handle("echo", func(_ context.Context, p []byte) ([]byte, error) {
		return p, nil
	})
	nbffi.Handle("flaky", flaky)
	nbffi.Handle("never", never)
	nbffi.Handle("release", release)
	nbffi.Handle("sleep", sleep)
	nbffi.Handle("crash", crash)
	nbffi.Handle("log", logLine)
}

func main() {}

func open(ctx context.Context, cfg []byte) (any, error) {
	text := string(cfg)
	if msg, ok := strings.CutPrefix(text, "fail_init="); ok {
		return nil, errors.New(msg)
	}
	if text == "hang_init=1" {
		select {}
	}
	return &state{ctx: ctx, release: make(chan struct{})}, nil
}

func get(ctx context.Context) *state {
	return nbffi.State(ctx).(*state)
}

func flaky(ctx context.Context, p []byte) ([]byte, error) {
	n, err := strconv.ParseUint(string(p), 10, 32)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("flaky: bad N %q", p)
	}
	if k := get(ctx).flaky.Add(1); k%n == 0 {
		panic(fmt.Sprintf("flaky: call %d failed", k))
	}
	return []byte("ok"), nil
}

// never ignores its caller giving up: it answers on "release", or when
// the runtime is closed.
func never(ctx context.Context, _ []byte) ([]byte, error) {
	st := get(ctx)
	st.mu.Lock()
	ch := st.release
	st.mu.Unlock()
	select {
	case <-ch:
		return []byte("late"), nil
	case <-st.ctx.Done():
		return nil, context.Cause(st.ctx)
	}
}

func release(ctx context.Context, _ []byte) ([]byte, error) {
	st := get(ctx)
	st.mu.Lock()
	close(st.release)
	st.release = make(chan struct{})
	st.mu.Unlock()
	return []byte("released"), nil
}

func sleep(_ context.Context, p []byte) ([]byte, error) {
	ms, err := strconv.Atoi(string(p))
	if err != nil {
		return nil, err
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return []byte("slept"), nil
}

func crash(_ context.Context, p []byte) ([]byte, error) {
	addr, err := strconv.ParseUint(string(p), 10, 64)
	if err != nil {
		return nil, err
	}
	C.fault_crash(C.ulong(addr))
	return []byte("survived"), nil
}

func logLine(ctx context.Context, p []byte) ([]byte, error) {
	nbffi.Logf(ctx, nbffi.LevelNotice, "%s", p)
	return []byte("logged"), nil
}
