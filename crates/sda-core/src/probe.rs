//! Batch probing: the largest batch of a workload that fits a memory budget, found by measuring, not by
//! waiting for failures.
//!
//! `max_batch` is the largest batch that ran within the budget; it is exact (every batch counts)
//! whenever it is at most [`EXACT_UP_TO`], and within 1 % beyond. `recommended_batch` is the largest
//! batch predicted (or measured) under `budget − margin`, never above `max_batch`. The first run is
//! `min_batch` (or the caller's `start_batch`); every later run is predicted within the budget by the
//! measurements before it, except a second measuring run when a single measurement allows no growth
//! even in the worst case ([`search`] has the rules). On the CPU it never waits for the Linux OOM
//! killer, and on a linear curve it takes at most four runs, verification included. The answer is
//! always a batch that ran.

pub mod search;

use crate::backend;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::host;
use crate::memory;
use crate::preference::DeviceKind;
use crate::workload::Workload;
use search::{Next, Outcome, Search};
use std::time::{Duration, Instant};

/// Why the search stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The largest batch under the budget was found (the normal case).
    Budget = 0,
    /// `max_batch` fits: the true maximum may be higher (`capped` is set).
    MaxBatch = 1,
    /// Even `min_batch` does not fit the budget or runs out of memory.
    OutOfMemory = 2,
    /// The progress callback asked to stop.
    Cancelled = 3,
}

impl StopReason {
    /// Lower-case name for reports and JSON (`budget`, `max_batch`, `out_of_memory`, `cancelled`).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Budget => "budget",
            StopReason::MaxBatch => "max_batch",
            StopReason::OutOfMemory => "out_of_memory",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// One run of the workload during a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trial {
    /// The batch that ran.
    pub batch: u32,
    /// Peak memory the run used above what was allocated before it (0 when it failed early).
    pub peak_bytes: u64,
    /// The run completed.
    pub ok: bool,
    /// The run failed with an out-of-memory error.
    pub oom: bool,
    /// What the fit predicted for this batch before it ran (0 for the measuring runs).
    pub predicted_bytes: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    /// The largest batch that ran successfully within the budget (0 when none did).
    pub max_batch: u32,
    /// The batch to use: predicted to peak below `budget − margin`, never above `max_batch`.
    pub recommended_batch: u32,
    /// Workload runs, measuring runs included.
    pub runs: u32,
    /// Runs that ran out of memory.
    pub oom_runs: u32,
    /// Fitted bytes that do not depend on the batch (weights, workspaces).
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
    /// Wall time of the whole probe.
    pub elapsed: Duration,
    /// Why the search stopped.
    pub stop: StopReason,
    /// `max_batch` is the configured ceiling, not the memory limit.
    pub capped: bool,
    /// Every run, in order.
    pub trials: Vec<Trial>,
}

/// Progress of a probe, handed to the progress callback after every run.
#[derive(Clone, Copy, Debug)]
pub struct ProbeProgress {
    /// The run that just finished.
    pub trial: Trial,
    /// Runs so far.
    pub runs: u32,
    /// Largest batch that fitted so far (0 = none yet).
    pub best_batch: u32,
    /// The budget.
    pub budget_bytes: u64,
}

/// What the probe runs.
pub enum ProbeWorkload<'a> {
    /// The built-in conv1d workload with this shape.
    Builtin(Workload),
    /// The caller's work: runs one batch, returns [`ErrorKind::OutOfMemory`](crate::error::ErrorKind::OutOfMemory) when it ran out.
    Custom(&'a mut dyn FnMut(u32) -> Result<()>),
    /// A loaded model file ([`crate::model`]), on the context's selected device. Each trial's peak
    /// includes the model's parameter and buffer bytes ([`crate::model::LoadedModel::resident_bytes`]), which
    /// were allocated before the run but occupy the budget all the same. A model that accepts only
    /// its traced batch ends the probe with that error, not as out of memory.
    Model(&'a crate::model::LoadedModel),
}

/// How a probe searches.
pub struct ProbeOptions<'a> {
    /// Smallest batch (default 1).
    pub min_batch: u32,
    /// The first batch to run, one the caller knows to be safe (0 = `min_batch`; otherwise within
    /// `min_batch..=max_batch`, else the probe is an invalid argument). The search grows from there
    /// by prediction; when it does not fit, the next run is `min_batch`.
    pub start_batch: u32,
    /// Largest batch worth trying (default 65536); reaching it sets `capped`.
    pub max_batch: u32,
    /// The budget in bytes; 0 = the memory strategy's share of the device (on CPU of `MemAvailable`,
    /// capped by the cgroup).
    pub budget_bytes: u64,
    /// Kept below the budget for the recommended batch; 0 = 5 % of the budget.
    pub margin_bytes: u64,
    /// Most runs before the best batch found so far is returned (default 8).
    pub max_runs: u32,
    /// What to run.
    pub workload: ProbeWorkload<'a>,
    /// Called after every run; returning `false` cancels the probe.
    pub progress: Option<&'a mut dyn FnMut(&ProbeProgress) -> bool>,
}

