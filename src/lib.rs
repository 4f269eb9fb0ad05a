//! libsda's C ABI: every `extern "C"` function and every C type, over the safe core `sda-core`.
//!
//! This crate holds no logic: each export checks its arguments, converts between the C types and the
//! core's, calls the core and maps the core's error kind to an `sda_status`. cbindgen reads this crate
//! only (build.rs), so `include/sda.h` holds C-ABI types and nothing else.
//!
//! Each export goes through `guard` once: it stops panics at the boundary, stores the thread's last
//! error message and turns the core's [`Error`] into its [`Status`]. The helpers below check every
//! pointer and string; the logic itself lives in the safe core.

#![deny(missing_docs)]
#![allow(non_camel_case_types)]
// The exports are called from C, where `unsafe` means nothing: their pointer contracts are written in
// the header for C readers, and every pointer is checked before use.
#![allow(clippy::missing_safety_doc)]
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::status::Status;
use sda_core::error::{Error, Result};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

pub mod backend;
pub mod classify;
pub mod config;
pub mod context;
pub mod device;
pub mod guarded_run;
pub mod handle;
pub mod log;
pub mod memory;
pub mod model;
pub mod plan;
pub mod probe;
pub mod recommend;
pub mod report;
pub mod sized;
pub mod status;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
pub mod validate;
pub mod workload;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Counts the errors stored on this thread, so that a caller can tell whether a call in between
    /// failed without copying or clearing the message (guarded runs do this on every attempt).
    static ERRORS_STORED: Cell<u64> = const { Cell::new(0) };
    static INSIDE_EXPORT: Cell<bool> = const { Cell::new(false) };
    static PANIC_MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Stores `message` as this thread's last error (interior NULs become spaces).
fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
    ERRORS_STORED.with(|n| n.set(n.get() + 1));
}

/// How many errors this thread has stored so far.
fn errors_stored() -> u64 {
    ERRORS_STORED.with(Cell::get)
}

/// This thread's last error message as text.
fn read_last_error() -> String {
    LAST_ERROR.with(|slot| slot.borrow().to_string_lossy().into_owned())
}

/// Pointer to this thread's last error message; valid until the next libsda call on this thread.
fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Panics inside an export must not print: the default hook would write to the host's stderr. This
/// hook records the message for `sda_last_error_message` instead, and hands panics that happen
/// outside libsda's exports to whatever hook was installed before.
fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if INSIDE_EXPORT.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = format!("{payload}{location}"));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs one export's body: catches panics, records the error message, returns the status.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> Status {
    install_quiet_panic_hook();
    let outer = INSIDE_EXPORT.with(|f| f.replace(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(body));
    INSIDE_EXPORT.with(|f| f.set(outer));
    match outcome {
        Ok(Ok(())) => Status::SDA_OK,
        Ok(Err(e)) => {
            set_last_error(e.message());
            Status::from(&e)
        }
        Err(_) => {
            let what = PANIC_MESSAGE.with(|m| std::mem::take(&mut *m.borrow_mut()));
            set_last_error(&format!(
                "internal error in libsda (a Rust panic, caught at the boundary; please report it): \
                 {what}"
            ));
            Status::SDA_ERR_PANIC
        }
    }
}

/// A required output pointer.
pub(crate) fn out<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: `as_mut` turns NULL into None (reported as SDA_ERR_NULL_POINTER). A non-null `ptr` is an
    // export's out-parameter, which its header documentation requires to point to a live, aligned,
    // writable T owned by the caller; the host does not touch it while the export runs, and the
    // exports use the borrow only inside their `guard` body, so it is the only reference to the T.
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::null_pointer(format!("{name} is NULL")))
}

