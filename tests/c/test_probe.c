/*
 * sda_probe_batch through the C ABI: argument checks, a host's own workload (memory it really
 * touches, measured through the resident set), a workload that reports out-of-memory above a batch,
 * the caller's first batch (start_batch), cancellation from the progress callback, and storing the
 * result in a config.
 */
#include <sda.h>

#include <stddef.h>
#include <stdlib.h>

#include "check.h"

#define MIB (1024u * 1024u)

/* The host's work: touches 1 MiB per sample, so the probe sees it in the resident set. */
static int32_t touch_mib_per_sample(void *user_data, uint32_t batch) {
    size_t bytes = (size_t)batch * MIB, i;
    unsigned char *buf = (unsigned char *)malloc(bytes);
    int *runs = (int *)user_data;
    if (!buf) return SDA_ERR_OUT_OF_MEMORY;
    for (i = 0; i < bytes; i += 4096) buf[i] = 1;
    free(buf);
    (*runs)++;
    return SDA_OK;
}

/* Work that fails above batch 20 the way a host's would: with libtorch's text. */
static int32_t oom_above_20(void *user_data, uint32_t batch) {
    (void)user_data;
    if (batch > 20) {
        sda_set_error_message("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                              "1073741824 bytes. Error code 12 (Cannot allocate memory)");
        return SDA_ERR_OUT_OF_MEMORY;
    }
    return touch_mib_per_sample(user_data, batch);
}

/* The batch of every run, in order (the probe calls progress after each). */
static uint32_t batches_run[16];
static int batches_count = 0;
static bool record_batch(void *user_data, const sda_probe_progress *progress) {
    (void)user_data;
    if (batches_count < 16) batches_run[batches_count++] = progress->batch;
    return true;
}

static int progress_calls = 0;
static bool stop_at_once(void *user_data, const sda_probe_progress *progress) {
    (void)user_data;
    progress_calls++;
    return progress->runs < 1; /* false after the first run */
}

int main(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_probe_options options;
    SDA_PROBE_OPTIONS_INIT(&options);
    SDA_PROBE_OPTIONS_INIT(&options);
    sda_probe_result result;
    SDA_PROBE_RESULT_INIT(&result);
    SDA_PROBE_RESULT_INIT(&result);
    int runs = 0;
    char buf[32];

    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);

    /* Arguments. */
    CHECK_STATUS(sda_probe_batch(NULL, &options, &result), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_probe_batch(context, &options, NULL), SDA_ERR_NULL_POINTER);
    options.struct_size = 3;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("sda_probe_options_init");
    SDA_PROBE_OPTIONS_INIT(&options);
    options.min_batch = 10;
    options.max_batch = 5;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_INVALID_ARGUMENT);

    /* The host's own workload, 1 MiB per sample, against a 64 MiB budget. */
    SDA_PROBE_OPTIONS_INIT(&options);
    options.budget_bytes = 64u * MIB;
    options.custom_workload = touch_mib_per_sample;
    options.workload_user_data = &runs;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_OK);
    printf("1 MiB/sample, 64 MiB budget: max %u, recommended %u, %u runs, per sample %.0f\n",
           result.max_batch, result.recommended_batch, result.runs, result.per_sample_bytes);
    CHECK(result.max_batch >= 40 && result.max_batch <= 64);
    CHECK(result.recommended_batch <= result.max_batch);
    CHECK(result.oom_runs == 0 && result.runs >= 2 && (int)result.runs == runs);
    CHECK(result.stop == SDA_PROBE_STOP_BUDGET && !result.capped);
    CHECK(result.measured_peak_bytes <= result.budget_bytes);

    /* Out of memory above batch 20: the answer is a batch that ran. */
    options.custom_workload = oom_above_20;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_OK);
    CHECK(result.max_batch >= 1 && result.max_batch <= 20);

    /* The caller's first batch: the first run is start_batch, and the search grows from there. */
    options.custom_workload = touch_mib_per_sample;
    options.progress = record_batch;
    options.start_batch = 8;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_OK);
    CHECK(batches_count >= 1 && batches_run[0] == 8);
    CHECK(result.oom_runs == 0 && result.max_batch >= 40 && result.max_batch <= 64);
    printf("start_batch 8: first run %u, max %u, %u runs\n", batches_run[0], result.max_batch,
           result.runs);
    /* A start outside min_batch..=max_batch is refused, not clamped. */
    options.start_batch = 100;
    options.max_batch = 99;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("start_batch 100");
    options.start_batch = 1;
    options.min_batch = 2;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_INVALID_ARGUMENT);
    /* The reserved field must be 0. */
    SDA_PROBE_OPTIONS_INIT(&options);
    options.reserved = 1;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("reserved");
    /* A program compiled before start_batch declares the smaller size: whatever lies past it is
     * not read, and the probe starts at min_batch. */
    SDA_PROBE_OPTIONS_INIT(&options);
    CHECK(options.start_batch == 0);
    options.budget_bytes = 64u * MIB;
    options.workload_user_data = &runs;
    options.custom_workload = touch_mib_per_sample;
    options.progress = record_batch;
    options.struct_size = (uint32_t)offsetof(sda_probe_options, start_batch);
    options.start_batch = 100000;
    batches_count = 0;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_OK);
    CHECK(batches_count >= 1 && batches_run[0] == 1);
    SDA_PROBE_OPTIONS_INIT(&options);
    options.budget_bytes = 64u * MIB;
    options.workload_user_data = &runs;

    /* Cancelled from the progress callback after the first run. */
    options.custom_workload = touch_mib_per_sample;
    options.progress = stop_at_once;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_ERR_CANCELLED);
    CHECK(progress_calls == 1);

    /* The recommended batch stored in a config. */
    options.progress = NULL;
    options.save_to = config;
    CHECK_STATUS(sda_probe_batch(context, &options, &result), SDA_OK);
    CHECK_STATUS(sda_config_get(config, "hardware.max_batch_size", buf, sizeof buf, NULL), SDA_OK);
    CHECK((unsigned)atoi(buf) == result.recommended_batch);

    sda_context_free(context);
    sda_config_free(config);
    return check_report("test_probe");
}
