/*
 * Check 1 of the GPU truth kit (GPU.md): device selection.
 *
 *   gpu_select gpu    auto, cuda and cuda:0 select cuda:0 after the smoke test (no fallback), a
 *                     workload runs there, cuda:99 is SDA_ERR_INVALID_ARGUMENT, and this process now
 *                     holds libtorch_cuda and a CUDA context (the positive control of `cpu`)
 *   gpu_select cpu    cpu is selected, the backend loaded and a workload run on the CPU, and the
 *                     process maps neither libtorch_cuda nor holds a CUDA context
 *   gpu_select self   prints the library version (the kit's self-check: the program starts)
 */
#include "kit.h"

static void select_gpu(void) {
    const char *preferences[] = {"auto", "cuda", "cuda:0"};
    const char *ids[] = {"1.auto", "1.cuda", "1.cuda0"};
    sda_context *kept = NULL;
    for (int i = 0; i < 3; i++) {
        sda_context *context = kit_context(NULL);
        sda_selection selection;
        double t0 = kit_now_ms();
        sda_status status = context ? kit_select(context, preferences[i], &selection) : SDA_ERR_PANIC;
        double ms = kit_now_ms() - t0;
        int pass = status == SDA_OK && selection.kind == SDA_DEVICE_KIND_CUDA && selection.index == 0 &&
                   !selection.fell_back && strcmp(selection.device, "cuda:0") == 0;
        if (status != SDA_OK)
            kit_check(ids[i], 0, "select %s: %s: %s", preferences[i], sda_status_str(status),
                      sda_last_error_message());
        else
            kit_check(ids[i], pass, "select %s -> %s%s%s (%.0f ms, smoke test included)%s%s",
                      preferences[i], selection.device, selection.fell_back ? " [fell back]" : "",
                      selection.kind == SDA_DEVICE_KIND_CUDA ? "" : " [not cuda]", ms,
                      selection.reason[0] ? "; reason: " : "", selection.reason);
        if (i == 2 && pass)
            kept = context;
        else
            sda_context_free(context);
    }

    {
        sda_context *context = kit_context(NULL);
        sda_selection selection;
        sda_status status = context ? kit_select(context, "cuda:99", &selection) : SDA_ERR_PANIC;
        kit_check("1.cuda99", status == SDA_ERR_INVALID_ARGUMENT, "select cuda:99 -> %s: %s",
                  sda_status_str(status), status == SDA_OK ? selection.device : sda_last_error_message());
        sda_context_free(context);
    }

    if (kept) {
        sda_workload workload;
        SDA_WORKLOAD_INIT(&workload);
        double t0 = kit_now_ms();
        sda_status status = sda_run_workload(kept, &workload, 8);
        kit_check("1.workload", status == SDA_OK, "built-in conv1d at batch 8 on cuda:0: %s (%.0f ms)%s%s",
                  sda_status_str(status), kit_now_ms() - t0, status == SDA_OK ? "" : ": ",
                  status == SDA_OK ? "" : sda_last_error_message());
    } else {
        kit_check("1.workload", 0, "no cuda:0 context to run the workload on");
    }

    {
        kit_cuda_evidence e = kit_cuda_state();
        char words[1024];
        kit_describe_cuda(&e, words, sizeof words);
        /* The evidence the cpu check relies on must show up where CUDA is in use. */
        kit_check("1.control", e.libtorch_cuda && (e.in_compute_apps == 1 || e.device_maps),
                  "after selecting cuda (positive control of 1.cpu): %s", words);
    }
    sda_context_free(kept);
}

static void select_cpu(void) {
    sda_context *context = kit_context(NULL);
    sda_selection selection;
    sda_device_details device;
    sda_memory_figures memory;
    sda_workload workload;
    sda_status status = context ? kit_select(context, "cpu", &selection) : SDA_ERR_PANIC;
    const char *failed = NULL;
    if (status != SDA_OK) failed = "select cpu";
    SDA_DEVICE_DETAILS_INIT(&device);
    if (!failed && (status = sda_device_info(context, &device)) != SDA_OK) failed = "sda_device_info";
    if (!failed && (status = kit_memory(context, &memory)) != SDA_OK) failed = "sda_memory_info";
    if (!failed && (status = sda_backend_load(context)) != SDA_OK) failed = "sda_backend_load";
    SDA_WORKLOAD_INIT(&workload);
    workload.sample_length = 4800;
    workload.kernel_size = 64;
    workload.padding = 32;
    if (!failed && (status = sda_run_workload(context, &workload, 2)) != SDA_OK) failed = "sda_run_workload";
    if (failed) {
        kit_check("1.cpu", 0, "%s: %s: %s", failed, sda_status_str(status), sda_last_error_message());
    } else {
        kit_cuda_evidence e = kit_cuda_state();
        char words[1024];
        kit_describe_cuda(&e, words, sizeof words);
        kit_check("1.cpu", strcmp(selection.device, "cpu") == 0 && !e.libtorch_cuda &&
                               e.in_compute_apps != 1 && !e.device_maps,
                  "select cpu -> %s, backend loaded, workload ran on cpu; %s", selection.device, words);
    }
    sda_context_free(context);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "self") == 0) {
        printf("libsda %s\n", sda_version());
        return strcmp(sda_version(), SDA_VERSION_STRING) == 0 ? 0 : 1;
    }
    if (strcmp(mode, "gpu") == 0)
        select_gpu();
    else if (strcmp(mode, "cpu") == 0)
        select_cpu();
    else {
        fprintf(stderr, "usage: %s gpu|cpu|self\n", argv[0]);
        return 2;
    }
    return kit_failures ? 1 : 0;
}
