/*
 * Issue 7, item 3: double free and use after free of every handle type (sda_config, sda_context)
 * return SDA_ERR_INVALID_HANDLE and never touch freed memory. Built and run as a plain CTest, in the
 * AddressSanitizer + UndefinedBehaviorSanitizer configuration (scripts/reliability.sh), and under
 * valgrind memcheck, which also sees the library's own (uninstrumented) reads: a handle is only ever
 * looked up, never dereferenced, so neither finds an access to freed memory.
 *
 * Also the regressions of what the reliability suite found: a freed handle whose memory the next
 * handle reused used to reach that new object (a double free freed somebody else's configuration);
 * loading a configuration from a FIFO blocked forever and from /dev/zero read until memory ran out.
 * This program loads no libtorch.
 */
#include <sda.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static int calls_in_work = 0;
static int32_t count_work(void *user_data) {
    (void)user_data;
    calls_in_work++;
    return SDA_OK;
}

/* Every function that takes a configuration, called with `config`; returns how many said
 * SDA_ERR_INVALID_HANDLE. */
static int config_calls(sda_config *config) {
    char buf[64];
    size_t needed = 0;
    sda_context *ctx = NULL;
    sda_probe_options options;
    SDA_PROBE_OPTIONS_INIT(&options);
    SDA_PROBE_OPTIONS_INIT(&options);
    sda_probe_result result;
    SDA_PROBE_RESULT_INIT(&result);
    SDA_PROBE_RESULT_INIT(&result);
    int refused = 0;
    refused += sda_config_get(config, "hardware.device", buf, sizeof buf, &needed) == SDA_ERR_INVALID_HANDLE;
    refused += sda_config_set(config, "hardware.device", "cpu") == SDA_ERR_INVALID_HANDLE;
    refused += sda_config_to_string(config, buf, sizeof buf, &needed) == SDA_ERR_INVALID_HANDLE;
    refused += sda_config_save(config, "never-written.toml") == SDA_ERR_INVALID_HANDLE;
    refused += sda_context_new(config, &ctx) == SDA_ERR_INVALID_HANDLE;
    CHECK(ctx == NULL); /* out-parameters are written only on success */
    options.save_to = config;
    refused += sda_probe_batch(NULL, &options, &result) == SDA_ERR_NULL_POINTER; /* context first */
    refused += sda_config_free(config) == SDA_ERR_INVALID_HANDLE;
    return refused;
}

/* Every function that takes a context; returns how many said SDA_ERR_INVALID_HANDLE. */
static int context_calls(sda_context *context) {
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    sda_device_details dev;
    SDA_DEVICE_DETAILS_INIT(&dev);
    sda_memory_figures mem;
    SDA_MEMORY_FIGURES_INIT(&mem);
    sda_run_report report;
    SDA_RUN_REPORT_INIT(&report);
    SDA_RUN_REPORT_INIT(&report);
    sda_worker_plan plan;
    SDA_WORKER_PLAN_INIT(&plan);
    SDA_WORKER_PLAN_INIT(&plan);
    sda_recommendation rec;
    SDA_RECOMMENDATION_INIT(&rec);
    SDA_RECOMMENDATION_INIT(&rec);
    sda_probe_result result;
    SDA_PROBE_RESULT_INIT(&result);
    SDA_PROBE_RESULT_INIT(&result);
    sda_problem problems[4];
    SDA_PROBLEM_INIT(&problems[0]);
    char buf[256];
    size_t needed = 0, count = 0;
    int refused = 0;
    int before = calls_in_work;
    refused += sda_select_device(context, "cpu", &sel) == SDA_ERR_INVALID_HANDLE;
    refused += sda_device_info(context, &dev) == SDA_ERR_INVALID_HANDLE;
    refused += sda_list_devices(context, &dev, 1, &count) == SDA_ERR_INVALID_HANDLE;
    refused += sda_memory_info(context, &mem) == SDA_ERR_INVALID_HANDLE;
    refused += sda_clear_cache(context) == SDA_ERR_INVALID_HANDLE;
    refused += sda_reset_peak(context) == SDA_ERR_INVALID_HANDLE;
    refused += sda_backend_load(context) == SDA_ERR_INVALID_HANDLE;
    refused += sda_guarded_run(context, count_work, NULL, NULL, &report) == SDA_ERR_INVALID_HANDLE;
    refused += sda_plan_workers(context, "cpu", 1, 0, &plan, buf, sizeof buf, &needed) == SDA_ERR_INVALID_HANDLE;
    refused += sda_recommend(context, 0, &rec) == SDA_ERR_INVALID_HANDLE;
    refused += sda_report(context, 0, buf, sizeof buf, &needed) == SDA_ERR_INVALID_HANDLE;
    refused += sda_report_json(context, 0, buf, sizeof buf, &needed) == SDA_ERR_INVALID_HANDLE;
    refused += sda_validate_environment(context, false, problems, 4, &count) == SDA_ERR_INVALID_HANDLE;
    refused += sda_probe_batch(context, NULL, &result) == SDA_ERR_INVALID_HANDLE;
    refused += sda_run_workload(context, NULL, 1) == SDA_ERR_INVALID_HANDLE;
    refused += sda_context_free(context) == SDA_ERR_INVALID_HANDLE;
    CHECK(calls_in_work == before); /* a refused guarded run never runs the work */
    return refused;
}

