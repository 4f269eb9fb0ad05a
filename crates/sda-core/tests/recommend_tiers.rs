//! Auto-configuration: every tier boundary of the built-in table, a table from TOML replacing it, a
//! stored probe result beating it, and model-size advice that is more careful for larger models.

use sda_core::bytes::BYTES_PER_GB;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::memory::MemoryStrategy;
use sda_core::preference::DeviceKind;
use sda_core::recommend::{
    self, BatchSource, DeviceFacts, Recommendation, LARGE_MODEL_PARAMETERS, SMALL_MODEL_PARAMETERS,
};
use sda_core::tiers::{self, builtin_tiers};
use sda_testkit::InjectedMachine;
use std::sync::Arc;

fn facts(kind: DeviceKind, memory_total: u64) -> DeviceFacts {
    DeviceFacts {
        kind,
        device: sda_core::device::device_string(kind, 0),
        name: format!("test {kind}"),
        memory_total,
    }
}

fn recommend_for(config: &Config, kind: DeviceKind, memory_total: u64) -> Recommendation {
    recommend::recommend(config, facts(kind, memory_total), 0).unwrap()
}

/// A CUDA recommendation through a context on a machine with one injected GPU of that memory.
fn recommend_on_gpu(config: Config, memory_total: u64) -> Recommendation {
    let machine = Arc::new(InjectedMachine::with_memory(&[memory_total]));
    let context = Context::with_machine(config, machine);
    let r = context.recommend(0).unwrap();
    assert_eq!(r.device.device, "cuda:0");
    assert_eq!(r.device.memory_total, memory_total);
    r
}

fn gb(x: f64) -> u64 {
    (x * BYTES_PER_GB) as u64
}

#[test]
fn every_builtin_tier_boundary_falls_on_the_right_side() {
    let config = Config::default();
    let table = builtin_tiers();
    for kind in DeviceKind::ALL {
        let tiers: Vec<_> = table.iter().filter(|t| t.device == kind).collect();
        let check = |memory: u64, expected: &tiers::Tier| {
            let r = if kind == DeviceKind::Cuda {
                recommend_on_gpu(config.clone(), memory)
            } else {
                recommend_for(&config, kind, memory)
            };
            assert_eq!(&r.tier, expected, "{kind} with {memory} bytes");
            assert_eq!(r.batch_size, expected.batch_size);
            assert_eq!(r.batch_source, BatchSource::Tier);
            assert_eq!(r.gradient_checkpointing, expected.gradient_checkpointing);
            assert_eq!((r.blocks, r.channels), (expected.blocks, expected.channels));
            assert!(!r.tier_from_config);
        };
        check(0, tiers[0]);
        check(u64::MAX, tiers[tiers.len() - 1]);
        for pair in tiers.windows(2) {
            let boundary = pair[1].min_memory_gb;
            assert_eq!(pair[0].max_memory_gb, Some(boundary));
            // The boundary belongs to the upper tier; one byte less to the lower one.
            check(gb(boundary), pair[1]);
            check(gb(boundary) - 1, pair[0]);
        }
    }
}

#[test]
fn the_seed_tiers_are_the_builtin_values() {
    let c = Config::default();
    // (kind, memory GB, batch, checkpointing, blocks, channels) from seed 003.
    let rows = [
        (DeviceKind::Cuda, 42.3, 2048, false, 30, 192), // A100 40 GB reports 42.3 GB
        (DeviceKind::Cuda, 34.1, 1536, false, 30, 192), // V100 32 GB
        (DeviceKind::Cuda, 25.8, 1536, false, 30, 192), // RTX 4090 24 GB
        (DeviceKind::Cuda, 17.2, 1024, false, 30, 192), // RTX 4080 16 GB
        (DeviceKind::Cuda, 12.6, 512, true, 30, 192),   // RTX 3060 12 GB
        (DeviceKind::Mps, 34.4, 512, false, 30, 192),   // M1 Max 32 GB
        (DeviceKind::Mps, 17.2, 256, true, 20, 128),    // M1 Pro 16 GB
        (DeviceKind::Cpu, 8.0, 256, false, 20, 128),
    ];
    for (kind, memory, batch, checkpointing, blocks, channels) in rows {
        let r = recommend_for(&c, kind, gb(memory));
        assert_eq!(
            (r.batch_size, r.gradient_checkpointing, r.blocks, r.channels),
            (batch, checkpointing, blocks, channels),
            "{kind} {memory} GB"
        );
    }
}

const OVERRIDE: &str = r#"
[[tiers]]
device = "cuda"
min_memory_gb = 0
max_memory_gb = 20
batch_size = 64
gradient_checkpointing = true
blocks = 8
channels = 64
label = "small cards"

[[tiers]]
device = "cuda"
min_memory_gb = 20
batch_size = 128
gradient_checkpointing = false
blocks = 12
channels = 96
"#;

