/*
 * nbffi: a nonblocking bridge between an event loop (the "host", e.g. an
 * nginx worker) and long-lived foreign runtimes that live in their own
 * threads in the same process.
 *
 * Two halves share this header:
 *   - the host half: host, runtime loading, call, reap, release;
 *   - the runtime half: queue pop, task getters, respond, log.
 *
 * Threads.  "host thread" means the one thread that owns an nbffi_host_t
 * (the event loop).  Several hosts may exist, each on its own thread, and
 * any of them may post to the same runtime.  "runtime thread" means any
 * thread a runtime library runs on.  Every function below names the
 * threads that may call it.
 *
 * Errors.  Functions return 0 (or a count) on success and a negative
 * NBFFI_E* code on failure.  A failing call has no effect: nothing was
 * allocated, posted or completed.  nbffi_strerror() and nbffi_err_name()
 * turn a code into text.
 *
 * Ownership of a task.  A task is owned jointly by the host side and the
 * runtime side.  nbffi_call() gives the host one reference and queues the
 * other for the runtime.  The runtime gives its reference up with exactly
 * one nbffi_task_respond*() call; after that it must not touch the task.
 * The host gives its reference up with nbffi_task_release(), either after
 * reading the reply or before the reply came (the task is then cancelled
 * and freed when its completion is reaped).  The memory is freed, on a host
 * thread, when both references are gone.
 */

#ifndef NBFFI_H
#define NBFFI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define NBFFI_EXTERN  __attribute__((visibility("default")))
#else
#define NBFFI_EXTERN
#endif

#define NBFFI_VERSION_MAJOR  0
#define NBFFI_VERSION_MINOR  1
#define NBFFI_VERSION_PATCH  0

/*
 * The ABI version between libnbffi and runtime libraries.  A runtime
 * library exports nbffi_runtime_abi() returning the value it was built
 * with; the loader refuses a library whose value differs.
 */
#define NBFFI_ABI_VERSION  1

/* Error codes: negative errno values, plus nbffi's own below -4000. */
#define NBFFI_ERRNO_MAP(XX)                                                  \
    XX(EINVAL,    -22,   "invalid argument")                                 \
    XX(ENOMEM,    -12,   "out of memory")                                    \
    XX(E2BIG,     -7,    "payload or method name too large")                 \
    XX(EQFULL,    -11,   "queue full")                                       \
    XX(ECLOSED,   -32,   "runtime closed")                                   \
    XX(ETIMEDOUT, -110,  "timeout")                                          \
    XX(ECANCELED, -125,  "canceled")                                         \
    XX(EBUSY,     -16,   "busy")                                             \
    XX(EPERM,     -1,    "operation not permitted")                          \
    XX(EIO,       -5,    "system call failed")                               \
    XX(ELOAD,     -4001, "cannot load runtime library")                      \
    XX(ESYM,      -4002, "runtime library lacks an entry point")             \
    XX(EABI,      -4003, "runtime library built for another ABI version")    \
    XX(EINIT,     -4004, "runtime init failed")                              \
    XX(ERUNTIME,  -4005, "runtime error")                                    \

typedef enum {
#define NBFFI__ERR_ENUM(name, val, msg)  NBFFI_##name = (val),
    NBFFI_ERRNO_MAP(NBFFI__ERR_ENUM)
#undef NBFFI__ERR_ENUM
    NBFFI_OK = 0
} nbffi_errno_t;

/* Log levels, same order as syslog and nginx. */
typedef enum {
    NBFFI_LOG_ERR = 3,
    NBFFI_LOG_WARN = 4,
    NBFFI_LOG_NOTICE = 5,
    NBFFI_LOG_INFO = 6,
    NBFFI_LOG_DEBUG = 7
} nbffi_log_level_t;

/* Host flags, for nbffi_host_new(). */
#define NBFFI_HOST_NOTIFY_EVENTFD  0x0u  /* notifier is an eventfd         */
#define NBFFI_HOST_NOTIFY_SOCKET   0x1u  /* notifier is a unix socket      */
#define NBFFI_HOST_LOG_QUEUE       0x2u  /* queue runtime logs for the host
                                            (nbffi_host_log_next) instead of
                                            writing them to stderr          */

/* Load flags, for nbffi_runtime_load(). */
#define NBFFI_LOAD_GLOBAL          0x1u  /* dlopen with RTLD_GLOBAL        */

/* Call flags, for nbffi_call(). */
#define NBFFI_CALL_BORROW          0x1u  /* do not copy the payload: the
                                            caller keeps it alive and
                                            unchanged until the task is
                                            released                        */

