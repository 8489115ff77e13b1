/* See harness.h. */

#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "harness.h"

#define T_REAP_BATCH  64
#define T_STASH_MAX   4096

/* Tasks reaped while t_wait_task waited for another one: t_reap returns
 * them first. */
static struct {
    nbffi_host_t  *host;
    nbffi_task_t  *task;
} t_stash[T_STASH_MAX];
static int  t_nstash;

static int t_unstash(nbffi_host_t *host, nbffi_task_t **out, int max);
static void t_ctl_gate(int *held, int value);

struct t_ctl *
t_ctl_get(void)
{
    void                 *h;
    struct t_ctl         *(*fn)(void);
    static struct t_ctl  *ctl;

    if (ctl != NULL) {
        return ctl;
    }

    /* The same copy that nbffi_runtime_load() opens (dlopen knows the
     * file), kept loaded: a test may set its knobs before the first load. */
    h = dlopen(T_CTL_PATH, RTLD_NOW | RTLD_LOCAL);
    assert_non_null(h);

    *(void **) &fn = dlsym(h, "t_ctl");
    assert_non_null(fn);

    ctl = fn();
    return ctl;
}

void
t_ctl_reset(void)
{
    struct t_ctl  *ctl;

    ctl = t_ctl_get();
    ctl->fini_hang_ms = 0;
    ctl->fini_stayed = 0;
    ctl->on_fini = NULL;
    ctl->fini_ud = NULL;
    t_ctl_release_fini();
    t_ctl_release_init();
}

/* Sets one of t_ctl's gates (fini_held, init_held) to held. */
static void
t_ctl_gate(int *held, int value)
{
    struct t_ctl  *ctl;

    ctl = t_ctl_get();

    assert_int_equal(pthread_mutex_lock(&ctl->gate_lock), 0);
    *held = value;
    assert_int_equal(pthread_cond_broadcast(&ctl->gate_cond), 0);
    assert_int_equal(pthread_mutex_unlock(&ctl->gate_lock), 0);
}

void
t_ctl_hold_fini(void)
{
    t_ctl_gate(&t_ctl_get()->fini_held, 1);
}

void
t_ctl_release_fini(void)
{
    t_ctl_gate(&t_ctl_get()->fini_held, 0);
}

void
t_ctl_hold_init(void)
{
    t_ctl_gate(&t_ctl_get()->init_held, 1);
}

void
t_ctl_release_init(void)
{
    t_ctl_gate(&t_ctl_get()->init_held, 0);
}

int
t_load_wait(nbffi_host_t *host, const char *lib, const char *search_path,
    const void *cfg, size_t cfg_len, uint32_t max_queue, uint64_t max_payload,
    int64_t start_deadline, unsigned flags, nbffi_runtime_t **rt, char *err,
    size_t err_len)
{
    int            status;
    size_t         len;
    const char    *msg;
    nbffi_task_t  *task;

    *rt = NULL;
    task = NULL;

    assert_int_equal(nbffi_runtime_load(host, lib, search_path, cfg, cfg_len,
                                        max_queue, max_payload,
                                        start_deadline, flags, rt, &task),
                     0);
    assert_non_null(*rt);
    assert_non_null(task);

    t_wait_task(host, task);

    status = nbffi_task_status(task);
    msg = nbffi_task_reply(task, &len);
    if (err != NULL && err_len != 0) {
        (void) snprintf(err, err_len, "%.*s", (int) len, msg);
    }
    nbffi_task_release(task);

    return status;
}

