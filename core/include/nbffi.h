/*
 * nbffi: a nonblocking bridge between an event loop (the "host", e.g. an
 * nginx worker) and long-lived foreign runtimes that live in their own
 * threads in the same process.
 *
 * Two halves share this header:
 *   - the host half: host, runtime life cycle, call, reap, release;
 *   - the runtime half: the entry points a runtime library exports, queue
 *     pop, task getters, respond, log.
 *
 * Threads.  "host thread" means the one thread that owns an nbffi_host_t
 * (the event loop).  Several hosts may exist, each on its own thread, and
 * any of them may post to the same runtime.  "runtime thread" means any
 * thread a runtime library runs on.  "core thread" means a thread libnbffi
 * starts itself: the host thread never runs foreign code, so dlopen, init
 * and fini run on core threads, with every asynchronous signal blocked.
 * Every function below names the threads that may call it.
 *
 * Errors.  Functions return 0 (or a count) on success and a negative
 * NBFFI_E* code on failure.  A failing call has no effect: nothing was
 * allocated, posted or completed.  nbffi_strerror() and nbffi_err_name()
 * turn a code into text.
 *
 * Ownership of a task.  A task is owned jointly by the host side and the
 * runtime side.  nbffi_call() gives the host one reference and queues the
 * other for the runtime.  The runtime gives its reference up with one
 * nbffi_task_respond*() call; libnbffi refuses a second one.  The host
 * gives its reference up with nbffi_task_release(), either after reading
 * the reply or before the reply came (the task is then cancelled and freed
 * when its completion is reaped).  The memory is freed, on a host thread,
 * when both references are gone -- except for the tasks of an orphaned
 * runtime (see nbffi_runtime_close), which are leaked on purpose.
 *
 * Life of a runtime.  nbffi_runtime_load() returns at once; a core thread
 * loads the library and runs its init.  nbffi_runtime_close() stops new
 * calls; a core thread runs fini with a deadline.  Each of the two reports
 * its end to the host as a task completion (a "life-cycle task"), through
 * the same notifier as replies.  Every task posted completes exactly once:
 * with a reply, a runtime error, a timeout, a failed start or closed.
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
#define NBFFI_VERSION_MINOR  2
#define NBFFI_VERSION_PATCH  0

/*
 * The ABI version between libnbffi and runtime libraries.  A runtime
 * library exports nbffi_runtime_abi() returning the value it was built
 * with; the loader refuses a library whose value differs.  Version 2: init
 * hands back a per-runtime pointer, fini takes it and a deadline.
 */
#define NBFFI_ABI_VERSION  2

/* Error codes: negative errno values, plus nbffi's own below -4000. */
#define NBFFI_ERRNO_MAP(XX)                                                  \
    XX(EINVAL,       -22,   "invalid argument")                              \
    XX(ENOMEM,       -12,   "out of memory")                                 \
    XX(E2BIG,        -7,    "payload or method name too large")              \
    XX(EQFULL,       -11,   "queue full")                                    \
    XX(ECLOSED,      -32,   "runtime closed")                                \
    XX(ETIMEDOUT,    -110,  "timeout")                                       \
    XX(ECANCELED,    -125,  "canceled")                                      \
    XX(EBUSY,        -16,   "busy")                                          \
    XX(EPERM,        -1,    "operation not permitted")                       \
    XX(EIO,          -5,    "system call failed")                            \
    XX(ENAMETOOLONG, -36,   "path too long")                                 \
    XX(EALREADY,     -114,  "task already answered")                         \
    XX(ELOAD,        -4001, "cannot load runtime library")                   \
    XX(ESYM,         -4002, "runtime library lacks an entry point")          \
    XX(EABI,         -4003, "runtime library built for another ABI version") \
    XX(EINIT,        -4004, "runtime init failed")                           \
    XX(ERUNTIME,     -4005, "runtime error")                                 \
    XX(EORPHANED,    -4006, "runtime orphaned")                              \

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

/* States of a runtime, see nbffi_runtime_state(). */
typedef enum {
    NBFFI_RT_STARTING = 0,  /* a core thread loads it and runs its init  */
    NBFFI_RT_READY = 1,     /* init returned 0                           */
    NBFFI_RT_FAILED = 2,    /* load or init failed, or init timed out    */
    NBFFI_RT_CLOSING = 3,   /* closed; fini runs                         */
    NBFFI_RT_CLOSED = 4,    /* fini returned and every thread left       */
    NBFFI_RT_ORPHANED = 5   /* threads stayed past the close deadline    */
} nbffi_rt_state_t;

/* Host flags, for nbffi_host_new(). */
#define NBFFI_HOST_NOTIFY_EVENTFD  0x0u  /* notifier is an eventfd         */
#define NBFFI_HOST_NOTIFY_SOCKET   0x1u  /* notifier is a unix socket      */
#define NBFFI_HOST_LOG_QUEUE       0x2u  /* queue runtime logs for the host
                                            (nbffi_host_log_next) instead of
                                            writing them to stderr          */

