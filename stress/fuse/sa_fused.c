/*
 * sa_fused.c - sa-fused, the FUSE filesystem of the stress harness's `fuse`
 * scenario: it serves a backing directory through a block cache (cache.c)
 * that shrinkalloc shrinks when memory runs short.
 *
 * usage: sa-fused BACKING MOUNTPOINT [--no-shrinker] [--threads N]
 *                 [--dirty-kib N] [--stats-ms N]
 *
 * Runs in the foreground with up to --threads request threads. Every
 * handler that takes the cache lock does so through cache_lock(), inside a
 * NOFS scope. File handles are direct_io, so that every read and write
 * reaches the daemon and its cache rather than the kernel's page cache;
 * writes are cached (write-back). Linked with -lshrinkalloc, so shrinkalloc
 * is its malloc unless another one is preloaded.
 *
 * Stdout, for the harness: `ready` once mounted; every --stats-ms a
 * `cache k=v ...` line (the cache's counters) and an `sa {...}` line
 * (sa_stats_print() as JSON); at unmount, once every dirty block is
 * written back and the cache freed, both lines a last time and `done`.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

struct daemon {
    struct cache cache;
    int backing;             /* the backing directory */
    unsigned stats_ms;
    pthread_t stats;
    int stats_running;
    atomic_int stop;
    pthread_mutex_t out;     /* one writer of stdout at a time */
};

static struct daemon *daemon_of(void) {
    return fuse_get_context()->private_data;
}

static struct inode *inode_of(const struct fuse_file_info *fi) {
    struct inode *ino = fi ? (struct inode *)(uintptr_t)fi->fh : NULL;
    if (ino && ino->magic != INODE_MAGIC) {
        fprintf(stderr, "sa-fused: heap corruption: the inode %p of an open file has magic %#x\n", (void *)ino,
                ino->magic);
        abort();
    }
    return ino;
}

/* The backing path of a filesystem path. */
static const char *rel(const char *path) {
    return path[1] ? path + 1 : ".";
}

/* ---- statistics ---- */

static void write_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

static void print_stats(struct daemon *d) {
    struct cache_stats *st = &d->cache.st;
#define V(x) (unsigned long long)atomic_load_explicit(&st->x, memory_order_relaxed)
    size_t blocks = atomic_load_explicit(&d->cache.nr_blocks, memory_order_relaxed);
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "cache blocks=%zu cached_bytes=%zu dirty=%zu hits=%llu misses=%llu uncached=%llu "
                     "evicted=%llu self_evicted=%llu discarded=%llu alloc_failed=%llu wb_items=%llu "
                     "wb_blocks=%llu wb_not_nofs=%llu wb_submit_failed=%llu wb_errors=%llu throttled=%llu "
                     "scans=%llu scans_nofs=%llu scans_in_lock_holder=%llu\n",
                     blocks, blocks * BLOCK_SIZE, atomic_load_explicit(&d->cache.nr_dirty, memory_order_relaxed),
                     V(hits), V(misses), V(uncached), V(evicted), V(self_evicted), V(discarded), V(alloc_failed),
                     V(wb_items), V(wb_blocks), V(wb_not_nofs), V(wb_submit_failed), V(wb_errors), V(throttled),
                     V(scans), V(scan_calls_nofs), V(scans_in_lock_holder));
#undef V
    pthread_mutex_lock(&d->out);
    write_all(1, line, (size_t)n);
    write_all(1, "sa ", 3);
    sa_stats_print(1, 1);
    pthread_mutex_unlock(&d->out);
}

static void *stats_main(void *arg) {
    struct daemon *d = arg;
    while (!atomic_load(&d->stop)) {
        print_stats(d);
        for (unsigned slept = 0; slept < d->stats_ms && !atomic_load(&d->stop); slept += 10)
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return NULL;
}

static void stop_stats(struct daemon *d) {
    if (!d->stats_running)
        return;
    atomic_store(&d->stop, 1);
    pthread_join(d->stats, NULL);
    d->stats_running = 0;
}

/* ---- set-up and tear-down ---- */

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    cfg->direct_io = 1;   /* every read and write comes to the cache */
    cfg->hard_remove = 1; /* unlink really unlinks, no .fuse_hidden files */
    struct daemon *d = fuse_get_context()->private_data;
    pthread_mutex_lock(&d->out);
    write_all(1, "ready\n", 6);
    pthread_mutex_unlock(&d->out);
    return d;
}

