/*
 * Classes and method IDs cached once per process (global refs: the JVM
 * outlives every runtime), and small JNI helpers.
 */

#include <stdio.h>
#include <string.h>

#include "nbj.h"

#define NBJ_BRIDGE  "io/nbffi/Bridge"

/* On failure the pending exception's text goes to err: see nbj_jni_load. */
#define NBJ_LOAD_CLASS(env, var, name)                                        \
    do {                                                                      \
        jclass  local_ = (*env)->FindClass(env, name);                        \
        if (local_ == NULL) {                                                 \
            what = "class " name;                                             \
            goto failed;                                                      \
        }                                                                     \
        var = (*env)->NewGlobalRef(env, local_);                              \
        (*env)->DeleteLocalRef(env, local_);                                  \
        if (var == NULL) {                                                    \
            what = "global ref to " name;                                     \
            goto failed;                                                      \
        }                                                                     \
    } while (0)

#define NBJ_LOAD_METHOD(env, var, cls, get, name, sig)                        \
    do {                                                                      \
        var = (*env)->get(env, cls, name, sig);                               \
        if (var == NULL) {                                                    \
            what = "method " name sig;                                        \
            goto failed;                                                      \
        }                                                                     \
    } while (0)


static void nbj_jni_unload(JNIEnv *env);


nbj_jni_t  nbj_jni;


/* Once per process, on a thread attached to the JVM.  */
int
nbj_jni_load(JNIEnv *env, char *err, size_t err_len)
{
    char        text[NBJ_ERR_LEN];
    const char *what;

    /* First, so that failures below can be described. */
    NBJ_LOAD_CLASS(env, nbj_jni.object, "java/lang/Object");
    NBJ_LOAD_METHOD(env, nbj_jni.to_string, nbj_jni.object, GetMethodID,
                    "toString", "()Ljava/lang/String;");

    NBJ_LOAD_CLASS(env, nbj_jni.string, "java/lang/String");
    NBJ_LOAD_METHOD(env, nbj_jni.string_init, nbj_jni.string, GetMethodID,
                    "<init>", "([BLjava/lang/String;)V");

    NBJ_LOAD_CLASS(env, nbj_jni.bridge, NBJ_BRIDGE);
    NBJ_LOAD_METHOD(env, nbj_jni.start, nbj_jni.bridge, GetStaticMethodID,
                    "start", "(JLjava/lang/String;[Ljava/lang/String;"
                    "[Ljava/lang/String;ZIIJLjava/lang/String;)"
                    "Ljava/lang/Object;");
    NBJ_LOAD_METHOD(env, nbj_jni.poll, nbj_jni.bridge, GetStaticMethodID,
                    "poll", "(Ljava/lang/Object;I)V");
    NBJ_LOAD_METHOD(env, nbj_jni.close, nbj_jni.bridge, GetStaticMethodID,
                    "close", "(Ljava/lang/Object;JZ)[Z");

    if (nbj_natives_register(env, err, err_len) != 0) {
        nbj_jni_unload(env);
        return -1;
    }
    return 0;

failed:

    nbj_exception_text(env, text, sizeof(text));
    (void) snprintf(err, err_len, "cannot load %s: %s", what, text);
    nbj_jni_unload(env);
    return -1;
}


/*
 * Takes the pending exception, clears it and writes its toString() to buf
 * (for a StartException: just the message).
 */
void
nbj_exception_text(JNIEnv *env, char *buf, size_t len)
{
    jthrowable   ex;
    jstring      s;
    const char  *chars;

    ex = (*env)->ExceptionOccurred(env);
    if (ex == NULL) {
        (void) snprintf(buf, len, "no exception pending");
        return;
    }
    (*env)->ExceptionClear(env);

    s = NULL;
    if (nbj_jni.to_string != NULL) {
        s = (*env)->CallObjectMethod(env, ex, nbj_jni.to_string);
        if ((*env)->ExceptionCheck(env)) {
            (*env)->ExceptionClear(env);
            s = NULL;
        }
    }
    chars = s == NULL ? NULL : (*env)->GetStringUTFChars(env, s, NULL);
    if (chars == NULL) {
        (*env)->ExceptionClear(env);
        (void) snprintf(buf, len, "a Java exception (no text)");
    } else {
        (void) snprintf(buf, len, "%s", chars);
        (*env)->ReleaseStringUTFChars(env, s, chars);
    }
    if (s != NULL) {
        (*env)->DeleteLocalRef(env, s);
    }
    (*env)->DeleteLocalRef(env, ex);
}


/*
 * A String from UTF-8.  NewStringUTF takes modified UTF-8, which differs
 * for characters outside the BMP, so only ASCII goes that way.  NULL with
 * an exception pending on failure.
 */
jstring
nbj_string(JNIEnv *env, const char *s)
{
    const unsigned char  *p;
    size_t                len;
    jstring               str, charset;
    jbyteArray            bytes;

    for (p = (const unsigned char *) s; *p != '\0' && *p < 0x80; p++) {
        /* void */
    }
    if (*p == '\0') {
        return (*env)->NewStringUTF(env, s);
    }

    len = strlen(s);
    bytes = (*env)->NewByteArray(env, (jsize) len);
    if (bytes == NULL) {
        return NULL;
    }
    (*env)->SetByteArrayRegion(env, bytes, 0, (jsize) len,
                               (const jbyte *) s);
    charset = (*env)->NewStringUTF(env, "UTF-8");
    if (charset == NULL) {
        (*env)->DeleteLocalRef(env, bytes);
        return NULL;
    }
    str = (*env)->NewObject(env, nbj_jni.string, nbj_jni.string_init, bytes,
                            charset);
    (*env)->DeleteLocalRef(env, charset);
    (*env)->DeleteLocalRef(env, bytes);
    return str;
}


/* A String[] of n UTF-8 strings; NULL with an exception pending. */
jobjectArray
nbj_strings(JNIEnv *env, char **s, size_t n)
{
    size_t        i;
    jstring       str;
    jobjectArray  a;

    a = (*env)->NewObjectArray(env, (jsize) n, nbj_jni.string, NULL);
    if (a == NULL) {
        return NULL;
    }
    for (i = 0; i < n; i++) {
        str = nbj_string(env, s[i]);
        if (str == NULL) {
            (*env)->DeleteLocalRef(env, a);
            return NULL;
        }
        (*env)->SetObjectArrayElement(env, a, (jsize) i, str);
        (*env)->DeleteLocalRef(env, str);
        if ((*env)->ExceptionCheck(env)) {
            (*env)->DeleteLocalRef(env, a);
            return NULL;
        }
    }
    return a;
}


static void
nbj_jni_unload(JNIEnv *env)
{
    if (nbj_jni.object != NULL) {
        (*env)->DeleteGlobalRef(env, nbj_jni.object);
    }
    if (nbj_jni.string != NULL) {
        (*env)->DeleteGlobalRef(env, nbj_jni.string);
    }
    if (nbj_jni.bridge != NULL) {
        (*env)->DeleteGlobalRef(env, nbj_jni.bridge);
    }
    memset(&nbj_jni, 0, sizeof(nbj_jni));
}
