/*
 * Per-call cost of sda_device_info and sda_memory_info on a selected CPU context (static facts
 * cached, free memory fresh on every call). Prints microseconds per call (median of 7 rounds).
 */
#include <sda.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    enum { ROUNDS = 7, CALLS = 20000 };
    double info[ROUNDS], mem[ROUNDS];
    sda_context *context = NULL;
    sda_selection selection;
    sda_device_details device;
    sda_memory_figures figures;
    int r, i;
    SDA_SELECTION_INIT(&selection);
    SDA_DEVICE_DETAILS_INIT(&device);
    SDA_MEMORY_FIGURES_INIT(&figures);
    if (sda_context_new(NULL, &context) != SDA_OK) return 1;
    if (sda_select_device(context, "cpu", &selection) != SDA_OK) return 1;
    for (r = 0; r < ROUNDS; r++) {
        double t0 = now_us();
        for (i = 0; i < CALLS; i++) sda_device_info(context, &device);
        info[r] = (now_us() - t0) / CALLS;
        t0 = now_us();
        for (i = 0; i < CALLS; i++) sda_memory_info(context, &figures);
        mem[r] = (now_us() - t0) / CALLS;
    }
    qsort(info, ROUNDS, sizeof info[0], cmp);
    qsort(mem, ROUNDS, sizeof mem[0], cmp);
    printf("sda_device_info_us %.2f\n", info[ROUNDS / 2]);
    printf("sda_memory_info_us %.2f\n", mem[ROUNDS / 2]);
    sda_context_free(context);
    return 0;
}
