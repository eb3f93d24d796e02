/* Per-thread malloc/free loop (glibc's bench-malloc-thread): each thread
 * keeps a working set of 4,096 blocks of 16 B - 1 KiB and replaces a random
 * one at a time. No block crosses threads: the thread-local fast path and
 * how much memory each thread's heap holds. */
#include <pthread.h>

#include "common.h"

#define WORKING_SET 4096

static long ops;

static void *worker(void *arg)
{
    rng_t r = {(uint64_t)(uintptr_t)arg * 613 + 1};
    void **set = calloc(WORKING_SET, sizeof(void *));
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        size_t k = rng_next(&r) % WORKING_SET;
        free(set[k]);
        size_t size = rng_range(&r, 16, 1024);
        set[k] = malloc(size);
        touch(set[k], size, (unsigned char)k);
        sum += size;
    }
    for (size_t k = 0; k < WORKING_SET; k++)
        free(set[k]);
    free(set);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    ops = (long)(8000000 * scale / threads);
    run_workers(threads, worker);
    return 0;
}
