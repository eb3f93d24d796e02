/*
 * cache.c - sa-fused's block cache, its lru and its write-back.
 *
 * Life of a block: read or written through the filesystem, it is allocated
 * under the cache lock (in a NOFS scope) and put on the LRU list; a write
 * makes it dirty. Dirty blocks are written to the backing file by work items
 * on a shrinkalloc work queue (queued when the dirty count passes
 * dirty_soft, or when a walk of the lru meets dirty blocks), by writers
 * themselves past dirty_hard, by fsync and at unmount. Clean blocks are
 * freed, coldest first, by the walks of the cache's sa_lru when shrinkalloc
 * asks (isolate unhashes them under both locks, dispose frees them); and by
 * a lock holder whose own malloc failed (reclaim in a NOFS thread may not
 * walk the lru, so the holder walks it itself where it is safe: it has the
 * lock). See cache.h for the locking invariant.
 */
#define _GNU_SOURCE
#include "cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK_MASK (BLOCK_SIZE - 1)
#define BHASH_BITS 16
#define IHASH_BITS 12
/* Clean blocks a lock holder frees per failed malloc before trying again. */
#define SELF_EVICT_BATCH 64
/* Dirty blocks a write-back item writes per hold of the lock. */
#define WRITEBACK_BATCH 64

/* Whether this thread holds the cache lock (isolate checks it), and
 * whether it is walking the lru itself to make room (cache_alloc). */
static _Thread_local int tl_holding, tl_self_evicting;

static void writeback_kick_wanted(struct cache *c);

/* SHRINKALLOC_STRESS_FUSE_DROP_SCOPE=1: lock holders skip their NOFS scope,
 * the planted bug reclaim lockdep must report (stress/tests/lockdep_*). */
static int drop_scope;

unsigned cache_lock(struct cache *c) {
    unsigned saved = sa_memalloc_nofs_save();
    if (drop_scope)
        sa_memalloc_nofs_restore(saved);
    pthread_mutex_lock(&c->lock);
    tl_holding = 1;
    return saved;
}

void cache_unlock(struct cache *c, unsigned saved) {
    tl_holding = 0;
    pthread_mutex_unlock(&c->lock);
    writeback_kick_wanted(c);
    sa_memalloc_nofs_restore(saved);
}

static void count(atomic_ullong *counter, unsigned long long n) {
    atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
}

/* ---- I/O on the backing file (a short read is the end of the file: zeros) ---- */

static int read_at(int fd, char *buf, size_t len, off_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    memset(buf + done, 0, len - done);
    return 0;
}

static int write_at(int fd, const char *buf, size_t len, off_t off) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, buf + done, len - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    return 0;
}

/* ---- heap corruption ---- */

/* Aborts, naming the structure, unless `magic` is `want`: the cache's
 * structures come from the malloc under test, and one overwritten would
 * otherwise show up as a wrong file much later. */
static void check_magic(uint32_t magic, uint32_t want, const char *what, const void *p) {
    if (magic != want) {
        fprintf(stderr, "sa-fused: heap corruption: %s %p has magic %#x, not %#x\n", what, p, magic, want);
        abort();
    }
}

/* ---- lists and hashes ---- */

static size_t bhash_of(const struct cache *c, const struct inode *ino, uint64_t index) {
    uint64_t h = ((uint64_t)(uintptr_t)ino >> 4) * 0x9E3779B97F4A7C15ull ^ index * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h ^ h >> 29) & c->bmask;
}

static struct block *block_find(struct cache *c, struct inode *ino, uint64_t index) {
    for (struct block *b = c->bhash[bhash_of(c, ino, index)]; b; b = b->hnext) {
        check_magic(b->magic, BLOCK_MAGIC, "block", b);
        if (b->ino == ino && b->index == index)
            return b;
    }
    return NULL;
}

static void bhash_unlink(struct cache *c, struct block *b) {
    struct block **p = &c->bhash[bhash_of(c, b->ino, b->index)];
    while (*p != b)
        p = &(*p)->hnext;
    *p = b->hnext;
}

/* A hashed block is on the lru: anything else is a bug in this file. */
static void lru_del(struct cache *c, struct block *b) {
    if (c->lru && sa_lru_del(c->lru, &b->lru) != 1) {
        fprintf(stderr, "sa-fused: block %p is hashed but not on the lru\n", (void *)b);
        abort();
    }
}

