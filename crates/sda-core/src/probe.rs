//! Batch probing: the largest batch of a workload that fits a memory budget, found by measuring, not by
//! waiting for failures.
//!
//! The search measures the peak memory of two small batches, fits `memory(b) = fixed + per_sample·b`,
//! predicts the largest batch under `budget − margin`, and verifies it by running it. When the
//! verification shows the curve is not linear (the run peaked above the budget, failed, or stayed well
//! below), it corrects with a secant step through the two nearest measurements, falling back to
//! bisection between the largest batch that fitted and the smallest that did not. The answer is always
//! a batch that ran successfully within the budget. On the CPU it never waits for the Linux OOM killer:
//! every run is predicted to fit the budget before it is started, except the measuring runs at the
//! smallest batches.

use crate::backend;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::host;
use crate::memory;
use crate::preference::DeviceKind;
use crate::workload::Workload;
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
}

/// How a probe searches.
pub struct ProbeOptions<'a> {
    /// Smallest batch (default 1).
    pub min_batch: u32,
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
            max_batch: 65_536,
            budget_bytes: 0,
            margin_bytes: 0,
            max_runs: 8,
            workload: ProbeWorkload::Builtin(Workload::default()),
            progress: None,
        }
    }
}

/// A straight line through measurements: `fixed + per_sample · batch`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Intercept in bytes.
    pub fixed: f64,
    /// Slope in bytes per sample.
    pub per_sample: f64,
}

impl Fit {
    /// The line through two (batch, bytes) points; `None` when they do not make an increasing line.
    pub fn through(a: (u32, u64), b: (u32, u64)) -> Option<Fit> {
        let (b1, p1) = (f64::from(a.0), a.1 as f64);
        let (b2, p2) = (f64::from(b.0), b.1 as f64);
        if b1 == b2 {
            return None;
        }
        let per_sample = (p2 - p1) / (b2 - b1);
        if per_sample.is_finite() && per_sample > 0.0 {
            Some(Fit {
                fixed: p1 - per_sample * b1,
                per_sample,
            })
        } else {
            None
        }
    }

    /// Predicted bytes at `batch`.
    pub fn predict(&self, batch: u32) -> u64 {
        (self.fixed + self.per_sample * f64::from(batch)).max(0.0) as u64
    }

    /// The largest batch predicted to stay at or under `limit` bytes (may be 0).
    pub fn largest_under(&self, limit: u64) -> u64 {
        let room = limit as f64 - self.fixed;
        if room <= 0.0 {
            0
        } else {
            (room / self.per_sample).floor().min(u64::MAX as f64) as u64
        }
    }
}

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
    fn run(&mut self, batch: u32) -> (Result<()>, u64, Duration) {
        let selection_kind = self.kind;
        // Freed blocks kept by the C heap or the caching allocator would hide the next run's use.
        let _ = memory::clear_cache(self.kind, self.index);
        let before_alloc = self.allocator_reset();
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
        };
        let elapsed = start.elapsed();
        let alloc_peak = self.allocator_peak().saturating_sub(before_alloc);
        let rss_peak = if measure_rss {
            host::peak_rss().saturating_sub(before_rss)
        } else {
            0
        };
        (outcome, alloc_peak.max(rss_peak), elapsed)
    }

    fn allocator_reset(&self) -> u64 {
        match self.backend {
            Some(b) => {
                let _ = b.reset_peak(self.kind, self.index);
                b.memory_stats(self.kind, self.index)
                    .map(|s| s.allocated)
                    .unwrap_or(0)
            }
            None => 0,
        }
    }

    fn allocator_peak(&self) -> u64 {
        self.backend
            .and_then(|b| b.memory_stats(self.kind, self.index).ok())
            .map(|s| s.peak_allocated)
            .unwrap_or(0)
    }
}

/// The state of the search between runs.
struct Search {
    budget: u64,
    target: u64,
    min_batch: u32,
    max_batch: u32,
    /// Largest batch that ran within the budget, with its peak.
    best: Option<(u32, u64)>,
    /// Smallest batch known not to fit (ran over the budget, or failed).
    too_big: Option<u32>,
    /// Successful measurements, for fits.
    points: Vec<(u32, u64)>,
    fit: Option<Fit>,
}

