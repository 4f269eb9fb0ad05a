/*
 * Plans, recommendations, validation and reports through the C ABI, from C: NULL for every pointer
 * argument, invalid UTF-8, out-of-range arguments, struct sizes, the buffer rules, and that none of
 * these calls maps libtorch unless asked to (sda_validate_environment with load_backend).
 */
#include <sda.h>

#include <math.h>
#include <stdlib.h>

#include "check.h"

static const char BAD_UTF8[] = {'c', 'p', (char)0xff, 'u', 0};

static void test_plan(sda_context *context) {
    sda_worker_plan plan;
    SDA_WORKER_PLAN_INIT(&plan);
    SDA_WORKER_PLAN_INIT(&plan);
    sda_worker_plan wrong;
    SDA_WORKER_PLAN_INIT(&wrong);
    SDA_WORKER_PLAN_INIT(&wrong);
    char env[512];
    char tiny[4];
    size_t needed = 0;

    CHECK(plan.struct_size == sizeof(sda_worker_plan));

    /* NULL for each pointer argument. */
    CHECK_STATUS(sda_plan_workers(NULL, "cpu", 1, 0, &plan, env, sizeof env, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_plan_workers(context, "cpu", 1, 0, NULL, env, sizeof env, &needed), SDA_ERR_NULL_POINTER);
    CHECK_MESSAGE_CONTAINS("out_plan");
    CHECK_STATUS(sda_plan_workers(context, "cpu", 1, 0, &plan, NULL, sizeof env, &needed), SDA_ERR_NULL_POINTER);
    /* strategy NULL is auto; env_buf NULL with capacity 0 is "no environment wanted". */
    needed = 0;
    CHECK_STATUS(sda_plan_workers(context, NULL, 0, 0, &plan, NULL, 0, &needed), SDA_OK);
    CHECK(needed > 1);
    CHECK(plan.workers >= 1 && plan.device[0] != 0 && plan.reason[0] != 0);
    if (plan.gpu_count == 0) {
        CHECK(plan.strategy == SDA_PLAN_STRATEGY_CPU);
        CHECK(strcmp(plan.device, "cpu") == 0);
    }
    /* env_needed NULL is allowed. */
    CHECK_STATUS(sda_plan_workers(context, "cpu", 2, 1, &plan, env, sizeof env, NULL), SDA_OK);

    /* Invalid UTF-8, unknown strategies, out-of-range ids and counts. */
    CHECK_STATUS(sda_plan_workers(context, BAD_UTF8, 1, 0, &plan, NULL, 0, NULL), SDA_ERR_INVALID_UTF8);
    CHECK_STATUS(sda_plan_workers(context, "tpu", 1, 0, &plan, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("\"tpu\"");
    CHECK_MESSAGE_CONTAINS("single_gpu");
    CHECK_STATUS(sda_plan_workers(context, "cpu", 3, 3, &plan, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("worker id 3 is out of range");
    CHECK_MESSAGE_CONTAINS("0..=2");
    CHECK_STATUS(sda_plan_workers(context, "cpu", 100000, 0, &plan, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
    wrong.struct_size = 6; /* ends inside the field after struct_size */
    CHECK_STATUS(sda_plan_workers(context, "cpu", 1, 0, &wrong, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("struct_size");

    /* A cpu pool: every worker on the cpu, no ranks, its share of the cores. */
    SDA_WORKER_PLAN_INIT(&plan);
    CHECK_STATUS(sda_plan_workers(context, "CPU", 3, 2, &plan, env, sizeof env, &needed), SDA_OK);
    CHECK(plan.strategy == SDA_PLAN_STRATEGY_CPU && plan.kind == SDA_DEVICE_KIND_CPU);
    CHECK(plan.workers == 3 && plan.worker_id == 2 && plan.world_size == 3);
    CHECK(plan.rank == -1 && plan.local_rank == -1 && plan.master_port == 0);
    CHECK(strcmp(plan.device, "cpu") == 0 && plan.distributed_backend[0] == 0);
    CHECK(plan.env_count == 1);
    CHECK(strncmp(env, "OMP_NUM_THREADS=", 16) == 0);
    CHECK(env[strlen(env) - 1] == '\n');
    CHECK(needed == strlen(env) + 1);

    /* Too small an env buffer: the size, and the plan untouched. */
    SDA_WORKER_PLAN_INIT(&plan);
    CHECK_STATUS(sda_plan_workers(context, "cpu", 3, 2, &plan, tiny, sizeof tiny, &needed),
                 SDA_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > sizeof tiny);
    CHECK(plan.workers == 0);

    /* Ranks need GPUs. */
    if (plan.gpu_count == 0) {
        CHECK_STATUS(sda_plan_workers(context, "multi_gpu", 0, 0, &plan, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(sda_plan_workers(context, "single_gpu", 0, 0, &plan, NULL, 0, NULL), SDA_ERR_INVALID_ARGUMENT);
    }
}

static void test_recommend(sda_context *context) {
    sda_recommendation r;
    SDA_RECOMMENDATION_INIT(&r);
    SDA_RECOMMENDATION_INIT(&r);
    sda_recommendation wrong;
    SDA_RECOMMENDATION_INIT(&wrong);
    SDA_RECOMMENDATION_INIT(&wrong);

    CHECK(r.struct_size == sizeof(sda_recommendation));
    CHECK_STATUS(sda_recommend(NULL, 0, &r), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_recommend(context, 0, NULL), SDA_ERR_NULL_POINTER);
    wrong.struct_size = 0;
    CHECK_STATUS(sda_recommend(context, 0, &wrong), SDA_ERR_INVALID_ARGUMENT);

    CHECK_STATUS(sda_recommend(context, 0, &r), SDA_OK);
    CHECK(r.kind == SDA_DEVICE_KIND_CPU && strcmp(r.device, "cpu") == 0);
    CHECK(r.batch_size == 256 && !r.batch_from_probe && !r.gradient_checkpointing);
    CHECK(r.blocks == 20 && r.channels == 128);
    CHECK(r.tier_min_memory_gb == 0.0 && isinf(r.tier_max_memory_gb));
    CHECK(!r.advice_given && strcmp(r.memory_strategy, "balanced") == 0);
    CHECK(r.tier_label[0] != 0 && r.batch_reason[0] != 0);

    /* A large model gets the careful budget, with the reason. */
    CHECK_STATUS(sda_recommend(context, 250000000ull, &r), SDA_OK);
    CHECK(r.advice_given && strcmp(r.memory_strategy, "conservative") == 0);
    CHECK(r.memory_fraction == 0.6);
    CHECK(strstr(r.memory_reason, "large model") != NULL);
}

static void test_recommend_with_probe_and_tiers(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_recommendation r;
    SDA_RECOMMENDATION_INIT(&r);
    SDA_RECOMMENDATION_INIT(&r);
    const char *toml =
        "[hardware]\ndevice = \"cpu\"\nmax_batch_size = 300\n"
        "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\nmax_memory_gb = 1\nbatch_size = 8\n"
        "gradient_checkpointing = true\nblocks = 2\nchannels = 16\n"
        "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 1\nbatch_size = 64\n"
        "gradient_checkpointing = true\nblocks = 4\nchannels = 32\nlabel = \"big cpu\"\n";
    const char *gap =
        "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\nmax_memory_gb = 1\nbatch_size = 8\n"
        "gradient_checkpointing = true\nblocks = 2\nchannels = 16\n"
        "[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 2\nbatch_size = 64\n"
        "gradient_checkpointing = true\nblocks = 4\nchannels = 32\n";

    CHECK_STATUS(sda_config_load_str(gap, &config), SDA_ERR_INVALID_VALUE);
    CHECK_MESSAGE_CONTAINS("tiers[1]");
    CHECK_STATUS(sda_config_load_str(toml, &config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_recommend(context, 0, &r), SDA_OK);
    CHECK(r.batch_size == 300 && r.batch_from_probe);
    CHECK(r.tier_from_config && r.blocks == 4 && r.channels == 32);
    CHECK(strcmp(r.tier_label, "big cpu") == 0 && r.tier_min_memory_gb == 1.0);
    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
}

static void test_validate(sda_context *context) {
    sda_problem problems[32];
    SDA_PROBLEM_INIT(&problems[0]);
    size_t count = 99, i;

    CHECK_STATUS(sda_validate_environment(NULL, false, problems, 32, &count), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_validate_environment(context, false, problems, 32, NULL), SDA_ERR_NULL_POINTER);
    CHECK_MESSAGE_CONTAINS("count");
    /* Size query: NULL array with capacity 0. */
    {
        sda_status s = sda_validate_environment(context, false, NULL, 0, &count);
        CHECK(s == SDA_OK || s == SDA_ERR_BUFFER_TOO_SMALL);
        CHECK(s == SDA_OK ? count == 0 : count > 0);
    }
    if (count > 0) {
        CHECK_STATUS(sda_validate_environment(context, false, NULL, 32, &count), SDA_ERR_NULL_POINTER);
    }
    CHECK_STATUS(sda_validate_environment(context, false, problems, 32, &count), SDA_OK);
    CHECK(count <= 32);
    for (i = 0; i < count; i++) {
        CHECK(problems[i].code[0] != 0 && problems[i].message[0] != 0 && problems[i].fix[0] != 0);
        CHECK(problems[i].severity >= SDA_SEVERITY_INFO && problems[i].severity <= SDA_SEVERITY_ERROR);
        if (i > 0) CHECK(problems[i - 1].severity >= problems[i].severity); /* worst first */
        /* No CUDA driver is information, never an error. */
        if (strcmp(problems[i].code, "cuda.no_driver") == 0) CHECK(problems[i].severity == SDA_SEVERITY_INFO);
    }
    /* Without load_backend, validation maps no libtorch. */
    CHECK(mapped("libtorch") == 0);
    CHECK(strcmp(sda_severity_str(SDA_SEVERITY_WARNING), "warning") == 0);
    CHECK(strcmp(sda_severity_str(SDA_SEVERITY_ERROR), "error") == 0);
    CHECK(strcmp(sda_severity_str(42), "unknown") == 0);
}

static void test_report(sda_context *context) {
    size_t needed = 0;
    char small[8];
    char *buf;

    CHECK_STATUS(sda_report(NULL, SDA_VERBOSITY_ESSENTIAL, small, sizeof small, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_report_json(NULL, SDA_VERBOSITY_ESSENTIAL, small, sizeof small, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_report(context, SDA_VERBOSITY_ESSENTIAL, NULL, 64, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_report_json(context, SDA_VERBOSITY_VERBOSE, NULL, 64, &needed), SDA_ERR_NULL_POINTER);
    CHECK_STATUS(sda_report(context, 7, small, sizeof small, &needed), SDA_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_CONTAINS("verbosity 7");
    CHECK_STATUS(sda_report_json(context, -1, small, sizeof small, &needed), SDA_ERR_INVALID_ARGUMENT);

    /* The size query and the call that follows agree, even though figures change in between. */
    CHECK_STATUS(sda_report(context, SDA_VERBOSITY_VERBOSE, NULL, 0, &needed), SDA_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 100);
    buf = (char *)malloc(needed);
    CHECK_STATUS(sda_report(context, SDA_VERBOSITY_VERBOSE, buf, needed, NULL), SDA_OK);
    CHECK(strncmp(buf, "Device:  cpu (", 14) == 0);
    CHECK(strstr(buf, "Budget:") != NULL && strstr(buf, "libsda:  ") != NULL);
    free(buf);

    CHECK_STATUS(sda_report(context, SDA_VERBOSITY_ESSENTIAL, small, sizeof small, &needed), SDA_ERR_BUFFER_TOO_SMALL);
    buf = (char *)malloc(needed);
    CHECK_STATUS(sda_report(context, SDA_VERBOSITY_ESSENTIAL, buf, needed, &needed), SDA_OK);
    CHECK(strstr(buf, "Memory:  ") != NULL && strstr(buf, "Budget:") == NULL);
    free(buf);

    CHECK_STATUS(sda_report_json(context, SDA_VERBOSITY_VERBOSE, NULL, 0, &needed), SDA_ERR_BUFFER_TOO_SMALL);
    buf = (char *)malloc(needed);
    CHECK_STATUS(sda_report_json(context, SDA_VERBOSITY_VERBOSE, buf, needed, &needed), SDA_OK);
    CHECK(buf[0] == '{' && strstr(buf, "\"schema_version\": 2") != NULL);
    CHECK(strstr(buf, "\"verbosity\": \"verbose\"") != NULL);
    CHECK(strstr(buf, "\"loaded\": false") != NULL); /* a report loads no libtorch */
    free(buf);
    CHECK(mapped("libtorch") == 0);
}

static void test_validate_with_backend(sda_context *context) {
    sda_problem problems[32];
    SDA_PROBLEM_INIT(&problems[0]);
    size_t count = 0, i;
    CHECK_STATUS(sda_validate_environment(context, true, problems, 32, &count), SDA_OK);
    CHECK(mapped("libtorch_cpu.so") == 1);
    for (i = 0; i < count; i++) {
        /* The backend next to libsda was built against the libtorch it loads. */
        CHECK(strcmp(problems[i].code, "libtorch.version_mismatch") != 0);
        CHECK(strcmp(problems[i].code, "backend.missing") != 0);
        CHECK(strcmp(problems[i].code, "backend.not_checked") != 0);
    }
}

int main(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;

    unsetenv("SDA_DEVICE");
    unsetenv("SDA_CONFIG");
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_config_set(config, "hardware.device", "cpu"), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);

    test_plan(context);
    test_recommend(context);
    test_recommend_with_probe_and_tiers();
    test_validate(context);
    test_report(context);
    CHECK(mapped("libtorch") == 0);
    test_validate_with_backend(context);

    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    return check_report("test_plan");
}
