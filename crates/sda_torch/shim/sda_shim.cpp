// The C++ half of libsda's torch backend: what tch does not expose (allocator statistics, the
// device-agnostic at::accelerator calls, MPS hooks) and the counting CPU allocator.
//
// Rules every function here follows, because the caller is Rust behind a C ABI:
// - every function is `extern "C"`, returns one of the SDA_* codes below and never lets a C++
//   exception escape (each body is wrapped in try/catch(...));
// - error text goes into the caller's (err, cap) buffer, NUL-terminated and truncated;
// - nothing prints, aborts or exits.
// All symbols are hidden (-fvisibility=hidden, and the module links static archives with
// --exclude-libs,ALL): the module exports only its Rust entry point.

#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/detail/MPSHooksInterface.h>
#include <c10/core/Allocator.h>
#include <c10/core/AllocatorConfig.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/util/Exception.h>
#include <c10/core/InferenceMode.h>
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <atomic>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// Mirrors of sda_backend_abi's STATUS_* and DEVICE_* constants (the Rust side passes these through
// unchanged, so they must stay equal; the Rust crate asserts it at compile time).
constexpr int SDA_OK = 0;
constexpr int SDA_UNAVAILABLE = 1;
constexpr int SDA_OUT_OF_MEMORY = 2;
constexpr int SDA_TORCH_ERROR = 3;
constexpr int SDA_INVALID_ARGUMENT = 5;

constexpr int SDA_DEVICE_CPU = 0;
constexpr int SDA_DEVICE_CUDA = 1;
constexpr int SDA_DEVICE_MPS = 2;

