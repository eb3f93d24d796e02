/* What a drop-in must never do worse than glibc, one mode per run:
 *
 *   fill MIB BLOCK     allocate and touch MIB MiB in BLOCK-byte blocks;
 *                      exit 1 at the first NULL ("refused after N MiB")
 *   fill-opted MIB B   (linked) fill, with a shrinker that never has anything
 *                      registered first: the program opted in to reclaim
 *   unshare MIB        allocate and touch MIB MiB in 1 MiB blocks, then
 *                      unshare(CLONE_NEWUSER): the process must still have
 *                      one thread (prints "threads N")
 *   close-stderr       close descriptor 2, then exit (SHRINKALLOC_STATS=1
 *                      must still reach the original stderr)
 *   replace-stderr P   close descriptor 2, open P (which gets 2), write a
 *                      line to it, exit: the statistics must not land in P
 *   lower THREADS S B  (linked) hold a cache of 240 MiB in B MiB blocks, behind
 *                      a shrinker when S is 1; lower the hard limit to 160 MiB;
 *                      THREADS threads (made before; 1: the main thread) each
 *                      allocate 1 MiB four times, then the main thread once.
 *                      With a shrinker every allocation succeeds; without,
 *                      each is refused cleanly (NULL, ENOMEM).
 *                      Never an abort.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SA_LINKED
#include "shrinkalloc.h"
#endif
#include "check.h"

#define MIB ((size_t)1 << 20)

/* Allocates and touches `mib` MiB in `block`-byte blocks; returns the
 * bytes allocated before the first NULL (all of them when none). */
static size_t fill(size_t mib, size_t block) {
    size_t want = mib * MIB, got = 0;
    while (got < want) {
        char *p = malloc(block);
        if (!p)
            break;
        memset(p, 0x5a, block);
        got += block;
    }
    return got;
}

static int threads_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

#ifdef SA_LINKED
/* A cache of 1 MiB blocks on a singly linked list, under a mutex. */
struct block {
    struct block *next;
};
static struct block *cache;
static size_t cached;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t count_cb(void *arg, struct sa_shrink_control *sc) {
    (void)arg, (void)sc;
    pthread_mutex_lock(&cache_lock);
    size_t n = cached;
    pthread_mutex_unlock(&cache_lock);
    return n ? n : SA_SHRINK_EMPTY;
}

static size_t scan_cb(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    size_t freed = 0;
    pthread_mutex_lock(&cache_lock);
    while (cache && freed < sc->nr_to_scan) {
        struct block *b = cache;
        cache = b->next;
        cached--;
        free(b);
        freed++;
    }
    pthread_mutex_unlock(&cache_lock);
    return freed;
}

static size_t nothing_cb(void *arg, struct sa_shrink_control *sc) {
    (void)arg, (void)sc;
    return SA_SHRINK_EMPTY;
}

static int refused;
static pthread_barrier_t ready, lowered;

/* Made before the limit is lowered (its heap too), then allocates after. */
static void *allocate_after_lowering(void *arg) {
    (void)arg;
    free(malloc(opaque(64)));
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&lowered);
    for (int i = 0; i < 4; i++) {
        char *p = malloc(MIB);
        if (!p) {
            CHECK(errno == ENOMEM);
            __atomic_add_fetch(&refused, 1, __ATOMIC_RELAXED);
            continue;
        }
        memset(p, 1, MIB);
        free(p);
    }
    return NULL;
}

