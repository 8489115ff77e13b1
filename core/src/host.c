/*
 * The host: what the event loop thread owns.  Posting calls, reaping
 * completions in order, releasing tasks, and the host's counters; the
 * done queue and the notifier are in done.c and notify.c.
 */

#include <errno.h>
#include <string.h>
#include <time.h>

#include "nbffi_int.h"

/* How often nbffi_host_wait looks for work: it only serves tests and a
 * final shutdown, which need no sharper wake-up. */
#define NBFFI__WAIT_POLL_NS  1000000


static void nbffi__host_free_task(nbffi_task_t *task);


/* Hosts freed while an orphan may still log through them, and tasks
 * leaked for an orphan that may still read them: kept, and reachable (so
 * that leak checkers do not report them), for the life of the process. */
static pthread_mutex_t  nbffi__gone_lock = PTHREAD_MUTEX_INITIALIZER;
static nbffi_host_t    *nbffi__gone;
static nbffi_task_t    *nbffi__leaked;


int
nbffi_host_new(nbffi_host_t **out, unsigned flags)
{
    nbffi_host_t  *host;

    if (out == NULL
        || (flags & ~(NBFFI_HOST_NOTIFY_SOCKET | NBFFI_HOST_LOG_QUEUE)))
    {
        return NBFFI_EINVAL;
    }

    host = calloc(1, sizeof(nbffi_host_t));
    if (host == NULL) {
        return NBFFI_ENOMEM;
    }

    host->flags = flags;
    atomic_init(&host->ops, 0);
    atomic_init(&host->orphans, 0);

    if (nbffi__done_init(&host->done, !!(flags & NBFFI_HOST_NOTIFY_SOCKET))
        != 0)
    {
        free(host);
        return NBFFI_EIO;
    }

    if (nbffi__log_init(&host->log, !!(flags & NBFFI_HOST_LOG_QUEUE),
                        &host->done) != 0)
    {
        nbffi__done_destroy(&host->done);
        free(host);
        return NBFFI_ENOMEM;
    }

    if (nbffi__streams_init(&host->streams, &host->done) != 0) {
        (void) pthread_mutex_destroy(&host->log.lock);
        nbffi__done_destroy(&host->done);
        free(host);
        return NBFFI_ENOMEM;
    }

    if (nbffi__events_init(&host->events, &host->done) != 0) {
        (void) pthread_mutex_destroy(&host->streams.lock);
        (void) pthread_mutex_destroy(&host->log.lock);
        nbffi__done_destroy(&host->done);
        free(host);
        return NBFFI_ENOMEM;
    }

    *out = host;
    return 0;
}


int
nbffi_host_free(nbffi_host_t *host)
{
    if (host->runtimes != 0
        || host->allocated != host->freed + host->leaked
        || atomic_load(&host->ops) != 0)
    {
        return NBFFI_EBUSY;
    }

    /* Events still queued are dropped; threads of an orphaned runtime
     * that emit or send from now on find the host gone. */
    nbffi__events_gone(&host->events);
    nbffi__streams_gone(&host->streams);

    if (atomic_load(&host->orphans) != 0) {
        /* Threads of an orphaned runtime may still log through the host:
         * they find it gone, so the memory and the lock stay. */
        nbffi__log_gone(&host->log);
        nbffi__done_destroy(&host->done);
        pthread_mutex_lock(&nbffi__gone_lock);
        host->gone_next = nbffi__gone;
        nbffi__gone = host;
        pthread_mutex_unlock(&nbffi__gone_lock);
        return 0;
    }

    nbffi__done_destroy(&host->done);
    nbffi__log_destroy(&host->log);
    (void) pthread_mutex_destroy(&host->log.lock);
    (void) pthread_mutex_destroy(&host->streams.lock);
    (void) pthread_mutex_destroy(&host->events.lock);
    free(host);
    return 0;
}


int
nbffi_host_fd(nbffi_host_t *host)
{
    if (host->done.notify.socket) {
        return NBFFI_EINVAL;
    }
    return host->done.notify.fd;
}


int
nbffi_host_listen(nbffi_host_t *host, char *buf, size_t len)
{
    if (!host->done.notify.socket || buf == NULL || len == 0) {
        return NBFFI_EINVAL;
    }

    return nbffi__notify_listen(&host->done.notify, buf, len);
}


