//! Batch probing.

use crate::config::{config_of, sda_config};
use crate::context::{context_of, sda_context};
use crate::model::{model_for, sda_model};
use crate::sized::{self, growable, sda_bool, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::workload::{read_workload, sda_workload};
use crate::{callback_result, errors_stored, guard};
use sda_core::error::{Error, Result};
use sda_core::probe::{self, ProbeOptions, ProbeProgress, ProbeWorkload, StopReason};
use std::ffi::c_void;

/// Why the search stopped.
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_probe_stop {
    /// The largest batch under the budget was found (the normal case).
    Budget = 0,
    /// `max_batch` fits: the true maximum may be higher (`capped` is set).
    MaxBatch = 1,
    /// Even `min_batch` does not fit the budget or runs out of memory.
    OutOfMemory = 2,
    /// The progress callback asked to stop.
    Cancelled = 3,
}

impl From<StopReason> for sda_probe_stop {
    fn from(stop: StopReason) -> sda_probe_stop {
        match stop {
            StopReason::Budget => sda_probe_stop::Budget,
            StopReason::MaxBatch => sda_probe_stop::MaxBatch,
            StopReason::OutOfMemory => sda_probe_stop::OutOfMemory,
            StopReason::Cancelled => sda_probe_stop::Cancelled,
        }
    }
}

/// A custom probe workload: runs the host's work once with `batch` samples and returns an
/// `sda_status` (`SDA_ERR_OUT_OF_MEMORY` when it ran out; pass an exception's text to
/// `sda_set_error_message` first). Must not throw or longjmp through libsda.
pub type sda_probe_workload_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, batch: u32) -> i32>;

/// Progress of a probe after each run; valid only during the call. libsda fills it: `struct_size` is
/// the library's `sizeof(sda_probe_progress)`, and a callback reads only the fields that lie within
/// it (a program built against a newer header may meet an older library, with fewer fields).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_probe_progress {
    /// `sizeof(sda_probe_progress)` as the library was compiled.
    pub struct_size: u32,
    /// Batch of the run that just finished.
    pub batch: u32,
    /// 1 when the run completed, else 0.
    pub ok: sda_bool,
    /// 1 when the run ran out of memory, else 0.
    pub oom: sda_bool,
    /// Peak bytes the run used above what was allocated before it.
    pub peak_bytes: u64,
    /// What the fitted line predicted for this batch (0 for the measuring runs).
    pub predicted_bytes: u64,
    /// Wall time of the run in milliseconds.
    pub elapsed_ms: f64,
    /// Runs so far.
    pub runs: u32,
    /// Largest batch that fitted so far (0 = none yet).
    pub best_batch: u32,
    /// The budget in bytes.
    pub budget_bytes: u64,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_probe_progress {
    struct_size, batch, ok, oom, peak_bytes, predicted_bytes, elapsed_ms, runs, best_batch,
    budget_bytes,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_probe_progress is repr(C) of integers, sda_bool and an f64: all-zero bytes are valid.
    unsafe { zeroed_with_size() }
});

/// The progress callback: return `true` to go on, `false` to cancel the probe (it then returns
/// `SDA_ERR_CANCELLED` after the current run).
pub type sda_probe_progress_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, progress: *const sda_probe_progress) -> bool,
>;

