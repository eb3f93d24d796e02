/* Contexts and work queues from C with pthreads, linked with the library
 * (dynamically or statically). argv[1] names the behaviour to check:
 *   adopt     a context captured in a NOFS scope and adopted in another
 *             pthread makes that thread NOFS, so reclaim there skips the
 *             SA_NEEDS_FS shrinker; restore puts the thread back; adopting
 *             never lifts a restriction;
 *   items     thousands of items from several pthreads in mixed contexts
 *             run exactly once each, in their submitter's context, on a
 *             worker of that context's class (told by its thread name),
 *             FIFO within a class;
 *   drain     flush waits for every earlier item, destroy drains;
 *   shutdown  submit fails with ESHUTDOWN once destroy has begun (from an
 *             item and from another pthread while destroy drains) and in a
 *             fork() child; destroy from inside an item returns and the
 *             queued items still run; bad arguments give EINVAL;
 *   flusher   sa_set_io_flusher(1) returns 0 or EPERM, leaves errno alone,
 *             and puts the thread and its items in NOIO (NOIO|NOFS), not the
 *             pthreads it creates; sa_set_io_flusher(0) puts it back.
 * Prints "ok" and exits 0, or names the failed checks and exits 1. A
 * deadlock is ended by alarm(). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shrinkalloc.h"
#include "check.h"

#define NOFS_NOIO (SA_SCOPE_NOFS | SA_SCOPE_NOIO)

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits up to 10 s for *flag to reach at least `want`; returns whether it did. */
static int wait_for(const int *flag, int want) {
    double deadline = now() + 10.0;
    while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) < want) {
        if (now() > deadline)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

static void set_flag(int *flag) {
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

/* A context captured under a scope entered by `save` (and left again). */
static sa_context_t captured_in(unsigned (*save)(void), void (*restore)(unsigned)) {
    unsigned s = save();
    sa_context_t ctx = sa_context_capture();
    restore(s);
    return ctx;
}

/* ---- adopt: an adopted NOFS context keeps reclaim out of the filesystem -- */

/* A shrinker over `objects` imaginary objects: reclaim finds them, scan
 * takes them. Only the calls made in the checking thread are counted. */
struct fake_cache {
    const char *name;
    unsigned needs;
    size_t objects;
    sa_shrinker *handle;
};

static __thread unsigned fs_calls_here, plain_calls_here, plain_scopes_here;

static void note_call(const struct fake_cache *c, const struct sa_shrink_control *sc) {
    if (c->needs & SA_NEEDS_FS) {
        fs_calls_here++;
    } else {
        plain_calls_here++;
        plain_scopes_here |= sc->scope;
    }
}

static size_t fake_count(void *arg, struct sa_shrink_control *sc) {
    struct fake_cache *c = arg;
    note_call(c, sc);
    size_t n = __atomic_load_n(&c->objects, __ATOMIC_RELAXED);
    return n ? n : SA_SHRINK_EMPTY;
}

static size_t fake_scan(void *arg, struct sa_shrink_control *sc) {
    struct fake_cache *c = arg;
    note_call(c, sc);
    size_t n = __atomic_load_n(&c->objects, __ATOMIC_RELAXED), take;
    do {
        take = n < sc->nr_to_scan ? n : sc->nr_to_scan;
    } while (!__atomic_compare_exchange_n(&c->objects, &n, n - take, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return take;
}

static struct fake_cache fs_cache = {.name = "ctx-fs-cache", .needs = SA_NEEDS_FS};
static struct fake_cache plain_cache = {.name = "ctx-plain-cache", .needs = 0};

/* Refills both caches and runs a full reclaim pass in this thread. */
static void reclaim_here(void) {
    __atomic_store_n(&fs_cache.objects, 64, __ATOMIC_RELAXED);
    __atomic_store_n(&plain_cache.objects, 64, __ATOMIC_RELAXED);
    fs_calls_here = plain_calls_here = plain_scopes_here = 0;
    (void)sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
}

struct adopt_args {
    sa_context_t nofs, noio, normal;
};

static void *adopting_thread(void *arg) {
    const struct adopt_args *a = arg;
    CHECK(sa_scope_current() == 0);

    sa_context_t prev = sa_context_adopt(a->nofs);
    CHECK(sa_scope_current() == SA_SCOPE_NOFS);
    reclaim_here();
    CHECK(fs_calls_here == 0);   /* the SA_NEEDS_FS shrinker was skipped here ... */
    CHECK(plain_calls_here > 0); /* ... the plain one was asked, */
    CHECK(plain_scopes_here == SA_SCOPE_NOFS); /* under the adopted mask */

    sa_context_restore(prev);
    CHECK(sa_scope_current() == 0);
    reclaim_here();
    CHECK(fs_calls_here > 0); /* back to normal: the filesystem shrinker is asked */
    CHECK(plain_scopes_here == 0);

    /* Adopting is a union, and restore puts back exactly the thread's flags. */
    unsigned fs = sa_memalloc_nofs_save();
    prev = sa_context_adopt(a->noio);
    CHECK(sa_scope_current() == NOFS_NOIO);
    sa_context_restore(prev);
    CHECK(sa_scope_current() == SA_SCOPE_NOFS);
    prev = sa_context_adopt(a->normal); /* never lifts a restriction */
    CHECK(sa_scope_current() == SA_SCOPE_NOFS);
    reclaim_here();
    CHECK(fs_calls_here == 0);
    sa_context_restore(prev);
    sa_memalloc_nofs_restore(fs);
    CHECK(sa_scope_current() == 0);

    /* Pairs nest. */
    sa_context_t outer = sa_context_adopt(a->nofs);
    sa_context_t inner = sa_context_adopt(a->noio);
    CHECK(sa_scope_current() == NOFS_NOIO);
    sa_context_restore(inner);
    CHECK(sa_scope_current() == SA_SCOPE_NOFS);
    sa_context_restore(outer);
    CHECK(sa_scope_current() == 0);
    return NULL;
}

static void check_adopt(void) {
    struct adopt_args a;
    a.nofs = captured_in(sa_memalloc_nofs_save, sa_memalloc_nofs_restore);
    a.noio = captured_in(sa_memalloc_noio_save, sa_memalloc_noio_restore);
    a.normal = sa_context_capture();
    sa_context_t zero = {0};
    CHECK(a.normal.bits == zero.bits); /* a zeroed context is the unrestricted one */
    CHECK(sa_scope_current() == 0);    /* capturing changed nothing here */

    struct fake_cache *caches[] = {&fs_cache, &plain_cache};
    for (int i = 0; i < 2; i++) {
        struct sa_shrinker_ops ops = {caches[i]->name, fake_count, fake_scan, caches[i], caches[i]->needs, 0, 16};
        caches[i]->handle = sa_shrinker_register(&ops);
        CHECK(caches[i]->handle != NULL);
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, adopting_thread, &a) == 0);
    pthread_join(t, NULL);
    for (int i = 0; i < 2; i++)
        sa_shrinker_unregister(caches[i]->handle);
}

/* ---- items: exactly once, in their own context, FIFO per class ---------- */

enum how { NORMAL, IN_NOFS_SCOPE, IN_NOIO_SCOPE, ADOPTED_NOFS, HOW_COUNT };

/* Runs `submit(arg)` from a context of kind `how`; returns the scope mask
 * the item must see. */
static unsigned in_context(enum how how, sa_context_t nofs, void (*submit)(void *), void *arg) {
    unsigned saved = 0, want;
    sa_context_t prev = {0};
    switch (how) {
    case IN_NOFS_SCOPE: saved = sa_memalloc_nofs_save(); break;
    case IN_NOIO_SCOPE: saved = sa_memalloc_noio_save(); break;
    case ADOPTED_NOFS: prev = sa_context_adopt(nofs); break;
    default: break;
    }
    want = sa_scope_current();
    submit(arg);
    switch (how) {
    case IN_NOFS_SCOPE: sa_memalloc_nofs_restore(saved); break;
    case IN_NOIO_SCOPE: sa_memalloc_noio_restore(saved); break;
    case ADOPTED_NOFS: sa_context_restore(prev); break;
    default: break;
    }
    return want;
}

#define SUBMITTERS 8
#define PER_SUBMITTER 1500
#define ITEMS (SUBMITTERS * PER_SUBMITTER)

struct item {
    unsigned want_scope;
    int runs;
    int wrong_scope;
    int wrong_worker;
    int on_submitter;
};

static struct item items[ITEMS];
static sa_workqueue *items_wq;
static sa_context_t items_nofs;

/* Nonzero in the submitting pthreads only (pthread_t values are reused
 * once a thread is joined; a new thread's TLS starts at zero). */
static __thread int is_submitter;

static void run_item(void *arg) {
    struct item *it = arg;
    if (sa_scope_current() != it->want_scope) /* written before the submit: the queue's lock orders it */
        __atomic_add_fetch(&it->wrong_scope, 1, __ATOMIC_RELAXED);
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    const char *want_name = it->want_scope & SA_SCOPE_NOIO   ? "ctx-items-noio"
                            : it->want_scope & SA_SCOPE_NOFS ? "ctx-items-nofs"
                                                             : "ctx-items";
    if (strcmp(name, want_name) != 0) /* a worker of the item's own class */
        __atomic_add_fetch(&it->wrong_worker, 1, __ATOMIC_RELAXED);
    if (is_submitter)
        __atomic_add_fetch(&it->on_submitter, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&it->runs, 1, __ATOMIC_RELAXED);
}

static void submit_item(void *arg) {
    struct item *it = arg;
    it->want_scope = sa_scope_current();
    CHECK(sa_workqueue_submit(items_wq, run_item, it) == 0);
}

static void *submitter(void *arg) {
    size_t first = (size_t)(uintptr_t)arg * PER_SUBMITTER;
    is_submitter = 1;
    for (size_t j = 0; j < PER_SUBMITTER; j++) {
        struct item *it = &items[first + j];
        (void)in_context((enum how)((first / PER_SUBMITTER + j) % HOW_COUNT), items_nofs, submit_item, it);
    }
    return NULL;
}

#define FIFO_PER_CLASS 200

struct fifo_item {
    int lane;
    int index;
};

static struct fifo_item fifo_items[3 * FIFO_PER_CLASS];
static int fifo_log[3][FIFO_PER_CLASS];
static int fifo_len[3];

static void log_order(void *arg) {
    const struct fifo_item *f = arg;
    int pos = __atomic_fetch_add(&fifo_len[f->lane], 1, __ATOMIC_RELAXED);
    if (pos < FIFO_PER_CLASS)
        fifo_log[f->lane][pos] = f->index;
}

static sa_workqueue *fifo_wq;

static void submit_fifo(void *arg) {
    CHECK(sa_workqueue_submit(fifo_wq, log_order, arg) == 0);
}

static void check_items(void) {
    items_nofs = captured_in(sa_memalloc_nofs_save, sa_memalloc_nofs_restore);
    items_wq = sa_workqueue_create("ctx-items", 4);
    CHECK(items_wq != NULL);
    pthread_t t[SUBMITTERS];
    for (uintptr_t i = 0; i < SUBMITTERS; i++)
        CHECK(pthread_create(&t[i], NULL, submitter, (void *)i) == 0);
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(t[i], NULL);
    sa_workqueue_flush(items_wq);
    int not_once = 0, wrong_scope = 0, wrong_worker = 0, on_submitter = 0, seen[4] = {0};
    for (int i = 0; i < ITEMS; i++) {
        struct item *it = &items[i];
        not_once += __atomic_load_n(&it->runs, __ATOMIC_RELAXED) != 1;
        wrong_scope += __atomic_load_n(&it->wrong_scope, __ATOMIC_RELAXED);
        wrong_worker += __atomic_load_n(&it->wrong_worker, __ATOMIC_RELAXED);
        on_submitter += __atomic_load_n(&it->on_submitter, __ATOMIC_RELAXED);
        seen[it->want_scope & 3]++;
    }
    CHECK(not_once == 0);
    CHECK(wrong_scope == 0);
    CHECK(wrong_worker == 0);
    CHECK(on_submitter == 0);
    /* All three classes were exercised (NOIO alone is never set: NOIO implies NOFS). */
    CHECK(seen[0] > 0 && seen[SA_SCOPE_NOFS] > 0 && seen[NOFS_NOIO] > 0 && seen[SA_SCOPE_NOIO] == 0);
    sa_workqueue_destroy(items_wq);
    for (int i = 0; i < ITEMS; i++)
        CHECK(__atomic_load_n(&items[i].runs, __ATOMIC_RELAXED) == 1);

    /* One worker per class: within a class, items run in submission order. */
    fifo_wq = sa_workqueue_create("ctx-fifo", 1);
    CHECK(fifo_wq != NULL);
    const enum how lane_how[3] = {NORMAL, IN_NOFS_SCOPE, IN_NOIO_SCOPE};
    for (int i = 0; i < 3 * FIFO_PER_CLASS; i++) {
        struct fifo_item *f = &fifo_items[i];
        f->lane = i % 3;
        f->index = i / 3;
        (void)in_context(lane_how[f->lane], items_nofs, submit_fifo, f);
    }
    sa_workqueue_flush(fifo_wq);
    for (int lane = 0; lane < 3; lane++) {
        CHECK(__atomic_load_n(&fifo_len[lane], __ATOMIC_RELAXED) == FIFO_PER_CLASS);
        int in_order = 1;
        for (int i = 0; i < FIFO_PER_CLASS; i++)
            in_order &= fifo_log[lane][i] == i;
        CHECK(in_order);
    }
    sa_workqueue_destroy(fifo_wq);
}

/* ---- drain: flush waits, destroy drains --------------------------------- */

static int slow_done;
static sa_workqueue *slow_wq;

static void slow_item(void *arg) {
    (void)arg;
    sleep_ms(2);
    __atomic_add_fetch(&slow_done, 1, __ATOMIC_RELAXED);
}

static void submit_slow(void *arg) {
    CHECK(sa_workqueue_submit(slow_wq, slow_item, arg) == 0);
}

static void submit_slow_items(int n, sa_context_t nofs) {
    for (int i = 0; i < n; i++)
        (void)in_context((enum how)(i % HOW_COUNT), nofs, submit_slow, NULL);
}

static void check_drain(void) {
    sa_context_t nofs = captured_in(sa_memalloc_nofs_save, sa_memalloc_nofs_restore);
    slow_wq = sa_workqueue_create("ctx-drain", 2);
    CHECK(slow_wq != NULL);
    submit_slow_items(80, nofs);
    sa_workqueue_flush(slow_wq);
    CHECK(__atomic_load_n(&slow_done, __ATOMIC_RELAXED) == 80);
    sa_workqueue_flush(slow_wq); /* nothing queued: returns at once */
    submit_slow_items(80, nofs);
    sa_workqueue_destroy(slow_wq);
    CHECK(__atomic_load_n(&slow_done, __ATOMIC_RELAXED) == 160);

    /* 0 threads per class means 1; a huge count is clamped. */
    unsigned counts[] = {0, 100000};
    for (int i = 0; i < 2; i++) {
        slow_wq = sa_workqueue_create("ctx-threads", counts[i]);
        CHECK(slow_wq != NULL);
        submit_slow_items(8, nofs);
        sa_workqueue_destroy(slow_wq);
    }
    CHECK(__atomic_load_n(&slow_done, __ATOMIC_RELAXED) == 176);
}

/* ---- shutdown: submit once destroy has begun ----------------------------- */

struct closing {
    sa_workqueue *wq;
    int destroying;           /* set just before sa_workqueue_destroy() */
    int accepted, late_runs;  /* submissions that got in, and their runs */
    int item_errno, thread_errno;
    int thread_done;          /* the other pthread is done with wq */
};

static void late_item(void *arg) {
    struct closing *c = arg;
    __atomic_add_fetch(&c->late_runs, 1, __ATOMIC_RELAXED);
}

/* Submits until the queue refuses (10 s at most); returns the errno. */
static int submit_until_refused(struct closing *c) {
    double deadline = now() + 10.0;
    while (now() < deadline) {
        errno = 0;
        if (sa_workqueue_submit(c->wq, late_item, c) != 0)
            return errno;
        __atomic_add_fetch(&c->accepted, 1, __ATOMIC_RELAXED);
        sleep_ms(1);
    }
    return 0;
}

/* Holds destroy's drain open until both this item and the other pthread
 * have seen submit fail, so that neither uses wq after destroy returns. */
static void gate_item(void *arg) {
    struct closing *c = arg;
    CHECK(wait_for(&c->destroying, 1));
    c->item_errno = submit_until_refused(c);
    CHECK(wait_for(&c->thread_done, 1));
}

static void *closing_submitter(void *arg) {
    struct closing *c = arg;
    CHECK(wait_for(&c->destroying, 1));
    c->thread_errno = submit_until_refused(c);
    set_flag(&c->thread_done);
    return NULL;
}

struct self_destroy {
    sa_workqueue *wq;
    int go, destroy_returned, after_runs;
};

static void destroying_item(void *arg) {
    struct self_destroy *s = arg;
    CHECK(wait_for(&s->go, 1));
    sa_workqueue_destroy(s->wq); /* begins the end and returns: we are one of its items */
    set_flag(&s->destroy_returned);
}

static void after_item(void *arg) {
    struct self_destroy *s = arg;
    sleep_ms(1);
    __atomic_add_fetch(&s->after_runs, 1, __ATOMIC_RELEASE);
}

static int forked_runs;

static void forked_item(void *arg) {
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
}

static void check_shutdown(void) {
    /* Bad arguments. */
    errno = 0;
    CHECK(sa_workqueue_create(NULL, 1) == NULL && errno == EINVAL);
    sa_workqueue *wq = sa_workqueue_create("ctx-args", 1);
    CHECK(wq != NULL);
    errno = 0;
    CHECK(sa_workqueue_submit(NULL, forked_item, &forked_runs) == -1 && errno == EINVAL);
    errno = 0;
    CHECK(sa_workqueue_submit(wq, NULL, NULL) == -1 && errno == EINVAL);
    sa_workqueue_flush(NULL);
    sa_workqueue_destroy(NULL);

    /* A fork() child cannot submit: the workers stayed in the parent. */
    CHECK(sa_workqueue_submit(wq, forked_item, &forked_runs) == 0);
    sa_workqueue_flush(wq);
    pid_t pid = fork();
    if (pid == 0) {
        errno = 0;
        int refused = sa_workqueue_submit(wq, forked_item, &forked_runs) == -1 && errno == ESHUTDOWN;
        sa_workqueue_flush(wq); /* returns at once */
        _exit(refused ? 0 : 3);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(sa_workqueue_submit(wq, forked_item, &forked_runs) == 0); /* the parent still can */
    sa_workqueue_destroy(wq);
    CHECK(__atomic_load_n(&forked_runs, __ATOMIC_RELAXED) == 2);

    /* While destroy drains, submit fails, from an item and from another
     * pthread; what got in before runs. */
    static struct closing c;
    c.wq = sa_workqueue_create("ctx-closing", 1);
    CHECK(c.wq != NULL);
    CHECK(sa_workqueue_submit(c.wq, gate_item, &c) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, closing_submitter, &c) == 0);
    set_flag(&c.destroying);
    sa_workqueue_destroy(c.wq);
    pthread_join(t, NULL);
    CHECK(c.item_errno == ESHUTDOWN);
    CHECK(c.thread_errno == ESHUTDOWN);
    CHECK(__atomic_load_n(&c.late_runs, __ATOMIC_RELAXED) == __atomic_load_n(&c.accepted, __ATOMIC_RELAXED));

    /* Destroy from inside an item returns at once; the items queued behind
     * it still run. The queue is not touched here after `go`. */
    static struct self_destroy s;
    s.wq = sa_workqueue_create("ctx-self", 1);
    CHECK(s.wq != NULL);
    CHECK(sa_workqueue_submit(s.wq, destroying_item, &s) == 0);
    sa_context_t nofs = captured_in(sa_memalloc_nofs_save, sa_memalloc_nofs_restore);
    for (int i = 0; i < 30; i++) {
        sa_context_t prev = sa_context_adopt(i % 3 ? sa_context_capture() : nofs);
        CHECK(sa_workqueue_submit(s.wq, after_item, &s) == 0);
        sa_context_restore(prev);
    }
    set_flag(&s.go);
    CHECK(wait_for(&s.destroy_returned, 1));
    CHECK(wait_for(&s.after_runs, 30));
}

/* ---- flusher: sa_set_io_flusher ------------------------------------------ */

static unsigned item_scope;
static int item_done;

static void record_scope(void *arg) {
    (void)arg;
    __atomic_store_n(&item_scope, sa_scope_current(), __ATOMIC_RELAXED);
    set_flag(&item_done);
}

static void *report_scope(void *arg) {
    *(unsigned *)arg = sa_scope_current();
    return NULL;
}

static void *adopt_and_report(void *arg) {
    sa_context_t *ctx = arg;
    sa_context_t prev = sa_context_adopt(*ctx);
    unsigned scope = sa_scope_current();
    sa_context_restore(prev);
    ctx->bits = scope; /* reuse the slot for the answer */
    return NULL;
}

static void *flusher_thread(void *arg) {
    sa_workqueue *wq = arg;
    errno = 4242;
    int kernel = sa_set_io_flusher(1);
    CHECK(errno == 4242); /* the answer is the return value */
    fprintf(stderr, "PR_SET_IO_FLUSHER: %s\n", kernel == 0 ? "granted" : strerror(kernel));
    CHECK(kernel == 0 || kernel == EPERM);
    CHECK(sa_scope_current() == NOFS_NOIO);
    CHECK(sa_set_io_flusher(1) == kernel); /* idempotent */

    /* What it starts through the library runs in NOIO ... */
    CHECK(sa_workqueue_submit(wq, record_scope, NULL) == 0);
    CHECK(wait_for(&item_done, 1));
    CHECK(__atomic_load_n(&item_scope, __ATOMIC_RELAXED) == NOFS_NOIO);
    sa_context_t ctx = sa_context_capture();
    pthread_t t;
    CHECK(pthread_create(&t, NULL, adopt_and_report, &ctx) == 0);
    pthread_join(t, NULL);
    CHECK(ctx.bits == NOFS_NOIO);
    /* ... a plain pthread does not. */
    unsigned plain = 99;
    CHECK(pthread_create(&t, NULL, report_scope, &plain) == 0);
    pthread_join(t, NULL);
    CHECK(plain == 0);

    int off = sa_set_io_flusher(0);
    CHECK(off == 0 || off == EPERM);
    CHECK(sa_scope_current() == 0);

    /* Leaving puts NOIO back as it was: still in force inside a NOIO scope. */
    unsigned io = sa_memalloc_noio_save();
    (void)sa_set_io_flusher(1);
    (void)sa_set_io_flusher(0);
    CHECK(sa_scope_current() == NOFS_NOIO);
    sa_memalloc_noio_restore(io);
    CHECK(sa_scope_current() == 0);
    return NULL;
}

static void check_flusher(void) {
    sa_workqueue *wq = sa_workqueue_create("ctx-flusher", 1);
    CHECK(wq != NULL);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, flusher_thread, wq) == 0);
    pthread_join(t, NULL);
    sa_workqueue_destroy(wq);
    CHECK(sa_scope_current() == 0); /* flusher mode is per thread */
}

int main(int argc, char **argv) {
    alarm(60); /* a deadlock fails the test instead of hanging it */
    static const struct {
        const char *name;
        void (*check)(void);
    } parts[] = {
        {"adopt", check_adopt}, {"items", check_items},     {"drain", check_drain},
        {"shutdown", check_shutdown}, {"flusher", check_flusher},
    };
    const char *want = argc > 1 ? argv[1] : "all";
    int ran = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (strcmp(want, "all") == 0 || strcmp(want, parts[i].name) == 0) {
            parts[i].check();
            ran++;
        }
    }
    CHECK(ran > 0);
    if (__atomic_load_n(&failures, __ATOMIC_RELAXED))
        return 1;
    printf("ok\n");
    return 0;
}
