/*
 * Runtime threads must never receive the host's signals: nginx workers run
 * with an empty signal mask and threads inherit the creator's mask, so the
 * mask is filled around pthread_create (as ngx_thread_pool_cycle does
 * inside the thread, but here the new thread is never exposed at all).
 */

#include <errno.h>
#include <signal.h>
#include <time.h>

#include "nbffi_int.h"


int
nbffi_thread_create(void *thread, void *(*fn)(void *), void *arg)
{
    int       rc;
    sigset_t  all, old;

    if (thread == NULL || fn == NULL) {
        return NBFFI_EINVAL;
    }

    (void) sigfillset(&all);
    (void) sigdelset(&all, SIGILL);
    (void) sigdelset(&all, SIGFPE);
    (void) sigdelset(&all, SIGSEGV);
    (void) sigdelset(&all, SIGBUS);

    rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        return -rc;
    }

    rc = pthread_create((pthread_t *) thread, NULL, fn, arg);

    nbffi__abort_on(pthread_sigmask(SIG_SETMASK, &old, NULL) != 0,
                    "pthread_sigmask restore");

    return -rc;
}


/* A detached nbffi_thread_create(): for core threads nobody joins. */
int
nbffi__thread_detached(void *(*fn)(void *), void *arg)
{
    int        rc;
    pthread_t  tid;

    rc = nbffi_thread_create(&tid, fn, arg);
    if (rc == 0) {
        (void) pthread_detach(tid);
    }

    return rc;
}


/* A core thread about to end: named so that a count of the process's
 * threads (ps -L, /proc/PID/task) can tell it from a runtime's. */
void
nbffi__thread_leaving(void)
{
    (void) pthread_setname_np(pthread_self(), "nbffi-exiting");
}


int
nbffi_thread_join(void *thread, int64_t deadline_ns)
{
    int64_t          left;
    struct timespec  ts;

    if (thread == NULL) {
        return NBFFI_EINVAL;
    }

    if (deadline_ns == 0) {
        return -pthread_join(*(pthread_t *) thread, NULL);
    }

    /* pthread_timedjoin_np waits on the wall clock: convert */
    left = deadline_ns - nbffi_now_ns();
    if (left < 0) {
        left = 0;
    }

    (void) clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000000000;
    ts.tv_nsec += left % 1000000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }

    return pthread_timedjoin_np(*(pthread_t *) thread, NULL, &ts) == 0
           ? 0 : NBFFI_ETIMEDOUT;
}
