/*
 * Streams, events and metadata: nbffi_call_ex, nbffi_task_send and the
 * host's reading of chunks, nbffi_emit and the host's event queue, the
 * metadata getters and log lines that carry it.  The test plays the
 * runtime (t_ctl has no threads); the stress cases at the end use threads
 * of their own and run in the 'stress' suite.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define T_META      "request_id\0r-42\0traceparent\0" "00-ab-cd-01\0"
#define T_META_LEN  (sizeof(T_META) - 1)

static nbffi_task_t *
t_stream(struct t_fx *fx, const char *method, unsigned window,
    int64_t deadline)
{
    nbffi_task_t  *task;

    task = NULL;
    assert_int_equal(nbffi_call_ex(fx->host, fx->rt, method, strlen(method),
                                   "p", 1, T_META, T_META_LEN, deadline,
                                   NBFFI_CALL_STREAM, window, &task), 0);
    assert_non_null(task);
    return task;
}

/* Reads the next chunk and checks it is s. */
static void
t_chunk_is(nbffi_task_t *task, const char *s)
{
    size_t       len;
    const void  *data;

    assert_int_equal(nbffi_task_next_chunk(task, &data, &len), 1);
    assert_int_equal(len, strlen(s));
    assert_memory_equal(data, s, len);
}

/* Waits until the host's ready list returns task. */
static void
t_wait_ready(nbffi_host_t *host, nbffi_task_t *task)
{
    int            i, n;
    int64_t        deadline;
    nbffi_task_t  *out[16];

    deadline = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;

    for ( ;; ) {
        nbffi_host_drain(host);
        n = nbffi_host_reap_streams(host, out, 16);
        assert_true(n >= 0);
        for (i = 0; i < n; i++) {
            if (out[i] == task) {
                return;
            }
        }
        assert_true(nbffi_host_wait(host, deadline));
    }
}


/* ---- metadata --------------------------------------------------------- */

static void
test_meta_checked(void **state)
{
    struct t_fx   *fx = *state;
    nbffi_task_t  *task;
    char           big[NBFFI_MAX_META + 2];

    task = NULL;

#define T_BAD(m, l, rc)                                                      \
    assert_int_equal(nbffi_call_ex(fx->host, fx->rt, "m", 1, NULL, 0, m, l,  \
                                   0, 0, 0, &task), rc)

    T_BAD("k", 1, NBFFI_EINVAL);            /* no NUL after the key */
    T_BAD("k\0v", 3, NBFFI_EINVAL);         /* no NUL after the value */
    T_BAD("\0v\0", 3, NBFFI_EINVAL);        /* empty key */
    T_BAD(NULL, 3, NBFFI_EINVAL);

    memset(big, 'k', sizeof(big));
    big[NBFFI_MAX_META - 1] = '\0';
    big[NBFFI_MAX_META] = '\0';
    T_BAD(big, NBFFI_MAX_META + 1, NBFFI_E2BIG);

    /* a key of 256 bytes */
    big[256] = '\0';
    big[257] = '\0';
    T_BAD(big, 258, NBFFI_EINVAL);
#undef T_BAD

    assert_int_equal(nbffi_call_ex(fx->host, fx->rt, "m", 1, NULL, 0, NULL,
                                   0, 0, NBFFI_CALL_STREAM, 65537, &task),
                     NBFFI_EINVAL);

    assert_int_equal(t_stats(fx->rt).posted, 0);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host), fx->allocated);
}

