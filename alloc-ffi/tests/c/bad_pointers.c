/* Hands the allocator a pointer it must refuse, chosen by argv[1]; the
 * allocator must print one line and abort before this program says "survived". */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The double frees below are the point of this program. */
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* Keeps GCC from seeing (and warning about) the bad pointers at compile time. */
static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

static char static_buf[64];

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    const char *mode = argv[1];
    char stack_buf[64];
    if (!strcmp(mode, "free-stack")) {
        free(launder(stack_buf));
    } else if (!strcmp(mode, "free-static")) {
        free(launder(static_buf));
    } else if (!strcmp(mode, "free-interior")) {
        char *p = malloc(64);
        char *keep = malloc(64); /* the page stays in use */
        free(launder(p + 16));
        free(keep);
    } else if (!strcmp(mode, "free-interior-huge")) {
        char *p = malloc((size_t)8 << 20);
        free(launder(p + 4096));
    } else if (!strcmp(mode, "double-free-trimmed")) {
        /* The only block of its size class: once trimmed, its page is free. */
        void *p = malloc(3000);
        free(p);
        malloc_trim(0);
        free(launder(p));
    } else if (!strcmp(mode, "double-free-huge")) {
        void *p = malloc((size_t)64 << 20);
        free(p);
        free(launder(p));
    } else if (!strcmp(mode, "realloc-stack")) {
        void *q = realloc(launder(stack_buf), 100);
        printf("%p\n", q);
    } else if (!strcmp(mode, "usable-size-static")) {
        printf("%zu\n", malloc_usable_size(launder(static_buf)));
    } else {
        return 2;
    }
    printf("survived %s\n", mode);
    return 0;
}
