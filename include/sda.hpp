/*
 * sda.hpp: a header-only C++17 wrapper over libsda's C API (sda.h). Hand-written; link libsda as
 * for the C API, nothing else is needed.
 *
 * - Failures become exceptions: every wrapper that calls a fallible C function throws sda::error,
 *   which carries the sda_status (code()) and the library's message (message(), taken from
 *   sda_last_error_message() right after the failing call). The guarded runs are the exception to
 *   this rule (see guarded_run below): running out of memory is their normal, reported outcome.
 * - Handles are RAII: sda::config and sda::context own one handle each, are move-only, and free it
 *   in their destructor (which never throws). A moved-from object holds no handle; using it throws
 *   sda::error with SDA_ERR_INVALID_HANDLE or SDA_ERR_NULL_POINTER.
 * - Thread safety is that of the C functions underneath: a context may be shared by any number of
 *   threads; a config is internally synchronised.
 * - No exception ever unwinds through libsda's C/Rust frames: every callback the wrapper hands to
 *   libsda (the work of the guarded runs, the probe's workload and progress, the log callback)
 *   catches everything the host's callable throws and turns it into a status; where there is a
 *   caller to give it to, the exception is rethrown on the caller's side once libsda has returned.
 * - Strings come back as std::string (the buffer-and-`needed` protocol of the C API is handled
 *   here); arrays as std::vector; the C structs (sda_selection, sda_probe_result, ...) are returned
 *   as they are.
 *
 * Every function of sda.h has a wrapper here: errors and strings (sda::check, status_str, version,
 * classify, last_error_message, set_error_message, device_kind_str, severity_str), sda::config,
 * sda::context (selection, devices, memory, backend, recommendations, reports, validation, worker
 * plans, the built-in workload), sda::backend_info, sda::log_callback, the guarded runs and the probe
 * (sda::probe_batch), and a model file as the workload (sda::model, with its probe_batch and
 * guarded_run overloads).
 */
#ifndef SDA_HPP
#define SDA_HPP

#include "sda.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace sda {

/* ---- Errors ---------------------------------------------------------------------------------- */

/// A failed libsda call: the status and the library's message. what() reads
/// "SDA_ERR_UNKNOWN_KEY: <message>"; message() is the library's text alone.
class error : public std::runtime_error {
public:
    /// `message` is the library's text (usually sda_last_error_message()).
    error(sda_status code, const std::string &message)
        : std::runtime_error(std::string(sda_status_str(code)) + ": " + message),
          code_(code),
          // The message is the tail of what(): keeping an offset instead of a second std::string
          // keeps copying the exception free of allocations (exceptions must copy without
          // throwing).
          message_offset_(std::strlen(sda_status_str(code)) + 2) {}

    /// The status the C function returned.
    sda_status code() const noexcept { return code_; }

    /// The library's message, without the status name.
    const char *message() const noexcept { return what() + message_offset_; }

private:
    sda_status code_;
    std::size_t message_offset_;
};

/// Throws sda::error for `status` with the calling thread's last libsda message. Call it right
/// after the failing C call: the message is valid only until the next libsda call on this thread.
[[noreturn]] inline void throw_error(sda_status status) {
    throw error(status, sda_last_error_message());
}

/// Throws sda::error unless `status` is SDA_OK.
inline void check(sda_status status) {
    if (status != SDA_OK) {
        throw_error(status);
    }
}

/// The name of a status ("SDA_ERR_OUT_OF_MEMORY"); never NULL.
inline const char *status_str(sda_status status) noexcept {
    return sda_status_str(static_cast<int32_t>(status));
}

/// The library's version, "MAJOR.MINOR.PATCH" (compare with SDA_VERSION_STRING of this header).
inline std::string version() { return sda_version(); }

/// The calling thread's message of the last failing libsda call (sda_last_error_message()), copied
/// (the C pointer is valid only until the next libsda call on this thread). Empty when none failed.
///
/// Thread safety: [thread-safe] (each thread has its own message).
inline std::string last_error_message() { return sda_last_error_message(); }

/// Sets the calling thread's error message (sda_set_error_message), as a failing libsda call would:
/// for a host's own C-style callback that returns a status and wants libsda to read the real text
/// (the wrappers below do it themselves). Bytes that are not UTF-8 are replaced; the text ends at
/// the first NUL. Never throws.
///
/// Thread safety: [thread-safe] (each thread has its own message).
inline void set_error_message(const std::string &message) noexcept {
    (void)sda_set_error_message(message.c_str());
}

/// The name of a device kind ("cpu", "cuda", "mps"; "unknown" for other values). Never NULL.
///
/// Thread safety: [thread-safe], [audio-thread].
inline const char *device_kind_str(sda_device_kind kind) noexcept {
    return sda_device_kind_str(static_cast<int32_t>(kind));
}

/// The name of a problem's severity ("info", "warning", "error"; "unknown" for other values).
/// Never NULL.
///
/// Thread safety: [thread-safe], [audio-thread].
inline const char *severity_str(sda_severity severity) noexcept {
    return sda_severity_str(static_cast<int32_t>(severity));
}

/// Classifies an error text (sda_classify_error): SDA_ERR_OUT_OF_MEMORY when it reports that a
/// device ran out of memory (CUDA, HIP, XPU, MPS, cuDNN, cuBLAS, PyTorch's CPU allocator, oneDNN,
/// std::bad_alloc's text, ...), otherwise SDA_ERR_TORCH. NULL is not an out-of-memory either
/// (SDA_ERR_TORCH).
///
/// Thread safety: [thread-safe]; allocates (keep it off the audio thread); does not touch
/// sda_last_error_message().
inline sda_status classify(const char *text) noexcept {
    if (text == nullptr) {
        return SDA_ERR_TORCH;
    }
    return sda_classify_error(text) == SDA_ERR_OUT_OF_MEMORY ? SDA_ERR_OUT_OF_MEMORY
                                                             : SDA_ERR_TORCH;
}

/// Classifies an error text held in a std::string, as classify(const char *) does (the text ends at
/// its first NUL).
inline sda_status classify(const std::string &text) noexcept { return classify(text.c_str()); }