/// Options of `sda_probe_batch`. Initialise them with `SDA_PROBE_OPTIONS_INIT(&options)` (or
/// `sda_probe_options_init(&options, sizeof options)`), then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_probe_options {
    /// `sizeof(sda_probe_options)` as the caller was compiled; set by `sda_probe_options_init`.
    pub struct_size: u32,
    /// Smallest batch (default 1).
    pub min_batch: u32,
    /// Largest batch worth trying (default 65536); reaching it sets `capped` in the result.
    pub max_batch: u32,
    /// Most workload runs before the best batch so far is returned (default 8, at least 3).
    pub max_runs: u32,
    /// The budget in bytes; 0 = the memory strategy's share of the device, on CPU of the available
    /// memory (`MemAvailable`, capped by the cgroup limit). Default 0.
    pub budget_bytes: u64,
    /// Kept below the budget for the recommended batch; 0 = 5 % of the budget (default).
    pub margin_bytes: u64,
    /// Shape of the built-in workload; NULL = the seeds' conv1d (default). Ignored when
    /// `custom_workload` is set.
    pub workload: *const sda_workload,
    /// The host's own workload instead of the built-in one (default NULL).
    pub custom_workload: sda_probe_workload_callback,
    /// Passed to `custom_workload`.
    pub workload_user_data: *mut c_void,
    /// Called after every run (default NULL).
    pub progress: sda_probe_progress_callback,
    /// Passed to `progress`.
    pub progress_user_data: *mut c_void,
    /// When not NULL, the recommended batch is stored in this configuration's
    /// `hardware.max_batch_size` (save the configuration to keep it). Default NULL.
    pub save_to: *mut sda_config,
    /// A loaded model (`sda_model_load`) to probe instead of the built-in workload (default NULL).
    /// It must have been loaded with the probe's context, on the device the context selects; each
    /// run's peak includes the model's resident bytes. Setting it together with `workload` or
    /// `custom_workload` is `SDA_ERR_INVALID_ARGUMENT`.
    pub model: *const sda_model,
    /// The first batch to run, one the caller knows to fit (a batch that ran before, say); 0 =
    /// `min_batch` (default). The search grows from it by prediction, and falls back to `min_batch`
    /// when it does not fit. Outside `min_batch..=max_batch` is `SDA_ERR_INVALID_ARGUMENT`. A
    /// trailing field: a program compiled before it declares a smaller `struct_size` and gets 0.
    pub start_batch: u32,
    /// Must be 0 (`SDA_ERR_INVALID_ARGUMENT` otherwise). It keeps the struct free of tail padding,
    /// which a later field could not use safely; a later version may give it a meaning whose 0 is
    /// today's behaviour.
    pub reserved: u32,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_probe_options {
    struct_size, min_batch, max_batch, max_runs, budget_bytes, margin_bytes, workload,
    custom_workload, workload_user_data, progress, progress_user_data, save_to, model, start_batch,
    reserved,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    let d = ProbeOptions::default();
    sda_probe_options {
        struct_size: std::mem::size_of::<sda_probe_options>() as u32,
        min_batch: d.min_batch,
        max_batch: d.max_batch,
        max_runs: d.max_runs,
        budget_bytes: d.budget_bytes,
        margin_bytes: d.margin_bytes,
        workload: std::ptr::null(),
        custom_workload: None,
        workload_user_data: std::ptr::null_mut(),
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        save_to: std::ptr::null_mut(),
        model: std::ptr::null(),
        start_batch: d.start_batch,
        reserved: 0,
        #[cfg(feature = "abi-growth-test")]
        abi_growth_test: 0,
    }
});

