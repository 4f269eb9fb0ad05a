//! The one small, versioned table of functions between libsda's core and its torch backend module.
//!
//! The core (`libsda`) never links libtorch. When it first needs torch it `dlopen`s the backend module
//! (`libsda_torch.so`), looks up [`ENTRY_SYMBOL`], calls it with the [`ABI_VERSION`] it was built with and
//! receives a pointer to a static [`BackendApi`]. Everything that crosses this boundary is plain C data:
//! integers, fixed-size byte buffers and function pointers, so that the two sides may be built separately
//! as long as they agree on [`ABI_VERSION`].
//!
//! Every function returns one of the `STATUS_*` codes and, on failure, writes a NUL-terminated message
//! into the caller's `(err, err_cap)` buffer (truncated to fit). No function unwinds or aborts: the backend
//! catches C++ exceptions in its shim and Rust panics at each entry point.

#![deny(missing_docs)]

use std::os::raw::c_char;

/// Version of this table. Bump it whenever a field is added, removed, reordered or changes meaning.
pub const ABI_VERSION: u32 = 2;

/// Name of the backend module's single exported entry point (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL: &[u8] = b"sda_torch_backend_entry\0";

/// Signature of the entry point: returns the static table when `abi_version` matches the module's own,
/// and NULL otherwise (the core then reports both versions).
pub type EntryFn = unsafe extern "C" fn(abi_version: u32) -> *const BackendApi;

/// The call succeeded.
pub const STATUS_OK: i32 = 0;
/// The device or feature does not exist here (no CUDA build, no such device index, no MPS).
pub const STATUS_UNAVAILABLE: i32 = 1;
/// libtorch reported an out-of-memory condition.
pub const STATUS_OUT_OF_MEMORY: i32 = 2;
/// libtorch reported another error (the message says which).
pub const STATUS_TORCH_ERROR: i32 = 3;
/// A Rust panic was caught inside the backend.
pub const STATUS_PANIC: i32 = 4;
/// An argument was out of range (the message says which).
pub const STATUS_INVALID_ARGUMENT: i32 = 5;

/// Model file format: a TorchScript module (what `torch.jit.save` writes).
pub const MODEL_FORMAT_TORCHSCRIPT: i32 = 1;
/// Model file format: an AOTInductor package (`.pt2`, from `torch._inductor.aoti_compile_and_package`),
/// inference only.
pub const MODEL_FORMAT_AOTI: i32 = 2;

/// Input element type codes of [`BackendApi::model_run`]: 32-bit float.
pub const DTYPE_F32: i32 = 0;
/// 16-bit IEEE float.
pub const DTYPE_F16: i32 = 1;
/// bfloat16.
pub const DTYPE_BF16: i32 = 2;

/// What [`BackendApi::model_load`] reports about a loaded model.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// Bytes of the model's parameters (TorchScript) or constants (AOTInductor) on its device.
    pub param_bytes: u64,
    /// Bytes of the model's buffers (TorchScript: running statistics and the like; 0 for AOTI,
    /// whose constants are all counted in `param_bytes`).
    pub buffer_bytes: u64,
    /// [`MODEL_FORMAT_TORCHSCRIPT`] or [`MODEL_FORMAT_AOTI`].
    pub format: i32,
}

/// Device kind codes used across the boundary.
pub const DEVICE_CPU: i32 = 0;
/// CUDA (also ROCm/HIP builds, which present themselves as CUDA to libtorch).
pub const DEVICE_CUDA: i32 = 1;
/// Apple Metal Performance Shaders.
pub const DEVICE_MPS: i32 = 2;

/// Capacity of the path buffers in [`BackendFacts`].
pub const PATH_CAP: usize = 1024;
/// Capacity of the version buffer in [`BackendFacts`].
pub const VERSION_CAP: usize = 64;

