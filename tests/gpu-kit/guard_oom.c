/*
 * Check 5 of the GPU truth kit (GPU.md): a real CUDA out-of-memory error inside sda_guarded_run.
 *
 * The device is filled through the CUDA driver (cuMemAlloc in torch's primary context, invisible to
 * torch's allocator and to its per-process fraction) until about 8 GiB stay free. The built-in
 * conv1d is then asked for about three times that, well inside the memory strategy's fraction, so
 * that it is cudaMalloc itself that fails, not libtorch's fraction rule. Expected: the guard returns
 * SDA_ERR_OUT_OF_MEMORY, the cache is empty afterwards, and the batch it suggests for the memory
 * that is really left (budget_bytes = the free memory, less 1 GiB) then runs, with the ballast still
 * in place.
 */
#include "kit.h"

#include <dlfcn.h>

typedef int (*cu_init_fn)(unsigned int);
typedef int (*cu_device_get_fn)(int *, int);
typedef int (*cu_primary_retain_fn)(void **, int);
typedef int (*cu_ctx_push_fn)(void *);
typedef int (*cu_mem_get_info_fn)(size_t *, size_t *);
typedef int (*cu_mem_alloc_fn)(unsigned long long *, size_t);
typedef int (*cu_mem_free_fn)(unsigned long long);

static struct {
    cu_mem_get_info_fn mem_get_info;
    cu_mem_alloc_fn mem_alloc;
    cu_mem_free_fn mem_free;
    unsigned long long blocks[1024];
    int count;
} ballast;

/* Opens the driver and makes torch's primary context of device 0 current; NULL or a reason. */
static const char *driver_open(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!cuda) return dlerror();
    cu_init_fn init = (cu_init_fn)dlsym(cuda, "cuInit");
    cu_device_get_fn device_get = (cu_device_get_fn)dlsym(cuda, "cuDeviceGet");
    cu_primary_retain_fn retain = (cu_primary_retain_fn)dlsym(cuda, "cuDevicePrimaryCtxRetain");
    cu_ctx_push_fn push = (cu_ctx_push_fn)dlsym(cuda, "cuCtxPushCurrent_v2");
    ballast.mem_get_info = (cu_mem_get_info_fn)dlsym(cuda, "cuMemGetInfo_v2");
    ballast.mem_alloc = (cu_mem_alloc_fn)dlsym(cuda, "cuMemAlloc_v2");
    ballast.mem_free = (cu_mem_free_fn)dlsym(cuda, "cuMemFree_v2");
    if (!init || !device_get || !retain || !push || !ballast.mem_get_info || !ballast.mem_alloc || !ballast.mem_free)
        return "a CUDA driver function is missing";
    int device = 0;
    void *context = NULL;
    if (init(0) != 0) return "cuInit failed";
    if (device_get(&device, 0) != 0) return "cuDeviceGet failed";
    if (retain(&context, device) != 0) return "cuDevicePrimaryCtxRetain failed";
    if (push(context) != 0) return "cuCtxPushCurrent failed";
    return NULL;
}

static size_t device_free(void) {
    size_t free_bytes = 0, total = 0;
    ballast.mem_get_info(&free_bytes, &total);
    return free_bytes;
}

/* Allocates until about `leave` bytes stay free; returns the bytes held. */
static uint64_t ballast_fill(size_t leave) {
    uint64_t held = 0;
    const size_t chunks[] = {(size_t)4 << 30, (size_t)1 << 30, (size_t)256 << 20};
    for (int c = 0; c < 3; c++) {
        while (ballast.count < 1024) {
            size_t free_bytes = device_free();
            if (free_bytes < leave + chunks[c]) break;
            unsigned long long p = 0;
            if (ballast.mem_alloc(&p, chunks[c]) != 0) break;
            ballast.blocks[ballast.count++] = p;
            held += chunks[c];
        }
    }
    return held;
}

static void ballast_release(void) {
    while (ballast.count > 0) ballast.mem_free(ballast.blocks[--ballast.count]);
}

typedef struct {
    sda_context *context;
    uint32_t batch;
} work;

static int32_t run_batch(void *user_data) {
    work *w = (work *)user_data;
    return sda_run_workload(w->context, NULL, w->batch);
}

static sda_status guarded(work *w, uint32_t batch, uint64_t budget, sda_run_report *report) {
    sda_guard_options options;
    SDA_GUARD_OPTIONS_INIT(&options);
    options.batch_size = batch;
    options.budget_bytes = budget;
    options.work_id = 15;
    SDA_RUN_REPORT_INIT(report);
    w->batch = batch;
    return sda_guarded_run(w->context, run_batch, w, &options, report);
}

static void fail_all(const char *why) {
    kit_check("5.oom", 0, "%s", why);
    kit_check("5.cache", 0, "not reached: %s", why);
    kit_check("5.suggested", 0, "not reached: %s", why);
}