int
nbffi_host_accept(nbffi_host_t *host)
{
    int  rc;

    rc = nbffi__notify_accept(&host->done.notify);
    if (rc == 0) {
        nbffi__done_rearm(&host->done);
    }

    return rc;
}


uint64_t
nbffi_host_peers_refused(nbffi_host_t *host)
{
    return host->done.notify.refused;
}


void
nbffi_host_kick(nbffi_host_t *host)
{
    atomic_store(&host->done.wake_pending, 1);
    nbffi__notify_write(&host->done.notify);
}


void
nbffi_host_drain(nbffi_host_t *host)
{
    nbffi__notify_drain(&host->done.notify);
}


int
nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    size_t mlen, const void *payload, size_t plen, int64_t deadline_ns,
    unsigned flags, nbffi_task_t **out)
{
    return nbffi_call_ex(host, rt, method, mlen, payload, plen, NULL, 0,
                         deadline_ns, flags, 0, out);
}


int
nbffi_call_ex(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    size_t mlen, const void *payload, size_t plen, const void *meta,
    size_t meta_len, int64_t deadline_ns, unsigned flags, uint32_t window,
    nbffi_task_t **out)
{
    int            rc, stream;
    nbffi_task_t  *task;

    if (host == NULL || rt == NULL || out == NULL
        || (method == NULL && mlen != 0) || (payload == NULL && plen != 0))
    {
        return NBFFI_EINVAL;
    }

    if (mlen == 0 || memchr(method, '\0', mlen) != NULL) {
        return NBFFI_EINVAL;
    }

    if (mlen > NBFFI_MAX_METHOD || plen > rt->max_payload) {
        return NBFFI_E2BIG;
    }

    stream = (flags & NBFFI_CALL_STREAM) != 0;
    if (meta_len != 0 || stream) {
        rc = nbffi__meta_check(meta, meta_len);
        if (rc != 0) {
            return rc;
        }
        if (stream && window > 65536) {
            return NBFFI_EINVAL;
        }
    }

    if (atomic_load_explicit(&rt->q.closed, memory_order_relaxed)) {
        goto closed;
    }

    task = nbffi__task_new(host, rt, method, mlen, payload, plen,
                           (flags & NBFFI_CALL_BORROW) != 0);
    if (task == NULL) {
        return NBFFI_ENOMEM;
    }

    if ((meta_len != 0 || stream)
        && nbffi__ext_new(task, meta, meta_len,
                          stream ? (window ? window : NBFFI_STREAM_WINDOW)
                                 : 0) != 0)
    {
        free(task);
        return NBFFI_ENOMEM;
    }

    task->deadline = deadline_ns;
    nbffi__runtime_ref(rt);

    rc = nbffi__queue_push(&rt->q, task);
    if (rc != 0) {
        if (rc == NBFFI_EQFULL) {
            atomic_fetch_add_explicit(&rt->refused, 1, memory_order_relaxed);
        }
        atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_relaxed);
        nbffi__ext_free(task);
        free(task);
        if (rc == NBFFI_ECLOSED) {
            goto closed;
        }
        return rc;
    }

    atomic_fetch_add_explicit(&rt->posted, 1, memory_order_relaxed);
    host->allocated++;
    *out = task;
    return 0;

closed:
    /* A failed start closes the queue: say why, not just "closed".  The
     * host that closes may be another thread: closing is read under its
     * lock. */
    if (atomic_load(&rt->state) == NBFFI_RT_FAILED) {
        pthread_mutex_lock(&rt->life_lock);
        rc = rt->closing ? NBFFI_ECLOSED : rt->start_status;
        pthread_mutex_unlock(&rt->life_lock);
        return rc;
    }
    return NBFFI_ECLOSED;
}


