/*
 * The done queue of a host: a lock-free stack that answering threads push
 * onto and the host thread takes whole, in FIFO order, and the coalescing
 * of wake-ups.
 *
 * The first completion after a take writes the notifier, the others see
 * wake_pending and do not.  The reaper clears wake_pending before it takes
 * the stack, so a completion pushed after the take always writes again: no
 * lost wake-up.  While the host spins on the stack, completions write
 * nothing; the spin writes for them if it gives up with work waiting.
 */

#include "nbffi_int.h"


int
nbffi__done_init(nbffi__done_t *d, int socket)
{
    atomic_init(&d->stack, NULL);
    atomic_init(&d->wake_pending, 0);
    atomic_init(&d->spinning, 0);
    atomic_init(&d->pushers, 0);
    d->fifo_head = NULL;
    d->fifo_tail = NULL;

    return nbffi__notify_init(&d->notify, socket);
}


/* Host thread, once nothing can be pushed any more. */
void
nbffi__done_destroy(nbffi__done_t *d)
{
    /* The thread that pushed the last completion may still be about to
     * write the notifier: a few instructions away. */
    while (atomic_load_explicit(&d->pushers, memory_order_acquire) != 0) {
        nbffi__cpu_relax();
    }

    nbffi__notify_destroy(&d->notify);
}


/* Any thread.  After the push the host may free the task at any moment. */
void
nbffi__done_push(nbffi__done_t *d, nbffi_task_t *task)
{
    nbffi_task_t  *head;

    atomic_fetch_add_explicit(&d->pushers, 1, memory_order_acquire);

    head = atomic_load_explicit(&d->stack, memory_order_relaxed);
    do {
        task->dnext = head;
    } while (!atomic_compare_exchange_weak(&d->stack, &head, task));

    /* seq_cst, against the spin's clearing of spinning and then its look
     * at the stack: one of the two sees the other */
    if (!atomic_load(&d->spinning)) {
        nbffi__done_wake(d);
    }

    atomic_fetch_sub_explicit(&d->pushers, 1, memory_order_release);
}


/* Any thread: wakes the host unless a wake-up is already pending. */
void
nbffi__done_wake(nbffi__done_t *d)
{
    /* The plain load first spares a locked write per completion. */
    if (atomic_load(&d->wake_pending) == 0
        && !atomic_exchange(&d->wake_pending, 1))
    {
        nbffi__notify_write(&d->notify);
    }
}


/*
 * Host thread.  Forgets any pending wake-up, e.g. after a handshake:
 * completions that came while nobody listened wrote nowhere.
 */
void
nbffi__done_rearm(nbffi__done_t *d)
{
    atomic_store(&d->wake_pending, 0);
    if (nbffi__done_pending(d)) {
        nbffi__done_wake(d);
    }
}


/* Host thread.  Moves the stack into the FIFO; returns the FIFO's head. */
nbffi_task_t *
nbffi__done_take(nbffi__done_t *d)
{
    nbffi_task_t  *list, *rev, *next, *last;

    atomic_store(&d->wake_pending, 0);
    atomic_store(&d->spinning, 0);
    list = atomic_exchange_explicit(&d->stack, NULL, memory_order_acquire);
    if (list == NULL) {
        return d->fifo_head;
    }

    last = list;    /* the newest: the FIFO's tail once reversed */
    rev = NULL;
    while (list != NULL) {
        next = list->dnext;
        list->dnext = rev;
        rev = list;
        list = next;
    }

    if (d->fifo_tail == NULL) {
        d->fifo_head = rev;
    } else {
        d->fifo_tail->dnext = rev;
    }

    d->fifo_tail = last;

    return d->fifo_head;
}


/* Host thread. */
int
nbffi__done_pending(nbffi__done_t *d)
{
    return d->fifo_head != NULL
           || atomic_load_explicit(&d->stack, memory_order_relaxed) != NULL;
}


/*
 * Host thread.  A task is marked answered just before it is pushed, so
 * "answered" alone does not mean a take would return it.  Only the host
 * takes the stack, so the nodes reachable from its head stay valid while
 * the host walks them.
 */
static int
nbffi__done_has(nbffi__done_t *d, nbffi_task_t *task)
{
    nbffi_task_t  *t;

    if (task == NULL) {
        return nbffi__done_pending(d);
    }

    if (atomic_load_explicit(&task->state, memory_order_acquire)
        != NBFFI__ANSWERED)
    {
        return 0;
    }

    for (t = d->fifo_head; t != NULL; t = t->dnext) {
        if (t == task) {
            return 1;
        }
    }

    for (t = atomic_load_explicit(&d->stack, memory_order_acquire);
         t != NULL;
         t = t->dnext)
    {
        if (t == task) {
            return 1;
        }
    }

    return 0;
}


/* Host thread, see nbffi_host_spin. */
int
nbffi__done_spin(nbffi__done_t *d, nbffi_task_t *task, int64_t spin_ns)
{
    int64_t  end;

    if (nbffi__done_has(d, task)) {
        return 1;
    }

    if (spin_ns <= 0) {
        return 0;
    }

    atomic_store(&d->spinning, 1);

    end = nbffi_now_ns() + spin_ns;

    do {
        nbffi__cpu_relax();

        if (nbffi__done_has(d, task)) {
            return 1;       /* spinning stays set until the take */
        }
    } while (nbffi_now_ns() < end);

    /* Anything pushed while we spun wrote nothing: write for it. */
    atomic_store(&d->spinning, 0);
    if (atomic_load(&d->stack) != NULL) {
        nbffi__done_wake(d);
    }

    return 0;
}
