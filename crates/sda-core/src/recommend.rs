//! Auto-configuration: a device's tier from the table in force, the batch size to use, and
//! memory-strategy advice from a model's size.
//!
//! The tier table itself (the built-in tiers, `[[tiers]]` overrides and their checks) is data and
//! lives in [`crate::tiers`]; this module decides with it.
//!
//! A batch size measured by a probe and stored in the configuration (`hardware.max_batch_size > 0`)
//! beats the table: a table is a guess about a class of hardware, a probe measured this one.

use crate::config::Config;
use crate::error::Result;
use crate::preference::DeviceKind;
use crate::strategy::MemoryStrategy;
use crate::tiers::{self, Tier};

/// Models with fewer parameters than this get the generous budget (on accelerators).
pub const SMALL_MODEL_PARAMETERS: u64 = 1_000_000;
/// Models with at least this many parameters get the careful (conservative) budget.
pub const LARGE_MODEL_PARAMETERS: u64 = 100_000_000;

/// Where a recommended batch size came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSource {
    /// The tier table's guess for this class of hardware.
    Tier,
    /// A probe's measurement stored in the configuration (`hardware.max_batch_size`).
    Probe,
}

impl BatchSource {
    /// `tier` or `probe`.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchSource::Tier => "tier",
            BatchSource::Probe => "probe",
        }
    }
}

/// Memory-strategy advice for a model of a given size.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyAdvice {
    /// The model's parameter count the advice is for.
    pub parameters: u64,
    /// The advised strategy.
    pub strategy: MemoryStrategy,
    /// Its budget fraction.
    pub fraction: f64,
    /// Why, in words.
    pub reason: String,
}

/// Advises a memory strategy from a model's parameter count, on a device of `kind`.
///
/// Larger models get the *more careful* budget. Their memory use peaks higher and less predictably
/// than a short measurement shows (optimizer state is created at the first step, gradient buckets and
/// large tensors fragment the caching allocator), so the headroom that absorbs the difference must grow
/// with them, and an out-of-memory failure hours into a large model's run costs the most. A small
/// model's working set is small and steady, so a generous budget is safe and lets the allocator keep
/// its cache. (Seed 004 had it the other way round: it gave the smallest models the most conservative
/// fraction and the largest the most aggressive.) On the CPU and on Apple silicon the memory is shared
/// with the system, so the advice never goes beyond balanced there.
pub fn advise_memory_strategy(parameters: u64, kind: DeviceKind) -> StrategyAdvice {
    let millions = parameters as f64 / 1e6;
    let (strategy, reason) = if parameters >= LARGE_MODEL_PARAMETERS {
        (
            MemoryStrategy::Conservative,
            format!(
                "{millions:.1}M parameters is a large model (100M or more): its peak memory is high \
                 and hard to predict (optimizer state appears at the first step, large tensors \
                 fragment the allocator), and an out-of-memory failure late in a long run costs \
                 the most, so it gets the careful budget with 40 % headroom"
            ),
        )
    } else if parameters >= SMALL_MODEL_PARAMETERS {
        (
            MemoryStrategy::Balanced,
            format!(
                "{millions:.1}M parameters is a medium model (1M to 100M): the default budget keeps \
                 25 % headroom for peaks the measurement did not see"
            ),
        )
    } else if kind == DeviceKind::Cuda {
        (
            MemoryStrategy::Aggressive,
            format!(
                "{millions:.2}M parameters is a small model (under 1M): its memory use is small and \
                 steady from step to step, so a generous budget is safe and lets the allocator keep \
                 its cache (on a GPU shared with other programs choose conservative instead)"
            ),
        )
    } else {
        (
            MemoryStrategy::Balanced,
            format!(
                "{millions:.2}M parameters is a small model (under 1M), but {kind} memory is shared \
                 with the system, where a generous budget risks swapping, so the advice stays at \
                 balanced"
            ),
        )
    };
    StrategyAdvice {
        parameters,
        strategy,
        fraction: strategy.fraction(),
        reason,
    }
}

/// What a device needs, as far as recommendation is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceFacts {
    /// The device kind.
    pub kind: DeviceKind,
    /// The device as torch spells it (`cuda:0`).
    pub device: String,
    /// Its name.
    pub name: String,
    /// Its total memory in bytes (RAM on CPU and MPS).
    pub memory_total: u64,
}

