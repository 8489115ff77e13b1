/*
 * The built-in module _nbffi: the runtime half of nbffi as Python objects,
 * used by nbffi._serve.
 *
 *   Queue.pop(max, timeout) -> list[Task] ([] on timeout) or None once the
 *       queue is closed and empty; timeout in seconds, -1 forever, 0 no
 *       wait.  The GIL is released while it waits (and spins).
 *   Queue.fd() -> the queue's eventfd; Queue.drain() reads it.
 *   Queue.log(level, text) -> nbffi_log.
 *   Queue.emit(name, data) -> nbffi_emit: True (queued) or False
 *       (dropped and counted by the host).
 *   Queue.interrupt(exc) raises exc in the thread that serves the queue.
 *   Task.method (str), Task.payload (bytes), Task.cancelled (bool: the
 *       caller gave up), Task.meta (dict), Task.deadline (ns, 0: none),
 *       Task.window (0: a plain call), Task.send(data, timeout) ->
 *       nbffi_task_send: None (sent) or "full", "cancelled", "timeout",
 *       "closed"; Task.log(level, text) -> nbffi_task_log (False once
 *       answered); Task.respond(data, status=0).
 *
 * Every Task not yet answered is linked into its Queue, so that the loader
 * can answer and detach all of them when the runtime stops, and a Task
 * that is garbage-collected unanswered answers itself: a task is answered
 * exactly once whatever the Python code does.
 */

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "shim.h"
#include <structmember.h>


#define NBFFI_PY_POP_MAX        256
/* Replies above this are copied with the GIL released. */
#define NBFFI_PY_NOGIL_COPY     (64 * 1024)
/* Milliseconds detach waits for sends still waiting in other threads. */
#define NBFFI_PY_DETACH_WAITS   1000

typedef struct nbffi_py_task_s   nbffi_py_task_t;
typedef struct nbffi_py_queue_s  nbffi_py_queue_t;

struct nbffi_py_queue_s {
    PyObject_HEAD
    nbffi_queue_t     *q;           /* NULL once detached */
    nbffi_py_task_t   *unanswered;  /* list of Tasks still to answer */
    unsigned long      serving;     /* thread id of the runtime thread */
};

struct nbffi_py_task_s {
    PyObject_HEAD
    nbffi_task_t      *task;        /* NULL once answered */
    nbffi_py_queue_t  *queue;       /* strong reference */
    nbffi_py_task_t   *prev;
    nbffi_py_task_t   *next;
    PyObject          *method;
    PyObject          *payload;
    PyObject          *meta;        /* dict, NULL when the call has none */
    int64_t            deadline;
    unsigned           window;
    unsigned           sending;     /* sends waiting with the GIL released */
};


static int nbffi_py_sending(nbffi_py_queue_t *self);
static PyObject *nbffi_py_queue_pop(nbffi_py_queue_t *self, PyObject *args);
static PyObject *nbffi_py_queue_fd(nbffi_py_queue_t *self,
    PyObject *unused);
static PyObject *nbffi_py_queue_drain(nbffi_py_queue_t *self,
    PyObject *unused);
static PyObject *nbffi_py_queue_log(nbffi_py_queue_t *self, PyObject *args);
static PyObject *nbffi_py_queue_emit(nbffi_py_queue_t *self,
    PyObject *args);
static PyObject *nbffi_py_queue_interrupt(nbffi_py_queue_t *self,
    PyObject *exc);
static void nbffi_py_queue_dealloc(nbffi_py_queue_t *self);
static PyObject *nbffi_py_task_wrap(nbffi_py_queue_t *queue,
    nbffi_task_t *task);
static PyObject *nbffi_py_task_respond(nbffi_py_task_t *self,
    PyObject *args, PyObject *kwargs);
static void nbffi_py_task_answer(nbffi_py_task_t *self, int status,
    const void *data, size_t len);
