/* Loading runtime libraries: by path and name, and every failure. */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define T_LIB(name)  T_LIB_DIR "/lib" name ".so"

struct t_load {
    int               rc;
    nbffi_runtime_t  *rt;
    char              err[512];
};

static nbffi_host_t  *host;

static int
t_host_setup(void **state)
{
    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);

    return 0;
}

static int
t_host_teardown(void **state)
{
    (void) state;

    t_host_finish(host);

    return 0;
}

/* Starts a runtime and waits for the start; l->rt is to be freed. */
static void
t_load(struct t_load *l, const char *lib, const char *search_path,
    const void *cfg, size_t cfg_len, unsigned flags)
{
    memset(l->err, 'X', sizeof(l->err));

    l->rc = t_load_wait(host, lib, search_path, cfg, cfg_len, 0, 0, 0,
                        flags, &l->rt, l->err, sizeof(l->err));

    assert_int_equal(nbffi_runtime_state(l->rt),
                     l->rc == 0 ? NBFFI_RT_READY : NBFFI_RT_FAILED);
}

static void
t_unload(struct t_load *l)
{
    assert_int_equal(t_close_free(l->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
}

/* Loads, expects success, frees. */
static void
t_load_ok(const char *lib, const char *search_path)
{
    struct t_load  l;

    t_load(&l, lib, search_path, "", 0, 0);
    assert_int_equal(l.rc, 0);
    t_unload(&l);
}

static void
t_load_fails(struct t_load *l, const char *lib, int rc)
{
    const char  *msg;

    t_load(l, lib, NULL, "", 0, 0);
    assert_int_equal(l->rc, rc);
    assert_true(l->err[0] != '\0');

    /* The runtime keeps the same status and message. */
    assert_int_equal(nbffi_runtime_error(l->rt, &msg), rc);
    assert_string_equal(msg, l->err);

    t_unload(l);
}

static void
test_load_by_path(void **state)
{
    (void) state;

    t_load_ok(LIBECHO_PATH, NULL);
}

static void
test_load_by_name_in_search_path(void **state)
{
    (void) state;

    /* The first directory lacks it: the search goes on to the next. */
    t_load_ok("echo", "/nonexistent-nbffi-dir:" LIBECHO_DIR);
}

static void
test_load_by_name_through_dlopen(void **state)
{
    (void) state;

    /* meson.build puts T_LIB_DIR in LD_LIBRARY_PATH for this test. */
    t_load_ok("t_ctl", NULL);
}

static void
test_load_by_name_as_is(void **state)
{
    struct t_load  l;

    (void) state;

    /* Found as "libm.so.6" itself, then refused for lacking entry points. */
    t_load_fails(&l, "libm.so.6", NBFFI_ESYM);
}

static void
test_load_missing_path(void **state)
{
    struct t_load  l;

    (void) state;

    t_load_fails(&l, "/nonexistent-nbffi-dir/libnope.so", NBFFI_ELOAD);
    assert_non_null(strstr(l.err, "/nonexistent-nbffi-dir/libnope.so"));
    assert_non_null(strstr(l.err, "cannot open shared object file"));
}

static void
test_load_missing_name(void **state)
{
    struct t_load  l;

    (void) state;

    t_load(&l, "nbffi_no_such_runtime", "/nonexistent-nbffi-dir", "", 0, 0);
    assert_int_equal(l.rc, NBFFI_ELOAD);
    assert_non_null(strstr(l.err, "nbffi_no_such_runtime"));
    t_unload(&l);
}

static void
test_load_missing_init(void **state)
{
    struct t_load  l;

    (void) state;

    t_load_fails(&l, T_LIB("t_noinit"), NBFFI_ESYM);
    assert_non_null(strstr(l.err, "nbffi_runtime_init"));
}

static void
test_load_missing_abi(void **state)
{
    struct t_load  l;

    (void) state;

    t_load_fails(&l, T_LIB("t_noabi"), NBFFI_ESYM);
    assert_non_null(strstr(l.err, "nbffi_runtime_abi"));
}

static void
test_load_abi_mismatch(void **state)
{
    char           ours[16];
    struct t_load  l;

    (void) state;

    t_load_fails(&l, T_LIB("t_badabi"), NBFFI_EABI);

    /* Both versions, so that a stale shim is easy to diagnose. */
    (void) snprintf(ours, sizeof(ours), "%u", NBFFI_ABI_VERSION);
    assert_non_null(strstr(l.err, "4242"));
    assert_non_null(strstr(l.err, ours));
}

static void
test_load_init_failure_message(void **state)
{
    struct t_load  l;

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, "fail:no database at /x", 22, 0);
    assert_int_equal(l.rc, NBFFI_EINIT);
    assert_non_null(strstr(l.err, T_CTL_PATH ": init failed: "
                                  "no database at /x"));
    t_unload(&l);
}

static void
test_load_init_message_long(void **state)
{
    char           cfg[3000];
    const char    *msg;
    struct t_load  l;

    (void) state;

    /* A message longer than any buffer is cut, still NUL-terminated. */
    memcpy(cfg, "fail:", 5);
    memset(cfg + 5, 'm', sizeof(cfg) - 5);

    t_load(&l, T_CTL_PATH, NULL, cfg, sizeof(cfg), 0);
    assert_int_equal(l.rc, NBFFI_EINIT);
    assert_int_equal(nbffi_runtime_error(l.rt, &msg), NBFFI_EINIT);
    assert_true(strlen(msg) > 100 && strlen(msg) < sizeof(cfg));
    t_unload(&l);
}

static void
test_load_cfg_with_nul_bytes(void **state)
{
    struct t_ctl      *ctl;
    struct t_load      l;
    const char         cfg[] = { 'a', '\0', 'b', '\0', '\0', 'c' };

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, cfg, sizeof(cfg), 0);
    assert_int_equal(l.rc, 0);

    ctl = t_ctl_get();
    assert_int_equal(ctl->cfg_len, sizeof(cfg));
    assert_memory_equal(ctl->cfg, cfg, sizeof(cfg));

    t_unload(&l);
}

