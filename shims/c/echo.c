/*
 * The reference runtime: the shortest complete user of the runtime half of
 * the nbffi ABI, used by the tests and benchmarks.
 *
 * cfg is text, space- or newline-separated key=value pairs:
 *   threads=N   runtime threads popping the queue (default 1, at most 16)
 *   fail=MSG    make init fail with MSG (tests of the load error path)
 *   init_sleep=MS  init sleeps MS milliseconds (0..3600000) after parsing
 *               the cfg (a slow start)
 *   ticker=MS   a thread emits the event "tick" (data: a counter from 1)
 *               every MS milliseconds (1..3600000) until fini
 *
 * Methods:
 *   echo    reply = payload
 *   upper   ASCII upper case of the payload
 *   sleep   payload = decimal milliseconds (>= 0, else status 2); sleeps,
 *           then replies "slept"
 *   error   runtime error: status 1, message = payload
 *   hold    kept until the runtime is closed, then answered "released"
 *   sleep   (see above) does not look at cancellation: a thread stuck in
 *           it is what a close deadline exists for
 *   count   decimal number of tasks this runtime answered before this one
 *   log     logs the payload at notice level, replies "logged"
 *   huge    replies with payload (decimal) bytes, default 2 GiB, of a
 *           read-only anonymous mapping that is never touched: a reply
 *           too large for the host, at no cost
 *   chunks  a stream: payload "N M [MS]" sends N chunks of M bytes (chunk
 *           i is M times the letter 'a' + i % 26), MS milliseconds apart,
 *           each send waiting for room; replies "" (status 0), or stops at
 *           the first failed send and answers status 1 with its error
 *   emit    payload "N M [NAME]" emits N events of M bytes named NAME
 *           (default "echo"), replies "emitted=E dropped=D"
 *   meta    replies with the call's metadata as "key=value" lines, and
 *           logs "meta of this call" with it (nbffi_task_log)
 *   tlog    logs the payload at notice level with the call's metadata,
 *           replies "logged"
 *   stats   replies "sent=S cancelled=C": chunks sent and streams that
 *           saw cancellation, over the runtime's life
 * Anything else is a runtime error with status 2.
 */

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "nbffi.h"


#define ECHO_MAX_THREADS  16
#define ECHO_BATCH        64
#define ECHO_STOP_POLL_NS 100000000     /* 100 ms */
#define ECHO_MAX_INIT_SLEEP 3600000     /* ms: an hour */

typedef struct echo_rt_s  echo_rt_t;

struct echo_rt_s {
    nbffi_queue_t   *q;
    int              nthreads;
    long             init_sleep_ms;
    pthread_t        threads[ECHO_MAX_THREADS];
    atomic_ulong     answered;
    atomic_int       stop;          /* init failed after starting threads */

    pthread_mutex_t  hold_lock;
    nbffi_task_t   **held;
    size_t           nheld;
    size_t           held_cap;

    atomic_ulong     sent;          /* chunks */
    atomic_ulong     cancelled;     /* streams that saw ECANCELED */

    long             ticker_ms;     /* 0: no ticker thread */
    pthread_t        ticker;
    int              ticker_started;
};


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);

static int echo_parse_cfg(echo_rt_t *rt, const char *cfg, size_t len,
    char *err, size_t err_len);
static void *echo_thread(void *arg);
static void echo_handle(echo_rt_t *rt, nbffi_task_t *task);
static void echo_hold(echo_rt_t *rt, nbffi_task_t *task);
static void echo_release_held(echo_rt_t *rt);
static void echo_reply(echo_rt_t *rt, nbffi_task_t *task, int status,
    const void *data, size_t len);
static void echo_huge(echo_rt_t *rt, nbffi_task_t *task, const char *payload,
    size_t plen);
static void echo_unmap(void *data, void *ud);
static void echo_sleep_ms(long ms);
static void echo_chunks(echo_rt_t *rt, nbffi_task_t *task,
    const char *payload, size_t plen);
static void echo_emit(echo_rt_t *rt, nbffi_task_t *task,
    const char *payload, size_t plen);