static PyObject *nbffi_py_task_cancelled(nbffi_py_task_t *self,
    void *unused);
static PyObject *nbffi_py_task_meta(nbffi_py_task_t *self, void *unused);
static PyObject *nbffi_py_task_meta_dict(nbffi_task_t *task);
static PyObject *nbffi_py_task_send(nbffi_py_task_t *self, PyObject *args);
static PyObject *nbffi_py_task_log(nbffi_py_task_t *self, PyObject *args);
static void nbffi_py_task_dealloc(nbffi_py_task_t *self);


static PyMethodDef  nbffi_py_queue_methods[] = {
    { "pop", (PyCFunction) nbffi_py_queue_pop, METH_VARARGS,
      "pop(max, timeout) -> list of Task, or None once closed and empty" },
    { "fd", (PyCFunction) nbffi_py_queue_fd, METH_NOARGS,
      "fd() -> eventfd readable when tasks are queued or on close" },
    { "drain", (PyCFunction) nbffi_py_queue_drain, METH_NOARGS,
      "drain() reads the eventfd" },
    { "log", (PyCFunction) nbffi_py_queue_log, METH_VARARGS,
      "log(level, text) writes a line to the host's log" },
    { "emit", (PyCFunction) nbffi_py_queue_emit, METH_VARARGS,
      "emit(name, data) -> True if queued, False if the host dropped it" },
    { "interrupt", (PyCFunction) nbffi_py_queue_interrupt, METH_O,
      "interrupt(exc) raises exc in the thread serving the queue, if it "
      "still does; returns whether it did" },
    { NULL, NULL, 0, NULL }
};

static PyTypeObject  nbffi_py_queue_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_nbffi.Queue",
    .tp_doc = "The request queue of one runtime.",
    .tp_basicsize = sizeof(nbffi_py_queue_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor) nbffi_py_queue_dealloc,
    .tp_methods = nbffi_py_queue_methods,
};

static PyMethodDef  nbffi_py_task_methods[] = {
    { "respond", (PyCFunction) (void (*)(void)) nbffi_py_task_respond,
      METH_VARARGS | METH_KEYWORDS,
      "respond(data, status=0) answers the task; exactly once" },
    { "send", (PyCFunction) nbffi_py_task_send, METH_VARARGS,
      "send(data, timeout) sends a chunk of a stream: None, or \"full\", "
      "\"cancelled\", \"timeout\", \"closed\"" },
    { "log", (PyCFunction) nbffi_py_task_log, METH_VARARGS,
      "log(level, text) logs with the call's metadata; False once "
      "answered" },
    { NULL, NULL, 0, NULL }
};

static PyMemberDef  nbffi_py_task_members[] = {
    { "method", T_OBJECT_EX, offsetof(nbffi_py_task_t, method), READONLY,
      "method name (str)" },
    { "payload", T_OBJECT_EX, offsetof(nbffi_py_task_t, payload), READONLY,
      "payload (bytes)" },
    { "deadline", T_LONGLONG, offsetof(nbffi_py_task_t, deadline), READONLY,
      "deadline (CLOCK_MONOTONIC ns, time.monotonic_ns; 0: none)" },
    { "window", T_UINT, offsetof(nbffi_py_task_t, window), READONLY,
      "chunks in flight of a stream; 0 for a plain call" },
    { NULL, 0, 0, 0, NULL }
};

static PyGetSetDef  nbffi_py_task_getset[] = {
    { "cancelled", (getter) nbffi_py_task_cancelled, NULL,
      "True once the caller gave up (timed out, went away)", NULL },
    { "meta", (getter) nbffi_py_task_meta, NULL,
      "the call's metadata (dict of str)", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

static PyTypeObject  nbffi_py_task_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_nbffi.Task",
    .tp_doc = "One call, to answer with respond() exactly once.",
    .tp_basicsize = sizeof(nbffi_py_task_t),
    /* no GC: a Task refers to nothing that can refer back to it */
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor) nbffi_py_task_dealloc,
    .tp_methods = nbffi_py_task_methods,
    .tp_members = nbffi_py_task_members,
    .tp_getset = nbffi_py_task_getset,
};

