/* libt_ctl.so, see rt_ctl.h. */

#include <stdio.h>
#include <string.h>

#include "rt_ctl.h"

#define T_FAIL  "fail:"

static struct t_ctl  state;

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
    char *err, size_t err_len)
{
    size_t  n;

    n = sizeof(T_FAIL) - 1;

    if (cfg_len >= n && memcmp(cfg, T_FAIL, n) == 0) {
        (void) snprintf(err, err_len, "%.*s", (int) (cfg_len - n),
                        (const char *) cfg + n);
        return 1;
    }

    if (cfg_len > T_CTL_CFG_MAX) {
        (void) snprintf(err, err_len, "cfg too long for t_ctl");
        return 1;
    }

    state.q = q;
    state.inits++;
    state.init_thread = pthread_self();
    state.cfg_len = cfg_len;
    if (cfg_len > 0) {
        memcpy(state.cfg, cfg, cfg_len);
    }

    return 0;
}

void
nbffi_runtime_fini(nbffi_queue_t *q)
{
    void  (*fn)(nbffi_queue_t *q, void *ud);

    state.finis++;

    fn = state.on_fini;
    state.on_fini = NULL;

    if (fn != NULL) {
        fn(q, state.fini_ud);
    }
}
