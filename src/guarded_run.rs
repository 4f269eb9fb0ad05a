//! Guarded runs of the host's work.

use crate::context::{context_of, sda_context};
use crate::device::sda_device_kind;
use crate::sized::{self, check_bool, growable, sda_bool, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::{callback_result, errors_stored, fill_fixed, guard};
use sda_core::error::{Error, Result};
use sda_core::guard::{self as core_guard, GuardOptions, RunReport};
use sda_core::preference::DeviceKind;
use std::ffi::c_void;
use std::os::raw::c_char;

/// The host's work for `sda_guarded_run`: returns an `sda_status` — `SDA_OK`, or
/// `SDA_ERR_OUT_OF_MEMORY` when it ran out of memory (C++ hosts: catch the exception and return
/// `sda_classify_error(e.what())`, or use `sda::guarded_run` from `sda.hpp`, which does that), or any
/// other status for other failures. It must not throw or longjmp through libsda.
pub type sda_work_callback = Option<unsafe extern "C" fn(user_data: *mut c_void) -> i32>;

/// The host's work for `sda_guarded_run_batched`: runs one attempt with `batch_size` samples and
/// `accumulation_steps` gradient-accumulation steps; returns an `sda_status` as `sda_work_callback`.
pub type sda_batch_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, batch_size: u32, accumulation_steps: u32) -> i32,
>;

/// Options of a guarded run. Initialise them with `SDA_GUARD_OPTIONS_INIT(&options)` (or
/// `sda_guard_options_init(&options, sizeof options)`), then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_guard_options {
    /// `sizeof(sda_guard_options)` as the caller was compiled; set by `sda_guard_options_init`.
    pub struct_size: u32,
    /// The batch the work attempts (the first attempt of a batched run); 0 = not said, and then no
    /// concrete smaller batch can be suggested.
    pub batch_size: u32,
    /// Batched runs: the smallest batch worth trying (default 1).
    pub min_batch: u32,
    /// Batched runs: the most attempts, the first included (default 8).
    pub max_attempts: u32,
    /// Batched runs: keep `batch × accumulation_steps` at the first batch (0 or 1; default 0).
    pub keep_effective_batch: sda_bool,
    /// Memory the work may use, in bytes; 0 = the memory strategy's budget (default 0).
    pub budget_bytes: u64,
    /// Safety margin below the budget, in bytes; 0 = 5 % of the budget (default 0).
    pub margin_bytes: u64,
    /// Names the kind of work (any number the host chooses, e.g. one per model), so that the memory a
    /// successful run measured per sample informs the suggestion after a later failure of the same
    /// work; 0 = the callback function identifies it (default 0).
    pub work_id: u64,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_guard_options {
    struct_size, batch_size, min_batch, max_attempts, keep_effective_batch, budget_bytes,
    margin_bytes, work_id,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    let d = GuardOptions::default();
    sda_guard_options {
        struct_size: std::mem::size_of::<sda_guard_options>() as u32,
        batch_size: d.batch_size,
        min_batch: d.min_batch,
        max_attempts: d.max_attempts,
        keep_effective_batch: d.keep_effective_batch.into(),
        budget_bytes: d.budget_bytes,
        margin_bytes: d.margin_bytes,
        work_id: 0,
        #[cfg(feature = "abi-growth-test")]
        abi_growth_test: 0,
    }
}, check = |o| {
    check_bool(o.keep_effective_batch, "sda_guard_options", "keep_effective_batch").map(|_| ())
});

