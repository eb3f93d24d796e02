/*
 * lru.h - sa-cached's caches: an LRU of malloc'ed buffers indexed by a dense
 * key (a block number), behind a shrinker registered through the C API.
 *
 * Invariant: everything but the atomic counters is guarded by `lock`; no
 * thread ever allocates while holding it (a miss allocates and fills its
 * buffer first, then locks to insert), so the shrinker's scan may block on
 * the lock without deadlocking a thread that reclaims inside malloc. `nr`
 * and `bytes` count what is on the list; a key is in `slot` exactly when
 * its entry is on the list.
 */
#ifndef SA_CACHED_LRU_H
#define SA_CACHED_LRU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shrinkalloc.h"

#define ENTRY_MAGIC 0x1e5e1e5eu

struct entry {
    uint32_t magic;             /* ENTRY_MAGIC while alive: a check against heap corruption */
    uint32_t key;
    size_t size;                /* bytes of `data`, as allocated */
    struct entry *prev, *next;  /* on the list, most recent first */
    unsigned char *data;
};

struct lru {
    const char *name;           /* the shrinker's name */
    pthread_mutex_t lock;
    struct entry **slot;        /* by key */
    uint32_t nkeys;
    struct entry head;          /* sentinel: head.next is the most recent */
    atomic_size_t nr, bytes;    /* written under the lock, read without it */
    atomic_ullong hits, misses, evicted, scans;
    sa_shrinker *shrinker;      /* NULL when not registered */
};

/* Sets up an empty cache of keys [0, nkeys); registers its shrinker when
 * `with_shrinker` (seeks: what a miss costs to refill, as the kernel's).
 * Returns 0, or -1 when memory or the registration fails. */
int lru_init(struct lru *c, const char *name, uint32_t nkeys, unsigned seeks, int with_shrinker);

/* Unregisters the shrinker and frees every entry. */
void lru_destroy(struct lru *c);

/* Copies the data of `key` into `out` (at least its size) and makes it the
 * most recent: its size, or 0 on a miss. `*seq` is set, under the lock, to
 * the request's number from `seq_counter` (for the trace). */
size_t lru_get(struct lru *c, uint32_t key, unsigned char *out, atomic_ullong *seq_counter, uint64_t *seq);

/* Inserts `data` (malloc'ed, `size` bytes) as `key`, the most recent; if a
 * racing thread inserted the key first, frees `data` instead. `*seq` as in
 * lru_get(). Returns 0, or -1 when the entry cannot be allocated (`data`
 * is freed then). */
int lru_put(struct lru *c, uint32_t key, unsigned char *data, size_t size, atomic_ullong *seq_counter,
            uint64_t *seq);

/* Calls `check(key, data, size, arg)` on every entry, under the lock;
 * returns how many. */
size_t lru_each(struct lru *c, void (*check)(uint32_t key, const unsigned char *data, size_t size, void *arg),
                void *arg);

#endif
