//! The core loading the real torch backend module (built by this workspace) with real libtorch, on the
//! CPU. Each test runs in its own process under nextest, so "not loaded yet" is a real state.

use sda_core::backend;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::ErrorKind;
use sda_core::libtorch_discovery::Source;
use sda_core::preference::DeviceKind;
use sda_core::report::{self, Verbosity};
use sda_core::validate::ValidateOptions;

fn libtorch_mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains("libtorch_cpu.so")
}

#[test]
fn cpu_work_without_torch_maps_no_libtorch_then_an_explicit_load_does() {
    let ctx = Context::new(Config::default());
    ctx.select(Some("cpu")).unwrap();
    ctx.device_info().unwrap();
    let before = ctx.memory_info().unwrap();
    ctx.clear_cache().unwrap();
    ctx.reset_peak().unwrap();
    assert_eq!((before.allocated, before.peak), (0, 0));
    assert!(backend::loaded().is_none());
    assert!(!libtorch_mapped());

    let b = ctx.load_backend().unwrap();
    assert!(libtorch_mapped());
    let info = b.info();
    assert_eq!(info.built_libtorch_version, "2.13.0");
    assert_eq!(info.loaded_libtorch_version.as_deref(), Some("2.13.0"));
    assert!(info.loaded_libtorch_path.ends_with("libtorch_cpu.so"));
    assert!(info.module_path.ends_with("libsda_torch.so"));
    assert!(
        !info.libtorch_preloaded,
        "libtorch was loaded for the backend"
    );
    let found = info.libtorch_found_by.expect("the discovery step is known");
    assert_ne!(found, Source::Mapped, "nothing was in the process before");
    // A second load returns the same module.
    assert!(std::ptr::eq(b, ctx.load_backend().unwrap()));
}

#[test]
fn cpu_smoke_test_moves_the_peak_and_memory_info_reports_it() {
    let ctx = Context::new(Config::default());
    ctx.select(Some("cpu")).unwrap();
    let b = ctx.load_backend().unwrap();
    ctx.reset_peak().unwrap();
    let baseline = ctx.memory_info().unwrap();
    b.smoke_test(DeviceKind::Cpu, 0).unwrap();
    let after = ctx.memory_info().unwrap();
    // Two 32x32 fp32 inputs and a 32x32 product at least: 3 * 4 KiB.
    assert!(
        after.peak >= baseline.allocated + 3 * 4096,
        "{baseline:?} -> {after:?}"
    );
    assert_eq!(
        after.allocated, baseline.allocated,
        "the smoke test's tensors are freed"
    );
    ctx.reset_peak().unwrap();
    assert_eq!(ctx.memory_info().unwrap().peak, after.allocated);
}

#[test]
fn cuda_calls_without_cuda_are_errors_not_aborts() {
    let b = backend::load("").unwrap();
    let e = b.smoke_test(DeviceKind::Cuda, 0).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unsupported | ErrorKind::Torch),
        "{e:?}"
    );
    assert!(b.memory_stats(DeviceKind::Cuda, 0).is_err());
    assert!(b.empty_cache(DeviceKind::Cuda, 3).is_err());
    // The process still computes on the CPU afterwards.
    b.smoke_test(DeviceKind::Cpu, 0).unwrap();
}

#[test]
fn a_configured_backend_path_that_does_not_exist_is_an_error_naming_it() {
    // The test command does not set SDA_BACKEND, which would take precedence over the config.
    assert!(std::env::var_os(backend::BACKEND_ENV).is_none());
    let e = backend::load("/nonexistent/libsda_torch.so")
        .err()
        .expect("must not load another file");
    assert!(e.kind() == ErrorKind::BackendUnavailable);
    assert!(e.message().contains("/nonexistent/libsda_torch.so"), "{e}");
    assert!(!libtorch_mapped());
}

