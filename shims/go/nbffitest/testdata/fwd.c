/*
 * A runtime library for the shim's tests.  The go test binary carries the
 * shim and exports its entry points (cgo puts //export functions in the
 * dynamic symbol table); this library passes the loader's calls on to them,
 * so that the tests load the shim through the core's real loader.
 */

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct nbffi_queue_s  nbffi_queue_t;

/*
 * The test binary's definition of name: the executable comes first in the
 * global scope, and this library is loaded without RTLD_GLOBAL.
 */
static void *
nbffi_fwd_entry(const char *name)
{
    void  *p;

    p = dlsym(RTLD_DEFAULT, name);
    if (p == NULL) {
        fprintf(stderr, "fwd: %s not exported by the test binary\n", name);
        abort();
    }
    return p;
}

unsigned
nbffi_runtime_abi(void)
{
    unsigned  (*fn)(void);

    *(void **) &fn = nbffi_fwd_entry("nbffi_runtime_abi");
    return fn();
}

int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    int  (*fn)(nbffi_queue_t *, const void *, size_t, void **, char *,
                size_t);

    *(void **) &fn = nbffi_fwd_entry("nbffi_runtime_init");
    return fn(q, cfg, cfg_len, data, err, err_len);
}

int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int  (*fn)(void *, int64_t);

    *(void **) &fn = nbffi_fwd_entry("nbffi_runtime_fini");
    return fn(data, deadline_ns);
}
