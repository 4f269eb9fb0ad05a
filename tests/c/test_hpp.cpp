// The C++17 wrapper sda.hpp: RAII handles, exceptions with the library's status and message,
// classification of caught exceptions and texts, guarded runs whose out-of-memory exceptions come
// back as a status and a report while every other exception is rethrown to the caller, the probe
// with lambda workloads and progress (and the built-in workload), plans, recommendations, reports,
// validation, the backend, the built-in workload, and the RAII log callback.
#include <sda.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "check.h"

namespace {

// A real out-of-memory text of PyTorch's CPU allocator (libtorch 2.13, captured).
const char *const CPU_OOM_TEXT =
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)";

// A host exception type that is not a std::exception.
struct host_failure {
    int code;
};

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

    // Texts: a std::string, a C string, NULL; a classification leaves the last message alone.
    sda::set_error_message("before classifying");
    CHECK(sda::classify(std::string(CPU_OOM_TEXT)) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(CPU_OOM_TEXT) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify("CUDA out of memory. Tried to allocate 20.00 MiB") == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(std::string("std::bad_alloc")) == SDA_ERR_OUT_OF_MEMORY);
    CHECK(sda::classify(std::string("mat1 and mat2 shapes cannot be multiplied")) == SDA_ERR_TORCH);
    CHECK(sda::classify(std::string()) == SDA_ERR_TORCH);
    CHECK(sda::classify(static_cast<const char *>(nullptr)) == SDA_ERR_TORCH);
    CHECK(sda::last_error_message() == "before classifying");
}

void test_strings() {
    CHECK(std::string(sda::device_kind_str(SDA_DEVICE_KIND_CPU)) == "cpu");
    CHECK(std::string(sda::device_kind_str(SDA_DEVICE_KIND_CUDA)) == "cuda");
    CHECK(std::string(sda::device_kind_str(SDA_DEVICE_KIND_MPS)) == "mps");
    CHECK(std::string(sda::device_kind_str(static_cast<sda_device_kind>(42))) == "unknown");
    CHECK(std::string(sda::severity_str(SDA_SEVERITY_INFO)) == "info");
    CHECK(std::string(sda::severity_str(SDA_SEVERITY_WARNING)) == "warning");
    CHECK(std::string(sda::severity_str(SDA_SEVERITY_ERROR)) == "error");
    CHECK(std::string(sda::severity_str(static_cast<sda_severity>(-1))) == "unknown");
    CHECK(std::string(sda::status_str(static_cast<sda_status>(999))) == "SDA_UNKNOWN_STATUS");

    // set_error_message / last_error_message, and that the copy outlives the next libsda call.
    sda::set_error_message("host text: tried to allocate 12 bytes");
    const std::string copy = sda::last_error_message();
    CHECK(copy == "host text: tried to allocate 12 bytes");
    CHECK(sda::version() == SDA_VERSION_STRING);  // a libsda call in between
    CHECK(copy == "host text: tried to allocate 12 bytes");
    // A failing call replaces it, and sda::error carries the same text.
    try {
        sda::config cfg;
        cfg.set("hardware.no_such_key", "1");
        CHECK(false);
    } catch (const sda::error &e) {
        CHECK(sda::last_error_message() == e.message());
        CHECK(sda::last_error_message().find("hardware.no_such_key") != std::string::npos);
    }
    // The built-in workload's shape.
    const sda_workload shape = sda::workload();
    CHECK(shape.struct_size == sizeof(sda_workload));
    CHECK(shape.channels == 1 && shape.sample_length == 48000 && shape.out_channels == 16);
    CHECK(shape.kernel_size == 1024 && shape.padding == 512 && !shape.with_backward);
}

void test_backend_info_before_load() {
    // Nothing in this process loaded the backend yet: not an error, just empty.
    const sda_backend_details details = sda::backend_info();
    CHECK(!details.loaded);
    CHECK(details.module_path[0] == '\0' && details.libtorch_version[0] == '\0');
}

