//! The report: the seeds' essential / verbose views as text, and the same facts as JSON.
//!
//! Both forms are rendered from one gathered [`DeviceReport`], and at each verbosity they carry the
//! same facts: every value in the JSON appears in the text (bytes in human units, fractions in per
//! cent), and every line of the text comes from a value in the JSON (a test checks both ways). The
//! JSON's layout is versioned ([`JSON_SCHEMA_VERSION`]) and documented as a JSON Schema in
//! `docs/report.schema.json`, against which the tests validate it.
//!
//! Essential: the device, its memory, a fallback warning, and the problems that need attention
//! (warnings and errors). Verbose adds everything else: how the device was chosen, the budget, torch's
//! allocator figures, precision, CUDA versions, the CPU, the backend and its libtorch, the environment
//! variables applied from the configuration, the auto-configuration, every device, all problems
//! (information included) and the library's version.

use crate::backend::{self, BackendInfo};
use crate::context::Context;
use crate::device::{DeviceInfo, Selection};
use crate::environment::{self, EnvApplication, EnvOutcome};
use crate::error::Result;
use crate::host;
use crate::memory::MemoryInfo;
use crate::preference::DeviceKind;
use crate::recommend::Recommendation;
use crate::validate::{self, Problem, Severity, ValidateOptions};
use serde_json::{json, Value};

/// Version of the JSON layout produced by [`DeviceReport::to_json`]; bumped on incompatible changes.
///
/// 2: the essential view carries only the essential facts; `problems`, `environment`,
/// `recommendation` and `verbosity` were added; `devices` entries were reduced to what the text lists.
pub const JSON_SCHEMA_VERSION: u32 = 2;

/// The verbose text's "Libtorch found by" for a module that records no libtorch (JSON `null`).
const NOT_FOUND_BY_DISCOVERY: &str =
    "not known (the module records no libtorch; its own run path found one)";

/// How much a report says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    /// Device, memory, warnings.
    Essential,
    /// Everything.
    Verbose,
}

impl Verbosity {
    /// `essential` or `verbose`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Essential => "essential",
            Verbosity::Verbose => "verbose",
        }
    }

    /// `Verbose` when `verbose`, else `Essential`.
    pub fn from_flag(verbose: bool) -> Verbosity {
        if verbose {
            Verbosity::Verbose
        } else {
            Verbosity::Essential
        }
    }
}

/// The host's CPU, as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSummary {
    /// CPU brand string.
    pub cpu_brand: String,
    /// Logical cores.
    pub logical_cores: u32,
    /// Physical cores, when known.
    pub physical_cores: Option<u32>,
}

/// Everything a report shows, gathered once.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    /// How the device was chosen.
    pub selection: Selection,
    /// The chosen device (its free and total memory are the ones in `memory`).
    pub device: DeviceInfo,
    /// Its memory now.
    pub memory: MemoryInfo,
    /// Every device of the machine.
    pub devices: Vec<DeviceInfo>,
    /// The torch backend, when something loaded it.
    pub backend: Option<BackendInfo>,
    /// The memory strategy's name and fraction.
    pub strategy: (String, f64),
    /// The host's CPU.
    pub host: HostSummary,
    /// Validation's findings, worst first.
    pub problems: Vec<Problem>,
    /// The configuration's `[environment]` entries and what loading the backend did with them.
    pub environment: Vec<EnvApplication>,
    /// The auto-configuration for the device (no model size).
    pub recommendation: Option<Recommendation>,
}

/// Selects (with `preference`, or the config's) and gathers the report, validating without loading
/// the torch backend. Loads libtorch only when a non-CPU device is selected (its smoke test needs it).
pub fn device_report(context: &Context, preference: Option<&str>) -> Result<DeviceReport> {
    gather(context, preference, ValidateOptions::default())
}