static void
test_load_empty_cfg(void **state)
{
    struct t_load  l;

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, NULL, 0, 0);
    assert_int_equal(l.rc, 0);
    assert_int_equal(t_ctl_get()->cfg_len, 0);

    t_unload(&l);
}

static void
test_load_init_on_core_thread(void **state)
{
    struct t_ctl   *ctl;
    struct t_load   l;

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, "", 0, 0);
    assert_int_equal(l.rc, 0);

    /* Never on the host thread, and nginx's signals never reach it nor
     * the threads it starts. */
    ctl = t_ctl_get();
    assert_false(pthread_equal(ctl->init_thread, pthread_self()));
    assert_true(ctl->init_blocked_hup);
    assert_true(ctl->init_blocked_quit);

    t_unload(&l);
}

static void
test_load_data_reaches_fini(void **state)
{
    struct t_ctl   *ctl;
    struct t_load   l;

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, "", 0, 0);
    assert_int_equal(l.rc, 0);

    ctl = t_ctl_get();
    ctl->fini_data = NULL;
    t_unload(&l);

    assert_ptr_equal(ctl->fini_data, ctl->data);
    assert_false(pthread_equal(ctl->fini_thread, pthread_self()));
}

static void
test_load_twice_two_runtimes(void **state)
{
    unsigned        inits;
    struct t_ctl   *ctl;
    nbffi_queue_t  *q1;
    struct t_load   l1, l2;

    (void) state;

    t_load(&l1, T_CTL_PATH, NULL, "", 0, 0);
    assert_int_equal(l1.rc, 0);
    ctl = t_ctl_get();
    q1 = ctl->q;
    inits = ctl->inits;

    t_load(&l2, T_CTL_PATH, NULL, "", 0, 0);
    assert_int_equal(l2.rc, 0);
    assert_int_equal(ctl->inits, inits + 1);
    assert_ptr_not_equal(ctl->q, q1);
    assert_ptr_not_equal(l1.rt, l2.rt);

    t_unload(&l1);
    t_unload(&l2);
}

