/*
 * libnbffi_python.so through the core's host API: a real libnbffi, a real
 * embedded CPython, the handler modules in handlers/.  One interpreter
 * serves every test of this process, as in an nginx worker; init and fini
 * run on the core's threads, as there.
 */

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"


#define T_CFG_MAX  4096
#define T_MANY     200
/* Close deadlines, ms: what the handlers get before they are stopped. */
#define T_STOP_MS  2000

static nbffi_host_t *t_host(void);
static nbffi_runtime_t *t_load(nbffi_host_t *host, const char *cfg);
static void t_load_fails(nbffi_host_t *host, const char *cfg,
    const char *expect);
static nbffi_task_t *t_post(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, const void *payload, size_t len);
static nbffi_task_t *t_ask(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, const char *payload);
static void t_ask_is(nbffi_host_t *host, nbffi_runtime_t *rt,
    const char *method, const char *payload, int status, const char *reply);
static const char *t_text(nbffi_task_t *task);
static void t_reap_all(nbffi_host_t *host, nbffi_task_t **out, int n);
static const char *t_cfg(const char *fmt, const char *arg);
static int t_rm(const char *path, const struct stat *st, int flag,
    struct FTW *ftw);
static int t_read_stream(nbffi_host_t *host, nbffi_task_t *task,
    unsigned window);


static nbffi_host_t *
t_host(void)
{
    nbffi_host_t  *host;

    /* queued logs: the tests read them, and stderr stays quiet */
    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD
                                           | NBFFI_HOST_LOG_QUEUE), 0);
    return host;
}


static nbffi_runtime_t *
t_load(nbffi_host_t *host, const char *cfg)
{
    int               rc;
    char              err[4096];
    nbffi_runtime_t  *rt;

    rc = t_load_wait(host, T_LIB, NULL, cfg, strlen(cfg), 0, 0, 0, 0, &rt,
                     err, sizeof(err));
    if (rc != 0) {
        fail_msg("load %s: %s: %s", cfg, nbffi_err_name(rc), err);
    }

    return rt;
}


static void
t_load_fails(nbffi_host_t *host, const char *cfg, const char *expect)
{
    char              err[4096];
    nbffi_runtime_t  *rt;

    assert_int_equal(t_load_wait(host, T_LIB, NULL, cfg, strlen(cfg), 0, 0,
                                 0, 0, &rt, err, sizeof(err)),
                     NBFFI_EINIT);
    assert_int_equal(nbffi_runtime_state(rt), NBFFI_RT_FAILED);
    assert_int_equal(t_close_free(rt, 0), NBFFI_RT_CLOSED);

    if (strstr(err, expect) == NULL) {
        fail_msg("load %s: want \"%s\" in the error, got: %s", cfg, expect,
                 err);
    }
}


static nbffi_task_t *
t_post(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    const void *payload, size_t len)
{
    nbffi_task_t  *task;

    task = NULL;
    assert_int_equal(nbffi_call(host, rt, method, strlen(method), payload,
                                len, 0, 0, &task), 0);
    return task;
}


/* One call, waited for: the returned task is the caller's to release. */
static nbffi_task_t *
t_ask(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    const char *payload)
{
    nbffi_task_t  *task;

    task = t_post(host, rt, method, payload, strlen(payload));
    assert_ptr_equal(t_reap1(host), task);

    return task;
}


/* One call, waited for, checked (as t_reply_is) and released. */
static void
t_ask_is(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    const char *payload, int status, const char *reply)
{
    nbffi_task_t  *task;

    task = t_ask(host, rt, method, payload);
    t_reply_is(task, status, reply);
    nbffi_task_release(task);
}


/* The reply as a string (replies of these tests hold no NUL). */
static const char *
t_text(nbffi_task_t *task)
{
    size_t       len;
    const char  *p;
    static char  buf[8192];

    p = nbffi_task_reply(task, &len);
    if (len >= sizeof(buf)) {
        len = sizeof(buf) - 1;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';

    return buf;
}


static void
t_reap_all(nbffi_host_t *host, nbffi_task_t **out, int n)
{
    int  got;

    for (got = 0; got < n; /* void */) {
        got += t_reap(host, out + got, n - got);
    }
}


static const char *
t_cfg(const char *fmt, const char *arg)
{
    static char  buf[T_CFG_MAX];

    assert_true(snprintf(buf, sizeof(buf), fmt, T_HANDLERS, arg)
                < (int) sizeof(buf));
    return buf;
}

static int
t_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) ftw;

    return (flag == FTW_DP) ? rmdir(path) : unlink(path);
}