#define NBFFI_MAX_METHOD           255   /* bytes in a method name         */

typedef struct nbffi_host_s     nbffi_host_t;
typedef struct nbffi_runtime_s  nbffi_runtime_t;
typedef struct nbffi_queue_s    nbffi_queue_t;
typedef struct nbffi_task_s     nbffi_task_t;

/* Frees a reply handed over with nbffi_task_respond_owned(). */
typedef void (*nbffi_free_cb)(void *data, void *ud);

/* Receives runtime log lines on a host without NBFFI_HOST_LOG_QUEUE. */
typedef void (*nbffi_log_cb)(void *ud, int level, const char *msg,
    size_t len);

/* Per-runtime counters, see nbffi_runtime_stats(). */
typedef struct {
    uint64_t  posted;      /* tasks accepted by nbffi_call()               */
    uint64_t  completed;   /* reaped with status 0                         */
    uint64_t  failed;      /* reaped with a runtime error or closed        */
    uint64_t  timed_out;   /* deadline passed: expired in the queue, or
                              released by the host after its deadline      */
    uint64_t  abandoned;   /* released by the host before completion       */
    uint64_t  in_flight;   /* posted and not yet reaped or abandoned       */
    uint64_t  queued;      /* waiting in the request queue                 */
    uint64_t  refused;     /* calls refused because the queue was full     */
} nbffi_stats_t;


/* ---- anywhere --------------------------------------------------------- */

/* Any thread.  Static strings, never freed. */
NBFFI_EXTERN const char *nbffi_strerror(int err);
NBFFI_EXTERN const char *nbffi_err_name(int err);

/* Any thread.  (major << 16) | (minor << 8) | patch. */
NBFFI_EXTERN unsigned nbffi_version(void);

/* Any thread.  NBFFI_ABI_VERSION of the library actually loaded. */
NBFFI_EXTERN unsigned nbffi_abi_version(void);

/* Any thread.  CLOCK_MONOTONIC in nanoseconds: the clock of deadlines. */
NBFFI_EXTERN int64_t nbffi_now_ns(void);

/*
 * Any thread.  pthread_create() with every signal blocked in the new thread
 * but SIGILL, SIGFPE, SIGSEGV and SIGBUS, so that signals meant for the
 * host (nginx) are never delivered to a runtime thread.  The caller's mask
 * is unchanged on return.  Returns 0 or a negative errno.
 */
NBFFI_EXTERN int nbffi_thread_create(void *thread /* pthread_t * */,
    void *(*fn)(void *), void *arg);

/* Sizes of the opaque types, for binding writers. */
NBFFI_EXTERN size_t nbffi_host_size(void);
NBFFI_EXTERN size_t nbffi_task_size(void);


/* ---- host half -------------------------------------------------------- */

/*
 * Creates a host: a done queue and its completion notifier.  flags is a set
 * of NBFFI_HOST_*.  Call after fork, in the process that will use it.
 * The calling thread becomes the host thread.  *out is owned by the caller
 * and freed with nbffi_host_free().
 */
NBFFI_EXTERN int nbffi_host_new(nbffi_host_t **out, unsigned flags);

/*
 * Host thread.  Frees the host.  Every runtime loaded on it must have been
 * freed and every task posted from it released; otherwise NBFFI_EBUSY and
 * nothing is freed.
 */
NBFFI_EXTERN int nbffi_host_free(nbffi_host_t *host);

/*
 * Host thread.  The eventfd of an NBFFI_HOST_NOTIFY_EVENTFD host: readable
 * when completions may be ready.  Owned by the host; do not close it.
 * NBFFI_EINVAL on a socket host.
 */
NBFFI_EXTERN int nbffi_host_fd(nbffi_host_t *host);

/*
 * Host thread, NBFFI_HOST_NOTIFY_SOCKET hosts.  The notifier handshake:
 *   1. nbffi_host_listen() makes a private 0700 directory with a listening
 *      unix socket in it and writes its path (NUL-terminated) to buf;
 *   2. the host's event loop connects a stream socket to that path (a
 *      connect to a listening unix socket completes without an accept);
 *   3. nbffi_host_accept() accepts that connection, rejects any peer whose
 *      SO_PEERCRED pid is not this process, unlinks the path and removes
 *      the directory.
 * From then on the event loop's socket receives one byte per wake-up; it
 * reads and discards them.  Calling listen again starts a new handshake
 * (a reconnect) and drops the previous connection once accept succeeds.
 * listen returns NBFFI_E2BIG if len is too small; accept returns
 * NBFFI_EBUSY when no connection is pending yet and NBFFI_EPERM when the
 * peer is another process.
 */
