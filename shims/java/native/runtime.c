/*
 * The nbffi entry points of the Java runtime library (ABI v2).
 *
 * init runs on a core thread of libnbffi whose asynchronous signals are
 * blocked, never on the host (nginx) thread: it parses the cfg, creates or
 * reuses the JVM right there (the JVM's own threads inherit that mask),
 * starts an io.nbffi.Instance and the poller threads, which attach to the
 * JVM once and loop in Java (Instance.poll) until the queue ends.  The
 * core thread exits after init, so init detaches it first: the JNI
 * invocation API lets any attached thread detach, the one that created
 * the JVM included, and a thread must detach before it exits.
 *
 * fini runs on another core thread once the host closed the queue.
 * Instance.close lets the calls in flight finish until the deadline (or
 * close_timeout, if sooner), interrupts the handlers still running just
 * before it, then answers what it safely can, closes the handler and
 * reports which pollers are still inside a handler.  The others are
 * joined; those are counted and left running: they touch neither the
 * queue nor this runtime's memory again, and the core keeps the memory of
 * the tasks they hold.
 *
 * The JVM is never destroyed.  It cannot be created again in this process,
 * so a later runtime reuses it, and at worker exit DestroyJavaVM would only
 * wait for non-daemon Java threads a handler may have left running; the
 * process exit reclaims it all.  Java shutdown hooks therefore do not run:
 * handlers clean up in Handler.close().
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nbj.h"

/* How long fini waits for a poller that left Java to detach and exit,
   at least: the core waits 100 ms past the deadline for fini. */
#define NBJ_JOIN_MIN_NS  50000000

typedef struct nbj_rt_s  nbj_rt_t;