impl Search {
    /// The next batch to verify, or `None` when the search has converged.
    fn next(&self) -> Option<u32> {
        let low = self.best.map_or(self.min_batch.saturating_sub(1), |b| b.0);
        let high = self.too_big.unwrap_or(self.max_batch.saturating_add(1));
        if high <= low + 1 {
            return None;
        }
        // Secant: the line through the two measurements nearest the target.
        let predicted = self.secant().map(|f| f.largest_under(self.target));
        // Within 1 % of a batch that already fitted is as good as the answer; another run would cost
        // more than it gains. Below 100 one batch is more than 1 %, and real models live there
        // (answers of 1 to 32): every batch counts, so "one more than the best" is always tried.
        if let (Some(p), Some((best, _))) = (predicted, self.best) {
            if p > u64::from(best) && p - u64::from(best) <= u64::from(best / 100) {
                return None;
            }
        }
        let candidate = match predicted {
            Some(p) if p > u64::from(low) && p < u64::from(high) => p as u32,
            // The line says "low is the answer".
            Some(p) if p <= u64::from(low) && self.best.is_some() => return None,
            Some(p) if p >= u64::from(high) && self.too_big.is_none() => self.max_batch,
            // Bracketed by a batch that fitted and one that did not: bisection is safe.
            _ if self.too_big.is_some() => low + (high - low) / 2,
            // No usable line and no upper bound: grow from the largest batch that fitted, but only as
            // far as its own peak, scaled, stays under the target — never a leap into the unknown.
            _ => {
                let (best, peak) = self.best?;
                let doubled = best.saturating_mul(2).min(self.max_batch);
                if peak.saturating_mul(2) > self.target || doubled <= best {
                    return None;
                }
                doubled
            }
        };
        (candidate > low && candidate < high).then_some(candidate)
    }

