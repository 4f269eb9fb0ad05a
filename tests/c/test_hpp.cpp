// The C++17 wrapper sda.hpp: RAII handles, exceptions with the library's status and message,
// classification of caught exceptions, and guarded runs whose out-of-memory exceptions come back as
// a status and a report while every other exception is rethrown to the caller.
#include <sda.hpp>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <unistd.h>

#include "check.h"

namespace {

// A real out-of-memory text of PyTorch's CPU allocator (libtorch 2.13, captured).
const char *const CPU_OOM_TEXT =
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)";

// Runs `f` and returns the code of the sda::error it throws (SDA_OK when it throws none).
template <class F>
sda_status code_thrown(F &&f) {
    try {
        f();
    } catch (const sda::error &e) {
        return e.code();
    }
    return SDA_OK;
}

void test_errors() {
    const sda::error e(SDA_ERR_UNKNOWN_KEY, "unknown key x");
    CHECK(e.code() == SDA_ERR_UNKNOWN_KEY);
    CHECK(std::string(e.message()) == "unknown key x");
    CHECK(std::string(e.what()) == "SDA_ERR_UNKNOWN_KEY: unknown key x");
    const sda::error copy = e;  // copies without losing the message offset
    CHECK(std::string(copy.message()) == "unknown key x");
    CHECK(code_thrown([] { sda::check(SDA_OK); }) == SDA_OK);
    CHECK(code_thrown([] { sda::check(SDA_ERR_IO); }) == SDA_ERR_IO);
    CHECK(std::string(sda::status_str(SDA_ERR_OUT_OF_MEMORY)) == "SDA_ERR_OUT_OF_MEMORY");
    CHECK(sda::version() == SDA_VERSION_STRING);
}

void test_config_raii() {
    sda::config a;
    CHECK(static_cast<bool>(a));
    sda_config *raw = a.handle();

    sda::config b(std::move(a));  // move construction takes the handle
    CHECK(!a);                    // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(b.handle() == raw);

    sda::config c;
    sda_config *raw_c = c.handle();
    c = std::move(b);  // move assignment frees c's own handle first
    CHECK(c.handle() == raw);
    CHECK(!b);  // NOLINT(bugprone-use-after-move)
    // The assignment already freed c's handle: the library refuses a second free.
    CHECK_STATUS(sda_config_free(raw_c), SDA_ERR_INVALID_HANDLE);

    // A moved-from object throws on use instead of touching freed memory.
    const sda_status code = code_thrown([&] { (void)a.get("hardware.device"); });
    CHECK(code == SDA_ERR_INVALID_HANDLE || code == SDA_ERR_NULL_POINTER);

    {
        sda::config scoped;
        raw = scoped.handle();
    }
    // The destructor freed it: freeing again is refused by the library, not a double free.
    CHECK_STATUS(sda_config_free(raw), SDA_ERR_INVALID_HANDLE);

    // release() hands ownership back to C.
    sda::config released;
    sda_config *handle = released.release();
    CHECK(!released);
    CHECK_STATUS(sda_config_free(handle), SDA_OK);

    // Adopting a C handle.
    sda_config *from_c = nullptr;
    CHECK_STATUS(sda_config_new(&from_c), SDA_OK);
    {
        sda::config adopted(from_c);
        CHECK(adopted.handle() == from_c);
    }
    CHECK_STATUS(sda_config_free(from_c), SDA_ERR_INVALID_HANDLE);
}

