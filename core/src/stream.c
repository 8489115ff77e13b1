/*
 * What a call may carry beyond method and payload: its metadata, and the
 * chunks of a stream sent before its answer.
 *
 * A stream's chunks wait in a FIFO under the stream's lock, at most
 * `window' of them.  A send that finds the FIFO empty puts the task on the
 * host's ready list (once) and wakes the host; the host takes the ready
 * list (nbffi_host_reap_streams) and reads chunks until none is left.  A
 * read that leaves half the window free wakes the sends waiting for room
 * (the host reads until none is left, so it always gets there).  The host
 * giving the task up cancels the stream: chunks freed, sends refused.
 *
 * The task stays valid for a send: its memory goes only after its answer
 * is reaped, and a runtime sends only before it answers.  The host's ready
 * list links tasks through their nbffi__ext_t, and a task leaves it before
 * it is freed.
 */

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "nbffi_int.h"

/* A waiting send looks at the runtime's close this often. */
#define NBFFI__SEND_SLICE_NS  50000000


static int nbffi__stream_wait(nbffi_task_t *task, nbffi__ext_t *x,
    int64_t until);
static void nbffi__streams_link(nbffi__streams_t *st, nbffi_task_t *task);
static void nbffi__streams_unlink_locked(nbffi__streams_t *st,
    nbffi_task_t *task);
static void nbffi__chunks_free(nbffi__chunk_t *c);


/* Any thread.  0 when meta (len bytes) is a valid encoding, see nbffi.h. */
int
nbffi__meta_check(const void *meta, size_t len)
{
    size_t       n;
    const char  *p, *end, *nul;

    if (len == 0) {
        return 0;
    }

    if (meta == NULL) {
        return NBFFI_EINVAL;
    }

    if (len > NBFFI_MAX_META) {
        return NBFFI_E2BIG;
    }

    p = meta;
    end = p + len;

    while (p < end) {
        /* the key: 1..255 bytes */
        nul = memchr(p, '\0', (size_t) (end - p));
        n = (nul != NULL) ? (size_t) (nul - p) : 0;
        if (nul == NULL || n == 0 || n > 255) {
            return NBFFI_EINVAL;
        }
        p = nul + 1;

        /* the value: 0 or more bytes */
        nul = memchr(p, '\0', (size_t) (end - p));
        if (nul == NULL) {
            return NBFFI_EINVAL;
        }
        p = nul + 1;
    }

    return 0;
}


/*
 * Host thread, on a task not yet posted.  Gives it its metadata (copied)
 * and, with window > 0, a stream.  0 or NBFFI_ENOMEM.
 */
int
nbffi__ext_new(nbffi_task_t *task, const void *meta, size_t meta_len,
    unsigned window)
{
    nbffi__ext_t  *x;

    x = calloc(1, sizeof(nbffi__ext_t) + meta_len);
    if (x == NULL) {
        return NBFFI_ENOMEM;
    }

    if (meta_len != 0) {
        memcpy(x->meta_buf, meta, meta_len);
        x->meta = x->meta_buf;
        x->meta_len = meta_len;
    }

    x->window = window;

    if (window != 0) {
        if (pthread_mutex_init(&x->lock, NULL) != 0) {
            free(x);
            return NBFFI_ENOMEM;
        }

        if (nbffi__cond_init_monotonic(&x->cond) != 0) {
            (void) pthread_mutex_destroy(&x->lock);
            free(x);
            return NBFFI_ENOMEM;
        }
    }

    task->ext = x;
    return 0;
}


/*
 * Host thread, when the host gives the task up (released before its
 * answer, or freed after it).  Cancels the stream: frees its chunks, wakes
 * its sends, takes it off the ready list.  May be called more than once.
 */