impl Default for ProbeOptions<'_> {
    fn default() -> Self {
        ProbeOptions {
            min_batch: 1,
            start_batch: 0,
            max_batch: 65_536,
            budget_bytes: 0,
            margin_bytes: 0,
            max_runs: 8,
            workload: ProbeWorkload::Builtin(Workload::default()),
            progress: None,
        }
    }
}

pub use search::{Fit, Prediction, EXACT_UP_TO};

/// Measures runs of the workload on the selected device.
struct Runner<'a, 'b> {
    context: &'a Context,
    kind: DeviceKind,
    index: u32,
    backend: Option<&'static backend::Backend>,
    workload: &'a mut ProbeWorkload<'b>,
}

impl Runner<'_, '_> {
    /// Runs one batch and measures its peak above what was allocated before: the torch allocator's
    /// peak, and on the CPU also the peak resident set (for custom work that does not allocate
    /// through torch), whichever is larger.
    fn run(&mut self, batch: u32) -> Measured {
        let selection_kind = self.kind;
        // Freed blocks kept by the C heap or the caching allocator would hide the next run's use.
        if let Err(e) = memory::clear_cache(self.kind, self.index) {
            crate::log::warn(&format!(
                "the probe could not empty the cache before a run: {e}"
            ));
        }
        // A peak that cannot be reset or read would be a stale or a zero measurement: the run is
        // not made rather than measured wrongly.
        let before_alloc = match self.allocator_reset() {
            Ok(bytes) => bytes,
            Err(e) => return Measured::unmeasured(Err(e), Duration::ZERO),
        };
        // The torch allocator counts every tensor of the built-in workload exactly; the resident set
        // would add one-time start-up costs (kernel caches, thread pools) to the first runs. Custom
        // work on the CPU may allocate outside torch, so there the resident set counts too.
        let measure_rss =
            selection_kind == DeviceKind::Cpu && matches!(self.workload, ProbeWorkload::Custom(_));
        let before_rss = if measure_rss {
            host::reset_peak_rss()
        } else {
            0
        };
        let start = Instant::now();
        let outcome = match &mut self.workload {
            ProbeWorkload::Builtin(w) => w.run(self.context, batch),
            ProbeWorkload::Custom(f) => f(batch),
            ProbeWorkload::Model(m) => m.run(batch),
        };
        // The loaded model's weights were allocated before the run, so the peak above `before`
        // misses them; they occupy the budget all the same.
        let resident = match &self.workload {
            ProbeWorkload::Model(m) => m.resident_bytes(),
            _ => 0,
        };
        let elapsed = start.elapsed();
        let (alloc_peak, retained) = match self.allocator_after() {
            Ok(after) => (
                after.peak_allocated.saturating_sub(before_alloc),
                after.allocated.saturating_sub(before_alloc),
            ),
            Err(e) => return Measured::unmeasured(outcome.and(Err(e)), elapsed),
        };
        let rss_peak = if measure_rss {
            host::peak_rss().saturating_sub(before_rss)
        } else {
            0
        };
        if let (ProbeWorkload::Model(m), Ok(())) = (&self.workload, &outcome) {
            // What a sample costs, for the guard's suggestions after a later out-of-memory failure.
            self.context
                .remember_work_cost(m.work_id(), alloc_peak as f64 / f64::from(batch.max(1)));
        }
        Measured {
            outcome,
            peak: alloc_peak.max(rss_peak).saturating_add(resident),
            retained,
            elapsed,
        }
    }

