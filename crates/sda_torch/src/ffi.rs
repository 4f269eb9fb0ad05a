//! Declarations of the C++ shim (`shim/sda_shim.cpp`), compiled by build.rs into this module.
//!
//! Every function returns one of the `STATUS_*` codes and catches every C++ exception itself, so
//! calling them can never unwind into Rust. The ones that query `at::accelerator` latch libtorch's
//! accelerator choice: callers must only reach them once CUDA is loaded or MPS is known present.

use std::os::raw::{c_char, c_int};

extern "C" {
    /// Wraps libtorch's current CPU allocator in the counting allocator (idempotent).
    pub fn sda_shim_install_cpu_counter(err: *mut c_char, cap: usize) -> c_int;
    /// Writes 1 when the counting allocator is the CPU allocator libtorch uses now.
    pub fn sda_shim_cpu_counter_active(out: *mut u8, err: *mut c_char, cap: usize) -> c_int;
    /// Live bytes, peak bytes and allocation failures seen by the counting allocator.
    pub fn sda_shim_cpu_counts(current: *mut u64, peak: *mut u64, ooms: *mut u64);
    /// Starts a new CPU peak window at the current value.
    pub fn sda_shim_cpu_reset_peak();
    /// `at::hasMPS()`; does not latch the accelerator choice.
    pub fn sda_shim_has_mps(out: *mut u8, err: *mut c_char, cap: usize) -> c_int;
    /// Number of devices of `kind` libtorch sees (0 when `kind` is not its accelerator).
    pub fn sda_shim_device_count(kind: c_int, out: *mut i32, err: *mut c_char, cap: usize)
        -> c_int;
    /// Allocator statistics and free/total memory of one accelerator device.
    pub fn sda_shim_memory_stats(
        kind: c_int,
        index: c_int,
        allocated: *mut u64,
        reserved: *mut u64,
        peak_allocated: *mut u64,
        peak_reserved: *mut u64,
        free_bytes: *mut u64,
        total_bytes: *mut u64,
        num_ooms: *mut u64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    /// Empties the caching allocator of one accelerator.
    pub fn sda_shim_empty_cache(kind: c_int, index: c_int, err: *mut c_char, cap: usize) -> c_int;
    /// Resets the peak statistics of one accelerator device.
    pub fn sda_shim_reset_peak(kind: c_int, index: c_int, err: *mut c_char, cap: usize) -> c_int;
    /// The allocator settings string `set_memory_fraction` would apply after `previous` (tests only).
    #[cfg(test)]
    pub fn sda_shim_fraction_settings(
        previous: *const c_char,
        fraction: f64,
        out: *mut c_char,
        cap: usize,
    ) -> c_int;
    /// Sets the per-process memory fraction of an accelerator.
    pub fn sda_shim_set_memory_fraction(
        kind: c_int,
        index: c_int,
        fraction: f64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    /// Loads a model file (TorchScript, or an AOTInductor package when the name ends in `.pt2`)
    /// onto a validated device; writes a non-zero handle, the parameter and buffer bytes and the
    /// format (`MODEL_FORMAT_*`). On failure nothing is registered and `handle` is 0.
    pub fn sda_shim_model_load(
        path: *const c_char,
        kind: c_int,
        index: c_int,
        handle: *mut u64,
        param_bytes: *mut u64,
        buffer_bytes: *mut u64,
        format: *mut i32,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    /// Runs a loaded model once on a random input of the `len` sizes at `sizes` (the batch first).
    pub fn sda_shim_model_run(
        handle: u64,
        sizes: *const i64,
        len: usize,
        dtype: c_int,
        train: u8,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    /// Frees a loaded model; `STATUS_INVALID_ARGUMENT` for a handle that is not loaded.
    pub fn sda_shim_model_free(handle: u64, err: *mut c_char, cap: usize) -> c_int;
    /// Number of models loaded now.
    pub fn sda_shim_model_count() -> u64;
}