void test_plan_workers(const sda::context &ctx) {
    // A pool of three CPU workers: worker 2's plan and its environment.
    const sda::worker_plan plan = ctx.plan_workers("cpu", 3, 2);
    CHECK(plan.plan.struct_size == sizeof(sda_worker_plan));
    CHECK(plan.plan.strategy == SDA_PLAN_STRATEGY_CPU && plan.plan.kind == SDA_DEVICE_KIND_CPU);
    CHECK(plan.plan.workers == 3 && plan.plan.worker_id == 2 && plan.plan.world_size == 3);
    CHECK(plan.plan.rank == -1 && plan.plan.local_rank == -1 && plan.plan.master_port == 0);
    CHECK(std::string(plan.plan.device) == "cpu" && plan.plan.reason[0] != '\0');
    CHECK(plan.plan.env_count == 1);
    CHECK(plan.env.rfind("OMP_NUM_THREADS=", 0) == 0);
    CHECK(!plan.env.empty() && plan.env.back() == '\n');
    CHECK(plan.env.find('\0') == std::string::npos);
    const auto vars = plan.env_vars();
    CHECK(vars.size() == 1);
    CHECK(!vars.empty() && vars[0].first == "OMP_NUM_THREADS" && !vars[0].second.empty() &&
          std::atoi(vars[0].second.c_str()) >= 1);

    // The environment agrees with the C call's.
    sda_worker_plan c_plan = sda::make<sda_worker_plan>();
    char env[512];
    CHECK_STATUS(sda_plan_workers(ctx.handle(), "cpu", 3, 2, &c_plan, env, sizeof env, nullptr),
                 SDA_OK);
    CHECK(plan.env == env);

    // Defaults: auto, the strategy's worker count, worker 0.
    const sda::worker_plan automatic = ctx.plan_workers();
    CHECK(automatic.plan.workers >= 1 && automatic.plan.worker_id == 0);
    CHECK(automatic.env_vars().size() == automatic.plan.env_count);
    if (automatic.plan.gpu_count == 0) {
        CHECK(automatic.plan.strategy == SDA_PLAN_STRATEGY_CPU);
        CHECK(code_thrown([&] { (void)ctx.plan_workers("multi_gpu"); }) ==
              SDA_ERR_INVALID_ARGUMENT);
    }

    // Errors are exceptions with the library's message.
    try {
        (void)ctx.plan_workers("tpu");
        CHECK(false);
    } catch (const sda::error &e) {
        CHECK(e.code() == SDA_ERR_INVALID_ARGUMENT);
        CHECK(std::string(e.message()).find("\"tpu\"") != std::string::npos);
    }
    CHECK(code_thrown([&] { (void)ctx.plan_workers("cpu", 3, 3); }) == SDA_ERR_INVALID_ARGUMENT);
    CHECK(code_thrown([&] { (void)ctx.plan_workers("cpu", 100000, 0); }) ==
          SDA_ERR_INVALID_ARGUMENT);

    // env_vars() of a hand-made plan: several lines, '=' inside a value, a line without '='.
    sda::worker_plan made{sda::make<sda_worker_plan>(), "RANK=0\nMASTER_ADDR=a=b\nODD\n"};
    const auto made_vars = made.env_vars();
    CHECK(made_vars.size() == 3);
    CHECK(made_vars.size() == 3 && made_vars[0].first == "RANK" && made_vars[0].second == "0" &&
          made_vars[1].first == "MASTER_ADDR" && made_vars[1].second == "a=b" &&
          made_vars[2].first == "ODD" && made_vars[2].second.empty());
    made.env.clear();
    CHECK(made.env_vars().empty());
}

void test_recommend(const sda::context &ctx) {
    const sda_recommendation r = ctx.recommend();
    CHECK(r.struct_size == sizeof(sda_recommendation));
    CHECK(r.kind == SDA_DEVICE_KIND_CPU && std::string(r.device) == "cpu");
    CHECK(r.batch_size >= 1 && r.blocks >= 1 && r.channels >= 1);
    CHECK(!r.advice_given && r.tier_label[0] != '\0' && r.batch_reason[0] != '\0');

    // A large model gets the careful budget, with the reason.
    const sda_recommendation large = ctx.recommend(250000000ull);
    CHECK(large.advice_given && std::string(large.memory_strategy) == "conservative");
    CHECK(std::string(large.memory_reason).find("large model") != std::string::npos);

    sda::context empty(static_cast<sda_context *>(nullptr));
    const sda_status code = code_thrown([&] { (void)empty.recommend(); });
    CHECK(code == SDA_ERR_NULL_POINTER || code == SDA_ERR_INVALID_HANDLE);
}