static void echo_meta(echo_rt_t *rt, nbffi_task_t *task);
static void *echo_ticker(void *arg);


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    int         i, rc;
    echo_rt_t  *rt;

    rt = calloc(1, sizeof(echo_rt_t));
    if (rt == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }

    rt->q = q;
    rt->nthreads = 1;
    atomic_init(&rt->answered, 0);
    atomic_init(&rt->stop, 0);
    (void) pthread_mutex_init(&rt->hold_lock, NULL);

    if (echo_parse_cfg(rt, cfg, cfg_len, err, err_len) != 0) {
        goto failed;
    }
    echo_sleep_ms(rt->init_sleep_ms);

    for (i = 0; i < rt->nthreads; i++) {
        rc = nbffi_thread_create(&rt->threads[i], echo_thread, rt);
        if (rc != 0) {
            snprintf(err, err_len, "cannot start thread %d: %s", i,
                     strerror(-rc));
            /* The host frees the queue of a failed runtime: stop the
             * threads already started before returning. */
            atomic_store(&rt->stop, 1);
            while (i > 0) {
                (void) pthread_join(rt->threads[--i], NULL);
            }
            goto failed;
        }
    }

    if (rt->ticker_ms > 0) {
        rc = nbffi_thread_create(&rt->ticker, echo_ticker, rt);
        if (rc != 0) {
            snprintf(err, err_len, "cannot start the ticker: %s",
                     strerror(-rc));
            atomic_store(&rt->stop, 1);
            for (i = 0; i < rt->nthreads; i++) {
                (void) pthread_join(rt->threads[i], NULL);
            }
            goto failed;
        }
        rt->ticker_started = 1;
    }

    nbffi_logf(q, NBFFI_LOG_INFO, "echo runtime started, %d thread(s)",
               rt->nthreads);
    *data = rt;
    return 0;

failed:
    (void) pthread_mutex_destroy(&rt->hold_lock);
    free(rt);
    return -1;
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int         i, stayed;
    echo_rt_t  *rt = data;

    /* The queue is closed: the threads drain it and leave, but for one
     * stuck in a handler (sleep): wait for it until the deadline only. */
    stayed = 0;
    for (i = 0; i < rt->nthreads; i++) {
        if (nbffi_thread_join(&rt->threads[i], deadline_ns) != 0) {
            stayed++;
        }
    }

    /* the ticker sleeps at most a tick: it sees the queue closed */
    if (rt->ticker_started
        && nbffi_thread_join(&rt->ticker, deadline_ns) != 0)
    {
        stayed++;
    }

    if (stayed != 0) {
        /* rt stays: the threads that stayed still use it */
        return stayed;
    }

    free(rt->held);
    (void) pthread_mutex_destroy(&rt->hold_lock);
    free(rt);
    return 0;
}


