/*
 * The Java runtime driven by the nbffi core directly (no nginx): calls,
 * errors, logging, close within a deadline, JVM reuse and a JVM that
 * survives failed starts, with the task accounting of the host checked
 * after every test.  Real core, real JVM, -Xcheck:jni.
 *
 * Environment (set by meson.build):
 *   NBJ_LIB        path of libnbffi_java.so (nbffi.jar lies next to it)
 *   NBJ_CLASSES    the test classes (Maven's target/test-classes)
 *   NBJ_MAVEN_JAR  Maven's nbffi jar, which a classpath may also list
 *   NBJ_JAVA_HOME  JDK for the "virtual" group (needs virtual threads)
 * Usage: test_java_host [platform|first|virtual]
 *   platform  everything on the default JDK, in one JVM
 *   first     starts that fail before and while the JVM is created, then
 *             one that works: a fresh process
 *   virtual   executor=virtual on NBJ_JAVA_HOME
 *
 * Not cmocka: it installs its own SIGSEGV/SIGBUS/SIGILL/SIGFPE handlers
 * around each test, replacing the JVM's, which HotSpot needs (implicit
 * null checks, safepoint polls); -Xcheck:jni reports it.  A failed check
 * longjmps back to the runner, from the main thread only.
 */

#include <dirent.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbffi.h>

#define WAIT_MS  30000
#define MAX_LOG  256
#define MS       1000000LL