void test_report(const sda::context &ctx) {
    // A verbose report is longer than the wrapper's first buffer: the `needed` protocol, then the
    // same report the size query measured.
    const std::string essential = ctx.report();
    CHECK(essential.rfind("Device:  cpu (", 0) == 0);
    CHECK(essential.find("Memory:  ") != std::string::npos);
    CHECK(essential.find("Budget:") == std::string::npos);
    CHECK(essential.find('\0') == std::string::npos);

    const std::string verbose = ctx.report(SDA_VERBOSITY_VERBOSE);
    CHECK(verbose.size() > 256 && verbose.size() > essential.size());
    CHECK(verbose.find("Budget:") != std::string::npos);
    CHECK(verbose.find("libsda:  ") != std::string::npos);
    CHECK(verbose.find('\0') == std::string::npos);

    const std::string json = ctx.report_json(SDA_VERBOSITY_VERBOSE);
    CHECK(!json.empty() && json.front() == '{' && json.find('\0') == std::string::npos);
    CHECK(json.find("\"schema_version\": 2") != std::string::npos);
    CHECK(json.find("\"verbosity\": \"verbose\"") != std::string::npos);
    CHECK(json.find("\"loaded\": false") != std::string::npos);  // a report loads no libtorch
    const std::string json_essential = ctx.report_json();
    CHECK(json_essential.find("\"verbosity\": \"essential\"") != std::string::npos);

    try {
        (void)ctx.report(static_cast<sda_verbosity>(7));
        CHECK(false);
    } catch (const sda::error &e) {
        CHECK(e.code() == SDA_ERR_INVALID_ARGUMENT);
        CHECK(std::string(e.message()).find("verbosity 7") != std::string::npos);
    }
    CHECK(code_thrown([&] { (void)ctx.report_json(static_cast<sda_verbosity>(-1)); }) ==
          SDA_ERR_INVALID_ARGUMENT);
}

void test_validate(const sda::context &ctx) {
    const std::vector<sda_problem> problems = ctx.validate_environment();
    // The count agrees with the C size query.
    std::size_t count = 0;
    const sda_status query = sda_validate_environment(ctx.handle(), false, nullptr, 0, &count);
    CHECK(query == SDA_OK || query == SDA_ERR_BUFFER_TOO_SMALL);
    CHECK(problems.size() == count);
    for (std::size_t i = 0; i < problems.size(); i++) {
        const sda_problem &p = problems[i];
        CHECK(p.code[0] != '\0' && p.message[0] != '\0' && p.fix[0] != '\0');
        CHECK(p.severity >= SDA_SEVERITY_INFO && p.severity <= SDA_SEVERITY_ERROR);
        CHECK(std::string(sda::severity_str(p.severity)) != "unknown");
        if (i > 0) CHECK(problems[i - 1].severity >= p.severity);  // worst first
        if (std::strcmp(p.code, "cuda.no_driver") == 0) CHECK(p.severity == SDA_SEVERITY_INFO);
    }
    // A configuration with data directories that are files: errors, reported, not thrown.
    char dir[] = "/tmp/sda_hpp_val_XXXXXX";
    CHECK(mkdtemp(dir) != nullptr);
    const std::string file = std::string(dir) + "/not_a_dir";
    std::FILE *f = std::fopen(file.c_str(), "w");
    CHECK(f != nullptr);
    if (f != nullptr) std::fclose(f);
    sda::config cfg;
    cfg.set("hardware.device", "cpu");
    cfg.set("paths.models", file);
    const sda::context broken(cfg);
    const std::vector<sda_problem> found = broken.validate_environment();
    bool not_a_dir = false;
    for (const sda_problem &p : found) {
        if (p.severity == SDA_SEVERITY_ERROR && std::string(p.message).find(file) != std::string::npos)
            not_a_dir = true;
    }
    CHECK(not_a_dir);
    std::remove(file.c_str());
    rmdir(dir);

    sda::context empty(static_cast<sda_context *>(nullptr));
    const sda_status code = code_thrown([&] { (void)empty.validate_environment(); });
    CHECK(code == SDA_ERR_NULL_POINTER || code == SDA_ERR_INVALID_HANDLE);
}

// What the log callbacks below collect.
struct log_sink {
    std::mutex lock;
    std::vector<std::pair<sda_log_level, std::string>> messages;
    std::atomic<int> calls{0};

    std::size_t size() {
        std::lock_guard<std::mutex> guard(lock);
        return messages.size();
    }
};

