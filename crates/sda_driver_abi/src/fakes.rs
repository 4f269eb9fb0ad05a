//! Test doubles of the driver API and NVML entry points (feature `fakes`): functions with the exact
//! signatures of the real ones that answer from a [`FakeMachine`] programmed per test thread, so that
//! sda-core's unit tests run the code paths that talk to a driver on machines without a GPU.
//!
//! A test describes the machine with [`install`] (and adjusts it with [`update`]), then builds the
//! core's function table out of the `fake_cu_*` and `fake_nvml_*` functions. The state is
//! thread-local, so tests running in parallel do not see each other's machines. No fake panics (a
//! panic cannot unwind out of a C-ABI function); bad arguments come back as error codes instead.
//!
//! NVML handles are 1-based physical positions disguised as pointers; they are never dereferenced.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_uint};

use crate::*;

/// One physical GPU of a [`FakeMachine`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeGpu {
    /// Product name `cuDeviceGetName` reports.
    pub name: &'static str,
    /// Total memory in bytes (`cuDeviceTotalMem_v2` and NVML's `total`).
    pub memory: usize,
    /// Compute capability (major, minor).
    pub cc: (c_int, c_int),
    /// The UUID both the driver API and NVML report.
    pub uuid: CuUuid,
    /// Free memory in bytes that NVML reports.
    pub nvml_free: u64,
}

/// The machine the fakes describe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FakeMachine {
    /// What `cuDriverGetVersion` reports (`12040` = 12.4).
    pub version: c_int,
    /// What `cuInit` returns.
    pub init_rc: CuResult,
    /// The physical GPUs, in PCI order (NVML's order).
    pub gpus: Vec<FakeGpu>,
    /// CUDA ordinal → position in `gpus` (what `CUDA_VISIBLE_DEVICES` does); a position past the end
    /// makes `cuDeviceGet` fail for that ordinal.
    pub visible: Vec<usize>,
    /// When set, `cuDeviceGetName` fails with `CUDA_ERROR_UNKNOWN`.
    pub broken_name: bool,
}

thread_local! {
    static MACHINE: RefCell<FakeMachine> = RefCell::new(FakeMachine::default());
}

/// Makes `machine` the one this thread's fakes describe.
pub fn install(machine: FakeMachine) {
    MACHINE.with(|cell| *cell.borrow_mut() = machine);
}

/// Changes this thread's fake machine in place.
pub fn update(change: impl FnOnce(&mut FakeMachine)) {
    MACHINE.with(|cell| change(&mut cell.borrow_mut()));
}

fn machine<R>(read: impl FnOnce(&FakeMachine) -> R) -> R {
    MACHINE.with(|cell| read(&cell.borrow()))
}

/// The physical GPU behind a CUDA ordinal (which the fake driver also uses as the device handle).
fn physical(dev: CuDevice) -> Option<FakeGpu> {
    machine(|m| {
        let p = *m.visible.get(usize::try_from(dev).ok()?)?;
        m.gpus.get(p).cloned()
    })
}

/// The physical GPU behind a fake NVML handle.
fn nvml_gpu(device: NvmlDeviceRaw) -> Option<FakeGpu> {
    machine(|m| m.gpus.get((device as usize).checked_sub(1)?).cloned())
}

/// A UUID as NVML prints it (`GPU-` and 8-4-4-4-12 lower-case hex digits), written here on its own
/// so that the double does not share code with what it tests.
fn nvml_uuid_text(uuid: &CuUuid) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Copies `text` and a NUL into the caller's `(buf, cap)`; false (nothing written) when it does not
/// fit.
///
/// # Safety
/// `buf` must be valid for writes of `cap` bytes.
unsafe fn write_c_string(text: &str, buf: *mut c_char, cap: usize) -> bool {
    if buf.is_null() || text.len() >= cap {
        return false;
    }
    // SAFETY: `buf` is writable for `cap` bytes (the caller's contract) and `text.len() + 1 <= cap`;
    // `text` is a separate Rust allocation, so the ranges do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast(), buf, text.len());
        *buf.add(text.len()) = 0;
    }
    true
}

/// Test double of `cuInit`: returns the machine's `init_rc`.
///
/// # Safety
/// None beyond the real function's (it reads no pointer).
pub unsafe extern "C" fn fake_cu_init(_flags: c_uint) -> CuResult {
    machine(|m| m.init_rc)
}

/// Test double of `cuDriverGetVersion`.
///
/// # Safety
/// As for the real function: `version` is valid for one `int` write.
pub unsafe extern "C" fn fake_cu_driver_get_version(version: *mut c_int) -> CuResult {
    if version.is_null() {
        return 1;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *version = machine(|m| m.version) };
    CUDA_SUCCESS
}

