/*
 * The life of a runtime (ABI v2): starts and stops on core threads, each
 * bounded by a deadline; a runtime whose threads stay is orphaned; a task
 * is answered at most once.
 *
 * t_ctl plays the runtime: "hang:MS" makes its init sleep, fini_hang_ms
 * makes its fini sleep, fini_stayed is what its fini returns, and the
 * tests pop and answer its tasks themselves.
 */

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* How long an init or fini "hangs": past the deadlines below, short
 * enough that the late returns happen within the test. */
#define T_HANG_MS      400
#define T_DEADLINE_MS  50

/* A late init or fini returns on an unjoined thread: by design. */
const char *__tsan_default_options(void);

const char *
__tsan_default_options(void)
{
    return "report_thread_leaks=0";
}

static nbffi_host_t  *host;

static int
t_host_setup(void **state)
{
    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_LOG_QUEUE), 0);

    return 0;
}

static int
t_host_teardown(void **state)
{
    (void) state;

    t_host_finish(host);

    return 0;
}

static int64_t
t_after_ms(int64_t ms)
{
    return nbffi_now_ns() + ms * 1000000;
}

/* The next runtime log line, or "" when none is queued. */
static const char *
t_log_line(void)
{
    static char  buf[1024];

    if (nbffi_host_log_next(host, NULL, buf, sizeof(buf), NULL) <= 0) {
        buf[0] = '\0';
    }

    return buf;
}

/* Waits (bounded) until t_ctl's fini has returned n times in all: a fini
 * that returns late gives no other sign. */
static void
t_wait_finis(unsigned n)
{
    int              i;
    struct timespec  ms = { 0, 1000000 };

    for (i = 0; i < T_WAIT_MS && t_ctl_get()->fini_returned < n; i++) {
        (void) nanosleep(&ms, NULL);
    }
    assert_true(t_ctl_get()->fini_returned >= n);
}

/* Loads t_ctl with cfg, without waiting; *task is the load task. */
static nbffi_runtime_t *
t_start(const char *cfg, int64_t deadline, nbffi_task_t **task)
{
    nbffi_runtime_t  *rt;

    rt = NULL;
    assert_int_equal(nbffi_runtime_load(host, T_CTL_PATH, NULL, cfg,
                                        strlen(cfg), 0, 0, deadline, 0, &rt,
                                        task), 0);
    assert_non_null(rt);

    return rt;
}

static nbffi_runtime_t *
t_ready(void)
{
    char              err[256];
    nbffi_runtime_t  *rt;

    assert_int_equal(t_load_wait(host, T_CTL_PATH, NULL, "", 0, 0, 0, 0, 0,
                                 &rt, err, sizeof(err)), 0);
    t_ctl_reset();

    return rt;
}

static void
test_load_returns_while_starting(void **state)
{
    nbffi_task_t     *task, *call;
    nbffi_runtime_t  *rt;

    (void) state;

    /* init waits on a core thread: the load returned before it did */
    t_ctl_hold_init();
    rt = t_start("", 0, &task);
    assert_int_equal(nbffi_runtime_state(rt), NBFFI_RT_STARTING);

    /* A call posted meanwhile waits in the queue. */
    call = t_call(host, rt, "m", "early");
    t_ctl_release_init();

    t_wait_task(host, task);
    t_reply_is(task, 0, NULL);
    nbffi_task_release(task);
    assert_int_equal(nbffi_runtime_state(rt), NBFFI_RT_READY);

    t_ctl_reset();
    assert_ptr_equal(t_pop1(t_ctl_get()->q), call);
    assert_int_equal(nbffi_task_respond(call, 0, "ok", 2), 0);
    t_wait_task(host, call);
    t_reply_is(call, 0, "ok");
    nbffi_task_release(call);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
}

