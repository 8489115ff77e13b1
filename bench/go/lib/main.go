// Command lib is the benchmark's nbffi runtime library (libgoecho.so).
// "echo" runs echo.Echo, the handler the sidecar runs too; "clone" and
// "alloc" reply with a copy of the payload in Go memory (copied again by
// nbffi) and in C memory from nbffi.Alloc (handed over), to compare the
// two ways a reply leaves Go.  "md5" is the hashing job of bench/run (hex
// MD5 of the payload), which it also gives ngx.run_worker_thread.
//
// For bench/go/stream: "stream" ("TOTAL CHUNK") sends TOTAL bytes in
// chunks of CHUNK bytes to a streaming caller and replies nothing;
// "emit" ("N SIZE") emits N events "ev" of SIZE bytes, waiting a little
// and trying again when the host's event queue is full, and replies the
// number of such retries.
package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

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
	nbffi.Handle("stream", func(ctx context.Context, p []byte) ([]byte, error) {
		var total, size int
		if _, err := fmt.Sscan(string(p), &total, &size); err != nil || size <= 0 {
			return nil, fmt.Errorf("stream: want \"TOTAL CHUNK\", got %q", p)
		}
		chunk := bytes.Repeat([]byte{'x'}, size)
		for sent := 0; sent < total; sent += size {
			if err := nbffi.Send(ctx, chunk[:min(size, total-sent)]); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	nbffi.Handle("emit", func(ctx context.Context, p []byte) ([]byte, error) {
		var n, size int
		if _, err := fmt.Sscan(string(p), &n, &size); err != nil {
			return nil, fmt.Errorf("emit: want \"N SIZE\", got %q", p)
		}
		data := bytes.Repeat([]byte{'e'}, size)
		retries := 0
		for i := 0; i < n; {
			err := nbffi.Emit(ctx, "ev", data)
			switch {
			case err == nil:
				i++
			case errors.Is(err, nbffi.ErrDropped):
				retries++
				time.Sleep(50 * time.Microsecond)
			default:
				return nil, err
			}
		}
		return fmt.Appendf(nil, "%d", retries), nil
	})
}

func main() {}
