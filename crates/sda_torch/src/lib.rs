//! libsda's torch backend module (`libsda_torch.so`): every use of libtorch lives here.
//!
//! The core library never links libtorch; it `dlopen`s this module on first need, so a host that never
//! touches torch never pays libtorch's start-up cost. The module exports exactly one dynamic symbol,
//! [`sda_torch_backend_entry`], which hands out a static [`BackendApi`] table (see `sda_backend_abi`).
//!
//! Rules kept by every function in the table:
//! - nothing unwinds across the boundary: Rust panics are caught here (status `STATUS_PANIC`), C++
//!   exceptions in the shim and inside tch's own wrappers;
//! - nothing prints, aborts or exits (this module's panic hook is silent: each cdylib carries its own
//!   copy of std, so the hook does not affect the host's panics);
//! - nothing asks libtorch about accelerators before `load_cuda` has succeeded (or MPS is known to
//!   exist), because the first such question latches libtorch's CPU-only answer for the process.
//!
//! Arguments: `kind` is one of `DEVICE_CPU`, `DEVICE_CUDA`, `DEVICE_MPS` and `index` must be `>= 0`
//! (else `STATUS_INVALID_ARGUMENT`); the CPU has only index 0 and MPS only index 0 (another index is
//! `STATUS_UNAVAILABLE`, like a CUDA index beyond the device count).

#![deny(missing_docs)]

mod ffi;
mod libtorch;
mod model;

use std::any::Any;
use std::cell::RefCell;
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use sda_backend_abi::{
    write_fixed, write_message, BackendApi, BackendFacts, Conv1dWorkload, ErrBuf, MemoryStats,
    ABI_VERSION, DEVICE_CPU, DEVICE_CUDA, DEVICE_MPS, STATUS_INVALID_ARGUMENT, STATUS_OK,
    STATUS_OUT_OF_MEMORY, STATUS_PANIC, STATUS_TORCH_ERROR, STATUS_UNAVAILABLE,
};
use tch::{Device, Kind, Tensor};

// The C++ shim hard-codes these values (it cannot include a Rust crate): keep them in step.
const _: () = {
    assert!(STATUS_OK == 0 && STATUS_UNAVAILABLE == 1 && STATUS_OUT_OF_MEMORY == 2);
    assert!(STATUS_TORCH_ERROR == 3 && STATUS_INVALID_ARGUMENT == 5);
    assert!(DEVICE_CPU == 0 && DEVICE_CUDA == 1 && DEVICE_MPS == 2);
};

/// libtorch version this module was compiled against (from build.rs).
const BUILT_VERSION: &str = env!("SDA_BUILT_LIBTORCH_VERSION");
/// libtorch `lib/` directory this module was linked against, also its rpath (from build.rs).
const BUILT_DIR: &str = env!("SDA_BUILT_LIBTORCH_DIR");

// The exported record `sda_torch_built_libtorch` ("VERSION\nDIR"), which the core reads from the file
// without loading the module (sda_backend_abi::BUILT_LIBTORCH_SYMBOL; written by build.rs).
include!(concat!(env!("OUT_DIR"), "/built_libtorch.rs"));
const _: () = assert!(sda_torch_built_libtorch.len() == sda_backend_abi::BUILT_LIBTORCH_LEN);

/// A failed call: the status to return and the message to write.
#[derive(Debug)]
pub(crate) struct Failure {
    status: i32,
    message: String,
}

impl Failure {
    /// A failure with `status` and `message`.
    pub(crate) fn new(status: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Result type of the table's function bodies.
type Outcome = Result<(), Failure>;

thread_local! {
    /// Where the last panic on this thread happened, recorded by the silent hook (the payload
    /// carries the why).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic hook (which prints to stderr) with one that only records the
/// location; the message reaches the caller through the error buffer instead.
fn install_silent_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "unknown location".to_string());
        let _ = LAST_PANIC.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = Some(location);
            }
        });
    }));
}

/// Text of a caught panic payload, with the location the hook recorded.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string());
    let location = LAST_PANIC
        .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten();
    match location {
        Some(at) => format!("panic in the torch backend at {at}: {what}"),
        None => format!("panic in the torch backend: {what}"),
    }
}

/// Runs a table function's body: catches panics, and turns a [`Failure`] into its status and message.
///
/// # Safety
/// `err` must be NULL or valid for `err_cap` bytes of writes.
unsafe fn guarded(err: ErrBuf, err_cap: usize, body: impl FnOnce() -> Outcome) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => STATUS_OK,
        Ok(Err(failure)) => {
            write_message(err, err_cap, &failure.message);
            failure.status
        }
        Err(payload) => {
            // Building the message allocates; if that panics too, still return PANIC.
            let msg = catch_unwind(AssertUnwindSafe(|| panic_message(&*payload)))
                .unwrap_or_else(|_| "panic in the torch backend".to_string());
            write_message(err, err_cap, &msg);
            STATUS_PANIC
        }
    }
}

