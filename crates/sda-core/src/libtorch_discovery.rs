//! Which libtorch the torch backend runs on, and which backend module matches it: found at run time,
//! in the manner of the `ort` crate's dynamic loading (`ORT_DYLIB_PATH`), so that an installed libsda
//! does not depend on the build tree's torch.
//!
//! The order, each step named in the error when nothing is found:
//!
//! 1. a libtorch already mapped in the process (the host's own, or Python's after `import torch`): the
//!    backend must bind to it, so the module built for its version is chosen, or none is loaded;
//! 2. `SDA_LIBTORCH`, else the config key `hardware.libtorch`: a directory holding libtorch's
//!    libraries (`…/torch/lib`; its parent, `…/torch`, is accepted too). Explicit, so the only one;
//! 3. a libtorch bundled beside the backend (`<lib>/sda/libtorch/lib`, what `make install
//!    BUNDLE_LIBTORCH=1` writes);
//! 4. the libtorch each backend module was built against (recorded in the module).
//!
//! A candidate's version is read without loading it (torch's `version.py` beside `lib/`, or
//! libtorch's `build-version`), and so is each module's (the exported record
//! `sda_backend_abi::BUILT_LIBTORCH_SYMBOL`). Modules: `libsda_torch.so` (the default, libtorch 2.13)
//! and `libsda_torch-MAJOR.MINOR.so` beside it (`libsda_torch-2.11.so`). Before the module is opened,
//! the chosen libtorch (steps 2–4) is preloaded with `RTLD_GLOBAL` — `libc10`, then `libtorch_cpu`,
//! whose own dependencies (`libgomp`, the CUDA runtime) resolve through its `$ORIGIN` run path — so
//! the module's `libtorch_cpu.so` and `libc10.so` resolve to it, whatever the module's run path says.

use crate::error::{Error, Result};
use crate::platform;
use crate::platform::MODULE_FILE_NAME;
use sda_backend_abi as abi;
use std::path::{Path, PathBuf};

/// Environment variable naming the libtorch directory explicitly (read when the backend is loaded).
pub const LIBTORCH_ENV: &str = "SDA_LIBTORCH";
/// Where a bundled libtorch lies, relative to the backend module's directory (`<prefix>/lib`).
pub const BUNDLED_DIR: &str = "sda/libtorch/lib";

/// How the libtorch was found (the discovery step), for messages and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Already mapped in the process.
    Mapped,
    /// `SDA_LIBTORCH`.
    Env,
    /// The config key `hardware.libtorch`.
    Config,
    /// Bundled beside the backend.
    Bundled,
    /// The libtorch the module was built against.
    Built,
}

impl Source {
    /// Every step, in the order of the search.
    pub const ALL: [Source; 5] = [
        Source::Mapped,
        Source::Env,
        Source::Config,
        Source::Bundled,
        Source::Built,
    ];

    /// The step's short, stable machine name, for the JSON report and the C ABI's
    /// `sda_backend_details.libtorch_found_by`: `mapped`, `SDA_LIBTORCH`, `hardware.libtorch`,
    /// `bundled` or `built`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mapped => "mapped",
            Source::Env => LIBTORCH_ENV,
            Source::Config => "hardware.libtorch",
            Source::Bundled => "bundled",
            Source::Built => "built",
        }
    }

    /// The step named `name` by [`Source::as_str`].
    pub fn from_name(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The step in words.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Mapped => "already in the process",
            Source::Env => "named by SDA_LIBTORCH",
            Source::Config => "named by the config key hardware.libtorch",
            Source::Bundled => "bundled with libsda",
            Source::Built => "the one the backend was built against",
        }
    }
}

/// A libtorch directory and what is known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Libtorch {
    /// The directory holding `libtorch_cpu` (canonical when possible).
    pub dir: PathBuf,
    /// Its version (`2.13.0`), when a version file says so.
    pub version: Option<String>,
    /// How it was found.
    pub source: Source,
}

/// A backend module file and the libtorch it was built for, read from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's path.
    pub path: PathBuf,
    /// The libtorch version it was built against, when the file says so.
    pub built_version: Option<String>,
    /// The libtorch `lib/` directory it was built against, when the file says so.
    pub built_dir: Option<PathBuf>,
}

