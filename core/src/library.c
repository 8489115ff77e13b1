/*
 * Finding and opening a runtime library, and checking its entry points.
 * Runs on a core thread: dlopen runs the library's constructors (a Go
 * runtime starts there), which must not run on the host thread.
 *
 * Libraries are opened with RTLD_NODELETE and never closed: a Go library
 * brings a Go runtime, which cannot be unloaded, and CPython or a JVM do
 * not come back cleanly either.
 */

#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "nbffi_int.h"


static void *nbffi__library_find(const char *lib, const char *search_path,
    int mode, char *err, size_t err_len);
static void nbffi__set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


/*
 * Core thread.  Opens rt's library and checks it: on success stores its
 * entry points (fini may be NULL) and returns 0; else returns NBFFI_ELOAD,
 * NBFFI_ESYM or NBFFI_EABI with a message in err.
 */
int
nbffi__library_open(nbffi_runtime_t *rt, nbffi_runtime_init_fn *init,
    char *err, size_t err_len)
{
    int    rc;
    void  *dl;

    rc = nbffi__library_load(rt->lib, rt->search_path, rt->flags, &dl, init,
                             err, err_len);
    if (rc != 0) {
        return rc;
    }

    rt->dl = dl;
    *(void **) &rt->fini = dlsym(dl, "nbffi_runtime_fini");
    return 0;
}


/*
 * Any thread that may run a library's constructors.  Finds and opens lib
 * (flags: NBFFI_LOAD_*) and checks its entry points and ABI version: 0
 * with the handle in *dl and init in *init, else NBFFI_ELOAD, NBFFI_ESYM
 * or NBFFI_EABI with a message in err.
 */
int
nbffi__library_load(const char *lib, const char *search_path,
    unsigned flags, void **dl, nbffi_runtime_init_fn *init, char *err,
    size_t err_len)
{
    int                   mode;
    unsigned              abi;
    nbffi_runtime_abi_fn  abi_fn;

    mode = RTLD_NOW | RTLD_NODELETE
           | ((flags & NBFFI_LOAD_GLOBAL) ? RTLD_GLOBAL : RTLD_LOCAL);

    *dl = nbffi__library_find(lib, search_path, mode, err, err_len);
    if (*dl == NULL) {
        return NBFFI_ELOAD;
    }

    *(void **) &abi_fn = dlsym(*dl, "nbffi_runtime_abi");
    *(void **) init = dlsym(*dl, "nbffi_runtime_init");

    if (abi_fn == NULL || *init == NULL) {
        nbffi__set_err(err, err_len, "%s: no %s: not an nbffi runtime library",
                       lib, abi_fn == NULL ? "nbffi_runtime_abi"
                                           : "nbffi_runtime_init");
        return NBFFI_ESYM;
    }

    abi = abi_fn();
    if (abi != NBFFI_ABI_VERSION) {
        nbffi__set_err(err, err_len,
                       "%s: built for nbffi ABI %u, this libnbffi has ABI %u:"
                       " rebuild the runtime library", lib, abi,
                       NBFFI_ABI_VERSION);
        return NBFFI_EABI;
    }

    return 0;
}


/*
 * Tries lib as a path, or as a short name: lib<name>.so in each directory
 * of search_path, then lib<name>.so and <name> through dlopen's own search.
 * The error reported is the most telling one: that of a file that exists
 * but would not load, else dlopen's for the last candidate.
 */
static void *
nbffi__library_find(const char *lib, const char *search_path, int mode,
    char *err, size_t err_len)
{
    int          found;
    char         path[4096];
    void        *dl;
    size_t       dlen;
    const char  *dir, *end;

    if (strchr(lib, '/') != NULL) {
        dl = dlopen(lib, mode);
        if (dl == NULL) {
            nbffi__set_err(err, err_len, "%s", dlerror());
        }
        return dl;
    }

    found = 0;

    for (dir = search_path; dir != NULL && *dir != '\0'; dir = end) {
        end = strchr(dir, ':');
        dlen = end ? (size_t) (end - dir) : strlen(dir);
        end = end ? end + 1 : NULL;

        if (dlen == 0
            || (size_t) snprintf(path, sizeof(path), "%.*s/lib%s.so",
                                 (int) dlen, dir, lib) >= sizeof(path)
            || access(path, F_OK) != 0)
        {
            continue;
        }

        dl = dlopen(path, mode);
        if (dl != NULL) {
            return dl;
        }

        if (!found) {
            nbffi__set_err(err, err_len, "%s", dlerror());
            found = 1;
        }
    }

    (void) snprintf(path, sizeof(path), "lib%s.so", lib);

    dl = dlopen(path, mode);
    if (dl == NULL) {
        dl = dlopen(lib, mode);
    }

    if (dl == NULL && !found) {
        nbffi__set_err(err, err_len, "%s: not found: no lib%s.so in search "
                       "path \"%s\", and the dynamic linker finds neither "
                       "lib%s.so nor %s: %s", lib, lib,
                       search_path ? search_path : "", lib, lib, dlerror());
    }

    return dl;
}


static void
nbffi__set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL || err_len == 0) {
        return;
    }

    va_start(ap, fmt);
    (void) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