static int
echo_parse_cfg(echo_rt_t *rt, const char *cfg, size_t len, char *err,
    size_t err_len)
{
    long         n;
    char         val[256];
    size_t       i, k, klen, vlen;
    const char  *key, *eq;

    for (i = 0; i < len; /* void */) {
        while (i < len && isspace((unsigned char) cfg[i])) {
            i++;
        }
        if (i == len) {
            break;
        }

        key = cfg + i;
        for (k = i; k < len && !isspace((unsigned char) cfg[k]); k++) {
            /* void */
        }
        eq = memchr(key, '=', k - i);
        if (eq == NULL) {
            snprintf(err, err_len, "cfg: expected key=value, got \"%.*s\"",
                     (int) (k - i), key);
            return -1;
        }

        klen = (size_t) (eq - key);
        vlen = k - i - klen - 1;
        if (vlen >= sizeof(val)) {
            snprintf(err, err_len, "cfg: value of \"%.*s\" too long",
                     (int) klen, key);
            return -1;
        }
        memcpy(val, eq + 1, vlen);
        val[vlen] = '\0';
        i = k;

        if (klen == 7 && memcmp(key, "threads", 7) == 0) {
            n = strtol(val, NULL, 10);
            if (n < 1 || n > ECHO_MAX_THREADS) {
                snprintf(err, err_len, "cfg: threads must be 1..%d, got "
                         "\"%s\"", ECHO_MAX_THREADS, val);
                return -1;
            }
            rt->nthreads = (int) n;

        } else if (klen == 4 && memcmp(key, "fail", 4) == 0) {
            snprintf(err, err_len, "%s", val);
            return -1;

        } else if (klen == 10 && memcmp(key, "init_sleep", 10) == 0) {
            n = strtol(val, NULL, 10);
            if (n < 0 || n > ECHO_MAX_INIT_SLEEP) {
                snprintf(err, err_len, "cfg: init_sleep must be 0..%d ms, "
                         "got \"%s\"", ECHO_MAX_INIT_SLEEP, val);
                return -1;
            }
            rt->init_sleep_ms = n;

        } else if (klen == 6 && memcmp(key, "ticker", 6) == 0) {
            n = strtol(val, NULL, 10);
            if (n < 1 || n > ECHO_MAX_INIT_SLEEP) {
                snprintf(err, err_len, "cfg: ticker must be 1..%d ms, "
                         "got \"%s\"", ECHO_MAX_INIT_SLEEP, val);
                return -1;
            }
            rt->ticker_ms = n;

        } else {
            snprintf(err, err_len, "cfg: unknown key \"%.*s\"", (int) klen,
                     key);
            return -1;
        }
    }

    return 0;
}


static void *
echo_thread(void *arg)
{
    int            i, n;
    echo_rt_t     *rt = arg;
    nbffi_task_t  *tasks[ECHO_BATCH];

    /* The bounded wait only serves the stop flag of a failed init. */
    while (!atomic_load(&rt->stop)) {
        n = nbffi_queue_pop(rt->q, tasks, ECHO_BATCH, ECHO_STOP_POLL_NS);
        if (n < 0) {
            break;          /* NBFFI_ECLOSED: end of queue */
        }

        for (i = 0; i < n; i++) {
            echo_handle(rt, tasks[i]);
        }
    }

    echo_release_held(rt);
    return NULL;
}


static void
echo_handle(echo_rt_t *rt, nbffi_task_t *task)
{
    char             buf[32];
    char            *up;
    long             n;
    size_t           mlen, plen, i;
    const char      *method, *payload;

    method = nbffi_task_method(task, &mlen);
    payload = nbffi_task_payload(task, &plen);

    if (strcmp(method, "echo") == 0) {
        echo_reply(rt, task, 0, payload, plen);

    } else if (strcmp(method, "upper") == 0) {
        up = malloc(plen ? plen : 1);
        if (up == NULL) {
            echo_reply(rt, task, 3, "out of memory", 13);
            return;
        }
        for (i = 0; i < plen; i++) {
            up[i] = (char) toupper((unsigned char) payload[i]);
        }
        /* hand the buffer over: nbffi frees it after the host copied it */
        atomic_fetch_add(&rt->answered, 1);
        (void) nbffi_task_respond_owned(task, 0, up, plen,
                                        (nbffi_free_cb) (void (*)(void))
                                        free, NULL);

    } else if (strcmp(method, "sleep") == 0) {
        snprintf(buf, sizeof(buf), "%.*s",
                 (int) (plen < sizeof(buf) - 1 ? plen : sizeof(buf) - 1),
                 payload);
        n = strtol(buf, NULL, 10);
        if (n < 0) {
            echo_reply(rt, task, 2, "sleep: milliseconds >= 0 expected", 33);
            return;
        }
        echo_sleep_ms(n);
        echo_reply(rt, task, 0, "slept", 5);

    } else if (strcmp(method, "huge") == 0) {
        echo_huge(rt, task, payload, plen);

    } else if (strcmp(method, "error") == 0) {
        echo_reply(rt, task, 1, payload, plen);

    } else if (strcmp(method, "hold") == 0) {
        echo_hold(rt, task);

    } else if (strcmp(method, "count") == 0) {
        i = (size_t) snprintf(buf, sizeof(buf), "%lu",
                              atomic_load(&rt->answered));
        echo_reply(rt, task, 0, buf, i);

    } else if (strcmp(method, "log") == 0) {
        nbffi_log(rt->q, NBFFI_LOG_NOTICE, payload, plen);
        echo_reply(rt, task, 0, "logged", 6);

    } else if (strcmp(method, "tlog") == 0) {
        nbffi_task_log(task, NBFFI_LOG_NOTICE, payload, plen);
        echo_reply(rt, task, 0, "logged", 6);

    } else if (strcmp(method, "chunks") == 0) {
        echo_chunks(rt, task, payload, plen);

    } else if (strcmp(method, "emit") == 0) {
        echo_emit(rt, task, payload, plen);

    } else if (strcmp(method, "meta") == 0) {
        echo_meta(rt, task);

    } else if (strcmp(method, "stats") == 0) {
        char  sbuf[64];

        i = (size_t) snprintf(sbuf, sizeof(sbuf), "sent=%lu cancelled=%lu",
                              atomic_load(&rt->sent),
                              atomic_load(&rt->cancelled));
        echo_reply(rt, task, 0, sbuf, i);

    } else {
        i = (size_t) snprintf(buf, sizeof(buf), "unknown method");
        echo_reply(rt, task, 2, buf, i);
    }
}


