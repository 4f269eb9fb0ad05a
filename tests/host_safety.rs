//! Host-safety regressions of the C ABI (issue "host safety, part 2", item 4), called from Rust as a
//! host would call them: a report that did not fit is not served stale later, and `SDA_CONFIG` /
//! `SDA_DEVICE` that are not UTF-8 are errors, not ignored.

use sda::config::{sda_config, sda_config_free, sda_config_load_str, sda_config_new};
use sda::context::{sda_context, sda_context_free, sda_context_new};
use sda::device::{sda_select_device, sda_selection};
use sda::report::sda_report;
use sda::status::{sda_last_error_message, Status};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;

fn last_error() -> String {
    // SAFETY: sda_last_error_message never returns NULL and its text lives until the next libsda
    // call on this thread; it is copied at once.
    unsafe { CStr::from_ptr(sda_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

fn new_context() -> *mut sda_context {
    let mut ctx: *mut sda_context = std::ptr::null_mut();
    assert_eq!(sda_context_new(std::ptr::null(), &mut ctx), Status::SDA_OK);
    ctx
}

fn select(ctx: *mut sda_context, preference: &str) -> sda_selection {
    let preference = CString::new(preference).unwrap();
    let mut selection: sda_selection = sda::sized::initialised(sda::device::sda_selection_init);
    assert_eq!(
        sda_select_device(ctx, preference.as_ptr(), &mut selection),
        Status::SDA_OK,
        "{}",
        last_error()
    );
    selection
}

/// The text report, sized by a first call, as a host does.
fn report(ctx: *mut sda_context, capacity: usize) -> (Status, String, usize) {
    let mut buf = vec![0 as c_char; capacity.max(1)];
    let mut needed = 0usize;
    let status = sda_report(ctx, 1, buf.as_mut_ptr(), capacity, &mut needed);
    let text = if status == Status::SDA_OK {
        // SAFETY: on success the report was written NUL-terminated into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    (status, text, needed)
}

#[test]
fn a_report_that_did_not_fit_is_not_served_after_the_context_selected_again() {
    let ctx = new_context();
    // MPS does not exist on Linux: the selection falls back and the report says so.
    let fell_back = select(ctx, "mps");
    assert_eq!(fell_back.fell_back, 1);
    let (status, _, needed) = report(ctx, 0);
    assert_eq!(status, Status::SDA_ERR_BUFFER_TOO_SMALL);
    // Now the context is on the CPU by choice: a report of the old selection would be stale.
    let plain = select(ctx, "cpu");
    assert_eq!(plain.fell_back, 0);
    let (status, text, _) = report(ctx, needed + 4096);
    assert_eq!(status, Status::SDA_OK, "{}", last_error());
    assert!(
        text.contains("Requested: cpu") && !text.contains("mps unavailable"),
        "the report describes the earlier selection:\n{text}"
    );
    // The immediate retry of the same selection still gets the report that did not fit.
    let (status, _, needed) = report(ctx, 0);
    assert_eq!(status, Status::SDA_ERR_BUFFER_TOO_SMALL);
    let (status, text, _) = report(ctx, needed);
    assert_eq!(status, Status::SDA_OK, "{}", last_error());
    assert_eq!(
        text.len() + 1,
        needed,
        "the retry is the report whose size was reported"
    );
    assert_eq!(sda_context_free(ctx), Status::SDA_OK);
}

/// Runs `body` with `name` set to bytes that are not UTF-8 (each test runs in its own process under
/// nextest; the variable is removed afterwards for `cargo test`'s shared process).
fn with_non_utf8(name: &str, body: impl FnOnce()) {
    use std::os::unix::ffi::OsStrExt;
    std::env::set_var(name, std::ffi::OsStr::from_bytes(b"cu\xffda"));
    body();
    std::env::remove_var(name);
}

#[test]
fn sda_device_and_sda_config_that_are_not_utf8_are_errors_naming_the_variable() {
    for name in ["SDA_DEVICE", "SDA_CONFIG"] {
        with_non_utf8(name, || {
            let mut config: *mut sda_config = std::ptr::null_mut();
            assert_eq!(
                sda_config_new(&mut config),
                Status::SDA_ERR_INVALID_VALUE,
                "{name}"
            );
            assert!(config.is_null());
            let message = last_error();
            assert!(
                message.contains(name) && message.contains("UTF-8"),
                "{message}"
            );

            let mut ctx: *mut sda_context = std::ptr::null_mut();
            assert_eq!(
                sda_context_new(std::ptr::null(), &mut ctx),
                Status::SDA_ERR_INVALID_VALUE,
                "{name}"
            );
            assert!(ctx.is_null());
        });
    }
    with_non_utf8("SDA_DEVICE", || {
        let text = CString::new("[hardware]\ndevice = \"cpu\"\n").unwrap();
        let mut config: *mut sda_config = std::ptr::null_mut();
        assert_eq!(
            sda_config_load_str(text.as_ptr(), &mut config),
            Status::SDA_ERR_INVALID_VALUE
        );
        assert!(last_error().contains("SDA_DEVICE"), "{}", last_error());
    });
    // Unset again: everything works.
    let mut config: *mut sda_config = std::ptr::null_mut();
    assert_eq!(sda_config_new(&mut config), Status::SDA_OK);
    assert_eq!(sda_config_free(config), Status::SDA_OK);
}
