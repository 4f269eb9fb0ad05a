//! Memory figures with the same fields on every device, budgets from the memory strategy, cache
//! clearing and peak resets.
//!
//! On the CPU nothing here loads libtorch: when torch is not in the process there are no torch tensors,
//! so the allocator figures are zero and clearing the cache has nothing to do.

use crate::backend;
use crate::device::{Machine, Selection};
use crate::error::Result;
use crate::host;
use crate::preference::DeviceKind;

pub use crate::strategy::MemoryStrategy;

/// Memory of the selected device, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Bytes held by live torch tensors on the device (on CPU: counted by the backend's allocator
    /// wrapper; 0 while torch is not loaded).
    pub allocated: u64,
    /// Bytes the caching allocator holds from the device (tensors plus cache). The CPU allocator does
    /// not cache, so on CPU this equals `allocated`.
    pub reserved: u64,
    /// Highest `allocated` since the last peak reset.
    pub peak: u64,
    /// Free bytes on the device right now (device-wide; on CPU `MemAvailable`, capped by the cgroup).
    pub free: u64,
    /// Total bytes of the device (on CPU the RAM, or the cgroup limit when lower).
    pub total: u64,
    /// The working budget under the memory strategy: `fraction × total` on accelerators, and
    /// `fraction × free` on CPU, where using memory other programs need would swap or kill.
    pub budget: u64,
    /// Resident set size of the whole process (all libraries, not only torch).
    pub process_resident: u64,
}

/// The budget a strategy fraction gives for a device with these figures.
pub fn budget(kind: DeviceKind, fraction: f64, free: u64, total: u64) -> u64 {
    let base = match kind {
        DeviceKind::Cpu => free,
        DeviceKind::Cuda | DeviceKind::Mps => total,
    };
    (base as f64 * fraction.clamp(0.0, 1.0)) as u64
}

/// Current memory figures of the selected device.
pub fn memory_info(
    selection: &Selection,
    fraction: f64,
    machine: &dyn Machine,
) -> Result<MemoryInfo> {
    let now = host::memory_now();
    let mut info = MemoryInfo {
        process_resident: now.process_rss,
        ..MemoryInfo::default()
    };
    match selection.kind {
        DeviceKind::Cpu => {
            info.free = now.available;
            info.total = now.total;
            if let Some(backend) = backend::loaded() {
                let stats = backend.memory_stats(DeviceKind::Cpu, 0)?;
                info.allocated = stats.allocated;
                info.reserved = stats.reserved;
                info.peak = stats.peak_allocated;
            }
        }
        kind @ (DeviceKind::Cuda | DeviceKind::Mps) => {
            // A selected accelerator was smoke-tested, so the backend is in the process already.
            let backend = backend::loaded().ok_or_else(|| {
                crate::error::Error::backend_unavailable(
                    "the torch backend is not loaded although an accelerator is selected".into(),
                )
            })?;
            let stats = backend.memory_stats(kind, selection.index)?;
            info.allocated = stats.allocated;
            info.reserved = stats.reserved;
            info.peak = stats.peak_allocated;
            info.free = stats.free;
            info.total = stats.total;
            if kind == DeviceKind::Cuda {
                if let Some((free, total)) = machine.cuda_memory(selection.index) {
                    info.free = free;
                    info.total = total;
                }
            } else if info.total == 0 {
                // MPS shares the host's RAM.
                info.total = now.total;
                info.free = now.available;
            }
        }
    }
    info.budget = budget(selection.kind, fraction, info.free, info.total);
    Ok(info)
}

/// Returns cached, unused memory: the accelerator allocator's cache to the driver, and on CPU the C
/// heap's free pages to the system (glibc keeps freed large blocks otherwise, so a process that
/// survived an out-of-memory error would stay large).
pub fn clear_cache(kind: DeviceKind, index: u32) -> Result<()> {
    match backend::loaded() {
        Some(backend) if kind != DeviceKind::Cpu => backend.empty_cache(kind, index),
        _ => {
            trim_heap();
            Ok(())
        }
    }
}

/// Returns freed heap pages to the OS where the C library needs asking (glibc).
fn trim_heap() {
    crate::platform::trim_heap();
}

/// Resets the peak figure. A no-op while torch is not loaded (the peak is 0 then).
pub fn reset_peak(kind: DeviceKind, index: u32) -> Result<()> {
    match backend::loaded() {
        Some(backend) => backend.reset_peak(kind, index),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_uses_free_on_cpu_and_total_on_accelerators() {
        assert_eq!(budget(DeviceKind::Cpu, 0.5, 1000, 4000), 500);
        assert_eq!(budget(DeviceKind::Cuda, 0.75, 1000, 4000), 3000);
        assert_eq!(
            budget(DeviceKind::Mps, 2.0, 1000, 4000),
            4000,
            "fraction is clamped"
        );
    }
}
