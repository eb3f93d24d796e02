/* The sa_* API from C, linked with the library (dynamically or statically):
 * scopes nest and NOIO implies NOFS; reclaim from a NOFS (NOIO) scope never
 * calls a shrinker that needs the filesystem (or I/O) in that thread; a
 * hard limit makes allocation reclaim, then fail with ENOMEM; a shrinker
 * can unregister itself from inside scan; argument errors set errno.
 * Prints "ok" and exits 0, or names the failed check and exits 1. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shrinkalloc.h"
#include "check.h"

/* ---- a cache of equal blocks, with a shrinker over it ------------------- */

#define MAX_BLOCKS 256

struct cache {
    const char *name;
    pthread_mutex_t lock;
    void *blocks[MAX_BLOCKS];
    size_t n;
    size_t block_size;
    size_t freed;          /* objects freed by scan, under lock */
    unsigned scopes_seen;  /* OR of sc->scope over scan calls, under lock */
    int calls_in_restricted_thread; /* callbacks run where the scope forbids them */
    sa_shrinker *handle;
};

/* The thread (if any) currently inside a scope that forbids some shrinkers,
 * and the needs it forbids. */
static pthread_t restricted_thread;
static int restricted_active;
static unsigned restricted_needs;

static void note_call(struct cache *c, unsigned needs) {
    if (__atomic_load_n(&restricted_active, __ATOMIC_ACQUIRE) && pthread_equal(pthread_self(), restricted_thread) &&
        (needs & restricted_needs))
        __atomic_add_fetch(&c->calls_in_restricted_thread, 1, __ATOMIC_RELAXED);
}

static unsigned needs_of(const struct cache *c);

static size_t cache_count(void *arg, struct sa_shrink_control *sc) {
    struct cache *c = arg;
    (void)sc;
    note_call(c, needs_of(c));
    size_t n = __atomic_load_n(&c->n, __ATOMIC_RELAXED);
    return n ? n : SA_SHRINK_EMPTY;
}

static size_t cache_scan(void *arg, struct sa_shrink_control *sc) {
    struct cache *c = arg;
    note_call(c, needs_of(c));
    if (pthread_mutex_trylock(&c->lock) != 0)
        return SA_SHRINK_STOP; /* never wait: the holder may be the allocating thread */
    size_t done = 0;
    while (done < sc->nr_to_scan && c->n > 0) {
        free(c->blocks[--c->n]);
        done++;
    }
    c->freed += done;
    c->scopes_seen |= sc->scope;
    pthread_mutex_unlock(&c->lock);
    return done;
}

static struct cache fs_cache = {.name = "fs-cache", .lock = PTHREAD_MUTEX_INITIALIZER};
static struct cache io_cache = {.name = "io-cache", .lock = PTHREAD_MUTEX_INITIALIZER};
static struct cache plain_cache = {.name = "plain-cache", .lock = PTHREAD_MUTEX_INITIALIZER};

static unsigned needs_of(const struct cache *c) {
    return c == &fs_cache ? SA_NEEDS_FS : c == &io_cache ? SA_NEEDS_IO : 0;
}

static void fill(struct cache *c, size_t n, size_t block_size) {
    pthread_mutex_lock(&c->lock);
    c->block_size = block_size;
    while (c->n < n) {
        void *b = malloc(block_size);
        if (!b)
            break;
        memset(b, 0x5a, block_size);
        c->blocks[c->n++] = b;
    }
    pthread_mutex_unlock(&c->lock);
}

static void empty(struct cache *c) {
    pthread_mutex_lock(&c->lock);
    while (c->n > 0)
        free(c->blocks[--c->n]);
    pthread_mutex_unlock(&c->lock);
}

static void reg(struct cache *c) {
    struct sa_shrinker_ops ops = {c->name, cache_count, cache_scan, c, needs_of(c), 0, 16};
    c->handle = sa_shrinker_register(&ops);
    CHECK(c->handle != NULL);
}

static size_t freed_by(struct cache *c) {
    pthread_mutex_lock(&c->lock);
    size_t f = c->freed;
    pthread_mutex_unlock(&c->lock);
    return f;
}

/* ---- statistics --------------------------------------------------------- */

/* The JSON statistics, in a static buffer. The temporary file (and its
 * stdio buffer) is made on the first call and kept, so that reading the
 * statistics allocates nothing, even at the hard limit. */
