/*
 * Copying payloads, replies, chunks and events.
 *
 * glibc copies large blocks with "rep movsb", which AMD Zen CPUs run ~15x
 * slower when the destination lies 1-31 bytes past the source modulo 64:
 * 100 KB in 34 us instead of 2.3 (measured on this project's AMD EPYC
 * VMs).  Where a Lua string lands against a task's buffer is chance, so
 * half the processes copied every 100 KB payload slowly.  Pieces below
 * glibc's rep-movsb threshold (2 KB is below it on every x86 build) take
 * its vector loop, as fast for every alignment.  From the size of the L2
 * cache on, glibc stops using rep movsb on AMD and is the faster again.
 */

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "nbffi_int.h"

#define NBFFI__COPY_PIECE  2048

/* Called through a pointer: GCC would otherwise inline a constant-size
 * memcpy as "rep movsq", which is slow on the same alignments. */
static void *(*volatile nbffi__memcpy)(void *, const void *, size_t) = memcpy;


static atomic_size_t  nbffi__copy_max;      /* 0: not looked up yet */


/* Any thread.  memmove(dst, src, n), in pieces when they do not overlap. */
void
nbffi__copy(void *dst, const void *src, size_t n)
{
    long         l2;
    size_t       max;
    char        *d = dst;
    const char  *s = src;

    max = atomic_load_explicit(&nbffi__copy_max, memory_order_relaxed);
    if (max == 0) {
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        max = (l2 >= 65536) ? (size_t) l2 : (size_t) 1 << 20;
        atomic_store_explicit(&nbffi__copy_max, max, memory_order_relaxed);
    }

    if (n <= NBFFI__COPY_PIECE || n >= max || (d < s + n && s < d + n)) {
        memmove(d, s, n);
        return;
    }

    while (n > NBFFI__COPY_PIECE) {
        nbffi__memcpy(d, s, NBFFI__COPY_PIECE);
        d += NBFFI__COPY_PIECE;
        s += NBFFI__COPY_PIECE;
        n -= NBFFI__COPY_PIECE;
    }
    memcpy(d, s, n);
}