#define T_ECHO_CFG  "{\"handler\": \"t_echo\", \"path\": [\"%s\"]%s}"
#define T_GATE_CFG                                                           \
    "{\"handler\": \"t_async:Gate\", \"path\": [\"%s\"]%s}"
#define T_STUCK_CFG  "{\"handler\": \"t_stuck\", \"path\": [\"%s\"]%s}"
#define T_STREAM_CFG                                                         \
    "{\"handler\": \"t_stream:Streams\", \"path\": [\"%s\"]%s}"
#define T_INTERRUPTED                                                        \
    "nbffi.Interrupted: the runtime was closed and the handler still ran\n"


static void
test_sync_replies(void **state)
{
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_ECHO_CFG, ""));

    t_ask_is(host, rt, "echo", "hello", 0, "hello");

    /* UTF-8 both ways, and a method name that is not ASCII */
    t_ask_is(host, rt, "reverse", "h\xc3\xa9llo \xe2\x82\xac", 0,
             "\xe2\x82\xac oll\xc3\xa9h");

    t_ask_is(host, rt, "gr\xc3\xbc\xc3\x9f", "dich", 0,
             "gr\xc3\xbc\xc3\x9f dich");

    t_ask_is(host, rt, "nothing", "x", 0, NULL);

    task = t_ask(host, rt, "missing", "x");
    assert_int_equal(nbffi_task_status(task), 2);
    assert_non_null(strstr(t_text(task), "no method 'missing'"));
    nbffi_task_release(task);

    task = t_ask(host, rt, "wrong", "x");
    assert_int_equal(nbffi_task_status(task), 1);
    assert_non_null(strstr(t_text(task), "TypeError: handler returned int"));
    nbffi_task_release(task);

    /* the handler runs in this process, on another thread */
    task = t_ask(host, rt, "pid", "");
    assert_int_equal(atoi(t_text(task)), getpid());
    nbffi_task_release(task);

    /* ... which is not the interpreter's main thread (the shim's own):
     * nginx's signal handlers cannot be replaced from a handler */
    t_ask_is(host, rt, "is_main", "", 0, "False");
    t_ask_is(host, rt, "trap", "", 0, "signal only works in main thread "
             "of the main interpreter");

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_exception_reply(void **state)
{
    const char       *text;
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_ECHO_CFG, ""));

    task = t_ask(host, rt, "boom", "x");
    assert_int_equal(nbffi_task_status(task), 1);
    text = t_text(task);
    /* type and message first, then the traceback down to the raise */
    assert_int_equal(strncmp(text, "ValueError: boom: x\n", 20), 0);
    assert_non_null(strstr(text, "Traceback (most recent call last)"));
    assert_non_null(strstr(text, "t_echo.py\", line"));
    assert_non_null(strstr(text, "in boom"));
    nbffi_task_release(task);

    t_ask_is(host, rt, "refuse", "y", 7, "refused y");

    /* and it keeps serving */
    t_ask_is(host, rt, "echo", "still here", 0, "still here");

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_large_payloads(void **state)
{
    size_t            i, len, big;
    unsigned char    *payload;
    const unsigned char *reply;
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    big = 16u << 20;
    payload = malloc(big);
    assert_non_null(payload);
    for (i = 0; i < big; i++) {
        payload[i] = (unsigned char) (i * 7 + 3);
    }

    host = t_host();
    rt = t_load(host, t_cfg(T_ECHO_CFG, ""));

    task = t_post(host, rt, "echo", payload, big);
    assert_ptr_equal(t_reap1(host), task);
    assert_int_equal(nbffi_task_status(task), 0);
    reply = nbffi_task_reply(task, &len);
    assert_int_equal(len, big);
    assert_memory_equal(reply, payload, big);
    nbffi_task_release(task);

    task = t_ask(host, rt, "grow", "33554432");
    assert_int_equal(nbffi_task_status(task), 0);
    reply = nbffi_task_reply(task, &len);
    assert_int_equal(len, 32u << 20);
    for (i = 0; i < len; i += 4099) {
        assert_int_equal(reply[i], i % 256);
    }
    nbffi_task_release(task);

    free(payload);
    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_async_calls_overlap(void **state)
{
    int               i;
    nbffi_host_t     *host;
    nbffi_task_t     *tasks[T_MANY + 1], *task;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_GATE_CFG, ""));

    /* each wait blocks until open: serial handling would never finish */
    for (i = 0; i < T_MANY; i++) {
        (void) t_post(host, rt, "wait", "w", 1);
    }
    (void) t_post(host, rt, "open", "", 0);

    t_reap_all(host, tasks, T_MANY + 1);
    for (i = 0; i < T_MANY + 1; i++) {
        assert_int_equal(nbffi_task_status(tasks[i]), 0);
        nbffi_task_release(tasks[i]);
    }

    t_ask_is(host, rt, "waiting_count", "", 0, "200");

    task = t_ask(host, rt, "boom", "k");
    assert_int_equal(nbffi_task_status(task), 1);
    assert_int_equal(strncmp(t_text(task), "KeyError: 'k'", 13), 0);
    nbffi_task_release(task);

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_batches(void **state)
{
    int               i, seen[8];
    char              payload[16];
    nbffi_host_t     *host;
    nbffi_task_t     *posted[8], *done[8];
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg("{\"handler\": \"t_batch:Squares\", "
                            "\"path\": [\"%s\"]%s}", ""));

    /* max_size 4 and a 60 s wait: only full batches can run */
    for (i = 0; i < 8; i++) {
        (void) snprintf(payload, sizeof(payload), i == 5 ? "x" : "%d", i);
        posted[i] = t_post(host, rt, "square", payload, strlen(payload));
    }

    t_reap_all(host, done, 8);
    memset(seen, 0, sizeof(seen));

    for (i = 0; i < 8; i++) {
        int  j;

        for (j = 0; j < 8 && posted[j] != done[i]; j++) {
            /* void */
        }
        assert_true(j < 8);
        seen[j]++;

        if (j == 5) {
            /* one bad item fails alone */
            assert_int_equal(nbffi_task_status(done[i]), 1);
            assert_non_null(strstr(t_text(done[i]),
                                   "ValueError: not a number: x"));
        } else {
            (void) snprintf(payload, sizeof(payload), "%d", j * j);
            t_reply_is(done[i], 0, payload);
        }
        nbffi_task_release(done[i]);
    }

    for (i = 0; i < 8; i++) {
        assert_int_equal(seen[i], 1);
    }

    t_ask_is(host, rt, "sizes_seen", "", 0, "4,4");

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_close_finishes_pending(void **state)
{
    int               i;
    nbffi_host_t     *host;
    nbffi_task_t     *tasks[20];
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_GATE_CFG, ""));

    for (i = 0; i < 20; i++) {
        (void) t_post(host, rt, "sleep", "0.05", 4);
    }

    /* closed once all 20 are answered and the thread has left */
    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);

    t_reap_all(host, tasks, 20);
    for (i = 0; i < 20; i++) {
        t_reply_is(tasks[i], 0, "slept 0.05");
        nbffi_task_release(tasks[i]);
    }

    t_host_finish(host);
}