void test_config_values() {
    sda::config cfg;
    cfg.set("hardware.device", "cpu");
    CHECK(cfg.get("hardware.device") == "cpu");
    cfg.set("hardware.memory_strategy", "conservative");
    CHECK(cfg.get("hardware.memory_strategy") == "conservative");

    // A value longer than the first buffer the wrapper tries: the `needed` loop.
    const std::string long_path = "models/" + std::string(700, 'm');
    cfg.set("paths.models", long_path);
    CHECK(cfg.get("paths.models") == long_path);

    // Unknown keys and bad values are exceptions with the status and the library's message.
    try {
        (void)cfg.get("hardware.no_such_key");
        CHECK(false);
    } catch (const sda::error &e) {
        CHECK(e.code() == SDA_ERR_UNKNOWN_KEY);
        CHECK(std::string(e.message()).find("hardware.no_such_key") != std::string::npos);
        CHECK(std::string(e.what()).find("SDA_ERR_UNKNOWN_KEY") == 0);
    }
    CHECK(code_thrown([&] { cfg.set("hardware.no_such_key", "1"); }) == SDA_ERR_UNKNOWN_KEY);
    CHECK(code_thrown([&] { cfg.set("hardware.memory_fraction", "7"); }) ==
          SDA_ERR_INVALID_VALUE);
    CHECK(cfg.get("hardware.device") == "cpu");  // unchanged by the failed sets

    // to_string / load_str round trip, and save / load through a file.
    const std::string text = cfg.to_string();
    CHECK(text.size() > 256);
    sda::config parsed = sda::config::load_str(text);
    CHECK(parsed.get("paths.models") == long_path);
    CHECK(code_thrown([] { (void)sda::config::load_str("[hardware\nbroken"); }) == SDA_ERR_PARSE);

    char dir[] = "/tmp/sda_hpp_XXXXXX";
    CHECK(mkdtemp(dir) != nullptr);
    const std::string path = std::string(dir) + "/sda.toml";
    cfg.save(path);
    sda::config loaded = sda::config::load(path);
    CHECK(loaded.get("hardware.memory_strategy") == "conservative");
    CHECK(code_thrown([&] { (void)sda::config::load(path + ".missing"); }) == SDA_ERR_IO);
    std::remove(path.c_str());
    rmdir(dir);
}

void test_context() {
    sda::config cfg;
    cfg.set("hardware.device", "cpu");
    sda::context ctx(cfg);
    CHECK(static_cast<bool>(ctx));

    const sda_selection sel = ctx.select("cpu");
    CHECK(sel.kind == SDA_DEVICE_KIND_CPU);
    CHECK(std::string(sel.device) == "cpu");
    CHECK(!sel.fell_back);
    CHECK(ctx.select().kind == SDA_DEVICE_KIND_CPU);  // the configuration's hardware.device

    const sda_device_details info = ctx.device_info();
    CHECK(info.kind == SDA_DEVICE_KIND_CPU);
    CHECK(info.memory_total > 0);
    const sda_memory_figures mem = ctx.memory_info();
    CHECK(mem.total > 0);
    CHECK(mem.budget > 0);
    CHECK(!ctx.list_devices().empty());
    CHECK(ctx.list_devices()[0].kind == SDA_DEVICE_KIND_CPU);
    ctx.clear_cache();
    ctx.reset_peak();

    CHECK(code_thrown([&] { (void)ctx.select("tpu"); }) == SDA_ERR_INVALID_ARGUMENT);

    // Default context, move, and destruction.
    sda::context other;
    sda_context *raw = other.handle();
    sda::context moved(std::move(other));
    CHECK(!other);  // NOLINT(bugprone-use-after-move)
    CHECK(moved.handle() == raw);
    moved = std::move(ctx);
    CHECK_STATUS(sda_context_free(raw), SDA_ERR_INVALID_HANDLE);
    CHECK(moved.select("cpu").kind == SDA_DEVICE_KIND_CPU);
}

