//! Device selection (preference, priority list, smoke test, fallback) and device descriptions.
//!
//! Selection sees the machine through the [`Machine`] trait: [`SystemMachine`] asks the CUDA driver and
//! the torch backend, and tests inject machines with GPUs this computer does not have. Knowing that there
//! is no GPU never loads libtorch; only smoke-testing a GPU that exists does.

use crate::backend;
use crate::cuda_driver;
use crate::error::{Error, ErrorKind, Result};
use crate::host;
use crate::log;
use crate::preference::{DeviceKind, Preference};

/// A CUDA device as the driver reports it, before any torch work.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaDevice {
    /// Ordinal as CUDA (and torch) number it, after `CUDA_VISIBLE_DEVICES`.
    pub index: u32,
    /// Marketing name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Total memory in bytes.
    pub total_memory: u64,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
}

/// Whether CUDA devices exist, answered without libtorch.
#[derive(Clone, Debug, PartialEq)]
pub enum CudaPresence {
    /// No usable driver or no device; the text says why (for fallback reasons and reports).
    Absent(String),
    /// The driver works and lists these devices (never empty).
    Present {
        /// Driver version as `major.minor`.
        driver_version: String,
        /// The visible devices, in ordinal order.
        devices: Vec<CudaDevice>,
    },
}

/// The machine as device selection sees it. Implemented by [`SystemMachine`] for real hardware and by
/// test machines that inject GPUs which do not exist here.
pub trait Machine: Send + Sync {
    /// CUDA devices according to the driver (no libtorch).
    fn cuda(&self) -> CudaPresence;
    /// `Ok` when an MPS device exists, else why not.
    fn mps(&self) -> std::result::Result<(), String>;
    /// Prepares a non-CPU device for use (loads what it needs, applies the allocator's memory
    /// fraction before the first allocation) and runs the smoke test on it.
    fn prepare_and_smoke_test(
        &self,
        kind: DeviceKind,
        index: u32,
        memory_fraction: f64,
    ) -> Result<()>;
    /// Free and total bytes of a CUDA device right now, if known.
    fn cuda_memory(&self, index: u32) -> Option<(u64, u64)>;
    /// CUDA runtime version that torch was built with, when torch is loaded and is a CUDA build.
    fn cuda_runtime_version(&self) -> Option<String>;
}

/// The real machine: the CUDA driver by `dlopen`, and the torch backend module for smoke tests.
pub struct SystemMachine {
    backend_path: String,
    libtorch: String,
}

impl SystemMachine {
    /// A machine whose backend module is looked for with `backend_path` (the config's
    /// `hardware.backend`; empty = the default places).
    pub fn new(backend_path: &str) -> SystemMachine {
        SystemMachine {
            backend_path: backend_path.to_string(),
            libtorch: String::new(),
        }
    }

    /// The same machine with the backend's libtorch looked for with `libtorch` (the config's
    /// `hardware.libtorch`; empty = found at run time, see [`crate::libtorch_discovery`]).
    pub fn with_libtorch(mut self, libtorch: &str) -> SystemMachine {
        self.libtorch = libtorch.to_string();
        self
    }

    fn backend(&self) -> Result<&'static backend::Backend> {
        backend::load_with(&self.backend_path, &self.libtorch)
    }
}

impl Machine for SystemMachine {
    fn cuda(&self) -> CudaPresence {
        match cuda_driver::cuda_facts() {
            cuda_driver::CudaFacts::NoDriver { reason, .. } => CudaPresence::Absent(reason),
            cuda_driver::CudaFacts::Driver {
                driver_version,
                devices,
            } => {
                if devices.is_empty() {
                    return CudaPresence::Absent(
                        "the NVIDIA driver reports no CUDA devices".to_string(),
                    );
                }
                CudaPresence::Present {
                    driver_version: cuda_driver::driver_version_string(driver_version),
                    devices: devices
                        .into_iter()
                        .map(|d| CudaDevice {
                            index: d.index,
                            name: d.name,
                            total_memory: d.total_memory,
                            compute_capability: (d.compute_major, d.compute_minor),
                        })
                        .collect(),
                }
            }
        }
    }

