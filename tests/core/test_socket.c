/*
 * Hosts with a unix socket notifier: the listen/connect/accept handshake,
 * peer checks, reconnects, and wake-ups as bytes on the socket.
 */

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

struct t_stranger {
    pid_t             pid;
    int               hold;      /* closing it lets the process exit */
};

struct t_sfx {
    nbffi_host_t     *host;
    nbffi_runtime_t  *rt;
    nbffi_queue_t    *q;
    int               fd;        /* the event loop's end, or -1 */
    char              path[PATH_MAX];
};

static int
t_connect(const char *path)
{
    int                 fd;
    struct sockaddr_un  sa;

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);

    assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);

    return fd;
}

/* Forks a process of this user that connects n times to path and stays
 * connected until t_stranger_end(). */
static void
t_stranger_start(struct t_stranger *st, const char *path, int n)
{
    int   ready[2], hold[2];
    char  c;

    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);

    st->pid = fork();
    assert_true(st->pid >= 0);

    if (st->pid == 0) {
        int                 i, fd;
        struct sockaddr_un  sa;

        (void) close(ready[0]);
        (void) close(hold[1]);

        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, path);

        c = 'y';
        for (i = 0; i < n; i++) {
            fd = socket(AF_UNIX, SOCK_STREAM, 0);
            if (fd < 0
                || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0)
            {
                c = 'n';
            }
        }

        (void) !write(ready[1], &c, 1);
        (void) !read(hold[0], &c, 1);
        _exit(0);
    }

    (void) close(ready[1]);
    (void) close(hold[0]);

    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');
    (void) close(ready[0]);

    st->hold = hold[1];
}

static void
t_stranger_end(struct t_stranger *st)
{
    (void) close(st->hold);
    assert_int_equal(waitpid(st->pid, NULL, 0), st->pid);
}

/* Sets TMPDIR, or unsets it for NULL. */
static void
t_put_tmpdir(const char *dir)
{
    if (dir != NULL) {
        assert_int_equal(setenv("TMPDIR", dir, 1), 0);
    } else {
        assert_int_equal(unsetenv("TMPDIR"), 0);
    }
}

/* Sets TMPDIR; returns the old value, for t_restore_tmpdir. */
static char *
t_set_tmpdir(const char *dir)
{
    char  *old;

    old = getenv("TMPDIR");
    old = old != NULL ? strdup(old) : NULL;
    t_put_tmpdir(dir);

    return old;
}

static void
t_restore_tmpdir(char *old)
{
    t_put_tmpdir(old);
    free(old);
}

/* nbffi_host_listen with TMPDIR set to dir. */
static int
t_listen_in(struct t_sfx *sfx, const char *dir)
{
    int    rc;
    char  *old;

    old = t_set_tmpdir(dir);
    rc = nbffi_host_listen(sfx->host, sfx->path, sizeof(sfx->path));
    t_restore_tmpdir(old);

    return rc;
}

static int
t_sfx_setup(void **state)
{
    struct t_sfx  *sfx;

    sfx = calloc(1, sizeof(*sfx));
    assert_non_null(sfx);
    sfx->fd = -1;

    assert_int_equal(nbffi_host_new(&sfx->host, NBFFI_HOST_NOTIFY_SOCKET), 0);
    sfx->rt = t_load_ctl(sfx->host, 0, 0, &sfx->q);

    *state = sfx;

    return 0;
}

/* The fixture after a complete handshake. */
static int
t_sfx_setup_connected(void **state)
{
    struct t_sfx  *sfx;

    (void) t_sfx_setup(state);
    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);

    return 0;
}

static int
t_sfx_teardown(void **state)
{
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(t_close_free(sfx->rt, T_WAIT_MS), NBFFI_RT_CLOSED);
    t_host_finish(sfx->host);

    if (sfx->fd >= 0) {
        (void) close(sfx->fd);
    }

    free(sfx);

    return 0;
}

static void
test_listen_private_directory(void **state)
{
    char           dir[PATH_MAX];
    struct stat    st;
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);

    assert_int_equal(stat(sfx->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));

    strcpy(dir, sfx->path);
    assert_int_equal(stat(dirname(dir), &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(st.st_uid, geteuid());

    /* Completes the handshake so that nothing is left on disk. */
    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);
}