/// What happened in a guarded run; written even when the run fails (that is what it is for).
/// Initialise it with `SDA_RUN_REPORT_INIT(&report)` so that `struct_size` is set.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_run_report {
    /// `sizeof(sda_run_report)` as the caller was compiled; set by `sda_run_report_init`.
    pub struct_size: u32,
    /// The run's status (the same value the call returns).
    pub status: Status,
    /// Kind of the device the work ran on.
    pub kind: sda_device_kind,
    /// Index of that device.
    pub index: i32,
    /// Batch of the last attempt (0 when not said).
    pub attempted_batch: u32,
    /// Batched runs: the batch that succeeded (0 when none did).
    pub final_batch: u32,
    /// After an out-of-memory failure: a batch predicted to fit the budget, from the measured memory
    /// (0 when it cannot be told, or when not even one sample fits).
    pub suggested_batch: u32,
    /// Gradient-accumulation steps that go with `final_batch` (1 unless `keep_effective_batch`).
    pub accumulation_steps: u32,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts that ran out of memory.
    pub oom_attempts: u32,
    /// 1 when torch allocator figures were measured (the backend is loaded), else 0.
    pub measured: sda_bool,
    /// Highest torch allocation during the last attempt, in bytes.
    pub peak_bytes: u64,
    /// Torch bytes allocated before the last attempt.
    pub memory_before: u64,
    /// Torch bytes allocated after the last attempt and the recovery (cache emptied).
    pub memory_after: u64,
    /// The budget in bytes (after a failure: measured then; after a success: as of the selection).
    pub budget: u64,
    /// Size of the allocation that failed, when the error said (bytes, else 0).
    pub failed_allocation_bytes: u64,
    /// What happened and what to do, for a person; NUL-terminated, truncated to fit.
    pub guidance: [c_char; 1024],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_run_report {
    struct_size, status, kind, index, attempted_batch, final_batch, suggested_batch,
    accumulation_steps, attempts, oom_attempts, measured, peak_bytes, memory_before, memory_after,
    budget, failed_allocation_bytes, guidance,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_run_report is repr(C) of integers, sda_bool, `status` (0 = SDA_OK), `kind`
    // (0 = SDA_DEVICE_KIND_CPU) and a c_char array (0 = empty string): all-zero bytes are valid.
    unsafe { zeroed_with_size() }
});

/// Initialises guard options with the library's defaults: no batch said, min batch 1, 8 attempts,
/// the strategy's budget. `size` is the caller's `sizeof(sda_guard_options)`
/// (`SDA_GUARD_OPTIONS_INIT(&options)` passes it); see the header's rule for structs that grow.
///
/// Errors: `SDA_ERR_NULL_POINTER`; `SDA_ERR_INVALID_ARGUMENT` for a size smaller than 4 or ending
/// inside a field.
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_guard_options_init(options: *mut sda_guard_options, size: usize) -> Status {
    guard(|| sized::init(options, size, "options"))
}

/// Initialises an empty run report (`struct_size` = `size`, the caller's
/// `sizeof(sda_run_report)`; `SDA_RUN_REPORT_INIT(&report)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_run_report_init(report: *mut sda_run_report, size: usize) -> Status {
    guard(|| sized::init(report, size, "report"))
}

/// Reads guard options (NULL = the defaults).
pub(crate) fn read_options(options: *const sda_guard_options) -> Result<GuardOptions> {
    let Some(o) = sized::read_input(options, "options")? else {
        return Ok(GuardOptions::default());
    };
    Ok(GuardOptions {
        batch_size: o.batch_size,
        min_batch: o.min_batch,
        max_attempts: o.max_attempts,
        keep_effective_batch: o.keep_effective_batch == 1,
        budget_bytes: o.budget_bytes,
        margin_bytes: o.margin_bytes,
        work_id: o.work_id,
    })
}

/// Fills the caller's report (when given) from the core's.
pub(crate) fn write_report(
    dst: Option<Out<sda_run_report>>,
    context_kind: (DeviceKind, i32),
    r: &RunReport,
) {
    let Some(dst) = dst else {
        return;
    };
    let mut out = sda_run_report::defaults();
    out.status = r.error.map_or(Status::SDA_OK, Status::from);
    out.kind = context_kind.0.into();
    out.index = context_kind.1;
    out.attempted_batch = r.attempted_batch;
    out.final_batch = r.final_batch;
    out.suggested_batch = r.suggested_batch;
    out.accumulation_steps = r.accumulation_steps;
    out.attempts = r.attempts;
    out.oom_attempts = r.oom_attempts;
    out.measured = r.measured.into();
    out.peak_bytes = r.peak_bytes;
    out.memory_before = r.memory_before;
    out.memory_after = r.memory_after;
    out.budget = r.budget;
    out.failed_allocation_bytes = r.failed_allocation_bytes;
    fill_fixed(&mut out.guidance, &r.guidance);
    dst.write(&out);
}

/// The work's identity for remembering its memory cost: the callback's code address. Not the user
/// data: wrappers such as `sda.hpp` pass a fresh stack address on every call, while the callback is
/// one function per kind of work.
fn work_id_of(callback: usize) -> u64 {
    (callback as u64).max(1)
}

