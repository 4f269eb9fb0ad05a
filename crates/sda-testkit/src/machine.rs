//! An injected machine: GPUs this computer does not have, for selection, plan and tier tests.

use sda_core::device::{CudaDevice, CudaPresence, Machine};
use sda_core::error::{Error, Result};
use sda_core::preference::DeviceKind;
use std::collections::HashMap;

/// A machine with injected CUDA devices (none: "no NVIDIA driver"); smoke tests always pass, so
/// selection on it never loads libtorch.
pub struct InjectedMachine {
    /// Total memory of each GPU, in bytes.
    pub gpu_memory: Vec<u64>,
    /// Driver version the machine reports.
    pub driver_version: String,
}

impl InjectedMachine {
    /// `gpus` GPUs of 16 GB each.
    pub fn with_gpus(gpus: u32) -> InjectedMachine {
        InjectedMachine::with_memory(&vec![16_000_000_000; gpus as usize])
    }

    /// One GPU per entry, with that much memory.
    pub fn with_memory(memory: &[u64]) -> InjectedMachine {
        InjectedMachine {
            gpu_memory: memory.to_vec(),
            driver_version: "12.4".to_string(),
        }
    }
}

impl Machine for InjectedMachine {
    fn cuda(&self) -> CudaPresence {
        if self.gpu_memory.is_empty() {
            return CudaPresence::Absent("injected: no NVIDIA driver".into());
        }
        CudaPresence::Present {
            driver_version: self.driver_version.clone(),
            devices: self
                .gpu_memory
                .iter()
                .enumerate()
                .map(|(i, m)| CudaDevice {
                    index: i as u32,
                    name: format!("Injected GPU {i}"),
                    total_memory: *m,
                    compute_capability: (8, 6),
                })
                .collect(),
        }
    }
    fn mps(&self) -> std::result::Result<(), String> {
        Err("injected: no MPS".into())
    }
    fn prepare_and_smoke_test(&self, kind: DeviceKind, _index: u32, _fraction: f64) -> Result<()> {
        match kind {
            DeviceKind::Cuda => Ok(()),
            other => Err(Error::unsupported(format!("injected: no {other}"))),
        }
    }
    fn cuda_memory(&self, index: u32) -> Option<(u64, u64)> {
        let total = *self.gpu_memory.get(index as usize)?;
        Some((total / 2, total))
    }
    fn cuda_runtime_version(&self) -> Option<String> {
        None
    }
}

/// A lookup over fixed pairs: the environment a test injects instead of touching the process's.
pub fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}