NBFFI_EXTERN int nbffi_host_listen(nbffi_host_t *host, char *buf,
    size_t len);
NBFFI_EXTERN int nbffi_host_accept(nbffi_host_t *host);

/*
 * Host thread.  Signals the notifier from the host itself (e.g. to wake a
 * dispatcher that must notice that the process is exiting).
 */
NBFFI_EXTERN void nbffi_host_kick(nbffi_host_t *host);

/*
 * Host thread.  Drains the eventfd of an eventfd host (no-op for a socket
 * host, whose bytes the event loop reads itself).  Call before reaping.
 */
NBFFI_EXTERN void nbffi_host_drain(nbffi_host_t *host);

/*
 * Host thread.  Moves up to max completed tasks to out[], oldest first, and
 * returns how many.  Each returned task is the host's to read and then
 * release.  Completions of tasks the host already released are freed here
 * and not returned.  Re-arms the notifier: a completion that arrives after
 * this call signals again.
 */
NBFFI_EXTERN int nbffi_host_reap(nbffi_host_t *host, nbffi_task_t **out,
    int max);

/*
 * Host thread.  Non-zero when a completion is waiting to be reaped.  A few
 * nanoseconds; used to spin briefly before yielding.
 */
NBFFI_EXTERN int nbffi_host_pending(nbffi_host_t *host);

/*
 * Host thread.  Spins for at most spin_ns, or until task is complete (task
 * NULL: until any completion is waiting), and returns 1 if it is (reap it
 * with nbffi_host_reap, which must follow), 0 if not.  While it spins,
 * runtime threads do not signal the notifier; a completion that came
 * during a spin that returns 0 is signalled by the spin itself.
 */
NBFFI_EXTERN int nbffi_host_spin(nbffi_host_t *host, nbffi_task_t *task,
    int64_t spin_ns);

/*
 * Host thread.  Tasks posted from this host and not yet freed; tasks
 * allocated and freed over the host's life.  Invariant checks use them.
 */
