/*
 * Check 8 of the GPU truth kit (GPU.md), the figures bench/ measures on the CPU, measured on cuda:0.
 *
 *   gpu_bench_cuda startup   a whole process: select cuda:0 (driver, libtorch, smoke test) + device
 *                            info; run.sh times it
 *   gpu_bench_cuda calls [DEVICE]
 *                            per-call cost of sda_device_info and sda_memory_info on DEVICE (default
 *                            cuda:0), and the guard's overhead around an empty callback with a
 *                            report (median of 7 rounds); bench/calls.c measures the same on cpu
 */
#include "kit.h"

static volatile int sink;

static int32_t empty_work(void *user_data) {
    (void)user_data;
    sink++;
    return SDA_OK;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "calls";
    const char *preference = argc > 2 ? argv[2] : "cuda:0";
    const char *label = strncmp(preference, "cuda", 4) == 0 ? "cuda" : preference;
    sda_context *context = kit_context(NULL);
    sda_selection selection;
    sda_device_details device;
    sda_memory_figures figures;
    SDA_DEVICE_DETAILS_INIT(&device);
    SDA_MEMORY_FIGURES_INIT(&figures);
    if (!context || kit_select(context, preference, &selection) != SDA_OK ||
        (strcmp(label, "cuda") == 0 && selection.kind != SDA_DEVICE_KIND_CUDA)) {
        fprintf(stderr, "%s not selected: %s %s\n", preference, sda_last_error_message(), selection.reason);
        return 1;
    }
    if (strcmp(label, "cuda") != 0 && sda_backend_load(context) != SDA_OK) {
        fprintf(stderr, "backend: %s\n", sda_last_error_message());
        return 1;
    }
    if (strcmp(mode, "startup") == 0) {
        if (sda_device_info(context, &device) != SDA_OK) return 1;
        printf("%s %s %" PRIu64 "\n", selection.device, device.name, device.memory_free);
        sda_context_free(context);
        return 0;
    }
    enum { ROUNDS = 7, CALLS = 2000, GUARDED = 20000 };
    double info[ROUNDS], memory[ROUNDS], direct[ROUNDS], guarded[ROUNDS];
    sda_run_report report;
    SDA_RUN_REPORT_INIT(&report);
    int32_t (*volatile work)(void *) = empty_work;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = kit_now_ms();
        for (int i = 0; i < CALLS; i++) sda_device_info(context, &device);
        info[r] = (kit_now_ms() - t0) * 1e3 / CALLS;
        t0 = kit_now_ms();
        for (int i = 0; i < CALLS; i++) sda_memory_info(context, &figures);
        memory[r] = (kit_now_ms() - t0) * 1e3 / CALLS;
        t0 = kit_now_ms();
        for (int i = 0; i < GUARDED; i++) work(NULL);
        direct[r] = (kit_now_ms() - t0) * 1e6 / GUARDED;
        t0 = kit_now_ms();
        for (int i = 0; i < GUARDED; i++) sda_guarded_run(context, empty_work, NULL, NULL, &report);
        guarded[r] = (kit_now_ms() - t0) * 1e6 / GUARDED;
    }
    qsort(info, ROUNDS, sizeof info[0], compare);
    qsort(memory, ROUNDS, sizeof memory[0], compare);
    qsort(direct, ROUNDS, sizeof direct[0], compare);
    qsort(guarded, ROUNDS, sizeof guarded[0], compare);
    printf("%s_device_info_us %.2f\n", label, info[ROUNDS / 2]);
    printf("%s_memory_info_us %.2f\n", label, memory[ROUNDS / 2]);
    printf("%s_guarded_run_with_report_ns %.1f\n", label, guarded[ROUNDS / 2]);
    printf("%s_guard_overhead_with_report_ns %.1f\n", label, guarded[ROUNDS / 2] - direct[ROUNDS / 2]);
    sda_context_free(context);
    return 0;
}
