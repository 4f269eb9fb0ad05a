//! Memory figures, cache clearing and peak resets of the selected device.

use crate::context::{context_of, sda_context};
use crate::status::Status;
use crate::{guard, out};

/// Memory of the selected device, in bytes; the same fields on every device kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sda_memory_figures {
    /// Bytes held by live torch tensors (on CPU counted by the backend; 0 while torch is not loaded).
    pub allocated: u64,
    /// Bytes the caching allocator holds (tensors plus cache; equals `allocated` on CPU).
    pub reserved: u64,
    /// Highest `allocated` since the last `sda_reset_peak`.
    pub peak: u64,
    /// Free bytes of the device now (device-wide; on CPU `MemAvailable`, capped by the cgroup).
    pub free: u64,
    /// Total bytes of the device (on CPU the RAM, or the cgroup limit when lower).
    pub total: u64,
    /// The budget under the configured memory strategy (conservative 60 %, balanced 75 %, aggressive
    /// 90 %, or `hardware.memory_fraction`): of `total` on accelerators, of `free` on CPU.
    pub budget: u64,
    /// Resident set size of the whole process.
    pub process_resident: u64,
}

/// Reads the selected device's memory figures (selecting with the configuration's `hardware.device`
/// first if needed). On CPU this loads no libtorch.
///
/// Thread safety: [thread-safe]; cheap (tens of microseconds).
#[no_mangle]
pub extern "C" fn sda_memory_info(
    context: *const sda_context,
    out_figures: *mut sda_memory_figures,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let slot = out(out_figures, "out_figures")?;
        let m = context.memory_info()?;
        *slot = sda_memory_figures {
            allocated: m.allocated,
            reserved: m.reserved,
            peak: m.peak,
            free: m.free,
            total: m.total,
            budget: m.budget,
            process_resident: m.process_resident,
        };
        Ok(())
    })
}

/// Returns the selected device's cached, unused memory to the driver (what `torch.cuda.empty_cache`
/// does). A no-op on CPU and while torch is not loaded.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_clear_cache(context: *const sda_context) -> Status {
    guard(|| context_of(context)?.clear_cache())
}

/// Resets the peak figure of the selected device to the current allocation.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_reset_peak(context: *const sda_context) -> Status {
    guard(|| context_of(context)?.reset_peak())
}