static void
echo_reply(echo_rt_t *rt, nbffi_task_t *task, int status, const void *data,
    size_t len)
{
    atomic_fetch_add(&rt->answered, 1);
    (void) nbffi_task_respond(task, status, data, len);
}


static void
echo_hold(echo_rt_t *rt, nbffi_task_t *task)
{
    size_t          cap;
    nbffi_task_t  **held;

    pthread_mutex_lock(&rt->hold_lock);

    if (rt->nheld == rt->held_cap) {
        cap = rt->held_cap ? rt->held_cap * 2 : 16;
        held = realloc(rt->held, cap * sizeof(nbffi_task_t *));
        if (held == NULL) {
            pthread_mutex_unlock(&rt->hold_lock);
            echo_reply(rt, task, 3, "out of memory", 13);
            return;
        }
        rt->held = held;
        rt->held_cap = cap;
    }

    rt->held[rt->nheld++] = task;

    pthread_mutex_unlock(&rt->hold_lock);
}


static void
echo_release_held(echo_rt_t *rt)
{
    size_t  i, n;

    pthread_mutex_lock(&rt->hold_lock);
    n = rt->nheld;
    rt->nheld = 0;
    for (i = 0; i < n; i++) {
        echo_reply(rt, rt->held[i], 0, "released", 8);
    }
    pthread_mutex_unlock(&rt->hold_lock);
}


static void
echo_huge(echo_rt_t *rt, nbffi_task_t *task, const char *payload,
    size_t plen)
{
    char    buf[32];
    void   *p;
    size_t  len;

    snprintf(buf, sizeof(buf), "%.*s",
             (int) (plen < sizeof(buf) - 1 ? plen : sizeof(buf) - 1),
             payload);
    len = plen ? strtoull(buf, NULL, 10) : (size_t) 1 << 31;

    p = mmap(NULL, len ? len : 1, PROT_READ,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        echo_reply(rt, task, 3, "mmap failed", 11);
        return;
    }

    atomic_fetch_add(&rt->answered, 1);
    if (nbffi_task_respond_owned(task, 0, p, len, echo_unmap,
                                 (void *) (uintptr_t) (len ? len : 1))
        != 0)
    {
        echo_unmap(p, (void *) (uintptr_t) (len ? len : 1));
    }
}


static void
echo_unmap(void *data, void *ud)
{
    (void) munmap(data, (size_t) (uintptr_t) ud);
}


static void
echo_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        /* a signal: sleep the rest */
    }
}


