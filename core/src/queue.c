/*
 * The request queue of a runtime: a bounded FIFO under a mutex, with a
 * condition variable for sleeping runtime threads, an optional eventfd for
 * runtimes with their own event loop.  Popped tasks are recorded in the
 * held set (held.c) until they are answered.
 *
 * Waking a sleeping thread costs ~20 us on an idle vCPU, so one runtime
 * thread at a time spins before it sleeps.  The spin budget adapts below
 * spin_max: a spin that ends without work halves it; a sleep that a task
 * ended sooner than spin_max raises it, since a spin would have caught that
 * task; an answer to a host that spins for it sets it to spin_max (task.c),
 * since that host posts again within microseconds.
 */

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "nbffi_int.h"


static int nbffi__queue_pop(nbffi_queue_t *q, nbffi_task_t **out, int max,
    int64_t timeout_ns);
static int nbffi__queue_take_locked(nbffi_queue_t *q, nbffi_task_t **out,
    int max);
static int nbffi__queue_spin(nbffi_queue_t *q, int64_t until_ns);
static int nbffi__queue_sleep(nbffi_queue_t *q, int64_t until_ns,
    nbffi_task_t **out, int max);
static void nbffi__queue_signal_fd(nbffi_queue_t *q, int fd);
static void nbffi__queue_sched(nbffi_queue_t *q);
static void nbffi__queue_sched_key(void);


/* Set (non-NULL) once the thread's scheduling policy was looked at.  A
 * pthread key, not _Thread_local: LeakSanitizer's exit check died on the
 * dynamic TLS of a dlopen'ed libnbffi in a thread that never left. */
static pthread_key_t   nbffi__queue_sched_set;
static pthread_once_t  nbffi__queue_sched_once = PTHREAD_ONCE_INIT;
static int             nbffi__queue_sched_ok;


int
nbffi__queue_init(nbffi_queue_t *q, nbffi_runtime_t *rt, unsigned max,
    nbffi__log_t *log)
{
    int                  rc;
    pthread_mutexattr_t  mattr;

    memset(q, 0, sizeof(nbffi_queue_t));
    q->rt = rt;
    q->log = log;
    q->max = max;
    q->efd = -1;
    atomic_init(&q->len, 0);
    atomic_init(&q->poppers, 0);
    atomic_init(&q->swept, 0);
    atomic_init(&q->fd_writers, 0);
    atomic_init(&q->closed, 0);
    atomic_init(&q->spinning, 0);
    atomic_init(&q->spin_ns, NBFFI__SPIN_DEFAULT_NS);
    atomic_init(&q->spin_max, NBFFI__SPIN_DEFAULT_NS);

    /* Adaptive: the host and a runtime thread hold it for a few dozen
     * nanoseconds each, far less than a futex round trip costs. */
    rc = pthread_mutexattr_init(&mattr);
    if (rc != 0) {
        return NBFFI_ENOMEM;
    }
    (void) pthread_mutexattr_settype(&mattr, PTHREAD_MUTEX_ADAPTIVE_NP);
    rc = pthread_mutex_init(&q->lock, &mattr);
    (void) pthread_mutexattr_destroy(&mattr);
    if (rc != 0) {
        return NBFFI_ENOMEM;
    }

    /* Timed pops wait on the deadlines' clock, immune to clock jumps. */
    if (nbffi__cond_init_monotonic(&q->cond) != 0) {
        (void) pthread_mutex_destroy(&q->lock);
        return NBFFI_ENOMEM;
    }

    return 0;
}


void
nbffi__queue_destroy(nbffi_queue_t *q)
{
    nbffi__queue_close_fd(q);
    (void) pthread_cond_destroy(&q->cond);
    (void) pthread_mutex_destroy(&q->lock);
}


/*
 * Closes the eventfd for good, once no runtime thread uses the queue: a
 * closed runtime gives its descriptor back at once, not with its memory.
 */
void
nbffi__queue_close_fd(nbffi_queue_t *q)
{
    int  fd;

    pthread_mutex_lock(&q->lock);
    fd = q->efd;
    q->efd = NBFFI__QUEUE_FD_GONE;
    pthread_mutex_unlock(&q->lock);

    /* A writer that read the number before may still be writing to it. */
    while (atomic_load_explicit(&q->fd_writers, memory_order_acquire) != 0) {
        nbffi__cpu_relax();
    }

    if (fd >= 0) {
        (void) close(fd);
    }
}