/// A required NUL-terminated UTF-8 string argument.
pub(crate) fn str_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::null_pointer(format!("{name} is NULL")));
    }
    // SAFETY: `ptr` is non-null (checked above), and every export that takes a string argument
    // documents it as a NUL-terminated string, alive and unchanged for the duration of the call; the
    // returned &str is used only inside that call (the exports copy what they keep).
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid_utf8(format!(
            "{name} is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// An optional string argument: NULL means "not given".
pub(crate) fn opt_str_arg<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        str_arg(ptr, name).map(Some)
    }
}

/// Copies `text` into a caller buffer, snprintf-style: `*needed` (when not NULL) always receives the
/// size required including the NUL; the buffer is written only when it is large enough, otherwise the
/// call fails with `SDA_ERR_BUFFER_TOO_SMALL`. `buf` may be NULL only with `capacity` 0 (a size query).
pub(crate) fn write_string(
    text: &str,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Result<()> {
    let required = text.len() + 1;
    if !needed.is_null() {
        // SAFETY: `needed` is non-null (checked just above); the string-out convention of the header
        // ("*needed receives the size required") makes a non-null `needed` a writable size_t.
        unsafe { *needed = required };
    }
    if buf.is_null() && capacity > 0 {
        return Err(Error::null_pointer(format!(
            "buf is NULL but capacity is {capacity}"
        )));
    }
    if capacity < required {
        return Err(Error::buffer_too_small(format!(
            "the buffer holds {capacity} bytes but {required} are needed (see *needed)"
        )));
    }
    // SAFETY: `buf` is non-null: capacity >= required >= 1 here, and a NULL `buf` with a non-zero
    // capacity was rejected above. The caller promises `buf` is writable for `capacity` bytes, and
    // capacity >= text.len() + 1, so the text and its NUL both land inside the buffer. `text` is
    // libsda's own string, so source and destination cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
        *buf.add(text.len()) = 0;
    }
    Ok(())
}

/// Turns the status a host callback returned into a result, with the message of any libsda call that
/// failed inside the callback (e.g. `sda_run_workload` reporting libtorch's out-of-memory text, or
/// `sda_set_error_message`); `errors_before` is [`errors_stored`] before the callback ran and `who`
/// names the callback in messages.
pub(crate) fn callback_result(code: i32, errors_before: u64, who: &str) -> Result<()> {
    let message = |status: Status| {
        if errors_stored() != errors_before {
            read_last_error()
        } else {
            format!("{who} returned {}", status.name())
        }
    };
    match Status::from_code(code).map(|status| (status, status.error_kind())) {
        Some((_, None)) => Ok(()),
        Some((status, Some(kind))) => Err(Error::new(kind, message(status))),
        None => Err(Error::invalid_argument(format!(
            "{who} returned {code}, which is not an sda_status"
        ))),
    }
}

/// Copies `text` into a fixed array of a result struct, NUL-terminated, truncated to fit.
pub(crate) fn fill_fixed(dst: &mut [c_char], text: &str) {
    sda_backend_abi::write_fixed(dst, text);
}

/// Calls `$f::<T>()` for every struct that crosses the boundary and may grow (sized.rs's tests).
#[cfg(test)]
#[macro_export]
#[doc(hidden)]
macro_rules! for_each_growable {
    ($f:ident) => {
        $f::<$crate::guarded_run::sda_guard_options>();
        $f::<$crate::guarded_run::sda_run_report>();
        $f::<$crate::probe::sda_probe_options>();
        $f::<$crate::probe::sda_probe_result>();
        $f::<$crate::probe::sda_probe_progress>();
        $f::<$crate::workload::sda_workload>();
        $f::<$crate::recommend::sda_recommendation>();
        $f::<$crate::plan::sda_worker_plan>();
        $f::<$crate::device::sda_selection>();
        $f::<$crate::device::sda_device_details>();
        $f::<$crate::memory::sda_memory_figures>();
        $f::<$crate::backend::sda_backend_details>();
        $f::<$crate::validate::sda_problem>();
        $f::<$crate::model::sda_model_options>();
        $f::<$crate::model::sda_model_details>();
    };
}
