//! The auto-configuration tiers as data: device memory → batch size, gradient checkpointing, model
//! blocks and channels, for each device kind.
//!
//! The tiers are a table, not code: [`builtin_tiers`] is the default, and `[[tiers]]` entries in the
//! configuration file replace the built-in tiers of their device kind (see [`effective_tiers`]). A
//! table is checked by [`validate_tiers`]: per device kind the tiers are sorted, start at 0 GB, leave no
//! gap and overlap nowhere, and only the last one is open-ended, so every memory size falls into
//! exactly one tier.
//!
//! The table is a module of its own because both the configuration (which reads and writes
//! `[[tiers]]`) and [`crate::recommend`] (which reads the configuration) use it: kept in recommend,
//! those two imported each other; kept in config, the table would be part of a file format.
//!
//! Tier bounds are in decimal gigabytes ([`bytes::BYTES_PER_GB`]), because the sizes the tiers are
//! named after are the marketing ones: a "40 GB" A100 reports 39.6 GiB, and a GiB bound of 40 would
//! put it a tier down.

use crate::bytes;
use crate::error::{Error, Result};
use crate::preference::DeviceKind;

/// Largest accepted batch size, of a tier (`batch_size`) and of a probe's result stored in the
/// configuration (`hardware.max_batch_size`); larger values come from corrupted files, not probes.
pub const MAX_BATCH_SIZE: u64 = 1_048_576;
/// Largest accepted `blocks` / `channels` of a tier; larger values are typos, not models.
pub const MAX_MODEL_DIMENSION: u32 = 65_536;

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
    let gb = bytes::gigabytes(memory_total);
    tiers
        .iter()
        .enumerate()
        .find(|(_, t)| t.device == kind && t.contains(gb))
        .ok_or_else(|| {
            Error::invalid_argument(format!(
                "the tier table has no {kind} tier for {}; give {kind} tiers that start at 0 and \
                 leave the last one open-ended",
                bytes::decimal_gb(memory_total)
            ))
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
}