void test_classify() {
    CHECK(sda::classify(std::runtime_error(
              "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.11 "
              "GiB of which 1.06 GiB is free.")) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(std::runtime_error(CPU_OOM_TEXT)) == SDA_ERR_OUT_OF_MEMORY);
    const std::runtime_error shapes("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)");
    CHECK(sda::classify(shapes) == SDA_ERR_TORCH);
    const std::runtime_error illegal("CUDA error: an illegal memory access was encountered");
    CHECK(sda::classify(illegal) == SDA_ERR_TORCH);
    CHECK(sda::classify(std::bad_alloc()) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(std::bad_array_new_length()) == SDA_ERR_TORCH);
    CHECK(sda::classify(sda::error(SDA_ERR_OUT_OF_MEMORY, "x")) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(sda::error(SDA_ERR_INVALID_VALUE, "x")) == SDA_ERR_INVALID_VALUE);
    CHECK(sda::classify(std::logic_error("")) == SDA_ERR_TORCH);
}

// A host exception type that is not a std::exception.
struct host_failure {
    int code;
};

void test_guarded_run(const sda::context &ctx) {
    // Returns normally: SDA_OK, the work ran once, the report says so.
    {
        int calls = 0;
        sda_run_report report = sda::run_report();
        CHECK_STATUS(sda::guarded_run(ctx, [&] { ++calls; }, &report), SDA_OK);
        CHECK(calls == 1);
        CHECK(report.status == SDA_OK);
        CHECK(report.attempts == 1);
        CHECK(report.oom_attempts == 0);
    }
    // Without a report and with a status-returning callable.
    CHECK_STATUS(sda::guarded_run(ctx, [] { return SDA_OK; }), SDA_OK);
    CHECK_STATUS(sda::guarded_run(ctx, [] { return SDA_ERR_CANCELLED; }), SDA_ERR_CANCELLED);

    // A real CPU out-of-memory text: returned as SDA_ERR_OUT_OF_MEMORY with the report filled.
    {
        sda_run_report report = sda::run_report();
        const sda_guard_options options = sda::guard_options(64);
        const sda_status status = sda::guarded_run(
            ctx, [] { throw std::runtime_error(CPU_OOM_TEXT); }, &report, &options);
        CHECK_STATUS(status, SDA_ERR_OUT_OF_MEMORY);
        CHECK(report.status == SDA_ERR_OUT_OF_MEMORY);
        CHECK(report.oom_attempts == 1);
        CHECK(report.attempted_batch == 64);
        CHECK(report.guidance[0] != '\0');
        CHECK(std::string(sda_last_error_message()).size() > 0);
    }
    // std::bad_alloc: out-of-memory too; a zero-initialised report is accepted.
    {
        sda_run_report report{};
        CHECK_STATUS(sda::guarded_run(ctx, [] { throw std::bad_alloc(); }, &report),
                     SDA_ERR_OUT_OF_MEMORY);
        CHECK(report.struct_size == sizeof(sda_run_report));
        CHECK(report.status == SDA_ERR_OUT_OF_MEMORY);
    }
    // A non-OOM exception is rethrown to the caller, unchanged.
    {
        bool rethrown = false;
        try {
            (void)sda::guarded_run(ctx,
                                   [] { throw std::logic_error("index 10 is out of bounds"); });
        } catch (const std::logic_error &e) {
            rethrown = std::string(e.what()) == "index 10 is out of bounds";
        }
        CHECK(rethrown);
    }
    // So is an exception that is no std::exception.
    {
        int code = 0;
        try {
            (void)sda::guarded_run(ctx, [] { throw host_failure{42}; });
        } catch (const host_failure &f) {
            code = f.code;
        }
        CHECK(code == 42);
    }
    // An sda::error thrown by a nested call keeps its code: OOM is returned, others rethrown.
    CHECK_STATUS(sda::guarded_run(ctx, [] { throw sda::error(SDA_ERR_OUT_OF_MEMORY, "nested"); }),
                 SDA_ERR_OUT_OF_MEMORY);
    CHECK(code_thrown([&] {
              (void)sda::guarded_run(
                  ctx, [] { throw sda::error(SDA_ERR_INVALID_VALUE, "nested"); });
          }) == SDA_ERR_INVALID_VALUE);

    // An lvalue callable with state.
    struct counter {
        int n = 0;
        sda_status operator()() { return ++n == 1 ? SDA_OK : SDA_ERR_TORCH; }
    } work;
    CHECK_STATUS(sda::guarded_run(ctx, work), SDA_OK);
    CHECK(work.n == 1);

    // A context without a handle: the library's refusal is returned, the work never runs.
    sda::context empty(static_cast<sda_context *>(nullptr));
    bool ran = false;
    const sda_status refused = sda::guarded_run(empty, [&] { ran = true; });
    CHECK(refused == SDA_ERR_NULL_POINTER || refused == SDA_ERR_INVALID_HANDLE);
    CHECK(!ran);
}

