/* Random sizes with realloc up to 8 MiB and frees from other threads (the
 * pattern of a program building buffers of unknown final size). Each thread
 * holds 64 slots; an operation on an empty slot allocates 16 B - 64 KiB
 * (log-uniform); on a full one it reallocs (65%: to 1/2-4x, capped at
 * 8 MiB, writing the new pages), frees (25%) or hands the block to the next
 * thread (10%), which adopts it and later reallocs or frees it there. */
#include <pthread.h>

#include "common.h"

#define SLOTS 64
#define MAX_SIZE ((size_t)8 << 20)
#define MAILBOX 256

typedef struct {
    pthread_mutex_t lock;
    void *box[MAILBOX];
    size_t size[MAILBOX];
    int count;
} mailbox_t;

static mailbox_t *mail;
static int nthreads;
static long ops;

static void *worker(void *arg)
{
    int id = (int)(uintptr_t)arg;
    rng_t r = {(uint64_t)id * 977 + 5};
    unsigned char *slot[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    mailbox_t *mine = &mail[id], *next = &mail[(id + 1) % nthreads];
    uint64_t sum = 0;
    for (long i = 0; i < ops; i++) {
        size_t k = rng_next(&r) % SLOTS;
        if (!slot[k]) {
            pthread_mutex_lock(&mine->lock);  /* adopt a block handed over */
            if (mine->count > 0) {
                mine->count--;
                slot[k] = mine->box[mine->count];
                size[k] = mine->size[mine->count];
            }
            pthread_mutex_unlock(&mine->lock);
            if (slot[k])
                continue;
            size[k] = rng_log(&r, 4, 16);
            slot[k] = malloc(size[k]);
            touch(slot[k], size[k], (unsigned char)k);
            continue;
        }
        if (slot[k][size[k] - 1] != (unsigned char)k && slot[k][size[k] - 1] != 0xee)
            die("block corrupted");
        unsigned op = (unsigned)(rng_next(&r) % 100);
        if (op < 65) {
            size_t old = size[k];
            size_t want = (size_t)((double)old * (0.5 + (double)(rng_next(&r) % 3500) / 1000.0));
            if (want > MAX_SIZE)
                want = MAX_SIZE;
            if (want < 16)
                want = 16;
            slot[k] = realloc(slot[k], want);
            if (!slot[k])
                die("realloc returned NULL");
            if (want > old)
                touch(slot[k] + old, want - old, (unsigned char)k);
            slot[k][want - 1] = (unsigned char)k;
            size[k] = want;
            sum += want;
        } else if (op < 90) {
            free(slot[k]);
            slot[k] = NULL;
        } else {
            slot[k][size[k] - 1] = 0xee;
            pthread_mutex_lock(&next->lock);
            if (next->count < MAILBOX) {
                next->box[next->count] = slot[k];
                next->size[next->count++] = size[k];
                slot[k] = NULL;
            }
            pthread_mutex_unlock(&next->lock);
        }
    }
    for (size_t k = 0; k < SLOTS; k++)
        free(slot[k]);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    double scale;
    parse_args(argc, argv, &nthreads, &scale);
    ops = (long)(40000 * scale / nthreads);
    mail = calloc((size_t)nthreads, sizeof(mailbox_t));
    pthread_t *tid = calloc((size_t)nthreads, sizeof(pthread_t));
    for (int t = 0; t < nthreads; t++) {
        pthread_mutex_init(&mail[t].lock, NULL);
        pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
    }
    uint64_t sum = 0;
    for (int t = 0; t < nthreads; t++) {
        void *ret;
        pthread_join(tid[t], &ret);
        sum += (uintptr_t)ret;
    }
    for (int t = 0; t < nthreads; t++)
        for (int i = 0; i < mail[t].count; i++)
            free(mail[t].box[i]);
    free(mail);
    free(tid);
    printf("ok %llu\n", (unsigned long long)sum);
    return 0;
}