static void mark_dirty(struct cache *c, struct block *b) {
    if (b->dirty)
        return;
    b->dirty = 1;
    b->dirty_prev = c->dirty.dirty_prev;
    b->dirty_next = &c->dirty;
    c->dirty.dirty_prev->dirty_next = b;
    c->dirty.dirty_prev = b;
    atomic_fetch_add_explicit(&c->nr_dirty, 1, memory_order_relaxed);
}

static void mark_clean(struct cache *c, struct block *b) {
    if (!b->dirty)
        return;
    b->dirty = 0;
    b->dirty_prev->dirty_next = b->dirty_next;
    b->dirty_next->dirty_prev = b->dirty_prev;
    atomic_fetch_sub_explicit(&c->nr_dirty, 1, memory_order_relaxed);
}

/* ---- inodes ---- */

static size_t ihash_of(const struct cache *c, ino_t key) {
    return (size_t)(((uint64_t)key * 0x9E3779B97F4A7C15ull) >> 32) & c->imask;
}

struct inode *inode_lookup(struct cache *c, ino_t key) {
    for (struct inode *i = c->ihash[ihash_of(c, key)]; i; i = i->hnext) {
        check_magic(i->magic, INODE_MAGIC, "inode", i);
        if (i->key == key)
            return i;
    }
    return NULL;
}

static void inode_unhash(struct cache *c, struct inode *ino) {
    if (!ino->hashed)
        return;
    struct inode **p = &c->ihash[ihash_of(c, ino->key)];
    while (*p != ino)
        p = &(*p)->hnext;
    *p = ino->hnext;
    ino->hashed = 0;
}

/* Frees `ino` once nothing refers to it: no open handle, no cached block. */
static void inode_maybe_free(struct cache *c, struct inode *ino) {
    if (ino->opens || ino->nblocks)
        return;
    inode_unhash(c, ino);
    close(ino->fd);
    ino->magic = 0;
    free(ino);
}

/* ---- allocation under the lock ---- */

static size_t self_evict(struct cache *c);

/* malloc for a lock holder. Reclaim in this (NOFS) thread skips the cache's
 * lru, so a refusal at the hard limit is answered here: evict clean
 * blocks, which the lock allows, and try again. */
static void *cache_alloc(struct cache *c, size_t size) {
    for (int tries = 0; tries < 4; tries++) {
        void *p = malloc(size);
        if (p)
            return p;
        count(&c->st.alloc_failed, 1);
        if (self_evict(c) == 0)
            break;
    }
    return NULL;
}

struct inode *inode_get(struct cache *c, int fd, int *err) {
    struct stat st;
    if (fstat(fd, &st) < 0) {
        *err = -errno;
        return NULL;
    }
    struct inode *ino = inode_lookup(c, st.st_ino);
    if (ino)
        return ino;
    ino = cache_alloc(c, sizeof *ino);
    if (!ino) {
        *err = -ENOMEM;
        return NULL;
    }
    *ino = (struct inode){.magic = INODE_MAGIC, .key = st.st_ino, .fd = fd, .size = st.st_size, .hashed = 1};
    size_t h = ihash_of(c, st.st_ino);
    ino->hnext = c->ihash[h];
    c->ihash[h] = ino;
    return ino;
}

void inode_put(struct cache *c, struct inode *ino) {
    ino->opens--;
    inode_maybe_free(c, ino);
}

/* ---- blocks ---- */

static struct block *block_new(struct cache *c, struct inode *ino, uint64_t index) {
    struct block *b = cache_alloc(c, sizeof *b);
    if (!b)
        return NULL;
    b->data = cache_alloc(c, BLOCK_SIZE);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->magic = BLOCK_MAGIC;
    b->ino = ino;
    b->index = index;
    b->dirty = 0;
    b->lru = (struct sa_lru_node){0};
    size_t h = bhash_of(c, ino, index);
    b->hnext = c->bhash[h];
    c->bhash[h] = b;
    if (c->lru)
        sa_lru_add(c->lru, &b->lru);
    ino->nblocks++;
    atomic_fetch_add_explicit(&c->nr_blocks, 1, memory_order_relaxed);
    return b;
}

