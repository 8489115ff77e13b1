/*
 * Error paths that only a failing system call or allocation reaches.  The
 * core is linked statically and its calls go through -Wl,--wrap: a wrapper
 * fails once when armed with T_FAIL(), with the errno queued by
 * will_return, and passes through otherwise.  Faults are armed per thread:
 * only the test thread's own calls fail, never those of the core threads
 * that start and stop runtimes meanwhile.
 */

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

enum {
    T_malloc = 1 << 0,
    T_calloc = 1 << 1,
    T_eventfd = 1 << 2,
    T_open64 = 1 << 3,
    T_mkdtemp = 1 << 4,
    T_socket = 1 << 5,
    T_accept4 = 1 << 6,
    T_pthread_create = 1 << 7
};

#define T_FAIL(fn, err)                                                      \
    do {                                                                     \
        t_armed |= T_##fn;                                                   \
        will_return(__wrap_##fn, err);                                       \
    } while (0)

static _Thread_local unsigned  t_armed;
static char                    t_tmpdir[PATH_MAX];

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
int __real_eventfd(unsigned initval, int flags);
int __real_open64(const char *path, int flags, ...);
char *__real_mkdtemp(char *tmpl);
int __real_socket(int domain, int type, int protocol);
int __real_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *attr,
    void *(*fn)(void *), void *arg);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
int __wrap_eventfd(unsigned initval, int flags);
int __wrap_open64(const char *path, int flags, ...);
char *__wrap_mkdtemp(char *tmpl);
int __wrap_socket(int domain, int type, int protocol);
int __wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
    void *(*fn)(void *), void *arg);

static int
t_disarm(unsigned fn)
{
    if (!(t_armed & fn)) {
        return 0;
    }

    t_armed &= ~fn;

    return 1;
}

void *
__wrap_malloc(size_t size)
{
    if (t_disarm(T_malloc)) {
        errno = mock_type(int);
        return NULL;
    }

    return __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
    if (t_disarm(T_calloc)) {
        errno = mock_type(int);
        return NULL;
    }

    return __real_calloc(n, size);
}

int
__wrap_eventfd(unsigned initval, int flags)
{
    if (t_disarm(T_eventfd)) {
        errno = mock_type(int);
        return -1;
    }

    return __real_eventfd(initval, flags);
}

int
__wrap_open64(const char *path, int flags, ...)
{
    if (t_disarm(T_open64)) {
        errno = mock_type(int);
        return -1;
    }

    /* The core never creates files: no mode argument to pass on. */
    return __real_open64(path, flags);
}

char *
__wrap_mkdtemp(char *tmpl)
{
    if (t_disarm(T_mkdtemp)) {
        errno = mock_type(int);
        return NULL;
    }

    return __real_mkdtemp(tmpl);
}

int
__wrap_socket(int domain, int type, int protocol)
{
    if (t_disarm(T_socket)) {
        errno = mock_type(int);
        return -1;
    }

    return __real_socket(domain, type, protocol);
}

int
__wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    if (t_disarm(T_accept4)) {
        errno = mock_type(int);
        return -1;
    }

    return __real_accept4(fd, sa, len, flags);
}

int
__wrap_pthread_create(pthread_t *t, const pthread_attr_t *attr,
    void *(*fn)(void *), void *arg)
{
    if (t_disarm(T_pthread_create)) {
        return mock_type(int);
    }

    return __real_pthread_create(t, attr, fn, arg);
}

/* Every test ends with nothing armed: each fault was reached. */
static int
t_check_disarmed(void **state)
{
    (void) state;

    assert_int_equal(t_armed, 0);

    return 0;
}

static int
t_fx_teardown_disarmed(void **state)
{
    (void) t_check_disarmed(state);

    return t_fx_teardown(state);
}

/* Entries left in the private TMPDIR (listen makes its directory there). */
static int
t_tmpdir_entries(void)
{
    int             n;
    DIR            *d;
    struct dirent  *e;

    d = opendir(t_tmpdir);
    assert_non_null(d);

    n = 0;
    while ((e = readdir(d)) != NULL) {
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    }

    (void) closedir(d);

    return n;
}

static int
t_group_setup(void **state)
{
    (void) state;

    strcpy(t_tmpdir, "/tmp/nbffi-test-XXXXXX");
    assert_non_null(mkdtemp(t_tmpdir));
    assert_int_equal(setenv("TMPDIR", t_tmpdir, 1), 0);

    return 0;
}

static int
t_group_teardown(void **state)
{
    (void) state;

    assert_int_equal(rmdir(t_tmpdir), 0);

    return 0;
}

static void
test_host_new_no_memory(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    host = NULL;
    T_FAIL(calloc, ENOMEM);
    assert_int_equal(nbffi_host_new(&host, 0), NBFFI_ENOMEM);
    assert_null(host);
}

