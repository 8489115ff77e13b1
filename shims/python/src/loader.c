/*
 * libnbffi_python.so: an nbffi runtime library that embeds CPython.
 *
 * The interpreter.  One per process, shared by every runtime of the
 * process.  The first nbffi_runtime_init() (in an nginx worker: after
 * fork) starts it on a thread of the library's own, the interpreter
 * thread, which calls Py_InitializeFromConfig (isolated config, UTF-8 mode,
 * no signal handlers: the host owns signals), imports the nbffi package,
 * gives the GIL up (PyEval_SaveThread) and then sleeps for the life of the
 * process.  Why a thread of its own: init runs on a core thread that exits
 * once init returns, and CPython takes the thread that initialised it for
 * its main thread for good.  With that thread gone, glibc would give its
 * thread id to a later thread: a runtime thread could pass for the main
 * thread, and a handler's signal.signal() would replace nginx's signal
 * handlers.  With the interpreter thread alive, no runtime thread is the
 * main thread, and signal.signal() there raises ValueError.
 *
 * The interpreter is never finalized.  Py_FinalizeEx must not run while a
 * thread of a runtime may still be in Python code (one that did not stop
 * by its close deadline); CPython cannot be initialised again reliably
 * after it (numpy and other extension modules refuse a second import), so
 * a process that closes its last Python runtime and loads another must
 * keep it; and at process exit it would run on the host's thread.
 * Handlers release resources in their close() hook.
 *
 * A runtime.  One thread (nbffi_thread_create: host signals blocked),
 * which attaches with PyGILState_Ensure, imports the handler, reports
 * success or the traceback to init, then runs nbffi._embed.serve() until
 * the queue is closed and every call is answered.  init hands back the
 * runtime's struct as its data.
 *
 * Stop.  fini runs on a core thread after the host closed the queue.  It
 * attaches and calls nbffi._embed.stop(), which waits for serving to end
 * and makes it hurry as the deadline nears (asyncio handlers cancelled,
 * calls not yet started refused, then nbffi.Interrupted raised in a
 * runtime thread still in Python code); then it waits for the thread
 * until the deadline.  A thread that stays (blocked in C code, as in
 * time.sleep) is counted, and the struct is left to it.
 */

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"


#define NBFFI_PY_PATH_MAX  4096

typedef enum {
    NBFFI_PY_STARTING = 0,
    NBFFI_PY_SERVING,
    NBFFI_PY_FAILED,
    NBFFI_PY_DONE           /* the thread is leaving: q untouched */
} nbffi_py_state_t;

typedef struct nbffi_py_rt_s  nbffi_py_rt_t;

struct nbffi_py_rt_s {
    nbffi_queue_t     *q;
    pthread_t          thread;
    PyObject          *server;      /* fini's reference; GIL */

    pthread_mutex_t    lock;
    pthread_cond_t     cond;        /* on CLOCK_MONOTONIC, as deadlines */
    nbffi_py_state_t   state;

    /* init's arguments, valid while state is NBFFI_PY_STARTING */
    const void        *cfg;
    size_t             cfg_len;
    char              *err;
    size_t             err_len;
};


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);
NBFFI_EXTERN int nbffi_runtime_check(const void *cfg, size_t cfg_len,
    char *err, size_t err_len);

static int nbffi_py_interpreter(char *err, size_t err_len);
static void *nbffi_py_interpreter_main(void *arg);
static int nbffi_py_start(char *err, size_t err_len);
static int nbffi_py_config(PyConfig *config, char *err, size_t err_len);
static int nbffi_py_status(PyStatus st, char *err, size_t err_len);
static int nbffi_py_add_package_dir(void);
static void nbffi_py_error_text(const char *prefix, char *buf, size_t len);
static nbffi_py_rt_t *nbffi_py_rt_new(nbffi_queue_t *q, char *err,
    size_t err_len);
static void nbffi_py_rt_free(nbffi_py_rt_t *rt);
static void *nbffi_py_thread(void *arg);
static PyObject *nbffi_py_thread_start(nbffi_py_rt_t *rt, PyObject *queue);
static void nbffi_py_set_state(nbffi_py_rt_t *rt, nbffi_py_state_t state);
static nbffi_py_state_t nbffi_py_wait_state(nbffi_py_rt_t *rt,
    nbffi_py_state_t past, int64_t deadline_ns);
static void nbffi_py_refuse_rest(nbffi_queue_t *q, const char *text);


/* Lock order: the GIL, then a runtime's lock; nbffi_py_lock is taken
 * with neither held. */
