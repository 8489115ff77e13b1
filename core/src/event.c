/*
 * Events: messages a runtime emits with no task, to the host that loaded
 * it.  One bounded FIFO per host under a mutex; an emit that does not fit
 * is dropped and counted.  The host takes the whole FIFO in one lock (a
 * batch) and hands events out one by one; what it used of the previous
 * batch is given back to the bound at the next take, so the bound counts
 * every event not yet handed out.
 */

#include <string.h>

#include "nbffi_int.h"

#define NBFFI__EVENTS_MAX         65536
#define NBFFI__EVENTS_MAX_BYTES   (16ull << 20)


static void nbffi__event_free(nbffi_event_t *e);


int
nbffi__events_init(nbffi__events_t *ev, nbffi__done_t *wake)
{
    memset(ev, 0, sizeof(nbffi__events_t));
    ev->wake = wake;
    ev->max_events = NBFFI__EVENTS_MAX;
    ev->max_bytes = NBFFI__EVENTS_MAX_BYTES;
    atomic_init(&ev->emitted, 0);
    atomic_init(&ev->dropped, 0);
    atomic_init(&ev->delivered, 0);

    return pthread_mutex_init(&ev->lock, NULL) == 0 ? 0 : NBFFI_ENOMEM;
}


/*
 * Host thread, when the host is freed.  Frees every event; emits from now
 * on (threads of an orphaned runtime) are refused.
 */
void
nbffi__events_gone(nbffi__events_t *ev)
{
    nbffi_event_t  *list, *e;

    pthread_mutex_lock(&ev->lock);
    ev->gone = 1;
    list = ev->head;
    ev->head = NULL;
    ev->tail = NULL;
    ev->count = 0;
    ev->bytes = 0;
    pthread_mutex_unlock(&ev->lock);

    while (list != NULL) {
        e = list;
        list = e->next;
        nbffi__event_free(e);
    }

    while (ev->batch != NULL) {
        e = ev->batch;
        ev->batch = e->next;
        nbffi__event_free(e);
    }

    if (ev->last != NULL) {
        nbffi__event_free(ev->last);
        ev->last = NULL;
    }
}


/* Host thread. */
int
nbffi__events_pending(nbffi__events_t *ev)
{
    int  pending;

    if (ev->batch != NULL) {
        return 1;
    }

    pthread_mutex_lock(&ev->lock);
    pending = (ev->head != NULL);
    pthread_mutex_unlock(&ev->lock);

    return pending;
}


int
nbffi_emit(nbffi_queue_t *q, const char *name, size_t nlen,
    const void *data, size_t len)
{
    int               rc;
    uint64_t          size;
    nbffi_event_t    *e;
    nbffi_runtime_t  *rt;
    nbffi__events_t  *ev;

    if (q == NULL || name == NULL || nlen == 0
        || nlen > NBFFI_MAX_EVENT_NAME || memchr(name, '\0', nlen) != NULL
        || (data == NULL && len != 0))
    {
        return NBFFI_EINVAL;
    }

    rt = q->rt;
    ev = &rt->host->events;
    size = nlen + len;

    e = malloc(sizeof(nbffi_event_t) + nlen + 1 + len);
    if (e == NULL) {
        atomic_fetch_add_explicit(&ev->dropped, 1, memory_order_relaxed);
        return NBFFI_ENOMEM;
    }

    e->next = NULL;
    e->rt = rt;
    e->name_len = nlen;
    e->len = len;
    memcpy(e->buf, name, nlen);
    e->buf[nlen] = '\0';
    if (len != 0) {
        nbffi__copy(e->buf + nlen + 1, data, len);
    }

    pthread_mutex_lock(&ev->lock);

    if (ev->gone) {
        pthread_mutex_unlock(&ev->lock);
        free(e);
        return NBFFI_ECLOSED;
    }

    if (size > ev->max_bytes || ev->count >= ev->max_events
        || ev->bytes + size > ev->max_bytes)
    {
        rc = (size > ev->max_bytes) ? NBFFI_E2BIG : NBFFI_EQFULL;
        pthread_mutex_unlock(&ev->lock);
        free(e);
        atomic_fetch_add_explicit(&ev->dropped, 1, memory_order_relaxed);
        return rc;
    }

    nbffi__runtime_ref(rt);

    if (ev->tail == NULL) {
        ev->head = e;
    } else {
        ev->tail->next = e;
    }
    ev->tail = e;
    ev->count++;
    ev->bytes += size;

    /* under the lock: a host being freed sets gone under it */
    nbffi__done_wake(ev->wake);

    pthread_mutex_unlock(&ev->lock);

    atomic_fetch_add_explicit(&ev->emitted, 1, memory_order_relaxed);
    return 0;
}


int
nbffi_host_event_next(nbffi_host_t *host, nbffi_event_t **out)
{
    nbffi_event_t    *e;
    nbffi__events_t  *ev;

    if (host == NULL || out == NULL) {
        return NBFFI_EINVAL;
    }

    ev = &host->events;

    if (ev->last != NULL) {
        nbffi__event_free(ev->last);
        ev->last = NULL;
    }

    if (ev->batch == NULL) {
        /* Before looking: an emit after this writes the notifier again. */
        atomic_store(&host->done.wake_pending, 0);

        pthread_mutex_lock(&ev->lock);
        ev->count -= ev->used_count;
        ev->bytes -= ev->used_bytes;
        ev->batch = ev->head;
        ev->head = NULL;
        ev->tail = NULL;
        pthread_mutex_unlock(&ev->lock);

        ev->used_count = 0;
        ev->used_bytes = 0;

        if (ev->batch == NULL) {
            return 0;
        }
    }

    e = ev->batch;
    ev->batch = e->next;
    e->next = NULL;
    ev->last = e;
    ev->used_count++;
    ev->used_bytes += e->name_len + e->len;
    atomic_fetch_add_explicit(&ev->delivered, 1, memory_order_relaxed);

    *out = e;
    return 1;
}


const char *
nbffi_event_name(nbffi_event_t *e, size_t *len)
{
    if (len != NULL) {
        *len = e->name_len;
    }
    return e->buf;
}


const void *
nbffi_event_data(nbffi_event_t *e, size_t *len)
{
    if (len != NULL) {
        *len = e->len;
    }
    return e->buf + e->name_len + 1;
}


nbffi_runtime_t *
nbffi_event_runtime(nbffi_event_t *e)
{
    return e->rt;
}


void
nbffi_host_set_event_limit(nbffi_host_t *host, uint64_t max_events,
    uint64_t max_bytes)
{
    pthread_mutex_lock(&host->events.lock);
    if (max_events != 0) {
        host->events.max_events = max_events;
    }
    if (max_bytes != 0) {
        host->events.max_bytes = max_bytes;
    }
    pthread_mutex_unlock(&host->events.lock);
}


void
nbffi_host_event_stats(nbffi_host_t *host, nbffi_event_stats_t *out)
{
    nbffi__events_t  *ev = &host->events;

    pthread_mutex_lock(&ev->lock);
    out->queued = ev->count;
    out->queued_bytes = ev->bytes;
    out->max_events = ev->max_events;
    out->max_bytes = ev->max_bytes;
    pthread_mutex_unlock(&ev->lock);

    out->emitted = atomic_load_explicit(&ev->emitted, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&ev->dropped, memory_order_relaxed);
    out->delivered = atomic_load_explicit(&ev->delivered,
                                          memory_order_relaxed);
}


/* Host thread. */
static void
nbffi__event_free(nbffi_event_t *e)
{
    nbffi__runtime_unref(e->rt);
    free(e);
}
