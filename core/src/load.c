/*
 * Loading runtime libraries and the life of a runtime.
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


typedef unsigned (*nbffi__abi_fn)(void);
typedef int (*nbffi__init_fn)(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, char *err, size_t err_len);
typedef void (*nbffi__fini_fn)(nbffi_queue_t *q);


static void *nbffi__open(const char *lib, const char *search_path, int mode,
    char *err, size_t err_len);
static void nbffi__set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


int
nbffi_runtime_load(nbffi_host_t *host, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    uint32_t max_queue, uint64_t max_payload, unsigned flags,
    nbffi_runtime_t **out, char *err, size_t err_len)
{
    int               rc, mode;
    char              ierr[1024];
    void             *dl;
    unsigned          abi;
    nbffi__abi_fn     abi_fn;
    nbffi__init_fn    init_fn;
    nbffi_runtime_t  *rt;

    if (host == NULL || lib == NULL || lib[0] == '\0' || out == NULL
        || (cfg == NULL && cfg_len != 0) || (flags & ~NBFFI_LOAD_GLOBAL))
    {
        nbffi__set_err(err, err_len, "invalid argument");
        return NBFFI_EINVAL;
    }

    mode = RTLD_NOW | RTLD_NODELETE
           | ((flags & NBFFI_LOAD_GLOBAL) ? RTLD_GLOBAL : RTLD_LOCAL);

    dl = nbffi__open(lib, search_path, mode, err, err_len);
    if (dl == NULL) {
        return NBFFI_ELOAD;
    }

    *(void **) &abi_fn = dlsym(dl, "nbffi_runtime_abi");
    *(void **) &init_fn = dlsym(dl, "nbffi_runtime_init");

    if (abi_fn == NULL || init_fn == NULL) {
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

    rt = calloc(1, sizeof(nbffi_runtime_t));
    if (rt == NULL) {
        nbffi__set_err(err, err_len, "out of memory");
        return NBFFI_ENOMEM;
    }

    rc = nbffi__queue_init(&rt->q, rt,
                           max_queue ? max_queue : NBFFI__DEFAULT_MAX_QUEUE);
    if (rc != 0) {
        free(rt);
        nbffi__set_err(err, err_len, "cannot create the request queue");
        return rc;
    }

    rt->host = host;
    rt->dl = dl;
    *(void **) &rt->fini = dlsym(dl, "nbffi_runtime_fini");
    rt->max_payload = max_payload ? max_payload : NBFFI__DEFAULT_MAX_PAYLOAD;
    atomic_init(&rt->refs, 1);

    ierr[0] = '\0';
    rc = init_fn(&rt->q, cfg, cfg_len, ierr, sizeof(ierr));
    if (rc != 0) {
        ierr[sizeof(ierr) - 1] = '\0';
        nbffi__set_err(err, err_len, "%s: init failed: %s", lib,
                       ierr[0] ? ierr : "(no message)");
        nbffi__queue_destroy(&rt->q);
        free(rt);
        return NBFFI_EINIT;
    }

    host->runtimes++;
    *out = rt;
    return 0;
}


void
nbffi_runtime_close(nbffi_runtime_t *rt)
{
    if (!atomic_load_explicit(&rt->q.closed, memory_order_relaxed)) {
        nbffi__queue_close(&rt->q);
    }
}


int
nbffi_runtime_closed(nbffi_runtime_t *rt)
{
    return atomic_load_explicit(&rt->q.closed, memory_order_relaxed);
}


void
nbffi_runtime_free(nbffi_runtime_t *rt)
{
    if (rt->freed) {
        return;
    }

    rt->freed = 1;
    nbffi_runtime_close(rt);

    if (rt->fini != NULL) {
        rt->fini(&rt->q);

        /* No runtime thread touches the queue any more: whatever it never
         * answered is answered now, exactly once. */
        nbffi__queue_fail_all(&rt->q, NBFFI_ECLOSED);
    }

    rt->host->runtimes--;
    nbffi__runtime_unref(rt);
}


void
nbffi__runtime_unref(nbffi_runtime_t *rt)
{
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }

    nbffi__queue_destroy(&rt->q);
    free(rt);
}


void
nbffi_runtime_set_spin(nbffi_runtime_t *rt, int64_t max_ns)
{
    atomic_store_explicit(&rt->q.spin_max, max_ns > 0 ? max_ns : 0,
                          memory_order_relaxed);
}


void
nbffi_runtime_stats(nbffi_runtime_t *rt, nbffi_stats_t *out)
{
    uint64_t  posted, finished;

    /* finished first: posted is then never behind it */
    finished = atomic_load_explicit(&rt->finished, memory_order_relaxed);
    posted = atomic_load_explicit(&rt->posted, memory_order_relaxed);

    out->posted = posted;
    out->completed = atomic_load_explicit(&rt->completed,
                                          memory_order_relaxed);
    out->failed = atomic_load_explicit(&rt->failed, memory_order_relaxed);
    out->timed_out = atomic_load_explicit(&rt->timed_out,
                                          memory_order_relaxed);
    out->abandoned = atomic_load_explicit(&rt->abandoned,
                                          memory_order_relaxed);
    out->in_flight = posted >= finished ? posted - finished : 0;
    out->queued = atomic_load_explicit(&rt->q.len, memory_order_relaxed);
    out->refused = atomic_load_explicit(&rt->refused, memory_order_relaxed);
}


/*
 * Tries lib as a path, or as a short name: lib<name>.so in each directory
 * of search_path, then lib<name>.so and <name> through dlopen's own search.
 * The error reported is the most telling one: that of a file that exists
 * but would not load, else dlopen's for the last candidate.
 */
static void *
nbffi__open(const char *lib, const char *search_path, int mode, char *err,
    size_t err_len)
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
        nbffi__set_err(err, err_len, "%s: not found in search path \"%s\" "
                       "nor by dlopen: %s", lib,
                       search_path ? search_path : "", dlerror());
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
