/*
 * The nbffi entry points of the Java runtime library.
 *
 * init (host thread): parse the cfg; on a helper thread whose signals are
 * blocked, create or reuse the JVM and start an io.nbffi.Instance; start
 * the poller threads, which attach to the JVM once and loop in Java
 * (Instance.poll) until the queue ends.
 *
 * fini (host thread, queue closed): on a helper thread, Instance.close
 * lets every call in flight finish (bounded by close_timeout, after which
 * the rest are answered with an error), closes the handler and reports
 * which pollers are stuck in a handler; the others are joined.
 *
 * The JVM is never destroyed.  It cannot be created again in this process,
 * so a later runtime reuses it, and at worker exit DestroyJavaVM would only
 * wait for non-daemon Java threads a handler may have left running; the
 * process exit reclaims it all.  Java shutdown hooks therefore do not run:
 * handlers clean up in Handler.close().
 *
 * Java code never runs on the host (nginx) thread: it is the process's
 * primordial thread, where HotSpot dislikes running, and any thread Java
 * starts from it would inherit nginx's empty signal mask.
 */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbj.h"

typedef struct nbj_rt_s  nbj_rt_t;

struct nbj_rt_s {
    nbj_rt_t          *next;         /* in nbj_rts                        */
    nbffi_queue_t     *q;
    nbj_cfg_t          cfg;
    jobject            instance;     /* global ref to io.nbffi.Instance   */
    int                abort;        /* close job: pollers never ran      */
    int                rc;           /* helper job result                 */
    char               err[NBJ_ERR_LEN];

    int                started;      /* poller threads created            */
    pthread_t          tids[NBJ_MAX_THREADS];
    jboolean           stuck[NBJ_MAX_THREADS];

    /* Start gate: pollers attach, report, then wait for go. */
    pthread_mutex_t    lock;
    pthread_cond_t     cond;
    int                ready;        /* guarded by lock                   */
    int                failed;       /* idem                              */
    int                go;           /* idem: 1 run, -1 abort             */
};

typedef struct {
    nbj_rt_t          *rt;           /* only until the poller runs Java   */
    int                index;
    char               name[32];
} nbj_poller_t;


static int nbj_start_pollers(nbj_rt_t *rt, char *err, size_t err_len);
static void *nbj_poller_main(void *arg);
static void *nbj_start_main(void *arg);
static void *nbj_close_main(void *arg);
static int nbj_run(void *(*fn)(void *), nbj_rt_t *rt);
static void nbj_register(nbj_rt_t *rt);
static nbj_rt_t *nbj_find(nbffi_queue_t *q, int remove);
static void nbj_rt_free(nbj_rt_t *rt);


/* Runtimes of the process, newest first; the JVM's output goes to the
   first one's log.  Lock order: after nbj_jvm_lock (jvm.c). */
static pthread_mutex_t  nbj_rts_lock = PTHREAD_MUTEX_INITIALIZER;
static nbj_rt_t        *nbj_rts;


NBFFI_EXTERN unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


NBFFI_EXTERN int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    char *err, size_t err_len)
{
    int        rc;
    nbj_rt_t  *rt;

    rt = calloc(1, sizeof(nbj_rt_t));
    if (rt == NULL) {
        (void) snprintf(err, err_len, NBJ_LOG_PREFIX "out of memory");
        return -1;
    }
    rt->q = q;
    (void) pthread_mutex_init(&rt->lock, NULL);
    (void) pthread_cond_init(&rt->cond, NULL);

    if (nbj_cfg_parse(&rt->cfg, cfg, cfg_len, rt->err, sizeof(rt->err))
        != 0)
    {
        goto failed;
    }

    /* Registered first, so that the JVM's output while starting is seen. */
    nbj_register(rt);

    rc = nbj_run(nbj_start_main, rt);
    if (rc != 0 || rt->rc != 0) {
        if (rc != 0) {
            (void) snprintf(rt->err, sizeof(rt->err), "cannot start a"
                            " thread: %s", nbffi_strerror(rc));
        }
        (void) nbj_find(q, 1);
        goto failed;
    }

    if (nbj_start_pollers(rt, rt->err, sizeof(rt->err)) != 0) {
        rt->abort = 1;
        if (nbj_run(nbj_close_main, rt) != 0) {
            (void) nbj_close_main(rt);
        }
        (void) nbj_find(q, 1);
        goto failed;
    }
    return 0;

failed:

    (void) snprintf(err, err_len, NBJ_LOG_PREFIX "%s", rt->err);
    nbj_rt_free(rt);
    return -1;
}