void
nbffi__ext_cancel(nbffi_task_t *task)
{
    int              kick;
    nbffi__ext_t    *x = task->ext;
    nbffi__chunk_t  *list;

    if (x->window == 0) {
        return;
    }

    pthread_mutex_lock(&x->lock);
    x->cancelled = 1;
    list = x->head;
    x->head = NULL;
    x->tail = NULL;
    x->count = 0;
    if (x->waiters > 0) {
        pthread_cond_broadcast(&x->cond);
    }
    kick = x->want_fd;
    x->want_fd = 0;
    pthread_mutex_unlock(&x->lock);

    nbffi__chunks_free(list);

    if (kick) {
        nbffi__queue_kick_fd(&task->rt->q);
    }

    pthread_mutex_lock(&task->host->streams.lock);
    nbffi__streams_unlink_locked(&task->host->streams, task);
    pthread_mutex_unlock(&task->host->streams.lock);
}


/* Host thread.  Frees what nbffi__ext_new made; after nbffi__ext_cancel. */
void
nbffi__ext_free(nbffi_task_t *task)
{
    nbffi__ext_t  *x = task->ext;

    if (x == NULL) {
        return;
    }

    if (x->window != 0) {
        nbffi__chunks_free(x->head);
        nbffi__chunks_free(x->taken);
        (void) pthread_cond_destroy(&x->cond);
        (void) pthread_mutex_destroy(&x->lock);
    }

    free(x);
    task->ext = NULL;
}


/* ---- metadata --------------------------------------------------------- */

const void *
nbffi_task_meta_raw(nbffi_task_t *task, size_t *len)
{
    if (task == NULL || task->ext == NULL || task->ext->meta == NULL) {
        if (len != NULL) {
            *len = 0;
        }
        return NULL;
    }

    if (len != NULL) {
        *len = task->ext->meta_len;
    }
    return task->ext->meta;
}


int
nbffi_task_meta_at(nbffi_task_t *task, unsigned i, const char **key,
    size_t *klen, const char **val, size_t *vlen)
{
    size_t       kl, vl, len;
    const char  *p, *end;

    p = nbffi_task_meta_raw(task, &len);
    if (p == NULL) {
        return 0;
    }

    end = p + len;

    /* checked when posted: every key and value ends with a NUL */
    while (p < end) {
        kl = strlen(p);
        vl = strlen(p + kl + 1);

        if (i-- == 0) {
            if (key != NULL) {
                *key = p;
            }
            if (klen != NULL) {
                *klen = kl;
            }
            if (val != NULL) {
                *val = p + kl + 1;
            }
            if (vlen != NULL) {
                *vlen = vl;
            }
            return 1;
        }

        p += kl + 1 + vl + 1;
    }

    return 0;
}


const char *
nbffi_task_meta(nbffi_task_t *task, const char *key, size_t klen,
    size_t *vlen)
{
    size_t       kl, vl, len;
    const char  *p, *end;

    p = nbffi_task_meta_raw(task, &len);
    if (p == NULL || key == NULL) {
        return NULL;
    }

    end = p + len;

    while (p < end) {
        kl = strlen(p);
        vl = strlen(p + kl + 1);

        if (kl == klen && memcmp(p, key, klen) == 0) {
            if (vlen != NULL) {
                *vlen = vl;
            }
            return p + kl + 1;
        }

        p += kl + 1 + vl + 1;
    }

    return NULL;
}


void
nbffi_task_log(nbffi_task_t *task, int level, const char *msg, size_t len)
{
    const char  *meta;
    size_t       meta_len;

    if (task == NULL) {
        return;
    }

    meta = nbffi_task_meta_raw(task, &meta_len);
    nbffi__log_write_meta(task->rt->q.log, level, msg, len, meta, meta_len);
}


void
nbffi_task_logf(nbffi_task_t *task, int level, const char *fmt, ...)
{
    int      n;
    char     buf[NBFFI__LOG_MAX_LEN];
    va_list  ap;

    if (task == NULL) {
        return;
    }

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    if (n < 0) {
        return;
    }

    nbffi_task_log(task, level, buf,
                   (size_t) n < sizeof(buf) ? (size_t) n : sizeof(buf) - 1);
}


/* ---- streams: the runtime's side -------------------------------------- */

unsigned
nbffi_task_stream_window(nbffi_task_t *task)
{
    if (task == NULL || task->ext == NULL) {
        return 0;
    }
    return task->ext->window;
}