/// Calls a shim function with a scratch message buffer and turns a non-OK status into a [`Failure`].
///
/// `call` receives a pointer to a live 1024-byte buffer on this stack frame and that length: exactly
/// the `(err, cap)` pair every shim function needs (it writes at most `cap` bytes there, NUL
/// included, and catches every C++ exception, so nothing unwinds out of it).
fn shim(call: impl FnOnce(*mut c_char, usize) -> i32) -> Outcome {
    let mut buf = [0 as c_char; 1024];
    let status = call(buf.as_mut_ptr(), buf.len());
    if status == STATUS_OK {
        Ok(())
    } else {
        Err(Failure::new(status, sda_backend_abi::read_fixed(&buf)))
    }
}

/// Installs the counting CPU allocator and the silent panic hook, once per process, before the table
/// is first handed out (so before this module creates any tensor).
fn init_once() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        install_silent_panic_hook();
        // A failure leaves libtorch's own allocator in place; CPU memory_stats then reports
        // STATUS_UNAVAILABLE (it checks that the counter is active) instead of wrong numbers.
        // SAFETY: the shim function takes only `shim`'s live `(err, cap)` buffer; it is declared in
        // ffi.rs with the signature of sda_shim.cpp, and swapping the allocator here, inside
        // `Once`, happens before this module has created any tensor.
        let _ = shim(|e, c| unsafe { ffi::sda_shim_install_cpu_counter(e, c) });
    });
}

/// Which device a `(kind, index)` pair names, after argument checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Cpu,
    Cuda(i32),
    Mps,
}

/// Validates `(kind, index)`; does not ask libtorch anything.
fn target(kind: i32, index: i32) -> Result<Target, Failure> {
    if index < 0 {
        return Err(Failure::new(
            STATUS_INVALID_ARGUMENT,
            format!("device index {index} is negative"),
        ));
    }
    match kind {
        DEVICE_CPU if index == 0 => Ok(Target::Cpu),
        DEVICE_CPU => Err(Failure::new(
            STATUS_UNAVAILABLE,
            format!("no cpu device with index {index} (only 0)"),
        )),
        DEVICE_CUDA => Ok(Target::Cuda(index)),
        DEVICE_MPS if index == 0 => Ok(Target::Mps),
        DEVICE_MPS => Err(Failure::new(
            STATUS_UNAVAILABLE,
            format!("no mps device with index {index} (only 0)"),
        )),
        other => Err(Failure::new(
            STATUS_INVALID_ARGUMENT,
            format!("unknown device kind {other}"),
        )),
    }
}

/// `at::hasMPS()` through the shim (safe before `load_cuda`: it does not latch anything).
fn has_mps() -> Result<bool, Failure> {
    let mut out = 0u8;
    // SAFETY: `out` is a live `uint8_t` local and `(e, c)` is `shim`'s live message buffer, as the
    // shim's declaration in ffi.rs (matching sda_shim.cpp) requires.
    shim(|e, c| unsafe { ffi::sda_shim_has_mps(&mut out, e, c) })?;
    Ok(out == 1)
}

/// Number of CUDA devices libtorch sees. Only called once CUDA is loaded (else it would latch).
fn cuda_device_count() -> Result<i32, Failure> {
    let mut out = 0i32;
    // SAFETY: `out` is a live `int32_t` local and `(e, c)` is `shim`'s live message buffer, as the
    // shim's declaration in ffi.rs (matching sda_shim.cpp) requires; any `kind` is checked there.
    shim(|e, c| unsafe { ffi::sda_shim_device_count(DEVICE_CUDA, &mut out, e, c) })?;
    Ok(out)
}

/// Confirms that an accelerator target may be asked about and exists; returns the shim's kind code
/// and index. For CUDA this is what keeps every accelerator query behind a successful `load_cuda`
/// and every device index below the count (an unchecked index can abort inside libtorch).
fn accelerator(target: Target) -> Result<(i32, i32), Failure> {
    match target {
        Target::Cpu => Err(Failure::new(
            STATUS_INVALID_ARGUMENT,
            "cpu is not an accelerator",
        )),
        Target::Cuda(index) => {
            if !libtorch::cuda_loaded() {
                return Err(Failure::new(
                    STATUS_UNAVAILABLE,
                    "CUDA is not loaded in this process (load_cuda has not succeeded)",
                ));
            }
            let count = cuda_device_count()?;
            if index >= count {
                return Err(Failure::new(
                    STATUS_UNAVAILABLE,
                    format!("no cuda device with index {index} (libtorch sees {count})"),
                ));
            }
            Ok((DEVICE_CUDA, index))
        }
        Target::Mps => {
            if !has_mps()? {
                return Err(Failure::new(
                    STATUS_UNAVAILABLE,
                    "libtorch reports no usable MPS device",
                ));
            }
            Ok((DEVICE_MPS, 0))
        }
    }
}