#[test]
fn a_table_from_toml_replaces_the_builtin_tiers_of_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sda.toml");
    std::fs::write(&path, OVERRIDE).unwrap();
    let config = Config::load(&path).unwrap();

    // 16 GB: the built-in table says 1024; the override's first tier says 64.
    let r = recommend_on_gpu(config.clone(), gb(16.0));
    assert_eq!((r.batch_size, r.blocks, r.channels), (64, 8, 64));
    assert!(r.gradient_checkpointing);
    assert!(r.tier_from_config);
    assert_eq!(r.tier.label, "small cards");
    // The override's boundary, not the built-in ones (16, 24, 40).
    assert_eq!(
        recommend_on_gpu(config.clone(), gb(20.0) - 1).batch_size,
        64
    );
    assert_eq!(recommend_on_gpu(config.clone(), gb(20.0)).batch_size, 128);
    // 80 GB: built-in 2048 no longer applies.
    let big = recommend_on_gpu(config.clone(), gb(80.0));
    assert_eq!(big.batch_size, 128);
    assert_eq!(big.tier.description(), "cuda with 20 GB and more");
    // Kinds the override does not name keep the built-in tiers.
    let cpu = recommend_for(&config, DeviceKind::Cpu, gb(64.0));
    assert_eq!(cpu.batch_size, 256);
    assert!(!cpu.tier_from_config);
    let table = tiers::effective_tiers(&config.tiers);
    assert_eq!(
        table
            .iter()
            .filter(|t| t.device == DeviceKind::Cuda)
            .count(),
        2
    );
    assert_eq!(
        table.iter().filter(|t| t.device == DeviceKind::Mps).count(),
        2
    );
}

#[test]
fn a_stored_probe_result_beats_the_table() {
    for (toml, memory) in [("", 16.0), (OVERRIDE, 80.0)] {
        let mut config = Config::from_toml_str(toml).unwrap();
        config.set("hardware.max_batch_size", "300").unwrap();
        let r = recommend_on_gpu(config.clone(), gb(memory));
        assert_eq!(r.batch_size, 300);
        assert_eq!(r.batch_source, BatchSource::Probe);
        assert!(r.batch_reason().contains("hardware.max_batch_size = 300"));
        // The tier still decides the model shape and checkpointing.
        assert_eq!(r.blocks, r.tier.blocks);
        assert_ne!(r.tier.batch_size, 300);
        let cpu = recommend_for(&config, DeviceKind::Cpu, gb(8.0));
        assert_eq!(
            (cpu.batch_size, cpu.batch_source),
            (300, BatchSource::Probe)
        );
    }
    // 0 means "not probed": the table decides.
    let r = recommend_on_gpu(Config::default(), gb(16.0));
    assert_eq!(r.batch_source, BatchSource::Tier);
    assert!(
        r.batch_reason().contains("run a probe"),
        "{}",
        r.batch_reason()
    );
}

#[test]
fn larger_models_get_the_more_careful_budget_with_the_reason() {
    let advice = |p: u64, kind: DeviceKind| recommend::advise_memory_strategy(p, kind);
    let cases = [
        (1, MemoryStrategy::Aggressive),
        (SMALL_MODEL_PARAMETERS - 1, MemoryStrategy::Aggressive),
        (SMALL_MODEL_PARAMETERS, MemoryStrategy::Balanced),
        (LARGE_MODEL_PARAMETERS - 1, MemoryStrategy::Balanced),
        (LARGE_MODEL_PARAMETERS, MemoryStrategy::Conservative),
        (7_000_000_000, MemoryStrategy::Conservative),
    ];
    let mut previous = 1.0;
    for (parameters, strategy) in cases {
        let a = advice(parameters, DeviceKind::Cuda);
        assert_eq!(a.strategy, strategy, "{parameters}");
        assert_eq!(a.fraction, strategy.fraction());
        assert!(
            a.fraction <= previous,
            "a larger model never gets a larger fraction"
        );
        previous = a.fraction;
        assert!(!a.reason.is_empty());
    }
    let large = advice(LARGE_MODEL_PARAMETERS, DeviceKind::Cuda);
    assert!(large.reason.contains("large model"), "{}", large.reason);
    assert!(large.reason.contains("headroom"), "{}", large.reason);
    // Memory shared with the system never gets the aggressive budget.
    for kind in [DeviceKind::Cpu, DeviceKind::Mps] {
        let a = advice(10, kind);
        assert_eq!(a.strategy, MemoryStrategy::Balanced, "{kind}");
        assert!(a.reason.contains("shared with the system"), "{}", a.reason);
    }
    // Through a context, with and without a model size.
    let machine = Arc::new(InjectedMachine::with_gpus(1));
    let context = Context::with_machine(Config::default(), machine);
    assert_eq!(context.recommend(0).unwrap().advice, None);
    let r = context.recommend(250_000_000).unwrap();
    let a = r.advice.unwrap();
    assert_eq!(
        (a.parameters, a.strategy),
        (250_000_000, MemoryStrategy::Conservative)
    );
    assert_eq!(r.configured_strategy, MemoryStrategy::Balanced);
}

#[test]
fn an_invalid_table_written_into_the_fields_is_an_error_not_a_guess() {
    let mut config = Config::from_toml_str(OVERRIDE).unwrap();
    config.tiers[1].min_memory_gb = 25.0;
    let err = recommend::recommend(&config, facts(DeviceKind::Cuda, gb(22.0)), 0).unwrap_err();
    assert!(err.message().contains("20 to 25 GB have no tier"), "{err}");
}
