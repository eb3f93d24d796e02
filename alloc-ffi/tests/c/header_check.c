/* Compiled against include/shrinkalloc.h and linked with the library (both
 * ways): takes the address of, and calls, every function the header
 * declares, and checks the header's constants and struct layout against
 * what the Rust side assumes. Prints every declared function's name (one
 * per line) and "ok". */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shrinkalloc.h"

_Static_assert(SA_SCOPE_NOFS == 1 && SA_SCOPE_NOIO == 2, "scope bits are the core's ScopeFlags bits");
_Static_assert(SA_NEEDS_FS == 1 && SA_NEEDS_IO == 2, "needs bits are the core's Needs bits");
_Static_assert(SA_SHRINK_STOP == (size_t)-1 && SA_SHRINK_EMPTY == (size_t)-2, "sentinels");
_Static_assert(SA_LEVEL_NONE == 0 && SA_LEVEL_LOW == 1 && SA_LEVEL_MEDIUM == 2 && SA_LEVEL_CRITICAL == 3, "levels");
_Static_assert(sizeof(enum sa_level) == 4, "enum sa_level is a C int, as shrinker.rs reads it");
/* struct layouts as shrinker.rs declares them (#[repr(C)]). */
_Static_assert(sizeof(struct sa_shrink_control) == 32, "sa_shrink_control size");
_Static_assert(offsetof(struct sa_shrink_control, nr_to_scan) == 0, "nr_to_scan");
_Static_assert(offsetof(struct sa_shrink_control, nr_scanned) == 8, "nr_scanned");
_Static_assert(offsetof(struct sa_shrink_control, scope) == 16, "scope");
_Static_assert(offsetof(struct sa_shrink_control, level) == 20, "level");
_Static_assert(offsetof(struct sa_shrink_control, target_bytes) == 24, "target_bytes");
_Static_assert(sizeof(struct sa_shrinker_ops) == 48, "sa_shrinker_ops size");
_Static_assert(offsetof(struct sa_shrinker_ops, count) == 8, "count");
_Static_assert(offsetof(struct sa_shrinker_ops, scan) == 16, "scan");
_Static_assert(offsetof(struct sa_shrinker_ops, arg) == 24, "arg");
_Static_assert(offsetof(struct sa_shrinker_ops, needs) == 32, "needs");
_Static_assert(offsetof(struct sa_shrinker_ops, seeks) == 36, "seeks");
_Static_assert(offsetof(struct sa_shrinker_ops, batch) == 40, "batch");
_Static_assert(sizeof(struct sa_lru_node) == 16, "sa_lru_node is two pointers, as lru.rs's SaLruNode");
_Static_assert(SA_LRU_REMOVED == 0 && SA_LRU_ROTATE == 1 && SA_LRU_SKIP == 2 && SA_LRU_STOP == 3, "verdicts");
_Static_assert(sizeof(enum sa_lru_verdict) == 4, "enum sa_lru_verdict is a C int, as lru.rs reads it");
_Static_assert(sizeof(struct sa_lru_ops) == 40 && offsetof(struct sa_lru_ops, isolate) == 8 &&
                   offsetof(struct sa_lru_ops, dispose) == 16 && offsetof(struct sa_lru_ops, arg) == 24 &&
                   offsetof(struct sa_lru_ops, needs) == 32 && offsetof(struct sa_lru_ops, seeks) == 36,
               "sa_lru_ops as lru.rs's SaLruOps");
_Static_assert(sizeof(sa_context_t) == 8, "sa_context_t is context.rs's SaContext, one u64");

#define FN(f) {#f, (void (*)(void))f}
static const struct {
    const char *name;
    void (*addr)(void);
} declared[] = {
    FN(malloc), FN(calloc), FN(realloc), FN(reallocarray), FN(free), FN(free_sized), FN(free_aligned_sized),
    FN(posix_memalign), FN(aligned_alloc), FN(memalign), FN(valloc), FN(pvalloc), FN(malloc_usable_size),
    FN(malloc_trim), FN(sa_memalloc_nofs_save), FN(sa_memalloc_nofs_restore), FN(sa_memalloc_noio_save),
    FN(sa_memalloc_noio_restore), FN(sa_scope_current), FN(sa_shrinker_register), FN(sa_shrinker_unregister),
    FN(sa_set_limits), FN(sa_reclaim), FN(sa_stats_print), FN(sa_reclaim_stats), FN(sa_version), FN(sa_context_capture),
    FN(sa_context_adopt), FN(sa_context_restore), FN(sa_set_io_flusher), FN(sa_workqueue_create),
    FN(sa_workqueue_submit), FN(sa_workqueue_flush), FN(sa_workqueue_destroy), FN(sa_lockdep_enable),
    FN(sa_lockdep_acquire), FN(sa_lockdep_release),
    FN(sa_lru_create),
    FN(sa_lru_destroy), FN(sa_lru_add), FN(sa_lru_del), FN(sa_lru_touch), FN(sa_lru_count), FN(sa_lru_shrink),
};

