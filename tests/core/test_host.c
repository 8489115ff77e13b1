/*
 * Hosts with an eventfd notifier: life cycle, wake-ups and their
 * coalescing, reaping, pending, spinning and the task counters.
 */

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "harness.h"

static uint64_t
t_eventfd_count(int fd)
{
    uint64_t  v;

    assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));

    return v;
}

/* Posts n tasks whose payloads are "0", "1", ... and pops them in order. */
static void
t_post_pop(struct t_fx *fx, int n, nbffi_task_t **host_side,
    nbffi_task_t **rt_side)
{
    int   i;
    char  p[16];

    for (i = 0; i < n; i++) {
        (void) snprintf(p, sizeof(p), "%d", i);
        host_side[i] = t_call(fx->host, fx->rt, "echo", p);
    }

    assert_int_equal(nbffi_queue_pop(fx->q, rt_side, n, 0), n);
}

static void
test_host_new_eventfd(void **state)
{
    int            fd;
    nbffi_host_t  *host;

    (void) state;

    host = NULL;
    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    assert_non_null(host);

    fd = nbffi_host_fd(host);
    assert_true(fd >= 0);
    assert_false(t_readable(fd, 0));

    t_host_finish(host);
}

static void
test_host_fd_einval_on_socket_host(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_SOCKET), 0);
    assert_int_equal(nbffi_host_fd(host), NBFFI_EINVAL);

    t_host_finish(host);
}

static void
test_host_free_busy_with_runtime(void **state)
{
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    rt = t_load_ctl(host, 0, 0, NULL);

    assert_int_equal(nbffi_host_free(host), NBFFI_EBUSY);

    nbffi_runtime_free(rt);
    t_host_finish(host);
}

static void
test_host_free_busy_with_unreleased_task(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    (void) t_call(fx->host, fx->rt, "echo", "x");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, "y", 1), 0);
    assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    fx->rt = NULL;

    task = t_reap1(fx->host);
    assert_int_equal(nbffi_host_free(fx->host), NBFFI_EBUSY);

    nbffi_task_release(task);
}

static void
test_host_free_busy_while_fini_runs(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    /* No handle and no task left, but a core thread still runs fini and
     * may yet push to the host. */
    t_ctl_hold_fini();
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);

    assert_int_equal(nbffi_host_free(fx->host), NBFFI_EBUSY);

    t_ctl_release_fini();
}

static void
test_life_cycle_tasks_counted(void **state)
{
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    assert_int_equal(nbffi_runtime_load(host, T_CTL_PATH, NULL, NULL, 0, 0,
                                        0, 0, 0, &rt, &task), 0);

    /* The load task is the host's like a call: counted, and keeping the
     * host busy until released. */
    assert_int_equal(nbffi_host_tasks_allocated(host), 1);
    assert_int_equal(nbffi_host_tasks_live(host), 1);

    t_wait_task(host, task);
    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    assert_int_equal(nbffi_host_free(host), NBFFI_EBUSY);

    nbffi_task_release(task);
    assert_int_equal(nbffi_host_tasks_live(host), 0);
    assert_int_equal(nbffi_host_tasks_freed(host), 1);

    t_host_finish(host);
}

static void
test_kick_wakes_and_drain_clears(void **state)
{
    int           fd;
    struct t_fx  *fx;

    fx = *state;
    fd = nbffi_host_fd(fx->host);

    nbffi_host_kick(fx->host);
    assert_true(t_readable(fd, 0));

    nbffi_host_drain(fx->host);
    assert_false(t_readable(fd, 0));
}

static void
test_drain_when_idle(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    /* Must not block on an eventfd that holds nothing. */
    nbffi_host_drain(fx->host);
    assert_false(t_readable(nbffi_host_fd(fx->host), 0));
}

static void
test_completion_wakes(void **state)
{
    int            fd;
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;
    fd = nbffi_host_fd(fx->host);

    task = t_call(fx->host, fx->rt, "echo", "a");
    assert_false(t_readable(fd, 0));

    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, "b", 1), 0);
    assert_true(t_readable(fd, 0));

    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 0, "b");
    nbffi_task_release(task);
}

