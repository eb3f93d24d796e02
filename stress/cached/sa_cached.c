/*
 * sa_cached.c - sa-cached, the C block-cache daemon of the stress harness's
 * `cache-c` scenario: the `cache` scenario as a C daemon would write it,
 * through include/shrinkalloc.h, with zero configuration (its limits come
 * from its memory cgroup).
 *
 * usage: sa-cached --demand BYTES --duration-ms N [--seed N] [--threads N]
 *                  [--trace-fd FD] [--no-shrinker] [--stats-ms N]
 *
 * The backing store is a space of blocks of 4-32 KiB (each block's size and
 * content are functions of the seed and its number) adding up to --demand.
 * --threads request threads (2 by default) serve, paced evenly over
 * --duration-ms, REQUESTS_PER_BLOCK requests per block in all: HOT_PERCENT
 * of them to a block of the hot tenth, the rest to any block (the long
 * tail). A request looks up the block's metadata (a small record, in its own
 * cache) and the block: a hit copies it out and checks every byte; a miss
 * allocates the block, fills it (the stand-in for a read from disk) and
 * inserts it. Both caches are LRUs behind shrinkers (lru.c): nothing else
 * evicts, so unconstrained the cache would hold most of --demand. A block
 * that cannot be allocated ends the daemon as Rust programs end, with
 * "memory allocation of N bytes failed" and abort().
 *
 * With --trace-fd every block request is traced in the harness's format
 * (stress/src/trace.rs): 16-byte records, written by each thread in whole
 * buffers of at most PIPE_BUF bytes.
 *
 * Stdout, for the harness: every --stats-ms a `cache k=v ...` line and an
 * `sa {...}` line (sa_stats_print() as JSON); at the end, once every cached
 * block is checked, both a last time and `done`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "lru.h"

#define MIN_BLOCK 4096u
#define MAX_BLOCK 32768u
#define META_SIZE 192u
#define HOT_PERCENT 80u
#define REQUESTS_PER_BLOCK 8u
#define MAX_THREADS 64u

enum kind { KIND_HIT = 1, KIND_MISS = 2, KIND_PUT = 3 };

struct daemon {
    uint64_t seed;
    uint32_t nblocks;
    uint64_t requests_per_thread;
    double per_sec;            /* requests per thread per second */
    struct timespec start;
    int trace_fd;              /* -1: no trace */
    atomic_ullong seq;         /* the trace's sequence numbers */
    struct lru blocks, meta;
    atomic_ullong requests, alloc_failed, corrupt;
    pthread_mutex_t out;       /* one writer of stdout at a time */
    atomic_int stop;
    unsigned stats_ms;
};

static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t block_size(const struct daemon *d, uint32_t key) {
    return MIN_BLOCK + mix(d->seed ^ key) % (MAX_BLOCK - MIN_BLOCK + 1);
}

/* The content of a block (or a metadata record): each 8-byte word a
 * function of its tag and offset (cheap: a multiply), the last cut short. */
static uint64_t word(uint64_t tag, size_t at) {
    return tag ^ ((uint64_t)at * 0x9e3779b97f4a7c15ull);
}

static void stamp(unsigned char *buf, size_t size, uint64_t tag) {
    for (size_t at = 0; at < size; at += 8) {
        uint64_t w = word(tag, at);
        memcpy(buf + at, &w, size - at < 8 ? size - at : 8);
    }
}

static int stamped(const unsigned char *buf, size_t size, uint64_t tag) {
    uint64_t diff = 0;
    size_t at = 0;
    for (; at + 8 <= size; at += 8) {
        uint64_t w;
        memcpy(&w, buf + at, 8);
        diff |= w ^ word(tag, at);
    }
    uint64_t w = word(tag, at);
    return !diff && !memcmp(buf + at, &w, size - at);
}

static uint64_t block_tag(const struct daemon *d, uint32_t key) {
    return mix(d->seed * 31 + key);
}

static uint64_t meta_tag(const struct daemon *d, uint32_t key) {
    return mix(d->seed * 37 + key + 0x3e7a);
}

static double elapsed(const struct daemon *d) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - d->start.tv_sec) + (double)(now.tv_nsec - d->start.tv_nsec) / 1e9;
}

static void write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* ---- the trace ---- */

#define TRACE_RECORD 16u
#define TRACE_BUFFER 4096u /* PIPE_BUF: one write is atomic */

struct trace_buf {
    unsigned char bytes[TRACE_BUFFER];
    size_t len;
};

