/*
 * Time: CLOCK_MONOTONIC, the clock of every deadline, immune to jumps of
 * the wall clock.
 */

#include <time.h>

#include "nbffi_int.h"


int64_t
nbffi_now_ns(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


/* now + ms, saturated; ms <= 0 gives 0 (no deadline). */
int64_t
nbffi__deadline_after_ms(int64_t ms)
{
    int64_t  now;

    if (ms <= 0) {
        return 0;
    }

    now = nbffi_now_ns();
    return (ms < (INT64_MAX - now) / 1000000) ? now + ms * 1000000
                                              : INT64_MAX;
}


/* A deadline in ns as a timespec; a negative one (a caller's overflow) is
 * the epoch, already past: a timed wait on a negative tv_nsec fails with
 * EINVAL at once, and a loop around it would spin. */
void
nbffi__timespec(int64_t ns, void *out)
{
    struct timespec  *ts = out;

    if (ns < 0) {
        ns = 0;
    }
    ts->tv_sec = ns / 1000000000;
    ts->tv_nsec = ns % 1000000000;
}


/* A condition variable whose timed waits use CLOCK_MONOTONIC. */
int
nbffi__cond_init_monotonic(pthread_cond_t *cond)
{
    int                 rc;
    pthread_condattr_t  attr;

    if (pthread_condattr_init(&attr) != 0) {
        return NBFFI_ENOMEM;
    }

    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0) {
        rc = pthread_cond_init(cond, &attr);
    }

    (void) pthread_condattr_destroy(&attr);

    return rc == 0 ? 0 : NBFFI_ENOMEM;
}
