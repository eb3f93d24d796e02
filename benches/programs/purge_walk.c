/* What a purge costs when other threads' frees wait in the pages of a
 * thread that sleeps, each page keeping one live block: the owner
 * allocates 4 Mi blocks of 16 B (64 MiB, 1,024 pages of 4,096 blocks),
 * hands them over and blocks; the main thread frees all but one block of
 * every 4,096 and calls malloc_trim(0) 20 times. shrinkalloc's purge takes
 * each such page's list of frees from other threads and counts it against
 * the page's blocks (a page with every block on it goes back to the OS);
 * a list counted short is not walked again until a free changes it.
 * Prints the mean time of a trim. Not part of run.py's table; by hand:
 *
 *   cc -O2 -o /tmp/purge_walk benches/programs/purge_walk.c -lpthread
 *   LD_PRELOAD=target/release/libshrinkalloc.so /tmp/purge_walk
 */
#include "common.h"
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIZE 16
#define BLOCKS (4 * 1024 * 1024)
#define KEEP_EVERY 4096
#define TRIMS 20

static void **blocks;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(void)
{
    blocks = malloc(sizeof(void *) * BLOCKS);
    pthread_t t;
    owner_blocks = blocks;
    owner_count = BLOCKS;
    owner_size = SIZE;
    pthread_create(&t, NULL, sleeping_owner, NULL); /* asleep while this thread frees and trims */
    wait_phase(1);
    for (int i = 0; i < BLOCKS; i++)
        if (i % KEEP_EVERY != KEEP_EVERY / 2)
            free(blocks[i]);
    double start = now();
    for (int k = 0; k < TRIMS; k++)
        malloc_trim(0);
    printf("malloc_trim: %.2f ms each (mean of %d)\n", (now() - start) / TRIMS * 1e3, TRIMS);
    set_phase(2);
    pthread_join(t, NULL);
    return 0;
}
