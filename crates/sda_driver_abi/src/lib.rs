//! The C declarations of the two NVIDIA libraries that libsda's core opens with `dlopen`: the CUDA
//! driver API (`libcuda.so.1`, declared in `cuda.h`) and NVML (`libnvidia-ml.so.1`, `nvml.h`).
//!
//! This crate holds declarations only: the result-code types, one function-pointer type per entry
//! point the core calls (each with the C signature of its header), the `repr(C)` structs those
//! functions fill in and the constants the core passes or compares against. Loading the libraries,
//! calling through the pointers and turning codes into messages is sda-core's work
//! (`sda_core::cuda_driver`), which in this way stays free of C declarations.
//!
//! With the `fakes` feature the crate also carries test doubles of those functions (the `fakes` module): a fake
//! machine, programmed per test thread, that sda-core's unit tests install in place of the driver.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_int, c_uint, c_void};

#[cfg(feature = "fakes")]
pub mod fakes;

// ---------------------------------------------------------------------------------------------
// The driver API (cuda.h)
// ---------------------------------------------------------------------------------------------

/// `CUresult`: the driver API's return code (an `int` enum; 0 is `CUDA_SUCCESS`).
pub type CuResult = c_int;
/// `CUdevice`: a device handle, an `int` (the driver hands out the ordinal itself).
pub type CuDevice = c_int;
/// `CUdevice_attribute`: which attribute `cuDeviceGetAttribute` reports (an `int` enum).
pub type CuDeviceAttribute = c_int;
/// `CUuuid`: a device's 16-byte UUID (`struct { char bytes[16]; }`).
pub type CuUuid = [u8; 16];

/// `CUDA_SUCCESS`.
pub const CUDA_SUCCESS: CuResult = 0;
/// `CUDA_ERROR_NO_DEVICE`: no CUDA-capable device is visible (e.g. `CUDA_VISIBLE_DEVICES` hides all).
pub const CUDA_ERROR_NO_DEVICE: CuResult = 100;
/// `CUDA_ERROR_INVALID_DEVICE`: the ordinal or handle names no visible device.
pub const CUDA_ERROR_INVALID_DEVICE: CuResult = 101;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR`.
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: CuDeviceAttribute = 75;
/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR`.
pub const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: CuDeviceAttribute = 76;

/// `CUresult cuInit(unsigned int Flags)`; `Flags` must be 0.
pub type CuInitFn = unsafe extern "C" fn(flags: c_uint) -> CuResult;
/// `CUresult cuDriverGetVersion(int *driverVersion)`: the CUDA version the driver supports
/// (`12040` = 12.4). Callable before `cuInit`.
pub type CuDriverGetVersionFn = unsafe extern "C" fn(version: *mut c_int) -> CuResult;
/// `CUresult cuDeviceGetCount(int *count)`.
pub type CuDeviceGetCountFn = unsafe extern "C" fn(count: *mut c_int) -> CuResult;
/// `CUresult cuDeviceGet(CUdevice *device, int ordinal)`.
pub type CuDeviceGetFn = unsafe extern "C" fn(device: *mut CuDevice, ordinal: c_int) -> CuResult;
/// `CUresult cuDeviceGetName(char *name, int len, CUdevice dev)`: writes at most `len` bytes,
/// NUL-terminated when it fits.
pub type CuDeviceGetNameFn =
    unsafe extern "C" fn(name: *mut c_char, len: c_int, dev: CuDevice) -> CuResult;
/// `CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)`.
pub type CuDeviceTotalMemFn = unsafe extern "C" fn(bytes: *mut usize, dev: CuDevice) -> CuResult;
/// `CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)`.
pub type CuDeviceGetAttributeFn = unsafe extern "C" fn(
    value: *mut c_int,
    attribute: CuDeviceAttribute,
    dev: CuDevice,
) -> CuResult;
/// `CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)` (MIG-aware, CUDA 11.4+), and the older
/// `cuDeviceGetUuid`, which has the same signature.
pub type CuDeviceGetUuidFn = unsafe extern "C" fn(uuid: *mut CuUuid, dev: CuDevice) -> CuResult;
/// `CUresult cuGetErrorName(CUresult error, const char **pStr)`: on success `*pStr` points to a
/// static, NUL-terminated string.
pub type CuGetErrorNameFn =
    unsafe extern "C" fn(error: CuResult, name: *mut *const c_char) -> CuResult;

