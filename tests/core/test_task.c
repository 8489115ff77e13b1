/*
 * Answering tasks: getters, respond and respond_owned, statuses, a host
 * that lets go first, tasks left behind when a runtime is freed, and
 * answer-once with runtime threads of their own.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define T_RACE_ROUNDS  2000

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
    assert_int_equal(nbffi_task_respond(rt_task, 0, NULL, 0), 0);

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

/*
 * Large payloads and replies arrive intact at every alignment of source
 * against destination, and a reply that overlaps the payload it replaces
 * too (copy.c copies blocks of more than 2 KB in pieces).
 */
static void
test_large_copies_any_alignment(void **state)
{
    enum { N = 10000 };
    int            off;
    size_t         len;
    char          *payload, *src;
    const char    *reply;
    struct t_fx   *fx;
    nbffi_task_t  *task, *rt_task;

    fx = *state;
    payload = malloc(N + 64 + 1);
    src = malloc(N + 100 + 64);
    assert_non_null(payload);
    assert_non_null(src);
    for (off = 0; off < N + 100 + 64; off++) {
        src[off] = (char) ('a' + off % 23);
    }

    for (off = 0; off < 64; off += 5) {
        /* payload copied in, reply copied over it (inline) */
        memcpy(payload + off, src + 64 - off, N);
        payload[off + N] = '\0';
        task = t_call(fx->host, fx->rt, "m", payload + off);
        rt_task = t_pop1(fx->q);
        reply = nbffi_task_payload(rt_task, &len);
        assert_int_equal(len, N);
        assert_memory_equal(reply, src + 64 - off, N);
        assert_int_equal(nbffi_task_respond(rt_task, 0, src + off, N), 0);
        assert_ptr_equal(t_reap1(fx->host), task);
        reply = nbffi_task_reply(task, &len);
        assert_int_equal(len, N);
        assert_memory_equal(reply, src + off, N);
        nbffi_task_release(task);

        /* a reply larger than the payload: copied to memory of its own */
        task = t_call(fx->host, fx->rt, "m", payload + off);
        assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, src + off,
                                            N + 100), 0);
        assert_ptr_equal(t_reap1(fx->host), task);
        reply = nbffi_task_reply(task, &len);
        assert_int_equal(len, N + 100);
        assert_memory_equal(reply, src + off, N + 100);
        nbffi_task_release(task);
    }

    /* the payload's tail as the reply: the two overlap */
    memcpy(payload, src + 64, N);
    payload[N] = '\0';
    task = t_call(fx->host, fx->rt, "m", payload);
    rt_task = t_pop1(fx->q);
    reply = nbffi_task_payload(rt_task, &len);
    assert_int_equal(nbffi_task_respond(rt_task, 0, reply + 3, len - 3), 0);
    assert_ptr_equal(t_reap1(fx->host), task);
    reply = nbffi_task_reply(task, &len);
    assert_int_equal(len, N - 3);
    assert_memory_equal(reply, src + 64 + 3, N - 3);
    nbffi_task_release(task);

    free(payload);
    free(src);
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
test_answer_after_free_delivered(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task, *rt_task;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    rt_task = t_pop1(fx->q);

    /* Freed while a runtime thread (this one) works on a task: fini waits
     * for it, as a fini that joins its threads does. */
    t_ctl_hold_fini();
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    assert_int_equal(nbffi_task_respond(rt_task, 0, "done", 4), 0);
    assert_int_equal(nbffi_queue_pop(fx->q, &rt_task, 1, 0), NBFFI_ECLOSED);
    t_ctl_release_fini();

    /* The answer, not "closed": the runtime was not orphaned. */
    t_wait_task(fx->host, task);
    t_reply_is(task, 0, "done");
    assert_false(nbffi_task_leaked(task));

    nbffi_task_release(task);
}

