/*
 * Minimal runtime libraries for the loader's error paths, one per set of
 * defines (see meson.build):
 *   T_NO_ABI    no nbffi_runtime_abi
 *   T_NO_INIT   no nbffi_runtime_init
 *   T_ABI=N     nbffi_runtime_abi returns N
 *   T_MARKER=S  exports an int S, to see whether RTLD_GLOBAL was used
 * init succeeds and starts nothing; there is no fini.
 */

#include <nbffi.h>

#ifndef T_ABI
#define T_ABI  NBFFI_ABI_VERSION
#endif

#ifdef T_MARKER
int  T_MARKER = 1;
#endif

#ifndef T_NO_ABI
unsigned
nbffi_runtime_abi(void)
{
    return T_ABI;
}
#endif

#ifndef T_NO_INIT
int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    (void) q;
    (void) data;
    (void) cfg;
    (void) cfg_len;
    (void) err;
    (void) err_len;

    return 0;
}
#endif