static void
test_listen_buffer_too_small(void **state)
{
    char           buf[4];
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, buf, sizeof(buf)),
                     NBFFI_ENAMETOOLONG);

    /* A message as long as fits, NUL-terminated within the buffer. */
    assert_int_equal(strlen(buf), sizeof(buf) - 1);
}

static void
test_listen_tmpdir_missing(void **state)
{
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(t_listen_in(sfx, "/nonexistent-nbffi-tmpdir"),
                     NBFFI_EIO);

    /* One clear line: which directory, and what the system said. */
    assert_non_null(strstr(sfx->path, "\"/nonexistent-nbffi-tmpdir\""));
    assert_non_null(strstr(sfx->path, strerror(ENOENT)));
}

/*
 * Makes a directory whose path is len bytes long under /tmp, and returns
 * it in dir (PATH_MAX bytes).
 */
static void
t_mkdir_of_len(char *dir, size_t len)
{
    size_t  n;

    strcpy(dir, "/tmp/nbffi-len-XXXXXX");
    assert_non_null(mkdtemp(dir));

    n = strlen(dir);
    assert_true(n + 2 <= len);
    dir[n++] = '/';
    while (n < len) {
        dir[n++] = 'd';
    }
    dir[n] = '\0';

    assert_int_equal(mkdir(dir, 0700), 0);
}

static void
t_rmdir_of_len(char *dir)
{
    assert_int_equal(rmdir(dir), 0);
    assert_int_equal(rmdir(dirname(dir)), 0);
}

static void
test_listen_tmpdir_longest(void **state)
{
    int            fd;
    char           dir[PATH_MAX];
    struct t_sfx  *sfx;

    sfx = *state;

    /* <dir>/nbffi-XXXXXX/n in exactly the 107 bytes sun_path holds. */
    t_mkdir_of_len(dir, 107 - strlen("/nbffi-XXXXXX/n"));

    assert_int_equal(t_listen_in(sfx, dir), 0);
    assert_int_equal(strlen(sfx->path), 107);

    fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);
    (void) close(fd);

    t_rmdir_of_len(dir);
}

static void
test_listen_tmpdir_too_long(void **state)
{
    char           dir[PATH_MAX];
    struct t_sfx  *sfx;

    sfx = *state;

    /* One byte more than fits: refused before anything is made in it. */
    t_mkdir_of_len(dir, 108 - strlen("/nbffi-XXXXXX/n"));

    assert_int_equal(t_listen_in(sfx, dir), NBFFI_ENAMETOOLONG);

    /* Names the directory, the length it would take and the limit. */
    assert_non_null(strstr(sfx->path, dir));
    assert_non_null(strstr(sfx->path, "would be 108 bytes"));
    assert_non_null(strstr(sfx->path, "over the 107"));

    t_rmdir_of_len(dir);
}

static void
test_listen_einval_on_eventfd_host(void **state)
{
    char           buf[PATH_MAX];
    nbffi_host_t  *host;

    (void) state;

    assert_int_equal(nbffi_host_new(&host, NBFFI_HOST_NOTIFY_EVENTFD), 0);
    assert_int_equal(nbffi_host_listen(host, buf, sizeof(buf)), NBFFI_EINVAL);
    t_host_finish(host);
}

static void
test_accept_busy_before_connect(void **state)
{
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    assert_int_equal(nbffi_host_accept(sfx->host), NBFFI_EBUSY);

    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);
}

