/*
 * Keeps nginx's signals away from the threads of the Go runtime.
 *
 * A c-shared Go library starts its runtime from an ELF constructor, in a
 * thread created by the thread that calls dlopen: an nginx worker's event
 * loop, whose signal mask is empty.  Every thread of the Go runtime starts
 * with that first thread's mask, and in a library Go unblocks only what it
 * needs itself: synchronous signals, SIGURG (preemption), SIGPROF and
 * SIGCHLD.  Without this file any process-directed signal (SIGQUIT, SIGHUP,
 * SIGUSR1, ...) can be delivered to a Go thread: nginx's handler then runs
 * there and the event loop's epoll_wait is not interrupted.  SIGCHLD still
 * can: nginx's handler only reaps children and sets flags, which works from
 * any thread, and Go gave it SA_ONSTACK at load, so it runs on the signal
 * stack rather than a goroutine's.
 *
 * The first constructor blocks every asynchronous signal in the loading
 * thread, so the runtime's first thread inherits that mask and passes it on
 * to all others.  The second restores the loader's mask.  Constructors with
 * a priority run before the others; the Go linker puts the object with the
 * runtime's constructor first on the link line, so the Go runtime's entry
 * comes before the plain one here.  tests/nginx/test_go_signals.py checks
 * the masks of a live worker's threads.
 */

#include <pthread.h>
#include <signal.h>

static sigset_t  nbffi_go__loader_mask;

__attribute__((constructor(101))) static void
nbffi_go__block_signals(void)
{
    sigset_t  set;

    (void) sigfillset(&set);
    (void) sigdelset(&set, SIGILL);
    (void) sigdelset(&set, SIGFPE);
    (void) sigdelset(&set, SIGSEGV);
    (void) sigdelset(&set, SIGBUS);

    (void) pthread_sigmask(SIG_BLOCK, &set, &nbffi_go__loader_mask);
}

__attribute__((constructor)) static void
nbffi_go__restore_signals(void)
{
    (void) pthread_sigmask(SIG_SETMASK, &nbffi_go__loader_mask, NULL);
}
