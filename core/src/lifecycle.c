/*
 * The life of a runtime: start and stop on core threads, never on the
 * host thread, each bounded by a deadline.
 *
 *   STARTING --init 0--> READY --close--> CLOSING --fini 0, threads gone--> CLOSED
 *       |                                    |
 *       +--load/init failed, timeout--> FAILED --close--> CLOSED
 *                                            +--deadline, threads stayed--> ORPHANED
 *
 * Each start and each stop is an "op" thread that calls the runtime's
 * foreign code (dlopen and init, or fini) through a bounded call: a second
 * thread runs the foreign code while the op thread waits for it at most
 * until the deadline.  A call that has not returned by then is left to
 * itself; it keeps the runtime's memory alive, and what it does when it
 * returns late is its "late" step.
 *
 * An orphaned runtime is never freed: a thread of it may still run.  It
 * stays on nbffi__orphans, so that leak checkers see it as reachable.
 */

#include <errno.h>
#include <string.h>

#include "nbffi_int.h"

/* How long a runtime whose init returned after its deadline gets to stop
 * the threads it started. */
#define NBFFI__LATE_FINI_MS  10000

/* How long past its deadline fini may take to return and say how many
 * threads stayed, as a fini that waits for them until the deadline does. */
#define NBFFI__FINI_GRACE_NS  100000000


typedef struct nbffi__bounded_s  nbffi__bounded_t;

typedef void (*nbffi__bounded_fn)(nbffi__bounded_t *call);

/* A foreign call and its results, shared by the op thread and the call
 * thread; the last one out frees it. */
struct nbffi__bounded_s {
    pthread_mutex_t        lock;
    pthread_cond_t         cond;
    int                    refs;
    int                    done;
    int                    abandoned;
    int                    on_stack;    /* the caller's: no memory for one */

    nbffi_runtime_t       *rt;
    nbffi__bounded_fn      fn;
    nbffi__bounded_fn      late;        /* after fn, if abandoned */
    int64_t                deadline;

    /* results */
    int                    status;      /* start: 0 or NBFFI_E*; stop:
                                           threads that stayed */
    void                  *data;
    char                   err[NBFFI__ERR_MAX];
};


static void *nbffi__start_main(void *arg);
static void nbffi__start_call(nbffi__bounded_t *call);
static void nbffi__start_late(nbffi__bounded_t *call);
static void nbffi__start_undo(nbffi__bounded_t *call);
static void *nbffi__stop_main(void *arg);
static int nbffi__stop_wait_start(nbffi_runtime_t *rt);
static int nbffi__stop_fini(nbffi_runtime_t *rt, char *why, size_t len);
static void nbffi__stop_call(nbffi__bounded_t *call);
static void nbffi__stop_late(nbffi__bounded_t *call);
static void nbffi__orphan(nbffi_runtime_t *rt, const char *why);
static int nbffi__op_start(nbffi_runtime_t *rt, void *(*fn)(void *));
static void nbffi__op_done(nbffi_runtime_t *rt);
static void nbffi__op_end(nbffi_runtime_t *rt, nbffi_task_t *task,
    int status, const char *msg);
static void nbffi__set_state(nbffi_runtime_t *rt, int state);
static void nbffi__set_closed(nbffi_runtime_t *rt);
static nbffi_task_t *nbffi__life_task(nbffi_runtime_t *rt);
static int nbffi__bounded_run(nbffi_runtime_t *rt, nbffi__bounded_fn fn,
    nbffi__bounded_fn late, int64_t deadline, int64_t grace,
    nbffi__bounded_t *fallback, nbffi__bounded_t **out);
static void *nbffi__bounded_main(void *arg);
static void nbffi__bounded_unref(nbffi__bounded_t *call);
static char *nbffi__strndup(const char *s, size_t len);


static pthread_mutex_t   nbffi__orphans_lock = PTHREAD_MUTEX_INITIALIZER;
static nbffi_runtime_t  *nbffi__orphans;


