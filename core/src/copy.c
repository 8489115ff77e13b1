/*
 * Copying payloads, replies, chunks and events.
 *
 * glibc copies large blocks with "rep movsb", which AMD Zen CPUs run ~15x
 * slower when the destination lies 1-31 bytes past the source modulo 64:
 * 100 KB in 34 us instead of 2.3 (measured on this project's AMD EPYC
 * VMs).  Where a Lua string lands against a task's buffer is chance, so
 * half the processes copied every 100 KB payload slowly.  Pieces below
 * glibc's rep-movsb threshold (2 KB is below it on every x86 build) take
 * its vector loop, as fast for every alignment.
 */

#include <string.h>

#include "nbffi_int.h"

#define NBFFI__COPY_PIECE  2048


/* Any thread.  memmove(dst, src, n), in pieces when they do not overlap. */
void
nbffi__copy(void *dst, const void *src, size_t n)
{
    char        *d = dst;
    const char  *s = src;

    if (n <= NBFFI__COPY_PIECE || (d < s + n && s < d + n)) {
        memmove(d, s, n);
        return;
    }

    while (n > NBFFI__COPY_PIECE) {
        memcpy(d, s, NBFFI__COPY_PIECE);
        d += NBFFI__COPY_PIECE;
        s += NBFFI__COPY_PIECE;
        n -= NBFFI__COPY_PIECE;
    }
    memcpy(d, s, n);
}
