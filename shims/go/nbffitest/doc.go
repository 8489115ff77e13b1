// Package nbffitest runs the handlers of a Go runtime library in go test,
// without nginx: the test binary carries the shim and your handlers (your
// package's init registered them), and a host in the test loads that shim
// through libnbffi's real loader and calls it the way the Lua module does:
// tasks with deadlines, replies, statuses, log lines.
//
//	func TestHello(t *testing.T) {
//		h := nbffitest.Start(t, "hi")                  // cfg for OnInit
//		status, reply, err := h.Call("hello", []byte("nginx"), time.Second)
//		...
//	}
//
// Start locks the test's goroutine to its OS thread: libnbffi's host half
// is single-threaded, so call the Harness only from the test's goroutine.
// cgo needs the header and libnbffi, as for building the library:
//
//	CGO_CFLAGS="$(pkg-config --cflags nbffi)" \
//	CGO_LDFLAGS="$(pkg-config --libs nbffi)" \
//	LD_LIBRARY_PATH="$(pkg-config --variable=libdir nbffi)" go test ./...
//
// (inside the nbffi tree the defaults find core/include and build/core).
// Start compiles a small forwarding runtime library (testdata/fwd.c) with
// $CC (default cc) into the test's temporary directory: its entry points
// call the ones the shim exports from the test binary.
//
// Host, Runtime and Task are the lower-level host that the shim's own
// tests use.
package nbffitest