int main(void) {
    char why[2048];
    sda_context *context = kit_context(NULL);
    sda_selection selection;
    sda_memory_figures before, after;
    sda_run_report report;
    work w = {context, 0};
    sda_status status = context ? kit_select(context, "cuda:0", &selection) : SDA_ERR_PANIC;
    if (status != SDA_OK || selection.kind != SDA_DEVICE_KIND_CUDA) {
        snprintf(why, sizeof why, "select cuda:0: %s: %s %s", sda_status_str(status),
                 sda_last_error_message(), status == SDA_OK ? selection.reason : "");
        fail_all(why);
        return 1;
    }

    /* What one sample costs, measured by a successful run of the same work (work_id 15). */
    status = guarded(&w, 64, 0, &report);
    if (status != SDA_OK || report.peak_bytes == 0) {
        snprintf(why, sizeof why, "the measuring run at batch 64 gave %s (peak %" PRIu64 " B): %s",
                 sda_status_str(status), report.peak_bytes, report.guidance);
        fail_all(why);
        return 1;
    }
    double per_sample = (double)report.peak_bytes / 64.0;
    printf("batch 64: peak %.1f MiB, %.2f MiB per sample\n", kit_mib(report.peak_bytes), per_sample / KIT_MIB);

    sda_clear_cache(context);
    const char *problem = driver_open();
    if (problem) {
        snprintf(why, sizeof why, "CUDA driver for the ballast: %s", problem);
        fail_all(why);
        return 1;
    }
    const size_t leave = (size_t)8 << 30;
    uint64_t held = ballast_fill(leave);
    size_t free_now = device_free();
    printf("ballast: %.1f GiB held through cuMemAlloc, %.2f GiB free\n", kit_gib(held), kit_gib(free_now));
    kit_memory(context, &before);
    uint64_t budget = free_now > ((size_t)2 << 30) ? free_now - ((size_t)1 << 30) : free_now / 2;
    uint32_t big = (uint32_t)(3.0 * (double)free_now / per_sample) + 1;
    double big_need = per_sample * big;
    printf("attempting batch %u (about %.1f GiB) with %.2f GiB free; the fraction allows %.1f GiB\n", big,
           big_need / KIT_GIB, kit_gib(free_now), kit_gib(before.budget));

    double t0 = kit_now_ms();
    status = guarded(&w, big, budget, &report);
    double ms = kit_now_ms() - t0;
    printf("guarded run at batch %u: %s in %.0f ms\nguidance: %s\n", big, sda_status_str(status), ms, report.guidance);
    int within_fraction = (double)before.reserved + (double)report.failed_allocation_bytes <= (double)before.budget;
    int above_free = report.failed_allocation_bytes > free_now;
    kit_check("5.oom",
              status == SDA_ERR_OUT_OF_MEMORY && report.failed_allocation_bytes > 0 && within_fraction && above_free,
              "batch %u -> %s; failed allocation %.2f GiB > %.2f GiB free (so cudaMalloc refused it), "
              "reserved %.1f MiB + that within the fraction's %.1f GiB: %s; measured %s",
              big, sda_status_str(status), kit_gib(report.failed_allocation_bytes), kit_gib(free_now),
              kit_mib(before.reserved), kit_gib(before.budget), within_fraction ? "yes" : "no",
              report.measured ? "yes" : "no");

    kit_memory(context, &after);
    size_t free_after = device_free();
    kit_check("5.cache",
              status == SDA_ERR_OUT_OF_MEMORY && after.reserved <= after.allocated + ((uint64_t)64 << 20) &&
                  report.memory_after <= report.memory_before + ((uint64_t)2 << 20),
              "after the failure: reserved %.1f MiB, allocated %.1f MiB (reserved before %.1f MiB); report "
              "memory before %.1f MiB, after %.1f MiB; device free %.2f GiB (before the attempt %.2f GiB)",
              kit_mib(after.reserved), kit_mib(after.allocated), kit_mib(before.reserved),
              kit_mib(report.memory_before), kit_mib(report.memory_after), kit_gib(free_after), kit_gib(free_now));

    uint32_t suggested = report.suggested_batch;
    if (status != SDA_ERR_OUT_OF_MEMORY || suggested == 0) {
        kit_check("5.suggested", 0, "no batch suggested (status %s, suggested %u)", sda_status_str(status), suggested);
    } else {
        t0 = kit_now_ms();
        status = guarded(&w, suggested, budget, &report);
        kit_check("5.suggested", status == SDA_OK && report.peak_bytes <= budget && suggested < big,
                  "suggested batch %u (of %u) -> %s in %.0f ms, peak %.2f GiB within the %.2f GiB budget "
                  "given (the free memory less 1 GiB), ballast still held%s%s",
                  suggested, big, sda_status_str(status), kit_now_ms() - t0, kit_gib(report.peak_bytes),
                  kit_gib(budget), status == SDA_OK ? "" : ": ", status == SDA_OK ? "" : report.guidance);
    }
    ballast_release();
    sda_context_free(context);
    return kit_failures ? 1 : 0;
}
