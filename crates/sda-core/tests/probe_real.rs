//! Batch probing against real limits: each budget runs in a child process whose address space is
//! limited with `setrlimit(RLIMIT_AS, start + budget)`, the budget is handed to the probe, and the test
//! then searches the true maximum under that limit by running the workload (runs above it fail in
//! libtorch's allocator). The probe must land within 90–100 % of the true maximum, on a batch that ran,
//! in few runs and without a single out-of-memory run.

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::ErrorKind;
use sda_core::probe::{self, ProbeOptions, ProbeWorkload, StopReason};
use sda_core::workload::Workload;
use sda_testkit::child::{self, ChildRun};
use sda_testkit::memory::{self, MIB};
use std::time::Duration;

/// The variable that tells the accuracy test that it is a child under a limit.
const ROLE: &str = "SDA_PROBE_CHILD";

fn cpu_context() -> Context {
    let ctx = Context::new(Config::default());
    ctx.select(Some("cpu")).unwrap();
    ctx
}

/// Whether `batch` of the workload runs under the current limit.
fn fits(ctx: &Context, batch: u32) -> bool {
    match Workload::default().run(ctx, batch) {
        Ok(()) => true,
        Err(e) if e.is_out_of_memory() => false,
        Err(e) => panic!("batch {batch}: {e}"),
    }
}

