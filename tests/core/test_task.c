/*
 * Answering tasks: getters, respond and respond_owned, statuses, a host
 * that lets go first, and tasks left behind when a runtime is freed.
 */

#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct t_owned {
    int    calls;
    void  *data;
    void  *ud;
};

static void
t_free_cb(void *data, void *ud)
{
    struct t_owned  *o;

    o = ud;
    o->calls++;
    o->data = data;
    o->ud = ud;
    free(data);
}

static void *
t_dup(const char *s)
{
    void  *p;

    p = malloc(strlen(s));
    assert_non_null(p);
    memcpy(p, s, strlen(s));

    return p;
}

static void
test_getters(void **state)
{
    size_t         len;
    const char    *m;
    const void    *p;
    struct t_fx   *fx;
    nbffi_task_t  *task, *rt_task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "method", "payload");
    rt_task = t_pop1(fx->q);

    m = nbffi_task_method(rt_task, &len);
    assert_int_equal(len, 6);
    assert_string_equal(m, "method");

    p = nbffi_task_payload(rt_task, &len);
    assert_int_equal(len, 7);
    assert_memory_equal(p, "payload", 7);

    assert_int_equal(nbffi_task_cancelled(rt_task), 0);

    nbffi_task_release(task);
}

static void
test_respond_copies(void **state)
{
    char           buf[8] = "reply";
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, buf, 5), 0);
    memcpy(buf, "XXXXX", 5);

    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 0, "reply");

    nbffi_task_release(task);
}

static void
test_respond_empty(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, NULL, 0), 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 0, NULL);

    nbffi_task_release(task);
}

static void
test_respond_owned_hands_over(void **state)
{
    void            *data;
    size_t           len;
    struct t_fx     *fx;
    nbffi_task_t    *task;
    struct t_owned   o = { 0, NULL, NULL };

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    data = t_dup("owned");
    assert_int_equal(nbffi_task_respond_owned(t_pop1(fx->q), 0, data, 5,
                                              t_free_cb, &o), 0);

    assert_ptr_equal(t_reap1(fx->host), task);

    /* Not copied, and alive until the host is done with it. */
    assert_ptr_equal(nbffi_task_reply(task, &len), data);
    assert_int_equal(len, 5);
    assert_int_equal(o.calls, 0);

    nbffi_task_release(task);
    assert_int_equal(o.calls, 1);
    assert_ptr_equal(o.data, data);
    assert_ptr_equal(o.ud, &o);
}

static void
test_respond_owned_after_host_gave_up(void **state)
{
    struct t_fx     *fx;
    nbffi_task_t    *task, *rt_task, *out;
    struct t_owned   o = { 0, NULL, NULL };

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    rt_task = t_pop1(fx->q);

    nbffi_task_release(task);
    assert_int_equal(nbffi_task_cancelled(rt_task), 1);

    assert_int_equal(nbffi_task_respond_owned(rt_task, 0, t_dup("late"), 4,
                                              t_free_cb, &o), 0);

    /* Freed by the reaper, never returned; free_cb exactly once. */
    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(o.calls, 1);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
}

static void
test_late_reply_freed(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task, *rt_task, *out;
    nbffi_stats_t   st;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    rt_task = t_pop1(fx->q);
    nbffi_task_release(task);

    assert_int_equal(nbffi_host_tasks_live(fx->host), 1);
    assert_int_equal(nbffi_task_respond(rt_task, 0, "late", 4), 0);

    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host),
                     nbffi_host_tasks_freed(fx->host));

    st = t_stats(fx->rt);
    assert_int_equal(st.abandoned, 1);
    assert_int_equal(st.in_flight, 0);
}

static void
test_runtime_error_status(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task;
    nbffi_stats_t   st;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 7, "bad input", 9), 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 7, "bad input");

    st = t_stats(fx->rt);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.completed, 0);

    nbffi_task_release(task);
}

static void
test_negative_status_is_eruntime(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), -5, NULL, 0), 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ERUNTIME);

    nbffi_task_release(task);
}

static void
test_negative_status_owned_is_eruntime(void **state)
{
    struct t_fx     *fx;
    nbffi_task_t    *task;
    struct t_owned   o = { 0, NULL, NULL };

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond_owned(t_pop1(fx->q),
                                              NBFFI_ECLOSED, t_dup("x"), 1,
                                              t_free_cb, &o), 0);

    assert_ptr_equal(t_reap1(fx->host), task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ERUNTIME);

    nbffi_task_release(task);
    assert_int_equal(o.calls, 1);
}