static void
test_free_closes_queued_tasks(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    /* Never popped: nothing may vanish (invariant 1). */
    task = t_call(fx->host, fx->rt, "m", "p");

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    t_wait_task(fx->host, task);
    t_reply_is(task, NBFFI_ECLOSED, NULL);
    assert_false(nbffi_task_leaked(task));

    nbffi_task_release(task);
}

static void
test_orphan_leaks_released_held_task(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task, *rt_task, *ctask, *out;

    fx = *state;

    task = t_call(fx->host, fx->rt, "m", "p");
    rt_task = t_pop1(fx->q);
    nbffi_task_release(task);

    /* fini returns while the task is held: orphaned.  The host gave the
     * task up already, so its completion is not returned; it is counted
     * leaked, not freed, since the runtime may still read it. */
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, &ctask), 0);
    t_wait_task(fx->host, ctask);
    assert_int_equal(nbffi_task_status(ctask), NBFFI_EORPHANED);
    nbffi_task_release(ctask);

    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(nbffi_host_tasks_leaked(fx->host), 1);
    assert_int_equal(nbffi_host_tasks_live(fx->host), 0);

    assert_int_equal(nbffi_task_respond(rt_task, 0, "late", 4),
                     NBFFI_EALREADY);

    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
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

    assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
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

/* A runtime thread that answers once, then again when told to. */
struct t_twice {
    nbffi_queue_t    *q;
    pthread_t         tid;
    struct t_event    again;        /* the host freed the task: go on */
    int               popped;
    int               first, second, second_owned;
    struct t_owned   *o;
};

static void *
t_twice_main(void *arg)
{
    char             *data;
    nbffi_task_t     *task;
    struct t_twice   *tw;

    tw = arg;

    tw->popped = nbffi_queue_pop(tw->q, &task, 1, -1);
    if (tw->popped != 1) {
        return NULL;
    }

    tw->first = nbffi_task_respond(task, 0, "one", 3);

    t_event_wait(&tw->again);

    /* task is freed memory now: both answers must be refused without
     * touching it (ASan would see a use after free). */
    tw->second = nbffi_task_respond(task, 0, "two", 3);

    data = malloc(5);
    if (data != NULL) {
        memcpy(data, "three", 5);
        tw->second_owned = nbffi_task_respond_owned(task, 0, data, 5,
                                                    t_free_cb, tw->o);
        if (tw->second_owned != 0) {
            free(data);             /* refused: still the caller's */
        }
    }

    return NULL;
}

static void
test_answer_twice_after_host_freed_it(void **state)
{
    struct t_fx     *fx;
    nbffi_task_t    *task, *out;
    struct t_twice   tw;
    struct t_owned   o = { 0, NULL, NULL };

    fx = *state;

    memset(&tw, 0, sizeof(tw));
    tw.q = fx->q;
    tw.o = &o;
    t_event_init(&tw.again);
    assert_int_equal(pthread_create(&tw.tid, NULL, t_twice_main, &tw), 0);

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, 0, "one");
    nbffi_task_release(task);

    t_event_set(&tw.again);
    assert_int_equal(pthread_join(tw.tid, NULL), 0);

    assert_int_equal(tw.popped, 1);
    assert_int_equal(tw.first, 0);
    assert_int_equal(tw.second, NBFFI_EALREADY);
    assert_int_equal(tw.second_owned, NBFFI_EALREADY);

    /* No second delivery, and the refused reply was never taken over. */
    assert_false(nbffi_host_pending(fx->host));
    assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);
    assert_int_equal(o.calls, 0);

    t_event_destroy(&tw.again);
}

/* Two runtime threads that answer the same task at the same moment. */
struct t_racer {
    pthread_t           tid;
    pthread_barrier_t  *start;
    pthread_barrier_t  *end;
    nbffi_task_t      **task;
    int                 owned;      /* answers with respond_owned */
    int                 rc;         /* this round's */
    struct t_owned     *o;
};

