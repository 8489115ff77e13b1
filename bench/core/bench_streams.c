/*
 * Streams and events in the core alone, no nginx: one host thread and the
 * C echo runtime.  Prints one parseable line per case, then a table:
 *   events SIZE   the runtime's "emit" method emits N events of SIZE bytes
 *                 from one runtime thread while the host thread takes them
 *                 (nbffi_host_event_next, name and data read); events per
 *                 second, drops, CPU per event on each side
 *   stream        1 MiB in 4 KiB chunks through rt "chunks" (window 16):
 *                 MB/s, time to the first chunk, CPU per MiB
 * Counts are checked before any rate is printed.
 *
 * Usage: bench-streams [scale]   (scale multiplies the counts; 1.0)
 */

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nbffi.h"


static int64_t bench_cpu_ns(clockid_t clk);
static void bench_fail(const char *what, int rc);
static void bench_wait(nbffi_host_t *host);
static nbffi_task_t *bench_call(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, const char *payload, unsigned flags);
static void bench_events(nbffi_host_t *host, nbffi_runtime_t *rt,
    long n, long size, int print);
static void bench_stream(nbffi_host_t *host, nbffi_runtime_t *rt,
    long rounds, int print);


int
main(int argc, char **argv)
{
    int               rc;
    double            scale;
    const char       *msg;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    scale = argc > 1 ? atof(argv[1]) : 1.0;

    rc = nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD);
    if (rc != 0) {
        bench_fail("nbffi_host_new", rc);
    }

    rc = nbffi_runtime_load(host, NBFFI_ECHO_LIB, NULL, "threads=1", 9, 0,
                            0, 0, 0, &rt, NULL);
    if (rc != 0) {
        bench_fail("nbffi_runtime_load", rc);
    }
    if (nbffi_runtime_wait(rt, 0) != NBFFI_RT_READY) {
        (void) nbffi_runtime_error(rt, &msg);
        fprintf(stderr, "bench-streams: start failed: %s\n", msg);
        return 1;
    }

    /* room for a whole burst: the rate, not the drops, is measured */
    nbffi_host_set_event_limit(host, 1u << 22, 1u << 30);

    /* warm-up */
    bench_events(host, rt, 100000, 10, 0);
    bench_stream(host, rt, 5, 0);

    printf("%-8s %8s %12s %14s %10s %14s %14s\n", "case", "size",
           "count", "rate", "dropped", "host cpu/ev", "rt cpu/ev");
    bench_events(host, rt, (long) (4000000 * scale), 10, 1);
    bench_events(host, rt, (long) (200000 * scale), 10240, 1);
    bench_stream(host, rt, (long) (200 * scale) > 0 ? (long) (200 * scale)
                                                    : 1, 1);

    (void) nbffi_runtime_close(rt, 0, NULL);
    (void) nbffi_runtime_wait(rt, 0);
    nbffi_runtime_free(rt);
    return 0;
}


static int64_t
bench_cpu_ns(clockid_t clk)
{
    struct timespec  ts;

    clock_gettime(clk, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


static void
bench_fail(const char *what, int rc)
{
    fprintf(stderr, "bench-streams: %s: %s\n", what, nbffi_strerror(rc));
    exit(1);
}


static void
bench_wait(nbffi_host_t *host)
{
    struct pollfd  p;

    p.fd = nbffi_host_fd(host);
    p.events = POLLIN;
    (void) poll(&p, 1, 100);
    nbffi_host_drain(host);
}


static nbffi_task_t *
bench_call(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    const char *payload, unsigned flags)
{
    int            rc;
    nbffi_task_t  *task;

    rc = nbffi_call_ex(host, rt, method, strlen(method), payload,
                       strlen(payload), NULL, 0, 0, flags, 16, &task);
    if (rc != 0) {
        bench_fail("nbffi_call_ex", rc);
    }
    return task;
}


static void
bench_events(nbffi_host_t *host, nbffi_runtime_t *rt, long n, long size,
    int print)
{
    int                   done;
    long                  got, emitted, dropped;
    char                  payload[64];
    size_t                len, total;
    int64_t               t0, t1, c0, c1, r0, r1;
    const char           *reply;
    nbffi_task_t         *task, *out[4];
    nbffi_event_t        *ev;
    nbffi_event_stats_t   st0, st1;
    nbffi_host_event_stats(host, &st0);
    snprintf(payload, sizeof(payload), "%ld %ld bench", n, size);

    t0 = bench_cpu_ns(CLOCK_MONOTONIC);
    c0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    r0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);

    task = bench_call(host, rt, "emit", payload, 0);
    got = 0;
    total = 0;
    done = 0;

    for ( ;; ) {
        while (nbffi_host_event_next(host, &ev) == 1) {
            (void) nbffi_event_name(ev, &len);
            (void) nbffi_event_data(ev, &len);
            total += len;
            got++;
        }
        if (!done && nbffi_host_reap(host, out, 4) == 1) {
            done = 1;
        }
        if (done) {
            nbffi_host_event_stats(host, &st1);
            if ((long) (st1.delivered - st0.delivered)
                == (long) (st1.emitted - st0.emitted))
            {
                break;
            }
        }
        if (!nbffi_host_pending(host)) {
            bench_wait(host);
        }
    }

    t1 = bench_cpu_ns(CLOCK_MONOTONIC);
    c1 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    r1 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);

    reply = nbffi_task_reply(task, &len);
    if (nbffi_task_status(task) != 0
        || sscanf(reply, "emitted=%ld dropped=%ld", &emitted, &dropped) != 2)
    {
        fprintf(stderr, "bench-streams: emit failed: %.*s\n", (int) len,
                reply);
        exit(1);
    }
    nbffi_task_release(task);

    /* counts match before any rate */
    if (emitted != got || emitted + dropped != n
        || total != (size_t) got * (size_t) size)
    {
        fprintf(stderr, "bench-streams: events: emitted %ld, got %ld, "
                "dropped %ld of %ld\n", emitted, got, dropped, n);
        exit(1);
    }

    if (!print) {
        return;     /* the warm-up */
    }

    printf("events   %8ld %12ld %12.0f/s %10ld %11.0f ns %11.0f ns\n",
           size, got, got / ((t1 - t0) / 1e9), dropped,
           (double) (c1 - c0) / got,
           (double) ((r1 - r0) - (c1 - c0)) / got);
    printf("RESULT events size=%ld count=%ld per_s=%.0f dropped=%ld "
           "host_cpu_ns=%.1f rt_cpu_ns=%.1f\n", size, got,
           got / ((t1 - t0) / 1e9), dropped, (double) (c1 - c0) / got,
           (double) ((r1 - r0) - (c1 - c0)) / got);
}