void write_err(char* err, size_t cap, const std::string& msg) noexcept {
  if (err == nullptr || cap == 0) {
    return;
  }
  size_t n = msg.size() < cap - 1 ? msg.size() : cap - 1;
  // Do not cut a UTF-8 sequence in half: back up over continuation bytes.
  while (n > 0 && n < msg.size() &&
         (static_cast<unsigned char>(msg[n]) & 0xC0) == 0x80) {
    --n;
  }
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// c10::Error::what() carries a C++ backtrace after the first line in some builds; the first line
// (what_without_backtrace) is what a user needs.
std::string error_text(const c10::Error& e) {
  return e.what_without_backtrace();
}

// Runs `body` and turns every exception into a status code and message. OutOfMemoryError is the
// class libtorch's allocators throw on allocation failure, so it maps to SDA_OUT_OF_MEMORY.
template <typename F>
int guarded(char* err, size_t cap, F&& body) noexcept {
  try {
    return body();
  } catch (const c10::OutOfMemoryError& e) {
    try {
      write_err(err, cap, error_text(e));
    } catch (...) {
    }
    return SDA_OUT_OF_MEMORY;
  } catch (const c10::Error& e) {
    try {
      write_err(err, cap, error_text(e));
    } catch (...) {
    }
    return SDA_TORCH_ERROR;
  } catch (const std::bad_alloc&) {
    write_err(err, cap, "out of memory (std::bad_alloc) inside libtorch");
    return SDA_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    try {
      write_err(err, cap, e.what());
    } catch (...) {
    }
    return SDA_TORCH_ERROR;
  } catch (...) {
    write_err(err, cap, "unknown C++ exception inside libtorch");
    return SDA_TORCH_ERROR;
  }
}

const char* kind_name(int kind) {
  switch (kind) {
    case SDA_DEVICE_CPU:
      return "cpu";
    case SDA_DEVICE_CUDA:
      return "cuda";
    case SDA_DEVICE_MPS:
      return "mps";
    default:
      return "unknown";
  }
}

// ---------------------------------------------------------------------------------------------
// Counting CPU allocator
// ---------------------------------------------------------------------------------------------

// Bytes put in front of every allocation. 64 keeps the data pointer at libtorch's own CPU
// alignment (c10::gAlignment is 64), so vectorised kernels see the same alignment as without us.
constexpr size_t kHeader = 64;

// What the header stores: everything needed to give the block back to the wrapped allocator.
struct Header {
  void* inner_ctx;                    // the wrapped DataPtr's context (owns the block)
  c10::DeleterFnPtr inner_deleter;    // the wrapped DataPtr's deleter
  size_t counted;                     // the bytes this allocation added to `current`
};
static_assert(sizeof(Header) <= kHeader, "header must fit in front of the data");

std::atomic<uint64_t> g_current{0};
std::atomic<uint64_t> g_peak{0};
std::atomic<uint64_t> g_ooms{0};

void raise_peak(uint64_t now) noexcept {
  uint64_t seen = g_peak.load(std::memory_order_relaxed);
  while (now > seen &&
         !g_peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

// The deleter of every DataPtr we hand out. Context == data pointer (see allocate), so the header
// sits kHeader bytes before it. Subtracts exactly what allocate() added, then frees through the
// wrapped allocator's own deleter.
void counting_delete(void* data) noexcept {
  if (data == nullptr) {
    return;
  }
  auto* header = reinterpret_cast<Header*>(static_cast<char*>(data) - kHeader);
  g_current.fetch_sub(header->counted, std::memory_order_relaxed);
  c10::DeleterFnPtr deleter = header->inner_deleter;
  void* ctx = header->inner_ctx;
  if (deleter != nullptr) {
    deleter(ctx);
  }
}

// Wraps the CPU allocator that was current when it was installed and counts live bytes.
//
// Why a header instead of a wrapped context object: DataPtrs whose context equals their data
// pointer are "simple" (Allocator::is_simple_data_ptr), which libtorch's copy-on-write storage
// (lazy clone) and raw_allocate/raw_deallocate require. Keeping context == data keeps every such
// path working, and raw_deleter() can be provided.
class CountingCpuAllocator final : public c10::Allocator {
 public:
  explicit CountingCpuAllocator(c10::Allocator* inner) : inner_(inner) {}

  c10::DataPtr allocate(size_t n) override {
    if (n == 0) {
      // Like libtorch's default allocator: no memory for an empty storage. The deleter stays ours
      // so that raw_deleter()'s promise holds for every DataPtr we return.
      return c10::DataPtr(nullptr, nullptr, &counting_delete, c10::Device(c10::DeviceType::CPU));
    }
    // Ask for the header too; the wrapped allocator still does the real work (alignment, NUMA,
    // its OOM message and profiler reporting).
    c10::DataPtr block;
    try {
      block = inner_->allocate(n + kHeader);
    } catch (...) {
      // Counted like the device allocators' num_ooms, then passed on unchanged. Every exception
      // counts: libtorch's DefaultCPUAllocator reports a failed allocation as a plain c10::Error
      // ("[enforce fail at alloc_cpu.cpp] ... DefaultCPUAllocator: can't allocate memory: ..."),
      // not as c10::OutOfMemoryError, and an allocator has no other way to fail.
      g_ooms.fetch_add(1, std::memory_order_relaxed);
      throw;
    }
    char* base = static_cast<char*>(block.get());
    if (base == nullptr) {
      // Cannot happen for n + kHeader > 0 (the wrapped allocator throws instead), but never
      // build a header on NULL.
      return block;
    }
    c10::Device device = block.device();
    auto* header = reinterpret_cast<Header*>(base);
    header->inner_deleter = block.get_deleter();
    header->counted = n;
    // Ownership of the block moves into the header; counting_delete gives it back.
    header->inner_ctx = block.release_context();
    uint64_t now = g_current.fetch_add(n, std::memory_order_relaxed) + n;
    raise_peak(now);
    void* data = base + kHeader;
    return c10::DataPtr(data, data, &counting_delete, device);
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &counting_delete;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  c10::Allocator* inner_;
};

std::once_flag g_install_once;
CountingCpuAllocator* g_counter = nullptr;

}  // namespace

extern "C" {

// Installs the counting allocator as libtorch's CPU allocator. Idempotent.
//
// It wraps whatever GetCPUAllocator() returns at that moment (normally the default allocator, or
// a host's own if the host installed one first) with priority 1, one above the default's 0, so
// it wins over the default registration. The object is deliberately leaked: tensors may outlive
// any owner we could give it, and the module is linked with -z nodelete so its code stays mapped.
// Tensors allocated before installation keep their original deleter and are simply not counted.
int sda_shim_install_cpu_counter(char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    std::call_once(g_install_once, []() {
      c10::Allocator* inner = c10::GetCPUAllocator();
      g_counter = new CountingCpuAllocator(inner);
      c10::SetCPUAllocator(g_counter, /*priority=*/1);
    });
    return SDA_OK;
  });
}

// 1 when our counter is the CPU allocator libtorch uses now (a host may have replaced it).
int sda_shim_cpu_counter_active(uint8_t* out, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    *out = (g_counter != nullptr && c10::GetCPUAllocator() == g_counter) ? 1 : 0;
    return SDA_OK;
  });
}

