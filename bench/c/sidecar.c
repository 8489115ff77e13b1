/*
 * The classic alternative to nbffi, in C: the echo handler of the reference
 * runtime (reply = payload) in a separate process, on a unix stream socket.
 * Each request and reply is a frame of a 4-byte big-endian length and that
 * many bytes, the framing of the Go, Python and Java sidecars.  Connections
 * stay open; each has a thread that serves one frame at a time.
 *
 * A request frame "STREAM N M" is a server stream instead: the reply is N
 * frames of M bytes (chunk i is M times 'a' + i % 26), then an empty
 * frame that ends it -- the streaming counterpart of nbffi's "chunks".
 *
 * Usage: sidecar SOCKET_PATH     (prints "listening" when ready)
 */

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>


#define SIDECAR_MAX_FRAME  (64u << 20)
#define SIDECAR_READ       (64u << 10)

typedef struct {
    int      fd;
    char    *data;
    size_t   len;       /* bytes buffered */
    size_t   cap;
} sidecar_conn_t;


static void *sidecar_serve(void *arg);
static int sidecar_fill(sidecar_conn_t *c, size_t need);
static int sidecar_write(int fd, struct iovec *iov, int n);
static int sidecar_stream(int fd, const char *req, size_t len);


int
main(int argc, char **argv)
{
    int                 lfd, fd;
    pthread_t           tid;
    sidecar_conn_t     *c;
    pthread_attr_t      attr;
    struct sockaddr_un  sa;

    if (argc != 2 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "usage: sidecar SOCKET_PATH\n");
        return 2;
    }

    (void) signal(SIGPIPE, SIG_IGN);    /* a peer that left: EPIPE */

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, argv[1]);
    (void) unlink(sa.sun_path);

    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd == -1
        || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) == -1
        || listen(lfd, 512) == -1
        || chmod(sa.sun_path, 0666) == -1)
    {
        perror(argv[1]);
        return 1;
    }

    (void) pthread_attr_init(&attr);
    (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    printf("listening on %s\n", sa.sun_path);
    (void) fflush(stdout);

    for ( ;; ) {
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            perror("accept");
            return 1;
        }

        c = calloc(1, sizeof(sidecar_conn_t));
        if (c != NULL) {
            c->fd = fd;
        }
        if (c == NULL || pthread_create(&tid, &attr, sidecar_serve, c) != 0) {
            fprintf(stderr, "cannot serve a connection\n");
            free(c);
            (void) close(fd);
        }
    }
}


static void *
sidecar_serve(void *arg)
{
    uint32_t         n, hdr;
    struct iovec     iov[2];
    sidecar_conn_t  *c = arg;

    for ( ;; ) {
        if (sidecar_fill(c, 4) != 0) {
            break;
        }
        memcpy(&hdr, c->data, 4);
        n = ntohl(hdr);
        if (n > SIDECAR_MAX_FRAME) {
            fprintf(stderr, "frame of %u bytes refused\n", n);
            break;
        }
        if (sidecar_fill(c, 4 + (size_t) n) != 0) {
            break;
        }

        if (n > 7 && memcmp(c->data + 4, "STREAM ", 7) == 0) {
            if (sidecar_stream(c->fd, c->data + 4, n) != 0) {
                break;
            }
            c->len -= 4 + (size_t) n;
            memmove(c->data, c->data + 4 + n, c->len);
            continue;
        }

        /* the handler: echo, the reply is the payload */
        iov[0].iov_base = &hdr;
        iov[0].iov_len = 4;
        iov[1].iov_base = c->data + 4;
        iov[1].iov_len = n;
        if (sidecar_write(c->fd, iov, 2) != 0) {
            break;
        }

        c->len -= 4 + (size_t) n;
        memmove(c->data, c->data + 4 + n, c->len);
    }

    (void) close(c->fd);
    free(c->data);
    free(c);
    return NULL;
}


/* Reads until at least need bytes are buffered; -1 on EOF or error. */
static int
sidecar_fill(sidecar_conn_t *c, size_t need)
{
    char     *p;
    size_t    cap;
    ssize_t   r;

    if (c->cap < need + SIDECAR_READ) {
        cap = need + SIDECAR_READ;
        p = realloc(c->data, cap);
        if (p == NULL) {
            return -1;
        }
        c->data = p;
        c->cap = cap;
    }

    while (c->len < need) {
        r = read(c->fd, c->data + c->len, c->cap - c->len);
        if (r > 0) {
            c->len += (size_t) r;
        } else if (r == -1 && errno == EINTR) {
            continue;
        } else {
            return -1;
        }
    }
    return 0;
}


static int
sidecar_write(int fd, struct iovec *iov, int n)
{
    ssize_t  w;

    while (n > 0) {
        w = writev(fd, iov, n);
        if (w == -1) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        while (n > 0 && (size_t) w >= iov->iov_len) {
            w -= (ssize_t) iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *) iov->iov_base + w;
            iov->iov_len -= (size_t) w;
        }
    }
    return 0;
}


/* "STREAM N M": N frames of M bytes, then an empty frame. */
static int
sidecar_stream(int fd, const char *req, size_t len)
{
    int            rc;
    char           args[64], *chunk;
    long           i, n, m;
    uint32_t       hdr;
    struct iovec   iov[2];

    snprintf(args, sizeof(args), "%.*s",
             (int) (len < sizeof(args) - 1 ? len : sizeof(args) - 1), req);
    if (sscanf(args, "STREAM %ld %ld", &n, &m) != 2 || n < 0 || m < 0
        || m > (long) SIDECAR_MAX_FRAME)
    {
        return -1;
    }

    chunk = malloc(m ? (size_t) m : 1);
    if (chunk == NULL) {
        return -1;
    }

    rc = 0;
    for (i = 0; i <= n && rc == 0; i++) {
        hdr = htonl(i < n ? (uint32_t) m : 0);
        memset(chunk, 'a' + (int) (i % 26), (size_t) m);
        iov[0].iov_base = &hdr;
        iov[0].iov_len = 4;
        iov[1].iov_base = chunk;
        iov[1].iov_len = i < n ? (size_t) m : 0;
        rc = sidecar_write(fd, iov, 2);
    }

    free(chunk);
    return rc;
}