    /// Resets the allocator's peak and returns what is allocated now (0 without a backend: custom
    /// work that does not use torch is measured by the resident set alone).
    fn allocator_reset(&self) -> Result<u64> {
        let Some(b) = self.backend else { return Ok(0) };
        let unmeasurable = |e: Error| {
            Error::new(
                e.kind(),
                format!(
                    "the probe cannot measure a run: resetting the allocator's peak failed: {}",
                    e.message()
                ),
            )
        };
        b.reset_peak(self.kind, self.index).map_err(unmeasurable)?;
        Ok(b.memory_stats(self.kind, self.index)
            .map_err(unmeasurable)?
            .allocated)
    }

    /// The allocator's peak since the last reset and what is allocated now (0 without a backend).
    fn allocator_after(&self) -> Result<sda_backend_abi::MemoryStats> {
        let Some(b) = self.backend else {
            return Ok(Default::default());
        };
        b.memory_stats(self.kind, self.index).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the probe cannot measure a run: reading the allocator failed: {}",
                    e.message()
                ),
            )
        })
    }
}

/// What one run of the probe measured.
struct Measured {
    /// How the run ended.
    outcome: Result<()>,
    /// Its peak in bytes (0 when it could not be measured).
    peak: u64,
    /// What the allocator still held after it, above what it held before: memory the run allocated
    /// and the host kept (an optimizer's state made by the first step), which later runs find
    /// already allocated.
    retained: u64,
    /// Its wall time.
    elapsed: Duration,
}

impl Measured {
    /// A run whose memory could not be read: no figures, and the error as its outcome.
    fn unmeasured(outcome: Result<()>, elapsed: Duration) -> Measured {
        Measured {
            outcome,
            peak: 0,
            retained: 0,
            elapsed,
        }
    }
}

/// Stores a probe's recommended batch as the config's `hardware.max_batch_size`, where
/// auto-configuration prefers it to its tier table. A probe that found nothing stores nothing.
pub fn save_to_config(config: &mut crate::config::Config, result: &ProbeResult) -> Result<()> {
    if result.recommended_batch == 0 {
        return Err(Error::invalid_argument(
            "the probe found no batch that fits: nothing to store".into(),
        ));
    }
    config.set(
        "hardware.max_batch_size",
        &result.recommended_batch.to_string(),
    )
}

