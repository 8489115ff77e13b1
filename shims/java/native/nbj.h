/*
 * libnbffi_java: internal declarations shared by the loader's files.
 *
 *   cfg.c      parses the runtime's cfg text
 *   jvm.c      finds libjvm and the nbffi jar, creates or reuses the
 *              process's one JVM, attaches threads, routes the JVM's own
 *              output
 *   jni.c      the classes and methods cached at load, JNI helpers
 *   natives.c  the native methods of io.nbffi.Native
 *   runtime.c  the nbffi entry points: init, fini, poller threads
 */

#ifndef NBJ_H
#define NBJ_H

#include <stddef.h>
#include <jni.h>
#include <nbffi.h>

#define NBJ_JNI_VERSION    JNI_VERSION_1_8
#define NBJ_MAX_THREADS    64
#define NBJ_MAX_BATCH      256
#define NBJ_ERR_LEN        1024

#define NBJ_LOG_PREFIX     "nbffi_java: "

/* The jar of io.nbffi, installed next to this library. */
#define NBJ_JAR            "nbffi.jar"

/* A parsed cfg; strings are NUL-terminated and owned by the struct. */
typedef struct {
    char        *class_name;         /* class=            required       */
    char       **classpath;          /* classpath= (':'-split, repeats)  */
    size_t       n_classpath;
    char       **jvm_options;        /* jvm_option= (repeats)            */
    size_t       n_jvm_options;
    char       **args;               /* arg.NAME=VALUE as "NAME=VALUE"   */
    size_t       n_args;
    char        *java_home;          /* java_home=                       */
    char        *log_level;          /* log_level=                       */
    int          virtual_threads;    /* executor=virtual                 */
    int          threads;            /* threads=                         */
    int          batch;              /* batch=                           */
    long         close_timeout_ms;   /* close_timeout=                   */
} nbj_cfg_t;

/* The classes and methods cached when the first runtime loads. */
typedef struct {
    jclass       bridge;             /* io.nbffi.Bridge                  */
    jmethodID    start;
    jmethodID    poll;
    jmethodID    close;
    jclass       string;             /* java.lang.String                 */
    jmethodID    string_init;        /* String(byte[], String)           */
    jclass       object;
    jmethodID    to_string;          /* Object.toString()                */
} nbj_jni_t;

extern nbj_jni_t  nbj_jni;

/* cfg.c */
int nbj_cfg_parse(nbj_cfg_t *cfg, const char *text, size_t len, char *err,
    size_t err_len);
void nbj_cfg_free(nbj_cfg_t *cfg);

/* jvm.c */
int nbj_jvm_lib_path(const nbj_cfg_t *cfg, char *path, size_t len,
    char *err, size_t err_len);
int nbj_jvm_enter(const nbj_cfg_t *cfg, const char *thread_name,
    JNIEnv **env, int *created, char *err, size_t err_len);
JNIEnv *nbj_attach(const char *thread_name);
void nbj_detach(void);

/* jni.c */
int nbj_jni_load(JNIEnv *env, char *err, size_t err_len);
void nbj_exception_text(JNIEnv *env, char *buf, size_t len);
jstring nbj_string(JNIEnv *env, const char *s);
jobjectArray nbj_strings(JNIEnv *env, char **s, size_t n);

/* natives.c */
int nbj_natives_register(JNIEnv *env, char *err, size_t err_len);

/* runtime.c */
void nbj_log_any(int level, const char *msg, size_t len);

#endif /* NBJ_H */
