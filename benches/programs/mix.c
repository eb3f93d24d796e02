/* A realistic size/lifetime mix, per thread: most blocks small and short
 * lived, a few large or long lived (the shape of allocation traces of
 * compilers, interpreters and servers). Sizes: 70% 8-128 B, 22% 128 B-1 KiB,
 * 7% 1-8 KiB, 1% 8-64 KiB. Lifetimes: 60% freed within a few allocations
 * (a stack of 8), 30% held in a ring of 1,000 (freed 1,000 allocations
 * later), 10% in a pool of 20,000 replaced at random (long lived). */
#include <pthread.h>

#include "common.h"

#define STACK 8
#define RING 1000
#define POOL 20000

static long ops;

static size_t pick_size(rng_t *r)
{
    unsigned p = (unsigned)(rng_next(r) % 100);
    if (p < 70)
        return rng_range(r, 8, 128);
    if (p < 92)
        return rng_range(r, 129, 1024);
    if (p < 99)
        return rng_range(r, 1025, 8192);
    return rng_range(r, 8193, 65536);
}

static void *worker(void *arg)
{
    rng_t r = {(uint64_t)(uintptr_t)arg * 1000003 + 11};
    void **stack = calloc(STACK, sizeof(void *));
    void **ring = calloc(RING, sizeof(void *));
    void **pool = calloc(POOL, sizeof(void *));
    size_t sp = 0, rp = 0;
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        size_t size = pick_size(&r);
        unsigned char *p = malloc(size);
        touch(p, size, (unsigned char)i);
        sum += p[0];
        unsigned l = (unsigned)(rng_next(&r) % 10);
        void **slot;
        if (l < 6)
            slot = &stack[sp++ % STACK];
        else if (l < 9)
            slot = &ring[rp++ % RING];
        else
            slot = &pool[rng_next(&r) % POOL];
        free(*slot);
        *slot = p;
    }
    for (size_t i = 0; i < STACK; i++)
        free(stack[i]);
    for (size_t i = 0; i < RING; i++)
        free(ring[i]);
    for (size_t i = 0; i < POOL; i++)
        free(pool[i]);
    free(stack);
    free(ring);
    free(pool);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    ops = (long)(6000000 * scale / threads);
    run_workers(threads, worker);
    return 0;
}
