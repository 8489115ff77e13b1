/*
 * The runtime half of the request queue: batch pop, timeouts, end of
 * queue, the queue fd, and tasks nbffi answers itself (expired, released).
 */

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"

#define T_HOUR_NS  (3600ll * 1000000000)

struct t_popper {
    nbffi_queue_t  *q;
    int             rc;
    nbffi_task_t   *task;
    atomic_int      tid;
    pthread_t       thread;
};

/* Blocks in pop; the main thread makes it return. */
static void *
t_pop_forever(void *arg)
{
    struct t_popper  *p;

    p = arg;
    atomic_store(&p->tid, (int) syscall(SYS_gettid));
    p->rc = nbffi_queue_pop(p->q, &p->task, 1, -1);

    return NULL;
}

/* The scheduler state of a thread of this process: 'R', 'S', ... */
static char
t_thread_state(int tid)
{
    int    n;
    char   path[64], buf[512], *paren;
    FILE  *f;

    (void) snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    f = fopen(path, "r");
    assert_non_null(f);
    n = (int) fread(buf, 1, sizeof(buf) - 1, f);
    (void) fclose(f);
    assert_true(n > 0);
    buf[n] = '\0';

    /* "tid (comm) S ...": comm may hold spaces and parentheses */
    paren = strrchr(buf, ')');
    assert_non_null(paren);

    return paren[2];
}

/*
 * Starts a popper and returns once it sleeps in nbffi_queue_pop(): no
 * event tells that, so the thread's state is polled.
 */
static void
t_start_sleeping_popper(struct t_popper *p, nbffi_queue_t *q)
{
    int64_t  until;

    p->q = q;
    p->rc = -99;
    p->task = NULL;
    atomic_init(&p->tid, 0);
    assert_int_equal(pthread_create(&p->thread, NULL, t_pop_forever, p), 0);

    until = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;

    while (atomic_load(&p->tid) == 0 || t_thread_state(p->tid) != 'S') {
        assert_true(nbffi_now_ns() < until);
        (void) sched_yield();
    }
}

static void
t_drain_fd(int fd)
{
    uint64_t  v;

    assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
}

static void
test_pop_batch_oldest_first(void **state)
{
    int            i;
    char           p[8];
    struct t_fx   *fx;
    nbffi_task_t  *hs[5], *rs[5];

    fx = *state;

    for (i = 0; i < 5; i++) {
        (void) snprintf(p, sizeof(p), "%d", i);
        hs[i] = t_call(fx->host, fx->rt, "m", p);
    }

    assert_int_equal(nbffi_queue_pop(fx->q, rs, 3, 0), 3);
    assert_int_equal(nbffi_queue_pop(fx->q, rs + 3, 3, 0), 2);

    for (i = 0; i < 5; i++) {
        assert_int_equal(nbffi_task_id(rs[i]), nbffi_task_id(hs[i]));
        assert_int_equal(nbffi_task_respond(rs[i], 0, NULL, 0), 0);
        nbffi_task_release(hs[i]);
    }
}

static void
test_pop_empty_no_wait(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    assert_int_equal(nbffi_queue_pop(fx->q, &task, 1, 0), 0);
}

static void
test_pop_empty_times_out(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    assert_int_equal(nbffi_queue_pop(fx->q, &task, 1, 1000000), 0);
}

static void
test_pop_woken_by_call(void **state)
{
    struct t_fx      *fx;
    nbffi_task_t     *task;
    struct t_popper   p;

    fx = *state;

    t_start_sleeping_popper(&p, fx->q);
    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(pthread_join(p.thread, NULL), 0);

    assert_int_equal(p.rc, 1);
    assert_int_equal(nbffi_task_id(p.task), nbffi_task_id(task));

    assert_int_equal(nbffi_task_respond(p.task, 0, "r", 1), 0);
    assert_ptr_equal(t_reap1(fx->host), task);
    nbffi_task_release(task);
}