static void
test_many_completions_one_wake(void **state)
{
    int            i;
    struct t_fx   *fx;
    nbffi_task_t  *hs[10], *rs[10], *out[10];

    fx = *state;

    t_post_pop(fx, 10, hs, rs);
    for (i = 0; i < 10; i++) {
        assert_int_equal(nbffi_task_respond(rs[i], 0, "r", 1), 0);
    }

    /* One write to the eventfd for the whole burst. */
    assert_int_equal(t_eventfd_count(nbffi_host_fd(fx->host)), 1);

    assert_int_equal(nbffi_host_reap(fx->host, out, 10), 10);
    for (i = 0; i < 10; i++) {
        nbffi_task_release(out[i]);
    }
}

static void
test_no_second_wake_before_reap(void **state)
{
    int            fd;
    struct t_fx   *fx;
    nbffi_task_t  *hs[2], *rs[2], *out[2];

    fx = *state;
    fd = nbffi_host_fd(fx->host);

    t_post_pop(fx, 2, hs, rs);

    assert_int_equal(nbffi_task_respond(rs[0], 0, NULL, 0), 0);
    nbffi_host_drain(fx->host);

    /* The host was signalled and has not reaped yet: no new wake-up. */
    assert_int_equal(nbffi_task_respond(rs[1], 0, NULL, 0), 0);
    assert_false(t_readable(fd, 0));

    assert_int_equal(nbffi_host_reap(fx->host, out, 2), 2);
    nbffi_task_release(out[0]);
    nbffi_task_release(out[1]);
}

static void
test_reap_rearms_notifier(void **state)
{
    int            fd;
    struct t_fx   *fx;
    nbffi_task_t  *hs[2], *rs[2], *out[2];

    fx = *state;
    fd = nbffi_host_fd(fx->host);

    t_post_pop(fx, 2, hs, rs);

    assert_int_equal(nbffi_task_respond(rs[0], 0, NULL, 0), 0);
    nbffi_host_drain(fx->host);
    assert_int_equal(nbffi_host_reap(fx->host, out, 2), 1);
    assert_false(t_readable(fd, 0));

    assert_int_equal(nbffi_task_respond(rs[1], 0, NULL, 0), 0);
    assert_true(t_readable(fd, 0));

    assert_int_equal(nbffi_host_reap(fx->host, &out[1], 1), 1);
    nbffi_task_release(out[0]);
    nbffi_task_release(out[1]);
}

static void
test_reap_batches_in_completion_order(void **state)
{
    int            i;
    struct t_fx   *fx;
    nbffi_task_t  *hs[5], *rs[5], *out[5];

    fx = *state;

    t_post_pop(fx, 5, hs, rs);
    for (i = 4; i >= 0; i--) {
        assert_int_equal(nbffi_task_respond(rs[i], 0, NULL, 0), 0);
    }

    /* Oldest completion first, at most max per call. */
    assert_int_equal(nbffi_host_reap(fx->host, out, 2), 2);
    assert_ptr_equal(out[0], hs[4]);
    assert_ptr_equal(out[1], hs[3]);
    assert_int_equal(nbffi_host_reap(fx->host, out + 2, 2), 2);
    assert_ptr_equal(out[2], hs[2]);
    assert_ptr_equal(out[3], hs[1]);
    assert_int_equal(nbffi_host_reap(fx->host, out + 4, 2), 1);
    assert_ptr_equal(out[4], hs[0]);
    assert_int_equal(nbffi_host_reap(fx->host, out, 2), 0);

    for (i = 0; i < 5; i++) {
        nbffi_task_release(out[i]);
    }
}

static void
test_reap_empty(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *out[4];

    fx = *state;

    assert_int_equal(nbffi_host_reap(fx->host, out, 4), 0);
}

static void
test_pending(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "echo", "a");
    assert_false(nbffi_host_pending(fx->host));

    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, NULL, 0), 0);
    assert_true(nbffi_host_pending(fx->host));

    assert_ptr_equal(t_reap1(fx->host), task);
    assert_false(nbffi_host_pending(fx->host));
    nbffi_task_release(task);
}