/// The tch device of a validated target; accelerators go through [`accelerator`] first, so CUDA is
/// only named once it is loaded and the index is below the device count.
fn device(target: Target) -> Result<Device, Failure> {
    match target {
        Target::Cpu => Ok(Device::Cpu),
        _ => {
            let (kind, index) = accelerator(target)?;
            if kind == DEVICE_MPS {
                Ok(Device::Mps)
            } else {
                // Non-negative and below the device count: checked by target/accelerator.
                Ok(Device::Cuda(index as usize))
            }
        }
    }
}

/// libtorch's error text without the C++ backtrace that release builds append after the message.
fn torch_message(err: &tch::TchError) -> String {
    let text = match err {
        tch::TchError::Torch(msg) => msg.clone(),
        other => other.to_string(),
    };
    let cut = ["\nException raised from", "\nFrames:"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    let text = text[..cut].trim_end();
    // The CPU allocator's failure comes through CAFFE_ENFORCE: "[enforce fail at alloc_cpu.cpp:127]
    // err == 0. DefaultCPUAllocator: can't allocate memory: ...". The prefix is libtorch's source
    // location and condition, no help to a user.
    let text = match (
        text.starts_with("[enforce fail at"),
        text.find("DefaultCPUAllocator:"),
    ) {
        (true, Some(at)) => &text[at..],
        _ => text,
    };
    text.to_string()
}

/// Maps a libtorch error to `STATUS_OUT_OF_MEMORY` when its text is one of libtorch's OOM messages
/// (tch keeps only the message, not the exception type), else `STATUS_TORCH_ERROR`.
fn torch_failure(context: &str, err: &tch::TchError) -> Failure {
    let msg = torch_message(err);
    let lower = msg.to_lowercase();
    let oom = [
        "out of memory",
        "can't allocate memory",
        "not enough memory",
    ]
    .iter()
    .any(|m| lower.contains(m));
    let status = if oom {
        STATUS_OUT_OF_MEMORY
    } else {
        STATUS_TORCH_ERROR
    };
    Failure::new(status, format!("{context}: {msg}"))
}

/// The smoke test proper: only fallible `f_*` tch calls (the plain ones panic on error).
fn run_smoke(device: Device) -> Result<f64, tch::TchError> {
    let options = (Kind::Float, device);
    let a = Tensor::f_rand([32, 32], options)?;
    let b = Tensor::f_rand([32, 32], options)?;
    let product = a.f_matmul(&b)?;
    let sum = product.f_sum(Kind::Float)?;
    let on_cpu = sum.f_to(Device::Cpu)?;
    on_cpu.f_double_value(&[])
}

/// The built-in workload's tensor sizes, checked and converted to libtorch's `i64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Conv1dPlan {
    batch: i64,
    in_channels: i64,
    sample_length: i64,
    out_channels: i64,
    kernel_size: i64,
    padding: i64,
    backward: bool,
    /// Bytes the live tensors need at once (inputs, filters, bias and output; with the backward pass
    /// also the output's gradient and the filters' and bias's gradients). A lower bound of the peak.
    bytes: u64,
}

/// Bytes of one fp32 element.
const F32_BYTES: u64 = 4;

/// Checks a workload and a batch: zero sizes, a `with_backward` other than 0/1 and a kernel longer
/// than the padded sample are `STATUS_INVALID_ARGUMENT`.
fn check_conv1d(w: &Conv1dWorkload, batch: u32) -> Result<(), Failure> {
    let invalid = |msg: String| Failure::new(STATUS_INVALID_ARGUMENT, format!("conv1d: {msg}"));
    let zero: Vec<&str> = [
        ("batch", batch),
        ("in_channels", w.in_channels),
        ("sample_length", w.sample_length),
        ("out_channels", w.out_channels),
        ("kernel_size", w.kernel_size),
    ]
    .iter()
    .filter(|(_, v)| *v == 0)
    .map(|(name, _)| *name)
    .collect();
    if !zero.is_empty() {
        return Err(invalid(format!("{} must not be 0", zero.join(", "))));
    }
    if w.with_backward > 1 {
        return Err(invalid(format!(
            "with_backward is {}, not 0 or 1",
            w.with_backward
        )));
    }
    if u64::from(w.kernel_size) > padded_length(w) {
        return Err(invalid(format!(
            "kernel_size {} is longer than the padded sample (sample_length {} + 2 * padding {} = {})",
            w.kernel_size,
            w.sample_length,
            w.padding,
            padded_length(w)
        )));
    }
    Ok(())
}

