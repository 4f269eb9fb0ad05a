//! A model file as the workload, through the core: TorchScript modules (conv, recurrent,
//! attention) made at test time with the project's own torch (`.venv/bin/python model_gen.py`,
//! nothing downloaded), run for inference and training, under guard, and probed under a real
//! `RLIMIT_AS` limit in a child; every bad input is an error with the model's message and leaves
//! nothing loaded (the backend's live-model count returns to 0).

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::ErrorKind;
use sda_core::guard::{self, GuardOptions};
use sda_core::model::{ModelDtype, ModelWorkload};
use sda_core::probe::{self, ProbeOptions, ProbeWorkload};
use sda_testkit::child::{self, ChildRun};
use sda_testkit::memory::MIB;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The variable that tells the probe test that it is a child under a limit.
const ROLE: &str = "SDA_MODEL_PROBE_CHILD";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The model files, written once per process (a child writes its own).
fn models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sda_core_models_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = repo_root();
        let out = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("crates/sda-core/tests/model_gen.py"))
            .arg(&dir)
            .args(["conv.pt", "gru.pt", "attention.pt", "fixed.pt", "dict.pt"])
            .output()
            .expect("run .venv/bin/python");
        assert!(
            out.status.success(),
            "model_gen.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// The tests of one process share the backend's model count.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn cpu_context() -> Context {
    let ctx = Context::new(Config::default());
    ctx.select(Some("cpu")).unwrap();
    ctx
}

fn workload(name: &str, shape: &[u64], train: bool) -> ModelWorkload {
    ModelWorkload {
        path: models().join(name),
        input_shape: shape.to_vec(),
        dtype: ModelDtype::F32,
        train,
    }
}

fn live_models(ctx: &Context) -> u64 {
    ctx.load_backend().unwrap().model_count().unwrap()
}

#[test]
fn conv_recurrent_and_attention_models_run_for_inference_and_training() {
    let _s = serial();
    let ctx = cpu_context();
    for (name, shape) in [
        ("conv.pt", vec![2, 4000]),
        ("gru.pt", vec![40, 8]),
        ("attention.pt", vec![20, 16]),
    ] {
        for train in [false, true] {
            let w = workload(name, &shape, train);
            w.run(&ctx, 3)
                .unwrap_or_else(|e| panic!("{name} train={train}: {e}"));
            let loaded = w.load(&ctx).unwrap();
            assert!(loaded.resident_bytes() > 0, "{loaded:?}");
            for batch in [1, 5] {
                loaded
                    .run(batch)
                    .unwrap_or_else(|e| panic!("{name} train={train} batch {batch}: {e}"));
            }
            assert_eq!(live_models(&ctx), 1);
            drop(loaded);
            assert_eq!(live_models(&ctx), 0, "dropping frees the model");
        }
    }
}

#[test]
fn every_bad_input_is_an_error_with_the_models_message_and_nothing_stays_loaded() {
    let _s = serial();
    let ctx = cpu_context();
    let missing = workload("no_such_model.pt", &[2], false);
    let e = missing.load(&ctx).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("no_such_model.pt"), "{e}");

    let text = models().join("readme.txt");
    std::fs::write(&text, "a text file, not a model\n").unwrap();
    let e = ModelWorkload {
        path: text,
        ..workload("conv.pt", &[2], false)
    }
    .load(&ctx)
    .unwrap_err();
    assert_ne!(e.kind(), ErrorKind::OutOfMemory, "{e}");
    assert!(e.message().contains("readme.txt"), "{e}");
    assert_eq!(live_models(&ctx), 0);

    // A shape the model rejects: 3 channels into a 2-channel convolution.
    let e = workload("conv.pt", &[3, 1000], false)
        .run(&ctx, 2)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message().contains("rejected its input [2, 3, 1000] f32"),
        "{e}"
    );
    assert!(
        e.message().contains("channels"),
        "the model's own words: {e}"
    );
    // A dtype it rejects.
    let e = ModelWorkload {
        dtype: ModelDtype::Bf16,
        ..workload("conv.pt", &[2, 1000], false)
    }
    .run(&ctx, 2)
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("bf16"), "{e}");
    // Training a model whose output is a dict (inference is fine).
    workload("dict.pt", &[4], false).run(&ctx, 2).unwrap();
    let e = workload("dict.pt", &[4], true).run(&ctx, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("not a tensor"), "{e}");
    assert_eq!(live_models(&ctx), 0);
}

