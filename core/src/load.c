/*
 * Loading runtime libraries and the life of a runtime.
 *
 * Libraries are opened with RTLD_NODELETE and never closed: a Go library
 * brings a Go runtime, which cannot be unloaded, and CPython or a JVM do
 * not come back cleanly either.
 */

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nbffi_int.h"


typedef unsigned (*nbffi__abi_fn)(void);
typedef int (*nbffi__init_fn)(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, char *err, size_t err_len);
typedef void (*nbffi__fini_fn)(nbffi_queue_t *q);

/*
 * An init run on a helper thread, shared by the host thread and the helper
 * (refs, under lock); the last one out frees it.  It holds a copy of cfg
 * and its own error buffer, since the helper may outlive the load.
 */
typedef struct {
    pthread_mutex_t       lock;
    pthread_cond_t        cond;
    int                   refs;
    int                   done;
    int                   abandoned;
    int                   rc;
    nbffi__init_fn        init_fn;
    nbffi_runtime_t      *rt;
    char                  err[1024];
    size_t                cfg_len;
    char                  cfg[];
} nbffi__init_call_t;


static void *nbffi__open(const char *lib, const char *search_path, int mode,
    char *err, size_t err_len);
static int nbffi__init_bounded(nbffi_runtime_t *rt, nbffi__init_fn init_fn,
    const void *cfg, size_t cfg_len, int64_t timeout_ms, char *err,
    size_t err_len, int *abandoned);
static void *nbffi__init_thread(void *arg);
static void nbffi__init_call_unref(nbffi__init_call_t *call);
static void nbffi__set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


int
nbffi_runtime_load(nbffi_host_t *host, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    uint32_t max_queue, uint64_t max_payload, unsigned flags,
    nbffi_runtime_t **out, char *err, size_t err_len)
{
    int               rc, mode, abandoned;
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

    if (host->init_timeout_ms > 0) {
        rc = nbffi__init_bounded(rt, init_fn, cfg, cfg_len,
                                 host->init_timeout_ms, ierr, sizeof(ierr),
                                 &abandoned);
        if (abandoned) {
            /* rt stays allocated for the stuck init, see the header. */
            host->orphans++;
            nbffi__set_err(err, err_len, "%s: init did not return within "
                           "%lld ms", lib, (long long) host->init_timeout_ms);
            return NBFFI_EINIT;
        }

    } else {
        rc = init_fn(&rt->q, cfg, cfg_len, ierr, sizeof(ierr));
    }

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
 * Runs init on a helper thread and waits for it at most timeout_ms.
 * Returns init's result (or -1 with a message when the helper cannot
 * start); on timeout sets *abandoned and leaves the helper to finish alone.
 */
static int
nbffi__init_bounded(nbffi_runtime_t *rt, nbffi__init_fn init_fn,
    const void *cfg, size_t cfg_len, int64_t timeout_ms, char *err,
    size_t err_len, int *abandoned)
{
    int                  rc;
    int64_t              until;
    pthread_t            tid;
    struct timespec      ts;
    pthread_condattr_t   attr;
    nbffi__init_call_t  *call;

    *abandoned = 0;

    call = calloc(1, sizeof(nbffi__init_call_t) + cfg_len);
    if (call == NULL) {
        nbffi__set_err(err, err_len, "out of memory");
        return -1;
    }

    if (pthread_mutex_init(&call->lock, NULL) != 0) {
        goto failed_lock;
    }

    /* Wait on the deadlines' clock, immune to clock jumps. */
    if (pthread_condattr_init(&attr) != 0) {
        goto failed_attr;
    }
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(&call->cond, &attr);
    }
    (void) pthread_condattr_destroy(&attr);
    if (rc != 0) {
        goto failed_attr;
    }

    call->refs = 2;
    call->init_fn = init_fn;
    call->rt = rt;
    call->cfg_len = cfg_len;
    if (cfg_len != 0) {
        memcpy(call->cfg, cfg, cfg_len);
    }

    rc = nbffi_thread_create(&tid, nbffi__init_thread, call);
    if (rc != 0) {
        nbffi__set_err(err, err_len, "cannot start a thread for init: %s",
                       strerror(-rc));
        (void) pthread_cond_destroy(&call->cond);
        (void) pthread_mutex_destroy(&call->lock);
        free(call);
        return -1;
    }

    until = nbffi_now_ns();
    until = (timeout_ms < (INT64_MAX - until) / 1000000)
            ? until + timeout_ms * 1000000 : INT64_MAX;
    ts.tv_sec = until / 1000000000;
    ts.tv_nsec = until % 1000000000;

    pthread_mutex_lock(&call->lock);

    while (!call->done) {
        if (pthread_cond_timedwait(&call->cond, &call->lock, &ts)
            == ETIMEDOUT)
        {
            break;
        }
    }

    if (call->done) {
        rc = call->rc;
        (void) memcpy(err, call->err, err_len < sizeof(call->err)
                                      ? err_len : sizeof(call->err));
    } else {
        rc = -1;
        call->abandoned = 1;
        *abandoned = 1;
    }

    pthread_mutex_unlock(&call->lock);

    /* A helper that is done only has to unlock and leave: join it, so
     * that no thread outlives a load that returned. */
    if (*abandoned) {
        (void) pthread_detach(tid);
    } else {
        (void) pthread_join(tid, NULL);
    }

    nbffi__init_call_unref(call);
    return rc;

failed_attr:
    (void) pthread_mutex_destroy(&call->lock);
failed_lock:
    free(call);
    nbffi__set_err(err, err_len, "cannot create a lock for init");
    return -1;
}


static void *
nbffi__init_thread(void *arg)
{
    int                  rc, abandoned;
    nbffi__init_call_t  *call = arg;

    rc = call->init_fn(&call->rt->q, call->cfg, call->cfg_len, call->err,
                       sizeof(call->err));

    pthread_mutex_lock(&call->lock);
    call->rc = rc;
    call->done = 1;
    abandoned = call->abandoned;
    pthread_cond_signal(&call->cond);
    pthread_mutex_unlock(&call->lock);

    if (abandoned && rc == 0) {
        /* Nobody posts to this runtime nor frees it: let the threads its
         * init started see end-of-queue and exit. */
        nbffi__queue_close(&call->rt->q);
    }

    nbffi__init_call_unref(call);
    return NULL;
}


static void
nbffi__init_call_unref(nbffi__init_call_t *call)
{
    int  last;

    pthread_mutex_lock(&call->lock);
    last = (--call->refs == 0);
    pthread_mutex_unlock(&call->lock);

    if (last) {
        (void) pthread_cond_destroy(&call->cond);
        (void) pthread_mutex_destroy(&call->lock);
        free(call);
    }
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