static const char *stats_json(void) {
    static char buf[1 << 16];
    static FILE *f;
    if (!f)
        f = tmpfile();
    CHECK(f != NULL);
    CHECK(ftruncate(fileno(f), 0) == 0);
    CHECK(lseek(fileno(f), 0, SEEK_SET) == 0);
    CHECK(sa_stats_print(fileno(f), 1) == 0);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    return buf;
}

static size_t json_number_after(const char *json, const char *anchor, const char *key) {
    const char *a = anchor ? strstr(json, anchor) : json;
    if (!a)
        return (size_t)-1;
    const char *k = strstr(a, key);
    return k ? strtoull(k + strlen(key), NULL, 10) : (size_t)-1;
}

/* ---- the checks --------------------------------------------------------- */

static void *scope_of_new_thread(void *out) {
    *(unsigned *)out = sa_scope_current();
    return NULL;
}

static void scopes_nest(void) {
    CHECK(sa_scope_current() == 0);
    unsigned outer = sa_memalloc_nofs_save();
    CHECK(outer == 0 && sa_scope_current() == SA_SCOPE_NOFS);
    unsigned inner = sa_memalloc_nofs_save();
    CHECK(inner == SA_SCOPE_NOFS);
    sa_memalloc_nofs_restore(inner); /* the outer scope is still in force */
    CHECK(sa_scope_current() == SA_SCOPE_NOFS);

    unsigned io = sa_memalloc_noio_save(); /* NOIO implies NOFS */
    CHECK(io == 0 && sa_scope_current() == (SA_SCOPE_NOFS | SA_SCOPE_NOIO));
    sa_memalloc_nofs_restore(outer); /* restore touches its own flag only */
    CHECK(sa_scope_current() == (SA_SCOPE_NOFS | SA_SCOPE_NOIO));
    sa_memalloc_noio_restore(io);
    CHECK(sa_scope_current() == 0);

    /* The mask is per thread. */
    unsigned saved = sa_memalloc_noio_save(), other = 99;
    pthread_t t;
    pthread_create(&t, NULL, scope_of_new_thread, &other);
    pthread_join(t, NULL);
    CHECK(other == 0);
    sa_memalloc_noio_restore(saved);
}

/* Reclaim from this thread in a scope that forbids `forbidden` needs. */
static void reclaim_in_scope(unsigned (*save)(void), void (*restore)(unsigned), unsigned forbidden) {
    unsigned s = save();
    restricted_thread = pthread_self();
    restricted_needs = forbidden;
    __atomic_store_n(&restricted_active, 1, __ATOMIC_RELEASE);
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
    __atomic_store_n(&restricted_active, 0, __ATOMIC_RELEASE);
    restore(s);
}

static void restricted_reclaim_skips_forbidden_shrinkers(void) {
    reg(&fs_cache);
    reg(&io_cache);
    reg(&plain_cache);

    /* NOFS: the filesystem shrinker is skipped in this thread, the others run. */
    fill(&fs_cache, 64, 4096);
    fill(&io_cache, 64, 4096);
    fill(&plain_cache, 64, 4096);
    reclaim_in_scope(sa_memalloc_nofs_save, sa_memalloc_nofs_restore, SA_NEEDS_FS);
    CHECK(fs_cache.calls_in_restricted_thread == 0);
    CHECK(freed_by(&plain_cache) > 0 && freed_by(&io_cache) > 0);
    CHECK(plain_cache.scopes_seen & SA_SCOPE_NOFS);
    const char *json = stats_json();
    size_t skipped = json_number_after(json, "\"name\":\"fs-cache\"", "\"skipped_by_mask\":");
    CHECK(skipped > 0 && skipped != (size_t)-1);

    /* NOIO implies NOFS: both the I/O and the filesystem shrinker are skipped. */
    fill(&fs_cache, 64, 4096);
    fill(&io_cache, 64, 4096);
    fill(&plain_cache, 64, 4096);
    size_t plain_before = freed_by(&plain_cache);
    reclaim_in_scope(sa_memalloc_noio_save, sa_memalloc_noio_restore, SA_NEEDS_FS | SA_NEEDS_IO);
    CHECK(fs_cache.calls_in_restricted_thread == 0 && io_cache.calls_in_restricted_thread == 0);
    CHECK(freed_by(&plain_cache) > plain_before);
    CHECK(plain_cache.scopes_seen & SA_SCOPE_NOIO);

    /* Unrestricted, the filesystem shrinker is asked too. */
    fill(&fs_cache, 64, 4096);
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
    CHECK(freed_by(&fs_cache) > 0);

    sa_shrinker_unregister(fs_cache.handle);
    sa_shrinker_unregister(io_cache.handle);
    sa_shrinker_unregister(plain_cache.handle);
    empty(&fs_cache);
    empty(&io_cache);
    empty(&plain_cache);
}

