//! The configuration's `[environment]` takes effect at one documented moment, context creation, before
//! anything reads it; afterwards, an entry that can no longer take effect is reported as too late,
//! not as applied. Each test runs in its own process under nextest (the process environment and the
//! CUDA driver's state are per process).

use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::cuda_driver;
use sda_core::environment::{self, EnvOutcome};
use sda_core::validate::{self, ValidateOptions};

fn config_with(name: &str, value: &str) -> Config {
    let mut config = Config::default();
    config.set(&format!("environment.{name}"), value).unwrap();
    config.hardware.device = "cpu".into();
    config
}

#[test]
fn environment_is_set_when_the_context_is_created_before_the_driver_starts() {
    assert!(std::env::var_os("SDA_T_AT_CREATION").is_none());
    assert!(
        !cuda_driver::initialized(),
        "each test runs in its own process"
    );
    let ctx = Context::new(config_with("SDA_T_AT_CREATION", "1"));
    // Set by the creation itself: before any selection (cuInit) or backend (libtorch).
    assert_eq!(std::env::var("SDA_T_AT_CREATION").as_deref(), Ok("1"));
    assert!(!cuda_driver::initialized());
    let entry = environment::applied()
        .into_iter()
        .find(|e| e.name == "SDA_T_AT_CREATION")
        .unwrap();
    assert_eq!(entry.outcome, EnvOutcome::Applied);
    // A guarded run sets nothing afterwards (there is nothing left to set).
    ctx.select(None).unwrap();
}

#[test]
fn an_entry_after_the_driver_started_is_not_set_and_is_reported_too_late() {
    // Selection asks the CUDA driver (cuInit, or finding that there is none).
    let first = Context::new(Config::default());
    first.select(Some("cpu")).unwrap();
    let _ = first.device_info();
    let _ = cuda_driver::cuda_facts();
    assert!(cuda_driver::initialized());
    let late = Context::new(config_with("SDA_T_TOO_LATE", "1"));
    assert!(
        std::env::var_os("SDA_T_TOO_LATE").is_none(),
        "set after the driver started, where it cannot take effect"
    );
    let entry = environment::applied()
        .into_iter()
        .find(|e| e.name == "SDA_T_TOO_LATE")
        .unwrap();
    assert_eq!(entry.outcome, EnvOutcome::TooLate);
    let problems = validate::validate(&late, ValidateOptions::default());
    assert!(
        problems.iter().any(|p| p.code == "environment.too_late"),
        "{problems:?}"
    );
}
