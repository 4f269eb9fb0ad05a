//! Finds, loads and talks to the torch backend module (`libsda_torch.so`): the only place in the core
//! that knows the backend is a shared object.
//!
//! Loading libtorch costs a host about 250 ms and 120 MB, and a broken libtorch install must be an error
//! message rather than a plugin that fails to load. So the core never links libtorch; the first call that
//! needs torch (or an explicit [`load`]) `dlopen`s the module, checks the ABI version of its table and the
//! libtorch it resolved, and keeps it for the life of the process (libtorch cannot be unloaded safely).

use crate::classify;
use crate::error::{Error, ErrorKind, Result};
use crate::libtorch_discovery::{self as discovery, Module};
pub use crate::libtorch_discovery::{parse_version_py, read_libtorch_version, LIBTORCH_ENV};
use crate::log;
use crate::platform;
use crate::preference::DeviceKind;
use sda_backend_abi as abi;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// File name of the backend module on this platform (`libsda_torch.so`, `libsda_torch.dylib`,
/// `sda_torch.dll`).
pub const MODULE_FILE_NAME: &str = platform::MODULE_FILE_NAME;

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
    /// Whether that libtorch was already in the process before the backend was opened (the host's
    /// own, or Python's after `import torch`), rather than loaded for the backend.
    pub libtorch_preloaded: bool,
    /// The discovery step that found that libtorch (see [`crate::libtorch_discovery`]); `None` for a
    /// module that records no libtorch, which runs on whatever its own run path finds.
    pub libtorch_found_by: Option<discovery::Source>,
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

/// Loads of the module attempted in this process (searches included): a diagnostic that shows hot
/// paths do not search again after a failure.
static LOAD_ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times this process has tried to load the backend module (an attempt that found it
/// loaded already does not count).
pub fn load_attempts() -> u64 {
    LOAD_ATTEMPTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where the backend module would be loaded from (the first candidate that is a file), without
/// loading it; the error names every place looked at.
pub fn find_module(configured: &str) -> Result<PathBuf> {
    let candidates = candidate_paths(std::env::var_os(BACKEND_ENV).as_deref(), configured);
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            Error::backend_unavailable(format!(
            "the torch backend module {MODULE_FILE_NAME} was not found (looked at: {}); install it \
             beside libsda, or point {BACKEND_ENV} or the config key hardware.backend at it",
            if looked.is_empty() { "nowhere".to_string() } else { looked.join(", ") }
        ))
        })
}

/// Loads the backend module (once per process) and returns it.
///
/// `configured` is the config's `hardware.backend` (empty = not set); see `candidate_paths` for where the module is looked for and
/// [`crate::libtorch_discovery`] for how its libtorch is found and which module is chosen. The configuration's `[environment]` is not this function's business: it
/// was applied when the context was created (see [`crate::environment`]), before anything in the
/// process could read it. Failures are not cached here, so a host that fixes its installation can
/// try again (contexts keep their own failure, see `Context::backend`).
pub fn load(configured: &str) -> Result<&'static Backend> {
    load_with(configured, "")
}

/// [`load`] with the config's `hardware.libtorch` too (empty = not set).
pub fn load_with(configured: &str, configured_libtorch: &str) -> Result<&'static Backend> {
    // Declared before the lock, so dropped after it: the host's log callback runs with the lock
    // released, and a callback that loads the backend itself cannot deadlock on it.
    let mut messages = log::Deferred::new();
    let _loading = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(backend) = loaded() {
        return Ok(backend);
    }
    LOAD_ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (backend, found) = match choose_module(configured, configured_libtorch) {
        Ok(choice) => {
            let preloaded = choice.libtorch.source == discovery::Source::Mapped;
            discovery::preload(&choice.libtorch)?;
            let mut backend = open(&choice.module.path)?;
            backend.info.libtorch_preloaded = preloaded;
            backend.info.libtorch_found_by = Some(choice.libtorch.source);
            (backend, choice.libtorch.source.describe())
        }
        // A module that records no libtorch at all may be damaged, not a libsda backend, or of
        // another ABI: its own checks say what is wrong better than the search for a libtorch, and
        // a module that passes them runs on whatever libtorch its run path finds (or on the one
        // already in the process).
        Err(e) => match unrecorded_module(configured) {
            Some(path) => {
                let mapped = platform::mapped_library(abi::LIBTORCH_CPU).is_some();
                let mut backend = open(&path)?;
                if mapped {
                    backend.info.libtorch_preloaded = true;
                    backend.info.libtorch_found_by = Some(discovery::Source::Mapped);
                }
                let found = if mapped {
                    discovery::Source::Mapped.describe()
                } else {
                    "found through the module's own run path"
                };
                (backend, found)
            }
            None => return Err(e),
        },
    };
    let backend: &'static Backend = Box::leak(Box::new(backend));
    messages.push(
        log::Level::Info,
        format!(
            "loaded torch backend {} (libtorch {} from {}, {})",
            backend.info.module_path.display(),
            backend
                .info
                .loaded_libtorch_version
                .as_deref()
                .unwrap_or("of unknown version"),
            backend.info.loaded_libtorch_path.display(),
            found
        ),
    );
    Ok(LOADED.get_or_init(|| backend))
}

