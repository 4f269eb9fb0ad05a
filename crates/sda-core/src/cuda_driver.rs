//! NVIDIA GPU facts without libtorch: the CUDA driver API (`libcuda.so.1`) and NVML
//! (`libnvidia-ml.so.1`), both opened with `dlopen` on first use.
//!
//! Knowing that there is no GPU, or which GPUs there are, must not cost a host the ~250 ms and
//! hundreds of MB of loading libtorch, and must not fail when libtorch is broken. Both libraries come
//! with the NVIDIA driver (not with the torch wheel), so on a machine without the driver the answer is
//! a clean [`CudaFacts::NoDriver`] with a reason a person can act on.
//!
//! The driver API respects `CUDA_VISIBLE_DEVICES`, so its ordinals are the ones torch uses; NVML
//! ignores it and counts in PCI order, so NVML devices are matched to driver devices by UUID. NVML is
//! used only for free memory, because it answers without creating a CUDA context (which would cost
//! hundreds of MB of device memory per process).
//!
//! Caution: [`cuda_facts`] calls `cuInit`. As with any CUDA use, a process that later `fork()`s cannot
//! use CUDA in the child; hosts that fork workers should spawn them instead (or call this only in the
//! workers).
//!
//! The libraries are loaded once per process and never unloaded (unloading libcuda while a context may
//! exist is unsafe). All parsing, matching and naming is in pure functions, and the code that talks to
//! the driver takes its function table as an argument, so tests drive it with fake drivers.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::OnceLock;

use sda_driver_abi::{
    CuDevice, CuDeviceGetAttributeFn, CuDeviceGetCountFn, CuDeviceGetFn, CuDeviceGetNameFn,
    CuDeviceGetUuidFn, CuDeviceTotalMemFn, CuDriverGetVersionFn, CuGetErrorNameFn, CuInitFn,
    CuResult, NvmlDeviceGetCountFn, NvmlDeviceGetHandleByIndexFn, NvmlDeviceGetHandleByUuidFn,
    NvmlDeviceGetMemoryInfoFn, NvmlDeviceGetUuidFn, NvmlDeviceRaw, NvmlInitFn, NvmlMemory,
    NvmlReturn, NvmlSystemGetDriverVersionFn, CUDA_ERROR_NO_DEVICE, CUDA_SUCCESS,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
    NVML_DEVICE_UUID_V2_BUFFER_SIZE, NVML_SUCCESS, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE,
};

/// File name of the CUDA driver library (`libcuda.so.1`, `nvcuda.dll`).
pub const CUDA_DRIVER_LIBRARY: &str = crate::platform::CUDA_DRIVER_LIBRARY;
/// File name of the NVML library (`libnvidia-ml.so.1`, `nvml.dll`).
pub const NVML_LIBRARY: &str = crate::platform::NVML_LIBRARY;

/// One CUDA device as the driver API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// CUDA ordinal (after `CUDA_VISIBLE_DEVICES`): the `N` of `cuda:N`.
    pub index: u32,
    /// Product name, e.g. "NVIDIA H100 80GB HBM3"; "unknown NVIDIA GPU" if the driver did not say.
    pub name: String,
    /// The device's UUID (a MIG instance's own UUID in MIG mode), when the driver reports it.
    pub uuid: Option<[u8; 16]>,
    /// Total device memory in bytes (0 if the driver did not say).
    pub total_memory: u64,
    /// Compute capability, major part (e.g. 9 for an H100); 0 if unknown.
    pub compute_major: i32,
    /// Compute capability, minor part; 0 if unknown.
    pub compute_minor: i32,
}

impl GpuInfo {
    /// The UUID as NVML and `nvidia-smi -L` print it (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
    pub fn uuid_string(&self) -> Option<String> {
        self.uuid.as_ref().map(format_gpu_uuid)
    }
}

/// What the CUDA driver says about this machine, gathered once per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CudaFacts {
    /// No usable CUDA device: no driver library, a driver that failed to initialise, or no devices.
    NoDriver {
        /// Why, in words a person can act on (e.g. "no NVIDIA driver: libcuda.so.1 not found (...)").
        reason: String,
        /// The CUDA version the installed driver supports (`12040` = 12.4), when a driver library was
        /// found and answered; [`driver_version_string`] formats it.
        driver_version: Option<i32>,
    },
    /// A working driver with at least one visible device.
    Driver {
        /// The CUDA version the driver supports (`12040` = 12.4); 0 if it did not say.
        driver_version: i32,
        /// The visible devices, indexed by CUDA ordinal.
        devices: Vec<GpuInfo>,
    },
}

impl CudaFacts {
    /// The visible devices (empty for `NoDriver`).
    pub fn devices(&self) -> &[GpuInfo] {
        match self {
            CudaFacts::NoDriver { .. } => &[],
            CudaFacts::Driver { devices, .. } => devices,
        }
    }

    /// The CUDA version the driver supports, when known.
    pub fn driver_version(&self) -> Option<i32> {
        match self {
            CudaFacts::NoDriver { driver_version, .. } => *driver_version,
            CudaFacts::Driver { driver_version, .. } => Some(*driver_version).filter(|v| *v > 0),
        }
    }

    /// Why there is no usable device (`None` when there is one).
    pub fn reason(&self) -> Option<&str> {
        match self {
            CudaFacts::NoDriver { reason, .. } => Some(reason),
            CudaFacts::Driver { .. } => None,
        }
    }
}