/* Frees `b` (dirty or not); its inode stays, even if now unreferenced. */
static void block_free(struct cache *c, struct block *b) {
    bhash_unlink(c, b);
    lru_del(c, b);
    mark_clean(c, b);
    b->ino->nblocks--;
    atomic_fetch_sub_explicit(&c->nr_blocks, 1, memory_order_relaxed);
    b->magic = 0;
    free(b->data);
    free(b);
}

/* A lock holder whose malloc failed makes room: a walk of the lru (its
 * isolate sees tl_self_evicting and needs no lock), or without one the
 * clean blocks of a few hash buckets. Returns the blocks freed. */
static size_t self_evict(struct cache *c) {
    if (c->lru) {
        tl_self_evicting = 1;
        size_t n = sa_lru_shrink(c->lru, 4 * SELF_EVICT_BATCH);
        tl_self_evicting = 0;
        return n;
    }
    size_t freed = 0;
    for (size_t tried = 0; tried <= c->bmask && freed < SELF_EVICT_BATCH; tried++) {
        size_t h = c->evict_cursor++ & c->bmask;
        for (struct block *b = c->bhash[h], *next; b; b = next) {
            next = b->hnext;
            if (!b->dirty) {
                struct inode *ino = b->ino;
                block_free(c, b);
                inode_maybe_free(c, ino);
                freed++;
            }
        }
    }
    count(&c->st.self_evicted, freed);
    return freed;
}

/* Drops the blocks of `ino` from `first` on, dirty ones included. */
static void drop_blocks(struct cache *c, struct inode *ino, uint64_t first) {
    uint64_t end = ((uint64_t)ino->size + BLOCK_MASK) >> BLOCK_SHIFT;
    for (uint64_t i = first; i < end && ino->nblocks; i++) {
        struct block *b = block_find(c, ino, i);
        if (b) {
            block_free(c, b);
            count(&c->st.discarded, 1);
        }
    }
}

void inode_forget(struct cache *c, struct inode *ino) {
    drop_blocks(c, ino, 0);
    inode_unhash(c, ino);
    inode_maybe_free(c, ino);
}

int inode_truncate(struct cache *c, struct inode *ino, off_t size) {
    uint64_t keep = ((uint64_t)size + BLOCK_MASK) >> BLOCK_SHIFT;
    if (size < ino->size)
        drop_blocks(c, ino, keep);
    size_t tail = (size_t)size & BLOCK_MASK;
    struct block *last = tail ? block_find(c, ino, (uint64_t)size >> BLOCK_SHIFT) : NULL;
    if (last)
        memset(last->data + tail, 0, BLOCK_SIZE - tail);
    ino->size = size;
    int r = ftruncate(ino->fd, size) < 0 ? -errno : 0;
    inode_maybe_free(c, ino);
    return r;
}

/* ---- read and write through the cache ---- */

/* The block at `index`, read from the backing file if it was not cached
 * (unless `whole`: the caller overwrites all of it). NULL with *err = 0
 * when no memory could be had: the caller goes to the backing file. */
static struct block *block_get(struct cache *c, struct inode *ino, uint64_t index, int whole, int *err) {
    *err = 0;
    struct block *b = block_find(c, ino, index);
    if (b) {
        count(&c->st.hits, 1);
        if (c->lru)
            sa_lru_touch(c->lru, &b->lru);
        return b;
    }
    b = block_new(c, ino, index);
    if (!b) {
        count(&c->st.uncached, 1);
        return NULL;
    }
    count(&c->st.misses, 1);
    int r = whole ? 0 : read_at(ino->fd, b->data, BLOCK_SIZE, (off_t)(index << BLOCK_SHIFT));
    if (r < 0) {
        block_free(c, b);
        *err = r;
        return NULL;
    }
    return b;
}

ssize_t cache_read(struct cache *c, struct inode *ino, char *buf, size_t size, off_t off) {
    if (off >= ino->size)
        return 0;
    if ((off_t)size > ino->size - off)
        size = (size_t)(ino->size - off);
    for (size_t done = 0; done < size;) {
        off_t pos = off + (off_t)done;
        size_t boff = (size_t)pos & BLOCK_MASK, n = BLOCK_SIZE - boff;
        if (n > size - done)
            n = size - done;
        int err;
        struct block *b = block_get(c, ino, (uint64_t)pos >> BLOCK_SHIFT, 0, &err);
        if (b)
            memcpy(buf + done, b->data + boff, n);
        else if (err || (err = read_at(ino->fd, buf + done, n, pos)) < 0)
            return err;
        done += n;
    }
    return (ssize_t)size;
}

