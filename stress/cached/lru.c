/*
 * lru.c - sa-cached's caches and their shrinkers (see lru.h for the
 * invariant). The shrinker's count is the entries cached; its scan unlinks
 * up to nr_to_scan of the least recent under the lock, then frees them
 * after unlocking.
 */
#include <stdlib.h>
#include <string.h>

#include "lru.h"

static void unlink_entry(struct entry *e) {
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void push_front(struct lru *c, struct entry *e) {
    e->prev = &c->head;
    e->next = c->head.next;
    c->head.next->prev = e;
    c->head.next = e;
}

static void free_entry(struct entry *e) {
    e->magic = 0;
    free(e->data);
    free(e);
}

static size_t lru_count(void *arg, struct sa_shrink_control *sc) {
    (void)sc;
    struct lru *c = arg;
    size_t nr = atomic_load_explicit(&c->nr, memory_order_relaxed);
    return nr ? nr : SA_SHRINK_EMPTY;
}

static size_t lru_scan(void *arg, struct sa_shrink_control *sc) {
    struct lru *c = arg;
    struct entry *victims = NULL;
    size_t freed = 0;
    atomic_fetch_add_explicit(&c->scans, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    while (freed < sc->nr_to_scan && c->head.prev != &c->head) {
        struct entry *e = c->head.prev;
        unlink_entry(e);
        c->slot[e->key] = NULL;
        atomic_store_explicit(&c->nr, c->nr - 1, memory_order_relaxed);
        atomic_store_explicit(&c->bytes, c->bytes - e->size, memory_order_relaxed);
        e->next = victims;
        victims = e;
        freed++;
    }
    pthread_mutex_unlock(&c->lock);
    while (victims) {
        struct entry *e = victims;
        victims = e->next;
        free_entry(e);
    }
    atomic_fetch_add_explicit(&c->evicted, freed, memory_order_relaxed);
    return freed;
}

int lru_init(struct lru *c, const char *name, uint32_t nkeys, unsigned seeks, int with_shrinker) {
    memset(c, 0, sizeof *c);
    c->name = name;
    c->nkeys = nkeys;
    c->head.prev = c->head.next = &c->head;
    c->slot = calloc(nkeys ? nkeys : 1, sizeof *c->slot);
    if (!c->slot || pthread_mutex_init(&c->lock, NULL) != 0)
        return -1;
    if (with_shrinker) {
        struct sa_shrinker_ops ops = {.name = name, .count = lru_count, .scan = lru_scan, .arg = c, .seeks = seeks};
        c->shrinker = sa_shrinker_register(&ops);
        if (!c->shrinker)
            return -1;
    }
    return 0;
}

void lru_destroy(struct lru *c) {
    sa_shrinker_unregister(c->shrinker);
    c->shrinker = NULL;
    while (c->head.next != &c->head) {
        struct entry *e = c->head.next;
        unlink_entry(e);
        free_entry(e);
    }
    free(c->slot);
    pthread_mutex_destroy(&c->lock);
}

size_t lru_get(struct lru *c, uint32_t key, unsigned char *out, atomic_ullong *seq_counter, uint64_t *seq) {
    size_t size = 0;
    pthread_mutex_lock(&c->lock);
    struct entry *e = c->slot[key];
    if (e) {
        unlink_entry(e);
        push_front(c, e);
        memcpy(out, e->data, e->size);
        size = e->size;
    }
    *seq = atomic_fetch_add_explicit(seq_counter, 1, memory_order_relaxed);
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add_explicit(size ? &c->hits : &c->misses, 1, memory_order_relaxed);
    return size;
}

int lru_put(struct lru *c, uint32_t key, unsigned char *data, size_t size, atomic_ullong *seq_counter,
            uint64_t *seq) {
    struct entry *e = malloc(sizeof *e);
    if (!e) {
        free(data);
        return -1;
    }
    *e = (struct entry){.magic = ENTRY_MAGIC, .key = key, .size = size, .data = data};
    pthread_mutex_lock(&c->lock);
    struct entry *old = c->slot[key];
    if (old) {
        unlink_entry(old);
        push_front(c, old);
    } else {
        c->slot[key] = e;
        push_front(c, e);
        atomic_store_explicit(&c->nr, c->nr + 1, memory_order_relaxed);
        atomic_store_explicit(&c->bytes, c->bytes + size, memory_order_relaxed);
    }
    *seq = atomic_fetch_add_explicit(seq_counter, 1, memory_order_relaxed);
    pthread_mutex_unlock(&c->lock);
    if (old)
        free_entry(e);
    return 0;
}

size_t lru_each(struct lru *c, void (*check)(uint32_t key, const unsigned char *data, size_t size, void *arg),
                void *arg) {
    size_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (struct entry *e = c->head.next; e != &c->head; e = e->next, n++) {
        if (e->magic != ENTRY_MAGIC || c->slot[e->key] != e)
            check(e->key, NULL, 0, arg);
        else
            check(e->key, e->data, e->size, arg);
    }
    pthread_mutex_unlock(&c->lock);
    return n;
}
