/*
 * Round trips to a runtime from a C host, without nginx or Lua: what a
 * runtime library adds to a call.  The host posts METHOD with SIZE bytes
 * (an echo), spins until the reply is complete, checks it, waits GAP_US,
 * and repeats; prints the latency distribution of post -> complete.
 *
 * Usage: roundtrip LIB [GAP_US [CALLS [METHOD [SIZE]]]]
 *        (defaults: 0, 20000, echo, 512)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbffi.h"

#define WARMUP  2000


static int
cmp_i64(const void *a, const void *b)
{
    int64_t  x = *(const int64_t *) a, y = *(const int64_t *) b;

    return (x > y) - (x < y);
}


int
main(int argc, char **argv)
{
    int              i, n, k;
    char            *payload;
    size_t           size, rlen;
    double           sum;
    int64_t          gap, t0, t1, *lat;
    const void      *reply;
    const char      *name, *method;
    nbffi_host_t    *host;
    nbffi_task_t    *task, *done[4];
    nbffi_runtime_t *rt;

    if (argc < 2) {
        fprintf(stderr, "usage: %s LIB [GAP_US [CALLS [METHOD [SIZE]]]]\n",
                argv[0]);
        return 2;
    }
    gap = (argc > 2) ? atoll(argv[2]) * 1000 : 0;
    n = (argc > 3) ? atoi(argv[3]) : 20000;
    method = (argc > 4) ? argv[4] : "echo";
    size = (argc > 5) ? (size_t) atol(argv[5]) : 512;

    if (nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD | NBFFI_HOST_LOG_QUEUE)
        != 0
        || nbffi_runtime_load(host, argv[1], NULL, "", 0, 0, 0, 0, 0, &rt,
                              &task) != 0)
    {
        fprintf(stderr, "roundtrip: cannot load %s\n", argv[1]);
        return 1;
    }

    /* the start ends with the load task's completion, the only task yet */
    while (nbffi_host_reap(host, done, 4) == 0) {
        (void) nbffi_host_wait(host, 0);
    }
    if (nbffi_task_status(task) != 0) {
        reply = nbffi_task_reply(task, &rlen);
        fprintf(stderr, "roundtrip: cannot load %s: %.*s\n", argv[1],
                (int) rlen, (const char *) reply);
        return 1;
    }
    nbffi_task_release(task);

    payload = malloc(size);
    lat = calloc(n, sizeof(int64_t));
    if (payload == NULL || lat == NULL) {
        return 1;
    }
    memset(payload, 'x', size);

    for (i = -WARMUP; i < n; i++) {
        t0 = nbffi_now_ns();
        if (nbffi_call(host, rt, method, strlen(method), payload, size,
                       t0 + 60000000000LL, 0, &task) != 0)
        {
            fprintf(stderr, "roundtrip: call failed\n");
            return 1;
        }
        while (!nbffi_host_spin(host, task, 1000000000)) {
            /* spin on */
        }
        t1 = nbffi_now_ns();

        /* the completion is there; the reap may need a retry while the
         * answering thread finishes its push */
        while ((k = nbffi_host_reap(host, done, 4)) == 0) {
            /* retry */
        }
        reply = nbffi_task_reply(task, &rlen);
        if (k != 1 || done[0] != task || nbffi_task_status(task) != 0
            || rlen != size || memcmp(reply, payload, size) != 0)
        {
            fprintf(stderr, "roundtrip: bad completion\n");
            return 1;
        }
        nbffi_task_release(task);

        if (i >= 0) {
            lat[i] = t1 - t0;
        }
        while (nbffi_now_ns() - t1 < gap) {
            /* the caller's think time */
        }
    }

    qsort(lat, n, sizeof(int64_t), cmp_i64);
    sum = 0;
    for (i = 0; i < n; i++) {
        sum += lat[i];
    }

    name = strrchr(argv[1], '/');
    printf("case: roundtrip lib=%s method=%s size=%zu gap_us=%lld calls=%d"
           " mean_us=%.2f p50_us=%.2f p90_us=%.2f p99_us=%.2f"
           " p999_us=%.2f\n",
           name ? name + 1 : argv[1], method, size, (long long) (gap / 1000),
           n,
           sum / 1e3 / n, lat[n / 2] / 1e3, lat[n * 9 / 10] / 1e3,
           lat[n * 99 / 100] / 1e3, lat[n * 999 / 1000] / 1e3);

    nbffi_runtime_free(rt);
    (void) nbffi_host_free(host);
    free(payload);
    free(lat);
    return 0;
}
