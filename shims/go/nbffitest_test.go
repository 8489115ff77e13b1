package nbffi_test

import (
	"strings"
	"testing"
	"time"

	"nbffi.dev/shims/go/nbffitest"
)

// nbffitest.Start as a user's test uses it: this binary's handlers, a
// reply, an error status and the init's log line.
func TestHarness(t *testing.T) {
	// after the harness freed the runtime (cleanups run last-in first-out):
	// the state's close, which the other tests wait for one by one
	t.Cleanup(func() {
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("the runtime's state was not closed")
		}
	})
	h := nbffitest.Start(t, "harness")

	status, reply, err := h.Call("echo", []byte("through the loader"), time.Second)
	if err != nil || status != 0 || string(reply) != "through the loader" {
		t.Fatalf("echo: %d %q %v", status, reply, err)
	}
	status, reply, err = h.Call("fail42", []byte("x"), time.Second)
	if err != nil || status != 42 || string(reply) != "wrapped: custom x" {
		t.Fatalf("fail42: %d %q %v", status, reply, err)
	}
	if logs := strings.Join(h.Logs(), "\n"); !strings.Contains(logs, `started with "harness"`) {
		t.Fatalf("logs: %q", logs)
	}
}
