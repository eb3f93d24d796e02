/* sa_lru from C: order and verdicts, a node on another lru, a verdict
 * outside the enum, destroy with a walk in flight and from inside dispose,
 * and four threads adding, deleting and touching their objects (each
 * object's content checked at every step) while a fifth runs sa_reclaim()
 * and sa_lru_shrink(). With an argument it misuses the lru so that it must
 * abort with a message: "corrupt" (a node whose neighbours do not point
 * back at it), "reenter" (sa_lru_add from isolate). Prints "ok". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "shrinkalloc.h"

#define OBJ_MAGIC 0x0b1ec7u
#define PAYLOAD 48

struct obj {
    struct sa_lru_node node;
    uint32_t magic;
    int hot;
    struct owner *owner;
    size_t slot;
    uint64_t id;
    unsigned char payload[PAYLOAD];
};

#define OBJ(n) ((struct obj *)((char *)(n) - offsetof(struct obj, node)))

static unsigned char byte_of(uint64_t id, size_t i) {
    uint64_t h = (id + i) * 0x9E3779B97F4A7C15ull;
    return (unsigned char)(h >> 56);
}

static struct obj *obj_new(uint64_t id) {
    struct obj *o = calloc(1, sizeof *o);
    CHECK(o);
    o->magic = OBJ_MAGIC;
    o->id = id;
    for (size_t i = 0; i < PAYLOAD; i++)
        o->payload[i] = byte_of(id, i);
    return o;
}

static int obj_ok(const struct obj *o) {
    if (o->magic != OBJ_MAGIC)
        return 0;
    for (size_t i = 0; i < PAYLOAD; i++)
        if (o->payload[i] != byte_of(o->id, i))
            return 0;
    return 1;
}

static void obj_free(struct obj *o) {
    o->magic = 0;
    memset(o->payload, 0xdd, PAYLOAD);
    free(o);
}

/* ---- single-threaded: order, verdicts, bad input ---- */

static atomic_int verdict = SA_LRU_REMOVED;
static atomic_int disposed, isolated, hot_disposed;

static enum sa_lru_verdict isolate_fixed(struct sa_lru_node *n, void *arg) {
    (void)arg;
    CHECK(obj_ok(OBJ(n)));
    atomic_fetch_add(&isolated, 1);
    return (enum sa_lru_verdict)atomic_load(&verdict);
}

static void dispose_free(struct sa_lru_node *n, void *arg) {
    (void)arg;
    CHECK(n->prev == NULL && n->next == NULL);
    CHECK(obj_ok(OBJ(n)));
    atomic_fetch_add(&disposed, 1);
    if (OBJ(n)->hot)
        atomic_fetch_add(&hot_disposed, 1);
    obj_free(OBJ(n));
}

static sa_lru *make(const char *name, void *iso, void *disp) {
    struct sa_lru_ops ops = {.name = name, .isolate = iso, .dispose = disp};
    sa_lru *l = sa_lru_create(&ops);
    CHECK(l);
    return l;
}

