//! Environment validation: every problem with a severity and a fix instruction, changing nothing.
//!
//! The seeds' rule: report and let the user fix; never install, create or edit anything. So the
//! checks only read: the configuration, the file system (`access(2)`, `stat`), the CUDA driver's
//! answer and what the torch backend reports. The one thing validation may do is load the backend
//! when asked to ([`ValidateOptions::load_backend`]): the libtorch version cannot be known otherwise,
//! and loading is what the first torch work would do anyway (with the configuration's `[environment]`
//! applied first, as always).
//!
//! Severities: *info* is worth knowing and needs no action (no NVIDIA driver on a machine without an
//! NVIDIA GPU, a data directory that the first run will create); *warning* works but not as
//! configured or not as well as it could (a requested GPU will fall back to the CPU); *error* keeps
//! something from working (no backend, a libtorch of another version, a driver too old for the
//! runtime, a path that cannot be written).
//!
//! The checks are a pure function of [`Facts`], so tests inject machines, backends and file-system
//! answers that this computer does not have.

use crate::backend::{self, BackendInfo};
use crate::config::Config;
use crate::context::Context;
use crate::device::CudaPresence;
use crate::environment::{self, EnvOutcome};
use crate::error::{Error, ErrorKind};
use crate::memory::MemoryStrategy;
use crate::preference::{DeviceKind, Preference};
use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a problem is. Ordered: `Info < Warning < Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; nothing to do.
    Info,
    /// Works, but not as configured or not as well as it could.
    Warning,
    /// Keeps something from working.
    Error,
}

impl Severity {
    /// `info`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// A stable identifier (`cuda.no_driver`, `paths.not_writable`, ...) for programs; the list is in
    /// `docs/report.schema.json`.
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// What to do about it, for a person (for info: what to do if it is not what was meant).
    pub fix: String,
}

impl Problem {
    fn new(severity: Severity, code: &'static str, message: String, fix: String) -> Problem {
        Problem {
            severity,
            code,
            message,
            fix,
        }
    }

    /// The problem of a configuration file that could not be loaded (for callers that load one
    /// themselves, such as `sda doctor`): an error naming the file, with the loader's message (which
    /// names the key and the accepted values).
    pub fn config_not_loaded(path: &Path, error: &Error) -> Problem {
        let fix = match error.kind() {
            ErrorKind::Io => format!(
                "check that {} exists and is readable, or create it with `sda config init`",
                path.display()
            ),
            _ => format!(
                "edit {} and correct the value the message names (or set it with `sda config set \
                 KEY VALUE`)",
                path.display()
            ),
        };
        Problem::new(
            Severity::Error,
            "config.invalid",
            error.message().to_string(),
            fix,
        )
    }
}

/// The worst severity among `problems` (`None` when there are none).
pub fn worst(problems: &[Problem]) -> Option<Severity> {
    problems.iter().map(|p| p.severity).max()
}

/// What is known about the torch backend.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendState {
    /// Loaded in this process.
    Loaded(BackendInfo),
    /// Not loaded (and not asked to be): where the module would come from, or why it cannot be found.
    NotLoaded(std::result::Result<PathBuf, String>),
    /// Loading was tried and failed with this error.
    Failed(Error),
}

/// Everything the checks look at besides the configuration.
pub struct Facts<'a> {
    /// The CUDA driver's answer.
    pub cuda: CudaPresence,
    /// The torch backend.
    pub backend: BackendState,
    /// Whether this is macOS (MPS exists only there).
    pub macos: bool,
    /// The process environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Whether this process may write into an existing directory (`access(W_OK)` on the real
    /// machine; injected in tests, which run as root where permission bits do not stop writes).
    pub writable: &'a dyn Fn(&Path) -> bool,
}

/// What validation may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ValidateOptions {
    /// Load the torch backend when it is not loaded yet, to check its libtorch (costs libtorch's
    /// start-up, about a quarter of a second; [`validate`] never loads it otherwise).
    pub load_backend: bool,
}

/// Whether this process may write into `path` (an existing directory), asked with `access(2)`, which
/// changes nothing.
pub fn access_writable(path: &Path) -> bool {
    crate::platform::dir_writable(path)
}

/// Validates the environment of `context`: its configuration, data directories, the CUDA driver and
/// the torch backend. Changes nothing (see the module documentation for loading the backend).
pub fn validate(context: &Context, options: ValidateOptions) -> Vec<Problem> {
    let config = context.config();
    let backend = match backend::loaded() {
        Some(b) => BackendState::Loaded(b.info().clone()),
        None if options.load_backend => match context.load_backend() {
            Ok(b) => BackendState::Loaded(b.info().clone()),
            Err(e) => BackendState::Failed(e),
        },
        None => BackendState::NotLoaded(
            backend::find_module(&config.hardware.backend).map_err(|e| e.message().to_string()),
        ),
    };
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let facts = Facts {
        cuda: context.machine().cuda(),
        backend,
        macos: cfg!(target_os = "macos"),
        env: &env,
        writable: &access_writable,
    };
    check(config, &facts)
}

/// The checks themselves, on given facts; problems sorted worst first (stable within a severity).
pub fn check(config: &Config, facts: &Facts<'_>) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = config.validate() {
        out.push(Problem::new(
            Severity::Error,
            "config.invalid",
            e.message().to_string(),
            "correct the value the message names (`sda config set KEY VALUE` checks it)".into(),
        ));
    }
    check_device(config, facts, &mut out);
    check_memory(config, &mut out);
    check_paths(config, facts, &mut out);
    check_environment(config, facts, &mut out);
    check_backend(&facts.backend, &mut out);
    check_cuda(facts, &mut out);
    out.sort_by_key(|p| std::cmp::Reverse(p.severity));
    out
}

fn check_device(config: &Config, facts: &Facts<'_>, out: &mut Vec<Problem>) {
    let Ok(Preference::Device { kind, index }) = Preference::parse(&config.hardware.device) else {
        return;
    };
    let device = &config.hardware.device;
    let unavailable = |why: String, out: &mut Vec<Problem>| {
        if config.hardware.strict {
            out.push(Problem::new(
                Severity::Error,
                "device.unavailable",
                format!(
                    "hardware.device = {device} but {why}; with hardware.strict = true \
                         selecting it fails"
                ),
                "set hardware.device to auto or cpu, or make the device available".into(),
            ));
        } else {
            out.push(Problem::new(
                Severity::Warning,
                "device.fallback",
                format!("hardware.device = {device} but {why}, so the CPU will be used instead"),
                "set hardware.device to auto (or cpu) to make the choice explicit, or make the \
                 device available"
                    .into(),
            ));
        }
    };
    match kind {
        DeviceKind::Cpu => {}
        DeviceKind::Mps if !facts.macos => {
            unavailable("MPS exists only on Apple silicon Macs".into(), out)
        }
        DeviceKind::Mps => {}
        DeviceKind::Cuda => match &facts.cuda {
            CudaPresence::Absent(why) => {
                unavailable(format!("there is no CUDA device ({why})"), out)
            }
            CudaPresence::Present { devices, .. } => {
                let count = devices.len() as u32;
                if let Some(i) = index.filter(|i| *i >= count) {
                    out.push(Problem::new(
                        Severity::Error,
                        "config.device_out_of_range",
                        format!(
                            "hardware.device = cuda:{i} but this machine has {count} visible CUDA \
                             device{} (cuda:0..=cuda:{}); selecting it fails",
                            if count == 1 { "" } else { "s" },
                            count - 1
                        ),
                        format!(
                            "sda config set hardware.device cuda:{} (or auto), or check \
                             CUDA_VISIBLE_DEVICES",
                            count - 1
                        ),
                    ));
                }
            }
        },
    }
}

fn check_memory(config: &Config, out: &mut Vec<Problem>) {
    let h = &config.hardware;
    if h.memory_strategy == MemoryStrategy::Custom && h.memory_fraction > 0.95 {
        out.push(Problem::new(
            Severity::Warning,
            "config.memory_fraction_high",
            format!(
                "hardware.memory_fraction = {} leaves less than 5 % of the device for the CUDA \
                 context, other programs and allocator fragmentation; batches sized to this budget \
                 are likely to run out of memory",
                h.memory_fraction
            ),
            "use memory_strategy = aggressive (90 %) or a fraction of at most 0.95".into(),
        ));
    }
}

/// The nearest ancestor of `path` that exists (`path` itself included), for "could it be created?".
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    let mut current = Some(path);
    while let Some(p) = current {
        let candidate = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        if std::fs::symlink_metadata(candidate).is_ok() {
            return Some(candidate.to_path_buf());
        }
        current = p.parent();
    }
    None
}

fn check_paths(config: &Config, facts: &Facts<'_>, out: &mut Vec<Problem>) {
    for (key, value) in [
        ("paths.datasets", &config.paths.datasets),
        ("paths.models", &config.paths.models),
        ("paths.generated", &config.paths.generated),
    ] {
        let path = Path::new(value);
        let shown = if path.is_relative() {
            format!("{value} (relative to the current directory)")
        } else {
            value.clone()
        };
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => out.push(Problem::new(
                Severity::Error,
                "paths.not_directory",
                format!("{key} = {shown} is not a directory"),
                format!(
                    "move the file away, or choose another directory: sda config set {key} DIR"
                ),
            )),
            Ok(_) if !(facts.writable)(path) => out.push(Problem::new(
                Severity::Error,
                "paths.not_writable",
                format!("{key} = {shown} is not writable by this user"),
                format!(
                    "give this user write access (chmod u+w / chown {value}), or choose another \
                     directory: sda config set {key} DIR"
                ),
            )),
            Ok(_) => {}
            Err(_) => {
                let creatable =
                    existing_ancestor(path).filter(|a| a.is_dir() && (facts.writable)(a));
                match creatable {
                    Some(_) => out.push(Problem::new(
                        Severity::Info,
                        "paths.missing",
                        format!("{key} = {shown} does not exist yet"),
                        format!("`sda config init` creates it (or mkdir -p {value})"),
                    )),
                    None => out.push(Problem::new(
                        Severity::Error,
                        "paths.not_creatable",
                        format!(
                            "{key} = {shown} does not exist and cannot be created (its nearest \
                             existing parent is not a writable directory)"
                        ),
                        format!(
                            "choose a directory this user can create: sda config set {key} DIR"
                        ),
                    )),
                }
            }
        }
    }
}

fn check_environment(config: &Config, facts: &Facts<'_>, out: &mut Vec<Problem>) {
    let loaded = matches!(facts.backend, BackendState::Loaded(_));
    let applied = environment::applied();
    for (name, value) in &config.environment {
        match (facts.env)(name) {
            Some(v) if v == *value => {}
            Some(v) => out.push(Problem::new(
                Severity::Info,
                "environment.process_value_kept",
                format!(
                    "[environment] sets {name}={value}, but the process already has {name}={v}, \
                     which is kept (the environment the process was started with wins)"
                ),
                format!(
                    "unset {name} before starting the program to use the configuration's value"
                ),
            )),
            None if applied
                .iter()
                .any(|a| a.name == *name && a.outcome == EnvOutcome::TooLate)
                || (loaded
                    && !applied
                        .iter()
                        .any(|a| a.name == *name && a.outcome == EnvOutcome::Applied)) =>
            {
                out.push(Problem::new(
                    Severity::Warning,
                    "environment.too_late",
                    format!(
                        "[environment] sets {name}={value}, but the CUDA driver or the torch \
                         backend had started before this configuration could apply it; they read \
                         it only at start-up"
                    ),
                    "create the context from this configuration before any torch work in the \
                     process, or export the variable before starting the program"
                        .into(),
                ));
            }
            None => {}
        }
    }
}

fn check_backend(state: &BackendState, out: &mut Vec<Problem>) {
    match state {
        BackendState::Loaded(info) => {
            if info.loaded_libtorch_version.is_none() {
                out.push(Problem::new(
                    Severity::Info,
                    "libtorch.version_unknown",
                    format!(
                        "the version of the libtorch at {} cannot be told (no version.py or \
                         build-version beside it); the backend was built against libtorch {}",
                        info.loaded_libtorch_path.display(),
                        info.built_libtorch_version
                    ),
                    format!("make sure it is libtorch {}", info.built_libtorch_version),
                ));
            }
        }
        BackendState::NotLoaded(Ok(path)) => out.push(Problem::new(
            Severity::Info,
            "backend.not_checked",
            format!(
                "the torch backend ({}) is not loaded, so its libtorch was not checked",
                path.display()
            ),
            "run `sda doctor`, which loads it, to check libtorch too".into(),
        )),
        BackendState::NotLoaded(Err(why)) => out.push(Problem::new(
            Severity::Error,
            "backend.missing",
            why.clone(),
            format!(
                "install {} beside libsda, or point SDA_BACKEND or hardware.backend at it; without \
                 it nothing that needs torch works (smoke tests, probes, guarded runs)",
                backend::MODULE_FILE_NAME
            ),
        )),
        BackendState::Failed(e) if e.kind() == ErrorKind::LibtorchVersionMismatch => out.push(Problem::new(
            Severity::Error,
            "libtorch.version_mismatch",
            e.message().to_string(),
            "install the libtorch version the backend was built against (the message names it), \
             or rebuild libsda against the installed one"
                .into(),
        )),
        BackendState::Failed(e) => out.push(Problem::new(
            Severity::Error,
            "backend.unloadable",
            e.message().to_string(),
            "follow the message: usually install the libtorch the backend was built against where \
             it looks for it, or reinstall libsda so that module and core match"
                .into(),
        )),
    }
}

/// `major.minor` of a CUDA version string (`12.4`, `13.0`).
fn cuda_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

fn check_cuda(facts: &Facts<'_>, out: &mut Vec<Problem>) {
    let info = match &facts.backend {
        BackendState::Loaded(info) => Some(info),
        _ => None,
    };
    match &facts.cuda {
        CudaPresence::Absent(why) => {
            let (message, fix) = match info {
                Some(i) if i.cuda_build => (
                    format!(
                        "the loaded libtorch is a CUDA build (CUDA {}) but no NVIDIA GPU is usable: \
                         {why}; torch work runs on the CPU",
                        i.libtorch_cuda_version.as_deref().unwrap_or("of unknown version")
                    ),
                    format!(
                        "nothing to do on a machine without an NVIDIA GPU; otherwise install the \
                         NVIDIA driver (one that supports CUDA {} or later)",
                        i.libtorch_cuda_version.as_deref().unwrap_or("of the libtorch build")
                    ),
                ),
                _ => (
                    format!("no NVIDIA GPU is usable: {why}"),
                    "nothing to do on a machine without an NVIDIA GPU; otherwise install the NVIDIA \
                     driver"
                        .to_string(),
                ),
            };
            out.push(Problem::new(Severity::Info, "cuda.no_driver", message, fix));
        }
        CudaPresence::Present {
            driver_version,
            devices,
        } => {
            let Some(info) = info else { return };
            if !info.cuda_build {
                out.push(Problem::new(
                    Severity::Warning,
                    "libtorch.cpu_only",
                    format!(
                        "this machine has {} NVIDIA GPU{} but the loaded libtorch ({}) has no CUDA \
                         support, so torch work runs on the CPU",
                        devices.len(),
                        if devices.len() == 1 { "" } else { "s" },
                        info.loaded_libtorch_path.display()
                    ),
                    format!(
                        "install a CUDA build of torch=={} (the Linux wheels from PyPI are CUDA \
                         builds)",
                        info.built_libtorch_version
                    ),
                ));
                return;
            }
            let runtime = info.libtorch_cuda_version.as_deref();
            let (Some(driver), Some(runtime_v)) =
                (cuda_version(driver_version), runtime.and_then(cuda_version))
            else {
                return;
            };
            let runtime = runtime.unwrap_or_default();
            if driver.0 < runtime_v.0 {
                out.push(Problem::new(
                    Severity::Error,
                    "cuda.driver_too_old",
                    format!(
                        "the NVIDIA driver supports CUDA up to {driver_version}, but libtorch was \
                         built for CUDA {runtime}: CUDA work will fail to start"
                    ),
                    format!(
                        "update the NVIDIA driver to one that supports CUDA {runtime}, or install \
                         a torch build for CUDA {driver_version} or older"
                    ),
                ));
            } else if driver < runtime_v {
                out.push(Problem::new(
                    Severity::Warning,
                    "cuda.driver_older_minor",
                    format!(
                        "the NVIDIA driver supports CUDA {driver_version}, older than the CUDA \
                         {runtime} libtorch was built for; CUDA's minor-version compatibility runs \
                         most work, but kernels that need PTX compilation fail"
                    ),
                    format!("update the NVIDIA driver to one that supports CUDA {runtime}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_are_ordered_and_worst_picks_the_highest() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
        let p = |s| Problem::new(s, "x", String::new(), String::new());
        assert_eq!(worst(&[]), None);
        assert_eq!(
            worst(&[p(Severity::Info), p(Severity::Error), p(Severity::Warning)]),
            Some(Severity::Error)
        );
    }

    #[test]
    fn cuda_versions_parse() {
        assert_eq!(cuda_version("12.4"), Some((12, 4)));
        assert_eq!(cuda_version("13"), Some((13, 0)));
        assert_eq!(cuda_version("x"), None);
    }
}