/// Test double of `cuDeviceGetCount`: the number of visible ordinals.
///
/// # Safety
/// As for the real function: `count` is valid for one `int` write.
pub unsafe extern "C" fn fake_cu_device_get_count(count: *mut c_int) -> CuResult {
    if count.is_null() {
        return 1;
    }
    let n = machine(|m| c_int::try_from(m.visible.len()).unwrap_or(c_int::MAX));
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *count = n };
    CUDA_SUCCESS
}

/// Test double of `cuDeviceGet`: the handle is the ordinal; `CUDA_ERROR_INVALID_DEVICE` for an
/// ordinal that names no physical GPU.
///
/// # Safety
/// As for the real function: `device` is valid for one `CUdevice` write.
pub unsafe extern "C" fn fake_cu_device_get(device: *mut CuDevice, ordinal: c_int) -> CuResult {
    if physical(ordinal).is_none() {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    if device.is_null() {
        return 1;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *device = ordinal };
    CUDA_SUCCESS
}

/// Test double of `cuDeviceGetName` (fails with `CUDA_ERROR_UNKNOWN` when `broken_name` is set);
/// truncates the name to `len - 1` bytes, as the driver does.
///
/// # Safety
/// As for the real function: `name` is valid for writes of `len` bytes.
pub unsafe extern "C" fn fake_cu_device_get_name(
    name: *mut c_char,
    len: c_int,
    dev: CuDevice,
) -> CuResult {
    if machine(|m| m.broken_name) {
        return 999;
    }
    let Some(gpu) = physical(dev) else {
        return CUDA_ERROR_INVALID_DEVICE;
    };
    let cap = usize::try_from(len).unwrap_or(0);
    if cap == 0 {
        return 1;
    }
    let text = &gpu.name[..gpu.name.len().min(cap - 1)];
    // SAFETY: `name` is writable for `len` bytes by the caller's contract, and `text` was cut to fit
    // with its NUL.
    if unsafe { write_c_string(text, name, cap) } {
        CUDA_SUCCESS
    } else {
        1
    }
}

/// Test double of `cuDeviceTotalMem_v2`.
///
/// # Safety
/// As for the real function: `bytes` is valid for one `size_t` write.
pub unsafe extern "C" fn fake_cu_device_total_mem(bytes: *mut usize, dev: CuDevice) -> CuResult {
    let Some(gpu) = physical(dev) else {
        return CUDA_ERROR_INVALID_DEVICE;
    };
    if bytes.is_null() {
        return 1;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *bytes = gpu.memory };
    CUDA_SUCCESS
}

/// Test double of `cuDeviceGetAttribute`: knows the compute capability attributes only
/// (`CUDA_ERROR_INVALID_VALUE` for the others).
///
/// # Safety
/// As for the real function: `value` is valid for one `int` write.
pub unsafe extern "C" fn fake_cu_device_get_attribute(
    value: *mut c_int,
    attribute: CuDeviceAttribute,
    dev: CuDevice,
) -> CuResult {
    let Some(gpu) = physical(dev) else {
        return CUDA_ERROR_INVALID_DEVICE;
    };
    let answer = match attribute {
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => gpu.cc.0,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => gpu.cc.1,
        _ => return 1,
    };
    if value.is_null() {
        return 1;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *value = answer };
    CUDA_SUCCESS
}

/// Test double of `cuDeviceGetUuid_v2`.
///
/// # Safety
/// As for the real function: `uuid` is valid for one 16-byte `CUuuid` write.
pub unsafe extern "C" fn fake_cu_device_get_uuid(uuid: *mut CuUuid, dev: CuDevice) -> CuResult {
    let Some(gpu) = physical(dev) else {
        return CUDA_ERROR_INVALID_DEVICE;
    };
    if uuid.is_null() {
        return 1;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *uuid = gpu.uuid };
    CUDA_SUCCESS
}

/// Test double of `nvmlInit_v2`: always succeeds.
///
/// # Safety
/// None (it takes no argument).
pub unsafe extern "C" fn fake_nvml_init() -> NvmlReturn {
    NVML_SUCCESS
}

/// Test double of `nvmlDeviceGetCount_v2`: every physical GPU, visible or not.
///
/// # Safety
/// As for the real function: `count` is valid for one `unsigned int` write.
pub unsafe extern "C" fn fake_nvml_device_get_count(count: *mut c_uint) -> NvmlReturn {
    if count.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let n = machine(|m| c_uint::try_from(m.gpus.len()).unwrap_or(c_uint::MAX));
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *count = n };
    NVML_SUCCESS
}

/// Test double of `nvmlDeviceGetHandleByIndex_v2`: the handle is `index + 1` as a pointer.
///
/// # Safety
/// As for the real function: `device` is valid for one `nvmlDevice_t` write.
pub unsafe extern "C" fn fake_nvml_device_get_handle_by_index(
    index: c_uint,
    device: *mut NvmlDeviceRaw,
) -> NvmlReturn {
    if device.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null, and valid for a write by the caller's contract.
    unsafe { *device = (index as usize + 1) as NvmlDeviceRaw };
    NVML_SUCCESS
}