static void
test_spin_completed_task(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "echo", "a");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, NULL, 0), 0);

    assert_int_equal(nbffi_host_spin(fx->host, task, 0), 1);

    assert_ptr_equal(t_reap1(fx->host), task);
    nbffi_task_release(task);
}

static void
test_spin_gives_up(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "echo", "a");
    assert_int_equal(nbffi_host_spin(fx->host, task, 1000000), 0);

    nbffi_task_release(task);
}

/* cmocka asserts only on the main thread: results go back through arg. */
struct t_responder {
    nbffi_queue_t  *q;
    int             popped;
    int             responded;
};

static void *
t_respond_one(void *arg)
{
    nbffi_task_t        *task;
    struct t_responder  *r;

    r = arg;

    r->popped = nbffi_queue_pop(r->q, &task, 1, -1);
    if (r->popped == 1) {
        r->responded = nbffi_task_respond(task, 0, "late", 4);
    }

    return NULL;
}

static void
test_spin_sees_completion_from_other_thread(void **state)
{
    pthread_t           tid;
    struct t_fx        *fx;
    nbffi_task_t       *task;
    struct t_responder  r;

    fx = *state;
    r.q = fx->q;
    r.popped = -1;
    r.responded = -1;

    task = t_call(fx->host, fx->rt, "echo", "a");
    assert_int_equal(pthread_create(&tid, NULL, t_respond_one, &r), 0);

    assert_int_equal(nbffi_host_spin(fx->host, task,
                                     (int64_t) T_WAIT_MS * 1000000), 1);
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_int_equal(r.popped, 1);
    assert_int_equal(r.responded, 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 0, "late");
    nbffi_task_release(task);
}

static void
test_task_counters(void **state)
{
    int            i;
    struct t_fx   *fx;
    nbffi_task_t  *hs[3], *rs[3], *out[3];

    fx = *state;

    /* The setup's load task is allocated and freed already. */
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
    assert_int_equal(nbffi_host_tasks_freed(fx->host), fx->allocated);

    t_post_pop(fx, 3, hs, rs);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 3);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host),
                     fx->allocated + 3);
    assert_int_equal(nbffi_host_tasks_freed(fx->host), fx->allocated);

    for (i = 0; i < 3; i++) {
        assert_int_equal(nbffi_task_respond(rs[i], 0, NULL, 0), 0);
    }

    /* A reaped task lives until the host releases it. */
    assert_int_equal(nbffi_host_reap(fx->host, out, 3), 3);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 3);

    nbffi_task_release(out[0]);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 2);
    assert_int_equal(nbffi_host_tasks_freed(fx->host), fx->allocated + 1);

    nbffi_task_release(out[1]);
    nbffi_task_release(out[2]);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host),
                     fx->allocated + 3);
    assert_int_equal(nbffi_host_tasks_freed(fx->host), fx->allocated + 3);
    assert_int_equal(nbffi_host_tasks_leaked(fx->host), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_new_eventfd),
        cmocka_unit_test(test_host_fd_einval_on_socket_host),
        cmocka_unit_test(test_host_free_busy_with_runtime),
        T_FX(test_host_free_busy_with_unreleased_task),
        T_FX(test_host_free_busy_while_fini_runs),
        cmocka_unit_test(test_life_cycle_tasks_counted),
        T_FX(test_kick_wakes_and_drain_clears),
        T_FX(test_drain_when_idle),
        T_FX(test_completion_wakes),
        T_FX(test_many_completions_one_wake),
        T_FX(test_no_second_wake_before_reap),
        T_FX(test_reap_rearms_notifier),
        T_FX(test_reap_batches_in_completion_order),
        T_FX(test_reap_empty),
        T_FX(test_pending),
        T_FX(test_spin_completed_task),
        T_FX(test_spin_gives_up),
        T_FX(test_spin_sees_completion_from_other_thread),
        T_FX(test_task_counters),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
