/*
 * libfault.so: the C runtime of the reliability tests.  The same methods
 * exist in every language's fault handler (see ../README.md).
 *
 * cfg, space-separated key=value pairs:
 *   threads=N      runtime threads (default 1, at most 16)
 *   fail_init=MSG  init fails with MSG
 *   hang_init=1    init never returns; it logs a line every 200 ms, so
 *                  that the host's log sees an orphan long after the load
 *
 * Methods:
 *   echo     reply = payload
 *   flaky    payload = decimal N: every Nth flaky call of the runtime
 *            fails (status 1), the others reply "ok"
 *   never    not answered until "release", or until the runtime closes
 *   release  answers every held "never" call with "late"; replies how many
 *   sleep    payload = decimal milliseconds; sleeps, then replies "slept"
 *   crash    writes through the address in the payload ("0": NULL; an
 *            address the compiler cannot see, so it is a real SIGSEGV)
 *   log      logs the payload at notice level, replies "logged"
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nbffi.h"


#define FAULT_MAX_THREADS  16
#define FAULT_BATCH        32
#define FAULT_MAX_HELD     65536

typedef struct fault_rt_s  fault_rt_t;

struct fault_rt_s {
    nbffi_queue_t   *q;
    int              nthreads;
    pthread_t        threads[FAULT_MAX_THREADS];
    atomic_ulong     flaky_calls;
    atomic_int       stop;              /* init failed half-way */

    pthread_mutex_t  lock;              /* held */
    nbffi_task_t    *held[FAULT_MAX_HELD];
    size_t           nheld;
};


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);

static int fault_cfg(fault_rt_t *rt, const char *cfg, size_t len,
    char *err, size_t err_len);
static void fault_hang(nbffi_queue_t *q);
static void *fault_thread(void *arg);
static void fault_handle(fault_rt_t *rt, nbffi_task_t *task);
static long fault_number(const char *p, size_t len);
static size_t fault_release(fault_rt_t *rt, const char *reply);


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    int          i, rc;
    fault_rt_t  *rt;

    rt = calloc(1, sizeof(fault_rt_t));
    if (rt == NULL) {
        (void) snprintf(err, err_len, "fault: out of memory");
        return -1;
    }

    rt->q = q;
    rt->nthreads = 1;
    (void) pthread_mutex_init(&rt->lock, NULL);

    rc = fault_cfg(rt, cfg, cfg_len, err, err_len);
    if (rc != 0) {
        (void) pthread_mutex_destroy(&rt->lock);
        free(rt);
        if (rc > 0) {
            fault_hang(q);
        }
        return -1;
    }

    for (i = 0; i < rt->nthreads; i++) {
        rc = nbffi_thread_create(&rt->threads[i], fault_thread, rt);
        if (rc != 0) {
            (void) snprintf(err, err_len, "fault: thread %d: %s", i,
                            nbffi_strerror(rc));
            /* the queue goes with the failed load: stop and join first */
            atomic_store(&rt->stop, 1);
            while (i-- > 0) {
                (void) pthread_join(rt->threads[i], NULL);
            }
            (void) pthread_mutex_destroy(&rt->lock);
            free(rt);
            return -1;
        }
    }

    *data = rt;
    return 0;
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int          i, stayed;
    size_t       n;
    fault_rt_t  *rt = data;

    /* The queue is closed: the threads drain it and leave, but for one
     * stuck in a handler (sleep): wait for it until the deadline only. */
    stayed = 0;
    for (i = 0; i < rt->nthreads; i++) {
        if (nbffi_thread_join(&rt->threads[i], deadline_ns) != 0) {
            stayed++;
        }
    }
    if (stayed != 0) {
        return stayed;          /* rt stays: those threads still use it */
    }

    /* The threads answered what they held when the queue ended. */
    n = fault_release(rt, "closed");
    nbffi_logf(rt->q, NBFFI_LOG_NOTICE, "fault runtime: joined %d threads, "
               "%zu held at fini", rt->nthreads, n);

    (void) pthread_mutex_destroy(&rt->lock);
    free(rt);
    return 0;
}


/* 0: parsed; -1: bad cfg or fail_init (err set); 1: hang_init. */
static int
fault_cfg(fault_rt_t *rt, const char *cfg, size_t len, char *err,
    size_t err_len)
{
    long         n;
    size_t       i, k;
    const char  *key, *eq;

    for (i = 0; i < len; i = k) {
        while (i < len && cfg[i] == ' ') {
            i++;
        }
        for (k = i; k < len && cfg[k] != ' '; k++) {
            /* void */
        }
        if (k == i) {
            break;
        }

        key = cfg + i;
        eq = memchr(key, '=', k - i);
        if (eq == NULL) {
            (void) snprintf(err, err_len, "fault cfg: expected key=value, "
                            "got \"%.*s\"", (int) (k - i), key);
            return -1;
        }

        if (eq - key == 7 && memcmp(key, "threads", 7) == 0) {
            n = fault_number(eq + 1, (size_t) (cfg + k - eq - 1));
            if (n < 1 || n > FAULT_MAX_THREADS) {
                (void) snprintf(err, err_len, "fault cfg: threads must be "
                                "1..%d", FAULT_MAX_THREADS);
                return -1;
            }
            rt->nthreads = (int) n;

        } else if (eq - key == 9 && memcmp(key, "fail_init", 9) == 0) {
            (void) snprintf(err, err_len, "%.*s", (int) (cfg + k - eq - 1),
                            eq + 1);
            return -1;

        } else if (eq - key == 9 && memcmp(key, "hang_init", 9) == 0) {
            return 1;

        } else {
            (void) snprintf(err, err_len, "fault cfg: unknown key \"%.*s\"",
                            (int) (eq - key), key);
            return -1;
        }
    }

    return 0;
}


