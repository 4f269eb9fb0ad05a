//! The core loading the real torch backend module (built by this workspace) with real libtorch, on the
//! CPU. Each test runs in its own process under nextest, so "not loaded yet" is a real state.

use sda_core::backend;
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::ErrorKind;
use sda_core::preference::DeviceKind;

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
