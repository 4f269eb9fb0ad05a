//! Guarded runs: the host's work runs on the selected device; when it runs out of memory the library
//! recovers after the failing frame has returned, empties the cache, and explains in numbers what to
//! do next — a concrete smaller batch derived from the measured memory, never a blind halving and never
//! a silent switch to the CPU.

use crate::backend::Backend;
use crate::classify;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::log;
use crate::memory;
use crate::preference::DeviceKind;
use crate::report::human_bytes;

/// How a guarded run is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardOptions {
    /// The batch the work attempts (the first attempt of a batched run). 0 = not said; then no batch
    /// can be suggested.
    pub batch_size: u32,
    /// Batched runs: the smallest batch worth trying.
    pub min_batch: u32,
    /// Batched runs: the most attempts, the first included.
    pub max_attempts: u32,
    /// Batched runs: keep `batch × accumulation_steps` at the first batch by raising the steps.
    pub keep_effective_batch: bool,
    /// The memory the work may use, in bytes; 0 = the memory strategy's budget of the device.
    pub budget_bytes: u64,
    /// Safety margin kept free below the budget, in bytes; 0 = 5 % of the budget.
    pub margin_bytes: u64,
    /// Identifies the work (the C ABI uses the callback and its user data) so that the memory a
    /// successful run measured per sample informs the suggestion after a later failure; 0 = unknown.
    pub work_id: u64,
}

impl Default for GuardOptions {
    fn default() -> GuardOptions {
        GuardOptions {
            batch_size: 0,
            min_batch: 1,
            max_attempts: 8,
            keep_effective_batch: false,
            budget_bytes: 0,
            margin_bytes: 0,
            work_id: 0,
        }
    }
}

/// What happened in a guarded run. Memory figures are torch allocator bytes of the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// How the run failed: `None` when it succeeded, [`ErrorKind::OutOfMemory`] when memory ran
    /// out, or the kind of the work's own failure.
    pub error: Option<ErrorKind>,
    /// Kind of the device the work ran on.
    pub kind: Option<DeviceKind>,
    /// Index of that device.
    pub index: u32,
    /// Batch of the last attempt (0 when not said).
    pub attempted_batch: u32,
    /// Batched runs: the batch that succeeded (0 when none did).
    pub final_batch: u32,
    /// After an out-of-memory failure: a batch predicted to fit the budget (0 when it cannot be
    /// told, or when even one sample does not fit).
    pub suggested_batch: u32,
    /// Gradient-accumulation steps that go with `final_batch` (1 unless `keep_effective_batch`).
    pub accumulation_steps: u32,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts that ran out of memory.
    pub oom_attempts: u32,
    /// Whether every attempt was measured: the backend was loaded and the peak reset and the
    /// allocator reads around each attempt succeeded (an unmeasured attempt suggests no batch).
    pub measured: bool,
    /// Highest allocation during the last attempt.
    pub peak_bytes: u64,
    /// Allocated before the last attempt.
    pub memory_before: u64,
    /// Allocated after the last attempt and its recovery.
    pub memory_after: u64,
    /// The budget the suggestion was computed against (filled after a failure).
    pub budget: u64,
    /// Size of the allocation that failed, when the error message said.
    pub failed_allocation_bytes: u64,
    /// What happened and what to do, for a person (empty after a success at the first attempt).
    pub guidance: String,
    /// The last failure's own message (libtorch's text for an out-of-memory error; empty after a
    /// success), which `guidance` quotes.
    pub cause: String,
}

/// Reads the torch allocator of one device around an attempt.
struct Meter {
    backend: Option<&'static Backend>,
    kind: DeviceKind,
    index: u32,
}

impl Meter {
    /// Resets the peak and returns the bytes allocated now; `None` when that could not be done (no
    /// backend, or the allocator refused), so that the attempt counts as unmeasured.
    fn start(&self) -> Option<u64> {
        let backend = self.backend?;
        backend.reset_peak(self.kind, self.index).ok()?;
        self.allocated()
    }