static void
test_meta_read(void **state)
{
    struct t_fx   *fx = *state;
    size_t         kl, vl, len;
    const char    *k, *v;
    nbffi_task_t  *task, *got;

    task = NULL;
    assert_int_equal(nbffi_call_ex(fx->host, fx->rt, "m", 1, "p", 1, T_META,
                                   T_META_LEN, 0, 0, 0, &task), 0);
    got = t_pop1(fx->q);

    v = nbffi_task_meta(got, "request_id", 10, &vl);
    assert_non_null(v);
    assert_int_equal(vl, 4);
    assert_string_equal(v, "r-42");

    v = nbffi_task_meta(got, "traceparent", 11, NULL);
    assert_string_equal(v, "00-ab-cd-01");

    assert_null(nbffi_task_meta(got, "request", 7, &vl));
    assert_null(nbffi_task_meta(got, "tenant", 6, &vl));

    assert_int_equal(nbffi_task_meta_at(got, 1, &k, &kl, &v, &vl), 1);
    assert_string_equal(k, "traceparent");
    assert_int_equal(kl, 11);
    assert_string_equal(v, "00-ab-cd-01");
    assert_int_equal(nbffi_task_meta_at(got, 2, &k, &kl, &v, &vl), 0);

    assert_non_null(nbffi_task_meta_raw(got, &len));
    assert_int_equal(len, T_META_LEN);

    /* a plain call: no stream, no metadata */
    assert_int_equal(nbffi_task_stream_window(got), 0);
    assert_int_equal(nbffi_task_send(got, "x", 1, 0), NBFFI_EPERM);

    assert_int_equal(nbffi_task_respond(got, 0, "ok", 2), 0);
    t_wait_task(fx->host, task);
    t_reply_is(task, 0, "ok");
    nbffi_task_release(task);

    task = t_call(fx->host, fx->rt, "m", "p");
    got = t_pop1(fx->q);
    assert_null(nbffi_task_meta_raw(got, &len));
    assert_int_equal(len, 0);
    assert_null(nbffi_task_meta(got, "request_id", 10, NULL));
    assert_int_equal(nbffi_task_meta_at(got, 0, NULL, NULL, NULL, NULL), 0);
    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_wait_task(fx->host, task);
    nbffi_task_release(task);
}

static void
test_meta_log_queued(void **state)
{
    int               level;
    char              buf[256];
    size_t            len;
    const void       *meta;
    nbffi_host_t     *host;
    nbffi_queue_t    *q;
    nbffi_runtime_t  *rt;
    nbffi_task_t     *task, *got;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_LOG_QUEUE), 0);
    rt = t_load_ctl(host, 0, 0, &q);

    task = NULL;
    assert_int_equal(nbffi_call_ex(host, rt, "m", 1, NULL, 0, T_META,
                                   T_META_LEN, 0, 0, 0, &task), 0);
    got = t_pop1(q);

    nbffi_task_logf(got, NBFFI_LOG_WARN, "working on %d", 7);
    nbffi_log(q, NBFFI_LOG_INFO, "plain", 5);

    assert_int_equal(nbffi_host_log_next(host, &level, buf, sizeof(buf),
                                         NULL), 12);
    assert_string_equal(buf, "working on 7");
    assert_int_equal(level, NBFFI_LOG_WARN);
    meta = nbffi_host_log_meta(host, &len);
    assert_non_null(meta);
    assert_int_equal(len, T_META_LEN);
    assert_memory_equal(meta, T_META, len);

    assert_int_equal(nbffi_host_log_next(host, &level, buf, sizeof(buf),
                                         NULL), 5);
    assert_null(nbffi_host_log_meta(host, &len));
    assert_int_equal(len, 0);

    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_wait_task(host, task);
    nbffi_task_release(task);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}

struct t_logcap {
    char    line[512];
    size_t  len;
};

static void
t_logcap_cb(void *ud, int level, const char *msg, size_t len)
{
    struct t_logcap  *c = ud;

    (void) level;
    if (len < sizeof(c->line)) {
        memcpy(c->line, msg, len);
        c->line[len] = '\0';
        c->len = len;
    }
}

static void
test_meta_log_text(void **state)
{
    struct t_fx     *fx = *state;
    struct t_logcap  cap;
    nbffi_task_t    *task, *got;

    memset(&cap, 0, sizeof(cap));
    nbffi_host_set_log(fx->host, t_logcap_cb, &cap);

    task = NULL;
    assert_int_equal(nbffi_call_ex(fx->host, fx->rt, "m", 1, NULL, 0, T_META,
                                   T_META_LEN, 0, 0, 0, &task), 0);
    got = t_pop1(fx->q);
    nbffi_task_log(got, NBFFI_LOG_ERR, "boom", 4);
    assert_string_equal(cap.line,
                        "boom (request_id: r-42, traceparent: 00-ab-cd-01)");

    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_wait_task(fx->host, task);
    nbffi_task_release(task);
    nbffi_host_set_log(fx->host, NULL, NULL);
}


/* ---- streams ---------------------------------------------------------- */