/// `sample_length + 2 * padding`; u32 + 2 * u32 cannot overflow u64.
fn padded_length(w: &Conv1dWorkload) -> u64 {
    u64::from(w.sample_length) + 2 * u64::from(w.padding)
}

/// Checks a workload and a batch ([`check_conv1d`]) and computes the sizes with checked `u64`
/// arithmetic: tensors that would need more than 2^63 bytes together (which overflow libtorch's
/// sizes and fit on no device) are `STATUS_OUT_OF_MEMORY`.
fn plan_conv1d(w: &Conv1dWorkload, batch: u32) -> Result<Conv1dPlan, Failure> {
    check_conv1d(w, batch)?;
    // kernel_size <= padded_length: checked above.
    let output_length = padded_length(w) - u64::from(w.kernel_size) + 1;
    let backward = w.with_backward == 1;

    let too_big = || {
        Failure::new(
            STATUS_OUT_OF_MEMORY,
            format!("conv1d: batch {batch} needs more than 2^63 bytes"),
        )
    };
    let mul = |a: u64, b: u64| a.checked_mul(b).ok_or_else(too_big);
    let (b, cin, len, cout, k) = (
        u64::from(batch),
        u64::from(w.in_channels),
        u64::from(w.sample_length),
        u64::from(w.out_channels),
        u64::from(w.kernel_size),
    );
    let input = mul(mul(b, cin)?, len)?;
    let weight = mul(mul(cout, cin)?, k)?;
    let bias = cout;
    let output = mul(mul(b, cout)?, output_length)?;
    // The backward pass adds the output's gradient and the weight's and bias's gradients.
    let copies = |n: u64| if backward { mul(n, 2) } else { Ok(n) };
    let elements = [input, copies(weight)?, copies(bias)?, copies(output)?]
        .iter()
        .try_fold(0u64, |acc, &n| acc.checked_add(n))
        .ok_or_else(too_big)?;
    let bytes = mul(elements, F32_BYTES)?;
    if bytes > i64::MAX as u64 {
        return Err(too_big());
    }
    // Every factor is at most the element count, which is below 2^63 now; the u32 fields fit anyway.
    Ok(Conv1dPlan {
        batch: i64::from(batch),
        in_channels: i64::from(w.in_channels),
        sample_length: i64::from(w.sample_length),
        out_channels: i64::from(w.out_channels),
        kernel_size: i64::from(w.kernel_size),
        padding: i64::from(w.padding),
        backward,
        bytes,
    })
}

/// Runs the workload once on `device`: only fallible `f_*` tch calls. Every tensor is a local of this
/// function, so all of them are freed when it returns, on success and on error alike. Returns the
/// sum of the output (and, with the backward pass, the sum of the filters' gradient), read on the
/// CPU so that the work cannot be skipped.
fn run_conv1d(plan: &Conv1dPlan, device: Device) -> Result<(f64, Option<f64>), tch::TchError> {
    let options = (Kind::Float, device);
    let forward = |weight: &Tensor, bias: &Tensor| -> Result<Tensor, tch::TchError> {
        let input = Tensor::f_randn([plan.batch, plan.in_channels, plan.sample_length], options)?;
        input.f_conv1d(weight, Some(bias), [1], [plan.padding], [1], 1)
    };
    let weight = Tensor::f_randn(
        [plan.out_channels, plan.in_channels, plan.kernel_size],
        options,
    )?;
    let bias = Tensor::f_randn([plan.out_channels], options)?;
    if !plan.backward {
        // No autograd graph: only the inputs, filters and output are held. The guard restores the
        // thread's grad mode on every way out.
        let _no_grad = tch::no_grad_guard();
        let output = forward(&weight, &bias)?;
        let sum = output.f_sum(Kind::Float)?.f_to(Device::Cpu)?;
        drop(output);
        return Ok((sum.f_double_value(&[])?, None));
    }
    // Gradients of the filters and bias (the input is data, not a parameter). Grad mode is enabled
    // explicitly in case the calling thread turned it off.
    tch::with_grad(|| {
        let weight = weight.f_set_requires_grad(true)?;
        let bias = bias.f_set_requires_grad(true)?;
        let output = forward(&weight, &bias)?;
        let loss = output.f_sum(Kind::Float)?;
        drop(output); // the graph keeps what the backward pass needs
        loss.f_backward()?;
        let value = loss.f_detach()?.f_to(Device::Cpu)?.f_double_value(&[])?;
        drop(loss); // frees the graph
        let grad = weight.f_grad()?;
        let grad_sum = grad
            .f_sum(Kind::Float)?
            .f_to(Device::Cpu)?
            .f_double_value(&[])?;
        Ok((value, Some(grad_sum)))
    })
}