    /// (peak since `start`, allocated now); `None` when the allocator could not be read.
    fn read(&self) -> Option<(u64, u64)> {
        let stats = self.backend?.memory_stats(self.kind, self.index).ok()?;
        Some((stats.peak_allocated, stats.allocated))
    }

    fn allocated(&self) -> Option<u64> {
        self.read().map(|(_, allocated)| allocated)
    }
}

/// The largest batch predicted to fit the budget.
///
/// The failed attempt at `attempted` needed at least `peak − before + failed_allocation` bytes (it
/// failed part-way, asking for `failed_allocation` more), which bounds the cost of one sample from
/// below; `known_per_sample`, measured by an earlier successful run of the same work, may show it is
/// higher (libtorch often allocates again after the allocation that failed). The larger of the two,
/// into the budget left above `before` minus the margin, capped below `attempted`. `None` when nothing
/// was measured, `Some(0)` when not even one sample fits.
pub fn suggest_batch(
    attempted: u32,
    before: u64,
    peak: u64,
    failed_allocation: u64,
    budget: u64,
    margin: u64,
    known_per_sample: Option<f64>,
) -> Option<u32> {
    if attempted == 0 {
        return None;
    }
    let needed = peak
        .saturating_sub(before)
        .saturating_add(failed_allocation);
    let from_failure = (needed > 0).then(|| needed as f64 / f64::from(attempted));
    let per_sample = match (from_failure, known_per_sample.filter(|k| *k > 0.0)) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    let room = budget.saturating_sub(before).saturating_sub(margin) as f64;
    let fits = (room / per_sample).floor();
    Some(fits.min(f64::from(attempted - 1)).max(0.0) as u32)
}

/// Runs `work` once under guard. `work` gets the batch and accumulation steps of the options (0 and 1
/// when no batch was given). See [`run_batched`] for the retrying variant.
pub fn run(
    context: &Context,
    options: &GuardOptions,
    work: &mut dyn FnMut(u32, u32) -> Result<()>,
) -> (Result<()>, RunReport) {
    let single = GuardOptions {
        max_attempts: 1,
        ..*options
    };
    run_batched(context, &single, work)
}

/// Runs a loaded model ([`crate::model`]) under guard: one batch of `options.batch_size` (which
/// must be set), and after an out-of-memory failure smaller batches as [`run_batched`] computes
/// them, down to `min_batch`, at most `max_attempts` times (1 for a single run). A batch the model
/// does not accept (a fixed traced batch, a rejected shape) ends the run with that error
/// ([`ErrorKind::InvalidArgument`]), never as out of memory.
///
/// The model's own [`work_id`](crate::model::LoadedModel::work_id) keys its cost when
/// `options.work_id` is 0, so that what earlier runs and probes measured grounds the suggestion. A
/// failure is only a lower bound of what a batch needs (the allocation that failed is one of many),
/// so when the model has never run successfully before, an out-of-memory run that stops without a
/// retry measures `min_batch` once more and suggests from that measurement: the suggested batch is
/// one that then fits.
pub fn run_model(
    context: &Context,
    options: &GuardOptions,
    model: &crate::model::LoadedModel,
) -> (Result<()>, RunReport) {
    let options = GuardOptions {
        work_id: if options.work_id == 0 {
            model.work_id()
        } else {
            options.work_id
        },
        ..*options
    };
    let cost_was_known = context.work_cost(options.work_id).is_some();
    let mut work = |batch: u32, _steps: u32| model.run(batch);
    let (outcome, mut report) = run_batched(context, &options, &mut work);
    let ran_out = matches!(&outcome, Err(e) if e.is_out_of_memory());
    if !ran_out || cost_was_known || report.attempted_batch <= options.min_batch.max(1) {
        return (outcome, report);
    }
    let floor = GuardOptions {
        batch_size: options.min_batch.max(1),
        max_attempts: 1,
        ..options
    };
    let (measured, _) = run_batched(context, &floor, &mut work);
    if measured.is_err() {
        return (outcome, report);
    }
    let (budget, margin) = budget_for(context, &options);
    let Some(suggested) = suggest_batch(
        report.attempted_batch,
        report.memory_before,
        report.peak_bytes,
        report.failed_allocation_bytes,
        budget,
        margin,
        context.work_cost(options.work_id),
    ) else {
        return (outcome, report);
    };
    report.suggested_batch = suggested;
    let Some(kind) = report.kind else {
        return (outcome, report);
    };
    report.guidance = format!(
        "{} The suggestion comes from a measured run of batch {} after the failure.",
        guidance(
            kind,
            &report,
            &report.cause,
            (margin, options.budget_bytes > 0),
            context
        ),
        floor.batch_size
    );
    (Err(Error::out_of_memory(report.guidance.clone())), report)
}

