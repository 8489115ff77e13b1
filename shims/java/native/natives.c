/*
 * The native methods of io.nbffi.Native (see Native.java), bound with
 * RegisterNatives.  They run on poller threads and handler threads, in
 * native state: a blocking pop does not hold up the garbage collector.
 */

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbj.h"

#define NBJ_NATIVE       "io/nbffi/Native"
#define NBJ_FAILED       1            /* ErrorReply.FAILED */
#define NBJ_LOG_MAX      8192         /* longest log line passed on */
#define NBJ_CHUNK_STACK  16384        /* chunks up to this size are copied
                                         through the stack */

#define NBJ_TASK(t)      ((nbffi_task_t *) (uintptr_t) (t))

typedef struct {
    size_t      len;
    char       *name;
} nbj_name_t;

/* Method names of a runtime, in registration order; read-only once made. */
typedef struct {
    jsize       n;
    nbj_name_t  names[];
} nbj_table_t;


static jint JNICALL nbj_pop(JNIEnv *env, jclass cls, jlong queue,
    jlong table, jlongArray tasks, jintArray info, jint max, jlong timeout);
static jstring JNICALL nbj_method(JNIEnv *env, jclass cls, jlong task);
static jobject JNICALL nbj_payload(JNIEnv *env, jclass cls, jlong task);
static jbyteArray JNICALL nbj_bytes(JNIEnv *env, jclass cls, jlong task);
static jlong JNICALL nbj_deadline(JNIEnv *env, jclass cls, jlong task);
static jboolean JNICALL nbj_cancelled(JNIEnv *env, jclass cls, jlong task);
static void JNICALL nbj_respond(JNIEnv *env, jclass cls, jlong task,
    jint status, jbyteArray data, jint len);
static void JNICALL nbj_log(JNIEnv *env, jclass cls, jlong queue,
    jint level, jbyteArray msg);
static jbyteArray JNICALL nbj_meta(JNIEnv *env, jclass cls, jlong task);
static jint JNICALL nbj_window(JNIEnv *env, jclass cls, jlong task);
static jint JNICALL nbj_send(JNIEnv *env, jclass cls, jlong task,
    jbyteArray data, jint off, jint len, jlong timeout);
static void JNICALL nbj_task_log(JNIEnv *env, jclass cls, jlong task,
    jint level, jbyteArray msg);
static jint JNICALL nbj_emit(JNIEnv *env, jclass cls, jlong queue,
    jbyteArray name, jbyteArray data, jint off, jint len);
static jlong JNICALL nbj_now(JNIEnv *env, jclass cls);
static jlong JNICALL nbj_table(JNIEnv *env, jclass cls, jobjectArray names);
static void JNICALL nbj_free_table(JNIEnv *env, jclass cls, jlong table);
static jint nbj_lookup(const nbj_table_t *t, const char *m, size_t len);
static void nbj_free_reply(void *data, void *ud);
static void nbj_throw(JNIEnv *env, const char *cls, const char *msg);


static const JNINativeMethod  nbj_methods[] = {
    { "pop", "(JJ[J[IIJ)I", (void *) nbj_pop },
    { "method", "(J)Ljava/lang/String;", (void *) nbj_method },
    { "payload", "(J)Ljava/nio/ByteBuffer;", (void *) nbj_payload },
    { "bytes", "(J)[B", (void *) nbj_bytes },
    { "deadline", "(J)J", (void *) nbj_deadline },
    { "cancelled", "(J)Z", (void *) nbj_cancelled },
    { "respond", "(JI[BI)V", (void *) nbj_respond },
    { "log", "(JI[B)V", (void *) nbj_log },
    { "meta", "(J)[B", (void *) nbj_meta },
    { "window", "(J)I", (void *) nbj_window },
    { "send", "(J[BIIJ)I", (void *) nbj_send },
    { "taskLog", "(JI[B)V", (void *) nbj_task_log },
    { "emit", "(J[B[BII)I", (void *) nbj_emit },
    { "now", "()J", (void *) nbj_now },
    { "table", "([[B)J", (void *) nbj_table },
    { "freeTable", "(J)V", (void *) nbj_free_table },
};


int
nbj_natives_register(JNIEnv *env, char *err, size_t err_len)
{
    char    text[NBJ_ERR_LEN];
    jint    rc;
    jclass  cls;

    cls = (*env)->FindClass(env, NBJ_NATIVE);
    if (cls == NULL) {
        nbj_exception_text(env, text, sizeof(text));
        (void) snprintf(err, err_len, "cannot load class " NBJ_NATIVE ": %s",
                        text);
        return -1;
    }
    rc = (*env)->RegisterNatives(env, cls, nbj_methods,
                                 sizeof(nbj_methods) / sizeof(nbj_methods[0]));
    (*env)->DeleteLocalRef(env, cls);
    if (rc != JNI_OK) {
        nbj_exception_text(env, text, sizeof(text));
        (void) snprintf(err, err_len, "RegisterNatives(" NBJ_NATIVE ")"
                        " failed: %s", text);
        return -1;
    }
    return 0;
}


