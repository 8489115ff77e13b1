/*
 * libFuzzer: a runtime's whole life through nbffi_runtime_load() with any
 * library name, search path, cfg, queue bound and start deadline: the
 * path building of short names, the error messages, init on its core
 * thread, calls posted while it starts, a close before or after the start
 * ended, and every task completing exactly once.
 *
 * core/src/library.c is compiled into this file unchanged, with the
 * dynamic loader replaced by a fake (macros, set before it is included):
 * nothing is ever loaded.  The fake "finds" a library whose file name (the
 * part after the last '/', without "lib") starts with "okfini" (init and
 * fini), "ok" (init only), "noinit" or "badabi"; its init fails when the
 * cfg starts with "fail", writing as much of the rest of the cfg as fits
 * into err.  The runtime starts no threads: its queued tasks complete as
 * closed when it closes.
 *
 * Input: flags byte (bit 0: a start deadline; bit 1: RTLD_GLOBAL; bit 2:
 * search_path NULL; bits 3-5: calls posted while it starts, 0..7; bit 6:
 * close at once, before the start ended), max_queue byte (its low 3 bits,
 * 0: the default), then lib NUL search_path NUL cfg.
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

#include "../../core/src/library.c"

#undef dlopen
#undef dlsym
#undef dlerror

#define FUZZ_MAX_CALLS  7
#define FUZZ_TASKS      (FUZZ_MAX_CALLS + 2)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { FUZZ_OKFINI = 1, FUZZ_OK, FUZZ_NOINIT, FUZZ_BADABI };

static int  fuzz_libs[5];       /* handles: addresses of the kinds */

/* One run: the tasks it waits for, each to complete exactly once. */
typedef struct {
    nbffi_host_t     *host;
    nbffi_task_t     *task[FUZZ_TASKS];
    int               done[FUZZ_TASKS];
    int               n;
} fuzz_run_t;


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

    if (strncmp(base, "okfini", 6) == 0) {
        return &fuzz_libs[FUZZ_OKFINI];
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
fuzz_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len, void **data,
    char *err, size_t err_len)
{
    size_t  n;

    if (cfg_len >= 4 && memcmp(cfg, "fail", 4) == 0) {
        /* a careless init: fills err to the brim, NUL at the very end */
        n = cfg_len - 4 < err_len - 1 ? cfg_len - 4 : err_len - 1;
        memcpy(err, (const char *) cfg + 4, n);
        err[n] = '\0';
        return 1;
    }

    *data = q;
    return 0;
}

static int
fuzz_fini(void *data, int64_t deadline_ns)
{
    (void) deadline_ns;

    /* init's pointer comes back; the queue is closed by now */
    if (data == NULL || !nbffi_queue_closed(data)) {
        abort();
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

    } else if (strcmp(name, "nbffi_runtime_fini") == 0
               && handle == &fuzz_libs[FUZZ_OKFINI])
    {
        fn = (void *) fuzz_fini;
    }

    return fn;
}

/* Reaps until task has completed; every completion is one of run's. */
static void
fuzz_wait(fuzz_run_t *run, nbffi_task_t *task)
{
    int            i, k, n, found;
    nbffi_task_t  *out[FUZZ_TASKS];

    for (k = 0; k < run->n; k++) {
        if (run->task[k] == task && run->done[k]) {
            return;
        }
    }

    for (found = 0; !found; /* void */) {
        (void) nbffi_host_wait(run->host, 0);
        nbffi_host_drain(run->host);

        n = nbffi_host_reap(run->host, out, FUZZ_TASKS);
        for (i = 0; i < n; i++) {
            for (k = 0; k < run->n && run->task[k] != out[i]; k++) {
                /* void */
            }
            if (k == run->n || run->done[k]++) {
                abort();        /* not ours, or completed twice */
            }
            found |= (out[i] == task);
        }
    }
}