static void
test_stream_chunks_then_status(void **state)
{
    struct t_fx   *fx = *state;
    size_t         len;
    unsigned       window;
    const void    *data;
    nbffi_task_t  *task, *got;

    task = t_stream(fx, "chunks", 4, 0);
    got = t_pop1(fx->q);
    assert_int_equal(nbffi_task_stream_window(got), 4);
    assert_string_equal(nbffi_task_meta(got, "request_id", 10, NULL),
                        "r-42");

    assert_int_equal(nbffi_task_next_chunk(task, &data, &len), 0);

    assert_int_equal(nbffi_task_send(got, "one", 3, 0), 0);
    t_wait_ready(fx->host, task);
    assert_int_equal(nbffi_task_send(got, "two", 3, 0), 0);
    assert_int_equal(nbffi_task_send(got, "", 0, 0), 0);
    assert_int_equal(nbffi_task_chunks(task, &window), 3);
    assert_int_equal(window, 4);

    assert_int_equal(nbffi_task_respond(got, 0, "end", 3), 0);
    t_wait_task(fx->host, task);

    /* chunks sent before the answer are still read after it */
    t_chunk_is(task, "one");
    t_chunk_is(task, "two");
    t_chunk_is(task, "");
    assert_int_equal(nbffi_task_next_chunk(task, &data, &len), 0);
    t_reply_is(task, 0, "end");
    nbffi_task_release(task);

    /* a plain task has no chunks to read */
    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_next_chunk(task, &data, &len), NBFFI_EINVAL);
    assert_int_equal(nbffi_task_chunks(task, &window), 0);
    assert_int_equal(window, 0);
    got = t_pop1(fx->q);
    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_wait_task(fx->host, task);
    nbffi_task_release(task);
}

static void
test_stream_window_full(void **state)
{
    struct t_fx   *fx = *state;
    int            efd;
    int64_t        t0;
    nbffi_task_t  *task, *got;

    task = t_stream(fx, "chunks", 2, 0);
    got = t_pop1(fx->q);
    efd = nbffi_queue_fd(fx->q);
    assert_true(efd >= 0);
    while (t_readable(efd, 0)) {
        uint64_t  v;
        assert_int_equal(read(efd, &v, sizeof(v)), sizeof(v));
    }

    assert_int_equal(nbffi_task_send(got, "a", 1, 0), 0);
    assert_int_equal(nbffi_task_send(got, "b", 1, 0), 0);

    /* full: no wait, or a short one, says so and queues nothing */
    assert_int_equal(nbffi_task_send(got, "c", 1, 0), NBFFI_EQFULL);
    t0 = nbffi_now_ns();
    assert_int_equal(nbffi_task_send(got, "c", 1, 1000000), NBFFI_EQFULL);
    assert_true(nbffi_now_ns() - t0 >= 1000000);
    assert_int_equal(nbffi_task_chunks(task, NULL), 2);

    /* reading opens the window and makes the queue fd readable for the
     * send that got NBFFI_EQFULL */
    assert_false(t_readable(efd, 0));
    t_chunk_is(task, "a");
    assert_true(t_readable(efd, T_WAIT_MS));
    assert_int_equal(nbffi_task_send(got, "c", 1, 0), 0);

    t_chunk_is(task, "b");
    t_chunk_is(task, "c");

    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_wait_task(fx->host, task);
    nbffi_task_release(task);
}

struct t_sender {
    nbffi_task_t    *task;
    int              n;
    int64_t          timeout;
    int              rc;        /* the first error, or 0 */
    int              sent;
    struct t_event   started;
};

static void *
t_sender_run(void *arg)
{
    int               i, rc;
    char              buf[32];
    struct t_sender  *s = arg;

    t_event_set(&s->started);

    for (i = 0; i < s->n; i++) {
        (void) snprintf(buf, sizeof(buf), "%d", i);
        rc = nbffi_task_send(s->task, buf, strlen(buf), s->timeout);
        if (rc != 0) {
            s->rc = rc;
            break;
        }
        s->sent++;
    }

    return NULL;
}