static pthread_mutex_t  nbffi_py_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t   nbffi_py_started = PTHREAD_COND_INITIALIZER;
static pid_t            nbffi_py_pid;          /* 0: not started here */
static int              nbffi_py_starting;     /* the start still runs */
static char             nbffi_py_failed[1024]; /* sticky start failure */
static PyObject        *nbffi_py_embed;        /* nbffi._embed */


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


/*
 * nbffi_preflight()'s check, in a short-lived child process (the
 * interpreter it starts goes with it): nbffi._embed.check() of cfg --
 * the cfg parses, its "path" and "venv" exist, the handler's module is
 * found -- without importing the handler.
 */
int
nbffi_runtime_check(const void *cfg, size_t cfg_len, char *err,
    size_t err_len)
{
    int               rc;
    PyObject         *res;
    const char       *text;
    PyGILState_STATE  gil;

    if (nbffi_py_interpreter(err, err_len) != 0) {
        return -1;
    }

    gil = PyGILState_Ensure();

    rc = -1;
    res = PyObject_CallMethod(nbffi_py_embed, "check", "y#",
                              (const char *) cfg, (Py_ssize_t) cfg_len);
    if (res == NULL) {
        nbffi_py_error_text("python: ", err, err_len);

    } else {
        text = PyUnicode_AsUTF8(res);
        if (text == NULL) {
            nbffi_py_error_text("python: ", err, err_len);
        } else if (*text != '\0') {
            (void) snprintf(err, err_len, "%s", text);
        } else {
            rc = 0;
        }
        Py_DECREF(res);
    }

    PyGILState_Release(gil);

    return rc;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    int             rc;
    nbffi_py_rt_t  *rt;

    if (nbffi_py_interpreter(err, err_len) != 0) {
        return -1;
    }

    rt = nbffi_py_rt_new(q, err, err_len);
    if (rt == NULL) {
        return -1;
    }

    rt->cfg = cfg;
    rt->cfg_len = cfg_len;
    rt->err = err;
    rt->err_len = err_len;

    rc = nbffi_thread_create(&rt->thread, nbffi_py_thread, rt);
    if (rc != 0) {
        (void) snprintf(err, err_len, "python: cannot start the runtime "
                        "thread: %s", nbffi_strerror(rc));
        nbffi_py_rt_free(rt);
        return -1;
    }

    /* The handler's import runs there (the core bounds how long). */
    if (nbffi_py_wait_state(rt, NBFFI_PY_STARTING, 0) == NBFFI_PY_FAILED) {
        /* the thread wrote err */
        (void) pthread_join(rt->thread, NULL);
        nbffi_py_rt_free(rt);
        return -1;
    }

    rt->cfg = NULL;
    rt->err = NULL;
    *data = rt;

    return 0;
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    char               failure[1024];
    PyObject          *res;
    nbffi_py_rt_t     *rt;
    PyGILState_STATE   gil;

    rt = data;

    /* The queue is closed: serving ends once the calls are answered. */
    gil = PyGILState_Ensure();

    res = PyObject_CallMethod(nbffi_py_embed, "stop", "OL", rt->server,
                              (long long) deadline_ns);
    if (res == NULL) {
        nbffi_py_error_text("python: stopping the runtime failed: ",
                            failure, sizeof(failure));
        nbffi_log(rt->q, NBFFI_LOG_ERR, failure, strlen(failure));
    }

    Py_XDECREF(res);
    Py_CLEAR(rt->server);

    PyGILState_Release(gil);

    if (nbffi_py_wait_state(rt, NBFFI_PY_SERVING, deadline_ns)
        != NBFFI_PY_DONE)
    {
        /* rt stays: the thread still uses it */
        return 1;
    }

    (void) pthread_join(rt->thread, NULL);
    nbffi_py_rt_free(rt);

    return 0;
}


/*
 * Starts the interpreter thread once per process and waits for its start;
 * 0 when the interpreter is ready, else -1 with the reason in err.
 */