int
nbffi_runtime_load(nbffi_host_t *host, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    uint32_t max_queue, uint64_t max_payload, int64_t start_deadline_ns,
    unsigned flags, nbffi_runtime_t **out, nbffi_task_t **task)
{
    int               rc;
    nbffi_task_t     *t;
    nbffi_runtime_t  *rt;

    if (host == NULL || lib == NULL || lib[0] == '\0' || out == NULL
        || (cfg == NULL && cfg_len != 0)
        || (flags & ~(NBFFI_LOAD_GLOBAL | NBFFI_LOAD_SCHED_NORMAL)))
    {
        return NBFFI_EINVAL;
    }

    rt = calloc(1, sizeof(nbffi_runtime_t));
    if (rt == NULL) {
        return NBFFI_ENOMEM;
    }

    rt->host = host;
    rt->flags = flags;
    rt->start_deadline = start_deadline_ns;
    rt->max_payload = max_payload ? max_payload : NBFFI__DEFAULT_MAX_PAYLOAD;
    rt->lib = nbffi__strndup(lib, strlen(lib));
    rt->search_path = search_path ? nbffi__strndup(search_path,
                                                   strlen(search_path))
                                  : NULL;
    rt->cfg = nbffi__strndup(cfg, cfg_len);
    rt->cfg_len = cfg_len;
    atomic_init(&rt->refs, 1);
    atomic_init(&rt->state, NBFFI_RT_STARTING);

    if (rt->lib == NULL || rt->cfg == NULL
        || (search_path != NULL && rt->search_path == NULL))
    {
        goto failed_copy;
    }

    if (pthread_mutex_init(&rt->life_lock, NULL) != 0) {
        goto failed_copy;
    }

    if (nbffi__cond_init_monotonic(&rt->life_cond) != 0) {
        goto failed_cond;
    }

    rc = nbffi__queue_init(&rt->q, rt,
                           max_queue ? max_queue : NBFFI__DEFAULT_MAX_QUEUE,
                           &host->log);
    if (rc != 0) {
        goto failed_queue;
    }
    rt->q.sched_batch = !(flags & NBFFI_LOAD_SCHED_NORMAL);

    t = NULL;
    if (task != NULL) {
        t = nbffi__life_task(rt);
        if (t == NULL) {
            goto failed_task;
        }
        rt->load_task = t;
    }

    rc = nbffi__op_start(rt, nbffi__start_main);
    if (rc != 0) {
        if (t != NULL) {
            host->allocated--;
            nbffi__runtime_unref(rt);
            free(t);
        }
        nbffi__queue_destroy(&rt->q);
        (void) pthread_cond_destroy(&rt->life_cond);
        (void) pthread_mutex_destroy(&rt->life_lock);
        free(rt->lib);
        free(rt->search_path);
        free(rt->cfg);
        free(rt);
        return rc;
    }

    host->runtimes++;
    *out = rt;
    if (task != NULL) {
        *task = t;
    }
    return 0;

failed_task:
    nbffi__queue_destroy(&rt->q);
failed_queue:
    (void) pthread_cond_destroy(&rt->life_cond);
failed_cond:
    (void) pthread_mutex_destroy(&rt->life_lock);
failed_copy:
    free(rt->lib);
    free(rt->search_path);
    free(rt->cfg);
    free(rt);
    return NBFFI_ENOMEM;
}