static jint JNICALL
nbj_pop(JNIEnv *env, jclass cls, jlong queue, jlong table, jlongArray tasks,
    jintArray info, jint max, jlong timeout)
{
    int              i, n, k;
    size_t           mlen, plen;
    const char      *m;
    nbffi_task_t    *popped[NBJ_MAX_BATCH];
    jlong            ids[NBJ_MAX_BATCH];
    jint             inf[2 * NBJ_MAX_BATCH];
    const nbj_table_t  *t;

    static const char  too_big[] = "payload too large for Java (over 2 GiB)";

    (void) cls;

    if (max < 1 || max > NBJ_MAX_BATCH
        || (*env)->GetArrayLength(env, tasks) < max
        || (*env)->GetArrayLength(env, info) < 2 * max)
    {
        nbj_throw(env, "java/lang/IllegalArgumentException", "bad pop batch");
        return 0;
    }

    n = nbffi_queue_pop((nbffi_queue_t *) (uintptr_t) queue, popped, max,
                        timeout);
    if (n == NBFFI_ECLOSED) {
        return -1;
    }
    if (n < 0) {
        nbj_throw(env, "java/lang/IllegalStateException", nbffi_strerror(n));
        return 0;
    }

    t = (const nbj_table_t *) (uintptr_t) table;
    for (i = 0, k = 0; i < n; i++) {
        (void) nbffi_task_payload(popped[i], &plen);
        if (plen > INT_MAX) {
            (void) nbffi_task_respond(popped[i], NBJ_FAILED, too_big,
                                      sizeof(too_big) - 1);
            continue;
        }
        m = nbffi_task_method(popped[i], &mlen);
        ids[k] = (jlong) (uintptr_t) popped[i];
        inf[2 * k] = nbj_lookup(t, m, mlen);
        inf[2 * k + 1] = (jint) plen;
        k++;
    }

    (*env)->SetLongArrayRegion(env, tasks, 0, k, ids);
    if (!(*env)->ExceptionCheck(env)) {
        (*env)->SetIntArrayRegion(env, info, 0, 2 * k, inf);
    }
    if ((*env)->ExceptionCheck(env)) {
        /* Java never saw these tasks: answer them here. */
        for (i = 0; i < k; i++) {
            (void) nbffi_task_respond(NBJ_TASK(ids[i]), NBJ_FAILED,
                                      "internal error", 14);
        }
        return 0;
    }
    return k;
}


static jstring JNICALL
nbj_method(JNIEnv *env, jclass cls, jlong task)
{
    (void) cls;
    return nbj_string(env, nbffi_task_method(NBJ_TASK(task), NULL));
}


/* Zero copy: a direct buffer over the task's payload (Java makes it
   read-only).  Valid until the task is answered. */
static jobject JNICALL
nbj_payload(JNIEnv *env, jclass cls, jlong task)
{
    size_t       len;
    const void  *p;

    (void) cls;
    p = nbffi_task_payload(NBJ_TASK(task), &len);
    return (*env)->NewDirectByteBuffer(env, (void *) p, (jlong) len);
}


/* A new Java byte[] holding a copy of len bytes at p (NULL: an exception
 * is pending). */
static jbyteArray
nbj_byte_array(JNIEnv *env, const void *p, size_t len)
{
    jbyteArray  a;

    a = (*env)->NewByteArray(env, (jsize) len);
    if (a != NULL) {
        (*env)->SetByteArrayRegion(env, a, 0, (jsize) len,
                                   (const jbyte *) p);
    }
    return a;
}


static jbyteArray JNICALL
nbj_bytes(JNIEnv *env, jclass cls, jlong task)
{
    size_t       len;
    const void  *p;

    (void) cls;
    p = nbffi_task_payload(NBJ_TASK(task), &len);
    return nbj_byte_array(env, p, len);
}


static jlong JNICALL
nbj_deadline(JNIEnv *env, jclass cls, jlong task)
{
    (void) env;
    (void) cls;
    return nbffi_task_deadline(NBJ_TASK(task));
}


static jboolean JNICALL
nbj_cancelled(JNIEnv *env, jclass cls, jlong task)
{
    (void) env;
    (void) cls;
    return nbffi_task_cancelled(NBJ_TASK(task)) ? JNI_TRUE : JNI_FALSE;
}


