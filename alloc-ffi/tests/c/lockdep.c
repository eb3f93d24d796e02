/* Reclaim lockdep from C, with libshrinkalloc_lockdep.so preloaded:
 * shrinkers that need the filesystem, I/O, or nothing take pthread locks
 * (a mutex, a rwlock, a mutex taken with trylock) and one lock of the
 * program's own kind annotated by hand; one explicit pass learns them all;
 * then each case takes a lock, allocates, and checks how many reports the
 * statistics counted: a scope that excludes the shrinker means none,
 * scopes nest, a lock released before the allocation is not reported.
 * Prints the locks' addresses, then "ok". With "off" as argument (the
 * checker off) every case expects no report. Built with -rdynamic, so
 * that the reports' stacks name these functions. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "shrinkalloc.h"

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_rwlock_t io_lock = PTHREAD_RWLOCK_INITIALIZER;
static pthread_mutex_t plain_lock = PTHREAD_MUTEX_INITIALIZER;
static int custom_lock; /* a spin lock of the program's own */

static void custom_take(void) {
    while (__atomic_exchange_n(&custom_lock, 1, __ATOMIC_ACQUIRE))
        ;
    sa_lockdep_acquire(&custom_lock, "custom-spin");
}

static void custom_give(void) {
    sa_lockdep_release(&custom_lock);
    __atomic_store_n(&custom_lock, 0, __ATOMIC_RELEASE);
}

size_t fs_count(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    pthread_mutex_lock(&fs_lock);
    pthread_mutex_unlock(&fs_lock);
    custom_take();
    custom_give();
    return SA_SHRINK_EMPTY;
}

size_t io_count(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    pthread_rwlock_rdlock(&io_lock);
    pthread_rwlock_unlock(&io_lock);
    return SA_SHRINK_EMPTY;
}

size_t plain_count(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    if (pthread_mutex_trylock(&plain_lock) == 0)
        pthread_mutex_unlock(&plain_lock);
    return SA_SHRINK_EMPTY;
}

static size_t scan_none(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    return SA_SHRINK_STOP;
}

static uint64_t reports(void) {
    uint64_t values[64];
    const char *names[64];
    size_t n = sa_reclaim_stats(values, names, 64);
    for (size_t i = 0; i < n && i < 64; i++)
        if (strcmp(names[i], "lockdep_reports") == 0)
            return values[i];
    CHECK(!"lockdep_reports in the statistics");
    return 0;
}

static void *volatile sink;

__attribute__((noinline)) void allocate(void) {
    sink = malloc(opaque(100));
    free(sink);
}

__attribute__((noinline)) void alloc_holding_fs_lock(void) {
    pthread_mutex_lock(&fs_lock);
    allocate();
    pthread_mutex_unlock(&fs_lock);
}

__attribute__((noinline)) void alloc_holding_fs_lock_nofs(void) {
    pthread_mutex_lock(&fs_lock);
    unsigned s = sa_memalloc_nofs_save();
    allocate();
    sa_memalloc_nofs_restore(s);
    pthread_mutex_unlock(&fs_lock);
}

__attribute__((noinline)) void alloc_holding_fs_lock_timed(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 5;
    CHECK(pthread_mutex_timedlock(&fs_lock, &t) == 0);
    allocate();
    pthread_mutex_unlock(&fs_lock);
}

__attribute__((noinline)) void alloc_holding_io_lock_nofs(void) {
    pthread_rwlock_wrlock(&io_lock);
    unsigned s = sa_memalloc_nofs_save();
    allocate();
    sa_memalloc_nofs_restore(s);
    pthread_rwlock_unlock(&io_lock);
}

__attribute__((noinline)) void alloc_holding_io_lock_noio(void) {
    pthread_rwlock_rdlock(&io_lock);
    unsigned s = sa_memalloc_noio_save();
    allocate();
    sa_memalloc_noio_restore(s);
    pthread_rwlock_unlock(&io_lock);
}