int
nbffi_runtime_close(nbffi_runtime_t *rt, int64_t deadline_ns,
    nbffi_task_t **task)
{
    int            rc;
    nbffi_task_t  *t;

    pthread_mutex_lock(&rt->life_lock);

    if (rt->closing) {
        pthread_mutex_unlock(&rt->life_lock);
        return NBFFI_EALREADY;
    }

    t = NULL;
    if (task != NULL) {
        t = nbffi__life_task(rt);
        if (t == NULL) {
            pthread_mutex_unlock(&rt->life_lock);
            return NBFFI_ENOMEM;
        }
    }

    rt->closing = 1;
    rt->close_deadline = deadline_ns;
    rt->close_task = t;

    /* No new calls; what is queued still runs. */
    nbffi__queue_close(&rt->q);

    if (atomic_load(&rt->state) == NBFFI_RT_FAILED) {
        /* Nothing runs: closed at once. */
        rt->close_task = NULL;
        nbffi__set_closed(rt);
        pthread_mutex_unlock(&rt->life_lock);
        if (t != NULL) {
            nbffi__task_complete(t, 0, NULL);
            *task = t;
        }
        return 0;
    }

    rc = nbffi__op_start(rt, nbffi__stop_main);
    if (rc != 0) {
        rt->close_task = NULL;
        nbffi__orphan(rt, "no thread could be started to stop it");
        pthread_mutex_unlock(&rt->life_lock);
        if (t != NULL) {
            rt->host->allocated--;
            nbffi__runtime_unref(rt);
            free(t);
        }
        return rc;
    }

    pthread_mutex_unlock(&rt->life_lock);

    if (task != NULL) {
        *task = t;
    }
    return 0;
}


int
nbffi_runtime_wait(nbffi_runtime_t *rt, int64_t deadline_ns)
{
    int              state;
    struct timespec  ts;

    nbffi__timespec(deadline_ns, &ts);

    pthread_mutex_lock(&rt->life_lock);

    for ( ;; ) {
        state = atomic_load(&rt->state);
        if (state != NBFFI_RT_STARTING
            && (!rt->closing || state == NBFFI_RT_CLOSED
                || state == NBFFI_RT_ORPHANED))
        {
            break;
        }

        if (deadline_ns == 0) {
            pthread_cond_wait(&rt->life_cond, &rt->life_lock);

        } else if (pthread_cond_timedwait(&rt->life_cond, &rt->life_lock,
                                          &ts) == ETIMEDOUT)
        {
            state = atomic_load(&rt->state);
            break;
        }
    }

    pthread_mutex_unlock(&rt->life_lock);

    return state;
}


void
nbffi_runtime_free(nbffi_runtime_t *rt)
{
    if (rt->handle_freed) {
        return;
    }

    rt->handle_freed = 1;
    (void) nbffi_runtime_close(rt, 0, NULL);
    rt->host->runtimes--;
    nbffi__runtime_unref(rt);
}


/* ---- start ------------------------------------------------------------ */

static void *
nbffi__start_main(void *arg)
{
    int                status, returned;
    char               msg[NBFFI__ERR_MAX];
    nbffi_task_t      *task, *queued;
    nbffi_runtime_t   *rt = arg;
    nbffi__bounded_t  *call, fallback;

    returned = nbffi__bounded_run(rt, nbffi__start_call, nbffi__start_late,
                                  rt->start_deadline, 0, &fallback, &call);
    if (returned) {
        status = call->status;
        (void) snprintf(msg, sizeof(msg), "%s", call->err);

    } else {
        status = NBFFI_EINIT;
        (void) snprintf(msg, sizeof(msg), "%s: init did not return within "
                        "the start deadline; it is left running", rt->lib);
    }

    pthread_mutex_lock(&rt->life_lock);

    if (rt->start_orphaned) {
        /* The stop gave up waiting for this start and took over its
         * duties to the host: stop what init began, touch nothing else. */
        pthread_mutex_unlock(&rt->life_lock);
        if (returned) {
            if (status == 0) {
                nbffi__start_undo(call);
            }
            nbffi__bounded_unref(call);
        }
        nbffi__runtime_unref(rt);
        return NULL;
    }

    queued = NULL;

    if (status == 0) {
        rt->data = call->data;
        nbffi__set_state(rt, NBFFI_RT_READY);

    } else {
        if (!returned) {
            /* it may still log through the host, even after its free */
            rt->start_abandoned = 1;
            atomic_fetch_add(&rt->host->orphans, 1);
        }
        rt->start_status = status;
        rt->start_error = nbffi__strndup(msg, strlen(msg));
        nbffi__queue_close(&rt->q);
        /* Calls posted meanwhile learn why the start failed. */
        queued = nbffi__queue_take_all(&rt->q);
        nbffi__runtime_fail_list(queued, status, msg);
        nbffi__set_state(rt, NBFFI_RT_FAILED);
    }

    task = rt->load_task;
    rt->load_task = NULL;
    nbffi__op_done(rt);

    pthread_mutex_unlock(&rt->life_lock);

    if (returned) {
        nbffi__bounded_unref(call);
    }

    nbffi__op_end(rt, task, status, msg);
    return NULL;
}