// ---------------------------------------------------------------------------------------------
// The table's functions
// ---------------------------------------------------------------------------------------------

/// `BackendApi::facts`: build-time facts, the mapped libtorch, and CUDA/MPS state (CUDA devices are
/// counted only once CUDA is loaded).
unsafe extern "C" fn api_facts(out: *mut BackendFacts, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        if out.is_null() {
            return Err(Failure::new(STATUS_INVALID_ARGUMENT, "facts: out is NULL"));
        }
        // SAFETY: BackendFacts is plain data (`c_char` arrays, `u8`s and an `i32`, no pointer, no
        // enum, no reference), for which the all-zero bit pattern is a valid value.
        let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
        write_fixed(&mut facts.built_libtorch_version, BUILT_VERSION);
        write_fixed(&mut facts.built_libtorch_dir, BUILT_DIR);
        if let Some(path) = libtorch::mapped_libtorch_cpu() {
            write_fixed(&mut facts.loaded_libtorch_path, &path.to_string_lossy());
        }
        facts.cuda_build = u8::from(libtorch::cuda_lib_path().is_some_and(|p| p.is_file()));
        let loaded = libtorch::cuda_loaded();
        facts.cuda_loaded = u8::from(loaded);
        facts.mps_available = u8::from(has_mps()?);
        // Asking before load_cuda would latch the CPU-only answer for the process.
        facts.cuda_device_count = if loaded { cuda_device_count()? } else { 0 };
        // SAFETY: `out` was checked non-NULL above, and the table's contract (sda_backend_abi)
        // makes the caller pass a pointer valid and aligned for one `BackendFacts` write; `write`
        // drops nothing (BackendFacts is `Copy`).
        unsafe { out.write(facts) };
        Ok(())
    })
}

/// `BackendApi::load_cuda`: see [`libtorch::load_cuda`].
unsafe extern "C" fn api_load_cuda(err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, libtorch::load_cuda)
}

/// `BackendApi::set_memory_fraction`: arguments first (a fraction outside (0, 1] is
/// `STATUS_INVALID_ARGUMENT` whatever the device), then availability. On CUDA the setting is
/// process-wide (libtorch has no per-device form of `per_process_memory_fraction`).
unsafe extern "C" fn api_set_memory_fraction(
    kind: i32,
    index: i32,
    fraction: f64,
    err: ErrBuf,
    err_cap: usize,
) -> i32 {
    guarded(err, err_cap, || {
        let target = target(kind, index)?;
        if !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0) {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                format!("memory fraction {fraction} is outside (0, 1]"),
            ));
        }
        if target == Target::Cpu {
            return Err(Failure::new(
                STATUS_UNAVAILABLE,
                "the CPU allocator has no memory fraction",
            ));
        }
        let (kind, index) = accelerator(target)?;
        // SAFETY: plain values and `shim`'s live `(err, cap)` buffer, matching the declaration in
        // ffi.rs; `accelerator` has checked that CUDA is loaded and the index below the count.
        shim(|e, c| unsafe { ffi::sda_shim_set_memory_fraction(kind, index, fraction, e, c) })
    })
}

/// `BackendApi::smoke_test`: a 32×32 matmul on the device, summed and read back on the CPU.
unsafe extern "C" fn api_smoke_test(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        let device = device(target(kind, index)?)?;
        let value = run_smoke(device)
            .map_err(|e| torch_failure(&format!("smoke test on {device:?}"), &e))?;
        if value.is_finite() {
            Ok(())
        } else {
            Err(Failure::new(
                STATUS_TORCH_ERROR,
                format!("smoke test on {device:?}: the result is {value}, not a finite number"),
            ))
        }
    })
}