static void
test_fini_called_once_by_close(void **state)
{
    unsigned          finis;
    int64_t           deadline;
    struct t_ctl     *ctl;
    struct t_load     l;
    nbffi_task_t     *task;

    (void) state;

    t_load(&l, T_CTL_PATH, NULL, "", 0, 0);
    assert_int_equal(l.rc, 0);
    ctl = t_ctl_get();
    finis = ctl->finis;

    deadline = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;
    assert_int_equal(nbffi_runtime_close(l.rt, deadline, &task), 0);
    assert_int_equal(nbffi_runtime_wait(l.rt, 0), NBFFI_RT_CLOSED);
    assert_int_equal(ctl->finis, finis + 1);
    assert_true(ctl->fini_deadline == deadline);

    /* A second close is refused and calls nothing. */
    assert_int_equal(nbffi_runtime_close(l.rt, 0, NULL), NBFFI_EALREADY);

    t_wait_task(host, task);
    t_reply_is(task, 0, NULL);
    nbffi_task_release(task);

    nbffi_runtime_free(l.rt);
    assert_int_equal(ctl->finis, finis + 1);
}

static void
test_free_without_fini(void **state)
{
    (void) state;

    /* t_local exports no nbffi_runtime_fini. */
    t_load_ok(T_LIB("t_local"), NULL);
}

static void
test_load_local_by_default(void **state)
{
    struct t_load  l;

    (void) state;

    t_load(&l, T_LIB("t_local"), NULL, "", 0, 0);
    assert_int_equal(l.rc, 0);
    assert_null(dlsym(RTLD_DEFAULT, "t_marker_local"));

    t_unload(&l);
}

static void
test_load_global_flag(void **state)
{
    struct t_load  l;

    (void) state;

    t_load(&l, T_LIB("t_global"), NULL, "", 0, NBFFI_LOAD_GLOBAL);
    assert_int_equal(l.rc, 0);
    assert_non_null(dlsym(RTLD_DEFAULT, "t_marker_global"));

    t_unload(&l);
}

static void
test_load_bad_arguments(void **state)
{
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    rt = NULL;
    task = NULL;

    /* Refused at once: nothing started, nothing to free. */
    assert_int_equal(nbffi_runtime_load(host, "", NULL, NULL, 0, 0, 0, 0, 0,
                                        &rt, &task), NBFFI_EINVAL);
    assert_int_equal(nbffi_runtime_load(host, T_CTL_PATH, NULL, NULL, 3, 0,
                                        0, 0, 0, &rt, &task), NBFFI_EINVAL);
    assert_int_equal(nbffi_runtime_load(host, T_CTL_PATH, NULL, "", 0, 0, 0,
                                        0, 0x80, &rt, &task), NBFFI_EINVAL);
    assert_null(rt);
    assert_null(task);
}

#define T_HOST(fn)                                                           \
    cmocka_unit_test_setup_teardown(fn, t_host_setup, t_host_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_HOST(test_load_by_path),
        T_HOST(test_load_by_name_in_search_path),
        T_HOST(test_load_by_name_through_dlopen),
        T_HOST(test_load_by_name_as_is),
        T_HOST(test_load_missing_path),
        T_HOST(test_load_missing_name),
        T_HOST(test_load_missing_init),
        T_HOST(test_load_missing_abi),
        T_HOST(test_load_abi_mismatch),
        T_HOST(test_load_init_failure_message),
        T_HOST(test_load_init_message_long),
        T_HOST(test_load_cfg_with_nul_bytes),
        T_HOST(test_load_empty_cfg),
        T_HOST(test_load_init_on_core_thread),
        T_HOST(test_load_data_reaches_fini),
        T_HOST(test_load_twice_two_runtimes),
        T_HOST(test_fini_called_once_by_close),
        T_HOST(test_free_without_fini),
        T_HOST(test_load_local_by_default),
        T_HOST(test_load_global_flag),
        T_HOST(test_load_bad_arguments),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