/// Gathers the report: validation under `options` first (so that a backend it loads shows), then the
/// device: `preference` selects anew; `None` uses the context's selection (selecting with the config's
/// preference when there is none yet).
pub fn gather(
    context: &Context,
    preference: Option<&str>,
    options: ValidateOptions,
) -> Result<DeviceReport> {
    let problems = validate::validate(context, options);
    let selection = match preference {
        Some(p) => context.select(Some(p))?,
        None => context.selection()?,
    };
    let hardware = &context.config().hardware;
    let memory = context.memory_info()?;
    let mut device = context.device_info()?;
    // One measurement of free memory for the whole report, so that the essential line and the
    // verbose figures cannot disagree.
    device.memory_free = memory.free;
    device.memory_total = memory.total;
    let facts = host::static_facts();
    Ok(DeviceReport {
        selection,
        device,
        memory,
        devices: context.list_devices()?,
        backend: backend::loaded().map(|b| b.info().clone()),
        strategy: (
            hardware.memory_strategy.as_str().to_string(),
            hardware.budget_fraction(),
        ),
        host: HostSummary {
            cpu_brand: facts.cpu_brand.clone(),
            logical_cores: facts.logical_cores,
            physical_cores: facts.physical_cores,
        },
        problems,
        environment: environment::applied(),
        recommendation: context.recommend(0).ok(),
    })
}

// Byte formatting lives in `crate::bytes`; re-exported so that `report::human_bytes` keeps working.
pub use crate::bytes::human_bytes;

/// A fraction as a percentage for people: `75 %`, `33.3 %`.
pub fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The words the text uses for an environment outcome.
pub fn outcome_text(e: &EnvApplication) -> String {
    match e.outcome {
        EnvOutcome::Applied => "applied".to_string(),
        EnvOutcome::AlreadySet => "already set".to_string(),
        EnvOutcome::ProcessValueKept => format!(
            "kept the process's value {}",
            e.process_value.as_deref().unwrap_or("")
        ),
        EnvOutcome::TooLate => {
            "not set: the CUDA driver or libtorch had already started (too late)".to_string()
        }
    }
}

fn shown_problems(problems: &[Problem], verbosity: Verbosity) -> impl Iterator<Item = &Problem> {
    problems
        .iter()
        .filter(move |p| verbosity == Verbosity::Verbose || p.severity >= Severity::Warning)
}

impl DeviceReport {
    /// The report as text: essentials (device, memory, warnings), or everything with `verbose`.
    pub fn to_text(&self, verbose: bool) -> String {
        self.render_text(Verbosity::from_flag(verbose))
    }

    /// The same facts as JSON (schema version [`JSON_SCHEMA_VERSION`]); `verbose` adds the fields
    /// that the verbose text adds.
    pub fn to_json(&self, verbose: bool) -> Value {
        self.render_json(Verbosity::from_flag(verbose))
    }

    /// The report as text at `verbosity`.
    pub fn render_text(&self, verbosity: Verbosity) -> String {
        let d = &self.device;
        let mut out = String::new();
        out.push_str(&format!("Device:  {} ({})\n", d.device, d.name));
        out.push_str(&format!(
            "Memory:  {} free of {}\n",
            human_bytes(d.memory_free),
            human_bytes(d.memory_total)
        ));
        if self.selection.fell_back {
            out.push_str(&format!("Warning: {}\n", self.selection.reason));
        }
        if verbosity == Verbosity::Verbose {
            self.push_details(&mut out);
        }
        // Problems come last, where a reader's eye ends (in both views).
        for p in shown_problems(&self.problems, verbosity) {
            out.push_str(&format!(
                "Problem ({}, {}): {}\n  Fix: {}\n",
                p.severity, p.code, p.message, p.fix
            ));
        }
        out
    }