__attribute__((noinline)) void alloc_holding_plain_lock_noio(void) {
    CHECK(pthread_mutex_trylock(&plain_lock) == 0);
    unsigned s = sa_memalloc_noio_save();
    allocate();
    sa_memalloc_noio_restore(s);
    pthread_mutex_unlock(&plain_lock);
}

/* NOIO outside, NOFS inside: covered until the outer scope ends. */
__attribute__((noinline)) void alloc_in_nested_scopes(int *after_outer) {
    pthread_mutex_lock(&fs_lock);
    unsigned outer = sa_memalloc_noio_save();
    unsigned inner = sa_memalloc_nofs_save();
    allocate();
    sa_memalloc_nofs_restore(inner);
    allocate();
    sa_memalloc_noio_restore(outer);
    *after_outer = 1;
    allocate();
    pthread_mutex_unlock(&fs_lock);
}

__attribute__((noinline)) void alloc_after_release(void) {
    pthread_mutex_lock(&fs_lock);
    pthread_mutex_unlock(&fs_lock);
    allocate();
}

__attribute__((noinline)) void alloc_holding_custom_lock(void) {
    custom_take();
    allocate();
    custom_give();
}

__attribute__((noinline)) void fs_lock_in_a_loop(void) {
    for (int i = 0; i < 10; i++)
        alloc_holding_fs_lock();
}

/* How many reports `f` made, against `want` (0 when the checker is off). */
static void expect(void (*f)(void), uint64_t want, int on, const char *what) {
    uint64_t before = reports();
    f();
    uint64_t got = reports() - before;
    if (got != (on ? want : 0)) {
        fprintf(stderr, "%s: %llu reports, want %llu\n", what, (unsigned long long)got,
                (unsigned long long)(on ? want : 0));
        failures++;
    }
}

static void nested(void) {
    int after = 0;
    alloc_in_nested_scopes(&after);
    CHECK(after);
}

int main(int argc, char **argv) {
    int on = !(argc > 1 && strcmp(argv[1], "off") == 0);
    struct sa_shrinker_ops fs = {.name = "fs-cache", .count = fs_count, .scan = scan_none, .needs = SA_NEEDS_FS};
    struct sa_shrinker_ops io = {.name = "io-cache", .count = io_count, .scan = scan_none, .needs = SA_NEEDS_IO};
    struct sa_shrinker_ops plain = {.name = "plain-cache", .count = plain_count, .scan = scan_none};
    sa_shrinker *s[3] = {sa_shrinker_register(&fs), sa_shrinker_register(&io), sa_shrinker_register(&plain)};
    CHECK(s[0] && s[1] && s[2]);
    /* Learning: one pass, from a thread with no scope. */
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);

    expect(alloc_holding_fs_lock, 1, on, "fs lock, no scope");
    expect(fs_lock_in_a_loop, 1, on, "fs lock, ten times from one call site");
    expect(alloc_holding_fs_lock_nofs, 0, on, "fs lock, NOFS");
    expect(alloc_holding_fs_lock_timed, 1, on, "fs lock by timedlock, no scope");
    expect(alloc_holding_io_lock_nofs, 1, on, "io lock, NOFS");
    expect(alloc_holding_io_lock_noio, 0, on, "io lock, NOIO");
    expect(alloc_holding_plain_lock_noio, 1, on, "plain lock by trylock, NOIO");
    expect(nested, 1, on, "nested scopes: only after the outer one ends");
    expect(alloc_after_release, 0, on, "released before the allocation");
    expect(alloc_holding_custom_lock, 1, on, "annotated lock of the program's own");

    for (int i = 0; i < 3; i++)
        sa_shrinker_unregister(s[i]);
    printf("fs=%p io=%p plain=%p custom=%p\n", (void *)&fs_lock, (void *)&io_lock, (void *)&plain_lock,
           (void *)&custom_lock);
    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