static void test_double_free_and_use_after_free(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_config_set(config, "hardware.device", "cpu"), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);

    /* Double free. */
    CHECK_STATUS(sda_context_free(context), SDA_ERR_INVALID_HANDLE);
    CHECK_MESSAGE_CONTAINS("sda_context");
    CHECK_STATUS(sda_config_free(config), SDA_ERR_INVALID_HANDLE);
    CHECK_MESSAGE_CONTAINS("sda_config");
    /* Use after free, by every function that takes the handle. */
    CHECK(config_calls(config) == 7);
    CHECK(context_calls(context) == 16);
    /* A third free, after all that, is still refused. */
    CHECK_STATUS(sda_config_free(config), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_context_free(context), SDA_ERR_INVALID_HANDLE);
}

/* The regression: the next objects take the freed memory, and the stale handles must not reach them. */
static void test_stale_handles_never_reach_new_objects(void) {
    enum { N = 64 };
    sda_config *stale_config = NULL;
    sda_context *stale_context = NULL;
    sda_config *fresh[N];
    sda_context *fresh_ctx[N];
    char buf[64];
    size_t needed = 0;
    int i, same = 0;

    CHECK_STATUS(sda_config_new(&stale_config), SDA_OK);
    CHECK_STATUS(sda_context_new(stale_config, &stale_context), SDA_OK);
    CHECK_STATUS(sda_context_free(stale_context), SDA_OK);
    CHECK_STATUS(sda_config_free(stale_config), SDA_OK);
    for (i = 0; i < N; i++) {
        CHECK_STATUS(sda_config_new(&fresh[i]), SDA_OK);
        CHECK_STATUS(sda_config_set(fresh[i], "hardware.device", "cpu"), SDA_OK);
        CHECK_STATUS(sda_context_new(fresh[i], &fresh_ctx[i]), SDA_OK);
        same += fresh[i] == stale_config || fresh_ctx[i] == stale_context;
        /* A handle of one type is never a handle of the other. */
        CHECK((void *)fresh[i] != (void *)fresh_ctx[i]);
    }
    CHECK(same == 0); /* handles are never handed out twice */
    CHECK_STATUS(sda_config_get(stale_config, "hardware.device", buf, sizeof buf, &needed),
                 SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_config_free(stale_config), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_context_free(stale_context), SDA_ERR_INVALID_HANDLE);
    /* Cross-typed: a context passed as a configuration and the other way round. */
    CHECK_STATUS(sda_config_free((sda_config *)fresh_ctx[0]), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_context_free((sda_context *)fresh[0]), SDA_ERR_INVALID_HANDLE);
    /* Forged values are looked up, never dereferenced. */
    CHECK_STATUS(sda_config_free((sda_config *)(uintptr_t)0xdeadbeef), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_context_free((sda_context *)(uintptr_t)1), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_config_free((sda_config *)buf), SDA_ERR_INVALID_HANDLE);
    /* Every new object is intact and freed exactly once. */
    for (i = 0; i < N; i++) {
        sda_device_details dev;
        SDA_DEVICE_DETAILS_INIT(&dev);
        CHECK_STATUS(sda_config_get(fresh[i], "hardware.device", buf, sizeof buf, &needed), SDA_OK);
        CHECK(strcmp(buf, "cpu") == 0);
        CHECK_STATUS(sda_device_info(fresh_ctx[i], &dev), SDA_OK);
        CHECK_STATUS(sda_context_free(fresh_ctx[i]), SDA_OK);
        CHECK_STATUS(sda_config_free(fresh[i]), SDA_OK);
    }
}

