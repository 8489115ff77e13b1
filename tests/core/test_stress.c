/*
 * Multi-threaded stress: every posted task completes exactly once (counted
 * per task), under full queues, hosts that let go early, several hosts on
 * one runtime, and closes while tasks are in flight -- including a runtime
 * whose threads leave tasks unanswered, which is orphaned: those tasks
 * complete as closed and are leaked, and the host counts each one.
 *
 * NBFFI_STRESS_TASKS sets the number of tasks of each scenario (default
 * 1000000; the close scenarios post about half of it, closing midway).
 * meson.build lowers it under TSan.  Run one scenario: test_stress NAME.
 */

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define T_DEFAULT_TASKS  1000000
#define T_MAX_POPPERS    8
#define T_POP_BATCH      32
#define T_REAP_BATCH     256
#define T_BIG_REPLY      100     /* more than a task keeps inline */
#define T_MAX_WINDOW     4096

#define T_STR2(x)  #x
#define T_STR(x)   T_STR2(x)

/*
 * cmocka asserts only on the main thread.  Other threads record the first
 * failed check here; the main thread asserts that there was none.
 */
static _Atomic(const char *)  t_failed;

#define T_CHECK(cond)                                                        \
    ((cond) ? 1 : t_fail(__FILE__ ":" T_STR(__LINE__) ": " #cond))

static int
t_fail(const char *what)
{
    const char  *none;

    none = NULL;
    (void) atomic_compare_exchange_strong(&t_failed, &none, what);

    return 0;
}

static void
t_assert_no_failure(void)
{
    const char  *what;

    what = atomic_load(&t_failed);
    if (what != NULL) {
        fail_msg("%s", what);
    }
}

static uint64_t
t_tasks(void)
{
    const char  *s;

    s = getenv("NBFFI_STRESS_TASKS");

    return (s != NULL && atoi(s) > 0) ? (uint64_t) atoi(s) : T_DEFAULT_TASKS;
}


/* ---- runtime side: the test's own threads popping a t_ctl queue ------- */

struct t_pool {
    nbffi_queue_t     *q;
    int                nthreads;
    pthread_t          tid[T_MAX_POPPERS];

    atomic_uchar      *answered;          /* per task seq */
    atomic_uchar      *dropped;           /* per task seq */
    atomic_ullong      ndropped;
    atomic_ullong      owned;             /* replies handed over */
    atomic_ullong      owned_freed;       /* ... and freed by nbffi */

    int                vary_replies;      /* big and owned replies too */
    int                drop_after_close;  /* leave tasks unanswered */

    /* poppers start once the host filled the queue */
    pthread_mutex_t    gate_lock;
    pthread_cond_t     gate_cond;
    int                gate_open;
};

static void
t_owned_free(void *data, void *ud)
{
    struct t_pool  *pool;

    pool = ud;
    atomic_fetch_add(&pool->owned_freed, 1);
    free(data);
}

static void
t_pool_answer(struct t_pool *pool, nbffi_task_t *task)
{
    size_t       len, rlen;
    uint64_t     seq;
    const void  *p;
    char         reply[T_BIG_REPLY], *owned;

    p = nbffi_task_payload(task, &len);
    if (!T_CHECK(len == sizeof(seq))) {
        return;
    }
    memcpy(&seq, p, sizeof(seq));

    if (pool->drop_after_close && (seq & 1) && nbffi_queue_closed(pool->q)) {
        /* Never answered: the runtime is orphaned when fini returns, and
         * the task completes as closed, leaked. */
        atomic_store(&pool->dropped[seq], 1);
        atomic_fetch_add(&pool->ndropped, 1);
        return;
    }

    (void) T_CHECK(atomic_fetch_add(&pool->answered[seq], 1) == 0);

    rlen = (pool->vary_replies && seq % 5 == 0) ? T_BIG_REPLY : sizeof(seq);
    memset(reply, 'r', rlen);
    memcpy(reply, &seq, sizeof(seq));

    if (pool->vary_replies && seq % 3 == 0) {
        owned = malloc(rlen);
        if (!T_CHECK(owned != NULL)) {
            return;
        }
        memcpy(owned, reply, rlen);
        atomic_fetch_add(&pool->owned, 1);
        (void) T_CHECK(nbffi_task_respond_owned(task, 0, owned, rlen,
                                                t_owned_free, pool) == 0);

    } else {
        (void) T_CHECK(nbffi_task_respond(task, 0, reply, rlen) == 0);
    }
}

static void *
t_popper(void *arg)
{
    int             i, n;
    nbffi_task_t   *tasks[T_POP_BATCH];
    struct t_pool  *pool;

    pool = arg;

    pthread_mutex_lock(&pool->gate_lock);
    while (!pool->gate_open) {
        pthread_cond_wait(&pool->gate_cond, &pool->gate_lock);
    }
    pthread_mutex_unlock(&pool->gate_lock);

    for ( ;; ) {
        n = nbffi_queue_pop(pool->q, tasks, T_POP_BATCH, -1);
        if (n == NBFFI_ECLOSED) {
            break;
        }

        if (!T_CHECK(n > 0)) {
            break;
        }

        for (i = 0; i < n; i++) {
            t_pool_answer(pool, tasks[i]);
        }
    }

    return NULL;
}

static void
t_pool_open(void *arg)
{
    struct t_pool  *pool;

    pool = arg;

    pthread_mutex_lock(&pool->gate_lock);
    pool->gate_open = 1;
    pthread_cond_broadcast(&pool->gate_cond);
    pthread_mutex_unlock(&pool->gate_lock);
}

/* t_ctl's fini: the queue is closed, the poppers leave. */
static void
t_pool_join(nbffi_queue_t *q, void *arg)
{
    int             i;
    struct t_pool  *pool;

    (void) q;
    pool = arg;

    t_pool_open(pool);

    for (i = 0; i < pool->nthreads; i++) {
        (void) pthread_join(pool->tid[i], NULL);
    }
}

static void
t_pool_start(struct t_pool *pool, nbffi_queue_t *q, int nthreads,
    int gate_open)
{
    int  i;

    pool->q = q;
    pool->nthreads = nthreads;
    pool->gate_open = gate_open;
    assert_int_equal(pthread_mutex_init(&pool->gate_lock, NULL), 0);
    assert_int_equal(pthread_cond_init(&pool->gate_cond, NULL), 0);

    t_ctl_get()->on_fini = t_pool_join;
    t_ctl_get()->fini_ud = pool;

    for (i = 0; i < nthreads; i++) {
        assert_int_equal(nbffi_thread_create(&pool->tid[i], t_popper, pool),
                         0);
    }
}

static void
t_pool_destroy(struct t_pool *pool)
{
    (void) pthread_cond_destroy(&pool->gate_cond);
    (void) pthread_mutex_destroy(&pool->gate_lock);
}


/* ---- host side: one host thread posting, reaping, releasing ---------- */

struct t_driver {
    nbffi_host_t      *host;
    nbffi_runtime_t   *rt;
    int                fd;          /* eventfd, or the event loop's socket */
    int                sock;

    uint64_t           first;       /* seqs first .. first + n - 1 */
    uint64_t           n;
    uint64_t           window;      /* tasks in flight at most */
    uint64_t           release_every;   /* 0: never release early */
    uint64_t           hold_every;      /* 0: only "echo" */
    int64_t            close_at;    /* posts before closing, -1: never */

    unsigned char     *reaped;      /* per seq */
    unsigned char     *released;    /* per seq */
    int               *status;      /* per seq, as reaped */
    nbffi_task_t     **tasks;       /* per seq */

    void             (*on_refused)(void *ud);
    void              *ud;

    uint64_t           posted;
    uint64_t           refused;
    uint64_t           nreleased;
    uint64_t           closed_calls;
    uint64_t           inflight;
    uint64_t           next;        /* offset of the next seq to post */
    uint64_t           low;         /* no unresolved seq below, see t_find */
    nbffi_task_t     **later;       /* to release after the burst */
    uint64_t           nlater;
};

static int
t_check_reply(struct t_driver *d, uint64_t seq, nbffi_task_t *task)
{
    int          st;
    size_t       len;
    const void  *p;

    st = nbffi_task_status(task);
    p = nbffi_task_reply(task, &len);

    if (st == NBFFI_ECLOSED) {
        return T_CHECK(d->close_at >= 0);
    }

    if (!T_CHECK(st == 0)) {
        return 0;
    }

    if (d->hold_every != 0 && seq % d->hold_every == 0) {
        return T_CHECK(len == 8 && memcmp(p, "released", 8) == 0);
    }

    return T_CHECK(len >= sizeof(seq) && memcmp(p, &seq, sizeof(seq)) == 0);
}

/*
 * The seq of a reaped task whose reply does not carry it (closed, or a
 * held task): searched from the oldest seq still unresolved.
 */
static uint64_t
t_find(struct t_driver *d, nbffi_task_t *task)
{
    uint64_t  seq, end;

    end = d->first + d->next;

    while (d->low < end
           && (d->reaped[d->low] || d->released[d->low]
               || d->tasks[d->low] == NULL))
    {
        d->low++;
    }

    for (seq = d->low; seq < end; seq++) {
        if (d->tasks[seq] == task && !d->reaped[seq] && !d->released[seq]) {
            return seq;
        }
    }

    return d->first + d->n;
}

static int
t_reap_batch(struct t_driver *d)
{
    int            i, n;
    uint64_t       seq;
    const void    *p;
    size_t         len;
    nbffi_task_t  *out[T_REAP_BATCH];

    n = nbffi_host_reap(d->host, out, T_REAP_BATCH);
    if (!T_CHECK(n >= 0)) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        p = nbffi_task_reply(out[i], &len);
        if (nbffi_task_status(out[i]) == 0 && len >= sizeof(seq)
            && !(len == 8 && memcmp(p, "released", 8) == 0))
        {
            memcpy(&seq, p, sizeof(seq));
        } else {
            seq = t_find(d, out[i]);
        }

        if (!T_CHECK(seq >= d->first && seq < d->first + d->n)
            || !T_CHECK(d->tasks[seq] == out[i])
            || !T_CHECK(!d->released[seq])
            || !T_CHECK(d->reaped[seq]++ == 0))
        {
            return -1;
        }

        d->status[seq] = nbffi_task_status(out[i]);
        (void) t_check_reply(d, seq, out[i]);

        nbffi_task_release(out[i]);
        d->inflight--;
    }

    return n;
}

static void
t_release_later(struct t_driver *d)
{
    uint64_t  i;

    for (i = 0; i < d->nlater; i++) {
        nbffi_task_release(d->later[i]);
    }

    d->nlater = 0;
}

static void
t_wake_drain(struct t_driver *d)
{
    if (d->sock) {
        (void) t_sock_drain(d->fd);
    } else {
        nbffi_host_drain(d->host);
    }
}

/* Waits for a completion; 0 if none came in T_WAIT_MS: a lost wake-up. */
static int
t_wait(struct t_driver *d)
{
    int  rc;

    rc = t_readable(d->fd, T_WAIT_MS);

    return T_CHECK(rc == 1);
}

static int
t_post(struct t_driver *d, uint64_t seq)
{
    int            rc;
    const char    *method;
    nbffi_task_t  *task;

    method = (d->hold_every != 0 && seq % d->hold_every == 0) ? "hold"
                                                               : "echo";

    rc = nbffi_call(d->host, d->rt, method, 4, &seq, sizeof(seq), 0, 0,
                    &task);
    if (rc != 0) {
        return rc;
    }

    d->tasks[seq] = task;
    d->posted++;

    if (d->release_every != 0 && seq % d->release_every == 0) {
        /* Released after this burst of posts: by then a runtime thread
         * may hold it, or may have answered it. */
        d->later[d->nlater++] = task;
        d->released[seq] = 1;
        d->nreleased++;

    } else {
        d->inflight++;
    }

    return 0;
}

/*
 * Posts seqs first .. first + n - 1 with at most window in flight, retrying
 * refused calls, and reaps.  With close_at, closes the runtime after that
 * many posts and returns once every remaining call was refused as closed:
 * what is still in flight is then reaped by t_drive_rest().
 */
static void
t_drive(struct t_driver *d)
{
    int  rc, n;

    if (!T_CHECK(d->window <= T_MAX_WINDOW)) {
        return;
    }

    d->low = d->first;

    for ( ;; ) {
        while (d->next < d->n && d->inflight < d->window
               && d->nlater < d->window)
        {
            if (d->close_at >= 0 && d->next == (uint64_t) d->close_at
                && !T_CHECK(nbffi_runtime_close(d->rt, 0, NULL) == 0))
            {
                return;
            }

            rc = t_post(d, d->first + d->next);

            if (rc == NBFFI_EQFULL) {
                d->refused++;
                if (d->on_refused != NULL) {
                    d->on_refused(d->ud);
                }
                break;
            }

            if (rc == NBFFI_ECLOSED && d->close_at >= 0
                && d->next >= (uint64_t) d->close_at)
            {
                d->closed_calls++;
                d->next++;
                continue;
            }

            if (!T_CHECK(rc == 0)) {
                return;
            }

            d->next++;
        }

        t_release_later(d);

        if (d->next == d->n && (d->inflight == 0 || d->close_at >= 0)) {
            return;
        }

        t_wake_drain(d);
        n = t_reap_batch(d);
        if (n < 0) {
            return;
        }

        if (n > 0) {
            continue;
        }

        if (d->inflight == 0) {
            /* Refused with nothing of ours in flight: the queue is full of
             * other hosts' tasks, and no wake-up will come to us. */
            (void) sched_yield();
            continue;
        }

        if (!t_wait(d)) {
            return;
        }
    }
}

/*
 * After the close: reaps what is still in flight, which the runtime or the
 * close completes.
 */
static void
t_drive_rest(struct t_driver *d)
{
    int  n;

    while (d->inflight > 0) {
        t_wake_drain(d);
        n = t_reap_batch(d);
        if (n < 0 || (n == 0 && !t_wait(d))) {
            return;
        }
    }

    (void) T_CHECK(t_reap_batch(d) == 0);
}

/* Waits for the end of the close of d's runtime, frees it, and returns
 * its final state. */
static int
t_drive_close_end(struct t_driver *d)
{
    int  state;

    state = nbffi_runtime_wait(d->rt, nbffi_now_ns()
                                      + (int64_t) T_WAIT_MS * 1000000);
    nbffi_runtime_free(d->rt);
    d->rt = NULL;

    return state;
}

static void
t_driver_init(struct t_driver *d, uint64_t total)
{
    memset(d, 0, sizeof(*d));
    d->close_at = -1;

    d->reaped = calloc(total, 1);
    d->released = calloc(total, 1);
    d->status = calloc(total, sizeof(int));
    d->tasks = calloc(total, sizeof(nbffi_task_t *));
    d->later = calloc(T_MAX_WINDOW, sizeof(nbffi_task_t *));
    assert_non_null(d->later);
    assert_non_null(d->reaped);
    assert_non_null(d->released);
    assert_non_null(d->status);
    assert_non_null(d->tasks);
}

static void
t_driver_free(struct t_driver *d)
{
    free(d->reaped);
    free(d->released);
    free(d->status);
    free(d->tasks);
    free(d->later);
}

/* Every seq of d: reaped exactly once, or released and never reaped. */
static void
t_assert_exactly_once(struct t_driver *d)
{
    uint64_t  seq, reaped;

    reaped = 0;

    for (seq = d->first; seq < d->first + d->n; seq++) {
        if (d->released[seq]) {
            assert_int_equal(d->reaped[seq], 0);
        } else if (d->tasks[seq] != NULL) {
            assert_int_equal(d->reaped[seq], 1);
            reaped++;
        }
    }

    assert_int_equal(reaped + d->nreleased, d->posted);
    assert_int_equal(d->posted + d->closed_calls, d->n);
}


/* ---- scenarios -------------------------------------------------------- */

/*
 * One host, four popper threads, a queue bounded far below the window:
 * refusals, early releases, copied, big and handed-over replies.
 */
static void
test_stress_pool(void **state)
{
    uint64_t         n, seq, big_released;
    nbffi_stats_t    st;
    struct t_pool    pool;
    struct t_driver  d;

    (void) state;

    n = t_tasks();
    memset(&pool, 0, sizeof(pool));
    pool.answered = calloc(n, sizeof(atomic_uchar));
    assert_non_null(pool.answered);
    pool.vary_replies = 1;

    t_driver_init(&d, n);
    assert_int_equal(nbffi_host_new(&d.host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    d.fd = nbffi_host_fd(d.host);
    d.rt = t_load_ctl(d.host, 1024, 0, &pool.q);
    d.n = n;
    d.window = 4096;
    d.release_every = 16;
    d.on_refused = t_pool_open;
    d.ud = &pool;

    /* The poppers wait at the gate: the first burst must hit EQFULL. */
    t_pool_start(&pool, pool.q, 4, 0);
    t_drive(&d);
    t_assert_no_failure();

    st = t_stats(d.rt);
    assert_int_equal(st.posted, n);
    assert_true(d.refused > 0);
    assert_int_equal(st.refused, d.refused);
    assert_int_equal(st.completed, n - d.nreleased);
    assert_int_equal(st.abandoned, d.nreleased);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.timed_out, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.queued, 0);

    /* fini joins the poppers: every task they took was answered */
    assert_int_equal(t_close_free(d.rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    assert_int_equal(nbffi_host_tasks_leaked(d.host), 0);
    t_host_finish(d.host);
    t_assert_no_failure();

    t_assert_exactly_once(&d);
    big_released = 0;
    for (seq = 0; seq < n; seq++) {
        if (d.released[seq]) {
            assert_true(pool.answered[seq] <= 1);
            big_released += pool.answered[seq] && seq % 5 == 0;
        } else {
            assert_int_equal(pool.answered[seq], 1);
        }
    }
    assert_int_equal(atomic_load(&pool.owned),
                     atomic_load(&pool.owned_freed));

    printf("stress_pool: %llu tasks, %llu refused, %llu released early "
           "(%llu answered late with a big reply), %llu handed over\n",
           (unsigned long long) n, (unsigned long long) d.refused,
           (unsigned long long) d.nreleased,
           (unsigned long long) big_released,
           (unsigned long long) atomic_load(&pool.owned));

    t_driver_free(&d);
    t_pool_destroy(&pool);
    free(pool.answered);
}

#define T_HOSTS  3

struct t_host_thread {
    struct t_driver   d;
    int               use_socket;
    pthread_t         tid;
};

/* A host thread: its own host, posting to the shared runtime. */
static void *
t_host_main(void *arg)
{
    int                    cfd;
    char                   path[108];
    struct sockaddr_un     sa;
    struct t_host_thread  *h;

    h = arg;
    cfd = -1;

    if (!T_CHECK(nbffi_host_new(&h->d.host, h->use_socket
                                ? NBFFI_HOST_NOTIFY_SOCKET
                                : NBFFI_HOST_NOTIFY_EVENTFD) == 0))
    {
        return NULL;
    }

    if (h->use_socket) {
        if (!T_CHECK(nbffi_host_listen(h->d.host, path, sizeof(path)) == 0)) {
            return NULL;
        }

        cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (!T_CHECK(cfd >= 0)) {
            return NULL;
        }

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, path, strlen(path) + 1);

        if (!T_CHECK(connect(cfd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
            || !T_CHECK(nbffi_host_accept(h->d.host) == 0))
        {
            return NULL;
        }

        h->d.fd = cfd;
        h->d.sock = 1;

    } else {
        h->d.fd = nbffi_host_fd(h->d.host);
    }

    t_drive(&h->d);

    (void) T_CHECK(h->d.inflight == 0);
    (void) T_CHECK(nbffi_host_tasks_live(h->d.host) == 0);
    (void) T_CHECK(nbffi_host_free(h->d.host) == 0);

    if (cfd >= 0) {
        (void) close(cfd);
    }

    return NULL;
}

/*
 * Three host threads, each with its own host (one with the socket
 * notifier), posting to one libecho runtime with four threads.
 */
static void
test_stress_hosts(void **state)
{
    int                    i;
    char                   err[256];
    uint64_t               n, per, refused, released;
    nbffi_host_t          *main_host;
    nbffi_stats_t          st;
    nbffi_runtime_t       *rt;
    struct t_host_thread   h[T_HOSTS];

    (void) state;

    n = t_tasks();
    per = n / T_HOSTS;

    assert_int_equal(nbffi_host_new(&main_host, NBFFI_HOST_LOG_QUEUE), 0);
    assert_int_equal(t_load_wait(main_host, LIBECHO_PATH, NULL, "threads=4",
                                 9, 512, 0, 0, 0, &rt, err, sizeof(err)), 0);

    for (i = 0; i < T_HOSTS; i++) {
        t_driver_init(&h[i].d, per * T_HOSTS);
        h[i].use_socket = (i == 1);
        h[i].d.rt = rt;
        h[i].d.first = per * (uint64_t) i;
        h[i].d.n = per;
        h[i].d.window = 256;
        h[i].d.release_every = 16;
    }

    for (i = 0; i < T_HOSTS; i++) {
        assert_int_equal(pthread_create(&h[i].tid, NULL, t_host_main, &h[i]),
                         0);
    }
    for (i = 0; i < T_HOSTS; i++) {
        assert_int_equal(pthread_join(h[i].tid, NULL), 0);
    }
    t_assert_no_failure();

    refused = released = 0;
    for (i = 0; i < T_HOSTS; i++) {
        t_assert_exactly_once(&h[i].d);
        refused += h[i].d.refused;
        released += h[i].d.nreleased;
    }

    st = t_stats(rt);
    assert_int_equal(st.posted, per * T_HOSTS);
    assert_int_equal(st.refused, refused);
    assert_int_equal(st.completed, per * T_HOSTS - released);
    assert_int_equal(st.abandoned, released);
    assert_int_equal(st.in_flight, 0);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(main_host);

    printf("stress_hosts: %d hosts x %llu tasks, %llu refused, "
           "%llu released early\n", T_HOSTS, (unsigned long long) per,
           (unsigned long long) refused, (unsigned long long) released);

    for (i = 0; i < T_HOSTS; i++) {
        t_driver_free(&h[i].d);
    }
}

/*
 * Rounds of: two popper threads, a close in the middle of the stream,
 * poppers that leave odd tasks unanswered once closed.  fini joins them
 * and returns, but the runtime still holds what they dropped: it is
 * orphaned, and exactly the dropped tasks complete as closed and leaked.
 */
static void
test_stress_close(void **state)
{
    int              round, rounds, rstate, orphaned;
    char             line[1024];
    uint64_t         n, per, seq, closed, answered, dropped;
    struct t_pool    pool;
    struct t_driver  d;

    (void) state;

    rounds = 100;
    n = t_tasks();
    per = n / (uint64_t) rounds;
    closed = answered = dropped = 0;
    orphaned = 0;

    for (round = 0; round < rounds; round++) {
        memset(&pool, 0, sizeof(pool));
        pool.answered = calloc(per, sizeof(atomic_uchar));
        pool.dropped = calloc(per, sizeof(atomic_uchar));
        assert_non_null(pool.answered);
        assert_non_null(pool.dropped);
        pool.drop_after_close = 1;

        t_driver_init(&d, per);
        assert_int_equal(nbffi_host_new(&d.host, NBFFI_HOST_LOG_QUEUE), 0);
        d.fd = nbffi_host_fd(d.host);
        d.rt = t_load_ctl(d.host, 256, 0, &pool.q);
        d.n = per;
        d.window = 1024;
        d.release_every = 8;
        /* from a quarter to three quarters of the round */
        d.close_at = (int64_t) (per / 4 + per / 2 * (uint64_t) round
                                / (uint64_t) rounds);

        t_pool_start(&pool, pool.q, 2, 1);
        t_drive(&d);
        t_assert_no_failure();

        rstate = t_drive_close_end(&d);
        t_drive_rest(&d);
        t_assert_no_failure();

        /* Orphaned exactly when a task was dropped, and said so once. */
        assert_int_equal(rstate, atomic_load(&pool.ndropped) != 0
                                 ? NBFFI_RT_ORPHANED : NBFFI_RT_CLOSED);
        if (rstate == NBFFI_RT_ORPHANED) {
            assert_true(nbffi_host_log_next(d.host, NULL, line, sizeof(line),
                                            NULL) > 0);
            assert_non_null(strstr(line, "orphaned"));
            orphaned++;
        }
        assert_int_equal(nbffi_host_log_next(d.host, NULL, line,
                                             sizeof(line), NULL), 0);

        /* Each dropped task, reaped or released early, leaked; no other. */
        assert_int_equal(nbffi_host_tasks_leaked(d.host),
                         atomic_load(&pool.ndropped));
        t_host_finish(d.host);

        t_assert_exactly_once(&d);
        for (seq = 0; seq < per; seq++) {
            assert_true(pool.answered[seq] + pool.dropped[seq] <= 1);
            if (d.reaped[seq]) {
                /* answered by the runtime, or closed because dropped */
                assert_int_equal(d.status[seq] == 0, pool.answered[seq]);
                assert_int_equal(d.status[seq] == NBFFI_ECLOSED,
                                 pool.dropped[seq]);
                closed += d.status[seq] == NBFFI_ECLOSED;
                answered += pool.answered[seq];
            }
        }
        assert_int_equal(d.closed_calls, per - (uint64_t) d.close_at);
        dropped += atomic_load(&pool.ndropped);

        t_driver_free(&d);
        t_pool_destroy(&pool);
        free(pool.answered);
        free(pool.dropped);
    }

    /* The scenario happened: tasks were in flight at the close. */
    assert_true(orphaned > 0);

    printf("stress_close: %d rounds x %llu tasks, %llu answered, "
           "%llu dropped (%llu reaped as closed, leaked), %d orphaned\n",
           rounds, (unsigned long long) per, (unsigned long long) answered,
           (unsigned long long) dropped, (unsigned long long) closed,
           orphaned);
}

/*
 * Rounds of libecho with four threads: echo and hold tasks, closed while
 * they are in flight; held tasks are answered at close, the rest by the
 * runtime or as closed.
 */
static void
test_stress_echo_close(void **state)
{
    int               round, rounds;
    char              err[256];
    uint64_t          per, seq, ok, closed;
    struct t_driver   d;

    (void) state;

    per = 5000;
    rounds = (int) (t_tasks() / 2 / per);
    ok = closed = 0;

    for (round = 0; round < rounds; round++) {
        t_driver_init(&d, per);
        assert_int_equal(nbffi_host_new(&d.host, NBFFI_HOST_LOG_QUEUE), 0);
        d.fd = nbffi_host_fd(d.host);
        assert_int_equal(t_load_wait(d.host, LIBECHO_PATH, NULL, "threads=4",
                                     9, 0, 0, 0, 0, &d.rt, err, sizeof(err)),
                         0);
        d.n = per;
        /* held tasks stay in flight until the close: keep them below */
        d.window = 512;
        d.hold_every = 8;
        d.release_every = 11;
        d.close_at = (int64_t) (per / 2 + (uint64_t) round);

        t_drive(&d);
        t_assert_no_failure();

        /* fini joins its threads, which answer what they hold on exit */
        assert_int_equal(t_drive_close_end(&d), NBFFI_RT_CLOSED);
        t_drive_rest(&d);
        t_assert_no_failure();
        assert_int_equal(nbffi_host_tasks_leaked(d.host), 0);
        t_host_finish(d.host);

        t_assert_exactly_once(&d);
        for (seq = 0; seq < per; seq++) {
            ok += d.reaped[seq] && d.status[seq] == 0;
            closed += d.reaped[seq] && d.status[seq] == NBFFI_ECLOSED;
        }

        t_driver_free(&d);
    }

    printf("stress_echo_close: %d rounds x %llu tasks, %llu answered, "
           "%llu closed by nbffi\n", rounds, (unsigned long long) per,
           (unsigned long long) ok, (unsigned long long) closed);
}

/*
 * Short-lived hosts: each posts a burst to a shared libecho runtime, reaps
 * it and is freed at once, while runtime threads may still be finishing
 * the completion they just pushed onto that host.
 */
static void
test_stress_host_churn(void **state)
{
    int               round, rounds;
    char              err[256];
    uint64_t          per;
    nbffi_host_t     *main_host;
    nbffi_runtime_t  *rt;
    struct t_driver   d;

    (void) state;

    per = 64;
    rounds = (int) (t_tasks() / 4 / per);

    assert_int_equal(nbffi_host_new(&main_host, NBFFI_HOST_LOG_QUEUE), 0);
    assert_int_equal(t_load_wait(main_host, LIBECHO_PATH, NULL, "threads=4",
                                 9, 0, 0, 0, 0, &rt, err, sizeof(err)), 0);

    for (round = 0; round < rounds; round++) {
        t_driver_init(&d, per);
        assert_int_equal(nbffi_host_new(&d.host, 0), 0);
        d.fd = nbffi_host_fd(d.host);
        d.rt = rt;
        d.n = per;
        d.window = per;

        t_drive(&d);
        t_assert_no_failure();
        t_host_finish(d.host);
        t_assert_exactly_once(&d);

        t_driver_free(&d);
    }

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(main_host);

    printf("stress_host_churn: %d hosts x %llu tasks\n", rounds,
           (unsigned long long) per);
}

/*
 * A runtime orphaned while its threads pop: tasks a thread takes from the
 * queue while the close sweeps what the runtime holds must not fall
 * between the two (never completed: a caller waiting forever, a host that
 * can never be freed).
 */
#define T_ORPHAN_POPPERS  3
#define T_ORPHAN_POSTED   100       /* posts before the close */
#define T_ORPHAN_MAX      (1 << 18) /* posts at most */

struct t_orphan {
    nbffi_queue_t    *q;
    nbffi_runtime_t  *rt;
    atomic_ullong     held;         /* tasks the poppers took */
    atomic_ullong     posted;
    /* the posting host's end, written by its thread before it exits */
    uint64_t          reaped;
    uint64_t          leaked;
    uint64_t          live;
    int               freed;
};

/* Pops and keeps every task, a handler that never returns. */
static void *
t_orphan_popper(void *arg)
{
    int               n;
    nbffi_task_t     *task;
    struct t_orphan  *o;

    o = arg;

    while ((n = nbffi_queue_pop(o->q, &task, 1, -1)) != NBFFI_ECLOSED) {
        if (!T_CHECK(n >= 0)) {
            break;
        }
        atomic_fetch_add(&o->held, (uint64_t) n);
    }

    return NULL;
}

/* Another host: posts until closed (or T_ORPHAN_MAX posts), then reaps
 * until each task completed, as closed: nobody answers. */
static void *
t_orphan_poster(void *arg)
{
    int               i, n, rc;
    int64_t           deadline;
    nbffi_host_t     *host;
    nbffi_task_t     *task, *out[T_REAP_BATCH];
    struct t_orphan  *o;

    o = arg;

    if (!T_CHECK(nbffi_host_new(&host, 0) == 0)) {
        return NULL;
    }

    for ( ;; ) {
        rc = NBFFI_EQFULL;
        if (atomic_load(&o->posted) < T_ORPHAN_MAX) {
            rc = nbffi_call(host, o->rt, "m", 1, "p", 1, 0, 0, &task);
        }
        if (rc == NBFFI_ECLOSED) {
            break;
        }
        if (rc == 0) {
            atomic_fetch_add(&o->posted, 1);
        } else if (!T_CHECK(rc == NBFFI_EQFULL)) {
            break;
        } else {
            (void) sched_yield();
        }
    }

    deadline = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;

    while (nbffi_host_tasks_live(host) != 0
           && nbffi_host_wait(host, deadline))
    {
        nbffi_host_drain(host);
        n = nbffi_host_reap(host, out, T_REAP_BATCH);
        for (i = 0; i < n; i++) {
            (void) T_CHECK(nbffi_task_status(out[i]) == NBFFI_ECLOSED);
            o->leaked += nbffi_task_leaked(out[i]);
            o->reaped++;
            nbffi_task_release(out[i]);
        }
    }

    o->live = nbffi_host_tasks_live(host);
    o->freed = (o->live == 0 && nbffi_host_free(host) == 0);

    return NULL;
}

static void
test_stress_orphan_pop(void **state)
{
    int               round, rounds, i;
    pthread_t         poster, poppers[T_ORPHAN_POPPERS];
    uint64_t          held;
    nbffi_host_t     *host;
    struct t_orphan   o;

    (void) state;

    held = 0;
    rounds = (int) (t_tasks() / 2500);

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_LOG_QUEUE), 0);

    for (round = 0; round < rounds; round++) {
        memset(&o, 0, sizeof(o));
        atomic_init(&o.held, 0);
        atomic_init(&o.posted, 0);
        o.rt = t_load_ctl(host, 16, 0, &o.q);

        for (i = 0; i < T_ORPHAN_POPPERS; i++) {
            assert_int_equal(pthread_create(&poppers[i], NULL,
                                            t_orphan_popper, &o), 0);
        }
        assert_int_equal(pthread_create(&poster, NULL, t_orphan_poster, &o),
                         0);

        while (atomic_load(&o.posted) < T_ORPHAN_POSTED) {
            (void) sched_yield();
        }

        /* t_ctl's fini returns at once: the poppers still hold tasks, and
         * are still popping.  The other host posts until it is refused. */
        assert_int_equal(nbffi_runtime_close(o.rt, 0, NULL), 0);
        assert_int_equal(pthread_join(poster, NULL), 0);
        for (i = 0; i < T_ORPHAN_POPPERS; i++) {
            assert_int_equal(pthread_join(poppers[i], NULL), 0);
        }
        t_assert_no_failure();

        assert_int_equal(t_close_free(o.rt, T_WAIT_MS), NBFFI_RT_ORPHANED);

        /* Every task completed once.  What the poppers took is leaked,
         * and at most one task per popper more: one the sweep took from
         * the held set while its pop was still returning it. */
        assert_int_equal(o.live, 0);
        assert_int_equal(o.reaped, atomic_load(&o.posted));
        assert_true(o.leaked >= atomic_load(&o.held));
        assert_true(o.leaked <= atomic_load(&o.held) + T_ORPHAN_POPPERS);
        assert_true(o.freed);
        held += o.leaked;
    }

    t_host_finish(host);

    printf("stress_orphan_pop: %d rounds orphaned with %d poppers, "
           "%llu tasks held and leaked\n", rounds, T_ORPHAN_POPPERS,
           (unsigned long long) held);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_pool),
        cmocka_unit_test(test_stress_hosts),
        cmocka_unit_test(test_stress_close),
        cmocka_unit_test(test_stress_echo_close),
        cmocka_unit_test(test_stress_host_churn),
        cmocka_unit_test(test_stress_orphan_pop),
    };

    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
