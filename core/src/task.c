/*
 * Tasks: one allocation holding the header, the method and either the
 * payload copy or (for borrowed payloads) a small inline area that short
 * replies reuse.  The host and the runtime each hold a reference; the
 * memory goes when the host has released it and its completion is reaped,
 * both of which happen on the host thread.
 *
 * A task is answered once: by a runtime thread that holds it (held.c), or
 * by libnbffi for a task no runtime holds (expired or cancelled in the
 * queue, failed start, closed, a life-cycle task).
 */

#include <string.h>

#include "nbffi_int.h"


static void nbffi__task_push(nbffi_task_t *task, int status);


static atomic_ullong  nbffi__next_id = 1;


/*
 * Host thread.  A task of rt, not yet posted: method may be NULL for a
 * life-cycle task.  NULL when out of memory.
 */
nbffi_task_t *
nbffi__task_new(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    size_t mlen, const void *payload, size_t plen, int borrow)
{
    size_t         cap;
    nbffi_task_t  *task;

    cap = borrow ? 0 : plen;
    if (cap < NBFFI__INLINE_MIN) {
        cap = NBFFI__INLINE_MIN;
    }

    task = malloc(sizeof(nbffi_task_t) + mlen + 1 + cap);
    if (task == NULL) {
        return NULL;
    }

    memset(task, 0, sizeof(nbffi_task_t));
    task->host = host;
    task->done = &host->done;
    task->rt = rt;
    task->id = atomic_fetch_add_explicit(&nbffi__next_id, 1,
                                         memory_order_relaxed);
    task->method_len = mlen;
    task->inline_cap = cap;
    if (mlen != 0) {
        memcpy(task->data, method, mlen);
    }
    task->data[mlen] = '\0';

    if (borrow) {
        task->payload = payload;

    } else {
        task->payload = task->data + mlen + 1;
        if (plen != 0) {
            nbffi__copy(task->data + mlen + 1, payload, plen);
        }
    }

    task->payload_len = plen;
    atomic_init(&task->state, NBFFI__QUEUED);
    atomic_init(&task->cancelled, 0);

    return task;
}


uint64_t
nbffi_task_id(nbffi_task_t *task)
{
    return task->id;
}


const char *
nbffi_task_method(nbffi_task_t *task, size_t *len)
{
    if (len != NULL) {
        *len = task->method_len;
    }
    return task->data;
}


const void *
nbffi_task_payload(nbffi_task_t *task, size_t *len)
{
    if (len != NULL) {
        *len = task->payload_len;
    }
    return task->payload;
}


int64_t
nbffi_task_deadline(nbffi_task_t *task)
{
    return task->deadline;
}


int
nbffi_task_cancelled(nbffi_task_t *task)
{
    return atomic_load_explicit(&task->cancelled, memory_order_relaxed);
}


int
nbffi_task_respond(nbffi_task_t *task, int status, const void *data,
    size_t len)
{
    char  *inl;
    void  *copy;

    if (task == NULL) {
        return NBFFI_EINVAL;
    }

    if (!nbffi__held_remove(task)) {
        nbffi__held_refused();
        return NBFFI_EALREADY;
    }

    if (data == NULL) {
        len = 0;
    }

    inl = task->data + task->method_len + 1;

    if (len <= task->inline_cap) {
        /* The payload is no longer needed: a reply that fits reuses its
         * bytes (and an echo that replies with the payload copies none). */
        if (len != 0 && data != inl) {
            nbffi__copy(inl, data, len);
        }
        task->reply = inl;

    } else {
        copy = malloc(len);
        if (copy == NULL) {
            task->reply = inl;
            task->reply_len = 0;
            nbffi__task_push(task, NBFFI_ENOMEM);
            return NBFFI_ENOMEM;
        }
        nbffi__copy(copy, data, len);
        task->reply = copy;
        task->reply_malloced = 1;
    }

    task->reply_len = len;
    nbffi__task_push(task, status < 0 ? NBFFI_ERUNTIME : status);
    return 0;
}


int
nbffi_task_respond_owned(nbffi_task_t *task, int status, void *data,
    size_t len, nbffi_free_cb free_cb, void *ud)
{
    if (task == NULL) {
        return NBFFI_EINVAL;
    }

    if (!nbffi__held_remove(task)) {
        nbffi__held_refused();
        return NBFFI_EALREADY;
    }

    if (data == NULL) {
        task->reply = task->data + task->method_len + 1;
        task->reply_len = 0;

    } else {
        task->reply = data;
        task->reply_len = len;
        task->reply_free = free_cb;
        task->reply_ud = ud;
    }

    nbffi__task_push(task, status < 0 ? NBFFI_ERUNTIME : status);
    return 0;
}


/*
 * Any thread.  Answers a task that no runtime thread holds, with status
 * and msg (NUL-terminated, may be NULL) as its reply.  A message that does
 * not fit the inline area is copied, or dropped if that fails.
 */
void
nbffi__task_complete(nbffi_task_t *task, int status, const char *msg)
{
    char    *inl, *copy;
    size_t   len;

    inl = task->data + task->method_len + 1;
    len = (msg != NULL) ? strlen(msg) : 0;

    task->reply = inl;
    task->reply_len = 0;

    if (len != 0 && len <= task->inline_cap) {
        memcpy(inl, msg, len);
        task->reply_len = len;

    } else if (len != 0) {
        copy = malloc(len);
        if (copy != NULL) {
            memcpy(copy, msg, len);
            task->reply = copy;
            task->reply_len = len;
            task->reply_malloced = 1;
        }
    }

    nbffi__task_push(task, status);
}


static void
nbffi__task_push(nbffi_task_t *task, int status)
{
    nbffi_queue_t  *q;

    /* A host that spins for this reply posts its next call within
     * microseconds: the runtime's threads are to spin for it, not sleep.
     * Otherwise a caller that yields because the runtime sleeps, and a
     * runtime that sleeps because that caller posts late, keep each other
     * slow for good (seen under a profiler, which slows wake-ups: 100 KB
     * echoes at 77-104 us a call instead of 14-16). */
    if (atomic_load_explicit(&task->done->spinning, memory_order_relaxed)) {
        q = &task->rt->q;
        atomic_store_explicit(&q->spin_ns,
            atomic_load_explicit(&q->spin_max, memory_order_relaxed),
            memory_order_relaxed);
    }

    task->status = status;

    /* After the push the host may free the task at any moment. */
    atomic_store_explicit(&task->state, NBFFI__ANSWERED,
                          memory_order_release);
    nbffi__done_push(task->done, task);
}


int
nbffi_task_status(nbffi_task_t *task)
{
    return task->status;
}


const void *
nbffi_task_reply(nbffi_task_t *task, size_t *len)
{
    if (len != NULL) {
        *len = task->reply_len;
    }
    return task->reply;
}


int
nbffi_task_leaked(nbffi_task_t *task)
{
    return task->leaked;
}


/* Host thread.  Frees the reply and the memory; nothing else. */
void
nbffi__task_destroy(nbffi_task_t *task)
{
    if (task->reply_free != NULL) {
        task->reply_free(task->reply, task->reply_ud);

    } else if (task->reply_malloced) {
        free(task->reply);
    }

    nbffi__ext_free(task);
    free(task);
}
