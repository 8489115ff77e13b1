/* nbffi_thread_create(): the signal mask of runtime threads. */

#include <pthread.h>
#include <signal.h>

#include "harness.h"

struct t_seen {
    sigset_t  mask;
    void     *arg;
};

static void *
t_record_mask(void *arg)
{
    struct t_seen  *seen;

    seen = arg;
    seen->arg = arg;
    (void) pthread_sigmask(SIG_BLOCK, NULL, &seen->mask);

    return arg;
}

static void
t_run(struct t_seen *seen)
{
    void       *ret;
    pthread_t   tid;

    assert_int_equal(nbffi_thread_create(&tid, t_record_mask, seen), 0);
    assert_int_equal(pthread_join(tid, &ret), 0);
    assert_ptr_equal(ret, seen);
    assert_ptr_equal(seen->arg, seen);
}

/* The signals this process can block: all of them, read back. */
static void
t_blockable(sigset_t *can)
{
    sigset_t  all, old;

    (void) sigfillset(&all);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &all, &old), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &old, can), 0);
}

static void
test_thread_blocks_host_signals(void **state)
{
    int            i;
    sigset_t       can;
    struct t_seen  seen;
    const int      blocked[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
                                 SIGUSR2, SIGCHLD, SIGPIPE, SIGALRM,
                                 SIGWINCH, SIGIO };

    (void) state;

    t_run(&seen);

    for (i = 0; i < (int) (sizeof(blocked) / sizeof(blocked[0])); i++) {
        assert_int_equal(sigismember(&seen.mask, blocked[i]), 1);
    }

    /* Every real-time signal a thread can block at all: qemu-user keeps
     * a few for itself, and a guest cannot block those (suite-aarch64). */
    t_blockable(&can);
    for (i = SIGRTMIN; i <= SIGRTMAX; i++) {
        if (sigismember(&can, i)) {
            assert_int_equal(sigismember(&seen.mask, i), 1);
        }
    }
}

static void
test_thread_keeps_fault_signals(void **state)
{
    int            i;
    struct t_seen  seen;
    const int      open[] = { SIGILL, SIGFPE, SIGSEGV, SIGBUS };

    (void) state;

    t_run(&seen);

    for (i = 0; i < (int) (sizeof(open) / sizeof(open[0])); i++) {
        assert_int_equal(sigismember(&seen.mask, open[i]), 0);
    }
}

static void
test_thread_caller_mask_unchanged(void **state)
{
    int            sig;
    sigset_t       want, before, after;
    struct t_seen  seen;

    (void) state;

    /* A mask that differs from both "none" and "all but faults". */
    assert_int_equal(sigemptyset(&want), 0);
    assert_int_equal(sigaddset(&want, SIGUSR2), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &want, &before), 0);

    t_run(&seen);

    assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, &after), 0);

    for (sig = 1; sig < SIGRTMIN; sig++) {
        assert_int_equal(sigismember(&after, sig), sigismember(&want, sig));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_blocks_host_signals),
        cmocka_unit_test(test_thread_keeps_fault_signals),
        cmocka_unit_test(test_thread_caller_mask_unchanged),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