/* A send blocked on a full window goes on when the host reads. */
static void
test_stream_send_waits(void **state)
{
    struct t_fx      *fx = *state;
    int               i;
    char              want[32];
    pthread_t         th;
    struct t_sender   s;
    nbffi_task_t     *task;

    task = t_stream(fx, "chunks", 1, 0);
    memset(&s, 0, sizeof(s));
    s.task = t_pop1(fx->q);
    s.n = 100;
    s.timeout = -1;
    t_event_init(&s.started);

    assert_int_equal(pthread_create(&th, NULL, t_sender_run, &s), 0);

    for (i = 0; i < 100; i++) {
        const void  *data;
        size_t       len;

        while (nbffi_task_next_chunk(task, &data, &len) == 0) {
            t_wait_ready(fx->host, task);
        }
        (void) snprintf(want, sizeof(want), "%d", i);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(data, want, len);
        /* never more than the window in flight */
        assert_true(nbffi_task_chunks(task, NULL) <= 1);
    }

    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.sent, 100);
    t_event_destroy(&s.started);

    assert_int_equal(nbffi_task_respond(s.task, 0, NULL, 0), 0);
    t_wait_task(fx->host, task);
    nbffi_task_release(task);
}

/* The host giving up cancels: a waiting send returns NBFFI_ECANCELED. */
static void
test_stream_cancel_wakes_send(void **state)
{
    struct t_fx      *fx = *state;
    pthread_t         th;
    struct t_sender   s;
    nbffi_task_t     *task;
    struct timespec   ms = { 0, 1000000 };

    task = t_stream(fx, "chunks", 2, 0);
    memset(&s, 0, sizeof(s));
    s.task = t_pop1(fx->q);
    s.n = 1000;
    s.timeout = -1;
    t_event_init(&s.started);

    assert_int_equal(pthread_create(&th, NULL, t_sender_run, &s), 0);
    t_event_wait(&s.started);

    /* the window fills: wait for it (an event would need a hook in the
     * core; the count is what the test can see) */
    while (nbffi_task_chunks(task, NULL) < 2) {
        (void) nanosleep(&ms, NULL);
    }

    nbffi_task_release(task);       /* the caller stops reading */

    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.rc, NBFFI_ECANCELED);
    assert_true(s.sent >= 2 && s.sent < 1000);
    assert_int_equal(nbffi_task_cancelled(s.task), 1);

    /* later sends are refused at once; the answer is still due */
    assert_int_equal(nbffi_task_send(s.task, "x", 1, -1), NBFFI_ECANCELED);
    assert_int_equal(nbffi_task_respond(s.task, 0, NULL, 0), 0);
    t_event_destroy(&s.started);
    assert_int_equal(t_stats(fx->rt).abandoned, 1);
}

static void
test_stream_deadline(void **state)
{
    struct t_fx   *fx = *state;
    nbffi_task_t  *task, *got;

    task = t_stream(fx, "chunks", 1, nbffi_now_ns() + 30000000);
    got = t_pop1(fx->q);

    assert_int_equal(nbffi_task_send(got, "a", 1, -1), 0);
    /* the window stays full until the task's deadline */
    assert_int_equal(nbffi_task_send(got, "b", 1, -1), NBFFI_ETIMEDOUT);
    assert_int_equal(nbffi_task_send(got, "b", 1, 5000000000), NBFFI_ETIMEDOUT);

    assert_int_equal(nbffi_task_respond(got, 1, "late", 4), 0);
    t_wait_task(fx->host, task);
    t_chunk_is(task, "a");
    t_reply_is(task, 1, "late");
    nbffi_task_release(task);
}

static void
test_stream_closed(void **state)
{
    struct t_fx      *fx = *state;
    nbffi_task_t     *task, *got, *life;

    task = t_stream(fx, "chunks", 1, 0);
    got = t_pop1(fx->q);
    assert_int_equal(nbffi_task_send(got, "a", 1, -1), 0);

    t_ctl_hold_fini();
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, &life), 0);
    assert_int_equal(nbffi_task_send(got, "b", 1, -1), NBFFI_ECLOSED);
    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
    t_ctl_release_fini();

    t_wait_task(fx->host, task);
    t_chunk_is(task, "a");
    nbffi_task_release(task);
    t_wait_task(fx->host, life);
    assert_int_equal(nbffi_task_status(life), 0);
    nbffi_task_release(life);
}

/* Released while on the ready list: never returned, freed cleanly. */
static void
test_stream_release_ready(void **state)
{
    struct t_fx   *fx = *state;
    int            n;
    nbffi_task_t  *task, *got, *out[4];

    task = t_stream(fx, "chunks", 4, 0);
    got = t_pop1(fx->q);
    assert_int_equal(nbffi_task_send(got, "a", 1, 0), 0);
    assert_int_equal(nbffi_task_send(got, "b", 1, 0), 0);
    nbffi_task_release(task);

    n = nbffi_host_reap_streams(fx->host, out, 4);
    assert_int_equal(n, 0);
    assert_int_equal(nbffi_task_send(got, "c", 1, 0), NBFFI_ECANCELED);
    assert_int_equal(nbffi_task_respond(got, 0, NULL, 0), 0);
}