static struct PyModuleDef  nbffi_py_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_nbffi",
    .m_doc = "nbffi runtime half for the embedded Python shim.",
    .m_size = -1,
};


PyObject *
nbffi_py_module_init(void)
{
    PyObject  *m;

    if (PyType_Ready(&nbffi_py_queue_type) < 0
        || PyType_Ready(&nbffi_py_task_type) < 0)
    {
        return NULL;
    }

    m = PyModule_Create(&nbffi_py_module);
    if (m == NULL) {
        return NULL;
    }

    if (PyModule_AddObjectRef(m, "Queue",
                              (PyObject *) &nbffi_py_queue_type) < 0
        || PyModule_AddObjectRef(m, "Task",
                                 (PyObject *) &nbffi_py_task_type) < 0)
    {
        Py_DECREF(m);
        return NULL;
    }

    return m;
}


PyObject *
nbffi_py_queue_new(nbffi_queue_t *q)
{
    nbffi_py_queue_t  *self;

    self = PyObject_New(nbffi_py_queue_t, &nbffi_py_queue_type);
    if (self == NULL) {
        return NULL;
    }

    self->q = q;
    self->unanswered = NULL;
    self->serving = PyThread_get_thread_ident();

    return (PyObject *) self;
}


void
nbffi_py_queue_detach(PyObject *queue, const char *text)
{
    int                i;
    nbffi_py_queue_t  *self;

    self = (nbffi_py_queue_t *) queue;

    /*
     * A thread the handler started may still wait in a send, GIL
     * released: the runtime is closed, so the core ends that wait soon
     * (NBFFI_ECLOSED).  Wait for it, a bounded time, before answering.
     */
    for (i = 0; i < NBFFI_PY_DETACH_WAITS && nbffi_py_sending(self); i++) {
        Py_BEGIN_ALLOW_THREADS
        (void) usleep(1000);
        Py_END_ALLOW_THREADS
    }

    while (self->unanswered != NULL) {
        nbffi_py_task_answer(self->unanswered, NBFFI_PY_STATUS_ERROR, text,
                             strlen(text));
    }

    self->q = NULL;
}


/* GIL held.  Whether a send on an unanswered task waits, GIL released. */
static int
nbffi_py_sending(nbffi_py_queue_t *self)
{
    nbffi_py_task_t  *t;

    for (t = self->unanswered; t != NULL; t = t->next) {
        if (t->sending != 0) {
            return 1;
        }
    }

    return 0;
}


static PyObject *
nbffi_py_queue_pop(nbffi_py_queue_t *self, PyObject *args)
{
    int            max, n, i;
    double         timeout;
    int64_t        timeout_ns;
    PyObject      *list, *task;
    nbffi_task_t  *out[NBFFI_PY_POP_MAX];
    static const char  nomem[] = "python: out of memory";

    if (!PyArg_ParseTuple(args, "id:pop", &max, &timeout)) {
        return NULL;
    }

    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "pop: max must be >= 1");
        return NULL;
    }

    if (self->q == NULL) {
        Py_RETURN_NONE;
    }

    if (max > NBFFI_PY_POP_MAX) {
        max = NBFFI_PY_POP_MAX;
    }

    timeout_ns = (timeout < 0) ? -1 : (int64_t) (timeout * 1e9);

    if (timeout_ns == 0) {
        n = nbffi_queue_pop(self->q, out, max, 0);

    } else {
        Py_BEGIN_ALLOW_THREADS
        n = nbffi_queue_pop(self->q, out, max, timeout_ns);
        Py_END_ALLOW_THREADS
    }

    if (n == NBFFI_ECLOSED) {
        Py_RETURN_NONE;
    }

    if (n < 0) {
        PyErr_Format(PyExc_OSError, "nbffi_queue_pop: %s",
                     nbffi_strerror(n));
        return NULL;
    }

    list = PyList_New(n);
    if (list == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        /* from here on the Task answers out[i] if it is freed unanswered */
        task = nbffi_py_task_wrap(self, out[i]);
        out[i] = NULL;
        if (task == NULL) {
            Py_DECREF(list);
            goto failed;
        }
        PyList_SET_ITEM(list, i, task);
    }

    return list;

