/* What the C test programs share: a failure counter and CHECK, which names
 * the failed condition on stderr and counts it (atomically: some programs
 * check from several threads); opaque() keeps the compiler from folding
 * malloc/free pairs or known-bad sizes away. The program prints "ok" and
 * exits 0 when `failures` is still 0 at the end. */
#ifndef SHRINKALLOC_TEST_CHECK_H
#define SHRINKALLOC_TEST_CHECK_H

#include <stddef.h>
#include <stdio.h>

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);                      \
        }                                                                            \
    } while (0)

static inline size_t opaque(size_t v) {
    __asm__ volatile("" : "+r"(v));
    return v;
}

#endif
