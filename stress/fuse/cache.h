/*
 * cache.h - sa-fused's block cache: file data in 32 KiB blocks, kept in
 * memory from malloc, given back to shrinkalloc through an sa_lru.
 *
 * Invariant: everything below is guarded by `struct cache.lock` (the
 * filesystem's lock), except the atomic counters and the lru's own links.
 * A thread takes that lock only through cache_lock(), which also enters a
 * NOFS scope, so that an allocation made while holding it never walks the
 * cache's lru (declared SA_NEEDS_FS, as a filesystem cache's shrinker is).
 * A block is on the lru exactly while it is hashed; the lru's isolate
 * (under the lru's lock) only trylocks the cache lock, unhashes a clean
 * block and lets the lru's dispose free it after. A dirty block is never
 * freed before it is written back; write-back runs on a work queue, always
 * submitted from a NOFS scope, so its workers run NOFS too.
 */
#ifndef SA_FUSED_CACHE_H
#define SA_FUSED_CACHE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shrinkalloc.h"

#define BLOCK_SHIFT 15
#define BLOCK_SIZE ((size_t)1 << BLOCK_SHIFT)

/* One backing file with cached data. Hashed by its backing inode number
 * while it may be looked up; `fd` (read-write) stays open as long as the
 * struct lives, so the number cannot be reused by another file meanwhile.
 * Freed when no handle is open and no block is cached. */
struct inode {
    uint32_t magic;    /* INODE_MAGIC while alive: a check against heap corruption */
    ino_t key;
    int fd;
    off_t size;        /* the file's size as readers see it (dirty data included) */
    unsigned opens;    /* open handles */
    size_t nblocks;    /* cached blocks of this inode */
    int hashed;
    struct inode *hnext;
};

/* One cached block: bytes [index * BLOCK_SIZE, +BLOCK_SIZE) of `ino`, zero
 * past the end of the file. On the lru while hashed (unless the cache runs
 * without one); on the dirty list (oldest dirtied first) while `dirty`. */
struct block {
    uint32_t magic;    /* BLOCK_MAGIC while alive */
    struct inode *ino;
    uint64_t index;
    int dirty;
    struct block *hnext;
    struct sa_lru_node lru;
    struct block *dirty_prev, *dirty_next;
    char *data;
};

/* Counters, read without the lock by the statistics thread. */
struct cache_stats {
    atomic_ullong hits, misses, uncached;      /* block lookups in read and write */
    atomic_ullong evicted;                     /* clean blocks freed by reclaim's walks of the lru */
    atomic_ullong self_evicted;                /* ... by a lock holder whose malloc failed */
    atomic_ullong discarded;                   /* dropped by unlink or truncate */
    atomic_ullong alloc_failed;                /* malloc returned NULL under the lock */
    atomic_ullong wb_items, wb_blocks;         /* write-back items run, blocks written */
    atomic_ullong wb_not_nofs;                 /* items that ran without NOFS: must stay 0 */
    atomic_ullong wb_submit_failed, wb_errors; /* submit refused; pwrite failed (data lost) */
    atomic_ullong throttled;                   /* writers that wrote back themselves */
    atomic_ullong scans, scan_calls_nofs;      /* blocks reclaim offered to isolate; in a NOFS thread: must stay 0 */
    atomic_ullong scans_in_lock_holder;        /* ... in a thread holding the lock: must stay 0 */
};

#define INODE_MAGIC 0x1d0de5a5u
#define BLOCK_MAGIC 0xb10c5a5au

struct cache {
    pthread_mutex_t lock;
    struct block **bhash;
    size_t bmask;
    struct inode **ihash;
    size_t imask;
    sa_lru *lru;             /* hashed blocks, coldest first; NULL without a shrinker */
    struct block dirty;      /* sentinel: dirty.dirty_next is the oldest dirtied */
    size_t dirty_soft;       /* dirty blocks that start write-back */
    size_t dirty_hard;       /* dirty blocks past which writers write back themselves */
    atomic_size_t nr_blocks; /* mirrors for count(), which must not block */
    atomic_size_t nr_dirty;
    atomic_int wb_pending;   /* a write-back item is queued and has not started */
    atomic_int wb_wanted;    /* isolate met a dirty block: the next unlock kicks write-back */
    size_t evict_cursor;     /* without an lru: the hash bucket self-eviction starts at */
    sa_workqueue *wq;
    struct cache_stats st;
};

/* Sets up an empty cache; creates its lru (which registers its shrinker)
 * unless !with_shrinker: then nothing but a lock holder whose malloc failed
 * evicts, in hash order. Returns 0, or -1 with errno. */
int cache_init(struct cache *c, size_t dirty_soft_blocks, int with_shrinker);
/* Writes back every dirty block, drains and ends the work queue, destroys
 * the lru, frees every block. */
void cache_shutdown(struct cache *c);

/* Takes / releases the cache lock inside a NOFS scope: cache_lock()
 * returns what cache_unlock() needs. */
unsigned cache_lock(struct cache *c);
void cache_unlock(struct cache *c, unsigned saved);

/* The rest is called with the lock held. */
/* The inode of the open backing file `fd`: the one hashed under its inode
 * number, or else a new one that takes `fd` over (its size read now, under
 * the lock, so that no truncate comes between). The caller closes `fd` only
 * if the result's fd differs, and counts its handle in `opens`. NULL with
 * *err = -errno when fstat fails or no memory could be had. */
struct inode *inode_get(struct cache *c, int fd, int *err);
struct inode *inode_lookup(struct cache *c, ino_t key);
void inode_put(struct cache *c, struct inode *ino); /* drops an open handle */
/* The file is being unlinked: drop its blocks (dirty ones too) and unhash
 * it; then `ino` may be gone unless a handle is open. */
void inode_forget(struct cache *c, struct inode *ino);
/* Sets the size (cache and backing file); then `ino` may be gone unless a
 * handle is open. Returns 0 or -errno. */
int inode_truncate(struct cache *c, struct inode *ino, off_t size);
ssize_t cache_read(struct cache *c, struct inode *ino, char *buf, size_t size, off_t off);
ssize_t cache_write(struct cache *c, struct inode *ino, const char *buf, size_t size, off_t off);
/* Writes back up to `max` dirty blocks (of `ino` only, unless NULL). */
size_t writeback_locked(struct cache *c, struct inode *ino, size_t max);

/* Without the lock: queue a write-back item (from a NOFS scope, so that it
 * runs NOFS) unless one is queued already; and wait for queued items. */
void writeback_kick(struct cache *c);
void writeback_wait(struct cache *c);

#endif