/// Static facts about the loaded backend and the libtorch it resolved.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BackendFacts {
    /// libtorch version the module was compiled against (`TORCH_VERSION`, e.g. `2.13.0`), NUL-terminated.
    pub built_libtorch_version: [c_char; VERSION_CAP],
    /// Directory of the libtorch the module was linked against at build time (its rpath), NUL-terminated.
    pub built_libtorch_dir: [c_char; PATH_CAP],
    /// Path of the `libtorch_cpu.so` actually mapped into the process, NUL-terminated.
    pub loaded_libtorch_path: [c_char; PATH_CAP],
    /// 1 when `libtorch_cuda.so` exists beside the mapped `libtorch_cpu.so` (a CUDA build of libtorch).
    pub cuda_build: u8,
    /// 1 once `load_cuda` has succeeded in this process.
    pub cuda_loaded: u8,
    /// 1 when libtorch reports a usable MPS device (always 0 off macOS).
    pub mps_available: u8,
    /// Number of CUDA devices libtorch sees; only meaningful when `cuda_loaded` is 1, else 0.
    pub cuda_device_count: i32,
}

/// Memory figures of one device as libtorch's allocator sees them, in bytes.
///
/// On CPU `allocated`/`peak_allocated` come from a counting wrapper around libtorch's CPU allocator that
/// the module installs when it loads (tensors only; oneDNN and BLAS scratch are not counted), `reserved`
/// equals `allocated` (the CPU allocator does not cache), and `free`/`total` are 0 (the core fills them
/// from the host).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes currently held by live tensors.
    pub allocated: u64,
    /// Bytes currently reserved by the caching allocator (live tensors plus cache).
    pub reserved: u64,
    /// Highest `allocated` since the last peak reset.
    pub peak_allocated: u64,
    /// Highest `reserved` since the last peak reset.
    pub peak_reserved: u64,
    /// Device-wide free bytes (includes other processes' use), 0 when unknown.
    pub free: u64,
    /// Device total bytes, 0 when unknown.
    pub total: u64,
    /// Number of allocation failures the allocator has counted.
    pub num_ooms: u64,
}

/// Writes `(err, err_cap)`: a message buffer the callee fills, NUL-terminated, on failure.
pub type ErrBuf = *mut c_char;