void test_log_callback(const sda::context &ctx) {
    log_sink sink;
    {
        sda::log_callback logs([&](sda_log_level level, std::string_view message) {
            std::lock_guard<std::mutex> guard(sink.lock);
            sink.messages.emplace_back(level, std::string(message));
        });
        // On Linux there is no MPS: the selection falls back to the CPU and logs a warning.
        const sda_selection sel = ctx.select("mps");
        CHECK(sel.fell_back && sel.kind == SDA_DEVICE_KIND_CPU);
        CHECK(sink.size() >= 1);
        bool warned = false;
        {
            std::lock_guard<std::mutex> guard(sink.lock);
            for (const auto &m : sink.messages) {
                if (m.first == SDA_LOG_LEVEL_WARN && !m.second.empty() &&
                    m.second.find('\0') == std::string::npos)
                    warned = true;
            }
        }
        CHECK(warned);
    }
    // Destroyed: the callback is removed, and no message reaches the sink any more.
    const std::size_t before = sink.size();
    (void)ctx.select("mps");
    CHECK(sink.size() == before);

    // A callback that throws: caught inside the trampoline, libsda carries on.
    {
        std::atomic<int> thrown{0};
        sda::log_callback throwing([&](sda_log_level, std::string_view) {
            ++thrown;
            throw std::runtime_error("the host's logger failed");
        });
        CHECK(ctx.select("mps").fell_back);
        CHECK(thrown.load() >= 1);
        int host_type = 0;
        sda::log_callback non_std([&](sda_log_level, std::string_view) {
            ++host_type;
            throw host_failure{7};
        });
        CHECK(ctx.select("mps").fell_back);
        CHECK(host_type >= 1);
    }

    // An empty function is refused, and nothing is installed.
    CHECK(code_thrown([] { sda::log_callback none{sda::log_callback::function_type()}; }) ==
          SDA_ERR_NULL_POINTER);

    // Deferred lifetime through std::optional, and a replacement: the newer one gets the messages.
    {
        std::atomic<int> first{0};
        std::atomic<int> second{0};
        std::optional<sda::log_callback> a;
        a.emplace([&](sda_log_level, std::string_view) { ++first; });
        (void)ctx.select("mps");
        CHECK(first.load() >= 1);
        auto b = std::make_unique<sda::log_callback>(
            [&](sda_log_level, std::string_view) { ++second; });
        const int first_before = first.load();
        (void)ctx.select("mps");
        CHECK(second.load() >= 1);
        CHECK(first.load() == first_before);  // replaced: never called again
        b.reset();
        a.reset();  // removes nothing that is still installed; frees the first function
        const int second_before = second.load();
        (void)ctx.select("mps");
        CHECK(second.load() == second_before);
    }

    // Threads log while the main thread installs and destroys registrations: when a destructor
    // returns its function is not running and never runs again (ASan sees a use after free
    // otherwise; the flag catches it without ASan).
    {
        std::atomic<bool> stop{false};
        std::atomic<long> calls_on_dead{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < 3; i++) {
            threads.emplace_back([&] {
                while (!stop.load()) (void)ctx.select("mps");
            });
        }
        for (int round = 0; round < 100; round++) {
            std::atomic<bool> alive{true};
            {
                sda::log_callback logs([&](sda_log_level, std::string_view) {
                    if (!alive.load()) ++calls_on_dead;
                    std::this_thread::yield();
                    if (!alive.load()) ++calls_on_dead;
                });
                std::this_thread::yield();
            }
            alive.store(false);  // the removed callback must never see this
        }
        stop.store(true);
        for (auto &t : threads) t.join();
        CHECK(calls_on_dead.load() == 0);
    }
    (void)ctx.select("cpu");
}

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

constexpr std::size_t MIB = 1024u * 1024u;

// The host's work: touches 1 MiB per sample (the probe measures the resident set on the CPU).
// The checksum goes to a volatile so that no compiler drops the memory.
volatile unsigned touched_sink = 0;
void touch_mib_per_sample(uint32_t batch) {
    std::vector<char> buf(static_cast<std::size_t>(batch) * MIB, 1);
    unsigned sum = 0;
    for (std::size_t i = 0; i < buf.size(); i += 4096) sum += static_cast<unsigned char>(buf[i]);
    touched_sink = sum;
}