failed:

    for (i = 0; i < n; i++) {
        if (out[i] != NULL) {
            (void) nbffi_task_respond(out[i], NBFFI_PY_STATUS_ERROR, nomem,
                                      sizeof(nomem) - 1);
        }
    }

    return NULL;
}


static PyObject *
nbffi_py_queue_fd(nbffi_py_queue_t *self, PyObject *unused)
{
    int  fd;

    (void) unused;

    if (self->q == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "runtime stopped");
        return NULL;
    }

    fd = nbffi_queue_fd(self->q);
    if (fd < 0) {
        PyErr_Format(PyExc_OSError, "nbffi_queue_fd: %s",
                     nbffi_strerror(fd));
        return NULL;
    }

    return PyLong_FromLong(fd);
}


static PyObject *
nbffi_py_queue_drain(nbffi_py_queue_t *self, PyObject *unused)
{
    int       fd;
    uint64_t  count;

    (void) unused;

    if (self->q == NULL) {
        Py_RETURN_NONE;
    }

    fd = nbffi_queue_fd(self->q);

    /* The eventfd is non-blocking: EAGAIN means already drained. */
    if (fd >= 0 && read(fd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }

    Py_RETURN_NONE;
}


static PyObject *
nbffi_py_queue_log(nbffi_py_queue_t *self, PyObject *args)
{
    int          level;
    const char  *text;
    Py_ssize_t   len;

    if (!PyArg_ParseTuple(args, "is#:log", &level, &text, &len)) {
        return NULL;
    }

    if (self->q != NULL) {
        nbffi_log(self->q, level, text, (size_t) len);

    } else {
        /* a thread the handler started outlived the runtime */
        (void) fprintf(stderr, "nbffi python: %.*s\n", (int) len, text);
    }

    Py_RETURN_NONE;
}


/*
 * Until the queue is detached, its runtime thread still runs Python code
 * with its thread state: the thread id names no other thread.  Checked
 * and used with the GIL held throughout.
 */
static PyObject *
nbffi_py_queue_interrupt(nbffi_py_queue_t *self, PyObject *exc)
{
    if (self->q == NULL) {
        Py_RETURN_FALSE;
    }

    return PyBool_FromLong(PyThreadState_SetAsyncExc(self->serving, exc));
}


static PyObject *
nbffi_py_queue_emit(nbffi_py_queue_t *self, PyObject *args)
{
    int          rc;
    const char  *name;
    Py_ssize_t   nlen;
    Py_buffer    data;

    if (!PyArg_ParseTuple(args, "s#y*:emit", &name, &nlen, &data)) {
        return NULL;
    }

    if (self->q == NULL) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError, "emit: the runtime stopped");
        return NULL;
    }

    rc = nbffi_emit(self->q, name, (size_t) nlen, data.buf,
                    (size_t) data.len);

    PyBuffer_Release(&data);

    switch (rc) {
    case 0:
        Py_RETURN_TRUE;
    case NBFFI_EQFULL:
    case NBFFI_E2BIG:
    case NBFFI_ENOMEM:
        Py_RETURN_FALSE;
    case NBFFI_EINVAL:
        PyErr_Format(PyExc_ValueError, "emit: bad event name %R (1 to %d "
                     "bytes, no NUL)", PyTuple_GET_ITEM(args, 0),
                     NBFFI_MAX_EVENT_NAME);
        return NULL;
    case NBFFI_ECLOSED:
        PyErr_SetString(PyExc_RuntimeError, "emit: the host is gone");
        return NULL;
    default:
        PyErr_Format(PyExc_OSError, "nbffi_emit: %s", nbffi_strerror(rc));
        return NULL;
    }
}