fn run_guarded(
    context: *const sda_context,
    options: *const sda_guard_options,
    report: *mut sda_run_report,
    (batched, key): (bool, u64),
    call: &mut dyn FnMut(u32, u32) -> i32,
) -> Result<()> {
    let context = context_of(context)?;
    let mut options = read_options(options)?;
    if options.work_id == 0 {
        options.work_id = key;
    }
    let report = Out::optional(report, "report")?;
    if batched && options.batch_size == 0 {
        return Err(Error::invalid_argument(
            "options->batch_size must be the first batch to try (>= 1) for a batched run".into(),
        ));
    }
    let mut work = |batch: u32, accumulation: u32| {
        let errors_before = errors_stored();
        callback_result(
            call(batch, accumulation),
            errors_before,
            "the work callback",
        )
    };
    let (result, run_report) = if batched {
        core_guard::run_batched(&context, &options, &mut work)
    } else {
        core_guard::run(&context, &options, &mut work)
    };
    let device = (
        run_report.kind.unwrap_or(DeviceKind::Cpu),
        run_report.index as i32,
    );
    write_report(report, device, &run_report);
    result
}

/// Runs `work(user_data)` on the context's selected device under guard.
///
/// When the work reports an out-of-memory error, libsda recovers after the work has returned (its
/// frame is gone, nothing of the failed attempt is referenced by libsda), empties the device cache
/// (on CPU: returns free heap pages to the system), and returns `SDA_ERR_OUT_OF_MEMORY` with guidance
/// in `report->guidance` and `sda_last_error_message()`: what happened in numbers, a concrete smaller
/// batch computed from the measured peak and the budget when `options->batch_size` says which batch
/// was attempted, and the other ways out (closing other GPU work, `PYTORCH_CUDA_ALLOC_CONF`,
/// `device=cpu`). libsda never switches to the CPU by itself. Other failures return the work's own
/// status and message, unchanged.
///
/// The suggestion uses two measurements: the failed attempt (its peak plus the allocation that failed,
/// a lower bound of what the batch needs) and, when this context ran the same work (`options->work_id`,
/// else the same callback function) successfully before with `options->batch_size` set, the memory
/// one sample cost then.
///
/// `options` and `report` may be NULL. The report, when given, is written whether the run succeeds or
/// fails. Measuring needs the torch backend: a guarded run loads it when it is not loaded yet (without
/// it the run still works, with `report->measured` false).
///
/// Thread safety: [thread-safe]; the work runs on the calling thread. Overhead without a failure:
/// well under a microsecond (see BENCHMARKS.md).
#[no_mangle]
pub extern "C" fn sda_guarded_run(
    context: *const sda_context,
    work: sda_work_callback,
    user_data: *mut c_void,
    options: *const sda_guard_options,
    report: *mut sda_run_report,
) -> Status {
    guard(|| {
        let work = work.ok_or_else(|| Error::null_pointer("work is NULL".into()))?;
        let key = work_id_of(work as usize);
        // SAFETY: `work` is the host's non-null callback (checked above), passed in this very call
        // together with `user_data`, and sda_guarded_run calls it with exactly that user_data, on the
        // calling thread, before returning. sda_work_callback's contract is that it returns a status
        // and does not throw or longjmp through libsda.
        let mut call = |_batch: u32, _accumulation: u32| unsafe { work(user_data) };
        run_guarded(context, options, report, (false, key), &mut call)
    })
}

/// Runs `work(user_data, batch, accumulation_steps)` under guard, starting at
/// `options->batch_size` (required, >= 1). After each out-of-memory failure it recovers as
/// `sda_guarded_run` does and retries with a smaller batch chosen from the measured memory (not a
/// fixed fraction), down to `options->min_batch`, at most `options->max_attempts` times; every
/// retry is logged as a warning. With `keep_effective_batch` the accumulation steps grow so that
/// `batch × steps` stays at the first batch. `report->final_batch` holds the batch that fit.
///
/// Thread safety: [thread-safe]; the work runs on the calling thread.
#[no_mangle]
pub extern "C" fn sda_guarded_run_batched(
    context: *const sda_context,
    work: sda_batch_callback,
    user_data: *mut c_void,
    options: *const sda_guard_options,
    report: *mut sda_run_report,
) -> Status {
    guard(|| {
        let work = work.ok_or_else(|| Error::null_pointer("work is NULL".into()))?;
        let key = work_id_of(work as usize);
        // SAFETY: `work` is the host's non-null callback (checked above), passed in this call with
        // `user_data`, and is called only with that user_data, on the calling thread, before
        // sda_guarded_run_batched returns; batch and step counts are plain integers.
        // sda_batch_callback's contract is that it does not throw or longjmp through libsda.
        let mut call =
            |batch: u32, accumulation: u32| unsafe { work(user_data, batch, accumulation) };
        run_guarded(context, options, report, (true, key), &mut call)
    })
}
