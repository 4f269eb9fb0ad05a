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

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <optional>
#include <string>

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