int
nbffi__queue_push(nbffi_queue_t *q, nbffi_task_t *task)
{
    int       fd, wake;
    unsigned  len;

    task->next = NULL;

    pthread_mutex_lock(&q->lock);

    if (atomic_load_explicit(&q->closed, memory_order_relaxed)) {
        pthread_mutex_unlock(&q->lock);
        return NBFFI_ECLOSED;
    }

    len = atomic_load_explicit(&q->len, memory_order_relaxed);
    if (len >= q->max) {
        pthread_mutex_unlock(&q->lock);
        return NBFFI_EQFULL;
    }

    if (q->tail == NULL) {
        q->head = task;
    } else {
        q->tail->next = task;
    }
    q->tail = task;
    atomic_store_explicit(&q->len, len + 1, memory_order_release);

    /* A spinning thread sees the new length by itself, and one signalled
     * takes every task queued when it wakes: the posts of one event-loop
     * iteration cost one wake-up, not one each. */
    wake = (q->sleepers > q->signaled
            && !atomic_load_explicit(&q->spinning, memory_order_relaxed));
    if (wake) {
        q->signaled++;
    }

    fd = (len == 0) ? q->efd : -1;
    if (fd >= 0) {
        atomic_fetch_add_explicit(&q->fd_writers, 1, memory_order_relaxed);
    }

    pthread_mutex_unlock(&q->lock);

    /* After the unlock: the woken thread does not wait for our lock.  The
     * sleeper counted above is inside pthread_cond_wait already. */
    if (wake) {
        pthread_cond_signal(&q->cond);
    }

    if (fd >= 0) {
        nbffi__queue_signal_fd(q, fd);
    }

    return 0;
}


int
nbffi_queue_pop(nbffi_queue_t *q, nbffi_task_t **out, int max,
    int64_t timeout_ns)
{
    int  rc;

    if (q == NULL || out == NULL || max <= 0) {
        return NBFFI_EINVAL;
    }

    (void) pthread_once(&nbffi__queue_sched_once, nbffi__queue_sched_key);
    if (nbffi__queue_sched_ok
        && pthread_getspecific(nbffi__queue_sched_set) == NULL)
    {
        nbffi__queue_sched(q);
    }

    atomic_fetch_add_explicit(&q->poppers, 1, memory_order_relaxed);
    rc = nbffi__queue_pop(q, out, max, timeout_ns);
    atomic_fetch_sub_explicit(&q->poppers, 1, memory_order_release);

    return rc;
}


static int
nbffi__queue_pop(nbffi_queue_t *q, nbffi_task_t **out, int max,
    int64_t timeout_ns)
{
    int      rc;
    int64_t  until;

    until = (timeout_ns > 0) ? nbffi_now_ns() + timeout_ns : timeout_ns;

    for ( ;; ) {
        if (atomic_load_explicit(&q->len, memory_order_acquire) > 0
            || atomic_load_explicit(&q->closed, memory_order_acquire))
        {
            pthread_mutex_lock(&q->lock);
            rc = nbffi__queue_take_locked(q, out, max);
            if (rc != 0) {
                return rc;
            }
            /* every task taken was expired or cancelled: wait again */
        }

        if (timeout_ns == 0) {
            return 0;
        }

        if (nbffi__queue_spin(q, until)) {
            continue;
        }

        rc = nbffi__queue_sleep(q, until, out, max);
        if (rc != 0) {
            return rc;
        }

        if (until > 0 && nbffi_now_ns() >= until) {
            return 0;
        }
    }
}


/* Spins while the budget lasts; 1 when work (or close) showed up. */
static int
nbffi__queue_spin(nbffi_queue_t *q, int64_t until_ns)
{
    int64_t  budget, max, start, now, end;

    max = atomic_load_explicit(&q->spin_max, memory_order_relaxed);
    budget = atomic_load_explicit(&q->spin_ns, memory_order_relaxed);
    if (budget > max) {
        budget = max;
    }
    if (budget == 0
        || atomic_exchange_explicit(&q->spinning, 1, memory_order_acq_rel))
    {
        return 0;
    }

    start = nbffi_now_ns();
    end = start + budget;
    if (until_ns > 0 && until_ns < end) {
        end = until_ns;
    }

    for ( ;; ) {
        if (atomic_load_explicit(&q->len, memory_order_acquire) > 0
            || atomic_load_explicit(&q->closed, memory_order_acquire))
        {
            budget *= 2;
            if (budget > max) {
                budget = max;
            }
            atomic_store_explicit(&q->spin_ns, budget, memory_order_relaxed);
            atomic_store_explicit(&q->spinning, 0, memory_order_release);
            return 1;
        }

        nbffi__cpu_relax();

        now = nbffi_now_ns();
        if (now >= end) {
            break;
        }
    }

    budget /= 2;
    if (budget < NBFFI__SPIN_MIN_NS) {
        budget = 0;
    }
    atomic_store_explicit(&q->spin_ns, budget, memory_order_relaxed);

    /* spinning is cleared under the lock in nbffi__queue_sleep, so that a
     * producer that skipped the signal is seen there */
    return 0;
}


