// Package nbffi makes a Go package an nbffi runtime library: a c-shared
// library that an nginx worker (through lua-resty-nbffi) or any other nbffi
// host loads and calls without blocking its event loop.
//
// A library registers handlers in an init function and is built with
// -buildmode=c-shared; importing this package exports the entry points
// (nbffi_runtime_abi, nbffi_runtime_init, nbffi_runtime_fini):
//
//	package main
//
//	import (
//		"context"
//
//		nbffi "nbffi.dev/shims/go"
//	)
//
//	func init() {
//		nbffi.Handle("echo", func(ctx context.Context, p []byte) ([]byte, error) {
//			return p, nil
//		})
//	}
//
//	func main() {}
//
//	$ go build -buildmode=c-shared -o libmyrt.so .
//
// and from Lua: nbffi.load("/path/libmyrt.so", cfg):call("echo", "hi").
//
// # Calls
//
// Each runtime has one goroutine that pops batches of tasks (parked in Go's
// netpoller on the queue's eventfd while the queue is empty) and runs every
// handler in a goroutine of its own, so thousands of calls can wait on I/O
// at once.  A handler gets a view of the payload (valid until it returns) and
// a ctx that carries the caller's deadline and is cancelled when:
//
//   - the caller gave up (its Lua timeout passed, or its request ended):
//     nbffi has no callback for that, so each runtime checks the tasks of
//     its running handlers every CancelPoll (5 ms), only while handlers run;
//   - the host closes the runtime (rt:close(), nginx worker exit);
//   - the handler returns.
//
// The ctx is the shim's own type, not the context package's: its deadline
// timer starts only when the handler first calls Done, so a handler that
// never waits on it costs no timer.  It carries no values but the shim's.
//
// A handler's error becomes an error reply: the error's text with status
// StatusError, or an *Error's own status.  A panic becomes an error reply
// with StatusPanic and the panic's text (and a stack trace in the host's
// log); an unknown method, StatusUnknownMethod (the text lists the
// methods there are).  Lua sees them as
// nil, "runtime error <status>: <text>", <status>.
//
// Replies: a reply that is the payload, or any Go slice, is copied once by
// nbffi; a reply from Alloc is C memory and is handed over without a copy.
//
// Deadlines: a handler that returns ctx.Err() once the caller's deadline
// passed (or any error wrapping context.DeadlineExceeded then) is a
// timeout, not an error: the shim holds the answer back until the caller
// gave up at that same deadline (at most 250 ms, polled each ms), so Lua
// reports nil, "timeout" as for a call that got no answer; a host that
// does not give up gets status StatusTimeout, "timeout".
//
// # Streams
//
// A caller may read a call as a stream (rt:stream in Lua): the handler
// sends chunks before its reply, with Send(ctx, chunk) or the send
// function of a StreamHandler (HandleStream); Streaming(ctx) tells such a
// caller from a plain one (to whom Send returns ErrNotStream).  At most a
// window of chunks (16, or the caller's opts.window) wait for the reader;
// a send on a full window waits in Go (in a select, woken through the
// queue's fd when the host reads a chunk, retrying every 10 ms at worst),
// never in a C call, so slow readers hold no thread.  A caller that stops
// reading, times out or goes away cancels the stream: Send returns the
// ctx's error and the ctx is cancelled.
//
// # Events and metadata
//
// Emit(ctx, name, data) sends an event to the host that loaded the
// runtime, with no call: from the init hook's ctx (a watch started there)
// or a handler's, from any goroutine, until the runtime is closed.  It
// never waits: when the host's bounded event queue is full the event is
// dropped (counted by the host) and Emit returns an error wrapping
// ErrDropped.
//
// Meta(ctx) and MetaValue(ctx, key) read the small map the caller posted
// with the call (opts.meta in Lua: a request id, a traceparent); the lines
// a handler logs with Logf while it runs carry it to the host's log.
// Send, Logf and Meta are safe from goroutines the handler started, also
// after it returned (Send then returns ErrAnswered, Logf logs without the
// metadata).
//
// # Closing
//
// When the host closes a runtime, calls already queued still run; then
// every handler's ctx and the init hook's ctx are cancelled, and once the
// handlers have returned the runtime's state is closed (if an io.Closer)
// and everything is given back, its file descriptors included.
// nbffi_runtime_fini waits for that until the close deadline (in nginx:
// what is left of worker_shutdown_timeout, or the runtime's close
// timeout).  Handlers that ignore ctx and still run then are left behind:
// the runtime is orphaned (libnbffi logs it with their number), their
// callers get "runtime closed", their payloads stay readable, their
// answers are refused and freed when they return, and the state is closed
// after the last of them, if ever.  The nginx worker exits on time either
// way, even while such handlers keep every P busy: fini is C code that
// waits for the Go side without needing the Go scheduler.
//
// # Runtimes and state
//
// The Go runtime is one per process, but a library may be loaded as several
// nbffi runtimes (in nginx, one per distinct cfg and worker), each with its
// own queue.  The hook set with OnInit runs once per runtime with that
// runtime's cfg, and what it returns is the runtime's state, which handlers
// reach with State(ctx) (e.g. one gRPC connection per runtime).  Handlers
// are shared by all.
//
// # One Go library per process
//
// Every c-shared Go library carries its own Go runtime.  Two of them in one
// process (two different Go runtime libraries in one nginx worker) run, but
// each has its own scheduler, heap and threads, and the one loaded last
// installs its signal handlers over the first one's: the first loses the
// asynchronous preemption signal (SIGURG), so a goroutine of it that loops
// without function calls can stall its garbage collector.  Go does not
// support this; build every handler into one library instead.  The same
// library loaded twice (any cfg) is one Go runtime.
//
// # Signals and fork
//
// The Go runtime starts when the library is loaded, so load it in the
// process that uses it: in nginx, in init_worker or later, never in
// init_by_lua (the master), since threads do not survive fork.  Libraries
// are never unloaded.
//
// In a c-shared library Go handles only synchronous signals (SIGSEGV,
// SIGBUS, SIGFPE: faults outside Go code go to the previous handler),
// SIGPIPE (passed on to nginx's SIG_IGN) and SIGURG, and adds SA_ONSTACK to
// the handlers already installed.  libnbffi loads the library and runs its
// init on a thread of its own that blocks the asynchronous signals; the Go
// runtime's threads inherit that mask, so nginx's SIGHUP, SIGQUIT, SIGTERM,
// SIGUSR1, SIGWINCH, SIGIO and SIGALRM reach the worker's event loop
// thread.  Go unblocks SIGCHLD and SIGPROF on its own threads; nginx's
// SIGCHLD handler may therefore run on one, on the signal stack, which is
// harmless: it only reaps children.  Handlers should not call signal.Notify
// for nginx's signals, nor start child processes (nginx's SIGCHLD handler
// reaps any child of the worker).
//
// # GOMAXPROCS
//
// Each nginx worker has its own Go runtime.  At the first init the shim
// sets GOMAXPROCS from the worker's environment as C's getenv sees it,
// else to 1: nginx runs a worker per CPU, and with a second, idle P every
// handler goroutine would wake a thread for nothing (a futex wake and two
// context switches per call).  Handlers waiting on I/O are not limited by
// it; CPU-bound handlers share one CPU per worker.  To give them more, set
// it in nginx.conf:
//
//	env GOMAXPROCS=4;
//
// (or "env GOMAXPROCS;" to pass on nginx's own).  Go's os.Getenv does not
// see what the env directive sets, since Go copied the environment when
// nginx started; the shim reads it itself.  A value that is not a positive
// number is logged and 1 is used.  Other GO* variables (GOGC, GOMEMLIMIT)
// are read by Go at process start only: set them in nginx's own
// environment, or call runtime/debug from the init hook.
package nbffi