/// The table of functions the backend module provides. All pointers are non-null.
///
/// # Calling contract
/// Every function may be called from any thread, any number of times, with any integer or float
/// arguments (they are checked and answered with a status). Each pointer argument must be NULL or
/// valid for the access its name says: `out` for one aligned write of its type, `workload` for one
/// aligned read, `err` for `err_cap` bytes of writes. A NULL `out` or `workload` is answered with
/// [`STATUS_INVALID_ARGUMENT`]; a NULL `err` (or an `err_cap` of 0) just receives no message.
#[repr(C)]
pub struct BackendApi {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<BackendApi>()` as the module was built; checked by the core as a second guard.
    pub size: u32,
    /// Fills `out` with the module's static facts.
    pub facts: unsafe extern "C" fn(out: *mut BackendFacts, err: ErrBuf, err_cap: usize) -> i32,
    /// Loads `libtorch_cuda.so` from beside the mapped `libtorch_cpu.so` (RTLD_NOW | RTLD_GLOBAL) so that
    /// libtorch registers its CUDA hooks. Must run before anything asks libtorch about accelerators.
    /// Returns `STATUS_UNAVAILABLE` when this libtorch has no CUDA library. Idempotent.
    pub load_cuda: unsafe extern "C" fn(err: ErrBuf, err_cap: usize) -> i32,
    /// Sets the caching allocator's per-process memory fraction for `(kind, index)`; on CUDA this must
    /// happen before the first allocation to be exact. `STATUS_UNAVAILABLE` where unsupported (CPU).
    pub set_memory_fraction: unsafe extern "C" fn(
        kind: i32,
        index: i32,
        fraction: f64,
        err: ErrBuf,
        err_cap: usize,
    ) -> i32,
    /// Runs the smoke test on `(kind, index)`: two 32×32 random matrices multiplied, summed, copied to
    /// the CPU and checked for NaN. `STATUS_OK` only when the result is a finite number.
    pub smoke_test: unsafe extern "C" fn(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32,
    /// Reads the allocator's statistics for `(kind, index)`.
    pub memory_stats: unsafe extern "C" fn(
        kind: i32,
        index: i32,
        out: *mut MemoryStats,
        err: ErrBuf,
        err_cap: usize,
    ) -> i32,
    /// Returns cached, unused memory of `(kind, index)` to the device (a no-op on CPU).
    pub empty_cache:
        unsafe extern "C" fn(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32,
    /// Resets the peak statistics of `(kind, index)`.
    pub reset_peak: unsafe extern "C" fn(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32,
    /// Runs the built-in workload ([`Conv1dWorkload`]) once with `batch` samples on `(kind, index)`:
    /// fp32 inputs drawn from a normal distribution, the convolution (and its backward pass when asked),
    /// the output summed, copied to the CPU and checked finite. Every tensor is freed before it returns.
    ///
    /// `STATUS_INVALID_ARGUMENT` for a NULL `workload`, a zero batch or size, `with_backward` other than
    /// 0 or 1, or a kernel longer than `sample_length + 2 * padding`. `STATUS_OUT_OF_MEMORY` when an
    /// allocation fails (the message is libtorch's, e.g. `DefaultCPUAllocator: can't allocate memory:
    /// you tried to allocate 123 bytes`), or when the batch's tensors would need more than 2^63 bytes
    /// (`batch N needs more than 2^63 bytes`), which no device can hold.
    pub run_conv1d: unsafe extern "C" fn(
        kind: i32,
        index: i32,
        workload: *const Conv1dWorkload,
        batch: u32,
        err: ErrBuf,
        err_cap: usize,
    ) -> i32,
    /// Loads the model file at `path` (NUL-terminated) onto `(kind, index)` and writes an opaque,
    /// non-zero handle to `handle` and the model's facts to `facts`. The format is told by the
    /// file: a name ending in `.pt2` is an AOTInductor package (its device must be the one the
    /// package was compiled for), anything else is read as TorchScript (`torch::jit::load`).
    /// `STATUS_INVALID_ARGUMENT` for a NULL pointer or a missing file; `STATUS_TORCH_ERROR` with
    /// libtorch's message for a file libtorch cannot load; `STATUS_OUT_OF_MEMORY` when the weights
    /// do not fit. On failure nothing stays loaded and `handle` is 0.
    pub model_load: unsafe extern "C" fn(
        path: *const c_char,
        kind: i32,
        index: i32,
        handle: *mut u64,
        facts: *mut ModelFacts,
        err: ErrBuf,
        err_cap: usize,
    ) -> i32,
    /// Runs a loaded model once on an input of shape `[batch, shape[0], .., shape[len - 1]]`
    /// (`shape` may be NULL when `shape_len` is 0) drawn from a normal distribution in `dtype`
    /// (`DTYPE_*`). `train` 0: inference, without autograd (`InferenceMode`, `eval()`); 1: one
    /// training step: `train()`, forward, the loss = the sum of the means of every output tensor
    /// (the output must be a tensor, or a tuple or list of tensors), backward, and every
    /// parameter's gradient reset to an undefined tensor so that its memory is freed. Every tensor
    /// of the run is freed before it returns. `STATUS_INVALID_ARGUMENT` for an unknown handle, a
    /// zero batch or dimension, an unknown dtype, `train` other than 0/1, training an AOTInductor
    /// package or a model whose output has no tensor; `STATUS_OUT_OF_MEMORY` when an allocation
    /// fails or the input would need more than 2^63 bytes; `STATUS_TORCH_ERROR` with the model's
    /// own message when it rejects the input (a shape, a dtype, a traced batch).
    pub model_run: unsafe extern "C" fn(
        handle: u64,
        batch: u32,
        shape: *const u64,
        shape_len: usize,
        dtype: i32,
        train: u8,
        err: ErrBuf,
        err_cap: usize,
    ) -> i32,
    /// Frees a loaded model (its weights return to the allocator once no run of it is in flight).
    /// `STATUS_INVALID_ARGUMENT` for a handle that is not loaded (0, or freed already).
    pub model_free: unsafe extern "C" fn(handle: u64, err: ErrBuf, err_cap: usize) -> i32,
    /// Writes the number of models loaded now to `out` (a diagnostic: it returns to 0 when every
    /// handle has been freed, and a failed load adds nothing).
    pub model_count: unsafe extern "C" fn(out: *mut u64, err: ErrBuf, err_cap: usize) -> i32,
}