// Current and peak bytes of live CPU tensors allocated through the counter, and the number of
// allocation failures it has seen.
void sda_shim_cpu_counts(uint64_t* current, uint64_t* peak, uint64_t* ooms) noexcept {
  *ooms = g_ooms.load(std::memory_order_relaxed);
  *current = g_current.load(std::memory_order_relaxed);
  // The peak can never be below the current value (a reset races with allocations).
  uint64_t p = g_peak.load(std::memory_order_relaxed);
  *peak = p > *current ? p : *current;
}

// Starts a new peak window at the current value.
void sda_shim_cpu_reset_peak() noexcept {
  g_peak.store(g_current.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

// at::hasMPS(): asks the MPS hooks only, which does not latch the accelerator choice.
int sda_shim_has_mps(uint8_t* out, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    *out = at::hasMPS() ? 1 : 0;
    return SDA_OK;
  });
}

}  // extern "C"

namespace {

c10::DeviceType to_device_type(int kind) {
  return kind == SDA_DEVICE_MPS ? c10::DeviceType::MPS : c10::DeviceType::CUDA;
}

// Checks that libtorch's accelerator is `kind` (CUDA or MPS) and, when index >= 0, that the index
// names an existing device. Every per-device call must pass through here first: an unchecked
// index can reach maybeExchangeDevice, which aborts the process.
// The caller guarantees that asking is safe (CUDA loaded, or MPS present): this function queries
// at::accelerator, which latches libtorch's accelerator choice.
int check_device(int kind, int index, c10::DeviceIndex* count_out, char* err, size_t cap) {
  if (kind != SDA_DEVICE_CUDA && kind != SDA_DEVICE_MPS) {
    write_err(err, cap, "device kind " + std::to_string(kind) + " is not an accelerator kind");
    return SDA_INVALID_ARGUMENT;
  }
  std::optional<c10::DeviceType> acc = at::accelerator::getAccelerator(false);
  if (!acc.has_value() || *acc != to_device_type(kind)) {
    std::string have = acc.has_value() ? c10::DeviceTypeName(*acc, true) : std::string("none");
    write_err(err, cap,
              std::string("libtorch's accelerator is ") + have + ", not " + kind_name(kind));
    return SDA_UNAVAILABLE;
  }
  c10::DeviceIndex count = at::accelerator::deviceCount();
  if (count_out != nullptr) {
    *count_out = count;
  }
  if (index >= 0 && index >= static_cast<int>(count)) {
    write_err(err, cap,
              std::string("no ") + kind_name(kind) + " device with index " +
                  std::to_string(index) + " (libtorch sees " + std::to_string(count) + ")");
    return SDA_UNAVAILABLE;
  }
  return SDA_OK;
}

// The allocator settings string that sets `fraction` and keeps everything else in `previous`.
std::string fraction_settings(const std::string& previous, double fraction) {
  // Each parse resets some options (max_split_size_mb, roundup_power2_divisions,
  // garbage_collection_threshold) to their defaults unless the string sets them again, so keep
  // what is in force (PYTORCH_ALLOC_CONF / PYTORCH_CUDA_ALLOC_CONF, or an earlier call) and replace
  // only an earlier fraction. Splitting on ',' and re-joining with ',' leaves bracketed lists intact.
  const std::string key = "per_process_memory_fraction";
  std::string settings;
  size_t start = 0;
  while (start <= previous.size()) {
    size_t end = previous.find(',', start);
    if (end == std::string::npos) {
      end = previous.size();
    }
    std::string part = previous.substr(start, end - start);
    size_t first = part.find_first_not_of(" \t");
    bool is_fraction = first != std::string::npos && part.compare(first, key.size(), key) == 0;
    if (!is_fraction && first != std::string::npos) {
      settings += part;
      settings += ',';
    }
    start = end + 1;
  }
  // %.17g round-trips a double exactly; the parser reads it back with stod.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", fraction);
  settings += key + ":" + buf;
  return settings;
}

}  // namespace