    fn mps(&self) -> std::result::Result<(), String> {
        if !cfg!(target_os = "macos") {
            return Err("MPS exists only on Apple silicon Macs".to_string());
        }
        let backend = self.backend().map_err(|e| e.to_string())?;
        match backend.facts() {
            Ok(f) if f.mps_available != 0 => Ok(()),
            Ok(_) => Err("libtorch reports no usable MPS device".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn prepare_and_smoke_test(
        &self,
        kind: DeviceKind,
        index: u32,
        memory_fraction: f64,
    ) -> Result<()> {
        let backend = self.backend()?;
        if kind == DeviceKind::Cuda {
            backend.ensure_cuda()?;
        }
        // The fraction goes in before the smoke test's tensors: the smoke test is the first CUDA
        // allocation of a selection, and libtorch checks per_process_memory_fraction exactly only
        // for memory allocated after it is set.
        if kind != DeviceKind::Cpu {
            match backend.set_memory_fraction(kind, index, memory_fraction) {
                Err(e) if e.kind() != ErrorKind::Unsupported => return Err(e),
                _ => {}
            }
        }
        backend.smoke_test(kind, index)
    }

    fn cuda_memory(&self, index: u32) -> Option<(u64, u64)> {
        cuda_driver::gpu_free_memory(index)
    }

    fn cuda_runtime_version(&self) -> Option<String> {
        backend::loaded().and_then(|b| b.info().libtorch_cuda_version.clone())
    }
}

/// How `auto` walks the devices and what a failure means.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectionPolicy {
    /// Kinds `auto` tries, in order (the config's `hardware.platform_priority`).
    pub priority: Vec<DeviceKind>,
    /// `true`: a missing or broken requested device is an error instead of a CPU fallback.
    pub strict: bool,
    /// Share of device memory the allocator may use, applied before the smoke test allocates.
    pub memory_fraction: f64,
}

/// The launcher's rank hint: `LOCAL_RANK` (torchrun) or `SLURM_LOCALID` (SLURM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchEnv {
    /// The local rank, when a launcher set one.
    pub local_rank: Option<u32>,
    /// Which variable it came from, for messages.
    pub source: Option<&'static str>,
}

impl LaunchEnv {
    /// Reads `LOCAL_RANK`, then `SLURM_LOCALID`, through `lookup` (the process environment in
    /// production, a map in tests). A value that is not a number is an error naming the variable.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
        for var in ["LOCAL_RANK", "SLURM_LOCALID"] {
            if let Some(value) = lookup(var).filter(|v| !v.trim().is_empty()) {
                let rank = value.trim().parse::<u32>().map_err(|_| {
                    Error::invalid_argument(format!(
                        "{var}={value:?} is not a non-negative integer; fix or unset it"
                    ))
                })?;
                return Ok(LaunchEnv {
                    local_rank: Some(rank),
                    source: Some(var),
                });
            }
        }
        Ok(LaunchEnv::default())
    }

    /// Reads the real process environment.
    pub fn from_process() -> Result<LaunchEnv> {
        LaunchEnv::from_lookup(&|k| std::env::var(k).ok())
    }
}

/// The outcome of a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The chosen kind.
    pub kind: DeviceKind,
    /// The chosen index (0 on CPU and MPS).
    pub index: u32,
    /// `true` when the request could not be honoured and the CPU was chosen instead.
    pub fell_back: bool,
    /// Why the selection fell back (empty when it did not).
    pub reason: String,
    /// The preference as it was understood (`auto`, `cuda:1`, ...).
    pub requested: String,
}

impl Selection {
    /// The device as torch spells it: `cpu`, `cuda:0`, `mps`.
    pub fn device_string(&self) -> String {
        device_string(self.kind, self.index)
    }
}

/// `cpu`, `cuda:N` or `mps`.
pub fn device_string(kind: DeviceKind, index: u32) -> String {
    match kind {
        DeviceKind::Cuda => format!("cuda:{index}"),
        other => other.as_str().to_string(),
    }
}

/// Why one candidate was not taken.
enum Rejection {
    /// The device does not exist here: `auto` moves on silently.
    Missing(String),
    /// The device exists but failed: always reported.
    Broken(String),
}