/// The CUDA driver's facts: loaded and queried on the first call, then answered from a cache (the
/// visible devices cannot change after `cuInit`). Never panics; problems come back as
/// [`CudaFacts::NoDriver`]. On a machine with GPUs the first call pays for driver initialisation
/// (typically tens to hundreds of milliseconds; more when persistence mode is off).
pub fn cuda_facts() -> CudaFacts {
    facts().clone()
}

/// Free and total memory in bytes of CUDA device `index`, measured now through NVML (no CUDA context
/// is created). `None` when there is no such device, NVML is unavailable, or NVML has no device with
/// the same UUID.
pub fn gpu_free_memory(index: u32) -> Option<(u64, u64)> {
    let devices = facts().devices();
    let slot = usize::try_from(index).ok()?;
    devices.get(slot)?;
    let nvml = nvml().as_ref().ok()?;
    static HANDLES: OnceLock<Vec<Option<NvmlDevice>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| nvml_handles_for(&nvml.fns, devices));
    let handle = (*handles.get(slot)?)?;
    nvml_memory(&nvml.fns, handle)
}

/// The kernel driver's version as NVML reports it (e.g. "550.54.15"), when NVML is available.
pub fn nvml_driver_version() -> Option<String> {
    static VERSION: OnceLock<Option<String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let nvml = nvml().as_ref().ok()?;
            let mut buf = [0 as c_char; NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
            // SAFETY: the pointer was resolved from `nvmlSystemGetDriverVersion` with the signature of
            // nvml.h, and NVML stays loaded and initialised for the life of the process (the `nvml()`
            // static); `buf` is a live local writable for exactly the length passed, which NVML never
            // exceeds. `c_buf_to_string` stops at the buffer's end even if no NUL was written.
            let rc = unsafe {
                (nvml.fns.system_get_driver_version)(buf.as_mut_ptr(), buf.len() as c_uint)
            };
            (rc == NVML_SUCCESS)
                .then(|| c_buf_to_string(&buf))
                .filter(|s| !s.is_empty())
        })
        .clone()
}

/// Why NVML cannot be used (so free GPU memory must come from torch instead); `None` when it works.
pub fn nvml_error() -> Option<String> {
    nvml().as_ref().err().cloned()
}

/// A CUDA version number as people write it: `12040` → "12.4", `11080` → "11.8".
pub fn driver_version_string(version: i32) -> String {
    if version <= 0 {
        return "unknown".to_owned();
    }
    format!("{}.{}", version / 1000, (version % 1000) / 10)
}

/// The name of a driver API error code (`100` → "CUDA_ERROR_NO_DEVICE"), for the codes that device
/// discovery can return; `None` for others.
pub fn cuda_error_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "CUDA_SUCCESS",
        1 => "CUDA_ERROR_INVALID_VALUE",
        2 => "CUDA_ERROR_OUT_OF_MEMORY",
        3 => "CUDA_ERROR_NOT_INITIALIZED",
        4 => "CUDA_ERROR_DEINITIALIZED",
        34 => "CUDA_ERROR_STUB_LIBRARY",
        36 => "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER",
        46 => "CUDA_ERROR_DEVICE_UNAVAILABLE",
        100 => "CUDA_ERROR_NO_DEVICE",
        101 => "CUDA_ERROR_INVALID_DEVICE",
        102 => "CUDA_ERROR_DEVICE_NOT_LICENSED",
        201 => "CUDA_ERROR_INVALID_CONTEXT",
        304 => "CUDA_ERROR_OPERATING_SYSTEM",
        400 => "CUDA_ERROR_INVALID_HANDLE",
        500 => "CUDA_ERROR_NOT_FOUND",
        800 => "CUDA_ERROR_NOT_PERMITTED",
        801 => "CUDA_ERROR_NOT_SUPPORTED",
        802 => "CUDA_ERROR_SYSTEM_NOT_READY",
        803 => "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
        804 => "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
        805 => "CUDA_ERROR_MPS_CONNECTION_FAILED",
        999 => "CUDA_ERROR_UNKNOWN",
        _ => return None,
    })
}

