/*
 * libFuzzer: nbffi_runtime_load() with any library name, search path, cfg
 * and error buffer size: the path building of short names, the error
 * messages, the init call (on the host thread or, with an init timeout,
 * on a helper thread) and the runtime's life after it.
 *
 * core/src/load.c is compiled into this file unchanged, with the dynamic
 * loader replaced by a fake (macros, set before it is included): nothing
 * is ever loaded.  The fake "finds" a library whose file name (the part
 * after the last '/') starts with "ok", "noinit" or "badabi", and its
 * init fails when the cfg starts with "fail", writing as much of the
 * rest of the cfg as fits into err.
 *
 * Input: flags byte (bit 0: init timeout; bit 1: RTLD_GLOBAL; bit 2:
 * search_path NULL), error buffer size byte (0..255, exactly that many
 * bytes), then lib NUL search_path NUL cfg.
 */

#include <dlfcn.h>
#include <string.h>
#include <unistd.h>

static void *fuzz_dlopen(const char *path, int mode);
static void *fuzz_dlsym(void *handle, const char *name);
static char *fuzz_dlerror(void);

#define dlopen   fuzz_dlopen
#define dlsym    fuzz_dlsym
#define dlerror  fuzz_dlerror

#include "../../core/src/load.c"

#undef dlopen
#undef dlsym
#undef dlerror

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_OK = 1, FUZZ_NOINIT, FUZZ_BADABI };

static int  fuzz_libs[4];       /* handles: addresses of the kinds */

static void *
fuzz_dlopen(const char *path, int mode)
{
    const char  *base;

    /* the loader never asks for anything but these */
    if (!(mode & RTLD_NOW) || !(mode & RTLD_NODELETE)
        || strlen(path) >= 4096)
    {
        abort();
    }

    base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, "lib", 3) == 0) {
        base += 3;
    }

    if (strncmp(base, "ok", 2) == 0) {
        return &fuzz_libs[FUZZ_OK];
    }
    if (strncmp(base, "noinit", 6) == 0) {
        return &fuzz_libs[FUZZ_NOINIT];
    }
    if (strncmp(base, "badabi", 6) == 0) {
        return &fuzz_libs[FUZZ_BADABI];
    }
    return NULL;
}

static char *
fuzz_dlerror(void)
{
    static char  msg[] = "fake dlopen: no such library";

    return msg;
}

static unsigned
fuzz_abi(void)
{
    return NBFFI_ABI_VERSION;
}

static unsigned
fuzz_bad_abi(void)
{
    return NBFFI_ABI_VERSION + 1;
}

static int
fuzz_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len, char *err,
    size_t err_len)
{
    size_t  n;

    (void) q;

    if (cfg_len >= 4 && memcmp(cfg, "fail", 4) == 0) {
        /* a careless init: fills err to the brim, NUL at the very end */
        n = cfg_len - 4 < err_len - 1 ? cfg_len - 4 : err_len - 1;
        memcpy(err, (const char *) cfg + 4, n);
        err[n] = '\0';
        return 1;
    }
    return 0;
}

static void *
fuzz_dlsym(void *handle, const char *name)
{
    void  *fn;

    fn = NULL;

    if (strcmp(name, "nbffi_runtime_abi") == 0) {
        fn = (handle == &fuzz_libs[FUZZ_BADABI]) ? (void *) fuzz_bad_abi
                                                 : (void *) fuzz_abi;

    } else if (strcmp(name, "nbffi_runtime_init") == 0
               && handle != &fuzz_libs[FUZZ_NOINIT])
    {
        fn = (void *) fuzz_init;
    }

    return fn;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc;
    char             *err, *in, *lib, *path, *cfg, *end;
    size_t            err_len, cfg_len;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    if (size < 2) {
        return 0;
    }

    /* lib and search_path are C strings: cut them at NULs of a copy */
    in = malloc(size - 2 + 2);
    if (in == NULL) {
        return 0;
    }
    memcpy(in, data + 2, size - 2);
    in[size - 2] = '\0';
    in[size - 1] = '\0';
    end = in + size - 2;

    lib = in;
    path = lib + strlen(lib) + 1;
    cfg = (path <= end) ? path + strlen(path) + 1 : end + 1;
    cfg_len = (cfg <= end) ? (size_t) (end - cfg) : 0;
    if (path > end) {
        path = NULL;
    }
    if (data[0] & 4) {
        path = NULL;
    }

    err_len = data[1];
    err = malloc(err_len ? err_len : 1);
    if (err == NULL || nbffi_host_new(&host, 0) != 0) {
        abort();
    }
    memset(err, 'X', err_len);
    if (data[0] & 1) {
        nbffi_host_set_init_timeout(host, 10000);
    }

    rt = NULL;
    rc = nbffi_runtime_load(host, lib, path, cfg_len ? cfg : NULL, cfg_len,
                            0, 0, (data[0] & 2) ? NBFFI_LOAD_GLOBAL : 0, &rt,
                            err, err_len);

    switch (rc) {
    case 0:
        if (rt == NULL) {
            abort();
        }
        nbffi_runtime_free(rt);
        break;

    case NBFFI_EINVAL:
    case NBFFI_ELOAD:
    case NBFFI_ESYM:
    case NBFFI_EABI:
    case NBFFI_EINIT:
        if (rt != NULL || (err_len > 0 && memchr(err, '\0', err_len) == NULL)
            || (err_len > 1 && err[0] == '\0'))
        {
            abort();
        }
        break;

    default:
        abort();
    }

    if (nbffi_host_free(host) != 0) {
        abort();
    }
    free(err);
    free(in);
    return 0;
}