static void
nbffi__start_call(nbffi__bounded_t *call)
{
    int                    rc;
    char                   ierr[NBFFI__ERR_MAX];
    nbffi_runtime_t       *rt = call->rt;
    nbffi_runtime_init_fn  init;

    call->status = nbffi__library_open(rt, &init, call->err,
                                       sizeof(call->err));
    if (call->status != 0) {
        return;
    }

    ierr[0] = '\0';
    rc = init(&rt->q, rt->cfg, rt->cfg_len, &call->data, ierr, sizeof(ierr));
    if (rc != 0) {
        ierr[sizeof(ierr) - 1] = '\0';
        (void) snprintf(call->err, sizeof(call->err), "%s: init failed: %s",
                        rt->lib, ierr[0] ? ierr : "(no message)");
        call->status = NBFFI_EINIT;
    }
}


/*
 * init returned after the start deadline, on the thread that ran it: stop
 * what it began.  The runtime failed meanwhile, and the host may be gone.
 */
static void
nbffi__start_late(nbffi__bounded_t *call)
{
    nbffi_runtime_t  *rt = call->rt;

    if (call->status == 0) {
        nbffi__start_undo(call);

    } else {
        /* it failed, so it stopped what it started: the fd is free */
        nbffi__queue_close_fd(&rt->q);
    }

    /* start_main counted it as an orphan of the host: no longer */
    atomic_fetch_sub(&rt->host->orphans, 1);
}


/* Stops a runtime whose init succeeded after the host gave up on it. */
static void
nbffi__start_undo(nbffi__bounded_t *call)
{
    int               stayed;
    nbffi_runtime_t  *rt = call->rt;

    nbffi_logf(&rt->q, NBFFI_LOG_WARN, "nbffi: %s: init returned after the "
               "host gave up on it; stopping the runtime", rt->lib);

    /* The queue is closed and empty: its threads see end-of-queue. */
    stayed = (rt->fini != NULL)
             ? rt->fini(call->data,
                        nbffi__deadline_after_ms(NBFFI__LATE_FINI_MS))
             : 0;

    if (stayed != 0 || nbffi__runtime_fail_held(rt) != 0) {
        pthread_mutex_lock(&rt->life_lock);
        nbffi__orphan(rt, "its init returned late and its threads did "
                      "not stop");
        pthread_mutex_unlock(&rt->life_lock);
        return;
    }

    nbffi__queue_close_fd(&rt->q);
}


/* ---- stop ------------------------------------------------------------- */

