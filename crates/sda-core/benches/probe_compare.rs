//! Batch-size finders compared on the same workload, budgets and machine, in one run:
//! libsda's probe, the seeds' binary search over 1..256, and a Lightning-style doubling + bisection.
//!
//!   cargo bench -p sda-core --bench probe_compare   (not part of `make bench`: it takes minutes)
//!
//! `SDA_COMPARE_REPEAT=N` runs libsda's cell N times per budget (default 1), each in a fresh child,
//! and prints every repetition's runs: the peaks near oneDNN's kinks move by a few MB between
//! processes, and one run of the table does not show how often that costs a run.
//! `SDA_COMPARE_ONLY=libsda` leaves out the other methods (the true maximum is still searched).
//!
//! Each (method, budget) runs in a child process (sda_testkit's `ChildRun`, one heap arena) whose
//! address space is limited to what it holds after warming up plus the budget (`setrlimit(RLIMIT_AS)`),
//! so failures are real libtorch allocation failures. The true maximum under each limit is searched
//! in its own child by running the workload.
//! Prints a Markdown table: runs, out-of-memory runs, wall time, the batch found and its accuracy.

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::probe::{self, ProbeOptions};
use sda_core::workload::Workload;
use sda_testkit::child::{self, ChildRun};
use sda_testkit::memory::MIB;
use std::time::Instant;

const BUDGETS_MIB: [u64; 3] = [512, 1024, 2048];
/// The variable that tells `main` that it is a child measuring one cell.
const ROLE: &str = "SDA_COMPARE_CHILD";

/// A context on the CPU, warmed up, then limited to the parent's budget more of address space.
fn limited_context() -> Context {
    let ctx = Context::new(Config::default());
    ctx.select(Some("cpu")).expect("cpu");
    for b in [4, 16] {
        Workload::default().run(&ctx, b).expect("warm-up");
    }
    child::apply_address_space_budget().expect("the parent gave a budget");
    ctx
}

/// Counts runs and out-of-memory runs of the workload.
struct Runs<'a> {
    ctx: &'a Context,
    runs: u32,
    ooms: u32,
}

impl Runs<'_> {
    fn fits(&mut self, batch: u32) -> bool {
        self.runs += 1;
        match Workload::default().run(self.ctx, batch) {
            Ok(()) => true,
            Err(e) if e.is_out_of_memory() => {
                self.ooms += 1;
                false
            }
            Err(e) => panic!("batch {batch}: {e}"),
        }
    }
}