/* A stream that expires in the queue completes like any call. */
static void
test_stream_expired_in_queue(void **state)
{
    struct t_fx   *fx = *state;
    nbffi_task_t  *task, *out[4];
    size_t         len;
    const void    *data;

    task = t_stream(fx, "chunks", 4, nbffi_now_ns() - 1);
    assert_int_equal(nbffi_queue_pop(fx->q, out, 4, 0), 0);
    t_wait_task(fx->host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ETIMEDOUT);
    assert_int_equal(nbffi_task_next_chunk(task, &data, &len), 0);
    nbffi_task_release(task);
}


/* ---- events ----------------------------------------------------------- */

static void
test_event_order_and_stats(void **state)
{
    struct t_fx          *fx = *state;
    int                   i;
    char                  buf[32];
    size_t                len;
    const char           *name;
    const void           *data;
    nbffi_event_t        *ev;
    nbffi_event_stats_t   st;

    for (i = 0; i < 100; i++) {
        (void) snprintf(buf, sizeof(buf), "%d", i);
        assert_int_equal(nbffi_emit(fx->q, i % 2 ? "odd" : "even",
                                    i % 2 ? 3 : 4, buf, strlen(buf)), 0);
    }

    nbffi_host_event_stats(fx->host, &st);
    assert_int_equal(st.emitted, 100);
    assert_int_equal(st.queued, 100);
    assert_int_equal(st.dropped, 0);
    assert_true(t_readable(nbffi_host_fd(fx->host), T_WAIT_MS));

    for (i = 0; i < 100; i++) {
        assert_int_equal(nbffi_host_event_next(fx->host, &ev), 1);
        name = nbffi_event_name(ev, &len);
        assert_string_equal(name, i % 2 ? "odd" : "even");
        data = nbffi_event_data(ev, &len);
        (void) snprintf(buf, sizeof(buf), "%d", i);
        assert_int_equal(len, strlen(buf));
        assert_memory_equal(data, buf, len);
        assert_ptr_equal(nbffi_event_runtime(ev), fx->rt);
    }
    assert_int_equal(nbffi_host_event_next(fx->host, &ev), 0);

    nbffi_host_event_stats(fx->host, &st);
    assert_int_equal(st.delivered, 100);
    assert_int_equal(st.queued, 0);
}

static void
test_event_bounds(void **state)
{
    struct t_fx          *fx = *state;
    int                   i;
    nbffi_event_t        *ev;
    nbffi_event_stats_t   st;
    char                  name[NBFFI_MAX_EVENT_NAME + 1];

    assert_int_equal(nbffi_emit(fx->q, "", 0, NULL, 0), NBFFI_EINVAL);
    assert_int_equal(nbffi_emit(fx->q, "a\0b", 3, NULL, 0), NBFFI_EINVAL);
    memset(name, 'n', sizeof(name));
    assert_int_equal(nbffi_emit(fx->q, name, sizeof(name), NULL, 0),
                     NBFFI_EINVAL);

    nbffi_host_set_event_limit(fx->host, 10, 100);

    assert_int_equal(nbffi_emit(fx->q, "big", 3, name, 98), NBFFI_E2BIG);

    for (i = 0; i < 10; i++) {
        assert_int_equal(nbffi_emit(fx->q, "e", 1, "x", 1), 0);
    }
    assert_int_equal(nbffi_emit(fx->q, "e", 1, "x", 1), NBFFI_EQFULL);

    nbffi_host_event_stats(fx->host, &st);
    assert_int_equal(st.emitted, 10);
    assert_int_equal(st.dropped, 2);
    assert_int_equal(st.queued, 10);
    assert_int_equal(st.queued_bytes, 20);
    assert_int_equal(st.max_events, 10);

    /* taking one makes room for one, no more */
    assert_int_equal(nbffi_host_event_next(fx->host, &ev), 1);
    assert_int_equal(nbffi_emit(fx->q, "e", 1, "x", 1), NBFFI_EQFULL);
    for (i = 0; i < 9; i++) {
        assert_int_equal(nbffi_host_event_next(fx->host, &ev), 1);
    }
    assert_int_equal(nbffi_host_event_next(fx->host, &ev), 0);
    assert_int_equal(nbffi_emit(fx->q, "e", 1, "x", 1), 0);

    nbffi_host_event_stats(fx->host, &st);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(st.queued, 1);
    /* left queued: freed with the host */
}