/// Chooses a device for `preference` under `policy`.
///
/// Explicit kinds that are missing or broken fall back to the CPU with `fell_back` and a reason (and a
/// warning to the log), or fail with [`ErrorKind::DeviceUnavailable`] when `policy.strict`. `auto`
/// takes the first kind of the priority list that exists and passes its smoke test; when a device
/// existed but failed, its fall back to the CPU is reported (warning, `fell_back`, reason) and refused
/// under `policy.strict` just the same. A CUDA index beyond the devices that exist is an error, never a
/// silent CPU.
pub fn select(
    preference: Preference,
    policy: &SelectionPolicy,
    launch: &LaunchEnv,
    machine: &dyn Machine,
) -> Result<Selection> {
    let requested = preference.to_string();
    let cpu = |fell_back: bool, reason: String| Selection {
        kind: DeviceKind::Cpu,
        index: 0,
        fell_back,
        reason,
        requested: requested.clone(),
    };
    let kinds: Vec<DeviceKind> = match preference {
        Preference::Auto => policy.priority.clone(),
        Preference::Device { kind, .. } => vec![kind],
    };
    let explicit_index = match preference {
        Preference::Device { index, .. } => index,
        Preference::Auto => None,
    };
    let mut problems: Vec<String> = Vec::new();
    for kind in kinds {
        let attempt = match kind {
            DeviceKind::Cpu if problems.is_empty() => return Ok(cpu(false, String::new())),
            // A device of the list existed but failed: reaching the CPU is a fallback, reported
            // (and refused under `strict`) exactly as for an explicit request.
            DeviceKind::Cpu => break,
            DeviceKind::Cuda => try_cuda(explicit_index, policy, launch, machine)?,
            DeviceKind::Mps => try_mps(policy, machine),
        };
        match attempt {
            Ok(index) => {
                return Ok(Selection {
                    kind,
                    index,
                    fell_back: false,
                    reason: String::new(),
                    requested,
                })
            }
            Err(Rejection::Missing(why)) if preference == Preference::Auto => {
                log::emit(log::Level::Debug, &format!("auto: skipping {kind}: {why}"));
            }
            Err(Rejection::Missing(why)) | Err(Rejection::Broken(why)) => problems.push(why),
        }
    }
    let reason = if problems.is_empty() {
        format!(
            "no device of the priority list ({}) is usable",
            policy
                .priority
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        problems.join("; ")
    };
    if policy.strict {
        return Err(Error::device_unavailable(format!(
            "device {requested} is unavailable and hardware.strict is set: {reason}"
        )));
    }
    let reason = format!("{requested} unavailable, using cpu: {reason}");
    log::warn(&reason);
    Ok(cpu(true, reason))
}

fn try_cuda(
    explicit_index: Option<u32>,
    policy: &SelectionPolicy,
    launch: &LaunchEnv,
    machine: &dyn Machine,
) -> Result<std::result::Result<u32, Rejection>> {
    let devices = match machine.cuda() {
        CudaPresence::Absent(why) => return Ok(Err(Rejection::Missing(why))),
        CudaPresence::Present { devices, .. } => devices,
    };
    let count = devices.len() as u32;
    let (index, origin) = match (explicit_index, launch.local_rank) {
        (Some(i), _) => (i, format!("cuda:{i}")),
        (None, Some(rank)) => (
            rank,
            format!("{}={rank}", launch.source.unwrap_or("LOCAL_RANK")),
        ),
        (None, None) => (0, "cuda".to_string()),
    };
    if index >= count {
        return Err(Error::invalid_argument(format!(
            "{origin} asks for CUDA device {index}, but this machine has {count} visible CUDA \
             device{} (cuda:0{}); check the index or CUDA_VISIBLE_DEVICES",
            if count == 1 { "" } else { "s" },
            if count > 1 {
                format!("..cuda:{}", count - 1)
            } else {
                String::new()
            }
        )));
    }
    let name = &devices[index as usize].name;
    Ok(
        match machine.prepare_and_smoke_test(DeviceKind::Cuda, index, policy.memory_fraction) {
            Ok(()) => Ok(index),
            Err(e) => Err(Rejection::Broken(format!(
                "cuda:{index} ({name}) failed its smoke test: {e}"
            ))),
        },
    )
}

fn try_mps(policy: &SelectionPolicy, machine: &dyn Machine) -> std::result::Result<u32, Rejection> {
    machine.mps().map_err(Rejection::Missing)?;
    machine
        .prepare_and_smoke_test(DeviceKind::Mps, 0, policy.memory_fraction)
        .map_err(|e| Rejection::Broken(format!("mps failed its smoke test: {e}")))?;
    Ok(0)
}

/// A description of one device. Static facts are cached by the caller; `memory_free` must be
/// refreshed with [`refresh_free_memory`] before it is handed out.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Kind.
    pub kind: DeviceKind,
    /// Index within the kind.
    pub index: u32,
    /// Torch spelling (`cpu`, `cuda:0`, `mps`).
    pub device: String,
    /// Device name (the CPU brand string on CPU).
    pub name: String,
    /// Total memory in bytes (RAM, or the cgroup limit when lower, on CPU).
    pub memory_total: u64,
    /// Free memory in bytes, fresh on every call.
    pub memory_free: u64,
    /// Compute capability on CUDA.
    pub compute_capability: Option<(i32, i32)>,
    /// CUDA runtime version torch was built with (`13.0`), once torch is loaded on a CUDA device.
    pub cuda_runtime_version: Option<String>,
    /// CUDA driver version (`12.4`).
    pub cuda_driver_version: Option<String>,
    /// Native bfloat16 arithmetic.
    pub bf16_supported: bool,
    /// Native float16 arithmetic.
    pub fp16_supported: bool,
    /// Number of devices of this kind.
    pub device_count: u32,
}