NBFFI_EXTERN void
nbffi_runtime_fini(nbffi_queue_t *q)
{
    int        i;
    nbj_rt_t  *rt;

    rt = nbj_find(q, 0);
    if (rt == NULL) {
        return;
    }

    /* A helper thread keeps signals blocked; without one (no threads
       left), closing from here is still better than never closing. */
    if (nbj_run(nbj_close_main, rt) != 0) {
        (void) nbj_close_main(rt);
    }

    for (i = 0; i < rt->started; i++) {
        if (rt->stuck[i]) {
            /* Still in a handler: it frees its own state when it leaves
               and touches neither the queue nor rt again. */
            (void) pthread_detach(rt->tids[i]);
            nbffi_logf(q, NBFFI_LOG_ERR, NBJ_LOG_PREFIX "poller %d of %s is"
                       " stuck in a handler; left running", i,
                       rt->cfg.class_name);
        } else {
            (void) pthread_join(rt->tids[i], NULL);
        }
    }

    (void) nbj_find(q, 1);
    nbj_rt_free(rt);
}


/* Creates cfg.threads pollers and lets them run once all are attached. */
static int
nbj_start_pollers(nbj_rt_t *rt, char *err, size_t err_len)
{
    int            i, rc;
    nbj_poller_t  *p;

    rc = 0;
    for (i = 0; i < rt->cfg.threads; i++) {
        p = calloc(1, sizeof(nbj_poller_t));
        if (p == NULL) {
            (void) snprintf(err, err_len, "out of memory");
            rc = -1;
            break;
        }
        p->rt = rt;
        p->index = i;
        (void) snprintf(p->name, sizeof(p->name), "nbffi-poller-%d", i);
        rc = nbffi_thread_create(&rt->tids[i], nbj_poller_main, p);
        if (rc != 0) {
            free(p);
            (void) snprintf(err, err_len, "cannot start poller thread: %s",
                            nbffi_strerror(rc));
            break;
        }
        rt->started++;
    }

    (void) pthread_mutex_lock(&rt->lock);
    while (rt->ready < rt->started) {
        (void) pthread_cond_wait(&rt->cond, &rt->lock);
    }
    if (rc == 0 && rt->failed > 0) {
        (void) snprintf(err, err_len, "cannot attach %d poller thread(s) to"
                        " the JVM", rt->failed);
        rc = -1;
    }
    rt->go = rc == 0 ? 1 : -1;
    (void) pthread_cond_broadcast(&rt->cond);
    (void) pthread_mutex_unlock(&rt->lock);

    if (rc != 0) {
        for (i = 0; i < rt->started; i++) {
            (void) pthread_join(rt->tids[i], NULL);
        }
        rt->started = 0;
    }
    return rc;
}


static void *
nbj_poller_main(void *arg)
{
    nbj_poller_t  *p = arg;
    nbj_rt_t      *rt = p->rt;
    JNIEnv        *env;
    jobject        instance;
    char           text[NBJ_ERR_LEN];
    int            go;

    /* Attaching names the Java thread only; ps and top show this one. */
    (void) pthread_setname_np(pthread_self(), p->name);
    env = nbj_attach(p->name);

    (void) pthread_mutex_lock(&rt->lock);
    rt->ready++;
    if (env == NULL) {
        rt->failed++;
    }
    (void) pthread_cond_broadcast(&rt->cond);
    while (rt->go == 0) {
        (void) pthread_cond_wait(&rt->cond, &rt->lock);
    }
    go = rt->go;
    instance = rt->instance;
    (void) pthread_mutex_unlock(&rt->lock);

    /* From here on rt may be freed (if this poller gets stuck). */
    if (env != NULL && go > 0) {
        (*env)->CallStaticVoidMethod(env, nbj_jni.bridge, nbj_jni.poll,
                                     instance, (jint) p->index);
        if ((*env)->ExceptionCheck(env)) {
            nbj_exception_text(env, text, sizeof(text));
            nbj_log_any(NBFFI_LOG_ERR, text, strlen(text));
        }
    }
    if (env != NULL) {
        nbj_detach();
    }
    free(p);
    return NULL;
}


/* Helper job: JVM and Instance.start.  Sets rt->rc, rt->err. */
static void *
nbj_start_main(void *arg)
{
    nbj_rt_t      *rt = arg;
    nbj_cfg_t     *cfg = &rt->cfg;
    JNIEnv        *env;
    int            created;
    jobject        obj;
    jstring        cls, level;
    jobjectArray   cp, args;

    rt->rc = -1;
    if (nbj_jvm_enter(cfg, "nbffi-start", &env, &created, rt->err,
                      sizeof(rt->err)) != 0)
    {
        return NULL;
    }
    if (!created && (cfg->java_home != NULL || cfg->n_jvm_options > 0)) {
        nbffi_logf(rt->q, NBFFI_LOG_NOTICE, NBJ_LOG_PREFIX "the JVM is"
                   " already running: java_home and jvm_option of %s are"
                   " ignored", cfg->class_name);
    }

    obj = NULL;
    level = NULL;
    cls = nbj_string(env, cfg->class_name);
    cp = cls == NULL ? NULL : nbj_strings(env, cfg->classpath,
                                          cfg->n_classpath);
    args = cp == NULL ? NULL : nbj_strings(env, cfg->args, cfg->n_args);
    if (args != NULL && cfg->log_level != NULL) {
        level = nbj_string(env, cfg->log_level);
    }

    if (args != NULL && (cfg->log_level == NULL || level != NULL)) {
        obj = (*env)->CallStaticObjectMethod(env, nbj_jni.bridge,
                  nbj_jni.start, (jlong) (uintptr_t) rt->q, cls, cp, args,
                  (jboolean) (cfg->virtual_threads != 0),
                  (jint) cfg->threads, (jint) cfg->batch,
                  (jlong) cfg->close_timeout_ms, level);
    }

    if ((*env)->ExceptionCheck(env)) {
        nbj_exception_text(env, rt->err, sizeof(rt->err));
    } else {
        rt->instance = (*env)->NewGlobalRef(env, obj);
        if (rt->instance != NULL) {
            rt->rc = 0;
        } else {
            (void) snprintf(rt->err, sizeof(rt->err), "out of memory");
        }
    }

    if (obj != NULL) {
        (*env)->DeleteLocalRef(env, obj);
    }
    if (level != NULL) {
        (*env)->DeleteLocalRef(env, level);
    }
    if (args != NULL) {
        (*env)->DeleteLocalRef(env, args);
    }
    if (cp != NULL) {
        (*env)->DeleteLocalRef(env, cp);
    }
    if (cls != NULL) {
        (*env)->DeleteLocalRef(env, cls);
    }
    nbj_detach();
    return NULL;
}


