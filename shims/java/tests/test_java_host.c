/*
 * The Java runtime driven by the nbffi core directly (no nginx): calls,
 * errors, logging, close and JVM reuse, with the task accounting of the
 * host checked after every test.  Real core, real JVM, -Xcheck:jni.
 *
 * Environment (set by meson.build):
 *   NBJ_LIB        path of libnbffi_java.so
 *   NBJ_CLASSPATH  the nbffi jar and the test classes (Maven's target/)
 *   NBJ_JAVA_HOME  JDK for the "virtual" group (needs virtual threads)
 * Usage: test_java_host [platform|virtual]
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

#include <nbffi.h>

#define WAIT_MS  30000
#define MAX_LOG  256

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
    const char       *cfg;           /* extra cfg lines of fx->rt        */
} test_t;


static void fail_at(int line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));


static const char  *lib;
static const char  *classpath;
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


/* The cfg of a TestHandler runtime plus extra lines. */
static char *
cfg_of(const char *extra)
{
    char  *s;

    if (asprintf(&s, "class=io.nbffi.it.TestHandler\nclasspath=%s\n"
                 "jvm_option=-Xcheck:jni\n%s%s%s%s", classpath,
                 java_home ? "java_home=" : "", java_home ? java_home : "",
                 java_home ? "\n" : "", extra) < 0)
    {
        fail("asprintf");
    }
    return s;
}


static int
load(fx_t *fx, const char *cfg, nbffi_runtime_t **out, char *err,
    size_t err_len)
{
    return nbffi_runtime_load(fx->host, lib, NULL, cfg, strlen(cfg), 0, 0,
                              0, out, err, err_len);
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
        if (fx->log_level[i] == level && strstr(fx->log_text[i], text)) {
            return 1;
        }
    }
    return 0;
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
    nbffi_task_t  *t[N];
    int            i;
    size_t         len;
    const char    *r;

    for (i = 0; i < N; i++) {
        t[i] = post(fx, fx->rt, i % 2 ? "sleep" : "async_sleep", "20", 2);
    }
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    reap_n(fx, N);
    for (i = 0; i < N; i++) {
        r = nbffi_task_reply(t[i], &len);
        check_int(nbffi_task_status(t[i]), 0);
        check_int(len, 5);
        check(memcmp(r, "slept", 5) == 0);
        nbffi_task_release(t[i]);
    }
}


static void
test_close_timeout_answers_held_calls(fx_t *fx)
{
    nbffi_task_t  *t[3];
    const char    *r;
    size_t         len;
    int            i;

    for (i = 0; i < 3; i++) {
        t[i] = post(fx, fx->rt, "hold", "", 0);
    }
    expect(fx, "echo", "x", 0, "x");
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    reap_n(fx, 3);
    for (i = 0; i < 3; i++) {
        r = nbffi_task_reply(t[i], &len);
        check_int(nbffi_task_status(t[i]), 3);
        check(memmem(r, len, "runtime closed before the handler answered",
                     42) != NULL);
        nbffi_task_release(t[i]);
    }
    check(logged(fx, NBFFI_LOG_WARN, "3 call(s) answered with an error"));
}


/* Threads of this process named name (comm). */
static int
threads_named(const char *name)
{
    DIR            *d;
    struct dirent  *e;
    char            path[300], comm[64];
    FILE           *f;
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


static void
test_close_timeout_leaves_a_stuck_poller(fx_t *fx)
{
    nbffi_task_t  *t;
    const char    *r;
    size_t         len;
    int64_t        end;

    /* threads=1 and close_timeout=100: the one poller sleeps 1500 ms in a
       sync method when the runtime closes. */
    check_int(threads_named("nbffi-poller-0"), 1);
    t = post(fx, fx->rt, "sleep", "1500", 4);
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    reap_n(fx, 1);
    r = nbffi_task_reply(t, &len);
    check_int(nbffi_task_status(t), 3);
    check(memmem(r, len, "close_timeout 100 ms", 20) != NULL);
    nbffi_task_release(t);
    check(logged(fx, NBFFI_LOG_ERR, "poller 0 of io.nbffi.it.TestHandler is"
                 " stuck in a handler; left running"));

    /* The poller leaves once its method returns: its late answer is
       refused, it pops no more, it detaches from the JVM. */
    end = nbffi_now_ns() + (int64_t) WAIT_MS * 1000000;
    while (threads_named("nbffi-poller-0") > 0) {
        if (nbffi_now_ns() > end) {
            fail("the stuck poller never left");
        }
        poll(NULL, 0, 10);
    }
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

    /* jvm_option would matter only to a new JVM: noticed and ignored. */
    cfg = cfg_of("threads=1\njvm_option=-Xmx64m\n");
    if (load(fx, cfg, &rt2, err, sizeof(err)) != 0) {
        fail("second load: %s", err);
    }
    free(cfg);
    check(logged(fx, NBFFI_LOG_NOTICE, "the JVM is already running"));

    /* Handlers are separate instances; the JVM is the same. */
    check_int(outcome_on(fx, rt2, "count", "", buf, sizeof(buf)), 0);
    check_has(buf, "1");
    expect(fx, "count", "", 0, "1");
    expect(fx, "count", "", 0, "2");

    check_int(outcome(fx, "thread", "", buf, sizeof(buf)), 0);
    check_has(buf, "nbffi-poller-");

    nbffi_runtime_free(rt2);
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
                   classpath) > 0);
    expect_load_error(fx, cfg, "does not implement io.nbffi.Handler");
    free(cfg);

    check(asprintf(&cfg, "class=io.nbffi.it.FailingHandler\nclasspath=%s",
                   classpath) > 0);
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

    cfg = cfg_of(t->cfg);
    if (load(fx, cfg, &fx->rt, err, sizeof(err)) != 0) {
        fail("load: %s", err);
    }
    free(cfg);

    t->fn(fx);

    if (fx->rt != NULL) {
        nbffi_runtime_free(fx->rt);
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
        { "close_timeout_leaves_a_stuck_poller",
          test_close_timeout_leaves_a_stuck_poller,
          "threads=1\nclose_timeout=100\n" },
        { "handler_sees_cancel", test_handler_sees_cancel, "" },
        { "second_runtime_shares_the_jvm",
          test_second_runtime_shares_the_jvm, "" },
        { "load_errors", test_load_errors, "" },
        { "virtual_needs_a_new_jdk", test_virtual_needs_a_new_jdk, "" },
    };
    static const test_t  virtual[] = {
        { "virtual_threads", test_virtual_threads, "executor=virtual\n" },
    };

    lib = getenv("NBJ_LIB");
    classpath = getenv("NBJ_CLASSPATH");
    if (lib == NULL || classpath == NULL) {
        fprintf(stderr, "set NBJ_LIB and NBJ_CLASSPATH\n");
        return 2;
    }
    if (strcmp(group, "virtual") == 0) {
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
