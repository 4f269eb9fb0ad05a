//! Memory figures, cache clearing and peak resets of the selected device.

use crate::context::{context_of, sda_context};
use crate::guard;
use crate::sized::{self, growable, zeroed_with_size, Out};
use crate::status::Status;

/// Memory of the selected device, in bytes; the same fields on every device kind. Initialise it with
/// `SDA_MEMORY_FIGURES_INIT(&figures)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_memory_figures {
    /// `sizeof(sda_memory_figures)` as the caller was compiled; set by `sda_memory_figures_init`.
    pub struct_size: u32,
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
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_memory_figures {
    struct_size, allocated, reserved, peak, free, total, budget, process_resident,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_memory_figures is repr(C) of integers: all-zero bytes are a valid value.
    unsafe { zeroed_with_size() }
});

/// Initialises empty memory figures (`struct_size` = `size`, the caller's
/// `sizeof(sda_memory_figures)`; `SDA_MEMORY_FIGURES_INIT(&figures)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_memory_figures_init(figures: *mut sda_memory_figures, size: usize) -> Status {
    guard(|| sized::init(figures, size, "figures"))
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
        let slot = Out::new(out_figures, "out_figures")?;
        let m = context.memory_info()?;
        slot.write(&sda_memory_figures {
            struct_size: std::mem::size_of::<sda_memory_figures>() as u32,
            allocated: m.allocated,
            reserved: m.reserved,
            peak: m.peak,
            free: m.free,
            total: m.total,
            budget: m.budget,
            process_resident: m.process_resident,
            #[cfg(feature = "abi-growth-test")]
            abi_growth_test: 0,
        });
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
