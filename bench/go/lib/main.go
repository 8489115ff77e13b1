// Command lib is the benchmark's nbffi runtime library (libgoecho.so).
// "echo" runs echo.Echo, the handler the sidecar runs too; "clone" and
// "alloc" reply with a copy of the payload in Go memory (copied again by
// nbffi) and in C memory from nbffi.Alloc (handed over), to compare the
// two ways a reply leaves Go.  "md5" is the hashing job of bench/run (hex
// MD5 of the payload), which it also gives ngx.run_worker_thread.
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"

	"nbffi.dev/bench/go/echo"
	nbffi "nbffi.dev/shims/go"
)

func init() {
	nbffi.Handle("echo", echo.Echo)
	nbffi.Handle("clone", func(_ context.Context, p []byte) ([]byte, error) {
		return bytes.Clone(p), nil
	})
	nbffi.Handle("alloc", func(ctx context.Context, p []byte) ([]byte, error) {
		b := nbffi.Alloc(ctx, len(p))
		copy(b, p)
		return b, nil
	})
	nbffi.Handle("md5", func(_ context.Context, p []byte) ([]byte, error) {
		sum := md5.Sum(p)
		return hex.AppendEncode(nil, sum[:]), nil
	})
}

func main() {}