/// What a probe found. Initialise it with `SDA_PROBE_RESULT_INIT(&result)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_probe_result {
    /// `sizeof(sda_probe_result)` as the caller was compiled; set by `sda_probe_result_init`.
    pub struct_size: u32,
    /// The largest batch that ran successfully within the budget (0 when none did).
    pub max_batch: u32,
    /// The batch to use: predicted to peak below `budget − margin`, never above `max_batch`.
    pub recommended_batch: u32,
    /// Workload runs, the measuring runs included.
    pub runs: u32,
    /// Runs that ran out of memory.
    pub oom_runs: u32,
    /// Why the search stopped.
    pub stop: sda_probe_stop,
    /// 1 when `max_batch` is the configured ceiling, not the memory limit: the true maximum may be
    /// higher.
    pub capped: sda_bool,
    /// Fitted bytes that do not depend on the batch.
    pub fixed_bytes: f64,
    /// Fitted bytes per sample.
    pub per_sample_bytes: f64,
    /// What the fit predicted for `max_batch`.
    pub predicted_peak_bytes: u64,
    /// What `max_batch` measured.
    pub measured_peak_bytes: u64,
    /// The budget searched against.
    pub budget_bytes: u64,
    /// The margin kept below the budget for `recommended_batch`.
    pub margin_bytes: u64,
    /// Wall time of the probe in milliseconds.
    pub elapsed_ms: f64,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_probe_result {
    struct_size, max_batch, recommended_batch, runs, oom_runs, stop, capped, fixed_bytes,
    per_sample_bytes, predicted_peak_bytes, measured_peak_bytes, budget_bytes, margin_bytes,
    elapsed_ms,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_probe_result is repr(C) of integers, sda_bool, f64s and `stop`, an sda_probe_stop
    // whose 0 is Budget: all-zero bytes are a valid value of every field.
    unsafe { zeroed_with_size() }
});

/// Initialises probe options with the library's defaults: the built-in workload, batches 1 to
/// 65536, at most 8 runs, the strategy's budget, a 5 % margin. `size` is the caller's
/// `sizeof(sda_probe_options)` (`SDA_PROBE_OPTIONS_INIT(&options)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_probe_options_init(options: *mut sda_probe_options, size: usize) -> Status {
    guard(|| sized::init(options, size, "options"))
}

/// Initialises an empty probe result (`struct_size` = `size`, the caller's
/// `sizeof(sda_probe_result)`; `SDA_PROBE_RESULT_INIT(&result)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_probe_result_init(result: *mut sda_probe_result, size: usize) -> Status {
    guard(|| sized::init(result, size, "result"))
}

