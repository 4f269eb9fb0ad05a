// guarded_run.cpp — what a host does when a batch does not fit: run the work under libsda's guard,
// get an out-of-memory *report* instead of a crash, show the guidance, and go on at the batch libsda
// suggests (computed from the measured memory, not a blind halving).
//
//   usage: guarded_run [BUDGET_MIB]     (default 512: the memory this host allows its work)
//
// The work is libsda's built-in conv1d (one second of 48 kHz audio per sample). A host with its own
// model does the same with its own forward pass inside the lambda; an exception whose text is an
// out-of-memory error (CUDA, CPU allocator, MPS, ...) is recognised the same way.
//
// Build against an installed libsda:  c++ -std=c++17 guarded_run.cpp $(pkg-config --cflags --libs sda)
#include <sda.hpp>

#include <cstdio>
#include <cstdlib>

#include <sys/resource.h>
#include <unistd.h>

// Caps this process's address space at what it uses now plus `extra` bytes, as a container's memory
// limit would, so that the oversized batch below fails the same way on every machine instead of
// depending on how much RAM and overcommit this one has.
static void limit_memory(unsigned long long extra) {
    unsigned long long pages = 0;
    if (FILE *statm = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(statm, "%llu", &pages) != 1) pages = 0;
        std::fclose(statm);
    }
    if (pages == 0) return;
    const rlimit limit{pages * static_cast<unsigned long long>(sysconf(_SC_PAGESIZE)) + extra,
                       RLIM_INFINITY};
    setrlimit(RLIMIT_AS, &limit);
}

int main(int argc, char **argv) {
    const unsigned long long budget_mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 512;
    try {
        sda::context ctx;
        const sda_selection selection = ctx.select("auto");
        std::printf("device: %s\n", selection.device);

        sda_workload workload = sda::workload();
        workload.out_channels = 256;  // a wide first layer: about 47 MiB of activations per sample
        workload.kernel_size = 8;
        workload.padding = 4;

        // One training or inference step at `batch`: throws sda::error (with libtorch's message) on
        // failure. The same callable is guarded every time, so libsda knows it is the same work and
        // uses what a successful step measured when it suggests a batch after a failure.
        uint32_t batch = 2;
        auto step = [&] { sda::check(sda_run_workload(ctx.handle(), &workload, batch)); };

        sda_guard_options options = sda::guard_options();
        options.budget_bytes = budget_mib << 20;
        sda_run_report report = sda::run_report();

        // 1. The batch the host has been using works.
        options.batch_size = batch;
        sda_status status = sda::guarded_run(ctx, step, &report, &options);
        std::printf("batch %u: %s (peak %llu MiB)\n", batch, sda::status_str(status),
                    static_cast<unsigned long long>(report.peak_bytes >> 20));

        // 2. Someone asks for far more than fits: an out-of-memory report, not a crash.
        if (selection.kind == SDA_DEVICE_KIND_CPU) limit_memory((budget_mib + 256) << 20);
        batch = 1000;
        options.batch_size = batch;
        status = sda::guarded_run(ctx, step, &report, &options);
        std::printf("batch %u: %s\nguidance: %s\n", batch, sda::status_str(status), report.guidance);
        if (status != SDA_ERR_OUT_OF_MEMORY || report.suggested_batch == 0) return 1;

        // 3. Go on at the suggested batch.
        batch = report.suggested_batch;
        options.batch_size = batch;
        status = sda::guarded_run(ctx, step, &report, &options);
        std::printf("batch %u (suggested): %s (peak %llu MiB of a %llu MiB budget)\n", batch,
                    sda::status_str(status), static_cast<unsigned long long>(report.peak_bytes >> 20),
                    budget_mib);
        return status == SDA_OK ? 0 : 1;
    } catch (const sda::error &e) {
        std::fprintf(stderr, "libsda: %s: %s\n", sda::status_str(e.code()), e.what());
        return 1;
    }
}
