//! Auto-configuration: the seeds' hardware tiers (device memory → batch size, gradient checkpointing,
//! model blocks and channels) as data, and memory-strategy advice from a model's size.
//!
//! The tiers are a table, not code: [`builtin_tiers`] is the default, and `[[tiers]]` entries in the
//! configuration file replace the built-in tiers of their device kind (see [`effective_tiers`]). A
//! table is checked by [`validate_tiers`]: per device kind the tiers are sorted, start at 0 GB, leave no
//! gap and overlap nowhere, and only the last one is open-ended, so every memory size falls into
//! exactly one tier.
//!
//! A batch size measured by a probe and stored in the configuration (`hardware.max_batch_size > 0`)
//! beats the table: a table is a guess about a class of hardware, a probe measured this one.
//!
//! Tier bounds are in decimal gigabytes (10^9 bytes), because the sizes the tiers are named after are
//! the marketing ones: a "40 GB" A100 reports 39.6 GiB, and a GiB bound of 40 would put it a tier down.

use crate::config::{Config, MemoryStrategy, MAX_BATCH_SIZE};
use crate::error::{Error, Result};
use crate::preference::DeviceKind;

/// Bytes per decimal gigabyte, the unit of tier bounds.
pub const BYTES_PER_GB: f64 = 1e9;
/// Largest accepted `blocks` / `channels` of a tier; larger values are typos, not models.
pub const MAX_MODEL_DIMENSION: u32 = 65_536;
/// Models with fewer parameters than this get the generous budget (on accelerators).
pub const SMALL_MODEL_PARAMETERS: u64 = 1_000_000;
/// Models with at least this many parameters get the careful (conservative) budget.
pub const LARGE_MODEL_PARAMETERS: u64 = 100_000_000;

/// One row of the auto-configuration table: what to use on a device of `device` kind whose memory is
/// in `[min_memory_gb, max_memory_gb)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// The device kind the tier applies to.
    pub device: DeviceKind,
    /// Lower bound of the device's memory, inclusive, in GB (10^9 bytes).
    pub min_memory_gb: f64,
    /// Upper bound, exclusive, in GB; `None` for the last, open-ended tier of a kind.
    pub max_memory_gb: Option<f64>,
    /// Batch size to train with.
    pub batch_size: u32,
    /// Whether to trade compute for memory with gradient checkpointing.
    pub gradient_checkpointing: bool,
    /// Model depth (number of blocks).
    pub blocks: u32,
    /// Model width (channels per block).
    pub channels: u32,
    /// A short description for people ("A100, A6000 class"); may be empty.
    pub label: String,
}

impl Tier {
    /// Whether a device with `memory_gb` of memory falls into this tier.
    pub fn contains(&self, memory_gb: f64) -> bool {
        memory_gb >= self.min_memory_gb && self.max_memory_gb.is_none_or(|max| memory_gb < max)
    }

    /// The memory range in words: `16–24 GB`, `40 GB and more`, `any memory`.
    pub fn range_text(&self) -> String {
        match self.max_memory_gb {
            None if self.min_memory_gb == 0.0 => "any memory".to_string(),
            None => format!("{} GB and more", self.min_memory_gb),
            Some(max) if self.min_memory_gb == 0.0 => format!("under {max} GB"),
            Some(max) => format!("{}–{max} GB", self.min_memory_gb),
        }
    }