static void
bench_stream(nbffi_host_t *host, nbffi_runtime_t *rt, long rounds,
    int print)
{
    int            rc, done;
    long           r, chunks;
    size_t         len, bytes;
    int64_t        t0, t1, c0, c1, p0, p1, start, first, first_sum;
    const void    *data;
    nbffi_task_t  *task, *out[4];

    t0 = bench_cpu_ns(CLOCK_MONOTONIC);
    c0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    p0 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
    first_sum = 0;

    for (r = 0; r < rounds; r++) {
        start = bench_cpu_ns(CLOCK_MONOTONIC);
        first = 0;
        task = bench_call(host, rt, "chunks", "256 4096", NBFFI_CALL_STREAM);
        chunks = 0;
        bytes = 0;
        done = 0;

        for ( ;; ) {
            while ((rc = nbffi_task_next_chunk(task, &data, &len)) == 1) {
                if (first == 0) {
                    first = bench_cpu_ns(CLOCK_MONOTONIC) - start;
                }
                chunks++;
                bytes += len;
            }
            if (done) {
                break;
            }
            if (nbffi_host_reap(host, out, 4) == 1) {
                done = 1;       /* read what is left, then stop */
                continue;
            }
            (void) nbffi_host_reap_streams(host, out, 4);
            if (nbffi_task_chunks(task, NULL) == 0
                && !nbffi_host_pending(host))
            {
                bench_wait(host);
            }
        }

        if (nbffi_task_status(task) != 0 || chunks != 256
            || bytes != 256 * 4096)
        {
            fprintf(stderr, "bench-streams: stream: status %d, %ld chunks, "
                    "%zu bytes\n", nbffi_task_status(task), chunks, bytes);
            exit(1);
        }
        nbffi_task_release(task);
        first_sum += first;
    }

    t1 = bench_cpu_ns(CLOCK_MONOTONIC);
    c1 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    p1 = bench_cpu_ns(CLOCK_PROCESS_CPUTIME_ID);

    if (!print) {
        return;     /* the warm-up */
    }

    printf("stream   %8d %12ld %10.0f MB/s %10s %8.0f us/MiB %8.0f us/MiB"
           "   first chunk %.1f us\n", 4096, rounds,
           rounds * 1.048576 / ((t1 - t0) / 1e9), "-",
           (c1 - c0) / 1e3 / rounds, ((p1 - p0) - (c1 - c0)) / 1e3 / rounds,
           first_sum / 1e3 / rounds);
    printf("RESULT stream chunk=4096 mib=%ld mb_per_s=%.0f first_us=%.1f "
           "host_cpu_us_per_mib=%.0f rt_cpu_us_per_mib=%.0f\n", rounds,
           rounds * 1.048576 / ((t1 - t0) / 1e9), first_sum / 1e3 / rounds,
           (c1 - c0) / 1e3 / rounds, ((p1 - p0) - (c1 - c0)) / 1e3 / rounds);
}
