/*
 * The host: a done queue (a lock-free stack that answering threads push
 * onto and the host thread takes whole) and its completion notifier.
 *
 * Wake-ups are coalesced by the signaled flag: the first completion after
 * a reap writes the notifier, the others see the flag and do not.  The
 * reaper clears the flag before it takes the stack, so a completion pushed
 * after the take always writes again: no lost wake-up.
 *
 * The socket notifier keeps one stable descriptor number for the whole
 * life of the host (first /dev/null, then the accepted connection put in
 * its place with dup3), so an answering thread can never write to a number
 * that was closed and reused for something else.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbffi_int.h"


static void nbffi__host_listen_cleanup(nbffi_host_t *host);
static nbffi_task_t *nbffi__host_take(nbffi_host_t *host);
static int nbffi__host_ready(nbffi_host_t *host, nbffi_task_t *task);
static void nbffi__host_count(nbffi_runtime_t *rt, uint64_t ok,
    uint64_t failed, uint64_t timed_out, uint64_t finished);
static int64_t nbffi__env_ms(const char *name);


int
nbffi_host_new(nbffi_host_t **out, unsigned flags)
{
    nbffi_host_t  *host;

    if (out == NULL
        || (flags & ~(NBFFI_HOST_NOTIFY_SOCKET | NBFFI_HOST_LOG_QUEUE)))
    {
        return NBFFI_EINVAL;
    }

    host = calloc(1, sizeof(nbffi_host_t));
    if (host == NULL) {
        return NBFFI_ENOMEM;
    }

    host->flags = flags;
    host->listen_fd = -1;
    host->init_timeout_ms = nbffi__env_ms("NBFFI_INIT_TIMEOUT_MS");
    atomic_init(&host->done, NULL);
    atomic_init(&host->signaled, 0);
    atomic_init(&host->pushers, 0);

    if (flags & NBFFI_HOST_NOTIFY_SOCKET) {
        host->notify_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    } else {
        host->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    }

    if (host->notify_fd < 0) {
        free(host);
        return NBFFI_EIO;
    }

    if (pthread_mutex_init(&host->log_lock, NULL) != 0) {
        (void) close(host->notify_fd);
        free(host);
        return NBFFI_ENOMEM;
    }

    *out = host;
    return 0;
}


int
nbffi_host_free(nbffi_host_t *host)
{
    if (host->runtimes != 0 || host->allocated != host->freed) {
        return NBFFI_EBUSY;
    }

    /* Every task is freed, but the thread that answered the last one may
     * still be about to write the notifier: a few instructions away. */
    while (atomic_load_explicit(&host->pushers, memory_order_acquire) != 0) {
        nbffi__cpu_relax();
    }

    nbffi__host_listen_cleanup(host);

    if (host->orphans != 0) {
        /* A stuck init may still log through this host (see load.c): it
         * finds it gone, so the memory and the lock stay. */
        pthread_mutex_lock(&host->log_lock);
        host->gone = 1;
        nbffi__log_destroy(host);
        pthread_mutex_unlock(&host->log_lock);
        (void) close(host->notify_fd);
        return 0;
    }

    (void) close(host->notify_fd);
    nbffi__log_destroy(host);
    (void) pthread_mutex_destroy(&host->log_lock);
    free(host);
    return 0;
}


void
nbffi_host_set_init_timeout(nbffi_host_t *host, int64_t timeout_ms)
{
    host->init_timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
}


int
nbffi_host_fd(nbffi_host_t *host)
{
    if (host->flags & NBFFI_HOST_NOTIFY_SOCKET) {
        return NBFFI_EINVAL;
    }
    return host->notify_fd;
}


int
nbffi_host_listen(nbffi_host_t *host, char *buf, size_t len)
{
    int                 fd;
    char                tmpl[PATH_MAX];
    const char         *tmp;
    struct sockaddr_un  sa;

    if (!(host->flags & NBFFI_HOST_NOTIFY_SOCKET) || buf == NULL) {
        return NBFFI_EINVAL;
    }

    nbffi__host_listen_cleanup(host);

    tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }

    if ((size_t) snprintf(tmpl, sizeof(tmpl), "%s/nbffi-XXXXXX", tmp)
        >= sizeof(tmpl))
    {
        return NBFFI_E2BIG;
    }

    /* mkdtemp makes the directory 0700: only this user can connect. */
    if (mkdtemp(tmpl) == NULL) {
        return NBFFI_EIO;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;

    if (strlen(tmpl) + sizeof("/n") > sizeof(sa.sun_path)
        || strlen(tmpl) + sizeof("/n") > len)
    {
        (void) rmdir(tmpl);
        return NBFFI_E2BIG;
    }

    (void) snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/n", tmpl);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        (void) rmdir(tmpl);
        return NBFFI_EIO;
    }

    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(fd, 4) != 0)
    {
        (void) close(fd);
        (void) unlink(sa.sun_path);
        (void) rmdir(tmpl);
        return NBFFI_EIO;
    }

    host->listen_fd = fd;
    (void) snprintf(host->listen_dir, sizeof(host->listen_dir), "%s", tmpl);
    (void) snprintf(host->listen_path, sizeof(host->listen_path), "%s",
                    sa.sun_path);
    (void) snprintf(buf, len, "%s", sa.sun_path);
    return 0;
}


