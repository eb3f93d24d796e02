/* Shared by the harness's C and C++ workloads: a seeded random generator
 * (splitmix64, one per thread), the command line every workload takes, and
 * writing into a block so that its pages are really used.
 *
 * Every workload is `prog THREADS SCALE`: THREADS worker threads, SCALE a
 * multiplier of the work (1 = the README's run). Each prints one line,
 * "ok <checksum>", so that a run that went wrong is seen. */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t s;
} rng_t;

static inline uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Log-uniform in [2^lo_bits, 2^hi_bits): as many blocks of 16-32 B as of 1-2 KiB. */
static inline size_t rng_log(rng_t *r, unsigned lo_bits, unsigned hi_bits)
{
    unsigned b = (unsigned)rng_range(r, lo_bits, hi_bits - 1);
    size_t base = (size_t)1 << b;
    return base + (size_t)(rng_next(r) % base);
}

/* A step two threads agree on: set_phase() announces step p, wait_phase()
 * blocks until it is announced (the hand-over programs: sleepy_owner.c,
 * purge_walk.c). */
static pthread_mutex_t phase_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t phase_changed = PTHREAD_COND_INITIALIZER;
static int phase_now;

static inline void set_phase(int p)
{
    pthread_mutex_lock(&phase_lock);
    phase_now = p;
    pthread_cond_broadcast(&phase_changed);
    pthread_mutex_unlock(&phase_lock);
}

static inline void wait_phase(int p)
{
    pthread_mutex_lock(&phase_lock);
    while (phase_now != p)
        pthread_cond_wait(&phase_changed, &phase_lock);
    pthread_mutex_unlock(&phase_lock);
}

/* What a sleeping owner allocates (set before starting it): `owner_count`
 * blocks of `owner_size` bytes into `owner_blocks`, written; then it
 * announces step 1 and sleeps until step 2. */
static void **owner_blocks;
static int owner_count;
static size_t owner_size;

static inline void *sleeping_owner(void *arg)
{
    (void)arg;
    for (int i = 0; i < owner_count; i++) {
        owner_blocks[i] = malloc(owner_size);
        memset(owner_blocks[i], 1, owner_size);
    }
    set_phase(1);
    wait_phase(2);
    return NULL;
}

static inline void die(const char *what)
{
    fprintf(stderr, "workload failed: %s\n", what);
    exit(1);
}

/* Writes the first bytes, one byte per 4 KiB page and the last byte:
 * a block is used, and each of its pages is touched once. */
static inline void touch(void *p, size_t size, unsigned char v)
{
    unsigned char *c = (unsigned char *)p;
    if (!c)
        die("allocation returned NULL");
    memset(c, v, size < 64 ? size : 64);
    for (size_t off = 4096; off < size; off += 4096)
        c[off] = v;
    c[size - 1] = v;
}

static inline void parse_args(int argc, char **argv, int *threads, double *scale)
{
    *threads = argc > 1 ? atoi(argv[1]) : 2;
    *scale = argc > 2 ? atof(argv[2]) : 1.0;
    if (*threads < 1 || *scale <= 0)
        die("usage: prog THREADS SCALE");
}

/* Runs worker((void *)t) on `threads` threads, t = 0 .. threads - 1, joins
 * them and prints "ok <sum of what they returned>". */
static inline void run_workers(int threads, void *(*worker)(void *))
{
    pthread_t *tid = (pthread_t *)calloc((size_t)threads, sizeof(pthread_t));
    if (!tid)
        die("allocation returned NULL");
    for (int t = 0; t < threads; t++)
        pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
    uint64_t sum = 0;
    for (int t = 0; t < threads; t++) {
        void *ret;
        pthread_join(tid[t], &ret);
        sum += (uintptr_t)ret;
    }
    free(tid);
    printf("ok %llu\n", (unsigned long long)sum);
}

#endif
