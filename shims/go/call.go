package nbffi

/*
#include <stdlib.h>
#include "nbffi.h"

static void
nbffi_go_free(void *data, void *ud)
{
    (void) ud;
    free(data);
}

// Hands over a reply from Alloc: nbffi frees it with free().  A refused
// answer (the task's runtime was orphaned while its handler ran) leaves
// it to us.
static void
nbffi_go_respond_owned(nbffi_task_t *t, int status, void *data, size_t len)
{
    if (nbffi_task_respond_owned(t, status, data, len, nbffi_go_free, NULL)
        != 0)
    {
        free(data);
    }
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"
)

// call is one task being handled, and its handler's ctx (see ctx.go).
type call struct {
	doneCtx  // mu also guards timer and allocs
	rt       *runtime
	task     *C.nbffi_task_t
	deadline time.Time
	timer    *time.Timer      // deadline timer, from the first Done
	allocs   []unsafe.Pointer // from Alloc, freed unless handed over

	meta    string // the call's metadata, encoded as nbffi carries it
	metaMap map[string]string
	window  uint32 // the stream's window, 0 for a plain call

	// live guards the task against goroutines of the handler that send,
	// log or read after it returned: they hold it shared while they use
	// the task, respond holds it to set answered.
	live     sync.RWMutex
	answered bool

	cancelled bool // seen by the watcher (watcher.mu)
}

// StatusTimeout is the status of a call whose handler returned the ctx's
// deadline error (ctx.Err() once the caller's deadline passed), when the
// caller did not give up on its own by then: see awaitRelease.
const StatusTimeout = 4

// timeoutGrace bounds how long a call that timed out waits for its caller
// to give up, see awaitRelease.
const timeoutGrace = 250 * time.Millisecond

// invoke runs the handler and turns its result, error or panic into a reply.
func (c *call) invoke(h Handler, payload []byte) (reply []byte, status int) {
	defer func() {
		if r := recover(); r != nil {
			logText(c.rt.q, LevelErr, fmt.Sprintf(
				"handler panic: %v\n%s", r, debug.Stack()))
			reply, status = []byte(fmt.Sprintf("panic: %v", r)), StatusPanic
		}
	}()

	reply, err := h(c, payload)
	if err != nil {
		if c.timedOut(err) {
			return []byte("timeout"), StatusTimeout
		}
		return []byte(err.Error()), errorStatus(err)
	}
	return reply, 0
}

// timedOut: the handler gave up because the caller's deadline passed.
func (c *call) timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) && !c.deadline.IsZero() &&
		!time.Now().Before(c.deadline)
}

// awaitRelease holds back the answer of a call that timed out until the
// caller gave up (nbffi_task_cancelled), which it does at the same
// deadline: the caller then reports its own "timeout" (Lua: nil,
// "timeout") rather than a runtime error that won the race by a few
// microseconds.  An answer is never dropped: after timeoutGrace, or when
// the runtime is closed, it goes out as an error with StatusTimeout.
// Only calls that timed out wait, on the task they still hold.
func (c *call) awaitRelease() {
	end := time.Now().Add(timeoutGrace)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for C.nbffi_task_cancelled(c.task) == 0 && time.Now().Before(end) {
		select {
		case <-tick.C:
		case <-c.rt.ctx.Done():
			return
		}
	}
}

// respond answers the task: a reply from Alloc is handed over to nbffi,
// anything else is copied by nbffi_task_respond.  Buffers from Alloc that
// are not the reply are freed after that (the reply may lie inside one).
func (c *call) respond(status int, reply []byte) {
	p := unsafe.Pointer(unsafe.SliceData(reply))

	// no send, log or metadata read of the handler's goroutines from now on
	c.live.Lock()
	c.answered = true
	c.live.Unlock()

	c.mu.Lock()
	allocs := c.allocs
	c.allocs = nil
	c.mu.Unlock()

	owned := -1
	for i, a := range allocs {
		if len(reply) > 0 && a == p {
			owned = i
			break
		}
	}

	switch {
	case owned >= 0:
		C.nbffi_go_respond_owned(c.task, C.int(status), p,
			C.size_t(len(reply)))
	case len(reply) == 0:
		C.nbffi_task_respond(c.task, C.int(status), nil, 0)
	default:
		C.nbffi_task_respond(c.task, C.int(status), p, C.size_t(len(reply)))
	}

	for i, a := range allocs {
		if i != owned {
			C.free(a)
		}
	}
}

// Alloc returns n bytes of C memory, not zeroed, for the reply of the call
// that ctx (a handler's) belongs to.  Returning it, or a prefix of it
// (b[:k]), as the reply hands it to nbffi without a copy.  It is freed when
// the handler returns otherwise, so it must not be used after that.  Use it
// for large replies that the handler produces itself (encodes, reads into):
// nbffi's copy is saved and the Go heap gets no garbage.  A handler that
// only has to copy gains nothing (bench/go measures both).  Outside a
// handler it panics.
func Alloc(ctx context.Context, n int) []byte {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		panic("nbffi: Alloc outside a handler")
	}
	if n <= 0 {
		return []byte{}
	}

	p := C.malloc(C.size_t(n))
	if p == nil {
		panic(fmt.Sprintf("nbffi: cannot allocate %d bytes", n))
	}

	c.mu.Lock()
	c.allocs = append(c.allocs, p)
	c.mu.Unlock()

	return unsafe.Slice((*byte)(p), n)
}