/*
 * Five calls of method that wait forever on a Gate with cfg_extra, then a
 * close with a deadline ms from now (0: none): all five are cancelled.
 */
static void
t_close_cancels(const char *cfg_extra, const char *method, int64_t ms)
{
    int               i;
    nbffi_host_t     *host;
    nbffi_task_t     *tasks[5];
    nbffi_runtime_t  *rt;

    host = t_host();
    rt = t_load(host, t_cfg(T_GATE_CFG, cfg_extra));

    for (i = 0; i < 5; i++) {
        (void) t_post(host, rt, method, "w", 1);
    }

    assert_int_equal(t_close_free(rt, ms), NBFFI_RT_CLOSED);

    t_reap_all(host, tasks, 5);
    for (i = 0; i < 5; i++) {
        t_reply_is(tasks[i], 1, "python: cancelled: the runtime was closed "
                   "and the handler still ran");
        nbffi_task_release(tasks[i]);
    }

    t_host_finish(host);
}


static void
test_close_timeout_cancels(void **state)
{
    (void) state;

    /* no deadline: close_timeout alone bounds the handlers */
    t_close_cancels(", \"close_timeout\": 0.1", "wait", 0);
}


static void
test_stop_cancels_async_handlers(void **state)
{
    (void) state;

    /* close_timeout is 30 s: the deadline comes first */
    t_close_cancels("", "forever", T_STOP_MS);
}