/// Runs `work(batch, accumulation_steps)` under guard, and after each out-of-memory failure retries
/// with a smaller batch computed from the measured memory, down to `min_batch`, at most
/// `max_attempts` times. Every retry is logged as a warning. Other failures end the run at once.
pub fn run_batched(
    context: &Context,
    options: &GuardOptions,
    work: &mut dyn FnMut(u32, u32) -> Result<()>,
) -> (Result<()>, RunReport) {
    let mut report = RunReport::default();
    let selected = match context.selected() {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.kind());
            report.guidance = e.to_string();
            return (Err(e), report);
        }
    };
    let selection = &selected.selection;
    report.kind = Some(selection.kind);
    report.index = selection.index;
    // Measuring needs the torch allocator; a missing backend only costs the numbers, not the run.
    let backend = context.backend().ok();
    let meter = Meter {
        backend,
        kind: selection.kind,
        index: selection.index,
    };
    report.measured = backend.is_some();
    let first_batch = options.batch_size;
    let min_batch = options.min_batch.max(1);
    let mut batch = first_batch;
    let mut accumulation = 1;
    let mut budget: Option<(u64, u64)> = None;
    loop {
        report.attempts += 1;
        report.attempted_batch = batch;
        report.accumulation_steps = accumulation;
        let started = meter.start();
        let outcome = work(batch, accumulation);
        // The work's frame has returned: whatever it allocated is released or still owned by the
        // caller, never by a half-unwound frame of ours.
        let read = meter.read();
        // A failed reset or read leaves a stale peak: such an attempt is unmeasured and must not
        // feed a suggestion, and the report says so.
        let measured = started.is_some() && read.is_some();
        report.measured &= measured;
        let before = started.unwrap_or(0);
        let peak = read.map_or(0, |(peak, _)| peak);
        report.memory_before = before;
        report.peak_bytes = peak.max(before);
        let error = match outcome {
            Ok(()) => {
                report.memory_after = meter.allocated().unwrap_or(0);
                if measured && batch > 0 && options.work_id != 0 {
                    let used = report.peak_bytes.saturating_sub(before);
                    context.remember_work_cost(options.work_id, used as f64 / f64::from(batch));
                }
                report.final_batch = batch;
                report.error = None;
                report.budget = match budget {
                    Some((b, _)) => b,
                    None if options.budget_bytes > 0 => options.budget_bytes,
                    None => selected.budget,
                };
                if report.oom_attempts > 0 {
                    report.guidance = format!(
                        "batch {batch} fits after {} out-of-memory attempt{}",
                        report.oom_attempts,
                        if report.oom_attempts == 1 { "" } else { "s" }
                    );
                }
                return (Ok(()), report);
            }
            Err(e) => e,
        };
        if !error.is_out_of_memory() {
            report.memory_after = meter.allocated().unwrap_or(0);
            report.error = Some(error.kind());
            report.guidance = format!(
                "the work failed ({}): {}; not an out-of-memory error, so nothing was retried",
                error.kind(),
                error.message()
            );
            return (Err(error), report);
        }
        report.oom_attempts += 1;
        let _ = memory::clear_cache(selection.kind, selection.index);
        report.memory_after = meter.allocated().unwrap_or(0);
        report.failed_allocation_bytes =
            classify::failed_allocation_bytes(error.message()).unwrap_or(0);
        let (budget_bytes, margin) = *budget.get_or_insert_with(|| budget_for(context, options));
        report.budget = budget_bytes;
        let suggestion = if measured {
            suggest_batch(
                batch,
                before,
                report.peak_bytes,
                report.failed_allocation_bytes,
                budget_bytes,
                margin,
                context.work_cost(options.work_id),
            )
        } else {
            None
        };
        report.suggested_batch = suggestion.unwrap_or(0);
        let next = match suggestion {
            Some(s) => s,
            // Nothing measured (no backend, or its allocator failed): halving is all that is left,
            // and the log says so.
            None if batch > 1 => batch / 2,
            None => 0,
        };
        let retry = report.attempts < options.max_attempts.max(1) && batch > 0 && next >= min_batch;
        report.cause = error.message().to_string();
        report.guidance = guidance(
            selection.kind,
            &report,
            &report.cause,
            (margin, options.budget_bytes > 0),
            context,
        );
        if !retry {
            report.error = Some(ErrorKind::OutOfMemory);
            return (Err(Error::out_of_memory(report.guidance.clone())), report);
        }
        log::warn(&format!(
            "out of memory at batch {batch} on {}; retrying with batch {next}{}",
            crate::device::device_string(selection.kind, selection.index),
            if suggestion.is_none() {
                " (halved: no memory figures were measured)"
            } else {
                ""
            }
        ));
        if options.keep_effective_batch && first_batch > 0 {
            accumulation = first_batch.div_ceil(next);
        }
        batch = next;
    }
}