/// Formats a UUID the way NVML and `nvidia-smi -L` do: `GPU-` and 8-4-4-4-12 lower-case hex digits.
pub fn format_gpu_uuid(uuid: &[u8; 16]) -> String {
    let mut out = String::with_capacity(40);
    out.push_str("GPU-");
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Parses an NVML UUID string (`GPU-…` or `MIG-…` followed by 32 hex digits with dashes) into its
/// 16 bytes. Old-style MIG names (`MIG-GPU-…/gi/ci`) and anything malformed give `None`.
pub fn parse_gpu_uuid(text: &str) -> Option<[u8; 16]> {
    let hex = text
        .trim()
        .strip_prefix("GPU-")
        .or_else(|| text.trim().strip_prefix("MIG-"))?;
    let bytes = hex.as_bytes();
    if bytes.len() != 36 || [8, 13, 18, 23].iter().any(|&i| bytes[i] != b'-') {
        return None;
    }
    let digits: Vec<u8> = bytes.iter().copied().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (slot, pair) in out.iter_mut().zip(digits.chunks(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// For each CUDA device (by its UUID), the position of the NVML device with the same UUID.
pub fn match_by_uuid(cuda: &[Option<[u8; 16]>], nvml: &[Option<[u8; 16]>]) -> Vec<Option<usize>> {
    cuda.iter()
        .map(|wanted| {
            let wanted = wanted.as_ref()?;
            nvml.iter().position(|have| have.as_ref() == Some(wanted))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The driver API
// ---------------------------------------------------------------------------------------------

/// The driver API entry points libsda uses, typed with the C signatures of `cuda.h` (declared in
/// `sda_driver_abi`).
#[derive(Clone, Copy)]
struct DriverFns {
    init: CuInitFn,
    driver_get_version: CuDriverGetVersionFn,
    device_get_count: CuDeviceGetCountFn,
    device_get: CuDeviceGetFn,
    device_get_name: CuDeviceGetNameFn,
    device_total_mem: CuDeviceTotalMemFn,
    device_get_attribute: CuDeviceGetAttributeFn,
    /// `cuDeviceGetUuid_v2` (MIG-aware, CUDA 11.4+) or the older `cuDeviceGetUuid`.
    device_get_uuid: Option<CuDeviceGetUuidFn>,
    get_error_name: Option<CuGetErrorNameFn>,
}

/// The loaded driver library; kept alive for the life of the process with the copied pointers.
struct Loaded<F> {
    _library: libloading::Library,
    fns: F,
}

/// Copies a function pointer out of a library.
///
/// # Safety
/// `T` must be the symbol's true C signature, and the pointer must not outlive `library`.
unsafe fn symbol<T: Copy>(library: &libloading::Library, name: &str) -> Result<T, String> {
    let c_name = format!("{name}\0");
    library
        .get::<T>(c_name.as_bytes())
        .map(|s| *s)
        .map_err(|e| format!("symbol {name} is missing ({e})"))
}

fn load_driver(file: &str) -> Result<Loaded<DriverFns>, String> {
    // SAFETY: loading runs the library's initialisers; libcuda's are designed to run at `dlopen` in any
    // process (every CUDA program loads it this way) and have no preconditions on the caller.
    let library = unsafe { libloading::Library::new(file) }
        .map_err(|e| format!("no NVIDIA driver: {file} not found ({e})"))?;
    let not_a_driver = |e: String| format!("{file} is not a usable CUDA driver: {e}");
    // SAFETY: each symbol is read with the type `sda_driver_abi` declares for it, which is the
    // signature of cuda.h (CUresult and CUdevice are int, CUuuid is 16 bytes; `cuDeviceGetUuid` and
    // `_v2` share one); `library` is stored beside the pointers in `Loaded` and never unloaded, so
    // no pointer outlives it.
    let fns = unsafe {
        DriverFns {
            init: symbol(&library, "cuInit").map_err(not_a_driver)?,
            driver_get_version: symbol(&library, "cuDriverGetVersion").map_err(not_a_driver)?,
            device_get_count: symbol(&library, "cuDeviceGetCount").map_err(not_a_driver)?,
            device_get: symbol(&library, "cuDeviceGet").map_err(not_a_driver)?,
            device_get_name: symbol(&library, "cuDeviceGetName").map_err(not_a_driver)?,
            device_total_mem: symbol(&library, "cuDeviceTotalMem_v2").map_err(not_a_driver)?,
            device_get_attribute: symbol(&library, "cuDeviceGetAttribute").map_err(not_a_driver)?,
            device_get_uuid: symbol(&library, "cuDeviceGetUuid_v2")
                .or_else(|_| symbol(&library, "cuDeviceGetUuid"))
                .ok(),
            get_error_name: symbol(&library, "cuGetErrorName").ok(),
        }
    };
    Ok(Loaded {
        _library: library,
        fns,
    })
}

/// The driver's facts, once asked for: the first ask loads the driver and calls `cuInit`.
static FACTS: OnceLock<CudaFacts> = OnceLock::new();

/// Whether this process has asked the CUDA driver already (loaded it and called `cuInit`, or found
/// none): from then on, variables the driver reads at initialisation (`CUDA_VISIBLE_DEVICES`, ...)
/// can no longer take effect.
pub fn initialized() -> bool {
    FACTS.get().is_some()
}

fn facts() -> &'static CudaFacts {
    FACTS.get_or_init(|| {
        if cfg!(target_os = "macos") {
            return CudaFacts::NoDriver {
                reason: "CUDA is not available on macOS".to_owned(),
                driver_version: None,
            };
        }
        match load_driver(CUDA_DRIVER_LIBRARY) {
            Ok(driver) => {
                // The library must stay loaded for the function pointers; it lives in the static.
                static DRIVER: OnceLock<Loaded<DriverFns>> = OnceLock::new();
                let driver = DRIVER.get_or_init(|| driver);
                let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
                query_driver(&driver.fns, visible.as_deref())
            }
            Err(reason) => CudaFacts::NoDriver {
                reason,
                driver_version: None,
            },
        }
    })
}

/// The name of a driver error code: our table, else the driver's own `cuGetErrorName`.
fn error_name(fns: &DriverFns, code: CuResult) -> String {
    if let Some(name) = cuda_error_name(code) {
        return name.to_owned();
    }
    if let Some(get_error_name) = fns.get_error_name {
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: `get_error_name` is libcuda's `cuGetErrorName` (resolved with its cuda.h signature,
        // library kept loaded) or a test double of the same type; the out-param is a live local
        // `*const c_char`, and any code may be passed (unknown ones return an error).
        let rc = unsafe { get_error_name(code, &mut name) };
        if rc == CUDA_SUCCESS && !name.is_null() {
            // SAFETY: on success cuGetErrorName points `name` at a static NUL-terminated string owned
            // by the driver, which stays loaded, so it is valid to read for the borrow's length.
            return unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned();
        }
    }
    "an unknown CUDA error".to_owned()
}

/// The human reason for a failed `cuInit`, with advice for the codes people actually meet.
fn init_failure_reason(
    code: i32,
    name: &str,
    driver_version: Option<i32>,
    cuda_visible_devices: Option<&str>,
) -> String {
    let mut reason = format!("cuInit failed with {name} ({code})");
    let hint = match code {
        CUDA_ERROR_NO_DEVICE => match cuda_visible_devices {
            Some(v) => format!(
                "CUDA_VISIBLE_DEVICES={v:?} hides every GPU, or the driver sees none (check \
                 nvidia-smi)"
            ),
            None => "the driver sees no CUDA-capable GPU (check nvidia-smi)".to_owned(),
        },
        34 => format!(
            "{CUDA_DRIVER_LIBRARY} is the CUDA toolkit's stub library, not the real driver (remove \
             the stubs directory from LD_LIBRARY_PATH)"
        ),
        46 => "every GPU is busy or in exclusive-process mode".to_owned(),
        304 | 999 => "the driver could not reach the GPU: is the nvidia kernel module loaded and \
                      /dev/nvidia* accessible (in a container: started with GPU access)?"
            .to_owned(),
        802 => "the system is not ready (on NVSwitch systems, is nvidia-fabricmanager running?)"
            .to_owned(),
        803 => format!(
            "{CUDA_DRIVER_LIBRARY} and the loaded kernel module are different versions (reboot after \
             a driver update)"
        ),
        804 => "the forward-compatibility driver package does not support this GPU".to_owned(),
        _ => String::new(),
    };
    if !hint.is_empty() {
        reason.push_str(": ");
        reason.push_str(&hint);
    }
    if let Some(v) = driver_version.filter(|v| *v > 0) {
        reason.push_str(&format!(
            " (installed driver supports CUDA {})",
            driver_version_string(v)
        ));
    }
    reason
}

/// Reads a C string out of a fixed buffer that the callee may not have terminated.
fn c_buf_to_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| u8::from_ne_bytes(c.to_ne_bytes()))
        .collect();
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

/// Asks the driver for its version and devices. Every out-param is initialised and every return code
/// checked: the driver writes nothing on error.
fn query_driver(fns: &DriverFns, cuda_visible_devices: Option<&str>) -> CudaFacts {
    // Every function in `fns` has the cuda.h signature of its entry point (`DriverFns` is built by
    // `load_driver`, whose library stays loaded, or from test doubles of the same types), so each
    // call below is sound when its out-params are live locals of the declared C types and its
    // buffers are writable for the lengths passed.
    let mut version: c_int = 0;
    // SAFETY: `version` is a live `int` local (cuDriverGetVersion needs no cuInit first).
    let driver_version = (unsafe { (fns.driver_get_version)(&mut version) } == CUDA_SUCCESS
        && version > 0)
        .then_some(version);

    // SAFETY: cuInit takes no pointer; 0 is the only flags value the driver accepts.
    let rc = unsafe { (fns.init)(0) };
    if rc != CUDA_SUCCESS {
        return CudaFacts::NoDriver {
            reason: init_failure_reason(
                rc,
                &error_name(fns, rc),
                driver_version,
                cuda_visible_devices,
            ),
            driver_version,
        };
    }

    let mut count: c_int = 0;
    // SAFETY: `count` is a live `int` local; cuInit has succeeded.
    let rc = unsafe { (fns.device_get_count)(&mut count) };
    if rc != CUDA_SUCCESS {
        return CudaFacts::NoDriver {
            reason: format!(
                "cuDeviceGetCount failed with {} ({rc})",
                error_name(fns, rc)
            ),
            driver_version,
        };
    }
    if count <= 0 {
        return CudaFacts::NoDriver {
            reason: "driver reports 0 devices".to_owned(),
            driver_version,
        };
    }

    let devices = (0..count)
        .map(|ordinal| {
            let mut info = GpuInfo {
                index: ordinal as u32,
                name: "unknown NVIDIA GPU".to_owned(),
                uuid: None,
                total_memory: 0,
                compute_major: 0,
                compute_minor: 0,
            };
            let mut dev: CuDevice = 0;
            // SAFETY: `dev` is a live `CUdevice` local; a bad ordinal is an error code, not UB.
            if unsafe { (fns.device_get)(&mut dev, ordinal) } != CUDA_SUCCESS {
                // Keep the slot so that indices stay CUDA ordinals.
                return info;
            }
            let mut name = [0 as c_char; 256];
            // SAFETY: `name` is a live 256-byte local and we pass 255, so whatever the driver writes
            // (at most `len` bytes) fits; `dev` came from a successful cuDeviceGet.
            if unsafe { (fns.device_get_name)(name.as_mut_ptr(), 255, dev) } == CUDA_SUCCESS {
                let text = c_buf_to_string(&name);
                if !text.is_empty() {
                    info.name = text;
                }
            }
            let mut bytes: usize = 0;
            // SAFETY: `bytes` is a live `size_t` local (usize); `dev` came from cuDeviceGet.
            if unsafe { (fns.device_total_mem)(&mut bytes, dev) } == CUDA_SUCCESS {
                info.total_memory = bytes as u64;
            }
            let mut value: c_int = 0;
            // SAFETY: `value` is a live `int` local, the attribute a valid CUdevice_attribute and
            // `dev` came from cuDeviceGet.
            if unsafe {
                (fns.device_get_attribute)(
                    &mut value,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    dev,
                )
            } == CUDA_SUCCESS
            {
                info.compute_major = value;
            }
            let mut value: c_int = 0;
            // SAFETY: as for the major part just above.
            if unsafe {
                (fns.device_get_attribute)(
                    &mut value,
                    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    dev,
                )
            } == CUDA_SUCCESS
            {
                info.compute_minor = value;
            }
            if let Some(get_uuid) = fns.device_get_uuid {
                let mut uuid = [0u8; 16];
                // SAFETY: `uuid` is a live 16-byte local, the size and layout of a CUuuid; `dev`
                // came from cuDeviceGet.
                if unsafe { get_uuid(&mut uuid, dev) } == CUDA_SUCCESS {
                    info.uuid = Some(uuid);
                }
            }
            info
        })
        .collect();

    CudaFacts::Driver {
        driver_version: driver_version.unwrap_or(0),
        devices,
    }
}

// ---------------------------------------------------------------------------------------------
// NVML
// ---------------------------------------------------------------------------------------------

/// An NVML device handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NvmlDevice(NvmlDeviceRaw);

// SAFETY: an NVML handle is an opaque, process-global pointer that stays valid until nvmlShutdown
// (never called); it belongs to no thread, and NVML's functions are thread-safe.
unsafe impl Send for NvmlDevice {}
// SAFETY: a shared `NvmlDevice` only hands out copies of the pointer, which libsda never dereferences
// (only NVML does, and NVML's functions may be called from any number of threads at once).
unsafe impl Sync for NvmlDevice {}

/// The NVML entry points libsda uses, typed with the C signatures of `nvml.h` (declared in
/// `sda_driver_abi`).
#[derive(Clone, Copy)]
struct NvmlFns {
    init: NvmlInitFn,
    device_get_count: NvmlDeviceGetCountFn,
    device_get_handle_by_index: NvmlDeviceGetHandleByIndexFn,
    device_get_uuid: NvmlDeviceGetUuidFn,
    device_get_memory_info: NvmlDeviceGetMemoryInfoFn,
    system_get_driver_version: NvmlSystemGetDriverVersionFn,
    /// Reaches MIG instances, which enumeration by index does not list.
    device_get_handle_by_uuid: Option<NvmlDeviceGetHandleByUuidFn>,
}

/// NVML's own `NVML_ERROR_*` names for the codes that initialisation can return.
fn nvml_error_name(code: NvmlReturn) -> String {
    match code {
        1 => "NVML_ERROR_UNINITIALIZED".to_owned(),
        3 => "NVML_ERROR_NOT_SUPPORTED".to_owned(),
        4 => "NVML_ERROR_NO_PERMISSION".to_owned(),
        9 => "NVML_ERROR_DRIVER_NOT_LOADED".to_owned(),
        12 => "NVML_ERROR_LIBRARY_NOT_FOUND".to_owned(),
        17 => "NVML_ERROR_OPERATING_SYSTEM".to_owned(),
        18 => "NVML_ERROR_LIB_RM_VERSION_MISMATCH".to_owned(),
        999 => "NVML_ERROR_UNKNOWN".to_owned(),
        other => format!("NVML error {other}"),
    }
}

fn load_nvml(file: &str) -> Result<Loaded<NvmlFns>, String> {
    // SAFETY: loading runs NVML's initialisers, which are designed to run at `dlopen` in any process
    // (nvidia-smi and every monitoring agent load it this way) and have no preconditions.
    let library = unsafe { libloading::Library::new(file) }
        .map_err(|e| format!("NVML unavailable: {file} not found ({e})"))?;
    let broken = |e: String| format!("NVML unavailable: {file}: {e}");
    // SAFETY: each symbol is read with the type `sda_driver_abi` declares for it, which is the
    // signature of nvml.h (nvmlReturn_t is an int enum, nvmlDevice_t an opaque pointer, nvmlMemory_t
    // three unsigned long longs); the library is kept in `Loaded` with the pointers, never unloaded.
    let fns = unsafe {
        NvmlFns {
            init: symbol(&library, "nvmlInit_v2").map_err(broken)?,
            device_get_count: symbol(&library, "nvmlDeviceGetCount_v2").map_err(broken)?,
            device_get_handle_by_index: symbol(&library, "nvmlDeviceGetHandleByIndex_v2")
                .map_err(broken)?,
            device_get_uuid: symbol(&library, "nvmlDeviceGetUUID").map_err(broken)?,
            device_get_memory_info: symbol(&library, "nvmlDeviceGetMemoryInfo").map_err(broken)?,
            system_get_driver_version: symbol(&library, "nvmlSystemGetDriverVersion")
                .map_err(broken)?,
            device_get_handle_by_uuid: symbol(&library, "nvmlDeviceGetHandleByUUID").ok(),
        }
    };
    // SAFETY: `init` is nvmlInit_v2, just resolved with its nvml.h type from the still-loaded
    // `library`; it takes no arguments and may be called from any thread.
    let rc = unsafe { (fns.init)() };
    if rc != NVML_SUCCESS {
        return Err(format!(
            "NVML unavailable: nvmlInit_v2 failed with {} ({rc})",
            nvml_error_name(rc)
        ));
    }
    Ok(Loaded {
        _library: library,
        fns,
    })
}

/// NVML, loaded and initialised once (never shut down, so handles stay valid).
fn nvml() -> &'static Result<Loaded<NvmlFns>, String> {
    static NVML: OnceLock<Result<Loaded<NvmlFns>, String>> = OnceLock::new();
    NVML.get_or_init(|| {
        if facts().devices().is_empty() {
            // Without a CUDA device there is nothing to ask NVML about; do not load it.
            return Err("NVML not loaded: there is no CUDA device".to_owned());
        }
        load_nvml(NVML_LIBRARY)
    })
}

/// The NVML handle for each CUDA device, matched by UUID (NVML counts in PCI order and ignores
/// `CUDA_VISIBLE_DEVICES`). MIG instances, which enumeration does not list, are looked up by UUID.
fn nvml_handles_for(fns: &NvmlFns, devices: &[GpuInfo]) -> Vec<Option<NvmlDevice>> {
    // Every function in `fns` has the nvml.h signature of its entry point (`NvmlFns` is built by
    // `load_nvml` after a successful nvmlInit_v2, its library kept loaded, or from test doubles of
    // the same types).
    let mut count: c_uint = 0;
    // SAFETY: `count` is a live `unsigned int` local.
    if unsafe { (fns.device_get_count)(&mut count) } != NVML_SUCCESS {
        count = 0;
    }
    let mut handles = Vec::new();
    let mut uuids = Vec::new();
    for i in 0..count {
        let mut raw: NvmlDeviceRaw = std::ptr::null_mut();
        // SAFETY: `raw` is a live `nvmlDevice_t` local; `i` is below the count NVML reported (an
        // out-of-range index would be an error code anyway).
        if unsafe { (fns.device_get_handle_by_index)(i, &mut raw) } != NVML_SUCCESS || raw.is_null()
        {
            continue;
        }
        let mut buf = [0 as c_char; NVML_DEVICE_UUID_V2_BUFFER_SIZE];
        // SAFETY: `raw` is a non-null handle NVML just returned (valid until nvmlShutdown, never
        // called); `buf` is a live local writable for exactly the length passed.
        let uuid = (unsafe { (fns.device_get_uuid)(raw, buf.as_mut_ptr(), buf.len() as c_uint) }
            == NVML_SUCCESS)
            .then(|| parse_gpu_uuid(&c_buf_to_string(&buf)))
            .flatten();
        handles.push(NvmlDevice(raw));
        uuids.push(uuid);
    }
    let cuda_uuids: Vec<Option<[u8; 16]>> = devices.iter().map(|d| d.uuid).collect();
    match_by_uuid(&cuda_uuids, &uuids)
        .into_iter()
        .zip(devices)
        .map(|(found, device)| match found {
            Some(i) => Some(handles[i]),
            None => nvml_handle_by_uuid(fns, device.uuid.as_ref()?),
        })
        .collect()
}

fn nvml_handle_by_uuid(fns: &NvmlFns, uuid: &[u8; 16]) -> Option<NvmlDevice> {
    let by_uuid = fns.device_get_handle_by_uuid?;
    let gpu = format_gpu_uuid(uuid);
    let hex = gpu.strip_prefix("GPU-").unwrap_or(&gpu);
    for name in [format!("MIG-{hex}\0"), format!("{gpu}\0")] {
        let mut raw: NvmlDeviceRaw = std::ptr::null_mut();
        // SAFETY: `by_uuid` is nvmlDeviceGetHandleByUUID with its nvml.h type (library kept loaded);
        // `name` is a live, NUL-terminated ASCII string and `raw` a live `nvmlDevice_t` local.
        if unsafe { by_uuid(name.as_ptr().cast(), &mut raw) } == NVML_SUCCESS && !raw.is_null() {
            return Some(NvmlDevice(raw));
        }
    }
    None
}

fn nvml_memory(fns: &NvmlFns, device: NvmlDevice) -> Option<(u64, u64)> {
    let mut memory = NvmlMemory::default();
    // SAFETY: `device` is a handle NVML returned (valid until nvmlShutdown, never called) and
    // `memory` a live `NvmlMemory`, laid out as nvmlMemory_t (sda_driver_abi declares and checks
    // it); the function has its nvml.h type (see `NvmlFns`).
    let rc = unsafe { (fns.device_get_memory_info)(device.0, &mut memory) };
    (rc == NVML_SUCCESS && memory.total > 0).then_some((memory.free, memory.total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sda_driver_abi::fakes::{self, FakeGpu, FakeMachine};

    #[test]
    fn versions_format_as_people_write_them() {
        assert_eq!(driver_version_string(12040), "12.4");
        assert_eq!(driver_version_string(12000), "12.0");
        assert_eq!(driver_version_string(11080), "11.8");
        assert_eq!(driver_version_string(13010), "13.1");
        assert_eq!(driver_version_string(0), "unknown");
        assert_eq!(driver_version_string(-5), "unknown");
    }

    #[test]
    fn error_codes_have_names() {
        assert_eq!(cuda_error_name(100), Some("CUDA_ERROR_NO_DEVICE"));
        assert_eq!(cuda_error_name(999), Some("CUDA_ERROR_UNKNOWN"));
        assert_eq!(
            cuda_error_name(803),
            Some("CUDA_ERROR_SYSTEM_DRIVER_MISMATCH")
        );
        assert_eq!(cuda_error_name(12345), None);
        assert_eq!(nvml_error_name(9), "NVML_ERROR_DRIVER_NOT_LOADED");
        assert_eq!(nvml_error_name(77), "NVML error 77");
    }

    #[test]
    fn init_failures_read_as_advice() {
        let r = init_failure_reason(100, "CUDA_ERROR_NO_DEVICE", Some(12040), None);
        assert!(
            r.starts_with("cuInit failed with CUDA_ERROR_NO_DEVICE (100)"),
            "{r}"
        );
        assert!(r.contains("CUDA 12.4"), "{r}");
        let r = init_failure_reason(100, "CUDA_ERROR_NO_DEVICE", None, Some(""));
        assert!(r.contains("CUDA_VISIBLE_DEVICES=\"\""), "{r}");
        let r = init_failure_reason(34, "CUDA_ERROR_STUB_LIBRARY", None, None);
        assert!(r.contains("stub"), "{r}");
        let r = init_failure_reason(803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH", None, None);
        assert!(r.contains("reboot"), "{r}");
        let r = init_failure_reason(7, "X", None, None);
        assert_eq!(r, "cuInit failed with X (7)");
    }

    #[test]
    fn uuids_format_and_parse_like_nvml() {
        let bytes: [u8; 16] = [
            0x7a, 0x6d, 0x9b, 0x3c, 0x01, 0x22, 0xfe, 0x10, 0xab, 0xcd, 0x00, 0x11, 0x22, 0x33,
            0x44, 0x55,
        ];
        let text = format_gpu_uuid(&bytes);
        assert_eq!(text, "GPU-7a6d9b3c-0122-fe10-abcd-001122334455");
        assert_eq!(parse_gpu_uuid(&text), Some(bytes));
        assert_eq!(
            parse_gpu_uuid("GPU-7A6D9B3C-0122-FE10-ABCD-001122334455"),
            Some(bytes)
        );
        assert_eq!(
            parse_gpu_uuid("MIG-7a6d9b3c-0122-fe10-abcd-001122334455"),
            Some(bytes)
        );
        for bad in [
            "",
            "GPU-",
            "7a6d9b3c-0122-fe10-abcd-001122334455",
            "GPU-7a6d9b3c-0122-fe10-abcd-00112233445",
            "GPU-7a6d9b3c-0122-fe10-abcd-0011223344zz",
            "MIG-GPU-7a6d9b3c-0122-fe10-abcd-001122334455/1/0",
            "GPU-7a6d9b3c0122fe10abcd001122334455",
        ] {
            assert_eq!(parse_gpu_uuid(bad), None, "{bad:?}");
        }
        let info = GpuInfo {
            index: 0,
            name: "x".into(),
            uuid: Some(bytes),
            total_memory: 1,
            compute_major: 9,
            compute_minor: 0,
        };
        assert_eq!(info.uuid_string().as_deref(), Some(text.as_str()));
    }

    #[test]
    fn driver_devices_match_nvml_devices_by_uuid() {
        let a = Some([1u8; 16]);
        let b = Some([2u8; 16]);
        let c = Some([3u8; 16]);
        // CUDA_VISIBLE_DEVICES=2,0 over three GPUs listed by NVML in PCI order a, b, c.
        assert_eq!(match_by_uuid(&[c, a], &[a, b, c]), vec![Some(2), Some(0)]);
        assert_eq!(
            match_by_uuid(&[None, b], &[a, None, b]),
            vec![None, Some(2)]
        );
        assert_eq!(match_by_uuid(&[a], &[]), vec![None]);
    }

    // A fake driver and NVML (sda_driver_abi's test doubles, programmed per test thread), to run the
    // code paths that need hardware.

    fn fake_driver() -> DriverFns {
        DriverFns {
            init: fakes::fake_cu_init,
            driver_get_version: fakes::fake_cu_driver_get_version,
            device_get_count: fakes::fake_cu_device_get_count,
            device_get: fakes::fake_cu_device_get,
            device_get_name: fakes::fake_cu_device_get_name,
            device_total_mem: fakes::fake_cu_device_total_mem,
            device_get_attribute: fakes::fake_cu_device_get_attribute,
            device_get_uuid: Some(fakes::fake_cu_device_get_uuid),
            get_error_name: None,
        }
    }

    fn fake_nvml() -> NvmlFns {
        NvmlFns {
            init: fakes::fake_nvml_init,
            device_get_count: fakes::fake_nvml_device_get_count,
            device_get_handle_by_index: fakes::fake_nvml_device_get_handle_by_index,
            device_get_uuid: fakes::fake_nvml_device_get_uuid,
            device_get_memory_info: fakes::fake_nvml_device_get_memory_info,
            system_get_driver_version: fakes::fake_nvml_system_get_driver_version,
            device_get_handle_by_uuid: None,
        }
    }

    fn three_gpus() -> Vec<FakeGpu> {
        (0..3u8)
            .map(|i| FakeGpu {
                name: ["NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3", "Tesla T4"][i as usize],
                memory: [40usize << 30, 80 << 30, 16 << 30][i as usize],
                cc: [(8, 0), (9, 0), (7, 5)][i as usize],
                uuid: [i + 1; 16],
                nvml_free: [10u64 << 30, 70 << 30, 1 << 30][i as usize],
            })
            .collect()
    }

    #[test]
    fn fake_driver_reports_visible_devices_in_cuda_order() {
        fakes::install(FakeMachine {
            version: 12040,
            gpus: three_gpus(),
            visible: vec![2, 0],
            ..FakeMachine::default()
        });
        let facts = query_driver(&fake_driver(), Some("2,0"));
        assert_eq!(facts.driver_version(), Some(12040));
        assert_eq!(facts.reason(), None);
        let devices = facts.devices();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].index, 0);
        assert_eq!(devices[0].name, "Tesla T4");
        assert_eq!((devices[0].compute_major, devices[0].compute_minor), (7, 5));
        assert_eq!(devices[0].total_memory, 16 << 30);
        assert_eq!(devices[0].uuid, Some([3; 16]));
        assert_eq!(devices[1].index, 1);
        assert_eq!(devices[1].name, "NVIDIA A100-SXM4-40GB");

        // NVML lists all three in PCI order; each CUDA device finds its own by UUID.
        let nvml = fake_nvml();
        let handles = nvml_handles_for(&nvml, devices);
        assert_eq!(handles.len(), 2);
        assert_eq!(
            nvml_memory(&nvml, handles[0].unwrap()),
            Some((1 << 30, 16 << 30))
        );
        assert_eq!(
            nvml_memory(&nvml, handles[1].unwrap()),
            Some((10 << 30, 40 << 30))
        );
    }

    #[test]
    fn fake_driver_failures_become_reasons() {
        fakes::install(FakeMachine {
            version: 12040,
            init_rc: 100,
            gpus: three_gpus(),
            visible: vec![0],
            ..FakeMachine::default()
        });
        let facts = query_driver(&fake_driver(), Some("-1"));
        let reason = facts.reason().unwrap();
        assert!(
            reason.starts_with("cuInit failed with CUDA_ERROR_NO_DEVICE (100)"),
            "{reason}"
        );
        assert!(reason.contains("CUDA_VISIBLE_DEVICES=\"-1\""), "{reason}");
        assert_eq!(facts.driver_version(), Some(12040));
        assert!(facts.devices().is_empty());

        fakes::update(|f| f.init_rc = 4242);
        let facts = query_driver(&fake_driver(), None);
        assert_eq!(
            facts.reason(),
            Some("cuInit failed with an unknown CUDA error (4242) (installed driver supports CUDA 12.4)")
        );

        fakes::update(|f| {
            f.init_rc = 0;
            f.visible.clear();
        });
        let facts = query_driver(&fake_driver(), None);
        assert_eq!(facts.reason(), Some("driver reports 0 devices"));
    }

    #[test]
    fn fake_driver_partial_answers_keep_indices() {
        fakes::install(FakeMachine {
            version: 0,
            gpus: three_gpus(),
            visible: vec![1, 7, 0],
            broken_name: true,
            ..FakeMachine::default()
        });
        let facts = query_driver(&fake_driver(), None);
        assert_eq!(facts.driver_version(), None);
        let d = facts.devices();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].name, "unknown NVIDIA GPU");
        assert_eq!(d[0].total_memory, 80 << 30);
        // Ordinal 1 points at a GPU that does not exist: the slot is kept, with unknowns.
        assert_eq!(d[1].index, 1);
        assert_eq!(d[1].uuid, None);
        assert_eq!(d[1].total_memory, 0);
        assert_eq!(d[2].uuid, Some([1; 16]));
        let nvml = fake_nvml();
        let handles = nvml_handles_for(&nvml, d);
        assert!(handles[0].is_some() && handles[1].is_none() && handles[2].is_some());
    }

    #[test]
    fn a_missing_library_or_symbol_is_a_reason_not_a_panic() {
        let err = load_driver("libsda-test-no-such-driver.so.1")
            .err()
            .unwrap();
        assert!(
            err.starts_with("no NVIDIA driver: libsda-test-no-such-driver.so.1 not found ("),
            "{err}"
        );
        // A library that exists but is no driver: glibc's, where there is one.
        if crate::platform::OS == crate::platform::Os::Linux {
            let err = load_driver("libc.so.6").err().unwrap();
            assert!(err.contains("not a usable CUDA driver"), "{err}");
            assert!(err.contains("cuInit"), "{err}");
            let err = load_nvml("libc.so.6").err().unwrap();
            assert!(err.contains("nvmlInit_v2"), "{err}");
        }
    }

    fn loadable(name: &str) -> bool {
        // SAFETY: only used on driver libraries, whose initialisers are benign.
        unsafe { libloading::Library::new(name) }.is_ok()
    }

    #[test]
    fn cuda_facts_agree_with_this_machine() {
        let facts = cuda_facts();
        assert_eq!(facts, cuda_facts());
        if !loadable(CUDA_DRIVER_LIBRARY) {
            // This machine has no NVIDIA driver.
            let reason = facts.reason().expect("no driver means NoDriver");
            assert!(reason.contains(CUDA_DRIVER_LIBRARY), "{reason}");
            assert!(reason.starts_with("no NVIDIA driver"), "{reason}");
            assert!(facts.devices().is_empty());
            assert_eq!(gpu_free_memory(0), None);
            assert!(nvml_error().is_some());
            assert_eq!(nvml_driver_version(), None);
        }
        for (i, d) in facts.devices().iter().enumerate() {
            assert_eq!(d.index as usize, i);
            assert!(d.total_memory > 0 && d.compute_major > 0, "{d:?}");
            if let Some((free, total)) = gpu_free_memory(d.index) {
                assert!(free <= total && total > 0);
            }
        }
        assert_eq!(gpu_free_memory(u32::MAX), None);
    }

    /// Run in a child process (see the next test) so that nothing else in the test binary can have
    /// loaded libtorch into the same address space.
    #[test]
    fn child_cuda_facts_map_no_libtorch() {
        if std::env::var_os("SDA_TEST_CUDA_DRIVER_CHILD").is_none() {
            return;
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps.contains("libtorch"),
            "libtorch mapped before the call"
        );
        let _ = cuda_facts();
        let _ = gpu_free_memory(0);
        let _ = nvml_driver_version();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(!maps.contains("libtorch"), "cuda_facts() mapped libtorch");
        assert!(!maps.contains("libc10"), "cuda_facts() mapped libc10");
    }

    #[test]
    fn cuda_facts_loads_no_libtorch() {
        if !crate::platform::HAS_PROC_FS {
            return; // the child reads /proc/self/maps
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "cuda_driver::tests::child_cuda_facts_map_no_libtorch",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("SDA_TEST_CUDA_DRIVER_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }
}