/// `BackendApi::memory_stats`: the counting allocator on the CPU, the caching allocator's statistics
/// and the device's free/total memory on an accelerator.
unsafe extern "C" fn api_memory_stats(
    kind: i32,
    index: i32,
    out: *mut MemoryStats,
    err: ErrBuf,
    err_cap: usize,
) -> i32 {
    guarded(err, err_cap, || {
        if out.is_null() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                "memory_stats: out is NULL",
            ));
        }
        let target = target(kind, index)?;
        let mut stats = MemoryStats::default();
        if target == Target::Cpu {
            let mut active = 0u8;
            // SAFETY: `active` is a live `uint8_t` local and `(e, c)` is `shim`'s live message
            // buffer, as the declaration in ffi.rs (matching sda_shim.cpp) requires.
            shim(|e, c| unsafe { ffi::sda_shim_cpu_counter_active(&mut active, e, c) })?;
            if active != 1 {
                return Err(Failure::new(
                    STATUS_UNAVAILABLE,
                    "CPU allocator statistics are unavailable: libtorch's CPU allocator is not the \
                     backend's counting allocator (the host installed its own)",
                ));
            }
            let (mut current, mut peak, mut ooms) = (0u64, 0u64, 0u64);
            // SAFETY: three live `u64` locals as the out-pointers ffi.rs declares; the shim only reads
            // atomics into them, so it cannot fail or throw.
            unsafe { ffi::sda_shim_cpu_counts(&mut current, &mut peak, &mut ooms) };
            // The CPU allocator does not cache, so reserved == allocated; free/total come from the
            // host (the core fills them).
            stats.allocated = current;
            stats.reserved = current;
            stats.peak_allocated = peak;
            stats.peak_reserved = peak;
            stats.num_ooms = ooms;
        } else {
            let (kind, index) = accelerator(target)?;
            let s = &mut stats;
            // SAFETY: seven out-pointers to distinct `u64` fields of the live `stats` local and
            // `shim`'s live `(err, cap)` buffer, as declared in ffi.rs; `accelerator` has checked
            // that the device may be asked about and that the index exists.
            shim(|e, c| unsafe {
                ffi::sda_shim_memory_stats(
                    kind,
                    index,
                    &mut s.allocated,
                    &mut s.reserved,
                    &mut s.peak_allocated,
                    &mut s.peak_reserved,
                    &mut s.free,
                    &mut s.total,
                    &mut s.num_ooms,
                    e,
                    c,
                )
            })?;
        }
        // SAFETY: `out` was checked non-NULL above, and the table's contract (sda_backend_abi)
        // makes the caller pass a pointer valid and aligned for one `MemoryStats` write; `write`
        // drops nothing (MemoryStats is `Copy`).
        unsafe { out.write(stats) };
        Ok(())
    })
}

/// `BackendApi::empty_cache`: a no-op on the CPU (its allocator keeps no cache).
unsafe extern "C" fn api_empty_cache(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        let target = target(kind, index)?;
        if target == Target::Cpu {
            return Ok(()); // the CPU allocator keeps no cache
        }
        let (kind, index) = accelerator(target)?;
        // SAFETY: plain values and `shim`'s live `(err, cap)` buffer, matching the declaration in
        // ffi.rs; `accelerator` has checked the device may be asked about and the index exists.
        shim(|e, c| unsafe { ffi::sda_shim_empty_cache(kind, index, e, c) })
    })
}

/// `BackendApi::reset_peak`: on the CPU the peak restarts at the current byte count.
unsafe extern "C" fn api_reset_peak(kind: i32, index: i32, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        let target = target(kind, index)?;
        if target == Target::Cpu {
            // SAFETY: takes no argument and only stores to the counting allocator's atomics, so it
            // cannot fail or throw (declared in ffi.rs as in sda_shim.cpp).
            unsafe { ffi::sda_shim_cpu_reset_peak() };
            return Ok(());
        }
        let (kind, index) = accelerator(target)?;
        // SAFETY: plain values and `shim`'s live `(err, cap)` buffer, matching the declaration in
        // ffi.rs; `accelerator` has checked the device may be asked about and the index exists.
        shim(|e, c| unsafe { ffi::sda_shim_reset_peak(kind, index, e, c) })
    })
}

/// `BackendApi::run_conv1d`: checks in the order arguments (`STATUS_INVALID_ARGUMENT`), device
/// (`STATUS_UNAVAILABLE`), size (`STATUS_OUT_OF_MEMORY` past 2^63 bytes), then runs the workload.
unsafe extern "C" fn api_run_conv1d(
    kind: i32,
    index: i32,
    workload: *const Conv1dWorkload,
    batch: u32,
    err: ErrBuf,
    err_cap: usize,
) -> i32 {
    guarded(err, err_cap, || {
        let target = target(kind, index)?;
        if workload.is_null() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                "conv1d: workload is NULL",
            ));
        }
        // SAFETY: `workload` was checked non-NULL, and the table's contract (sda_backend_abi) makes
        // the caller pass a pointer valid and aligned for reading one `Conv1dWorkload`, plain
        // integers for which any bit pattern is valid; `read` copies it out.
        let workload = unsafe { workload.read() };
        // Argument errors come before the device is looked at, size errors after.
        check_conv1d(&workload, batch)?;
        let device = device(target)?;
        let plan = plan_conv1d(&workload, batch)?;
        let context = || {
            format!(
                "conv1d with batch {batch} on {device:?} (tensors of at least {} bytes)",
                plan.bytes
            )
        };
        let (value, grad) = run_conv1d(&plan, device).map_err(|e| torch_failure(&context(), &e))?;
        for (what, v) in [("output sum", Some(value)), ("filter gradient sum", grad)] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(Failure::new(
                    STATUS_TORCH_ERROR,
                    format!("{}: the {what} is {v}, not a finite number", context()),
                ));
            }
        }
        Ok(())
    })
}