// ---------------------------------------------------------------------------------------------
// NVML (nvml.h)
// ---------------------------------------------------------------------------------------------

/// `nvmlReturn_t`: NVML's return code (an `int` enum; 0 is `NVML_SUCCESS`).
pub type NvmlReturn = c_int;
/// `nvmlDevice_t`: an opaque device handle, valid until `nvmlShutdown`.
pub type NvmlDeviceRaw = *mut c_void;

/// `NVML_SUCCESS`.
pub const NVML_SUCCESS: NvmlReturn = 0;
/// `NVML_ERROR_INVALID_ARGUMENT`.
pub const NVML_ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
/// `NVML_ERROR_INSUFFICIENT_SIZE`: a caller's buffer is too small for the answer.
pub const NVML_ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE`: a buffer this long holds any UUID `nvmlDeviceGetUUID` returns
/// (MIG instances' included), with its NUL.
pub const NVML_DEVICE_UUID_V2_BUFFER_SIZE: usize = 96;
/// `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`: a buffer this long holds the driver version string of
/// `nvmlSystemGetDriverVersion`, with its NUL.
pub const NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE: usize = 80;

/// `nvmlMemory_t`: a device's memory in bytes, as `nvmlDeviceGetMemoryInfo` fills it in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NvmlMemory {
    /// Installed device memory.
    pub total: u64,
    /// Unallocated device memory.
    pub free: u64,
    /// Allocated device memory (including the driver's own reservations).
    pub used: u64,
}

/// `nvmlReturn_t nvmlInit_v2(void)`.
pub type NvmlInitFn = unsafe extern "C" fn() -> NvmlReturn;
/// `nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)`: every GPU in PCI order,
/// regardless of `CUDA_VISIBLE_DEVICES`.
pub type NvmlDeviceGetCountFn = unsafe extern "C" fn(count: *mut c_uint) -> NvmlReturn;
/// `nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)`.
pub type NvmlDeviceGetHandleByIndexFn =
    unsafe extern "C" fn(index: c_uint, device: *mut NvmlDeviceRaw) -> NvmlReturn;
/// `nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)`: writes a
/// NUL-terminated string of at most `length` bytes.
pub type NvmlDeviceGetUuidFn =
    unsafe extern "C" fn(device: NvmlDeviceRaw, uuid: *mut c_char, len: c_uint) -> NvmlReturn;
/// `nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)`.
pub type NvmlDeviceGetMemoryInfoFn =
    unsafe extern "C" fn(device: NvmlDeviceRaw, memory: *mut NvmlMemory) -> NvmlReturn;
/// `nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)`: writes a
/// NUL-terminated string of at most `length` bytes.
pub type NvmlSystemGetDriverVersionFn =
    unsafe extern "C" fn(version: *mut c_char, len: c_uint) -> NvmlReturn;
/// `nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)`: reaches MIG
/// instances, which enumeration by index does not list.
pub type NvmlDeviceGetHandleByUuidFn =
    unsafe extern "C" fn(uuid: *const c_char, device: *mut NvmlDeviceRaw) -> NvmlReturn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_memory_has_the_c_layout() {
        // Three `unsigned long long`s, in the order of nvml.h.
        assert_eq!(std::mem::size_of::<NvmlMemory>(), 24);
        assert_eq!(std::mem::align_of::<NvmlMemory>(), 8);
        assert_eq!(std::mem::offset_of!(NvmlMemory, total), 0);
        assert_eq!(std::mem::offset_of!(NvmlMemory, free), 8);
        assert_eq!(std::mem::offset_of!(NvmlMemory, used), 16);
        assert_eq!(std::mem::size_of::<CuUuid>(), 16);
    }
}