/// The child: probe under a real limit, then find the true maximum by running.
fn limited_child() {
    let budget = child::address_space_budget().expect("the parent gave a budget");
    let ctx = cpu_context();
    // Warm up (libtorch loaded, its worker threads created) before the limit is measured; the child
    // runs with one heap arena (ChildRun), so that no thread's first allocation reserves 64 MiB of
    // address space later, which RLIMIT_AS would count although it is not memory in use.
    assert!(fits(&ctx, 4));
    assert!(fits(&ctx, 16));
    child::apply_address_space_budget();

    let result = probe::probe(
        &ctx,
        ProbeOptions {
            budget_bytes: budget,
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    let chosen = result.max_batch;
    assert!(chosen > 0, "{result:?}");
    assert!(
        result.trials.iter().any(|t| t.ok && t.batch == chosen),
        "the answer ran"
    );

    // The true maximum: grow by 10 % until a run fails, then bisect between the last success and
    // the first failure.
    let mut good = chosen;
    let mut bad = chosen;
    loop {
        bad = (bad + bad / 10).max(bad + 1);
        if !fits(&ctx, bad) {
            break;
        }
        good = bad;
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(&ctx, mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    let ratio = f64::from(chosen) / f64::from(good);
    println!(
        "RESULT budget_mib={} true_max={good} chosen={chosen} recommended={} ratio={ratio:.3} \
         runs={} oom_runs={} per_sample={:.0} fixed={:.0} stop={} elapsed_ms={} trials={}",
        budget / MIB,
        result.recommended_batch,
        result.runs,
        result.oom_runs,
        result.per_sample_bytes,
        result.fixed_bytes,
        result.stop.as_str(),
        result.elapsed.as_millis(),
        result
            .trials
            .iter()
            .map(|t| format!(
                "{}:{}:{}",
                t.batch,
                t.peak_bytes / MIB,
                if t.ok { "ok" } else { "fail" }
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        (0.90..=1.0).contains(&ratio),
        "chosen {chosen} vs true maximum {good}"
    );
    assert_eq!(result.oom_runs, 0, "{result:?}");
    assert!(result.runs <= 6, "{result:?}");
}

/// The probe's runs and its accuracy (chosen / true maximum) under a limit of `budget_mib` above the
/// warmed-up size, from a child.
fn run_child(budget_mib: u64) -> (u32, f64) {
    let out = ChildRun::test("probe_lands_within_ten_percent_of_the_true_maximum", ROLE)
        .address_space_budget(budget_mib * MIB)
        .deadline(Duration::from_secs(300))
        .run();
    out.assert_success(&format!("budget {budget_mib} MiB"));
    let line = out.result_line();
    println!(
        "{}",
        line.unwrap_or_else(|| panic!("no result line: {}", out.stdout))
    );
    (out.parsed_field("runs"), out.parsed_field("ratio"))
}

// Ignored, not deleted: on the AVX2 EPYC machines this project now runs on, oneDNN gives the built-in
// conv1d a ~390 MB scratch from batch 4 on (batch 3: 26 MB, 14: 418 MB, 35: 484 MB), so the curve
// is nothing like a line, and the RLIMIT_AS "true maximum" of the same budget varies from 34 to 44
// between runs. Neither "within 10 %" nor "at most 3 runs" is a property of the probe there. Issue
// 12 (real models) redefines the probe's answers (max_batch: the largest batch that ran within the
// budget; exact up to 32) and replaces this test with checks of those definitions. Run it with
// `cargo nextest run -p sda-core --test probe_real --run-ignored all` to see the figures.
#[test]
#[ignore = "machine-dependent figures on AVX2 CPUs; replaced by issue 12's probe checks"]
fn probe_lands_within_ten_percent_of_the_true_maximum() {
    if child::is_child(ROLE) {
        limited_child();
        return;
    }
    // The last budget's true maximum is above 256, where the seeds' search stops at its cap.
    let mut runs: Vec<u32> = [512, 1024, 2048].iter().map(|&b| run_child(b).0).collect();
    runs.sort_unstable();
    let median = runs[runs.len() / 2];
    assert!(median <= 3, "median runs {median} ({runs:?})");
    assert!(runs.iter().all(|&r| r <= 6), "{runs:?}");
}

/// Memory that is touched, so that it shows in the resident set, like a host's own buffers.
fn touch(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&v);
    v
}

#[test]
fn a_step_in_the_memory_curve_still_ends_on_a_batch_that_ran_within_the_budget() {
    let ctx = cpu_context();
    // 1 MiB per sample, plus a 64 MiB jump above batch 40: a linear fit from small batches
    // overshoots, and the search has to correct.
    let cost = |b: u32| (b as usize) * MIB as usize + if b > 40 { 64 * MIB as usize } else { 0 };
    let mut ran: Vec<u32> = Vec::new();
    let mut work = |b: u32| -> sda_core::error::Result<()> {
        let buf = touch(cost(b));
        drop(buf);
        ran.push(b);
        Ok(())
    };
    let budget = 100 * MIB;
    let result = probe::probe(
        &ctx,
        ProbeOptions {
            budget_bytes: budget,
            workload: ProbeWorkload::Custom(&mut work),
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    println!("{:?}", result.trials);
    assert!(ran.contains(&result.max_batch), "the answer ran");
    let answer = result
        .trials
        .iter()
        .find(|t| t.batch == result.max_batch && t.ok)
        .unwrap();
    assert!(answer.peak_bytes <= budget, "{answer:?}");
    assert!(
        result.max_batch <= 40 && result.max_batch >= 30,
        "{result:?}"
    );
    assert!(result.recommended_batch <= result.max_batch);
}

#[test]
fn cancelling_from_the_progress_callback_returns_cancelled_promptly_and_leaks_nothing() {
    let ctx = cpu_context();
    let probe_once = || {
        let mut calls = 0;
        let mut progress = |_: &probe::ProbeProgress| {
            calls += 1;
            false
        };
        // A tenth of the seeds' sample length: the same workload code and the same cancellation
        // path, but a first run of a fraction of a second instead of seconds on CPUs where oneDNN
        // takes its slow path at small batches (26 probes run here).
        let short = Workload {
            sample_length: 4_800,
            ..Workload::default()
        };
        let result = probe::probe(
            &ctx,
            ProbeOptions {
                budget_bytes: 256 * MIB,
                progress: Some(&mut progress),
                workload: ProbeWorkload::Builtin(short),
                ..ProbeOptions::default()
            },
        );
        (result, calls)
    };
    let (first, calls) = probe_once();
    let err = first.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    assert_eq!(calls, 1, "stopped after the first run");
    // Warm up: libtorch's thread pool, heap arenas and oneDNN's kernel cache grow on first use.
    for _ in 0..5 {
        let _ = probe_once();
    }
    let start = memory::rss();
    let backend = ctx.load_backend().unwrap();
    let allocated = || {
        backend
            .memory_stats(sda_core::preference::DeviceKind::Cpu, 0)
            .unwrap()
            .allocated
    };
    let tensors_before = allocated();
    for _ in 0..20 {
        let (r, _) = probe_once();
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
    }
    assert_eq!(allocated(), tensors_before, "no torch memory left behind");
    let end = memory::rss();
    let growth = end as f64 / start as f64 - 1.0;
    assert!(
        growth < 0.02,
        "RSS grew {:.1} % ({start} -> {end})",
        growth * 100.0
    );
}

#[test]
fn max_batch_reached_is_reported_as_capped_not_as_a_maximum() {
    let ctx = cpu_context();
    let mut work = |b: u32| -> sda_core::error::Result<()> {
        drop(touch(b as usize * 4096));
        Ok(())
    };
    let result = probe::probe(
        &ctx,
        ProbeOptions {
            budget_bytes: 512 * MIB,
            max_batch: 64,
            workload: ProbeWorkload::Custom(&mut work),
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(result.max_batch, 64);
    assert!(result.capped);
    assert_eq!(result.stop, StopReason::MaxBatch);
}
