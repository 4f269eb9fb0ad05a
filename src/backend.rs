//! Finds, loads and talks to the torch backend module (`libsda_torch.so`): the only place in the core
//! that knows the backend is a shared object.
//!
//! Loading libtorch costs a host about 250 ms and 120 MB, and a broken libtorch install must be an error
//! message rather than a plugin that fails to load. So the core never links libtorch; the first call that
//! needs torch (or an explicit [`load`]) `dlopen`s the module, checks the ABI version of its table and the
//! libtorch it resolved, and keeps it for the life of the process (libtorch cannot be unloaded safely).

use crate::error::{Error, Result};
use crate::log;
use crate::preference::DeviceKind;
use sda_backend_abi as abi;
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// File name of the backend module on this platform.
pub const MODULE_FILE_NAME: &str = "libsda_torch.so";

/// Environment variable that names the backend module explicitly (a file path).
pub const BACKEND_ENV: &str = "SDA_BACKEND";

/// What a loaded backend reports about itself and its libtorch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Path the module was loaded from.
    pub module_path: PathBuf,
    /// libtorch version the module was compiled against (e.g. `2.13.0`).
    pub built_libtorch_version: String,
    /// libtorch `lib/` directory the module was compiled against (its rpath).
    pub built_libtorch_dir: PathBuf,
    /// Path of the `libtorch_cpu.so` actually mapped into the process.
    pub loaded_libtorch_path: PathBuf,
    /// Version of the mapped libtorch, read from the `version.py` or `build-version` file beside it,
    /// when one exists.
    pub loaded_libtorch_version: Option<String>,
    /// CUDA version the mapped libtorch was built for (`13.0`), when it is a CUDA build and says so.
    pub libtorch_cuda_version: Option<String>,
    /// Whether the mapped libtorch ships `libtorch_cuda.so` (a CUDA build).
    pub cuda_build: bool,
}

/// A loaded backend module. Lives for the rest of the process once loaded.
pub struct Backend {
    api: &'static abi::BackendApi,
    info: BackendInfo,
    cuda: Mutex<Option<Result<()>>>,
    // Keeps the module mapped; never dropped because the value is leaked.
    _library: libloading::Library,
}

/// The loaded backend, set once; read without a lock because guarded runs ask on every call.
static LOADED: OnceLock<&'static Backend> = OnceLock::new();
/// Serialises loading, so that two threads never `dlopen` and initialise libtorch at once.
static LOADING: Mutex<()> = Mutex::new(());

/// The backend if some earlier call loaded it; never loads it. Code that only wants torch figures when
/// torch is already in the process (e.g. CPU memory statistics) uses this.
pub fn loaded() -> Option<&'static Backend> {
    LOADED.get().copied()
}

/// Loads the backend module (once per process) and returns it.
///
/// `configured` is the config's `hardware.backend` (empty = not set); see [`candidate_paths`] for where
/// the module is looked for. Failures are not cached, so a host that fixes its installation can try
/// again.
pub fn load(configured: &str) -> Result<&'static Backend> {
    let _loading = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(backend) = loaded() {
        return Ok(backend);
    }
    let candidates = candidate_paths(std::env::var_os(BACKEND_ENV).as_deref(), configured);
    let Some(path) = candidates.iter().find(|p| p.is_file()).cloned() else {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::BackendUnavailable(format!(
            "the torch backend module {MODULE_FILE_NAME} was not found (looked at: {}); install it \
             beside libsda, or point {BACKEND_ENV} or the config key hardware.backend at it",
            if looked.is_empty() { "nowhere".to_string() } else { looked.join(", ") }
        )));
    };
    let backend = open(&path)?;
    let backend: &'static Backend = Box::leak(Box::new(backend));
    log::info(&format!(
        "loaded torch backend {} (libtorch {} from {})",
        backend.info.module_path.display(),
        backend
            .info
            .loaded_libtorch_version
            .as_deref()
            .unwrap_or("of unknown version"),
        backend.info.loaded_libtorch_path.display()
    ));
    Ok(LOADED.get_or_init(|| backend))
}

/// Where to look for the module. An explicit choice (`$SDA_BACKEND`, else the config's
/// `hardware.backend`) is the only candidate: a host that named a file must not silently get another.
/// Without one, the module is looked for beside this library (and, for Rust test binaries in Cargo's
/// `deps/` directory, one level up).
fn candidate_paths(env: Option<&std::ffi::OsStr>, configured: &str) -> Vec<PathBuf> {
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return vec![PathBuf::from(env)];
    }
    if !configured.trim().is_empty() {
        return vec![PathBuf::from(configured.trim())];
    }
    let mut out = Vec::new();
    if let Some(dir) = own_directory() {
        out.push(dir.join(MODULE_FILE_NAME));
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(parent) = dir.parent() {
                out.push(parent.join(MODULE_FILE_NAME));
            }
        }
    }
    out
}