static void
nbffi_py_queue_dealloc(nbffi_py_queue_t *self)
{
    /* Every unanswered Task holds a reference: none is left here. */
    PyObject_Free(self);
}


static PyObject *
nbffi_py_task_wrap(nbffi_py_queue_t *queue, nbffi_task_t *task)
{
    size_t            mlen, plen;
    const char       *method;
    const void       *payload;
    nbffi_py_task_t  *self;

    self = PyObject_New(nbffi_py_task_t, &nbffi_py_task_type);
    if (self == NULL) {
        return NULL;
    }

    method = nbffi_task_method(task, &mlen);
    payload = nbffi_task_payload(task, &plen);

    self->method = PyUnicode_DecodeUTF8(method, (Py_ssize_t) mlen,
                                        "surrogateescape");
    self->payload = PyBytes_FromStringAndSize(payload, (Py_ssize_t) plen);
    self->meta = nbffi_py_task_meta_dict(task);
    self->deadline = nbffi_task_deadline(task);
    self->window = nbffi_task_stream_window(task);
    self->sending = 0;

    /* Linked even on failure: the dealloc below then answers it. */
    self->task = task;
    self->queue = queue;
    Py_INCREF(queue);
    self->prev = NULL;
    self->next = queue->unanswered;
    if (queue->unanswered != NULL) {
        queue->unanswered->prev = self;
    }
    queue->unanswered = self;

    if (self->method == NULL || self->payload == NULL
        || PyErr_Occurred() != NULL)
    {
        Py_DECREF(self);
        return NULL;
    }

    return (PyObject *) self;
}


static PyObject *
nbffi_py_task_respond(nbffi_py_task_t *self, PyObject *args,
    PyObject *kwargs)
{
    int           status;
    Py_buffer     data;
    static char  *kwlist[] = { "data", "status", NULL };

    status = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*|i:respond", kwlist,
                                     &data, &status))
    {
        return NULL;
    }

    if (status < 0) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError,
                        "respond: status must be >= 0 (nbffi reserves "
                        "negative codes)");
        return NULL;
    }

    if (self->task == NULL) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError,
                        "respond: task already answered");
        return NULL;
    }

    if (self->sending != 0) {
        /* the task must outlive a send waiting in another thread */
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError,
                        "respond: a send on this task is still waiting");
        return NULL;
    }

    nbffi_py_task_answer(self, status, data.buf, (size_t) data.len);

    PyBuffer_Release(&data);

    Py_RETURN_NONE;
}


/* GIL held.  Answers, unlinks from the queue's list of unanswered tasks. */
static void
nbffi_py_task_answer(nbffi_py_task_t *self, int status, const void *data,
    size_t len)
{
    nbffi_task_t      *task;
    nbffi_py_queue_t  *queue;

    task = self->task;
    queue = self->queue;

    self->task = NULL;

    if (self->prev != NULL) {
        self->prev->next = self->next;
    } else {
        queue->unanswered = self->next;
    }
    if (self->next != NULL) {
        self->next->prev = self->prev;
    }
    self->prev = NULL;
    self->next = NULL;

    if (len > NBFFI_PY_NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        (void) nbffi_task_respond(task, status, data, len);
        Py_END_ALLOW_THREADS

    } else {
        (void) nbffi_task_respond(task, status, data, len);
    }
}


static PyObject *
nbffi_py_task_cancelled(nbffi_py_task_t *self, void *unused)
{
    (void) unused;

    return PyBool_FromLong(self->task != NULL
                           && nbffi_task_cancelled(self->task));
}


