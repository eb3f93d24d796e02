/* Small blocks freed by another thread into the pages of a thread that
 * sleeps: the owner allocates 128 Ki blocks of 512 B (64 MiB), hands them
 * over and blocks on a condition variable; the main thread frees them all
 * and calls malloc_trim(0), waits, takes a few slow paths of its own, and
 * trims again; then the owner exits. Prints the resident set at each step.
 * Per-thread heaps with delayed cross-thread frees (mimalloc, jemalloc's
 * tcache, tcmalloc) keep that memory until the owner allocates again or
 * exits; glibc gives it back at the trim, and so does shrinkalloc: a purge
 * gives back whole a page whose every block waits on its cross-thread list
 * (alloc-core/tests/small_blocks_of_a_sleeping_owner.rs).
 * Not part of run.py's table; run it by hand:
 *
 *   cc -O2 -o /tmp/sleepy_owner benches/programs/sleepy_owner.c -lpthread
 *   LD_PRELOAD=target/release/libshrinkalloc.so /tmp/sleepy_owner
 */
#include "common.h"
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCKS (128 * 1024)
#define SIZE 512

static void *blocks[BLOCKS];

static long resident_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    if (f)
        fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void)
{
    pthread_t t;
    owner_blocks = blocks;
    owner_count = BLOCKS;
    owner_size = SIZE;
    pthread_create(&t, NULL, sleeping_owner, NULL); /* asleep while this thread frees */
    wait_phase(1);
    long live = resident_kib();
    for (int i = 0; i < BLOCKS; i++)
        free(blocks[i]);
    long freed = resident_kib();
    malloc_trim(0);
    usleep(200 * 1000);
    for (int i = 0; i < 1000; i++)
        free(malloc(64));
    malloc_trim(0);
    long trimmed = resident_kib();
    set_phase(2);
    pthread_join(t, NULL);
    malloc_trim(0);
    printf("resident KiB: owner's blocks live %ld, freed by another thread %ld, "
           "after malloc_trim %ld, after the owner exits %ld\n",
           live, freed, trimmed, resident_kib());
    return 0;
}