/// Describes a device (static facts; free memory filled in too). No libtorch is loaded by this.
pub fn describe(kind: DeviceKind, index: u32, machine: &dyn Machine) -> Result<DeviceInfo> {
    let host = host::static_facts();
    let mut info = DeviceInfo {
        kind,
        index,
        device: device_string(kind, index),
        name: String::new(),
        memory_total: 0,
        memory_free: 0,
        compute_capability: None,
        cuda_runtime_version: None,
        cuda_driver_version: None,
        bf16_supported: false,
        fp16_supported: false,
        device_count: 1,
    };
    match kind {
        DeviceKind::Cpu => {
            info.name = host.cpu_brand.clone();
            info.bf16_supported = host.bf16_native;
            info.fp16_supported = host.fp16_native;
        }
        DeviceKind::Mps => {
            info.name = "Apple silicon GPU (MPS)".to_string();
            // Apple GPUs from M1 on compute in both formats natively (bf16 from macOS 14).
            info.bf16_supported = true;
            info.fp16_supported = true;
        }
        DeviceKind::Cuda => {
            let CudaPresence::Present {
                driver_version,
                devices,
            } = machine.cuda()
            else {
                return Err(Error::invalid_argument(format!(
                    "cuda:{index} cannot be described: no CUDA device is present"
                )));
            };
            let dev = devices.get(index as usize).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "cuda:{index} does not exist ({} CUDA devices)",
                    devices.len()
                ))
            })?;
            info.name = dev.name.clone();
            info.memory_total = dev.total_memory;
            info.compute_capability = Some(dev.compute_capability);
            info.cuda_driver_version = Some(driver_version);
            info.cuda_runtime_version = machine.cuda_runtime_version();
            // fp16 arithmetic from Pascal (6.0), bf16 from Ampere (8.0).
            info.fp16_supported = dev.compute_capability >= (6, 0);
            info.bf16_supported = dev.compute_capability >= (8, 0);
            info.device_count = devices.len() as u32;
        }
    }
    refresh_free_memory(&mut info, machine);
    Ok(info)
}

/// Refreshes the figures that change: free memory (and, on CPU and MPS, total memory, which follows
/// the cgroup limit).
pub fn refresh_free_memory(info: &mut DeviceInfo, machine: &dyn Machine) {
    match info.kind {
        DeviceKind::Cpu | DeviceKind::Mps => {
            let now = host::memory_now();
            info.memory_total = now.total;
            info.memory_free = now.available;
        }
        DeviceKind::Cuda => {
            if let Some((free, total)) = machine.cuda_memory(info.index) {
                info.memory_free = free;
                if total > 0 {
                    info.memory_total = total;
                }
            }
        }
    }
}

/// Every device of this machine: the CPU, then each CUDA device, then MPS where it exists. Loads no
/// libtorch (MPS presence is only asked on macOS).
pub fn list(machine: &dyn Machine) -> Result<Vec<DeviceInfo>> {
    let mut out = vec![describe(DeviceKind::Cpu, 0, machine)?];
    if let CudaPresence::Present { devices, .. } = machine.cuda() {
        for d in &devices {
            out.push(describe(DeviceKind::Cuda, d.index, machine)?);
        }
    }
    if cfg!(target_os = "macos") && machine.mps().is_ok() {
        out.push(describe(DeviceKind::Mps, 0, machine)?);
    }
    Ok(out)
}