ssize_t cache_write(struct cache *c, struct inode *ino, const char *buf, size_t size, off_t off) {
    for (size_t done = 0; done < size;) {
        off_t pos = off + (off_t)done;
        size_t boff = (size_t)pos & BLOCK_MASK, n = BLOCK_SIZE - boff;
        if (n > size - done)
            n = size - done;
        int err;
        struct block *b = block_get(c, ino, (uint64_t)pos >> BLOCK_SHIFT, n == BLOCK_SIZE, &err);
        if (b) {
            memcpy(b->data + boff, buf + done, n);
            mark_dirty(c, b);
        } else if (err || (err = write_at(ino->fd, buf + done, n, pos)) < 0) {
            return err;
        }
        done += n;
    }
    if (off + (off_t)size > ino->size)
        ino->size = off + (off_t)size;
    size_t dirty = atomic_load_explicit(&c->nr_dirty, memory_order_relaxed);
    if (dirty > c->dirty_hard) {
        /* Like the kernel's balance_dirty_pages(): the writer pays. */
        count(&c->st.throttled, 1);
        writeback_locked(c, NULL, dirty - c->dirty_soft);
    }
    return (ssize_t)size;
}

/* ---- write-back ---- */

size_t writeback_locked(struct cache *c, struct inode *ino, size_t max) {
    size_t written = 0;
    struct block *b = c->dirty.dirty_next;
    while (b != &c->dirty && written < max) {
        check_magic(b->magic, BLOCK_MAGIC, "block", b);
        struct block *next = b->dirty_next;
        if (!ino || b->ino == ino) {
            off_t off = (off_t)(b->index << BLOCK_SHIFT);
            off_t len = b->ino->size - off < (off_t)BLOCK_SIZE ? b->ino->size - off : (off_t)BLOCK_SIZE;
            if (len > 0 && write_at(b->ino->fd, b->data, (size_t)len, off) < 0)
                count(&c->st.wb_errors, 1);
            mark_clean(c, b);
            written++;
        }
        b = next;
    }
    count(&c->st.wb_blocks, written);
    return written;
}

/* A work item: writes back what was dirty when it started, a batch per hold
 * of the lock. It runs in the context it was submitted from: NOFS. */
static void writeback_item(void *arg) {
    struct cache *c = arg;
    atomic_store_explicit(&c->wb_pending, 0, memory_order_relaxed);
    count(&c->st.wb_items, 1);
    if (!(sa_scope_current() & SA_SCOPE_NOFS))
        count(&c->st.wb_not_nofs, 1);
    size_t budget = atomic_load_explicit(&c->nr_dirty, memory_order_relaxed);
    while (budget) {
        unsigned s = cache_lock(c);
        size_t n = writeback_locked(c, NULL, budget < WRITEBACK_BATCH ? budget : WRITEBACK_BATCH);
        cache_unlock(c, s);
        if (n == 0)
            break;
        budget -= n;
    }
}

void writeback_kick(struct cache *c) {
    int idle = 0;
    if (!atomic_compare_exchange_strong(&c->wb_pending, &idle, 1))
        return;
    unsigned s = sa_memalloc_nofs_save();
    if (sa_workqueue_submit(c->wq, writeback_item, c) != 0) {
        atomic_store(&c->wb_pending, 0);
        count(&c->st.wb_submit_failed, 1);
    }
    sa_memalloc_nofs_restore(s);
}

void writeback_wait(struct cache *c) {
    sa_workqueue_flush(c->wq);
}

/* ---- the lru's callbacks ---- */

/* Under the lru's lock: unhash a clean block, with the cache lock held (by
 * this thread if it is making room itself, else taken with a trylock: a
 * holder of the cache lock may be waiting for the lru's lock in
 * sa_lru_add). A dirty block stays and asks for write-back, which the next
 * cache_unlock() queues (submitting allocates: not here). */