impl Module {
    /// Reads what `path` records about its libtorch (the exported record; for a module without one,
    /// the version of the libtorch its run path names).
    pub fn read(path: &Path) -> Module {
        let record =
            platform::exported_bytes(path, abi::BUILT_LIBTORCH_SYMBOL, abi::BUILT_LIBTORCH_LEN)
                .and_then(|r| abi::parse_built_libtorch(&r));
        match record {
            Some((version, dir)) => Module {
                path: path.to_path_buf(),
                built_version: Some(version),
                built_dir: (!dir.as_os_str().is_empty()).then_some(dir),
            },
            None => {
                let dir = platform::search_dirs(path)
                    .into_iter()
                    .find(|d| d.join(abi::LIBTORCH_CPU).is_file());
                Module {
                    path: path.to_path_buf(),
                    built_version: dir
                        .as_ref()
                        .and_then(|d| read_libtorch_version(&d.join(abi::LIBTORCH_CPU)).0),
                    built_dir: dir,
                }
            }
        }
    }

    /// "libtorch 2.13.0 (libsda_torch.so)".
    fn describe(&self) -> String {
        format!(
            "libtorch {} ({})",
            self.built_version
                .as_deref()
                .unwrap_or("of unknown version"),
            self.path.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}

/// File name of the module built for libtorch `major.minor` (`libsda_torch-2.11.so`).
pub fn versioned_module_name(version: &str) -> String {
    let short: Vec<&str> = version.split('.').take(2).collect();
    let (stem, ext) = MODULE_FILE_NAME
        .rsplit_once('.')
        .unwrap_or((MODULE_FILE_NAME, ""));
    format!("{stem}-{}.{ext}", short.join("."))
}

/// The modules in `dir`: the default `libsda_torch.so` first, then the versioned ones by name.
pub fn modules_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let default = dir.join(MODULE_FILE_NAME);
    if default.is_file() {
        out.push(default);
    }
    let (stem, ext) = MODULE_FILE_NAME
        .rsplit_once('.')
        .unwrap_or((MODULE_FILE_NAME, ""));
    let prefix = format!("{stem}-");
    let suffix = format!(".{ext}");
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(&suffix))
                    .is_some_and(|v| {
                        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')
                    })
            }) && p.is_file()
        })
        .collect();
    versioned.sort();
    out.extend(versioned);
    out
}

/// The libtorch `dir` names (a directory holding `libtorch_cpu`, or one whose `lib/` does).
fn libtorch_in(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), dir.join("lib")]
        .into_iter()
        .find(|d| d.join(abi::LIBTORCH_CPU).is_file())
        .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
}