static void
test_stop_interrupts_a_spinning_handler(void **state)
{
    nbffi_host_t     *host;
    nbffi_task_t     *spin, *queued;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_STUCK_CFG, ""));

    spin = t_post(host, rt, "spin", "", 0);
    queued = t_post(host, rt, "echo", "x", 1);

    /* the thread left: closed, not orphaned */
    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);

    t_wait_task(host, spin);
    assert_int_equal(nbffi_task_status(spin), 1);
    assert_int_equal(strncmp(t_text(spin), T_INTERRUPTED,
                             strlen(T_INTERRUPTED)), 0);
    assert_non_null(strstr(t_text(spin), "in spin"));
    nbffi_task_release(spin);

    t_wait_task(host, queued);
    t_reply_is(queued, 1, "python: the runtime was closed before this call "
               "started");
    nbffi_task_release(queued);

    t_host_finish(host);
}


static void
test_stop_leaves_a_thread_blocked_in_c(void **state)
{
    size_t            len;
    const char       *reply;
    nbffi_host_t     *host;
    nbffi_task_t     *sleep, *close;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_STUCK_CFG, ""));

    sleep = t_post(host, rt, "sleep", "", 0);

    /* time.sleep sees no interrupt: fini counts the thread that stayed */
    assert_int_equal(nbffi_runtime_close(rt, nbffi_now_ns() + 1000000000,
                                         &close), 0);
    t_wait_task(host, close);
    assert_int_equal(nbffi_task_status(close), NBFFI_EORPHANED);
    reply = nbffi_task_reply(close, &len);
    assert_non_null(strstr(reply, "fini reported 1 thread(s) still running "
                           "at the close deadline"));
    nbffi_task_release(close);
    nbffi_runtime_free(rt);

    t_wait_task(host, sleep);
    assert_int_equal(nbffi_task_status(sleep), NBFFI_ECLOSED);
    assert_int_equal(nbffi_task_leaked(sleep), 1);
    nbffi_task_release(sleep);

    t_host_finish(host);
}


