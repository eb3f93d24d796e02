/*
 * shrinkalloc.h - the C API of shrinkalloc (libshrinkalloc.so / .a).
 *
 * Two audiences:
 *
 *  1. Unmodified programs: `LD_PRELOAD=libshrinkalloc.so PROGRAM`, or link
 *     `-lshrinkalloc` before libc. The library then *is* the process's
 *     malloc: the standard functions below are exported with glibc's
 *     semantics and declared here only for documentation (they come from
 *     <stdlib.h> and <malloc.h> as usual).
 *  2. Programs that opt in: register shrinkers over their caches, mark the
 *     code that holds filesystem locks NOFS (or NOIO), set limits, reclaim,
 *     read statistics: the sa_* functions.
 *
 * Vocabulary is the Linux kernel's (shrinker, count, scan, seeks, batch,
 * NOFS, NOIO, level); see include/linux/shrinker.h and
 * include/linux/sched/mm.h for the originals.
 *
 * Each function says what it does, what it returns, what it sets in errno,
 * and in which context it may be called ("Context:"). "Any context" means
 * any thread, before main, in a forked child, and inside a shrinker callback;
 * no function here is async-signal-safe.
 *
 * C99 and C++ (extern "C"). x86-64 Linux with glibc.
 */
#ifndef SHRINKALLOC_H
#define SHRINKALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <malloc.h>

/* The standard functions are redeclared below with the exception
 * specification glibc gives them in C++ (noexcept), so that both
 * declarations agree. */