static void *
t_racer_main(void *arg)
{
    int              i;
    char            *data;
    struct t_racer  *r;

    r = arg;

    for (i = 0; i < T_RACE_ROUNDS; i++) {
        (void) pthread_barrier_wait(r->start);

        if (r->owned) {
            data = malloc(5);
            r->rc = NBFFI_ENOMEM;
            if (data != NULL) {
                memcpy(data, "owned", 5);
                r->rc = nbffi_task_respond_owned(*r->task, 0, data, 5,
                                                 t_free_cb, r->o);
                if (r->rc != 0) {
                    free(data);
                }
            }

        } else {
            r->rc = nbffi_task_respond(*r->task, 0, "plain", 5);
        }

        (void) pthread_barrier_wait(r->end);
    }

    return NULL;
}

static void
test_answer_race_one_wins(void **state)
{
    int                 i, k, owned_won;
    struct t_fx        *fx;
    nbffi_task_t       *task, *shared, *out;
    struct t_owned      o = { 0, NULL, NULL };
    struct t_racer      r[2];
    pthread_barrier_t   start, end;

    fx = *state;

    assert_int_equal(pthread_barrier_init(&start, NULL, 3), 0);
    assert_int_equal(pthread_barrier_init(&end, NULL, 3), 0);

    for (k = 0; k < 2; k++) {
        r[k].start = &start;
        r[k].end = &end;
        r[k].task = &shared;
        r[k].owned = k;
        r[k].o = &o;
        assert_int_equal(pthread_create(&r[k].tid, NULL, t_racer_main,
                                        &r[k]), 0);
    }

    owned_won = 0;

    for (i = 0; i < T_RACE_ROUNDS; i++) {
        task = t_call(fx->host, fx->rt, "m", "p");
        shared = t_pop1(fx->q);

        (void) pthread_barrier_wait(&start);
        (void) pthread_barrier_wait(&end);

        /* Exactly one wins; the other is refused. */
        assert_true((r[0].rc == 0 && r[1].rc == NBFFI_EALREADY)
                    || (r[1].rc == 0 && r[0].rc == NBFFI_EALREADY));

        /* One completion, carrying the winner's reply. */
        assert_ptr_equal(t_reap1(fx->host), task);
        t_reply_is(task, 0, r[1].rc == 0 ? "owned" : "plain");
        assert_int_equal(nbffi_host_reap(fx->host, &out, 1), 0);

        nbffi_task_release(task);
        owned_won += (r[1].rc == 0);
        assert_int_equal(o.calls, owned_won);
    }

    for (k = 0; k < 2; k++) {
        assert_int_equal(pthread_join(r[k].tid, NULL), 0);
    }
    (void) pthread_barrier_destroy(&start);
    (void) pthread_barrier_destroy(&end);

    print_message("answer race: owned won %d of %d rounds\n", owned_won,
                  T_RACE_ROUNDS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_FX(test_getters),
        T_FX(test_respond_copies),
        T_FX(test_large_copies_any_alignment),
        T_FX(test_respond_empty),
        T_FX(test_respond_owned_hands_over),
        T_FX(test_respond_owned_after_host_gave_up),
        T_FX(test_late_reply_freed),
        T_FX(test_runtime_error_status),
        T_FX(test_negative_status_is_eruntime),
        T_FX(test_negative_status_owned_is_eruntime),
        T_FX(test_completed_counted),
        T_FX(test_answer_after_free_delivered),
        T_FX(test_free_closes_queued_tasks),
        T_FX(test_orphan_leaks_released_held_task),
        T_FX(test_owned_reply_outlives_runtime),
        T_FX(test_in_flight_and_queued),
        T_FX(test_release_after_deadline_times_out),
        T_FX(test_release_before_deadline_abandons),
        T_FX(test_answer_twice_after_host_freed_it),
        T_FX(test_answer_race_one_wins),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