/// Classifies a caught exception: SDA_ERR_OUT_OF_MEMORY when it reports that a device ran out of
/// memory, otherwise SDA_ERR_TORCH — except an sda::error, which keeps its own code.
///
/// std::bad_alloc is out-of-memory (but std::bad_array_new_length, an invalid size, is not); any
/// other exception is judged by its what() text through sda_classify_error(), which knows the texts
/// of CUDA, HIP, XPU, MPS, cuDNN, cuBLAS, PyTorch's CPU allocator, oneDNN and more (c10::Error and
/// c10::OutOfMemoryError from a host's own libtorch included).
///
/// Thread safety: [thread-safe]; does not touch sda_last_error_message().
inline sda_status classify(const std::exception &e) noexcept {
    if (const auto *own = dynamic_cast<const error *>(&e)) {
        return own->code();
    }
    if (dynamic_cast<const std::bad_array_new_length *>(&e) != nullptr) {
        return SDA_ERR_TORCH;
    }
    if (dynamic_cast<const std::bad_alloc *>(&e) != nullptr) {
        return SDA_ERR_OUT_OF_MEMORY;
    }
    // A what() of NULL breaks std::exception's contract; it is not an out-of-memory either way.
    return classify(e.what());
}

namespace detail {

/// Reads a string through a C function with the (buf, capacity, needed) convention: tries a
/// small buffer first, then exactly the size the library asked for.
template <class Call>
std::string read_string(Call &&call) {
    std::string buf(256, '\0');
    for (;;) {
        std::size_t needed = 0;
        const sda_status status = call(&buf[0], buf.size(), &needed);
        if (status == SDA_OK) {
            buf.resize(needed > 0 ? needed - 1 : 0);  // `needed` counts the terminating NUL
            return buf;
        }
        // The value may grow between the two calls (another thread set it): loop until it fits.
        if (status == SDA_ERR_BUFFER_TOO_SMALL && needed > buf.size()) {
            buf.resize(needed);
            continue;
        }
        throw_error(status);
    }
}

}  // namespace detail

/* ---- Structs that grow ----------------------------------------------------------------------- */

/// Initialises a C struct with its init function and this program's own sizeof (the header's rule
/// for structs that grow): defaults for options, zeros for results, `struct_size` set.
/// Thread safety: [thread-safe], [audio-thread].
inline sda_status init(sda_guard_options *p) noexcept { return SDA_GUARD_OPTIONS_INIT(p); }
inline sda_status init(sda_run_report *p) noexcept { return SDA_RUN_REPORT_INIT(p); }
inline sda_status init(sda_probe_options *p) noexcept { return SDA_PROBE_OPTIONS_INIT(p); }
inline sda_status init(sda_probe_result *p) noexcept { return SDA_PROBE_RESULT_INIT(p); }
inline sda_status init(sda_workload *p) noexcept { return SDA_WORKLOAD_INIT(p); }
inline sda_status init(sda_recommendation *p) noexcept { return SDA_RECOMMENDATION_INIT(p); }
inline sda_status init(sda_worker_plan *p) noexcept { return SDA_WORKER_PLAN_INIT(p); }
inline sda_status init(sda_selection *p) noexcept { return SDA_SELECTION_INIT(p); }
inline sda_status init(sda_device_details *p) noexcept { return SDA_DEVICE_DETAILS_INIT(p); }
inline sda_status init(sda_memory_figures *p) noexcept { return SDA_MEMORY_FIGURES_INIT(p); }
inline sda_status init(sda_backend_details *p) noexcept { return SDA_BACKEND_DETAILS_INIT(p); }
inline sda_status init(sda_problem *p) noexcept { return SDA_PROBLEM_INIT(p); }
inline sda_status init(sda_model_options *p) noexcept { return SDA_MODEL_OPTIONS_INIT(p); }
inline sda_status init(sda_model_details *p) noexcept { return SDA_MODEL_DETAILS_INIT(p); }

/// A value of a C struct, initialised by sda::init: `auto options = sda::make<sda_guard_options>();`.
/// Cannot fail (the size is this program's own sizeof).
template <class T>
T make() noexcept {
    T value{};
    (void)sda::init(&value);
    return value;
}

/* ---- Configuration --------------------------------------------------------------------------- */

/// An owned sda_config: defaults, a TOML file or a TOML text (plus the SDA_CONFIG / SDA_DEVICE
/// environment overrides). Move-only.
class config {
public:
    /// The built-in defaults, or the file named by SDA_CONFIG (sda_config_new).
    config() { check(sda_config_new(&handle_)); }

    /// Loads a TOML file (sda_config_load). Throws sda::error (SDA_ERR_IO, SDA_ERR_PARSE,
    /// SDA_ERR_UNKNOWN_KEY, SDA_ERR_INVALID_VALUE).
    static config load(const std::string &path) {
        sda_config *handle = nullptr;
        check(sda_config_load(path.c_str(), &handle));
        return config(handle);
    }

    /// Parses TOML text (sda_config_load_str).
    static config load_str(const std::string &toml_text) {
        sda_config *handle = nullptr;
        check(sda_config_load_str(toml_text.c_str(), &handle));
        return config(handle);
    }

    /// Takes ownership of a handle from the C API (NULL gives an empty object).
    explicit config(sda_config *adopted) noexcept : handle_(adopted) {}