#if defined(__cplusplus) && defined(__THROW)
#define SA_LIBC_NOEXCEPT __THROW
#else
#define SA_LIBC_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * The malloc family (drop-in replacement, glibc semantics)
 *
 * Alignment: a block of more than 8 bytes is aligned to 16 (glibc's
 * MALLOC_ALIGNMENT); a block of 8 bytes or less to 8.
 *
 * Bad pointers: free(), realloc() and malloc_usable_size() print one line
 * on stderr ("shrinkalloc: free(): ...") and abort (SIGABRT) when given a
 * pointer outside shrinkalloc's memory (a stack, static or foreign heap
 * pointer). free() also aborts on an interior pointer and on a block that is
 * already free, as long as its page has not been reused; realloc() does not
 * check for those two yet. A double free after the memory was handed out
 * again cannot be told from a valid free.
 *
 * Shrinker callbacks may run inside any of these (under a hard limit), and
 * glibc declares them `leaf` (no call back into the caller's file): let a
 * callback reach its state through its `arg` or through atomics, not
 * through a file-static variable that the allocating code also caches.
 *
 * Context: any context.
 * ---------------------------------------------------------------------- */

/**
 * malloc() - allocate @size bytes.
 * Return: a block of at least @size bytes; malloc(0) returns a unique
 * pointer that must be freed. NULL with errno = ENOMEM if the size is
 * impossible (above PTRDIFF_MAX) or memory cannot be had (the OS refuses, or
 * the hard limit holds after reclaim).
 */
void *malloc(size_t size) SA_LIBC_NOEXCEPT;

/**
 * calloc() - allocate @n * @size zeroed bytes.
 * Return: the block, or NULL with errno = ENOMEM when @n * @size overflows
 * or memory cannot be had.
 */
void *calloc(size_t n, size_t size) SA_LIBC_NOEXCEPT;

/**
 * realloc() - resize a block, keeping its first min(old, new) bytes.
 * @p NULL: same as malloc(@size). @size 0 with @p non-NULL: frees @p and
 * returns NULL, errno untouched (glibc). The result has malloc()'s
 * alignment, whatever @p's was.
 * Return: the block (possibly @p), or NULL with errno = ENOMEM; then @p is
 * still valid and unchanged.
 */
void *realloc(void *p, size_t size) SA_LIBC_NOEXCEPT;

/**
 * reallocarray() - realloc(@p, @n * @size) with the product checked.
 * Return: as realloc(); NULL with errno = ENOMEM and @p untouched when
 * @n * @size overflows.
 */
void *reallocarray(void *p, size_t n, size_t size) SA_LIBC_NOEXCEPT;

/**
 * free() - free a block. free(NULL) does nothing. errno is preserved.
 */
void free(void *p) SA_LIBC_NOEXCEPT;

/**
 * free_sized() - C23: free a block allocated with @size bytes. Same as free().
 */
void free_sized(void *p, size_t size) SA_LIBC_NOEXCEPT;

/**
 * free_aligned_sized() - C23: free a block from aligned_alloc(). Same as free().
 */
void free_aligned_sized(void *p, size_t alignment, size_t size) SA_LIBC_NOEXCEPT;

/**
 * posix_memalign() - allocate @size bytes aligned to @alignment.
 * @alignment must be a power of two and a multiple of sizeof(void *).
 * Return: 0 and *@memptr set; EINVAL for a bad alignment; ENOMEM when memory
 * cannot be had (or the alignment exceeds 256 MiB). On error *@memptr is
 * untouched. errno is never set (POSIX).
 */
int posix_memalign(void **memptr, size_t alignment, size_t size) SA_LIBC_NOEXCEPT;

/**
 * aligned_alloc() - C11: allocate @size bytes aligned to @alignment.
 * Return: the block; NULL with errno = EINVAL if @alignment is not a power
 * of two (glibc 2.38+, C17); NULL with errno = ENOMEM otherwise on failure.
 * @size need not be a multiple of @alignment.
 */
void *aligned_alloc(size_t alignment, size_t size) SA_LIBC_NOEXCEPT;

/**
 * memalign() - obsolete: allocate @size bytes aligned to @alignment.
 * As glibc: an alignment that is not a power of two is rounded up to the
 * next one; 0 asks for nothing more than malloc() gives.
 * Return: the block; NULL with errno = EINVAL if @alignment > SIZE_MAX/2+1;
 * NULL with errno = ENOMEM on failure.
 */
void *memalign(size_t alignment, size_t size) SA_LIBC_NOEXCEPT;

/**
 * valloc() - obsolete: memalign(page size, @size).
 * Return: as memalign().
 */
void *valloc(size_t size) SA_LIBC_NOEXCEPT;

/**
 * pvalloc() - obsolete: page-aligned, @size rounded up to whole pages.
 * Return: as memalign(); NULL with errno = ENOMEM if the rounding overflows.
 */
void *pvalloc(size_t size) SA_LIBC_NOEXCEPT;

/**
 * malloc_usable_size() - bytes usable in the block @p (at least what was
 * asked for; writing up to this many is allowed).
 * Return: the size; 0 for NULL.
 */
size_t malloc_usable_size(void *p) SA_LIBC_NOEXCEPT;

/**
 * malloc_trim() - return every free page to the OS now, and (with no memory
 * limit in force) the pages inside free blocks of 8 KiB or more in pages
 * still in use. @pad is ignored.
 * Return: 1 if memory was released, 0 if not (glibc).
 */
int malloc_trim(size_t pad) SA_LIBC_NOEXCEPT;

/* ------------------------------------------------------------------------
 * Scopes: what reclaim started from this thread must not do
 *
 * A thread that holds a filesystem lock marks the region of code holding it
 * NOFS; every allocation made there, however deep in a library, then never
 * runs a shrinker that may need the filesystem (SA_NEEDS_FS), which could
 * deadlock on that very lock. NOIO forbids both I/O and filesystem
 * shrinkers: NOIO implies NOFS. Semantics of the kernel's
 * memalloc_nofs_save()/memalloc_nofs_restore(): a save returns the old state
 * of its own flag, a restore puts back exactly that flag, so pairs nest and
 * an inner scope never ends an outer one. The mask is per thread.
 *
 * Context: any context; cheap (one thread-local access).
 * ---------------------------------------------------------------------- */

#define SA_SCOPE_NOFS 0x1u
#define SA_SCOPE_NOIO 0x2u

/**
 * sa_memalloc_nofs_save() - enter a NOFS scope.
 * Return: the previous state of the NOFS flag (0 or SA_SCOPE_NOFS), to be
 * passed to sa_memalloc_nofs_restore().
 */
unsigned sa_memalloc_nofs_save(void);

/**
 * sa_memalloc_nofs_restore() - end a NOFS scope: put the NOFS flag back to
 * @saved (from the matching save). Other flags are not touched.
 */
void sa_memalloc_nofs_restore(unsigned saved);

/**
 * sa_memalloc_noio_save() - enter a NOIO scope (which implies NOFS).
 * Return: the previous state of the NOIO flag (0 or SA_SCOPE_NOIO).
 */
unsigned sa_memalloc_noio_save(void);

/**
 * sa_memalloc_noio_restore() - end a NOIO scope: put the NOIO flag back to
 * @saved. Other flags are not touched.
 */
void sa_memalloc_noio_restore(unsigned saved);

/**
 * sa_scope_current() - the calling thread's scope mask, as reclaim reads it.
 * Return: SA_SCOPE_NOFS | SA_SCOPE_NOIO bits; in a NOIO scope both bits are
 * set (NOIO implies NOFS).
 */
unsigned sa_scope_current(void);

/* ------------------------------------------------------------------------
 * Shrinkers
 *
 * A shrinker is a cache that can give memory back. Reclaim asks it two
 * questions, in its own unit (objects, entries, pages):
 *
 *  count(arg, sc): how many objects could be freed now. Return the number
 *      (0: nothing at the moment) or SA_SHRINK_EMPTY when the cache holds
 *      nothing at all. Must be cheap and must not block: it is called on
 *      every reclaim round. (SA_SHRINK_STOP from count counts as 0.)
 *  scan(arg, sc): free up to sc->nr_to_scan objects. Return how many were
 *      freed (possibly fewer, or 0), or SA_SHRINK_STOP when no progress is
 *      possible without waiting (e.g. a trylock failed): reclaim stops
 *      asking this shrinker for the round and owes it the rest for later.
 *
 * Reclaim measures bytes itself (by how much shrinkalloc's committed memory
 * drops), so the units need not be bytes. How much is asked: the kernel's
 * do_shrink_slab arithmetic, (count >> priority) * 4 / seeks per round,
 * from a gentle priority down to 0 as pressure rises, in batches of
 * `batch` objects.
 *
 * Guarantees: a callback runs only in a thread whose scope allows the
 * shrinker's `needs` (a NOFS thread never calls an SA_NEEDS_FS shrinker;
 * what it had to skip is owed and done later by a reclaimer allowed to);
 * never after sa_shrinker_unregister() has returned; and with the thread
 * marked as reclaiming, so that what the callback allocates never starts
 * reclaim again (it may use a small reserve above the hard limit).
 *
 * A callback must never:
 *  - wait for memory to be freed by another thread, or for a thread that may
 *    itself be allocating under the hard limit (reclaim runs inside
 *    allocation, so that can be a wait on itself);
 *  - take a lock its `needs` do not declare: a shrinker that may block on a
 *    filesystem lock must say SA_NEEDS_FS, one that may wait for I/O
 *    SA_NEEDS_IO; otherwise a thread holding that lock in a NOFS/NOIO scope
 *    can deadlock in its own allocation;
 *  - assume it runs alone: count and scan may run concurrently on several
 *    threads (direct reclaim in allocating threads, background reclaimers);
 *  - unwind (C++ exceptions, longjmp) through the library.
 * ---------------------------------------------------------------------- */

#define SA_SHRINK_STOP  ((size_t)-1) /* scan: cannot make progress now */
#define SA_SHRINK_EMPTY ((size_t)-2) /* count: nothing to free */

#define SA_NEEDS_FS 0x1u /* scan may enter the filesystem (take its locks) */
#define SA_NEEDS_IO 0x2u /* scan may start or wait for I/O */

/* Pressure levels, in increasing order. NONE reclaims only shrinkalloc's own
 * free pages; LOW is past the soft limit; MEDIUM well past it, nearing the
 * hard limit; CRITICAL an allocation that does not fit under the hard limit. */
enum sa_level { SA_LEVEL_NONE, SA_LEVEL_LOW, SA_LEVEL_MEDIUM, SA_LEVEL_CRITICAL };

/* What reclaim tells a callback (the kernel's struct shrink_control). */
struct sa_shrink_control {
    size_t   nr_to_scan;   /* in: how many objects to try (0 in count) */
    size_t   nr_scanned;   /* out (optional): how many were looked at; set to
                              nr_to_scan before the call, not used by reclaim yet */
    unsigned scope;        /* in: mask of the reclaiming thread (SA_SCOPE_*, NOIO implies NOFS) */
    enum sa_level level;   /* in: pressure level */
    size_t   target_bytes; /* in: bytes this pass still wants, for byte-sized caches */
};

/* How a shrinker is registered. Copied by sa_shrinker_register(), name
 * included: the struct and the string may be freed afterwards. */
struct sa_shrinker_ops {
    const char *name;      /* for statistics; NULL: "unnamed" */
    size_t (*count)(void *arg, struct sa_shrink_control *sc); /* required */
    size_t (*scan)(void *arg, struct sa_shrink_control *sc);  /* required */
    void    *arg;          /* passed to both callbacks */
    unsigned needs;        /* SA_NEEDS_FS | SA_NEEDS_IO */
    unsigned seeks;        /* cost to rebuild an object, as the kernel's;
                              0 = default (2) */
    size_t   batch;        /* objects per scan call; 0 = default (128) */
};

typedef struct sa_shrinker sa_shrinker;

/**
 * sa_shrinker_register() - add a shrinker; reclaim may call it as soon as
 * this returns, from any thread. @ops->count and @ops->scan must be safe to
 * call concurrently from several threads, with @ops->arg.
 * Return: a handle for sa_shrinker_unregister(), or NULL with errno =
 * EINVAL when @ops is NULL, count or scan is NULL, or needs has unknown bits.
 * Context: any context, a shrinker callback included (the new shrinker is
 * not called by the pass already running). Allocates; aborts if that
 * allocation is impossible.
 */
sa_shrinker *sa_shrinker_register(const struct sa_shrinker_ops *ops);

/**
 * sa_shrinker_unregister() - remove a shrinker and free the handle. Once it
 * returns, reclaim never calls the shrinker again: it waits for a callback
 * of this shrinker running on another thread. Called from inside a callback
 * (this shrinker's own included) it returns at once and the shrinker is
 * never called again once the running callbacks return. NULL does nothing.
 * Context: any context; may wait for another thread's callback of this
 * shrinker, so not while holding a lock that callback takes.
 */
void sa_shrinker_unregister(sa_shrinker *s);

/* ------------------------------------------------------------------------
 * LRU lists: a cache that sizes itself (the kernel's list_lru)
 *
 * Objects embed a struct sa_lru_node; the cache puts them on an sa_lru when
 * it indexes them (sa_lru_add), takes them off when it drops them itself
 * (sa_lru_del), and moves them to the hot end on a hit (sa_lru_touch). The
 * lru registers its own shrinker: under pressure reclaim (and an explicit
 * sa_lru_shrink()) walks from the cold end and offers each node to
 * `isolate`, with the lru's own lock held and for at most the nodes the
 * pass asks for. `isolate` detaches the object from the cache's own index
 * and returns SA_LRU_REMOVED (the lru unlinks the node), keeps a busy object
 * with SA_LRU_ROTATE (moved to the hot end), leaves it with SA_LRU_SKIP, or
 * ends the walk with SA_LRU_STOP. Once the lock is released, `dispose` is
 * called once for every removed node, with the node's links zeroed: there
 * the cache frees the object. The shrinker's count is the number of nodes
 * on the lru; a walk that removed nothing because isolate said stop counts
 * as SA_SHRINK_STOP.
 *
 * The lru is sharded by node address, so adds from many threads rarely
 * meet; a walk takes from each shard in proportion to its length, coldest
 * first within a shard. Nothing in sa_lru allocates under its lock, so
 * nodes can be added while a walk's lock is held elsewhere.
 *
 * `isolate` runs under the lru's lock: it must not allocate, must not call
 * any sa_lru function on the same lru (that aborts with a message: it would
 * deadlock), and may only trylock the cache's own locks (a thread holding
 * one may be calling sa_lru_add). `dispose` runs without the lru's lock and
 * may take the cache's locks if `needs` says SA_NEEDS_FS (or IO), as a
 * shrinker's scan may. Both follow the shrinker callbacks' rules above.
 *
 * A node is on at most one lru. Its two pointers belong to the lru while it
 * is on one (they carry a small tag in their low bits: never follow them)
 * and are both NULL while it is on none: zero a node before its first add
 * (calloc, `= {0}`); sa_lru_del and the walk zero it again. What is
 * detected: an add, del or touch of a node that is on another lru is
 * refused without touching it (exactly while fewer than 64 lrus exist at
 * once; past that, lrus share a tag and only the links are checked); a
 * node whose neighbours do not point back at it (freed or overwritten while
 * on the lru) aborts with a message naming the lru and the node. A node
 * with garbage in both pointers may crash.
 * ---------------------------------------------------------------------- */

struct sa_lru_node { struct sa_lru_node *prev, *next; };   /* embedded in the caller's object */

/* What isolate decides about one node. Any other value is reported once
 * per lru on stderr and treated as SA_LRU_SKIP. */
enum sa_lru_verdict { SA_LRU_REMOVED, SA_LRU_ROTATE, SA_LRU_SKIP, SA_LRU_STOP };

/* How an lru is created. Copied by sa_lru_create(), name included. */
struct sa_lru_ops {
    const char *name;    /* for statistics (the shrinker's name); NULL: "sa_lru" */
    enum sa_lru_verdict (*isolate)(struct sa_lru_node *node, void *arg); /* required */
    void (*dispose)(struct sa_lru_node *node, void *arg);                /* required */
    void *arg;           /* passed to both callbacks */
    unsigned needs;      /* SA_NEEDS_FS | SA_NEEDS_IO, as for a shrinker */
    unsigned seeks;      /* 0 = default (2) */
};

typedef struct sa_lru sa_lru;

/**
 * sa_lru_create() - create an empty lru and register its shrinker; reclaim
 * may walk it as soon as nodes are added, from any thread. @ops->isolate
 * and @ops->dispose must be safe to call concurrently from several threads
 * with @ops->arg.
 * Return: the lru, or NULL with errno = EINVAL when @ops is NULL, isolate or
 * dispose is NULL, or needs has unknown bits.
 * Context: any context, a shrinker callback included. Allocates.
 */
sa_lru *sa_lru_create(const struct sa_lru_ops *ops);

/**
 * sa_lru_destroy() - unregister the lru's shrinker and free the lru. Once it
 * returns, neither callback is called again: it waits for a walk of this lru
 * in flight on another thread (reclaim's or sa_lru_shrink()'s). Called from
 * inside this lru's own isolate or dispose it returns at once: the walk in
 * progress calls isolate no more, disposes the nodes it already removed,
 * and the lru is freed when it ends. The nodes still on the lru stay the
 * caller's, with their links as they were: zero them before reuse. NULL
 * does nothing.
 * Context: any context; may wait for another thread's walk, so not while
 * holding a lock that isolate or dispose takes.
 */
void sa_lru_destroy(sa_lru *lru);

/**
 * sa_lru_add() - put @node at the hot end of @lru. O(1).
 * Return: 1 if added; 0 if it was on @lru already (nothing changes); -1
 * with errno = EBUSY if it is on another lru (nothing changes), or EINVAL
 * if @lru or @node is NULL.
 * Context: any thread, concurrently with other calls and with a walk; not
 * from this lru's isolate (aborts). Never allocates.
 */
int sa_lru_add(sa_lru *lru, struct sa_lru_node *node);

/**
 * sa_lru_del() - take @node off @lru and zero its links. O(1).
 * Return: 1 if removed; 0 if it was on no lru; -1 with errno = EBUSY if it
 * is on another lru (nothing changes), or EINVAL if @lru or @node is NULL.
 * Context: as sa_lru_add().
 */
int sa_lru_del(sa_lru *lru, struct sa_lru_node *node);

/**
 * sa_lru_touch() - move @node to the hot end of @lru if it is on it; does
 * nothing if it is on no lru or on another one. O(1).
 * Context: as sa_lru_add().
 */
void sa_lru_touch(sa_lru *lru, struct sa_lru_node *node);

/**
 * sa_lru_count() - the number of nodes on @lru (0 for NULL): a sum of the
 * shards' lengths, read without their locks.
 * Context: any context.
 */
size_t sa_lru_count(const sa_lru *lru);

/**
 * sa_lru_shrink() - walk up to @nr_to_walk nodes now, as reclaim would
 * (cold end first, in proportion across shards), in the calling thread.
 * Return: the number of nodes disposed (0 for NULL, or once destroy began).
 * Context: not from this lru's isolate (aborts); dispose may call it.
 */
size_t sa_lru_shrink(sa_lru *lru, size_t nr_to_walk);

/* ------------------------------------------------------------------------
 * Contexts: carrying a scope to another thread
 *
 * A thread in a NOFS scope often hands work to another thread (a worker
 * pool, a helper). The work must allocate under the same restrictions, or
 * reclaim started there may enter the filesystem the submitter holds
 * locked. A context is everything reclaim reads about a thread (today its
 * scope mask, and whether it is in flusher mode) as a plain value: capture
 * it in one thread, adopt it in another for as long as the work lasts.
 *
 * Adopting never lifts a restriction: the adopting thread's mask becomes
 * the union of its own and the context's (a thread that holds a filesystem
 * lock stays NOFS whatever work it picks up). sa_context_restore() puts back
 * exactly what the thread had; adopt/restore pairs nest like the scope
 * functions and end in reverse order.
 *
 * Context: any context; cheap (one or two thread-local accesses), never
 * allocates.
 * ---------------------------------------------------------------------- */

/* A captured context. Opaque: copy it, pass it to another thread, hand it
 * to sa_context_adopt(); do not interpret the bits. Any value is valid
 * (unknown bits are ignored), and a zeroed one is the unrestricted context. */
typedef struct sa_context { uint64_t bits; } sa_context_t;

/**
 * sa_context_capture() - the calling thread's context.
 * Return: a value that sa_context_adopt() accepts in any thread.
 */
sa_context_t sa_context_capture(void);

/**
 * sa_context_adopt() - make the calling thread allocate under @ctx too:
 * its mask becomes the union of its own and @ctx's (a NOFS context makes
 * sa_scope_current() report SA_SCOPE_NOFS, and reclaim started here skips
 * SA_NEEDS_FS shrinkers). Flusher mode itself is not adopted, only its NOIO.
 * Return: the thread's previous context, to be passed to
 * sa_context_restore().
 */
sa_context_t sa_context_adopt(sa_context_t ctx);

/**
 * sa_context_restore() - end an sa_context_adopt(): put the calling thread's
 * NOFS and NOIO flags back to @prev (what that adopt returned). Flusher mode
 * is left as it is.
 */
void sa_context_restore(sa_context_t prev);

/**
 * sa_set_io_flusher() - enter (@on != 0) or leave (@on == 0) flusher mode,
 * for a thread that serves the kernel's own I/O (a FUSE or block daemon).
 * In flusher mode the calling thread runs in a NOIO context
 * (sa_scope_current() reports SA_SCOPE_NOIO | SA_SCOPE_NOFS), and so does
 * what it starts through the library: the contexts it captures and the work
 * items it submits. Threads it starts with pthread_create() are not
 * affected (adopt a captured context there). Leaving puts the thread's NOIO
 * flag back as it was before. Idempotent.
 * The library's part always takes effect. The kernel is also asked for
 * prctl(PR_SET_IO_FLUSHER, @on), so that the kernel's own reclaim keeps the
 * thread out of I/O as well; that needs CAP_SYS_RESOURCE and Linux 5.6.
 * Return: 0 when the kernel agreed too; otherwise the positive errno of its
 * refusal (EPERM without CAP_SYS_RESOURCE, EINVAL before Linux 5.6), the
 * library's NOIO context being in force all the same. errno is not changed.
 * Context: any context; affects the calling thread only.
 */
int sa_set_io_flusher(int on);

/* ------------------------------------------------------------------------
 * Work queues: handing work to other threads without losing the context
 *
 * Each item runs once, under the context captured when it was submitted
 * (see sa_context_capture()), on a worker of that context's class: normal,
 * NOFS or NOIO. Each class has its own FIFO and its own workers, so an item
 * that may reclaim through the filesystem never runs ahead of, or on the
 * same worker as, an item submitted from a NOFS scope: a worker blocked on a
 * filesystem lock cannot hold up the item its holder waits for. Within a
 * class, items start in submission order. Workers start lazily (up to
 * threads_per_class per class, when an item finds none idle); their thread
 * names are the queue's name, with "-nofs" or "-noio" appended for those
 * classes (cut to the system's 15 bytes).
 *
 * An item must not unwind (C++ exceptions, longjmp) through the library.
 * A scope an item leaves open ends with it: its worker's flags are put back
 * after every item.
 * ---------------------------------------------------------------------- */

typedef struct sa_workqueue sa_workqueue;

/**
 * sa_workqueue_create() - create a work queue named @name (copied) that
 * starts up to @threads_per_class workers per class: 0 means 1, more than
 * 256 means 256. No worker starts before the first item of its class.
 * Return: the queue, for the other sa_workqueue_* functions; NULL with
 * errno = EINVAL when @name is NULL.
 * Context: any context. Allocates; aborts if that allocation is impossible.
 */
sa_workqueue *sa_workqueue_create(const char *name, unsigned threads_per_class);

/**
 * sa_workqueue_submit() - queue @fn(@arg) to run once, on a worker, under
 * the caller's context. Never waits for other items. @arg must stay valid,
 * and be safe to use from the worker's thread, until the item has run; a
 * queue's items have all run when sa_workqueue_flush() or
 * sa_workqueue_destroy() returns.
 * Return: 0 when the item was accepted (it will run exactly once); -1 with
 * errno set when it was not (@fn is then never called):
 *  EINVAL    @wq or @fn is NULL;
 *  ESHUTDOWN sa_workqueue_destroy() has begun, or the caller is a fork()
 *            child (the queue's workers stayed in the parent);
 *  ENOMEM    no memory for the item (the hard limit holds after reclaim);
 *  EAGAIN    the class has no worker and the OS refused to start one.
 * Context: any context, a shrinker callback and an item of this queue
 * included. Allocates one small node, which may fail (ENOMEM).
 */
int sa_workqueue_submit(sa_workqueue *wq, void (*fn)(void *arg), void *arg);

/**
 * sa_workqueue_flush() - wait until every item submitted to @wq before the
 * call has run, whatever its class. Called from an item of @wq it does not
 * wait for that item's own class (whose earlier items may be waiting for it
 * to return). In a fork() child, and for NULL, it returns at once.
 * Context: not in a shrinker callback, and not while holding a lock that an
 * item may take (the kernel's flush_workqueue() rule): it waits for the
 * workers.
 */
void sa_workqueue_flush(sa_workqueue *wq);

/**
 * sa_workqueue_destroy() - end @wq: from now on sa_workqueue_submit() fails
 * with ESHUTDOWN; then wait until every accepted item has run, join the
 * workers and free @wq. Using @wq after it returns is undefined behaviour,
 * and no other call on @wq may still be in progress then: calls made while
 * it drains (from items or other threads) fail cleanly, but must have
 * returned. Called from an item of @wq it only begins the end and returns at
 * once (a worker cannot join itself): the workers run what is queued and
 * exit on their own, and @wq is freed already, so neither that item nor
 * those still queued may use it. In a fork() child it frees the handle
 * without waiting. NULL does nothing.
 * Context: as sa_workqueue_flush().
 */
void sa_workqueue_destroy(sa_workqueue *wq);

/* ------------------------------------------------------------------------
 * Limits, reclaim, statistics
 * ---------------------------------------------------------------------- */

/**
 * sa_set_limits() - set the limits on shrinkalloc's committed bytes
 * (overriding SHRINKALLOC_SOFT_LIMIT / SHRINKALLOC_HARD_LIMIT). 0 = no limit.
 * Crossing the soft limit wakes background reclaim; no allocation fails
 * because of it. An allocation that would cross the hard limit reclaims in
 * its own thread, under its scope, and fails (NULL, ENOMEM) if it still does
 * not fit. With a hard limit and no soft limit, 7/8 of the hard limit acts
 * as the soft one. A hard limit below what is committed makes reclaim free
 * the difference (reclaim's own allocations use a reserve above it).
 * Return: 0; -1 with errno = EINVAL if both are set and @soft_bytes >
 * @hard_bytes (nothing is changed then).
 * Context: any context.
 */
int sa_set_limits(size_t soft_bytes, size_t hard_bytes);

/**
 * sa_reclaim() - run one reclaim pass now, in the calling thread and under
 * its scope: purge free pages; at a @level above SA_LEVEL_NONE also ask the
 * shrinkers the scope allows, harder the higher the level, until
 * @target_bytes are freed or nothing more can be. A @level beyond
 * SA_LEVEL_CRITICAL counts as critical.
 * Return: the committed bytes freed; 0 when called inside a shrinker
 * callback (reclaim never recurses).
 * Context: any context but a shrinker callback (where it does nothing).
 * Calls shrinker callbacks in this thread.
 */
size_t sa_reclaim(size_t target_bytes, enum sa_level level);

/**
 * sa_stats_print() - write the allocator's and reclaim's statistics to
 * @fd: as text (@json == 0) or as one JSON object followed by a newline.
 * SHRINKALLOC_STATS=1 prints the same to stderr at exit
 * (SHRINKALLOC_STATS_FORMAT=json for JSON) when the shared library is used
 * (LD_PRELOAD or -lshrinkalloc); a statically linked program calls this
 * function itself. The statistics go to the stderr the process started
 * with, even if the program closed it (GNU coreutils do) or put another
 * file on descriptor 2: a copy is kept from start-up (at descriptor 100 or
 * above, close-on-exec). Nothing is printed when the program leaves
 * through _exit().
 * Return: 0, or -1 with errno set by write(2) (e.g. EBADF).
 * Context: any context; allocates.
 */
int sa_stats_print(int fd, int json);

/**
 * sa_reclaim_stats() - read reclaim's statistics as numbers, the same
 * figures sa_stats_print() writes (the text and JSON come from one
 * declaration in the library): writes up to @n values into @values and
 * their names into @names (either may be NULL), in a fixed order that only
 * grows at the end. Names are the JSON keys ("committed", "failed_maps",
 * ...); counts by name read "passes_by_level.low",
 * "passes_by_trigger.direct" and so on. Limits that are not set read 0.
 * The names are static strings, valid for the life of the process.
 * Return: how many figures there are in all (call with @n = 0 to size the
 * arrays; a caller built for fewer reads a prefix).
 * Context: any context; allocates.
 */
size_t sa_reclaim_stats(uint64_t *values, const char **names, size_t n);

/* -------------------------------------------------------------------------
 * Reclaim lockdep: find the missing NOFS scope before it deadlocks.
 *
 * Opt-in, with SHRINKALLOC_LOCKDEP=1 in the environment (=abort: abort at
 * the first report, for test suites) or sa_lockdep_enable(). While a
 * shrinker's count or scan runs (from any reclaimer, sa_reclaim()
 * included), the locks it takes are learned against its needs
 * (SA_NEEDS_FS, SA_NEEDS_IO, or none). Afterwards, every allocation made
 * by a thread holding one of those locks is checked: unless its scope
 * keeps reclaim away from that shrinker (NOFS for an SA_NEEDS_FS one,
 * NOIO for an SA_NEEDS_IO one; nothing does for a shrinker that needs
 * nothing), one line on stderr starting with
 * "shrinkalloc: possible reclaim deadlock:" names the lock's address, the
 * shrinker, its needs and the thread's scope, followed by two stacks:
 * where reclaim took the lock, and where the thread allocated holding it
 * (named from the exported symbols, else from the object's symbol table
 * when it was not stripped).
 * Once per lock and call site; the statistics count reports
 * ("lockdep_reports"). No memory pressure is needed: for a test suite,
 * register the shrinkers, run one pass (sa_reclaim(SIZE_MAX,
 * SA_LEVEL_CRITICAL)), then exercise the program.
 *
 * pthread locks are seen through a separate interposer library,
 * libshrinkalloc_lockdep.so (alloc-ffi/lockdep/shrinkalloc_lockdep.c; the
 * install script builds it): preload it, ahead of libshrinkalloc.so when
 * that is preloaded too, and it reports every pthread_mutex_* and
 * pthread_rwlock_* lock and unlock to the two calls below. Without it
 * nothing is interposed and pthread locks cost what they always do.
 * Locks of other kinds are annotated by hand with the same two calls.
 * ---------------------------------------------------------------------- */

/**
 * sa_lockdep_enable() - turn reclaim lockdep on for the rest of the
 * process, as SHRINKALLOC_LOCKDEP=1 does; with @abort_on_report non-zero,
 * the first report aborts the process (SHRINKALLOC_LOCKDEP=abort).
 * Context: any context.
 */
void sa_lockdep_enable(int abort_on_report);

/**
 * sa_lockdep_acquire() - the calling thread now holds the lock at @lock:
 * call it right after taking a lock of your own kind. @name (NULL: none)
 * names the lock in reports and must live as long as the process (a
 * string literal). Costs one atomic load when lockdep is off.
 * Context: any context.
 */
void sa_lockdep_acquire(const void *lock, const char *name);

/**
 * sa_lockdep_release() - the calling thread no longer holds the lock at
 * @lock: call it right before giving the lock back. A lock the thread was
 * not recorded as holding is ignored.
 * Context: any context.
 */
void sa_lockdep_release(const void *lock);

/**
 * sa_version() - the library's version, "MAJOR.MINOR.PATCH".
 * Return: a static string.
 * Context: any context.
 */
const char *sa_version(void);

#ifdef __cplusplus
}
#endif

#undef SA_LIBC_NOEXCEPT

#endif /* SHRINKALLOC_H */