#[test]
fn a_model_with_a_fixed_traced_batch_is_reported_as_such_not_as_out_of_memory() {
    let _s = serial();
    let ctx = cpu_context();
    let fixed = workload("fixed.pt", &[2, 100], false);
    let loaded = fixed.load(&ctx).unwrap();
    loaded.run(1).unwrap();
    let e = loaded.run(4).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(
        e.message()
            .contains("accepts only its traced batch: it ran at batch 1, at batch 4"),
        "{e}"
    );
    drop(loaded);
    // Without an earlier run: the diagnostic run at batch 1 tells it apart from a rejected input.
    let e = fixed.run(&ctx, 3).unwrap_err();
    assert!(e.message().contains("accepts only its traced batch"), "{e}");
    // The probe stops with it (its first batch on the CPU is above 1).
    let loaded = fixed.load(&ctx).unwrap();
    let e = probe::probe(
        &ctx,
        ProbeOptions {
            budget_bytes: 256 * MIB,
            min_batch: 2,
            workload: ProbeWorkload::Model(&loaded),
            ..ProbeOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("accepts only its traced batch"), "{e}");
    // So does a guarded run.
    let (result, report) = guard::run_model(
        &ctx,
        &GuardOptions {
            batch_size: 8,
            max_attempts: 4,
            ..GuardOptions::default()
        },
        &loaded,
    );
    assert_eq!(result.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!((report.attempts, report.oom_attempts), (1, 0), "{report:?}");
    drop(loaded);
    assert_eq!(live_models(&ctx), 0);
}

#[test]
fn a_guarded_model_run_succeeds_and_reports_the_batch() {
    let _s = serial();
    let ctx = cpu_context();
    let loaded = workload("gru.pt", &[40, 8], true).load(&ctx).unwrap();
    let (result, report) = guard::run_model(
        &ctx,
        &GuardOptions {
            batch_size: 4,
            ..GuardOptions::default()
        },
        &loaded,
    );
    result.unwrap();
    assert_eq!(report.attempted_batch, 4, "{report:?}");
}

/// The child: probe the conv model under a real address-space limit.
fn limited_child() {
    let budget = child::address_space_budget().expect("the parent gave a budget");
    let ctx = cpu_context();
    // Half a second of stereo at 44.1 kHz per sample, through 16 channels: about 3 MB per sample.
    let model = workload("conv.pt", &[2, 22050], false).load(&ctx).unwrap();
    // Warm up (thread pools, kernel caches) before the limit is measured.
    model.run(4).unwrap();
    model.run(16).unwrap();
    child::apply_address_space_budget();
    let result = probe::probe(
        &ctx,
        ProbeOptions {
            budget_bytes: budget,
            workload: ProbeWorkload::Model(&model),
            ..ProbeOptions::default()
        },
    )
    .unwrap();
    let answer = result
        .trials
        .iter()
        .find(|t| t.ok && t.batch == result.max_batch)
        .unwrap_or_else(|| panic!("the answer ran: {result:?}"));
    assert!(result.max_batch > 3, "{result:?}");
    assert!(answer.peak_bytes <= budget, "{answer:?}");
    assert!(
        result
            .trials
            .iter()
            .all(|t| !t.ok || t.peak_bytes >= model.resident_bytes()),
        "every peak includes the weights: {result:?}"
    );
    // Far above the answer, the limit is real: an out-of-memory error, not a crash.
    let e = model.run(result.max_batch * 8).unwrap_err();
    assert!(e.is_out_of_memory(), "{e}");
    // Guidance that holds on a real model (issue 12.3): a guarded run of that batch runs out of
    // memory, and the batch it suggests then runs under the same limit.
    let (outcome, report) = guard::run_model(
        &ctx,
        &GuardOptions {
            batch_size: result.max_batch * 8,
            max_attempts: 1,
            budget_bytes: budget,
            ..GuardOptions::default()
        },
        &model,
    );
    assert!(outcome.unwrap_err().is_out_of_memory(), "{report:?}");
    let suggested = report.suggested_batch;
    assert!(
        suggested >= 1 && suggested < result.max_batch * 8,
        "{report:?}"
    );
    model
        .run(suggested)
        .unwrap_or_else(|e| panic!("the suggested batch {suggested} did not run: {e}"));
    let (outcome, retried) = guard::run_model(
        &ctx,
        &GuardOptions {
            batch_size: suggested,
            max_attempts: 1,
            budget_bytes: budget,
            ..GuardOptions::default()
        },
        &model,
    );
    outcome.unwrap_or_else(|e| panic!("the suggested batch {suggested} failed guarded: {e}"));
    assert!(
        retried.peak_bytes <= budget,
        "within the budget: {retried:?}"
    );
    println!(
        "SUGGESTED after an OOM at {}: {suggested}",
        result.max_batch * 8
    );
    // The same for a model that has never run: the guard measures batch 1 after the failure and
    // suggests from that, not from the failed allocation alone (a lower bound of the cost).

    let fresh = workload("conv.pt", &[2, 22050], false).load(&ctx).unwrap();
    let (outcome, report) = guard::run_model(
        &ctx,
        &GuardOptions {
            batch_size: result.max_batch * 8,
            max_attempts: 1,
            budget_bytes: budget,
            ..GuardOptions::default()
        },
        &fresh,
    );
    assert!(outcome.unwrap_err().is_out_of_memory(), "{report:?}");
    let suggested = report.suggested_batch;
    assert!(suggested >= 1, "{report:?}");
    fresh.run(suggested).unwrap_or_else(|e| {
        panic!("the fresh model's suggested batch {suggested} did not run: {e}")
    });
    println!(
        "SUGGESTED for a fresh model: {suggested} ({})",
        report.guidance
    );
    println!(
        "RESULT budget_mib={} max_batch={} recommended={} runs={} oom_runs={} per_sample={:.0} \
         fixed={:.0} resident={}",
        budget / MIB,
        result.max_batch,
        result.recommended_batch,
        result.runs,
        result.oom_runs,
        result.per_sample_bytes,
        result.fixed_bytes,
        model.resident_bytes()
    );
}

#[test]
fn the_probe_of_a_model_under_a_real_limit_finds_a_batch_that_ran_within_it() {
    if child::is_child(ROLE) {
        limited_child();
        return;
    }
    let out = ChildRun::test(
        "the_probe_of_a_model_under_a_real_limit_finds_a_batch_that_ran_within_it",
        ROLE,
    )
    .address_space_budget(256 * MIB)
    .deadline(Duration::from_secs(300))
    .run();
    out.assert_success("probe of conv.pt under 256 MiB");
    println!("{}", out.result_line().unwrap_or("no result line"));
}
