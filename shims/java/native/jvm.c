/*
 * The process's one JVM.  A JVM cannot be created twice in a process, nor
 * again after DestroyJavaVM, so the first Java runtime creates it (or finds
 * one that another library created) and every later runtime reuses it.
 * libjvm is never linked: it is dlopen'ed from java_home (cfg), $JAVA_HOME
 * or the JDK found at build time, so one build runs on any installed JDK.
 *
 * The nbffi jar (NBJ_JAR, next to this library) is appended to the
 * system class loader's search through JVMTI once the JVM runs, whoever
 * created it: a JVM made by another library, or one whose first creation
 * failed -- HotSpot then drops -Djava.class.path when the creation is
 * retried.  A runtime's classpath never goes there: each runtime loads its
 * own code through a class loader of its own (io.nbffi.Instance), so a
 * runtime whose classpath is wrong fails alone and leaves the JVM as good
 * as new for the next one.  Without the jar no JVM is created at all.
 *
 * The JVM is created with -Xrs: nginx owns SIGHUP, SIGQUIT and SIGTERM,
 * which cannot be chained.  It is created on a core thread of libnbffi,
 * whose signals are blocked, so the JVM's own threads, which inherit that
 * mask, never take a signal meant for nginx.  HotSpot's threads keep
 * SIGUSR2 (its suspend/resume signal) unblocked; nginx workers ignore it.
 *
 * What the JVM prints (warnings, -Xcheck:jni reports) goes through the
 * vfprintf hook to the host log, or into the error text while creating.
 */

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jvmti.h>

#include "nbj.h"

#ifndef NBJ_DEFAULT_JAVA_HOME
#define NBJ_DEFAULT_JAVA_HOME  "/usr/lib/jvm/default-java"
#endif

#define NBJ_LINE_LEN  1024

typedef jint (JNICALL *nbj_create_vm_pt)(JavaVM **vm, void **env,
    void *args);
typedef jint (JNICALL *nbj_created_vms_pt)(JavaVM **vms, jsize len,
    jsize *n);


static int nbj_jvm_open(const nbj_cfg_t *cfg, JNIEnv **env, int *created,
    char *err, size_t err_len);
static int nbj_jvm_create(nbj_create_vm_pt create, const nbj_cfg_t *cfg,
    JNIEnv **env, char *err, size_t err_len);
static int nbj_jvm_jar(char *path, size_t len, char *err, size_t err_len);
static int nbj_jvm_add_jar(const char *jar, char *err, size_t err_len);
static jint JNICALL nbj_jvm_vfprintf(FILE *fp, const char *fmt, va_list ap);
static void nbj_jvm_output(const char *s, size_t len);
static void nbj_jvm_line(const char *s, size_t len);


/* Lock order: nbj_jvm_lock, then nbj_out_lock. */
static pthread_mutex_t  nbj_jvm_lock = PTHREAD_MUTEX_INITIALIZER;
static JavaVM          *nbj_vm;            /* guarded by nbj_jvm_lock   */
static int              nbj_jni_ready;     /* nbj_jni_load done: idem   */

/* While a JVM is being created its output is kept for the error text. */
static pthread_mutex_t  nbj_out_lock = PTHREAD_MUTEX_INITIALIZER;
static int              nbj_capturing;     /* guarded by nbj_out_lock   */
static char             nbj_captured[NBJ_ERR_LEN];
static size_t           nbj_captured_len;

/* A line of JVM output being assembled by this thread. */
static __thread char    nbj_line[NBJ_LINE_LEN];
static __thread size_t  nbj_line_len;


/*
 * Makes sure the JVM exists and the nbffi classes are loaded, and attaches
 * the calling thread.  *created tells whether this call created the JVM.
 * On failure the thread is not attached and *env is NULL.
 */
int
nbj_jvm_enter(const nbj_cfg_t *cfg, const char *thread_name, JNIEnv **env,
    int *created, char *err, size_t err_len)
{
    char  jar[PATH_MAX];

    *created = 0;
    *env = NULL;

    (void) pthread_mutex_lock(&nbj_jvm_lock);

    if (!nbj_jni_ready && nbj_jvm_jar(jar, sizeof(jar), err, err_len) != 0) {
        goto failed;
    }
    if (nbj_vm == NULL
        && nbj_jvm_open(cfg, env, created, err, err_len) != 0)
    {
        goto failed;
    }
    if (*env == NULL) {
        *env = nbj_attach(thread_name);
        if (*env == NULL) {
            (void) snprintf(err, err_len, "cannot attach a thread to the"
                            " JVM");
            goto failed;
        }
    }
    if (!nbj_jni_ready) {
        if (nbj_jvm_add_jar(jar, err, err_len) != 0
            || nbj_jni_load(*env, err, err_len) != 0)
        {
            nbj_detach();
            *env = NULL;
            goto failed;
        }
        nbj_jni_ready = 1;
    }

    (void) pthread_mutex_unlock(&nbj_jvm_lock);
    return 0;

failed:

    (void) pthread_mutex_unlock(&nbj_jvm_lock);
    return -1;
}