NBFFI_EXTERN uint64_t nbffi_host_tasks_live(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_tasks_allocated(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_tasks_freed(nbffi_host_t *host);

/*
 * Host thread, NBFFI_HOST_LOG_QUEUE hosts.  Pops the oldest queued runtime
 * log line into buf (truncated to len - 1 bytes, NUL-terminated; len >= 2),
 * stores its level (may be NULL) and returns the bytes stored (>= 1), or 0
 * when none is queued.  At most 1024 lines are kept, each cut to 4096
 * bytes; when full the oldest is dropped and counted in *dropped (may be
 * NULL), which is reset by every call.  Empty lines are not logged.
 */
NBFFI_EXTERN int nbffi_host_log_next(nbffi_host_t *host, int *level,
    char *buf, size_t len, uint64_t *dropped);

/*
 * Host thread.  Where runtime log lines go on a non-queueing host: cb is
 * called on the logging runtime thread, one call at a time, with a
 * message that is not NUL-terminated.  NULL restores stderr.
 */
NBFFI_EXTERN void nbffi_host_set_log(nbffi_host_t *host, nbffi_log_cb cb,
    void *ud);

/*
 * Host thread.  Bounds how long nbffi_runtime_load() waits for a runtime's
 * init: timeout_ms > 0 runs init on a helper thread (nbffi_thread_create)
 * and fails the load with NBFFI_EINIT, "init did not return within N ms",
 * when it has not returned by then; 0 calls init on the host thread and
 * waits as long as it takes.  The default is 0, or the value of the
 * environment variable NBFFI_INIT_TIMEOUT_MS (decimal milliseconds) when
 * nbffi_host_new() was called.
 *
 * A stuck init cannot be stopped safely, so on timeout nbffi leaves it
 * running and leaks what it may still touch: its helper thread, the
 * runtime's queue and the library.  Should init return later, the queue is
 * closed (threads it started see end-of-queue and exit, unjoined; fini is
 * never called).  Lines it logs go to the host while the host lives and
 * are dropped after nbffi_host_free(), which then closes the host's
 * descriptors but keeps its memory (a few hundred bytes) for the stuck
 * thread to log into.
 */
NBFFI_EXTERN void nbffi_host_set_init_timeout(nbffi_host_t *host,
    int64_t timeout_ms);

/*
 * Host thread.  Loads a runtime library and starts a runtime in it.
 *
 * lib is a path (it contains a '/') or a short name: "echo" is looked up as
 * "libecho.so" in each directory of search_path (':'-separated, may be
 * NULL), then through dlopen's own search, then as "echo" itself.
 * The library must export
 *     unsigned nbffi_runtime_abi(void);           returns NBFFI_ABI_VERSION
 *     int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
 *         size_t cfg_len, char *err, size_t err_len);
 * and may export
 *     void nbffi_runtime_fini(nbffi_queue_t *q);
 * init is called once, on this thread (on a helper thread when the host
 * has an init timeout, see nbffi_host_set_init_timeout), with cfg
 * (cfg_len bytes, may hold NUL bytes, need not be NUL-terminated; valid
 * only during the call) and the new runtime's queue.  It starts the
 * threads that pop from q and returns 0, or returns non-zero after writing
 * a NUL-terminated message to err.  fini, if exported, is called by
 * nbffi_runtime_free() after the
 * queue is closed and must return only once no thread of the runtime will
 * touch q or any of its tasks again (join them there).
 *
 * max_queue bounds the request queue (0: 65536).  max_payload bounds the
 * payload of one call in bytes (0: 64 MiB).  flags: NBFFI_LOAD_*.
 *
 * On failure returns NBFFI_ELOAD, NBFFI_ESYM, NBFFI_EABI, NBFFI_EINIT,
 * NBFFI_ENOMEM or NBFFI_EINVAL and writes a NUL-terminated message to err
 * (dlerror's text, the missing symbol, both ABI versions, init's own
 * message, or "init did not return within N ms").  The library is never
 * dlclose'd: runtimes such as Go cannot be unloaded.  On success *out is
 * the caller's until nbffi_runtime_free().
 */
NBFFI_EXTERN int nbffi_runtime_load(nbffi_host_t *host, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    uint32_t max_queue, uint64_t max_payload, unsigned flags,
    nbffi_runtime_t **out, char *err, size_t err_len);

/*
 * Host thread.  Stops accepting calls.  Tasks already queued are still
 * popped by the runtime, after which its threads get NBFFI_ECLOSED from
 * nbffi_queue_pop() and exit.  Never blocks.  Idempotent.
 */
NBFFI_EXTERN void nbffi_runtime_close(nbffi_runtime_t *rt);

/*
 * Host thread.  Closes the runtime, calls its fini (which may block until
 * the runtime's threads have exited: call this when no call is in flight,
 * or at process exit), then completes every task the runtime popped and
 * never answered with NBFFI_ECLOSED.  A runtime that exports no fini gets
 * only the close: its unanswered tasks stay pending, so a runtime with
 * threads must export fini.  The runtime's memory is freed once all its
 * tasks are reaped or released; rt must not be used after this.
 */
NBFFI_EXTERN void nbffi_runtime_free(nbffi_runtime_t *rt);

/*
 * Host thread.  The most a runtime thread of rt spins in nbffi_queue_pop()
 * before it sleeps (default 50 us; the spin adapts below it to the arrival
 * rate).  0 disables spinning: every idle pop sleeps, which saves CPU and
 * costs a thread wake-up (~20 us on a VM) per call.
 */
NBFFI_EXTERN void nbffi_runtime_set_spin(nbffi_runtime_t *rt,
    int64_t max_ns);

/* Any thread.  A consistent-enough snapshot of the counters. */
NBFFI_EXTERN void nbffi_runtime_stats(nbffi_runtime_t *rt,
    nbffi_stats_t *out);

/* Host thread.  1 once nbffi_runtime_close() was called. */
NBFFI_EXTERN int nbffi_runtime_closed(nbffi_runtime_t *rt);

/*
 * Host thread of host.  Posts a task: method (mlen bytes, 1..255, any
 * bytes but NUL), payload (plen bytes, copied unless flags has
 * NBFFI_CALL_BORROW), deadline (nbffi_now_ns() clock, 0 for none).  Never
 * blocks.  On success *out is the task, the host's until
 * nbffi_task_release(); its completion is reaped on host.
 * Errors: NBFFI_ECLOSED (runtime closed), NBFFI_EQFULL (max_queue tasks
 * already queued), NBFFI_E2BIG (payload over max_payload or method over
 * NBFFI_MAX_METHOD), NBFFI_EINVAL (empty method), NBFFI_ENOMEM.
 */
NBFFI_EXTERN int nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, size_t mlen, const void *payload, size_t plen,
    int64_t deadline_ns, unsigned flags, nbffi_task_t **out);

/*
 * Host thread, on a task returned by nbffi_host_reap().  status is 0 for a
 * reply, a positive runtime-defined code for a runtime error (the reply
 * then holds its message), or a negative NBFFI_E* code set by nbffi:
 * NBFFI_ETIMEDOUT (deadline passed before a runtime thread took it),
 * NBFFI_ECANCELED, NBFFI_ECLOSED (runtime freed without answering).  The
 * reply pointer is owned by the task, valid until nbffi_task_release().
 */
NBFFI_EXTERN int nbffi_task_status(nbffi_task_t *task);
NBFFI_EXTERN const void *nbffi_task_reply(nbffi_task_t *task, size_t *len);

/*
 * Host thread.  Gives up the host's reference.  On a completed task, frees
 * it.  On a pending one, marks it cancelled (runtimes may check
 * nbffi_task_cancelled) and leaves the freeing to nbffi_host_reap() when
 * the completion arrives.  The task must not be used afterwards.
 */
NBFFI_EXTERN void nbffi_task_release(nbffi_task_t *task);

/* Any thread holding a reference.  A per-process unique, nonzero id. */
NBFFI_EXTERN uint64_t nbffi_task_id(nbffi_task_t *task);


/* ---- runtime half ----------------------------------------------------- */

/*
 * Runtime threads.  Takes up to max tasks, oldest first, waiting at most
 * timeout_ns (-1: forever, 0: do not wait).  Spins briefly before sleeping
 * when tasks arrived recently.  Returns the number taken (each one the
 * caller's to answer with exactly one nbffi_task_respond*()), 0 on timeout,
 * or NBFFI_ECLOSED once the queue is closed and empty (end-of-queue: the
 * thread should exit).  Tasks whose deadline passed or that the host
 * released are answered by nbffi and not returned.
 */
NBFFI_EXTERN int nbffi_queue_pop(nbffi_queue_t *q, nbffi_task_t **out,
    int max, int64_t timeout_ns);

/*
 * Any thread.  An eventfd (owned by the queue) that becomes readable when
 * tasks are queued or the queue is closed, for runtimes that own an event
 * loop: on readable, read it to drain, then pop with timeout 0 until 0.
 * Returns the fd or a negative NBFFI_E* code.
 */
NBFFI_EXTERN int nbffi_queue_fd(nbffi_queue_t *q);

/* Any thread.  1 once the host closed the runtime. */
NBFFI_EXTERN int nbffi_queue_closed(nbffi_queue_t *q);

/*
 * Runtime threads.  Writes a log line through the host (see
 * nbffi_host_set_log and NBFFI_HOST_LOG_QUEUE).  msg need not be
 * NUL-terminated.  nbffi_logf formats like printf.
 */
NBFFI_EXTERN void nbffi_log(nbffi_queue_t *q, int level, const char *msg,
    size_t len);
NBFFI_EXTERN void nbffi_logf(nbffi_queue_t *q, int level, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));

