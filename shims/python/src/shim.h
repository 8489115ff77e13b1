/*
 * Internal interface between the loader (loader.c) and the _nbffi
 * extension module (module.c) of the Python shim.
 */

#ifndef NBFFI_PY_SHIM_H
#define NBFFI_PY_SHIM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <nbffi.h>

/* Error status of replies made by the shim itself (nbffi.STATUS_ERROR). */
#define NBFFI_PY_STATUS_ERROR  1

/* The init function of the built-in module "_nbffi", for the inittab. */
PyObject *nbffi_py_module_init(void);

/*
 * GIL held, on the runtime thread, after the interpreter imported _nbffi.
 * A new _nbffi.Queue wrapping q, whose interrupt() raises in the calling
 * thread until it is detached; or NULL with an exception set.
 */
PyObject *nbffi_py_queue_new(nbffi_queue_t *q);

/*
 * GIL held, on the runtime thread once serving has ended.  Answers every
 * task still held by Python code with status 1 and text, then detaches
 * the Queue from q: later uses of the Python objects touch nothing of
 * nbffi's (pop returns None, log writes to stderr).
 */
void nbffi_py_queue_detach(PyObject *queue, const char *text);

#endif /* NBFFI_PY_SHIM_H */