/* NULL and no exception when the call has no metadata. */
static PyObject *
nbffi_py_task_meta_dict(nbffi_task_t *task)
{
    size_t       klen, vlen;
    unsigned     i;
    PyObject    *dict, *k, *v;
    const char  *key, *val;

    if (!nbffi_task_meta_at(task, 0, NULL, NULL, NULL, NULL)) {
        return NULL;
    }

    dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }

    for (i = 0; nbffi_task_meta_at(task, i, &key, &klen, &val, &vlen); i++) {
        k = PyUnicode_DecodeUTF8(key, (Py_ssize_t) klen, "surrogateescape");
        v = PyUnicode_DecodeUTF8(val, (Py_ssize_t) vlen, "surrogateescape");
        if (k == NULL || v == NULL || PyDict_SetItem(dict, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }

    return dict;
}


static PyObject *
nbffi_py_task_meta(nbffi_py_task_t *self, void *unused)
{
    (void) unused;

    if (self->meta == NULL) {
        return PyDict_New();
    }

    return Py_NewRef(self->meta);
}


static PyObject *
nbffi_py_task_send(nbffi_py_task_t *self, PyObject *args)
{
    int         rc;
    double      timeout;
    int64_t     timeout_ns;
    Py_buffer   data;

    if (!PyArg_ParseTuple(args, "y*d:send", &data, &timeout)) {
        return NULL;
    }

    if (self->task == NULL) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_RuntimeError, "send: task already answered");
        return NULL;
    }

    timeout_ns = (timeout < 0) ? -1 : (int64_t) (timeout * 1e9);

    if (timeout_ns == 0) {
        rc = nbffi_task_send(self->task, data.buf, (size_t) data.len, 0);

    } else {
        /* self is referenced by the caller: the task stays ours */
        self->sending++;
        Py_BEGIN_ALLOW_THREADS
        rc = nbffi_task_send(self->task, data.buf, (size_t) data.len,
                             timeout_ns);
        Py_END_ALLOW_THREADS
        self->sending--;
    }

    PyBuffer_Release(&data);

    switch (rc) {
    case 0:
        Py_RETURN_NONE;
    case NBFFI_EQFULL:
        return PyUnicode_FromString("full");
    case NBFFI_ECANCELED:
        return PyUnicode_FromString("cancelled");
    case NBFFI_ETIMEDOUT:
        return PyUnicode_FromString("timeout");
    case NBFFI_ECLOSED:
        return PyUnicode_FromString("closed");
    case NBFFI_EPERM:
        PyErr_SetString(PyExc_RuntimeError,
                        "send: the call is not a stream (the caller used "
                        "call, not stream)");
        return NULL;
    case NBFFI_E2BIG:
        PyErr_SetString(PyExc_ValueError,
                        "send: the chunk is larger than max_payload");
        return NULL;
    default:
        PyErr_Format(PyExc_OSError, "nbffi_task_send: %s",
                     nbffi_strerror(rc));
        return NULL;
    }
}


static PyObject *
nbffi_py_task_log(nbffi_py_task_t *self, PyObject *args)
{
    int          level;
    const char  *text;
    Py_ssize_t   len;

    if (!PyArg_ParseTuple(args, "is#:log", &level, &text, &len)) {
        return NULL;
    }

    if (self->task == NULL) {
        Py_RETURN_FALSE;
    }

    nbffi_task_log(self->task, level, text, (size_t) len);

    Py_RETURN_TRUE;
}


static void
nbffi_py_task_dealloc(nbffi_py_task_t *self)
{
    static const char  dropped[] =
        "python: the handler dropped the call without answering it";

    if (self->task != NULL) {
        nbffi_py_task_answer(self, NBFFI_PY_STATUS_ERROR, dropped,
                             sizeof(dropped) - 1);
    }

    Py_XDECREF(self->method);
    Py_XDECREF(self->payload);
    Py_XDECREF(self->meta);
    Py_DECREF(self->queue);

    PyObject_Free(self);
}