/// Directory of the shared object (or executable) that contains this function, found with `dladdr`.
fn own_directory() -> Option<PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = own_directory as *const libc::c_void;
    // SAFETY: dladdr only reads the address and writes `info`.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let path = if path.is_absolute() {
        path
    } else {
        std::fs::canonicalize(&path).ok()?
    };
    path.parent().map(Path::to_path_buf)
}

fn open(path: &Path) -> Result<Backend> {
    let unavailable = |what: String| Error::BackendUnavailable(what);
    // SAFETY: loading a library runs its initialisers; the module is ours and libtorch's are what we
    // came for. RTLD_LOCAL keeps its symbols out of the host's namespace.
    let library = unsafe {
        libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL)
    }
    .map_err(|e| {
        unavailable(format!(
            "could not load the torch backend {}: {e}. If a libtorch library is named, install \
             torch==2.13.0 where the module was built to find it (or rebuild libsda against your \
             libtorch); if the file itself is damaged, reinstall libsda",
            path.display()
        ))
    })?;
    let library = libloading::Library::from(library);
    // SAFETY: the symbol's type is fixed by the ABI crate both sides are built from.
    let entry: abi::EntryFn = unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) }
        .map(|s| *s)
        .map_err(|e| {
            unavailable(format!(
                "{} is not a libsda torch backend ({e}); reinstall libsda so that the module \
                 matches the core",
                path.display()
            ))
        })?;
    // SAFETY: the entry point takes a plain integer and returns a pointer to static data or NULL.
    let api = unsafe { entry(abi::ABI_VERSION) };
    if api.is_null() {
        return Err(unavailable(format!(
            "the torch backend {} does not speak backend ABI version {} that this libsda needs; \
             install the libsda_torch module that came with this libsda",
            path.display(),
            abi::ABI_VERSION
        )));
    }
    // SAFETY: non-null pointers from the entry point refer to a static table.
    let api: &'static abi::BackendApi = unsafe { &*api };
    if api.abi_version != abi::ABI_VERSION
        || api.size as usize != std::mem::size_of::<abi::BackendApi>()
    {
        return Err(unavailable(format!(
            "the torch backend {} has table version {} of {} bytes, this libsda expects version {} \
             of {} bytes; install matching versions",
            path.display(),
            api.abi_version,
            api.size,
            abi::ABI_VERSION,
            std::mem::size_of::<abi::BackendApi>()
        )));
    }
    let mut facts: abi::BackendFacts = unsafe { std::mem::zeroed() };
    call(|err, cap| unsafe { (api.facts)(&mut facts, err, cap) })?;
    let info = describe(path, &facts);
    check_libtorch_version(&info)?;
    Ok(Backend {
        api,
        info,
        cuda: Mutex::new(None),
        _library: library,
    })
}

fn describe(path: &Path, facts: &abi::BackendFacts) -> BackendInfo {
    let loaded = PathBuf::from(abi::read_fixed(&facts.loaded_libtorch_path));
    let (version, cuda) = read_libtorch_version(&loaded);
    BackendInfo {
        module_path: path.to_path_buf(),
        built_libtorch_version: abi::read_fixed(&facts.built_libtorch_version),
        built_libtorch_dir: PathBuf::from(abi::read_fixed(&facts.built_libtorch_dir)),
        loaded_libtorch_path: loaded,
        loaded_libtorch_version: version,
        libtorch_cuda_version: cuda,
        cuda_build: facts.cuda_build != 0,
    }
}

/// Reads the version of the libtorch at `libtorch_cpu` from the files its distributions put beside it:
/// PyPI wheels have `torch/version.py` (`__version__ = '2.13.0+cu130'`, `cuda = '13.0'`), the C++ zip
/// has `libtorch/build-version`. Returns (version without local suffix, CUDA version).
pub fn read_libtorch_version(libtorch_cpu: &Path) -> (Option<String>, Option<String>) {
    let Some(root) = libtorch_cpu.parent().and_then(Path::parent) else {
        return (None, None);
    };
    if let Ok(text) = std::fs::read_to_string(root.join("version.py")) {
        return parse_version_py(&text);
    }
    if let Ok(text) = std::fs::read_to_string(root.join("build-version")) {
        let v = text.trim();
        let base = v.split('+').next().unwrap_or(v).to_string();
        return ((!base.is_empty()).then_some(base), None);
    }
    (None, None)
}