/* Events keep the runtime's memory until the host took them. */
static void
test_event_outlives_runtime(void **state)
{
    struct t_fx    *fx = *state;
    nbffi_event_t  *ev;
    nbffi_queue_t  *q = fx->q;
    void           *rt = fx->rt;

    assert_int_equal(nbffi_emit(q, "bye", 3, "x", 1), 0);
    assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    fx->rt = NULL;

    assert_int_equal(nbffi_host_event_next(fx->host, &ev), 1);
    assert_ptr_equal(nbffi_event_runtime(ev), rt);
    assert_string_equal(nbffi_event_name(ev, NULL), "bye");
    assert_int_equal(nbffi_host_event_next(fx->host, &ev), 0);
}


/* ---- stress ----------------------------------------------------------- */

#define T_S_STREAMS   64
#define T_S_THREADS   4

struct t_sworker {
    nbffi_queue_t   *q;
    int              emits;     /* events per task */
    atomic_long      emitted;
    atomic_long      cancelled;
};

/* A runtime thread: pops stream tasks, sends "chunks" of the payload's
 * count (each the chunk's index), emits events, answers. */
static void *
t_sworker_run(void *arg)
{
    int               i, n, k, chunks, rc;
    char              buf[64];
    nbffi_task_t     *tasks[8];
    struct t_sworker *w = arg;
    const char       *p;
    size_t            len;

    for ( ;; ) {
        n = nbffi_queue_pop(w->q, tasks, 8, -1);
        if (n == NBFFI_ECLOSED) {
            return NULL;
        }
        for (i = 0; i < n; i++) {
            p = nbffi_task_payload(tasks[i], &len);
            chunks = atoi(p);
            rc = 0;
            for (k = 0; k < chunks && rc == 0; k++) {
                (void) snprintf(buf, sizeof(buf), "%d", k);
                rc = nbffi_task_send(tasks[i], buf, strlen(buf), -1);
                if (k < w->emits
                    && nbffi_emit(w->q, "tick", 4, buf, strlen(buf)) == 0)
                {
                    atomic_fetch_add(&w->emitted, 1);
                }
            }
            if (rc == NBFFI_ECANCELED) {
                atomic_fetch_add(&w->cancelled, 1);
            } else {
                assert_int_equal(rc, 0);
            }
            nbffi_task_logf(tasks[i], NBFFI_LOG_INFO, "done %d", chunks);
            assert_int_equal(nbffi_task_respond(tasks[i], 0, "end", 3), 0);
        }
    }
}

static long
t_env_long(const char *name, long dflt)
{
    const char  *s = getenv(name);

    return (s != NULL && *s != '\0') ? atol(s) : dflt;
}

/*
 * Many streams at once on a small window, read slowly, some given up
 * midway, while the runtime threads emit events into a small queue: every
 * chunk read arrives in order, every task completes once, nothing leaks
 * (ASan), no race (TSan).
 */
