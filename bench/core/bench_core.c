/*
 * Core-only benchmark: one host thread posts to and reaps from the C echo
 * runtime (one runtime thread), no nginx.  Prints one parseable line per
 * case and a table:
 *   seq    sequential round trips, ns per call
 *   pipeN  N calls kept in flight, calls per second
 * with the CPU each side spent per call.  "wake" cases disable spinning
 * on both sides: the pure sleep/wake path.
 *
 * Usage: bench-core [scale]   (scale multiplies the call counts; 1.0)
 */

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nbffi.h"


#define BATCH  256

typedef struct {
    const char  *mode;
    size_t       size;
    int          inflight;
    int          spin;
    long         calls;
    double       wall_ns;
    double       host_cpu_ns;
    double       rt_cpu_ns;
} bench_case_t;


static int64_t bench_cpu_ns(clockid_t clk);
static void bench_wait(nbffi_host_t *host, int spin);
static void bench_run(nbffi_host_t *host, nbffi_runtime_t *rt,
    bench_case_t *c);
static void bench_check(nbffi_task_t *task, size_t size);
static void bench_fail(const char *what, int rc);


int
main(int argc, char **argv)
{
    int               rc, i, k, j;
    const char       *msg;
    double            scale;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    bench_case_t      cases[64], *c;
    int               n;
    static const size_t  sizes[] = { 64, 512, 4096, 102400 };
    static const int     depths[] = { 1, 16, 256 };

    scale = argc > 1 ? atof(argv[1]) : 1.0;

    rc = nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD);
    if (rc != 0) {
        bench_fail("nbffi_host_new", rc);
    }

    rc = nbffi_runtime_load(host, NBFFI_ECHO_LIB, NULL, "threads=1", 9,
                            0, 0, 0, 0, &rt, NULL);
    if (rc != 0) {
        bench_fail("nbffi_runtime_load", rc);
    }

    /* The start runs on a thread of libnbffi: this host may wait for it. */
    if (nbffi_runtime_wait(rt, 0) != NBFFI_RT_READY) {
        (void) nbffi_runtime_error(rt, &msg);
        fprintf(stderr, "load: %s\n", msg);
        return 1;
    }

    n = 0;
    for (i = 0; i < 4; i++) {
        long  base = sizes[i] >= 102400 ? 20000 : 200000;

        c = &cases[n++];
        memset(c, 0, sizeof(*c));
        c->mode = "seq";
        c->size = sizes[i];
        c->inflight = 1;
        c->spin = 1;
        c->calls = (long) (base * scale);

        for (k = 0; k < 3; k++) {
            c = &cases[n++];
            memset(c, 0, sizeof(*c));
            c->mode = "pipe";
            c->size = sizes[i];
            c->inflight = depths[k];
            c->spin = 1;
            c->calls = (long) (base * (k == 0 ? 1 : 5) * scale);
        }
    }

    c = &cases[n++];
    memset(c, 0, sizeof(*c));
    c->mode = "wake";
    c->size = 512;
    c->inflight = 1;
    c->calls = (long) (20000 * scale);

    /* warm up: the allocator, the caches, the spin estimate */
    {
        bench_case_t  w = { "seq", 512, 1, 1, 20000, 0, 0, 0 };
        bench_run(host, rt, &w);
    }

    for (j = 0; j < n; j++) {
        nbffi_runtime_set_spin(rt, cases[j].spin ? 50000 : 0);
        bench_run(host, rt, &cases[j]);
        c = &cases[j];
        printf("BENCH core mode=%s size=%zu inflight=%d calls=%ld "
               "ns_per_call=%.0f calls_per_s=%.0f host_cpu_ns=%.0f "
               "rt_cpu_ns=%.0f\n", c->mode, c->size, c->inflight, c->calls,
               c->wall_ns / c->calls, c->calls * 1e9 / c->wall_ns,
               c->host_cpu_ns / c->calls, c->rt_cpu_ns / c->calls);
        fflush(stdout);
    }

    printf("\n| mode | payload | in flight | calls | ns/call | calls/s "
           "| host CPU ns/call | runtime CPU ns/call |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (j = 0; j < n; j++) {
        c = &cases[j];
        printf("| %s | %zu | %d | %ld | %.0f | %.0f | %.0f | %.0f |\n",
               c->mode, c->size, c->inflight, c->calls,
               c->wall_ns / c->calls, c->calls * 1e9 / c->wall_ns,
               c->host_cpu_ns / c->calls, c->rt_cpu_ns / c->calls);
    }

    /* fini runs on a thread of libnbffi: wait for it, then reap what the
     * close answered */
    if (nbffi_runtime_close(rt, 0, NULL) != 0
        || nbffi_runtime_wait(rt, 0) != NBFFI_RT_CLOSED)
    {
        fprintf(stderr, "close: the runtime did not close\n");
        return 1;
    }
    nbffi_runtime_free(rt);

    {
        nbffi_task_t  *t[BATCH];
        int            m;

        while ((m = nbffi_host_reap(host, t, BATCH)) > 0) {
            while (m > 0) {
                nbffi_task_release(t[--m]);
            }
        }
    }

    rc = nbffi_host_free(host);
    if (rc != 0) {
        bench_fail("nbffi_host_free", rc);
    }
    return 0;
}


