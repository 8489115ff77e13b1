package nbffitest

import (
	goruntime "runtime"
	"testing"
	"time"
)

// Harness is a host with one runtime of the shim linked into this test
// binary, made by Start and freed when the test ends.
type Harness struct {
	tb      testing.TB
	Host    *Host
	Runtime *Runtime
}

// Start loads the shim of this test binary with cfg (what the handlers'
// OnInit hook receives) and frees it when the test ends, failing the test
// if a task was never completed.
func Start(tb testing.TB, cfg string) *Harness {
	tb.Helper()
	lib, err := BuildForwarder(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	goruntime.LockOSThread()
	h, err := New()
	if err != nil {
		goruntime.UnlockOSThread()
		tb.Fatal(err)
	}
	s := &Harness{tb: tb, Host: h}
	tb.Cleanup(s.free)
	if s.Runtime, err = h.Load(lib, []byte(cfg)); err != nil {
		tb.Fatalf("load %q: %v", cfg, err)
	}
	return s
}

// Call calls method with payload and waits for the reply: status 0 and
// the reply, or the handler's error status and text (as Lua gets them).
// timeout is the call's deadline (0: none).
func (s *Harness) Call(method string, payload []byte,
	timeout time.Duration) (int, []byte, error) {
	return s.Host.Do(s.Runtime, method, payload, timeout)
}

// Logs pops the runtime's log lines queued so far.
func (s *Harness) Logs() []string { return s.Host.Logs() }

func (s *Harness) free() {
	if s.Runtime != nil {
		s.Runtime.Free()
	}
	if err := s.Host.Close(10 * time.Second); err != nil {
		s.tb.Errorf("nbffitest: %v", err)
	}
	goruntime.UnlockOSThread()
}
