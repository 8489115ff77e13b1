/*
 * The C half of a Go runtime, shared by runtime.go and fini.c: what
 * libnbffi gets as the runtime's data pointer.
 */

#ifndef NBFFI_GO_RUNTIME_H
#define NBFFI_GO_RUNTIME_H

#include <pthread.h>
#include <stdint.h>

typedef struct {
    int64_t          running;   /* handlers running: Go's sync/atomic
                                   writes it, fini reads it */
    pthread_mutex_t  lock;
    pthread_cond_t   cond;      /* signalled when stopped is set */
    int              stopped;   /* the Go side is done ...             */
    int              stayed;    /* ... and this many goroutines stayed */
} nbffi_go_rt_t;

/* Kept out of the library's dynamic symbols: only the shim calls them. */
#define NBFFI_GO_HIDDEN  __attribute__((visibility("hidden")))

NBFFI_GO_HIDDEN nbffi_go_rt_t *nbffi_go_rt_new(void);
NBFFI_GO_HIDDEN void nbffi_go_rt_free(nbffi_go_rt_t *rt);
NBFFI_GO_HIDDEN void nbffi_go_rt_stopped(nbffi_go_rt_t *rt, int stayed);

#endif /* NBFFI_GO_RUNTIME_H */