/// The seeds' benchmark: binary search over 1..256 for the largest batch that does not fail.
fn seeds_bisect(r: &mut Runs) -> u32 {
    let (mut lo, mut hi, mut best) = (1u32, 256u32, 0u32);
    while lo <= hi {
        let mid = (lo + hi) / 2;
        if r.fits(mid) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    best
}

/// Lightning's BatchSizeFinder in "binsearch" mode: double from 2 until a failure, then bisect
/// between the last success and the failure (one run per trial here; Lightning runs 3 steps each).
fn lightning_binsearch(r: &mut Runs) -> u32 {
    let mut size = 2u32;
    let mut low = 1u32;
    loop {
        if r.fits(size) {
            low = size;
            size *= 2;
        } else {
            break;
        }
    }
    let mut high = size;
    while high - low > 1 {
        let mid = (low + high) / 2;
        if r.fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

/// The true maximum under the limit: grow by 10 % from a probe's answer until a failure, then bisect.
fn true_max(r: &mut Runs, budget: u64) -> u32 {
    let start = probe::probe(
        r.ctx,
        ProbeOptions {
            budget_bytes: budget,
            ..ProbeOptions::default()
        },
    )
    .map(|p| p.max_batch.max(1))
    .unwrap_or(1);
    let (mut good, mut bad) = (0u32, start);
    if r.fits(start) {
        good = start;
        loop {
            bad = (bad + bad / 10).max(bad + 1);
            if !r.fits(bad) {
                break;
            }
            good = bad;
        }
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if r.fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

fn measure(method: &str) {
    let budget = child::address_space_budget().expect("the parent gave a budget");
    let ctx = limited_context();
    let mut r = Runs {
        ctx: &ctx,
        runs: 0,
        ooms: 0,
    };
    let start = Instant::now();
    // libsda's runs in order, batch:peak/predicted MiB (no spaces: one field of the RESULT line).
    let mut trials = String::from("-");
    let found = match method {
        "libsda" => {
            let p = probe::probe(
                &ctx,
                ProbeOptions {
                    budget_bytes: budget,
                    ..ProbeOptions::default()
                },
            )
            .expect("probe");
            r.runs = p.runs;
            r.ooms = p.oom_runs;
            trials = p
                .trials
                .iter()
                .map(|t| {
                    let peak = if t.oom {
                        "OOM".to_string()
                    } else {
                        (t.peak_bytes / MIB).to_string()
                    };
                    format!("{}:{}/{}", t.batch, peak, t.predicted_bytes / MIB)
                })
                .collect::<Vec<_>>()
                .join(",");
            p.max_batch
        }
        "seeds" => seeds_bisect(&mut r),
        "lightning" => lightning_binsearch(&mut r),
        "true" => true_max(&mut r, budget),
        other => panic!("unknown method {other}"),
    };
    println!(
        "RESULT method={method} budget_mib={} found={found} runs={} ooms={} seconds={:.2} trials={trials}",
        budget / MIB,
        r.runs,
        r.ooms,
        start.elapsed().as_secs_f64()
    );
}

/// One cell: `method` in a child under RLIMIT_AS = its warmed-up size + `budget_mib`.
fn spawn(method: &str, budget_mib: u64) -> (u32, u32, u32, f64, String) {
    let out = ChildRun::main(ROLE)
        .env("SDA_COMPARE_METHOD", method)
        .address_space_budget(budget_mib * MIB)
        .run();
    out.assert_success(&format!("{method} {budget_mib} MiB"));
    (
        out.parsed_field("found"),
        out.parsed_field("runs"),
        out.parsed_field("ooms"),
        out.parsed_field("seconds"),
        out.parsed_field("trials"),
    )
}

fn main() {
    if child::is_child(ROLE) {
        measure(&std::env::var("SDA_COMPARE_METHOD").expect("SDA_COMPARE_METHOD"));
        return;
    }
    println!("Workload: conv1d, 16 filters of 1024, padding 512, over [batch, 1, 48000] fp32 (the seeds').");
    println!(
        "Each cell: one child process under RLIMIT_AS = its size after warm-up + the budget.\n"
    );
    println!(
        "| budget | true max | method | batch found | accuracy | runs | OOM runs | wall (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let repeat: u32 = std::env::var("SDA_COMPARE_REPEAT")
        .ok()
        .map(|v| v.parse().expect("SDA_COMPARE_REPEAT is a number"))
        .unwrap_or(1)
        .max(1);
    let only = std::env::var("SDA_COMPARE_ONLY").ok();
    let mut sequences = Vec::new();
    for budget in BUDGETS_MIB {
        let (truth, ..) = spawn("true", budget);
        for (method, name) in [
            ("libsda", "libsda probe (fit + verify)"),
            ("seeds", "seeds: bisect 1..256"),
            ("lightning", "Lightning-style: double + bisect"),
        ] {
            if only.as_deref().is_some_and(|o| o != method) {
                continue;
            }
            let times = if method == "libsda" { repeat } else { 1 };
            for _ in 0..times {
                let (found, runs, ooms, secs, trials) = spawn(method, budget);
                if method == "libsda" {
                    sequences.push(format!("- {budget} MiB: {}", trials.replace(',', ", ")));
                }
                println!(
                    "| {budget} MiB | {truth} | {name} | {found} | {:.2} | {runs} | {ooms} | {secs:.1} |",
                    f64::from(found) / f64::from(truth.max(1))
                );
            }
        }
    }
    println!("\nlibsda's runs, in order (batch: measured peak / predicted peak, MiB; 0 predicted: a measuring run):");
    for line in sequences {
        println!("{line}");
    }
    println!("\nThe seeds' CPU path does not search at all: it returns a fixed 32 on every CPU.");
}