static void
test_pop_woken_by_close(void **state)
{
    struct t_fx      *fx;
    struct t_popper   p;

    fx = *state;

    /* fini must wait for the popper, a thread of the "runtime". */
    t_ctl_hold_fini();
    t_start_sleeping_popper(&p, fx->q);
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_int_equal(pthread_join(p.thread, NULL), 0);
    t_ctl_release_fini();

    assert_int_equal(p.rc, NBFFI_ECLOSED);
    assert_int_equal(nbffi_runtime_wait(fx->rt, 0), NBFFI_RT_CLOSED);
}

static void
test_pop_without_spin(void **state)
{
    struct t_fx      *fx;
    nbffi_task_t     *task;
    struct t_popper   p;

    fx = *state;

    /* Every idle pop sleeps at once; a call still wakes it. */
    nbffi_runtime_set_spin(fx->rt, 0);

    t_start_sleeping_popper(&p, fx->q);
    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(pthread_join(p.thread, NULL), 0);

    assert_int_equal(p.rc, 1);
    assert_int_equal(nbffi_task_id(p.task), nbffi_task_id(task));
    assert_int_equal(nbffi_task_respond(p.task, 0, NULL, 0), 0);
    nbffi_task_release(task);
}

static void
test_pending_counts_queued_tasks(void **state)
{
    struct t_fx         *fx;
    nbffi_task_t        *a, *b, *out[2];
    const unsigned int  *pending;

    fx = *state;
    pending = nbffi_queue_pending(fx->q);

    assert_int_equal(__atomic_load_n(pending, __ATOMIC_ACQUIRE), 0);
    a = t_call(fx->host, fx->rt, "m", "a");
    b = t_call(fx->host, fx->rt, "m", "b");
    assert_int_equal(__atomic_load_n(pending, __ATOMIC_ACQUIRE), 2);

    assert_int_equal(nbffi_queue_pop(fx->q, out, 2, 0), 2);
    assert_int_equal(__atomic_load_n(pending, __ATOMIC_ACQUIRE), 0);

    assert_int_equal(nbffi_task_respond(out[0], 0, NULL, 0), 0);
    assert_int_equal(nbffi_task_respond(out[1], 0, NULL, 0), 0);
    nbffi_task_release(a);
    nbffi_task_release(b);
}

static void
test_close_delivers_queued_first(void **state)
{
    int            i;
    struct t_fx   *fx;
    nbffi_task_t  *hs[3], *rs[4], *out[3];

    fx = *state;

    for (i = 0; i < 3; i++) {
        hs[i] = t_call(fx->host, fx->rt, "m", "p");
    }
    t_ctl_hold_fini();
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_int_equal(nbffi_queue_closed(fx->q), 1);

    assert_int_equal(nbffi_queue_pop(fx->q, rs, 4, -1), 3);
    assert_int_equal(nbffi_queue_pop(fx->q, rs + 3, 1, -1), NBFFI_ECLOSED);
    assert_int_equal(nbffi_queue_pop(fx->q, rs + 3, 1, 0), NBFFI_ECLOSED);

    /* Answers after close still reach the host. */
    for (i = 0; i < 3; i++) {
        assert_int_equal(nbffi_task_respond(rs[i], 0, "ok", 2), 0);
    }
    t_ctl_release_fini();
    assert_int_equal(nbffi_runtime_wait(fx->rt, 0), NBFFI_RT_CLOSED);
    assert_int_equal(nbffi_host_reap(fx->host, out, 3), 3);

    for (i = 0; i < 3; i++) {
        assert_ptr_equal(out[i], hs[i]);
        t_reply_is(out[i], 0, "ok");
        nbffi_task_release(out[i]);
    }
}

static void
test_queue_closed_flag(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(nbffi_queue_closed(fx->q), 0);
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_int_equal(nbffi_queue_closed(fx->q), 1);
}

static void
test_queue_fd_readable_on_call(void **state)
{
    int            fd;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    fd = nbffi_queue_fd(fx->q);
    assert_true(fd >= 0);
    assert_false(t_readable(fd, 0));

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_true(t_readable(fd, 0));

    /* The documented loop: read to drain, pop until 0. */
    t_drain_fd(fd);
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, NULL, 0), 0);
    assert_false(t_readable(fd, 0));

    nbffi_task_release(task);
}