/// The built-in workload: `conv1d` over `[batch, in_channels, sample_length]` fp32 input with
/// `out_channels` filters of `kernel_size` and `padding`, forward pass (and a backward pass when
/// `with_backward` is 1), on one device.
///
/// The filters carry a bias; stride and dilation are 1, so the output is
/// `[batch, out_channels, sample_length + 2 * padding - kernel_size + 1]`. The backward pass computes
/// the gradients of the filters and the bias (not of the input) from the sum of the output.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dWorkload {
    /// Channels of each input sample.
    pub in_channels: u32,
    /// Length of each input sample.
    pub sample_length: u32,
    /// Number of filters (output channels).
    pub out_channels: u32,
    /// Length of each filter.
    pub kernel_size: u32,
    /// Zeros added at both ends of each sample.
    pub padding: u32,
    /// 1: run the backward pass too; 0: forward only, without building an autograd graph.
    pub with_backward: u8,
}

/// Copies `msg` into a caller's `(buf, cap)` as a NUL-terminated string, truncating on a UTF-8
/// boundary. Does nothing when `buf` is NULL or `cap` is 0.
///
/// # Safety
/// `buf` must be NULL or valid for `cap` bytes of writes.
pub unsafe fn write_message(buf: *mut c_char, cap: usize, msg: &str) {
    if buf.is_null() || cap == 0 {
        return;
    }
    let mut n = msg.len().min(cap - 1);
    while n > 0 && !msg.is_char_boundary(n) {
        n -= 1;
    }
    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
    *buf.add(n) = 0;
}

/// Reads a NUL-terminated string out of a fixed `c_char` buffer (lossy UTF-8; stops at the first NUL
/// or at the end of the buffer).
pub fn read_fixed(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes `s` into a fixed `c_char` buffer, NUL-terminated and truncated to fit.
pub fn write_fixed(buf: &mut [c_char], s: &str) {
    // SAFETY: a `&mut [c_char]` is valid for writes of exactly `buf.len()` bytes, the capacity
    // passed, and the exclusive borrow keeps anything else from touching it meanwhile.
    unsafe { write_message(buf.as_mut_ptr(), buf.len(), s) }
}

// libtorch's file names and the libraries mapped into the process, per OS: `mapped.rs`.
mod mapped;
pub use mapped::{
    mapped_library, parse_built_libtorch, BUILT_LIBTORCH_LEN, BUILT_LIBTORCH_SYMBOL, LIBTORCH_API,
    LIBTORCH_CPU, LIBTORCH_CUDA,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_truncates_on_char_boundary() {
        let mut buf = [0 as c_char; 6];
        write_fixed(&mut buf, "abc");
        assert_eq!(read_fixed(&buf), "abc");
        // "é" is two bytes: five usable bytes must not split it.
        write_fixed(&mut buf, "abcdé");
        assert_eq!(read_fixed(&buf), "abcd");
    }

    #[test]
    fn the_workload_has_a_fixed_c_layout() {
        // Five u32 and one u8, padded to the u32 alignment: what a C caller's struct looks like.
        assert_eq!(std::mem::size_of::<Conv1dWorkload>(), 24);
        assert_eq!(std::mem::align_of::<Conv1dWorkload>(), 4);
        assert_eq!(std::mem::offset_of!(Conv1dWorkload, with_backward), 20);
        // The new entry went at the end: the earlier ones keep their offsets.
        let ptr = std::mem::size_of::<usize>();
        assert_eq!(std::mem::offset_of!(BackendApi, reset_peak), 8 + 6 * ptr);
        assert_eq!(std::mem::offset_of!(BackendApi, run_conv1d), 8 + 7 * ptr);
        // ABI 2 appended the model entries.
        assert_eq!(std::mem::offset_of!(BackendApi, model_load), 8 + 8 * ptr);
        assert_eq!(std::mem::offset_of!(BackendApi, model_count), 8 + 11 * ptr);
        assert_eq!(std::mem::size_of::<BackendApi>(), 8 + 12 * ptr);
        assert_eq!(std::mem::size_of::<ModelFacts>(), 24);
    }

    #[test]
    fn zero_capacity_writes_nothing() {
        let mut buf = [7 as c_char; 1];
        // SAFETY: `buf` is a live one-byte local; with a capacity of 0 nothing may be written at all.
        unsafe { write_message(buf.as_mut_ptr(), 0, "x") };
        assert_eq!(buf[0], 7);
    }
}