/// Parses `__version__` and `cuda` out of a torch `version.py`.
pub fn parse_version_py(text: &str) -> (Option<String>, Option<String>) {
    let value = |key: &str| -> Option<String> {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            // `cuda: Optional[str] = '13.0'` is an annotated assignment: the name ends at ':'.
            let name = k.split(':').next().unwrap_or(k).trim();
            (name == key).then(|| {
                let v = v.trim();
                v.trim_matches(|c| c == '\'' || c == '"').to_string()
            })
        })
    };
    let version = value("__version__").map(|v| v.split('+').next().unwrap_or(&v).to_string());
    let cuda = value("cuda").filter(|c| c != "None" && !c.is_empty());
    (version, cuda)
}

fn check_libtorch_version(info: &BackendInfo) -> Result<()> {
    match &info.loaded_libtorch_version {
        Some(loaded) if *loaded != info.built_libtorch_version => {
            Err(Error::BackendUnavailable(format!(
            "the torch backend {} was built against libtorch {} but the process loaded libtorch {} \
             from {}; install torch=={} (or rebuild libsda against libtorch {loaded})",
            info.module_path.display(),
            info.built_libtorch_version,
            loaded,
            info.loaded_libtorch_path.display(),
            info.built_libtorch_version
        )))
        }
        _ => Ok(()),
    }
}

/// Capacity of the message buffer handed to backend calls.
const ERR_CAP: usize = 2048;

/// Runs one backend call with a message buffer and turns its status into a [`Result`].
fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    // Left uninitialised apart from the first byte: zeroing 2 KiB on every call would cost more than
    // the statistics calls of a guarded run themselves. The backend writes a NUL-terminated message
    // before it returns a failure, and only then is the buffer read.
    let mut buf = [std::mem::MaybeUninit::<c_char>::uninit(); ERR_CAP];
    buf[0].write(0);
    let status = f(buf.as_mut_ptr().cast::<c_char>(), ERR_CAP);
    let message = || {
        // SAFETY: the message is NUL-terminated within the buffer (the first byte at least is 0).
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr().cast::<c_char>()) }
            .to_string_lossy()
            .into_owned()
    };
    match status {
        abi::STATUS_OK => Ok(()),
        abi::STATUS_UNAVAILABLE => Err(Error::Unsupported(message())),
        abi::STATUS_OUT_OF_MEMORY => Err(Error::OutOfMemory(message())),
        abi::STATUS_INVALID_ARGUMENT => Err(Error::InvalidArgument(message())),
        abi::STATUS_PANIC => Err(Error::Panic(format!(
            "inside the torch backend: {}",
            message()
        ))),
        _ => Err(Error::Torch(message())),
    }
}

fn kind_code(kind: DeviceKind) -> i32 {
    match kind {
        DeviceKind::Cpu => abi::DEVICE_CPU,
        DeviceKind::Cuda => abi::DEVICE_CUDA,
        DeviceKind::Mps => abi::DEVICE_MPS,
    }
}

fn index_code(index: u32) -> Result<i32> {
    i32::try_from(index)
        .map_err(|_| Error::InvalidArgument(format!("device index {index} is out of range")))
}

impl Backend {
    /// What was loaded.
    pub fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// Makes libtorch's CUDA support available by loading `libtorch_cuda.so` (once per process).
    ///
    /// Only called when the driver reports a GPU: it costs about 100 ms and 270 MB, and must come before
    /// anything asks libtorch about accelerators, or libtorch latches its CPU-only answer for good.
    pub fn ensure_cuda(&self) -> Result<()> {
        let mut slot = self.cuda.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = slot.as_ref() {
            return done.clone();
        }
        let result =
            call(|err, cap| unsafe { (self.api.load_cuda)(err, cap) }).map_err(|e| match e {
                Error::Unsupported(m) => Error::Unsupported(format!(
                "this libtorch ({}) has no CUDA support: {m}; install a CUDA build of torch=={}",
                self.info.loaded_libtorch_path.display(),
                self.info.built_libtorch_version
            )),
                other => other,
            });
        *slot = Some(result.clone());
        result
    }

    /// Fresh facts from the module (CUDA device count once CUDA is loaded, MPS availability).
    pub fn facts(&self) -> Result<abi::BackendFacts> {
        let mut facts: abi::BackendFacts = unsafe { std::mem::zeroed() };
        call(|err, cap| unsafe { (self.api.facts)(&mut facts, err, cap) })?;
        Ok(facts)
    }

