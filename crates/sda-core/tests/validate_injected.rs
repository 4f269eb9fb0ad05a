//! Environment validation on injected facts (drivers, backends and file-system answers this machine
//! does not have), and on this machine, where it must change nothing.

use sda_core::backend::BackendInfo;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::device::{CudaDevice, CudaPresence};
use sda_core::error::Error;
use sda_core::libtorch_discovery::Source;
use sda_core::validate::{self, BackendState, Facts, Problem, Severity, ValidateOptions};
use std::path::{Path, PathBuf};

fn no_env(_: &str) -> Option<String> {
    None
}

fn always_writable(_: &Path) -> bool {
    true
}

fn gpus(n: u32, driver: &str) -> CudaPresence {
    CudaPresence::Present {
        driver_version: driver.to_string(),
        devices: (0..n)
            .map(|i| CudaDevice {
                index: i,
                name: format!("GPU {i}"),
                total_memory: 16 << 30,
                compute_capability: (8, 0),
            })
            .collect(),
    }
}

fn no_driver() -> CudaPresence {
    CudaPresence::Absent("no NVIDIA driver: libcuda.so.1 not found".into())
}

fn backend_info(cuda: Option<&str>) -> BackendInfo {
    BackendInfo {
        module_path: PathBuf::from("/opt/sda/libsda_torch.so"),
        built_libtorch_version: "2.13.0".into(),
        built_libtorch_dir: PathBuf::from("/build/torch/lib"),
        loaded_libtorch_path: PathBuf::from("/opt/torch/lib/libtorch_cpu.so"),
        loaded_libtorch_version: Some("2.13.0".into()),
        libtorch_cuda_version: cuda.map(str::to_string),
        cuda_build: cuda.is_some(),
        libtorch_preloaded: false,
        libtorch_found_by: Some(Source::Built),
    }
}

/// A config whose data directories exist (inside `dir`).
fn config_in(dir: &Path) -> Config {
    let mut c = Config::default();
    for key in ["datasets", "models", "generated"] {
        let p = dir.join(key);
        std::fs::create_dir_all(&p).unwrap();
        c.set(&format!("paths.{key}"), p.to_str().unwrap()).unwrap();
    }
    c
}

fn check_with(
    config: &Config,
    cuda: CudaPresence,
    backend: BackendState,
    env: &dyn Fn(&str) -> Option<String>,
    writable: &dyn Fn(&Path) -> bool,
) -> Vec<Problem> {
    validate::check(
        config,
        &Facts {
            cuda,
            backend,
            macos: false,
            env,
            writable,
        },
    )
}

fn check(config: &Config, cuda: CudaPresence, backend: BackendState) -> Vec<Problem> {
    check_with(config, cuda, backend, &no_env, &always_writable)
}

fn codes(problems: &[Problem]) -> Vec<(Severity, &'static str)> {
    problems.iter().map(|p| (p.severity, p.code)).collect()
}

fn find<'a>(problems: &'a [Problem], code: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.code == code)
        .unwrap_or_else(|| panic!("no {code} in {problems:#?}"))
}

fn loaded(cuda: Option<&str>) -> BackendState {
    BackendState::Loaded(backend_info(cuda))
}

#[test]
fn a_machine_without_a_driver_is_information_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_in(dir.path());
    // CPU-only libtorch, no driver: one info.
    let p = check(&c, no_driver(), loaded(None));
    assert_eq!(codes(&p), vec![(Severity::Info, "cuda.no_driver")]);
    assert!(p[0].message.contains("libcuda.so.1 not found"));
    assert!(p[0].fix.contains("nothing to do"));
    // A CUDA build of libtorch without a driver: still information, naming the CUDA version.
    let p = check(&c, no_driver(), loaded(Some("13.0")));
    assert_eq!(codes(&p), vec![(Severity::Info, "cuda.no_driver")]);
    assert!(
        p[0].message.contains("CUDA build (CUDA 13.0)"),
        "{}",
        p[0].message
    );
    assert!(p[0].fix.contains("CUDA 13.0 or later"), "{}", p[0].fix);
    assert_eq!(validate::worst(&p), Some(Severity::Info));
}

