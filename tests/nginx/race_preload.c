/*
 * LD_PRELOAD for nginx in tests: the hostile process of the same user that
 * wins the race to the notifier socket, made deterministic.
 *
 * Right after libnbffi's listen() on a notifier socket (a path with
 * "/nbffi-" in it), the wrapper writes the path to the FIFO
 * $NBFFI_RACE_FIFO and waits (at most 10 s) until the test's racer, which
 * connects to the path first, has made the file "raced" beside it.  The
 * worker then connects its own dispatcher second.
 */

#define _GNU_SOURCE

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int listen(int fd, int backlog);

static void t_race(const char *path);

int
listen(int fd, int backlog)
{
    int                  rc;
    socklen_t            len;
    struct sockaddr_un   sa;
    static int         (*real)(int, int);

    if (real == NULL) {
        *(void **) &real = dlsym(RTLD_NEXT, "listen");
    }

    rc = real(fd, backlog);

    len = sizeof(sa);
    if (rc == 0 && getsockname(fd, (struct sockaddr *) &sa, &len) == 0
        && sa.sun_family == AF_UNIX && strstr(sa.sun_path, "/nbffi-"))
    {
        t_race(sa.sun_path);
    }

    return rc;
}

static void
t_race(const char *path)
{
    int          fd, i;
    char         line[256], done[256];
    char        *slash;
    const char  *fifo;

    fifo = getenv("NBFFI_RACE_FIFO");
    if (fifo == NULL) {
        return;
    }

    /* one write of less than PIPE_BUF: lines of workers do not mix */
    (void) snprintf(line, sizeof(line), "%s\n", path);
    (void) snprintf(done, sizeof(done), "%s", path);
    slash = strrchr(done, '/');
    (void) snprintf(slash + 1, sizeof(done) - (slash + 1 - done), "raced");

    fd = open(fifo, O_WRONLY);
    if (fd < 0) {
        return;
    }
    (void) !write(fd, line, strlen(line));
    (void) close(fd);

    for (i = 0; i < 10000 && access(done, F_OK) != 0; i++) {
        (void) usleep(1000);
    }
    (void) unlink(done);
}
