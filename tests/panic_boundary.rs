//! A Rust panic forced inside an export comes back as `SDA_ERR_PANIC` with a message, prints nothing,
//! and leaves the process working. Needs the `test-hooks` feature (the README's test command sets it).
#![cfg(feature = "test-hooks")]

use sda::status::Status;
use sda::status::{sda_last_error_message, sda_version};
use std::ffi::CStr;

#[test]
fn forced_panic_returns_sda_err_panic_and_the_process_lives_on() {
    for _ in 0..3 {
        let status = sda::test_hooks::sda_debug_force_panic();
        assert_eq!(status, Status::SDA_ERR_PANIC);
        let message = unsafe { CStr::from_ptr(sda_last_error_message()) }
            .to_str()
            .unwrap();
        assert!(
            message.contains("forced by sda_debug_force_panic"),
            "{message}"
        );
    }
    // Still working afterwards.
    let v = unsafe { CStr::from_ptr(sda_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    let mut cfg = std::ptr::null_mut();
    assert_eq!(sda::config::sda_config_new(&mut cfg), Status::SDA_OK);
    assert_eq!(sda::config::sda_config_free(cfg), Status::SDA_OK);
}

#[test]
fn forced_panic_prints_nothing_to_stderr() {
    // Run the panic in a child copy of this test binary and capture its stderr.
    if std::env::var_os("SDA_PANIC_CHILD").is_some() {
        let status = sda::test_hooks::sda_debug_force_panic();
        assert_eq!(status, Status::SDA_ERR_PANIC);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "forced_panic_prints_nothing_to_stderr",
            "--nocapture",
        ])
        .env("SDA_PANIC_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "the panic hook printed: {stderr}"
    );
}