static void
test_stress_streams(void **state)
{
    int                  i, k, n, done, posted, total, rc;
    int                  level;
    long                 rounds;
    char                 payload[16], want[16], line[256];
    size_t               len;
    const void          *data;
    nbffi_host_t        *host;
    nbffi_runtime_t     *rt;
    nbffi_queue_t       *q;
    nbffi_task_t        *tasks[T_S_STREAMS], *out[64];
    int                  next[T_S_STREAMS], giveup[T_S_STREAMS];
    pthread_t            th[T_S_THREADS];
    struct t_sworker     w;
    nbffi_event_t       *ev;
    nbffi_event_stats_t  st;
    long                 events, chunks_read, cancelled_here;
    int64_t              deadline;

    (void) state;

    rounds = t_env_long("NBFFI_STRESS_STREAM_ROUNDS", 40);

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_LOG_QUEUE), 0);
    rt = t_load_ctl(host, 0, 0, &q);
    nbffi_host_set_event_limit(host, 256, 0);

    memset(&w, 0, sizeof(w));
    w.q = q;
    w.emits = 8;
    for (i = 0; i < T_S_THREADS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, t_sworker_run, &w), 0);
    }

    srand(12);
    events = 0;
    chunks_read = 0;
    cancelled_here = 0;
    total = 0;
    deadline = nbffi_now_ns() + (int64_t) 300 * 1000000000;

    for (k = 0; k < rounds; k++) {
        for (i = 0; i < T_S_STREAMS; i++) {
            int  nchunks = 1 + rand() % 200;

            (void) snprintf(payload, sizeof(payload), "%d", nchunks);
            tasks[i] = NULL;
            assert_int_equal(nbffi_call_ex(host, rt, "s", 1, payload,
                                           strlen(payload), T_META,
                                           T_META_LEN, 0,
                                           NBFFI_CALL_STREAM,
                                           1 + (unsigned) (rand() % 4),
                                           &tasks[i]), 0);
            next[i] = 0;
            /* one in four gives up after some chunks */
            giveup[i] = (rand() % 4 == 0) ? rand() % nchunks : -1;
        }
        posted = T_S_STREAMS;
        done = 0;
        total += posted;

        while (done < posted) {
            nbffi_host_drain(host);

            n = nbffi_host_reap(host, out, 64);
            for (i = 0; i < n; i++) {
                int  j;

                for (j = 0; j < T_S_STREAMS && tasks[j] != out[i]; j++) {
                    /* void */
                }
                assert_true(j < T_S_STREAMS);
                while (nbffi_task_next_chunk(out[i], &data, &len) == 1) {
                    (void) snprintf(want, sizeof(want), "%d", next[j]++);
                    assert_int_equal(len, strlen(want));
                    assert_memory_equal(data, want, len);
                    chunks_read++;
                }
                assert_int_equal(nbffi_task_status(out[i]), 0);
                nbffi_task_release(out[i]);
                tasks[j] = NULL;
                done++;
            }

            n = nbffi_host_reap_streams(host, out, 64);
            for (i = 0; i < n; i++) {
                int  j;

                for (j = 0; j < T_S_STREAMS && tasks[j] != out[i]; j++) {
                    /* void */
                }
                assert_true(j < T_S_STREAMS);
                /* a slow reader: one chunk per look */
                if (nbffi_task_next_chunk(out[i], &data, &len) == 1) {
                    (void) snprintf(want, sizeof(want), "%d", next[j]++);
                    assert_int_equal(len, strlen(want));
                    assert_memory_equal(data, want, len);
                    chunks_read++;
                }
                if (giveup[j] >= 0 && next[j] >= giveup[j]) {
                    nbffi_task_release(out[i]);
                    tasks[j] = NULL;
                    done++;
                    cancelled_here++;
                }
            }

            /* the slow reader's other streams: one chunk each */
            for (i = 0; i < T_S_STREAMS; i++) {
                if (tasks[i] != NULL
                    && nbffi_task_next_chunk(tasks[i], &data, &len) == 1)
                {
                    (void) snprintf(want, sizeof(want), "%d", next[i]++);
                    assert_memory_equal(data, want, len);
                    chunks_read++;
                    assert_true(nbffi_task_chunks(tasks[i], NULL) <= 4);
                }
            }

            while (nbffi_host_event_next(host, &ev) == 1) {
                assert_string_equal(nbffi_event_name(ev, NULL), "tick");
                events++;
            }

            while ((rc = nbffi_host_log_next(host, &level, line,
                                             sizeof(line), NULL)) > 0)
            {
                assert_non_null(nbffi_host_log_meta(host, &len));
                assert_int_equal(len, T_META_LEN);
            }

            if (done < posted) {
                (void) nbffi_host_wait(host, nbffi_now_ns() + 1000000);
            }
            assert_true(nbffi_now_ns() < deadline);
        }
    }

    /* fini waits until the test's threads, which play the runtime's,
     * have left the queue: else it would find them there and orphan it */
    t_ctl_hold_fini();
    assert_int_equal(nbffi_runtime_close(rt, 0, NULL), 0);
    for (i = 0; i < T_S_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    t_ctl_release_fini();

    while (nbffi_host_event_next(host, &ev) == 1) {
        events++;
    }
    nbffi_host_event_stats(host, &st);
    assert_int_equal(st.emitted, (uint64_t) atomic_load(&w.emitted));
    assert_int_equal(st.delivered, (uint64_t) events);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);

    printf("stress_streams: %d streams, %ld chunks read, %ld given up "
           "(%ld sends cancelled), %ld events, %llu dropped\n", total,
           chunks_read, cancelled_here, atomic_load(&w.cancelled), events,
           (unsigned long long) st.dropped);
}