/*
 * The one copy of a reply: from the Java array straight into memory that
 * nbffi takes over (freed on the host thread once the reply was read).
 */
static void JNICALL
nbj_respond(JNIEnv *env, jclass cls, jlong task, jint status,
    jbyteArray data, jint len)
{
    void  *buf;

    static const char  oom[] = "out of memory for the reply";
    static const char  bad[] = "bad reply array";

    (void) cls;

    if (data == NULL || len <= 0) {
        (void) nbffi_task_respond(NBJ_TASK(task), status, NULL, 0);
        return;
    }
    buf = malloc((size_t) len);
    if (buf == NULL) {
        (void) nbffi_task_respond(NBJ_TASK(task), NBJ_FAILED, oom,
                                  sizeof(oom) - 1);
        return;
    }
    (*env)->GetByteArrayRegion(env, data, 0, len, buf);
    if ((*env)->ExceptionCheck(env)) {
        free(buf);
        (void) nbffi_task_respond(NBJ_TASK(task), NBJ_FAILED, bad,
                                  sizeof(bad) - 1);
        return;
    }
    if (nbffi_task_respond_owned(NBJ_TASK(task), status, buf, (size_t) len,
                                 nbj_free_reply, NULL)
        != 0)
    {
        /* NBFFI_EALREADY: the task was completed as closed when its
           runtime was orphaned (nbffi logs that); buf is still ours. */
        free(buf);
    }
}


/* Copies a log message from Java into buf (NBJ_LOG_MAX bytes, the rest cut
 * off); its length, or -1 with an exception pending. */
static jsize
nbj_log_text(JNIEnv *env, jbyteArray msg, char *buf)
{
    jsize  len;

    len = (*env)->GetArrayLength(env, msg);
    if (len > NBJ_LOG_MAX) {
        len = NBJ_LOG_MAX;
    }
    (*env)->GetByteArrayRegion(env, msg, 0, len, (jbyte *) buf);
    return (*env)->ExceptionCheck(env) ? -1 : len;
}


static void JNICALL
nbj_log(JNIEnv *env, jclass cls, jlong queue, jint level, jbyteArray msg)
{
    char   buf[NBJ_LOG_MAX];
    jsize  len;

    (void) cls;

    len = nbj_log_text(env, msg, buf);
    if (len < 0) {
        return;
    }
    nbffi_log((nbffi_queue_t *) (uintptr_t) queue, level, buf, (size_t) len);
}


static jbyteArray JNICALL
nbj_meta(JNIEnv *env, jclass cls, jlong task)
{
    size_t       len;
    const void  *p;

    (void) cls;
    p = nbffi_task_meta_raw(NBJ_TASK(task), &len);
    if (p == NULL || len == 0) {
        return NULL;
    }
    return nbj_byte_array(env, p, len);
}


static jint JNICALL
nbj_window(JNIEnv *env, jclass cls, jlong task)
{
    (void) env;
    (void) cls;
    return (jint) nbffi_task_stream_window(NBJ_TASK(task));
}


/* len bytes of data from off, copied into stack when they fit (stack_len),
 * else into memory the caller frees (buf != stack); NULL with *rc set:
 * NBFFI_ENOMEM, or NBFFI_EINVAL with a Java exception pending. */
static char *
nbj_region(JNIEnv *env, jbyteArray data, jint off, jint len, char *stack,
    size_t stack_len, int *rc)
{
    char  *buf;

    buf = stack;
    if ((size_t) len > stack_len) {
        buf = malloc((size_t) len);
        if (buf == NULL) {
            *rc = NBFFI_ENOMEM;
            return NULL;
        }
    }
    (*env)->GetByteArrayRegion(env, data, off, len, (jbyte *) buf);
    if ((*env)->ExceptionCheck(env)) {
        if (buf != stack) {
            free(buf);
        }
        *rc = NBFFI_EINVAL;
        return NULL;
    }
    return buf;
}


/*
 * One chunk: copied out of the Java array (through the stack when small),
 * then nbffi_task_send copies it into the stream, waiting in native state
 * while the window is full: the garbage collector runs meanwhile.
 */
static jint JNICALL
nbj_send(JNIEnv *env, jclass cls, jlong task, jbyteArray data, jint off,
    jint len, jlong timeout)
{
    int    rc;
    char   stack[NBJ_CHUNK_STACK];
    char  *buf;

    (void) cls;

    if (off < 0 || len < 0
        || (*env)->GetArrayLength(env, data) - off < len)
    {
        nbj_throw(env, "java/lang/IndexOutOfBoundsException", "chunk");
        return NBFFI_EINVAL;
    }
    buf = nbj_region(env, data, off, len, stack, sizeof(stack), &rc);
    if (buf != NULL) {
        rc = nbffi_task_send(NBJ_TASK(task), buf, (size_t) len,
                             (int64_t) timeout);
    }
    if (buf != stack) {
        free(buf);
    }
    return rc;
}