    /// The label, or a description made from kind and range when the label is empty.
    pub fn description(&self) -> String {
        if self.label.is_empty() {
            format!("{} with {}", self.device, self.range_text())
        } else {
            self.label.clone()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tier(
    device: DeviceKind,
    min: f64,
    max: Option<f64>,
    batch_size: u32,
    gradient_checkpointing: bool,
    blocks: u32,
    channels: u32,
    label: &str,
) -> Tier {
    Tier {
        device,
        min_memory_gb: min,
        max_memory_gb: max,
        batch_size,
        gradient_checkpointing,
        blocks,
        channels,
        label: label.to_string(),
    }
}

/// The built-in table: seed 003's tiers. CUDA by device memory; Apple silicon (MPS) by RAM, which it
/// shares with the system (so under 32 GB the model is reduced to avoid swapping); CPU one tier.
///
/// Seed 003 names only "16 GB" for Apple silicon; the built-in tier covers everything under 32 GB
/// with it, so that an 8 GB Mac gets the reduced model too rather than no answer.
pub fn builtin_tiers() -> Vec<Tier> {
    use DeviceKind::{Cpu, Cuda, Mps};
    vec![
        tier(Cuda, 0.0, Some(16.0), 512, true, 30, 192, "RTX 3060 class"),
        tier(
            Cuda,
            16.0,
            Some(24.0),
            1024,
            false,
            30,
            192,
            "RTX 4080 class",
        ),
        tier(
            Cuda,
            24.0,
            Some(40.0),
            1536,
            false,
            30,
            192,
            "V100, RTX 4090 class",
        ),
        tier(Cuda, 40.0, None, 2048, false, 30, 192, "A100, A6000 class"),
        tier(
            Mps,
            0.0,
            Some(32.0),
            256,
            true,
            20,
            128,
            "Apple silicon, reduced model to avoid swapping",
        ),
        tier(
            Mps,
            32.0,
            None,
            512,
            false,
            30,
            192,
            "Apple silicon, full model",
        ),
        tier(Cpu, 0.0, None, 256, false, 20, 128, "CPU"),
    ]
}

/// The table in force: the configuration's `[[tiers]]` for every kind they name, the built-in tiers
/// for the other kinds. An override replaces *all* built-in tiers of its kind, so that a table written
/// for a cluster's GPUs is never mixed with built-in rows it did not mean.
pub fn effective_tiers(overrides: &[Tier]) -> Vec<Tier> {
    let mut table: Vec<Tier> = builtin_tiers()
        .into_iter()
        .filter(|t| !overrides.iter().any(|o| o.device == t.device))
        .collect();
    table.extend(overrides.iter().cloned());
    table
}

/// Checks one tier's own values; `at` names it in messages (`tiers[2]`).
fn check_tier(at: &str, t: &Tier) -> Result<()> {
    let bad = |key: &str, shown: String, why: &str| {
        Error::invalid_value(format!("invalid value {shown} for {at}.{key}: {why}"))
    };
    if !(t.min_memory_gb.is_finite() && t.min_memory_gb >= 0.0) {
        return Err(bad(
            "min_memory_gb",
            t.min_memory_gb.to_string(),
            "accepted: a number of GB from 0 up",
        ));
    }
    if let Some(max) = t.max_memory_gb {
        if !(max.is_finite() && max > t.min_memory_gb) {
            return Err(bad(
                "max_memory_gb",
                max.to_string(),
                &format!(
                    "must be a number of GB above min_memory_gb ({}); leave it out for the last, \
                     open-ended tier",
                    t.min_memory_gb
                ),
            ));
        }
    }
    if t.batch_size == 0 || u64::from(t.batch_size) > MAX_BATCH_SIZE {
        return Err(bad(
            "batch_size",
            t.batch_size.to_string(),
            &format!("accepted: an integer from 1 to {MAX_BATCH_SIZE}"),
        ));
    }
    for (key, value) in [("blocks", t.blocks), ("channels", t.channels)] {
        if value == 0 || value > MAX_MODEL_DIMENSION {
            return Err(bad(
                key,
                value.to_string(),
                &format!("accepted: an integer from 1 to {MAX_MODEL_DIMENSION}"),
            ));
        }
    }
    if t.label.contains('\0') {
        return Err(bad(
            "label",
            format!("{:?}", t.label),
            "cannot contain a NUL character",
        ));
    }
    Ok(())
}

/// Checks a table: every tier's values, and per device kind (in table order) that the tiers are
/// sorted, start at 0 GB, follow each other without gap or overlap (each starts where the previous one
/// ends), and that exactly the last one is open-ended. Messages name the tier as `tiers[i]`.
pub fn validate_tiers(tiers: &[Tier]) -> Result<()> {
    for (i, t) in tiers.iter().enumerate() {
        check_tier(&format!("tiers[{i}]"), t)?;
    }
    for kind in DeviceKind::ALL {
        let mut previous: Option<(usize, &Tier)> = None;
        for (i, t) in tiers.iter().enumerate().filter(|(_, t)| t.device == kind) {
            let at = format!("tiers[{i}] ({kind}, {})", t.range_text());
            match previous {
                None if t.min_memory_gb != 0.0 => {
                    return Err(Error::invalid_value(format!(
                    "invalid tier table: {at} is the first {kind} tier but starts at {} GB; the \
                         first tier of a kind must start at 0 so that every memory size has a tier",
                    t.min_memory_gb
                )))
                }
                None => {}
                Some((j, p)) => {
                    let Some(end) = p.max_memory_gb else {
                        return Err(Error::invalid_value(format!(
                            "invalid tier table: tiers[{j}] ({kind}) is open-ended (no max_memory_gb) \
                             but {at} follows it; only the last {kind} tier may leave out \
                             max_memory_gb, and tiers must be sorted by memory"
                        )));
                    };
                    if t.min_memory_gb < end {
                        return Err(Error::invalid_value(format!(
                            "invalid tier table: {at} starts at {} GB, before tiers[{j}] ends at {end} \
                             GB: the tiers overlap or are not sorted; each tier must start where the \
                             previous one of its kind ends",
                            t.min_memory_gb
                        )));
                    }
                    if t.min_memory_gb > end {
                        return Err(Error::invalid_value(format!(
                            "invalid tier table: {at} starts at {} GB but tiers[{j}] ends at {end} GB: \
                             memory sizes from {end} to {} GB have no tier; each tier must start where \
                             the previous one of its kind ends",
                            t.min_memory_gb, t.min_memory_gb
                        )));
                    }
                }
            }
            previous = Some((i, t));
        }
        if let Some((i, last)) = previous {
            if let Some(max) = last.max_memory_gb {
                return Err(Error::invalid_value(format!(
                    "invalid tier table: the last {kind} tier, tiers[{i}], ends at {max} GB, so larger \
                     devices have no tier; leave out its max_memory_gb"
                )));
            }
        }
    }
    Ok(())
}

/// Reads one `[[tiers]]` table of a configuration file; `at` names it (`tiers[2]`).
pub fn tier_from_toml(at: &str, value: &toml::Value) -> Result<Tier> {
    let table = value.as_table().ok_or_else(|| {
        Error::invalid_value(format!(
            "invalid value {value} for {at}: expected a table ([[tiers]] with device, \
             min_memory_gb, max_memory_gb, batch_size, gradient_checkpointing, blocks, channels, \
             label)"
        ))
    })?;
    const KNOWN: [&str; 8] = [
        "device",
        "min_memory_gb",
        "max_memory_gb",
        "batch_size",
        "gradient_checkpointing",
        "blocks",
        "channels",
        "label",
    ];
    if let Some(unknown) = table.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Error::unknown_key(format!(
            "unknown configuration key \"{at}.{unknown}\"; known keys of a tier: {}",
            KNOWN.join(", ")
        )));
    }
    let bad = |key: &str, v: &toml::Value, why: &str| {
        Error::invalid_value(format!("invalid value {v} for {at}.{key}: {why}"))
    };
    let required = |key: &str| {
        table
            .get(key)
            .ok_or_else(|| Error::invalid_value(format!("{at} has no {key}; every tier needs one")))
    };
    let number = |key: &str, v: &toml::Value| -> Result<f64> {
        match v {
            toml::Value::Float(f) => Ok(*f),
            toml::Value::Integer(i) => Ok(*i as f64),
            other => Err(bad(key, other, "expected a number of GB")),
        }
    };
    let count = |key: &str| -> Result<u32> {
        let v = required(key)?;
        v.as_integer()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(key, v, "expected a positive integer"))
    };
    let device_value = required("device")?;
    let device = device_value
        .as_str()
        .and_then(|s| DeviceKind::parse(s).ok())
        .ok_or_else(|| bad("device", device_value, "accepted: cpu, cuda, mps"))?;
    let min_memory_gb = number("min_memory_gb", required("min_memory_gb")?)?;
    let max_memory_gb = table
        .get("max_memory_gb")
        .map(|v| number("max_memory_gb", v))
        .transpose()?;
    let checkpointing_value = required("gradient_checkpointing")?;
    let gradient_checkpointing = checkpointing_value.as_bool().ok_or_else(|| {
        bad(
            "gradient_checkpointing",
            checkpointing_value,
            "expected true or false",
        )
    })?;
    let label = match table.get("label") {
        None => String::new(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => return Err(bad("label", other, "expected a string")),
    };
    let t = Tier {
        device,
        min_memory_gb,
        max_memory_gb,
        batch_size: count("batch_size")?,
        gradient_checkpointing,
        blocks: count("blocks")?,
        channels: count("channels")?,
        label,
    };
    check_tier(at, &t)?;
    Ok(t)
}

fn toml_number(f: f64) -> String {
    // Whole numbers are written as integers (`16`, not `16.0`): that is how people write GB.
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        toml::Value::Float(f).to_string()
    }
}