struct nbj_rt_s {
    nbj_rt_t          *next;         /* in nbj_rts                        */
    nbffi_queue_t     *q;
    nbj_cfg_t          cfg;
    jobject            instance;     /* global ref to io.nbffi.Instance   */
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


NBFFI_EXTERN unsigned nbffi_runtime_abi(void);
NBFFI_EXTERN int nbffi_runtime_init(nbffi_queue_t *q, const void *cfg,
    size_t cfg_len, void **data, char *err, size_t err_len);
NBFFI_EXTERN int nbffi_runtime_fini(void *data, int64_t deadline_ns);
NBFFI_EXTERN int nbffi_runtime_check(const void *cfg, size_t cfg_len,
    char *err, size_t err_len);

static int nbj_start(nbj_rt_t *rt, JNIEnv **env);
static int nbj_start_pollers(nbj_rt_t *rt);
static void *nbj_poller_main(void *arg);
static void nbj_close(nbj_rt_t *rt, JNIEnv *env, int64_t deadline_ns,
    int abort);
static int nbj_join_pollers(nbj_rt_t *rt, int64_t deadline_ns);
static int nbj_join_until(pthread_t tid, int64_t deadline_ns);
static void nbj_register(nbj_rt_t *rt);
static void nbj_unregister(nbj_rt_t *rt);
static void nbj_rt_free(nbj_rt_t *rt);


/* Runtimes of the process, newest first, only to route the JVM's own
   output to a host log.  Lock order: after nbj_jvm_lock (jvm.c). */
static pthread_mutex_t  nbj_rts_lock = PTHREAD_MUTEX_INITIALIZER;
static nbj_rt_t        *nbj_rts;


unsigned
nbffi_runtime_abi(void)
{
    return NBFFI_ABI_VERSION;
}


int
nbffi_runtime_init(nbffi_queue_t *q, const void *cfg, size_t cfg_len,
    void **data, char *err, size_t err_len)
{
    nbj_rt_t  *rt;
    JNIEnv    *env;

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

    env = NULL;
    if (nbj_start(rt, &env) != 0) {
        goto unregister;
    }

    if (nbj_start_pollers(rt) != 0) {
        nbj_close(rt, env, 0, 1);
        goto unregister;
    }

    nbj_detach();
    *data = rt;
    return 0;

unregister:

    if (env != NULL) {
        nbj_detach();
    }
    nbj_unregister(rt);

failed:

    (void) snprintf(err, err_len, NBJ_LOG_PREFIX "%s", rt->err);
    nbj_rt_free(rt);
    return -1;
}


/*
 * nbffi_preflight()'s check, in a short-lived child process, without a
 * JVM: the cfg parses, every classpath entry exists, the libjvm it names
 * can be read.  (Whether the class is in the classpath takes a JVM: the
 * start tells.)
 */
int
nbffi_runtime_check(const void *cfg, size_t cfg_len, char *err,
    size_t err_len)
{
    size_t       i;
    char         path[4096];
    nbj_cfg_t    c;
    struct stat  st;

    if (nbj_cfg_parse(&c, cfg, cfg_len, err, err_len) != 0) {
        return -1;
    }

    for (i = 0; i < c.n_classpath; i++) {
        if (stat(c.classpath[i], &st) != 0) {
            (void) snprintf(err, err_len, "classpath entry %s: %s",
                            c.classpath[i], strerror(errno));
            goto failed;
        }
    }

    if (nbj_jvm_lib_path(&c, path, sizeof(path), err, err_len) != 0) {
        goto failed;
    }
    if (access(path, R_OK) != 0) {
        (void) snprintf(err, err_len, "cannot read the JVM %s: %s (set"
                        " java_home= in the cfg, or JAVA_HOME)", path,
                        strerror(errno));
        goto failed;
    }

    nbj_cfg_free(&c);
    return 0;

failed:
    nbj_cfg_free(&c);
    return -1;
}


int
nbffi_runtime_fini(void *data, int64_t deadline_ns)
{
    int        stayed;
    JNIEnv    *env;
    nbj_rt_t  *rt = data;

    env = nbj_attach("nbffi-close");
    if (env != NULL) {
        nbj_close(rt, env, deadline_ns, 0);
        nbj_detach();
    } else {
        /* Every poller counts as stuck: the safe choice. */
        memset(rt->stuck, JNI_TRUE, sizeof(rt->stuck));
        nbffi_logf(rt->q, NBFFI_LOG_ERR, NBJ_LOG_PREFIX "cannot attach to"
                   " the JVM to close %s", rt->cfg.class_name);
    }

    stayed = nbj_join_pollers(rt, deadline_ns);

    /* A poller that stayed no longer reads rt (see nbj_poller_main), so
       rt goes even then. */
    nbj_unregister(rt);
    nbj_rt_free(rt);
    return stayed;
}


/*
 * Creates or reuses the JVM on this thread, which stays attached (*env),
 * and starts the Instance.  0, or -1 with rt->err set.
 */
static int
nbj_start(nbj_rt_t *rt, JNIEnv **env)
{
    nbj_cfg_t     *cfg = &rt->cfg;
    JNIEnv        *e;
    int            created, rc;
    jobject        obj;
    jstring        cls, level;
    jobjectArray   cp, args;

    if (nbj_jvm_enter(cfg, "nbffi-start", env, &created, rt->err,
                      sizeof(rt->err)) != 0)
    {
        return -1;
    }
    e = *env;
    if (!created && (cfg->java_home != NULL || cfg->n_jvm_options > 0)) {
        nbffi_logf(rt->q, NBFFI_LOG_WARN, NBJ_LOG_PREFIX "the JVM is"
                   " already running: java_home and jvm_option of %s are"
                   " ignored", cfg->class_name);
    }

    obj = NULL;
    level = NULL;
    cls = nbj_string(e, cfg->class_name);
    cp = cls == NULL ? NULL : nbj_strings(e, cfg->classpath,
                                          cfg->n_classpath);
    args = cp == NULL ? NULL : nbj_strings(e, cfg->args, cfg->n_args);
    if (args != NULL && cfg->log_level != NULL) {
        level = nbj_string(e, cfg->log_level);
    }

    if (args != NULL && (cfg->log_level == NULL || level != NULL)) {
        obj = (*e)->CallStaticObjectMethod(e, nbj_jni.bridge, nbj_jni.start,
                  (jlong) (uintptr_t) rt->q, cls, cp, args,
                  (jboolean) (cfg->virtual_threads != 0),
                  (jint) cfg->threads, (jint) cfg->batch,
                  (jlong) cfg->close_timeout_ms, level);
    }

    rc = -1;
    if ((*e)->ExceptionCheck(e)) {
        nbj_exception_text(e, rt->err, sizeof(rt->err));
    } else {
        rt->instance = (*e)->NewGlobalRef(e, obj);
        if (rt->instance != NULL) {
            rc = 0;
        } else {
            (void) snprintf(rt->err, sizeof(rt->err), "out of memory");
        }
    }

    if (obj != NULL) {
        (*e)->DeleteLocalRef(e, obj);
    }
    if (level != NULL) {
        (*e)->DeleteLocalRef(e, level);
    }
    if (args != NULL) {
        (*e)->DeleteLocalRef(e, args);
    }
    if (cp != NULL) {
        (*e)->DeleteLocalRef(e, cp);
    }
    if (cls != NULL) {
        (*e)->DeleteLocalRef(e, cls);
    }
    return rc;
}


/*
 * Creates cfg.threads pollers and lets them run once all are attached.
 * 0, or -1 with rt->err set and every poller started joined.
 */
static int
nbj_start_pollers(nbj_rt_t *rt)
{
    int            i, rc;
    nbj_poller_t  *p;

    rc = 0;
    for (i = 0; i < rt->cfg.threads; i++) {
        p = calloc(1, sizeof(nbj_poller_t));
        if (p == NULL) {
            (void) snprintf(rt->err, sizeof(rt->err), "out of memory");
            rc = -1;
            break;
        }
        p->rt = rt;
        p->index = i;
        (void) snprintf(p->name, sizeof(p->name), "nbffi-poller-%d", i);
        rc = nbffi_thread_create(&rt->tids[i], nbj_poller_main, p);
        if (rc != 0) {
            free(p);
            (void) snprintf(rt->err, sizeof(rt->err), "cannot start poller"
                            " thread: %s", nbffi_strerror(rc));
            break;
        }
        rt->started++;
    }

    (void) pthread_mutex_lock(&rt->lock);
    while (rt->ready < rt->started) {
        (void) pthread_cond_wait(&rt->cond, &rt->lock);
    }
    if (rc == 0 && rt->failed > 0) {
        (void) snprintf(rt->err, sizeof(rt->err), "cannot attach %d poller"
                        " thread(s) to the JVM", rt->failed);
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

    /* From here on rt may be freed (once fini gave up on this poller). */
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


/*
 * Instance.close on this attached thread; fills rt->stuck.  abort: the
 * pollers never ran.  On failure every poller counts as stuck, the safe
 * choice.
 */
static void
nbj_close(nbj_rt_t *rt, JNIEnv *env, int64_t deadline_ns, int abort)
{
    jbooleanArray  stuck;
    char           text[NBJ_ERR_LEN];

    memset(rt->stuck, JNI_TRUE, sizeof(rt->stuck));

    stuck = (*env)->CallStaticObjectMethod(env, nbj_jni.bridge,
                                           nbj_jni.close, rt->instance,
                                           (jlong) deadline_ns,
                                           (jboolean) (abort != 0));
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
}


/* Joins the pollers that left Java; returns how many stay. */
static int
nbj_join_pollers(nbj_rt_t *rt, int64_t deadline_ns)
{
    int      i, stayed;
    int64_t  limit;

    limit = 0;
    if (deadline_ns != 0) {
        limit = nbffi_now_ns() + NBJ_JOIN_MIN_NS;
        limit = deadline_ns > limit ? deadline_ns : limit;
    }

    stayed = 0;
    for (i = 0; i < rt->started; i++) {
        if (!rt->stuck[i] && nbj_join_until(rt->tids[i], limit) == 0) {
            continue;
        }
        (void) pthread_detach(rt->tids[i]);
        stayed++;
        nbffi_logf(rt->q, NBFFI_LOG_WARN, NBJ_LOG_PREFIX "poller %d of %s is"
                   " still in a handler at the close deadline; left running",
                   i, rt->cfg.class_name);
    }
    return stayed;
}


/* pthread_join, given up at deadline_ns (nbffi_now_ns clock, 0: none).
   0 once joined. */
static int
nbj_join_until(pthread_t tid, int64_t deadline_ns)
{
    int64_t          left;
    struct timespec  ts;

    if (deadline_ns == 0) {
        return pthread_join(tid, NULL);
    }

    /* pthread_timedjoin_np takes the wall clock. */
    left = deadline_ns - nbffi_now_ns();
    left = left > 0 ? left : 0;
    (void) clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000000000;
    ts.tv_nsec += left % 1000000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return pthread_timedjoin_np(tid, NULL, &ts);
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


/* Takes rt off the list: its queue may go once fini returns. */
static void
nbj_unregister(nbj_rt_t *rt)
{
    nbj_rt_t  **pp;

    (void) pthread_mutex_lock(&nbj_rts_lock);
    for (pp = &nbj_rts; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == rt) {
            *pp = rt->next;
            break;
        }
    }
    (void) pthread_mutex_unlock(&nbj_rts_lock);
}


static void
nbj_rt_free(nbj_rt_t *rt)
{
    nbj_cfg_free(&rt->cfg);
    (void) pthread_cond_destroy(&rt->cond);
    (void) pthread_mutex_destroy(&rt->lock);
    free(rt);
}