void
t_wait_task(nbffi_host_t *host, nbffi_task_t *task)
{
    int            i, n, found;
    int64_t        deadline;
    nbffi_task_t  *out[T_REAP_BATCH];

    deadline = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;
    found = 0;

    for (i = 0; i < t_nstash; i++) {
        if (t_stash[i].task == task) {
            t_stash[i] = t_stash[--t_nstash];
            return;
        }
    }

    while (!found) {
        assert_true(nbffi_host_wait(host, deadline));
        nbffi_host_drain(host);

        n = nbffi_host_reap(host, out, T_REAP_BATCH);
        assert_true(n >= 0);

        for (i = 0; i < n; i++) {
            if (out[i] == task) {
                found = 1;
                continue;
            }
            assert_true(t_nstash < T_STASH_MAX);
            t_stash[t_nstash].host = host;
            t_stash[t_nstash].task = out[i];
            t_nstash++;
        }
    }
}

int
t_close_free(nbffi_runtime_t *rt, int64_t ms)
{
    int  rc, state;

    rc = nbffi_runtime_close(rt, ms ? nbffi_now_ns() + ms * 1000000 : 0,
                             NULL);
    assert_true(rc == 0 || rc == NBFFI_EALREADY);

    /* past the close deadline and fini's grace */
    state = nbffi_runtime_wait(rt, nbffi_now_ns()
                                   + (int64_t) 2 * T_WAIT_MS * 1000000);
    assert_true(state == NBFFI_RT_CLOSED || state == NBFFI_RT_ORPHANED);

    nbffi_runtime_free(rt);
    return state;
}

static int
t_unstash(nbffi_host_t *host, nbffi_task_t **out, int max)
{
    int  i, n;

    n = 0;
    for (i = 0; i < t_nstash && n < max; /* void */) {
        if (t_stash[i].host == host) {
            out[n++] = t_stash[i].task;
            t_stash[i] = t_stash[--t_nstash];
        } else {
            i++;
        }
    }

    return n;
}

nbffi_runtime_t *
t_load_ctl(nbffi_host_t *host, uint32_t max_queue, uint64_t max_payload,
    nbffi_queue_t **q)
{
    char              err[256];
    nbffi_runtime_t  *rt;

    err[0] = '\0';

    assert_int_equal(t_load_wait(host, T_CTL_PATH, NULL, "", 0, max_queue,
                                 max_payload, 0, 0, &rt, err, sizeof(err)),
                     0);
    t_ctl_reset();

    if (q != NULL) {
        *q = t_ctl_get()->q;
        assert_non_null(*q);
    }

    return rt;
}