static enum sa_lru_verdict block_isolate(struct sa_lru_node *node, void *arg) {
    struct cache *c = arg;
    struct block *b = (struct block *)((char *)node - offsetof(struct block, lru));
    int self = tl_self_evicting;
    if (!self) {
        count(&c->st.scans, 1);
        if (sa_scope_current() & SA_SCOPE_NOFS)
            count(&c->st.scan_calls_nofs, 1);
        if (tl_holding) {
            /* Reclaim walked an FS lru inside a lock holder's malloc: the
             * holder is halfway through a change, so touch nothing. */
            count(&c->st.scans_in_lock_holder, 1);
            return SA_LRU_STOP;
        }
        if (pthread_mutex_trylock(&c->lock) != 0)
            return SA_LRU_STOP;
    }
    check_magic(b->magic, BLOCK_MAGIC, "block", b);
    enum sa_lru_verdict v = SA_LRU_SKIP;
    if (b->dirty) {
        atomic_store_explicit(&c->wb_wanted, 1, memory_order_relaxed);
    } else {
        struct inode *ino = b->ino;
        bhash_unlink(c, b);
        ino->nblocks--;
        atomic_fetch_sub_explicit(&c->nr_blocks, 1, memory_order_relaxed);
        inode_maybe_free(c, ino);
        v = SA_LRU_REMOVED;
    }
    if (!self)
        pthread_mutex_unlock(&c->lock);
    return v;
}

/* After the lru's lock is released: free a block isolate unhashed. */
static void block_dispose(struct sa_lru_node *node, void *arg) {
    struct cache *c = arg;
    struct block *b = (struct block *)((char *)node - offsetof(struct block, lru));
    count(tl_self_evicting ? &c->st.self_evicted : &c->st.evicted, 1);
    b->magic = 0;
    free(b->data);
    free(b);
}

static void writeback_kick_wanted(struct cache *c) {
    if (atomic_load_explicit(&c->wb_wanted, memory_order_relaxed) &&
        atomic_exchange_explicit(&c->wb_wanted, 0, memory_order_relaxed))
        writeback_kick(c);
}

/* ---- set-up and tear-down ---- */

int cache_init(struct cache *c, size_t dirty_soft_blocks, int with_shrinker) {
    memset(c, 0, sizeof *c);
    const char *drop = getenv("SHRINKALLOC_STRESS_FUSE_DROP_SCOPE");
    drop_scope = drop && strcmp(drop, "1") == 0;
    pthread_mutex_init(&c->lock, NULL);
    c->bmask = ((size_t)1 << BHASH_BITS) - 1;
    c->imask = ((size_t)1 << IHASH_BITS) - 1;
    c->bhash = calloc(c->bmask + 1, sizeof *c->bhash);
    c->ihash = calloc(c->imask + 1, sizeof *c->ihash);
    if (!c->bhash || !c->ihash)
        return -1;
    c->dirty.dirty_next = c->dirty.dirty_prev = &c->dirty;
    c->dirty_soft = dirty_soft_blocks;
    c->dirty_hard = 2 * dirty_soft_blocks;
    c->wq = sa_workqueue_create("sa-fused-wb", 2);
    if (!c->wq)
        return -1;
    if (with_shrinker) {
        struct sa_lru_ops ops = {
            .name = "sa-fused-blocks",
            .isolate = block_isolate,
            .dispose = block_dispose,
            .arg = c,
            .needs = SA_NEEDS_FS,
        };
        c->lru = sa_lru_create(&ops);
        if (!c->lru)
            return -1;
    }
    return 0;
}

void cache_shutdown(struct cache *c) {
    /* No walk may ask for write-back once the queue is ending. */
    sa_lru_destroy(c->lru);
    c->lru = NULL;
    atomic_store(&c->wb_wanted, 0);
    unsigned s = cache_lock(c);
    writeback_locked(c, NULL, SIZE_MAX);
    cache_unlock(c, s);
    sa_workqueue_destroy(c->wq);
    c->wq = NULL;
    s = cache_lock(c);
    for (size_t h = 0; h <= c->bmask; h++)
        while (c->bhash[h])
            block_free(c, c->bhash[h]);
    for (size_t h = 0; h <= c->imask; h++)
        while (c->ihash[h]) {
            struct inode *ino = c->ihash[h];
            inode_unhash(c, ino);
            close(ino->fd);
            free(ino);
        }
    cache_unlock(c, s);
}