void test_probe_lambda(const sda::context &ctx) {
    // 1 MiB per sample against a 64 MiB budget (as test_probe.c does through the C ABI).
    {
        int runs = 0;
        const sda_probe_result r = sda::probe_batch(
            ctx, [&](uint32_t batch) { touch_mib_per_sample(batch); ++runs; },
            sda::probe_options(64 * MIB));
        std::printf("lambda, 1 MiB/sample, 64 MiB budget: max %u, recommended %u, %u runs\n",
                    r.max_batch, r.recommended_batch, r.runs);
        CHECK(r.struct_size == sizeof(sda_probe_result));
        CHECK(r.max_batch >= 40 && r.max_batch <= 64);
        CHECK(r.recommended_batch >= 1 && r.recommended_batch <= r.max_batch);
        CHECK(r.oom_runs == 0 && r.runs >= 2 && static_cast<int>(r.runs) == runs);
        CHECK(r.stop == SDA_PROBE_STOP_BUDGET && !r.capped);
        CHECK(r.budget_bytes == 64 * MIB);
        CHECK(r.measured_peak_bytes <= r.budget_bytes);
    }
    // std::bad_alloc above batch 20: out-of-memory runs, the answer is a batch that ran. An lvalue
    // callable returning a status.
    {
        auto work = [](uint32_t batch) -> sda_status {
            if (batch > 20) throw std::bad_alloc();
            touch_mib_per_sample(batch);
            return SDA_OK;
        };
        const sda_probe_result r = sda::probe_batch(ctx, work, sda::probe_options(64 * MIB));
        CHECK(r.max_batch >= 1 && r.max_batch <= 20);
        CHECK(r.oom_runs >= 1);
    }
    // An out-of-memory text (PyTorch's CPU allocator) above batch 20: classified as out-of-memory.
    {
        const sda_probe_result r = sda::probe_batch(
            ctx,
            [](uint32_t batch) {
                if (batch > 20) throw std::runtime_error(CPU_OOM_TEXT);
                touch_mib_per_sample(batch);
            },
            sda::probe_options(64 * MIB));
        CHECK(r.max_batch >= 1 && r.max_batch <= 20);
        CHECK(r.oom_runs >= 1);
    }
    // Not even batch 1 fits: a result, not an exception.
    {
        const sda_probe_result r =
            sda::probe_batch(ctx, [](uint32_t) { throw std::bad_alloc(); },
                             sda::probe_options(64 * MIB));
        CHECK(r.max_batch == 0 && r.stop == SDA_PROBE_STOP_OUT_OF_MEMORY);
        CHECK(r.oom_runs >= 1);
    }
    // max_batch reached: capped.
    {
        sda_probe_options options = sda::probe_options(64 * MIB);
        options.max_batch = 8;
        const sda_probe_result r = sda::probe_batch(ctx, &touch_mib_per_sample, options);
        CHECK(r.max_batch == 8 && r.capped && r.stop == SDA_PROBE_STOP_MAX_BATCH);
    }
    // A non-OOM exception ends the probe and is rethrown unchanged; so is a host type.
    {
        int calls = 0;
        bool rethrown = false;
        try {
            (void)sda::probe_batch(
                ctx,
                [&](uint32_t) {
                    ++calls;
                    throw std::logic_error("index 10 is out of bounds");
                },
                sda::probe_options(64 * MIB));
        } catch (const std::logic_error &e) {
            rethrown = std::string(e.what()) == "index 10 is out of bounds";
        }
        CHECK(rethrown);
        CHECK(calls == 1);
        int code = 0;
        try {
            (void)sda::probe_batch(ctx, [](uint32_t) { throw host_failure{9}; },
                                   sda::probe_options(64 * MIB));
        } catch (const host_failure &f) {
            code = f.code;
        }
        CHECK(code == 9);
        // std::bad_array_new_length is an invalid size, not an out-of-memory: rethrown.
        bool bad_length = false;
        try {
            (void)sda::probe_batch(ctx, [](uint32_t) { throw std::bad_array_new_length(); },
                                   sda::probe_options(64 * MIB));
        } catch (const std::bad_array_new_length &) {
            bad_length = true;
        }
        CHECK(bad_length);
    }
    // A status other than SDA_OK / OOM returned by the work: sda::error with that status.
    CHECK(code_thrown([&] {
              (void)sda::probe_batch(ctx, [](uint32_t) { return SDA_ERR_IO; },
                                     sda::probe_options(64 * MIB));
          }) == SDA_ERR_IO);
    // An sda::error thrown by a nested call keeps its code.
    CHECK(code_thrown([&] {
              (void)sda::probe_batch(
                  ctx, [](uint32_t) { throw sda::error(SDA_ERR_INVALID_VALUE, "nested"); },
                  sda::probe_options(64 * MIB));
          }) == SDA_ERR_INVALID_VALUE);
    // Bad options: the library's refusal, the work never runs.
    {
        bool ran = false;
        sda_probe_options options = sda::probe_options(64 * MIB);
        options.min_batch = 10;
        options.max_batch = 5;
        CHECK(code_thrown([&] {
                  (void)sda::probe_batch(ctx, [&](uint32_t) { ran = true; }, options);
              }) == SDA_ERR_INVALID_ARGUMENT);
        CHECK(!ran);
        options = sda::probe_options();
        options.struct_size = 3;
        CHECK(code_thrown([&] { (void)sda::probe_batch(ctx, [&](uint32_t) { ran = true; }, options); }) ==
              SDA_ERR_INVALID_ARGUMENT);
        CHECK(!ran);
        sda::context empty(static_cast<sda_context *>(nullptr));
        const sda_status code = code_thrown(
            [&] { (void)sda::probe_batch(empty, [&](uint32_t) { ran = true; }); });
        CHECK(code == SDA_ERR_NULL_POINTER || code == SDA_ERR_INVALID_HANDLE);
        CHECK(!ran);
    }
    // The recommended batch stored in a configuration (save_to).
    {
        sda::config cfg;
        sda_probe_options options = sda::probe_options(64 * MIB);
        options.save_to = cfg.handle();
        const sda_probe_result r = sda::probe_batch(ctx, &touch_mib_per_sample, options);
        CHECK(cfg.get("hardware.max_batch_size") == std::to_string(r.recommended_batch));
    }
}