extern "C" {

// Number of devices of `kind` libtorch sees; 0 when `kind` is not libtorch's accelerator.
int sda_shim_device_count(int kind, int32_t* out, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    *out = 0;
    c10::DeviceIndex count = 0;
    int rc = check_device(kind, -1, &count, err, cap);
    if (rc == SDA_UNAVAILABLE) {
      return SDA_OK;  // "not this accelerator" simply means zero devices of that kind
    }
    if (rc != SDA_OK) {
      return rc;
    }
    *out = static_cast<int32_t>(count);
    return SDA_OK;
  });
}

// Allocator statistics and device memory of one accelerator device.
int sda_shim_memory_stats(int kind, int index, uint64_t* allocated, uint64_t* reserved,
                          uint64_t* peak_allocated, uint64_t* peak_reserved, uint64_t* free_bytes,
                          uint64_t* total_bytes, uint64_t* num_ooms, char* err,
                          size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    int rc = check_device(kind, index, nullptr, err, cap);
    if (rc != SDA_OK) {
      return rc;
    }
    auto idx = static_cast<c10::DeviceIndex>(index);
    c10::DeviceType type = to_device_type(kind);
    try {
      c10::CachingDeviceAllocator::DeviceStats stats =
          c10::getDeviceAllocator(type)->getDeviceStats(idx);
      const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
      *allocated = static_cast<uint64_t>(stats.allocated_bytes[agg].current);
      *peak_allocated = static_cast<uint64_t>(stats.allocated_bytes[agg].peak);
      *reserved = static_cast<uint64_t>(stats.reserved_bytes[agg].current);
      *peak_reserved = static_cast<uint64_t>(stats.reserved_bytes[agg].peak);
      *num_ooms = static_cast<uint64_t>(stats.num_ooms);
    } catch (const c10::Error&) {
      if (kind != SDA_DEVICE_MPS) {
        throw;
      }
      // Older MPS allocators are not DeviceAllocators; the MPS hooks give the same figures
      // less precisely (no peak, no OOM count).
      const auto& hooks = at::detail::getMPSHooks();
      *allocated = static_cast<uint64_t>(hooks.getCurrentAllocatedMemory());
      *reserved = static_cast<uint64_t>(hooks.getDriverAllocatedMemory());
      *peak_allocated = *allocated;
      *peak_reserved = *reserved;
      *num_ooms = 0;
    }
    try {
      std::pair<size_t, size_t> info = c10::getDeviceAllocator(type)->getMemoryInfo(idx);
      *free_bytes = static_cast<uint64_t>(info.first);
      *total_bytes = static_cast<uint64_t>(info.second);
    } catch (const c10::Error&) {
      // Not every allocator implements getMemoryInfo: "unknown" is 0 in the ABI.
      *free_bytes = 0;
      *total_bytes = 0;
      if (kind == SDA_DEVICE_MPS) {
        try {
          *total_bytes = static_cast<uint64_t>(at::detail::getMPSHooks().getRecommendedMaxMemory());
        } catch (...) {
        }
      }
    }
    return SDA_OK;
  });
}

// Returns the caching allocator's unused blocks to the device.
int sda_shim_empty_cache(int kind, int index, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    int rc = check_device(kind, index, nullptr, err, cap);
    if (rc != SDA_OK) {
      return rc;
    }
    try {
      c10::getDeviceAllocator(to_device_type(kind))->emptyCache();
    } catch (const c10::Error&) {
      if (kind != SDA_DEVICE_MPS) {
        throw;
      }
      at::detail::getMPSHooks().emptyCache();
    }
    return SDA_OK;
  });
}

// Resets the peak statistics of one accelerator device.
int sda_shim_reset_peak(int kind, int index, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    int rc = check_device(kind, index, nullptr, err, cap);
    if (rc != SDA_OK) {
      return rc;
    }
    c10::getDeviceAllocator(to_device_type(kind))->resetPeakStats(static_cast<c10::DeviceIndex>(index));
    return SDA_OK;
  });
}

// fraction_settings() for the unit tests (the CUDA path that uses it needs a GPU). Hidden like
// every shim symbol: the module exports only its entry point.
int sda_shim_fraction_settings(const char* previous, double fraction, char* out,
                               size_t cap) noexcept {
  return guarded(out, cap, [&]() -> int {
    write_err(out, cap, fraction_settings(previous, fraction));
    return SDA_OK;
  });
}

