//! Device selection and description.

use crate::context::{context_of, sda_context};
use crate::sized::{self, growable, sda_bool, write_array, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::{fill_fixed, guard, opt_str_arg, out};
use sda_core::device::{DeviceInfo, Selection};
use sda_core::preference::DeviceKind;
use std::os::raw::c_char;

/// A family of compute devices.
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum sda_device_kind {
    /// The host CPU.
    Cpu = 0,
    /// An NVIDIA GPU through CUDA.
    Cuda = 1,
    /// Apple silicon through Metal Performance Shaders.
    Mps = 2,
}

impl From<DeviceKind> for sda_device_kind {
    fn from(kind: DeviceKind) -> sda_device_kind {
        match kind {
            DeviceKind::Cpu => sda_device_kind::Cpu,
            DeviceKind::Cuda => sda_device_kind::Cuda,
            DeviceKind::Mps => sda_device_kind::Mps,
        }
    }
}

impl From<sda_device_kind> for DeviceKind {
    fn from(kind: sda_device_kind) -> DeviceKind {
        match kind {
            sda_device_kind::Cpu => DeviceKind::Cpu,
            sda_device_kind::Cuda => DeviceKind::Cuda,
            sda_device_kind::Mps => DeviceKind::Mps,
        }
    }
}

/// The outcome of `sda_select_device`. Initialise it with `SDA_SELECTION_INIT(&selection)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_selection {
    /// `sizeof(sda_selection)` as the caller was compiled; set by `sda_selection_init`.
    pub struct_size: u32,
    /// The chosen device kind.
    pub kind: sda_device_kind,
    /// The chosen device index (0 on CPU and MPS).
    pub index: i32,
    /// 1 when the requested device was missing or broken and the CPU was chosen instead, else 0.
    pub fell_back: sda_bool,
    /// The device as torch spells it (`cpu`, `cuda:0`, `mps`), NUL-terminated.
    pub device: [c_char; 32],
    /// The preference as understood (`auto`, `cuda:1`), NUL-terminated.
    pub requested: [c_char; 32],
    /// Why the selection fell back (empty when it did not), NUL-terminated, truncated to fit. The
    /// full text also goes to the log callback as a warning.
    pub reason: [c_char; 512],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_selection {
    struct_size, kind, index, fell_back, device, requested, reason,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_selection is repr(C) of integers, sda_bool, c_char arrays (0 = empty string) and
    // `kind`, an sda_device_kind whose 0 is SDA_DEVICE_KIND_CPU: all-zero bytes are valid.
    unsafe { zeroed_with_size() }
});

/// The description of one device. Initialise it with `SDA_DEVICE_DETAILS_INIT(&details)`; for
/// `sda_list_devices`, initialise the first entry of the array at least.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_device_details {
    /// `sizeof(sda_device_details)` as the caller was compiled; set by `sda_device_details_init`.
    pub struct_size: u32,
    /// Device kind.
    pub kind: sda_device_kind,
    /// Index within the kind.
    pub index: i32,
    /// Number of devices of this kind.
    pub device_count: u32,
    /// The device as torch spells it (`cpu`, `cuda:0`, `mps`), NUL-terminated.
    pub device: [c_char; 32],
    /// Device name; the CPU brand string on CPU. NUL-terminated.
    pub name: [c_char; 256],
    /// Total memory in bytes (on CPU: RAM, or the cgroup limit when lower).
    pub memory_total: u64,
    /// Free memory in bytes, measured on every call (on CPU: `MemAvailable`, capped by the cgroup).
    pub memory_free: u64,
    /// CUDA compute capability, major (-1 when not CUDA).
    pub compute_capability_major: i32,
    /// CUDA compute capability, minor (-1 when not CUDA).
    pub compute_capability_minor: i32,
    /// CUDA runtime version torch was built with (`13.0`), empty when unknown or not CUDA.
    pub cuda_runtime_version: [c_char; 16],
    /// CUDA driver version (`12.4`), empty when not CUDA.
    pub cuda_driver_version: [c_char; 16],
    /// 1 with native bfloat16 arithmetic, else 0.
    pub bf16_supported: sda_bool,
    /// 1 with native float16 arithmetic, else 0.
    pub fp16_supported: sda_bool,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_device_details {
    struct_size, kind, index, device_count, device, name, memory_total, memory_free,
    compute_capability_major, compute_capability_minor, cuda_runtime_version, cuda_driver_version,
    bf16_supported, fp16_supported,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_device_details is repr(C) of integers, sda_bool, c_char arrays (0 = empty string)
    // and `kind`, an sda_device_kind whose 0 is SDA_DEVICE_KIND_CPU: all-zero bytes are valid.
    unsafe { zeroed_with_size() }
});

/// Initialises an empty selection (`struct_size` = `size`, the caller's `sizeof(sda_selection)`;
/// `SDA_SELECTION_INIT(&selection)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_selection_init(selection: *mut sda_selection, size: usize) -> Status {
    guard(|| sized::init(selection, size, "selection"))
}