void test_probe_progress(const sda::context &ctx) {
    // Cancelled from the progress lambda after the first run: sda::error SDA_ERR_CANCELLED.
    {
        int progress_calls = 0;
        int work_calls = 0;
        try {
            (void)sda::probe_batch(
                ctx, [&](uint32_t batch) { touch_mib_per_sample(batch); ++work_calls; },
                [&](const sda_probe_progress &p) {
                    ++progress_calls;
                    return p.runs < 1;  // false after the first run
                },
                sda::probe_options(64 * MIB));
            CHECK(false);
        } catch (const sda::error &e) {
            CHECK(e.code() == SDA_ERR_CANCELLED);
            CHECK(std::string(e.message()).find("cancelled") != std::string::npos);
        }
        CHECK(progress_calls == 1);
        CHECK(work_calls == 1);
    }
    // A progress returning void goes on: called once per run, with the run's figures.
    {
        std::vector<sda_probe_progress> seen;
        const sda_probe_result r = sda::probe_batch(
            ctx, &touch_mib_per_sample, [&](const sda_probe_progress &p) { seen.push_back(p); },
            sda::probe_options(64 * MIB));
        CHECK(seen.size() == r.runs);
        for (std::size_t i = 0; i < seen.size(); i++) {
            CHECK(seen[i].runs == i + 1);
            CHECK(seen[i].budget_bytes == 64 * MIB);
            CHECK(seen[i].batch >= 1 && seen[i].ok && !seen[i].oom);
            CHECK(seen[i].elapsed_ms >= 0.0);
        }
        CHECK(!seen.empty() && seen.back().best_batch == r.max_batch);
    }
    // A progress that throws: the probe is cancelled and the exception rethrown, unchanged.
    {
        bool rethrown = false;
        int work_calls = 0;
        try {
            (void)sda::probe_batch(
                ctx, [&](uint32_t batch) { touch_mib_per_sample(batch); ++work_calls; },
                [](const sda_probe_progress &p) -> bool {
                    if (p.runs >= 2) throw std::runtime_error("the host's UI is gone");
                    return true;
                },
                sda::probe_options(64 * MIB));
        } catch (const std::runtime_error &e) {
            rethrown = std::string(e.what()) == "the host's UI is gone";
        }
        CHECK(rethrown);
        CHECK(work_calls == 2);
        int code = 0;
        try {
            (void)sda::probe_batch(
                ctx, &touch_mib_per_sample,
                [](const sda_probe_progress &) -> bool { throw host_failure{11}; },
                sda::probe_options(64 * MIB));
        } catch (const host_failure &f) {
            code = f.code;
        }
        CHECK(code == 11);
    }
    // The workload's exception wins over the progress's (it ended the probe).
    {
        bool workload_error = false;
        try {
            (void)sda::probe_batch(
                ctx, [](uint32_t) { throw std::logic_error("workload"); },
                [](const sda_probe_progress &) -> bool { throw std::runtime_error("progress"); },
                sda::probe_options(64 * MIB));
        } catch (const std::logic_error &e) {
            workload_error = std::string(e.what()) == "workload";
        } catch (const std::exception &) {
        }
        CHECK(workload_error);
    }
    // An lvalue progress functor with state, and a progress returning something bool-like.
    {
        struct counter {
            int n = 0;
            int operator()(const sda_probe_progress &) { return ++n < 3 ? 1 : 0; }
        } progress;
        CHECK(code_thrown([&] {
                  (void)sda::probe_batch(ctx, &touch_mib_per_sample, progress,
                                         sda::probe_options(64 * MIB));
              }) == SDA_ERR_CANCELLED);
        CHECK(progress.n == 3);
    }
}