static void
test_queue_fd_readable_on_close(void **state)
{
    int           fd;
    struct t_fx  *fx;

    fx = *state;

    fd = nbffi_queue_fd(fx->q);
    assert_true(fd >= 0);

    /* Held, or the fd would be closed with the runtime under the poll. */
    t_ctl_hold_fini();
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_true(t_readable(fd, 0));
    t_ctl_release_fini();
}

static void
test_queue_fd_gone_once_closed(void **state)
{
    int           fd;
    struct t_fx  *fx;

    fx = *state;

    fd = nbffi_queue_fd(fx->q);
    assert_true(fd >= 0);

    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), 0);
    assert_int_equal(nbffi_runtime_wait(fx->rt, 0), NBFFI_RT_CLOSED);

    /* Given back at once, and never made again for a closed runtime. */
    assert_int_equal(nbffi_queue_fd(fx->q), NBFFI_ECLOSED);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
}

static void
test_queue_fd_stable(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(nbffi_queue_fd(fx->q), nbffi_queue_fd(fx->q));
}

static void
test_deadline_visible(void **state)
{
    int64_t        deadline;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;
    deadline = nbffi_now_ns() + T_HOUR_NS;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0, deadline,
                                0, &task), 0);
    assert_int_equal(nbffi_task_deadline(t_pop1(fx->q)), deadline);
    assert_int_equal(nbffi_task_respond(task, 0, NULL, 0), 0);

    nbffi_task_release(task);
}

static void
test_no_deadline_is_zero(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_deadline(t_pop1(fx->q)), 0);
    assert_int_equal(nbffi_task_respond(task, 0, NULL, 0), 0);

    nbffi_task_release(task);
}

static void
test_expired_in_queue_times_out(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task, *popped;
    nbffi_stats_t   st;

    fx = *state;

    /* Passed by the time a runtime thread looks at it. */
    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0,
                                nbffi_now_ns() + 1, 0, &task), 0);

    assert_int_equal(nbffi_queue_pop(fx->q, &popped, 1, 0), 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ETIMEDOUT);

    st = t_stats(fx->rt);
    assert_int_equal(st.timed_out, 1);
    assert_int_equal(st.queued, 0);

    nbffi_task_release(task);
}

static void
test_released_before_pop_not_delivered(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task, *out;
    nbffi_stats_t   st;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    nbffi_task_release(task);

    assert_int_equal(nbffi_queue_pop(fx->q, &task, 1, 0), 0);

    /* Its completion is freed by the reaper, never returned. */
    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
    assert_int_equal(nbffi_host_tasks_freed(fx->host), fx->allocated + 1);

    st = t_stats(fx->rt);
    assert_int_equal(st.abandoned, 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.queued, 0);
}

static void
test_pop_skips_only_dead_tasks(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *expired, *live, *released, *out[3];

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0,
                                nbffi_now_ns() + 1, 0, &expired), 0);
    live = t_call(fx->host, fx->rt, "m", "p");
    released = t_call(fx->host, fx->rt, "m", "p");
    nbffi_task_release(released);

    assert_int_equal(nbffi_queue_pop(fx->q, out, 3, 0), 1);
    assert_int_equal(nbffi_task_id(out[0]), nbffi_task_id(live));
    assert_int_equal(nbffi_task_respond(out[0], 0, NULL, 0), 0);

    /* Reaped: the expired one and the answered one, in completion order. */
    assert_int_equal(nbffi_host_reap(fx->host, out, 3), 2);
    assert_ptr_equal(out[0], expired);
    assert_ptr_equal(out[1], live);
    assert_int_equal(nbffi_task_status(expired), NBFFI_ETIMEDOUT);
    assert_int_equal(nbffi_task_status(live), 0);

    nbffi_task_release(expired);
    nbffi_task_release(live);
}