int
nbffi_host_accept(nbffi_host_t *host)
{
    int            fd;
    struct ucred   cred;
    socklen_t      clen;

    if (host->listen_fd < 0) {
        return NBFFI_EINVAL;
    }

    for ( ;; ) {
        fd = accept4(host->listen_fd, NULL, NULL,
                     SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NBFFI_EBUSY
                                                          : NBFFI_EIO;
    }

    clen = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0
        || cred.pid != getpid())
    {
        (void) close(fd);
        return NBFFI_EPERM;
    }

    /* Nobody else may connect now: the path goes at once. */
    nbffi__host_listen_cleanup(host);

    if (dup3(fd, host->notify_fd, O_CLOEXEC) < 0) {
        (void) close(fd);
        return NBFFI_EIO;
    }
    (void) close(fd);

    /* Completions that came while nobody listened wrote nowhere. */
    atomic_store(&host->signaled, 0);
    if (nbffi_host_pending(host)) {
        nbffi__host_notify(host);
    }

    return 0;
}


static void
nbffi__host_listen_cleanup(nbffi_host_t *host)
{
    if (host->listen_fd < 0) {
        return;
    }

    (void) close(host->listen_fd);
    (void) unlink(host->listen_path);
    (void) rmdir(host->listen_dir);
    host->listen_fd = -1;
    host->listen_path[0] = '\0';
    host->listen_dir[0] = '\0';
}


void
nbffi_host_kick(nbffi_host_t *host)
{
    atomic_store(&host->signaled, 1);
    nbffi__host_notify(host);
}


void
nbffi_host_drain(nbffi_host_t *host)
{
    uint64_t  n;

    if (host->flags & NBFFI_HOST_NOTIFY_SOCKET) {
        return;
    }

    (void) !read(host->notify_fd, &n, sizeof(n));
}


void
nbffi__host_notify(nbffi_host_t *host)
{
    ssize_t   n;
    uint64_t  one = 1;

    if (host->flags & NBFFI_HOST_NOTIFY_SOCKET) {
        /* EAGAIN: bytes are already waiting; EPIPE: nobody listens */
        n = send(host->notify_fd, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) {
            /* /dev/null before the handshake */
            (void) !write(host->notify_fd, "!", 1);
        }

    } else {
        (void) !write(host->notify_fd, &one, sizeof(one));
    }
}


void
nbffi__host_push_done(nbffi_host_t *host, nbffi_task_t *task)
{
    nbffi_task_t  *head;

    atomic_fetch_add_explicit(&host->pushers, 1, memory_order_acquire);

    head = atomic_load_explicit(&host->done, memory_order_relaxed);
    do {
        task->dnext = head;
    } while (!atomic_compare_exchange_weak(&host->done, &head, task));

    /* Both seq_cst: a push after the reaper's take sees its cleared flag.
     * The plain load first spares a locked write per completion. */
    if (atomic_load(&host->signaled) == 0
        && !atomic_exchange(&host->signaled, 1))
    {
        nbffi__host_notify(host);
    }

    atomic_fetch_sub_explicit(&host->pushers, 1, memory_order_release);
}


/* Takes the done stack into the FIFO, oldest first; returns the FIFO. */
static nbffi_task_t *
nbffi__host_take(nbffi_host_t *host)
{
    nbffi_task_t  *list, *rev, *next, *last;

    atomic_store(&host->signaled, 0);
    list = atomic_exchange_explicit(&host->done, NULL, memory_order_acquire);
    if (list == NULL) {
        return host->fifo_head;
    }

    last = list;    /* the newest: the FIFO's tail once reversed */
    rev = NULL;
    while (list != NULL) {
        next = list->dnext;
        list->dnext = rev;
        rev = list;
        list = next;
    }

    if (host->fifo_tail == NULL) {
        host->fifo_head = rev;
    } else {
        host->fifo_tail->dnext = rev;
    }

    host->fifo_tail = last;

    return host->fifo_head;
}