static void
test_caller_gave_up_cancels_async_handler(void **state)
{
    nbffi_host_t     *host;
    nbffi_task_t     *gone, *task;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_GATE_CFG, ""));

    gone = t_post(host, rt, "forever", "", 0);

    /* answered after forever has started (one loop, tasks run in order) */
    task = t_ask(host, rt, "waiting_count", "");
    nbffi_task_release(task);

    /* the host gives up: the handler sees CancelledError */
    nbffi_task_release(gone);

    t_ask_is(host, rt, "wait_cancelled", "", 0,
             "cancelled: the caller gave up");

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_bad_cfg(void **state)
{
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();

    t_load_fails(host, "", "cfg is empty");
    t_load_fails(host, "{\"handler\": ", "cfg is not valid JSON");
    t_load_fails(host, "{\"handler\": \"t_echo\", \"bogus\": 1}",
                 "unknown cfg key(s) bogus");
    t_load_fails(host, "no_such_module_here",
                 "ModuleNotFoundError: No module named "
                 "'no_such_module_here'");
    t_load_fails(host, t_cfg("{\"handler\": \"t_syntax\", "
                             "\"path\": [\"%s\"]%s}", ""),
                 "SyntaxError");
    t_load_fails(host, t_cfg("{\"handler\": \"t_raises\", "
                             "\"path\": [\"%s\"]%s}", ""),
                 "RuntimeError: import-time failure");
    t_load_fails(host, t_cfg("{\"handler\": \"t_echo:Nope\", "
                             "\"path\": [\"%s\"]%s}", ""),
                 "AttributeError: module 't_echo' has no attribute 'Nope'");
    t_load_fails(host, t_cfg(T_ECHO_CFG, ", \"venv\": \"/nonexistent\""),
                 "/nonexistent is not a virtualenv");
    t_load_fails(host, t_cfg(T_ECHO_CFG, ", \"batch\": {\"echo\": {}}"),
                 "has no echo_batch method");

    /* the interpreter is fine after all of that */
    rt = t_load(host, t_cfg(T_ECHO_CFG, ""));
    t_ask_is(host, rt, "echo", "ok", 0, "ok");

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_venv_site_packages(void **state)
{
    char              dir[] = "/tmp/t_py_venvXXXXXX", path[512], cfg[1024];
    FILE             *f;
    nbffi_host_t     *host;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    (void) state;

    /* a minimal venv: pyvenv.cfg and lib/pythonX.Y/site-packages */
    assert_non_null(mkdtemp(dir));
    (void) snprintf(path, sizeof(path), "%s/pyvenv.cfg", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    (void) fputs("home = /usr/bin\n", f);
    assert_int_equal(fclose(f), 0);
    (void) snprintf(path, sizeof(path), "%s/lib", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    (void) snprintf(path, sizeof(path), "%s/lib/python" T_PY_VERSION, dir);
    assert_int_equal(mkdir(path, 0755), 0);
    (void) snprintf(path, sizeof(path),
                    "%s/lib/python" T_PY_VERSION "/site-packages", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    (void) snprintf(path, sizeof(path),
                    "%s/lib/python" T_PY_VERSION "/site-packages/t_venvmod.py",
                    dir);
    f = fopen(path, "w");
    assert_non_null(f);
    (void) fputs("def where(payload):\n    return __file__\n", f);
    assert_int_equal(fclose(f), 0);

    host = t_host();
    (void) snprintf(cfg, sizeof(cfg),
                    "{\"handler\": \"t_venvmod\", \"venv\": \"%s\"}", dir);
    rt = t_load(host, cfg);

    task = t_ask(host, rt, "where", "");
    assert_int_equal(nbffi_task_status(task), 0);
    assert_int_equal(strcmp(t_text(task), path), 0);
    nbffi_task_release(task);

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);

    assert_int_equal(nftw(dir, t_rm, 16, FTW_DEPTH | FTW_PHYS), 0);
}


static void
test_logging_reaches_host(void **state)
{
    int               n, level, found_warn, found_debug, found_start;
    char              line[4096];
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_ECHO_CFG, ", \"log_level\": \"INFO\""));

    t_ask_is(host, rt, "warn", "w1", 0, "ok");

    found_warn = found_debug = found_start = 0;

    while ((n = nbffi_host_log_next(host, &level, line, sizeof(line), NULL))
           > 0)
    {
        if (strcmp(line, "t_echo: warned w1") == 0) {
            assert_int_equal(level, NBFFI_LOG_WARN);
            found_warn++;
        }
        if (strstr(line, "debug w1") != NULL) {
            found_debug++;
        }
        if (strncmp(line, "nbffi: serving t_echo (blocking)", 32) == 0) {
            assert_int_equal(level, NBFFI_LOG_INFO);
            found_start++;
        }
    }

    assert_int_equal(found_warn, 1);
    assert_int_equal(found_debug, 0);    /* below log_level */
    assert_int_equal(found_start, 1);

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


static void
test_runtimes_share_interpreter(void **state)
{
    nbffi_host_t     *host;
    nbffi_runtime_t  *a, *b;

    (void) state;

    host = t_host();
    a = t_load(host, t_cfg(T_ECHO_CFG, ""));
    b = t_load(host, t_cfg(T_ECHO_CFG, ""));

    t_ask_is(host, a, "put", "from a", 0, "ok");

    /* one interpreter: b imports the same module object */
    t_ask_is(host, b, "get", "", 0, "from a");

    assert_int_equal(t_close_free(a, T_STOP_MS), NBFFI_RT_CLOSED);

    t_ask_is(host, b, "echo", "b lives on", 0, "b lives on");

    assert_int_equal(t_close_free(b, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


/*
 * Reads the stream of task (posted with NBFFI_CALL_STREAM) to its end:
 * the number of chunks, each checked to start with its number "i:" and
 * the window never exceeded.
 */
static int
t_read_stream(nbffi_host_t *host, nbffi_task_t *task, unsigned window)
{
    int            n, done, chunks;
    char           want[32];
    size_t         len;
    const void    *data;
    nbffi_task_t  *out[4];

    chunks = 0;
    done = 0;

    for ( ;; ) {
        assert_true(nbffi_task_chunks(task, NULL) <= window);

        while (nbffi_task_next_chunk(task, &data, &len) == 1) {
            n = snprintf(want, sizeof(want), "%d:", chunks);
            assert_true(len >= (size_t) n);
            assert_memory_equal(data, want, n);
            chunks++;
        }

        if (done) {
            return chunks;
        }

        nbffi_host_drain(host);
        assert_true(nbffi_host_reap_streams(host, out, 4) >= 0);

        if (nbffi_host_reap(host, out, 1) == 1) {
            assert_ptr_equal(out[0], task);
            done = 1;
            continue;
        }

        if (nbffi_task_chunks(task, NULL) == 0) {
            assert_true(t_readable(nbffi_host_fd(host), T_WAIT_MS));
        }
    }
}


static void
test_stream_meta_and_events(void **state)
{
    int               n, level, found;
    char              line[4096];
    size_t            len;
    const char       *name;
    const void       *data, *m;
    nbffi_task_t     *task;
    nbffi_event_t    *ev;
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    static const char  meta[] = "request_id\0r-7\0tenant\0acme\0";

    (void) state;

    host = t_host();
    rt = t_load(host, t_cfg(T_STREAM_CFG, ""));

    /* a plain generator on the asyncio loop, window 2: 100 chunks, "end" */
    task = NULL;
    assert_int_equal(nbffi_call_ex(host, rt, "count", 5, "100 64", 6, meta,
                                   sizeof(meta) - 1, 0, NBFFI_CALL_STREAM,
                                   2, &task), 0);
    assert_int_equal(t_read_stream(host, task, 2), 100);
    t_reply_is(task, 0, "end");
    nbffi_task_release(task);

    /* an async generator */
    task = NULL;
    assert_int_equal(nbffi_call_ex(host, rt, "acount", 6, "30 8", 4, NULL, 0,
                                   0, NBFFI_CALL_STREAM, 3, &task), 0);
    assert_int_equal(t_read_stream(host, task, 3), 30);
    t_reply_is(task, 0, "");
    nbffi_task_release(task);

    /* metadata: read by the handler, attached to its log line */
    task = NULL;
    assert_int_equal(nbffi_call_ex(host, rt, "ameta", 5, "x", 1, meta,
                                   sizeof(meta) - 1, 0, 0, 0, &task), 0);
    assert_ptr_equal(t_reap1(host), task);
    t_reply_is(task, 0, "{\"request_id\": \"r-7\", \"tenant\": \"acme\"}");
    nbffi_task_release(task);

    found = 0;
    while ((n = nbffi_host_log_next(host, &level, line, sizeof(line), NULL))
           > 0)
    {
        if (strcmp(line, "t_stream: async meta call x") == 0) {
            m = nbffi_host_log_meta(host, &len);
            assert_int_equal(len, sizeof(meta) - 1);
            assert_memory_equal(m, meta, len);
            assert_int_equal(level, NBFFI_LOG_WARN);
            found++;
        }
    }
    assert_int_equal(found, 1);

    /* events, in order, from a call */
    t_ask_is(host, rt, "emit", "tick 3 4", 0, "3");
    for (n = 0; n < 3; n++) {
        while (nbffi_host_event_next(host, &ev) == 0) {
            nbffi_host_drain(host);
            assert_true(t_readable(nbffi_host_fd(host), T_WAIT_MS));
        }
        name = nbffi_event_name(ev, &len);
        assert_string_equal(name, "tick");
        data = nbffi_event_data(ev, &len);
        assert_int_equal(len, 4);
        assert_int_equal(((const char *) data)[0], '0' + n);
        assert_ptr_equal(nbffi_event_runtime(ev), rt);
    }

    assert_int_equal(t_close_free(rt, T_STOP_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_sync_replies),
        cmocka_unit_test(test_exception_reply),
        cmocka_unit_test(test_large_payloads),
        cmocka_unit_test(test_async_calls_overlap),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_close_finishes_pending),
        cmocka_unit_test(test_close_timeout_cancels),
        cmocka_unit_test(test_stop_cancels_async_handlers),
        cmocka_unit_test(test_stop_interrupts_a_spinning_handler),
        cmocka_unit_test(test_caller_gave_up_cancels_async_handler),
        cmocka_unit_test(test_bad_cfg),
        cmocka_unit_test(test_venv_site_packages),
        cmocka_unit_test(test_logging_reaches_host),
        cmocka_unit_test(test_runtimes_share_interpreter),
        cmocka_unit_test(test_stream_meta_and_events),
        /* last: its thread stays in time.sleep */
        cmocka_unit_test(test_stop_leaves_a_thread_blocked_in_c),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
