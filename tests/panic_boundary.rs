//! A Rust panic forced inside an export comes back as `SDA_ERR_PANIC` with a message, prints nothing,
//! and leaves the process working. Needs the `test-hooks` feature (the README's test command sets it).
#![cfg(feature = "test-hooks")]

use sda::status::Status;
use sda::status::{sda_last_error_message, sda_version};
use sda_testkit::ChildRun;
use std::ffi::CStr;
use std::time::Duration;

#[test]
fn forced_panic_returns_sda_err_panic_and_the_process_lives_on() {
    for _ in 0..3 {
        let status = sda::test_hooks::sda_debug_force_panic();
        assert_eq!(status, Status::SDA_ERR_PANIC);
        // SAFETY: sda_last_error_message() never returns NULL and points to this thread's
        // NUL-terminated message, valid until the next libsda call on this thread; `message` is last
        // used in the assert below, before the loop's next call into libsda.
        let message = unsafe { CStr::from_ptr(sda_last_error_message()) }
            .to_str()
            .unwrap();
        assert!(
            message.contains("forced by sda_debug_force_panic"),
            "{message}"
        );
    }
    // Still working afterwards.
    // SAFETY: sda_version() never returns NULL: it points to a static NUL-terminated literal that
    // lives for the whole program.
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
    let out = ChildRun::test("forced_panic_prints_nothing_to_stderr", "SDA_PANIC_CHILD")
        .deadline(Duration::from_secs(120))
        .run();
    out.assert_success("the panicking child");
    assert!(
        !out.stderr.contains("panicked"),
        "the panic hook printed: {}",
        out.stderr
    );
}