/// Initialises an empty device description (`struct_size` = `size`, the caller's
/// `sizeof(sda_device_details)`; `SDA_DEVICE_DETAILS_INIT(&details)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_device_details_init(details: *mut sda_device_details, size: usize) -> Status {
    guard(|| sized::init(details, size, "details"))
}

fn selection(s: &Selection) -> sda_selection {
    let mut dst = sda_selection::defaults();
    dst.kind = s.kind.into();
    dst.index = s.index as i32;
    dst.fell_back = s.fell_back.into();
    fill_fixed(&mut dst.device, &s.device_string());
    fill_fixed(&mut dst.requested, &s.requested);
    fill_fixed(&mut dst.reason, &s.reason);
    dst
}

fn details(info: &DeviceInfo) -> sda_device_details {
    let mut d = sda_device_details::defaults();
    d.kind = info.kind.into();
    d.index = info.index as i32;
    fill_fixed(&mut d.device, &info.device);
    fill_fixed(&mut d.name, &info.name);
    d.memory_total = info.memory_total;
    d.memory_free = info.memory_free;
    let (major, minor) = info.compute_capability.unwrap_or((-1, -1));
    d.compute_capability_major = major;
    d.compute_capability_minor = minor;
    fill_fixed(
        &mut d.cuda_runtime_version,
        info.cuda_runtime_version.as_deref().unwrap_or(""),
    );
    fill_fixed(
        &mut d.cuda_driver_version,
        info.cuda_driver_version.as_deref().unwrap_or(""),
    );
    d.bf16_supported = info.bf16_supported.into();
    d.fp16_supported = info.fp16_supported.into();
    d.device_count = info.device_count;
    d
}

/// Selects the device the context works on. `preference` is `auto`, `cpu`, `cuda`, `cuda:N` or `mps`
/// (case-insensitive, surrounding spaces ignored), or NULL for the configuration's `hardware.device`.
///
/// `auto` walks `hardware.platform_priority` (default cuda, mps, cpu). `cuda` picks `LOCAL_RANK` (or
/// `SLURM_LOCALID`) when a launcher set it, else device 0. Every non-CPU device must pass a smoke test
/// (32×32 matmul, sum, NaN check), which loads the torch backend. A device that is missing or fails
/// falls back to the CPU with `fell_back` set and the reason in `out->reason` and in a log warning;
/// with `hardware.strict = true` it is `SDA_ERR_DEVICE_UNAVAILABLE` instead. Knowing that no GPU exists
/// needs no libtorch, and selecting `cpu` never loads it.
///
/// Errors: `SDA_ERR_INVALID_ARGUMENT` for a malformed preference (`""`, `tpu`, `cuda:x`) and for a CUDA
/// index beyond the devices present (`cuda:99` on a one-GPU machine) — never a silent CPU.
///
/// Thread safety: [thread-safe]; may take seconds the first time (loading libtorch): call it at start-up
/// or from a worker thread, never from the audio thread.
#[no_mangle]
pub extern "C" fn sda_select_device(
    context: *const sda_context,
    preference: *const c_char,
    out_selection: *mut sda_selection,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let preference = opt_str_arg(preference, "preference")?;
        let slot = Out::new(out_selection, "out_selection")?;
        slot.write(&selection(&context.select(preference)?));
        Ok(())
    })
}

/// Describes the context's selected device (selecting with the configuration's `hardware.device` first
/// if nothing was selected). Static facts are cached at selection; free memory is measured on every
/// call.
///
/// Thread safety: [thread-safe]; cheap (microseconds, no allocation by torch), but reads /proc on Linux.
#[no_mangle]
pub extern "C" fn sda_device_info(
    context: *const sda_context,
    out_details: *mut sda_device_details,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let slot = Out::new(out_details, "out_details")?;
        slot.write(&details(&context.device_info()?));
        Ok(())
    })
}

/// Lists every device of the machine: the CPU first, then each CUDA device, then MPS where it exists.
/// Loads no libtorch.
///
/// `out_devices` is an array of `capacity` entries (may be NULL when `capacity` is 0) whose first entry
/// is initialised (`SDA_DEVICE_DETAILS_INIT(&out_devices[0])`): its `struct_size` is the array's
/// stride, and every entry written gets it. `*count` always receives the number of devices; when
/// `capacity` is smaller the call returns `SDA_ERR_BUFFER_TOO_SMALL` and writes no entry.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_list_devices(
    context: *const sda_context,
    out_devices: *mut sda_device_details,
    capacity: usize,
    count: *mut usize,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let count = out(count, "count")?;
        let devices = context.list_devices()?;
        write_array(
            &devices,
            out_devices,
            capacity,
            count,
            ("devices", "out_devices"),
            details,
        )
    })
}

/// Kind name (`"cpu"`, `"cuda"`, `"mps"`) as a static string; `"unknown"` for other values.
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_device_kind_str(kind: i32) -> *const c_char {
    let name: &'static [u8] = match kind {
        k if k == sda_device_kind::Cpu as i32 => b"cpu\0",
        k if k == sda_device_kind::Cuda as i32 => b"cuda\0",
        k if k == sda_device_kind::Mps as i32 => b"mps\0",
        _ => b"unknown\0",
    };
    name.as_ptr().cast::<c_char>()
}