/* Load flags, for nbffi_runtime_load(). */
#define NBFFI_LOAD_GLOBAL          0x1u  /* dlopen with RTLD_GLOBAL        */
#define NBFFI_LOAD_SCHED_NORMAL    0x2u  /* leave the scheduling policy of
                                            the threads that pop the queue
                                            alone (default: SCHED_BATCH,
                                            see nbffi_queue_pop)           */

/* Call flags, for nbffi_call(). */
#define NBFFI_CALL_BORROW          0x1u  /* do not copy the payload: the
                                            caller keeps it alive and
                                            unchanged until the task is
                                            released (forever, if the task
                                            is leaked: nbffi_task_leaked) */
#define NBFFI_CALL_STREAM          0x2u  /* the caller reads chunks sent
                                            before the answer, see
                                            nbffi_call_ex              */

#define NBFFI_MAX_METHOD           255   /* bytes in a method name         */
#define NBFFI_MAX_META             4096  /* bytes of a call's metadata     */
#define NBFFI_MAX_EVENT_NAME       255   /* bytes in an event name         */
#define NBFFI_STREAM_WINDOW        16    /* default chunks in flight       */

typedef struct nbffi_host_s     nbffi_host_t;
typedef struct nbffi_runtime_s  nbffi_runtime_t;
typedef struct nbffi_queue_s    nbffi_queue_t;
typedef struct nbffi_task_s     nbffi_task_t;
typedef struct nbffi_event_s    nbffi_event_t;

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


/* Per-host event counters, see nbffi_host_event_stats(). */
typedef struct {
    uint64_t  emitted;     /* accepted by nbffi_emit()                     */
    uint64_t  delivered;   /* taken by the host (nbffi_host_event_next)    */
    uint64_t  dropped;     /* refused: queue full, too large, no memory    */
    uint64_t  queued;      /* waiting to be taken now                      */
    uint64_t  queued_bytes;/* their names and data                         */
    uint64_t  max_events;  /* the bounds, see nbffi_host_set_event_limit   */
    uint64_t  max_bytes;
} nbffi_event_stats_t;


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

/*
 * Any thread.  pthread_join() until deadline_ns (nbffi_now_ns clock; 0:
 * no limit): 0 once thread ended (and was joined), NBFFI_ETIMEDOUT if it
 * had not by then (it is still joinable).  For a runtime's fini.
 */
NBFFI_EXTERN int nbffi_thread_join(void *thread /* pthread_t * */,
    int64_t deadline_ns);

/*
 * Host thread of a process that has no threads of its own to keep safe
 * across fork() (nginx's master in init_by_lua, a deploy script): checks
 * that lib would load as nbffi_runtime_load() would load it in a worker --
 * found (path, or short name through search_path and the dynamic linker),
 * readable by user ("name" or "name:group", as nginx's user directive;
 * NULL or when not root: this process's user), exporting the entry
 * points, of this ABI version -- and, if the library exports
 * nbffi_runtime_check, that it accepts cfg.  Nothing of the library runs
 * in the caller: all of it happens in a forked child that _exits, killed
 * at deadline_ns (nbffi_now_ns clock; 0: none).  Blocks until then.
 * Returns 0, or NBFFI_ELOAD, NBFFI_ESYM, NBFFI_EABI, NBFFI_EINIT (the
 * check refused cfg), NBFFI_EPERM (no such user), NBFFI_ETIMEDOUT or
 * NBFFI_EIO, with a NUL-terminated message in err (err_len bytes).
 */
NBFFI_EXTERN int nbffi_preflight(const char *lib, const char *search_path,
    const void *cfg, size_t cfg_len, unsigned flags, const char *user,
    int64_t deadline_ns, char *err, size_t err_len);

/* Sizes of the opaque types, for binding writers. */
NBFFI_EXTERN size_t nbffi_host_size(void);
NBFFI_EXTERN size_t nbffi_task_size(void);


/* ---- host half: the host ---------------------------------------------- */

/*
 * Creates a host: a done queue and its completion notifier.  flags is a set
 * of NBFFI_HOST_*.  Call after fork, in the process that will use it.
 * The calling thread becomes the host thread.  *out is owned by the caller
 * and freed with nbffi_host_free().
 */
NBFFI_EXTERN int nbffi_host_new(nbffi_host_t **out, unsigned flags);

/*
 * Host thread.  Frees the host.  Every runtime loaded on it must have been
 * freed (nbffi_runtime_free) and every task posted from it released;
 * otherwise NBFFI_EBUSY and nothing is freed.  If a runtime of the host
 * was orphaned, its threads may still log through the host: the host's
 * descriptors are closed but its memory (a few hundred bytes) is kept and
 * their lines are dropped.
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
 *   1. nbffi_host_listen() makes a private 0700 directory in $TMPDIR (else
 *      /tmp) with a listening unix socket in it and writes its path
 *      (NUL-terminated) to buf;
 *   2. the host's event loop connects a stream socket to that path (a
 *      connect to a listening unix socket completes without an accept);
 *   3. nbffi_host_accept() accepts connections until it finds the one made
 *      by this process (SO_PEERCRED pid): others, made by any other process
 *      of the same user that raced to the path, are closed and counted
 *      (nbffi_host_peers_refused); it then unlinks the path and removes the
 *      directory.
 * From then on the event loop's socket receives one byte per wake-up; it
 * reads and discards them.  Calling listen again starts a new handshake
 * (a reconnect) and drops the previous connection once accept succeeds.
 *
 * listen fails with NBFFI_ENAMETOOLONG when the socket path would exceed
 * the 107 bytes a unix socket path can hold, or len is too small, and with
 * NBFFI_EIO when the directory or socket cannot be made; either way it
 * writes a message naming the path, the limit or the system error to buf
 * (truncated to len).  accept returns NBFFI_EBUSY when this process's
 * connection is not pending (after accepting and refusing at most 128
 * others), NBFFI_EINVAL without a listen.
 */
