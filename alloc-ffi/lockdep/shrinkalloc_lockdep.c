/* libshrinkalloc_lockdep.so: the pthread interposer of reclaim lockdep.
 *
 * Preloaded (LD_PRELOAD, ahead of libshrinkalloc.so when that is preloaded
 * too), it wraps the program's pthread_mutex_{lock,trylock,timedlock,
 * clocklock,unlock} and pthread_rwlock_{rd,wr}lock, try/timed/clock
 * variants and unlock: each forwards to glibc's function, then tells
 * libshrinkalloc that the calling thread now holds the lock
 * (sa_lockdep_acquire, after a successful acquisition) or no longer does
 * (sa_lockdep_release, before the unlock). The checker itself, and the
 * choice of whether it is on (SHRINKALLOC_LOCKDEP), live in libshrinkalloc.
 *
 * Why a library of its own: the allocator's library interposes nothing,
 * so a program that does not ask for lockdep pays nothing on its locks.
 *
 * glibc's own internal locking does not go through these symbols and is
 * not seen. The libshrinkalloc calls are weak references: without the
 * allocator in the process, the wrappers only forward.
 *
 * Build: cc -shared -fPIC -O2 -o libshrinkalloc_lockdep.so shrinkalloc_lockdep.c
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <time.h>

extern void sa_lockdep_acquire(const void *lock, const char *name) __attribute__((weak));
extern void sa_lockdep_release(const void *lock) __attribute__((weak));

/* glibc exports these under a second name, so the common calls need no
 * dlsym (which must not run before the loader is ready). */
extern int __pthread_mutex_lock(pthread_mutex_t *m);
extern int __pthread_mutex_trylock(pthread_mutex_t *m);
extern int __pthread_mutex_unlock(pthread_mutex_t *m);
extern int __pthread_rwlock_rdlock(pthread_rwlock_t *l);
extern int __pthread_rwlock_tryrdlock(pthread_rwlock_t *l);
extern int __pthread_rwlock_wrlock(pthread_rwlock_t *l);
extern int __pthread_rwlock_trywrlock(pthread_rwlock_t *l);
extern int __pthread_rwlock_unlock(pthread_rwlock_t *l);

#define VISIBLE __attribute__((visibility("default")))

static inline int acquired(int r, const void *lock) {
    if (r == 0 && sa_lockdep_acquire)
        sa_lockdep_acquire(lock, NULL);
    return r;
}

static inline void releasing(const void *lock) {
    if (sa_lockdep_release)
        sa_lockdep_release(lock);
}

/* The next definition of a function glibc has no second name for, looked
 * up once (a benign race: every thread finds the same pointer). */
#define NEXT(name)                                                        \
    static __typeof__(name) *real_##name;                                 \
    if (!__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE))                 \
        __atomic_store_n(&real_##name, (__typeof__(name) *)dlsym(RTLD_NEXT, #name), __ATOMIC_RELEASE)

VISIBLE int pthread_mutex_lock(pthread_mutex_t *m) {
    return acquired(__pthread_mutex_lock(m), m);
}

VISIBLE int pthread_mutex_trylock(pthread_mutex_t *m) {
    return acquired(__pthread_mutex_trylock(m), m);
}

VISIBLE int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *t) {
    NEXT(pthread_mutex_timedlock);
    return acquired(real_pthread_mutex_timedlock(m, t), m);
}

VISIBLE int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t c, const struct timespec *t) {
    NEXT(pthread_mutex_clocklock);
    return acquired(real_pthread_mutex_clocklock(m, c, t), m);
}

VISIBLE int pthread_mutex_unlock(pthread_mutex_t *m) {
    releasing(m);
    return __pthread_mutex_unlock(m);
}

VISIBLE int pthread_rwlock_rdlock(pthread_rwlock_t *l) {
    return acquired(__pthread_rwlock_rdlock(l), l);
}

VISIBLE int pthread_rwlock_tryrdlock(pthread_rwlock_t *l) {
    return acquired(__pthread_rwlock_tryrdlock(l), l);
}

VISIBLE int pthread_rwlock_timedrdlock(pthread_rwlock_t *l, const struct timespec *t) {
    NEXT(pthread_rwlock_timedrdlock);
    return acquired(real_pthread_rwlock_timedrdlock(l, t), l);
}

VISIBLE int pthread_rwlock_clockrdlock(pthread_rwlock_t *l, clockid_t c, const struct timespec *t) {
    NEXT(pthread_rwlock_clockrdlock);
    return acquired(real_pthread_rwlock_clockrdlock(l, c, t), l);
}

VISIBLE int pthread_rwlock_wrlock(pthread_rwlock_t *l) {
    return acquired(__pthread_rwlock_wrlock(l), l);
}

VISIBLE int pthread_rwlock_trywrlock(pthread_rwlock_t *l) {
    return acquired(__pthread_rwlock_trywrlock(l), l);
}

VISIBLE int pthread_rwlock_timedwrlock(pthread_rwlock_t *l, const struct timespec *t) {
    NEXT(pthread_rwlock_timedwrlock);
    return acquired(real_pthread_rwlock_timedwrlock(l, t), l);
}

VISIBLE int pthread_rwlock_clockwrlock(pthread_rwlock_t *l, clockid_t c, const struct timespec *t) {
    NEXT(pthread_rwlock_clockwrlock);
    return acquired(real_pthread_rwlock_clockwrlock(l, c, t), l);
}

VISIBLE int pthread_rwlock_unlock(pthread_rwlock_t *l) {
    releasing(l);
    return __pthread_rwlock_unlock(l);
}
