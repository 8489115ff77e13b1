/*
 * libt_ctl.so: a test runtime with no threads of its own.  The test plays
 * the runtime side itself: it pops from the queue that init recorded here.
 * The library calls nothing in libnbffi, so both the shared and the static
 * test builds can load it.
 */

#ifndef T_RT_CTL_H
#define T_RT_CTL_H

#include <pthread.h>
#include <stdatomic.h>

#include <nbffi.h>

#define T_CTL_CFG_MAX  256

struct t_ctl {
    nbffi_queue_t  *q;                 /* queue of the latest init       */
    void           *data;              /* what init handed back          */
    unsigned        inits;
    pthread_t       init_thread;
    int             init_blocked_hup;  /* signals blocked during init    */
    int             init_blocked_quit;
    /* fini may run late on a core thread, while a test runs: atomics */
    atomic_uint     finis;
    _Atomic(void *) fini_data;         /* what fini received             */
    _Atomic int64_t fini_deadline;
    _Atomic(pthread_t) fini_thread;
    atomic_int      fini_stayed;       /* what fini returns              */
    atomic_long     fini_hang_ms;      /* fini sleeps this long first    */
    atomic_uint     fini_returned;
    unsigned char   cfg[T_CTL_CFG_MAX];
    size_t          cfg_len;
    /* Called by fini, e.g. to join the test's popper threads.  Cleared
       after the call. */
    void          (*on_fini)(nbffi_queue_t *q, void *ud);
    void           *fini_ud;
    /* init and fini wait at their start while init_held or fini_held is
       set: e.g. a test that plays the runtime's threads on its own thread
       holds fini until it is done with the queue (see t_ctl_hold_fini in
       harness.h) */
    pthread_mutex_t gate_lock;
    pthread_cond_t  gate_cond;
    int             init_held;
    int             fini_held;
};

/*
 * cfg "fail:MSG" makes init fail with MSG as its message; "hang:MS" makes
 * it sleep MS milliseconds first; any cfg is recorded in cfg/cfg_len and
 * init succeeds.
 */
struct t_ctl *t_ctl(void);

#endif /* T_RT_CTL_H */
