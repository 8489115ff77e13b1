/*
 * Internal types of libnbffi.  Not installed.
 *
 * The files form layers; each calls only the ones below it:
 *
 *   host.c       the host API: new/free, call, reap, release, counters
 *   lifecycle.c  load, start, close, stop, wait: the core threads
 *   library.c    finding and opening a runtime library
 *   runtime.c    the runtime object: references, stats, failing tasks
 *   queue.c      the request queue of a runtime
 *   task.c       task memory, getters, answering
 *   held.c       the process-wide set of tasks held by runtimes
 *   stream.c     calls with metadata and chunks, the host's ready streams
 *   event.c      events: the host's bounded event queue
 *   log.c        log lines: queued for the host, or written out
 *   done.c       the done stack and its wake-up coalescing
 *   notify.c     the completion notifier: eventfd or unix socket
 *   thread.c, clock.c, copy.c, error.c   leaves
 *
 * Lock order: nbffi_runtime_t.life_lock, then nbffi_queue_t.lock, then a
 * stripe of held.c, then nbffi__log_t.lock.  The done stack is lock-free.
 * nbffi__ext_t.lock (a stream's chunks), then nbffi__streams_t.lock (the
 * host's ready streams); nbffi__events_t.lock alone.  Each of these may
 * be held while the host's notifier is written, never while waiting for
 * another thread.
 */

#ifndef NBFFI_INT_H
#define NBFFI_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "nbffi.h"

#define NBFFI__DEFAULT_MAX_QUEUE    65536u
#define NBFFI__DEFAULT_MAX_PAYLOAD  (64ull << 20)
#define NBFFI__INLINE_MIN           64     /* reply bytes kept in the task */
#define NBFFI__LOG_MAX_LINES        1024
#define NBFFI__LOG_MAX_LEN          4096
#define NBFFI__ERR_MAX              1024   /* bytes of a start's message */
#define NBFFI__SUN_PATH             108    /* sizeof(sockaddr_un.sun_path) */

/* Spinning of runtime threads in nbffi_queue_pop(), see queue.c. */
#define NBFFI__SPIN_DEFAULT_NS      50000
#define NBFFI__SPIN_MIN_NS          1000

/* A spin-wait hint: lets the sibling hyperthread run and saves power. */
#if defined(__x86_64__) || defined(__i386__)
#define nbffi__cpu_relax()  __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define nbffi__cpu_relax()  __asm__ __volatile__("yield" ::: "memory")
#else
#define nbffi__cpu_relax()  atomic_signal_fence(memory_order_seq_cst)
#endif

#define nbffi__abort_on(cond, what)                                          \
    do {                                                                     \
        if (cond) {                                                          \
            nbffi__fatal(what, __FILE__, __LINE__);                          \
        }                                                                    \
    } while (0)

#define NBFFI__CACHE_LINE  64


/* ---- notify.c --------------------------------------------------------- */

typedef struct {
    int                   socket;       /* a socket notifier, else eventfd */
    int                   fd;           /* eventfd, or the stable number
                                           of the connected socket */
    /* host thread only: the handshake */
    int                   listen_fd;
    uint64_t              refused;      /* peers of other processes */
    char                  listen_dir[NBFFI__SUN_PATH];
    char                  listen_path[NBFFI__SUN_PATH];
} nbffi__notify_t;


/* ---- done.c ----------------------------------------------------------- */

/*
 * Each flag has one meaning:
 *   wake_pending: a wake-up was written and the reaper has not taken the
 *                 stack since; later completions need not write again;
 *   spinning:     the host thread will look at the stack by itself (it
 *                 spins in nbffi_host_spin, or a spin found work and a
 *                 take follows); a completion needs no wake-up.  The take
 *                 clears it; a spin that gives up writes for what came.
 */
typedef struct {
    _Alignas(NBFFI__CACHE_LINE)
    _Atomic(nbffi_task_t *) stack;      /* pushed by answering threads */
    atomic_int            wake_pending;
    atomic_int            spinning;

    /* answering threads between their push and their notifier write:
     * the host waits for them before it closes the notifier */
    _Alignas(NBFFI__CACHE_LINE)
    atomic_int            pushers;
    nbffi__notify_t       notify;

    /* host thread only */
    _Alignas(NBFFI__CACHE_LINE)
    nbffi_task_t         *fifo_head;    /* taken from the stack, in order */
    nbffi_task_t         *fifo_tail;
} nbffi__done_t;


/* ---- log.c ------------------------------------------------------------ */

typedef struct nbffi__log_line_s  nbffi__log_line_t;

struct nbffi__log_line_s {
    nbffi__log_line_t    *next;
    int                   level;
    size_t                len;
    size_t                meta_len;     /* metadata after msg's NUL */
    char                  msg[];
};