static void fs_destroy(void *private_data) {
    struct daemon *d = private_data;
    cache_shutdown(&d->cache);
    stop_stats(d);
    print_stats(d);
    write_all(1, "done\n", 5);
}

/* ---- metadata ---- */

/* The backing file's attributes, with the size of the cached inode when there
 * is one: dirty blocks may have grown the file past the backing one. Both are
 * read under one hold of the cache lock. Read apart, write-back and eviction
 * could empty the inode between the two (freeing it) and the size would be the
 * backing file's from before its last blocks were written: short. The kernel
 * keeps the size it is given (attr_timeout), and copy_file_range() and
 * SEEK_HOLE stop at it, so `cp` would copy the file short. */
static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    struct daemon *d = daemon_of();
    struct inode *ino = inode_of(fi);
    unsigned s = cache_lock(&d->cache);
    int r = ino ? fstat(ino->fd, st) : fstatat(d->backing, rel(path), st, AT_SYMLINK_NOFOLLOW);
    if (r < 0) {
        r = -errno;
    } else if (S_ISREG(st->st_mode)) {
        struct inode *cached = ino ? ino : inode_lookup(&d->cache, st->st_ino);
        if (cached)
            st->st_size = cached->size;
    }
    cache_unlock(&d->cache, s);
    return r;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)off, (void)fi, (void)flags;
    int fd = openat(daemon_of()->backing, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (!dir) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        return e;
    }
    for (struct dirent *e; (e = readdir(dir));)
        if (filler(buf, e->d_name, NULL, 0, 0))
            break;
    closedir(dir);
    return 0;
}

static int fs_mkdir(const char *path, mode_t mode) {
    return mkdirat(daemon_of()->backing, rel(path), mode) < 0 ? -errno : 0;
}