static void
test_failed_start_fails_queued_and_later_calls(void **state)
{
    const char       *msg;
    nbffi_task_t     *task, *call;
    nbffi_task_t     *out;
    nbffi_runtime_t  *rt;

    (void) state;

    t_ctl_hold_init();
    rt = t_start("fail:no model at /m", 0, &task);
    call = t_call(host, rt, "m", "queued before the failure");
    t_ctl_release_init();

    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EINIT);
    nbffi_task_release(task);

    /* The queued call learns why, not just "closed". */
    t_wait_task(host, call);
    t_reply_is(call, NBFFI_EINIT, T_CTL_PATH ": init failed: no model at /m");
    nbffi_task_release(call);

    out = NULL;
    assert_int_equal(nbffi_call(host, rt, "m", 1, "x", 1, 0, 0, &out),
                     NBFFI_EINIT);
    assert_null(out);
    assert_int_equal(nbffi_runtime_error(rt, &msg), NBFFI_EINIT);
    assert_non_null(strstr(msg, "no model at /m"));

    /* Closing a failed runtime is immediate; calls then say closed. */
    assert_int_equal(nbffi_runtime_close(rt, 0, NULL), 0);
    assert_int_equal(nbffi_runtime_state(rt), NBFFI_RT_CLOSED);
    assert_int_equal(nbffi_call(host, rt, "m", 1, "x", 1, 0, 0, &out),
                     NBFFI_ECLOSED);
    nbffi_runtime_free(rt);
}

/* Another host thread posting to a runtime until it is refused as
 * closed. */
struct t_poster {
    nbffi_runtime_t  *rt;
    pthread_t         tid;
    atomic_int        refused;      /* calls refused so far */
    int               other;        /* a result but the two expected */
};

static void *
t_poster_main(void *arg)
{
    int               rc;
    nbffi_host_t     *other;
    nbffi_task_t     *task;
    struct t_poster  *p;

    p = arg;

    if (nbffi_host_new(&other, 0) != 0) {
        p->other = 1;
        return NULL;
    }

    do {
        task = NULL;
        rc = nbffi_call(other, p->rt, "m", 1, "x", 1, 0, 0, &task);
        if (rc != NBFFI_EINIT && rc != NBFFI_ECLOSED) {
            p->other = 1;
            if (task != NULL) {
                nbffi_task_release(task);
            }
            break;
        }
        atomic_fetch_add(&p->refused, 1);
    } while (rc != NBFFI_ECLOSED);

    if (nbffi_host_free(other) != 0) {
        p->other = 1;
    }

    return NULL;
}

static void
test_failed_start_closed_while_another_host_posts(void **state)
{
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;
    struct t_poster   p;

    (void) state;

    rt = t_start("fail:no", 0, &task);
    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EINIT);
    nbffi_task_release(task);

    /* Another host's calls learn why the start failed, then, once this
     * host closed the runtime, that it is closed: no other answer, and
     * (under TSan) no data race on the runtime's close. */
    memset(&p, 0, sizeof(p));
    p.rt = rt;
    atomic_init(&p.refused, 0);
    assert_int_equal(pthread_create(&p.tid, NULL, t_poster_main, &p), 0);

    while (atomic_load(&p.refused) < 100) {
        (void) sched_yield();
    }

    assert_int_equal(nbffi_runtime_close(rt, 0, NULL), 0);
    assert_int_equal(pthread_join(p.tid, NULL), 0);
    assert_int_equal(p.other, 0);

    nbffi_runtime_free(rt);
}

static void
test_start_deadline(void **state)
{
    char              cfg[32];
    unsigned          finis;
    nbffi_task_t     *task, *call;
    nbffi_runtime_t  *rt;

    (void) state;

    finis = t_ctl_get()->finis;

    (void) snprintf(cfg, sizeof(cfg), "hang:%d", T_HANG_MS);
    rt = t_start(cfg, t_after_ms(T_DEADLINE_MS), &task);
    call = t_call(host, rt, "m", "x");

    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EINIT);
    assert_non_null(strstr(nbffi_task_reply(task, NULL),
                           "init did not return within the start deadline"));
    nbffi_task_release(task);

    t_wait_task(host, call);
    assert_int_equal(nbffi_task_status(call), NBFFI_EINIT);
    nbffi_task_release(call);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);

    /* The init returns late and is stopped: its fini runs (on the thread
     * that ran it), without the host. */
    t_wait_finis(finis + 1);
    assert_non_null(strstr(t_log_line(), "init returned after the host "
                                         "gave up on it"));
}