static void *
nbffi__stop_main(void *arg)
{
    int               state;
    char              why[256];
    nbffi_task_t     *task, *load_task, *queued;
    nbffi_runtime_t  *rt = arg;

    load_task = NULL;

    pthread_mutex_lock(&rt->life_lock);

    state = nbffi__stop_wait_start(rt);

    if (state == NBFFI_RT_STARTING) {
        /* init is stuck: take over the start's duties to the host */
        rt->start_orphaned = 1;
        load_task = rt->load_task;
        rt->load_task = NULL;
        atomic_fetch_sub(&rt->host->ops, 1);
        nbffi__orphan(rt, "its init did not return by the close deadline");

    } else if (state == NBFFI_RT_FAILED) {
        nbffi__set_closed(rt);

    } else {
        nbffi__set_state(rt, NBFFI_RT_CLOSING);
        pthread_mutex_unlock(&rt->life_lock);

        state = nbffi__stop_fini(rt, why, sizeof(why));

        pthread_mutex_lock(&rt->life_lock);

        if (state == NBFFI_RT_CLOSED) {
            /* A runtime without threads leaves its queue as it was. */
            queued = nbffi__queue_take_all(&rt->q);
            nbffi__runtime_fail_list(queued, NBFFI_ECLOSED, NULL);
            nbffi__set_closed(rt);
        } else {
            nbffi__orphan(rt, why);
        }
    }

    state = atomic_load(&rt->state);
    task = rt->close_task;
    rt->close_task = NULL;
    nbffi__op_done(rt);

    pthread_mutex_unlock(&rt->life_lock);

    if (load_task != NULL) {
        nbffi__task_complete(load_task, NBFFI_EORPHANED, rt->start_error);
    }

    if (state == NBFFI_RT_CLOSED) {
        nbffi__op_end(rt, task, 0, NULL);

    } else {
        nbffi__op_end(rt, task, NBFFI_EORPHANED, rt->start_error);
    }

    return NULL;
}


/* With life_lock held: waits for the start to end, until the deadline. */
static int
nbffi__stop_wait_start(nbffi_runtime_t *rt)
{
    struct timespec  ts;

    nbffi__timespec(rt->close_deadline, &ts);

    while (atomic_load(&rt->state) == NBFFI_RT_STARTING) {
        if (rt->close_deadline == 0) {
            pthread_cond_wait(&rt->life_cond, &rt->life_lock);

        } else if (pthread_cond_timedwait(&rt->life_cond, &rt->life_lock,
                                          &ts) == ETIMEDOUT)
        {
            break;
        }
    }

    return atomic_load(&rt->state);
}


/*
 * Calls fini and decides: NBFFI_RT_CLOSED when every thread has left, else
 * NBFFI_RT_ORPHANED with the reason in why.
 */
static int
nbffi__stop_fini(nbffi_runtime_t *rt, char *why, size_t len)
{
    int                stayed;
    unsigned           held;
    nbffi__bounded_t  *call, fallback;

    if (!nbffi__bounded_run(rt, nbffi__stop_call, nbffi__stop_late,
                            rt->close_deadline, NBFFI__FINI_GRACE_NS,
                            &fallback, &call))
    {
        held = nbffi__runtime_fail_held(rt);
        (void) snprintf(why, len, "fini did not return by the close "
                        "deadline; %u task(s) it held completed as closed",
                        held);
        return NBFFI_RT_ORPHANED;
    }

    stayed = call->status;
    nbffi__bounded_unref(call);

    /* Whatever it still holds, a thread of it may still read. */
    held = nbffi__runtime_fail_held(rt);

    if (stayed > 0) {
        (void) snprintf(why, len, "fini reported %d thread(s) still "
                        "running at the close deadline; %u task(s) it held "
                        "completed as closed", stayed, held);
        return NBFFI_RT_ORPHANED;
    }

    if (held != 0) {
        (void) snprintf(why, len, "fini returned with %u task(s) "
                        "unanswered, completed as closed: its threads may "
                        "still run", held);
        return NBFFI_RT_ORPHANED;
    }

    if (atomic_load_explicit(&rt->q.poppers, memory_order_acquire) != 0) {
        (void) snprintf(why, len, "fini returned while a thread of it was "
                        "still in nbffi_queue_pop");
        return NBFFI_RT_ORPHANED;
    }

    return NBFFI_RT_CLOSED;
}


static void
nbffi__stop_call(nbffi__bounded_t *call)
{
    nbffi_runtime_t  *rt = call->rt;

    call->status = (rt->fini != NULL) ? rt->fini(rt->data, call->deadline)
                                      : 0;
}


/* fini returned after its deadline: the runtime stays orphaned, but a
 * runtime whose threads did leave gives its descriptor back. */
static void
nbffi__stop_late(nbffi__bounded_t *call)
{
    if (call->status == 0) {
        nbffi__queue_close_fd(&call->rt->q);
    }
}