/// An auto-configuration for one device.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// The device it is for.
    pub device: DeviceFacts,
    /// The tier the device falls into.
    pub tier: Tier,
    /// The tier's position in the table in force.
    pub tier_index: usize,
    /// Whether the tier came from the configuration's `[[tiers]]` rather than the built-in table.
    pub tier_from_config: bool,
    /// The batch size to use.
    pub batch_size: u32,
    /// Where `batch_size` came from.
    pub batch_source: BatchSource,
    /// Whether to use gradient checkpointing.
    pub gradient_checkpointing: bool,
    /// Model blocks.
    pub blocks: u32,
    /// Model channels.
    pub channels: u32,
    /// The memory strategy the configuration asks for now.
    pub configured_strategy: MemoryStrategy,
    /// The budget fraction of [`Recommendation::configured_strategy`] (a custom one's own).
    pub configured_fraction: f64,
    /// Advice from the model's size, when a parameter count was given.
    pub advice: Option<StrategyAdvice>,
}

/// Why the memory strategy of a recommendation is the configured one: no model size was given.
pub const CONFIGURED_STRATEGY_REASON: &str =
    "no model size given: the configured memory strategy (a parameter count advises one by size)";

/// The memory strategy a recommendation stands for: the advice when a model size was given, the
/// configured strategy otherwise; one answer for every caller (the C ABI, the CLI, reports).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryChoice<'a> {
    /// The strategy.
    pub strategy: MemoryStrategy,
    /// Its budget fraction.
    pub fraction: f64,
    /// Why, in words.
    pub reason: &'a str,
    /// Whether it is advice from the model's size (`false`: the configured strategy).
    pub advised: bool,
}

impl Recommendation {
    /// The memory strategy this recommendation stands for (see [`MemoryChoice`]).
    pub fn memory_choice(&self) -> MemoryChoice<'_> {
        match &self.advice {
            Some(a) => MemoryChoice {
                strategy: a.strategy,
                fraction: a.fraction,
                reason: &a.reason,
                advised: true,
            },
            None => MemoryChoice {
                strategy: self.configured_strategy,
                fraction: self.configured_fraction,
                reason: CONFIGURED_STRATEGY_REASON,
                advised: false,
            },
        }
    }

    /// The tier as reports name it: `CPU (cpu, any memory; built in)`.
    pub fn tier_summary(&self) -> String {
        format!(
            "{} ({}, {}; {})",
            self.tier.description(),
            self.tier.device,
            self.tier.range_text(),
            if self.tier_from_config {
                "from the configuration"
            } else {
                "built in"
            }
        )
    }

    /// One sentence on where the batch size came from.
    pub fn batch_reason(&self) -> String {
        match self.batch_source {
            BatchSource::Probe => format!(
                "measured by a probe (hardware.max_batch_size = {}); a measurement beats the tier's \
                 guess of {}",
                self.batch_size, self.tier.batch_size
            ),
            BatchSource::Tier => format!(
                "the {} tier's guess ({}); run a probe to measure this device",
                self.tier.description(),
                self.tier.range_text()
            ),
        }
    }
}

/// Recommends a configuration for `device` under `config`: its tier from the table in force, the
/// probe's batch size instead of the tier's when one is stored, and memory-strategy advice when
/// `parameters` (the model's parameter count) is not 0.
pub fn recommend(config: &Config, device: DeviceFacts, parameters: u64) -> Result<Recommendation> {
    tiers::validate_tiers(&config.tiers)?;
    let table = tiers::effective_tiers(&config.tiers);
    let (tier_index, tier) = tiers::find_tier(&table, device.kind, device.memory_total)?;
    let tier = tier.clone();
    let probed = config.hardware.max_batch_size;
    let (batch_size, batch_source) = if probed > 0 {
        // max_batch_size is validated to at most MAX_BATCH_SIZE, which fits a u32.
        (
            u32::try_from(probed).unwrap_or(u32::MAX),
            BatchSource::Probe,
        )
    } else {
        (tier.batch_size, BatchSource::Tier)
    };
    let advice = (parameters > 0).then(|| advise_memory_strategy(parameters, device.kind));
    Ok(Recommendation {
        tier_from_config: config.tiers.iter().any(|t| t.device == device.kind),
        batch_size,
        batch_source,
        gradient_checkpointing: tier.gradient_checkpointing,
        blocks: tier.blocks,
        channels: tier.channels,
        configured_strategy: config.hardware.memory_strategy,
        configured_fraction: config.hardware.budget_fraction(),
        advice,
        device,
        tier_index,
        tier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_is_monotonic_in_model_size() {
        let order = |s: MemoryStrategy| s.fraction();
        let mut last = f64::INFINITY;
        for p in [1, 999_999, 1_000_000, 99_999_999, 100_000_000, u64::MAX] {
            let a = advise_memory_strategy(p, DeviceKind::Cuda);
            assert!(order(a.strategy) <= last, "{p}: {a:?}");
            last = order(a.strategy);
        }
    }
}
