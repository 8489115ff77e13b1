/*
 * A runtime for the benchmarks' hashing job: method "md5" replies with the
 * lowercase hex MD5 of the payload (OpenSSL's libcrypto), the job that
 * bench/run also gives ngx.run_worker_thread and the other runtimes.  One
 * thread per runtime; cfg is ignored.
 */

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbffi.h"


#define MD5_BATCH  64

typedef struct md5_rt_s  md5_rt_t;

struct md5_rt_s {
    md5_rt_t       *next;       /* registry, by queue */
    nbffi_queue_t  *q;
    pthread_t       thread;
};


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, char *err, size_t err_len);
NBFFI_EXTERN void nbffi_runtime_fini(nbffi_queue_t *q);

static void *md5_thread(void *arg);
static void md5_handle(nbffi_task_t *task);


static pthread_mutex_t  md5_lock = PTHREAD_MUTEX_INITIALIZER;
static md5_rt_t        *md5_runtimes;


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    char *err, size_t err_len)
{
    int        rc;
    md5_rt_t  *rt;

    (void) cfg;
    (void) cfg_len;

    rt = calloc(1, sizeof(md5_rt_t));
    if (rt == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    rt->q = q;

    rc = nbffi_thread_create(&rt->thread, md5_thread, q);
    if (rc != 0) {
        snprintf(err, err_len, "cannot start a thread: %s", strerror(-rc));
        free(rt);
        return -1;
    }

    pthread_mutex_lock(&md5_lock);
    rt->next = md5_runtimes;
    md5_runtimes = rt;
    pthread_mutex_unlock(&md5_lock);
    return 0;
}


void
nbffi_runtime_fini(nbffi_queue_t *q)
{
    md5_rt_t  *rt, **p;

    pthread_mutex_lock(&md5_lock);
    for (p = &md5_runtimes; *p != NULL && (*p)->q != q; p = &(*p)->next) {
        /* void */
    }
    rt = *p;
    if (rt != NULL) {
        *p = rt->next;
    }
    pthread_mutex_unlock(&md5_lock);

    if (rt != NULL) {
        (void) pthread_join(rt->thread, NULL);    /* the queue is closed */
        free(rt);
    }
}


static void *
md5_thread(void *arg)
{
    int            i, n;
    nbffi_task_t  *tasks[MD5_BATCH];

    while ((n = nbffi_queue_pop(arg, tasks, MD5_BATCH, -1)) >= 0) {
        for (i = 0; i < n; i++) {
            md5_handle(tasks[i]);
        }
    }
    return NULL;
}


static void
md5_handle(nbffi_task_t *task)
{
    char            hex[2 * EVP_MAX_MD_SIZE];
    size_t          plen, i;
    const char     *method;
    const void     *payload;
    unsigned int    dlen;
    unsigned char   digest[EVP_MAX_MD_SIZE];
    static const char  digits[] = "0123456789abcdef";

    method = nbffi_task_method(task, NULL);
    payload = nbffi_task_payload(task, &plen);

    if (strcmp(method, "md5") != 0) {
        (void) nbffi_task_respond(task, 2, "unknown method", 14);
        return;
    }

    if (EVP_Digest(payload, plen, digest, &dlen, EVP_md5(), NULL) != 1) {
        (void) nbffi_task_respond(task, 1, "EVP_Digest failed", 17);
        return;
    }

    for (i = 0; i < dlen; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 0xf];
    }
    (void) nbffi_task_respond(task, 0, hex, 2 * (size_t) dlen);
}