typedef struct {
    pthread_mutex_t       lock;
    int                   queued;       /* NBFFI_HOST_LOG_QUEUE */
    int                   gone;         /* host freed: drop lines */
    nbffi__log_line_t    *head;
    nbffi__log_line_t    *tail;
    unsigned              count;
    uint64_t              dropped;
    nbffi_log_cb          cb;
    void                 *ud;
    nbffi__done_t        *wake;         /* woken when a line is queued */
    nbffi__log_line_t    *last;         /* host thread: the line last
                                           returned, for its metadata */
} nbffi__log_t;


/* ---- stream.c --------------------------------------------------------- */

typedef struct nbffi__chunk_s  nbffi__chunk_t;

struct nbffi__chunk_s {
    nbffi__chunk_t       *next;
    size_t                len;
    unsigned char         data[];
};

/*
 * What a call posted with nbffi_call_ex() has beyond a plain call: its
 * metadata and, for a stream, its chunks.  Allocated with the task only
 * when it needs one; freed with it.
 */
typedef struct {
    const char           *meta;         /* meta_buf, or NULL */
    size_t                meta_len;
    unsigned              window;       /* 0: not a stream */

    /* the chunks: guarded by lock; sends wait on cond for room */
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    nbffi__chunk_t       *head;
    nbffi__chunk_t       *tail;
    unsigned              count;
    int                   waiters;      /* sends in pthread_cond_wait */
    int                   want_fd;      /* a send got EQFULL with no wait:
                                           kick the queue fd on room */
    int                   cancelled;    /* the host gave the task up */

    /* host thread only: the chunk last read, freed by the next read */
    nbffi__chunk_t       *taken;

    /* on the host's ready list: guarded by nbffi__streams_t.lock */
    nbffi_task_t         *rprev;
    nbffi_task_t         *rnext;
    int                   linked;

    char                  meta_buf[];
} nbffi__ext_t;

/* The host's streams that got chunks since the host last looked. */
typedef struct {
    pthread_mutex_t       lock;
    nbffi_task_t         *head;
    nbffi_task_t         *tail;
    int                   gone;         /* host freed: link nothing */
    nbffi__done_t        *wake;
} nbffi__streams_t;


/* ---- event.c ---------------------------------------------------------- */

struct nbffi_event_s {
    nbffi_event_t        *next;
    nbffi_runtime_t      *rt;           /* a reference, dropped at free */
    size_t                name_len;
    size_t                len;
    char                  buf[];        /* name, NUL, data */
};

typedef struct {
    pthread_mutex_t       lock;
    nbffi_event_t        *head;         /* emitted, not yet taken */
    nbffi_event_t        *tail;
    uint64_t              count;        /* queued or in the host's batch */
    uint64_t              bytes;
    uint64_t              max_events;
    uint64_t              max_bytes;
    int                   gone;         /* host freed: refuse */
    nbffi__done_t        *wake;

    atomic_ullong         emitted;
    atomic_ullong         dropped;
    atomic_ullong         delivered;

    /* host thread only: the batch taken, and the event last returned */
    nbffi_event_t        *batch;
    nbffi_event_t        *last;
    uint64_t              used_count;   /* of the batch, not yet given */
    uint64_t              used_bytes;   /* back to count and bytes      */
} nbffi__events_t;


/* ---- task.c ----------------------------------------------------------- */

typedef enum {
    NBFFI__QUEUED = 0,          /* posted, not yet taken */
    NBFFI__POPPED,              /* held by a runtime thread */
    NBFFI__ANSWERED             /* pushed to the done stack */
} nbffi__task_state_t;

typedef enum {
    NBFFI__TASK_CALL = 0,
    NBFFI__TASK_LIFE            /* a load or close, see lifecycle.c */
} nbffi__task_kind_t;

struct nbffi_task_s {
    /* request queue (queue.lock), or a list being failed */
    nbffi_task_t         *next;
    /* done stack (lock-free), then the host's reaped FIFO (host thread) */
    nbffi_task_t         *dnext;

    nbffi_host_t         *host;
    nbffi__done_t        *done;
    nbffi_runtime_t      *rt;
    uint64_t              id;
    int64_t               deadline;

    atomic_int            state;
    atomic_int            cancelled;

    /* written by the answering thread before the push, read by the host */
    int                   status;
    void                 *reply;
    size_t                reply_len;
    nbffi_free_cb         reply_free;
    void                 *reply_ud;
    unsigned char         reply_malloced;  /* no bit-fields: see below */
    unsigned char         leaked;          /* completed for an orphan */
    unsigned char         kind;            /* nbffi__task_kind_t */

