/*
 * The tasks that runtimes hold: popped and not yet answered, process-wide.
 *
 * Answering a task first takes it out of this set, so a task is answered
 * at most once, and a second answer is refused without reading the task's
 * memory, which the host may have freed since the first.  The set is keyed
 * by address, in stripes (each a lock and an open-addressing table with
 * linear probing), so that threads answering different tasks rarely meet.
 */

#include <string.h>

#include "nbffi_int.h"

#define NBFFI__HELD_STRIPES  64         /* a power of two */
#define NBFFI__HELD_MIN_CAP  16


typedef struct {
    pthread_mutex_t       lock;
    nbffi_task_t        **slots;
    size_t                cap;          /* 0 or a power of two */
    size_t                len;
} nbffi__held_stripe_t;


static uint64_t nbffi__held_hash(const nbffi_task_t *task);
static nbffi__held_stripe_t *nbffi__held_stripe(uint64_t hash);
static int nbffi__held_grow(nbffi__held_stripe_t *s);
static void nbffi__held_insert(nbffi__held_stripe_t *s, nbffi_task_t *task);
static void nbffi__held_delete(nbffi__held_stripe_t *s, size_t i);


static struct {
    _Alignas(NBFFI__CACHE_LINE)
    nbffi__held_stripe_t  s;
} nbffi__held[NBFFI__HELD_STRIPES] = {
    [0 ... NBFFI__HELD_STRIPES - 1] = {
        { PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0 }
    }
};

static atomic_ullong  nbffi__held_refusals;


/* Runtime threads (a pop).  0, or NBFFI_ENOMEM. */
int
nbffi__held_add(nbffi_task_t *task)
{
    nbffi__held_stripe_t  *s;

    s = nbffi__held_stripe(nbffi__held_hash(task));

    pthread_mutex_lock(&s->lock);

    if ((s->len + 1) * 2 > s->cap && nbffi__held_grow(s) != 0) {
        pthread_mutex_unlock(&s->lock);
        return NBFFI_ENOMEM;
    }

    nbffi__held_insert(s, task);

    pthread_mutex_unlock(&s->lock);
    return 0;
}


/* Any thread.  1 when task was held (it is no longer), else 0. */
int
nbffi__held_remove(nbffi_task_t *task)
{
    size_t                 i, mask;
    uint64_t               h;
    nbffi__held_stripe_t  *s;

    h = nbffi__held_hash(task);
    s = nbffi__held_stripe(h);

    pthread_mutex_lock(&s->lock);

    if (s->cap != 0) {
        mask = s->cap - 1;
        for (i = h & mask; s->slots[i] != NULL; i = (i + 1) & mask) {
            if (s->slots[i] == task) {
                nbffi__held_delete(s, i);
                pthread_mutex_unlock(&s->lock);
                return 1;
            }
        }
    }

    pthread_mutex_unlock(&s->lock);
    return 0;
}


/*
 * Any thread.  Takes every task that rt holds out of the set and returns
 * them as a list linked by next.  Slow (it visits every slot): for closing.
 */
nbffi_task_t *
nbffi__held_take_runtime(const nbffi_runtime_t *rt)
{
    size_t                 i, k;
    nbffi_task_t          *list, *task;
    nbffi__held_stripe_t  *s;

    list = NULL;

    for (k = 0; k < NBFFI__HELD_STRIPES; k++) {
        s = &nbffi__held[k].s;

        pthread_mutex_lock(&s->lock);

        /* A deletion may shift a later slot into i: look at i again. */
        for (i = 0; i < s->cap; /* void */) {
            task = s->slots[i];
            if (task != NULL && task->rt == rt) {
                nbffi__held_delete(s, i);
                task->next = list;
                list = task;
                continue;
            }
            i++;
        }

        pthread_mutex_unlock(&s->lock);
    }

    return list;
}


/*
 * Any thread.  Logs a refused answer.  The task may be freed memory, so
 * its runtime is unknown: the line goes to stderr (an nginx worker's
 * error log), for the 1st, 10th, 100th... refusal of the process.
 */
void
nbffi__held_refused(void)
{
    uint64_t  n, p;

    n = atomic_fetch_add_explicit(&nbffi__held_refusals, 1,
                                  memory_order_relaxed) + 1;

    for (p = 1; p < n && p <= UINT64_MAX / 10; p *= 10) {
        /* void */
    }

    if (p == n) {
        fprintf(stderr, "nbffi [error] an answer to a task that no runtime "
                "holds was refused (answered twice, or completed when its "
                "runtime was orphaned); %llu so far in this process\n",
                (unsigned long long) n);
    }
}


static uint64_t
nbffi__held_hash(const nbffi_task_t *task)
{
    return ((uint64_t) (uintptr_t) task >> 4) * 0x9e3779b97f4a7c15ull;
}


/* The top bits pick the stripe, the low bits the slot. */
static nbffi__held_stripe_t *
nbffi__held_stripe(uint64_t hash)
{
    return &nbffi__held[hash >> 58 & (NBFFI__HELD_STRIPES - 1)].s;
}


static int
nbffi__held_grow(nbffi__held_stripe_t *s)
{
    size_t          i, cap, old_cap;
    nbffi_task_t  **old;

    cap = s->cap ? s->cap * 2 : NBFFI__HELD_MIN_CAP;

    old = s->slots;
    old_cap = s->cap;

    s->slots = calloc(cap, sizeof(nbffi_task_t *));
    if (s->slots == NULL) {
        s->slots = old;
        return NBFFI_ENOMEM;
    }

    s->cap = cap;
    s->len = 0;

    for (i = 0; i < old_cap; i++) {
        if (old[i] != NULL) {
            nbffi__held_insert(s, old[i]);
        }
    }

    free(old);
    return 0;
}


static void
nbffi__held_insert(nbffi__held_stripe_t *s, nbffi_task_t *task)
{
    size_t  i, mask;

    mask = s->cap - 1;
    for (i = nbffi__held_hash(task) & mask;
         s->slots[i] != NULL;
         i = (i + 1) & mask)
    {
        /* void */
    }

    s->slots[i] = task;
    s->len++;
}


/* Backward-shift deletion: no tombstones, probes stay short. */
static void
nbffi__held_delete(nbffi__held_stripe_t *s, size_t i)
{
    size_t  j, home, mask;

    mask = s->cap - 1;
    j = i;

    for ( ;; ) {
        j = (j + 1) & mask;
        if (s->slots[j] == NULL) {
            break;
        }

        /* The entry at j may move to i unless its home lies cyclically
         * in (i, j]. */
        home = nbffi__held_hash(s->slots[j]) & mask;
        if ((j > i && (home <= i || home > j))
            || (j < i && home <= i && home > j))
        {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }

    s->slots[i] = NULL;
    s->len--;
}
