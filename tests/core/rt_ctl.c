/* libt_ctl.so, see rt_ctl.h. */

#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rt_ctl.h"

#define T_FAIL  "fail:"
#define T_HANG  "hang:"

static void t_gate(int *held);
static void t_sleep_ms(long ms);

static struct t_ctl  state = {
    .gate_lock = PTHREAD_MUTEX_INITIALIZER,
    .gate_cond = PTHREAD_COND_INITIALIZER,
};

struct t_ctl *
t_ctl(void)
{
    return &state;
}

unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}

int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    char      buf[32];
    size_t    n;
    sigset_t  mask;

    t_gate(&state.init_held);

    n = sizeof(T_FAIL) - 1;

    if (cfg_len >= n && memcmp(cfg, T_FAIL, n) == 0) {
        (void) snprintf(err, err_len, "%.*s", (int) (cfg_len - n),
                        (const char *) cfg + n);
        return 1;
    }

    n = sizeof(T_HANG) - 1;

    if (cfg_len > n && cfg_len < 32 && memcmp(cfg, T_HANG, n) == 0) {
        (void) snprintf(buf, sizeof(buf), "%.*s", (int) (cfg_len - n),
                        (const char *) cfg + n);
        t_sleep_ms(strtol(buf, NULL, 10));
    }

    if (cfg_len > T_CTL_CFG_MAX) {
        (void) snprintf(err, err_len, "cfg too long for t_ctl");
        return 1;
    }

    (void) pthread_sigmask(SIG_SETMASK, NULL, &mask);
    state.init_blocked_hup = sigismember(&mask, SIGHUP);
    state.init_blocked_quit = sigismember(&mask, SIGQUIT);

    state.q = q;
    state.data = &state;
    *data = &state;
    state.inits++;
    state.init_thread = pthread_self();
    state.cfg_len = cfg_len;
    if (cfg_len > 0) {
        memcpy(state.cfg, cfg, cfg_len);
    }

    return 0;
}

int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    void  (*fn)(nbffi_queue_t *q, void *ud);

    state.finis++;
    state.fini_data = data;
    state.fini_deadline = deadline_ns;
    state.fini_thread = pthread_self();

    t_gate(&state.fini_held);

    fn = state.on_fini;
    state.on_fini = NULL;

    if (fn != NULL) {
        fn(state.q, state.fini_ud);
    }

    t_sleep_ms(state.fini_hang_ms);
    state.fini_returned++;

    return state.fini_stayed;
}

/* Waits while the test holds *held. */
static void
t_gate(int *held)
{
    (void) pthread_mutex_lock(&state.gate_lock);
    while (*held) {
        (void) pthread_cond_wait(&state.gate_cond, &state.gate_lock);
    }
    (void) pthread_mutex_unlock(&state.gate_lock);
}

static void
t_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0) { /* EINTR: sleep the rest */ }
}