/*
 * Runtime threads, on a task popped and not yet answered.  Views into the
 * task, valid until it is answered.  The method is also NUL-terminated.
 * deadline is 0 for none.  cancelled turns 1 when the host gave up.
 */
NBFFI_EXTERN const char *nbffi_task_method(nbffi_task_t *task, size_t *len);
NBFFI_EXTERN const void *nbffi_task_payload(nbffi_task_t *task, size_t *len);
NBFFI_EXTERN int64_t nbffi_task_deadline(nbffi_task_t *task);
NBFFI_EXTERN int nbffi_task_cancelled(nbffi_task_t *task);

/*
 * Runtime threads.  Answers a popped task exactly once and gives up the
 * runtime's reference: the task must not be touched afterwards.  status 0
 * is a reply; a positive status is a runtime error whose message is data.
 * nbffi_task_respond copies data (len bytes).  nbffi_task_respond_owned
 * hands data over instead: nbffi calls free_cb(data, ud) on a host thread
 * once the host is done with the reply (at once if the host already gave
 * up).  Either way the task is answered: a negative status is reserved
 * and recorded as NBFFI_ERUNTIME; if nbffi_task_respond cannot allocate
 * the copy it answers with status NBFFI_ENOMEM and returns NBFFI_ENOMEM.
 * Otherwise returns 0.
 */
NBFFI_EXTERN int nbffi_task_respond(nbffi_task_t *task, int status,
    const void *data, size_t len);
NBFFI_EXTERN int nbffi_task_respond_owned(nbffi_task_t *task, int status,
    void *data, size_t len, nbffi_free_cb free_cb, void *ud);

#ifdef __cplusplus
}
#endif

#endif /* NBFFI_H */