static int fs_rmdir(const char *path) {
    return unlinkat(daemon_of()->backing, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* Forgets the cached inode of the regular file at `path`, if any: it is
 * about to be unlinked or replaced. Called with the lock held. */
static void forget_path(struct daemon *d, const char *path) {
    struct stat st;
    if (fstatat(d->backing, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
        struct inode *ino = inode_lookup(&d->cache, st.st_ino);
        if (ino)
            inode_forget(&d->cache, ino);
    }
}

static int fs_unlink(const char *path) {
    struct daemon *d = daemon_of();
    unsigned s = cache_lock(&d->cache);
    forget_path(d, path);
    int r = unlinkat(d->backing, rel(path), 0) < 0 ? -errno : 0;
    cache_unlock(&d->cache, s);
    return r;
}

static int fs_rename(const char *from, const char *to, unsigned int flags) {
    struct daemon *d = daemon_of();
    if (flags)
        return -EINVAL;
    unsigned s = cache_lock(&d->cache);
    forget_path(d, to);
    int r = renameat(d->backing, rel(from), d->backing, rel(to)) < 0 ? -errno : 0;
    cache_unlock(&d->cache, s);
    return r;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    struct daemon *d = daemon_of();
    struct inode *ino = inode_of(fi);
    struct stat st;
    if (!ino && fstatat(d->backing, rel(path), &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    unsigned s = cache_lock(&d->cache);
    if (!ino)
        ino = inode_lookup(&d->cache, st.st_ino);
    int r;
    if (ino) {
        r = inode_truncate(&d->cache, ino, size);
    } else {
        int fd = openat(d->backing, rel(path), O_WRONLY | O_CLOEXEC);
        r = fd < 0 || ftruncate(fd, size) < 0 ? -errno : 0;
        if (fd >= 0)
            close(fd);
    }
    cache_unlock(&d->cache, s);
    return r;
}

static int fs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    struct inode *ino = inode_of(fi);
    int r = ino ? futimens(ino->fd, tv) : utimensat(daemon_of()->backing, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return r < 0 ? -errno : 0;
}

static int fs_statfs(const char *path, struct statvfs *st) {
    (void)path;
    return fstatvfs(daemon_of()->backing, st) < 0 ? -errno : 0;
}

/* ---- open files ---- */

static int open_file(const char *path, struct fuse_file_info *fi, int create, mode_t mode) {
    struct daemon *d = daemon_of();
    int oflags = O_RDWR | O_CLOEXEC | (create ? O_CREAT | (fi->flags & O_EXCL) : 0);
    int fd = openat(d->backing, rel(path), oflags, mode);
    if (fd < 0)
        return -errno;
    int err = 0;
    unsigned s = cache_lock(&d->cache);
    struct inode *ino = inode_get(&d->cache, fd, &err);
    if (ino) {
        ino->opens++;
        if (fi->flags & O_TRUNC)
            err = inode_truncate(&d->cache, ino, 0);
    }
    cache_unlock(&d->cache, s);
    if (!ino || ino->fd != fd)
        close(fd);
    if (!ino)
        return err;
    fi->fh = (uintptr_t)ino;
    fi->direct_io = 1;
    return err;
}

static int fs_open(const char *path, struct fuse_file_info *fi) {
    return open_file(path, fi, 0, 0);
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
    return open_file(path, fi, 1, mode);
}

static int fs_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    struct daemon *d = daemon_of();
    unsigned s = cache_lock(&d->cache);
    inode_put(&d->cache, inode_of(fi));
    cache_unlock(&d->cache, s);
    return 0;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    struct daemon *d = daemon_of();
    unsigned s = cache_lock(&d->cache);
    ssize_t r = cache_read(&d->cache, inode_of(fi), buf, size, off);
    cache_unlock(&d->cache, s);
    return (int)r;
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    struct daemon *d = daemon_of();
    unsigned s = cache_lock(&d->cache);
    ssize_t r = cache_write(&d->cache, inode_of(fi), buf, size, off);
    cache_unlock(&d->cache, s);
    if (atomic_load_explicit(&d->cache.nr_dirty, memory_order_relaxed) > d->cache.dirty_soft)
        writeback_kick(&d->cache);
    return (int)r;
}

/* Hands write-back to the work queue and waits for it, as the kernel's
 * filemap_write_and_wait() does; then writes what was dirtied meanwhile. */
static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path;
    struct daemon *d = daemon_of();
    struct inode *ino = inode_of(fi);
    writeback_kick(&d->cache);
    writeback_wait(&d->cache);
    unsigned s = cache_lock(&d->cache);
    writeback_locked(&d->cache, ino, SIZE_MAX);
    cache_unlock(&d->cache, s);
    return (datasync ? fdatasync(ino->fd) : fsync(ino->fd)) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
    .init = fs_init,
    .destroy = fs_destroy,
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .mkdir = fs_mkdir,
    .rmdir = fs_rmdir,
    .unlink = fs_unlink,
    .rename = fs_rename,
    .truncate = fs_truncate,
    .utimens = fs_utimens,
    .statfs = fs_statfs,
    .open = fs_open,
    .create = fs_create,
    .release = fs_release,
    .read = fs_read,
    .write = fs_write,
    .fsync = fs_fsync,
};

/* ---- main ---- */

static int usage(void) {
    fprintf(stderr, "usage: sa-fused BACKING MOUNTPOINT [--no-shrinker] [--threads N] [--dirty-kib N] "
                    "[--stats-ms N]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3)
        return usage();
    int with_shrinker = 1;
    unsigned threads = 8, dirty_kib = 8192, stats_ms = 250;
    for (int i = 3; i < argc; i++) {
        unsigned *value = !strcmp(argv[i], "--threads")     ? &threads
                          : !strcmp(argv[i], "--dirty-kib") ? &dirty_kib
                          : !strcmp(argv[i], "--stats-ms")  ? &stats_ms
                                                            : NULL;
        if (!strcmp(argv[i], "--no-shrinker"))
            with_shrinker = 0;
        else if (!value || ++i == argc || sscanf(argv[i], "%u", value) != 1)
            return usage();
    }
    static struct daemon d;
    pthread_mutex_init(&d.out, NULL);
    d.stats_ms = stats_ms ? stats_ms : 250;
    d.backing = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d.backing < 0) {
        fprintf(stderr, "sa-fused: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    size_t dirty_blocks = (size_t)dirty_kib * 1024 / BLOCK_SIZE;
    if (cache_init(&d.cache, dirty_blocks ? dirty_blocks : 1, with_shrinker) < 0) {
        fprintf(stderr, "sa-fused: cannot set up the cache: %s\n", strerror(errno));
        return 1;
    }
    if (pthread_create(&d.stats, NULL, stats_main, &d) == 0)
        d.stats_running = 1;
    char opts[160];
    snprintf(opts, sizeof opts, "fsname=sa-fused,subtype=sa-fused,max_threads=%u,max_idle_threads=%u",
             threads ? threads : 1, threads ? threads : 1);
    char *fuse_argv[] = {argv[0], "-f", "-o", opts, argv[2], NULL};
    int r = fuse_main(5, fuse_argv, &ops, &d);
    stop_stats(&d);
    return r;
}