/*
 * With life_lock held.  Marks rt orphaned, for good: every task it still
 * holds or that waits in its queue completes as closed, its memory stays,
 * and one line says why.
 */
static void
nbffi__orphan(nbffi_runtime_t *rt, const char *why)
{
    char          msg[NBFFI__ERR_MAX];
    nbffi_task_t  *queued;

    if (atomic_load(&rt->state) == NBFFI_RT_ORPHANED) {
        return;
    }

    (void) snprintf(msg, sizeof(msg), "runtime %s orphaned: %s; its memory "
                    "is left allocated", rt->lib, why);

    free(rt->start_error);
    rt->start_error = nbffi__strndup(msg, strlen(msg));

    nbffi__queue_close(&rt->q);
    queued = nbffi__queue_take_all(&rt->q);
    nbffi__runtime_fail_list(queued, NBFFI_ECLOSED, NULL);
    (void) nbffi__runtime_fail_held(rt);

    nbffi__runtime_ref(rt);
    pthread_mutex_lock(&nbffi__orphans_lock);
    rt->orphan_next = nbffi__orphans;
    nbffi__orphans = rt;
    pthread_mutex_unlock(&nbffi__orphans_lock);

    atomic_fetch_add(&rt->host->orphans, 1);
    nbffi__log_printf(&rt->host->log, NBFFI_LOG_ERR, "nbffi: %s", msg);

    nbffi__set_state(rt, NBFFI_RT_ORPHANED);
}


/* ---- ops -------------------------------------------------------------- */

/* Host thread, life_lock held or rt not yet shared. */
static int
nbffi__op_start(nbffi_runtime_t *rt, void *(*fn)(void *))
{
    int  rc;

    nbffi__runtime_ref(rt);
    atomic_fetch_add(&rt->host->ops, 1);

    rc = nbffi__thread_detached(fn, rt);
    if (rc != 0) {
        atomic_fetch_sub(&rt->host->ops, 1);
        atomic_fetch_sub(&rt->refs, 1);
        return rc == NBFFI_ENOMEM ? NBFFI_ENOMEM : NBFFI_EIO;
    }

    return 0;
}


/*
 * With life_lock held, the op's final state set: from here on the op
 * touches the host only to push its life-cycle task, which the host must
 * reap before it can be freed.  Under the lock, so that nbffi_runtime_wait
 * returns only after this.
 */
static void
nbffi__op_done(nbffi_runtime_t *rt)
{
    atomic_fetch_sub(&rt->host->ops, 1);
}


/* The end of an op thread. */
static void
nbffi__op_end(nbffi_runtime_t *rt, nbffi_task_t *task, int status,
    const char *msg)
{
    nbffi__thread_leaving();

    if (task != NULL) {
        nbffi__task_complete(task, status, msg);
    }

    nbffi__runtime_unref(rt);
}


/* With life_lock held. */
static void
nbffi__set_state(nbffi_runtime_t *rt, int state)
{
    atomic_store_explicit(&rt->state, state, memory_order_release);
    pthread_cond_broadcast(&rt->life_cond);
}


/*
 * With life_lock held, once no thread of the runtime uses its queue: gives
 * the queue's descriptor back, then says CLOSED, so that whoever sees the
 * state finds the descriptor closed.  An init left running past the start
 * deadline may still use it: its late step closes it.
 */
static void
nbffi__set_closed(nbffi_runtime_t *rt)
{
    if (!rt->start_abandoned) {
        nbffi__queue_close_fd(&rt->q);
    }

    nbffi__set_state(rt, NBFFI_RT_CLOSED);
}


/* Host thread.  A life-cycle task of rt, counted as the host's. */
static nbffi_task_t *
nbffi__life_task(nbffi_runtime_t *rt)
{
    nbffi_task_t  *task;

    task = nbffi__task_new(rt->host, rt, NULL, 0, NULL, 0, 0);
    if (task == NULL) {
        return NULL;
    }

    task->kind = NBFFI__TASK_LIFE;
    nbffi__runtime_ref(rt);
    rt->host->allocated++;

    return task;
}