/// The backend modules to choose from and the libtorch to run them on (see
/// [`crate::libtorch_discovery`]): an explicit module (`SDA_BACKEND`, `hardware.backend`) alone;
/// otherwise every module (`libsda_torch.so`, `libsda_torch-MAJOR.MINOR.so`) in the first directory
/// of the default candidates that holds one. A libtorch of another version already in the process is
/// refused here, before the module is opened.
fn choose_module(configured: &str, configured_libtorch: &str) -> Result<discovery::Choice> {
    let first = find_module(configured)?;
    let explicit = std::env::var_os(BACKEND_ENV).is_some_and(|e| !e.is_empty())
        || !configured.trim().is_empty();
    let paths = match first.parent() {
        Some(dir) if !explicit => discovery::modules_in(dir),
        _ => vec![first.clone()],
    };
    let paths = if paths.is_empty() { vec![first] } else { paths };
    let modules: Vec<Module> = paths.iter().map(|p| Module::read(p)).collect();
    discovery::choose(
        &modules,
        std::env::var_os(LIBTORCH_ENV).as_deref(),
        configured_libtorch,
    )
}

/// The module `find_module` picks, when it records no libtorch (see [`load_with`]).
fn unrecorded_module(configured: &str) -> Option<PathBuf> {
    let path = find_module(configured).ok()?;
    Module::read(&path).built_version.is_none().then_some(path)
}

/// Where to look for the module. An explicit choice (`$SDA_BACKEND`, else the config's
/// `hardware.backend`) is the only candidate: a host that named a file must not silently get another.
/// Without one, the module is looked for beside this library (and, for Rust test binaries in Cargo's
/// `deps/` directory, one level up; for a program in a prefix's `bin/`, in the prefix's `lib/`).
fn candidate_paths(env: Option<&std::ffi::OsStr>, configured: &str) -> Vec<PathBuf> {
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return vec![PathBuf::from(env)];
    }
    if !configured.trim().is_empty() {
        return vec![PathBuf::from(configured.trim())];
    }
    let mut out = Vec::new();
    if let Some(dir) = platform::own_directory() {
        out.push(dir.join(MODULE_FILE_NAME));
        let parent = dir.parent();
        match dir.file_name() {
            Some(n) if n == "deps" => out.extend(parent.map(|p| p.join(MODULE_FILE_NAME))),
            // A program of an installed prefix (`bin/sda` with the core linked in): the module is
            // in the prefix's `lib/`, where `make install` puts it.
            Some(n) if n == "bin" => {
                out.extend(parent.map(|p| p.join("lib").join(MODULE_FILE_NAME)))
            }
            _ => {}
        }
    }
    out
}