/* Sleeps until work, close or until_ns; returns like nbffi_queue_pop. */
static int
nbffi__queue_sleep(nbffi_queue_t *q, int64_t until_ns, nbffi_task_t **out,
    int max)
{
    int              rc;
    int64_t          start, slept, budget, spin_max;
    struct timespec  ts;

    pthread_mutex_lock(&q->lock);

    atomic_store_explicit(&q->spinning, 0, memory_order_relaxed);

    start = nbffi_now_ns();

    while (atomic_load_explicit(&q->len, memory_order_relaxed) == 0
           && !atomic_load_explicit(&q->closed, memory_order_relaxed))
    {
        q->sleepers++;

        if (until_ns < 0) {
            rc = pthread_cond_wait(&q->cond, &q->lock);

        } else {
            ts.tv_sec = until_ns / 1000000000;
            ts.tv_nsec = until_ns % 1000000000;
            rc = pthread_cond_timedwait(&q->cond, &q->lock, &ts);
        }

        q->sleepers--;
        if (q->signaled > 0) {
            /* a timeout may take the place of a signal here: then a later
             * push signals once more than needed, never once less */
            q->signaled--;
        }

        if (rc == ETIMEDOUT
            && atomic_load_explicit(&q->len, memory_order_relaxed) == 0
            && !atomic_load_explicit(&q->closed, memory_order_relaxed))
        {
            pthread_mutex_unlock(&q->lock);
            return 0;
        }
    }

    slept = nbffi_now_ns() - start;
    spin_max = atomic_load_explicit(&q->spin_max, memory_order_relaxed);
    if (slept < spin_max) {
        budget = atomic_load_explicit(&q->spin_ns, memory_order_relaxed);
        budget = (budget > slept) ? budget * 2 : slept * 2;
        if (budget < NBFFI__SPIN_MIN_NS) {
            budget = NBFFI__SPIN_MIN_NS;
        }
        if (budget > spin_max) {
            budget = spin_max;
        }
        atomic_store_explicit(&q->spin_ns, budget, memory_order_relaxed);
    }

    return nbffi__queue_take_locked(q, out, max);
}


/*
 * Called with q->lock held; releases it.  Takes up to max tasks; answers
 * the expired and cancelled ones itself (after unlocking: answering may
 * write the host's notifier).
 */
static int
nbffi__queue_take_locked(nbffi_queue_t *q, nbffi_task_t **out, int max)
{
    int            n, i, kept, ended, missed;
    int64_t        now;
    unsigned       len;
    nbffi_task_t  *task, *skipped, **skipped_tail;

    n = 0;
    now = 0;
    skipped = NULL;
    skipped_tail = &skipped;
    len = atomic_load_explicit(&q->len, memory_order_relaxed);

    while (n < max && q->head != NULL) {
        task = q->head;
        q->head = task->next;
        len--;

        if (atomic_load_explicit(&task->cancelled, memory_order_relaxed)) {
            task->status = NBFFI_ECANCELED;

        } else if (task->deadline != 0
                   && task->deadline <= (now != 0 ? now
                                         : (now = nbffi_now_ns())))
        {
            task->status = NBFFI_ETIMEDOUT;

        } else {
            out[n++] = task;
            continue;
        }

        task->next = NULL;
        *skipped_tail = task;
        skipped_tail = &task->next;
    }

    if (q->head == NULL) {
        q->tail = NULL;
    }
    atomic_store_explicit(&q->len, len, memory_order_relaxed);

    /* Pass the baton: more work than this thread took. */
    if (len > 0 && q->sleepers > q->signaled) {
        q->signaled++;
        pthread_cond_signal(&q->cond);
    }

    ended = (n == 0 && len == 0
             && atomic_load_explicit(&q->closed, memory_order_relaxed));

    pthread_mutex_unlock(&q->lock);

    /* Held from now on: answering takes it out of the held set.  A task
     * that cannot be recorded is answered here instead of returned. */
    for (i = 0, kept = 0; i < n; i++) {
        task = out[i];
        atomic_store_explicit(&task->state, NBFFI__POPPED,
                              memory_order_relaxed);
        if (nbffi__held_add(task) == 0) {
            out[kept++] = task;
        } else {
            nbffi__task_complete(task, NBFFI_ENOMEM, NULL);
        }
    }
    n = kept;

    /* The runtime's held tasks were swept (it is being orphaned) since
     * these left the queue: the sweep may have missed them.  No thread of
     * it gets them; each completes as closed, once, here or by a sweep. */
    missed = (n > 0 && atomic_load(&q->swept));
    for (i = 0; missed && i < n; i++) {
        if (nbffi__held_remove(out[i])) {
            nbffi__task_complete(out[i], NBFFI_ECLOSED, NULL);
        }
    }
    if (missed) {
        n = 0;
        ended = (len == 0
                 && atomic_load_explicit(&q->closed, memory_order_relaxed));
    }

    while (skipped != NULL) {
        task = skipped;
        skipped = task->next;
        nbffi__task_complete(task, task->status, NULL);
    }

    if (n > 0) {
        return n;
    }

    return ended ? NBFFI_ECLOSED : 0;
}