    /* host thread only; whole bytes, apart from the answering thread's */
    unsigned char         released;
    unsigned char         reaped;

    nbffi__ext_t         *ext;          /* metadata, stream; or NULL */

    const void           *payload;
    size_t                payload_len;
    size_t                inline_cap;   /* bytes of data[] after the method */
    size_t                method_len;
    char                  data[];       /* method, NUL, inline area */
};


/* ---- queue.c ---------------------------------------------------------- */

#define NBFFI__QUEUE_FD_GONE  -2

struct nbffi_queue_s {
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    nbffi_task_t         *head;
    nbffi_task_t         *tail;
    atomic_uint           len;
    atomic_int            closed;
    unsigned              max;
    int                   sleepers;     /* threads in pthread_cond_wait */
    int                   signaled;     /* signals sent to sleepers that
                                           have not woken yet (at most) */
    atomic_int            spinning;     /* a thread spins: skip the signal */
    atomic_llong          spin_ns;      /* adaptive spin budget */
    atomic_llong          spin_max;     /* its bound, 0: never spin */
    int                   sched_batch;  /* popping threads: SCHED_BATCH;
                                           set before any thread starts */
    int                   efd;          /* nbffi_queue_fd(), -1 until asked,
                                           NBFFI__QUEUE_FD_GONE when closed */
    atomic_int            fd_writers;   /* threads writing efd unlocked */

    /* threads inside nbffi_queue_pop: a fini that returned while one is
     * still there has not joined its threads */
    _Alignas(NBFFI__CACHE_LINE)
    atomic_int            poppers;
    /* set before the tasks the runtime holds are swept (completed as
     * closed, see nbffi__runtime_fail_held): a pop that records tasks as
     * held after that may have been missed by the sweep */
    atomic_int            swept;

    nbffi_runtime_t      *rt;
    nbffi__log_t         *log;          /* the host's */
};


/* ---- runtime.c, lifecycle.c ------------------------------------------- */

struct nbffi_runtime_s {
    nbffi_queue_t         q;            /* first: &rt->q == (void *) rt */
    nbffi_host_t         *host;         /* the host that loaded it */
    uint64_t              max_payload;
    atomic_int            refs;         /* handle + tasks + core threads */
    atomic_int            state;        /* nbffi_rt_state_t */
    int                   handle_freed; /* host thread */

    /* the life cycle: guarded by life_lock, changes signal life_cond */
    pthread_mutex_t       life_lock;
    pthread_cond_t        life_cond;
    int                   closing;      /* close asked: stop after start */
    int64_t               close_deadline;
    nbffi_task_t         *load_task;
    nbffi_task_t         *close_task;
    int                   start_status; /* 0, or NBFFI_ELOAD... */
    char                 *start_error;  /* its message, or why orphaned */
    int                   start_abandoned; /* init outlived its deadline */
    int                   start_orphaned;  /* the stop gave up on init */
    nbffi_runtime_t      *orphan_next;  /* on lifecycle.c's orphan list */

    /* the start: what the start thread needs, then what it found */
    char                 *lib;
    char                 *search_path;
    void                 *cfg;
    size_t                cfg_len;
    unsigned              flags;
    int64_t               start_deadline;
    void                 *dl;
    nbffi_runtime_fini_fn fini;
    void                 *data;         /* init's */

    /* counters: host threads only, away from the queue's lines */
    _Alignas(NBFFI__CACHE_LINE)
    atomic_ullong         posted;
    atomic_ullong         completed;
    atomic_ullong         failed;
    atomic_ullong         timed_out;
    atomic_ullong         abandoned;
    atomic_ullong         finished;     /* reaped or abandoned */
    atomic_ullong         refused;
};


/* ---- host.c ----------------------------------------------------------- */

struct nbffi_host_s {
    unsigned              flags;
    nbffi__done_t         done;
    nbffi__log_t          log;

    /* core threads that may still push to or log through the host */
    atomic_int            ops;
    /* runtimes orphaned, or whose init was left running: their threads
     * may log through the host after it is freed */
    atomic_int            orphans;

    /* host thread only */
    uint64_t              allocated;
    uint64_t              freed;
    uint64_t              leaked;
    unsigned              runtimes;     /* handles not yet freed */
    nbffi_host_t         *gone_next;    /* freed with orphans, see host.c */

    nbffi__streams_t      streams;
    nbffi__events_t       events;
};


/* error.c */
void nbffi__fatal(const char *what, const char *file, int line);

/* copy.c */
void nbffi__copy(void *dst, const void *src, size_t n);

/* clock.c */
int64_t nbffi__deadline_after_ms(int64_t ms);
void nbffi__timespec(int64_t ns, void *ts /* struct timespec * */);
int nbffi__cond_init_monotonic(pthread_cond_t *cond);