fn at(dir: PathBuf, source: Source) -> Libtorch {
    let version = read_libtorch_version(&dir.join(abi::LIBTORCH_CPU)).0;
    Libtorch {
        dir,
        version,
        source,
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

/// What the discovery chose: the module to open and the libtorch it will run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The module to open.
    pub module: Module,
    /// The libtorch it runs on.
    pub libtorch: Libtorch,
}

/// Chooses the libtorch (steps 1–4 of the module docs) and the module among `modules` that matches
/// it. `env` is `$SDA_LIBTORCH`, `configured` the config's `hardware.libtorch` (empty = not set).
pub fn choose(
    modules: &[Module],
    env: Option<&std::ffi::OsStr>,
    configured: &str,
) -> Result<Choice> {
    let mapped = platform::mapped_library(abi::LIBTORCH_CPU);
    choose_with(modules, mapped.as_deref(), env, configured)
}

fn choose_with(
    modules: &[Module],
    mapped: Option<&Path>,
    env: Option<&std::ffi::OsStr>,
    configured: &str,
) -> Result<Choice> {
    let accepted = accepted(modules);
    // 1. Already in the process: nothing else may be loaded beside it.
    if let Some(mapped) = mapped {
        let dir = mapped.parent().unwrap_or(Path::new("")).to_path_buf();
        let libtorch = Libtorch {
            version: read_libtorch_version(mapped).0,
            dir,
            source: Source::Mapped,
        };
        return matching(modules, libtorch).map_err(|(version, libtorch)| {
            let module = &modules[0];
            let built = module.built_version.as_deref().unwrap_or("?");
            Error::libtorch_version_mismatch(format!(
                "the process already holds libtorch {version} ({}), but the torch backend {} was \
                 built against libtorch {built}{}, so it was not loaded; run the host with libtorch \
                 {built} (torch=={built}), or use a libsda backend built for libtorch {version}",
                libtorch.dir.join(abi::LIBTORCH_CPU).display(),
                module.path.display(),
                if modules.len() > 1 {
                    format!(" (this libsda has backends for {accepted})")
                } else {
                    String::new()
                },
            ))
        });
    }
    // 2. Named explicitly: the only candidate.
    let named = env
        .filter(|e| !e.is_empty())
        .map(|e| (PathBuf::from(e), Source::Env))
        .or_else(|| {
            let c = configured.trim();
            (!c.is_empty()).then(|| (PathBuf::from(c), Source::Config))
        });
    if let Some((dir, source)) = named {
        let name = match source {
            Source::Env => format!("{LIBTORCH_ENV}={}", dir.display()),
            _ => format!("the config key hardware.libtorch = {}", dir.display()),
        };
        let found = libtorch_in(&dir).ok_or_else(|| {
            Error::backend_unavailable(format!(
                "{name} holds no libtorch: neither it nor its lib/ has {}; point it at the \
                 lib/ directory of libtorch {accepted} (for a PyPI torch: site-packages/torch/lib, after pip \
                 install torch)",
                abi::LIBTORCH_CPU
            ))
        })?;
        return matching(modules, at(found, source))
            .map_err(|(version, libtorch)| mismatch(&version, &libtorch, &name, &accepted));
    }
    // 3. Bundled beside a module.
    let mut dirs: Vec<PathBuf> = Vec::new();
    for module in modules {
        if let Some(dir) = module.path.parent() {
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
    }
    let bundles: Vec<PathBuf> = dirs.iter().map(|d| d.join(BUNDLED_DIR)).collect();
    if let Some(found) = bundles.iter().find_map(|b| libtorch_in(b)) {
        let found = at(found, Source::Bundled);
        let name = format!("the bundled libtorch {}", found.dir.display());
        return matching(modules, found)
            .map_err(|(version, libtorch)| mismatch(&version, &libtorch, &name, &accepted));
    }
    // 4. What each module was built against.
    for module in modules {
        if let Some(found) = module.built_dir.as_deref().and_then(libtorch_in) {
            return Ok(Choice {
                module: module.clone(),
                libtorch: at(found, Source::Built),
            });
        }
    }
    let built: Vec<String> = modules
        .iter()
        .map(|m| match &m.built_dir {
            Some(d) => format!("{} (missing)", d.display()),
            None => format!("{} records none", m.path.display()),
        })
        .collect();
    let bundles: Vec<String> = bundles.iter().map(|b| b.display().to_string()).collect();
    Err(Error::backend_unavailable(format!(
        "no libtorch was found for the torch backend. Looked, in order: (1) a libtorch already in \
         the process: none is mapped; (2) {LIBTORCH_ENV} and the config key hardware.libtorch: \
         neither is set; (3) a libtorch bundled with libsda: none in {}; (4) the libtorch the \
         backend was built against: {}. This libsda accepts libtorch {accepted}: set {LIBTORCH_ENV} \
         (or hardware.libtorch) to the lib/ directory of one (for example site-packages/torch/lib \
         after pip install torch=={}), load torch in the host first, or install libsda with \
         BUNDLE_LIBTORCH=1",
        if bundles.is_empty() { "no place".to_string() } else { bundles.join(", ") },
        if built.is_empty() { "none recorded".to_string() } else { built.join(", ") },
        modules
            .first()
            .and_then(|m| m.built_version.as_deref())
            .unwrap_or("2.13.0"),
    )))
}

/// The module for `libtorch`'s version (the first, when the version is unknown: the check after
/// loading stands), or (that version, `libtorch`) when none matches.
fn matching(
    modules: &[Module],
    libtorch: Libtorch,
) -> std::result::Result<Choice, (String, Libtorch)> {
    let module = match &libtorch.version {
        None => modules.first(),
        Some(v) => modules
            .iter()
            .find(|m| m.built_version.as_deref() == Some(v.as_str())),
    };
    match module {
        Some(module) => Ok(Choice {
            module: module.clone(),
            libtorch,
        }),
        None => Err((libtorch.version.clone().unwrap_or_default(), libtorch)),
    }
}

fn mismatch(version: &str, libtorch: &Libtorch, name: &str, accepted: &str) -> Error {
    Error::libtorch_version_mismatch(format!(
        "{name} is libtorch {version} ({}), but this libsda's torch backends are built for libtorch \
         {accepted}; point {LIBTORCH_ENV} (or hardware.libtorch) at a libtorch of one of those \
         versions, or install the libsda backend built for libtorch {version}",
        libtorch.dir.display()
    ))
}

/// "2.13.0 (libsda_torch.so) or 2.11.0 (libsda_torch-2.11.so)".
fn accepted(modules: &[Module]) -> String {
    let all: Vec<String> = modules
        .iter()
        .map(|m| m.describe().trim_start_matches("libtorch ").to_string())
        .collect();
    match all.len() {
        0 => "(no backend module found)".to_string(),
        _ => all.join(" or "),
    }
}

/// Preloads the chosen libtorch (`libc10`, then `libtorch_cpu`, `RTLD_GLOBAL`) so that the module
/// opened next binds to it; nothing to do for one already in the process. The libraries stay loaded
/// for the life of the process (libtorch cannot be unloaded safely).
pub fn preload(libtorch: &Libtorch) -> Result<()> {
    if libtorch.source == Source::Mapped {
        return Ok(());
    }
    // libc10.so / libc10.dylib / c10.dll: libtorch_cpu's name with `torch_cpu` → `c10`.
    let c10 = abi::LIBTORCH_CPU.replace("torch_cpu", "c10");
    for name in [c10.as_str(), abi::LIBTORCH_CPU] {
        let path = libtorch.dir.join(name);
        if !path.is_file() {
            continue;
        }
        // A library cut short would be mapped all the same and kill the host on first touch.
        if let Some(cut) = platform::find_truncated(&path, std::slice::from_ref(&libtorch.dir)) {
            return Err(Error::backend_unavailable(format!(
                "the libtorch in {} ({}) is damaged: {} is {} bytes, but its loadable segments need \
                 {} (cut short by an interrupted copy or install?); it was not loaded, because \
                 mapping it would crash the process. Reinstall it (pip install --force-reinstall \
                 torch) or point {LIBTORCH_ENV} at another",
                libtorch.dir.display(),
                libtorch.source.describe(),
                cut.path.display(),
                cut.size,
                cut.needed
            )));
        }
        // SAFETY: loading libtorch runs its static initialisers, which is what the backend needs
        // anyway (the module itself links it); the handle is leaked, so the library stays mapped.
        let library = unsafe { platform::open_library_global(&path) }.map_err(|e| {
            Error::backend_unavailable(format!(
                "could not load libtorch from {} ({}): {e}; reinstall that libtorch or point \
                 {LIBTORCH_ENV} at another",
                libtorch.dir.display(),
                libtorch.source.describe()
            ))
        })?;
        std::mem::forget(library);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, version: &str, built: &str) -> Module {
        Module {
            path: PathBuf::from(path),
            built_version: Some(version.to_string()),
            built_dir: Some(PathBuf::from(built)),
        }
    }

    fn fake_libtorch(root: &Path, version: &str) -> PathBuf {
        let lib = root.join("torch/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join(abi::LIBTORCH_CPU), b"").unwrap();
        std::fs::write(
            root.join("torch/version.py"),
            format!("__version__ = '{version}+cpu'\n"),
        )
        .unwrap();
        std::fs::canonicalize(lib).unwrap()
    }

    #[test]
    fn every_step_has_a_distinct_machine_name_that_reads_back() {
        let names: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "mapped",
                "SDA_LIBTORCH",
                "hardware.libtorch",
                "bundled",
                "built"
            ]
        );
        for s in Source::ALL {
            assert_eq!(Source::from_name(s.as_str()), Some(s));
            // The C ABI's field holds 32 bytes with the NUL.
            assert!(s.as_str().len() < 32, "{}", s.as_str());
        }
        assert_eq!(Source::from_name("elsewhere"), None);
    }

    #[test]
    fn versioned_names_keep_the_platform_suffix() {
        let name = versioned_module_name("2.11.0");
        assert!(name.contains("sda_torch-2.11."), "{name}");
        assert!(name.ends_with(MODULE_FILE_NAME.rsplit('.').next().unwrap()));
    }

    #[test]
    fn the_module_matching_the_named_libtorch_is_chosen_and_a_mismatch_names_the_versions() {
        let dir = tempfile::tempdir().unwrap();
        let lt = fake_libtorch(dir.path(), "2.11.0");
        let modules = [
            module("/p/lib/libsda_torch.so", "2.13.0", "/gone/a"),
            module("/p/lib/libsda_torch-2.11.so", "2.11.0", "/gone/b"),
        ];
        let env = lt.clone().into_os_string();
        let c = choose_with(&modules, None, Some(&env), "").unwrap();
        assert_eq!(c.module.path, PathBuf::from("/p/lib/libsda_torch-2.11.so"));
        assert_eq!(
            (c.libtorch.dir.as_path(), c.libtorch.source),
            (lt.as_path(), Source::Env)
        );
        // The torch directory (lib/'s parent) is accepted too; the config key when the env is unset.
        let parent = lt.parent().unwrap().to_str().unwrap().to_string();
        let c = choose_with(&modules, None, None, &parent).unwrap();
        assert_eq!(c.libtorch.source, Source::Config);
        let e = choose_with(&modules[..1], None, Some(&env), "").unwrap_err();
        for needle in ["SDA_LIBTORCH", "2.11.0", "2.13.0", "libsda_torch.so"] {
            assert!(e.message().contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn nothing_found_names_every_step_and_the_accepted_versions() {
        let modules = [
            module("/nowhere/lib/libsda_torch.so", "2.13.0", "/gone/torch/lib"),
            module(
                "/nowhere/lib/libsda_torch-2.11.so",
                "2.11.0",
                "/gone/t211/lib",
            ),
        ];
        let e = choose_with(&modules, None, None, "").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::BackendUnavailable);
        for needle in [
            "SDA_LIBTORCH",
            "hardware.libtorch",
            "/nowhere/lib/sda/libtorch/lib",
            "/gone/torch/lib (missing)",
            "2.13.0 (libsda_torch.so) or 2.11.0 (libsda_torch-2.11.so)",
            "BUNDLE_LIBTORCH=1",
        ] {
            assert!(e.message().contains(needle), "{needle}: {e}");
        }
        let e =
            choose_with(&modules, None, Some(std::ffi::OsStr::new("/no/such")), "").unwrap_err();
        assert!(
            e.message()
                .contains("SDA_LIBTORCH=/no/such holds no libtorch"),
            "{e}"
        );
    }

    #[test]
    fn a_bundle_comes_before_the_built_libtorch_and_a_mapped_one_before_all() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        let bundle = lib.join("sda/libtorch");
        std::fs::create_dir_all(bundle.join("lib")).unwrap();
        std::fs::write(bundle.join("lib").join(abi::LIBTORCH_CPU), b"").unwrap();
        std::fs::write(bundle.join("build-version"), "2.13.0+cpu\n").unwrap();
        let built = fake_libtorch(dir.path(), "2.11.0");
        let modules = [
            module(
                lib.join("libsda_torch.so").to_str().unwrap(),
                "2.13.0",
                "/gone",
            ),
            module(
                lib.join("libsda_torch-2.11.so").to_str().unwrap(),
                "2.11.0",
                built.to_str().unwrap(),
            ),
        ];
        let c = choose_with(&modules, None, None, "").unwrap();
        assert_eq!(c.libtorch.source, Source::Bundled);
        assert_eq!(c.libtorch.version.as_deref(), Some("2.13.0"));
        assert!(c.module.path.ends_with("libsda_torch.so"));
        std::fs::remove_dir_all(&bundle).unwrap();
        let c = choose_with(&modules, None, None, "").unwrap();
        assert_eq!(
            (c.libtorch.source, c.libtorch.dir.clone()),
            (Source::Built, built.clone())
        );
        assert!(c.module.path.ends_with("libsda_torch-2.11.so"));
        // Mapped wins even over an explicit directory.
        let mapped = built.join(abi::LIBTORCH_CPU);
        let c = choose_with(
            &modules,
            Some(&mapped),
            Some(std::ffi::OsStr::new("/x")),
            "",
        )
        .unwrap();
        assert_eq!(c.libtorch.source, Source::Mapped);
        assert!(c.module.path.ends_with("libsda_torch-2.11.so"));
    }

    #[test]
    fn modules_in_a_directory_are_the_default_then_the_versioned_ones() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            versioned_module_name("2.11.0"),
            MODULE_FILE_NAME.to_string(),
            versioned_module_name("2.9.0"),
            format!("{MODULE_FILE_NAME}.bak"),
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = modules_in(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                MODULE_FILE_NAME.to_string(),
                versioned_module_name("2.11.0"),
                versioned_module_name("2.9.0")
            ]
        );
    }
}