static void
test_completed_counted(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task, *rt_task;
    nbffi_stats_t   st;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    rt_task = t_pop1(fx->q);

    st = t_stats(fx->rt);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.in_flight, 1);

    /* Counted when reaped. */
    assert_int_equal(nbffi_task_respond(rt_task, 0, NULL, 0), 0);
    assert_ptr_equal(t_reap1(fx->host), task);

    st = t_stats(fx->rt);
    assert_int_equal(st.posted, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.in_flight, 0);

    nbffi_task_release(task);
}

static void
test_free_closes_popped_tasks(void **state)
{
    unsigned       finis;
    struct t_fx   *fx;
    nbffi_task_t  *task, *out;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    (void) t_pop1(fx->q);
    finis = t_ctl_get()->finis;

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    assert_int_equal(t_ctl_get()->finis, finis + 1);

    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 1);
    assert_ptr_equal(out, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ECLOSED);

    nbffi_task_release(task);
}

static void
test_free_closes_queued_tasks(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task, *out;

    fx = *state;

    /* Never popped: nothing may vanish (invariant 1). */
    task = t_call(fx->host, fx->rt, "m", "p");

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 1);
    assert_ptr_equal(out, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_ECLOSED);

    nbffi_task_release(task);
}

static void
test_free_with_released_popped_task(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task, *out;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    (void) t_pop1(fx->q);
    nbffi_task_release(task);

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);
}

static void
test_owned_reply_outlives_runtime(void **state)
{
    struct t_fx     *fx;
    nbffi_task_t    *task;
    struct t_owned   o = { 0, NULL, NULL };

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond_owned(t_pop1(fx->q), 0,
                                              t_dup("kept"), 4, t_free_cb,
                                              &o), 0);
    assert_ptr_equal(t_reap1(fx->host), task);

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    t_reply_is(task, 0, "kept");
    assert_int_equal(o.calls, 0);

    nbffi_task_release(task);
    assert_int_equal(o.calls, 1);
}

static void
test_in_flight_and_queued(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *a, *b, *ra, *out;
    nbffi_stats_t   st;

    fx = *state;

    a = t_call(fx->host, fx->rt, "m", "p");
    b = t_call(fx->host, fx->rt, "m", "p");
    ra = t_pop1(fx->q);

    st = t_stats(fx->rt);
    assert_int_equal(st.posted, 2);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.in_flight, 2);

    assert_int_equal(nbffi_task_respond(ra, 0, NULL, 0), 0);
    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 1);

    st = t_stats(fx->rt);
    assert_int_equal(st.in_flight, 1);
    assert_int_equal(st.queued, 1);

    nbffi_task_release(a);
    nbffi_task_release(b);
}

static void
test_release_after_deadline_times_out(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task;
    nbffi_stats_t   st;

    fx = *state;

    /* The host gives up once the deadline passed: a timeout, not a
     * cancellation. */
    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0,
                                nbffi_now_ns() + 1, 0, &task), 0);
    while (nbffi_now_ns() <= nbffi_task_deadline(task)) {
        /* a nanosecond */
    }
    nbffi_task_release(task);

    st = t_stats(fx->rt);
    assert_int_equal(st.timed_out, 1);
    assert_int_equal(st.abandoned, 0);
    assert_int_equal(st.in_flight, 0);
}

static void
test_release_before_deadline_abandons(void **state)
{
    struct t_fx    *fx;
    nbffi_task_t   *task;
    nbffi_stats_t   st;

    fx = *state;

    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, NULL, 0,
                                nbffi_now_ns() + 3600ll * 1000000000, 0,
                                &task), 0);
    nbffi_task_release(task);

    st = t_stats(fx->rt);
    assert_int_equal(st.abandoned, 1);
    assert_int_equal(st.timed_out, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_FX(test_getters),
        T_FX(test_respond_copies),
        T_FX(test_respond_empty),
        T_FX(test_respond_owned_hands_over),
        T_FX(test_respond_owned_after_host_gave_up),
        T_FX(test_late_reply_freed),
        T_FX(test_runtime_error_status),
        T_FX(test_negative_status_is_eruntime),
        T_FX(test_negative_status_owned_is_eruntime),
        T_FX(test_completed_counted),
        T_FX(test_free_closes_popped_tasks),
        T_FX(test_free_closes_queued_tasks),
        T_FX(test_free_with_released_popped_task),
        T_FX(test_owned_reply_outlives_runtime),
        T_FX(test_in_flight_and_queued),
        T_FX(test_release_after_deadline_times_out),
        T_FX(test_release_before_deadline_abandons),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
