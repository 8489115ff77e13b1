/*
 * The stall example's runtime: the two jobs that block an nginx worker
 * when Lua does them (examples/stall/lua/stallexample.lua), done on
 * runtime threads instead, following shims/c/echo.c.  cfg is ignored.
 *
 * Methods:
 *   md5     payload = decimal N: N random 64-byte strings, each hashed
 *           with MD5; replies the hex digest of the last one
 *   fetch   payload = "a.b.c.d:port": a blocking connect and receive to
 *           that address; replies what was received (up to 4 KB)
 */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbffi.h"


#define WORK_THREADS  2
#define WORK_BATCH    16
#define WORK_STRING   64
#define WORK_REPLY    4096

typedef struct {
    nbffi_queue_t  *q;
    int             nthreads;
    pthread_t       threads[WORK_THREADS];
} work_rt_t;


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);

static void *work_thread(void *arg);
static void work_md5(nbffi_task_t *task, const char *payload, size_t len);
static void work_fetch(nbffi_task_t *task, const char *payload,
    size_t len);
static void work_fail(nbffi_task_t *task, const char *what);


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    int         rc;
    work_rt_t  *rt;

    (void) cfg;
    (void) cfg_len;

    rt = calloc(1, sizeof(work_rt_t));
    if (rt == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    rt->q = q;

    for (rt->nthreads = 0; rt->nthreads < WORK_THREADS; rt->nthreads++) {
        rc = nbffi_thread_create(&rt->threads[rt->nthreads], work_thread,
                                 q);
        if (rc != 0) {
            snprintf(err, err_len, "cannot start a thread: %s",
                     strerror(-rc));
            break;          /* fewer threads still serve */
        }
    }
    if (rt->nthreads == 0) {
        free(rt);
        return -1;
    }

    *data = rt;
    return 0;
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int         i, stayed;
    work_rt_t  *rt = data;

    /* The queue is closed: the threads drain it and leave. */
    stayed = 0;
    for (i = 0; i < rt->nthreads; i++) {
        if (nbffi_thread_join(&rt->threads[i], deadline_ns) != 0) {
            stayed++;
        }
    }

    if (stayed == 0) {
        free(rt);
    }
    return stayed;
}


static void *
work_thread(void *arg)
{
    int            i, n;
    size_t         mlen, plen;
    nbffi_queue_t *q = arg;
    const char    *method, *payload;
    nbffi_task_t  *tasks[WORK_BATCH];

    for ( ;; ) {
        n = nbffi_queue_pop(q, tasks, WORK_BATCH, -1);
        if (n < 0) {
            return NULL;        /* NBFFI_ECLOSED: end of queue */
        }

        for (i = 0; i < n; i++) {
            method = nbffi_task_method(tasks[i], &mlen);
            payload = nbffi_task_payload(tasks[i], &plen);

            if (strcmp(method, "md5") == 0) {
                work_md5(tasks[i], payload, plen);
            } else if (strcmp(method, "fetch") == 0) {
                work_fetch(tasks[i], payload, plen);
            } else {
                work_fail(tasks[i], "unknown method");
            }
        }
    }
}


static void
work_md5(nbffi_task_t *task, const char *payload, size_t len)
{
    long           n, i;
    char           buf[32], hex[2 * EVP_MAX_MD_SIZE + 1];
    size_t         k;
    uint64_t       x;
    unsigned       mdlen;
    unsigned char  s[WORK_STRING], md[EVP_MAX_MD_SIZE];

    (void) snprintf(buf, sizeof(buf), "%.*s", (int) len, payload);
    n = strtol(buf, NULL, 10);
    x = (uint64_t) (uintptr_t) task | 1;
    mdlen = 0;

    for (i = 0; i < n; i++) {
        for (k = 0; k < WORK_STRING; k++) {
            x ^= x << 13;           /* xorshift64: random lowercase */
            x ^= x >> 7;
            x ^= x << 17;
            s[k] = (unsigned char) ('a' + x % 26);
        }
        if (EVP_Digest(s, sizeof(s), md, &mdlen, EVP_md5(), NULL) != 1) {
            work_fail(task, "EVP_Digest failed");
            return;
        }
    }

    for (k = 0; k < mdlen; k++) {
        (void) snprintf(hex + 2 * k, 3, "%02x", md[k]);
    }
    (void) nbffi_task_respond(task, 0, hex, 2 * mdlen);
}


static void
work_fetch(nbffi_task_t *task, const char *payload, size_t len)
{
    int                 fd;
    char                addr[64], *colon, reply[WORK_REPLY];
    size_t              got;
    ssize_t             n;
    struct sockaddr_in  sin;

    (void) snprintf(addr, sizeof(addr), "%.*s", (int) len, payload);
    colon = strrchr(addr, ':');
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    if (colon == NULL || (*colon = '\0', inet_pton(AF_INET, addr,
                                                   &sin.sin_addr)) != 1)
    {
        work_fail(task, "fetch: expected a.b.c.d:port");
        return;
    }
    sin.sin_port = htons((uint16_t) atoi(colon + 1));

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        work_fail(task, strerror(errno));
        return;
    }
    if (connect(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0) {
        work_fail(task, strerror(errno));
        (void) close(fd);
        return;
    }

    for (got = 0; got < sizeof(reply); got += (size_t) n) {
        n = recv(fd, reply + got, sizeof(reply) - got, 0);
        if (n <= 0) {
            break;
        }
    }
    (void) close(fd);

    (void) nbffi_task_respond(task, 0, reply, got);
}


static void
work_fail(nbffi_task_t *task, const char *what)
{
    (void) nbffi_task_respond(task, 1, what, strlen(what));
}