struct t_emitter {
    nbffi_queue_t  *q;
    long            n;
    int             id;
    long            ok;
};

static void *
t_emitter_run(void *arg)
{
    long              i;
    char              buf[32];
    struct t_emitter *e = arg;

    for (i = 0; i < e->n; i++) {
        (void) snprintf(buf, sizeof(buf), "%d %ld", e->id, i);
        if (nbffi_emit(e->q, "flood", 5, buf, strlen(buf)) == 0) {
            e->ok++;
        }
    }
    return NULL;
}

/* Threads flood a small event queue: per-thread order kept, every event
 * either delivered or counted as dropped. */
static void
test_stress_events(void **state)
{
    int                  i, id;
    long                 n, per, got, last[T_S_THREADS], seq, ok;
    size_t               len;
    const char          *data;
    char                 buf[64];
    nbffi_host_t        *host;
    nbffi_runtime_t     *rt;
    nbffi_queue_t       *q;
    pthread_t            th[T_S_THREADS];
    struct t_emitter     e[T_S_THREADS];
    nbffi_event_t       *ev;
    nbffi_event_stats_t  st;
    int64_t              deadline;

    (void) state;

    per = t_env_long("NBFFI_STRESS_TASKS", 1000000) / T_S_THREADS;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    rt = t_load_ctl(host, 0, 0, &q);
    nbffi_host_set_event_limit(host, 1024, 0);

    for (i = 0; i < T_S_THREADS; i++) {
        e[i].q = q;
        e[i].n = per;
        e[i].id = i;
        e[i].ok = 0;
        last[i] = -1;
        assert_int_equal(pthread_create(&th[i], NULL, t_emitter_run, &e[i]),
                         0);
    }

    got = 0;
    deadline = nbffi_now_ns() + (int64_t) 300 * 1000000000;

    for ( ;; ) {
        nbffi_host_event_stats(host, &st);
        if (st.emitted + st.dropped == (uint64_t) per * T_S_THREADS
            && st.delivered == st.emitted)
        {
            break;
        }

        if (!t_readable(nbffi_host_fd(host), 10)) {
            assert_true(nbffi_now_ns() < deadline);
            continue;
        }
        nbffi_host_drain(host);

        while (nbffi_host_event_next(host, &ev) == 1) {
            data = nbffi_event_data(ev, &len);
            assert_true(len < sizeof(buf));
            memcpy(buf, data, len);
            buf[len] = '\0';
            assert_int_equal(sscanf(buf, "%d %ld", &id, &seq), 2);
            assert_true(id >= 0 && id < T_S_THREADS);
            assert_true(seq > last[id]);
            last[id] = seq;
            got++;
        }
    }

    ok = 0;
    for (i = 0; i < T_S_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        ok += e[i].ok;
    }

    n = (long) st.emitted;
    assert_int_equal(n, ok);
    assert_int_equal(got, n);
    assert_int_equal(st.queued, 0);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);

    printf("stress_events: %ld emitted by %d threads, %ld delivered in "
           "order, %llu dropped\n", per * T_S_THREADS, T_S_THREADS, got,
           (unsigned long long) st.dropped);
}


int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        T_FX(test_meta_checked),
        T_FX(test_meta_read),
        cmocka_unit_test(test_meta_log_queued),
        T_FX(test_meta_log_text),
        T_FX(test_stream_chunks_then_status),
        T_FX(test_stream_window_full),
        T_FX(test_stream_send_waits),
        T_FX(test_stream_cancel_wakes_send),
        T_FX(test_stream_deadline),
        T_FX(test_stream_closed),
        T_FX(test_stream_release_ready),
        T_FX(test_stream_expired_in_queue),
        T_FX(test_event_order_and_stats),
        T_FX(test_event_bounds),
        T_FX(test_event_outlives_runtime),
        cmocka_unit_test(test_stress_streams),
        cmocka_unit_test(test_stress_events),
    };

    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    } else {
        cmocka_set_skip_filter("test_stress_*");
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