// The built-in workload (loads libtorch): a small shape, a tiny budget and few batches, so that it is
// quick on a CPU; the plain form, the tag with a progress, and a C progress in the options.
void test_probe_builtin(const sda::context &ctx) {
    sda_workload shape = sda::workload();
    shape.sample_length = 4800;
    shape.kernel_size = 64;
    shape.padding = 32;
    sda_probe_options options = sda::probe_options(64 * MIB);
    options.max_batch = 4;
    options.workload = &shape;
    {
        const sda_probe_result r = sda::probe_batch(ctx, options);
        std::printf("built-in workload, 64 MiB budget, max_batch 4: max %u, recommended %u, %u runs, "
                    "%.0f ms\n",
                    r.max_batch, r.recommended_batch, r.runs, r.elapsed_ms);
        CHECK(r.runs >= 1 && r.max_batch <= 4);
        CHECK(r.stop == SDA_PROBE_STOP_MAX_BATCH || r.stop == SDA_PROBE_STOP_BUDGET ||
              r.stop == SDA_PROBE_STOP_OUT_OF_MEMORY);
    }
    {
        int progress_calls = 0;
        const sda_probe_result r = sda::probe_batch(
            ctx, sda::builtin_workload,
            [&](const sda_probe_progress &p) {
                ++progress_calls;
                CHECK(p.batch >= 1 && p.batch <= 4);
                return true;
            },
            options);
        CHECK(progress_calls >= 1 && static_cast<uint32_t>(progress_calls) == r.runs);
        // The tag ignores a C workload left in the options.
        sda_probe_options with_c = options;
        with_c.custom_workload = [](void *, uint32_t) -> int32_t { return SDA_ERR_IO; };
        const sda_probe_result tagged = sda::probe_batch(ctx, sda::builtin_workload, with_c);
        CHECK(tagged.runs >= 1);
        // Without the tag, the options are used as they are: the C workload runs.
        CHECK(code_thrown([&] { (void)sda::probe_batch(ctx, with_c); }) == SDA_ERR_IO);
        // Cancelled on the first run.
        CHECK(code_thrown([&] {
                  (void)sda::probe_batch(ctx, sda::builtin_workload,
                                         [](const sda_probe_progress &) { return false; }, options);
              }) == SDA_ERR_CANCELLED);
    }
    // A C progress in the options, with the plain form.
    {
        int calls = 0;
        sda_probe_options with_c = options;
        with_c.progress = [](void *user_data, const sda_probe_progress *) -> bool {
            ++*static_cast<int *>(user_data);
            return true;
        };
        with_c.progress_user_data = &calls;
        const sda_probe_result r = sda::probe_batch(ctx, with_c);
        CHECK(calls >= 1 && static_cast<uint32_t>(calls) == r.runs);
    }
}

void test_workload_and_backend(const sda::context &ctx) {
    // The seeds' shape takes seconds per sample on a small CPU: the default form is checked by its
    // refusal of batch 0 (before any work), the computing runs use a small shape.
    CHECK(code_thrown([&] { ctx.run_workload(0); }) == SDA_ERR_INVALID_ARGUMENT);
    sda_workload shape = sda::workload();
    shape.sample_length = 4800;
    shape.kernel_size = 64;
    shape.padding = 32;
    ctx.run_workload(2, shape);
    shape.with_backward = true;
    ctx.run_workload(1, shape);
    sda_workload wrong = sda::workload();
    wrong.struct_size = 3;
    CHECK(code_thrown([&] { ctx.run_workload(1, wrong); }) == SDA_ERR_INVALID_ARGUMENT);
    // The built-in workload as the work of a guarded run; its refusal comes back as the status.
    CHECK_STATUS(sda::guarded_run(ctx, [&] { ctx.run_workload(1, shape); }), SDA_OK);
    CHECK(code_thrown([&] { (void)sda::guarded_run(ctx, [&] { ctx.run_workload(0); }); }) ==
          SDA_ERR_INVALID_ARGUMENT);

    ctx.backend_load();
    const sda_backend_details details = sda::backend_info();
    CHECK(details.loaded);
    CHECK(std::string(details.module_path).find("libsda_torch") != std::string::npos);
    CHECK(std::string(details.libtorch_path).find("libtorch_cpu") != std::string::npos);
    CHECK(details.built_libtorch_version[0] != '\0');
    CHECK(mapped("libtorch_cpu") == 1);

    // With the backend loaded, validation checks its libtorch.
    for (const sda_problem &p : ctx.validate_environment(true)) {
        CHECK(std::strcmp(p.code, "libtorch.version_mismatch") != 0);
        CHECK(std::strcmp(p.code, "backend.missing") != 0);
        CHECK(std::strcmp(p.code, "backend.not_checked") != 0);
    }
}