int
nbffi_task_send(nbffi_task_t *task, const void *data, size_t len,
    int64_t timeout_ns)
{
    int              rc, notify;
    int64_t          until;
    nbffi__ext_t    *x;
    nbffi__chunk_t  *c;

    if (task == NULL || (data == NULL && len != 0)) {
        return NBFFI_EINVAL;
    }

    x = task->ext;
    if (x == NULL || x->window == 0) {
        return NBFFI_EPERM;
    }

    if (len > task->rt->max_payload) {
        return NBFFI_E2BIG;
    }

    /* Copy before the lock: the host reads under it. */
    c = malloc(sizeof(nbffi__chunk_t) + len);
    if (c == NULL) {
        return NBFFI_ENOMEM;
    }
    c->next = NULL;
    c->len = len;
    if (len != 0) {
        nbffi__copy(c->data, data, len);
    }

    if (timeout_ns < 0) {
        until = task->deadline;     /* 0: none */

    } else if (timeout_ns == 0) {
        until = -1;                 /* do not wait */

    } else {
        until = nbffi_now_ns() + timeout_ns;
        if (task->deadline != 0 && task->deadline < until) {
            until = task->deadline;
        }
    }

    pthread_mutex_lock(&x->lock);

    rc = 0;
    while (!x->cancelled && x->count >= x->window) {
        rc = nbffi__stream_wait(task, x, until);
        if (rc != 0) {
            break;
        }
    }

    if (x->cancelled) {
        rc = NBFFI_ECANCELED;
    }

    if (rc != 0) {
        pthread_mutex_unlock(&x->lock);
        free(c);
        return rc;
    }

    if (x->tail == NULL) {
        x->head = c;
    } else {
        x->tail->next = c;
    }
    x->tail = c;
    notify = (x->count++ == 0);

    /* Under the stream's lock, so that the host cannot cancel (and then
     * free) the task between the append and the link. */
    if (notify) {
        nbffi__streams_link(&task->host->streams, task);
    }

    pthread_mutex_unlock(&x->lock);

    return 0;
}


/*
 * Called with x->lock held, the window full.  Waits for room once:
 * 0 to look again, or the send's error.  until: -1 do not wait, 0 no
 * limit, else the deadline.
 */
static int
nbffi__stream_wait(nbffi_task_t *task, nbffi__ext_t *x, int64_t until)
{
    int64_t          now, end;
    struct timespec  ts;

    if (until < 0) {
        x->want_fd = 1;
        return NBFFI_EQFULL;
    }

    if (atomic_load_explicit(&task->rt->q.closed, memory_order_acquire)) {
        return NBFFI_ECLOSED;
    }

    now = nbffi_now_ns();
    if (until != 0 && now >= until) {
        return (until == task->deadline) ? NBFFI_ETIMEDOUT : NBFFI_EQFULL;
    }

    /* in slices, to see the runtime's close, which signals nobody here */
    end = now + NBFFI__SEND_SLICE_NS;
    if (until != 0 && until < end) {
        end = until;
    }
    ts.tv_sec = end / 1000000000;
    ts.tv_nsec = end % 1000000000;

    x->waiters++;
    (void) pthread_cond_timedwait(&x->cond, &x->lock, &ts);
    x->waiters--;

    return 0;
}


/* ---- streams: the host's side ----------------------------------------- */

int
nbffi__streams_init(nbffi__streams_t *st, nbffi__done_t *wake)
{
    memset(st, 0, sizeof(nbffi__streams_t));
    st->wake = wake;

    return pthread_mutex_init(&st->lock, NULL) == 0 ? 0 : NBFFI_ENOMEM;
}


/* Host thread, when the host is freed: every task of it is released. */
void
nbffi__streams_gone(nbffi__streams_t *st)
{
    pthread_mutex_lock(&st->lock);
    st->gone = 1;
    st->head = NULL;
    st->tail = NULL;
    pthread_mutex_unlock(&st->lock);
}


/* Host thread. */
int
nbffi__streams_pending(nbffi__streams_t *st)
{
    int  pending;

    pthread_mutex_lock(&st->lock);
    pending = (st->head != NULL);
    pthread_mutex_unlock(&st->lock);

    return pending;
}