/// The table handed to the core; every pointer is non-null and lives as long as the process (the
/// module is linked `-z nodelete`).
static API: BackendApi = BackendApi {
    abi_version: ABI_VERSION,
    size: std::mem::size_of::<BackendApi>() as u32,
    facts: api_facts,
    load_cuda: api_load_cuda,
    set_memory_fraction: api_set_memory_fraction,
    smoke_test: api_smoke_test,
    memory_stats: api_memory_stats,
    empty_cache: api_empty_cache,
    reset_peak: api_reset_peak,
    run_conv1d: api_run_conv1d,
    model_load: model::api_model_load,
    model_run: model::api_model_run,
    model_free: model::api_model_free,
    model_count: model::api_model_count,
};

/// The module's single exported symbol (`sda_backend_abi::ENTRY_SYMBOL`).
///
/// Returns the static [`BackendApi`] when `abi_version` equals this module's `ABI_VERSION`, else NULL
/// (the core then reports both versions). The first call installs the counting CPU allocator, before
/// this module has created any tensor. Never unwinds: a panic yields NULL.
///
/// # Safety
/// Safe to call from any thread at any time; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn sda_torch_backend_entry(abi_version: u32) -> *const BackendApi {
    catch_unwind(|| {
        if abi_version != ABI_VERSION {
            return std::ptr::null();
        }
        init_once();
        &API as *const BackendApi
    })
    .unwrap_or(std::ptr::null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_texts_map_to_out_of_memory() {
        let cpu = tch::TchError::Torch(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes\nException raised from x"
                .into(),
        );
        let f = torch_failure("ctx", &cpu);
        assert_eq!(f.status, STATUS_OUT_OF_MEMORY);
        assert!(
            !f.message.contains("Exception raised from"),
            "{}",
            f.message
        );
        let enforce = tch::TchError::Torch(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: \
             you tried to allocate 64 bytes. Error code 12 (Cannot allocate memory)"
                .into(),
        );
        let f = torch_failure("ctx", &enforce);
        assert_eq!(f.status, STATUS_OUT_OF_MEMORY);
        assert_eq!(
            f.message,
            "ctx: DefaultCPUAllocator: can't allocate memory: you tried to allocate 64 bytes. \
             Error code 12 (Cannot allocate memory)"
        );
        let cuda = tch::TchError::Torch("CUDA out of memory. Tried to allocate 2.00 GiB".into());
        assert_eq!(torch_failure("ctx", &cuda).status, STATUS_OUT_OF_MEMORY);
        let other = tch::TchError::Torch("mat1 and mat2 shapes cannot be multiplied".into());
        assert_eq!(torch_failure("ctx", &other).status, STATUS_TORCH_ERROR);
    }

    fn fraction_settings(previous: &str, fraction: f64) -> String {
        let previous = std::ffi::CString::new(previous).unwrap();
        let mut out = [0 as c_char; 256];
        // SAFETY: `previous` is a live NUL-terminated CString and `out` a live local writable for
        // the `out.len()` bytes passed, as ffi.rs declares the (test-only) shim function.
        let rc = unsafe {
            ffi::sda_shim_fraction_settings(
                previous.as_ptr(),
                fraction,
                out.as_mut_ptr(),
                out.len(),
            )
        };
        assert_eq!(rc, STATUS_OK);
        sda_backend_abi::read_fixed(&out)
    }

    #[test]
    fn memory_fraction_keeps_the_other_allocator_settings() {
        assert_eq!(
            fraction_settings("", 0.5),
            "per_process_memory_fraction:0.5"
        );
        assert_eq!(
            fraction_settings("expandable_segments:True,roundup_power2_divisions:[256:1,512:2]", 0.25),
            "expandable_segments:True,roundup_power2_divisions:[256:1,512:2],per_process_memory_fraction:0.25"
        );
        // An earlier fraction is replaced, not repeated.
        assert_eq!(
            fraction_settings("per_process_memory_fraction:0.5,max_split_size_mb:128", 1.0),
            "max_split_size_mb:128,per_process_memory_fraction:1"
        );
    }

    /// The seeds' benchmark workload.
    const BENCH: Conv1dWorkload = Conv1dWorkload {
        in_channels: 1,
        sample_length: 48000,
        out_channels: 16,
        kernel_size: 1024,
        padding: 512,
        with_backward: 0,
    };

    #[test]
    fn conv1d_sizes_are_checked_and_counted() {
        let plan = plan_conv1d(&BENCH, 4).unwrap();
        // Output length 48000 + 2 * 512 - 1024 + 1 = 48001.
        let elements = 4 * 48000 + 16 * 1024 + 16 + 4 * 16 * 48001;
        assert_eq!(plan.bytes, 4 * elements);
        assert_eq!(
            (plan.batch, plan.kernel_size, plan.padding, plan.backward),
            (4, 1024, 512, false)
        );
        let with_backward = Conv1dWorkload {
            with_backward: 1,
            ..BENCH
        };
        let plan = plan_conv1d(&with_backward, 4).unwrap();
        assert!(plan.backward);
        assert_eq!(
            plan.bytes,
            4 * (4 * 48000 + 2 * (16 * 1024 + 16 + 4 * 16 * 48001))
        );
        // The kernel may be exactly as long as the padded sample (one output position).
        let exact = Conv1dWorkload {
            sample_length: 10,
            padding: 3,
            kernel_size: 16,
            ..BENCH
        };
        assert!(plan_conv1d(&exact, 1).is_ok());
    }

    #[test]
    fn conv1d_argument_errors_name_the_argument() {
        let e = plan_conv1d(&BENCH, 0).unwrap_err();
        assert_eq!(e.status, STATUS_INVALID_ARGUMENT);
        assert!(e.message.contains("batch"), "{}", e.message);
        let zeros = Conv1dWorkload {
            in_channels: 0,
            kernel_size: 0,
            ..BENCH
        };
        let e = plan_conv1d(&zeros, 1).unwrap_err();
        assert_eq!(e.status, STATUS_INVALID_ARGUMENT);
        assert!(
            e.message.contains("in_channels, kernel_size must not be 0"),
            "{}",
            e.message
        );
        let long = Conv1dWorkload {
            sample_length: 10,
            padding: 3,
            kernel_size: 17,
            ..BENCH
        };
        let e = plan_conv1d(&long, 1).unwrap_err();
        assert_eq!(e.status, STATUS_INVALID_ARGUMENT);
        assert!(e.message.contains("= 16"), "{}", e.message);
        let flag = Conv1dWorkload {
            with_backward: 2,
            ..BENCH
        };
        assert_eq!(
            plan_conv1d(&flag, 1).unwrap_err().status,
            STATUS_INVALID_ARGUMENT
        );
    }

    #[test]
    fn conv1d_batches_past_2_pow_63_bytes_are_out_of_memory() {
        // u64 overflow of the element count.
        let huge = Conv1dWorkload {
            in_channels: u32::MAX,
            sample_length: u32::MAX,
            out_channels: u32::MAX,
            kernel_size: 1,
            padding: 0,
            with_backward: 0,
        };
        let e = plan_conv1d(&huge, u32::MAX).unwrap_err();
        assert_eq!(e.status, STATUS_OUT_OF_MEMORY);
        assert_eq!(
            e.message,
            format!("conv1d: batch {} needs more than 2^63 bytes", u32::MAX)
        );
        // Fits u64 as elements, not as i64 bytes: 2^32 * 2^31 elements of 4 bytes = 2^65 bytes.
        let wide = Conv1dWorkload {
            in_channels: 1,
            sample_length: 1 << 31,
            out_channels: 1,
            kernel_size: 1,
            padding: 0,
            with_backward: 0,
        };
        let e = plan_conv1d(&wide, u32::MAX).unwrap_err();
        assert_eq!(e.status, STATUS_OUT_OF_MEMORY, "{}", e.message);
        // Just below the limit is left to the allocator.
        assert!(plan_conv1d(&wide, 1 << 28).unwrap().bytes < 1 << 63);
    }

    #[test]
    fn arguments_are_checked_before_libtorch_is_asked() {
        assert_eq!(
            target(DEVICE_CPU, -1).unwrap_err().status,
            STATUS_INVALID_ARGUMENT
        );
        assert_eq!(target(7, 0).unwrap_err().status, STATUS_INVALID_ARGUMENT);
        assert_eq!(
            target(DEVICE_CPU, 1).unwrap_err().status,
            STATUS_UNAVAILABLE
        );
        assert_eq!(
            target(DEVICE_MPS, 1).unwrap_err().status,
            STATUS_UNAVAILABLE
        );
        assert_eq!(target(DEVICE_CUDA, 3).unwrap(), Target::Cuda(3));
    }
}