/// One tier as a `[[tiers]]` table of a configuration file.
pub fn tier_to_toml(t: &Tier) -> String {
    let mut out = String::from("[[tiers]]\n");
    out.push_str(&format!("device = \"{}\"\n", t.device));
    out.push_str(&format!(
        "min_memory_gb = {}\n",
        toml_number(t.min_memory_gb)
    ));
    if let Some(max) = t.max_memory_gb {
        out.push_str(&format!("max_memory_gb = {}\n", toml_number(max)));
    }
    out.push_str(&format!("batch_size = {}\n", t.batch_size));
    out.push_str(&format!(
        "gradient_checkpointing = {}\n",
        t.gradient_checkpointing
    ));
    out.push_str(&format!("blocks = {}\n", t.blocks));
    out.push_str(&format!("channels = {}\n", t.channels));
    if !t.label.is_empty() {
        out.push_str(&format!(
            "label = {}\n",
            toml::Value::String(t.label.clone())
        ));
    }
    out
}

/// One tier as JSON (the configuration's and the reports' form).
pub fn tier_to_json(t: &Tier) -> serde_json::Value {
    serde_json::json!({
        "device": t.device.as_str(),
        "min_memory_gb": t.min_memory_gb,
        "max_memory_gb": t.max_memory_gb,
        "batch_size": t.batch_size,
        "gradient_checkpointing": t.gradient_checkpointing,
        "blocks": t.blocks,
        "channels": t.channels,
        "label": t.label,
    })
}

