package nbffi

// Build flags for the whole package.  The defaults find the header in the
// source tree and libnbffi.so in the tree's meson build directory; builds
// elsewhere add their own paths through CGO_CFLAGS and CGO_LDFLAGS.

/*
#cgo CFLAGS: -I${SRCDIR}/../../core/include
#cgo LDFLAGS: -L${SRCDIR}/../../build/core -lnbffi
*/
import "C"