static void
test_close_deadline_orphans_hung_fini(void **state)
{
    unsigned          returned;
    nbffi_task_t     *task, *call;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();
    returned = t_ctl_get()->fini_returned;
    t_ctl_get()->fini_hang_ms = T_HANG_MS;

    /* A task the "runtime" took and never answered. */
    call = t_call(host, rt, "m", "payload a stuck handler still reads");
    assert_ptr_equal(t_pop1(t_ctl_get()->q), call);

    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_DEADLINE_MS),
                                         &task), 0);

    t_wait_task(host, call);
    t_reply_is(call, NBFFI_ECLOSED, NULL);
    assert_true(nbffi_task_leaked(call));
    nbffi_task_release(call);           /* leaked, not freed */

    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EORPHANED);
    assert_non_null(strstr(nbffi_task_reply(task, NULL),
                           "fini did not return by the close deadline"));
    nbffi_task_release(task);
    assert_int_equal(nbffi_runtime_state(rt), NBFFI_RT_ORPHANED);
    assert_non_null(strstr(t_log_line(), "orphaned"));

    /* The stuck handler answers at last: refused, nothing touched. */
    assert_int_equal(nbffi_task_respond(call, 0, "late", 4), NBFFI_EALREADY);
    assert_int_equal(nbffi_host_tasks_leaked(host), 1);

    nbffi_runtime_free(rt);
    t_wait_finis(returned + 1);
}

static void
test_fini_reports_threads_that_stayed(void **state)
{
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();
    t_ctl_get()->fini_stayed = 3;

    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_WAIT_MS), &task),
                     0);
    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EORPHANED);
    assert_non_null(strstr(nbffi_task_reply(task, NULL),
                           "fini reported 3 thread(s) still running"));
    nbffi_task_release(task);
    assert_non_null(strstr(t_log_line(), T_CTL_PATH " orphaned"));

    nbffi_runtime_free(rt);
}

static void
test_fini_returning_early_orphans(void **state)
{
    nbffi_task_t     *task, *call;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();

    /* fini returns 0 (all threads gone) while a task is still held: a
     * thread of it may still run, so it is not trusted. */
    call = t_call(host, rt, "m", "x");
    assert_ptr_equal(t_pop1(t_ctl_get()->q), call);

    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_WAIT_MS), &task),
                     0);
    t_wait_task(host, call);
    t_reply_is(call, NBFFI_ECLOSED, NULL);
    assert_true(nbffi_task_leaked(call));
    nbffi_task_release(call);

    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EORPHANED);
    assert_non_null(strstr(nbffi_task_reply(task, NULL),
                           "fini returned with 1 task(s) unanswered"));
    nbffi_task_release(task);

    /* The "early" thread answers afterwards: refused, no double delivery. */
    assert_int_equal(nbffi_task_respond(call, 0, "late", 4), NBFFI_EALREADY);
    assert_false(nbffi_host_pending(host));

    (void) t_log_line();
    nbffi_runtime_free(rt);
}

/* A runtime thread that outlives fini: it holds a task until told. */
struct t_stayer {
    nbffi_queue_t    *q;
    pthread_t         tid;
    struct t_event    holding;
    struct t_event    go;
    int               popped, answered, popped_again;
    char              payload[32];
};

static void *
t_stayer_main(void *arg)
{
    size_t            len;
    const char       *p;
    nbffi_task_t     *task;
    struct t_stayer  *st;

    st = arg;

    st->popped = nbffi_queue_pop(st->q, &task, 1, -1);
    if (st->popped != 1) {
        return NULL;
    }

    t_event_set(&st->holding);
    t_event_wait(&st->go);

    /* Long after fini returned and the host released the task: the task
     * is leaked, so reading it is safe (ASan would say otherwise). */
    p = nbffi_task_payload(task, &len);
    (void) snprintf(st->payload, sizeof(st->payload), "%.*s", (int) len, p);

    st->answered = nbffi_task_respond(task, 0, "late", 4);
    st->popped_again = nbffi_queue_pop(st->q, &task, 1, -1);

    return NULL;
}