static int
nbffi_py_interpreter(char *err, size_t err_len)
{
    int        rc;
    pthread_t  thread;

    pthread_mutex_lock(&nbffi_py_lock);

    if (nbffi_py_pid == 0) {
        rc = nbffi_thread_create(&thread, nbffi_py_interpreter_main, NULL);
        if (rc != 0) {
            pthread_mutex_unlock(&nbffi_py_lock);
            (void) snprintf(err, err_len, "python: cannot start the "
                            "interpreter thread: %s", nbffi_strerror(rc));
            return -1;
        }

        (void) pthread_detach(thread);
        nbffi_py_pid = getpid();
        nbffi_py_starting = 1;

    } else if (nbffi_py_pid != getpid()) {
        pthread_mutex_unlock(&nbffi_py_lock);
        /* its threads and GIL state did not survive the fork */
        (void) snprintf(err, err_len, "python: the interpreter was started "
                        "in process %d, before this one forked; load Python "
                        "runtimes after fork (init_worker_by_lua)",
                        (int) nbffi_py_pid);
        return -1;
    }

    while (nbffi_py_starting) {
        pthread_cond_wait(&nbffi_py_started, &nbffi_py_lock);
    }

    rc = 0;
    if (nbffi_py_failed[0] != '\0') {
        (void) snprintf(err, err_len, "%s", nbffi_py_failed);
        rc = -1;
    }

    pthread_mutex_unlock(&nbffi_py_lock);

    return rc;
}


/* The interpreter thread, see the top of this file. */
static void *
nbffi_py_interpreter_main(void *arg)
{
    char  err[sizeof(nbffi_py_failed)];

    (void) arg;

    err[0] = '\0';

    if (nbffi_py_start(err, sizeof(err)) != 0 && err[0] == '\0') {
        (void) snprintf(err, sizeof(err), "python: the interpreter did not "
                        "start");
    }

    pthread_mutex_lock(&nbffi_py_lock);
    (void) snprintf(nbffi_py_failed, sizeof(nbffi_py_failed), "%s", err);
    nbffi_py_starting = 0;
    pthread_cond_broadcast(&nbffi_py_started);
    pthread_mutex_unlock(&nbffi_py_lock);

    if (!Py_IsInitialized()) {
        return NULL;
    }

    /* The interpreter's main thread stays; its signals are blocked. */
    for ( ;; ) {
        (void) pause();
    }
}


static int
nbffi_py_start(char *err, size_t err_len)
{
    Dl_info     info;
    PyObject   *mod;
    PyConfig    config;
    PyStatus    st;
    PyPreConfig pre;

    if (Py_IsInitialized()) {
        (void) snprintf(err, err_len, "python: this process already runs "
                        "an interpreter that nbffi did not start");
        return -1;
    }

    /*
     * Extension modules (numpy, ...) are not linked to libpython: they
     * expect its symbols in the global scope, and the host dlopen()ed this
     * library, and so libpython, RTLD_LOCAL.  Promote libpython.
     */
    if (dladdr((void *) Py_InitializeFromConfig, &info) == 0
        || info.dli_fname == NULL
        || dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL)
           == NULL)
    {
        (void) snprintf(err, err_len, "python: cannot make libpython's "
                        "symbols global: %s", dlerror());
        return -1;
    }

    if (PyImport_AppendInittab("_nbffi", nbffi_py_module_init) != 0) {
        (void) snprintf(err, err_len, "python: cannot register _nbffi");
        return -1;
    }

    /* UTF-8 mode: the host's locale (nginx: "C") must not decide. */
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.utf8_mode = 1;

    st = Py_PreInitialize(&pre);
    if (nbffi_py_status(st, err, err_len) != 0) {
        return -1;
    }

    PyConfig_InitIsolatedConfig(&config);

    if (nbffi_py_config(&config, err, err_len) != 0) {
        PyConfig_Clear(&config);
        return -1;
    }

    st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);

    if (nbffi_py_status(st, err, err_len) != 0) {
        return -1;
    }

    if (nbffi_py_add_package_dir() != 0) {
        nbffi_py_error_text("python: ", err, err_len);
        (void) PyEval_SaveThread();
        return -1;
    }

    /* _nbffi first: its init readies the Queue and Task types */
    mod = PyImport_ImportModule("_nbffi");
    Py_XDECREF(mod);

    nbffi_py_embed = (mod != NULL) ? PyImport_ImportModule("nbffi._embed")
                                   : NULL;
    if (nbffi_py_embed == NULL) {
        nbffi_py_error_text("python: cannot import the nbffi package: ",
                            err, err_len);
    }

    /* For good: runtime threads take the GIL with PyGILState_Ensure. */
    (void) PyEval_SaveThread();

    return nbffi_py_embed == NULL ? -1 : 0;
}


static int
nbffi_py_config(PyConfig *config, char *err, size_t err_len)
{
    PyStatus  st;

    config->install_signal_handlers = 0;

    /*
     * The Python this library was built against, whatever python3 comes
     * first in the host's PATH: its prefix holds the matching stdlib.
     */
    st = PyConfig_SetBytesString(config, &config->home, NBFFI_PY_HOME);
    if (nbffi_py_status(st, err, err_len) != 0) {
        return -1;
    }

    st = PyConfig_SetBytesString(config, &config->program_name,
                                 NBFFI_PY_EXECUTABLE);
    return nbffi_py_status(st, err, err_len);
}


