/*
 * The init timeout of nbffi_runtime_load: init on a helper thread, and a
 * load that fails with a clear error when init does not return in time.
 *
 * A hanging init is made from the C reference runtime: its init logs one
 * line last, and on a host with a log callback that callback runs on the
 * init's thread, so a callback that blocks is an init that hangs.
 */

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define T_HANG_MS  200

/* The orphan's echo thread exits but is never joined: by design. */
const char *__tsan_default_options(void);

const char *
__tsan_default_options(void)
{
    return "report_thread_leaks=0";
}

/* A log callback that blocks until released. */
struct t_gate {
    pthread_mutex_t  lock;
    pthread_cond_t   cond;
    int              entered;
    int              open;
};

static struct t_gate  gate = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0
};

static void
t_gate_log(void *ud, int level, const char *msg, size_t len)
{
    (void) ud;
    (void) level;
    (void) msg;
    (void) len;

    pthread_mutex_lock(&gate.lock);
    gate.entered++;
    pthread_cond_broadcast(&gate.cond);
    while (!gate.open) {
        pthread_cond_wait(&gate.cond, &gate.lock);
    }
    pthread_mutex_unlock(&gate.lock);
}

static void
t_gate_open(void)
{
    pthread_mutex_lock(&gate.lock);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.lock);
}

/* Threads of this process, from /proc/self/task. */
static int
t_threads(void)
{
    int             n;
    DIR            *d;
    struct dirent  *e;

    d = opendir("/proc/self/task");
    assert_non_null(d);

    n = 0;
    while ((e = readdir(d)) != NULL) {
        n += (e->d_name[0] != '.');
    }
    (void) closedir(d);

    return n;
}

/* Waits (bounded) until the process runs n threads: threads that exit
 * unjoined give no other sign. */
static void
t_wait_threads(int n)
{
    int              i;
    struct timespec  ms = { 0, 1000000 };

    for (i = 0; i < T_WAIT_MS && t_threads() != n; i++) {
        (void) nanosleep(&ms, NULL);
    }
    assert_int_equal(t_threads(), n);
}

static int
t_load(nbffi_host_t *host, const char *lib, const char *cfg, size_t cfg_len,
    nbffi_runtime_t **rt, char *err, size_t err_len)
{
    *rt = NULL;
    memset(err, 'X', err_len);

    return nbffi_runtime_load(host, lib, NULL, cfg, cfg_len, 0, 0, 0, rt,
                              err, err_len);
}

static void
test_init_timeout_default_on_host_thread(void **state)
{
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    rt = t_load_ctl(host, 0, 0, NULL);

    assert_true(pthread_equal(t_ctl_get()->init_thread, pthread_self()));

    nbffi_runtime_free(rt);
    t_host_finish(host);
}

static void
test_init_timeout_runs_init_on_helper(void **state)
{
    char              err[256];
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    struct t_ctl     *ctl;
    static const char cfg[] = "a\0b=c";

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    nbffi_host_set_init_timeout(host, T_WAIT_MS);

    assert_int_equal(t_load(host, T_CTL_PATH, cfg, sizeof(cfg) - 1, &rt, err,
                            sizeof(err)), 0);

    ctl = t_ctl_get();
    assert_false(pthread_equal(ctl->init_thread, pthread_self()));
    /* the cfg reached init intact, NUL byte included */
    assert_int_equal(ctl->cfg_len, sizeof(cfg) - 1);
    assert_memory_equal(ctl->cfg, cfg, sizeof(cfg) - 1);

    nbffi_runtime_free(rt);
    t_host_finish(host);
}

static void
test_init_timeout_runtime_serves(void **state)
{
    char              err[256];
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    nbffi_host_set_init_timeout(host, T_WAIT_MS);

    assert_int_equal(t_load(host, LIBECHO_PATH, "threads=2", 9, &rt, err,
                            sizeof(err)), 0);

    task = t_call(host, rt, "upper", "started from a helper");
    assert_ptr_equal(t_reap1(host), task);
    t_reply_is(task, 0, "STARTED FROM A HELPER");
    nbffi_task_release(task);

    nbffi_runtime_free(rt);
    t_host_finish(host);
}

