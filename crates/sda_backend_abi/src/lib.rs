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
pub const ABI_VERSION: u32 = 1;

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

/// File name of libtorch's CPU library, the one every libtorch build has: the core looks for it in
/// the process before it opens the backend, and the backend to find the libtorch it is bound to.
pub const LIBTORCH_CPU: &str = "libtorch_cpu.so";

/// Path of the shared library named `file_name` that is mapped into this process (canonicalised when
/// possible), if any: the core asks before it opens the backend (is a libtorch already there, the
/// host's or Python's?), the backend to find the libtorch it is bound to.
#[cfg(target_os = "linux")]
pub fn mapped_library(file_name: &str) -> Option<std::path::PathBuf> {
    use std::ffi::{c_int, c_void, CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    /// What the iteration looks for and what it found.
    struct Search<'a> {
        file_name: &'a [u8],
        found: Option<PathBuf>,
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes the `data` pointer given below, an exclusive pointer to a
        // live `Search`, and an `info` valid for the duration of this call.
        let (search, name) = unsafe { (&mut *data.cast::<Search<'_>>(), (*info).dlpi_name) };
        if name.is_null() {
            return 0;
        }
        // SAFETY: a non-null dlpi_name is the loader's NUL-terminated path of the object.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        let path = Path::new(OsStr::from_bytes(bytes));
        if path
            .file_name()
            .is_some_and(|f| f.as_bytes() == search.file_name)
        {
            search.found = Some(path.to_path_buf());
            return 1; // stop iterating
        }
        0
    }
    let mut search = Search {
        file_name: file_name.as_bytes(),
        found: None,
    };
    // SAFETY: `visit` has the C signature dl_iterate_phdr expects and only touches `search`, through
    // `data`, an exclusive pointer to it; the iteration is synchronous, so `search` outlives every
    // callback, and nothing else borrows it meanwhile.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search<'_>).cast()) };
    search.found.map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_c_library_is_found_mapped_and_a_name_that_is_not_is_not() {
        let libc_path = mapped_library("libc.so.6").expect("every Linux process maps libc");
        assert!(libc_path.is_file(), "{}", libc_path.display());
        assert_eq!(mapped_library("libsda_no_such_library.so"), None);
    }

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
        assert_eq!(std::mem::size_of::<BackendApi>(), 8 + 8 * ptr);
    }

    #[test]
    fn zero_capacity_writes_nothing() {
        let mut buf = [7 as c_char; 1];
        // SAFETY: `buf` is a live one-byte local; with a capacity of 0 nothing may be written at all.
        unsafe { write_message(buf.as_mut_ptr(), 0, "x") };
        assert_eq!(buf[0], 7);
    }
}
