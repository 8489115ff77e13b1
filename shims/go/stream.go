package nbffi

/*
#include "nbffi.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Errors of Send and Emit.  A send to a caller that gave up returns the
// ctx's error instead (context.Canceled, or context.DeadlineExceeded), so
// that a handler that returns it ends the stream as a cancelled call.
var (
	// ErrNotStream: the caller made a plain call (rt:call), not a stream
	// (rt:stream), so it reads no chunks; see Streaming.
	ErrNotStream = errors.New("nbffi: the caller does not read a stream")
	// ErrAnswered: the handler has returned; its call takes no more.
	ErrAnswered = errors.New("nbffi: the call was answered")
	// ErrClosed: the runtime is closed (the host reads no more).
	ErrClosed = errors.New("nbffi: runtime closed")
	// ErrDropped wraps the reason an event was dropped (the host's event
	// queue is full, or the event is larger than it takes); the host
	// counts it.
	ErrDropped = errors.New("nbffi: event dropped")
)

// sendRetry bounds the wait of a send on a full window for a wake-up from
// the queue's fd: a send retries at least this often.
const sendRetry = 10 * time.Millisecond

// StreamHandler answers a call like Handler, and may send chunks before
// its reply through send (Send with the handler's ctx).
type StreamHandler func(ctx context.Context, payload []byte,
	send func(chunk []byte) error) ([]byte, error)

// HandleStream registers a StreamHandler for method, as Handle does.
func HandleStream(method string, h StreamHandler) {
	if h == nil {
		Handle(method, nil) // panics
	}
	Handle(method, func(ctx context.Context, p []byte) ([]byte, error) {
		return h(ctx, p, func(chunk []byte) error { return Send(ctx, chunk) })
	})
}

// Streaming reports whether the caller of the call that ctx (a handler's)
// belongs to reads a stream: from Lua, rt:stream rather than rt:call.
func Streaming(ctx context.Context) bool {
	c, _ := ctx.Value(callKey{}).(*call)
	return c != nil && c.window > 0
}

// Send sends chunk to the caller of the call that ctx (a handler's)
// belongs to, before the handler's reply.  chunk is copied: it may be
// reused at once.  The caller reads chunks in order, then the reply.
//
// At most a window of chunks (16 unless the caller asks for another) are
// in flight: when the caller reads slowly, Send waits for it, so the
// handler goes at the reader's pace and memory stays bounded.  It waits
// in Go (on the runtime's queue fd), not in C, so a thousand slow
// streams hold no thread.
//
// Send returns nil once the chunk is queued, or:
//   - the ctx's error (context.Canceled) when the caller stopped reading,
//     timed out or went away, or the runtime is being closed; the ctx is
//     then cancelled too.  The handler should stop and return it: its
//     answer is dropped;
//   - context.DeadlineExceeded when the caller's deadline passed;
//   - ErrNotStream for a plain call, ErrAnswered after the handler
//     returned, ErrClosed when the runtime is closed, or an error for a
//     chunk over the runtime's max payload.
//
// Sends may come from several goroutines of the handler; the chunks of
// sends that returned nil keep their order.
func Send(ctx context.Context, chunk []byte) error {
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		return errors.New("nbffi: Send outside a handler")
	}
	if c.window == 0 {
		return ErrNotStream
	}

	var retry *time.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()

	w := &c.rt.windows
	for {
		// counted and taken before the try: a window that opens after
		// the try wakes this wait, one that opened before makes the try
		// succeed
		w.blocked.Add(1)
		open := w.wait()
		rc := c.trySend(chunk)
		if rc != C.NBFFI_EQFULL {
			w.blocked.Add(-1)
			return c.sendErr(rc)
		}

		if retry == nil {
			retry = time.NewTimer(sendRetry)
		} else {
			retry.Reset(sendRetry)
		}
		select {
		case <-open:
		case <-retry.C:
		case <-c.Done():
		}
		w.blocked.Add(-1)
		if err := c.Err(); err != nil {
			return err
		}
	}
}

// trySend sends without waiting, unless the handler has answered.
func (c *call) trySend(chunk []byte) C.int {
	var p unsafe.Pointer
	if len(chunk) > 0 {
		p = unsafe.Pointer(&chunk[0])
	}
	c.live.RLock()
	defer c.live.RUnlock()
	if c.answered {
		return 1 // not an nbffi code: see sendErr
	}
	return C.nbffi_task_send(c.task, p, C.size_t(len(chunk)), 0)
}

func (c *call) sendErr(rc C.int) error {
	switch rc {
	case 0:
		return nil
	case 1:
		return ErrAnswered
	case C.NBFFI_ECANCELED:
		c.cancel(context.Canceled)
		return c.Err()
	case C.NBFFI_ETIMEDOUT:
		c.cancel(context.DeadlineExceeded)
		return c.Err()
	case C.NBFFI_ECLOSED:
		c.cancel(context.Canceled)
		return ErrClosed
	case C.NBFFI_EPERM:
		return ErrNotStream
	}
	return fmt.Errorf("nbffi: send: %s", C.GoString(C.nbffi_strerror(rc)))
}

// windows wakes the sends that found their window full when the
// runtime's queue fd says that a window opened (libnbffi makes it
// readable then, as when a task is queued): every such wake-up closes the
// channel that the waiting sends got from wait, and they try again.
type windows struct {
	mu      sync.Mutex
	ch      chan struct{}
	blocked atomic.Int32 // sends waiting
}

func (w *windows) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// wake runs on the poller after each wake-up of the queue's fd, and after
// each batch it took while busy (the fd is read only when idle).
func (w *windows) wake() {
	if w.blocked.Load() == 0 {
		return
	}
	w.mu.Lock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
	w.mu.Unlock()
}