/// Finds the largest batch of a workload that fits the memory budget on the context's selected
/// device. The first run is `options->min_batch` (or `options->start_batch`, a batch the caller
/// knows to fit); each later batch is predicted from the peaks measured so far (a fitted line
/// `fixed + per_sample × batch`, never below the proportional growth of the best batch) to fit the
/// budget before it starts, so on the CPU the Linux OOM killer is never part of the search.
/// `max_batch` in the result is the largest batch that ran within the budget, exact (every batch
/// counted) up to 32; on a linear curve the probe takes at most four runs. The answer is always a
/// batch that ran. Reaching `options->max_batch` is reported as `capped`, not as a maximum.
///
/// The workload is the built-in conv1d (`options->workload`), the host's callback
/// (`options->custom_workload`) or a loaded model file (`options->model`); a model that accepts only
/// its traced batch, or rejects its input, ends the probe with `SDA_ERR_INVALID_ARGUMENT`, not as
/// out of memory.
///
/// `options` may be NULL (defaults). `out_result` is written on success. Errors:
/// `SDA_ERR_CANCELLED` (the progress callback returned false), `SDA_ERR_BACKEND_UNAVAILABLE` (the
/// built-in workload needs the torch backend), a custom workload's own failure, or argument errors.
/// On the CPU the probe resets the process's peak-RSS counter (`VmHWM`) to measure each run.
///
/// Thread safety: [thread-safe]; [main-thread] (runs real work: seconds).
#[no_mangle]
pub extern "C" fn sda_probe_batch(
    context: *const sda_context,
    options: *const sda_probe_options,
    out_result: *mut sda_probe_result,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let o = sized::read_input(options, "options")?.unwrap_or_else(sda_probe_options::defaults);
        let result_slot = Out::new(out_result, "out_result")?;
        if o.reserved != 0 {
            return Err(Error::invalid_argument(format!(
                "options->reserved is {}: it must be 0 (initialise the options with \
                 sda_probe_options_init)",
                o.reserved
            )));
        }
        let model = if o.model.is_null() {
            None
        } else {
            if o.custom_workload.is_some() || !o.workload.is_null() {
                return Err(Error::invalid_argument(format!(
                    "options->model is set together with options->{}: set one workload",
                    if o.custom_workload.is_some() {
                        "custom_workload"
                    } else {
                        "workload"
                    }
                )));
            }
            Some(model_for(&context, o.model, "options->model")?)
        };
        let save_to = if o.save_to.is_null() {
            None
        } else {
            Some(config_of(o.save_to)?)
        };

        let mut custom = o.custom_workload.map(|cb| {
            let data = o.workload_user_data;
            move |batch: u32| -> Result<()> {
                let before = errors_stored();
                // SAFETY: `cb` and `data` are options->custom_workload and options->workload_user_data,
                // which the host set together for this probe; the probe calls them on this thread
                // before sda_probe_batch returns, and the callback's contract forbids unwinding or
                // longjmp through libsda.
                let code = unsafe { cb(data, batch) };
                callback_result(code, before, "the probe workload")
            }
        });
        let mut progress = o.progress.map(|cb| {
            let data = o.progress_user_data;
            move |p: &ProbeProgress| -> bool {
                let c = sda_probe_progress {
                    struct_size: std::mem::size_of::<sda_probe_progress>() as u32,
                    batch: p.trial.batch,
                    ok: p.trial.ok.into(),
                    oom: p.trial.oom.into(),
                    peak_bytes: p.trial.peak_bytes,
                    predicted_bytes: p.trial.predicted_bytes,
                    elapsed_ms: p.trial.elapsed.as_secs_f64() * 1000.0,
                    runs: p.runs,
                    best_batch: p.best_batch,
                    budget_bytes: p.budget_bytes,
                    #[cfg(feature = "abi-growth-test")]
                    abi_growth_test: 0,
                };
                // SAFETY: `cb` and `data` are options->progress and options->progress_user_data, set
                // together by the host for this probe and called on this thread during it. `&c` points
                // to a local sda_probe_progress that outlives the call, and the progress is documented
                // as valid only during the call, so the host never keeps the pointer.
                unsafe { cb(data, &c) }
            }
        });
        let workload = match (custom.as_mut(), &model) {
            (Some(f), _) => ProbeWorkload::Custom(f),
            (None, Some(m)) => ProbeWorkload::Model(m.loaded()),
            (None, None) => ProbeWorkload::Builtin(read_workload(o.workload, "options->workload")?),
        };
        let result = probe::probe(
            &context,
            ProbeOptions {
                min_batch: o.min_batch,
                start_batch: o.start_batch,
                max_batch: o.max_batch,
                budget_bytes: o.budget_bytes,
                margin_bytes: o.margin_bytes,
                max_runs: o.max_runs,
                workload,
                progress: progress
                    .as_mut()
                    .map(|p| p as &mut dyn FnMut(&ProbeProgress) -> bool),
            },
        )?;
        if let Some(config) = save_to {
            let mut config = config.write().unwrap_or_else(|e| e.into_inner());
            probe::save_to_config(&mut config, &result)?;
        }
        result_slot.write(&sda_probe_result {
            struct_size: std::mem::size_of::<sda_probe_result>() as u32,
            max_batch: result.max_batch,
            recommended_batch: result.recommended_batch,
            runs: result.runs,
            oom_runs: result.oom_runs,
            stop: result.stop.into(),
            capped: result.capped.into(),
            fixed_bytes: result.fixed_bytes,
            per_sample_bytes: result.per_sample_bytes,
            predicted_peak_bytes: result.predicted_peak_bytes,
            measured_peak_bytes: result.measured_peak_bytes,
            budget_bytes: result.budget_bytes,
            margin_bytes: result.margin_bytes,
            elapsed_ms: result.elapsed.as_secs_f64() * 1000.0,
            #[cfg(feature = "abi-growth-test")]
            abi_growth_test: 0,
        });
        Ok(())
    })
}
