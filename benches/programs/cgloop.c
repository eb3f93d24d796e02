/* The callgrind figure: `cgloop SIZE N` runs N pairs of malloc(SIZE) + free
 * after a warm-up of 100 pairs (the first allocation of a size class takes
 * the slow path). The harness runs it for two values of N under callgrind
 * and divides the difference of the instruction counts by the difference
 * of N: the cost of one pair, the loop's own 3-4 instructions included.
 * Built with -fno-builtin so that the compiler cannot drop the pair. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    size_t size = strtoul(argv[1], 0, 10);
    long n = strtol(argv[2], 0, 10);
    void *volatile sink;
    for (int i = 0; i < 100; i++) {
        void *p = malloc(size);
        sink = p;
        free(p);
    }
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        sink = p;
        free(p);
    }
    (void)sink;
    return 0;
}