static void
test_fini_returning_early_thread_still_runs(void **state)
{
    nbffi_task_t     *call, *ctask, *out;
    nbffi_runtime_t  *rt;
    struct t_stayer   st;

    (void) state;

    rt = t_ready();

    memset(&st, 0, sizeof(st));
    st.q = t_ctl_get()->q;
    t_event_init(&st.holding);
    t_event_init(&st.go);
    assert_int_equal(nbffi_thread_create(&st.tid, t_stayer_main, &st), 0);

    call = t_call(host, rt, "m", "read after fini");
    t_event_wait(&st.holding);

    /* t_ctl's fini returns 0 at once, not joining the thread: the close
     * ends (no hang), orphaned, since the thread still holds a task. */
    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_WAIT_MS), &ctask),
                     0);
    t_wait_task(host, ctask);
    assert_int_equal(nbffi_task_status(ctask), NBFFI_EORPHANED);
    nbffi_task_release(ctask);

    t_wait_task(host, call);
    t_reply_is(call, NBFFI_ECLOSED, NULL);
    assert_true(nbffi_task_leaked(call));
    nbffi_task_release(call);

    t_event_set(&st.go);
    assert_int_equal(pthread_join(st.tid, NULL), 0);

    assert_string_equal(st.payload, "read after fini");
    assert_int_equal(st.answered, NBFFI_EALREADY);
    assert_int_equal(st.popped_again, NBFFI_ECLOSED);

    /* Delivered once: as closed, never the late answer. */
    assert_false(nbffi_host_pending(host));
    assert_int_equal(nbffi_host_reap(host, &out, 1), 0);
    assert_int_equal(nbffi_host_tasks_leaked(host), 1);

    (void) t_log_line();
    nbffi_runtime_free(rt);
    t_event_destroy(&st.holding);
    t_event_destroy(&st.go);
}

static void
test_answer_twice_refused(void **state)
{
    int               i, n;
    nbffi_task_t     *task;
    nbffi_task_t     *out[4];
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();

    task = t_call(host, rt, "m", "x");
    assert_ptr_equal(t_pop1(t_ctl_get()->q), task);

    assert_int_equal(nbffi_task_respond(task, 0, "one", 3), 0);
    assert_int_equal(nbffi_task_respond(task, 0, "two", 3), NBFFI_EALREADY);
    assert_int_equal(nbffi_task_respond_owned(task, 0, "three", 5, NULL,
                                              NULL), NBFFI_EALREADY);

    /* Exactly one completion, with the first answer. */
    n = t_reap(host, out, 4);
    assert_int_equal(n, 1);
    t_reply_is(out[0], 0, "one");
    nbffi_task_release(out[0]);

    for (i = 0; i < 3; i++) {
        assert_int_equal(nbffi_host_reap(host, out, 4), 0);
    }

    /* After the host freed it, an answer is still refused (the set of
     * held tasks is consulted, not the freed memory). */
    assert_int_equal(nbffi_task_respond(task, 0, "four", 4), NBFFI_EALREADY);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
}

static void
test_close_while_starting_waits_for_start(void **state)
{
    char              cfg[32];
    unsigned          finis;
    nbffi_task_t     *task, *ctask;
    nbffi_runtime_t  *rt;

    (void) state;

    finis = t_ctl_get()->finis;
    (void) snprintf(cfg, sizeof(cfg), "hang:%d", T_HANG_MS / 4);
    rt = t_start(cfg, 0, &task);

    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_WAIT_MS), &ctask),
                     0);
    assert_int_equal(nbffi_runtime_wait(rt, 0), NBFFI_RT_CLOSED);
    assert_int_equal(t_ctl_get()->finis, finis + 1);

    t_wait_task(host, task);
    t_reply_is(task, 0, NULL);
    nbffi_task_release(task);
    t_wait_task(host, ctask);
    t_reply_is(ctask, 0, NULL);
    nbffi_task_release(ctask);

    nbffi_runtime_free(rt);
}