static void
test_host_new_eventfd_fails(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    host = NULL;
    T_FAIL(eventfd, EMFILE);
    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD),
                     NBFFI_EIO);
    assert_null(host);
}

static void
test_host_new_socket_placeholder_fails(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    host = NULL;
    T_FAIL(open64, EMFILE);
    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_SOCKET),
                     NBFFI_EIO);
    assert_null(host);
}

static void
test_listen_mkdtemp_fails(void **state)
{
    char           path[PATH_MAX];
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_SOCKET), 0);

    T_FAIL(mkdtemp, EACCES);
    assert_int_equal(nbffi_host_listen(host, path, sizeof(path)), NBFFI_EIO);
    assert_int_equal(t_tmpdir_entries(), 0);

    t_host_finish(host);
}

static void
test_listen_socket_fails(void **state)
{
    char           path[PATH_MAX];
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_SOCKET), 0);

    T_FAIL(socket, EMFILE);
    assert_int_equal(nbffi_host_listen(host, path, sizeof(path)), NBFFI_EIO);

    /* The private directory made before the failure is gone. */
    assert_int_equal(t_tmpdir_entries(), 0);

    t_host_finish(host);
}

static void
test_accept_fails_then_retries(void **state)
{
    int                 fd;
    char                path[PATH_MAX];
    nbffi_host_t       *host;
    struct sockaddr_un  sa;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_SOCKET), 0);
    assert_int_equal(nbffi_host_listen(host, path, sizeof(path)), 0);

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);

    T_FAIL(accept4, EMFILE);
    assert_int_equal(nbffi_host_accept(host), NBFFI_EIO);

    /* The pending connection is still there for the next try. */
    assert_int_equal(nbffi_host_accept(host), 0);
    assert_int_equal(t_tmpdir_entries(), 0);

    t_host_finish(host);
    (void) close(fd);
}

/* t_ctl's count of inits; 0 while the core has not loaded it yet. */
static unsigned
t_ctl_inits(void)
{
    void  *h;

    h = dlopen(T_CTL_PATH, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) {
        return 0;
    }
    (void) dlclose(h);

    return t_ctl_get()->inits;
}

/* Loads t_ctl on host expecting rc: nothing started, nothing to free. */
static void
t_load_refused(nbffi_host_t *host, int rc)
{
    unsigned          inits;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;

    inits = t_ctl_inits();
    rt = NULL;
    task = NULL;

    assert_int_equal(nbffi_runtime_load(host, T_CTL_PATH, NULL, "cfg", 3, 0,
                                        0, 0, 0, &rt, &task), rc);
    assert_null(rt);
    assert_null(task);
    assert_int_equal(t_ctl_inits(), inits);

    /* No runtime or task was counted on the host, no op runs for it: it
     * can be freed at once (and LeakSanitizer sees the rest). */
    assert_int_equal(nbffi_host_tasks_allocated(host), 0);
    assert_int_equal(nbffi_host_free(host), 0);
}

static void
test_load_no_memory(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);

    T_FAIL(calloc, ENOMEM);
    t_load_refused(host, NBFFI_ENOMEM);
}

static void
test_load_copy_no_memory(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);

    /* The copy of lib, once the runtime is allocated. */
    T_FAIL(malloc, ENOMEM);
    t_load_refused(host, NBFFI_ENOMEM);
}

static void
test_load_thread_fails(void **state)
{
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, 0), 0);

    /* No core thread to start it on: refused with NBFFI_EIO, and what
     * was made for it (runtime, queue, load task) is undone. */
    T_FAIL(pthread_create, EAGAIN);
    t_load_refused(host, NBFFI_EIO);
}

static void
test_close_thread_fails(void **state)
{
    unsigned       finis;
    struct t_fx   *fx;
    nbffi_task_t  *task, *ctask;

    fx = *state;

    finis = t_ctl_get()->finis;
    task = t_call(fx->host, fx->rt, "m", "p");

    /* No core thread to run fini on: the queue is closed, fini is never
     * called on this thread, and the runtime is orphaned at once. */
    ctask = NULL;
    T_FAIL(pthread_create, EAGAIN);
    assert_int_equal(nbffi_runtime_close(fx->rt, 0, &ctask), NBFFI_EIO);
    assert_null(ctask);
    assert_int_equal(nbffi_runtime_state(fx->rt), NBFFI_RT_ORPHANED);
    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, "p", 1, 0, 0,
                                &ctask), NBFFI_ECLOSED);

    /* The queued task completes as closed, and is not leaked: no thread
     * of the runtime ever held it. */
    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, NBFFI_ECLOSED, NULL);
    assert_false(nbffi_task_leaked(task));
    nbffi_task_release(task);

    assert_int_equal(nbffi_runtime_close(fx->rt, 0, NULL), NBFFI_EALREADY);
    nbffi_runtime_free(fx->rt);
    fx->rt = NULL;
    assert_int_equal(t_ctl_get()->finis, finis);
}

