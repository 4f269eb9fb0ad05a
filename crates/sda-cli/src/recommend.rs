//! `sda recommend`: the auto-configuration for a device (tier, batch size, checkpointing, model
//! shape) and memory-strategy advice from a model's size.

use crate::out;
use sda_core::bytes;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::Result;
use sda_core::recommend::Recommendation;
use sda_core::report::percent;
use sda_core::tiers;
use serde_json::json;

/// `sda recommend`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Device preference: auto, cpu, cuda, cuda:N, mps (default: the config's hardware.device).
    #[arg(long)]
    device: Option<String>,
    /// The model's parameter count for memory-strategy advice: 5000000, 5M, 1.3B, 800K.
    #[arg(long, value_parser = parse_count)]
    parameters: Option<u64>,
    /// Print the tier table in force (built in, or the config's [[tiers]]) as TOML instead.
    #[arg(long)]
    tiers: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses `5000000`, `5M`, `1.3B`, `800K` (also `5m`, `1.3b`; `_` separators allowed).
pub fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim().replace('_', "");
    let (number, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1e3),
        Some('M') => (&t[..t.len() - 1], 1e6),
        Some('B') | Some('G') => (&t[..t.len() - 1], 1e9),
        _ => (t.as_str(), 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a parameter count (e.g. 5000000, 5M, 1.3B)"))?;
    let count = value * scale;
    if !(1.0..1e18).contains(&count) {
        return Err(format!(
            "{text:?} is out of range; give at least 1 parameter"
        ));
    }
    Ok(count.round() as u64)
}

fn recommendation_json(r: &Recommendation) -> serde_json::Value {
    json!({
        "device": r.device.device,
        "name": r.device.name,
        "memory_total": r.device.memory_total,
        "tier": tiers::tier_to_json(&r.tier),
        "tier_from_config": r.tier_from_config,
        "batch_size": r.batch_size,
        "batch_source": r.batch_source.as_str(),
        "batch_reason": r.batch_reason(),
        "gradient_checkpointing": r.gradient_checkpointing,
        "blocks": r.blocks,
        "channels": r.channels,
        "memory_strategy": memory_json(r),
    })
}

fn memory_json(r: &Recommendation) -> serde_json::Value {
    let memory = r.memory_choice();
    let mut v = json!({
        "strategy": memory.strategy.as_str(), "fraction": memory.fraction,
        "reason": memory.reason, "advised": memory.advised,
    });
    if let Some(a) = &r.advice {
        v["parameters"] = json!(a.parameters);
    }
    v
}

fn recommendation_text(r: &Recommendation, config: &Config) -> String {
    let mut out = format!(
        "Device:  {} ({}, {})\n",
        r.device.device,
        r.device.name,
        bytes::decimal_gb(r.device.memory_total)
    );
    out.push_str(&format!("Tier:    {}\n", r.tier_summary()));
    out.push_str(&format!(
        "Batch:   {} ({})\n",
        r.batch_size,
        r.batch_reason()
    ));
    out.push_str(&format!(
        "Gradient checkpointing: {}\n",
        if r.gradient_checkpointing {
            "yes"
        } else {
            "no"
        }
    ));
    out.push_str(&format!(
        "Model:   {} blocks of {} channels\n",
        r.blocks, r.channels
    ));
    match &r.advice {
        Some(a) => out.push_str(&format!(
            "Memory:  {} ({}): {}\n",
            a.strategy,
            percent(a.fraction),
            a.reason
        )),
        None => out.push_str(&format!(
            "Memory:  {} ({}), as configured; --parameters N advises one by model size\n",
            config.hardware.memory_strategy,
            percent(config.hardware.budget_fraction())
        )),
    }
    out
}

/// Selects (`--device`, else the config's) and prints the recommendation, or the tier table.
pub fn run(config: Config, args: Args) -> Result<()> {
    if args.tiers {
        let table = tiers::effective_tiers(&config.tiers);
        if args.json {
            out::print_json(&serde_json::Value::Array(
                table.iter().map(tiers::tier_to_json).collect(),
            ));
        } else {
            let text: Vec<String> = table.iter().map(tiers::tier_to_toml).collect();
            out::print(&text.join("\n"));
        }
        return Ok(());
    }
    let context = Context::new(config);
    if let Some(d) = &args.device {
        context.select(Some(d))?;
    }
    let r = context.recommend(args.parameters.unwrap_or(0))?;
    if args.json {
        out::print_json(&recommendation_json(&r));
    } else {
        out::print(&recommendation_text(&r, context.config()));
    }
    // A fallback is worth saying: the recommendation is then for the CPU, not what was asked for.
    let selection = context.selection()?;
    if selection.fell_back {
        eprintln!("sda recommend: {}", selection.reason);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn parameter_counts_parse_with_suffixes() {
        assert_eq!(parse_count("5000000"), Ok(5_000_000));
        assert_eq!(parse_count("5M"), Ok(5_000_000));
        assert_eq!(parse_count("1.3b"), Ok(1_300_000_000));
        assert_eq!(parse_count("800K"), Ok(800_000));
        assert_eq!(parse_count("1_000"), Ok(1000));
        assert!(parse_count("lots").is_err());
        assert!(parse_count("0").is_err());
        assert!(parse_count("-5M").is_err());
    }
}
