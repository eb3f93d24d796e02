/* fork() while other threads allocate, allocate in the child (threads
 * included), then exec this program again; the exec'd image must be served
 * by shrinkalloc too (LD_PRELOAD is inherited). Usage: fork_exec FORKS, or
 * fork_exec exec-child (the exec'd image). Prints "ok" and exits 0. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void churn(int n) {
    void *keep[64] = {0};
    for (int i = 0; i < n; i++) {
        int k = i % 64;
        free(keep[k]);
        size_t size = (i % 997 == 0) ? (size_t)(i % 3 + 1) << 20 : (size_t)(i * 37 % 3000);
        keep[k] = malloc(size);
        if (!keep[k])
            abort();
        memset(keep[k], k, size);
    }
    for (int k = 0; k < 64; k++)
        free(keep[k]);
}

static void *background(void *arg) {
    (void)arg;
    while (!stop)
        churn(1000);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    churn(5000);
    return NULL;
}

static int served_by_shrinkalloc(void) { return dlsym(RTLD_DEFAULT, "sa_version") != NULL; }

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    if (!served_by_shrinkalloc()) {
        fprintf(stderr, "shrinkalloc is not loaded (%s)\n", argv[1]);
        return 3;
    }
    if (!strcmp(argv[1], "exec-child")) {
        churn(20000);
        return 0;
    }
    int forks = atoi(argv[1]);
    pthread_t bg[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&bg[i], NULL, background, NULL);
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        if (pid < 0)
            return 4;
        if (pid == 0) {
            /* Only this thread exists here; every allocator lock must be free. */
            churn(10000);
            pthread_t t;
            if (pthread_create(&t, NULL, child_thread, NULL) || pthread_join(t, NULL))
                _exit(5);
            char *args[] = {argv[0], "exec-child", NULL};
            execv("/proc/self/exe", args);
            _exit(6);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d of fork %d failed: status %#x\n", (int)pid, f, status);
            return 1;
        }
    }
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(bg[i], NULL);
    printf("ok\n");
    return 0;
}