/* Runtime threads, with the task's stream lock held. */
static void
nbffi__streams_link(nbffi__streams_t *st, nbffi_task_t *task)
{
    nbffi__ext_t  *x = task->ext;

    pthread_mutex_lock(&st->lock);

    if (!st->gone && !x->linked) {
        x->linked = 1;
        x->rnext = NULL;
        x->rprev = st->tail;
        if (st->tail == NULL) {
            st->head = task;
        } else {
            st->tail->ext->rnext = task;
        }
        st->tail = task;

        /* under the lock: a host being freed sets gone under it */
        nbffi__done_wake(st->wake);
    }

    pthread_mutex_unlock(&st->lock);
}


static void
nbffi__streams_unlink_locked(nbffi__streams_t *st, nbffi_task_t *task)
{
    nbffi__ext_t  *x = task->ext;

    if (!x->linked) {
        return;
    }

    if (x->rprev == NULL) {
        st->head = x->rnext;
    } else {
        x->rprev->ext->rnext = x->rnext;
    }

    if (x->rnext == NULL) {
        st->tail = x->rprev;
    } else {
        x->rnext->ext->rprev = x->rprev;
    }

    x->rprev = NULL;
    x->rnext = NULL;
    x->linked = 0;
}


int
nbffi_host_reap_streams(nbffi_host_t *host, nbffi_task_t **out, int max)
{
    int                n;
    nbffi_task_t      *task;
    nbffi__streams_t  *st;

    if (host == NULL || out == NULL || max <= 0) {
        return NBFFI_EINVAL;
    }

    st = &host->streams;

    /* Before looking: a send after this writes the notifier again. */
    atomic_store(&host->done.wake_pending, 0);

    n = 0;

    pthread_mutex_lock(&st->lock);

    while (n < max && st->head != NULL) {
        task = st->head;
        nbffi__streams_unlink_locked(st, task);
        if (!task->released) {
            out[n++] = task;
        }
    }

    pthread_mutex_unlock(&st->lock);

    return n;
}


int
nbffi_task_next_chunk(nbffi_task_t *task, const void **data, size_t *len)
{
    int              kick;
    nbffi__ext_t    *x;
    nbffi__chunk_t  *c, *old;

    if (task == NULL || data == NULL || len == NULL) {
        return NBFFI_EINVAL;
    }

    x = task->ext;
    if (x == NULL || x->window == 0) {
        return NBFFI_EINVAL;
    }

    old = x->taken;
    x->taken = NULL;

    pthread_mutex_lock(&x->lock);

    c = x->head;
    kick = 0;
    if (c != NULL) {
        x->head = c->next;
        if (x->head == NULL) {
            x->tail = NULL;
        }
        /* A send may wait for room: wake it once half the window is
         * free, not at each read, so that it sends a batch per wake-up
         * instead of one chunk (a wake costs ~20 us). */
        if (--x->count == x->window / 2) {
            if (x->waiters > 0) {
                pthread_cond_broadcast(&x->cond);
            }
            kick = x->want_fd;
            x->want_fd = 0;
        }
    }

    pthread_mutex_unlock(&x->lock);

    free(old);

    if (kick) {
        nbffi__queue_kick_fd(&task->rt->q);
    }

    if (c == NULL) {
        return 0;
    }

    c->next = NULL;
    x->taken = c;
    *data = c->data;
    *len = c->len;
    return 1;
}


unsigned
nbffi_task_chunks(nbffi_task_t *task, unsigned *window)
{
    unsigned       n;
    nbffi__ext_t  *x;

    x = (task != NULL) ? task->ext : NULL;
    if (x == NULL || x->window == 0) {
        if (window != NULL) {
            *window = 0;
        }
        return 0;
    }

    if (window != NULL) {
        *window = x->window;
    }

    pthread_mutex_lock(&x->lock);
    n = x->count;
    pthread_mutex_unlock(&x->lock);

    return n;
}


static void
nbffi__chunks_free(nbffi__chunk_t *c)
{
    nbffi__chunk_t  *next;

    for ( /* void */ ; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
}