// Sets the per-process memory fraction. CUDA: through the allocator settings string, which
// reaches the CUDA config parser without CUDA headers; it applies to every CUDA device of the
// process (libtorch has no per-device form of this setting), and is exact only before the first
// CUDA allocation. MPS: the MPS hooks' setter (MPS has one device).
int sda_shim_set_memory_fraction(int kind, int index, double fraction, char* err,
                                 size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    int rc = check_device(kind, index, nullptr, err, cap);
    if (rc != SDA_OK) {
      return rc;
    }
    if (kind == SDA_DEVICE_MPS) {
      at::detail::getMPSHooks().setMemoryFraction(fraction);
      return SDA_OK;
    }
    c10::CachingAllocator::setAllocatorSettings(
        fraction_settings(c10::CachingAllocator::getAllocatorSettings(), fraction));
    return SDA_OK;
  });
}

}  // extern "C"

// ---------------------------------------------------------------------------------------------
// Model files: TorchScript modules and AOTInductor packages as the workload
// ---------------------------------------------------------------------------------------------

namespace {

constexpr int SDA_MODEL_TORCHSCRIPT = 1;
constexpr int SDA_MODEL_AOTI = 2;

constexpr int SDA_DTYPE_F32 = 0;
constexpr int SDA_DTYPE_F16 = 1;
constexpr int SDA_DTYPE_BF16 = 2;

// One loaded model. Runs of one model are serialised (`run_lock`): a training step writes the
// parameters' gradients, and a TorchScript module's train()/eval() flag is shared state.
struct LoadedModel {
  int format = 0;
  c10::Device device{c10::DeviceType::CPU};
  std::unique_ptr<torch::jit::Module> module;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
  std::mutex run_lock;
};

// The registry of loaded models: handle -> model. A run holds a shared_ptr, so a model freed
// while it runs lives until the run returns. Leaked on purpose: destroying libtorch objects from
// a static destructor at exit could run after libtorch's own statics are gone.
std::mutex g_models_lock;
auto* g_models = new std::unordered_map<uint64_t, std::shared_ptr<LoadedModel>>();
uint64_t g_next_model = 1;

// A model failure's text, for a person: libtorch's backtrace (after "Exception raised from")
// dropped, and of the TorchScript interpreter's report ("The following operation failed in the
// TorchScript interpreter. Traceback of TorchScript ...: <frames> RuntimeError: <message>") only
// the original message, which is what says what went wrong (the frames would push it out of the
// caller's buffer). This formats; it classifies nothing.
std::string condense(const std::string& text) {
  std::string out = text;
  size_t cut = out.find("\nException raised from");
  if (cut != std::string::npos) {
    out.resize(cut);
  }
  if (out.find("The following operation failed in the TorchScript interpreter") !=
      std::string::npos) {
    // The original message starts on the last line that begins with "<Name>Error: ".
    size_t best = std::string::npos;
    size_t start = 0;
    while (start < out.size()) {
      size_t end = out.find('\n', start);
      if (end == std::string::npos) {
        end = out.size();
      }
      size_t colon = out.find(": ", start);
      if (colon != std::string::npos && colon < end) {
        bool name = colon > start;
        for (size_t i = start; i < colon && name; ++i) {
          char c = out[i];
          name = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
        }
        std::string word = out.substr(start, colon - start);
        if (name && word.size() >= 5 &&
            (word.compare(word.size() - 5, 5, "Error") == 0 ||
             (word.size() >= 9 && word.compare(word.size() - 9, 9, "Exception") == 0))) {
          best = start;
        }
      }
      start = end + 1;
    }
    if (best != std::string::npos) {
      out = out.substr(best);
    }
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.pop_back();
  }
  return out;
}

// Like guarded(), with the message condensed and prefixed by `context`.
template <typename F>
int model_guarded(char* err, size_t cap, const std::string& context, F&& body) noexcept {
  auto fail = [&](int status, const std::string& text) noexcept {
    try {
      write_err(err, cap, context + condense(text));
    } catch (...) {
      write_err(err, cap, "out of memory while formatting an error message");
    }
    return status;
  };
  try {
    return body();
  } catch (const c10::OutOfMemoryError& e) {
    return fail(SDA_OUT_OF_MEMORY, e.what_without_backtrace());
  } catch (const c10::Error& e) {
    return fail(SDA_TORCH_ERROR, e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return fail(SDA_OUT_OF_MEMORY, "out of memory (std::bad_alloc) inside libtorch");
  } catch (const std::exception& e) {
    return fail(SDA_TORCH_ERROR, e.what());
  } catch (...) {
    return fail(SDA_TORCH_ERROR, "unknown C++ exception inside libtorch");
  }
}

c10::Device model_device(int kind, int index) {
  switch (kind) {
    case SDA_DEVICE_CUDA:
      return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
    case SDA_DEVICE_MPS:
      return c10::Device(c10::DeviceType::MPS, 0);
    default:
      return c10::Device(c10::DeviceType::CPU);
  }
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Every tensor of an output (a tensor, or tuples/lists of them, nested), for the loss.
void collect_tensors(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) {
      collect_tensors(e, out);
    }
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorVector()) {
      out.push_back(t);
    }
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) {
      collect_tensors(e, out);
    }
  }
}

