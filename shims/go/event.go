package nbffi

/*
#include "nbffi.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"unsafe"
)

// MaxEventName is the longest event name nbffi carries, in bytes.
const MaxEventName = 255

// Emit sends an event, name and data, to the host that loaded the runtime
// that ctx belongs to: the init hook's ctx (and goroutines started with
// it, e.g. a watch) or a handler's.  No call is needed: in nginx, the Lua
// handlers the worker registered for name (nbffi.on_event) run with the
// data.  Both are copied; Emit never waits for the host.  Events of one
// goroutine arrive in order.
//
// It returns nil once the event is queued, an error wrapping ErrDropped
// when the host's bounded event queue is full or the event is larger than
// it takes (the host counts and logs the drop), ErrClosed once the runtime
// is closed, or an error for a name that is empty, longer than
// MaxEventName or holds a NUL byte.
func Emit(ctx context.Context, name string, data []byte) error {
	rt, _ := ctx.Value(runtimeKey{}).(*runtime)
	if rt == nil {
		return errors.New("nbffi: Emit outside a runtime's ctx")
	}
	if name == "" || len(name) > MaxEventName {
		return fmt.Errorf("nbffi: bad event name %q", name)
	}

	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}

	rt.gate.RLock()
	defer rt.gate.RUnlock()
	if rt.gone {
		return ErrClosed
	}
	rc := C.nbffi_emit(rt.q, (*C.char)(unsafe.Pointer(unsafe.StringData(name))),
		C.size_t(len(name)), p, C.size_t(len(data)))
	switch rc {
	case 0:
		return nil
	case C.NBFFI_EQFULL, C.NBFFI_E2BIG, C.NBFFI_ENOMEM:
		return fmt.Errorf("%w: %s", ErrDropped,
			C.GoString(C.nbffi_strerror(rc)))
	case C.NBFFI_ECLOSED:
		return ErrClosed
	}
	return fmt.Errorf("nbffi: emit %q: %s", name,
		C.GoString(C.nbffi_strerror(rc)))
}