static void
test_call_no_memory(void **state)
{
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;

    task = NULL;
    T_FAIL(malloc, ENOMEM);
    assert_int_equal(nbffi_call(fx->host, fx->rt, "m", 1, "p", 1, 0, 0,
                                &task), NBFFI_ENOMEM);
    assert_null(task);

    assert_int_equal(t_stats(fx->rt).posted, 0);
    assert_int_equal(t_stats(fx->rt).queued, 0);
    assert_int_equal(nbffi_host_tasks_allocated(fx->host), fx->allocated);
}

static void
test_respond_no_memory(void **state)
{
    char           big[4096];
    struct t_fx   *fx;
    nbffi_task_t  *task;

    fx = *state;
    memset(big, 'r', sizeof(big));

    task = t_call(fx->host, fx->rt, "m", "p");

    /* Too big for the task's own bytes: the copy needs an allocation. */
    T_FAIL(malloc, ENOMEM);
    assert_int_equal(nbffi_task_respond(t_pop1(fx->q), 0, big, sizeof(big)),
                     NBFFI_ENOMEM);

    /* Answered all the same. */
    assert_ptr_equal(t_reap1(fx->host), task);
    t_reply_is(task, NBFFI_ENOMEM, NULL);
    nbffi_task_release(task);
}

static void
test_queue_fd_fails_then_retries(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    T_FAIL(eventfd, EMFILE);
    assert_int_equal(nbffi_queue_fd(fx->q), NBFFI_EIO);

    assert_true(nbffi_queue_fd(fx->q) >= 0);
}

static void
test_log_line_no_memory(void **state)
{
    int               level;
    char              buf[32];
    nbffi_host_t     *host;
    nbffi_queue_t    *q;
    nbffi_runtime_t  *rt;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_LOG_QUEUE), 0);
    rt = t_load_ctl(host, 0, 0, &q);

    T_FAIL(malloc, ENOMEM);
    nbffi_log(q, NBFFI_LOG_ERR, "lost", 4);
    nbffi_log(q, NBFFI_LOG_ERR, "kept", 4);

    assert_int_equal(nbffi_host_log_next(host, &level, buf, sizeof(buf),
                                         NULL), 4);
    assert_string_equal(buf, "kept");
    assert_int_equal(nbffi_host_log_next(host, &level, buf, sizeof(buf),
                                         NULL), 0);

    assert_int_equal(t_close_free(rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(host);
}

static void *
t_never(void *arg)
{
    return arg;
}

static void
test_thread_create_fails(void **state)
{
    sigset_t   want, before, after;
    pthread_t  tid;

    (void) state;

    assert_int_equal(sigemptyset(&want), 0);
    assert_int_equal(sigaddset(&want, SIGUSR2), 0);
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &want, &before), 0);

    T_FAIL(pthread_create, EAGAIN);
    assert_int_equal(nbffi_thread_create(&tid, t_never, NULL), -EAGAIN);

    /* The caller's mask is back even on failure. */
    assert_int_equal(pthread_sigmask(SIG_SETMASK, &before, &after), 0);
    assert_int_equal(sigismember(&after, SIGUSR2), 1);
    assert_int_equal(sigismember(&after, SIGTERM), 0);
}

#define T_ONE(fn)                                                            \
    cmocka_unit_test_teardown(fn, t_check_disarmed)
#define T_FX_FAULT(fn)                                                       \
    cmocka_unit_test_setup_teardown(fn, t_fx_setup, t_fx_teardown_disarmed)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_ONE(test_host_new_no_memory),
        T_ONE(test_host_new_eventfd_fails),
        T_ONE(test_host_new_socket_placeholder_fails),
        T_ONE(test_listen_mkdtemp_fails),
        T_ONE(test_listen_socket_fails),
        T_ONE(test_accept_fails_then_retries),
        T_ONE(test_load_no_memory),
        T_ONE(test_load_copy_no_memory),
        T_ONE(test_load_thread_fails),
        T_FX_FAULT(test_close_thread_fails),
        T_FX_FAULT(test_call_no_memory),
        T_FX_FAULT(test_respond_no_memory),
        T_FX_FAULT(test_queue_fd_fails_then_retries),
        T_ONE(test_log_line_no_memory),
        T_ONE(test_thread_create_fails),
    };

    return cmocka_run_group_tests(tests, t_group_setup, t_group_teardown);
}
