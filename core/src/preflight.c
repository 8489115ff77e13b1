/*
 * Preflight: whether a runtime library would load in a worker -- found,
 * readable by the workers' user, an nbffi runtime of this ABI, and its cfg
 * naming files that exist (for libraries that export nbffi_runtime_check)
 * -- asked before any worker starts, e.g. by nginx's master in
 * init_by_lua.  dlopen runs the library's constructors (a Go runtime
 * starts its threads there) and a check may start an interpreter, which
 * must never happen in the master: all of it runs in a short-lived forked
 * child, which reports through a pipe and _exits.
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dlfcn.h>

#include "nbffi_int.h"


#define NBFFI__PREFLIGHT_MSG  2048


typedef struct {
    int   status;
    char  msg[NBFFI__PREFLIGHT_MSG];
} nbffi__preflight_result_t;


static void nbffi__preflight_child(int fd, const char *lib,
    const char *search_path, const void *cfg, size_t cfg_len,
    unsigned flags, const char *user) __attribute__((noreturn));
static int nbffi__preflight_become(const char *user, char *err,
    size_t err_len);
static int nbffi__preflight_read(int fd, int64_t deadline_ns,
    nbffi__preflight_result_t *res);


int
nbffi_preflight(const char *lib, const char *search_path, const void *cfg,
    size_t cfg_len, unsigned flags, const char *user, int64_t deadline_ns,
    char *err, size_t err_len)
{
    int                        fds[2], rc, wstatus;
    pid_t                      pid;
    nbffi__preflight_result_t  res;

    if (lib == NULL || err == NULL || err_len == 0) {
        return NBFFI_EINVAL;
    }
    err[0] = '\0';

    if (pipe2(fds, O_CLOEXEC) != 0) {
        (void) snprintf(err, err_len, "pipe2() failed: %s", strerror(errno));
        return NBFFI_EIO;
    }

    pid = fork();
    if (pid < 0) {
        (void) snprintf(err, err_len, "fork() failed: %s", strerror(errno));
        (void) close(fds[0]);
        (void) close(fds[1]);
        return NBFFI_EIO;
    }

    if (pid == 0) {
        (void) close(fds[0]);
        nbffi__preflight_child(fds[1], lib, search_path, cfg, cfg_len, flags,
                               user);
    }

    (void) close(fds[1]);
    rc = nbffi__preflight_read(fds[0], deadline_ns, &res);
    (void) close(fds[0]);

    if (rc != 0) {
        (void) kill(pid, SIGKILL);
    }
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        /* retry */
    }

    if (rc == NBFFI_ETIMEDOUT) {
        (void) snprintf(err, err_len, "%s: the check did not finish by its "
                        "deadline (a library constructor or the runtime's "
                        "check hangs?)", lib);
        return rc;
    }
    if (rc != 0) {
        if (WIFSIGNALED(wstatus)) {
            (void) snprintf(err, err_len, "%s: the check died of signal %d "
                            "while loading the library", lib,
                            WTERMSIG(wstatus));
        } else {
            (void) snprintf(err, err_len, "%s: the check exited without an "
                            "answer (status %d)", lib,
                            WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
        }
        return NBFFI_EIO;
    }

    (void) snprintf(err, err_len, "%s", res.msg);
    return res.status;
}


/*
 * The child: becomes user, loads and checks lib as a worker would, runs
 * the library's own check of cfg, writes the result to fd and _exits
 * (never returns: nothing of the parent's may run or be flushed here).
 */