static void trace_flush(const struct daemon *d, struct trace_buf *t) {
    if (d->trace_fd >= 0 && t->len)
        write_all(d->trace_fd, t->bytes, t->len);
    t->len = 0;
}

static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void trace(const struct daemon *d, struct trace_buf *t, uint64_t seq, uint32_t key, size_t size,
                  enum kind kind) {
    if (d->trace_fd < 0)
        return;
    unsigned char *r = t->bytes + t->len;
    put_le(r, seq, 8);
    put_le(r + 8, key, 4);
    put_le(r + 12, (size & 0xffffffu) | (uint32_t)kind << 24, 4);
    t->len += TRACE_RECORD;
    if (t->len + TRACE_RECORD > TRACE_BUFFER)
        trace_flush(d, t);
}

/* ---- requests ---- */

static void out_of_memory(size_t size) {
    char msg[96];
    int n = snprintf(msg, sizeof msg, "memory allocation of %zu bytes failed\n", size);
    write_all(2, msg, (size_t)n);
    abort();
}

static void corrupt(struct daemon *d, const char *what, uint32_t key) {
    atomic_fetch_add(&d->corrupt, 1);
    fprintf(stderr, "corruption: %s %u differs from its pattern\n", what, key);
}

/* Looks `key` up in `c`; on a miss allocates, fills and inserts it.
 * Returns whether it hit. */
static int request_one(struct daemon *d, struct lru *c, uint32_t key, size_t size, uint64_t tag,
                       unsigned char *scratch, struct trace_buf *t) {
    uint64_t seq;
    size_t got = lru_get(c, key, scratch, &d->seq, &seq);
    if (t)
        trace(d, t, seq, key, size, got ? KIND_HIT : KIND_MISS);
    if (got) {
        if (got != size || !stamped(scratch, size, tag))
            corrupt(d, c->name, key);
        return 1;
    }
    unsigned char *data = malloc(size);
    if (!data)
        out_of_memory(size);
    stamp(data, size, tag);
    if (lru_put(c, key, data, size, &d->seq, &seq) < 0)
        out_of_memory(sizeof(struct entry));
    if (t)
        trace(d, t, seq, key, size, KIND_PUT);
    return 0;
}

struct worker {
    struct daemon *d;
    unsigned index;
    pthread_t thread;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct daemon *d = w->d;
    static _Thread_local unsigned char scratch[MAX_BLOCK];
    static _Thread_local struct trace_buf t;
    uint64_t rng = mix(d->seed ^ (0x5eed + w->index));
    uint32_t hot = d->nblocks / 10 ? d->nblocks / 10 : 1;
    for (uint64_t done = 0; done < d->requests_per_thread;) {
        double next = (double)(done + 1) / d->per_sec, now = elapsed(d);
        if (now < next) {
            /* At least 1 ms, so that requests come in bursts, not a
             * sleep each; at most 2 ms. */
            double nap = next - now < 0.001 ? 0.001 : next - now > 0.002 ? 0.002 : next - now;
            nanosleep(&(struct timespec){0, (long)(nap * 1e9)}, NULL);
            continue;
        }
        rng = mix(rng + 0x9e3779b97f4a7c15ull);
        uint32_t key = (uint32_t)(rng % 100 < HOT_PERCENT ? (rng >> 8) % hot : (rng >> 8) % d->nblocks);
        request_one(d, &d->meta, key, META_SIZE, meta_tag(d, key), scratch, NULL);
        request_one(d, &d->blocks, key, block_size(d, key), block_tag(d, key), scratch, &t);
        atomic_fetch_add_explicit(&d->requests, 1, memory_order_relaxed);
        done++;
    }
    trace_flush(d, &t);
    return NULL;
}

/* ---- statistics ---- */

