/*
 * A model file as the workload through the C ABI (sda_model_*): load, describe, run for inference
 * and training, probe (sda_probe_options.model), guarded run (sda_guarded_run_model), every bad
 * input as a status with the model's own words (missing file, a text file, a wrong shape, a wrong
 * dtype, a model traced at a fixed batch, training a model whose output is a dict, NULLs and bad
 * fields), freed handles refused, and a model that outlives its context.
 *
 * Usage: test_model DIR, where DIR holds conv.pt, fixed.pt and dict.pt (written by
 * crates/sda-core/tests/model_gen.py; CTest's model_files fixture does it).
 */
#include <sda.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MIB (1024u * 1024u)

static char conv[4096], fixed_batch[4096], dict[4096], text[4096], missing[4096];

/* Loads `path` with a per-sample shape on `context`; *model is NULL on failure. */
static sda_status load(const sda_context *context, const char *path, const uint64_t *shape,
                       size_t rank, sda_dtype dtype, sda_bool train, sda_model **model) {
    sda_model_options options;
    SDA_MODEL_OPTIONS_INIT(&options);
    options.path = path;
    options.input_shape = shape;
    options.input_rank = rank;
    options.dtype = dtype;
    options.train = train;
    *model = NULL;
    return sda_model_load(context, &options, model);
}

static int32_t quick_work(void *user_data, uint32_t batch) {
    (void)user_data;
    (void)batch;
    return SDA_OK;
}

/* Structs that grow (the header's rule) with the model's fields: an older sda_probe_options that
 * ends before `model` (garbage past its size is not read), a newer sda_model_options whose unknown
 * tail must be zero, an older sda_model_details written only up to its size. */
static void test_growth(const sda_context *context, const sda_model *model) {
    struct {
        sda_model_options base;
        uint32_t extra;
    } newer;
    unsigned char older_details[sizeof(sda_model_details)];
    sda_model_details *d = (sda_model_details *)(void *)older_details;
    const size_t older = offsetof(sda_model_details, param_bytes);
    sda_probe_options probe;
    sda_probe_result result;
    const uint64_t shape[2] = {2, 100};
    sda_model *loaded = NULL;
    size_t i;
    int untouched = 1;

    memset(&probe, 0xA5, sizeof probe);
    CHECK_STATUS(sda_probe_options_init(&probe, offsetof(sda_probe_options, model)), SDA_OK);
    probe.custom_workload = quick_work;
    probe.budget_bytes = 64ull * MIB;
    probe.max_batch = 4;
    SDA_PROBE_RESULT_INIT(&result);
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_OK);
    CHECK(result.max_batch == 4);

    CHECK_STATUS(sda_model_options_init(&newer.base, sizeof newer), SDA_OK);
    CHECK(newer.extra == 0);
    newer.base.path = conv;
    newer.base.input_shape = shape;
    newer.base.input_rank = 2;
    CHECK_STATUS(sda_model_load(context, &newer.base, &loaded), SDA_OK);
    CHECK_STATUS(sda_model_free(loaded), SDA_OK);
    newer.extra = 1;
    loaded = NULL;
    CHECK_STATUS(sda_model_load(context, &newer.base, &loaded), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("sda_model_options");
    CHECK(loaded == NULL);

    memset(older_details, 0xA5, sizeof older_details);
    CHECK_STATUS(sda_model_details_init(d, older), SDA_OK);
    CHECK_STATUS(sda_model_info(model, d), SDA_OK);
    CHECK(d->struct_size == older && d->format == SDA_MODEL_FORMAT_TORCHSCRIPT);
    for (i = older; i < sizeof older_details; i++) untouched &= older_details[i] == 0xA5;
    CHECK(untouched);
    CHECK_STATUS(sda_model_details_init(d, older + 1), SDA_ERR_INVALID_ARGUMENT);
}