/// The tier a device of `kind` with `memory_total` bytes falls into.
pub fn find_tier(tiers: &[Tier], kind: DeviceKind, memory_total: u64) -> Result<(usize, &Tier)> {
    let gb = memory_total as f64 / BYTES_PER_GB;
    tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.device == kind && t.contains(gb))
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "the tier table has no {kind} tier for {gb:.1} GB; give {kind} tiers that start at 0 \
                 and leave the last one open-ended"
            ))
        })
}

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
    validate_tiers(&config.tiers)?;
    let table = effective_tiers(&config.tiers);
    let (tier_index, tier) = find_tier(&table, device.kind, device.memory_total)?;
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
    fn the_builtin_table_is_valid_and_covers_every_kind() {
        let t = builtin_tiers();
        validate_tiers(&t).unwrap();
        for kind in DeviceKind::ALL {
            assert!(find_tier(&t, kind, 0).is_ok(), "{kind}");
            assert!(find_tier(&t, kind, u64::MAX).is_ok(), "{kind}");
        }
    }

    #[test]
    fn toml_round_trips_a_tier() {
        for t in builtin_tiers() {
            let text = tier_to_toml(&t);
            let table: toml::Table = text.parse().unwrap();
            let back = tier_from_toml("tiers[0]", &table["tiers"].as_array().unwrap()[0]).unwrap();
            assert_eq!(back, t, "{text}");
        }
    }

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