#[test]
fn a_driver_older_than_the_runtime_is_an_error_and_an_older_minor_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_in(dir.path());
    let p = check(&c, gpus(1, "12.4"), loaded(Some("13.0")));
    let e = find(&p, "cuda.driver_too_old");
    assert_eq!(e.severity, Severity::Error);
    assert!(
        e.message.contains("12.4") && e.message.contains("13.0"),
        "{}",
        e.message
    );
    assert!(e.fix.contains("update the NVIDIA driver"), "{}", e.fix);
    let p = check(&c, gpus(2, "12.4"), loaded(Some("12.8")));
    assert_eq!(
        codes(&p),
        vec![(Severity::Warning, "cuda.driver_older_minor")]
    );
    for ok in ["12.8", "13.0"] {
        assert!(
            check(&c, gpus(8, ok), loaded(Some("12.8"))).is_empty(),
            "{ok}"
        );
    }
    // GPUs present but a CPU-only libtorch.
    let p = check(&c, gpus(2, "12.8"), loaded(None));
    assert_eq!(codes(&p), vec![(Severity::Warning, "libtorch.cpu_only")]);
    assert!(p[0].message.contains("2 NVIDIA GPUs"), "{}", p[0].message);
}

#[test]
fn backend_problems_are_errors_with_their_own_codes() {
    let dir = tempfile::tempdir().unwrap();
    let c = config_in(dir.path());
    let p = check(
        &c,
        no_driver(),
        BackendState::NotLoaded(Err("the torch backend module was not found".into())),
    );
    let e = find(&p, "backend.missing");
    assert_eq!(e.severity, Severity::Error);
    assert!(e.fix.contains("SDA_BACKEND"), "{}", e.fix);
    // Errors come first.
    assert_eq!(p[0].severity, Severity::Error);

    let mismatch = Error::libtorch_version_mismatch(
        "the torch backend /x was built against libtorch 2.13.0 but the process loaded libtorch \
         2.9.1 from /y; install torch==2.13.0"
            .into(),
    );
    let p = check(&c, no_driver(), BackendState::Failed(mismatch));
    assert_eq!(
        find(&p, "libtorch.version_mismatch").severity,
        Severity::Error
    );
    assert!(find(&p, "libtorch.version_mismatch")
        .message
        .contains("2.9.1"));

    let p = check(
        &c,
        no_driver(),
        BackendState::Failed(Error::backend_unavailable(
            "could not load the torch backend: libtorch_cpu.so: cannot open".into(),
        )),
    );
    assert_eq!(find(&p, "backend.unloadable").severity, Severity::Error);

    let p = check(
        &c,
        no_driver(),
        BackendState::NotLoaded(Ok(PathBuf::from("/opt/sda/libsda_torch.so"))),
    );
    assert_eq!(find(&p, "backend.not_checked").severity, Severity::Info);

    let mut unknown = backend_info(None);
    unknown.loaded_libtorch_version = None;
    let p = check(&c, no_driver(), BackendState::Loaded(unknown));
    assert_eq!(
        find(&p, "libtorch.version_unknown").severity,
        Severity::Info
    );
}

#[test]
fn data_directories_missing_unwritable_or_not_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    // Missing but creatable: the first run creates it.
    let missing = dir.path().join("new/models");
    c.set("paths.models", missing.to_str().unwrap()).unwrap();
    // A file where a directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    c.set("paths.generated", file.to_str().unwrap()).unwrap();
    // Below a file: cannot be created.
    c.set("paths.datasets", file.join("sub").to_str().unwrap())
        .unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert_eq!(find(&p, "paths.missing").severity, Severity::Info);
    assert!(find(&p, "paths.missing").message.contains("paths.models"));
    assert!(find(&p, "paths.missing").fix.contains("sda config init"));
    assert_eq!(find(&p, "paths.not_directory").severity, Severity::Error);
    assert!(find(&p, "paths.not_directory")
        .message
        .contains("paths.generated"));
    assert_eq!(find(&p, "paths.not_creatable").severity, Severity::Error);
    assert!(find(&p, "paths.not_creatable")
        .message
        .contains("paths.datasets"));

    // Not writable (injected: the tests run as root, for whom permission bits do not stop writes).
    let c = config_in(dir.path());
    let models = PathBuf::from(&c.paths.models);
    let writable = move |p: &Path| p != models;
    let p = check_with(&c, no_driver(), loaded(None), &no_env, &writable);
    let e = find(&p, "paths.not_writable");
    assert_eq!(e.severity, Severity::Error);
    assert!(e.message.contains("paths.models"), "{}", e.message);
    assert!(e.fix.contains("sda config set paths.models"), "{}", e.fix);
    // Relative paths say what they are relative to.
    let mut c = config_in(dir.path());
    c.set("paths.models", "no/such/relative/dir").unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert!(find(&p, "paths.missing")
        .message
        .contains("relative to the current directory"));
}