static void
test_init_timeout_init_failure(void **state)
{
    char              err[256];
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    nbffi_host_set_init_timeout(host, T_WAIT_MS);

    assert_int_equal(t_load(host, T_CTL_PATH, "fail:no database", 16, &rt,
                            err, sizeof(err)), NBFFI_EINIT);
    assert_null(rt);
    assert_string_equal(err, T_CTL_PATH ": init failed: no database");

    t_host_finish(host);
}

static void
test_init_timeout_expires(void **state)
{
    int               before;
    char              err[256];
    const char       *tail;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    before = t_threads();

    assert_int_equal(nbffi_host_new(&host, 0), 0);
    nbffi_host_set_log(host, t_gate_log, NULL);
    nbffi_host_set_init_timeout(host, T_HANG_MS);

    assert_int_equal(t_load(host, LIBECHO_PATH, "threads=1", 9, &rt, err,
                            sizeof(err)), NBFFI_EINIT);
    assert_null(rt);

    tail = ": init did not return within 200 ms";
    assert_true(strlen(err) > strlen(tail));
    assert_string_equal(err + strlen(err) - strlen(tail), tail);
    assert_int_equal(strncmp(err, LIBECHO_PATH, strlen(LIBECHO_PATH)), 0);

    /* The init is stuck in the callback, not gone. */
    pthread_mutex_lock(&gate.lock);
    assert_int_equal(gate.entered, 1);
    pthread_mutex_unlock(&gate.lock);

    /* Once released it returns; nbffi closes the orphan's queue, so the
     * echo thread and the helper exit. */
    t_gate_open();
    t_wait_threads(before);

    /* Nothing of the orphan counts against the host. */
    assert_int_equal(nbffi_host_tasks_live(host), 0);
    assert_int_equal(nbffi_host_free(host), 0);
}

static void
test_init_timeout_env(void **state)
{
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(setenv("NBFFI_INIT_TIMEOUT_MS", "20000", 1), 0);
    assert_int_equal(nbffi_host_new(&host, 0), 0);
    rt = t_load_ctl(host, 0, 0, NULL);
    assert_false(pthread_equal(t_ctl_get()->init_thread, pthread_self()));
    nbffi_runtime_free(rt);

    /* the setter overrides the environment; 0 is no bound */
    nbffi_host_set_init_timeout(host, 0);
    rt = t_load_ctl(host, 0, 0, NULL);
    assert_true(pthread_equal(t_ctl_get()->init_thread, pthread_self()));
    nbffi_runtime_free(rt);
    t_host_finish(host);

    assert_int_equal(unsetenv("NBFFI_INIT_TIMEOUT_MS"), 0);
}

static void
test_init_timeout_env_garbage(void **state)
{
    size_t            i;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    static const char *bad[] = { "", "-5", "12ms", "abc", " 7",
                                 "99999999999999999999999" };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(setenv("NBFFI_INIT_TIMEOUT_MS", bad[i], 1), 0);
        assert_int_equal(nbffi_host_new(&host, 0), 0);
        rt = t_load_ctl(host, 0, 0, NULL);
        /* ignored: init runs on the host thread, unbounded */
        assert_true(pthread_equal(t_ctl_get()->init_thread,
                                  pthread_self()));
        nbffi_runtime_free(rt);
        t_host_finish(host);
    }

    assert_int_equal(unsetenv("NBFFI_INIT_TIMEOUT_MS"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_timeout_default_on_host_thread),
        cmocka_unit_test(test_init_timeout_runs_init_on_helper),
        cmocka_unit_test(test_init_timeout_runtime_serves),
        cmocka_unit_test(test_init_timeout_init_failure),
        cmocka_unit_test(test_init_timeout_expires),
        cmocka_unit_test(test_init_timeout_env),
        cmocka_unit_test(test_init_timeout_env_garbage),
    };

    (void) unsetenv("NBFFI_INIT_TIMEOUT_MS");

    return cmocka_run_group_tests(tests, NULL, NULL);
}
