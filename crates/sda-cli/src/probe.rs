//! `sda probe`: the largest batch of the built-in workload, or of a model file (`--model PATH
//! --input 2,88200 [--dtype f32|f16|bf16] [--train]`), that fits the memory budget.

use indicatif::{ProgressBar, ProgressStyle};
use sda_core::bytes::human_bytes;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::{Error, Result};
use sda_core::model::{LoadedModel, ModelDtype, ModelWorkload};
use sda_core::probe::{self, ProbeOptions, ProbeProgress, ProbeResult, ProbeWorkload};
use serde_json::json;
use std::io::IsTerminal;
use std::path::Path;

/// Parses `512MiB`, `2GiB`, `1.5 GB` or a plain number of bytes.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|s| s.as_u64())
        .map_err(|e| format!("{text:?} is not a size like 512MiB or 2GiB ({e})"))
}

/// The shape of one sample (`--input`), one clap value.
#[derive(Clone, Debug)]
pub struct Shape(pub Vec<u64>);

/// Parses `--input`: the shape of one sample, e.g. `2,88200`.
pub fn parse_input(text: &str) -> std::result::Result<Shape, String> {
    sda_core::model::parse_shape(text)
        .map(Shape)
        .map_err(|e| e.message().to_string())
}

/// Parses `--dtype`: `f32`, `f16` or `bf16`.
pub fn parse_dtype(text: &str) -> std::result::Result<ModelDtype, String> {
    ModelDtype::parse(text).map_err(|e| e.message().to_string())
}

/// The model part of the JSON result.
fn model_json(m: &LoadedModel) -> serde_json::Value {
    let w = m.workload();
    json!({
        "path": w.path.display().to_string(),
        "format": m.format().as_str(),
        "input_shape": w.input_shape,
        "dtype": w.dtype.as_str(),
        "train": w.train,
        "param_bytes": m.param_bytes(),
        "buffer_bytes": m.buffer_bytes(),
    })
}

/// What `sda probe` was asked.
pub struct Args {
    /// Device preference (default: the config's).
    pub device: Option<String>,
    /// Budget in bytes (default: the memory strategy's).
    pub budget: Option<u64>,
    /// Smallest batch.
    pub min: u32,
    /// Largest batch.
    pub max: u32,
    /// The first batch to run (0 = `min`).
    pub start: u32,
    /// JSON output.
    pub json: bool,
    /// Store the recommended batch in this config file.
    pub save: Option<std::path::PathBuf>,
    /// Probe this model instead of the built-in workload.
    pub model: Option<ModelWorkload>,
}

/// Every field of the result under its documented JSON name (see README "sda probe").
pub fn result_json(r: &ProbeResult, device: &str) -> serde_json::Value {
    json!({
        "device": device,
        "max_batch": r.max_batch,
        "recommended_batch": r.recommended_batch,
        "runs": r.runs,
        "oom_runs": r.oom_runs,
        "fixed_bytes": r.fixed_bytes,
        "per_sample_bytes": r.per_sample_bytes,
        "predicted_peak_bytes": r.predicted_peak_bytes,
        "measured_peak_bytes": r.measured_peak_bytes,
        "budget_bytes": r.budget_bytes,
        "margin_bytes": r.margin_bytes,
        "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
        "stop": r.stop.as_str(),
        "capped": r.capped,
        "trials": r.trials.iter().map(|t| json!({
            "batch": t.batch,
            "ok": t.ok,
            "oom": t.oom,
            "peak_bytes": t.peak_bytes,
            "predicted_bytes": t.predicted_bytes,
            "elapsed_ms": t.elapsed.as_secs_f64() * 1000.0,
        })).collect::<Vec<_>>(),
    })
}

fn describe_run(p: &ProbeProgress) -> String {
    format!(
        "run {}: batch {} {} (peak {}{})",
        p.runs,
        p.trial.batch,
        if p.trial.ok {
            "ran"
        } else if p.trial.oom {
            "out of memory"
        } else {
            "failed"
        },
        human_bytes(p.trial.peak_bytes),
        if p.trial.predicted_bytes > 0 {
            format!(", predicted {}", human_bytes(p.trial.predicted_bytes))
        } else {
            String::new()
        }
    )
}

/// Runs the probe with a progress bar on a terminal, a plain line per run otherwise (both on stderr,
/// so that `--json` output stays clean), and prints the result.
pub fn run(config: Config, args: Args) -> Result<()> {
    let context = Context::new(config);
    let selection = context.select(args.device.as_deref())?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(format!(
            "probing {} (measuring runs)",
            selection.device_string()
        ));
        bar
    });
    let mut progress = |p: &ProbeProgress| {
        let line = describe_run(p);
        match &bar {
            Some(bar) => bar.set_message(line),
            None => eprintln!("{line}"),
        }
        true
    };
    // Loaded before the first run and freed when the probe is done (dropped at the end of `run`).
    let loaded = match &args.model {
        Some(m) => match m.load(&context) {
            Ok(loaded) => Some(loaded),
            Err(e) => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                return Err(e);
            }
        },
        None => None,
    };
    let mut options = ProbeOptions {
        min_batch: args.min,
        start_batch: args.start,
        max_batch: args.max,
        budget_bytes: args.budget.unwrap_or(0),
        progress: Some(&mut progress),
        ..ProbeOptions::default()
    };
    if let Some(m) = &loaded {
        options.workload = ProbeWorkload::Model(m);
    }
    let result = probe::probe(&context, options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let result = result?;
    if let Some(path) = &args.save {
        save(path, &result)?;
    }
    if args.json {
        let mut value = result_json(&result, &selection.device_string());
        if let (Some(m), Some(object)) = (&loaded, value.as_object_mut()) {
            object.insert("model".to_string(), model_json(m));
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| Error::io(e.to_string()))?;
        println!("{text}");
    } else {
        if let Some(m) = &loaded {
            println!(
                "Model:       {} ({}, {} of parameters and buffers)\nInput:       {}",
                m.path().display(),
                m.format().as_str(),
                human_bytes(m.resident_bytes()),
                m.workload().describe_input(None),
            );
        }
        println!(
            "Device:      {}\nMax batch:   {}{}\nRecommended: {} (keeps a {} margin)\n\
             Memory:      {} fixed + {} per sample; {} measured at the max batch ({} predicted)\n\
             Budget:      {}\nRuns:        {} ({} out of memory) in {:.1} s; stopped: {}",
            selection.device_string(),
            result.max_batch,
            if result.capped {
                " (capped by --max: the true maximum may be higher)"
            } else {
                ""
            },
            result.recommended_batch,
            human_bytes(result.margin_bytes),
            human_bytes(result.fixed_bytes.max(0.0) as u64),
            human_bytes(result.per_sample_bytes as u64),
            human_bytes(result.measured_peak_bytes),
            human_bytes(result.predicted_peak_bytes),
            human_bytes(result.budget_bytes),
            result.runs,
            result.oom_runs,
            result.elapsed.as_secs_f64(),
            result.stop.as_str(),
        );
        if let Some(path) = &args.save {
            println!(
                "Saved:       hardware.max_batch_size = {} in {}",
                result.recommended_batch,
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes the recommended batch into the config file (created with defaults when missing).
fn save(path: &Path, result: &ProbeResult) -> Result<()> {
    let mut config = if path.exists() {
        Config::load(path)?
    } else {
        Config::default()
    };
    probe::save_to_config(&mut config, result)?;
    config.save(path)
}
