//! The device report: the seeds' essential / verbose views as text, and the same facts as JSON.

use crate::backend::{self, BackendInfo};
use crate::context::Context;
use crate::device::{DeviceInfo, Selection};
use crate::error::Result;
use crate::host;
use crate::memory::MemoryInfo;
use serde_json::{json, Value};

/// Version of the JSON layout produced by [`DeviceReport::to_json`]; bumped on incompatible changes.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Everything `sda info` shows, gathered once.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    /// How the device was chosen.
    pub selection: Selection,
    /// The chosen device.
    pub device: DeviceInfo,
    /// Its memory now.
    pub memory: MemoryInfo,
    /// Every device of the machine.
    pub devices: Vec<DeviceInfo>,
    /// The torch backend, when something loaded it.
    pub backend: Option<BackendInfo>,
    /// The memory strategy's name and fraction.
    pub strategy: (String, f64),
}

/// Selects (with `preference`, or the config's) and gathers the report. Loads libtorch only when a
/// non-CPU device is selected (its smoke test needs it).
pub fn device_report(context: &Context, preference: Option<&str>) -> Result<DeviceReport> {
    let selection = context.select(preference)?;
    let hardware = &context.config().hardware;
    Ok(DeviceReport {
        selection,
        device: context.device_info()?,
        memory: context.memory_info()?,
        devices: context.list_devices()?,
        backend: backend::loaded().map(|b| b.info().clone()),
        strategy: (
            hardware.memory_strategy.as_str().to_string(),
            hardware.budget_fraction(),
        ),
    })
}

/// `1536 MiB`-style sizes for people.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl DeviceReport {
    /// The report as text: essentials (device, memory, warnings), or everything with `verbose`.
    pub fn to_text(&self, verbose: bool) -> String {
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
        if !verbose {
            return out;
        }
        let m = &self.memory;
        out.push_str(&format!(
            "Budget:  {} ({} strategy, {:.0} % of {})\n",
            human_bytes(m.budget),
            self.strategy.0,
            self.strategy.1 * 100.0,
            if d.kind == crate::preference::DeviceKind::Cpu {
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
        out.push_str(&format!("Requested: {}\n", self.selection.requested));
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
        let host = host::static_facts();
        out.push_str(&format!(
            "CPU:     {} ({} logical cores{})\n",
            host.cpu_brand,
            host.logical_cores,
            host.physical_cores
                .map(|p| format!(", {p} physical"))
                .unwrap_or_default()
        ));
        match &self.backend {
            Some(b) => out.push_str(&format!(
                "Torch backend: {} (libtorch {} at {}{})\n",
                b.module_path.display(),
                b.loaded_libtorch_version
                    .as_deref()
                    .unwrap_or("of unknown version"),
                b.loaded_libtorch_path.display(),
                if b.cuda_build { ", CUDA build" } else { "" }
            )),
            None => out.push_str("Torch backend: not loaded (loaded on first torch work)\n"),
        }
        out.push_str("Devices:\n");
        for dev in &self.devices {
            out.push_str(&format!(
                "  {:<8} {} ({} total)\n",
                dev.device,
                dev.name,
                human_bytes(dev.memory_total)
            ));
        }
        out.push_str(&format!("libsda:  {}\n", env!("CARGO_PKG_VERSION")));
        out
    }

    /// The same facts as JSON (schema version [`JSON_SCHEMA_VERSION`]); `verbose` adds the fields
    /// that the verbose text adds.
    pub fn to_json(&self, verbose: bool) -> Value {
        let mut v = json!({
            "schema_version": JSON_SCHEMA_VERSION,
            "device": device_json(&self.device),
            "selection": {
                "requested": self.selection.requested,
                "device": self.selection.device_string(),
                "fell_back": self.selection.fell_back,
                "reason": self.selection.reason,
            },
        });
        if verbose {
            let m = &self.memory;
            let host = host::static_facts();
            v["memory"] = json!({
                "allocated": m.allocated, "reserved": m.reserved, "peak": m.peak,
                "free": m.free, "total": m.total, "budget": m.budget,
                "process_resident": m.process_resident,
                "strategy": self.strategy.0, "fraction": self.strategy.1,
            });
            v["host"] = json!({
                "cpu_brand": host.cpu_brand,
                "logical_cores": host.logical_cores,
                "physical_cores": host.physical_cores,
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
                }),
                None => json!({ "loaded": false }),
            };
            v["devices"] = Value::Array(self.devices.iter().map(device_json).collect());
            v["libsda_version"] = json!(env!("CARGO_PKG_VERSION"));
        }
        v
    }
}

fn device_json(d: &DeviceInfo) -> Value {
    json!({
        "device": d.device,
        "kind": d.kind.as_str(),
        "index": d.index,
        "name": d.name,
        "memory_total": d.memory_total,
        "memory_free": d.memory_free,
        "compute_capability": d.compute_capability.map(|(a, b)| format!("{a}.{b}")),
        "cuda_runtime_version": d.cuda_runtime_version,
        "cuda_driver_version": d.cuda_driver_version,
        "bf16_supported": d.bf16_supported,
        "fp16_supported": d.fp16_supported,
        "device_count": d.device_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}