/* A context freed while the configuration it was made from lives on, and the other way round: each
 * keeps working on its own (a context holds a snapshot). */
static void test_free_order(void) {
    sda_config *config = NULL;
    sda_context *context = NULL;
    sda_memory_figures mem;
    SDA_MEMORY_FIGURES_INIT(&mem);
    char buf[64];
    size_t needed = 0;
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_config_set(config, "hardware.device", "cpu"), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
    CHECK_STATUS(sda_memory_info(context, &mem), SDA_OK);
    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_config_new(&config), SDA_OK);
    CHECK_STATUS(sda_context_new(config, &context), SDA_OK);
    CHECK_STATUS(sda_context_free(context), SDA_OK);
    CHECK_STATUS(sda_config_get(config, "hardware.device", buf, sizeof buf, &needed), SDA_OK);
    CHECK_STATUS(sda_config_free(config), SDA_OK);
}

/* A guarded run's work that frees the context the run is running on: the run finishes, later calls
 * are refused. */
static int32_t free_own_context(void *user_data) {
    sda_context **ctx = (sda_context **)user_data;
    return sda_context_free(*ctx);
}

static void test_free_inside_a_callback(void) {
    sda_context *context = NULL;
    sda_run_report report;
    SDA_RUN_REPORT_INIT(&report);
    SDA_RUN_REPORT_INIT(&report);
    sda_device_details dev;
    SDA_DEVICE_DETAILS_INIT(&dev);
    sda_selection sel;
    SDA_SELECTION_INIT(&sel);
    CHECK_STATUS(sda_context_new(NULL, &context), SDA_OK);
    CHECK_STATUS(sda_select_device(context, "cpu", &sel), SDA_OK);
    CHECK_STATUS(sda_guarded_run(context, free_own_context, &context, NULL, &report), SDA_OK);
    CHECK_STATUS(sda_device_info(context, &dev), SDA_ERR_INVALID_HANDLE);
    CHECK_STATUS(sda_context_free(context), SDA_ERR_INVALID_HANDLE);
}

/* Paths that are not regular configuration files: refused at once, never read without end. */
static void test_config_paths_that_are_not_files(void) {
    char dir[] = "/tmp/sda-handles-XXXXXX";
    char fifo[64], big[64];
    sda_config *config = (sda_config *)(uintptr_t)0x1234;
    int fd;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(big, sizeof big, "%s/big.toml", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    alarm(20); /* a blocking open would end the test here, with SIGALRM */
    CHECK_STATUS(sda_config_load(fifo, &config), SDA_ERR_IO);
    CHECK_MESSAGE_CONTAINS("not a regular file");
    CHECK_STATUS(sda_config_load("/dev/zero", &config), SDA_ERR_IO);
    CHECK_STATUS(sda_config_load("/dev/null", &config), SDA_ERR_IO);
    CHECK_STATUS(sda_config_load(dir, &config), SDA_ERR_IO);
    fd = open(big, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0 && ftruncate(fd, 17 << 20) == 0);
    close(fd);
    CHECK_STATUS(sda_config_load(big, &config), SDA_ERR_IO);
    CHECK_MESSAGE_CONTAINS("larger than");
    alarm(0);
    CHECK(config == (sda_config *)(uintptr_t)0x1234);
    unlink(fifo);
    unlink(big);
    rmdir(dir);
}

int main(void) {
    /* No libtorch here (fast under valgrind): guarded runs then run unmeasured. */
    setenv("SDA_BACKEND", "/nonexistent/libsda_torch.so", 1);
    test_double_free_and_use_after_free();
    test_stale_handles_never_reach_new_objects();
    test_free_order();
    test_free_inside_a_callback();
    test_config_paths_that_are_not_files();
    CHECK(mapped("libtorch") == 0);
    return check_report("handles");
}
