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
 * - No exception ever unwinds through libsda's C/Rust frames: the callbacks of the guarded runs
 *   catch everything the host's callable throws and hand it back on the caller's side.
 */
#ifndef SDA_HPP
#define SDA_HPP

#include "sda.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
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
    const sda_status status = sda_classify_error(e.what());
    // A what() of NULL breaks std::exception's contract; it is not an out-of-memory either way.
    return status == SDA_ERR_OUT_OF_MEMORY ? SDA_ERR_OUT_OF_MEMORY : SDA_ERR_TORCH;
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
        sda_device_details details{};
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
                devices.resize(count);
                continue;
            }
            throw_error(status);
        }
    }

    /// Memory figures of the selected device (sda_memory_info).
    sda_memory_figures memory_info() const {
        sda_memory_figures figures{};
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

    /// The C handle, still owned by this object (NULL after a move).
    sda_context *handle() const noexcept { return handle_; }

    /// Gives up ownership: the caller frees the returned handle with sda_context_free().
    sda_context *release() noexcept { return std::exchange(handle_, nullptr); }

    /// Whether this object owns a handle.
    explicit operator bool() const noexcept { return handle_ != nullptr; }

private:
    sda_selection select_impl(const char *preference) const {
        sda_selection selection{};
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

/* ---- Guarded runs ---------------------------------------------------------------------------- */

/// Guard options with the library's defaults (sda_guard_options_default()) and `batch_size` set.
inline sda_guard_options guard_options(uint32_t batch_size = 0) noexcept {
    sda_guard_options options = sda_guard_options_default();
    options.batch_size = batch_size;
    return options;
}

/// An empty run report with its struct_size set (sda_run_report_default()).
inline sda_run_report run_report() noexcept { return sda_run_report_default(); }

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
                      "the work of sda::guarded_run must return void, sda_status or an integer");
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
        *report = sda_run_report_default();
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
/// `report` may be NULL; one with struct_size 0 is initialised with sda_run_report_default(). It is
/// written whether the run succeeds or fails. `options` may be NULL (defaults); set
/// options->batch_size to get a concrete smaller batch in the guidance.
///
/// Thread safety: [thread-safe]; `work` runs on the calling thread, during the call.
template <class F>
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
template <class F>
sda_status guarded_run_batched(const context &ctx, F &&work, sda_run_report *report = nullptr,
                               const sda_guard_options *options = nullptr) {
    using Callable = std::remove_reference_t<F>;
    detail::work_state<Callable> state{work, nullptr};
    detail::prepare_report(report);
    const sda_status status = sda_guarded_run_batched(
        ctx.handle(), &detail::batch_trampoline<Callable>, &state, options, report);
    return detail::finish(status, state.thrown);
}

}  // namespace sda

#endif /* SDA_HPP */
