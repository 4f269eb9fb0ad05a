/*
 * Overhead of sda_guarded_run around an empty callback (no out-of-memory path), against calling the
 * callback directly, in one run. Prints nanoseconds per call (median of 9 rounds of 200 000 calls),
 * with the torch backend loaded (so the guard measures the allocator, as it does in real use) and
 * with a report requested.
 */
#include <sda.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static volatile int sink;

static int32_t empty_work(void *user_data) {
    (void)user_data;
    sink++;
    return SDA_OK;
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    enum { ROUNDS = 9, CALLS = 200000 };
    double direct[ROUNDS], guarded[ROUNDS], guarded_report[ROUNDS];
    int32_t (*volatile work)(void *) = empty_work;
    sda_context *context = NULL;
    sda_selection selection;
    SDA_SELECTION_INIT(&selection);
    sda_run_report report;
    SDA_RUN_REPORT_INIT(&report);
    int r, i;
    if (sda_context_new(NULL, &context) != SDA_OK) return 1;
    if (sda_select_device(context, "cpu", &selection) != SDA_OK) return 1;
    if (sda_backend_load(context) != SDA_OK) return 1;
    for (r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (i = 0; i < CALLS; i++) work(NULL);
        direct[r] = (now_ns() - t0) / CALLS;
        t0 = now_ns();
        for (i = 0; i < CALLS; i++) sda_guarded_run(context, empty_work, NULL, NULL, NULL);
        guarded[r] = (now_ns() - t0) / CALLS;
        t0 = now_ns();
        for (i = 0; i < CALLS; i++) sda_guarded_run(context, empty_work, NULL, NULL, &report);
        guarded_report[r] = (now_ns() - t0) / CALLS;
    }
    qsort(direct, ROUNDS, sizeof direct[0], cmp);
    qsort(guarded, ROUNDS, sizeof guarded[0], cmp);
    qsort(guarded_report, ROUNDS, sizeof guarded_report[0], cmp);
    printf("direct_call_ns %.1f\n", direct[ROUNDS / 2]);
    printf("guarded_run_ns %.1f\n", guarded[ROUNDS / 2]);
    printf("guarded_run_with_report_ns %.1f\n", guarded_report[ROUNDS / 2]);
    printf("guard_overhead_ns %.1f (target <= 200)\n", guarded[ROUNDS / 2] - direct[ROUNDS / 2]);
    sda_context_free(context);
    return 0;
}
