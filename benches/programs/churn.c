/* Thread churn: 400 rounds, each starting THREADS short-lived threads that
 * allocate 2,000 blocks of 16 B - 1 KiB: a third freed by the thread itself,
 * a third freed by the main thread after the thread has exited (frees into
 * the heap of a dead thread), a third kept until the next round's threads
 * free them (frees from another, younger thread). */
#include <pthread.h>

#include "common.h"

#define BLOCKS 2000

typedef struct {
    int id;
    long round;
    void **keep;     /* freed by the main thread after join */
    void **carry;    /* freed by the same slot's thread next round */
    uint64_t sum;
} job_t;

static void *worker(void *arg)
{
    job_t *j = arg;
    rng_t r = {(uint64_t)j->round * 131 + (uint64_t)j->id};
    void *own[BLOCKS / 3];
    for (int i = 0; i < BLOCKS / 3; i++) {
        free(j->carry[i]);
        size_t s1 = rng_log(&r, 4, 10), s2 = rng_log(&r, 4, 10), s3 = rng_log(&r, 4, 10);
        own[i] = malloc(s1);
        touch(own[i], s1, 1);
        j->keep[i] = malloc(s2);
        touch(j->keep[i], s2, 2);
        j->carry[i] = malloc(s3);
        touch(j->carry[i], s3, 3);
        j->sum += s1 + s2 + s3;
    }
    for (int i = 0; i < BLOCKS / 3; i++)
        free(own[i]);
    return NULL;
}

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    long rounds = (long)(400 * scale);
    job_t *jobs = calloc((size_t)threads, sizeof(job_t));
    pthread_t *tid = calloc((size_t)threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++) {
        jobs[t].id = t;
        jobs[t].keep = calloc(BLOCKS / 3, sizeof(void *));
        jobs[t].carry = calloc(BLOCKS / 3, sizeof(void *));
    }
    uint64_t sum = 0;
    for (long round = 0; round < rounds; round++) {
        for (int t = 0; t < threads; t++) {
            jobs[t].round = round;
            pthread_create(&tid[t], NULL, worker, &jobs[t]);
        }
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            for (int i = 0; i < BLOCKS / 3; i++)
                free(jobs[t].keep[i]);
        }
    }
    for (int t = 0; t < threads; t++) {
        for (int i = 0; i < BLOCKS / 3; i++)
            free(jobs[t].carry[i]);
        free(jobs[t].keep);
        free(jobs[t].carry);
        sum += jobs[t].sum;
    }
    free(jobs);
    free(tid);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