int
nbffi_queue_fd(nbffi_queue_t *q)
{
    int  fd;

    if (q == NULL) {
        return NBFFI_EINVAL;
    }

    pthread_mutex_lock(&q->lock);

    if (q->efd == NBFFI__QUEUE_FD_GONE) {
        pthread_mutex_unlock(&q->lock);
        return NBFFI_ECLOSED;
    }

    if (q->efd < 0) {
        q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->efd < 0) {
            q->efd = -1;
            pthread_mutex_unlock(&q->lock);
            return NBFFI_EIO;
        }

        if (atomic_load_explicit(&q->len, memory_order_relaxed) > 0
            || atomic_load_explicit(&q->closed, memory_order_relaxed))
        {
            atomic_fetch_add_explicit(&q->fd_writers, 1,
                                      memory_order_relaxed);
            nbffi__queue_signal_fd(q, q->efd);
        }
    }

    fd = q->efd;

    pthread_mutex_unlock(&q->lock);

    return fd;
}


int
nbffi_queue_closed(nbffi_queue_t *q)
{
    return atomic_load_explicit(&q->closed, memory_order_acquire);
}


int64_t
nbffi_queue_spin_max(nbffi_queue_t *q)
{
    return atomic_load_explicit(&q->spin_max, memory_order_relaxed);
}


const unsigned int *
nbffi_queue_pending(nbffi_queue_t *q)
{
    /* an atomic_uint is an unsigned int in memory on every target we
     * build for (lock-free, same size) */
    _Static_assert(sizeof(atomic_uint) == sizeof(unsigned int),
                   "atomic_uint is not an unsigned int");
    return (const unsigned int *) &q->len;
}


void
nbffi__queue_close(nbffi_queue_t *q)
{
    pthread_mutex_lock(&q->lock);
    atomic_store_explicit(&q->closed, 1, memory_order_release);
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);

    nbffi__queue_kick_fd(q);
}


/*
 * Any thread.  Makes the queue's eventfd readable, if a runtime asked for
 * it: the queue closed, or a stream's window opened for a send that got
 * NBFFI_EQFULL.
 */
void
nbffi__queue_kick_fd(nbffi_queue_t *q)
{
    int  fd;

    pthread_mutex_lock(&q->lock);
    fd = q->efd;
    if (fd >= 0) {
        atomic_fetch_add_explicit(&q->fd_writers, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&q->lock);

    if (fd >= 0) {
        nbffi__queue_signal_fd(q, fd);
    }
}


/* Takes every queued task out, as a list linked by next. */
nbffi_task_t *
nbffi__queue_take_all(nbffi_queue_t *q)
{
    nbffi_task_t  *list;

    pthread_mutex_lock(&q->lock);
    list = q->head;
    q->head = NULL;
    q->tail = NULL;
    atomic_store_explicit(&q->len, 0, memory_order_relaxed);
    pthread_mutex_unlock(&q->lock);

    return list;
}


/*
 * Once per thread, at its first pop: SCHED_BATCH, unless the runtime asked
 * for NBFFI_LOAD_SCHED_NORMAL.  A woken thread of ours then waits for the
 * running one to give up the CPU (the host's event loop, which just posted,
 * gets to finish its iteration and post more) instead of preempting it.
 * Not fatal: a sandbox may refuse it, the thread then keeps its policy.
 */
static void
nbffi__queue_sched(nbffi_queue_t *q)
{
#ifdef SCHED_BATCH
    struct sched_param  sp;

    if (q->sched_batch) {
        memset(&sp, 0, sizeof(sp));
        (void) sched_setscheduler(0, SCHED_BATCH, &sp);
    }
#else
    (void) q;
#endif

    (void) pthread_setspecific(nbffi__queue_sched_set, q);
}


static void
nbffi__queue_sched_key(void)
{
    nbffi__queue_sched_ok = (pthread_key_create(&nbffi__queue_sched_set,
                                                NULL) == 0);
}


/* Writes fd, which the caller counted in fd_writers under the lock. */
static void
nbffi__queue_signal_fd(nbffi_queue_t *q, int fd)
{
    uint64_t  one = 1;

    /* EAGAIN: the counter is saturated, which is signalled enough */
    (void) !write(fd, &one, sizeof(one));

    atomic_fetch_sub_explicit(&q->fd_writers, 1, memory_order_release);
}