/* ---- bounded calls ---------------------------------------------------- */

/*
 * Runs fn on a thread of its own and waits for it until deadline + grace
 * (deadline 0: no limit, fn then runs on this thread; so it does, in
 * fallback, when there is no memory for the call); fn sees deadline.
 * Returns 1 with *out, the call and its results, to unref; or 0 when the
 * time passed: the call goes on alone and runs late when fn returns.
 */
static int
nbffi__bounded_run(nbffi_runtime_t *rt, nbffi__bounded_fn fn,
    nbffi__bounded_fn late, int64_t deadline, int64_t grace,
    nbffi__bounded_t *fallback, nbffi__bounded_t **out)
{
    int                done;
    struct timespec    ts;
    nbffi__bounded_t  *call;

    call = calloc(1, sizeof(nbffi__bounded_t));
    if (call != NULL && pthread_mutex_init(&call->lock, NULL) != 0) {
        free(call);
        call = NULL;
    }
    if (call != NULL && nbffi__cond_init_monotonic(&call->cond) != 0) {
        (void) pthread_mutex_destroy(&call->lock);
        free(call);
        call = NULL;
    }

    if (call == NULL) {
        /* no memory to bound it with: call it here, without a bound */
        memset(fallback, 0, sizeof(nbffi__bounded_t));
        fallback->on_stack = 1;
        fallback->rt = rt;
        fallback->deadline = deadline;
        *out = fallback;
        fn(fallback);
        return 1;
    }

    call->rt = rt;
    call->fn = fn;
    call->late = late;
    call->deadline = deadline;
    call->refs = 2;
    nbffi__runtime_ref(rt);

    *out = call;

    if (deadline == 0 || nbffi__thread_detached(nbffi__bounded_main, call)
                         != 0)
    {
        /* no bound, or no thread to bound it with: call it here */
        call->refs = 1;
        fn(call);
        return 1;
    }

    nbffi__timespec(deadline < INT64_MAX - grace ? deadline + grace
                                                 : INT64_MAX, &ts);

    pthread_mutex_lock(&call->lock);

    while (!call->done) {
        if (pthread_cond_timedwait(&call->cond, &call->lock, &ts)
            == ETIMEDOUT)
        {
            break;
        }
    }

    done = call->done;
    call->abandoned = !done;

    pthread_mutex_unlock(&call->lock);

    if (!done) {
        nbffi__bounded_unref(call);
        *out = NULL;
    }

    return done;
}


static void *
nbffi__bounded_main(void *arg)
{
    int                abandoned;
    nbffi__bounded_t  *call = arg;

    call->fn(call);
    nbffi__thread_leaving();

    pthread_mutex_lock(&call->lock);
    call->done = 1;
    abandoned = call->abandoned;
    pthread_cond_signal(&call->cond);
    pthread_mutex_unlock(&call->lock);

    if (abandoned) {
        call->late(call);
    }

    nbffi__bounded_unref(call);
    return NULL;
}


static void
nbffi__bounded_unref(nbffi__bounded_t *call)
{
    int               last;
    nbffi_runtime_t  *rt;

    if (call->on_stack) {
        return;
    }

    pthread_mutex_lock(&call->lock);
    last = (--call->refs == 0);
    pthread_mutex_unlock(&call->lock);

    if (!last) {
        return;
    }

    rt = call->rt;
    (void) pthread_cond_destroy(&call->cond);
    (void) pthread_mutex_destroy(&call->lock);
    free(call);
    nbffi__runtime_unref(rt);
}


/* A copy of len bytes, NUL-terminated; NULL when out of memory. */
static char *
nbffi__strndup(const char *s, size_t len)
{
    char  *copy;

    copy = malloc(len + 1);
    if (copy != NULL) {
        if (len != 0) {
            memcpy(copy, s, len);
        }
        copy[len] = '\0';
    }

    return copy;
}