#[test]
fn configured_devices_the_machine_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    c.set("hardware.device", "cuda:3").unwrap();
    let p = check(&c, gpus(1, "12.8"), loaded(Some("12.8")));
    let e = find(&p, "config.device_out_of_range");
    assert_eq!(e.severity, Severity::Error);
    assert!(e.message.contains("cuda:3") && e.message.contains("cuda:0..=cuda:0"));
    assert!(check(&c, gpus(8, "12.8"), loaded(Some("12.8"))).is_empty());

    c.set("hardware.device", "cuda").unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert_eq!(find(&p, "device.fallback").severity, Severity::Warning);
    c.set("hardware.strict", "true").unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert_eq!(find(&p, "device.unavailable").severity, Severity::Error);

    let mut c = config_in(dir.path());
    c.set("hardware.device", "mps").unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert!(find(&p, "device.fallback")
        .message
        .contains("Apple silicon"));
}

#[test]
fn config_values_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    c.set("hardware.memory_strategy", "custom").unwrap();
    c.set("hardware.memory_fraction", "0.99").unwrap();
    let p = check(&c, no_driver(), loaded(None));
    assert_eq!(
        find(&p, "config.memory_fraction_high").severity,
        Severity::Warning
    );
    // A value outside its range written into the public fields.
    c.hardware.memory_fraction = 3.0;
    let p = check(&c, no_driver(), loaded(None));
    let e = find(&p, "config.invalid");
    assert_eq!(e.severity, Severity::Error);
    assert!(
        e.message.contains("hardware.memory_fraction"),
        "{}",
        e.message
    );
    // A file that does not load, as `sda doctor` reports it.
    let err = Config::from_toml_str("[hardware]\nmemory_fraction = 7\n").unwrap_err();
    let e = Problem::config_not_loaded(Path::new("/etc/sda.toml"), &err);
    assert_eq!((e.severity, e.code), (Severity::Error, "config.invalid"));
    assert!(e.message.contains("hardware.memory_fraction"));
    assert!(e.fix.contains("/etc/sda.toml"));
}

#[test]
fn the_process_environment_wins_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    c.set("environment.OMP_NUM_THREADS", "4").unwrap();
    c.set("environment.SAME", "x").unwrap();
    let env = |name: &str| match name {
        "OMP_NUM_THREADS" => Some("8".to_string()),
        "SAME" => Some("x".to_string()),
        _ => None,
    };
    let p = check_with(&c, no_driver(), loaded(None), &env, &always_writable);
    assert_eq!(codes(&p).len(), 2, "{p:#?}");
    let e = find(&p, "environment.process_value_kept");
    assert_eq!(e.severity, Severity::Info);
    assert!(e.message.contains("OMP_NUM_THREADS=8"), "{}", e.message);
    // A variable the process lacks after the backend was loaded came too late.
    c.set("environment.SDA_TEST_NEVER_SET", "1").unwrap();
    let p = check_with(&c, no_driver(), loaded(None), &env, &always_writable);
    assert_eq!(find(&p, "environment.too_late").severity, Severity::Warning);
}

#[test]
fn validating_this_machine_changes_nothing_and_finds_only_information() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config_in(dir.path());
    let missing = dir.path().join("to/be/created");
    c.set("paths.generated", missing.to_str().unwrap()).unwrap();
    let context = Context::new(c);
    let p = validate::validate(&context, ValidateOptions::default());
    assert!(!missing.exists(), "validation created a directory");
    assert!(
        sda_core::backend::loaded().is_none(),
        "validation loaded libtorch unasked"
    );
    assert!(p.iter().all(|x| x.severity == Severity::Info), "{p:#?}");
    if sda_core::cuda_driver::cuda_facts().reason().is_some() {
        assert_eq!(find(&p, "cuda.no_driver").severity, Severity::Info);
    }
}
