package nbffi

import (
	"context"
	"sync"
	"time"
)

// The contexts that the shim hands out are its own types rather than the
// context package's: a call then costs no timer unless its handler waits on
// Done, and no allocation beyond the call itself.  Values: runtimeKey (the
// runtime) and callKey (the call) only.

type runtimeKey struct{}
type callKey struct{}

// doneCtx is their cancellation: the channel is made by the first Done.
type doneCtx struct {
	mu   sync.Mutex
	done chan struct{}
	err  error
}

func (d *doneCtx) doneLocked() chan struct{} {
	if d.done == nil {
		d.done = make(chan struct{})
		if d.err != nil {
			close(d.done)
		}
	}
	return d.done
}

func (d *doneCtx) cancelLocked(err error) {
	if d.err == nil {
		d.err = err
		if d.done != nil {
			close(d.done)
		}
	}
}

func (d *doneCtx) cancel(err error) {
	d.mu.Lock()
	d.cancelLocked(err)
	d.mu.Unlock()
}

// runtimeCtx is the init hook's ctx: done when the runtime is closed.
type runtimeCtx struct {
	doneCtx
	rt *runtime
}

func (c *runtimeCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *runtimeCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneLocked()
}

func (c *runtimeCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *runtimeCtx) Value(key any) any {
	if key == (runtimeKey{}) {
		return c.rt
	}
	return nil
}

// Deadline, Done, Err and Value make a call its handler's ctx.  The
// deadline timer starts with the first Done; Err checks the clock.

func (c *call) Deadline() (time.Time, bool) {
	return c.deadline, !c.deadline.IsZero()
}

func (c *call) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	done := c.doneLocked()
	if c.err == nil && c.timer == nil && !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() {
			c.cancel(context.DeadlineExceeded)
		})
	}
	return done
}

func (c *call) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.cancelLocked(context.DeadlineExceeded)
	}
	return c.err
}

func (c *call) Value(key any) any {
	switch key.(type) {
	case callKey:
		return c
	case runtimeKey:
		return c.rt
	}
	return nil
}

// end cancels the ctx once the handler returned, as the context package's
// users defer cancel: whatever the handler started with it stops.
func (c *call) end() {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.cancelLocked(context.Canceled)
	c.mu.Unlock()
}