    /// Runs the smoke test (32×32 matmul, sum, NaN check) on a device.
    pub fn smoke_test(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        call(|err, cap| unsafe { (self.api.smoke_test)(kind_code(kind), index, err, cap) })
    }

    /// Runs the built-in conv1d workload once with `batch` samples on a device.
    ///
    /// A failed allocation is [`Error::OutOfMemory`] (also a batch whose tensors would need more than
    /// 2^63 bytes), a zero size or a kernel longer than the padded sample [`Error::InvalidArgument`].
    /// Every tensor is freed before it returns.
    pub fn run_conv1d(
        &self,
        kind: DeviceKind,
        index: u32,
        workload: &abi::Conv1dWorkload,
        batch: u32,
    ) -> Result<()> {
        let index = index_code(index)?;
        call(|err, cap| unsafe {
            (self.api.run_conv1d)(kind_code(kind), index, workload, batch, err, cap)
        })
    }

    /// The allocator's statistics for a device.
    pub fn memory_stats(&self, kind: DeviceKind, index: u32) -> Result<abi::MemoryStats> {
        let index = index_code(index)?;
        let mut out = abi::MemoryStats::default();
        call(|err, cap| unsafe {
            (self.api.memory_stats)(kind_code(kind), index, &mut out, err, cap)
        })?;
        Ok(out)
    }

    /// Returns cached memory of a device to the driver.
    pub fn empty_cache(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        call(|err, cap| unsafe { (self.api.empty_cache)(kind_code(kind), index, err, cap) })
    }

    /// Resets the peak statistics of a device.
    pub fn reset_peak(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        call(|err, cap| unsafe { (self.api.reset_peak)(kind_code(kind), index, err, cap) })
    }

    /// Limits the caching allocator of a device to `fraction` of its memory.
    pub fn set_memory_fraction(&self, kind: DeviceKind, index: u32, fraction: f64) -> Result<()> {
        let index = index_code(index)?;
        call(|err, cap| unsafe {
            (self.api.set_memory_fraction)(kind_code(kind), index, fraction, err, cap)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_py_of_a_cuda_wheel_parses() {
        let text = "__version__ = '2.13.0+cu130'\ndebug = False\ncuda: Optional[str] = '13.0'\n\
                    git_version = 'abc'\n";
        // The annotated form `cuda: Optional[str] = ...` is what recent wheels write.
        let (v, _) = parse_version_py(text);
        assert_eq!(v.as_deref(), Some("2.13.0"));
        let (_, c) = parse_version_py("cuda = '13.0'\n");
        assert_eq!(c.as_deref(), Some("13.0"));
        let (_, none) = parse_version_py("cuda = None\n");
        assert_eq!(none, None);
    }

    fn info(built: &str, loaded: Option<&str>) -> BackendInfo {
        BackendInfo {
            module_path: PathBuf::from("/opt/sda/lib/libsda_torch.so"),
            built_libtorch_version: built.to_string(),
            built_libtorch_dir: PathBuf::from("/build/torch/lib"),
            loaded_libtorch_path: PathBuf::from("/other/torch/lib/libtorch_cpu.so"),
            loaded_libtorch_version: loaded.map(str::to_string),
            libtorch_cuda_version: None,
            cuda_build: false,
        }
    }

    #[test]
    fn a_different_libtorch_version_is_refused_with_both_versions_and_the_fix() {
        assert!(check_libtorch_version(&info("2.13.0", Some("2.13.0"))).is_ok());
        assert!(check_libtorch_version(&info("2.13.0", None)).is_ok());
        let e = check_libtorch_version(&info("2.13.0", Some("2.9.1"))).unwrap_err();
        assert!(matches!(e, Error::BackendUnavailable(_)));
        for needle in [
            "2.13.0",
            "2.9.1",
            "/other/torch/lib/libtorch_cpu.so",
            "torch==2.13.0",
        ] {
            assert!(e.message().contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn an_explicit_path_is_the_only_candidate_env_before_config() {
        let env = candidate_paths(Some(std::ffi::OsStr::new("/x/env.so")), " /y/cfg.so ");
        assert_eq!(env, vec![PathBuf::from("/x/env.so")]);
        let cfg = candidate_paths(Some(std::ffi::OsStr::new("")), " /y/cfg.so ");
        assert_eq!(cfg, vec![PathBuf::from("/y/cfg.so")]);
        let default = candidate_paths(None, "");
        assert!(
            !default.is_empty(),
            "the library's own directory is a candidate"
        );
        assert!(default.iter().all(|p| p.ends_with(MODULE_FILE_NAME)));
    }
}