#[test]
fn a_failed_load_is_kept_until_the_host_asks_again_so_guarded_runs_do_not_search_each_time() {
    assert!(std::env::var_os(backend::BACKEND_ENV).is_none());
    assert!(
        backend::loaded().is_none(),
        "each test runs in its own process"
    );
    let mut config = Config::default();
    config.hardware.backend = "/nonexistent/libsda_torch.so".into();
    config.hardware.device = "cpu".into();
    let ctx = Context::new(config);
    let first = backend::load_attempts();
    let options = sda_core::guard::GuardOptions::default();
    for _ in 0..5 {
        let (result, report) = sda_core::guard::run_batched(&ctx, &options, &mut |_, _| Ok(()));
        result.unwrap();
        assert!(!report.measured, "no backend, so nothing was measured");
    }
    // Implicit needs (workload runs) get the kept failure, without a search either.
    let e = ctx
        .backend()
        .err()
        .expect("no module at the configured path");
    assert_eq!(e.kind(), ErrorKind::BackendUnavailable);
    assert_eq!(
        backend::load_attempts() - first,
        1,
        "the hot path searched for the module again"
    );
    // The host asks again (sda_backend_load): a real new attempt.
    assert!(ctx.load_backend().is_err());
    assert_eq!(backend::load_attempts() - first, 2);
}

