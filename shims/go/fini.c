/*
 * nbffi_runtime_fini, in C: it must return by its deadline whatever the
 * handlers do, and Go code cannot promise that.  A goroutine runs only on
 * a P, and handlers that spin on the CPU take turns with every other
 * goroutine for the P (the only one, at GOMAXPROCS=1), 10 ms each; a cgo
 * callback into Go, or its return, waits its turn too.  So fini never
 * calls Go: the runtime's poller stops the runtime by itself once the
 * host closed the queue (see stop in runtime.go) and reports here, and
 * fini waits for that report on a condition variable until the deadline;
 * the handlers still running are counted in C memory, readable without
 * Go.
 */

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "nbffi.h"
#include "runtime.h"


NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);


nbffi_go_rt_t *
nbffi_go_rt_new(void)
{
    nbffi_go_rt_t       *rt;
    pthread_condattr_t   attr;

    rt = calloc(1, sizeof(nbffi_go_rt_t));
    if (rt == NULL) {
        return NULL;
    }

    /* fini's deadline is on the monotonic clock, nbffi_now_ns' */
    if (pthread_condattr_init(&attr) != 0) {
        goto failed_attr;
    }
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&rt->cond, &attr) != 0)
    {
        goto failed_cond;
    }
    (void) pthread_condattr_destroy(&attr);

    if (pthread_mutex_init(&rt->lock, NULL) != 0) {
        (void) pthread_cond_destroy(&rt->cond);
        goto failed_attr;
    }

    return rt;

failed_cond:
    (void) pthread_condattr_destroy(&attr);
failed_attr:
    free(rt);
    return NULL;
}


void
nbffi_go_rt_free(nbffi_go_rt_t *rt)
{
    (void) pthread_mutex_destroy(&rt->lock);
    (void) pthread_cond_destroy(&rt->cond);
    free(rt);
}


/* The Go side's last touch of rt. */
void
nbffi_go_rt_stopped(nbffi_go_rt_t *rt, int stayed)
{
    pthread_mutex_lock(&rt->lock);
    rt->stopped = 1;
    rt->stayed = stayed;
    pthread_cond_signal(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int              stopped, stayed;
    nbffi_go_rt_t   *rt = data;
    struct timespec  ts;

    ts.tv_sec = deadline_ns / 1000000000;
    ts.tv_nsec = deadline_ns % 1000000000;

    pthread_mutex_lock(&rt->lock);

    while (!rt->stopped) {
        if (deadline_ns == 0) {
            pthread_cond_wait(&rt->cond, &rt->lock);

        } else if (pthread_cond_timedwait(&rt->cond, &rt->lock, &ts)
                   == ETIMEDOUT)
        {
            break;
        }
    }

    stopped = rt->stopped;
    if (stopped) {
        stayed = rt->stayed;

    } else {
        /* the handlers still running, or else the poller, still on its
         * way out (it may log through the queue) */
        stayed = (int) __atomic_load_n(&rt->running, __ATOMIC_SEQ_CST);
        if (stayed <= 0) {
            stayed = 1;
        }
    }

    pthread_mutex_unlock(&rt->lock);

    if (stopped && stayed == 0) {
        nbffi_go_rt_free(rt);
    }
    /* else rt stays: the goroutines that stayed still use it */

    return stayed;
}