static void
test_accept_removes_path_and_directory(void **state)
{
    char           dir[PATH_MAX];
    struct stat    st;
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);

    strcpy(dir, sfx->path);
    assert_int_equal(stat(sfx->path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(stat(dirname(dir), &st), -1);
    assert_int_equal(errno, ENOENT);
}

static void
test_accept_refuses_other_process(void **state)
{
    struct stat        st;
    struct t_sfx      *sfx;
    struct t_stranger  peer;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    t_stranger_start(&peer, sfx->path, 1);

    /* Refused and counted; the path stays for our own connect. */
    assert_int_equal(nbffi_host_accept(sfx->host), NBFFI_EBUSY);
    assert_int_equal(nbffi_host_peers_refused(sfx->host), 1);
    assert_int_equal(stat(sfx->path, &st), 0);

    t_stranger_end(&peer);
}

/*
 * n connections of another process come between listen and our own
 * connect: one accept refuses them all and takes ours behind them.
 */
static void
t_accept_behind_peers(struct t_sfx *sfx, int n)
{
    struct t_stranger  peers;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    t_stranger_start(&peers, sfx->path, n);
    sfx->fd = t_connect(sfx->path);

    assert_int_equal(nbffi_host_accept(sfx->host), 0);
    assert_int_equal(nbffi_host_peers_refused(sfx->host), n);

    nbffi_host_kick(sfx->host);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));

    t_stranger_end(&peers);
}

static void
test_accept_after_racing_peer(void **state)
{
    /* A process of the same user that found the path first. */
    t_accept_behind_peers(*state, 1);
}

static void
test_accept_ours_after_127_peers(void **state)
{
    /* Ours is the 128th connection, the last one accept may look at. */
    t_accept_behind_peers(*state, 127);
}

static void
test_accept_gives_up_after_128_peers(void **state)
{
    struct t_sfx      *sfx;
    struct t_stranger  peers;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    t_stranger_start(&peers, sfx->path, 129);

    /* Bounded: 128 refused, then it returns; the next call goes on. */
    assert_int_equal(nbffi_host_accept(sfx->host), NBFFI_EBUSY);
    assert_int_equal(nbffi_host_peers_refused(sfx->host), 128);

    assert_int_equal(nbffi_host_accept(sfx->host), NBFFI_EBUSY);
    assert_int_equal(nbffi_host_peers_refused(sfx->host), 129);

    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);
    assert_int_equal(nbffi_host_peers_refused(sfx->host), 129);

    t_stranger_end(&peers);
}

static void
test_completion_before_handshake(void **state)
{
    struct t_sfx  *sfx;
    nbffi_task_t  *task, *out;

    sfx = *state;

    task = t_call(sfx->host, sfx->rt, "echo", "a");
    assert_int_equal(nbffi_task_respond(t_pop1(sfx->q), 0, NULL, 0), 0);

    /* Nobody listened then: the wake-up comes once somebody does. */
    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    sfx->fd = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);

    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(nbffi_host_reap(sfx->host, &out, 1), 1);
    assert_ptr_equal(out, task);
    nbffi_task_release(task);
}

static void
test_completion_sends_one_byte(void **state)
{
    struct t_sfx  *sfx;
    nbffi_task_t  *task, *out;

    sfx = *state;

    task = t_call(sfx->host, sfx->rt, "echo", "a");
    assert_false(t_readable(sfx->fd, 0));

    assert_int_equal(nbffi_task_respond(t_pop1(sfx->q), 0, "b", 1), 0);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(t_sock_drain(sfx->fd), 1);

    assert_int_equal(nbffi_host_reap(sfx->host, &out, 1), 1);
    assert_ptr_equal(out, task);
    t_reply_is(task, 0, "b");
    nbffi_task_release(task);
}

static void
test_many_completions_one_byte(void **state)
{
    int            i;
    struct t_sfx  *sfx;
    nbffi_task_t  *rs[8], *out[8];

    sfx = *state;

    for (i = 0; i < 8; i++) {
        (void) t_call(sfx->host, sfx->rt, "echo", "a");
    }
    assert_int_equal(nbffi_queue_pop(sfx->q, rs, 8, 0), 8);
    for (i = 0; i < 8; i++) {
        assert_int_equal(nbffi_task_respond(rs[i], 0, NULL, 0), 0);
    }

    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(t_sock_drain(sfx->fd), 1);

    assert_int_equal(nbffi_host_reap(sfx->host, out, 8), 8);
    for (i = 0; i < 8; i++) {
        nbffi_task_release(out[i]);
    }
}