int
t_fx_setup(void **state)
{
    struct t_fx  *fx;

    fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);

    assert_int_equal(nbffi_host_new(&fx->host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    fx->rt = t_load_ctl(fx->host, 0, 0, &fx->q);
    fx->allocated = nbffi_host_tasks_allocated(fx->host);

    *state = fx;

    return 0;
}

int
t_fx_teardown(void **state)
{
    struct t_fx  *fx;

    fx = *state;

    /* A test that leaves a popped task unanswered orphans the runtime. */
    if (fx->rt != NULL) {
        assert_int_equal(t_close_free(fx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    }

    t_host_finish(fx->host);
    free(fx);

    return 0;
}

void
t_host_finish(nbffi_host_t *host)
{
    int              i, n, rc;
    int64_t          deadline;
    nbffi_task_t    *out[T_REAP_BATCH];
    struct timespec  ms = { 0, 1000000 };

    deadline = nbffi_now_ns() + (int64_t) T_WAIT_MS * 1000000;

    for ( ;; ) {
        n = t_unstash(host, out, T_REAP_BATCH);
        if (n == 0) {
            n = nbffi_host_reap(host, out, T_REAP_BATCH);
            assert_true(n >= 0);
        }

        for (i = 0; i < n; i++) {
            nbffi_task_release(out[i]);
        }

        if (n == 0) {
            if (nbffi_host_tasks_live(host) == 0) {
                break;
            }
            assert_true(nbffi_host_wait(host, deadline));
        }
    }

    assert_int_equal(nbffi_host_tasks_allocated(host),
                     nbffi_host_tasks_freed(host)
                     + nbffi_host_tasks_leaked(host));

    /* A runtime freed while open is closed by a core thread that gives
     * the host no sign when it ends (no close task): the host is busy
     * until then, so poll, bounded. */
    while ((rc = nbffi_host_free(host)) == NBFFI_EBUSY
           && nbffi_now_ns() < deadline)
    {
        (void) nanosleep(&ms, NULL);
    }
    assert_int_equal(rc, 0);
}

void
t_event_init(struct t_event *ev)
{
    assert_int_equal(pthread_mutex_init(&ev->lock, NULL), 0);
    assert_int_equal(pthread_cond_init(&ev->cond, NULL), 0);
    ev->set = 0;
}

void
t_event_set(struct t_event *ev)
{
    (void) pthread_mutex_lock(&ev->lock);
    ev->set = 1;
    (void) pthread_cond_broadcast(&ev->cond);
    (void) pthread_mutex_unlock(&ev->lock);
}

void
t_event_wait(struct t_event *ev)
{
    (void) pthread_mutex_lock(&ev->lock);
    while (!ev->set) {
        (void) pthread_cond_wait(&ev->cond, &ev->lock);
    }
    (void) pthread_mutex_unlock(&ev->lock);
}

void
t_event_destroy(struct t_event *ev)
{
    (void) pthread_cond_destroy(&ev->cond);
    (void) pthread_mutex_destroy(&ev->lock);
}

int
t_readable(int fd, int timeout_ms)
{
    int            rc;
    struct pollfd  p;

    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;

    do {
        rc = poll(&p, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);

    assert_true(rc >= 0);

    return rc == 1 && (p.revents & POLLIN);
}

size_t
t_sock_drain(int fd)
{
    char     buf[256];
    size_t   total;
    ssize_t  n;

    total = 0;

    for ( ;; ) {
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0) {
            break;
        }
        total += (size_t) n;
    }

    return total;
}

nbffi_task_t *
t_call(nbffi_host_t *host, nbffi_runtime_t *rt, const char *method,
    const char *payload)
{
    nbffi_task_t  *task;

    task = NULL;

    assert_int_equal(nbffi_call(host, rt, method, strlen(method), payload,
                                strlen(payload), 0, 0, &task), 0);
    assert_non_null(task);

    return task;
}

nbffi_task_t *
t_pop1(nbffi_queue_t *q)
{
    nbffi_task_t  *task;

    task = NULL;
    assert_int_equal(nbffi_queue_pop(q, &task, 1, 0), 1);
    assert_non_null(task);

    return task;
}

int
t_reap(nbffi_host_t *host, nbffi_task_t **out, int max)
{
    int  n, fd;

    fd = nbffi_host_fd(host);
    assert_true(fd >= 0);

    n = t_unstash(host, out, max);
    if (n > 0) {
        return n;
    }

    for ( ;; ) {
        nbffi_host_drain(host);

        n = nbffi_host_reap(host, out, max);
        assert_true(n >= 0);

        if (n > 0) {
            return n;
        }

        assert_true(t_readable(fd, T_WAIT_MS));
    }
}

nbffi_task_t *
t_reap1(nbffi_host_t *host)
{
    nbffi_task_t  *task;

    assert_int_equal(t_reap(host, &task, 1), 1);

    return task;
}

nbffi_stats_t
t_stats(nbffi_runtime_t *rt)
{
    nbffi_stats_t  st;

    memset(&st, 0xff, sizeof(st));
    nbffi_runtime_stats(rt, &st);

    return st;
}

void
t_reply_is(nbffi_task_t *task, int status, const char *reply)
{
    size_t      len, want;
    const void  *p;

    assert_int_equal(nbffi_task_status(task), status);

    want = reply != NULL ? strlen(reply) : 0;
    len = (size_t) -1;
    p = nbffi_task_reply(task, &len);

    assert_int_equal(len, want);
    if (want > 0) {
        assert_non_null(p);
        assert_memory_equal(p, reply, want);
    }
}
