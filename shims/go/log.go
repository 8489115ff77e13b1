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
// runtime that ctx belongs to.  Outside a runtime's ctx it does nothing.
func Logf(ctx context.Context, level Level, format string, args ...any) {
	if rt, _ := ctx.Value(runtimeKey{}).(*runtime); rt != nil {
		logText(rt.q, level, fmt.Sprintf(format, args...))
	}
}

func logText(q *C.nbffi_queue_t, level Level, msg string) {
	if msg == "" {
		return
	}
	C.nbffi_log(q, C.int(level), (*C.char)(unsafe.Pointer(
		unsafe.StringData(msg))), C.size_t(len(msg)))
}