JNIEnv *
nbj_attach(const char *thread_name)
{
    JNIEnv            *env;
    JavaVMAttachArgs   args;

    args.version = NBJ_JNI_VERSION;
    args.name = (char *) thread_name;
    args.group = NULL;

    if ((*nbj_vm)->AttachCurrentThread(nbj_vm, (void **) &env, &args)
        != JNI_OK)
    {
        return NULL;
    }
    return env;
}


void
nbj_detach(void)
{
    (void) (*nbj_vm)->DetachCurrentThread(nbj_vm);
}


/*
 * The libjvm.so cfg asks for: in java_home=, else $JAVA_HOME, else the
 * default of the build.  0, or -1 with the reason in err.
 */
int
nbj_jvm_lib_path(const nbj_cfg_t *cfg, char *path, size_t len, char *err,
    size_t err_len)
{
    const char  *home;

    home = cfg->java_home;
    if (home == NULL) {
        home = getenv("JAVA_HOME");
    }
    if (home == NULL || *home == '\0') {
        home = NBJ_DEFAULT_JAVA_HOME;
    }
    if ((size_t) snprintf(path, len, "%s/lib/server/libjvm.so", home)
        >= len)
    {
        (void) snprintf(err, err_len, "java_home too long");
        return -1;
    }
    return 0;
}


/* Finds a running JVM or loads libjvm and creates one.  Under the lock. */
static int
nbj_jvm_open(const nbj_cfg_t *cfg, JNIEnv **env, int *created, char *err,
    size_t err_len)
{
    char                 path[4096];
    void                *lib;
    jsize                n;
    JavaVM              *vm;
    nbj_create_vm_pt     create;
    nbj_created_vms_pt   created_vms;

    /* A JVM some other library of the process started. */
    created_vms = (nbj_created_vms_pt) dlsym(RTLD_DEFAULT,
                                             "JNI_GetCreatedJavaVMs");
    if (created_vms != NULL && created_vms(&vm, 1, &n) == JNI_OK && n > 0) {
        nbj_vm = vm;
        return 0;
    }

    if (nbj_jvm_lib_path(cfg, path, sizeof(path), err, err_len) != 0) {
        return -1;
    }

    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        (void) snprintf(err, err_len, "cannot load the JVM: %s (set"
                        " java_home= in the cfg, or JAVA_HOME)", dlerror());
        return -1;
    }
    created_vms = (nbj_created_vms_pt) dlsym(lib, "JNI_GetCreatedJavaVMs");
    create = (nbj_create_vm_pt) dlsym(lib, "JNI_CreateJavaVM");
    if (created_vms == NULL || create == NULL) {
        (void) snprintf(err, err_len, "%s lacks the JNI invocation API",
                        path);
        return -1;
    }

    /* The same libjvm may already run a JVM, loaded RTLD_LOCAL elsewhere. */
    if (created_vms(&vm, 1, &n) == JNI_OK && n > 0) {
        nbj_vm = vm;
        return 0;
    }

    if (nbj_jvm_create(create, cfg, env, err, err_len) != 0) {
        return -1;
    }
    *created = 1;
    return 0;
}


static int
nbj_jvm_create(nbj_create_vm_pt create, const nbj_cfg_t *cfg, JNIEnv **env,
    char *err, size_t err_len)
{
    size_t           i, n;
    jint             rc;
    JavaVM          *vm;
    JavaVMOption    *opt;
    JavaVMInitArgs   args;

    opt = calloc(cfg->n_jvm_options + 4, sizeof(JavaVMOption));
    if (opt == NULL) {
        (void) snprintf(err, err_len, "out of memory");
        return -1;
    }

    /* The hook first, so that it sees what the options after it print;
       then the defaults, which a jvm_option may override. */
    n = 0;
    opt[n].optionString = "vfprintf";
    opt[n++].extraInfo = (void *) nbj_jvm_vfprintf;
    opt[n++].optionString = "-Xrs";
    /* The JVM is never destroyed, so it would leave its perf data file in
       /tmp/hsperfdata_USER behind at every worker exit. */
    opt[n++].optionString = "-XX:-UsePerfData";
    /* Not ".", the default: nothing of the worker's working directory. */
    opt[n++].optionString = "-Djava.class.path=";
    for (i = 0; i < cfg->n_jvm_options; i++) {
        opt[n++].optionString = cfg->jvm_options[i];
    }

    args.version = NBJ_JNI_VERSION;
    args.nOptions = (jint) n;
    args.options = opt;
    args.ignoreUnrecognized = JNI_FALSE;

    (void) pthread_mutex_lock(&nbj_out_lock);
    nbj_capturing = 1;
    nbj_captured_len = 0;
    (void) pthread_mutex_unlock(&nbj_out_lock);

    rc = create(&vm, (void **) env, &args);

    /* Output of a JVM that started is not an error: it goes to the log. */
    (void) pthread_mutex_lock(&nbj_out_lock);
    nbj_capturing = 0;
    nbj_captured[nbj_captured_len] = '\0';
    (void) pthread_mutex_unlock(&nbj_out_lock);

    free(opt);

    if (rc != JNI_OK) {
        *env = NULL;
        (void) snprintf(err, err_len, "JNI_CreateJavaVM failed (%d)%s%s",
                        (int) rc, nbj_captured_len ? ": " : "",
                        nbj_captured);
        return -1;
    }
    if (nbj_captured_len) {
        nbj_log_any(NBFFI_LOG_WARN, nbj_captured, nbj_captured_len);
    }

    nbj_vm = vm;
    return 0;
}


