/* The malloc family's C semantics, checked under LD_PRELOAD (or linked):
 * errno on impossible sizes and bad alignments, malloc(0), realloc(p, 0),
 * alignment of every aligned function, usable sizes, errno preservation.
 * Prints "ok" and exits 0, or names the failed check and exits 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shrinkalloc.h"
#include "check.h"

/* realloc failing leaves the old block valid, which GCC 12 does not know. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* Functions glibc 2.36 does not declare or define: linked directly when the
 * program is linked with shrinkalloc (SA_LINKED), else found at run time in
 * the preloaded library. */
static const char *(*version)(void);
static void (*free_sized_fn)(void *, size_t);
static void (*free_aligned_sized_fn)(void *, size_t, size_t);

static int find_shrinkalloc(void) {
#ifdef SA_LINKED
    version = sa_version;
    free_sized_fn = free_sized;
    free_aligned_sized_fn = free_aligned_sized;
#else
    version = (const char *(*)(void))dlsym(RTLD_DEFAULT, "sa_version");
    free_sized_fn = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    free_aligned_sized_fn = (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
#endif
    return version && free_sized_fn && free_aligned_sized_fn;
}

static int aligned_to(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static void zero_sizes(void) {
    void *a = malloc(opaque(0)), *b = malloc(opaque(0));
    CHECK(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    void *c = calloc(opaque(0), 16);
    CHECK(c != NULL);
    free(c);
}

static void impossible_sizes(void) {
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque((size_t)PTRDIFF_MAX + 1)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(opaque(SIZE_MAX - 8)) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc(opaque((size_t)1 << 33), (size_t)1 << 33) == NULL && errno == ENOMEM);
}

static void calloc_zeroes(void) {
    for (size_t n = 1; n <= 1 << 20; n = n * 3 + 1) {
        unsigned char *d = malloc(n);
        CHECK(d != NULL);
        memset(d, 0xa5, n);
        free(d);
        unsigned char *z = calloc(n, 1);
        CHECK(z != NULL);
        for (size_t i = 0; i < n; i++)
            if (z[i]) {
                CHECK(!"calloc memory is zero");
                break;
            }
        free(z);
    }
}

static void realloc_rules(void) {
    char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    strcpy(p, "123456789");
    for (size_t n = 16; n <= (size_t)8 << 20; n *= 4) {
        p = realloc(p, n);
        CHECK(p != NULL && strcmp(p, "123456789") == 0);
    }
    p = realloc(p, 5);
    CHECK(p != NULL && memcmp(p, "12345", 5) == 0);

    errno = 0;
    CHECK(realloc(p, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
    CHECK(memcmp(p, "12345", 5) == 0); /* the old block is intact */

    errno = 0;
    CHECK(reallocarray(p, opaque(SIZE_MAX / 2), 3) == NULL && errno == ENOMEM);
    CHECK(memcmp(p, "12345", 5) == 0);
    p = reallocarray(p, 100, 4);
    CHECK(p != NULL && memcmp(p, "12345", 5) == 0 && malloc_usable_size(p) >= 400);

    /* Blocks from the aligned functions resize like any other. */
    size_t aligns[] = {64, 4096, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        char *a = memalign(aligns[i], 100);
        CHECK(a != NULL);
        memset(a, 'x', 100);
        for (size_t n = 50; n <= (size_t)4 << 20; n *= 7) {
            a = realloc(a, n);
            CHECK(a != NULL && a[0] == 'x' && a[49] == 'x');
        }
        free(a);
    }

    /* realloc(p, 0) frees p and returns NULL, errno untouched (glibc). */
    errno = 1234;
    CHECK(realloc(p, opaque(0)) == NULL && errno == 1234);
    char *q = malloc(20);
    errno = 1234;
    CHECK(reallocarray(q, opaque(0), 8) == NULL && errno == 1234);
}

static void c_alignment(void) {
    for (size_t n = 0; n <= 4096; n++) {
        void *p = malloc(n);
        CHECK(p != NULL && aligned_to(p, n <= 8 ? 8 : 16));
        CHECK(malloc_usable_size(p) >= n);
        memset(p, 0xff, malloc_usable_size(p)); /* all of it is ours to use */
        free(p);
        p = calloc(1, n);
        CHECK(p != NULL && aligned_to(p, n <= 8 ? 8 : 16));
        free(p);
    }
    void *r = malloc(8);
    r = realloc(r, 24);
    CHECK(aligned_to(r, 16));
    free(r);
}

static void posix_memalign_rules(void) {
    void *keep = (void *)0x1234, *p = keep;
    size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(posix_memalign(&p, bad[i], 16) == EINVAL && p == keep && errno == 0);
    }
    for (size_t a = sizeof(void *); a <= (size_t)1 << 28; a *= 2) {
        size_t sizes[] = {0, 1, a - 1, a, a + 1, 3 * a + 5};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            p = NULL;
            CHECK(posix_memalign(&p, a, sizes[i]) == 0 && p && aligned_to(p, a));
            CHECK(malloc_usable_size(p) >= sizes[i]);
            free(p);
        }
    }
    p = keep;
    errno = 0;
    CHECK(posix_memalign(&p, (size_t)1 << 40, 16) == ENOMEM && p == keep && errno == 0);
    errno = 0;
    CHECK(posix_memalign(&p, 16, opaque(SIZE_MAX)) == ENOMEM && p == keep && errno == 0);
}

static void aligned_alloc_rules(void) {
    size_t bad[] = {0, 3, 24, 100, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        CHECK(aligned_alloc(opaque(bad[i]), 64) == NULL && errno == EINVAL);
    }
    for (size_t a = 1; a <= (size_t)1 << 24; a *= 2) {
        void *p = aligned_alloc(a, 100); /* size need not be a multiple */
        CHECK(p && aligned_to(p, a) && malloc_usable_size(p) >= 100);
        free(p);
    }
    errno = 0;
    CHECK(aligned_alloc(64, opaque(SIZE_MAX)) == NULL && errno == ENOMEM);
}

static void memalign_rules(void) {
    void *p = memalign(0, 10);
    CHECK(p && aligned_to(p, 8));
    free(p);
    p = memalign(24, 10); /* rounded up to 32 */
    CHECK(p && aligned_to(p, 32));
    free(p);
    p = memalign(3000, 10); /* rounded up to 4096 */
    CHECK(p && aligned_to(p, 4096));
    free(p);
    errno = 0;
    CHECK(memalign(opaque(SIZE_MAX / 2 + 2), 10) == NULL && errno == EINVAL);
    errno = 0;
    CHECK(memalign(opaque((size_t)1 << 40), 10) == NULL && errno == ENOMEM);
}

static void page_functions(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sizes[] = {0, 1, 100, page - 1, page, page + 1, 10 * page, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *v = valloc(sizes[i]);
        CHECK(v && aligned_to(v, page) && malloc_usable_size(v) >= sizes[i]);
        free(v);
        void *pv = pvalloc(sizes[i]);
        size_t rounded = (sizes[i] + page - 1) / page * page;
        CHECK(pv && aligned_to(pv, page) && malloc_usable_size(pv) >= rounded);
        memset(pv, 1, rounded);
        free(pv);
    }
    errno = 0;
    CHECK(pvalloc(opaque(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
}

static void usable_size_and_trim(void) {
    CHECK(malloc_usable_size(NULL) == 0);
    char *big = malloc((size_t)64 << 20);
    CHECK(big != NULL);
    memset(big, 1, (size_t)64 << 20);
    free(big);
    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1);
}

static void free_keeps_errno(void) {
    size_t sizes[] = {16, 5000, (size_t)2 << 20, (size_t)300 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        CHECK(p != NULL);
        errno = EBADF;
        free(p);
        CHECK(errno == EBADF);
    }
    /* A successful allocation leaves errno alone too. */
    errno = EBADF;
    void *q = malloc(100);
    void *r = calloc(10, 10);
    CHECK(errno == EBADF);
    free(q);
    free(r);
    void *s = malloc(100);
    free_sized_fn(s, 100);
    void *t = aligned_alloc(64, 128);
    free_aligned_sized_fn(t, 64, 128);
    free_sized_fn(NULL, 0);
}

int main(void) {
    /* Under LD_PRELOAD, this proves the calls below reach shrinkalloc. */
    if (!find_shrinkalloc()) {
        fprintf(stderr, "shrinkalloc is not loaded\n");
        return 2;
    }
    zero_sizes();
    impossible_sizes();
    calloc_zeroes();
    realloc_rules();
    c_alignment();
    posix_memalign_rules();
    aligned_alloc_rules();
    memalign_rules();
    page_functions();
    usable_size_and_trim();
    free_keeps_errno();
    if (failures)
        return 1;
    printf("ok %s\n", version());
    return 0;
}