/* "N M [MS]": N chunks of M bytes, MS ms apart. */
static void
echo_chunks(echo_rt_t *rt, nbffi_task_t *task, const char *payload,
    size_t plen)
{
    int    rc;
    char   args[64], *chunk;
    long   i, n, m, ms;

    snprintf(args, sizeof(args), "%.*s",
             (int) (plen < sizeof(args) - 1 ? plen : sizeof(args) - 1),
             payload);
    ms = 0;
    if (sscanf(args, "%ld %ld %ld", &n, &m, &ms) < 2
        || n < 0 || m < 0 || m > (64L << 20) || ms < 0 || ms > 60000)
    {
        echo_reply(rt, task, 2, "chunks: \"N M [MS]\" expected", 27);
        return;
    }

    chunk = malloc(m ? (size_t) m : 1);
    if (chunk == NULL) {
        echo_reply(rt, task, 3, "out of memory", 13);
        return;
    }

    rc = 0;
    for (i = 0; i < n; i++) {
        if (ms > 0 && i > 0) {
            echo_sleep_ms(ms);
        }
        memset(chunk, 'a' + (int) (i % 26), (size_t) m);
        rc = nbffi_task_send(task, chunk, (size_t) m, -1);
        if (rc != 0) {
            break;
        }
        atomic_fetch_add(&rt->sent, 1);
    }

    free(chunk);

    if (rc == NBFFI_ECANCELED) {
        atomic_fetch_add(&rt->cancelled, 1);
    }

    if (rc != 0) {
        /* the host may have given up: this answer is then dropped */
        echo_reply(rt, task, 1, nbffi_strerror(rc),
                   strlen(nbffi_strerror(rc)));
        return;
    }

    echo_reply(rt, task, 0, NULL, 0);
}


/* "N M [NAME]": N events of M bytes. */
static void
echo_emit(echo_rt_t *rt, nbffi_task_t *task, const char *payload,
    size_t plen)
{
    char   args[320], name[256], *data;
    long   i, n, m, ok, dropped;
    int    k;

    snprintf(args, sizeof(args), "%.*s",
             (int) (plen < sizeof(args) - 1 ? plen : sizeof(args) - 1),
             payload);
    strcpy(name, "echo");
    if (sscanf(args, "%ld %ld %255s", &n, &m, name) < 2
        || n < 0 || m < 0 || m > (64L << 20))
    {
        echo_reply(rt, task, 2, "emit: \"N M [NAME]\" expected", 27);
        return;
    }

    data = malloc(m ? (size_t) m : 1);
    if (data == NULL) {
        echo_reply(rt, task, 3, "out of memory", 13);
        return;
    }
    memset(data, 'e', (size_t) m);

    ok = dropped = 0;
    for (i = 0; i < n; i++) {
        if (nbffi_emit(rt->q, name, strlen(name), data, (size_t) m) == 0) {
            ok++;
        } else {
            dropped++;
        }
    }

    free(data);

    k = snprintf(args, sizeof(args), "emitted=%ld dropped=%ld", ok,
                 dropped);
    echo_reply(rt, task, 0, args, (size_t) k);
}


/* The metadata as "key=value" lines. */
static void
echo_meta(echo_rt_t *rt, nbffi_task_t *task)
{
    char         out[NBFFI_MAX_META + 64];
    size_t       n, kl, vl;
    unsigned     i;
    const char  *k, *v;

    n = 0;
    for (i = 0; nbffi_task_meta_at(task, i, &k, &kl, &v, &vl); i++) {
        /* the encoding is at most NBFFI_MAX_META: its text fits */
        memcpy(out + n, k, kl);
        n += kl;
        out[n++] = '=';
        memcpy(out + n, v, vl);
        n += vl;
        out[n++] = '\n';
    }

    nbffi_task_log(task, NBFFI_LOG_NOTICE, "meta of this call", 17);
    echo_reply(rt, task, 0, out, n);
}


/* Emits "tick" every ticker_ms until the runtime is closed. */
static void *
echo_ticker(void *arg)
{
    int         len;
    char        buf[32];
    echo_rt_t  *rt = arg;
    unsigned long  n;

    for (n = 1; !nbffi_queue_closed(rt->q) && !atomic_load(&rt->stop); n++) {
        len = snprintf(buf, sizeof(buf), "%lu", n);
        (void) nbffi_emit(rt->q, "tick", 4, buf, (size_t) len);
        echo_sleep_ms(rt->ticker_ms);
    }

    return NULL;
}