#define fail(...)  fail_at(__LINE__, __VA_ARGS__)
#define check(c)                                                             \
    do { if (!(c)) fail_at(__LINE__, "check failed: %s", #c); } while (0)
#define check_int(a, b)                                                      \
    do {                                                                     \
        long long a_ = (long long) (a), b_ = (long long) (b);                \
        if (a_ != b_) fail_at(__LINE__, "%s is %lld, want %lld", #a, a_, b_);\
    } while (0)
#define check_has(hay, needle)                                               \
    do {                                                                     \
        if (strstr(hay, needle) == NULL)                                     \
            fail_at(__LINE__, "'%s' not in '%s'", needle, hay);              \
    } while (0)

typedef struct {
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    int               nlog;
    int               log_level[MAX_LOG];
    char             *log_text[MAX_LOG];
} fx_t;

typedef struct {
    const char       *name;
    void            (*fn)(fx_t *fx);
    const char       *cfg;           /* extra cfg lines of fx->rt; NULL:
                                        the test makes its own           */
} test_t;


static void fail_at(int line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void reap_n(fx_t *fx, int n);


static const char  *lib;
static const char  *classes;
static const char  *maven_jar;
static const char  *java_home;      /* NULL: the default JDK */
static jmp_buf      test_jmp;


static void
fail_at(int line, const char *fmt, ...)
{
    va_list  ap;

    fprintf(stderr, "  line %d: ", line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    longjmp(test_jmp, 1);
}


/* The cfg of a TestHandler runtime plus extra lines: the classpath names
   the test classes only, the loader brings the nbffi jar. */
static char *
cfg_of(const char *extra)
{
    char  *s;

    if (asprintf(&s, "class=io.nbffi.it.TestHandler\nclasspath=%s\n"
                 "jvm_option=-Xcheck:jni\n%s%s%s%s", classes,
                 java_home ? "java_home=" : "", java_home ? java_home : "",
                 java_home ? "\n" : "", extra) < 0)
    {
        fail("asprintf");
    }
    return s;
}


/*
 * Starts a runtime of lib_path and waits for the start to end: 0 with
 * *out, or the status of the failed start with its message in err.  No
 * other task may be outstanding (reap_n counts).
 */
static int
load_lib(fx_t *fx, const char *lib_path, const char *cfg,
    nbffi_runtime_t **out, char *err, size_t err_len)
{
    int            rc, status;
    size_t         len;
    const char    *msg;
    nbffi_task_t  *t;

    rc = nbffi_runtime_load(fx->host, lib_path, NULL, cfg, strlen(cfg), 0,
                            0, 0, 0, out, &t);
    if (rc != 0) {
        fail("nbffi_runtime_load: %s", nbffi_strerror(rc));
    }
    reap_n(fx, 1);
    status = nbffi_task_status(t);
    msg = nbffi_task_reply(t, &len);
    (void) snprintf(err, err_len, "%.*s", (int) len, msg);
    nbffi_task_release(t);
    if (status != 0) {
        check_int(nbffi_runtime_state(*out), NBFFI_RT_FAILED);
        nbffi_runtime_free(*out);
        *out = NULL;
    }
    return status;
}


static int
load(fx_t *fx, const char *cfg, nbffi_runtime_t **out, char *err,
    size_t err_len)
{
    return load_lib(fx, lib, cfg, out, err, err_len);
}


/* Closes rt with a deadline ms from now (0: none); the close task is
   outstanding until reaped. */
static nbffi_task_t *
close_in(nbffi_runtime_t *rt, int64_t ms)
{
    int            rc;
    nbffi_task_t  *t;

    rc = nbffi_runtime_close(rt, ms ? nbffi_now_ns() + ms * MS : 0, &t);
    if (rc != 0) {
        fail("nbffi_runtime_close: %s", nbffi_strerror(rc));
    }
    return t;
}


/* Closes and frees rt, nothing else outstanding: its close status. */
static int
close_and_free(fx_t *fx, nbffi_runtime_t *rt, int64_t ms)
{
    int            status;
    nbffi_task_t  *t;

    t = close_in(rt, ms);
    reap_n(fx, 1);
    status = nbffi_task_status(t);
    nbffi_task_release(t);
    nbffi_runtime_free(rt);
    return status;
}


static void
collect_logs(fx_t *fx)
{
    char  buf[70000];
    int   level;

    while (nbffi_host_log_next(fx->host, &level, buf, sizeof(buf), NULL) > 0)
    {
        /* -Xcheck:jni reports land here through the vfprintf hook. */
        if (strstr(buf, "in native method") != NULL
            || strstr(buf, "handler modified") != NULL)
        {
            fail("JVM check: %s", buf);
        }
        if (fx->nlog < MAX_LOG) {
            fx->log_level[fx->nlog] = level;
            fx->log_text[fx->nlog++] = strdup(buf);
        }
    }
}


static int
logged(fx_t *fx, int level, const char *text)
{
    int  i;

    collect_logs(fx);
    for (i = 0; i < fx->nlog; i++) {
        if ((level < 0 || fx->log_level[i] == level)
            && strstr(fx->log_text[i], text))
        {
            return 1;
        }
    }
    return 0;
}


/* Waits until a log line holds text. */
static void
wait_logged(fx_t *fx, const char *text)
{
    int64_t  end;

    end = nbffi_now_ns() + WAIT_MS * MS;
    while (!logged(fx, -1, text)) {
        if (nbffi_now_ns() > end) {
            fail("no log line '%s' within %d ms", text, WAIT_MS);
        }
        (void) nbffi_host_wait(fx->host, nbffi_now_ns() + 100 * MS);
    }
}


/* Waits until n more completions were reaped (tests wait for every call
   they have outstanding, so a count is enough). */
static void
reap_n(fx_t *fx, int n)
{
    int            k;
    struct pollfd  pfd;
    nbffi_task_t  *done[64];

    while (n > 0) {
        nbffi_host_drain(fx->host);
        k = nbffi_host_reap(fx->host, done, 64);
        if (k == 0) {
            pfd.fd = nbffi_host_fd(fx->host);
            pfd.events = POLLIN;
            if (poll(&pfd, 1, WAIT_MS) != 1) {
                fail("no completion within %d ms", WAIT_MS);
            }
        }
        n -= k;
    }
}


static nbffi_task_t *
post(fx_t *fx, nbffi_runtime_t *rt, const char *method, const void *p,
    size_t len)
{
    nbffi_task_t  *t;
    int            rc;

    rc = nbffi_call(fx->host, rt, method, strlen(method), p, len, 0, 0, &t);
    if (rc != 0) {
        fail("call %s: %s", method, nbffi_strerror(rc));
    }
    return t;
}


/* Status and reply (a NUL-terminated copy in buf) of one call on rt. */
static int
outcome_on(fx_t *fx, nbffi_runtime_t *rt, const char *method,
    const char *payload, char *buf, size_t buf_len)
{
    nbffi_task_t  *t;
    const char    *r;
    size_t         len;
    int            status;

    t = post(fx, rt, method, payload, strlen(payload));
    reap_n(fx, 1);
    r = nbffi_task_reply(t, &len);
    (void) snprintf(buf, buf_len, "%.*s", (int) len, r);
    status = nbffi_task_status(t);
    nbffi_task_release(t);
    return status;
}


static int
outcome(fx_t *fx, const char *method, const char *payload, char *buf,
    size_t buf_len)
{
    return outcome_on(fx, fx->rt, method, payload, buf, buf_len);
}


static void
expect(fx_t *fx, const char *method, const char *payload, int status,
    const char *reply)
{
    char  buf[70000];
    int   got;

    got = outcome(fx, method, payload, buf, sizeof(buf));
    if (got != status || strcmp(buf, reply) != 0) {
        fail("%s(%s): got %d '%s', want %d '%s'", method, payload, got, buf,
             status, reply);
    }
}


static void
expect_load_error(fx_t *fx, const char *cfg, const char *want)
{
    nbffi_runtime_t  *rt;
    char              err[4096];
    int               rc;

    rc = load(fx, cfg, &rt, err, sizeof(err));
    if (rc != NBFFI_EINIT || strstr(err, want) == NULL) {
        fail("load: got %d '%s', want EINIT '%s'", rc, err, want);
    }
}


static void
test_sync_and_async_replies(fx_t *fx)
{
    expect(fx, "echo", "hello", 0, "hello");
    expect(fx, "echo_view", "zero copy", 0, "zero copy");
    expect(fx, "upper", "shout", 0, "SHOUT");
    expect(fx, "async_echo", "later", 0, "later");
    expect(fx, "async_view", "view later", 0, "view later");
    expect(fx, "nothing", "x", 0, "");
    expect(fx, "echo", "", 0, "");
    expect(fx, "len", "", 0, "0");
    expect(fx, "config", "missing", 0, "<unset>");
    expect(fx, "remaining", "", 0, "none");

    /* A request kept past its answer no longer reaches the task. */
    expect(fx, "keep", "abc", 0, "");
    expect(fx, "stale", "", 0, "call 'keep' already answered: its payload is"
           " gone;call 'keep' already answered: its payload is gone;call"
           " 'keep' already answered: its payload is gone;");
}


static void
test_large_payloads(fx_t *fx)
{
    size_t          len = 8 << 20, i, rlen;
    unsigned char  *big;
    const char     *r;
    nbffi_task_t   *t;
    const char     *methods[] = { "echo", "echo_view", "async_view" };

    big = malloc(len);
    for (i = 0; i < len; i++) {
        big[i] = (unsigned char) (i * 131 + 7);
    }
    for (i = 0; i < 3; i++) {
        t = post(fx, fx->rt, methods[i], big, len);
        reap_n(fx, 1);
        r = nbffi_task_reply(t, &rlen);
        check_int(nbffi_task_status(t), 0);
        check_int(rlen, len);
        check(memcmp(r, big, len) == 0);
        nbffi_task_release(t);
    }
    free(big);

    /* A large reply made in Java. */
    t = post(fx, fx->rt, "make", "3000000", 7);
    reap_n(fx, 1);
    r = nbffi_task_reply(t, &rlen);
    check_int(nbffi_task_status(t), 0);
    check_int(rlen, 3000000);
    check(r[0] == 'x' && r[rlen - 1] == 'x');
    nbffi_task_release(t);
}


static void
test_exceptions_become_errors(fx_t *fx)
{
    char  buf[70000];

    check_int(outcome(fx, "throw", "boom", buf, sizeof(buf)), 1);
    check_has(buf, "java.lang.IllegalStateException: boom");
    check_has(buf, "\tat io.nbffi.it.TestHandler");
    check_has(buf, "Caused by: java.io.IOException: the cause");

    expect(fx, "error", "expected failure", 7, "expected failure");

    check_int(outcome(fx, "async_throw", "late", buf, sizeof(buf)), 1);
    check_has(buf, "java.lang.UnsupportedOperationException: late");

    check_int(outcome(fx, "async_null", "", buf, sizeof(buf)), 1);
    check_has(buf, "returned null instead of a CompletionStage");

    check_int(outcome(fx, "overflow", "", buf, sizeof(buf)), 1);
    check_has(buf, "java.lang.StackOverflowError: deep");

    check_int(outcome(fx, "nope", "", buf, sizeof(buf)), 2);
    check_has(buf, "no method 'nope' (serves: echo, ");

    /* The runtime keeps serving. */
    expect(fx, "echo", "still here", 0, "still here");
}


static void
test_many_concurrent_calls(fx_t *fx)
{
    enum { N = 2000 };
    nbffi_task_t  *t[N];
    char           p[16];
    const char    *r;
    size_t         len;
    int            i;

    for (i = 0; i < N; i++) {
        (void) snprintf(p, sizeof(p), "%d", i);
        t[i] = post(fx, fx->rt, i % 2 ? "echo" : "async_echo", p, strlen(p));
    }
    reap_n(fx, N);
    for (i = 0; i < N; i++) {
        (void) snprintf(p, sizeof(p), "%d", i);
        r = nbffi_task_reply(t[i], &len);
        check_int(nbffi_task_status(t[i]), 0);
        check_int(len, strlen(p));
        check(memcmp(r, p, len) == 0);
        nbffi_task_release(t[i]);
    }
}


static void
test_logging_reaches_host(fx_t *fx)
{
    expect(fx, "log", "L1", 0, "logged");
    check(logged(fx, NBFFI_LOG_ERR, "it.TestHandler: severe L1"));
    check(logged(fx, NBFFI_LOG_WARN, "it.TestHandler: warning L1"));
    check(logged(fx, NBFFI_LOG_INFO, "it.TestHandler: info L1"));
    check(!logged(fx, NBFFI_LOG_DEBUG, "fine L1"));
    check(logged(fx, NBFFI_LOG_WARN, "java.lang.IllegalArgumentException:"
                 " logged"));
    check(logged(fx, NBFFI_LOG_ERR, "it.System: system logger L1"));
}


static void
test_close_finishes_pending_calls(fx_t *fx)
{
    enum { N = 40 };
    nbffi_task_t  *t[N], *closed;
    int            i;
    size_t         len;
    const char    *r;

    for (i = 0; i < N; i++) {
        t[i] = post(fx, fx->rt, i % 2 ? "sleep" : "async_sleep", "20", 2);
    }
    closed = close_in(fx->rt, 20000);
    reap_n(fx, N + 1);
    check_int(nbffi_task_status(closed), 0);
    nbffi_task_release(closed);
    for (i = 0; i < N; i++) {
        r = nbffi_task_reply(t[i], &len);
        check_int(nbffi_task_status(t[i]), 0);
        check_int(len, 5);
        check(memcmp(r, "slept", 5) == 0);
        nbffi_task_release(t[i]);
    }
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
}


static void
test_close_timeout_answers_held_calls(fx_t *fx)
{
    nbffi_task_t  *t[3], *closed;
    const char    *r;
    size_t         len;
    int            i;

    /* close_timeout=200 bounds close before the host's deadline does;
       no view of these payloads was taken: close answers them. */
    for (i = 0; i < 3; i++) {
        t[i] = post(fx, fx->rt, "hold", "", 0);
    }
    expect(fx, "echo", "x", 0, "x");
    closed = close_in(fx->rt, 20000);
    reap_n(fx, 4);
    check_int(nbffi_task_status(closed), 0);
    nbffi_task_release(closed);
    for (i = 0; i < 3; i++) {
        r = nbffi_task_reply(t[i], &len);
        check_int(nbffi_task_status(t[i]), 3);
        check(memmem(r, len, "runtime closed before the handler answered"
                     " (waited 200 ms)", 57) != NULL);
        nbffi_task_release(t[i]);
    }
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    check(logged(fx, NBFFI_LOG_WARN, "3 call(s) answered with an error"));
}


static void
test_close_deadline_hurries_handlers(fx_t *fx)
{
    nbffi_task_t  *sleeper, *poller, *closed;
    char           buf[256];
    const char    *r;
    size_t         len;

    /* Two handlers busy for far longer than the deadline (on the two
       pollers, or on virtual threads): one in an interruptible sleep, one
       polling cancelled().  Close makes both answer in time; nothing is
       left over. */
    sleeper = post(fx, fx->rt, "sleep", "600000", 6);
    poller = post(fx, fx->rt, "until_cancelled", "", 0);
    wait_logged(fx, "until_cancelled: polling");
    closed = close_in(fx->rt, 1000);
    reap_n(fx, 3);
    check_int(nbffi_task_status(closed), 0);
    nbffi_task_release(closed);
    r = nbffi_task_reply(sleeper, &len);
    (void) snprintf(buf, sizeof(buf), "%.*s", (int) len, r);
    check_int(nbffi_task_status(sleeper), 1);
    check_has(buf, "java.lang.InterruptedException");
    nbffi_task_release(sleeper);
    r = nbffi_task_reply(poller, &len);
    check_int(nbffi_task_status(poller), 0);
    check(len == 9 && memcmp(r, "cancelled", 9) == 0);
    nbffi_task_release(poller);
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
}


/* Threads of this process named name (comm); with show, each one's
   kernel wait channel on stderr. */
static int
threads_shown(const char *name, int show)
{
    DIR            *d;
    struct dirent  *e;
    char            path[300], comm[64], wchan[64];
    FILE           *f, *w;
    int             n;

    n = 0;
    d = opendir("/proc/self/task");
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        (void) snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
                        e->d_name);
        f = fopen(path, "r");
        if (f != NULL && fgets(comm, sizeof(comm), f) != NULL
            && strncmp(comm, name, strlen(name)) == 0
            && comm[strlen(name)] == '\n')
        {
            n++;
            if (show) {
                (void) snprintf(path, sizeof(path),
                                "/proc/self/task/%s/wchan", e->d_name);
                w = fopen(path, "r");
                wchan[0] = '\0';
                if (w != NULL) {
                    if (fgets(wchan, sizeof(wchan), w) == NULL) {
                        wchan[0] = '\0';
                    }
                    fclose(w);
                }
                fprintf(stderr, "  thread %s %s: wchan %s\n", e->d_name,
                        name, wchan[0] ? wchan : "?");
            }
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}


static int
threads_named(const char *name)
{
    return threads_shown(name, 0);
}


/* Waits until at most n threads are named name. */
static void
wait_threads(const char *name, int n)
{
    int64_t  end;

    end = nbffi_now_ns() + WAIT_MS * MS;
    while (threads_named(name) > n) {
        if (nbffi_now_ns() > end) {
            fail("%d thread(s) named %s left, want %d",
                 threads_shown(name, 1), name, n);
        }
        poll(NULL, 0, 10);
    }
}


static void
test_close_deadline_leaves_a_stuck_poller(fx_t *fx)
{
    nbffi_task_t  *t, *closed;
    const char    *r;
    size_t         len;
    int            pollers;

    /* threads=1: the one poller is in a method that ignores interrupts
       when the deadline comes.  No view of the payload was taken, so
       close answers the call; the poller stays: orphaned. */
    pollers = threads_named("nbffi-poller-0");
    t = post(fx, fx->rt, "stubborn", "1500", 4);
    wait_logged(fx, "stubborn: pausing 1500 ms");
    closed = close_in(fx->rt, 300);
    reap_n(fx, 2);
    check_int(nbffi_task_status(closed), NBFFI_EORPHANED);
    nbffi_task_release(closed);
    r = nbffi_task_reply(t, &len);
    check_int(nbffi_task_status(t), 3);
    check(memmem(r, len, "runtime closed before the handler answered", 42)
          != NULL);
    check_int(nbffi_task_leaked(t), 0);
    nbffi_task_release(t);
    check(logged(fx, NBFFI_LOG_WARN, "poller 0 of io.nbffi.it.TestHandler is"
                 " still in a handler at the close deadline; left running"));
    check(logged(fx, NBFFI_LOG_ERR, "fini reported 1 thread(s) still"
                 " running"));
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;

    /* The poller leaves once its method returns: its answer goes nowhere,
       it pops no more, it detaches from the JVM. */
    wait_threads("nbffi-poller-0", pollers - 1);
}


static void
test_close_deadline_keeps_a_viewed_payload(fx_t *fx)
{
    nbffi_runtime_t  *rt;
    nbffi_task_t     *t, *closed;
    char             *cfg, err[1024];
    int               pollers;
    static const char  payload[] = "1500 bytes read late";

    /* A second runtime, one poller, in a stubborn method that holds a
       view of its payload past the close deadline: close must not answer
       it (that would free the payload under the reader); nbffi completes
       it as closed and keeps its memory. */
    pollers = threads_named("nbffi-poller-0");
    cfg = cfg_of("threads=1\n");
    if (load(fx, cfg, &rt, err, sizeof(err)) != 0) {
        fail("load: %s", err);
    }
    free(cfg);
    t = post(fx, rt, "stubborn_view", payload, sizeof(payload) - 1);
    wait_logged(fx, "stubborn: pausing 1500 ms");
    closed = close_in(rt, 300);
    reap_n(fx, 2);
    check_int(nbffi_task_status(closed), NBFFI_EORPHANED);
    nbffi_task_release(closed);
    check_int(nbffi_task_status(t), NBFFI_ECLOSED);
    check_int(nbffi_task_leaked(t), 1);
    nbffi_task_release(t);
    nbffi_runtime_free(rt);
    check_int(nbffi_host_tasks_leaked(fx->host), 1);
    check(logged(fx, NBFFI_LOG_WARN, "1 left to nbffi"));

    /* The method read its payload intact after the host let go of the
       call; its late answer was refused without a crash. */
    wait_threads("nbffi-poller-0", pollers);
    expect(fx, "property", "nbffi.it.late", 0, payload);
}


static void
test_handler_sees_cancel(fx_t *fx)
{
    nbffi_task_t   *t, *done[8];
    struct pollfd   pfd;

    /* The host gives the call up before the reply: the handler sees it
       and answers; reaping that completion frees the task (and returns
       nothing: the host released it). */
    t = post(fx, fx->rt, "until_cancelled", "", 0);
    nbffi_task_release(t);
    pfd.fd = nbffi_host_fd(fx->host);
    pfd.events = POLLIN;
    for ( ;; ) {
        nbffi_host_drain(fx->host);
        check_int(nbffi_host_reap(fx->host, done, 8), 0);
        if (nbffi_host_tasks_live(fx->host) == 0) {
            break;
        }
        if (poll(&pfd, 1, WAIT_MS) != 1) {
            fail("the cancelled call was never answered");
        }
    }
    expect(fx, "echo", "next", 0, "next");
}


static void
test_second_runtime_shares_the_jvm(fx_t *fx)
{
    nbffi_runtime_t  *rt2;
    char              err[1024], *cfg, buf[256];

    /* jvm_option would matter only to a new JVM: noticed and ignored.  A
       classpath that lists the nbffi jar too still works. */
    check(asprintf(&cfg, "class=io.nbffi.it.TestHandler\nclasspath=%s:%s\n"
                   "threads=1\njvm_option=-Xmx64m\n", maven_jar, classes)
          > 0);
    if (load(fx, cfg, &rt2, err, sizeof(err)) != 0) {
        fail("second load: %s", err);
    }
    free(cfg);
    check(logged(fx, NBFFI_LOG_WARN, "the JVM is already running"));

    /* Handlers are separate instances; the JVM is the same. */
    check_int(outcome_on(fx, rt2, "count", "", buf, sizeof(buf)), 0);
    check_has(buf, "1");
    expect(fx, "count", "", 0, "1");
    expect(fx, "count", "", 0, "2");

    check_int(outcome(fx, "thread", "", buf, sizeof(buf)), 0);
    check_has(buf, "nbffi-poller-");

    check_int(close_and_free(fx, rt2, 20000), 0);
    expect(fx, "echo", "after", 0, "after");
}


static void
test_load_errors(fx_t *fx)
{
    char  *cfg;

    expect_load_error(fx, "threads=2", "cfg lacks class=NAME");
    expect_load_error(fx, "class=X\nthreads=0", "threads must be an integer"
                      " in 1..64, got '0'");
    expect_load_error(fx, "class=X\ncolor=blue", "unknown key 'color'");
    expect_load_error(fx, "class=X\nexecutor=green", "executor must be");

    cfg = cfg_of("");
    cfg[strlen("class=io.nbffi.it.")] = 'Z';     /* ZestHandler */
    expect_load_error(fx, cfg, "handler class 'io.nbffi.it.ZestHandler' not"
                      " found");
    free(cfg);

    check(asprintf(&cfg, "class=io.nbffi.it.NotAHandler\nclasspath=%s",
                   classes) > 0);
    expect_load_error(fx, cfg, "does not implement io.nbffi.Handler");
    free(cfg);

    check(asprintf(&cfg, "class=io.nbffi.it.FailingHandler\nclasspath=%s",
                   classes) > 0);
    expect_load_error(fx, cfg, "register failed: java.lang."
                      "IllegalArgumentException: arg.required is missing");
    free(cfg);

    expect_load_error(fx, "class=io.nbffi.it.TestHandler\n"
                      "classpath=/nonexistent",
                      "classpath entry '/nonexistent' does not exist");

    cfg = cfg_of("log_level=LOUD\n");
    expect_load_error(fx, cfg, "bad log_level 'LOUD'");
    free(cfg);

    /* The runtime loaded before all this still serves. */
    expect(fx, "echo", "ok", 0, "ok");
}


static void
test_virtual_needs_a_new_jdk(fx_t *fx)
{
    char  *cfg, buf[64];

    cfg = cfg_of("executor=virtual\n");
    expect_load_error(fx, cfg, "executor=virtual needs Java 21 or later");
    free(cfg);
    check_int(outcome(fx, "java", "", buf, sizeof(buf)), 0);
    check_has(buf, "17.");
}


static void
copy_file(const char *from, const char *to)
{
    FILE    *in, *out;
    char     buf[65536];
    size_t   n;

    in = fopen(from, "rb");
    out = fopen(to, "wb");
    check(in != NULL && out != NULL);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        check(fwrite(buf, 1, n, out) == n);
    }
    check(!ferror(in) && fclose(out) == 0);
    fclose(in);
}


/*
 * Group "first", a fresh process: starts that fail before the JVM exists
 * (no jar next to the library, a JVM option it refuses) and after (a
 * classpath without the handler) leave nothing half made behind: the
 * next start with a right cfg serves.
 */
static void
test_failed_starts_then_a_good_one(fx_t *fx)
{
    char  *dir, *copy, *cfg, err[4096];
    int    rc;

    /* The library alone, its jar not beside it: no JVM at all. */
    dir = strdup("/tmp/nbffi-java-XXXXXX");
    check(dir != NULL && mkdtemp(dir) != NULL);
    check(asprintf(&copy, "%s/libnbffi_java.so", dir) > 0);
    copy_file(lib, copy);
    cfg = cfg_of("");
    rc = load_lib(fx, copy, cfg, &fx->rt, err, sizeof(err));
    (void) unlink(copy);
    (void) rmdir(dir);
    check_int(rc, NBFFI_EINIT);
    check_has(err, "nbffi.jar is missing or unreadable");
    check_int(threads_named("VM Thread"), 0);
    free(copy);
    free(dir);

    expect_load_error(fx, "class=io.nbffi.it.TestHandler\n"
                      "jvm_option=-Xbogus", "JNI_CreateJavaVM failed (-1):"
                      " Unrecognized option: -Xbogus");

    expect_load_error(fx, "class=io.nbffi.it.TestHandler\n"
                      "classpath=/nonexistent\njvm_option=-Xcheck:jni",
                      "classpath entry '/nonexistent' does not exist");
    check_int(threads_named("VM Thread"), 1);
    expect_load_error(fx, "class=io.nbffi.it.TestHandler\nclasspath=/tmp",
                      "handler class 'io.nbffi.it.TestHandler' not found");

    rc = load(fx, cfg, &fx->rt, err, sizeof(err));
    if (rc != 0) {
        fail("good load after bad ones: %s", err);
    }
    free(cfg);
    expect(fx, "echo", "served", 0, "served");
}


static void
test_virtual_threads(fx_t *fx)
{
    enum { N = 500 };
    nbffi_task_t  *t[N];
    char           buf[256];
    int            i;

    check_int(outcome(fx, "thread", "", buf, sizeof(buf)), 0);
    check_has(buf, " virtual");
    /* Blocking calls overlap on virtual threads: 500 sleeps of 100 ms on
       one poller thread. */
    for (i = 0; i < N; i++) {
        t[i] = post(fx, fx->rt, "sleep", "100", 3);
    }
    reap_n(fx, N);
    for (i = 0; i < N; i++) {
        check_int(nbffi_task_status(t[i]), 0);
        nbffi_task_release(t[i]);
    }
    check_int(outcome(fx, "throw", "x", buf, sizeof(buf)), 1);
    expect(fx, "async_echo", "v", 0, "v");
}


/* ---- streams, events and metadata ---- */

/* Waits for a wake-up of the host (chunks, completions, events, logs),
   at most 100 ms. */
static void
wait_host(fx_t *fx)
{
    struct pollfd  pfd;

    pfd.fd = nbffi_host_fd(fx->host);
    pfd.events = POLLIN;
    (void) poll(&pfd, 1, 100);
    nbffi_host_drain(fx->host);
}


static nbffi_task_t *
post_ex(fx_t *fx, const char *method, const char *payload, const char *meta,
    size_t meta_len, unsigned flags, uint32_t window)
{
    nbffi_task_t  *t;
    int            rc;

    rc = nbffi_call_ex(fx->host, fx->rt, method, strlen(method), payload,
                       strlen(payload), meta, meta_len, 0, flags, window,
                       &t);
    if (rc != 0) {
        fail("call %s: %s", method, nbffi_strerror(rc));
    }
    return t;
}


/*
 * Reads stream t to its end (or, max >= 0, until max chunks were read):
 * the chunks joined with '|' in buf, their count in *n.  Returns the
 * final status (its text appended after '#'), or -1 when it stopped at
 * max (t not reaped, still the caller's).
 */
static int
read_stream(fx_t *fx, nbffi_task_t *t, int max, char *buf, size_t len,
    int *n)
{
    int            done, k, i;
    size_t         at, clen;
    const void    *c;
    const char    *r;
    nbffi_task_t  *out[16];
    int64_t        end;

    at = 0;
    buf[0] = '\0';
    *n = 0;
    done = 0;
    end = nbffi_now_ns() + WAIT_MS * MS;
    for ( ;; ) {
        while (nbffi_task_next_chunk(t, &c, &clen) == 1) {
            if (at + clen + 2 < len) {
                if (*n > 0) {
                    buf[at++] = '|';
                }
                memcpy(buf + at, c, clen);
                at += clen;
                buf[at] = '\0';
            }
            if (++*n == max) {
                return -1;
            }
        }
        if (done) {
            break;
        }
        if (nbffi_now_ns() > end) {
            fail("stream not ended within %d ms (%d chunks)", WAIT_MS, *n);
        }
        wait_host(fx);
        (void) nbffi_host_reap_streams(fx->host, out, 16);
        k = nbffi_host_reap(fx->host, out, 16);
        for (i = 0; i < k; i++) {
            if (out[i] != t) {
                fail("an unexpected completion");
            }
            done = 1;
        }
    }
    r = nbffi_task_reply(t, &clen);
    if (clen > 0) {
        (void) snprintf(buf + at, len - at, "#%.*s", (int) clen, r);
    }
    k = nbffi_task_status(t);
    nbffi_task_release(t);
    return k;
}


static void
expect_stream(fx_t *fx, const char *method, const char *payload,
    uint32_t window, int status, const char *want, int nwant)
{
    static char  buf[1 << 20];
    int          got, n;

    got = read_stream(fx, post_ex(fx, method, payload, NULL, 0,
                                  NBFFI_CALL_STREAM, window),
                      -1, buf, sizeof(buf), &n);
    if (got != status || (want != NULL && strcmp(buf, want) != 0)
        || n != nwant)
    {
        fail("%s(%s): got %d, %d chunks '%.200s', want %d, %d '%s'",
             method, payload, got, n, buf, status, nwant,
             want ? want : "(any)");
    }
}


static void
test_streams(fx_t *fx)
{
    char  buf[4096];

    expect_stream(fx, "stream_n", "3", 0, 0, "chunk 1|chunk 2|chunk 3", 3);
    /* a window of 1: each send waits for the read of the one before */
    expect_stream(fx, "stream_n", "200", 1, 0, NULL, 200);
    expect_stream(fx, "stream_size", "64 65536", 2, 0, NULL, 64);
    expect_stream(fx, "stream_window", "", 7, 0, "7", 1);
    expect_stream(fx, "stream_error", "", 0, 9,
                  "one|two#broke after two", 2);
    expect_stream(fx, "publish_lines", "a\nb\nc\nd\ne", 2, 0, "a|b|c|d|e",
                  5);
    /* a plain method answers a stream with its reply, no chunk */
    expect_stream(fx, "echo", "plain", 0, 0, "#plain", 0);
    /* a stream method refuses a plain call */
    check_int(outcome(fx, "stream_n", "3", buf, sizeof(buf)), 5);
    check_has(buf, "rt:stream");
}


/* The caller stops reading: the sender sees the cancel, logs it, and
   the task is freed. */
static void
test_stream_cancel(fx_t *fx)
{
    static char    buf[4096];
    int            n;
    nbffi_task_t  *t, *out[16];

    t = post_ex(fx, "stream_forever", "s1", NULL, 0, NBFFI_CALL_STREAM, 2);
    check_int(read_stream(fx, t, 5, buf, sizeof(buf), &n), -1);
    check_int(n, 5);
    nbffi_task_release(t);
    wait_logged(fx, "stream_forever s1 cancelled after");
    check(logged(fx, -1, "the caller gave up"));
    check(logged(fx, -1, "sink.cancelled true"));
    while (nbffi_host_tasks_live(fx->host) != 0) {
        wait_host(fx);
        check_int(nbffi_host_reap(fx->host, out, 16), 0);
    }
    expect(fx, "echo", "next", 0, "next");
}


static void
test_metadata(fx_t *fx)
{
    static const char  meta[] = "request_id\0r-42\0tenant\0acme";
    int                level, n, found;
    char               line[4096], buf[4096];
    size_t             mlen;
    const char        *m;
    nbffi_task_t      *t;
    int64_t            end;

    t = post_ex(fx, "meta", "", meta, sizeof(meta), 0, 0);
    reap_n(fx, 1);
    check_int(nbffi_task_status(t), 0);
    m = nbffi_task_reply(t, &mlen);
    check_int(mlen, strlen("request_id=r-42;tenant=acme;"));
    check(memcmp(m, "request_id=r-42;tenant=acme;", mlen) == 0);
    nbffi_task_release(t);
    expect(fx, "meta", "", 0, "");

    /* a line logged while the call runs carries its metadata */
    t = post_ex(fx, "meta_log", "hello", meta, sizeof(meta), 0, 0);
    reap_n(fx, 1);
    check_int(nbffi_task_status(t), 0);
    nbffi_task_release(t);
    found = 0;
    end = nbffi_now_ns() + WAIT_MS * MS;
    while (!found && nbffi_now_ns() < end) {
        n = nbffi_host_log_next(fx->host, &level, line, sizeof(line), NULL);
        if (n == 0) {
            wait_host(fx);
            continue;
        }
        if (strstr(line, "meta_log hello") == NULL) {
            continue;
        }
        m = nbffi_host_log_meta(fx->host, &mlen);
        check(m != NULL);
        check_int(mlen, sizeof(meta));
        check(memcmp(m, meta, mlen) == 0);
        found = 1;
    }
    check(found);
    /* a streamed call reads its metadata too */
    n = 0;
    t = post_ex(fx, "meta", "", meta, sizeof(meta), NBFFI_CALL_STREAM, 0);
    check_int(read_stream(fx, t, -1, buf, sizeof(buf), &n), 0);
    check_has(buf, "request_id=r-42;");
    expect(fx, "deadline", "", 0, "none");
}


/* Takes the next event within WAIT_MS: its name and data in name, data. */
static void
next_event(fx_t *fx, char *name, char *data, size_t len)
{
    nbffi_event_t  *ev;
    const char     *p;
    size_t          n;
    int64_t         end;

    end = nbffi_now_ns() + WAIT_MS * MS;
    while (nbffi_host_event_next(fx->host, &ev) != 1) {
        if (nbffi_now_ns() > end) {
            fail("no event within %d ms", WAIT_MS);
        }
        wait_host(fx);
    }
    check(nbffi_event_runtime(ev) == fx->rt);
    p = nbffi_event_name(ev, &n);
    (void) snprintf(name, len, "%.*s", (int) n, p);
    p = nbffi_event_data(ev, &n);
    (void) snprintf(data, len, "%.*s", (int) n, p);
}


static void
test_events(fx_t *fx)
{
    char                 name[300], data[300], want[32];
    int                  i;
    nbffi_event_stats_t  st;

    expect(fx, "emit", "reloaded v2", 0, "true");
    next_event(fx, name, data, sizeof(data));
    check(strcmp(name, "reloaded") == 0 && strcmp(data, "v2") == 0);

    expect(fx, "emit_later", "from a thread", 0, "started");
    next_event(fx, name, data, sizeof(data));
    check(strcmp(name, "later") == 0 && strcmp(data, "from a thread") == 0);

    /* order kept */
    expect(fx, "emit_n", "100 10", 0, "100");
    for (i = 0; i < 100; i++) {
        next_event(fx, name, data, sizeof(data));
        (void) snprintf(want, sizeof(want), "%d", i);
        check(strcmp(name, "burst") == 0);
        check(strncmp(data, want, strlen(want)) == 0);
    }

    /* past the bound: dropped, counted, said so (the host gives the
       room of a batch back when it looks for the next one) */
    {
        nbffi_event_t  *ev;

        check_int(nbffi_host_event_next(fx->host, &ev), 0);
    }
    nbffi_host_set_event_limit(fx->host, 10, 0);
    expect(fx, "emit_n", "50 10", 0, "10");
    nbffi_host_event_stats(fx->host, &st);
    check_int(st.dropped, 40);
    for (i = 0; i < 10; i++) {
        next_event(fx, name, data, sizeof(data));
    }
    check_int(outcome(fx, "emit", "", data, sizeof(data)), 1);
    check_has(data, "bad event name");
}


/* Host and runtime for one test; the test runs; everything is checked
   freed.  0 on success. */
static int
run(const test_t *t)
{
    fx_t           *fx;
    nbffi_task_t   *left[64];
    char           *cfg, err[1024];
    int             i;

    fx = calloc(1, sizeof(fx_t));
    if (fx == NULL
        || nbffi_host_new(&fx->host, NBFFI_HOST_NOTIFY_EVENTFD
                                     | NBFFI_HOST_LOG_QUEUE) != 0)
    {
        fprintf(stderr, "  cannot make a host\n");
        return -1;
    }
    if (setjmp(test_jmp) != 0) {
        /* fx is left as is: its runtime may still hold tasks. */
        return -1;
    }

    if (t->cfg != NULL) {
        cfg = cfg_of(t->cfg);
        if (load(fx, cfg, &fx->rt, err, sizeof(err)) != 0) {
            fail("load: %s", err);
        }
        free(cfg);
    }

    t->fn(fx);

    if (fx->rt != NULL) {
        check_int(close_and_free(fx, fx->rt, 20000), 0);
    }
    nbffi_host_drain(fx->host);
    while (nbffi_host_reap(fx->host, left, 64) > 0) {
        /* only completions of released tasks remain, freed by reap */
    }
    collect_logs(fx);
    check_int(nbffi_host_tasks_live(fx->host), 0);
    check_int(nbffi_host_free(fx->host), 0);
    for (i = 0; i < fx->nlog; i++) {
        free(fx->log_text[i]);
    }
    free(fx);
    return 0;
}


int
main(int argc, char **argv)
{
    const char  *group = argc > 1 ? argv[1] : "platform";
    const test_t  *tests;
    size_t         i, n, failed;

    static const test_t  platform[] = {
        { "sync_and_async_replies", test_sync_and_async_replies,
          "threads=4\n" },
        { "large_payloads", test_large_payloads, "" },
        { "exceptions_become_errors", test_exceptions_become_errors, "" },
        { "many_concurrent_calls", test_many_concurrent_calls,
          "threads=4\nbatch=16\n" },
        { "logging_reaches_host", test_logging_reaches_host, "" },
        { "close_finishes_pending_calls", test_close_finishes_pending_calls,
          "threads=4\n" },
        { "close_timeout_answers_held_calls",
          test_close_timeout_answers_held_calls, "close_timeout=200\n" },
        { "close_deadline_hurries_handlers",
          test_close_deadline_hurries_handlers, "" },
        { "close_deadline_leaves_a_stuck_poller",
          test_close_deadline_leaves_a_stuck_poller, "threads=1\n" },
        { "close_deadline_keeps_a_viewed_payload",
          test_close_deadline_keeps_a_viewed_payload, "" },
        { "handler_sees_cancel", test_handler_sees_cancel, "" },
        { "streams", test_streams, "" },
        { "stream_cancel", test_stream_cancel, "" },
        { "metadata", test_metadata, "" },
        { "events", test_events, "" },
        { "second_runtime_shares_the_jvm",
          test_second_runtime_shares_the_jvm, "" },
        { "load_errors", test_load_errors, "" },
        { "virtual_needs_a_new_jdk", test_virtual_needs_a_new_jdk, "" },
    };
    static const test_t  first[] = {
        { "failed_starts_then_a_good_one", test_failed_starts_then_a_good_one,
          NULL },
    };
    static const test_t  virtual[] = {
        { "virtual_threads", test_virtual_threads, "executor=virtual\n" },
        { "close_deadline_hurries_handlers",
          test_close_deadline_hurries_handlers, "executor=virtual\n" },
        { "streams", test_streams, "executor=virtual\n" },
        { "stream_cancel", test_stream_cancel, "executor=virtual\n" },
    };

    lib = getenv("NBJ_LIB");
    classes = getenv("NBJ_CLASSES");
    maven_jar = getenv("NBJ_MAVEN_JAR");
    if (lib == NULL || classes == NULL || maven_jar == NULL) {
        fprintf(stderr, "set NBJ_LIB, NBJ_CLASSES and NBJ_MAVEN_JAR\n");
        return 2;
    }
    if (strcmp(group, "first") == 0) {
        tests = first;
        n = sizeof(first) / sizeof(first[0]);
    } else if (strcmp(group, "virtual") == 0) {
        java_home = getenv("NBJ_JAVA_HOME");
        if (java_home == NULL) {
            fprintf(stderr, "virtual: set NBJ_JAVA_HOME\n");
            return 77;                  /* meson: skipped */
        }
        tests = virtual;
        n = sizeof(virtual) / sizeof(virtual[0]);
    } else {
        tests = platform;
        n = sizeof(platform) / sizeof(platform[0]);
    }

    failed = 0;
    for (i = 0; i < n; i++) {
        if (run(&tests[i]) != 0) {
            failed++;
            printf("not ok %zu - %s\n", i + 1, tests[i].name);
        } else {
            printf("ok %zu - %s\n", i + 1, tests[i].name);
        }
        fflush(stdout);
    }
    printf("%zu/%zu passed\n", n - failed, n);
    return failed ? 1 : 0;
}