int main(int argc, char **argv) {
    sda_config *config = NULL;
    sda_context *context = NULL, *other = NULL;
    sda_selection sel;
    sda_model *model = NULL, *trained = NULL, *bad = NULL, *stale = NULL;
    sda_model_options options;
    sda_model_details details;
    sda_probe_options probe;
    sda_probe_result result;
    sda_guard_options guard;
    sda_run_report report;
    sda_workload shape_only;
    const uint64_t shape[2] = {2, 2000};
    const uint64_t three_channels[2] = {3, 2000};
    const uint64_t fixed_shape[2] = {2, 100};
    const uint64_t dict_shape[1] = {4};
    const uint64_t zero_dim[2] = {2, 0};
    FILE *f;

    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR (with conv.pt, fixed.pt, dict.pt from model_gen.py)\n",
                argv[0]);
        return 2;
    }
    snprintf(conv, sizeof conv, "%s/conv.pt", argv[1]);
    snprintf(fixed_batch, sizeof fixed_batch, "%s/fixed.pt", argv[1]);
    snprintf(dict, sizeof dict, "%s/dict.pt", argv[1]);
    snprintf(text, sizeof text, "%s/readme.txt", argv[1]);
    snprintf(missing, sizeof missing, "%s/no_such_model.pt", argv[1]);
    f = fopen(text, "w");
    if (!f) return 2;
    fputs("a text file, not a model\n", f);
    fclose(f);

    SDA_SELECTION_INIT(&sel);
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &other), SDA_OK);
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);
    CHECK_STATUS(sda_select_device(other, "cpu", &sel), SDA_OK);

    /* The defaults. */
    CHECK_STATUS(SDA_MODEL_OPTIONS_INIT(&options), SDA_OK);
    CHECK(options.path == NULL && options.input_shape == NULL && options.input_rank == 0);
    CHECK(options.dtype == SDA_DTYPE_F32 && options.train == 0);
    CHECK(options.struct_size == sizeof options);

    /* Load and describe. */
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_F32, 0, &model), SDA_OK);
    CHECK(model != NULL);
    SDA_MODEL_DETAILS_INIT(&details);
    CHECK_STATUS(sda_model_info(model, &details), SDA_OK);
    CHECK(details.format == SDA_MODEL_FORMAT_TORCHSCRIPT);
    CHECK(details.kind == SDA_DEVICE_KIND_CPU && details.index == 0);
    CHECK(details.dtype == SDA_DTYPE_F32 && details.train == 0);
    /* conv.pt: Conv1d(2, 16, 65) and Conv1d(16, 2, 65), float32. */
    CHECK(details.param_bytes == (2u * 16 * 65 + 16 + 16 * 2 * 65 + 2) * 4);
    CHECK(details.resident_bytes == details.param_bytes + details.buffer_bytes);
    CHECK(details.work_id != 0);
    CHECK_STATUS(sda_model_info(model, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_model_info(NULL, &details), SDA_ERR_NULL_POINTER);

    test_growth(context, model);

    /* Inference and a training step. */
    CHECK_STATUS(sda_model_run(model, 1), SDA_OK);
    CHECK_STATUS(sda_model_run(model, 4), SDA_OK);
    CHECK_STATUS(sda_model_run(model, 0), SDA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_F32, 1, &trained), SDA_OK);
    CHECK_STATUS(sda_model_run(trained, 3), SDA_OK);
    SDA_MODEL_DETAILS_INIT(&details);
    CHECK_STATUS(sda_model_info(trained, &details), SDA_OK);
    CHECK(details.train == 1);

    /* The probe of the model: a batch that ran within the budget. */
    SDA_PROBE_OPTIONS_INIT(&probe);
    CHECK(probe.model == NULL);
    probe.model = model;
    probe.budget_bytes = 256ull * MIB;
    probe.max_batch = 256;
    SDA_PROBE_RESULT_INIT(&result);
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_OK);
    CHECK(result.max_batch >= 1 && result.recommended_batch >= 1);
    CHECK(result.recommended_batch <= result.max_batch);
    CHECK(result.measured_peak_bytes <= probe.budget_bytes);
    CHECK(result.measured_peak_bytes >= details.resident_bytes);
    CHECK_STATUS(sda_model_run(model, result.recommended_batch), SDA_OK);
    /* A model with a custom workload, or with the built-in workload's shape: one workload only. */
    probe.custom_workload = quick_work;
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("custom_workload");
    probe.custom_workload = NULL;
    SDA_WORKLOAD_INIT(&shape_only);
    probe.workload = &shape_only;
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_ERR_INVALID_ARGUMENT);
    probe.workload = NULL;
    /* A model belongs to the context that loaded it. */
    CHECK_STATUS(sda_probe_batch(other, &probe, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("another sda_context");

    /* A guarded run with a batch that fits: one attempt, the batch reported. */
    SDA_GUARD_OPTIONS_INIT(&guard);
    guard.batch_size = 4;
    guard.max_attempts = 1;
    SDA_RUN_REPORT_INIT(&report);
    CHECK_STATUS(sda_guarded_run_model(context, model, &guard, &report), SDA_OK);
    CHECK(report.status == SDA_OK && report.attempts == 1 && report.oom_attempts == 0);
    CHECK(report.attempted_batch == 4 && report.kind == SDA_DEVICE_KIND_CPU);
    /* Batched retries (max_attempts > 1) of a batch that fits: the first attempt is the answer. */
    guard.max_attempts = 4;
    SDA_RUN_REPORT_INIT(&report);
    CHECK_STATUS(sda_guarded_run_model(context, trained, &guard, &report), SDA_OK);
    CHECK(report.final_batch == 4 && report.attempts == 1);
    CHECK_STATUS(sda_guarded_run_model(context, model, &guard, NULL), SDA_OK);
    /* Argument errors. */
    CHECK_STATUS(sda_guarded_run_model(context, model, NULL, &report), SDA_ERR_NULL_POINTER);
    guard.batch_size = 0;
    CHECK_STATUS(sda_guarded_run_model(context, model, &guard, &report), SDA_ERR_INVALID_ARGUMENT);
    guard.batch_size = 4;
    CHECK_STATUS(sda_guarded_run_model(NULL, model, &guard, &report), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_guarded_run_model(context, NULL, &guard, &report), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_guarded_run_model(other, model, &guard, &report), SDA_ERR_INVALID_ARGUMENT);
    guard.keep_effective_batch = 2;
    CHECK_STATUS(sda_guarded_run_model(context, model, &guard, &report), SDA_ERR_INVALID_ARGUMENT);
    guard.keep_effective_batch = 0;

    /* Bad input: a status with the model's words, never out-of-memory, and no handle. */
    CHECK_STATUS(load(context, missing, shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("no_such_model.pt");
    CHECK(bad == NULL);
    {
        sda_status s = load(context, text, shape, 2, SDA_DTYPE_F32, 0, &bad);
        CHECK(s == SDA_ERR_INVALID_ARGUMENT || s == SDA_ERR_TORCH);
        CHECK_MESSAGE_CONTAINS("readme.txt");
        CHECK(bad == NULL);
    }
    CHECK_STATUS(load(context, argv[1], shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("not a file");
    /* A shape the model rejects (3 channels into a 2-channel convolution): found by the run. */
    CHECK_STATUS(load(context, conv, three_channels, 2, SDA_DTYPE_F32, 0, &bad), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 2), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("rejected its input [2, 3, 2000] f32");
    SDA_PROBE_OPTIONS_INIT(&probe);
    probe.model = bad;
    probe.budget_bytes = 256ull * MIB;
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    /* A dtype it rejects (bf16 input into float32 weights). */
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_BF16, 0, &bad), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 2), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("bf16");
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    /* Training a model whose output is a dict (inference runs). */
    CHECK_STATUS(load(context, dict, dict_shape, 1, SDA_DTYPE_F32, 1, &bad), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 2), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("not a tensor");
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    CHECK_STATUS(load(context, dict, dict_shape, 1, SDA_DTYPE_F32, 0, &bad), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 2), SDA_OK);
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    /* A model traced at batch 1: INVALID_ARGUMENT saying so, from a run, the probe and the guard. */
    CHECK_STATUS(load(context, fixed_batch, fixed_shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 1), SDA_OK);
    CHECK_STATUS(sda_model_run(bad, 4), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("accepts only its traced batch");
    SDA_PROBE_OPTIONS_INIT(&probe);
    probe.model = bad;
    probe.min_batch = 2;
    probe.budget_bytes = 256ull * MIB;
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("accepts only its traced batch");
    guard.batch_size = 8;
    guard.max_attempts = 4;
    SDA_RUN_REPORT_INIT(&report);
    CHECK_STATUS(sda_guarded_run_model(context, bad, &guard, &report), SDA_ERR_INVALID_ARGUMENT);
    CHECK(report.status == SDA_ERR_INVALID_ARGUMENT && report.oom_attempts == 0);
    CHECK(report.attempts == 1);
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    /* Fields and pointers. */
    CHECK_STATUS(load(context, conv, zero_dim, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(load(context, conv, NULL, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(load(context, conv, shape, 65, SDA_DTYPE_F32, 0, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(load(context, NULL, shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(load(context, "\xff\xfe.pt", shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(load(context, conv, shape, 2, (sda_dtype)7, 0, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("dtype");
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_F32, 2, &bad), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("train");
    CHECK_STATUS(load(NULL, conv, shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_ERR_NULL_POINTER);
    CHECK(bad == NULL);
    CHECK_STATUS(sda_model_load(context, NULL, &bad), SDA_ERR_NULL_POINTER);
    SDA_MODEL_OPTIONS_INIT(&options);
    options.path = conv;
    CHECK_STATUS(sda_model_load(context, &options, NULL), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_model_options_init(NULL, sizeof options), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_model_options_init(&options, 2), SDA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(sda_model_details_init(NULL, sizeof details), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_model_run(NULL, 1), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_model_free(NULL), SDA_OK);

    /* A freed model handle is refused, everywhere, and never reaches a newer model. */
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_F32, 0, &stale), SDA_OK);
    CHECK_STATUS(sda_model_free(stale), SDA_OK);
    CHECK_STATUS(sda_model_free(stale), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_model_run(stale, 1), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_model_info(stale, &details), SDA_ERR_INVALID_HANDLE);
    guard.batch_size = 1;
    CHECK_STATUS(sda_guarded_run_model(context, stale, &guard, &report), SDA_ERR_INVALID_HANDLE);
    SDA_PROBE_OPTIONS_INIT(&probe);
    probe.model = stale;
    CHECK_STATUS(sda_probe_batch(context, &probe, &result), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(load(context, conv, shape, 2, SDA_DTYPE_F32, 0, &bad), SDA_OK);
    CHECK(bad != stale);
    CHECK_STATUS(sda_model_run(stale, 1), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_model_free(bad), SDA_OK);
    /* Handles of another type are not models. */
    CHECK_STATUS(sda_model_run((const sda_model *)context, 1), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_model_free((sda_model *)config), SDA_ERR_INVALID_HANDLE);

    /* A model keeps its context alive: it runs after the context is freed; the probe and guarded
     * runs, which name the context, refuse the freed handle. */
    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_model_run(model, 2), SDA_OK);
    CHECK_STATUS(sda_model_info(model, &details), SDA_OK);
    guard.batch_size = 2;
    CHECK_STATUS(sda_guarded_run_model(context, model, &guard, &report), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_model_free(model), SDA_OK);
    CHECK_STATUS(sda_model_free(trained), SDA_OK);

    CHECK_STATUS(sda_context_free(other), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    remove(text);
    return check_report("test_model");
}