// Whether an output is made of tensors only (tensor, tuple or list of them, nested).
bool only_tensors(const c10::IValue& v) {
  if (v.isTensor()) {
    return true;
  }
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) {
      if (!only_tensors(e)) {
        return false;
      }
    }
    return true;
  }
  if (v.isTensorList()) {
    return true;
  }
  if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) {
      if (!only_tensors(e)) {
        return false;
      }
    }
    return true;
  }
  return false;
}

}  // namespace

extern "C" {

// Loads a model file onto (kind, index), which the Rust side has validated (CUDA loaded, index
// below the count). Writes a non-zero handle, the parameter/buffer bytes and the format.
int sda_shim_model_load(const char* path, int kind, int index, uint64_t* handle,
                        uint64_t* param_bytes, uint64_t* buffer_bytes, int32_t* format, char* err,
                        size_t cap) noexcept {
  *handle = 0;
  std::string file = path;
  bool aoti = ends_with(file, ".pt2");
  std::string context = std::string("loading the ") +
                        (aoti ? "AOTInductor package " : "TorchScript module ") + file + ": ";
  return model_guarded(err, cap, context, [&]() -> int {
    auto model = std::make_shared<LoadedModel>();
    model->device = model_device(kind, index);
    uint64_t params = 0;
    uint64_t buffers = 0;
    if (aoti) {
      // The package says which device it was compiled for; running it elsewhere cannot work.
      auto meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(file, "model");
      auto found = meta.find("AOTI_DEVICE_KEY");
      std::string compiled = found == meta.end() ? std::string("cpu") : found->second;
      std::string wanted = kind_name(kind);
      if (compiled != wanted) {
        write_err(err, cap,
                  context + "the package was compiled for " + compiled + ", not for " + wanted +
                      " (compile it again with the inputs on " + wanted + ")");
        return SDA_INVALID_ARGUMENT;
      }
      c10::DeviceIndex device_index =
          kind == SDA_DEVICE_CPU ? static_cast<c10::DeviceIndex>(-1)
                                 : static_cast<c10::DeviceIndex>(index);
      model->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          file, "model", false, 1, device_index);
      model->format = SDA_MODEL_AOTI;
      try {
        for (const auto& entry : model->aoti->get_runner()->extract_constants_map(false)) {
          if (entry.second.defined()) {
            params += static_cast<uint64_t>(entry.second.nbytes());
          }
        }
      } catch (const c10::Error&) {
        params = 0;  // a runner without constant access: the size is unknown, not an error
      }
    } else {
      model->module = std::make_unique<torch::jit::Module>(torch::jit::load(file, model->device));
      model->format = SDA_MODEL_TORCHSCRIPT;
      for (const at::Tensor& p : model->module->parameters()) {
        params += static_cast<uint64_t>(p.nbytes());
      }
      for (const at::Tensor& b : model->module->buffers()) {
        buffers += static_cast<uint64_t>(b.nbytes());
      }
    }
    std::lock_guard<std::mutex> lock(g_models_lock);
    uint64_t id = g_next_model++;
    g_models->emplace(id, std::move(model));
    *handle = id;
    *param_bytes = params;
    *buffer_bytes = buffers;
    *format = aoti ? SDA_MODEL_AOTI : SDA_MODEL_TORCHSCRIPT;
    return SDA_OK;
  });
}