static void
nbffi__preflight_child(int fd, const char *lib, const char *search_path,
    const void *cfg, size_t cfg_len, unsigned flags, const char *user)
{
    void                      *dl;
    size_t                     len, off;
    ssize_t                    n;
    nbffi_runtime_init_fn      init;
    nbffi_runtime_check_fn     check;
    nbffi__preflight_result_t  res;

    memset(&res, 0, sizeof(res));

    res.status = nbffi__preflight_become(user, res.msg, sizeof(res.msg));

    if (res.status == 0) {
        res.status = nbffi__library_load(lib, search_path, flags, &dl, &init,
                                         res.msg, sizeof(res.msg));
        if (res.status == NBFFI_ELOAD && user != NULL && geteuid() != 0) {
            len = strlen(res.msg);
            (void) snprintf(res.msg + len, sizeof(res.msg) - len,
                            " (as the workers' user %s)", user);
        }
    }

    if (res.status == 0) {
        *(void **) &check = dlsym(dl, "nbffi_runtime_check");
        if (check != NULL
            && check(cfg, cfg_len, res.msg, sizeof(res.msg)) != 0)
        {
            res.status = NBFFI_EINIT;
            res.msg[sizeof(res.msg) - 1] = '\0';
        }
    }

    len = sizeof(res.status) + strlen(res.msg) + 1;
    for (off = 0; off < len; off += (size_t) n) {
        n = write(fd, (char *) &res + off, len - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                n = 0;
                continue;
            }
            break;
        }
    }

    _exit(0);
}


/*
 * Child.  Takes user's ids ("name" or "name:group"), as nginx does for its
 * workers, when running as root; else the workers run as this user
 * anyway.  0, or NBFFI_EPERM with the reason in err.
 */
static int
nbffi__preflight_become(const char *user, char *err, size_t err_len)
{
    char            name[256];
    const char     *colon;
    gid_t           gid;
    struct group   *gr;
    struct passwd  *pw;

    if (user == NULL || *user == '\0' || geteuid() != 0) {
        return 0;
    }

    colon = strchr(user, ':');
    (void) snprintf(name, sizeof(name), "%.*s",
                    (int) (colon ? (size_t) (colon - user) : strlen(user)),
                    user);

    pw = getpwnam(name);
    if (pw == NULL) {
        (void) snprintf(err, err_len, "no user \"%s\"", name);
        return NBFFI_EPERM;
    }
    gid = pw->pw_gid;

    if (colon != NULL) {
        gr = getgrnam(colon + 1);
        if (gr == NULL) {
            (void) snprintf(err, err_len, "no group \"%s\"", colon + 1);
            return NBFFI_EPERM;
        }
        gid = gr->gr_gid;
    }

    if (setgid(gid) != 0 || initgroups(name, gid) != 0
        || setuid(pw->pw_uid) != 0)
    {
        (void) snprintf(err, err_len, "cannot become user \"%s\": %s", user,
                        strerror(errno));
        return NBFFI_EPERM;
    }

    return 0;
}


/*
 * Parent.  Reads the child's result until EOF or deadline_ns (0: none):
 * 0 with res filled, NBFFI_ETIMEDOUT, or NBFFI_EIO when the child left
 * without a whole answer.
 */
static int
nbffi__preflight_read(int fd, int64_t deadline_ns,
    nbffi__preflight_result_t *res)
{
    int            ms;
    size_t         got;
    ssize_t        n;
    int64_t        left;
    struct pollfd  pfd;

    memset(res, 0, sizeof(*res));
    got = 0;

    for ( ;; ) {
        ms = -1;
        if (deadline_ns > 0) {
            left = deadline_ns - nbffi_now_ns();
            if (left <= 0) {
                return NBFFI_ETIMEDOUT;
            }
            ms = (int) ((left + 999999) / 1000000);
        }

        pfd.fd = fd;
        pfd.events = POLLIN;
        n = poll(&pfd, 1, ms);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NBFFI_EIO;
        }
        if (n == 0) {
            continue;           /* the deadline check above ends it */
        }

        n = read(fd, (char *) res + got, sizeof(*res) - 1 - got);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return NBFFI_EIO;
        }
        if (n == 0) {
            break;
        }
        got += (size_t) n;
    }

    if (got < sizeof(res->status) + 1) {
        return NBFFI_EIO;
    }
    res->msg[sizeof(res->msg) - 1] = '\0';
    return 0;
}