static void
bench_run(nbffi_host_t *host, nbffi_runtime_t *rt, bench_case_t *c)
{
    int            rc, m, i, inflight;
    long           posted, done;
    char          *payload;
    int64_t        t0, h0, p0;
    nbffi_task_t  *task, *out[BATCH];

    payload = malloc(c->size);
    if (payload == NULL) {
        bench_fail("malloc", NBFFI_ENOMEM);
    }
    memset(payload, 'x', c->size);

    t0 = nbffi_now_ns();
    h0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    p0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);

    posted = 0;
    done = 0;
    inflight = 0;
    task = NULL;

    while (done < c->calls) {
        while (inflight < c->inflight && posted < c->calls) {
            rc = nbffi_call(host, rt, "echo", 4, payload, c->size, 0, 0,
                            &task);
            if (rc != 0) {
                bench_fail("nbffi_call", rc);
            }
            posted++;
            inflight++;
        }

        /* wait for any completion */
        if (!nbffi_host_pending(host)) {
            bench_wait(host, c->spin);
        }

        m = nbffi_host_reap(host, out, BATCH);
        for (i = 0; i < m; i++) {
            bench_check(out[i], c->size);
            nbffi_task_release(out[i]);
        }
        done += m;
        inflight -= m;
    }

    c->wall_ns = (double) (nbffi_now_ns() - t0);
    c->host_cpu_ns = (double) (bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - h0);
    c->rt_cpu_ns = (double) (bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID) - p0)
                   - c->host_cpu_ns;

    if (done != c->calls || posted != c->calls) {
        fprintf(stderr, "count mismatch: posted %ld done %ld want %ld\n",
                posted, done, c->calls);
        exit(1);
    }

    free(payload);
}


/* Spin a few microseconds for the reply, then sleep on the eventfd. */
static void
bench_wait(nbffi_host_t *host, int spin)
{
    struct pollfd  pfd;

    if (spin && nbffi_host_spin(host, NULL, 20000)) {
        return;
    }

    pfd.fd = nbffi_host_fd(host);
    pfd.events = POLLIN;

    while (!nbffi_host_pending(host)) {
        if (poll(&pfd, 1, 1000) < 0 && errno != EINTR) {
            bench_fail("poll", -errno);
        }
        nbffi_host_drain(host);
    }
}


static void
bench_check(nbffi_task_t *task, size_t size)
{
    size_t  len;

    if (nbffi_task_status(task) != 0) {
        bench_fail("task status", nbffi_task_status(task));
    }

    (void) nbffi_task_reply(task, &len);
    if (len != size) {
        fprintf(stderr, "reply of %zu bytes, want %zu\n", len, size);
        exit(1);
    }
}


static int64_t
bench_cpu_ns(clockid_t clk)
{
    struct timespec  ts;

    (void) clock_gettime(clk, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static void
bench_fail(const char *what, int rc)
{
    fprintf(stderr, "%s: %s (%s)\n", what, nbffi_strerror(rc),
            nbffi_err_name(rc));
    exit(1);
}