int
nbffi_host_reap(nbffi_host_t *host, nbffi_task_t **out, int max)
{
    int               n;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;
    nbffi__done_t    *d;
    uint64_t          ok, failed, timed_out, finished;

    if (out == NULL || max <= 0) {
        return NBFFI_EINVAL;
    }

    d = &host->done;
    n = 0;
    rt = NULL;
    ok = failed = timed_out = finished = 0;
    task = nbffi__done_take(d);

    while (n < max && task != NULL) {
        d->fifo_head = task->dnext;
        if (d->fifo_head == NULL) {
            d->fifo_tail = NULL;
        }

        if (task->released) {
            /* counted when the host released it */
            nbffi__host_free_task(task);

        } else {
            if (task->kind == NBFFI__TASK_CALL) {
                /* counters are shared with other hosts: add them per run
                 * of tasks of one runtime, not per task */
                if (task->rt != rt) {
                    nbffi__runtime_count(rt, ok, failed, timed_out,
                                         finished);
                    rt = task->rt;
                    ok = failed = timed_out = finished = 0;
                }

                if (task->status == 0) {
                    ok++;
                } else if (task->status == NBFFI_ETIMEDOUT) {
                    timed_out++;
                } else {
                    failed++;
                }
                finished++;
            }

            task->reaped = 1;
            task->dnext = NULL;
            out[n++] = task;
        }

        task = d->fifo_head;
    }

    nbffi__runtime_count(rt, ok, failed, timed_out, finished);

    return n;
}


void
nbffi_task_release(nbffi_task_t *task)
{
    nbffi_runtime_t  *rt;

    if (task->reaped) {
        nbffi__host_free_task(task);
        return;
    }

    /* Still pending: the runtime may be working on it.  Mark it and let
     * nbffi_host_reap() free it when the completion arrives. */
    task->released = 1;
    atomic_store_explicit(&task->cancelled, 1, memory_order_relaxed);
    if (task->ext != NULL) {
        nbffi__ext_cancel(task);
    }

    if (task->kind != NBFFI__TASK_CALL) {
        return;
    }

    rt = task->rt;
    if (task->deadline != 0 && nbffi_now_ns() >= task->deadline) {
        atomic_fetch_add_explicit(&rt->timed_out, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&rt->abandoned, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&rt->finished, 1, memory_order_relaxed);
}


/* Host thread.  A task the host is done with: freed, or leaked. */
static void
nbffi__host_free_task(nbffi_task_t *task)
{
    nbffi_host_t  *host = task->host;

    if (task->ext != NULL) {
        /* off the ready list; a send of an orphan's thread sees it */
        nbffi__ext_cancel(task);
    }

    if (task->leaked) {
        /* A thread of an orphaned runtime may still read it, never its
         * next: that link is the queue's, and the task left the queue. */
        host->leaked++;
        pthread_mutex_lock(&nbffi__gone_lock);
        task->next = nbffi__leaked;
        nbffi__leaked = task;
        pthread_mutex_unlock(&nbffi__gone_lock);
        return;
    }

    host->freed++;
    nbffi__runtime_unref(task->rt);
    nbffi__task_destroy(task);
}


int
nbffi_host_pending(nbffi_host_t *host)
{
    return nbffi__done_pending(&host->done);
}


int
nbffi_host_spin(nbffi_host_t *host, nbffi_task_t *task, int64_t spin_ns)
{
    return nbffi__done_spin(&host->done, task, spin_ns);
}


int
nbffi_host_wait(nbffi_host_t *host, int64_t deadline_ns)
{
    struct timespec  ts;

    nbffi__timespec(NBFFI__WAIT_POLL_NS, &ts);

    for ( ;; ) {
        if (nbffi__done_pending(&host->done)
            || nbffi__log_pending(&host->log)
            || nbffi__streams_pending(&host->streams)
            || nbffi__events_pending(&host->events))
        {
            return 1;
        }

        if (deadline_ns != 0 && nbffi_now_ns() >= deadline_ns) {
            return 0;
        }

        (void) nanosleep(&ts, NULL);
    }
}


uint64_t
nbffi_host_tasks_live(nbffi_host_t *host)
{
    return host->allocated - host->freed - host->leaked;
}


uint64_t
nbffi_host_tasks_allocated(nbffi_host_t *host)
{
    return host->allocated;
}


uint64_t
nbffi_host_tasks_freed(nbffi_host_t *host)
{
    return host->freed;
}


uint64_t
nbffi_host_tasks_leaked(nbffi_host_t *host)
{
    return host->leaked;
}