/// Builds a stand-in `torch/lib/libtorch_cpu.so` (an empty shared object, compiled here with the C
/// compiler) under `root`, with a `torch/version.py` saying `version`: what a host that carries its
/// own libtorch of another version has mapped, as far as the loader's view of file names goes.
fn fake_libtorch(root: &std::path::Path, version: &str) -> std::path::PathBuf {
    let lib = root.join("torch/lib");
    std::fs::create_dir_all(&lib).unwrap();
    let source = root.join("empty.c");
    std::fs::write(&source, "int sda_test_fake_libtorch_marker = 1;\n").unwrap();
    let so = lib.join("libtorch_cpu.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&source)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success());
    std::fs::write(
        root.join("torch/version.py"),
        format!("__version__ = '{version}+cpu'\ncuda: Optional[str] = None\n"),
    )
    .unwrap();
    so
}

#[test]
fn a_libtorch_of_another_version_already_in_the_process_is_refused_before_the_backend_is_opened() {
    assert!(
        backend::loaded().is_none(),
        "each test runs in its own process"
    );
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_libtorch(dir.path(), "2.12.0");
    // SAFETY: the stand-in has no initialisers (one int), so loading it runs no code; the handle is
    // kept open for the rest of the test, as a host keeps its libtorch.
    let _host_libtorch = unsafe { libloading::Library::new(&fake) }.unwrap();
    let ctx = Context::new(Config::default());
    let e = ctx
        .load_backend()
        .err()
        .expect("a backend built for 2.13.0 must not bind to libtorch 2.12.0");
    assert_eq!(e.kind(), ErrorKind::LibtorchVersionMismatch, "{e}");
    let canonical = std::fs::canonicalize(&fake).unwrap();
    for needle in ["2.12.0", "2.13.0", canonical.to_str().unwrap()] {
        assert!(e.message().contains(needle), "{needle} missing: {e}");
    }
    assert!(backend::loaded().is_none());
    // The backend module, and with it the real libtorch, was never opened.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains("libsda_torch.so"), "the module was opened");
}

#[test]
fn a_libtorch_of_the_same_version_already_in_the_process_is_shared() {
    // The libtorch the backend was built against, mapped first, as a C++ host linked with the same
    // libtorch would have it (LIBTORCH is set for every build and test run: torch-sys needs it).
    let libtorch = std::env::var("LIBTORCH").expect("LIBTORCH names the libtorch of the build");
    let cpu = std::path::Path::new(&libtorch).join("lib/libtorch_cpu.so");
    // SAFETY: this is the libtorch the backend links; loading it first is what a host does. The
    // handle stays open for the whole process (libtorch is never unloaded).
    let host_libtorch = unsafe { libloading::Library::new(&cpu) }.unwrap();
    std::mem::forget(host_libtorch);
    let ctx = Context::new(Config::default());
    let b = ctx.load_backend().unwrap();
    assert_eq!(
        b.info().loaded_libtorch_version.as_deref(),
        Some(b.info().built_libtorch_version.as_str())
    );
    assert!(
        b.info().libtorch_preloaded,
        "the host's libtorch was there first"
    );
    assert_eq!(b.info().libtorch_found_by, Some(Source::Mapped));
}

#[test]
fn the_config_key_hardware_libtorch_names_the_libtorch_the_backend_runs_on() {
    let libtorch = std::env::var("LIBTORCH").expect("LIBTORCH names the libtorch of the build");
    let lib = std::fs::canonicalize(std::path::Path::new(&libtorch).join("lib")).unwrap();
    let mut config = Config::default();
    config
        .set("hardware.libtorch", lib.to_str().unwrap())
        .unwrap();
    let ctx = Context::new(config);
    let b = ctx.load_backend().unwrap();
    assert_eq!(b.info().loaded_libtorch_path, lib.join("libtorch_cpu.so"));
    assert!(!b.info().libtorch_preloaded, "loaded for the backend");
    assert_eq!(b.info().libtorch_found_by, Some(Source::Config));
}

#[test]
fn the_verbose_report_names_the_discovery_step_that_found_the_libtorch() {
    let libtorch = std::env::var("LIBTORCH").expect("LIBTORCH names the libtorch of the build");
    let lib = std::fs::canonicalize(std::path::Path::new(&libtorch).join("lib")).unwrap();
    // Each test has its own process under nextest: the variable is this test's alone.
    std::env::set_var(backend::LIBTORCH_ENV, &lib);
    let ctx = Context::new(Config::default());
    let b = ctx.load_backend().unwrap();
    assert_eq!(b.info().libtorch_found_by, Some(Source::Env));
    assert!(!b.info().libtorch_preloaded);
    let r = report::gather(&ctx, Some("cpu"), ValidateOptions::default()).unwrap();
    let json = r.render_json(Verbosity::Verbose);
    assert_eq!(
        json["backend"]["libtorch_found_by"], "SDA_LIBTORCH",
        "{json}"
    );
    assert_eq!(json["backend"]["libtorch_preloaded"], false, "{json}");
    let text = r.render_text(Verbosity::Verbose);
    assert!(
        text.contains("Libtorch found by: SDA_LIBTORCH (named by SDA_LIBTORCH)\n"),
        "{text}"
    );
    // The essential view keeps to the essentials.
    assert!(!r
        .render_text(Verbosity::Essential)
        .contains("Libtorch found by"));
}

#[test]
fn a_configured_libtorch_that_is_not_one_is_an_error_naming_it_and_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config
        .set("hardware.libtorch", dir.path().to_str().unwrap())
        .unwrap();
    let e = Context::new(config)
        .load_backend()
        .err()
        .expect("no libtorch there");
    assert_eq!(e.kind(), ErrorKind::BackendUnavailable, "{e}");
    let needle = format!(
        "hardware.libtorch = {} holds no libtorch",
        dir.path().display()
    );
    assert!(e.message().contains(&needle), "{e}");
    assert!(!libtorch_mapped());
}

#[test]
fn a_libtorch_elsewhere_of_another_version_is_refused_naming_the_versions_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = fake_libtorch(dir.path(), "2.12.0");
    let mut config = Config::default();
    config
        .set(
            "hardware.libtorch",
            fake.parent().unwrap().to_str().unwrap(),
        )
        .unwrap();
    let e = Context::new(config)
        .load_backend()
        .err()
        .expect("2.12.0 is not accepted");
    assert_eq!(e.kind(), ErrorKind::LibtorchVersionMismatch, "{e}");
    for needle in ["2.12.0", "2.13.0 (libsda_torch.so)", "SDA_LIBTORCH"] {
        assert!(e.message().contains(needle), "{needle}: {e}");
    }
    assert!(!libtorch_mapped(), "nothing was preloaded");
}