static int lower(int threads, int shrink, size_t block_mib) {
    if (shrink) {
        struct sa_shrinker_ops ops = {.name = "dropin-cache", .count = count_cb, .scan = scan_cb, .batch = 8};
        CHECK(sa_shrinker_register(&ops) != NULL);
    }
    for (size_t i = 0; i < 240 / block_mib; i++) {
        struct block *b = malloc(block_mib * MIB);
        CHECK(b != NULL);
        if (!b)
            break;
        memset(b, 2, block_mib * MIB);
        b->next = cache;
        cache = b;
        cached++;
    }
    pthread_t t[64];
    if (threads > 64)
        threads = 64;
    /* One thread: the main thread itself, which holds the cache. */
    int others = threads > 1 ? threads : 0;
    pthread_barrier_init(&ready, NULL, others + 1);
    pthread_barrier_init(&lowered, NULL, others + 1);
    for (int i = 0; i < others; i++)
        CHECK(pthread_create(&t[i], NULL, allocate_after_lowering, NULL) == 0);
    if (others) {
        pthread_barrier_wait(&ready);
        CHECK(sa_set_limits(0, 160 * MIB) == 0);
        pthread_barrier_wait(&lowered);
        for (int i = 0; i < others; i++)
            pthread_join(t[i], NULL);
    } else {
        CHECK(sa_set_limits(0, 160 * MIB) == 0);
        pthread_barrier_wait(&ready);
        pthread_barrier_wait(&lowered);
        allocate_after_lowering(NULL);
    }
    /* The cache's blocks were the main thread's: its next allocation
     * collects those the threads' reclaim freed into its pages. */
    char *last = malloc(MIB);
    printf("refused %d of %d, cached %zu, then %s\n", refused, 4 * threads, cached, last ? "allocated" : "refused");
    fflush(stdout);
    if (getenv("DROPIN_STATS"))
        sa_stats_print(1, 0);
    if (shrink) {
        CHECK(last != NULL);
        /* The shrinker holds far more than is needed, so nothing is
         * refused: huge blocks (over 1 MiB) go back to the OS whichever
         * thread frees them, and 1 MiB blocks freed by another thread's
         * reclaim give their inside back at once, although their owner
         * (the main thread, blocked in pthread_join) does not allocate. */
        CHECK(refused == 0);
    } else {
        CHECK(last == NULL && errno == ENOMEM);
        CHECK(refused == 4 * threads);
    }
    free(last);
    return 0;
}
#endif

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "fill") == 0) {
        size_t mib = strtoul(argv[2], NULL, 10), block = strtoul(argv[3], NULL, 10);
        size_t got = fill(mib, block);
        if (got < mib * MIB) {
            printf("refused after %zu MiB\n", got / MIB);
            return 1;
        }
        printf("allocated %zu MiB\n", got / MIB);
        return 0;
    }
#ifdef SA_LINKED
    if (argc >= 4 && strcmp(argv[1], "fill-opted") == 0) {
        struct sa_shrinker_ops ops = {.name = "nothing", .count = nothing_cb, .scan = nothing_cb};
        CHECK(sa_shrinker_register(&ops) != NULL);
        size_t mib = strtoul(argv[2], NULL, 10), block = strtoul(argv[3], NULL, 10);
        size_t got = fill(mib, block);
        printf("%s after %zu MiB\n", got < mib * MIB ? "refused" : "allocated", got / MIB);
        return 0;
    }
#endif
    if (argc >= 3 && strcmp(argv[1], "unshare") == 0) {
        size_t mib = strtoul(argv[2], NULL, 10);
        CHECK(fill(mib, MIB) == mib * MIB);
        int threads = threads_now();
        printf("threads %d\n", threads);
        CHECK(threads == 1);
        if (unshare(CLONE_NEWUSER) != 0) {
            printf("unshare: %s\n", strerror(errno));
            failures++;
        }
    } else if (argc >= 2 && strcmp(argv[1], "close-stderr") == 0) {
        free(opaque(1) ? malloc(100) : NULL);
        CHECK(close(2) == 0);
    } else if (argc >= 3 && strcmp(argv[1], "replace-stderr") == 0) {
        free(opaque(1) ? malloc(100) : NULL);
        CHECK(close(2) == 0);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        CHECK(fd == 2);
        static const char line[] = "the program's own line\n";
        CHECK(write(2, line, sizeof line - 1) == (ssize_t)(sizeof line - 1));
#ifdef SA_LINKED
    } else if (argc >= 5 && strcmp(argv[1], "lower") == 0) {
        lower(atoi(argv[2]), atoi(argv[3]), strtoul(argv[4], NULL, 10));
#endif
    } else {
        fprintf(stderr, "usage: dropin fill MIB BLOCK | unshare MIB | close-stderr | replace-stderr PATH | lower THREADS 0|1 BLOCK_MIB\n");
        return 2;
    }
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
