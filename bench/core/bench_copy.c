/*
 * bench-copy: libnbffi's copy of payloads and replies (core/src/copy.c)
 * against glibc's memmove, by size and by where the destination lies
 * against the source modulo 64.  On AMD Zen, glibc's "rep movsb" path is
 * ~15x slower when that distance is 1-31 bytes; the table shows whether
 * this CPU does it and what nbffi__copy costs instead.
 *
 *     build/bench/bench-copy [rounds]
 *
 * Best of `rounds` (default 200) copies per cell, microseconds.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void nbffi__copy(void *dst, const void *src, size_t n);

typedef void (*copy_fn)(void *dst, const void *src, size_t n);


static void
glibc_memmove(void *dst, const void *src, size_t n)
{
    memmove(dst, src, n);
}


static double
best_us(copy_fn fn, char *dst, const char *src, size_t n, int rounds)
{
    int              i;
    double           best, t;
    struct timespec  a, b;

    best = 1e30;
    for (i = 0; i < rounds; i++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        fn(dst, src, n);
        __asm__ __volatile__("" : : "r"(dst) : "memory");
        clock_gettime(CLOCK_MONOTONIC, &b);
        t = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
        if (t < best) {
            best = t;
        }
    }
    return best;
}


int
main(int argc, char **argv)
{
    static const size_t  sizes[] = { 4096, 102400, 1048576 };
    static const int     dists[] = { 0, 8, 16, 24, 32, 48 };
    int                  rounds, d;
    size_t               s;
    char                *src, *dst;

    rounds = (argc > 1) ? atoi(argv[1]) : 200;
    if (rounds < 1) {
        fprintf(stderr, "usage: bench-copy [rounds >= 1]\n");
        return 2;
    }

    src = aligned_alloc(4096, (2 << 20));
    dst = aligned_alloc(4096, (2 << 20));
    if (src == NULL || dst == NULL) {
        return 1;
    }
    memset(src, 'x', 2 << 20);
    memset(dst, 'y', 2 << 20);

    printf("| size | dst - src mod 64 | glibc memmove us | nbffi__copy us |\n"
           "|---:|---:|---:|---:|\n");
    for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (d = 0; d < (int) (sizeof(dists) / sizeof(dists[0])); d++) {
            printf("| %zu | %d | %.2f | %.2f |\n", sizes[s], dists[d],
                   best_us(glibc_memmove, dst + 8 + dists[d], src + 8,
                           sizes[s], rounds),
                   best_us(nbffi__copy, dst + 8 + dists[d], src + 8,
                           sizes[s], rounds));
        }
    }

    free(src);
    free(dst);
    return 0;
}