static void
test_reap_rearms_socket(void **state)
{
    struct t_sfx  *sfx;
    nbffi_task_t  *rs[2], *out[2];

    sfx = *state;

    (void) t_call(sfx->host, sfx->rt, "echo", "a");
    (void) t_call(sfx->host, sfx->rt, "echo", "b");
    assert_int_equal(nbffi_queue_pop(sfx->q, rs, 2, 0), 2);

    assert_int_equal(nbffi_task_respond(rs[0], 0, NULL, 0), 0);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(t_sock_drain(sfx->fd), 1);
    assert_int_equal(nbffi_host_reap(sfx->host, out, 2), 1);

    assert_int_equal(nbffi_task_respond(rs[1], 0, NULL, 0), 0);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(t_sock_drain(sfx->fd), 1);
    assert_int_equal(nbffi_host_reap(sfx->host, &out[1], 1), 1);

    nbffi_task_release(out[0]);
    nbffi_task_release(out[1]);
}

static void
test_kick_sends_byte(void **state)
{
    struct t_sfx  *sfx;

    sfx = *state;

    nbffi_host_kick(sfx->host);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_true(t_sock_drain(sfx->fd) >= 1);
}

static void
test_drain_leaves_socket_bytes(void **state)
{
    struct t_sfx  *sfx;

    sfx = *state;

    nbffi_host_kick(sfx->host);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));

    /* The event loop reads the socket itself. */
    nbffi_host_drain(sfx->host);
    assert_true(t_readable(sfx->fd, 0));
}

static void
test_reconnect_drops_old_connection(void **state)
{
    int            fd2;
    char           c;
    struct t_sfx  *sfx;

    sfx = *state;

    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    fd2 = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);

    /* The old end sees EOF; wake-ups go to the new one. */
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_int_equal(recv(sfx->fd, &c, 1, MSG_DONTWAIT), 0);

    nbffi_host_kick(sfx->host);
    assert_true(t_readable(fd2, T_WAIT_MS));
    assert_true(t_sock_drain(fd2) >= 1);

    (void) close(sfx->fd);
    sfx->fd = fd2;
}

static void
test_old_connection_serves_until_accept(void **state)
{
    int            fd2;
    struct t_sfx  *sfx;

    sfx = *state;

    /* A reconnect that has not been accepted yet keeps the old end. */
    assert_int_equal(nbffi_host_listen(sfx->host, sfx->path,
                                       sizeof(sfx->path)), 0);
    nbffi_host_kick(sfx->host);
    assert_true(t_readable(sfx->fd, T_WAIT_MS));
    assert_true(t_sock_drain(sfx->fd) >= 1);

    fd2 = t_connect(sfx->path);
    assert_int_equal(nbffi_host_accept(sfx->host), 0);
    (void) close(sfx->fd);
    sfx->fd = fd2;
}

#define T_SFX(fn)                                                            \
    cmocka_unit_test_setup_teardown(fn, t_sfx_setup, t_sfx_teardown)
#define T_SFX_CONNECTED(fn)                                                  \
    cmocka_unit_test_setup_teardown(fn, t_sfx_setup_connected,               \
                                    t_sfx_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T_SFX(test_listen_private_directory),
        T_SFX(test_listen_buffer_too_small),
        T_SFX(test_listen_tmpdir_missing),
        T_SFX(test_listen_tmpdir_longest),
        T_SFX(test_listen_tmpdir_too_long),
        cmocka_unit_test(test_listen_einval_on_eventfd_host),
        T_SFX(test_accept_busy_before_connect),
        T_SFX(test_accept_removes_path_and_directory),
        T_SFX(test_accept_refuses_other_process),
        T_SFX(test_accept_after_racing_peer),
        T_SFX(test_accept_ours_after_127_peers),
        T_SFX(test_accept_gives_up_after_128_peers),
        T_SFX(test_completion_before_handshake),
        T_SFX_CONNECTED(test_completion_sends_one_byte),
        T_SFX_CONNECTED(test_many_completions_one_byte),
        T_SFX_CONNECTED(test_reap_rearms_socket),
        T_SFX_CONNECTED(test_kick_sends_byte),
        T_SFX_CONNECTED(test_drain_leaves_socket_bytes),
        T_SFX_CONNECTED(test_reconnect_drops_old_connection),
        T_SFX_CONNECTED(test_old_connection_serves_until_accept),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