/* thread.c */
int nbffi__thread_detached(void *(*fn)(void *), void *arg);
/* Names the calling core thread "nbffi-exiting": its work is done (the
 * runtime's threads, created before, keep the name they inherited). */
void nbffi__thread_leaving(void);

/* notify.c */
int nbffi__notify_init(nbffi__notify_t *n, int socket);
void nbffi__notify_destroy(nbffi__notify_t *n);
void nbffi__notify_write(nbffi__notify_t *n);
int nbffi__notify_listen(nbffi__notify_t *n, char *buf, size_t len);
int nbffi__notify_accept(nbffi__notify_t *n);
void nbffi__notify_drain(nbffi__notify_t *n);

/* done.c */
int nbffi__done_init(nbffi__done_t *d, int socket);
void nbffi__done_destroy(nbffi__done_t *d);
void nbffi__done_push(nbffi__done_t *d, nbffi_task_t *task);
void nbffi__done_wake(nbffi__done_t *d);
void nbffi__done_rearm(nbffi__done_t *d);
nbffi_task_t *nbffi__done_take(nbffi__done_t *d);
int nbffi__done_pending(nbffi__done_t *d);
int nbffi__done_spin(nbffi__done_t *d, nbffi_task_t *task, int64_t spin_ns);

/* log.c */
int nbffi__log_init(nbffi__log_t *log, int queued, nbffi__done_t *wake);
void nbffi__log_destroy(nbffi__log_t *log);
void nbffi__log_write(nbffi__log_t *log, int level, const char *msg,
    size_t len);
void nbffi__log_printf(nbffi__log_t *log, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int nbffi__log_pending(nbffi__log_t *log);
void nbffi__log_gone(nbffi__log_t *log);
void nbffi__log_write_meta(nbffi__log_t *log, int level, const char *msg,
    size_t len, const char *meta, size_t meta_len);

/* stream.c */
int nbffi__meta_check(const void *meta, size_t len);
int nbffi__ext_new(nbffi_task_t *task, const void *meta, size_t meta_len,
    unsigned window);
void nbffi__ext_cancel(nbffi_task_t *task);
void nbffi__ext_free(nbffi_task_t *task);
int nbffi__streams_init(nbffi__streams_t *st, nbffi__done_t *wake);
void nbffi__streams_gone(nbffi__streams_t *st);
int nbffi__streams_pending(nbffi__streams_t *st);

/* event.c */
int nbffi__events_init(nbffi__events_t *ev, nbffi__done_t *wake);
void nbffi__events_gone(nbffi__events_t *ev);
int nbffi__events_pending(nbffi__events_t *ev);

/* held.c */
int nbffi__held_add(nbffi_task_t *task);
int nbffi__held_remove(nbffi_task_t *task);
nbffi_task_t *nbffi__held_take_runtime(const nbffi_runtime_t *rt);
void nbffi__held_refused(void);

/* task.c */
nbffi_task_t *nbffi__task_new(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, size_t mlen, const void *payload, size_t plen,
    int borrow);
void nbffi__task_complete(nbffi_task_t *task, int status, const char *msg);
void nbffi__task_destroy(nbffi_task_t *task);

/* queue.c */
int nbffi__queue_init(nbffi_queue_t *q, nbffi_runtime_t *rt, unsigned max,
    nbffi__log_t *log);
void nbffi__queue_destroy(nbffi_queue_t *q);
void nbffi__queue_close_fd(nbffi_queue_t *q);
int nbffi__queue_push(nbffi_queue_t *q, nbffi_task_t *task);
void nbffi__queue_close(nbffi_queue_t *q);
void nbffi__queue_kick_fd(nbffi_queue_t *q);
nbffi_task_t *nbffi__queue_take_all(nbffi_queue_t *q);

/* runtime.c */
void nbffi__runtime_ref(nbffi_runtime_t *rt);
void nbffi__runtime_unref(nbffi_runtime_t *rt);
void nbffi__runtime_fail_list(nbffi_task_t *list, int status,
    const char *msg);
unsigned nbffi__runtime_fail_held(nbffi_runtime_t *rt);
void nbffi__runtime_count(nbffi_runtime_t *rt, uint64_t ok, uint64_t failed,
    uint64_t timed_out, uint64_t finished);

/* library.c */
int nbffi__library_open(nbffi_runtime_t *rt, nbffi_runtime_init_fn *init,
    char *err, size_t err_len);
int nbffi__library_load(const char *lib, const char *search_path,
    unsigned flags, void **dl, nbffi_runtime_init_fn *init, char *err,
    size_t err_len);

#endif /* NBFFI_INT_H */