static void
fault_hang(nbffi_queue_t *q)
{
    struct timespec  ts;

    for ( ;; ) {
        nbffi_log(q, NBFFI_LOG_INFO, "fault runtime: init still hanging",
                  33);
        ts.tv_sec = 0;
        ts.tv_nsec = 200000000;
        while (nanosleep(&ts, &ts) != 0) { /* EINTR: sleep the rest */ }
    }
}


static void *
fault_thread(void *arg)
{
    int            i, n;
    fault_rt_t    *rt = arg;
    nbffi_task_t  *tasks[FAULT_BATCH];

    while (!atomic_load(&rt->stop)) {
        /* a bounded wait, to see stop */
        n = nbffi_queue_pop(rt->q, tasks, FAULT_BATCH, 1000000000);
        if (n < 0) {
            break;          /* end of queue */
        }
        for (i = 0; i < n; i++) {
            fault_handle(rt, tasks[i]);
        }
    }

    (void) fault_release(rt, "closed");
    return NULL;
}


static void
fault_handle(fault_rt_t *rt, nbffi_task_t *task)
{
    long             n;
    char             buf[64];
    size_t           mlen, plen, len;
    const char      *method, *payload;
    unsigned long    k;
    struct timespec  ts;

    method = nbffi_task_method(task, &mlen);
    payload = nbffi_task_payload(task, &plen);

    if (strcmp(method, "echo") == 0) {
        (void) nbffi_task_respond(task, 0, payload, plen);

    } else if (strcmp(method, "flaky") == 0) {
        n = fault_number(payload, plen);
        k = atomic_fetch_add(&rt->flaky_calls, 1) + 1;
        if (n > 0 && k % (unsigned long) n == 0) {
            len = (size_t) snprintf(buf, sizeof(buf), "flaky: call %lu "
                                    "failed", k);
            (void) nbffi_task_respond(task, 1, buf, len);
        } else {
            (void) nbffi_task_respond(task, 0, "ok", 2);
        }

    } else if (strcmp(method, "never") == 0) {
        pthread_mutex_lock(&rt->lock);
        if (rt->nheld < FAULT_MAX_HELD) {
            rt->held[rt->nheld++] = task;
            task = NULL;
        }
        pthread_mutex_unlock(&rt->lock);
        if (task != NULL) {
            (void) nbffi_task_respond(task, 3, "too many held", 13);
        }

    } else if (strcmp(method, "release") == 0) {
        len = (size_t) snprintf(buf, sizeof(buf), "%zu",
                                fault_release(rt, "late"));
        (void) nbffi_task_respond(task, 0, buf, len);

    } else if (strcmp(method, "sleep") == 0) {
        n = fault_number(payload, plen);
        ts.tv_sec = n / 1000;
        ts.tv_nsec = (n % 1000) * 1000000;
        while (nanosleep(&ts, &ts) != 0) { /* EINTR: sleep the rest */ }
        (void) nbffi_task_respond(task, 0, "slept", 5);

    } else if (strcmp(method, "crash") == 0) {
        *(volatile int *) (uintptr_t) fault_number(payload, plen) = 1;
        (void) nbffi_task_respond(task, 0, "survived", 8);

    } else if (strcmp(method, "log") == 0) {
        nbffi_log(rt->q, NBFFI_LOG_NOTICE, payload, plen);
        (void) nbffi_task_respond(task, 0, "logged", 6);

    } else {
        (void) nbffi_task_respond(task, 2, "no such method", 14);
    }
}


/* A non-negative decimal of at most 9 digits, else -1. */
static long
fault_number(const char *p, size_t len)
{
    long    n;
    size_t  i;

    if (len == 0 || len > 9) {
        return -1;
    }
    for (n = 0, i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        n = n * 10 + (p[i] - '0');
    }
    return n;
}


static size_t
fault_release(fault_rt_t *rt, const char *reply)
{
    size_t  i, n;

    pthread_mutex_lock(&rt->lock);
    n = rt->nheld;
    for (i = 0; i < n; i++) {
        (void) nbffi_task_respond(rt->held[i], 0, reply, strlen(reply));
    }
    rt->nheld = 0;
    pthread_mutex_unlock(&rt->lock);

    return n;
}