static int
nbffi_py_status(PyStatus st, char *err, size_t err_len)
{
    if (!PyStatus_Exception(st)) {
        return 0;
    }

    (void) snprintf(err, err_len, "python: cannot start the interpreter: "
                    "%s%s%s", st.func != NULL ? st.func : "",
                    st.func != NULL ? ": " : "",
                    st.err_msg != NULL ? st.err_msg : "exit requested");
    return -1;
}


/*
 * GIL held.  The nbffi package installed next to this library (the build
 * tree, or meson install) goes first on sys.path, so that it matches the
 * _nbffi module compiled in here; without one, import finds it on sys.path.
 */
static int
nbffi_py_add_package_dir(void)
{
    int        rc;
    char       path[NBFFI_PY_PATH_MAX], *slash;
    Dl_info    info;
    PyObject  *dir, *sys_path;

    if (dladdr((void *) nbffi_runtime_init, &info) == 0
        || info.dli_fname == NULL
        || snprintf(path, sizeof(path), "%s", info.dli_fname)
           >= (int) sizeof(path)
        || (slash = strrchr(path, '/')) == NULL)
    {
        return 0;
    }

    *slash = '\0';

    if (snprintf(slash, sizeof(path) - (size_t) (slash - path),
                 "/nbffi/__init__.py")
        >= (int) (sizeof(path) - (size_t) (slash - path))
        || access(path, R_OK) != 0)
    {
        return 0;
    }

    *slash = '\0';

    sys_path = PySys_GetObject("path");    /* borrowed */
    dir = PyUnicode_DecodeFSDefault(path);
    if (sys_path == NULL || dir == NULL) {
        Py_XDECREF(dir);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "sys.path is missing");
        }
        return -1;
    }

    rc = PyList_Insert(sys_path, 0, dir);
    Py_DECREF(dir);

    return rc;
}


/*
 * GIL held, with an exception set.  Clears it and writes prefix and its
 * formatted traceback (or at least its str) to buf.
 */
static void
nbffi_py_error_text(const char *prefix, char *buf, size_t len)
{
    PyObject    *type, *value, *tb, *mod, *lines, *empty, *text;
    const char  *utf8;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);

    text = NULL;
    mod = PyImport_ImportModule("traceback");

    if (mod != NULL) {
        lines = PyObject_CallMethod(mod, "format_exception", "OOO", type,
                                    value != NULL ? value : Py_None,
                                    tb != NULL ? tb : Py_None);
        empty = PyUnicode_FromString("");
        if (lines != NULL && empty != NULL) {
            text = PyUnicode_Join(empty, lines);
        }
        Py_XDECREF(lines);
        Py_XDECREF(empty);
        Py_DECREF(mod);
    }

    if (text == NULL) {
        PyErr_Clear();
        text = PyObject_Str(value != NULL ? value : type);
    }

    utf8 = (text != NULL) ? PyUnicode_AsUTF8(text) : NULL;

    (void) snprintf(buf, len, "%s%s", prefix,
                    utf8 != NULL ? utf8 : "(an exception without text)");

    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}


static nbffi_py_rt_t *
nbffi_py_rt_new(nbffi_queue_t *q, char *err, size_t err_len)
{
    nbffi_py_rt_t       *rt;
    pthread_condattr_t   attr;

    rt = calloc(1, sizeof(nbffi_py_rt_t));
    if (rt == NULL) {
        (void) snprintf(err, err_len, "python: out of memory");
        return NULL;
    }

    rt->q = q;
    rt->state = NBFFI_PY_STARTING;

    if (pthread_mutex_init(&rt->lock, NULL) != 0) {
        (void) snprintf(err, err_len, "python: cannot create a mutex");
        goto failed_lock;
    }

    if (pthread_condattr_init(&attr) != 0) {
        goto failed_cond;
    }

    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&rt->cond, &attr) != 0)
    {
        (void) pthread_condattr_destroy(&attr);
        goto failed_cond;
    }

    (void) pthread_condattr_destroy(&attr);

    return rt;

failed_cond:
    (void) snprintf(err, err_len, "python: cannot create a condvar");
    (void) pthread_mutex_destroy(&rt->lock);
failed_lock:
    free(rt);
    return NULL;
}


static void
nbffi_py_rt_free(nbffi_py_rt_t *rt)
{
    (void) pthread_cond_destroy(&rt->cond);
    (void) pthread_mutex_destroy(&rt->lock);
    free(rt);
}


