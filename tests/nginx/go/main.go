// Command golife is the Go runtime of tests/nginx/test_go_lifecycle.py
// (libgolife.so): handlers that misbehave the way production code does.
//
//	echo    reply = payload
//	stuck   never returns and ignores every ctx: payload "spin" loops on
//	        the CPU without a function call, "block" waits on nothing;
//	        logs "stuck: <payload>" first
//	procs   runtime.GOMAXPROCS(0), in decimal
//	hello   greeting + ":" + payload; greeting is set at build time
//	        (-ldflags "-X main.greeting=v2"), for the deploy test
package main

import (
	"context"
	"runtime"
	"strconv"

	nbffi "nbffi.dev/shims/go"
)

// spins counts the loops of "spin", so that the loop does work.
var spins uint64

// greeting is the version of this build, for "hello".
var greeting = "v1"

func init() {
	nbffi.Handle("echo", func(_ context.Context, p []byte) ([]byte, error) {
		return p, nil
	})
	nbffi.Handle("stuck", stuck)
	nbffi.Handle("hello", func(_ context.Context, p []byte) ([]byte, error) {
		return append([]byte(greeting+":"), p...), nil
	})
	nbffi.Handle("procs", func(context.Context, []byte) ([]byte, error) {
		return strconv.AppendInt(nil, int64(runtime.GOMAXPROCS(0)), 10), nil
	})
}

func stuck(ctx context.Context, p []byte) ([]byte, error) {
	nbffi.Logf(ctx, nbffi.LevelNotice, "stuck: %s", p)
	if string(p) == "spin" {
		// only Go's asynchronous preemption takes the CPU from it
		for {
			spins++
		}
	}
	select {}
}

func main() {}
