/*
 * The completion notifier: what wakes the host's event loop.  Either an
 * eventfd, or a connected unix stream socket that an event loop which can
 * only watch its own sockets (nginx's cosockets) connects to itself.
 *
 * The socket notifier keeps one stable descriptor number for the whole
 * life of the host (first /dev/null, then the accepted connection put in
 * its place with dup3), so a thread that writes it can never write to a
 * number that was closed and reused for something else.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbffi_int.h"

/* Connections a handshake accepts and refuses before it gives up. */
#define NBFFI__ACCEPT_MAX  128


static void nbffi__notify_unlisten(nbffi__notify_t *n);
static int nbffi__notify_err(char *buf, size_t len, int rc,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));


int
nbffi__notify_init(nbffi__notify_t *n, int socket)
{
    memset(n, 0, sizeof(nbffi__notify_t));
    n->socket = socket;
    n->listen_fd = -1;

    if (socket) {
        n->fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    } else {
        n->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    }

    return n->fd < 0 ? NBFFI_EIO : 0;
}


void
nbffi__notify_destroy(nbffi__notify_t *n)
{
    nbffi__notify_unlisten(n);
    (void) close(n->fd);
    n->fd = -1;
}


/* Any thread. */
void
nbffi__notify_write(nbffi__notify_t *n)
{
    ssize_t   rc;
    uint64_t  one = 1;

    if (n->socket) {
        /* EAGAIN: bytes are already waiting; EPIPE: nobody listens */
        rc = send(n->fd, "!", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (rc < 0 && errno == ENOTSOCK) {
            /* /dev/null before the handshake */
            (void) !write(n->fd, "!", 1);
        }

    } else {
        /* EAGAIN: the counter is saturated, which is signalled enough */
        (void) !write(n->fd, &one, sizeof(one));
    }
}


void
nbffi__notify_drain(nbffi__notify_t *n)
{
    uint64_t  count;

    if (!n->socket) {
        (void) !read(n->fd, &count, sizeof(count));
    }
}


int
nbffi__notify_listen(nbffi__notify_t *n, char *buf, size_t len)
{
    int                 fd;
    char                dir[NBFFI__SUN_PATH];
    size_t              dlen;
    const char         *tmp;
    struct sockaddr_un  sa;

    nbffi__notify_unlisten(n);

    tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0') {
        tmp = "/tmp";
    }

    /* The path is <dir>/n, dir being <tmp>/nbffi-XXXXXX. */
    if (strlen(tmp) + sizeof("/nbffi-XXXXXX/n") > sizeof(sa.sun_path)) {
        return nbffi__notify_err(buf, len, NBFFI_ENAMETOOLONG,
            "the notifier socket path in TMPDIR \"%s\" would be %zu bytes, "
            "over the %zu a unix socket path can hold: set TMPDIR to a "
            "shorter directory", tmp,
            strlen(tmp) + sizeof("/nbffi-XXXXXX/n") - 1,
            sizeof(sa.sun_path) - 1);
    }

    if (strlen(tmp) + sizeof("/nbffi-XXXXXX/n") > len) {
        return nbffi__notify_err(buf, len, NBFFI_ENAMETOOLONG,
                                 "path buffer too small");
    }

    (void) snprintf(dir, sizeof(dir), "%s/nbffi-XXXXXX", tmp);

    /* mkdtemp makes the directory 0700: only this user can connect. */
    if (mkdtemp(dir) == NULL) {
        return nbffi__notify_err(buf, len, NBFFI_EIO,
            "cannot make the notifier directory in TMPDIR \"%s\": %s",
            tmp, strerror(errno));
    }

    /* fits: checked above */
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    dlen = strlen(dir);
    memcpy(sa.sun_path, dir, dlen);
    memcpy(sa.sun_path + dlen, "/n", sizeof("/n"));

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        (void) rmdir(dir);
        return nbffi__notify_err(buf, len, NBFFI_EIO,
            "cannot make the notifier socket: %s", strerror(errno));
    }

    /* A backlog deep enough that racing peers cannot fill it before our
     * own connect: they are accepted and refused. */
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(fd, NBFFI__ACCEPT_MAX) != 0)
    {
        (void) nbffi__notify_err(buf, len, NBFFI_EIO,
            "cannot listen on the notifier socket %s: %s", sa.sun_path,
            strerror(errno));
        (void) close(fd);
        (void) unlink(sa.sun_path);
        (void) rmdir(dir);
        return NBFFI_EIO;
    }

    n->listen_fd = fd;
    memcpy(n->listen_dir, dir, sizeof(dir));
    memcpy(n->listen_path, sa.sun_path, sizeof(n->listen_path));
    (void) snprintf(buf, len, "%s", sa.sun_path);
    return 0;
}


int
nbffi__notify_accept(nbffi__notify_t *n)
{
    int           fd, i;
    pid_t         self;
    socklen_t     clen;
    struct ucred  cred;

    if (n->listen_fd < 0) {
        return NBFFI_EINVAL;
    }

    self = getpid();

    /* Connections come in order; any process of this user that found the
     * path may have connected before us: refuse those. */
    for (i = 0; /* void */; /* void */) {
        if (i == NBFFI__ACCEPT_MAX) {
            return NBFFI_EBUSY;
        }

        fd = accept4(n->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? NBFFI_EBUSY
                                                              : NBFFI_EIO;
        }

        i++;

        clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0
            && cred.pid == self)
        {
            break;
        }

        (void) close(fd);
        n->refused++;
    }

    /* Nobody else may connect now: the path goes at once. */
    nbffi__notify_unlisten(n);

    if (dup3(fd, n->fd, O_CLOEXEC) < 0) {
        (void) close(fd);
        return NBFFI_EIO;
    }
    (void) close(fd);

    return 0;
}


static void
nbffi__notify_unlisten(nbffi__notify_t *n)
{
    if (n->listen_fd < 0) {
        return;
    }

    (void) close(n->listen_fd);
    (void) unlink(n->listen_path);
    (void) rmdir(n->listen_dir);
    n->listen_fd = -1;
    n->listen_path[0] = '\0';
    n->listen_dir[0] = '\0';
}


static int
nbffi__notify_err(char *buf, size_t len, int rc, const char *fmt, ...)
{
    va_list  ap;

    if (buf != NULL && len != 0) {
        va_start(ap, fmt);
        (void) vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }

    return rc;
}