static void *
nbffi_py_thread(void *arg)
{
    nbffi_py_rt_t     *rt;
    nbffi_queue_t     *q;
    PyObject          *queue, *server, *res;
    PyGILState_STATE   gil;
    char               failure[2048];

    rt = arg;
    q = rt->q;
    failure[0] = '\0';

    gil = PyGILState_Ensure();

    queue = nbffi_py_queue_new(q);
    server = (queue != NULL) ? nbffi_py_thread_start(rt, queue) : NULL;

    if (server == NULL) {
        if (queue == NULL) {
            nbffi_py_error_text("python: ", rt->err, rt->err_len);
        }
        Py_XDECREF(queue);
        PyGILState_Release(gil);
        nbffi_py_set_state(rt, NBFFI_PY_FAILED);
        return NULL;
    }

    Py_INCREF(server);
    rt->server = server;

    /* From here on init's arguments are gone; fini may come any time. */
    nbffi_py_set_state(rt, NBFFI_PY_SERVING);

    res = PyObject_CallMethod(nbffi_py_embed, "serve", "O", server);
    if (res == NULL) {
        nbffi_py_error_text("python runtime failed: ", failure,
                            sizeof(failure));
        nbffi_log(q, NBFFI_LOG_ERR, failure, strlen(failure));
    }

    Py_XDECREF(res);
    Py_DECREF(server);

    nbffi_py_queue_detach(queue, failure[0] != '\0' ? failure
                          : "python: the runtime stopped before the handler "
                            "answered");
    Py_DECREF(queue);

    PyGILState_Release(gil);

    if (failure[0] != '\0') {
        nbffi_py_refuse_rest(q, failure);
    }

    nbffi_py_set_state(rt, NBFFI_PY_DONE);

    return NULL;
}


/*
 * GIL held.  Runs nbffi._embed.start(); returns the server, or NULL after
 * writing the reason to rt->err.
 */
static PyObject *
nbffi_py_thread_start(nbffi_py_rt_t *rt, PyObject *queue)
{
    PyObject    *res, *server;
    const char  *text;

    res = PyObject_CallMethod(nbffi_py_embed, "start", "Oy#", queue,
                              (const char *) rt->cfg,
                              (Py_ssize_t) rt->cfg_len);
    if (res == NULL) {
        nbffi_py_error_text("python: ", rt->err, rt->err_len);
        return NULL;
    }

    server = PyTuple_GetItem(res, 0);
    text = PyUnicode_AsUTF8(PyTuple_GetItem(res, 1));

    if (server == NULL || text == NULL) {
        Py_DECREF(res);
        nbffi_py_error_text("python: ", rt->err, rt->err_len);
        return NULL;
    }

    if (server == Py_None) {
        (void) snprintf(rt->err, rt->err_len, "%s", text);
        Py_DECREF(res);
        return NULL;
    }

    Py_INCREF(server);
    Py_DECREF(res);

    return server;
}


static void
nbffi_py_set_state(nbffi_py_rt_t *rt, nbffi_py_state_t state)
{
    pthread_mutex_lock(&rt->lock);
    rt->state = state;
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
}


/*
 * Waits until the state is no longer past, or until deadline_ns (0: no
 * limit); returns the state.
 */
static nbffi_py_state_t
nbffi_py_wait_state(nbffi_py_rt_t *rt, nbffi_py_state_t past,
    int64_t deadline_ns)
{
    nbffi_py_state_t  state;
    struct timespec   ts;

    ts.tv_sec = (time_t) (deadline_ns / 1000000000);
    ts.tv_nsec = (long) (deadline_ns % 1000000000);

    pthread_mutex_lock(&rt->lock);

    while (rt->state == past) {
        if (deadline_ns == 0) {
            pthread_cond_wait(&rt->cond, &rt->lock);

        } else if (pthread_cond_timedwait(&rt->cond, &rt->lock, &ts)
                   == ETIMEDOUT)
        {
            break;
        }
    }

    state = rt->state;

    pthread_mutex_unlock(&rt->lock);

    return state;
}


/*
 * Serving failed while the queue is open (a bug in nbffi._serve): answer
 * every call with the failure until the host closes the runtime.
 */
static void
nbffi_py_refuse_rest(nbffi_queue_t *q, const char *text)
{
    int            i, n;
    size_t         len;
    nbffi_task_t  *out[64];

    len = strlen(text);

    while ((n = nbffi_queue_pop(q, out, 64, -1)) > 0) {
        for (i = 0; i < n; i++) {
            (void) nbffi_task_respond(out[i], NBFFI_PY_STATUS_ERROR, text,
                                      len);
        }
    }
}