static void
test_close_deadline_while_init_hangs(void **state)
{
    char              cfg[32];
    unsigned          returned;
    nbffi_task_t     *task, *ctask;
    nbffi_runtime_t  *rt;

    (void) state;

    returned = t_ctl_get()->fini_returned;
    (void) snprintf(cfg, sizeof(cfg), "hang:%d", T_HANG_MS);
    rt = t_start(cfg, 0, &task);

    assert_int_equal(nbffi_runtime_close(rt, t_after_ms(T_DEADLINE_MS),
                                         &ctask), 0);

    /* Both life-cycle tasks complete: the host can be freed. */
    t_wait_task(host, task);
    assert_int_equal(nbffi_task_status(task), NBFFI_EORPHANED);
    nbffi_task_release(task);
    t_wait_task(host, ctask);
    assert_int_equal(nbffi_task_status(ctask), NBFFI_EORPHANED);
    assert_non_null(strstr(nbffi_task_reply(ctask, NULL),
                           "its init did not return by the close deadline"));
    nbffi_task_release(ctask);
    assert_non_null(strstr(t_log_line(), "orphaned"));
    nbffi_runtime_free(rt);

    /* When init returns at last, what it started is stopped. */
    t_wait_finis(returned + 1);
}

static void
test_wait_deadline(void **state)
{
    char              cfg[32];
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    (void) snprintf(cfg, sizeof(cfg), "hang:%d", T_HANG_MS);
    rt = t_start(cfg, 0, &task);

    assert_int_equal(nbffi_runtime_wait(rt, t_after_ms(1)),
                     NBFFI_RT_STARTING);
    /* A negative deadline (a caller's overflow) is past, not an EINVAL
     * that makes the timed wait fail at once, over and over. */
    assert_int_equal(nbffi_runtime_wait(rt, -5), NBFFI_RT_STARTING);
    assert_int_equal(nbffi_runtime_wait(rt, INT64_MIN), NBFFI_RT_STARTING);

    t_wait_task(host, task);
    nbffi_task_release(task);
    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
}

static void
test_closed_runtime_gives_its_fd_back(void **state)
{
    int               fd;
    nbffi_queue_t    *q;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();
    q = t_ctl_get()->q;
    fd = nbffi_queue_fd(q);
    assert_true(fd >= 0);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);

    /* Closed as soon as the runtime was, not with its memory. */
    assert_int_equal(fcntl(fd, F_GETFD), -1);
}

static void
test_free_closes(void **state)
{
    unsigned          finis;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = t_ready();
    finis = t_ctl_get()->fini_returned;

    nbffi_runtime_free(rt);

    /* fini runs on a core thread; t_host_finish waits for the host. */
    t_wait_finis(finis + 1);
}

#define T_HOST(fn)                                                           \
    cmocka_unit_test_setup_teardown(fn, t_host_setup, t_host_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_HOST(test_load_returns_while_starting),
        T_HOST(test_failed_start_fails_queued_and_later_calls),
        T_HOST(test_failed_start_closed_while_another_host_posts),
        T_HOST(test_start_deadline),
        T_HOST(test_close_deadline_orphans_hung_fini),
        T_HOST(test_fini_reports_threads_that_stayed),
        T_HOST(test_fini_returning_early_orphans),
        T_HOST(test_fini_returning_early_thread_still_runs),
        T_HOST(test_answer_twice_refused),
        T_HOST(test_close_while_starting_waits_for_start),
        T_HOST(test_close_deadline_while_init_hangs),
        T_HOST(test_wait_deadline),
        T_HOST(test_closed_runtime_gives_its_fd_back),
        T_HOST(test_free_closes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