int
nbffi_host_reap(nbffi_host_t *host, nbffi_task_t **out, int max)
{
    int               n;
    nbffi_task_t     *task;
    nbffi_runtime_t  *rt;
    uint64_t          ok, failed, timed_out, finished;

    if (out == NULL || max <= 0) {
        return NBFFI_EINVAL;
    }

    n = 0;
    rt = NULL;
    ok = failed = timed_out = finished = 0;
    task = nbffi__host_take(host);

    while (n < max && task != NULL) {
        host->fifo_head = task->dnext;
        if (host->fifo_head == NULL) {
            host->fifo_tail = NULL;
        }

        if (task->released) {
            /* counted when the host released it */
            nbffi__task_free(task);

        } else {
            /* counters are shared with other hosts: add them per run of
             * tasks of one runtime, not per task */
            if (task->rt != rt) {
                nbffi__host_count(rt, ok, failed, timed_out, finished);
                rt = task->rt;
                ok = failed = timed_out = finished = 0;
            }

            if (task->status == 0) {
                ok++;
            } else if (task->status == NBFFI_ETIMEDOUT) {
                timed_out++;
            } else {
                failed++;
            }
            finished++;

            task->reaped = 1;
            task->dnext = NULL;
            out[n++] = task;
        }

        task = host->fifo_head;
    }

    nbffi__host_count(rt, ok, failed, timed_out, finished);

    return n;
}


static void
nbffi__host_count(nbffi_runtime_t *rt, uint64_t ok, uint64_t failed,
    uint64_t timed_out, uint64_t finished)
{
    if (rt == NULL) {
        return;
    }

    atomic_fetch_add_explicit(&rt->completed, ok, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->failed, failed, memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->timed_out, timed_out,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&rt->finished, finished, memory_order_relaxed);
}


int
nbffi_host_pending(nbffi_host_t *host)
{
    return host->fifo_head != NULL
           || atomic_load_explicit(&host->done, memory_order_relaxed) != NULL;
}


int
nbffi_host_spin(nbffi_host_t *host, nbffi_task_t *task, int64_t spin_ns)
{
    int64_t  end;

    if (nbffi__host_ready(host, task)) {
        return 1;
    }

    if (spin_ns <= 0) {
        return 0;
    }

    /* While set, answering threads skip the notifier write. */
    atomic_store(&host->signaled, 1);

    end = nbffi_now_ns() + spin_ns;

    do {
        nbffi__cpu_relax();

        if (nbffi__host_ready(host, task)) {
            return 1;
        }
    } while (nbffi_now_ns() < end);

    /* Re-arm; anything that came meanwhile wrote nothing, so write now. */
    atomic_store(&host->signaled, 0);
    if (atomic_load(&host->done) != NULL
        && !atomic_exchange(&host->signaled, 1))
    {
        nbffi__host_notify(host);
    }

    return 0;
}


/*
 * A task is marked answered just before it is pushed, so "answered" alone
 * does not mean a reap would return it.  Only the host pops the stack, so
 * the nodes reachable from its head stay valid while the host walks them.
 */
static int
nbffi__host_ready(nbffi_host_t *host, nbffi_task_t *task)
{
    nbffi_task_t  *t;

    if (task == NULL) {
        return nbffi_host_pending(host);
    }

    if (atomic_load_explicit(&task->state, memory_order_acquire)
        != NBFFI__ANSWERED)
    {
        return 0;
    }

    for (t = host->fifo_head; t != NULL; t = t->dnext) {
        if (t == task) {
            return 1;
        }
    }

    for (t = atomic_load_explicit(&host->done, memory_order_acquire);
         t != NULL;
         t = t->dnext)
    {
        if (t == task) {
            return 1;
        }
    }

    return 0;
}


uint64_t
nbffi_host_tasks_live(nbffi_host_t *host)
{
    return host->allocated - host->freed;
}


uint64_t
nbffi_host_tasks_allocated(nbffi_host_t *host)
{
    return host->allocated;
}


uint64_t
nbffi_host_tasks_freed(nbffi_host_t *host)
{
    return host->freed;
}


/* A non-negative decimal from the environment, else 0. */
static int64_t
nbffi__env_ms(const char *name)
{
    char        *end;
    long long    v;
    const char  *s;

    s = getenv(name);
    if (s == NULL || *s < '0' || *s > '9') {
        return 0;
    }

    errno = 0;
    v = strtoll(s, &end, 10);

    return (errno != 0 || *end != '\0') ? 0 : v;
}