static void note_run(void *arg) {
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
}

static enum sa_lru_verdict isolate_any(struct sa_lru_node *node, void *arg) {
    (void)node;
    (void)arg;
    return SA_LRU_REMOVED;
}

static void dispose_none(struct sa_lru_node *node, void *arg) {
    (void)node;
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
}

static size_t count_nothing(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    return SA_SHRINK_EMPTY;
}

static size_t scan_nothing(void *arg, struct sa_shrink_control *sc) {
    (void)arg;
    (void)sc;
    return SA_SHRINK_STOP;
}

int main(void) {
    for (size_t i = 0; i < sizeof declared / sizeof declared[0]; i++) {
        if (!declared[i].addr)
            return 1;
        printf("%s\n", declared[i].name);
    }
    /* Call each once. */
    void *p = malloc(10), *q = calloc(2, 8), *r = NULL;
    p = realloc(p, 100);
    q = reallocarray(q, 4, 8);
    if (posix_memalign(&r, 64, 10) != 0)
        return 2;
    void *a = aligned_alloc(64, 64), *m = memalign(64, 10), *v = valloc(10), *pv = pvalloc(10);
    if (!p || !q || !a || !m || !v || !pv || malloc_usable_size(p) < 100)
        return 3;
    free_sized(p, 100);
    free_aligned_sized(a, 64, 64);
    free(q);
    free(r);
    free(m);
    free(v);
    free(pv);
    (void)malloc_trim(0);

    unsigned fs = sa_memalloc_nofs_save(), io = sa_memalloc_noio_save();
    if (sa_scope_current() != (SA_SCOPE_NOFS | SA_SCOPE_NOIO))
        return 4;
    sa_memalloc_noio_restore(io);
    sa_memalloc_nofs_restore(fs);
    if (sa_scope_current() != 0)
        return 5;
    struct sa_shrinker_ops ops = {"header-check", count_nothing, scan_nothing, NULL, SA_NEEDS_FS, 0, 0};
    sa_shrinker *s = sa_shrinker_register(&ops);
    if (!s)
        return 6;
    (void)sa_reclaim(1 << 20, SA_LEVEL_LOW);
    sa_shrinker_unregister(s);
    if (sa_set_limits(0, 0) != 0)
        return 7;
    int devnull = open("/dev/null", O_WRONLY);
    if (sa_stats_print(devnull, 0) != 0 || sa_stats_print(devnull, 1) != 0)
        return 8;
    if (strlen(sa_version()) == 0)
        return 9;
    uint64_t values[4];
    const char *names[4];
    if (sa_reclaim_stats(values, names, 4) < 4 || strcmp(names[0], "committed") != 0)
        return 9;
    sa_lockdep_enable(0);
    sa_lockdep_acquire(&values, "values");
    sa_lockdep_release(&values);
    unsigned outer = sa_memalloc_nofs_save();
    sa_context_t nofs = sa_context_capture();
    sa_memalloc_nofs_restore(outer);
    sa_context_t prev = sa_context_adopt(nofs);
    if (sa_scope_current() != SA_SCOPE_NOFS)
        return 10;
    sa_context_restore(prev);
    if (sa_scope_current() != 0)
        return 11;
    int runs = 0;
    sa_workqueue *wq = sa_workqueue_create("header-check", 1);
    if (!wq || sa_workqueue_submit(wq, note_run, &runs) != 0)
        return 12;
    sa_workqueue_flush(wq);
    sa_workqueue_destroy(wq);
    if (__atomic_load_n(&runs, __ATOMIC_RELAXED) != 1)
        return 13;
    int kernel = sa_set_io_flusher(1);
    if (sa_scope_current() != (SA_SCOPE_NOFS | SA_SCOPE_NOIO) || kernel < 0)
        return 14;
    (void)sa_set_io_flusher(0);
    if (sa_scope_current() != 0)
        return 15;
    int disposed = 0;
    struct sa_lru_ops lops = {"header-check-lru", isolate_any, dispose_none, &disposed, 0, 0};
    sa_lru *lru = sa_lru_create(&lops);
    struct sa_lru_node node = {0};
    if (!lru || sa_lru_add(lru, &node) != 1 || sa_lru_count(lru) != 1)
        return 16;
    sa_lru_touch(lru, &node);
    if (sa_lru_del(lru, &node) != 1 || sa_lru_add(lru, &node) != 1 || sa_lru_shrink(lru, 1) != 1 || disposed != 1)
        return 17;
    sa_lru_destroy(lru);
    printf("ok\n");
    return 0;
}