/// The budget and margin for suggestions: the caller's, else the memory strategy's share of the
/// device now.
fn budget_for(context: &Context, options: &GuardOptions) -> (u64, u64) {
    let budget = if options.budget_bytes > 0 {
        options.budget_bytes
    } else {
        context.memory_info().map(|m| m.budget).unwrap_or(0)
    };
    let margin = if options.margin_bytes > 0 {
        options.margin_bytes
    } else {
        budget / 20
    };
    (budget, margin)
}

/// The guidance text after an out-of-memory failure: what happened in numbers, then what to try.
fn guidance(
    kind: DeviceKind,
    report: &RunReport,
    torch_message: &str,
    (margin, caller_budget): (u64, bool),
    context: &Context,
) -> String {
    let mut text = format!(
        "Out of memory on {}",
        crate::device::device_string(kind, report.index)
    );
    if report.attempted_batch > 0 {
        text.push_str(&format!(" at batch {}", report.attempted_batch));
    }
    if report.measured {
        text.push_str(&format!(
            ": the attempt held {} above the {} already allocated",
            human_bytes(report.peak_bytes.saturating_sub(report.memory_before)),
            human_bytes(report.memory_before)
        ));
        if report.failed_allocation_bytes > 0 {
            text.push_str(&format!(
                " when an allocation of {} failed",
                human_bytes(report.failed_allocation_bytes)
            ));
        }
    }
    let hardware = &context.config().hardware;
    let origin = if caller_budget {
        "given by the caller".to_string()
    } else {
        format!(
            "{} strategy, share of {} memory",
            hardware.memory_strategy.as_str(),
            if kind == DeviceKind::Cpu {
                "available"
            } else {
                "device"
            }
        )
    };
    text.push_str(&format!(
        "; the budget is {} ({origin}).",
        human_bytes(report.budget)
    ));
    let mut advice: Vec<String> = Vec::new();
    match report.suggested_batch {
        0 if report.attempted_batch > 0
            && report.measured
            && report.failed_allocation_bytes > 0 =>
        {
            advice.push("even batch 1 is predicted not to fit: use a smaller model or input".into())
        }
        0 if report.attempted_batch > 0 => advice.push(format!(
            "try a batch below {} (no memory figures were measured to compute one)",
            report.attempted_batch
        )),
        0 => advice.push(
            "pass the batch you attempted (batch_size) to get a concrete smaller batch".into(),
        ),
        s => advice.push(format!(
            "try batch {s} (predicted to fit the budget with a {} margin)",
            human_bytes(margin)
        )),
    }
    if kind == DeviceKind::Cpu {
        advice.push("close other programs that use a lot of memory".into());
    } else {
        advice.push("close other work on this GPU (other processes, notebooks)".into());
        if kind == DeviceKind::Cuda {
            advice.push(
                "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to reduce fragmentation"
                    .into(),
            );
        }
        advice.push(
            "or run on the CPU with device=cpu (slower; libsda never switches by itself)".into(),
        );
    }
    text.push_str(" To continue: ");
    text.push_str(&advice.join("; "));
    text.push('.');
    let first_line = torch_message.lines().next().unwrap_or("").trim();
    if !first_line.is_empty() {
        text.push_str(&format!(" (error: {first_line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_whose_peak_cannot_be_reset_is_unmeasured() {
        // The real backend, asked about a CUDA device this machine does not have (or, on a GPU
        // machine, one beyond its devices): the reset and the reads fail, as a broken allocator would.
        let backend =
            crate::backend::load("").expect("the backend module is built beside the tests");
        let meter = Meter {
            backend: Some(backend),
            kind: DeviceKind::Cuda,
            index: 4096,
        };
        assert_eq!(meter.start(), None);
        assert_eq!(meter.read(), None);
        let cpu = Meter {
            backend: Some(backend),
            kind: DeviceKind::Cpu,
            index: 0,
        };
        assert!(cpu.start().is_some() && cpu.read().is_some());
        let none = Meter {
            backend: None,
            kind: DeviceKind::Cpu,
            index: 0,
        };
        assert_eq!(none.start(), None);
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn suggestion_follows_the_measured_cost_per_sample_not_a_halving() {
        // Batch 1000 held 100 MiB when a 900 MiB allocation failed: 1 MiB per sample. Budget 500 MiB,
        // 20 MiB margin, nothing allocated before: 480 samples.
        assert_eq!(
            suggest_batch(1000, 0, 100 * MIB, 900 * MIB, 500 * MIB, 20 * MIB, None),
            Some(480)
        );
        // Memory already allocated before the attempt is not available to it.
        assert_eq!(
            suggest_batch(
                1000,
                200 * MIB,
                300 * MIB,
                900 * MIB,
                500 * MIB,
                20 * MIB,
                None
            ),
            Some(280)
        );
    }

    #[test]
    fn a_cost_measured_by_an_earlier_success_raises_the_estimate() {
        // The failure bounds the cost at 1 MiB per sample; a successful run measured 2 MiB.
        let known = Some(2.0 * MIB as f64);
        assert_eq!(
            suggest_batch(1000, 0, 100 * MIB, 900 * MIB, 500 * MIB, 20 * MIB, known),
            Some(240)
        );
        // A lower earlier figure never lowers the bound the failure gives.
        let low = Some(0.5 * MIB as f64);
        assert_eq!(
            suggest_batch(1000, 0, 100 * MIB, 900 * MIB, 500 * MIB, 20 * MIB, low),
            Some(480)
        );
        // Without any figure from the failure, the earlier one alone decides.
        assert_eq!(
            suggest_batch(1000, 0, 0, 0, 500 * MIB, 20 * MIB, known),
            Some(240)
        );
    }

    #[test]
    fn suggestion_is_always_smaller_than_the_attempt_and_none_without_figures() {
        assert_eq!(suggest_batch(10, 0, MIB, 0, 1 << 40, 0, None), Some(9));
        assert_eq!(suggest_batch(10, 0, 0, 0, 1 << 40, 0, None), None);
        assert_eq!(suggest_batch(0, 0, MIB, MIB, 1 << 40, 0, None), None);
        assert_eq!(
            suggest_batch(4, 0, 0, 4 << 30, (1 << 30) - 1, 0, None),
            Some(0),
            "not even one fits"
        );
    }
}
