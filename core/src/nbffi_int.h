/*
 * Internal types of libnbffi.  Not installed.
 *
 * Lock order: nbffi_queue_t.lock, then nbffi_queue_t.ilock, then
 * nbffi_host_t.log_lock.  The done stack of a host is lock-free.
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

typedef enum {
    NBFFI__QUEUED = 0,
    NBFFI__POPPED,
    NBFFI__ANSWERED
} nbffi__task_state_t;

struct nbffi_task_s {
    /* request queue (queue.lock) and in-flight list (queue.ilock) */
    nbffi_task_t         *next;
    nbffi_task_t         *prev;
    /* done stack (lock-free), then the host's reaped FIFO (host thread) */
    nbffi_task_t         *dnext;

    nbffi_host_t         *host;
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
    unsigned char         reply_malloced;  /* no bit-field: see released */

    /* host thread only */
    unsigned              released:1;
    unsigned              reaped:1;

    const void           *payload;
    size_t                payload_len;
    size_t                inline_cap;   /* bytes of data[] after the method */
    size_t                method_len;
    char                  data[];       /* method, NUL, inline area */
};

#define NBFFI__CACHE_LINE  64

struct nbffi_queue_s {
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    nbffi_task_t         *head;
    nbffi_task_t         *tail;
    atomic_uint           len;
    atomic_int            closed;
    unsigned              max;
    int                   sleepers;     /* threads in pthread_cond_wait */
    atomic_int            spinning;     /* a thread spins: skip the signal */
    atomic_llong          spin_ns;      /* adaptive spin budget */
    atomic_llong          spin_max;     /* its bound, 0: never spin */
    int                   efd;          /* nbffi_queue_fd(), -1 until asked */

    /* runtime threads only: off the line that producers write */
    _Alignas(NBFFI__CACHE_LINE)
    pthread_mutex_t       ilock;
    nbffi_task_t          inflight;     /* sentinel of popped tasks */

    nbffi_runtime_t      *rt;
};

struct nbffi_runtime_s {
    nbffi_queue_t         q;            /* first: &rt->q == (void *) rt */
    nbffi_host_t         *host;         /* the host that loaded it */
    void                 *dl;
    void                (*fini)(nbffi_queue_t *q);
    uint64_t              max_payload;
    atomic_int            refs;         /* 1 while loaded + 1 per task */
    int                   freed;        /* host thread */

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

typedef struct nbffi__log_line_s  nbffi__log_line_t;

struct nbffi__log_line_s {
    nbffi__log_line_t    *next;
    int                   level;
    size_t                len;
    char                  msg[];
};

struct nbffi_host_s {
    unsigned              flags;

    /* completions: a lock-free stack pushed by answering threads */
    _Alignas(NBFFI__CACHE_LINE)
    _Atomic(nbffi_task_t *) done;
    atomic_int            signaled;     /* notifier written, not reaped */

    /* answering threads between their push and their notifier write:
     * nbffi_host_free waits for them, so none writes to a freed host */
    _Alignas(NBFFI__CACHE_LINE)
    atomic_int            pushers;
    int                   notify_fd;    /* eventfd, or the stable number
                                           of the connected socket */
    int                   listen_fd;
    char                  listen_dir[108];
    char                  listen_path[108];

    /* host thread only */
    _Alignas(NBFFI__CACHE_LINE)
    nbffi_task_t         *fifo_head;    /* reaped from the stack, in order */
    nbffi_task_t         *fifo_tail;
    uint64_t              allocated;
    uint64_t              freed;
    unsigned              runtimes;
    unsigned              orphans;      /* runtimes whose init timed out */
    int64_t               init_timeout_ms;

    pthread_mutex_t       log_lock;
    nbffi__log_line_t    *log_head;
    nbffi__log_line_t    *log_tail;
    unsigned              log_count;
    uint64_t              log_dropped;
    nbffi_log_cb          log_cb;
    void                 *log_ud;
    int                   gone;         /* freed with orphans: drop lines */
};

/* error.c */
void nbffi__fatal(const char *what, const char *file, int line);

/* host.c */
void nbffi__host_notify(nbffi_host_t *host);
void nbffi__host_push_done(nbffi_host_t *host, nbffi_task_t *task);

/* task.c */
void nbffi__task_answer(nbffi_task_t *task, int status);
void nbffi__task_free(nbffi_task_t *task);

/* queue.c */
int nbffi__queue_init(nbffi_queue_t *q, nbffi_runtime_t *rt, unsigned max);
void nbffi__queue_destroy(nbffi_queue_t *q);
int nbffi__queue_push(nbffi_queue_t *q, nbffi_task_t *task);
void nbffi__queue_close(nbffi_queue_t *q);
void nbffi__queue_fail_all(nbffi_queue_t *q, int status);
void nbffi__inflight_unlink(nbffi_queue_t *q, nbffi_task_t *task);

/* load.c */
void nbffi__runtime_unref(nbffi_runtime_t *rt);

/* log.c */
void nbffi__log_destroy(nbffi_host_t *host);

#endif /* NBFFI_INT_H */
