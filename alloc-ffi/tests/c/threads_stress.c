/* 8 threads of random malloc/calloc/realloc/aligned/free with every block
 * stamped and verified, blocks handed across threads through a shared
 * exchange and freed by another thread, and threads that exit and are
 * replaced while their blocks live on. Usage: threads_stress SEED ROUNDS.
 * Prints "ok" or names the corrupted block and exits 1. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define SLOTS 256
#define EXCHANGE 1024
#define OPS 20000

struct block {
    unsigned char *p;
    size_t size;
    unsigned char stamp;
};

static struct block exchange[EXCHANGE];
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static int corrupt;

static uint64_t next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static size_t random_size(uint64_t *s) {
    uint64_t r = next(s);
    switch (r % 16) {
    case 0: return 0;
    case 1: return (r >> 8) % 200000;        /* medium */
    case 2: return r % 64 == 0 ? (size_t)((r >> 8) % (3 << 20)) : 100; /* sometimes huge */
    default: return (r >> 8) % 512;          /* small */
    }
}

static void fill(struct block *b) { memset(b->p, b->stamp, b->size); }

static void verify(const struct block *b, const char *where) {
    for (size_t i = 0; i < b->size; i++)
        if (b->p[i] != b->stamp) {
            fprintf(stderr, "corrupt block %p size %zu at %zu (%s)\n", (void *)b->p, b->size, i, where);
            __atomic_store_n(&corrupt, 1, __ATOMIC_RELAXED);
            return;
        }
}

static void make(struct block *b, uint64_t *s) {
    size_t size = random_size(s);
    switch (next(s) % 4) {
    case 0: b->p = calloc(1, size); break;
    case 1: b->p = aligned_alloc((size_t)64 << (next(s) % 4), size); break;
    default: b->p = malloc(size); break;
    }
    if (!b->p) {
        fprintf(stderr, "allocation of %zu failed\n", size);
        exit(1);
    }
    b->size = size;
    b->stamp = (unsigned char)next(s);
    fill(b);
}

/* A pthread key whose destructor allocates: it may run after the
 * allocator's own thread-exit work, and must still be served. */
static pthread_key_t exit_key;

static void allocate_at_exit(void *value) {
    free(value);
    void *p = NULL;
    for (size_t n = 1; n < 100000; n *= 3) {
        p = realloc(p, n);
        if (!p)
            abort();
        memset(p, 1, n);
    }
    free(p);
}

static void *worker(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    pthread_setspecific(exit_key, malloc(100));
    struct block mine[SLOTS] = {{0}};
    for (int op = 0; op < OPS; op++) {
        struct block *b = &mine[next(&s) % SLOTS];
        if (!b->p) {
            make(b, &s);
            continue;
        }
        verify(b, "own");
        switch (next(&s) % 4) {
        case 0: { /* realloc keeps the common prefix (realloc(p, 0) is tested elsewhere) */
            size_t size = random_size(&s) + 1;
            unsigned char *q = realloc(b->p, size);
            if (!q) {
                fprintf(stderr, "realloc to %zu failed\n", size);
                exit(1);
            }
            struct block prefix = {q, size < b->size ? size : b->size, b->stamp};
            verify(&prefix, "realloc");
            b->p = q;
            b->size = size;
            fill(b);
            break;
        }
        case 1: { /* swap with the exchange: the other block came from any thread */
            pthread_mutex_lock(&exchange_lock);
            struct block *x = &exchange[next(&s) % EXCHANGE];
            struct block t = *x;
            *x = *b;
            *b = t;
            pthread_mutex_unlock(&exchange_lock);
            if (b->p)
                verify(b, "exchanged");
            break;
        }
        default:
            free(b->p);
            b->p = NULL;
        }
    }
    /* Exit with half of the blocks still live: others free them later. */
    for (int i = 0; i < SLOTS; i++)
        if (mine[i].p && i % 2) {
            pthread_mutex_lock(&exchange_lock);
            struct block *x = &exchange[next(&s) % EXCHANGE];
            struct block t = *x;
            *x = mine[i];
            mine[i] = t;
            pthread_mutex_unlock(&exchange_lock);
        }
    for (int i = 0; i < SLOTS; i++)
        if (mine[i].p) {
            verify(&mine[i], "exit");
            free(mine[i].p);
        }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    uint64_t seed = strtoull(argv[1], NULL, 0);
    int rounds = atoi(argv[2]);
    if (pthread_key_create(&exit_key, allocate_at_exit))
        return 3;
    for (int r = 0; r < rounds; r++) {
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(seed + (uint64_t)r * THREADS + i + 1)))
                return 3;
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
    }
    for (int i = 0; i < EXCHANGE; i++)
        if (exchange[i].p) {
            verify(&exchange[i], "final");
            free(exchange[i].p);
        }
    if (corrupt)
        return 1;
    printf("ok\n");
    return 0;
}