// sda::model: load, info, run, the probe and guarded-run overloads, errors as sda::error with the
// model's words, RAII and moves. `dir` holds conv.pt and fixed.pt (model_gen.py).
void test_model(const sda::context &ctx, const std::string &dir) {
    sda::model m(ctx, dir + "/conv.pt", {2, 1000});
    CHECK(static_cast<bool>(m));
    const sda_model_details details = m.info();
    CHECK(details.format == SDA_MODEL_FORMAT_TORCHSCRIPT && details.kind == SDA_DEVICE_KIND_CPU);
    CHECK(details.dtype == SDA_DTYPE_F32 && details.train == 0);
    CHECK(details.param_bytes > 0 && details.resident_bytes >= details.param_bytes);
    m.run(2);
    const sda::Model trained(ctx, dir + "/conv.pt", {2, 1000}, SDA_DTYPE_F32, true);
    CHECK(trained.info().train == 1);
    trained.run(2);

    // The probe, with and without progress; its answer runs.
    sda_probe_options options = sda::probe_options(std::uint64_t{64} << 20);
    options.max_batch = 64;
    const sda_probe_result fits = sda::probe_batch(ctx, m, options);
    CHECK(fits.max_batch >= 1 && fits.recommended_batch <= fits.max_batch);
    m.run(fits.recommended_batch);
    unsigned calls = 0;
    const sda_probe_result tracked =
        sda::probe_batch(ctx, m, [&calls](const sda_probe_progress &) { ++calls; }, options);
    CHECK(calls == tracked.runs);
    CHECK(code_thrown([&] {
              (void)sda::probe_batch(ctx, m, [](const sda_probe_progress &) { return false; },
                                     options);
          }) == SDA_ERR_CANCELLED);

    // Guarded runs: one attempt, and batched retries of a batch that fits.
    sda_guard_options guard = sda::guard_options(4);
    guard.max_attempts = 1;
    sda_run_report report{};
    CHECK_STATUS(sda::guarded_run(ctx, m, &report, guard), SDA_OK);
    CHECK(report.attempted_batch == 4 && report.attempts == 1);
    guard.max_attempts = 4;
    CHECK_STATUS(sda::guarded_run(ctx, trained, nullptr, guard), SDA_OK);
    guard.batch_size = 0;
    CHECK_STATUS(sda::guarded_run(ctx, m, &report, guard), SDA_ERR_INVALID_ARGUMENT);

    // Bad input: sda::error with the model's words.
    CHECK(code_thrown([&] { sda::model missing(ctx, dir + "/no_such_model.pt", {2, 100}); }) ==
          SDA_ERR_INVALID_ARGUMENT);
    CHECK(std::string(sda::last_error_message()).find("no_such_model.pt") != std::string::npos);
    const sda::model wrong(ctx, dir + "/conv.pt", {3, 100});
    CHECK(code_thrown([&] { wrong.run(2); }) == SDA_ERR_INVALID_ARGUMENT);
    const sda::model fixed(ctx, dir + "/fixed.pt", {2, 100});
    fixed.run(1);
    CHECK(code_thrown([&] { fixed.run(4); }) == SDA_ERR_INVALID_ARGUMENT);
    CHECK(std::string(sda::last_error_message()).find("accepts only its traced batch") !=
          std::string::npos);
    options.min_batch = 2;
    CHECK(code_thrown([&] { (void)sda::probe_batch(ctx, fixed, options); }) ==
          SDA_ERR_INVALID_ARGUMENT);

    // RAII: a moved-from model holds no handle and is refused; options filled by hand load too.
    sda::model moved = std::move(m);
    CHECK(!m && moved);
    CHECK(code_thrown([&] { m.run(1); }) == SDA_ERR_NULL_POINTER);
    CHECK(code_thrown([&] { (void)m.info(); }) == SDA_ERR_NULL_POINTER);
    const std::string path = dir + "/conv.pt";
    const std::uint64_t shape[2] = {2, 100};
    sda_model_options raw = sda::make<sda_model_options>();
    raw.path = path.c_str();
    raw.input_shape = shape;
    raw.input_rank = 2;
    raw.dtype = SDA_DTYPE_BF16;
    const sda::model bf16(ctx, raw);
    CHECK(bf16.info().dtype == SDA_DTYPE_BF16);
    CHECK(code_thrown([&] { bf16.run(1); }) == SDA_ERR_INVALID_ARGUMENT);
    // A released handle is the caller's to free; freed, it is refused.
    sda_model *handle = moved.release();
    CHECK(!moved && handle != nullptr);
    CHECK_STATUS(sda_model_free(handle), SDA_OK);
    CHECK(code_thrown([&] { sda::model(handle).run(1); }) == SDA_ERR_INVALID_HANDLE);
}

}  // namespace

int main(int argc, char **argv) {
    // The tests must not depend on the machine's configuration.
    unsetenv("SDA_CONFIG");
    unsetenv("SDA_DEVICE");
    try {
        test_errors();
        test_config_raii();
        test_config_values();
        test_context();
        test_classify();
        test_strings();
        test_backend_info_before_load();
        sda::config cfg;
        cfg.set("hardware.device", "cpu");
        const sda::context ctx(cfg);
        (void)ctx.select("cpu");
        test_plan_workers(ctx);
        test_recommend(ctx);
        test_report(ctx);
        test_validate(ctx);
        test_log_callback(ctx);
        // Configuration, plans, recommendations, reports, validation and logs through the wrapper
        // load no libtorch on the CPU (as through the C API); guarded runs and probes measure with
        // the torch backend and load it.
        CHECK(mapped("libtorch_cpu") == 0);
        CHECK(!sda::backend_info().loaded);
        test_guarded_run(ctx);
        test_guarded_run_batched(ctx);
        test_probe_lambda(ctx);
        test_probe_progress(ctx);
        test_probe_builtin(ctx);
        test_workload_and_backend(ctx);
        if (argc > 1) {
            test_model(ctx, argv[1]);
        } else {
            std::printf("test_hpp: no model directory given, sda::model not tested\n");
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    return check_report("test_hpp");
}