/* A completed task's status and reply, as a C string it must not hold. */
static int
fuzz_status(nbffi_task_t *task, const char **reply, size_t *len)
{
    *reply = nbffi_task_reply(task, len);
    if (*len != 0 && memchr(*reply, '\0', *len) != NULL) {
        abort();
    }
    return nbffi_task_status(task);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc, i, ncalls, calls_end, status, st;
    char             *in, *lib, *path, *cfg, *end;
    size_t            cfg_len, len, clen;
    int64_t           deadline;
    uint32_t          max_queue;
    const char       *msg, *reply;
    fuzz_run_t        run;
    nbffi_task_t     *load_task, *close_task, *call;
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
    if (path > end || (data[0] & 4)) {
        path = NULL;
    }

    ncalls = (data[0] >> 3) & 7;
    max_queue = data[1] & 7;
    deadline = (data[0] & 1) ? nbffi_now_ns() + 10000000000ll : 0;

    memset(&run, 0, sizeof(run));
    if (nbffi_host_new(&run.host, 0) != 0) {
        abort();
    }

    rt = NULL;
    load_task = NULL;
    rc = nbffi_runtime_load(run.host, lib, path, cfg_len ? cfg : NULL,
                            cfg_len, max_queue, 0, deadline,
                            (data[0] & 2) ? NBFFI_LOAD_GLOBAL : 0, &rt,
                            &load_task);

    if (rc == NBFFI_EINVAL) {
        /* an empty name: nothing started */
        if (rt != NULL || load_task != NULL || lib[0] != '\0'
            || nbffi_host_free(run.host) != 0)
        {
            abort();
        }
        free(in);
        return 0;
    }

    if (rc != 0 || rt == NULL || load_task == NULL) {
        abort();
    }
    run.task[run.n++] = load_task;

    /* Calls while it starts: queued, or refused for a full queue or, if
     * the start already failed, with its status. */
    for (i = 0; i < ncalls; i++) {
        call = NULL;
        rc = nbffi_call(run.host, rt, "m", 1, "p", 1, 0, 0, &call);
        if (rc == 0) {
            run.task[run.n++] = call;
        } else if (rc != NBFFI_EQFULL && rc != NBFFI_ELOAD
                   && rc != NBFFI_ESYM && rc != NBFFI_EABI
                   && rc != NBFFI_EINIT)
        {
            abort();
        }
    }
    calls_end = run.n;

    close_task = NULL;
    if (data[0] & 64) {
        if (nbffi_runtime_close(rt, 0, &close_task) != 0
            || close_task == NULL)
        {
            abort();
        }
        run.task[run.n++] = close_task;
    }

    fuzz_wait(&run, load_task);

    status = fuzz_status(load_task, &reply, &len);
    switch (status) {
    case 0:
        if (len != 0) {
            abort();
        }
        break;

    case NBFFI_ELOAD:
    case NBFFI_ESYM:
    case NBFFI_EABI:
    case NBFFI_EINIT:
        /* a message, kept by the runtime too, within the core's bound */
        if (len == 0 || len >= NBFFI__ERR_MAX
            || nbffi_runtime_error(rt, &msg) != status
            || strlen(msg) != len || memcmp(msg, reply, len) != 0)
        {
            abort();
        }
        break;

    default:
        abort();
    }

    if (close_task == NULL) {
        if (nbffi_runtime_close(rt, 0, &close_task) != 0
            || close_task == NULL)
        {
            abort();
        }
        run.task[run.n++] = close_task;
    }

    fuzz_wait(&run, close_task);
    if (nbffi_task_status(close_task) != 0
        || nbffi_runtime_state(rt) != NBFFI_RT_CLOSED)
    {
        abort();
    }

    /* Every call completed: with the start's failure, or closed. */
    for (i = 1; i < calls_end; i++) {
        fuzz_wait(&run, run.task[i]);
        st = fuzz_status(run.task[i], &msg, &clen);
        if (status != 0
            ? (st != status || clen != len || memcmp(msg, reply, len) != 0)
            : (st != NBFFI_ECLOSED || clen != 0))
        {
            abort();
        }
    }

    for (i = 0; i < run.n; i++) {
        if (run.done[i] != 1 || nbffi_task_leaked(run.task[i])) {
            abort();
        }
        nbffi_task_release(run.task[i]);
    }

    nbffi_runtime_free(rt);

    /* Both core threads ended before their tasks were pushed. */
    if (nbffi_host_tasks_live(run.host) != 0
        || nbffi_host_free(run.host) != 0)
    {
        abort();
    }

    free(in);
    return 0;
}