// Runs a loaded model once; the Rust side has checked batch, shape, dtype and train and that the
// input's size fits in i64.
int sda_shim_model_run(uint64_t handle, const int64_t* sizes, size_t len, int dtype, uint8_t train,
                       char* err, size_t cap) noexcept {
  std::shared_ptr<LoadedModel> model;
  {
    std::lock_guard<std::mutex> lock(g_models_lock);
    auto found = g_models->find(handle);
    if (found == g_models->end()) {
      write_err(err, cap, "model handle " + std::to_string(handle) + " is not loaded");
      return SDA_INVALID_ARGUMENT;
    }
    model = found->second;
  }
  std::vector<int64_t> shape(sizes, sizes + len);
  std::string context = "running the model at batch " + std::to_string(shape.empty() ? 0 : shape[0]) + ": ";
  return model_guarded(err, cap, context, [&]() -> int {
    std::lock_guard<std::mutex> run(model->run_lock);
    at::ScalarType type = dtype == SDA_DTYPE_F16    ? at::kHalf
                          : dtype == SDA_DTYPE_BF16 ? at::kBFloat16
                                                    : at::kFloat;
    auto options = at::TensorOptions().dtype(type).device(model->device);
    if (model->format == SDA_MODEL_AOTI) {
      if (train != 0) {
        write_err(err, cap, "an AOTInductor package is inference-only: it cannot be trained");
        return SDA_INVALID_ARGUMENT;
      }
      c10::InferenceMode inference;
      std::vector<at::Tensor> inputs{at::randn(shape, options)};
      std::vector<at::Tensor> outputs = model->aoti->run(inputs);
      (void)outputs;
      return SDA_OK;
    }
    torch::jit::Module& module = *model->module;
    if (train == 0) {
      module.eval();
      c10::InferenceMode inference;
      std::vector<c10::IValue> inputs{at::randn(shape, options)};
      c10::IValue out = module.forward(inputs);
      (void)out;
      return SDA_OK;
    }
    module.train();
    c10::AutoGradMode grad(true);
    // Every parameter's gradient is reset to an undefined tensor when this scope ends, after the
    // step's own scope below, also when the backward pass throws: their memory must not stay.
    struct ResetGrads {
      torch::jit::Module& module;
      ~ResetGrads() {
        try {
          for (at::Tensor p : module.parameters()) {
            p.mutable_grad() = at::Tensor();
          }
        } catch (...) {
        }
      }
    } reset{module};
    // The step runs inside a scope of its own, so that the graph, the input and the outputs are
    // freed before the gradients are reset (and on every way out).
    int status = [&]() -> int {
      std::vector<c10::IValue> inputs{at::randn(shape, options)};
      c10::IValue out = module.forward(inputs);
      if (!only_tensors(out)) {
        write_err(err, cap,
                  context + "the model's output is " + out.tagKind() +
                      ", not a tensor (or a tuple or list of tensors): a training step needs tensors "
                      "to take the mean of as its loss");
        return SDA_INVALID_ARGUMENT;
      }
      std::vector<at::Tensor> tensors;
      collect_tensors(out, tensors);
      if (tensors.empty()) {
        write_err(err, cap, context + "the model's output holds no tensor to take the mean of");
        return SDA_INVALID_ARGUMENT;
      }
      at::Tensor loss;
      for (const at::Tensor& t : tensors) {
        at::Tensor m = t.to(at::kFloat).mean();
        loss = loss.defined() ? loss + m : m;
      }
      loss.backward();
      return SDA_OK;
    }();
    return status;
  });
}

// Frees a loaded model; its weights go once no run holds it any more.
int sda_shim_model_free(uint64_t handle, char* err, size_t cap) noexcept {
  return guarded(err, cap, [&]() -> int {
    std::shared_ptr<LoadedModel> model;
    {
      std::lock_guard<std::mutex> lock(g_models_lock);
      auto found = g_models->find(handle);
      if (found == g_models->end()) {
        write_err(err, cap, "model handle " + std::to_string(handle) + " is not loaded");
        return SDA_INVALID_ARGUMENT;
      }
      model = std::move(found->second);
      g_models->erase(found);
    }
    model.reset();  // outside the registry's lock: freeing a module may take a while
    return SDA_OK;
  });
}

// Number of models loaded now.
uint64_t sda_shim_model_count() noexcept {
  std::lock_guard<std::mutex> lock(g_models_lock);
  return static_cast<uint64_t>(g_models->size());
}

}  // extern "C"
