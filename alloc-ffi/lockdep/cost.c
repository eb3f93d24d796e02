/* What reclaim lockdep costs, in instructions (valgrind's callgrind counts
 * repeat exactly): a malloc/free loop and a pthread_mutex_lock/unlock loop,
 * N iterations each, with the checker off or on, the interposer preloaded
 * or not. The README's "Reclaim lockdep" section has the figures and the
 * commands (alloc-ffi/lockdep/cost.sh runs them all).
 *
 * argv[1]: "none" (start-up only, subtracted from the others), "malloc",
 * "malloc-held" (malloc/free while holding a lock an FS shrinker takes, in
 * a NOFS scope: checked, never reported), "lock" (a lock no shrinker
 * takes), "lock-learned" (the shrinker's lock). argv[2] "learn": register
 * that shrinker and run one pass first. Linked with -lshrinkalloc. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "shrinkalloc.h"

#define N 1000000 /* cost.sh divides by this */
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static void *volatile sink;

static size_t count(void *a, struct sa_shrink_control *sc) {
    (void)a; (void)sc;
    pthread_mutex_lock(&m);
    pthread_mutex_unlock(&m);
    return SA_SHRINK_EMPTY;
}
static size_t scan(void *a, struct sa_shrink_control *sc) { (void)a; (void)sc; return SA_SHRINK_STOP; }

int main(int argc, char **argv) {
    const char *what = argv[1];
    if (argc > 2 && strcmp(argv[2], "learn") == 0) {
        struct sa_shrinker_ops ops = {.name = "fs", .count = count, .scan = scan, .needs = SA_NEEDS_FS};
        sa_shrinker_register(&ops);
        sa_reclaim(SIZE_MAX, SA_LEVEL_CRITICAL);
    }
    sink = malloc(16); free(sink);
    if (strcmp(what, "malloc") == 0) {
        for (int i = 0; i < N; i++) { sink = malloc(16 + (i & 7) * 16); free(sink); }
    } else if (strcmp(what, "malloc-held") == 0) {
        pthread_mutex_lock(&m);
        unsigned s = sa_memalloc_nofs_save();
        for (int i = 0; i < N; i++) { sink = malloc(16 + (i & 7) * 16); free(sink); }
        sa_memalloc_nofs_restore(s);
        pthread_mutex_unlock(&m);
    } else if (strcmp(what, "lock") == 0) {
        static pthread_mutex_t other = PTHREAD_MUTEX_INITIALIZER;
        for (int i = 0; i < N; i++) { pthread_mutex_lock(&other); pthread_mutex_unlock(&other); }
    } else if (strcmp(what, "lock-learned") == 0) {
        for (int i = 0; i < N; i++) { pthread_mutex_lock(&m); pthread_mutex_unlock(&m); }
    }
    return 0;
}
