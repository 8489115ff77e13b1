package nbffi

// The entry points that make a c-shared library an nbffi runtime library
// (nbffi_runtime_fini is in fini.c).  The preamble holds declarations only:
// cgo copies the preamble of a file with //export into two C files.

/*
#include "nbffi.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

//export nbffi_runtime_abi
func nbffi_runtime_abi() C.uint {
	return C.NBFFI_ABI_VERSION
}

//export nbffi_runtime_init
func nbffi_runtime_init(q *C.nbffi_queue_t, cfg unsafe.Pointer,
	cfgLen C.size_t, data *unsafe.Pointer, errBuf *C.char,
	errLen C.size_t) (rc C.int) {

	// A panic must not unwind through the C frames of the caller.
	defer func() {
		if r := recover(); r != nil {
			setErr(errBuf, errLen, fmt.Sprintf("panic in init: %v", r))
			rc = 1
		}
	}()

	var c []byte
	if cfgLen > 0 {
		c = C.GoBytes(cfg, C.int(cfgLen))
	}

	ref, err := startRuntime(q, c)
	if err != nil {
		setErr(errBuf, errLen, err.Error())
		return 1
	}
	*data = ref
	return 0
}

// setErr writes msg, truncated and NUL-terminated, to the loader's buffer.
func setErr(buf *C.char, size C.size_t, msg string) {
	if buf == nil || size == 0 {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(size))
	n := copy(b[:len(b)-1], msg)
	b[n] = 0
}