static void test_order_and_verdicts(void) {
    sa_lru *l = make("order", isolate_fixed, dispose_free);
    enum { N = 1600 };
    static struct obj *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = obj_new((uint64_t)i);
        CHECK(sa_lru_add(l, &objs[i]->node) == 1);
    }
    CHECK(sa_lru_add(l, &objs[0]->node) == 0);
    CHECK(sa_lru_count(l) == N);
    /* A quarter touched: a walk of half the list takes none of them. */
    for (int i = 0; i < N; i += 4) {
        objs[i]->hot = 1;
        sa_lru_touch(l, &objs[i]->node);
    }
    size_t got = sa_lru_shrink(l, N / 2);
    CHECK(got >= N / 2 && got <= N / 2 + 16);
    CHECK(atomic_load(&hot_disposed) == 0);
    CHECK(sa_lru_count(l) == N - got);
    /* SKIP and ROTATE keep every node; STOP ends the walk at once. */
    atomic_store(&verdict, SA_LRU_SKIP);
    CHECK(sa_lru_shrink(l, N) == 0 && sa_lru_count(l) == N - got);
    atomic_store(&verdict, SA_LRU_ROTATE);
    CHECK(sa_lru_shrink(l, N) == 0 && sa_lru_count(l) == N - got);
    atomic_store(&isolated, 0);
    atomic_store(&verdict, SA_LRU_STOP);
    CHECK(sa_lru_shrink(l, N) == 0 && atomic_load(&isolated) == 1);
    /* A value outside the enum: reported once on stderr, node left. */
    atomic_store(&verdict, 42);
    CHECK(sa_lru_shrink(l, 8) == 0 && sa_lru_count(l) == N - got);
    /* del: 1 once, then 0; the node is zeroed and can be added again. */
    struct obj *o = objs[0];
    CHECK(sa_lru_del(l, &o->node) == 1);
    CHECK(o->node.prev == NULL && o->node.next == NULL);
    CHECK(sa_lru_del(l, &o->node) == 0);
    CHECK(sa_lru_add(l, &o->node) == 1 && sa_lru_del(l, &o->node) == 1);
    /* A node on another lru is refused by add, del and touch alike. */
    sa_lru *other = make("other", isolate_fixed, dispose_free);
    CHECK(sa_lru_add(other, &o->node) == 1);
    struct sa_lru_node before = o->node;
    errno = 0;
    CHECK(sa_lru_add(l, &o->node) == -1 && errno == EBUSY);
    errno = 0;
    CHECK(sa_lru_del(l, &o->node) == -1 && errno == EBUSY);
    sa_lru_touch(l, &o->node);
    CHECK(o->node.prev == before.prev && o->node.next == before.next);
    CHECK(sa_lru_count(other) == 1 && sa_lru_count(l) == N - got - 1);
    CHECK(sa_lru_del(other, &o->node) == 1);
    sa_lru_destroy(other);
    obj_free(o);
    /* Bad arguments. */
    struct sa_lru_node loose = {0};
    errno = 0;
    CHECK(sa_lru_add(NULL, &loose) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(sa_lru_del(l, NULL) == -1 && errno == EINVAL);
    CHECK(sa_lru_count(NULL) == 0 && sa_lru_shrink(NULL, 1) == 0);
    struct sa_lru_ops bad = {.isolate = isolate_fixed};
    errno = 0;
    CHECK(sa_lru_create(&bad) == NULL && errno == EINVAL);
    bad.dispose = dispose_free;
    bad.needs = 0x10;
    errno = 0;
    CHECK(sa_lru_create(&bad) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(sa_lru_create(NULL) == NULL && errno == EINVAL);
    /* Everything left goes in one walk. */
    atomic_store(&verdict, SA_LRU_REMOVED);
    size_t left = sa_lru_count(l);
    CHECK(sa_lru_shrink(l, SIZE_MAX) == left && sa_lru_count(l) == 0);
    sa_lru_destroy(l);
}

/* ---- destroy with a walk in flight ---- */

static atomic_int in_isolate, release_isolate, destroyed, after_destroy;
static sa_lru *walked;

static enum sa_lru_verdict isolate_blocking(struct sa_lru_node *n, void *arg) {
    (void)n;
    (void)arg;
    if (atomic_load(&destroyed))
        atomic_fetch_add(&after_destroy, 1);
    atomic_store(&in_isolate, 1);
    while (!atomic_load(&release_isolate))
        sched_yield();
    return SA_LRU_REMOVED;
}

static void dispose_counting(struct sa_lru_node *n, void *arg) {
    (void)arg;
    if (atomic_load(&destroyed))
        atomic_fetch_add(&after_destroy, 1);
    OBJ(n)->hot = 1; /* disposed: freed with the rest at the end */
}

static void *walker(void *arg) {
    (void)arg;
    sa_lru_shrink(walked, 4);
    return NULL;
}

static void *destroyer(void *arg) {
    (void)arg;
    sa_lru_destroy(walked);
    atomic_store(&destroyed, 1);
    return NULL;
}

static void test_destroy_waits_for_a_walk(void) {
    walked = make("in-flight", isolate_blocking, dispose_counting);
    static struct obj *objs[64];
    for (int i = 0; i < 64; i++) {
        objs[i] = obj_new((uint64_t)i);
        sa_lru_add(walked, &objs[i]->node);
    }
    pthread_t w, d;
    pthread_create(&w, NULL, walker, NULL);
    while (!atomic_load(&in_isolate))
        sched_yield();
    pthread_create(&d, NULL, destroyer, NULL);
    usleep(50 * 1000);
    /* However long we wait, destroy cannot return while isolate runs. */
    CHECK(!atomic_load(&destroyed));
    atomic_store(&release_isolate, 1);
    pthread_join(d, NULL);
    pthread_join(w, NULL);
    CHECK(atomic_load(&destroyed));
    CHECK(atomic_load(&after_destroy) == 0);
    /* The walk took one node; the others stay the caller's, still linked. */
    int gone = 0;
    for (int i = 0; i < 64; i++) {
        gone += objs[i]->hot;
        CHECK(objs[i]->hot ? objs[i]->node.next == NULL : objs[i]->node.next != NULL);
        obj_free(objs[i]);
    }
    CHECK(gone == 1);
}

/* ---- destroy from inside dispose ---- */

static sa_lru *self_destroying;
static atomic_int disposed_here, isolated_after;

static enum sa_lru_verdict isolate_all(struct sa_lru_node *n, void *arg) {
    (void)n;
    (void)arg;
    if (self_destroying == NULL)
        atomic_fetch_add(&isolated_after, 1);
    return SA_LRU_REMOVED;
}

static void dispose_destroying(struct sa_lru_node *n, void *arg) {
    (void)arg;
    atomic_fetch_add(&disposed_here, 1);
    if (self_destroying) {
        sa_lru *l = self_destroying;
        self_destroying = NULL;
        sa_lru_destroy(l); /* returns at once: this walk is ours */
    }
    obj_free(OBJ(n));
}

static void test_destroy_from_dispose(void) {
    self_destroying = make("self-destroying", isolate_all, dispose_destroying);
    sa_lru *l = self_destroying;
    enum { N = 256 };
    for (int i = 0; i < N; i++)
        sa_lru_add(l, &obj_new((uint64_t)i)->node);
    /* One shard's batch is removed, then disposed; the first dispose
     * destroys the lru: the rest of that batch is still disposed, and no
     * other node is isolated. The others leak, as the contract says. */
    size_t got = sa_lru_shrink(l, N);
    CHECK(got >= 1 && got == (size_t)atomic_load(&disposed_here));
    CHECK(got < N);
    CHECK(atomic_load(&isolated_after) == 0);
}

/* ---- four threads against reclaim ---- */

#define THREADS 4
#define SLOTS 2048
#define OPS 150000

struct owner {
    pthread_mutex_t lock; /* the cache's index lock: isolate only trylocks it */
    struct obj *index[SLOTS];
    size_t live;
};

static struct owner owners[THREADS];
static sa_lru *shared;
static atomic_ullong made, freed_by_owner, disposed_total, disposed_in_reclaim, busy;
static atomic_int stop_reclaim;
static _Thread_local int tl_reclaiming;

static enum sa_lru_verdict isolate_owned(struct sa_lru_node *n, void *arg) {
    (void)arg;
    struct obj *o = OBJ(n);
    CHECK(obj_ok(o));
    struct owner *w = o->owner;
    if (pthread_mutex_trylock(&w->lock) != 0) {
        atomic_fetch_add(&busy, 1);
        return SA_LRU_ROTATE;
    }
    CHECK(w->index[o->slot] == o);
    w->index[o->slot] = NULL;
    w->live--;
    pthread_mutex_unlock(&w->lock);
    return SA_LRU_REMOVED;
}

static void dispose_owned(struct sa_lru_node *n, void *arg) {
    (void)arg;
    CHECK(obj_ok(OBJ(n)));
    atomic_fetch_add(&disposed_total, 1);
    if (tl_reclaiming)
        atomic_fetch_add(&disposed_in_reclaim, 1);
    obj_free(OBJ(n));
}

static void *worker(void *arg) {
    struct owner *w = arg;
    uint64_t rng = (uint64_t)(w - owners) * 0x9E3779B97F4A7C15ull + 1;
    for (int op = 0; op < OPS; op++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        size_t slot = (size_t)(rng >> 8) % SLOTS;
        pthread_mutex_lock(&w->lock);
        struct obj *o = w->index[slot];
        if (!o) {
            o = obj_new(rng);
            o->owner = w;
            o->slot = slot;
            w->index[slot] = o;
            w->live++;
            CHECK(sa_lru_add(shared, &o->node) == 1);
            atomic_fetch_add(&made, 1);
        } else if (rng % 4 == 0) {
            /* Indexed means on the lru: isolate detaches under this lock. */
            CHECK(obj_ok(o));
            CHECK(sa_lru_del(shared, &o->node) == 1);
            w->index[slot] = NULL;
            w->live--;
            obj_free(o);
            atomic_fetch_add(&freed_by_owner, 1);
        } else {
            CHECK(obj_ok(o));
            sa_lru_touch(shared, &o->node);
        }
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

static void *reclaimer(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_reclaim)) {
        tl_reclaiming = 1;
        sa_reclaim((size_t)1 << 20, SA_LEVEL_CRITICAL);
        tl_reclaiming = 0;
        sa_lru_shrink(shared, 64);
    }
    return NULL;
}

static void test_threads_against_reclaim(void) {
    struct sa_lru_ops ops = {.name = "threads", .isolate = isolate_owned, .dispose = dispose_owned};
    shared = sa_lru_create(&ops);
    CHECK(shared);
    for (int t = 0; t < THREADS; t++)
        pthread_mutex_init(&owners[t].lock, NULL);
    pthread_t ws[THREADS], r;
    pthread_create(&r, NULL, reclaimer, NULL);
    for (int t = 0; t < THREADS; t++)
        pthread_create(&ws[t], NULL, worker, &owners[t]);
    for (int t = 0; t < THREADS; t++)
        pthread_join(ws[t], NULL);
    atomic_store(&stop_reclaim, 1);
    pthread_join(r, NULL);
    size_t live = 0;
    for (int t = 0; t < THREADS; t++) {
        for (size_t s = 0; s < SLOTS; s++)
            if (owners[t].index[s]) {
                CHECK(obj_ok(owners[t].index[s]));
                live++;
            }
    }
    CHECK(sa_lru_count(shared) == live);
    CHECK(atomic_load(&made) == atomic_load(&freed_by_owner) + atomic_load(&disposed_total) + live);
    CHECK(atomic_load(&disposed_in_reclaim) > 0);
    CHECK(atomic_load(&freed_by_owner) > 0);
    for (int t = 0; t < THREADS; t++)
        for (size_t s = 0; s < SLOTS; s++)
            if (owners[t].index[s]) {
                CHECK(sa_lru_del(shared, &owners[t].index[s]->node) == 1);
                obj_free(owners[t].index[s]);
            }
    CHECK(sa_lru_count(shared) == 0);
    sa_lru_destroy(shared);
}

/* ---- misuse that must abort ---- */

static sa_lru *reentered;

static enum sa_lru_verdict isolate_reentering(struct sa_lru_node *n, void *arg) {
    (void)arg;
    sa_lru_add(reentered, n);
    return SA_LRU_SKIP;
}

static int misuse(const char *what) {
    if (strcmp(what, "corrupt") == 0) {
        sa_lru *l = make("corrupt", isolate_fixed, dispose_free);
        struct obj *a = obj_new(1), *b = obj_new(2);
        sa_lru_add(l, &a->node);
        b->node = a->node; /* a copy: its neighbours point at `a`, not at it */
        sa_lru_del(l, &b->node);
    } else if (strcmp(what, "reenter") == 0) {
        reentered = make("reenter", isolate_reentering, dispose_free);
        sa_lru_add(reentered, &obj_new(1)->node);
        sa_lru_shrink(reentered, 1);
    }
    return 0; /* not reached when the library keeps its word */
}

int main(int argc, char **argv) {
    if (argc > 1)
        return misuse(argv[1]);
    test_order_and_verdicts();
    test_destroy_waits_for_a_walk();
    test_destroy_from_dispose();
    test_threads_against_reclaim();
    if (failures)
        return 1;
    puts("ok");
    return 0;
}
