/* What a big live heap costs a thread that allocates: LIVE_MIB MiB of
 * 64-byte blocks stay live while one thread runs batches of 1,000 mallocs
 * of 16 B-2 KiB and frees them, for SECONDS. Prints the loop's millions of
 * malloc+free pairs per second. Built for shrinkalloc's decay tick, which
 * runs up to 80 times a second on allocation slow paths and once walked
 * every page record of every segment: compare LIVE_MIB 0 with 2048 and
 * 8192 under one allocator. Not part of run.py's table; by hand:
 *
 *   cc -O2 -o /tmp/big_heap benches/programs/big_heap.c
 *   LD_PRELOAD=target/release/libshrinkalloc.so /tmp/big_heap 8192 3
 *
 * (8192 needs 9.5 GiB of memory; the blocks are written, so resident.) */
#include "common.h"
#include <time.h>

#define BATCH 1000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s LIVE_MIB SECONDS\n", argv[0]);
        return 2;
    }
    size_t live = (size_t)atol(argv[1]) * 1024 * 1024 / 64;
    double seconds = atof(argv[2]);
    void **keep = malloc(sizeof(void *) * (live ? live : 1));
    if (!keep)
        return 1;
    for (size_t i = 0; i < live; i++) {
        keep[i] = malloc(64);
        touch(keep[i], 64, 1);
    }
    rng_t r = {42};
    void *batch[BATCH];
    long pairs = 0;
    double start = now();
    while (now() - start < seconds) {
        for (int round = 0; round < 100; round++) {
            for (int i = 0; i < BATCH; i++) {
                size_t n = rng_range(&r, 16, 2048);
                batch[i] = malloc(n);
                touch(batch[i], n, (unsigned char)i);
            }
            for (int i = 0; i < BATCH; i++)
                free(batch[i]);
            pairs += BATCH;
        }
    }
    printf("live %s MiB: %.1f M malloc+free pairs/s\n", argv[1], (double)pairs / (now() - start) / 1e6);
    for (size_t i = 0; i < live; i++)
        free(keep[i]);
    free(keep);
    return 0;
}
