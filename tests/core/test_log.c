/* Runtime log lines: the host's log queue, the callback and stderr. */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define T_LOG_KEPT  1024

static int
t_lfx_setup(void **state)
{
    struct t_fx  *fx;

    fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);

    assert_int_equal(nbffi_host_new(&fx->host, NBFFI_HOST_LOG_QUEUE), 0);
    fx->rt = t_load_ctl(fx->host, 0, 0, &fx->q);

    *state = fx;

    return 0;
}

static void
test_log_queued(void **state)
{
    int           level;
    char          buf[64];
    uint64_t      dropped;
    struct t_fx  *fx;

    fx = *state;

    nbffi_log(fx->q, NBFFI_LOG_WARN, "hello", 5);

    dropped = 99;
    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         &dropped), 5);
    assert_int_equal(level, NBFFI_LOG_WARN);
    assert_string_equal(buf, "hello");
    assert_int_equal(dropped, 0);
}

static void
test_log_empty(void **state)
{
    int           level;
    char          buf[64];
    struct t_fx  *fx;

    fx = *state;

    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         NULL), 0);
}

static void
test_log_length_not_terminator(void **state)
{
    int           level;
    char          buf[64];
    struct t_fx  *fx;

    fx = *state;

    /* msg need not be NUL-terminated; len rules, embedded text ignored. */
    nbffi_log(fx->q, NBFFI_LOG_ERR, "abcdef", 3);

    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         NULL), 3);
    assert_string_equal(buf, "abc");
    assert_int_equal(level, NBFFI_LOG_ERR);
}

static void
test_logf_formats(void **state)
{
    int           level;
    char          buf[64];
    struct t_fx  *fx;

    fx = *state;

    nbffi_logf(fx->q, NBFFI_LOG_INFO, "x=%d %s", 42, "y");

    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         NULL), 6);
    assert_string_equal(buf, "x=42 y");
    assert_int_equal(level, NBFFI_LOG_INFO);
}

static void
test_log_order_and_levels(void **state)
{
    int           i, level;
    char          buf[64], want[64];
    struct t_fx  *fx;

    fx = *state;

    for (i = NBFFI_LOG_ERR; i <= NBFFI_LOG_DEBUG; i++) {
        nbffi_logf(fx->q, i, "line %d", i);
    }

    for (i = NBFFI_LOG_ERR; i <= NBFFI_LOG_DEBUG; i++) {
        (void) snprintf(want, sizeof(want), "line %d", i);
        assert_true(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                        NULL) > 0);
        assert_string_equal(buf, want);
        assert_int_equal(level, i);
    }
}

static void
test_log_truncated_to_buffer(void **state)
{
    int           level;
    char          buf[4];
    struct t_fx  *fx;

    fx = *state;

    nbffi_log(fx->q, NBFFI_LOG_NOTICE, "hello", 5);

    /* The length returned is that of what buf holds. */
    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         NULL), 3);
    assert_string_equal(buf, "hel");
    assert_int_equal(level, NBFFI_LOG_NOTICE);

    /* The whole line was consumed. */
    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         NULL), 0);
}

static void
test_log_overflow_drops_oldest(void **state)
{
    int           i, level;
    char          buf[64], want[64];
    uint64_t      dropped;
    struct t_fx  *fx;

    fx = *state;

    for (i = 0; i < T_LOG_KEPT + 6; i++) {
        nbffi_logf(fx->q, NBFFI_LOG_INFO, "line %d", i);
    }

    dropped = 0;
    assert_true(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                    &dropped) > 0);
    assert_string_equal(buf, "line 6");
    assert_int_equal(dropped, 6);

    for (i = 7; i < T_LOG_KEPT + 6; i++) {
        (void) snprintf(want, sizeof(want), "line %d", i);
        assert_true(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                        &dropped) > 0);
        assert_string_equal(buf, want);
        /* Reset by the previous call. */
        assert_int_equal(dropped, 0);
    }

    assert_int_equal(nbffi_host_log_next(fx->host, &level, buf, sizeof(buf),
                                         &dropped), 0);
}

struct t_seen_log {
    int     calls;
    int     level;
    void   *ud;
    char    msg[64];
    size_t  len;
};

static void
t_log_cb(void *ud, int level, const char *msg, size_t len)
{
    struct t_seen_log  *seen;

    seen = ud;
    seen->calls++;
    seen->ud = ud;
    seen->level = level;
    seen->len = len;
    (void) snprintf(seen->msg, sizeof(seen->msg), "%.*s", (int) len, msg);
}

static void
test_log_callback(void **state)
{
    struct t_fx        *fx;
    struct t_seen_log   seen;

    fx = *state;
    memset(&seen, 0, sizeof(seen));

    nbffi_host_set_log(fx->host, t_log_cb, &seen);
    nbffi_log(fx->q, NBFFI_LOG_WARN, "to the callback", 15);

    assert_int_equal(seen.calls, 1);
    assert_ptr_equal(seen.ud, &seen);
    assert_int_equal(seen.level, NBFFI_LOG_WARN);
    assert_int_equal(seen.len, 15);
    assert_string_equal(seen.msg, "to the callback");
}

/* Runs fn(fx) with stderr going to a pipe; returns what it wrote. */
static void
t_capture_stderr(struct t_fx *fx, void (*fn)(struct t_fx *fx), char *buf,
    size_t len)
{
    int      p[2], saved;
    ssize_t  n;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);

    fn(fx);

    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    (void) close(saved);
    (void) close(p[1]);

    n = read(p[0], buf, len - 1);
    (void) close(p[0]);

    buf[n > 0 ? n : 0] = '\0';
}

static void
t_log_to_stderr(struct t_fx *fx)
{
    nbffi_log(fx->q, NBFFI_LOG_ERR, "to stderr 1234", 14);
}

static void
test_log_default_stderr(void **state)
{
    char  buf[256];

    t_capture_stderr(*state, t_log_to_stderr, buf, sizeof(buf));

    assert_non_null(strstr(buf, "to stderr 1234"));
}

static void
t_answer_twice(struct t_fx *fx)
{
    nbffi_task_t  *task;

    task = t_call(fx->host, fx->rt, "m", "p");
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, NULL, 0), 0);
    assert_int_equal(nbffi_task_respond(task, 0, NULL, 0), NBFFI_EALREADY);
    nbffi_task_release(t_reap1(fx->host));
}

static void
test_refused_answer_logged(void **state)
{
    char  buf[512];

    /* The task may be freed memory by then: its host is unknown, so the
     * line goes to stderr (nginx's error log), for the first refusal of
     * the process (this one) and then every tenfold. */
    t_capture_stderr(*state, t_answer_twice, buf, sizeof(buf));

    assert_non_null(strstr(buf, "was refused"));
    assert_non_null(strstr(buf, "1 so far"));
}

#define T_LFX(fn)                                                            \
    cmocka_unit_test_setup_teardown(fn, t_lfx_setup, t_fx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_LFX(test_log_queued),
        T_LFX(test_log_empty),
        T_LFX(test_log_length_not_terminator),
        T_LFX(test_logf_formats),
        T_LFX(test_log_order_and_levels),
        T_LFX(test_log_truncated_to_buffer),
        T_LFX(test_log_overflow_drops_oldest),
        T_FX(test_log_callback),
        T_FX(test_log_default_stderr),
        T_FX(test_refused_answer_logged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