/// Test double of `nvmlDeviceGetUUID`: `NVML_ERROR_INSUFFICIENT_SIZE` when the text and its NUL do
/// not fit in `len` bytes.
///
/// # Safety
/// As for the real function: `uuid` is valid for writes of `len` bytes.
pub unsafe extern "C" fn fake_nvml_device_get_uuid(
    device: NvmlDeviceRaw,
    uuid: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    let Some(gpu) = nvml_gpu(device) else {
        return NVML_ERROR_INVALID_ARGUMENT;
    };
    // SAFETY: `uuid` is writable for `len` bytes by the caller's contract.
    if unsafe { write_c_string(&nvml_uuid_text(&gpu.uuid), uuid, len as usize) } {
        NVML_SUCCESS
    } else {
        NVML_ERROR_INSUFFICIENT_SIZE
    }
}

/// Test double of `nvmlDeviceGetMemoryInfo`: the GPU's memory and NVML free figure.
///
/// # Safety
/// As for the real function: `memory` is valid for one `nvmlMemory_t` write.
pub unsafe extern "C" fn fake_nvml_device_get_memory_info(
    device: NvmlDeviceRaw,
    memory: *mut NvmlMemory,
) -> NvmlReturn {
    let Some(gpu) = nvml_gpu(device) else {
        return NVML_ERROR_INVALID_ARGUMENT;
    };
    if memory.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let total = gpu.memory as u64;
    // SAFETY: non-null, and valid for a write of an `NvmlMemory` by the caller's contract.
    unsafe {
        *memory = NvmlMemory {
            total,
            free: gpu.nvml_free,
            used: total.saturating_sub(gpu.nvml_free),
        }
    };
    NVML_SUCCESS
}

/// Test double of `nvmlSystemGetDriverVersion`: reports "550.54.15".
///
/// # Safety
/// As for the real function: `version` is valid for writes of `len` bytes.
pub unsafe extern "C" fn fake_nvml_system_get_driver_version(
    version: *mut c_char,
    len: c_uint,
) -> NvmlReturn {
    // SAFETY: `version` is writable for `len` bytes by the caller's contract.
    if unsafe { write_c_string("550.54.15", version, len as usize) } {
        NVML_SUCCESS
    } else {
        NVML_ERROR_INSUFFICIENT_SIZE
    }
}

// Each double has exactly the type of the entry point it stands in for.
const _: CuInitFn = fake_cu_init;
const _: CuDriverGetVersionFn = fake_cu_driver_get_version;
const _: CuDeviceGetCountFn = fake_cu_device_get_count;
const _: CuDeviceGetFn = fake_cu_device_get;
const _: CuDeviceGetNameFn = fake_cu_device_get_name;
const _: CuDeviceTotalMemFn = fake_cu_device_total_mem;
const _: CuDeviceGetAttributeFn = fake_cu_device_get_attribute;
const _: CuDeviceGetUuidFn = fake_cu_device_get_uuid;
const _: NvmlInitFn = fake_nvml_init;
const _: NvmlDeviceGetCountFn = fake_nvml_device_get_count;
const _: NvmlDeviceGetHandleByIndexFn = fake_nvml_device_get_handle_by_index;
const _: NvmlDeviceGetUuidFn = fake_nvml_device_get_uuid;
const _: NvmlDeviceGetMemoryInfoFn = fake_nvml_device_get_memory_info;
const _: NvmlSystemGetDriverVersionFn = fake_nvml_system_get_driver_version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_like_nvml() {
        let uuid = [
            0x7a, 0x6d, 0x9b, 0x3c, 0x01, 0x22, 0xfe, 0x10, 0xab, 0xcd, 0x00, 0x11, 0x22, 0x33,
            0x44, 0x55,
        ];
        assert_eq!(
            nvml_uuid_text(&uuid),
            "GPU-7a6d9b3c-0122-fe10-abcd-001122334455"
        );
    }

    #[test]
    fn strings_that_do_not_fit_are_refused() {
        let mut buf = [1 as c_char; 4];
        // SAFETY: `buf` is a live local of 4 bytes, the capacity passed.
        assert!(!unsafe { write_c_string("abcd", buf.as_mut_ptr(), 4) });
        assert_eq!(buf, [1; 4]);
        // SAFETY: as above.
        assert!(unsafe { write_c_string("abc", buf.as_mut_ptr(), 4) });
        assert_eq!(buf, [97, 98, 99, 0]);
        let mut version = [0 as c_char; 4];
        // SAFETY: `version` is a live local of 4 bytes, the length passed.
        let rc = unsafe { fake_nvml_system_get_driver_version(version.as_mut_ptr(), 4) };
        assert_eq!(rc, NVML_ERROR_INSUFFICIENT_SIZE);
    }
}