static void JNICALL
nbj_task_log(JNIEnv *env, jclass cls, jlong task, jint level,
    jbyteArray msg)
{
    char   buf[NBJ_LOG_MAX];
    jsize  len;

    (void) cls;

    len = nbj_log_text(env, msg, buf);
    if (len < 0) {
        return;
    }
    nbffi_task_log(NBJ_TASK(task), level, buf, (size_t) len);
}


/* An event; the data goes through the stack when small. */
static jint JNICALL
nbj_emit(JNIEnv *env, jclass cls, jlong queue, jbyteArray name,
    jbyteArray data, jint off, jint len)
{
    int    rc;
    char   n[NBFFI_MAX_EVENT_NAME];
    char   stack[NBJ_CHUNK_STACK];
    char  *buf;
    jsize  nlen;

    (void) cls;

    nlen = (*env)->GetArrayLength(env, name);
    if (nlen < 1 || nlen > NBFFI_MAX_EVENT_NAME || off < 0 || len < 0
        || (*env)->GetArrayLength(env, data) - off < len)
    {
        return NBFFI_EINVAL;
    }
    (*env)->GetByteArrayRegion(env, name, 0, nlen, (jbyte *) n);
    buf = nbj_region(env, data, off, len, stack, sizeof(stack), &rc);
    if (buf != NULL) {
        rc = nbffi_emit((nbffi_queue_t *) (uintptr_t) queue, n,
                        (size_t) nlen, buf, (size_t) len);
    }
    if (buf != stack) {
        free(buf);
    }
    return rc;
}


static jlong JNICALL
nbj_now(JNIEnv *env, jclass cls)
{
    (void) env;
    (void) cls;
    return nbffi_now_ns();
}


static jlong JNICALL
nbj_table(JNIEnv *env, jclass cls, jobjectArray names)
{
    jsize         i, n, len;
    jbyteArray    name;
    nbj_table_t  *t;

    (void) cls;

    n = (*env)->GetArrayLength(env, names);
    t = calloc(1, sizeof(nbj_table_t) + (size_t) n * sizeof(nbj_name_t));
    if (t == NULL) {
        goto nomem;
    }
    t->n = n;
    for (i = 0; i < n; i++) {
        name = (*env)->GetObjectArrayElement(env, names, i);
        if (name == NULL) {
            goto failed;
        }
        len = (*env)->GetArrayLength(env, name);
        t->names[i].len = (size_t) len;
        t->names[i].name = malloc((size_t) len + 1);
        if (t->names[i].name == NULL) {
            (*env)->DeleteLocalRef(env, name);
            goto nomem;
        }
        (*env)->GetByteArrayRegion(env, name, 0, len,
                                   (jbyte *) t->names[i].name);
        (*env)->DeleteLocalRef(env, name);
        if ((*env)->ExceptionCheck(env)) {
            goto failed;
        }
        t->names[i].name[len] = '\0';
    }
    return (jlong) (uintptr_t) t;

nomem:

    nbj_throw(env, "java/lang/OutOfMemoryError", "method table");

failed:

    if (!(*env)->ExceptionCheck(env)) {
        nbj_throw(env, "java/lang/NullPointerException", "method name");
    }

    nbj_free_table(env, cls, (jlong) (uintptr_t) t);
    return 0;
}


static void JNICALL
nbj_free_table(JNIEnv *env, jclass cls, jlong table)
{
    jsize         i;
    nbj_table_t  *t;

    (void) env;
    (void) cls;

    t = (nbj_table_t *) (uintptr_t) table;
    if (t == NULL) {
        return;
    }
    for (i = 0; i < t->n; i++) {
        free(t->names[i].name);
    }
    free(t);
}


/* Index of the method in t, or -1.  Handlers have few methods: a scan. */
static jint
nbj_lookup(const nbj_table_t *t, const char *m, size_t len)
{
    jsize  i;

    for (i = 0; i < t->n; i++) {
        if (t->names[i].len == len && memcmp(t->names[i].name, m, len) == 0) {
            return i;
        }
    }
    return -1;
}


static void
nbj_free_reply(void *data, void *ud)
{
    (void) ud;
    free(data);
}


static void
nbj_throw(JNIEnv *env, const char *cls, const char *msg)
{
    jclass  c;

    c = (*env)->FindClass(env, cls);
    if (c != NULL) {
        (void) (*env)->ThrowNew(env, c, msg);
        (*env)->DeleteLocalRef(env, c);
    }
}