void test_guarded_run_batched(const sda::context &ctx) {
    // Out of memory above batch 8 (a real text, as a host's libtorch would throw it, asking for
    // 256 MiB at batch 32: 8 MiB per sample): libsda reads the size from the text and, against a
    // 64 MiB budget, retries at a batch computed from it until one fits.
    {
        sda_run_report report = sda::run_report();
        sda_guard_options options = sda::guard_options(32);
        options.budget_bytes = 64u << 20;
        uint32_t last_batch = 0;
        const sda_status status = sda::guarded_run_batched(
            ctx,
            [&](uint32_t batch, uint32_t accumulation) {
                CHECK(accumulation >= 1);
                last_batch = batch;
                if (batch > 8) {
                    throw std::runtime_error(
                        "DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                        "268435456 bytes. Error code 12 (Cannot allocate memory)");
                }
            },
            &report, &options);
        CHECK_STATUS(status, SDA_OK);
        CHECK(report.status == SDA_OK);
        CHECK(report.final_batch >= 1 && report.final_batch <= 8);
        CHECK(report.final_batch == last_batch);
        CHECK(report.oom_attempts >= 1);
        CHECK(report.attempts == report.oom_attempts + 1);
        CHECK(report.failed_allocation_bytes == 268435456u);  // the host's text reached libsda
        CHECK(report.final_batch == 7);  // (64 MiB - 5 % margin) / 8 MiB per sample
    }
    // std::bad_alloc on every batch: out of memory in the end, returned with the report.
    {
        sda_run_report report = sda::run_report();
        sda_guard_options options = sda::guard_options(16);
        options.max_attempts = 3;
        const sda_status status = sda::guarded_run_batched(
            ctx, [](uint32_t, uint32_t) { throw std::bad_alloc(); }, &report, &options);
        CHECK_STATUS(status, SDA_ERR_OUT_OF_MEMORY);
        CHECK(report.attempts >= 1 && report.attempts <= 3);
        CHECK(report.final_batch == 0);
        CHECK(report.guidance[0] != '\0');
    }
    // A non-OOM exception ends the run and is rethrown.
    {
        const sda_guard_options options = sda::guard_options(4);
        int attempts = 0;
        bool rethrown = false;
        try {
            (void)sda::guarded_run_batched(
                ctx,
                [&](uint32_t, uint32_t) -> sda_status {
                    ++attempts;
                    throw std::logic_error("mat1 and mat2 shapes cannot be multiplied");
                },
                nullptr, &options);
        } catch (const std::logic_error &) {
            rethrown = true;
        }
        CHECK(rethrown);
        CHECK(attempts == 1);
    }
}

}  // namespace

int main() {
    // The tests must not depend on the machine's configuration.
    unsetenv("SDA_CONFIG");
    unsetenv("SDA_DEVICE");
    try {
        test_errors();
        test_config_raii();
        test_config_values();
        test_context();
        // Configuration and CPU work through the wrapper load no libtorch (as through the C API).
        CHECK(mapped("libtorch_cpu") == 0);
        test_classify();
        sda::config cfg;
        cfg.set("hardware.device", "cpu");
        const sda::context ctx(cfg);
        (void)ctx.select("cpu");
        test_guarded_run(ctx);
        test_guarded_run_batched(ctx);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    return check_report("test_hpp");
}