/* ---- unregistering from inside scan -------------------------------------- */

static sa_shrinker *self_handle;
static int self_scans;

static size_t self_count(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    return 1000;
}

static size_t self_scan(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    __atomic_add_fetch(&self_scans, 1, __ATOMIC_RELAXED);
    sa_shrinker *h = __atomic_exchange_n(&self_handle, NULL, __ATOMIC_ACQ_REL);
    if (h)
        sa_shrinker_unregister(h); /* returns at once: we are inside reclaim */
    return sc->nr_to_scan;
}

static void unregister_from_inside_scan(void) {
    struct sa_shrinker_ops ops = {"self-unregistering", self_count, self_scan, NULL, 0, 0, 0};
    sa_shrinker *h = sa_shrinker_register(&ops);
    CHECK(h != NULL);
    __atomic_store_n(&self_handle, h, __ATOMIC_RELEASE);
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
    CHECK(__atomic_load_n(&self_handle, __ATOMIC_ACQUIRE) == NULL);
    int scans = __atomic_load_n(&self_scans, __ATOMIC_RELAXED);
    CHECK(scans >= 1);
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
    CHECK(__atomic_load_n(&self_scans, __ATOMIC_RELAXED) == scans); /* never called again */
    CHECK(strstr(stats_json(), "self-unregistering") == NULL);
}

/* ---- a hard limit: reclaim, then ENOMEM ----------------------------------- */

#define MIB ((size_t)1 << 20)

static void hard_limit_reclaims_then_fails(void) {
    reg(&plain_cache);
    fill(&plain_cache, 48, MIB); /* a 48 MiB cache that can be shrunk */
    CHECK(plain_cache.n == 48);
    size_t committed = json_number_after(stats_json(), NULL, "\"committed\":");
    CHECK(committed != (size_t)-1);
    CHECK(sa_set_limits(0, committed + 16 * MIB) == 0);

    static void *live[256];
    size_t n = 0;
    errno = 0;
    while (n < 256) {
        void *p = malloc(MIB);
        if (!p)
            break;
        memset(p, 1, MIB);
        live[n++] = p;
    }
    /* More than the 16 MiB of headroom fit, because the cache gave way ... */
    CHECK(n > 32 && freed_by(&plain_cache) > 16);
    /* ... and then allocation failed cleanly instead of overshooting. */
    CHECK(n < 256 && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(MIB, 64) == NULL && errno == ENOMEM);

    const char *json = stats_json();
    CHECK(json_number_after(json, NULL, "\"direct\":") > 0);
    CHECK(json_number_after(json, NULL, "\"failed_charges\":") > 0);

    for (size_t i = 0; i < n; i++)
        free(live[i]);
    CHECK(sa_set_limits(0, 0) == 0);
    void *p = malloc(64 * MIB);
    CHECK(p != NULL);
    free(p);
    sa_shrinker_unregister(plain_cache.handle);
    empty(&plain_cache);
}

/* ---- argument errors ---------------------------------------------------- */

static void argument_errors(void) {
    errno = 0;
    CHECK(sa_shrinker_register(NULL) == NULL && errno == EINVAL);
    struct sa_shrinker_ops no_scan = {"x", cache_count, NULL, NULL, 0, 0, 0};
    errno = 0;
    CHECK(sa_shrinker_register(&no_scan) == NULL && errno == EINVAL);
    struct sa_shrinker_ops bad_needs = {"x", cache_count, cache_scan, &plain_cache, 0x4, 0, 0};
    errno = 0;
    CHECK(sa_shrinker_register(&bad_needs) == NULL && errno == EINVAL);
    sa_shrinker_unregister(NULL);

    errno = 0;
    CHECK(sa_set_limits(10 * MIB, 5 * MIB) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(sa_stats_print(-1, 0) == -1 && errno == EBADF);

    errno = 0;
    CHECK(calloc(opaque(SIZE_MAX / 4), 8) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(opaque(48), 96) == NULL && errno == EINVAL);
    void *p = (void *)1;
    CHECK(posix_memalign(&p, 12, 16) == EINVAL && p == (void *)1);
}

int main(void) {
    alarm(120); /* a deadlock fails the test instead of hanging it */
    scopes_nest();
    argument_errors();
    restricted_reclaim_skips_forbidden_shrinkers();
    unregister_from_inside_scan();
    hard_limit_reclaims_then_fails();
    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