    config(const config &) = delete;
    config &operator=(const config &) = delete;
    config(config &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    config &operator=(config &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    ~config() { reset(); }

    /// One value by dotted key ("hardware.device") as plain text. Throws sda::error
    /// (SDA_ERR_UNKNOWN_KEY names the key).
    std::string get(const std::string &key) const {
        return detail::read_string([&](char *buf, std::size_t capacity, std::size_t *needed) {
            return sda_config_get(handle_, key.c_str(), buf, capacity, needed);
        });
    }

    /// Sets one value by dotted key from plain text; validated, the configuration is unchanged on
    /// error. Throws sda::error (SDA_ERR_UNKNOWN_KEY, SDA_ERR_INVALID_VALUE).
    void set(const std::string &key, const std::string &value) {
        check(sda_config_set(handle_, key.c_str(), value.c_str()));
    }

    /// Saves atomically to `path` (sda_config_save).
    void save(const std::string &path) const { check(sda_config_save(handle_, path.c_str())); }

    /// The whole configuration as TOML text.
    std::string to_string() const {
        return detail::read_string([&](char *buf, std::size_t capacity, std::size_t *needed) {
            return sda_config_to_string(handle_, buf, capacity, needed);
        });
    }

    /// The C handle, still owned by this object (NULL after a move).
    sda_config *handle() const noexcept { return handle_; }

    /// Gives up ownership: the caller frees the returned handle with sda_config_free().
    sda_config *release() noexcept { return std::exchange(handle_, nullptr); }

    /// Whether this object owns a handle.
    explicit operator bool() const noexcept { return handle_ != nullptr; }

private:
    void reset() noexcept {
        // The status is ignored: a destructor must not throw, and the only failure (a handle that
        // was already freed behind our back) leaves nothing to clean up.
        if (handle_ != nullptr) {
            (void)sda_config_free(std::exchange(handle_, nullptr));
        }
    }

    sda_config *handle_ = nullptr;
};

/* ---- Backend, workload shape, worker plans ----------------------------------------------------- */

/// What the torch backend module loaded (sda_backend_info): `loaded` is false, and every other
/// field empty, until something in this process loaded it (sda::context::backend_load, a GPU
/// selection, the built-in workload). Never loads anything.
///
/// Thread safety: [thread-safe].
inline sda_backend_details backend_info() {
    sda_backend_details details = sda::make<sda_backend_details>();
    check(sda_backend_info(&details));
    return details;
}

/// The seeds' built-in workload shape (sda_workload_init: 1 x 48000 input, 16 filters of 1024,
/// padding 512, forward only); change fields, then pass it to sda::context::run_workload or as
/// sda_probe_options::workload.
///
/// Thread safety: [thread-safe], [audio-thread].
inline sda_workload workload() noexcept { return sda::make<sda_workload>(); }

/// Where one worker of a job runs and the environment to start it with
/// (sda::context::plan_workers).
struct worker_plan {
    /// The plan: strategy, device, worker id and count, ranks, rendezvous, launcher, reason.
    sda_worker_plan plan;
    /// The worker's environment as libsda writes it: `NAME=value` lines, each ending in '\n', in
    /// the library's fixed order (ranks first, then OMP_NUM_THREADS). Values never hold a newline.
    std::string env;

    /// The environment as (name, value) pairs, in the same order (e.g. for setenv() or a
    /// posix_spawn envp in a host that starts its own worker processes).
    std::vector<std::pair<std::string, std::string>> env_vars() const {
        std::vector<std::pair<std::string, std::string>> vars;
        std::size_t start = 0;
        while (start < env.size()) {
            std::size_t end = env.find('\n', start);
            if (end == std::string::npos) {
                end = env.size();
            }
            const std::string line = env.substr(start, end - start);
            const std::size_t eq = line.find('=');
            if (!line.empty()) {
                if (eq == std::string::npos) {
                    vars.emplace_back(line, std::string());
                } else {
                    vars.emplace_back(line.substr(0, eq), line.substr(eq + 1));
                }
            }
            start = end + 1;
        }
        return vars;
    }
};

/* ---- Context --------------------------------------------------------------------------------- */

/// An owned sda_context: a snapshot of a configuration and the device selected under it. Share one
/// context across threads (the methods are const and thread-safe); move-only.
class context {
public:
    /// A context from the configuration sda_config_new() would build.
    context() { check(sda_context_new(nullptr, &handle_)); }

    /// A context from a snapshot of `cfg` (later changes to `cfg` do not affect it).
    explicit context(const config &cfg) { check(sda_context_new(cfg.handle(), &handle_)); }

    /// Takes ownership of a handle from the C API (NULL gives an empty object).
    explicit context(sda_context *adopted) noexcept : handle_(adopted) {}

    context(const context &) = delete;
    context &operator=(const context &) = delete;
    context(context &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    context &operator=(context &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    ~context() { reset(); }

    /// Selects the device by the configuration's hardware.device (sda_select_device with NULL).
    /// Slow the first time on a GPU (loads libtorch): not on the audio thread.
    sda_selection select() const { return select_impl(nullptr); }

    /// Selects the device: "auto", "cpu", "cuda", "cuda:N" or "mps". A device that is missing or
    /// broken falls back to the CPU with `fell_back` set; a malformed preference throws sda::error
    /// (SDA_ERR_INVALID_ARGUMENT).
    sda_selection select(const std::string &preference) const {
        return select_impl(preference.c_str());
    }

    /// Describes the selected device (sda_device_info).
    sda_device_details device_info() const {
        sda_device_details details = sda::make<sda_device_details>();
        check(sda_device_info(handle_, &details));
        return details;
    }

    /// Every device of the machine, the CPU first (sda_list_devices).
    std::vector<sda_device_details> list_devices() const {
        std::vector<sda_device_details> devices;
        for (;;) {
            std::size_t count = 0;
            const sda_status status =
                sda_list_devices(handle_, devices.data(), devices.size(), &count);
            if (status == SDA_OK) {
                devices.resize(count);
                return devices;
            }
            if (status == SDA_ERR_BUFFER_TOO_SMALL && count > devices.size()) {
                // Every entry initialised: the first one's struct_size is the array's stride.
                devices.resize(count, sda::make<sda_device_details>());
                continue;
            }
            throw_error(status);
        }
    }

    /// Memory figures of the selected device (sda_memory_info).
    sda_memory_figures memory_info() const {
        sda_memory_figures figures = sda::make<sda_memory_figures>();
        check(sda_memory_info(handle_, &figures));
        return figures;
    }

    /// Returns cached, unused device memory to the driver (sda_clear_cache).
    void clear_cache() const { check(sda_clear_cache(handle_)); }

    /// Resets the peak figure to the current allocation (sda_reset_peak).
    void reset_peak() const { check(sda_reset_peak(handle_)); }

    /// Loads the torch backend now (sda_backend_load); throws SDA_ERR_BACKEND_UNAVAILABLE with the
    /// fix when it cannot be loaded.
    void backend_load() const { check(sda_backend_load(handle_)); }

    /// Recommends a configuration for the selected device (sda_recommend): the memory tier's batch
    /// size (or a probe's, stored in hardware.max_batch_size), gradient checkpointing, model blocks
    /// and channels; with `parameters` > 0 (the model's parameter count) also a memory strategy with
    /// its reason (`advice_given`). Changes nothing.
    ///
    /// Thread safety: [thread-safe]; cheap once a device is selected.
    sda_recommendation recommend(uint64_t parameters = 0) const {
        sda_recommendation recommendation = sda::make<sda_recommendation>();
        check(sda_recommend(handle_, parameters, &recommendation));
        return recommendation;
    }

    /// The context's report as text (sda_report): SDA_VERBOSITY_ESSENTIAL (device, memory, a
    /// fallback warning, problems that need attention) or SDA_VERBOSITY_VERBOSE (everything).
    /// Loads no libtorch. Throws sda::error (SDA_ERR_INVALID_ARGUMENT for another verbosity).
    ///
    /// Thread safety: [thread-safe]; reads /proc and the driver (milliseconds).
    std::string report(sda_verbosity verbosity = SDA_VERBOSITY_ESSENTIAL) const {
        return detail::read_string([&](char *buf, std::size_t capacity, std::size_t *needed) {
            return sda_report(handle_, static_cast<int32_t>(verbosity), buf, capacity, needed);
        });
    }

    /// The same facts as report(), as pretty-printed JSON (sda_report_json; the layout is the JSON
    /// Schema docs/report.schema.json, `schema_version` 2).
    ///
    /// Thread safety: [thread-safe]; reads /proc and the driver (milliseconds).
    std::string report_json(sda_verbosity verbosity = SDA_VERBOSITY_ESSENTIAL) const {
        return detail::read_string([&](char *buf, std::size_t capacity, std::size_t *needed) {
            return sda_report_json(handle_, static_cast<int32_t>(verbosity), buf, capacity, needed);
        });
    }

    /// Every problem of the environment, worst first, each with a severity, a stable code, a
    /// message and a fix (sda_validate_environment); empty when all is well. Problems are not
    /// failures: this throws only when the check itself cannot run. Changes nothing on disk.
    ///
    /// `load_backend`: load the torch backend (when not loaded yet) to check its libtorch — slow
    /// the first time, [main-thread]; false checks only that the module file exists.
    ///
    /// Thread safety: [thread-safe].
    std::vector<sda_problem> validate_environment(bool load_backend = false) const {
        std::vector<sda_problem> problems;
        for (;;) {
            std::size_t count = 0;
            const sda_status status = sda_validate_environment(
                handle_, load_backend, problems.data(), problems.size(), &count);
            if (status == SDA_OK) {
                problems.resize(count);
                return problems;
            }
            // The environment may change between the size query and the call: loop until it fits.
            if (status == SDA_ERR_BUFFER_TOO_SMALL && count > problems.size()) {
                // Every entry initialised: the first one's struct_size is the array's stride.
                problems.resize(count, sda::make<sda_problem>());
                continue;
            }
            throw_error(status);
        }
    }

    /// Plans where worker `worker_id` of `workers` on this node runs and the environment to start
    /// it with (sda_plan_workers); libsda launches nothing. `strategy`: "auto", "cpu",
    /// "single_gpu" or "multi_gpu" (case-insensitive, '-' for '_'); `workers` 0 = the strategy's
    /// default. Under torchrun or SLURM the launcher's variables are read as inputs.
    ///
    /// Throws sda::error (SDA_ERR_INVALID_ARGUMENT for an unknown strategy, a worker id or count out
    /// of range, a GPU strategy without a CUDA device, malformed launcher variables; the message
    /// names the value and the accepted range).
    ///
    /// Thread safety: [thread-safe]; loads no libtorch (the first call initialises the CUDA driver
    /// when one is installed).
    sda::worker_plan plan_workers(const std::string &strategy = "auto", uint32_t workers = 0,
                                  uint32_t worker_id = 0) const {
        sda::worker_plan result{sda::make<sda_worker_plan>(), std::string()};
        // On SDA_ERR_BUFFER_TOO_SMALL the plan is not written; read_string retries with the size.
        result.env = detail::read_string([&](char *buf, std::size_t capacity, std::size_t *needed) {
            return sda_plan_workers(handle_, strategy.c_str(), workers, worker_id, &result.plan, buf,
                                    capacity, needed);
        });
        return result;
    }

    /// Runs the built-in workload once with `batch` samples on the selected device
    /// (sda_run_workload with the default shape). Loads the torch backend if needed. Throws
    /// sda::error; a real allocation failure is SDA_ERR_OUT_OF_MEMORY with libtorch's message, so
    /// inside sda::guarded_run it comes back as the run's SDA_ERR_OUT_OF_MEMORY.
    ///
    /// Thread safety: [thread-safe]; [main-thread] (heavy: it computes).
    void run_workload(uint32_t batch) const { check(sda_run_workload(handle_, nullptr, batch)); }

    /// Runs the built-in workload with the shape `shape` (from sda::workload(), then changed).
    void run_workload(uint32_t batch, const sda_workload &shape) const {
        check(sda_run_workload(handle_, &shape, batch));
    }

    /// The C handle, still owned by this object (NULL after a move).
    sda_context *handle() const noexcept { return handle_; }

    /// Gives up ownership: the caller frees the returned handle with sda_context_free().
    sda_context *release() noexcept { return std::exchange(handle_, nullptr); }

    /// Whether this object owns a handle.
    explicit operator bool() const noexcept { return handle_ != nullptr; }

private:
    sda_selection select_impl(const char *preference) const {
        sda_selection selection = sda::make<sda_selection>();
        check(sda_select_device(handle_, preference, &selection));
        return selection;
    }

    void reset() noexcept {
        if (handle_ != nullptr) {
            (void)sda_context_free(std::exchange(handle_, nullptr));
        }
    }

    sda_context *handle_ = nullptr;
};

/* ---- A model file as the workload ------------------------------------------------------------ */

/// An owned sda_model: a model file (a TorchScript module, or an AOTInductor .pt2 package for
/// inference) loaded on a context's selected device, run with random input [batch, input_shape...].
/// Move-only. Probe it with sda::probe_batch(ctx, model, ...) and run it under guard with
/// sda::guarded_run(ctx, model, report, options).
///
///     sda::model m(ctx, "demucs.pt", {2, 88200});          // per-sample shape; f32, inference
///     const sda_probe_result fits = sda::probe_batch(ctx, m);
///     m.run(fits.recommended_batch);
///
/// The model keeps its context's state alive: it still runs after the sda::context is destroyed;
/// the probe and guarded runs need the live context that loaded it (another one is
/// SDA_ERR_INVALID_ARGUMENT).
///
/// Thread safety: [thread-safe] (runs of one model are serialised); loading and running are
/// [main-thread] (they read the file and compute).
class model {
public:
    /// Loads `path` with the per-sample shape `input_shape` (sda_model_load). Throws sda::error:
    /// SDA_ERR_INVALID_ARGUMENT for a missing file, a file that is no model, a zero dimension, or
    /// training an AOTInductor package, with the model's own words; SDA_ERR_TORCH for a file
    /// libtorch cannot read. A shape or dtype the model rejects is found by the first run.
    model(const context &ctx, const std::string &path, const std::vector<uint64_t> &input_shape,
          sda_dtype dtype = SDA_DTYPE_F32, bool train = false) {
        sda_model_options options = sda::make<sda_model_options>();
        options.path = path.c_str();
        options.input_shape = input_shape.empty() ? nullptr : input_shape.data();
        options.input_rank = input_shape.size();
        options.dtype = dtype;
        options.train = train ? 1u : 0u;
        check(sda_model_load(ctx.handle(), &options, &handle_));
    }

    /// Loads with options filled by the caller (from sda::make<sda_model_options>()).
    model(const context &ctx, const sda_model_options &options) {
        check(sda_model_load(ctx.handle(), &options, &handle_));
    }

    /// Takes ownership of a handle from the C API (NULL gives an empty object).
    explicit model(sda_model *adopted) noexcept : handle_(adopted) {}

    model(const model &) = delete;
    model &operator=(const model &) = delete;
    model(model &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    model &operator=(model &&other) noexcept {
        if (this != &other) {
            reset();
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    ~model() { reset(); }

    /// Runs the model once with `batch` samples (sda_model_run). Throws sda::error: a real
    /// allocation failure is SDA_ERR_OUT_OF_MEMORY with libtorch's message (inside sda::guarded_run
    /// it comes back as the run's status); a batch, shape or dtype the model does not accept is
    /// SDA_ERR_INVALID_ARGUMENT ("accepts only its traced batch" for a fixed traced batch).
    void run(uint32_t batch) const { check(sda_model_run(handle_, batch)); }

    /// Format, device, input and sizes (sda_model_info).
    sda_model_details info() const {
        sda_model_details details = sda::make<sda_model_details>();
        check(sda_model_info(handle_, &details));
        return details;
    }

    /// The C handle, still owned by this object (NULL after a move).
    sda_model *handle() const noexcept { return handle_; }

    /// Gives up ownership: the caller frees the returned handle with sda_model_free().
    sda_model *release() noexcept { return std::exchange(handle_, nullptr); }

    /// Whether this object owns a handle.
    explicit operator bool() const noexcept { return handle_ != nullptr; }

private:
    void reset() noexcept {
        if (handle_ != nullptr) {
            (void)sda_model_free(std::exchange(handle_, nullptr));
        }
    }

    sda_model *handle_ = nullptr;
};

/// The same class, spelled as a type name in CamelCase.
using Model = model;

namespace detail {

/// A model as the first argument after the context: the model overloads, not the callable ones.
template <class F>
inline constexpr bool is_model_v = std::is_same_v<std::remove_cv_t<std::remove_reference_t<F>>, model>;

}  // namespace detail

/* ---- Log callback ---------------------------------------------------------------------------- */

/// Sends libsda's log messages (fallback warnings, backend loading, guarded-run retries, ...) to a
/// std::function for as long as this object lives (sda_set_log_callback). Non-copyable and
/// non-movable (libsda holds its address); hold it in a scope, a member, a std::optional (emplace)
/// or a std::unique_ptr.
///
///     sda::log_callback logs([](sda_log_level level, std::string_view message) {
///         host_log(level, std::string(message));
///     });
///
/// The model is one registration at a time, process-wide: the constructor replaces whatever
/// callback was installed (a C one included), and the destructor removes the callback
/// (sda_set_log_callback(NULL, NULL)) without knowing whether this one is still the installed one
/// — destroying an older sda::log_callback after a newer one was created removes the newer one.
/// Memory safety holds in any order: libsda guarantees that when sda_set_log_callback returns, the
/// previous callback is not running on any thread and will never be called again, so the
/// destructor frees the std::function right after.
///
/// The function may be called from any thread that calls into libsda, concurrently: it must be
/// thread-safe. `message` is UTF-8 and valid only during the call (copy it to keep it). Whatever
/// the function throws is caught and dropped: no exception unwinds into libsda. It may call back
/// into libsda (messages logged on its own thread while it runs are not delivered to it again), but
/// it must not destroy its own sda::log_callback: the function would be freed while it runs.
class log_callback {
public:
    /// What receives the messages.
    using function_type = std::function<void(sda_log_level, std::string_view)>;

    /// Installs `callback` as libsda's log callback. Throws sda::error with SDA_ERR_NULL_POINTER
    /// when `callback` is empty (use no sda::log_callback, or destroy it, to receive no messages).
    ///
    /// Thread safety: [thread-safe]; waits for calls of the previous callback running on other
    /// threads.
    explicit log_callback(function_type callback) : callback_(std::move(callback)) {
        if (!callback_) {
            throw error(SDA_ERR_NULL_POINTER, "sda::log_callback: the callback is empty");
        }
        check(sda_set_log_callback(&trampoline, &callback_));
    }

    log_callback(const log_callback &) = delete;
    log_callback &operator=(const log_callback &) = delete;
    log_callback(log_callback &&) = delete;
    log_callback &operator=(log_callback &&) = delete;

    /// Removes the callback; when this returns, the function is not running on any thread and will
    /// never be called again (then it is freed). Never throws.
    ~log_callback() {
        // Removing the callback does not fail; the status is ignored because a destructor must
        // not throw either way.
        (void)sda_set_log_callback(nullptr, nullptr);
    }

private:
    static void trampoline(void *user_data, sda_log_level level, const char *message) noexcept {
        try {
            const auto &callback = *static_cast<const function_type *>(user_data);
            callback(level, message != nullptr ? std::string_view(message) : std::string_view());
        } catch (...) {
            // Nothing may unwind into libsda, and there is no caller to hand it to: dropped.
        }
    }

    function_type callback_;
};

/* ---- Guarded runs ---------------------------------------------------------------------------- */

/// Guard options with the library's defaults (sda_guard_options_init) and `batch_size` set.
inline sda_guard_options guard_options(uint32_t batch_size = 0) noexcept {
    sda_guard_options options = sda::make<sda_guard_options>();
    options.batch_size = batch_size;
    return options;
}

/// An empty run report with its struct_size set (sda_run_report_init).
inline sda_run_report run_report() noexcept { return sda::make<sda_run_report>(); }

namespace detail {

/// What travels through `void *user_data` into the trampolines: the callable and the exception
/// the current attempt threw, if it was one to hand back to the caller.
template <class F>
struct work_state {
    F &callable;
    std::exception_ptr thrown;
};

/// The status a callable's result stands for: void means success; an sda_status or an integer is
/// the status itself.
template <class Call>
int32_t status_of(Call &&call) {
    using R = decltype(call());
    if constexpr (std::is_void_v<R>) {
        call();
        return static_cast<int32_t>(SDA_OK);
    } else {
        static_assert(std::is_enum_v<R> || std::is_integral_v<R>,
                      "the work of sda::guarded_run and the workload of sda::probe_batch must "
                      "return void, sda_status or an integer");
        return static_cast<int32_t>(call());
    }
}

/// Runs one attempt and turns whatever it throws into a status; never lets an exception escape
/// (it would unwind through libsda's frames, which is undefined behaviour).
template <class F, class Call>
int32_t attempt(work_state<F> &state, Call &&call) noexcept {
    state.thrown = nullptr;  // only the last attempt's exception is handed back
    try {
        return status_of(call);
    } catch (const std::bad_array_new_length &) {
        state.thrown = std::current_exception();
        return static_cast<int32_t>(SDA_ERR_TORCH);
    } catch (const std::bad_alloc &e) {
        // Out of memory is what the guard is for: reported, not rethrown.
        sda_set_error_message(e.what());
        return static_cast<int32_t>(SDA_ERR_OUT_OF_MEMORY);
    } catch (const std::exception &e) {
        const sda_status status = classify(e);
        // The guard reads the text (e.g. "Tried to allocate 2.00 GiB") for its numbers and guidance.
        // An sda::error from a nested libsda call already left its message on this thread.
        if (dynamic_cast<const error *>(&e) == nullptr) sda_set_error_message(e.what());
        if (status != SDA_ERR_OUT_OF_MEMORY) {
            state.thrown = std::current_exception();
        }
        return static_cast<int32_t>(status);
    } catch (...) {
        // Not a std::exception (a host's own type): nothing to read, so not recognisably an
        // out-of-memory. SDA_ERR_TORCH is libsda's status for "the work failed for another reason";
        // the exception itself is rethrown to the caller.
        state.thrown = std::current_exception();
        return static_cast<int32_t>(SDA_ERR_TORCH);
    }
}

template <class F>
int32_t work_trampoline(void *user_data) noexcept {
    auto &state = *static_cast<work_state<F> *>(user_data);
    return attempt(state, [&]() -> decltype(auto) { return state.callable(); });
}

template <class F>
int32_t batch_trampoline(void *user_data, uint32_t batch_size,
                         uint32_t accumulation_steps) noexcept {
    auto &state = *static_cast<work_state<F> *>(user_data);
    return attempt(state, [&]() -> decltype(auto) {
        return state.callable(batch_size, accumulation_steps);
    });
}

/// A report the caller zero-initialised (`sda_run_report r{};`) gets its struct_size here, so that
/// the C API accepts it; a report with any other size is passed on as it is (and refused there).
inline void prepare_report(sda_run_report *report) noexcept {
    if (report != nullptr && report->struct_size == 0) {
        *report = sda::make<sda_run_report>();
    }
}

/// After the run: a failure that a host exception caused is that exception again.
inline sda_status finish(sda_status status, const std::exception_ptr &thrown) {
    if (status != SDA_OK && status != SDA_ERR_OUT_OF_MEMORY && thrown) {
        std::rethrow_exception(thrown);
    }
    return status;
}

}  // namespace detail

/// Runs `work()` under libsda's guard (sda_guarded_run) on the context's selected device.
///
/// `work` is any callable taking no argument and returning void (success) or an sda_status.
/// Exceptions it throws never cross libsda's C frames; they are caught in a trampoline and:
///
/// - std::bad_alloc, and any std::exception whose what() sda_classify_error() recognises as
///   out-of-memory ("CUDA out of memory. Tried to allocate ...", PyTorch's CPU allocator, MPS,
///   ...), or an sda::error with SDA_ERR_OUT_OF_MEMORY, become SDA_ERR_OUT_OF_MEMORY: libsda
///   recovers (after the work's frame is gone: the cache is emptied) and this function *returns*
///   SDA_ERR_OUT_OF_MEMORY, with the numbers and the guidance (a concrete smaller batch,
///   device=cpu, closing other GPU work) in `*report` and sda_last_error_message(). The exception
///   object is dropped: reporting an OOM instead of throwing it is the point of a guarded run.
/// - Any other exception is *rethrown* to the caller once libsda has returned, unchanged (type and
///   message), so that a bug in the work behaves as it would without the guard. libsda sees it as
///   SDA_ERR_TORCH (or an sda::error's own code); a non-std::exception is SDA_ERR_TORCH too.
///
/// Otherwise the status is returned, never thrown: SDA_OK, SDA_ERR_OUT_OF_MEMORY, a status the work
/// returned, or libsda's own refusal (SDA_ERR_INVALID_HANDLE for an empty context,
/// SDA_ERR_INVALID_ARGUMENT for bad options) with its message in sda_last_error_message().
///
/// `report` may be NULL; one with struct_size 0 is initialised with sda_run_report_init. It is
/// written whether the run succeeds or fails. `options` may be NULL (defaults); set
/// options->batch_size to get a concrete smaller batch in the guidance.
///
/// Thread safety: [thread-safe]; `work` runs on the calling thread, during the call.
template <class F, std::enable_if_t<!detail::is_model_v<F>, int> = 0>
sda_status guarded_run(const context &ctx, F &&work, sda_run_report *report = nullptr,
                       const sda_guard_options *options = nullptr) {
    using Callable = std::remove_reference_t<F>;
    detail::work_state<Callable> state{work, nullptr};
    detail::prepare_report(report);
    const sda_status status = sda_guarded_run(ctx.handle(), &detail::work_trampoline<Callable>,
                                              &state, options, report);
    return detail::finish(status, state.thrown);
}

/// Runs `work(batch_size, accumulation_steps)` under libsda's guard with retries
/// (sda_guarded_run_batched): after each out-of-memory attempt libsda recovers and calls `work`
/// again with a smaller batch chosen from the measured memory, down to options->min_batch, at
/// most options->max_attempts times. `options` is required in practice: options->batch_size (>= 1)
/// is the first batch (see sda::guard_options(batch)). report->final_batch holds the batch that
/// fit.
///
/// Exceptions are handled as in guarded_run: out-of-memory ones make libsda retry and, when no
/// batch fits, come back as the returned SDA_ERR_OUT_OF_MEMORY; any other exception ends the run
/// and is rethrown to the caller.
///
/// Thread safety: [thread-safe]; `work` runs on the calling thread, during the call.
template <class F, std::enable_if_t<!detail::is_model_v<F>, int> = 0>
sda_status guarded_run_batched(const context &ctx, F &&work, sda_run_report *report = nullptr,
                               const sda_guard_options *options = nullptr) {
    using Callable = std::remove_reference_t<F>;
    detail::work_state<Callable> state{work, nullptr};
    detail::prepare_report(report);
    const sda_status status = sda_guarded_run_batched(
        ctx.handle(), &detail::batch_trampoline<Callable>, &state, options, report);
    return detail::finish(status, state.thrown);
}

/// Runs a loaded model under libsda's guard (sda_guarded_run_model) with options.batch_size
/// (required, >= 1) samples: one run with options.max_attempts 1, else (the default is 8) retries
/// with a smaller batch chosen from the measured memory after each out-of-memory failure, down to
/// options.min_batch; report->final_batch holds the batch that fit. As with the other guarded runs
/// the status is returned, never thrown: SDA_OK, SDA_ERR_OUT_OF_MEMORY (report->suggested_batch
/// names a batch that fits, report->guidance says what to do), SDA_ERR_INVALID_ARGUMENT for a batch
/// the model does not accept (never out-of-memory) or bad options, SDA_ERR_INVALID_HANDLE for an
/// empty model or context. `report` may be NULL; one with struct_size 0 is initialised.
///
/// Thread safety: [thread-safe]; [main-thread] (heavy: it computes).
inline sda_status guarded_run(const context &ctx, const model &m, sda_run_report *report,
                              const sda_guard_options &options) {
    detail::prepare_report(report);
    return sda_guarded_run_model(ctx.handle(), m.handle(), &options, report);
}

/* ---- Probe ----------------------------------------------------------------------------------- */

/// Probe options with the library's defaults (sda_probe_options_init: batches 1 to 65536, at
/// most 8 runs, the memory strategy's budget, a 5 % margin, the built-in workload) and
/// `budget_bytes` set (0 = the strategy's budget). Change fields, e.g. `max_batch`, `workload` (the
/// built-in workload's shape, see sda::workload()) or `save_to` (a config's handle(): the
/// recommended batch is stored in its hardware.max_batch_size).
inline sda_probe_options probe_options(uint64_t budget_bytes = 0) noexcept {
    sda_probe_options options = sda::make<sda_probe_options>();
    options.budget_bytes = budget_bytes;
    return options;
}

/// Names the built-in workload in sda::probe_batch(ctx, sda::builtin_workload, progress, options).
struct builtin_workload_t {
    explicit builtin_workload_t() = default;
};

/// The built-in workload (the conv1d of options.workload, or the seeds' shape), as an argument.
inline constexpr builtin_workload_t builtin_workload{};

namespace detail {

template <class W>
inline constexpr bool is_builtin_workload_v =
    std::is_same_v<std::remove_cv_t<std::remove_reference_t<W>>, builtin_workload_t>;

/// A probe workload: the built-in tag, or a callable taking the batch.
template <class W>
inline constexpr bool is_probe_workload_v =
    is_builtin_workload_v<W> || std::is_invocable_v<std::remove_reference_t<W> &, uint32_t>;

/// A probe progress callable: takes the progress.
template <class P>
inline constexpr bool is_probe_progress_v =
    std::is_invocable_v<std::remove_reference_t<P> &, const sda_probe_progress &>;

template <class F>
int32_t probe_workload_trampoline(void *user_data, uint32_t batch) noexcept {
    auto &state = *static_cast<work_state<F> *>(user_data);
    return attempt(state, [&]() -> decltype(auto) { return state.callable(batch); });
}

/// What travels into the progress trampoline: the callable and what it threw.
template <class P>
struct progress_state {
    P &callable;
    std::exception_ptr thrown;
};

/// Calls the host's progress; void means "go on". Whatever it throws cancels the probe (returns
/// false) and is kept to be rethrown once libsda has returned.
template <class P>
bool probe_progress_trampoline(void *user_data, const sda_probe_progress *progress) noexcept {
    auto &state = *static_cast<progress_state<P> *>(user_data);
    if (progress == nullptr) {
        return true;
    }
    try {
        using R = decltype(state.callable(*progress));
        if constexpr (std::is_void_v<R>) {
            state.callable(*progress);
            return true;
        } else {
            static_assert(std::is_constructible_v<bool, R>,
                          "the progress of sda::probe_batch must return void or bool");
            return static_cast<bool>(state.callable(*progress));
        }
    } catch (...) {
        state.thrown = std::current_exception();
        return false;
    }
}

/// Runs sda_probe_batch with `options` as filled by the caller; on failure rethrows what a host
/// callable threw (the workload's first: its failure ended the probe), else throws sda::error.
inline sda_probe_result run_probe(const context &ctx, const sda_probe_options &options,
                                  const std::exception_ptr *workload_thrown,
                                  const std::exception_ptr *progress_thrown) {
    sda_probe_result result = sda::make<sda_probe_result>();
    const sda_status status = sda_probe_batch(ctx.handle(), &options, &result);
    if (status != SDA_OK) {
        if (workload_thrown != nullptr && *workload_thrown) {
            std::rethrow_exception(*workload_thrown);
        }
        if (progress_thrown != nullptr && *progress_thrown) {
            std::rethrow_exception(*progress_thrown);
        }
        throw_error(status);
    }
    return result;
}

/// Fills the workload fields of `options` for `work` (a callable, or the built-in tag) and runs the
/// probe with `progress_thrown` as the progress's exception slot.
template <class W>
sda_probe_result probe_with_workload(const context &ctx, W &&work, sda_probe_options &options,
                                     const std::exception_ptr *progress_thrown) {
    if constexpr (is_builtin_workload_v<W>) {
        (void)work;
        options.custom_workload = nullptr;
        options.workload_user_data = nullptr;
        return run_probe(ctx, options, nullptr, progress_thrown);
    } else {
        using Callable = std::remove_reference_t<W>;
        work_state<Callable> state{work, nullptr};
        options.custom_workload = &probe_workload_trampoline<Callable>;
        options.workload_user_data = &state;
        return run_probe(ctx, options, &state.thrown, progress_thrown);
    }
}

}  // namespace detail

/// Finds the largest batch that fits the memory budget on the context's selected device
/// (sda_probe_batch) with `options` exactly as given: the built-in workload (a conv1d of
/// options.workload's shape, loading the torch backend), or a C callback set in
/// options.custom_workload. Throws sda::error: SDA_ERR_BACKEND_UNAVAILABLE without the backend,
/// SDA_ERR_CANCELLED when options.progress cancelled (libsda writes no result then), argument errors.
///
/// Running out of memory is not a failure of the probe: it is how the search finds the limit
/// (result.oom_runs; result.stop is SDA_PROBE_STOP_OUT_OF_MEMORY when not even min_batch fits).
///
/// Thread safety: [thread-safe]; [main-thread] (runs real work: seconds).
inline sda_probe_result probe_batch(const context &ctx,
                                    const sda_probe_options &options = probe_options()) {
    return detail::run_probe(ctx, options, nullptr, nullptr);
}

/// Probes the host's own workload: `work(batch)` runs the work once with `batch` samples and
/// returns void (success) or an sda_status; `work` may be sda::builtin_workload instead. The rest of
/// `options` (budget, margin, batch range, runs, a C progress, save_to) is used as given; its
/// custom_workload and workload_user_data are replaced.
///
/// Exceptions from `work` never cross libsda's frames; they are caught in a trampoline and, as in
/// sda::guarded_run:
///
/// - std::bad_alloc, an sda::error with SDA_ERR_OUT_OF_MEMORY, and any std::exception whose what()
///   sda_classify_error() recognises as out-of-memory become SDA_ERR_OUT_OF_MEMORY with the text
///   passed to libsda (sda_set_error_message): a measured "too big" for the search, not a failure.
/// - Any other exception (std::bad_array_new_length, a host type that is no std::exception) ends
///   the probe and is rethrown to the caller, unchanged, once libsda has returned.
///
/// A status other than SDA_OK or SDA_ERR_OUT_OF_MEMORY returned by `work` ends the probe with that
/// status, thrown as sda::error.
///
/// Thread safety: [thread-safe]; `work` runs on the calling thread, during the call;
/// [main-thread].
template <class W, std::enable_if_t<detail::is_probe_workload_v<W>, int> = 0>
sda_probe_result probe_batch(const context &ctx, W &&work,
                             const sda_probe_options &options = probe_options()) {
    sda_probe_options filled = options;
    return detail::probe_with_workload(ctx, std::forward<W>(work), filled, nullptr);
}

/// Probes `work` (a callable as above, or sda::builtin_workload) and calls `progress(p)` with a
/// `const sda_probe_progress &` after every run (batch, ok, oom, peak_bytes, predicted_bytes,
/// elapsed_ms, runs, best_batch, budget_bytes; valid only during the call). `progress` returns
/// true to go on or false to cancel, or void (always go on). A cancel throws sda::error with
/// SDA_ERR_CANCELLED after the current run (libsda writes no result then). An exception thrown by
/// `progress` cancels the probe the same way and is rethrown to the caller instead, unchanged.
/// options.progress and options.progress_user_data are replaced.
///
/// Thread safety: [thread-safe]; `work` and `progress` run on the calling thread, during the call.
template <class W, class P,
          std::enable_if_t<detail::is_probe_workload_v<W> && detail::is_probe_progress_v<P>,
                           int> = 0>
sda_probe_result probe_batch(const context &ctx, W &&work, P &&progress,
                             const sda_probe_options &options = probe_options()) {
    using Progress = std::remove_reference_t<P>;
    detail::progress_state<Progress> state{progress, nullptr};
    sda_probe_options filled = options;
    filled.progress = &detail::probe_progress_trampoline<Progress>;
    filled.progress_user_data = &state;
    return detail::probe_with_workload(ctx, std::forward<W>(work), filled, &state.thrown);
}

/// Probes a loaded model (options.model = m; options.workload and options.custom_workload are
/// cleared): the largest batch of it that fits the memory budget on the context that loaded it.
/// Every run's peak counts the model's resident bytes. Throws sda::error: a model that accepts only
/// its traced batch, or rejects its input, is SDA_ERR_INVALID_ARGUMENT; a model of another context
/// is SDA_ERR_INVALID_ARGUMENT; a cancel is SDA_ERR_CANCELLED.
///
/// Thread safety: [thread-safe]; [main-thread] (runs real work: seconds).
inline sda_probe_result probe_batch(const context &ctx, const model &m,
                                    const sda_probe_options &options = probe_options()) {
    sda_probe_options filled = options;
    filled.model = m.handle();
    filled.workload = nullptr;
    filled.custom_workload = nullptr;
    filled.workload_user_data = nullptr;
    return detail::run_probe(ctx, filled, nullptr, nullptr);
}

/// Probes a loaded model and calls `progress(p)` after every run, as the callable overload does
/// (true or void goes on, false cancels, an exception cancels and is rethrown).
template <class P, std::enable_if_t<detail::is_probe_progress_v<P>, int> = 0>
sda_probe_result probe_batch(const context &ctx, const model &m, P &&progress,
                             const sda_probe_options &options = probe_options()) {
    using Progress = std::remove_reference_t<P>;
    detail::progress_state<Progress> state{progress, nullptr};
    sda_probe_options filled = options;
    filled.model = m.handle();
    filled.workload = nullptr;
    filled.custom_workload = nullptr;
    filled.workload_user_data = nullptr;
    filled.progress = &detail::probe_progress_trampoline<Progress>;
    filled.progress_user_data = &state;
    return detail::run_probe(ctx, filled, nullptr, &state.thrown);
}

}  // namespace sda

#endif /* SDA_HPP */