/* Helper job: Instance.close; fills rt->stuck.  On failure every poller
   counts as stuck, the safe choice. */
static void *
nbj_close_main(void *arg)
{
    nbj_rt_t      *rt = arg;
    JNIEnv        *env;
    jbooleanArray  stuck;
    char           text[NBJ_ERR_LEN];

    memset(rt->stuck, JNI_TRUE, sizeof(rt->stuck));

    env = nbj_attach("nbffi-close");
    if (env == NULL) {
        nbffi_logf(rt->q, NBFFI_LOG_ERR, NBJ_LOG_PREFIX "cannot attach to"
                   " the JVM to close %s", rt->cfg.class_name);
        return NULL;
    }

    stuck = (*env)->CallStaticObjectMethod(env, nbj_jni.bridge,
                                           nbj_jni.close, rt->instance,
                                           (jboolean) (rt->abort != 0));
    if ((*env)->ExceptionCheck(env)) {
        nbj_exception_text(env, text, sizeof(text));
        nbffi_logf(rt->q, NBFFI_LOG_ERR, NBJ_LOG_PREFIX "closing %s failed:"
                   " %s", rt->cfg.class_name, text);
    } else {
        (*env)->GetBooleanArrayRegion(env, stuck, 0, rt->started,
                                      rt->stuck);
        if ((*env)->ExceptionCheck(env)) {
            (*env)->ExceptionClear(env);
            memset(rt->stuck, JNI_TRUE, sizeof(rt->stuck));
        }
        (*env)->DeleteLocalRef(env, stuck);
    }

    (*env)->DeleteGlobalRef(env, rt->instance);
    rt->instance = NULL;
    nbj_detach();
    return NULL;
}


/* Runs fn(rt) on a new thread with signals blocked, and waits for it.
   0, or nbffi_thread_create's error. */
static int
nbj_run(void *(*fn)(void *), nbj_rt_t *rt)
{
    int        rc;
    pthread_t  tid;

    rc = nbffi_thread_create(&tid, fn, rt);
    if (rc != 0) {
        return rc;
    }
    (void) pthread_join(tid, NULL);
    return 0;
}


/* Where the JVM's own output goes: the newest runtime's log, or stderr. */
void
nbj_log_any(int level, const char *msg, size_t len)
{
    (void) pthread_mutex_lock(&nbj_rts_lock);
    if (nbj_rts != NULL) {
        nbffi_log(nbj_rts->q, level, msg, len);
    } else {
        (void) fprintf(stderr, NBJ_LOG_PREFIX "%.*s\n", (int) len, msg);
    }
    (void) pthread_mutex_unlock(&nbj_rts_lock);
}


static void
nbj_register(nbj_rt_t *rt)
{
    (void) pthread_mutex_lock(&nbj_rts_lock);
    rt->next = nbj_rts;
    nbj_rts = rt;
    (void) pthread_mutex_unlock(&nbj_rts_lock);
}


/* The runtime of q; remove: also take it off the list. */
static nbj_rt_t *
nbj_find(nbffi_queue_t *q, int remove)
{
    nbj_rt_t  **pp, *rt;

    (void) pthread_mutex_lock(&nbj_rts_lock);
    for (pp = &nbj_rts; *pp != NULL && (*pp)->q != q; pp = &(*pp)->next) {
        /* void */
    }
    rt = *pp;
    if (rt != NULL && remove) {
        *pp = rt->next;
    }
    (void) pthread_mutex_unlock(&nbj_rts_lock);
    return rt;
}


static void
nbj_rt_free(nbj_rt_t *rt)
{
    nbj_cfg_free(&rt->cfg);
    (void) pthread_cond_destroy(&rt->cond);
    (void) pthread_mutex_destroy(&rt->lock);
    free(rt);
}
