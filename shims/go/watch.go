package nbffi

/*
#include "nbffi.h"

// Marks in out[] which of tasks[] the host gave up; one cgo call for all.
static void
nbffi_go_cancelled(nbffi_task_t **tasks, size_t n, unsigned char *out)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        out[i] = (unsigned char) nbffi_task_cancelled(tasks[i]);
    }
}
*/
import "C"

import (
	"context"
	"sync"
	"time"
)

// CancelPoll is how often a runtime checks whether the callers of its
// running handlers gave up.  It checks only while handlers run.
const CancelPoll = 5 * time.Millisecond

// watcher cancels the ctx of a handler whose caller released its task
// (timed out on the Lua side, or the request went away).  nbffi has no
// callback for that, so the watcher polls nbffi_task_cancelled.  A task
// is only read while it is in running, under mu, and run() removes it
// before answering it, so a task is never read after it was answered.
type watcher struct {
	mu      sync.Mutex
	running map[*C.nbffi_task_t]*call
	wake    chan struct{} // running became non-empty
	quit    chan struct{}
	done    chan struct{}
}

func (w *watcher) start() {
	w.running = make(map[*C.nbffi_task_t]*call)
	w.wake = make(chan struct{}, 1)
	w.quit = make(chan struct{})
	w.done = make(chan struct{})
	go w.loop()
}

func (w *watcher) stop() {
	close(w.quit)
	<-w.done
}

func (w *watcher) add(c *call) {
	w.mu.Lock()
	if len(w.running) == 0 {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.running[c.task] = c
	w.mu.Unlock()
}

func (w *watcher) remove(c *call) {
	w.mu.Lock()
	delete(w.running, c.task)
	w.mu.Unlock()
}

// cancelAll cancels every running call: the runtime is being closed.
func (w *watcher) cancelAll() {
	w.mu.Lock()
	for _, c := range w.running {
		c.cancel(context.Canceled)
	}
	w.mu.Unlock()
}

func (w *watcher) loop() {
	defer close(w.done)

	tick := time.NewTicker(CancelPoll)
	tick.Stop()

	var tasks []*C.nbffi_task_t
	var flags []C.uchar
	for {
		select {
		case <-w.wake:
		case <-w.quit:
			return
		}

		tick.Reset(CancelPoll)
		for busy := true; busy; {
			select {
			case <-tick.C:
			case <-w.quit:
				tick.Stop()
				return
			}
			busy = w.scan(&tasks, &flags)
		}
		tick.Stop()
	}
}

// scan cancels the calls whose task the host released, and reports whether
// handlers are still running.
func (w *watcher) scan(tasks *[]*C.nbffi_task_t, flags *[]C.uchar) bool {
	w.mu.Lock()
	defer w.mu.Unlock()

	*tasks = (*tasks)[:0]
	for t, c := range w.running {
		if !c.cancelled {
			*tasks = append(*tasks, t)
		}
	}
	n := len(*tasks)
	if n == 0 {
		return len(w.running) > 0
	}

	if cap(*flags) < n {
		*flags = make([]C.uchar, n)
	}
	f := (*flags)[:n]
	C.nbffi_go_cancelled(&(*tasks)[0], C.size_t(n), &f[0])

	for i, t := range *tasks {
		if f[i] != 0 {
			c := w.running[t]
			c.cancelled = true
			c.cancel(context.Canceled)
		}
	}
	return true
}