static unsigned long long cpu_ms(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (unsigned long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (unsigned long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

static void print_stats(struct daemon *d, size_t verified) {
#define V(x) (unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed)
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "cache requests=%llu blocks=%zu cache_bytes=%zu hits=%llu misses=%llu evicted=%llu "
                     "scans=%llu meta=%zu meta_hits=%llu meta_evicted=%llu alloc_failed=%llu corrupt=%llu "
                     "cpu_ms=%llu verified=%zu\n",
                     V(d->requests), atomic_load(&d->blocks.nr), atomic_load(&d->blocks.bytes), V(d->blocks.hits),
                     V(d->blocks.misses), V(d->blocks.evicted), V(d->blocks.scans), atomic_load(&d->meta.nr),
                     V(d->meta.hits), V(d->meta.evicted), V(d->alloc_failed), V(d->corrupt), cpu_ms(), verified);
#undef V
    pthread_mutex_lock(&d->out);
    write_all(1, line, (size_t)n);
    write_all(1, "sa ", 3);
    sa_stats_print(1, 1);
    pthread_mutex_unlock(&d->out);
}

static void *stats_main(void *arg) {
    struct daemon *d = arg;
    while (!atomic_load(&d->stop)) {
        print_stats(d, 0);
        for (unsigned slept = 0; slept < d->stats_ms && !atomic_load(&d->stop); slept += 10)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return NULL;
}

struct check_arg {
    struct daemon *d;
    struct lru *c;
    int is_meta;
};

static void check_entry(uint32_t key, const unsigned char *data, size_t size, void *arg) {
    struct check_arg *a = arg;
    size_t want = a->is_meta ? META_SIZE : block_size(a->d, key);
    uint64_t tag = a->is_meta ? meta_tag(a->d, key) : block_tag(a->d, key);
    if (!data || size != want || !stamped(data, size, tag))
        corrupt(a->d, a->c->name, key);
}

/* ---- main ---- */

static int usage(void) {
    fprintf(stderr, "usage: sa-cached --demand BYTES --duration-ms N [--seed N] [--threads N] [--trace-fd FD] "
                    "[--no-shrinker] [--stats-ms N]\n");
    return 2;
}

int main(int argc, char **argv) {
    unsigned long long demand = 0, duration_ms = 0, seed = 1, threads = 2, stats_ms = 250;
    long long trace_fd = -1;
    int with_shrinker = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-shrinker")) {
            with_shrinker = 0;
            continue;
        }
        if (i + 1 == argc)
            return usage();
        char *end;
        errno = 0;
        unsigned long long v = strtoull(argv[i + 1], &end, 10);
        if (errno || *end || end == argv[i + 1])
            return usage();
        if (!strcmp(argv[i], "--demand"))
            demand = v;
        else if (!strcmp(argv[i], "--duration-ms"))
            duration_ms = v;
        else if (!strcmp(argv[i], "--seed"))
            seed = v;
        else if (!strcmp(argv[i], "--threads"))
            threads = v;
        else if (!strcmp(argv[i], "--trace-fd"))
            trace_fd = v > INT_MAX ? -1 : (long long)v;
        else if (!strcmp(argv[i], "--stats-ms"))
            stats_ms = v;
        else
            return usage();
        i++;
    }
    uint64_t nblocks = demand / ((MIN_BLOCK + MAX_BLOCK) / 2);
    if (!nblocks || nblocks > UINT32_MAX || !duration_ms || !threads || threads > MAX_THREADS)
        return usage();
    signal(SIGPIPE, SIG_IGN); /* a harness gone: the trace write fails, the daemon goes on */

    static struct daemon d;
    d.seed = seed;
    d.nblocks = (uint32_t)nblocks;
    d.requests_per_thread = (nblocks * REQUESTS_PER_BLOCK + threads - 1) / threads;
    d.per_sec = (double)d.requests_per_thread * 1000.0 / (double)duration_ms;
    d.trace_fd = (int)trace_fd;
    d.stats_ms = stats_ms ? (unsigned)stats_ms : 250;
    pthread_mutex_init(&d.out, NULL);
    /* A block costs a read from disk to refill, a metadata record more (a
     * seek): the kernel's seeks, as the inode and dentry caches use. */
    if (lru_init(&d.blocks, "blocks", d.nblocks, 2, with_shrinker) < 0 ||
        lru_init(&d.meta, "meta", d.nblocks, 4, with_shrinker) < 0) {
        fprintf(stderr, "cannot set up the caches\n");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &d.start);
    pthread_t stats;
    int stats_running = pthread_create(&stats, NULL, stats_main, &d) == 0;
    struct worker workers[MAX_THREADS];
    for (unsigned i = 0; i < threads; i++) {
        workers[i] = (struct worker){.d = &d, .index = i};
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "cannot start a request thread\n");
            return 1;
        }
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(workers[i].thread, NULL);
    atomic_store(&d.stop, 1);
    if (stats_running)
        pthread_join(stats, NULL);
    size_t verified = lru_each(&d.blocks, check_entry, &(struct check_arg){&d, &d.blocks, 0});
    lru_each(&d.meta, check_entry, &(struct check_arg){&d, &d.meta, 1});
    print_stats(&d, verified);
    lru_destroy(&d.blocks);
    lru_destroy(&d.meta);
    write_all(1, "done\n", 5);
    return atomic_load(&d.corrupt) ? 3 : 0;
}
