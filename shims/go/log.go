package nbffi

/*
#include "nbffi.h"
*/
import "C"

import (
	"context"
	"fmt"
	"unsafe"
)

// Level is the level of a log line, in syslog's and nginx's order.
type Level int

const (
	LevelErr    Level = C.NBFFI_LOG_ERR
	LevelWarn   Level = C.NBFFI_LOG_WARN
	LevelNotice Level = C.NBFFI_LOG_NOTICE
	LevelInfo   Level = C.NBFFI_LOG_INFO
	LevelDebug  Level = C.NBFFI_LOG_DEBUG
)

// Logf writes a line to the host's log (nginx's error log) through the
// runtime that ctx belongs to.  With a handler's ctx, while the handler
// runs, the line carries the call's metadata (see Meta): nginx writes it
// with the request id the caller passed.  Outside a runtime's ctx, or once
// the runtime is closed, it does nothing.
func Logf(ctx context.Context, level Level, format string, args ...any) {
	switch c := ctx.Value(callKey{}).(type) {
	case *call:
		c.log(level, fmt.Sprintf(format, args...))
	default:
		if rt, _ := ctx.Value(runtimeKey{}).(*runtime); rt != nil {
			rt.log(level, fmt.Sprintf(format, args...))
		}
	}
}

// log logs through the task while it is not answered, with its metadata.
func (c *call) log(level Level, msg string) {
	if msg == "" {
		return
	}
	c.live.RLock()
	if !c.answered {
		C.nbffi_task_log(c.task, C.int(level), (*C.char)(unsafe.Pointer(
			unsafe.StringData(msg))), C.size_t(len(msg)))
		c.live.RUnlock()
		return
	}
	c.live.RUnlock()
	c.rt.log(level, msg)
}

// log logs through the queue unless the runtime is gone.
func (rt *runtime) log(level Level, msg string) {
	rt.gate.RLock()
	defer rt.gate.RUnlock()
	if !rt.gone {
		logText(rt.q, level, msg)
	}
}

func logText(q *C.nbffi_queue_t, level Level, msg string) {
	if msg == "" {
		return
	}
	C.nbffi_log(q, C.int(level), (*C.char)(unsafe.Pointer(
		unsafe.StringData(msg))), C.size_t(len(msg)))
}