struct t_sched {
    nbffi_queue_t  *q;
    int             reset;      /* sched_setscheduler's, before it */
    int             policy;     /* after the pop */
};

static void *
t_pop_sched(void *arg)
{
    nbffi_task_t        *task;
    struct t_sched      *ts;
    struct sched_param   sp;

    ts = arg;
    /* threads inherit the policy: this one's creator may have popped */
    memset(&sp, 0, sizeof(sp));
    ts->reset = sched_setscheduler(0, SCHED_OTHER, &sp);
    (void) nbffi_queue_pop(ts->q, &task, 1, 0);
    ts->policy = sched_getscheduler(0);

    return NULL;
}

/* The policy of a new SCHED_OTHER thread after its first pop on q. */
static int
t_policy_after_pop(nbffi_queue_t *q)
{
    pthread_t       thread;
    struct t_sched  ts;

    ts.q = q;
    ts.policy = -1;
    assert_int_equal(pthread_create(&thread, NULL, t_pop_sched, &ts), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(ts.reset, 0);

    return ts.policy;
}

static void
test_pop_makes_thread_batch(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(t_policy_after_pop(fx->q), SCHED_BATCH);
}

static void
test_pop_sched_normal_left_alone(void **state)
{
    char              err[256];
    nbffi_host_t     *host;
    nbffi_queue_t    *q;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    assert_int_equal(t_load_wait(host, T_CTL_PATH, NULL, "", 0, 0, 0, 0,
                                 NBFFI_LOAD_SCHED_NORMAL, &rt, err,
                                 sizeof(err)),
                     0);
    t_ctl_reset();
    q = t_ctl_get()->q;
    assert_non_null(q);

    assert_int_equal(t_policy_after_pop(q), SCHED_OTHER);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}

/* The answering side of test_answer_to_spinner_keeps_spinning. */
struct t_answerer {
    nbffi_queue_t  *q;
    atomic_int      step;       /* 1: idle, 2: host spins, 3: in its pop */
    atomic_int      tid;
    int             rc;         /* of the pop that follows the answer */
    long            nvcsw;      /* voluntary switches in that pop */
    pthread_t       thread;
};

static void *
t_answer_then_pop(void *arg)
{
    int                 i;
    int64_t             t;
    nbffi_task_t       *task;
    struct rusage       ru0, ru1;
    struct t_answerer  *a;

    a = arg;
    atomic_store(&a->tid, (int) syscall(SYS_gettid));

    /* Idle pops of 1 ms halve the 50 us budget to nothing. */
    for (i = 0; i < 10; i++) {
        (void) nbffi_queue_pop(a->q, &task, 1, 1000000);
    }
    atomic_store(&a->step, 1);

    while (atomic_load(&a->step) != 2) {
        (void) sched_yield();
    }
    /* posted before this pop: taken without a spin or a sleep, whose end
     * would raise the budget by itself */
    if (nbffi_queue_pop(a->q, &task, 1, 0) != 1) {
        a->rc = -1;
        return NULL;
    }
    t = nbffi_now_ns() + 20000;         /* let the host's spin begin */
    while (nbffi_now_ns() < t) {
    }
    (void) nbffi_task_respond(task, 0, "one", 3);

    (void) getrusage(RUSAGE_THREAD, &ru0);
    atomic_store(&a->step, 3);
    a->rc = nbffi_queue_pop(a->q, &task, 1, -1);
    (void) getrusage(RUSAGE_THREAD, &ru1);
    a->nvcsw = ru1.ru_nvcsw - ru0.ru_nvcsw;
    if (a->rc == 1) {
        (void) nbffi_task_respond(task, 0, "two", 3);
    }

    return NULL;
}

/* CPU time (ns) of the thread whose CPU clock is cid. */
static int64_t
t_cpu_ns(clockid_t cid)
{
    struct timespec  ts;

    assert_int_equal(clock_gettime(cid, &ts), 0);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until thread is asleep or has burnt 5 ms of CPU spinning. */
static void
t_wait_asleep_or_spinning(struct t_answerer *a, int64_t until)
{
    clockid_t  cid;
    int64_t    cpu0;

    assert_int_equal(pthread_getcpuclockid(a->thread, &cid), 0);
    cpu0 = t_cpu_ns(cid);

    for ( ;; ) {
        if (t_thread_state(atomic_load(&a->tid)) == 'S') {
            return;
        }
        if (t_cpu_ns(cid) - cpu0 >= 5000000) {
            return;
        }
        assert_true(nbffi_now_ns() < until);
        (void) sched_yield();
    }
}

/*
 * A runtime thread that answers a caller spinning for the reply spins for
 * that caller's next call at its full budget, even when idle pops brought
 * the budget to nothing (task.c): else a caller that yields because the
 * runtime sleeps, and a runtime that sleeps because that caller posts
 * late, keep each other slow.  The next pop then takes the call without
 * sleeping: no voluntary context switch.  A round whose answer came
 * before the host's spin began (the host's notifier was written) is run
 * again.
 */
static void
test_answer_to_spinner_keeps_spinning(void **state)
{
    int                 round, fd, raced;
    int64_t             until;
    struct t_fx        *fx;
    nbffi_task_t       *t1, *t2;
    struct t_answerer   a;

    fx = *state;
    fd = nbffi_host_fd(fx->host);
    nbffi_runtime_set_spin(fx->rt, T_HOUR_NS);

    raced = 1;
    for (round = 0; round < 20 && raced; round++) {
        a.q = fx->q;
        a.rc = -99;
        a.nvcsw = -1;
        atomic_init(&a.step, 0);
        atomic_init(&a.tid, 0);
        assert_int_equal(pthread_create(&a.thread, NULL, t_answer_then_pop,
                                        &a), 0);

        until = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;
        while (atomic_load(&a.step) != 1) {
            assert_true(nbffi_now_ns() < until);
            (void) sched_yield();
        }

        t1 = t_call(fx->host, fx->rt, "m", "p1");
        atomic_store(&a.step, 2);
        assert_int_equal(nbffi_host_spin(fx->host, t1,
                                         (int64_t) T_WAIT_MS * 1000000), 1);
        raced = t_readable(fd, 0);
        assert_ptr_equal(t_reap1(fx->host), t1);
        t_reply_is(t1, 0, "one");
        nbffi_task_release(t1);

        while (atomic_load(&a.step) != 3) {
            assert_true(nbffi_now_ns() < until);
            (void) sched_yield();
        }
        t_wait_asleep_or_spinning(&a, until);

        t2 = t_call(fx->host, fx->rt, "m", "p2");
        assert_int_equal(pthread_join(a.thread, NULL), 0);
        assert_int_equal(a.rc, 1);
        assert_ptr_equal(t_reap1(fx->host), t2);
        t_reply_is(t2, 0, "two");
        nbffi_task_release(t2);
        nbffi_host_drain(fx->host);
    }

    assert_false(raced);
    assert_int_equal(a.nvcsw, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_FX(test_pop_batch_oldest_first),
        T_FX(test_pop_empty_no_wait),
        T_FX(test_pop_empty_times_out),
        T_FX(test_pop_woken_by_call),
        T_FX(test_pop_woken_by_close),
        T_FX(test_pop_without_spin),
        T_FX(test_pending_counts_queued_tasks),
        T_FX(test_close_delivers_queued_first),
        T_FX(test_queue_closed_flag),
        T_FX(test_queue_fd_readable_on_call),
        T_FX(test_queue_fd_readable_on_close),
        T_FX(test_queue_fd_gone_once_closed),
        T_FX(test_queue_fd_stable),
        T_FX(test_deadline_visible),
        T_FX(test_no_deadline_is_zero),
        T_FX(test_expired_in_queue_times_out),
        T_FX(test_released_before_pop_not_delivered),
        T_FX(test_pop_skips_only_dead_tasks),
        T_FX(test_pop_makes_thread_batch),
        T_FX(test_answer_to_spinner_keeps_spinning),
        cmocka_unit_test(test_pop_sched_normal_left_alone),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
