/*
 * Helpers shared by the core tests: a fixture with an eventfd host and a
 * t_ctl runtime, waiting on notifiers, and one-line call/pop/reap steps
 * that fail the test on any error.
 */

#ifndef T_HARNESS_H
#define T_HARNESS_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <nbffi.h>

#include "rt_ctl.h"

/* How long a test waits for an event that must come before it fails. */
#define T_WAIT_MS  20000

/* A one-shot flag that threads wait for: set once, seen by every waiter. */
struct t_event {
    pthread_mutex_t   lock;
    pthread_cond_t    cond;
    int               set;
};

struct t_fx {
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    nbffi_queue_t    *q;
    uint64_t          allocated;    /* tasks of the setup (the load's) */
};

/* The state of libt_ctl.so, the copy that the core loads. */
struct t_ctl *t_ctl_get(void);

/*
 * Puts t_ctl's knobs back to "init and fini return at once": no hang, no
 * thread reported as stayed, no on_fini, neither held.
 */
void t_ctl_reset(void);

/*
 * Holds t_ctl's fini at its start until t_ctl_release_fini(): a test that
 * pops on its own thread after closing plays a runtime thread that fini
 * must wait for, or the runtime would be orphaned with what it holds.
 */
void t_ctl_hold_fini(void);
void t_ctl_release_fini(void);

/*
 * Holds t_ctl's init at its start until t_ctl_release_init(), so that the
 * runtime is surely NBFFI_RT_STARTING meanwhile.
 */
void t_ctl_hold_init(void);
void t_ctl_release_init(void);

/*
 * Starts a runtime and waits for its start to end; returns the load task's
 * status and writes its message (NUL-terminated) to err.  *rt is set either
 * way: free it with t_close_free.
 */
int t_load_wait(nbffi_host_t *host, const char *lib, const char *search_path,
    const void *cfg, size_t cfg_len, uint32_t max_queue, uint64_t max_payload,
    int64_t start_deadline, unsigned flags, nbffi_runtime_t **rt, char *err,
    size_t err_len);

/*
 * Reaps until task (a life-cycle task, or a call) is among the reaped;
 * other tasks reaped meanwhile are kept for t_reap.  Does not release it.
 */
void t_wait_task(nbffi_host_t *host, nbffi_task_t *task);

/*
 * Closes rt with a deadline ms from now (0: none) unless the test closed
 * it already, waits until the close has ended, frees rt and returns its
 * final state (NBFFI_RT_CLOSED or NBFFI_RT_ORPHANED).
 */
int t_close_free(nbffi_runtime_t *rt, int64_t ms);

/* Loads libt_ctl.so on host and resets its knobs; *q is the new runtime's
 * queue. */
nbffi_runtime_t *t_load_ctl(nbffi_host_t *host, uint32_t max_queue,
    uint64_t max_payload, nbffi_queue_t **q);

/* cmocka setup/teardown: an eventfd host with a t_ctl runtime. */
int t_fx_setup(void **state);
int t_fx_teardown(void **state);

#define T_FX(fn)                                                             \
    cmocka_unit_test_setup_teardown(fn, t_fx_setup, t_fx_teardown)

/*
 * Reaps and releases what is left (waiting for it), checks that every task
 * was freed or leaked and frees the host, once the core threads of the
 * runtimes freed on it have ended.
 */
void t_host_finish(nbffi_host_t *host);

/*
 * t_event_init and t_event_destroy: the test thread.  t_event_set and
 * t_event_wait: any thread (they assert nothing).
 */
void t_event_init(struct t_event *ev);
void t_event_set(struct t_event *ev);
void t_event_wait(struct t_event *ev);
void t_event_destroy(struct t_event *ev);

/* 1 when fd becomes readable within timeout_ms, else 0. */
int t_readable(int fd, int timeout_ms);

/* Bytes readable on a socket without blocking (MSG_DONTWAIT). */
size_t t_sock_drain(int fd);

nbffi_task_t *t_call(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, const char *payload);

/* Pops exactly one task without waiting. */
nbffi_task_t *t_pop1(nbffi_queue_t *q);

/*
 * Eventfd hosts: waits on the notifier until a reap returns tasks, and
 * returns their number.
 */
int t_reap(nbffi_host_t *host, nbffi_task_t **out, int max);
nbffi_task_t *t_reap1(nbffi_host_t *host);

nbffi_stats_t t_stats(nbffi_runtime_t *rt);

/* Asserts status and reply (a string, or NULL for an empty reply). */
void t_reply_is(nbffi_task_t *task, int status, const char *reply);

#endif /* T_HARNESS_H */