fn open(path: &Path) -> Result<Backend> {
    let unavailable = |what: String| Error::backend_unavailable(what);
    // A file cut short (an interrupted copy or install) would be mapped all the same and kill the
    // host with SIGBUS on first touch: refuse it with a message instead.
    if let Some(cut) = platform::find_truncated(path, &platform::library_search_path()) {
        let what = format!(
            "{} bytes, but its loadable segments need {} (cut short by an interrupted copy or \
             install?); it was not loaded, because mapping it would crash the process",
            cut.size, cut.needed
        );
        return Err(unavailable(if cut.path == path {
            format!(
                "the torch backend {} is damaged: the file is {what}. Reinstall libsda",
                path.display()
            )
        } else {
            format!(
                "the torch backend {} needs {}, which is damaged: the file is {what}. Reinstall \
                 the package it belongs to (for libtorch: pip install --force-reinstall the torch \
                 version the backend was built against)",
                path.display(),
                cut.path.display()
            )
        }));
    }
    // SAFETY: loading a library runs its initialisers; the module is ours and libtorch's are what we
    // came for. `open_library` keeps its symbols out of the host's namespace.
    let library = unsafe { platform::open_library(path) }.map_err(|e| {
        // Where the module looks for libtorch, so that "install it where the module was built to
        // find it" names a place.
        let dirs: Vec<String> = platform::search_dirs(path)
            .iter()
            .map(|d| {
                let missing = if d.is_dir() { "" } else { " (missing)" };
                format!("{}{missing}", d.display())
            })
            .collect();
        let looks_in = if dirs.is_empty() {
            String::new()
        } else {
            format!(" (it looks in {})", dirs.join(", "))
        };
        unavailable(format!(
            "could not load the torch backend {}: {e}. If a libtorch library is named, point \
             {LIBTORCH_ENV} (or the config key hardware.libtorch) at the lib/ directory of the \
             libtorch the module was built for{looks_in}; if the file itself is damaged, reinstall \
             libsda",
            path.display()
        ))
    })?;
    // SAFETY: ENTRY_SYMBOL is defined by the module with exactly the EntryFn type (both sides are
    // built from sda_backend_abi, and the ABI version and table size are checked right after); the
    // copied pointer stays valid because `library` is kept in the Backend, which is never dropped.
    let entry: abi::EntryFn = unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL) }
        .map(|s| *s)
        .map_err(|e| {
            unavailable(format!(
                "{} is not a libsda torch backend ({e}); reinstall libsda so that the module \
                 matches the core",
                path.display()
            ))
        })?;
    // SAFETY: the entry point takes a plain integer, may be called from any thread at any time and
    // returns a pointer to the module's static table or NULL (it never unwinds).
    let api = unsafe { entry(abi::ABI_VERSION) };
    if api.is_null() {
        return Err(unavailable(format!(
            "the torch backend {} does not speak backend ABI version {} that this libsda needs; \
             install the libsda_torch module that came with this libsda",
            path.display(),
            abi::ABI_VERSION
        )));
    }
    // SAFETY: checked non-NULL above; a non-NULL result points at the module's static, immutable
    // table, which stays mapped for the process (module linked `-z nodelete`, library never
    // closed), so a `'static` shared borrow is sound.
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
    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers), so all-zero is valid.
    let mut facts: abi::BackendFacts = unsafe { std::mem::zeroed() };
    // SAFETY: `facts` is a live, aligned BackendFacts and `(err, cap)` is `call`'s live message
    // buffer, as BackendApi's calling contract requires; the version and size checks above make
    // `api.facts` the function this core was built to call.
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
        libtorch_preloaded: false,
        libtorch_found_by: None,
    }
}

