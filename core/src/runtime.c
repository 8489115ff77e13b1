/*
 * The runtime object: its references, its counters, and failing the tasks
 * it leaves behind.  Its life cycle (start, stop) is in lifecycle.c.
 */

#include <string.h>

#include "nbffi_int.h"


void
nbffi__runtime_ref(nbffi_runtime_t *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}


/* Any thread.  The last reference frees the runtime. */
void
nbffi__runtime_unref(nbffi_runtime_t *rt)
{
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }

    nbffi__queue_destroy(&rt->q);
    (void) pthread_cond_destroy(&rt->life_cond);
    (void) pthread_mutex_destroy(&rt->life_lock);
    free(rt->start_error);
    free(rt->lib);
    free(rt->search_path);
    free(rt->cfg);
    free(rt);
}


/* Any thread.  Completes every task of list (linked by next). */
void
nbffi__runtime_fail_list(nbffi_task_t *list, int status, const char *msg)
{
    nbffi_task_t  *task;

    while (list != NULL) {
        task = list;
        list = task->next;
        task->next = NULL;
        nbffi__task_complete(task, status, msg);
    }
}


/*
 * Any thread.  Completes as closed every task that rt's threads hold and
 * may still read: such a task is leaked, never freed.  Returns how many.
 */
unsigned
nbffi__runtime_fail_held(nbffi_runtime_t *rt)
{
    unsigned       n;
    nbffi_task_t  *list, *task;

    n = 0;

    /* Before the sweep, against a pop that takes tasks from the queue now
     * and records them as held after the sweep passed their stripe: that
     * pop sees the flag and completes them itself (queue.c). */
    atomic_store(&rt->q.swept, 1);

    list = nbffi__held_take_runtime(rt);

    while (list != NULL) {
        task = list;
        list = task->next;
        task->next = NULL;
        task->leaked = 1;
        nbffi__task_complete(task, NBFFI_ECLOSED, NULL);
        n++;
    }

    return n;
}


/* Host threads: counters are shared by hosts, added per run of tasks. */
void
nbffi__runtime_count(nbffi_runtime_t *rt, uint64_t ok, uint64_t failed,
    uint64_t timed_out, uint64_t finished)
{
    if (rt == NULL) {
        return;
    }

    atomic_fetch_add_explicit(&rt->completed, ok, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->failed, failed, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->timed_out, timed_out,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->finished, finished, memory_order_relaxed);
}


int
nbffi_runtime_state(nbffi_runtime_t *rt)
{
    return atomic_load_explicit(&rt->state, memory_order_acquire);
}


int
nbffi_runtime_error(nbffi_runtime_t *rt, const char **msg)
{
    int          status;
    const char  *text;

    pthread_mutex_lock(&rt->life_lock);
    status = rt->start_status;
    text = rt->start_error;
    pthread_mutex_unlock(&rt->life_lock);

    if (msg != NULL) {
        *msg = (text != NULL) ? text : "";
    }

    return status;
}


int
nbffi_runtime_closed(nbffi_runtime_t *rt)
{
    return atomic_load_explicit(&rt->q.closed, memory_order_relaxed);
}


void
nbffi_runtime_set_spin(nbffi_runtime_t *rt, int64_t max_ns)
{
    atomic_store_explicit(&rt->q.spin_max, max_ns > 0 ? max_ns : 0,
                          memory_order_relaxed);
}


void
nbffi_runtime_stats(nbffi_runtime_t *rt, nbffi_stats_t *out)
{
    uint64_t  posted, finished;

    /* finished first: posted is then never behind it */
    finished = atomic_load_explicit(&rt->finished, memory_order_relaxed);
    posted = atomic_load_explicit(&rt->posted, memory_order_relaxed);

    out->posted = posted;
    out->completed = atomic_load_explicit(&rt->completed,
                                          memory_order_relaxed);
    out->failed = atomic_load_explicit(&rt->failed, memory_order_relaxed);
    out->timed_out = atomic_load_explicit(&rt->timed_out,
                                          memory_order_relaxed);
    out->abandoned = atomic_load_explicit(&rt->abandoned,
                                          memory_order_relaxed);
    out->in_flight = posted >= finished ? posted - finished : 0;
    out->queued = atomic_load_explicit(&rt->q.len, memory_order_relaxed);
    out->refused = atomic_load_explicit(&rt->refused, memory_order_relaxed);
}
