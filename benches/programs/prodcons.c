/* Producer/consumer: THREADS/2 pairs (at least one). Each producer
 * allocates blocks of 16 B - 4 KiB (log-uniform), writes them and passes
 * them in batches of 64 through a bounded queue (16 batches) to its
 * consumer, which checks and frees them: every free is a free from another
 * thread. The queue blocks on a condition variable, as real ones do. */
#include <pthread.h>

#include "common.h"

#define BATCH 64
#define DEPTH 16

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    void *queue[DEPTH][BATCH];
    int head, count;
    long batches;
    uint64_t sum;
    int id;
} pair_t;

static void *producer(void *arg)
{
    pair_t *q = arg;
    rng_t r = {(uint64_t)q->id * 31 + 7};
    for (long b = 0; b < q->batches; b++) {
        void *batch[BATCH];
        for (int i = 0; i < BATCH; i++) {
            size_t size = rng_log(&r, 4, 12);
            unsigned char *p = malloc(size);
            touch(p, size, (unsigned char)size);
            memcpy(p, &size, sizeof size < size ? sizeof size : size);
            batch[i] = p;
        }
        pthread_mutex_lock(&q->lock);
        while (q->count == DEPTH)
            pthread_cond_wait(&q->changed, &q->lock);
        memcpy(q->queue[(q->head + q->count) % DEPTH], batch, sizeof batch);
        if (q->count++ == 0)
            pthread_cond_signal(&q->changed);
        pthread_mutex_unlock(&q->lock);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    pair_t *q = arg;
    for (long b = 0; b < q->batches; b++) {
        void *batch[BATCH];
        pthread_mutex_lock(&q->lock);
        while (q->count == 0)
            pthread_cond_wait(&q->changed, &q->lock);
        memcpy(batch, q->queue[q->head], sizeof batch);
        q->head = (q->head + 1) % DEPTH;
        if (q->count-- == DEPTH)
            pthread_cond_signal(&q->changed);
        pthread_mutex_unlock(&q->lock);
        for (int i = 0; i < BATCH; i++) {
            unsigned char *p = batch[i];
            size_t size;
            memcpy(&size, p, sizeof size);
            if (p[size - 1] != (unsigned char)size)
                die("block corrupted");
            q->sum += size;
            free(p);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int threads;
    double scale;
    parse_args(argc, argv, &threads, &scale);
    int pairs = threads / 2 > 0 ? threads / 2 : 1;
    pair_t *q = calloc((size_t)pairs, sizeof(pair_t));
    pthread_t *tid = calloc(2 * (size_t)pairs, sizeof(pthread_t));
    for (int i = 0; i < pairs; i++) {
        pthread_mutex_init(&q[i].lock, NULL);
        pthread_cond_init(&q[i].changed, NULL);
        q[i].batches = (long)(100000 * scale / pairs);
        q[i].id = i;
        pthread_create(&tid[2 * i], NULL, producer, &q[i]);
        pthread_create(&tid[2 * i + 1], NULL, consumer, &q[i]);
    }
    uint64_t sum = 0;
    for (int i = 0; i < pairs; i++) {
        pthread_join(tid[2 * i], NULL);
        pthread_join(tid[2 * i + 1], NULL);
        sum += q[i].sum;
    }
    free(q);
    free(tid);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