/// Finds the largest batch of the workload that fits the budget on the context's selected device.
pub fn probe(context: &Context, mut options: ProbeOptions<'_>) -> Result<ProbeResult> {
    let started = Instant::now();
    let min_batch = options.min_batch.max(1);
    let max_batch = options.max_batch;
    if max_batch < min_batch {
        return Err(Error::invalid_argument(format!(
            "max_batch {max_batch} is smaller than min_batch {min_batch}"
        )));
    }
    // A start outside the range is a caller's mistake, not a batch to clamp silently.
    let start = options.start_batch;
    if start != 0 && !(min_batch..=max_batch).contains(&start) {
        return Err(Error::invalid_argument(format!(
            "start_batch {start} is outside min_batch..=max_batch ({min_batch}..={max_batch})"
        )));
    }
    if let ProbeWorkload::Builtin(w) = &options.workload {
        w.validate()?;
    }
    let selected = context.selected()?;
    let kind = selected.selection.kind;
    let budget = if options.budget_bytes > 0 {
        options.budget_bytes
    } else {
        context.memory_info()?.budget
    };
    if budget == 0 {
        return Err(Error::invalid_argument(
            "the memory budget is 0 bytes: nothing can be probed".into(),
        ));
    }
    let margin = if options.margin_bytes > 0 {
        options.margin_bytes.min(budget)
    } else {
        budget / 20
    };
    let backend = match &options.workload {
        ProbeWorkload::Builtin(_) => Some(context.backend()?),
        ProbeWorkload::Custom(_) => context.backend().ok(),
        ProbeWorkload::Model(_) => Some(context.backend()?),
    };
    let max_runs = options.max_runs.max(3);
    let mut progress = options.progress.take();
    let mut runner = Runner {
        context,
        kind,
        index: selected.selection.index,
        backend,
        workload: &mut options.workload,
    };
    let mut search = Search::new(budget, min_batch, max_batch, options.start_batch);
    let mut trials: Vec<Trial> = Vec::new();
    let mut stop = StopReason::Budget;

    while let Next::Run { batch, predicted } = search.next() {
        if trials.len() as u32 >= max_runs {
            break;
        }
        let Measured {
            outcome,
            peak,
            retained,
            elapsed,
        } = runner.run(batch);
        let oom = matches!(&outcome, Err(e) if e.is_out_of_memory());
        if let Err(e) = &outcome {
            if !oom {
                return Err(e.clone());
            }
        }
        let ok = outcome.is_ok();
        let trial = Trial {
            batch,
            peak_bytes: peak,
            ok,
            oom,
            predicted_bytes: predicted.unwrap_or(0),
            elapsed,
        };
        if trials.is_empty() && retained > 0 {
            // The first run's peak includes what it made for good (an optimizer's state, caches filled
            // on first use); later runs find it allocated and do not count it. Its point on the
            // curve would sit too high and flatten the line through it.
            crate::log::info(&format!(
                "the probe's first run (batch {batch}) left {} allocated, a one-time cost its peak \
                 counts and later runs' do not: the search lowers that run's point by it",
                crate::bytes::human_bytes(retained)
            ));
            search.record_one_time_cost(retained);
        }
        trials.push(trial);
        search.record(
            batch,
            match (ok, peak <= budget) {
                (true, true) => Outcome::Fitted { peak },
                (true, false) => Outcome::OverBudget { peak },
                (false, _) => Outcome::OutOfMemory,
            },
        );
        let best = search.best().map_or(0, |b| b.0);
        let keep_going = match progress.as_mut() {
            Some(cb) => cb(&ProbeProgress {
                trial,
                runs: trials.len() as u32,
                best_batch: best,
                budget_bytes: budget,
            }),
            None => true,
        };
        if !keep_going {
            stop = StopReason::Cancelled;
            break;
        }
        if best >= max_batch {
            stop = StopReason::MaxBatch;
            break;
        }
    }
    if let Err(e) = memory::clear_cache(selected.selection.kind, selected.selection.index) {
        crate::log::warn(&format!(
            "the probe could not empty the cache after its runs: {e}"
        ));
    }

    let elapsed = started.elapsed();
    let runs = trials.len() as u32;
    let oom_runs = trials.iter().filter(|t| t.oom).count() as u32;
    if stop == StopReason::Cancelled {
        return Err(Error::cancelled(format!(
            "the probe was cancelled by its progress callback after {runs} runs"
        )));
    }
    let (max_found, measured) = search.best().unwrap_or((0, 0));
    if max_found == 0 {
        stop = StopReason::OutOfMemory;
    }
    let prediction = search.prediction();
    let fit = prediction.map_or(
        Fit {
            fixed: 0.0,
            per_sample: 0.0,
        },
        |p| p.line,
    );
    let target = budget - margin;
    let measured_within_target = search
        .runs()
        .iter()
        .filter_map(|&(b, o)| match o {
            Outcome::Fitted { peak } if peak <= target => Some(b),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let predicted_within_target = prediction.map_or(0, |p| {
        p.largest_under(target, 0, u64::from(max_found) + 1) as u32
    });
    let recommended = measured_within_target
        .max(predicted_within_target)
        .max(min_batch)
        .min(max_found);
    let predicted_peak = trials
        .iter()
        .rev()
        .find(|t| t.ok && t.batch == max_found)
        .map_or(0, |t| t.predicted_bytes);
    Ok(ProbeResult {
        max_batch: max_found,
        recommended_batch: recommended,
        runs,
        oom_runs,
        fixed_bytes: fit.fixed,
        per_sample_bytes: fit.per_sample,
        predicted_peak_bytes: predicted_peak,
        measured_peak_bytes: measured,
        budget_bytes: budget,
        margin_bytes: margin,
        elapsed,
        stop,
        capped: stop == StopReason::MaxBatch,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_two_points_predicts_and_inverts() {
        let f = Fit::through((4, 1_000 + 4 * 100), (16, 1_000 + 16 * 100)).unwrap();
        assert!((f.fixed - 1000.0).abs() < 1e-6 && (f.per_sample - 100.0).abs() < 1e-6);
        assert_eq!(f.predict(10), 2000);
        assert_eq!(f.largest_under(2050), 10);
        assert_eq!(f.largest_under(500), 0);
        assert!(
            Fit::through((4, 100), (8, 100)).is_none(),
            "flat is not a usable line"
        );
        assert!(Fit::through((4, 100), (4, 200)).is_none());
    }
}