fn check_libtorch_version(info: &BackendInfo) -> Result<()> {
    match &info.loaded_libtorch_version {
        Some(loaded) if *loaded != info.built_libtorch_version => {
            Err(Error::libtorch_version_mismatch(format!(
            "the torch backend {} was built against libtorch {} but the process loaded libtorch {} from \
             {}; install torch=={} (or rebuild libsda against libtorch {loaded})",
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
///
/// `f` receives a pointer to a live buffer of `ERR_CAP` bytes on this stack frame and that capacity:
/// exactly the `(err, err_cap)` pair BackendApi's functions need (they write at most `err_cap`
/// bytes there, NUL included).
fn call(f: impl FnOnce(*mut c_char, usize) -> i32) -> Result<()> {
    // Left uninitialised apart from the first byte: zeroing 2 KiB on every call would cost more than
    // the statistics calls of a guarded run themselves. The backend writes a NUL-terminated message
    // before it returns a failure, and only then is the buffer read.
    let mut buf = [std::mem::MaybeUninit::<c_char>::uninit(); ERR_CAP];
    buf[0].write(0);
    let status = f(buf.as_mut_ptr().cast::<c_char>(), ERR_CAP);
    let message = || {
        // SAFETY: the first byte was initialised to 0, and a backend function that wrote a message
        // wrote it NUL-terminated within the `ERR_CAP` bytes it was given; so the bytes up to and
        // including the first NUL are initialised and lie inside the live `buf`.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr().cast::<c_char>()) }
            .to_string_lossy()
            .into_owned()
    };
    match status {
        abi::STATUS_OK => Ok(()),
        abi::STATUS_UNAVAILABLE => Err(Error::unsupported(message())),
        abi::STATUS_OUT_OF_MEMORY => Err(Error::out_of_memory(message())),
        abi::STATUS_INVALID_ARGUMENT => Err(Error::invalid_argument(message())),
        abi::STATUS_PANIC => Err(Error::panic(format!(
            "inside the torch backend: {}",
            message()
        ))),
        // libtorch's own failures are classified by the library's one classifier, which knows the
        // cuBLAS, cuDNN, oneDNN and allocator texts that the backend's quick check does not: an
        // out-of-memory there must make the probe and the guard retry, not abort.
        _ => {
            let text = message();
            if classify::is_out_of_memory(&text) {
                Err(Error::out_of_memory(text))
            } else {
                Err(Error::torch(text))
            }
        }
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
        .map_err(|_| Error::invalid_argument(format!("device index {index} is out of range")))
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
        // SAFETY: `self.api` is the checked static table; `(err, cap)` is `call`'s live buffer.
        let result =
            call(|err, cap| unsafe { (self.api.load_cuda)(err, cap) }).map_err(|e| {
                match e.kind() {
                    ErrorKind::Unsupported => Error::unsupported(format!(
                    "this libtorch ({}) has no CUDA support: {}; install a CUDA build of torch=={}",
                    self.info.loaded_libtorch_path.display(),
                    e.message(),
                    self.info.built_libtorch_version
                )),
                    _ => e,
                }
            });
        *slot = Some(result.clone());
        result
    }

    /// Fresh facts from the module (CUDA device count once CUDA is loaded, MPS availability).
    pub fn facts(&self) -> Result<abi::BackendFacts> {
        // SAFETY: BackendFacts is plain data (`c_char` arrays and integers), so all-zero is valid.
        let mut facts: abi::BackendFacts = unsafe { std::mem::zeroed() };
        // SAFETY: `facts` is a live, aligned BackendFacts and `(err, cap)` is `call`'s live buffer
        // (BackendApi's calling contract); `self.api` is the checked static table.
        call(|err, cap| unsafe { (self.api.facts)(&mut facts, err, cap) })?;
        Ok(facts)
    }

    /// Runs the smoke test (32×32 matmul, sum, NaN check) on a device.
    pub fn smoke_test(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        // SAFETY: plain integers and `call`'s live `(err, cap)` buffer, as BackendApi's calling
        // contract requires; `self.api` is the checked static table.
        call(|err, cap| unsafe { (self.api.smoke_test)(kind_code(kind), index, err, cap) })
    }

    /// Runs the built-in conv1d workload once with `batch` samples on a device.
    ///
    /// A failed allocation is [`ErrorKind::OutOfMemory`] (also a batch whose tensors would need more than
    /// 2^63 bytes), a zero size or a kernel longer than the padded sample [`ErrorKind::InvalidArgument`].
    /// Every tensor is freed before it returns.
    pub fn run_conv1d(
        &self,
        kind: DeviceKind,
        index: u32,
        workload: &abi::Conv1dWorkload,
        batch: u32,
    ) -> Result<()> {
        let index = index_code(index)?;
        // SAFETY: `workload` is a shared borrow of a live Conv1dWorkload (valid for the read the
        // backend does), the rest are plain integers and `call`'s live `(err, cap)` buffer
        // (BackendApi's calling contract); `self.api` is the checked static table.
        call(|err, cap| unsafe {
            (self.api.run_conv1d)(kind_code(kind), index, workload, batch, err, cap)
        })
    }

    /// The allocator's statistics for a device.
    pub fn memory_stats(&self, kind: DeviceKind, index: u32) -> Result<abi::MemoryStats> {
        let index = index_code(index)?;
        let mut out = abi::MemoryStats::default();
        // SAFETY: `out` is a live, aligned MemoryStats and `(err, cap)` is `call`'s live buffer
        // (BackendApi's calling contract); `self.api` is the checked static table.
        call(|err, cap| unsafe {
            (self.api.memory_stats)(kind_code(kind), index, &mut out, err, cap)
        })?;
        Ok(out)
    }

    /// Returns cached memory of a device to the driver.
    pub fn empty_cache(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        // SAFETY: plain integers and `call`'s live `(err, cap)` buffer, as BackendApi's calling
        // contract requires; `self.api` is the checked static table.
        call(|err, cap| unsafe { (self.api.empty_cache)(kind_code(kind), index, err, cap) })
    }

    /// Resets the peak statistics of a device.
    pub fn reset_peak(&self, kind: DeviceKind, index: u32) -> Result<()> {
        let index = index_code(index)?;
        // SAFETY: plain integers and `call`'s live `(err, cap)` buffer, as BackendApi's calling
        // contract requires; `self.api` is the checked static table.
        call(|err, cap| unsafe { (self.api.reset_peak)(kind_code(kind), index, err, cap) })
    }

    /// Loads the model file at `path` onto a device (a `.pt2` name: an AOTInductor package, else
    /// TorchScript); returns the backend's handle and the model's facts. Nothing stays loaded on
    /// failure: a missing file is [`ErrorKind::InvalidArgument`], a file libtorch cannot read
    /// [`ErrorKind::Torch`] with its message, weights that do not fit [`ErrorKind::OutOfMemory`].
    /// Use [`crate::model::ModelWorkload::load`], which frees the handle on drop.
    pub fn model_load(
        &self,
        path: &Path,
        kind: DeviceKind,
        index: u32,
    ) -> Result<(u64, abi::ModelFacts)> {
        let index = index_code(index)?;
        let cpath = platform::path_to_c(path).ok_or_else(|| {
            Error::invalid_argument(format!(
                "the model path {} contains a NUL byte",
                path.display()
            ))
        })?;
        let mut handle = 0u64;
        let mut facts = abi::ModelFacts::default();
        // SAFETY: `cpath` is a live NUL-terminated string, `handle` and `facts` are live, aligned
        // locals and `(err, cap)` is `call`'s live buffer (BackendApi's calling contract);
        // `self.api` is the checked static table.
        call(|err, cap| unsafe {
            (self.api.model_load)(
                cpath.as_ptr(),
                kind_code(kind),
                index,
                &mut handle,
                &mut facts,
                err,
                cap,
            )
        })?;
        Ok((handle, facts))
    }

    /// Runs a loaded model once on a random input `[batch, shape..]` of `dtype` (an
    /// `abi::DTYPE_*` code): inference, or one training step when `train`.
    pub fn model_run(
        &self,
        handle: u64,
        batch: u32,
        shape: &[u64],
        dtype: i32,
        train: bool,
    ) -> Result<()> {
        // SAFETY: `shape` is a live slice of `shape.len()` u64s (valid for the reads the backend
        // does), the rest are plain values and `call`'s live `(err, cap)` buffer (BackendApi's
        // calling contract); `self.api` is the checked static table.
        call(|err, cap| unsafe {
            (self.api.model_run)(
                handle,
                batch,
                shape.as_ptr(),
                shape.len(),
                dtype,
                u8::from(train),
                err,
                cap,
            )
        })
    }

    /// Frees a loaded model.
    pub fn model_free(&self, handle: u64) -> Result<()> {
        // SAFETY: a plain integer (looked up by the backend) and `call`'s live `(err, cap)` buffer.
        call(|err, cap| unsafe { (self.api.model_free)(handle, err, cap) })
    }

    /// How many models the backend holds now (a diagnostic: 0 once every model is freed).
    pub fn model_count(&self) -> Result<u64> {
        let mut out = 0u64;
        // SAFETY: `out` is a live, aligned u64 and `(err, cap)` is `call`'s live buffer
        // (BackendApi's calling contract); `self.api` is the checked static table.
        call(|err, cap| unsafe { (self.api.model_count)(&mut out, err, cap) })?;
        Ok(out)
    }

    /// Limits the caching allocator of a device to `fraction` of its memory.
    pub fn set_memory_fraction(&self, kind: DeviceKind, index: u32, fraction: f64) -> Result<()> {
        let index = index_code(index)?;
        // SAFETY: plain values (the backend checks the fraction) and `call`'s live `(err, cap)`
        // buffer, as BackendApi's calling contract requires; `self.api` is the checked static table.
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
            libtorch_preloaded: false,
            libtorch_found_by: Some(discovery::Source::Built),
        }
    }

    #[test]
    fn a_torch_error_that_reports_out_of_memory_is_an_out_of_memory_error() {
        let fail_with = |status: i32, text: &str| {
            call(|buf, cap| {
                // SAFETY: `call` hands its own buffer of `cap` bytes, writable during this closure.
                unsafe { sda_backend_abi::write_message(buf, cap, text) };
                status
            })
            .unwrap_err()
        };
        for text in [
            "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
            "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
            "RuntimeError: could not create a primitive",
        ] {
            assert_eq!(
                fail_with(abi::STATUS_TORCH_ERROR, text).kind(),
                ErrorKind::OutOfMemory,
                "{text}"
            );
        }
        let other = fail_with(
            abi::STATUS_TORCH_ERROR,
            "Expected all tensors to be on the same device",
        );
        assert_eq!(other.kind(), ErrorKind::Torch);
    }

    #[test]
    fn a_different_libtorch_version_is_refused_with_both_versions_and_the_fix() {
        assert!(check_libtorch_version(&info("2.13.0", Some("2.13.0"))).is_ok());
        assert!(check_libtorch_version(&info("2.13.0", None)).is_ok());
        let e = check_libtorch_version(&info("2.13.0", Some("2.9.1"))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LibtorchVersionMismatch);
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