    /// The line through the measurements that bracket the target: the largest batch measured at or
    /// under it and the smallest measured above it; without a measurement above, the two largest
    /// under it. The curve near the answer is what matters, not its start.
    fn secant(&self) -> Option<Fit> {
        let mut under: Vec<(u32, u64)> = self
            .points
            .iter()
            .copied()
            .filter(|p| p.1 <= self.target)
            .collect();
        let mut over: Vec<(u32, u64)> = self
            .points
            .iter()
            .copied()
            .filter(|p| p.1 > self.target)
            .collect();
        under.sort_by_key(|p| p.0);
        over.sort_by_key(|p| p.0);
        let line = match (under.last(), over.first()) {
            (Some(&a), Some(&b)) => Fit::through(a, b),
            (Some(_), None) if under.len() >= 2 => {
                Fit::through(under[under.len() - 2], under[under.len() - 1])
            }
            (None, Some(&b)) if over.len() >= 2 => Fit::through(b, over[1]),
            _ => None,
        };
        line.or(self.fit)
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

/// The second measuring batch: far enough from the first that noise in small peaks does not tilt the
/// line (16 times the first), but predicted to use at most a quarter of the budget even if all of the
/// first run's peak grew with the batch.
fn second_measuring_batch(first: u32, first_peak: u64, budget: u64, max_batch: u32) -> u32 {
    let per_sample_bound = (first_peak / u64::from(first)).max(1);
    let quarter = (budget / 4 / per_sample_bound).min(u64::from(u32::MAX)) as u32;
    first
        .saturating_mul(16)
        .min(quarter)
        .max(first.saturating_add(1))
        .min(max_batch)
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
    let mut search = Search {
        budget,
        target: budget - margin,
        min_batch,
        max_batch,
        best: None,
        too_big: None,
        points: Vec::new(),
        fit: None,
    };
    let mut trials: Vec<Trial> = Vec::new();
    let mut stop = StopReason::Budget;

    // Measuring runs: two small batches, the second four times the first, so that the line is not
    // dominated by the fixed part. On the CPU both lie above the thread count: oneDNN picks another
    // convolution algorithm, with another memory curve, while the batch is at most the number of
    // threads, and a line through such a point mispredicts large batches.
    let first = if kind == DeviceKind::Cpu {
        min_batch.max(host::static_facts().usable_cores.saturating_add(1))
    } else {
        min_batch
    }
    .min(max_batch);
    let mut plan: Vec<u32> = vec![first];
    // The measuring runs first, then whatever the search asks for (nothing once it has converged, or
    // when nothing has been measured to search from).
    let next_batch = |plan: &mut Vec<u32>, search: &Search| {
        plan.pop().or_else(|| {
            if search.points.is_empty() && search.too_big.is_none() {
                None
            } else {
                search.next()
            }
        })
    };
    while let Some(batch) = next_batch(&mut plan, &search) {
        if trials.len() as u32 >= max_runs {
            break;
        }
        let predicted = search.fit.map_or(0, |f| f.predict(batch));
        let (outcome, peak, elapsed) = runner.run(batch);
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
            predicted_bytes: predicted,
            elapsed,
        };
        trials.push(trial);
        if ok && peak <= search.budget {
            search.points.push((batch, peak));
            if search.best.is_none_or(|b| batch > b.0) {
                search.best = Some((batch, peak));
            }
        } else {
            if ok {
                // It ran, but above the budget: still a measurement of the curve.
                search.points.push((batch, peak));
            }
            search.too_big = Some(search.too_big.map_or(batch, |t| t.min(batch)));
            // Nothing left below a failing measuring run.
            plan.retain(|&b| b < batch);
        }
        if trials.len() == 1 && ok && peak <= search.budget {
            plan.push(second_measuring_batch(batch, peak, budget, max_batch));
            plan.retain(|&b| b > batch);
        }
        if search.points.len() >= 2 {
            let mut pts = search.points.clone();
            pts.sort_by_key(|p| p.0);
            search.fit = Fit::through(pts[0], pts[pts.len() - 1]).or(search.fit);
        }
        let keep_going = match progress.as_mut() {
            Some(cb) => cb(&ProbeProgress {
                trial,
                runs: trials.len() as u32,
                best_batch: search.best.map_or(0, |b| b.0),
                budget_bytes: budget,
            }),
            None => true,
        };
        if !keep_going {
            stop = StopReason::Cancelled;
            break;
        }
        if search.best.is_some_and(|b| b.0 >= max_batch) {
            stop = StopReason::MaxBatch;
            break;
        }
        if search.best.is_none() && search.too_big == Some(min_batch) {
            stop = StopReason::OutOfMemory;
            break;
        }
    }
    let _ = memory::clear_cache(selected.selection.kind, selected.selection.index);

    let elapsed = started.elapsed();
    let runs = trials.len() as u32;
    let oom_runs = trials.iter().filter(|t| t.oom).count() as u32;
    if stop == StopReason::Cancelled {
        return Err(Error::cancelled(format!(
            "the probe was cancelled by its progress callback after {runs} runs"
        )));
    }
    let (max_found, measured) = search.best.unwrap_or((0, 0));
    if max_found == 0 {
        stop = StopReason::OutOfMemory;
    }
    let fit = search.fit.unwrap_or(Fit {
        fixed: 0.0,
        per_sample: 0.0,
    });
    let recommended = if fit.per_sample > 0.0 {
        (fit.largest_under(budget - margin).min(u64::from(max_found)) as u32).max(min_batch)
    } else {
        max_found
    }
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
    fn the_second_measuring_run_stays_within_a_quarter_of_the_budget() {
        // 1 MiB per sample at batch 3: a 64 MiB budget allows 16 samples in its quarter.
        assert_eq!(second_measuring_batch(3, 3 << 20, 64 << 20, 1000), 16);
        // A large budget: 16 times the first.
        assert_eq!(second_measuring_batch(3, 3 << 20, 1 << 40, 1000), 48);
        // Never below first + 1, never above max_batch.
        assert_eq!(second_measuring_batch(3, 3 << 30, 1 << 20, 1000), 4);
        assert_eq!(second_measuring_batch(3, 3, 1 << 40, 20), 20);
    }

    #[test]
    fn below_a_hundred_one_more_than_the_best_is_still_tried() {
        // Measured on an AVX2 CPU: oneDNN's scratch makes batch 3 cost 26 MB and batch 14 418 MB;
        // the line says 15 fits the target, and 15 is one more than the best: it must run.
        const MB: u64 = 1_000_000;
        let points = vec![(3, 26 * MB), (14, 418 * MB)];
        let search = Search {
            budget: 512 << 20,
            target: 486 * MB,
            min_batch: 1,
            max_batch: 4096,
            best: Some((14, 418 * MB)),
            too_big: None,
            fit: Fit::through(points[0], points[1]),
            points,
        };
        assert_eq!(search.next(), Some(15));
        // Above a hundred, within 1 % of the best is the answer.
        let points = vec![(100, 100 * MB), (400, 400 * MB)];
        let search = Search {
            best: Some((400, 400 * MB)),
            target: 401 * MB + MB / 2,
            fit: Fit::through(points[0], points[1]),
            points,
            ..search
        };
        assert_eq!(search.next(), None);
    }

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