    /// The verbose view's lines between the essentials and the problems.
    fn push_details(&self, out: &mut String) {
        let d = &self.device;
        out.push_str(&format!(
            "Kind:    {}, index {}, {} device{} of this kind\n",
            d.kind,
            d.index,
            d.device_count,
            if d.device_count == 1 { "" } else { "s" }
        ));
        out.push_str(&format!(
            "Requested: {} (selected {})\n",
            self.selection.requested,
            self.selection.device_string()
        ));
        let m = &self.memory;
        out.push_str(&format!(
            "Budget:  {} ({} strategy, {} of {})\n",
            human_bytes(m.budget),
            self.strategy.0,
            percent(self.strategy.1),
            if d.kind == DeviceKind::Cpu {
                "available memory"
            } else {
                "device memory"
            }
        ));
        out.push_str(&format!(
            "Torch:   allocated {}, reserved {}, peak {}\n",
            human_bytes(m.allocated),
            human_bytes(m.reserved),
            human_bytes(m.peak)
        ));
        out.push_str(&format!(
            "Process: {} resident\n",
            human_bytes(m.process_resident)
        ));
        out.push_str(&format!(
            "Precision: bf16 {}, fp16 {}\n",
            yes_no(d.bf16_supported),
            yes_no(d.fp16_supported)
        ));
        if let Some((major, minor)) = d.compute_capability {
            out.push_str(&format!("Compute capability: {major}.{minor}\n"));
        }
        if let Some(v) = &d.cuda_driver_version {
            out.push_str(&format!("CUDA driver: {v}\n"));
        }
        if let Some(v) = &d.cuda_runtime_version {
            out.push_str(&format!("CUDA runtime (torch build): {v}\n"));
        }
        let h = &self.host;
        out.push_str(&format!(
            "CPU:     {} ({} logical cores{})\n",
            h.cpu_brand,
            h.logical_cores,
            h.physical_cores
                .map(|p| format!(", {p} physical"))
                .unwrap_or_default()
        ));
        match &self.backend {
            Some(b) => {
                out.push_str(&format!(
                    "Torch backend: {} (libtorch {} at {}{}, built against {}, {})\n",
                    b.module_path.display(),
                    b.loaded_libtorch_version
                        .as_deref()
                        .unwrap_or("of unknown version"),
                    b.loaded_libtorch_path.display(),
                    if b.libtorch_preloaded {
                        ", already in the process"
                    } else {
                        ""
                    },
                    b.built_libtorch_version,
                    if b.cuda_build {
                        format!(
                            "CUDA build {}",
                            b.libtorch_cuda_version
                                .as_deref()
                                .unwrap_or("of unknown version")
                        )
                    } else {
                        "CPU build".to_string()
                    }
                ));
                // How the discovery found that libtorch: the machine name, then in words.
                out.push_str(&format!(
                    "Libtorch found by: {}\n",
                    match b.libtorch_found_by {
                        Some(s) => format!("{} ({})", s.as_str(), s.describe()),
                        None => NOT_FOUND_BY_DISCOVERY.to_string(),
                    }
                ));
            }
            None => out.push_str("Torch backend: not loaded (loaded on first torch work)\n"),
        }
        for e in &self.environment {
            out.push_str(&format!(
                "Environment: {}={} ({})\n",
                e.name,
                e.value,
                outcome_text(e)
            ));
        }
        if let Some(r) = &self.recommendation {
            out.push_str(&format!(
                "Auto-configuration: batch {} (from the {}), gradient checkpointing {}, {} blocks of \
                 {} channels\n",
                r.batch_size,
                r.batch_source.as_str(),
                yes_no(r.gradient_checkpointing),
                r.blocks,
                r.channels
            ));
            out.push_str(&format!("Tier:    {}\n", r.tier_summary()));
        }
        out.push_str("Devices:\n");
        for dev in &self.devices {
            out.push_str(&format!(
                "  {:<8} {} ({} total{})\n",
                dev.device,
                dev.name,
                human_bytes(dev.memory_total),
                dev.compute_capability
                    .map(|(a, b)| format!(", compute capability {a}.{b}"))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!("libsda:  {}\n", env!("CARGO_PKG_VERSION")));
    }

    /// The report as JSON at `verbosity` (layout: `docs/report.schema.json`).
    pub fn render_json(&self, verbosity: Verbosity) -> Value {
        let d = &self.device;
        let problems: Vec<Value> = shown_problems(&self.problems, verbosity)
            .map(|p| {
                json!({
                    "severity": p.severity.as_str(),
                    "code": p.code,
                    "message": p.message,
                    "fix": p.fix,
                })
            })
            .collect();
        let mut v = json!({
            "schema_version": JSON_SCHEMA_VERSION,
            "verbosity": verbosity.as_str(),
            "device": {
                "device": d.device,
                "name": d.name,
                "memory_free": d.memory_free,
                "memory_total": d.memory_total,
            },
            "selection": {
                "fell_back": self.selection.fell_back,
                "reason": self.selection.reason,
            },
            "problems": problems,
        });
        if verbosity == Verbosity::Essential {
            return v;
        }
        let device = &mut v["device"];
        device["kind"] = json!(d.kind.as_str());
        device["index"] = json!(d.index);
        device["device_count"] = json!(d.device_count);
        device["compute_capability"] = json!(d.compute_capability.map(|(a, b)| format!("{a}.{b}")));
        device["cuda_runtime_version"] = json!(d.cuda_runtime_version);
        device["cuda_driver_version"] = json!(d.cuda_driver_version);
        device["bf16_supported"] = json!(d.bf16_supported);
        device["fp16_supported"] = json!(d.fp16_supported);
        v["selection"]["requested"] = json!(self.selection.requested);
        v["selection"]["device"] = json!(self.selection.device_string());
        let m = &self.memory;
        v["memory"] = json!({
            "allocated": m.allocated, "reserved": m.reserved, "peak": m.peak,
            "free": m.free, "total": m.total, "budget": m.budget,
            "process_resident": m.process_resident,
            "strategy": self.strategy.0, "fraction": self.strategy.1,
        });
        v["host"] = json!({
            "cpu_brand": self.host.cpu_brand,
            "logical_cores": self.host.logical_cores,
            "physical_cores": self.host.physical_cores,
        });
        v["backend"] = match &self.backend {
            Some(b) => json!({
                "loaded": true,
                "module_path": b.module_path.display().to_string(),
                "libtorch_path": b.loaded_libtorch_path.display().to_string(),
                "libtorch_version": b.loaded_libtorch_version,
                "built_libtorch_version": b.built_libtorch_version,
                "cuda_build": b.cuda_build,
                "libtorch_cuda_version": b.libtorch_cuda_version,
                "libtorch_preloaded": b.libtorch_preloaded,
                "libtorch_found_by": b.libtorch_found_by.map(|s| s.as_str()),
            }),
            None => json!({ "loaded": false }),
        };
        v["environment"] = Value::Array(
            self.environment
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "value": e.value,
                        "outcome": e.outcome.as_str(),
                        "process_value": e.process_value,
                    })
                })
                .collect(),
        );
        v["recommendation"] = match &self.recommendation {
            Some(r) => json!({
                "batch_size": r.batch_size,
                "batch_source": r.batch_source.as_str(),
                "gradient_checkpointing": r.gradient_checkpointing,
                "blocks": r.blocks,
                "channels": r.channels,
                "tier": {
                    "label": r.tier.description(),
                    "device": r.tier.device.as_str(),
                    "min_memory_gb": r.tier.min_memory_gb,
                    "max_memory_gb": r.tier.max_memory_gb,
                    "from_config": r.tier_from_config,
                },
            }),
            None => Value::Null,
        };
        v["devices"] = Value::Array(
            self.devices
                .iter()
                .map(|dev| {
                    json!({
                        "device": dev.device,
                        "kind": dev.kind.as_str(),
                        "name": dev.name,
                        "memory_total": dev.memory_total,
                        "compute_capability":
                            dev.compute_capability.map(|(a, b)| format!("{a}.{b}")),
                    })
                })
                .collect(),
        );
        v["libsda_version"] = json!(env!("CARGO_PKG_VERSION"));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0.75), "75 %");
        assert_eq!(percent(0.333), "33.3 %");
        assert_eq!(percent(1.0), "100 %");
    }
}
