//! Auto-configuration for C hosts: `sda_recommend`.

use crate::context::{context_of, sda_context};
use crate::device::sda_device_kind;
use crate::sized::{self, growable, sda_bool, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::{fill_fixed, guard};
use sda_core::recommend::BatchSource;
use std::os::raw::c_char;

/// An auto-configuration. Initialise it with `SDA_RECOMMENDATION_INIT(&r)` so that `struct_size` is set.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_recommendation {
    /// `sizeof(sda_recommendation)` as the caller was compiled; set by `sda_recommendation_init`.
    pub struct_size: u32,
    /// Kind of the device it is for (the context's selected device).
    pub kind: sda_device_kind,
    /// Index of that device.
    pub index: i32,
    /// The device as torch spells it, NUL-terminated.
    pub device: [c_char; 32],
    /// The device's total memory in bytes (RAM on CPU and MPS), which chose the tier.
    pub memory_total: u64,
    /// The batch size to use.
    pub batch_size: u32,
    /// 1 when `batch_size` is a probe's measurement stored in the configuration
    /// (`hardware.max_batch_size`), which beats the tier's guess; else 0.
    pub batch_from_probe: sda_bool,
    /// 1 to use gradient checkpointing, else 0.
    pub gradient_checkpointing: sda_bool,
    /// Model blocks.
    pub blocks: u32,
    /// Model channels.
    pub channels: u32,
    /// The tier's position in the table in force.
    pub tier_index: u32,
    /// 1 when the tier came from the configuration's `[[tiers]]`, else 0.
    pub tier_from_config: sda_bool,
    /// The tier's lower memory bound, inclusive, in GB (10^9 bytes).
    pub tier_min_memory_gb: f64,
    /// The tier's upper bound, exclusive, in GB; `INFINITY` for the open-ended last tier.
    pub tier_max_memory_gb: f64,
    /// The tier's description, NUL-terminated.
    pub tier_label: [c_char; 128],
    /// Where the batch size came from, in words; NUL-terminated, truncated to fit.
    pub batch_reason: [c_char; 256],
    /// 1 when a model size was given and the strategy below is advice for it, else 0.
    pub advice_given: sda_bool,
    /// The advised memory strategy (`conservative`, `balanced`, `aggressive`), or without a model size
    /// the configured one (`custom` possible); NUL-terminated.
    pub memory_strategy: [c_char; 16],
    /// Its budget fraction.
    pub memory_fraction: f64,
    /// Why, in words; NUL-terminated, truncated to fit.
    pub memory_reason: [c_char; 512],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_recommendation {
    struct_size, kind, index, device, memory_total, batch_size, batch_from_probe,
    gradient_checkpointing, blocks, channels, tier_index, tier_from_config, tier_min_memory_gb,
    tier_max_memory_gb, tier_label, batch_reason, advice_given, memory_strategy, memory_fraction,
    memory_reason,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_recommendation is repr(C) of integers, sda_bool, f64s, c_char arrays (0 = empty
    // string) and `kind`, an sda_device_kind whose 0 is SDA_DEVICE_KIND_CPU: all-zero bytes are a
    // valid value of every field.
    unsafe { zeroed_with_size() }
});

/// Initialises an empty recommendation (`struct_size` = `size`, the caller's
/// `sizeof(sda_recommendation)`; `SDA_RECOMMENDATION_INIT(&r)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_recommendation_init(
    recommendation: *mut sda_recommendation,
    size: usize,
) -> Status {
    guard(|| sized::init(recommendation, size, "recommendation"))
}

/// Recommends a configuration for the context's selected device (selecting with the configuration's
/// `hardware.device` first if needed): the seeds' tier for its memory (batch size, gradient
/// checkpointing, model blocks and channels; the table can be replaced per device kind by `[[tiers]]`
/// in the configuration), with the batch size of a probe stored in the configuration
/// (`hardware.max_batch_size` > 0) instead of the tier's. With `parameters` > 0 (the model's parameter
/// count) it also advises a memory strategy: larger models get the more careful budget (under 1M
/// aggressive on CUDA, under 100M balanced, else conservative; never above balanced on CPU and MPS),
/// with the reason in `memory_reason`. Nothing is changed: applying the advice is the host's choice.
///
/// Errors: `SDA_ERR_INVALID_ARGUMENT` when `out_recommendation->struct_size` breaks the header's rule
/// for structs that grow (not set by `sda_recommendation_init`).
///
/// Thread safety: [thread-safe]; cheap once a device is selected.
#[no_mangle]
pub extern "C" fn sda_recommend(
    context: *const sda_context,
    parameters: u64,
    out_recommendation: *mut sda_recommendation,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let slot = Out::new(out_recommendation, "out_recommendation")?;
        let r = context.recommend(parameters)?;
        let selection = context.selection()?;
        let mut c = sda_recommendation::defaults();
        c.kind = r.device.kind.into();
        c.index = selection.index as i32;
        fill_fixed(&mut c.device, &r.device.device);
        c.memory_total = r.device.memory_total;
        c.batch_size = r.batch_size;
        c.batch_from_probe = (r.batch_source == BatchSource::Probe).into();
        c.gradient_checkpointing = r.gradient_checkpointing.into();
        c.blocks = r.blocks;
        c.channels = r.channels;
        c.tier_index = r.tier_index as u32;
        c.tier_from_config = r.tier_from_config.into();
        c.tier_min_memory_gb = r.tier.min_memory_gb;
        c.tier_max_memory_gb = r.tier.max_memory_gb.unwrap_or(f64::INFINITY);
        fill_fixed(&mut c.tier_label, &r.tier.description());
        fill_fixed(&mut c.batch_reason, &r.batch_reason());
        let memory = r.memory_choice();
        c.advice_given = memory.advised.into();
        fill_fixed(&mut c.memory_strategy, memory.strategy.as_str());
        c.memory_fraction = memory.fraction;
        fill_fixed(&mut c.memory_reason, memory.reason);
        slot.write(&c);
        Ok(())
    })
}