NBFFI_EXTERN int nbffi_host_listen(nbffi_host_t *host, char *buf,
    size_t len);
NBFFI_EXTERN int nbffi_host_accept(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_peers_refused(nbffi_host_t *host);

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
 * Host thread.  Blocks the calling thread until a completion or a queued
 * log line is waiting, or until deadline_ns (nbffi_now_ns clock; 0: no
 * limit).  Returns 1 if something is waiting, 0 at the deadline.  For
 * hosts that may block: tests, plain C programs, and an event loop's final
 * shutdown -- never an event loop that still serves.
 */
NBFFI_EXTERN int nbffi_host_wait(nbffi_host_t *host, int64_t deadline_ns);

/*
 * Host thread.  Tasks posted from this host (calls and life-cycle tasks)
 * that are not yet freed; allocated and freed over the host's life; and
 * leaked on purpose because an orphaned runtime may still read them.
 * live == allocated - freed - leaked.
 */
NBFFI_EXTERN uint64_t nbffi_host_tasks_live(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_tasks_allocated(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_tasks_freed(nbffi_host_t *host);
NBFFI_EXTERN uint64_t nbffi_host_tasks_leaked(nbffi_host_t *host);

/*
 * Host thread, NBFFI_HOST_LOG_QUEUE hosts.  Pops the oldest queued runtime
 * log line into buf (truncated to len - 1 bytes, NUL-terminated; len >= 2),
 * stores its level (may be NULL) and returns the bytes stored (>= 1), or 0
 * when none is queued.  At most 1024 lines are kept, each cut to 4096
 * bytes; when full the oldest is dropped and counted in *dropped (may be
 * NULL), which is reset by every call.  Empty lines are not logged.
 * libnbffi logs its own events (a runtime orphaned, an answer refused)
 * through the same queue.
 */
NBFFI_EXTERN int nbffi_host_log_next(nbffi_host_t *host, int *level,
    char *buf, size_t len, uint64_t *dropped);

/*
 * Host thread.  Where runtime log lines go on a non-queueing host: cb is
 * called on the logging thread (a runtime or core thread), one call at a
 * time, with a message that is not NUL-terminated.  NULL restores stderr.
 */
NBFFI_EXTERN void nbffi_host_set_log(nbffi_host_t *host, nbffi_log_cb cb,
    void *ud);


/* ---- host half: runtimes ---------------------------------------------- */

/*
 * Host thread.  Starts a runtime and returns at once: the library is
 * loaded and its init run on a core thread, never on the calling thread.
 *
 * lib is a path (it contains a '/') or a short name: "echo" is looked up as
 * "libecho.so" in each directory of search_path (':'-separated, may be
 * NULL), then through dlopen's own search, then as "echo" itself.  lib,
 * search_path and cfg (cfg_len bytes, may hold NUL bytes) are copied.
 *
 * max_queue bounds the request queue (0: 65536).  max_payload bounds the
 * payload of one call in bytes (0: 64 MiB).  start_deadline_ns
 * (nbffi_now_ns clock, 0: none) bounds the start: an init still running
 * then is left to itself and the runtime fails with "init did not return
 * within the start deadline".  flags: NBFFI_LOAD_*.
 *
 * On success *out is the caller's until nbffi_runtime_free(), in state
 * NBFFI_RT_STARTING.  Calls may be posted at once: they wait in the queue
 * (within their own deadlines) until the runtime's threads pop them.  If
 * task is not NULL, *task is a life-cycle task, reaped on host like a
 * reply once the start ended: status 0 when the runtime is ready, else
 * NBFFI_ELOAD, NBFFI_ESYM, NBFFI_EABI or NBFFI_EINIT with the message as
 * its reply (dlerror's text naming the file, the missing symbol, both ABI
 * versions, init's own message or the timeout).  After a failed start,
 * every call queued completes with that status and message, and later
 * calls are refused with it (nbffi_call returns it; the message is
 * nbffi_runtime_error()).  The library is never dlclose'd: runtimes such
 * as Go cannot be unloaded.
 *
 * Returns 0, or NBFFI_EINVAL, NBFFI_ENOMEM, NBFFI_EIO (no thread could be
 * started); on error nothing was started and *out and *task are unset.
 */
NBFFI_EXTERN int nbffi_runtime_load(nbffi_host_t *host, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    uint32_t max_queue, uint64_t max_payload, int64_t start_deadline_ns,
    unsigned flags, nbffi_runtime_t **out, nbffi_task_t **task);

/* Any thread.  The runtime's nbffi_rt_state_t. */
NBFFI_EXTERN int nbffi_runtime_state(nbffi_runtime_t *rt);

/*
 * Host thread.  After a failed start (NBFFI_RT_FAILED): the status
 * (NBFFI_ELOAD...) and message of the failure, valid until
 * nbffi_runtime_free(); else 0 and "".
 */
NBFFI_EXTERN int nbffi_runtime_error(nbffi_runtime_t *rt, const char **msg);

/*
 * Host thread of the host that loaded rt.  Closes the runtime and returns
 * at once.  From now on calls
 * are refused with NBFFI_ECLOSED; tasks already queued are still popped by
 * the runtime, after which its threads get NBFFI_ECLOSED from
 * nbffi_queue_pop() and exit.  A core thread calls the runtime's fini with
 * deadline_ns (0: none) -- after the start ended, if it has not yet.
 *
 * When fini returned and the runtime's threads have left (fini reports
 * none stayed, none is inside nbffi_queue_pop, and no popped task is left
 * unanswered), the runtime is NBFFI_RT_CLOSED: its queue's descriptor is
 * closed and its memory goes with its last task.  Otherwise -- fini did
 * not return by the deadline, or reported threads that stayed, or
 * returned with tasks still unanswered -- it is NBFFI_RT_ORPHANED: every
 * task it still held completes to the host as NBFFI_ECLOSED (exactly once;
 * a late answer from the runtime is refused), those tasks and the
 * runtime's memory are leaked on purpose, never freed under a live
 * thread, and one log line names the library and what stayed.
 *
 * If task is not NULL, *task is a life-cycle task completed when that is
 * decided: status 0 (closed) or NBFFI_EORPHANED (reply: what stayed).
 * Returns 0, NBFFI_EALREADY (closed before; *task unset), NBFFI_ENOMEM or
 * NBFFI_EIO (no thread could be started: the queue is closed but fini
 * was not called; the runtime is orphaned).
 */
NBFFI_EXTERN int nbffi_runtime_close(nbffi_runtime_t *rt,
    int64_t deadline_ns, nbffi_task_t **task);

/*
 * Host thread.  Blocks the calling thread until the runtime's start (and
 * its close, if one was asked for) has ended, or until deadline_ns
 * (0: no limit), and returns its state.  For hosts that may block: tests,
 * plain C programs, an event loop's final shutdown.
 */
NBFFI_EXTERN int nbffi_runtime_wait(nbffi_runtime_t *rt, int64_t deadline_ns);

/*
 * Host thread.  Gives up the host's handle; rt must not be used after
 * this.  Never blocks.  An open runtime is closed first, with no deadline
 * and no life-cycle task.  The memory goes once the close has ended and
 * every task of the runtime is freed (never, if it was orphaned).
 */
NBFFI_EXTERN void nbffi_runtime_free(nbffi_runtime_t *rt);

/*
 * Host thread.  The most a runtime thread of rt spins in nbffi_queue_pop()
 * before it sleeps (default 50 us; the spin adapts below it to the arrival
 * rate), and the bound that runtimes spinning on their own read with
 * nbffi_queue_spin_max().  0 disables spinning: every idle pop sleeps,
 * which saves CPU and costs a thread wake-up (~20 us on a VM) per call.
 */
NBFFI_EXTERN void nbffi_runtime_set_spin(nbffi_runtime_t *rt,
    int64_t max_ns);

/* Any thread.  A consistent-enough snapshot of the counters. */
NBFFI_EXTERN void nbffi_runtime_stats(nbffi_runtime_t *rt,
    nbffi_stats_t *out);

/* Host thread.  1 once nbffi_runtime_close() was called. */
NBFFI_EXTERN int nbffi_runtime_closed(nbffi_runtime_t *rt);


/* ---- host half: calls ------------------------------------------------- */

/*
 * Host thread of host.  Posts a task: method (mlen bytes, 1..255, any
 * bytes but NUL), payload (plen bytes, copied unless flags has
 * NBFFI_CALL_BORROW), deadline (nbffi_now_ns() clock, 0 for none).  Never
 * blocks.  On success *out is the task, the host's until
 * nbffi_task_release(); its completion is reaped on host.  A runtime that
 * is still starting takes calls: they wait in its queue.
 * Errors: NBFFI_ECLOSED (runtime closed), the status of a failed start
 * (NBFFI_ELOAD, NBFFI_ESYM, NBFFI_EABI, NBFFI_EINIT: see
 * nbffi_runtime_error), NBFFI_EQFULL (max_queue tasks already queued),
 * NBFFI_E2BIG (payload over max_payload or method over NBFFI_MAX_METHOD),
 * NBFFI_EINVAL (empty method), NBFFI_ENOMEM.
 */
NBFFI_EXTERN int nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, size_t mlen, const void *payload, size_t plen,
    int64_t deadline_ns, unsigned flags, nbffi_task_t **out);

/*
 * Host thread, on a task returned by nbffi_host_reap().  status is 0 for a
 * reply, a positive runtime-defined code for a runtime error (the reply
 * then holds its message), or a negative NBFFI_E* code set by nbffi:
 * NBFFI_ETIMEDOUT (deadline passed before a runtime thread took it),
 * NBFFI_ECANCELED, NBFFI_ECLOSED (runtime closed without answering), the
 * status of a failed start (reply: its message), and for life-cycle tasks
 * those of nbffi_runtime_load and nbffi_runtime_close.  The reply pointer
 * is owned by the task, valid until nbffi_task_release().
 */
NBFFI_EXTERN int nbffi_task_status(nbffi_task_t *task);
NBFFI_EXTERN const void *nbffi_task_reply(nbffi_task_t *task, size_t *len);

/*
 * Host thread, on a reaped task.  1 when the task was completed for an
 * orphaned runtime whose thread may still read it: its memory is leaked
 * on purpose at release, and a payload it borrowed (NBFFI_CALL_BORROW)
 * must be kept alive and unchanged for the life of the process.
 */
NBFFI_EXTERN int nbffi_task_leaked(nbffi_task_t *task);

/*
 * Host thread.  Gives up the host's reference.  On a completed task, frees
 * it.  On a pending one, marks it cancelled (runtimes may check
 * nbffi_task_cancelled) and leaves the freeing to nbffi_host_reap() when
 * the completion arrives.  The task must not be used afterwards.
 */
NBFFI_EXTERN void nbffi_task_release(nbffi_task_t *task);

/* Any thread holding a reference.  A per-process unique, nonzero id. */
NBFFI_EXTERN uint64_t nbffi_task_id(nbffi_task_t *task);


/* ---- runtime half: the entry points of a runtime library --------------- */

/*
 * A runtime library exports three functions, with the types below and
 * these names (declared by the library itself, with NBFFI_EXTERN: Go's cgo
 * cannot declare a const parameter):
 *     unsigned nbffi_runtime_abi(void);
 *     int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
 *         size_t cfg_len, void **data, char *err, size_t err_len);
 *     int nbffi_runtime_fini(void *data, int64_t deadline_ns);
 *
 * nbffi_runtime_abi: any thread; returns NBFFI_ABI_VERSION.
 *
 * nbffi_runtime_init: called once per runtime on a core thread whose
 * asynchronous signals are blocked (threads it starts inherit that mask),
 * with the runtime's queue q (valid until fini returns) and cfg (cfg_len
 * bytes, may hold NUL bytes, need not be NUL-terminated; valid only during
 * the call).  It starts the threads that pop from q, stores a pointer of
 * its own in *data (may be NULL) and returns 0; or it stops every thread
 * it started, writes a NUL-terminated message to err (err_len bytes) and
 * returns non-zero: no thread of it may touch q afterwards.  It may log
 * through q.  It may take long (a JVM starts): the host is not blocked.
 *
 * nbffi_runtime_fini: optional; called once, on a core thread, after the
 * host closed the runtime, with init's data.  The queue is closed: threads
 * finish the queued tasks, get NBFFI_ECLOSED from nbffi_queue_pop and
 * leave.  fini makes its handlers hurry (cancel them), waits for its
 * threads until deadline_ns (nbffi_now_ns clock; 0: none) and returns the
 * number of threads that have not left by then -- 0 when none will touch
 * q or any of its tasks again, after which fini frees data.  A positive
 * count leaves data allocated for the threads that stayed.  libnbffi
 * stops waiting at the deadline whether fini returned or not.  A runtime
 * without threads of its own may omit fini.
 */
typedef unsigned (*nbffi_runtime_abi_fn)(void);
/*
 * Optional fourth entry point, for nbffi_preflight():
 *     int nbffi_runtime_check(const void *cfg, size_t cfg_len, char *err,
 *         size_t err_len);
 * runs in a short-lived child process before any worker exists: checks
 * what init would need of cfg without starting the runtime for real
 * (files, directories, modules that must exist); 0 when fine, else
 * non-zero with a NUL-terminated message in err.  It may start an
 * interpreter: the process _exits right after.
 */
typedef int (*nbffi_runtime_check_fn)(const void *cfg, size_t cfg_len,
    char *err, size_t err_len);
typedef int (*nbffi_runtime_init_fn)(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
typedef int (*nbffi_runtime_fini_fn)(void *data, int64_t deadline_ns);



/* ---- runtime half: serving -------------------------------------------- */

/*
 * Runtime threads.  Takes up to max tasks, oldest first, waiting at most
 * timeout_ns (-1: forever, 0: do not wait).  Spins briefly before sleeping
 * when tasks arrived recently.  Returns the number taken (each one the
 * caller's to answer with one nbffi_task_respond*()), 0 on timeout,
 * or NBFFI_ECLOSED once the queue is closed and empty (end-of-queue: the
 * thread should exit).  Tasks whose deadline passed or that the host
 * released are answered by nbffi and not returned.
 *
 * The first pop on a thread makes it SCHED_BATCH on Linux (unless the
 * runtime was loaded with NBFFI_LOAD_SCHED_NORMAL; a failure is ignored):
 * same CPU share, but a wake-up of the thread no longer preempts the
 * thread running on that CPU -- the host's event loop, which has just
 * posted -- and a spin while the event loop is busy costs the CPU only
 * when nobody else wants it.  On a 2-vCPU VM under load this cut the
 * runtime thread's CPU per call by about two thirds (docs/benchmarks.md).
 */
NBFFI_EXTERN int nbffi_queue_pop(nbffi_queue_t *q, nbffi_task_t **out,
    int max, int64_t timeout_ns);

/*
 * Any thread.  An eventfd (owned by the queue) that becomes readable when
 * tasks are queued or the queue is closed, for runtimes that own an event
 * loop: on readable, read it to drain, then pop with timeout 0 until 0.
 * Closed once the runtime is NBFFI_RT_CLOSED (fini returned): a runtime
 * that keeps a duplicate of it closes that copy in fini.  Returns the fd
 * or a negative NBFFI_E* code.
 */
NBFFI_EXTERN int nbffi_queue_fd(nbffi_queue_t *q);

/* Any thread.  1 once the host closed the runtime. */
NBFFI_EXTERN int nbffi_queue_closed(nbffi_queue_t *q);

/*
 * Any thread.  The most a runtime thread should spin for work before it
 * sleeps, in nanoseconds (nbffi_runtime_set_spin; 0: never spin), for
 * runtimes that wait on nbffi_queue_fd() and spin on their own.
 */
NBFFI_EXTERN int64_t nbffi_queue_spin_max(nbffi_queue_t *q);

/*
 * Any thread.  The address of q's count of queued tasks, for runtimes that
 * spin without calling into C for each look (Go: a cgo call per look keeps
 * the scheduler's P in the syscall state, which its sysmon thread then
 * watches every 20 us).  Read it with an atomic 32-bit load; nonzero means
 * a pop will probably find work.  Owned by the queue, valid as long as q.
 */
NBFFI_EXTERN const unsigned int *nbffi_queue_pending(nbffi_queue_t *q);

/*
 * Runtime and core threads.  Writes a log line through the host (see
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
 * Runtime threads.  Answers a popped task and gives up the runtime's
 * reference: the task must not be touched afterwards.  status 0 is a
 * reply; a positive status is a runtime error whose message is data.
 * nbffi_task_respond copies data (len bytes).  nbffi_task_respond_owned
 * hands data over instead: nbffi calls free_cb(data, ud) on a host thread
 * once the host is done with the reply (at once if the host already gave
 * up).  A negative status is reserved and recorded as NBFFI_ERUNTIME; if
 * nbffi_task_respond cannot allocate the copy it answers with status
 * NBFFI_ENOMEM and returns NBFFI_ENOMEM.  Otherwise returns 0.
 *
 * Answer once: a task that this runtime does not hold -- answered
 * already, or completed as closed when the runtime was orphaned -- is
 * refused with NBFFI_EALREADY, without reading or writing the task's
 * memory, and counted in a line on stderr (the 1st, 10th, 100th...
 * refusal of the process); nbffi_task_respond_owned then leaves data to
 * the caller, and free_cb is never called.  The check is by address: a
 * stale second answer after the host freed the task and the same address
 * came back as another task held by a runtime would be taken as that
 * task's answer.  A runtime must not answer twice; the check makes the
 * usual mistakes harmless, not every one.
 */
NBFFI_EXTERN int nbffi_task_respond(nbffi_task_t *task, int status,
    const void *data, size_t len);
NBFFI_EXTERN int nbffi_task_respond_owned(nbffi_task_t *task, int status,
    void *data, size_t len, nbffi_free_cb free_cb, void *ud);


/* ---- streams, events and metadata ------------------------------------- */

/*
 * Metadata.  A call may carry a small map (request id, traceparent, a
 * tenant), encoded as pairs of NUL-terminated strings,
 *     key NUL value NUL key NUL value NUL ...
 * keys 1..255 bytes, values 0 or more bytes, neither holding NUL, at most
 * NBFFI_MAX_META bytes in all.  libnbffi copies it with the task; the
 * runtime reads it with the nbffi_task_meta*() getters and it is attached
 * to the lines the runtime logs with nbffi_task_log().
 *
 * Streams.  A call posted with NBFFI_CALL_STREAM may be answered in
 * chunks (nbffi_task_send) before its one final answer
 * (nbffi_task_respond*).  At most `window' chunks are in flight: sent and
 * not yet read by the host.  When the window is full, a send waits (or
 * returns NBFFI_EQFULL when asked not to): a slow reader slows the
 * runtime, memory stays bounded by window * the largest chunk.  When the
 * host releases the task before it completed (the caller stopped reading,
 * timed out, was killed), the stream is cancelled: queued chunks are
 * freed, a waiting send returns NBFFI_ECANCELED and later sends return it
 * at once.  The runtime still answers the task once, as always; that
 * answer is dropped.  Chunks sent before the answer are read before the
 * final status: the host reads chunks until none is left, then the
 * status.
 *
 * Events.  A runtime may emit an event -- a name and bytes, no task -- at
 * any time (nbffi_emit).  It goes to the host that loaded the runtime,
 * into that host's bounded event queue, and wakes the host through the
 * completion notifier.  Events of one emitting thread keep their order.
 * An event that does not fit (queue full, too large, out of memory) is
 * dropped and counted: nbffi_emit says so and nbffi_host_event_stats()
 * counts it.
 *
 * Wake-ups.  Chunks and events signal the same notifier as completions,
 * coalesced the same way.  After a wake-up the host takes completions
 * (nbffi_host_reap), streams with chunks (nbffi_host_reap_streams),
 * events (nbffi_host_event_next) and log lines (nbffi_host_log_next).
 * The first three re-arm the notifier before they look (the event one
 * when it takes a new batch), so whatever arrives after that signals
 * again; take log lines after a reap.
 */


/* ---- host half: calls with metadata, streams -------------------------- */

/*
 * Host thread of host.  nbffi_call() with two more things:
 *   meta, meta_len: the call's metadata (see above; NULL, 0: none), copied;
 *   window: with NBFFI_CALL_STREAM in flags, the most chunks in flight
 *           (0: NBFFI_STREAM_WINDOW; at most 65536).  Ignored without it.
 * A stream task completes like a call: reaped once with its final status.
 * Before that, nbffi_host_reap_streams() returns it whenever new chunks
 * came, and nbffi_task_next_chunk() reads them.
 * Errors: those of nbffi_call(); NBFFI_EINVAL for metadata not encoded as
 * above or a window over 65536, NBFFI_E2BIG for metadata over
 * NBFFI_MAX_META.  nbffi_call(...) is nbffi_call_ex(..., NULL, 0, 0).
 */
NBFFI_EXTERN int nbffi_call_ex(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, size_t mlen, const void *payload, size_t plen,
    const void *meta, size_t meta_len, int64_t deadline_ns, unsigned flags,
    uint32_t window, nbffi_task_t **out);

/*
 * Host thread.  Moves up to max stream tasks of this host that got chunks
 * since they were last returned to out[] and returns how many (oldest
 * first).  The tasks stay the host's (not released, not reaped); read
 * their chunks with nbffi_task_next_chunk().  A task may be returned with
 * no chunk left to read (the host read them already): that is not an
 * error.  Tasks the host released are never returned.  Re-arms the
 * notifier.
 */
NBFFI_EXTERN int nbffi_host_reap_streams(nbffi_host_t *host,
    nbffi_task_t **out, int max);

/*
 * Host thread, on a stream task the host holds (reaped or not).  Takes
 * the oldest unread chunk: 1 and *data, *len set (the bytes are owned by
 * the task, valid until the next nbffi_task_next_chunk() on it or its
 * release), or 0 when none is waiting now.  Taking a chunk opens the
 * window: once half of it is free, runtime threads waiting in
 * nbffi_task_send() go on (and the queue fd of a runtime that got
 * NBFFI_EQFULL becomes readable).
 * NBFFI_EINVAL on a task not posted with NBFFI_CALL_STREAM.  Once the
 * task is reaped (its final status is known) and this returns 0, the
 * stream has ended.
 */
NBFFI_EXTERN int nbffi_task_next_chunk(nbffi_task_t *task, const void **data,
    size_t *len);

/*
 * Any thread holding a reference.  Chunks of a stream task sent and not
 * yet read, and its window (0, 0 for a plain call).
 */
NBFFI_EXTERN unsigned nbffi_task_chunks(nbffi_task_t *task,
    unsigned *window);


/* ---- host half: events ------------------------------------------------ */

/*
 * Host thread.  Bounds the host's event queue: at most max_events events
 * and max_bytes bytes (names and data) waiting (0: keep the bound; the
 * defaults are 65536 events and 16 MiB).  One event is at most max_bytes.
 * Events already queued stay.
 */
NBFFI_EXTERN void nbffi_host_set_event_limit(nbffi_host_t *host,
    uint64_t max_events, uint64_t max_bytes);

/*
 * Host thread.  Takes the oldest waiting event: 1 and *ev set, or 0 when
 * none is waiting.  The event is owned by the host and valid until the
 * next nbffi_host_event_next() on this host or nbffi_host_free(); read it
 * with the getters below.  Events are taken from the emitters in
 * batches, so a burst costs one lock per batch, not per event.
 */
NBFFI_EXTERN int nbffi_host_event_next(nbffi_host_t *host,
    nbffi_event_t **ev);

/*
 * Host thread, on the event last returned by nbffi_host_event_next().
 * The name (NUL-terminated too) and the data are owned by the event.
 * nbffi_event_runtime is the runtime that emitted it: a handle of this
 * host, which may have been freed (nbffi_runtime_free) since -- compare
 * it, do not use it.
 */
NBFFI_EXTERN const char *nbffi_event_name(nbffi_event_t *ev, size_t *len);
NBFFI_EXTERN const void *nbffi_event_data(nbffi_event_t *ev, size_t *len);
NBFFI_EXTERN nbffi_runtime_t *nbffi_event_runtime(nbffi_event_t *ev);

/* Any thread.  A snapshot of the host's event counters. */
NBFFI_EXTERN void nbffi_host_event_stats(nbffi_host_t *host,
    nbffi_event_stats_t *out);


/* ---- host half: log lines with metadata -------------------------------- */

/*
 * Host thread, NBFFI_HOST_LOG_QUEUE hosts.  The metadata of the line last
 * returned by nbffi_host_log_next() (encoded as for nbffi_call_ex), valid
 * until the next nbffi_host_log_next(); NULL and *len 0 when the line has
 * none (it was not logged with nbffi_task_log).  On a host without a log
 * queue, lines logged with nbffi_task_log carry their metadata as text at
 * their end: " (key: value, key: value)".
 */
NBFFI_EXTERN const void *nbffi_host_log_meta(nbffi_host_t *host,
    size_t *len);


/* ---- runtime half: metadata ------------------------------------------- */

/*
 * Runtime threads, on a popped task not yet answered.  The value of key
 * (klen bytes) in the call's metadata, NUL-terminated, with its length in
 * *vlen (may be NULL); NULL when the call has no such key.  Views into the
 * task, valid until it is answered.
 */
NBFFI_EXTERN const char *nbffi_task_meta(nbffi_task_t *task,
    const char *key, size_t klen, size_t *vlen);

/*
 * Runtime threads, as above.  The i-th pair (from 0): 1 and *key, *klen,
 * *val, *vlen set (NUL-terminated views, any out-pointer may be NULL), or
 * 0 when there are i pairs or fewer.  nbffi_task_meta_raw gives the whole
 * encoding (NULL, 0 when there is none), for shims that build a map.
 */
NBFFI_EXTERN int nbffi_task_meta_at(nbffi_task_t *task, unsigned i,
    const char **key, size_t *klen, const char **val, size_t *vlen);
NBFFI_EXTERN const void *nbffi_task_meta_raw(nbffi_task_t *task,
    size_t *len);


/* ---- runtime half: logging for a task ---------------------------------- */

/*
 * Runtime threads, on a popped task not yet answered.  nbffi_log() through
 * the task's runtime, with the task's metadata attached to the line (see
 * nbffi_host_log_meta), so that the host's log ties it to the request.
 */
NBFFI_EXTERN void nbffi_task_log(nbffi_task_t *task, int level,
    const char *msg, size_t len);
NBFFI_EXTERN void nbffi_task_logf(nbffi_task_t *task, int level,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));


/* ---- runtime half: streams -------------------------------------------- */

/*
 * Runtime threads, on a popped task not yet answered.  The window of the
 * stream the caller asked for (>= 1), or 0 when the task is a plain call
 * (send chunks only to a caller that reads them).
 */
NBFFI_EXTERN unsigned nbffi_task_stream_window(nbffi_task_t *task);

/*
 * Runtime threads, on a popped stream task not yet answered (never after
 * the answer: the task may be freed).  Sends one chunk: data (len bytes,
 * 0 allowed, at most the runtime's max_payload) is copied.
 *
 * When the window is full, waits for the host to read a chunk, at most
 * timeout_ns (-1: no limit but the task's deadline; 0: do not wait).
 * Several threads may send on one task; chunks keep the order of the
 * sends that returned 0.
 *
 * Returns 0 (queued), or:
 *   NBFFI_EQFULL      the window stayed full (timeout_ns 0, or it
 *                     passed): nothing was sent; send again later.  A
 *                     runtime with its own event loop waits on
 *                     nbffi_queue_fd(): it becomes readable when the
 *                     window of a task that got NBFFI_EQFULL opens (or the
 *                     task is cancelled); then retry the sends it holds;
 *   NBFFI_ECANCELED   the host gave up the task (the caller stopped
 *                     reading, timed out, or is gone): stop, and answer
 *                     the task (the answer is dropped);
 *   NBFFI_ETIMEDOUT   the task's deadline passed while the window stayed
 *                     full;
 *   NBFFI_ECLOSED     the runtime is being closed and the window stayed
 *                     full (the host will not read more);
 *   NBFFI_EPERM       the task is not a stream (nbffi_task_stream_window
 *                     is 0);
 *   NBFFI_E2BIG       len over max_payload;
 *   NBFFI_ENOMEM, NBFFI_EINVAL.
 * Any error means nothing was queued.
 */
NBFFI_EXTERN int nbffi_task_send(nbffi_task_t *task, const void *data,
    size_t len, int64_t timeout_ns);


/* ---- runtime half: events --------------------------------------------- */

/*
 * Runtime and core threads, any time between init and the end of fini
 * (no task needed).  Emits an event to the host that loaded the runtime:
 * name (nlen bytes, 1..NBFFI_MAX_EVENT_NAME, no NUL) and data (len bytes)
 * are copied; never blocks on the host.  Returns 0 (queued), or
 * NBFFI_EQFULL (the host's event queue is full: dropped and counted),
 * NBFFI_E2BIG (larger than the host's max_bytes: dropped and counted),
 * NBFFI_ENOMEM (dropped and counted), NBFFI_ECLOSED (the host is gone),
 * NBFFI_EINVAL (bad name).
 */
NBFFI_EXTERN int nbffi_emit(nbffi_queue_t *q, const char *name, size_t nlen,
    const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* NBFFI_H */
