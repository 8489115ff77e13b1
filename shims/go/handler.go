package nbffi

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// Handler answers one call.  payload is a view into the task: valid until
// the handler returns, and it must not be kept (copy it to keep it).  The
// reply may be the payload itself, a slice from Alloc (handed over without
// a copy), or any other slice, which is copied once.  A non-nil error
// answers with the error's text and a positive status, see Error.
//
// ctx carries the caller's deadline, and is cancelled when the caller gave
// up (see the package documentation for how soon) or when the runtime is
// closed.
type Handler func(ctx context.Context, payload []byte) ([]byte, error)

// InitFunc runs once per runtime, in nbffi_runtime_init, with the runtime's
// cfg bytes.  It runs on a thread of libnbffi, never on the host's event
// loop, so it may dial or load a model; the host's load timeout bounds it
// (in Lua, opts.load_timeout).  Its result is the runtime's state (see
// State); a state that is an io.Closer is closed when the runtime is
// closed, once its handlers have returned.  An error fails the load with
// the error's text.  ctx lives as long as the runtime: background
// goroutines started here should stop when it is done.
type InitFunc func(ctx context.Context, cfg []byte) (state any, err error)

var (
	regMu    sync.Mutex
	handlers = map[string]Handler{}
	initFunc InitFunc

	// Set by the first runtime's init: handlers is read without a lock
	// from then on.
	frozen atomic.Bool
)

// Handle registers h for method.  Call it from an init function of the
// library's packages: it panics once a runtime has started, for an empty
// or too long method, a nil h, or a method registered twice.
func Handle(method string, h Handler) {
	regMu.Lock()
	defer regMu.Unlock()

	switch {
	case frozen.Load():
		panic("nbffi: Handle(" + method + ") after a runtime started")
	case method == "" || len(method) > MaxMethod:
		panic(fmt.Sprintf("nbffi: bad method name %q", method))
	case h == nil:
		panic("nbffi: nil handler for " + method)
	case handlers[method] != nil:
		panic("nbffi: method " + method + " registered twice")
	}
	handlers[method] = h
}

// OnInit sets the init hook, see InitFunc.  Like Handle, call it from an
// init function; it panics once a runtime has started or when called twice.
func OnInit(fn InitFunc) {
	regMu.Lock()
	defer regMu.Unlock()

	if frozen.Load() {
		panic("nbffi: OnInit after a runtime started")
	}
	if initFunc != nil {
		panic("nbffi: OnInit called twice")
	}
	initFunc = fn
}

// State returns the state that the init hook returned for the runtime that
// ctx belongs to (a handler's or the init hook's ctx), or nil.
func State(ctx context.Context) any {
	if rt, _ := ctx.Value(runtimeKey{}).(*runtime); rt != nil {
		return rt.state
	}
	return nil
}
