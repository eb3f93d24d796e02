/* Large blocks: each thread keeps 10 buffers of 5-25 MiB and replaces one
 * at a time (the shape of mimalloc-bench's malloc-large), writing a byte in
 * every 64 KiB of each new buffer: the cost is in mapping, unmapping and
 * faulting in large blocks, or in keeping them for reuse. */
#include <pthread.h>

#include "common.h"

#define BUFFERS 10
#define MIB ((size_t)1 << 20)

static long rounds;

static void *worker(void *arg)
{
    rng_t r = {(uint64_t)(uintptr_t)arg * 7 + 3};
    unsigned char *buf[BUFFERS] = {0};
    uint64_t sum = 0;
    for (long i = 0; i < rounds; i++) {
        size_t k = (size_t)i % BUFFERS;
        free(buf[k]);
        size_t size = rng_range(&r, 5 * MIB, 25 * MIB);
        buf[k] = malloc(size);
        if (!buf[k])
            die("allocation returned NULL");
        for (size_t off = 0; off < size; off += 64 * 1024)
            buf[k][off] = (unsigned char)i;
        buf[k][size - 1] = 1;
        sum += buf[k][0];
    }
    for (size_t k = 0; k < BUFFERS; k++)
        free(buf[k]);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    rounds = (long)(3000 * scale / threads);
    run_workers(threads, worker);
    return 0;
}
