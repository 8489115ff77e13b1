/*
 * Tasks: one allocation holding the header, the method and either the
 * payload copy or (for borrowed payloads) a small inline area that short
 * replies reuse.  The host and the runtime each hold a reference; the
 * memory goes when the host has released it and its completion is reaped,
 * both of which happen on the host thread.
 */

#include <string.h>

#include "nbffi_int.h"


static void nbffi__task_finish(nbffi_task_t *task, int status);


static atomic_ullong  nbffi__next_id = 1;


int
nbffi_call(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    size_t mlen, const void *payload, size_t plen, int64_t deadline_ns,
    unsigned flags, nbffi_task_t **out)
{
    int            rc;
    size_t         cap;
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

    if (atomic_load_explicit(&rt->q.closed, memory_order_relaxed)) {
        return NBFFI_ECLOSED;
    }

    cap = (flags & NBFFI_CALL_BORROW) ? 0 : plen;
    if (cap < NBFFI__INLINE_MIN) {
        cap = NBFFI__INLINE_MIN;
    }

    task = malloc(sizeof(nbffi_task_t) + mlen + 1 + cap);
    if (task == NULL) {
        return NBFFI_ENOMEM;
    }

    memset(task, 0, sizeof(nbffi_task_t));
    task->host = host;
    task->rt = rt;
    task->id = atomic_fetch_add_explicit(&nbffi__next_id, 1,
                                         memory_order_relaxed);
    task->deadline = deadline_ns;
    task->method_len = mlen;
    task->inline_cap = cap;
    memcpy(task->data, method, mlen);
    task->data[mlen] = '\0';

    if (flags & NBFFI_CALL_BORROW) {
        task->payload = payload;

    } else {
        task->payload = task->data + mlen + 1;
        if (plen != 0) {
            memcpy(task->data + mlen + 1, payload, plen);
        }
    }

    task->payload_len = plen;
    atomic_init(&task->state, NBFFI__QUEUED);
    atomic_init(&task->cancelled, 0);

    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);

    rc = nbffi__queue_push(&rt->q, task);
    if (rc != 0) {
        if (rc == NBFFI_EQFULL) {
            atomic_fetch_add_explicit(&rt->refused, 1, memory_order_relaxed);
        }
        atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_relaxed);
        free(task);
        return rc;
    }

    atomic_fetch_add_explicit(&rt->posted, 1, memory_order_relaxed);
    host->allocated++;
    *out = task;
    return 0;
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

    if (data == NULL) {
        len = 0;
    }

    inl = task->data + task->method_len + 1;

    if (len <= task->inline_cap) {
        /* The payload is no longer needed: a reply that fits reuses its
         * bytes (and an echo that replies with the payload copies none). */
        if (len != 0 && data != inl) {
            memmove(inl, data, len);
        }
        task->reply = inl;

    } else {
        copy = malloc(len);
        if (copy == NULL) {
            task->reply = inl;
            task->reply_len = 0;
            nbffi__task_finish(task, NBFFI_ENOMEM);
            return NBFFI_ENOMEM;
        }
        memcpy(copy, data, len);
        task->reply = copy;
        task->reply_malloced = 1;
    }

    task->reply_len = len;
    nbffi__task_finish(task, status < 0 ? NBFFI_ERUNTIME : status);
    return 0;
}


int
nbffi_task_respond_owned(nbffi_task_t *task, int status, void *data,
    size_t len, nbffi_free_cb free_cb, void *ud)
{
    if (data == NULL) {
        task->reply = task->data + task->method_len + 1;
        task->reply_len = 0;

    } else {
        task->reply = data;
        task->reply_len = len;
        task->reply_free = free_cb;
        task->reply_ud = ud;
    }

    nbffi__task_finish(task, status < 0 ? NBFFI_ERUNTIME : status);
    return 0;
}


void
nbffi__task_answer(nbffi_task_t *task, int status)
{
    task->reply = task->data + task->method_len + 1;
    task->reply_len = 0;
    nbffi__task_finish(task, status);
}


static void
nbffi__task_finish(nbffi_task_t *task, int status)
{
    nbffi_host_t  *host;

    /* Popped tasks are linked in the in-flight list; the unlink checks
     * under its lock, since unlinking a neighbour writes this prev. */
    nbffi__inflight_unlink(&task->rt->q, task);

    task->status = status;
    host = task->host;

    /* After the push the host may free the task at any moment. */
    atomic_store_explicit(&task->state, NBFFI__ANSWERED,
                          memory_order_release);
    nbffi__host_push_done(host, task);
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


void
nbffi_task_release(nbffi_task_t *task)
{
    nbffi_runtime_t  *rt;

    if (task->reaped) {
        nbffi__task_free(task);
        return;
    }

    /* Still pending: the runtime may be working on it.  Mark it and let
     * nbffi_host_reap() free it when the completion arrives. */
    task->released = 1;
    atomic_store_explicit(&task->cancelled, 1, memory_order_relaxed);

    rt = task->rt;
    if (task->deadline != 0 && nbffi_now_ns() >= task->deadline) {
        atomic_fetch_add_explicit(&rt->timed_out, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&rt->abandoned, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&rt->finished, 1, memory_order_relaxed);
}


void
nbffi__task_free(nbffi_task_t *task)
{
    if (task->reply_free != NULL) {
        task->reply_free(task->reply, task->reply_ud);

    } else if (task->reply_malloced) {
        free(task->reply);
    }

    task->host->freed++;
    nbffi__runtime_unref(task->rt);
    free(task);
}
