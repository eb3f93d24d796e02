/* A class with thousands of pages that each hold a few free blocks: fills
 * PAGES pages of 64-byte blocks (1,024 to a 64 KiB page), frees one block
 * in 128 (8 per page), then times allocating them again. An allocator that
 * walks every such page on each slow path takes time quadratic in PAGES.
 * Not part of run.py's table; run it by hand:
 *
 *   cc -O2 -o /tmp/fewfree benches/programs/fewfree.c
 *   LD_PRELOAD=target/release/libshrinkalloc.so /tmp/fewfree 8000
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    long pages = argc > 1 ? atol(argv[1]) : 8000;
    long n = pages * 1024;
    void **blocks = malloc((size_t)n * sizeof(void *));
    if (!blocks)
        return 1;
    for (long i = 0; i < n; i++) {
        blocks[i] = malloc(64);
        if (!blocks[i])
            return 1;
        memset(blocks[i], 1, 8);
    }
    long freed = 0;
    for (long i = 0; i < n; i += 128, freed++)
        free(blocks[i]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i += 128)
        blocks[i] = malloc(64);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%ld pages, %ld blocks allocated again: %.2f ms\n", pages, freed,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    for (long i = 0; i < n; i++)
        free(blocks[i]);
    free(blocks);
    return 0;
}