/* The path of the nbffi jar: NBJ_JAR in the directory of this library. */
static int
nbj_jvm_jar(char *path, size_t len, char *err, size_t err_len)
{
    char     dir[PATH_MAX], *slash;
    Dl_info  info;

    if (dladdr((void *) nbj_jvm_jar, &info) == 0 || info.dli_fname == NULL) {
        (void) snprintf(err, err_len, "dladdr cannot tell where"
                        " libnbffi_java.so lies, so " NBJ_JAR " cannot be"
                        " found; no JVM was created");
        return -1;
    }
    if (realpath(info.dli_fname, dir) == NULL) {
        (void) snprintf(dir, sizeof(dir), "%s", info.dli_fname);
    }
    slash = strrchr(dir, '/');
    if ((size_t) snprintf(path, len, "%.*s/" NBJ_JAR,
                          slash != NULL ? (int) (slash - dir) : 1,
                          slash != NULL ? dir : ".") >= len)
    {
        (void) snprintf(err, err_len, "path of " NBJ_JAR " too long");
        return -1;
    }
    if (access(path, R_OK) != 0) {
        (void) snprintf(err, err_len, "the nbffi jar %s is missing or"
                        " unreadable (it belongs next to libnbffi_java.so);"
                        " no JVM was created", path);
        return -1;
    }
    return 0;
}


/* Appends jar to the system class loader's search (JVMTI, live phase). */
static int
nbj_jvm_add_jar(const char *jar, char *err, size_t err_len)
{
    jint         rc;
    jvmtiEnv    *ti;
    jvmtiError   e;

    rc = (*nbj_vm)->GetEnv(nbj_vm, (void **) &ti, JVMTI_VERSION_1_2);
    if (rc != JNI_OK) {
        (void) snprintf(err, err_len, "no JVMTI in this JVM (%d): cannot"
                        " put %s on its class path", (int) rc, jar);
        return -1;
    }
    e = (*ti)->AddToSystemClassLoaderSearch(ti, jar);
    (void) (*ti)->DisposeEnvironment(ti);
    if (e != JVMTI_ERROR_NONE) {
        (void) snprintf(err, err_len, "cannot put %s on the JVM's class"
                        " path (JVMTI error %d)", jar, (int) e);
        return -1;
    }
    return 0;
}


static jint JNICALL
nbj_jvm_vfprintf(FILE *fp, const char *fmt, va_list ap)
{
    char  buf[NBJ_LINE_LEN];
    int   n;

    (void) fp;

    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > 0) {
        nbj_jvm_output(buf, (size_t) n < sizeof(buf)
                            ? (size_t) n : sizeof(buf) - 1);
    }
    return n;
}


/* The JVM prints lines in pieces: assemble them per thread. */
static void
nbj_jvm_output(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] == '\n' || nbj_line_len == sizeof(nbj_line)) {
            nbj_jvm_line(nbj_line, nbj_line_len);
            nbj_line_len = 0;
            if (s[i] == '\n') {
                continue;
            }
        }
        nbj_line[nbj_line_len++] = s[i];
    }
}


static void
nbj_jvm_line(const char *s, size_t len)
{
    size_t  room;

    (void) pthread_mutex_lock(&nbj_out_lock);
    if (nbj_capturing) {
        room = sizeof(nbj_captured) - 1 - nbj_captured_len;
        if (nbj_captured_len > 0 && room > 0) {
            nbj_captured[nbj_captured_len++] = ' ';
            room--;
        }
        len = len < room ? len : room;
        memcpy(nbj_captured + nbj_captured_len, s, len);
        nbj_captured_len += len;
        (void) pthread_mutex_unlock(&nbj_out_lock);
        return;
    }
    (void) pthread_mutex_unlock(&nbj_out_lock);

    if (len > 0) {
        nbj_log_any(NBFFI_LOG_WARN, s, len);
    }
}
