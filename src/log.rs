//! The host's log callback.

use crate::guard;
use crate::status::Status;
use sda_core::log::{self, Level};
use std::ffi::{c_void, CString};
use std::os::raw::c_char;
use std::sync::Arc;

/// Severity of a log message (numeric values are part of the C ABI).
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_log_level {
    /// Something failed.
    Error = 1,
    /// Something needs attention, e.g. a fallback to the CPU.
    Warn = 2,
    /// A notable step, e.g. the backend module was loaded.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl From<Level> for sda_log_level {
    fn from(level: Level) -> sda_log_level {
        match level {
            Level::Error => sda_log_level::Error,
            Level::Warn => sda_log_level::Warn,
            Level::Info => sda_log_level::Info,
            Level::Debug => sda_log_level::Debug,
        }
    }
}

/// A log callback: `user_data` as registered, the level, and the message (NUL-terminated UTF-8, valid
/// only during the call). It may be called from any thread that calls into libsda, so it must be
/// thread-safe; it must not unwind (throw) into libsda.
pub type sda_log_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: sda_log_level, message: *const c_char),
>;

/// `user_data` moves to whichever thread logs; the host promised it may (documented).
struct HostData(*mut c_void);
// SAFETY: libsda never dereferences the pointer, it only hands it back to the host's callback. The
// callback's documented contract (sda_log_callback) is that it may be called from any thread that
// calls into libsda, with this user_data, so moving the pointer to another thread is what the host
// agreed to when it registered the pair.
unsafe impl Send for HostData {}
// SAFETY: the sink holding HostData is an Arc shared by every thread that logs; `&HostData` only
// yields a copy of the pointer (`get`), and concurrent callback calls with the same user_data are
// allowed by the callback's documented thread-safety requirement.
unsafe impl Sync for HostData {}

impl HostData {
    /// Through a method, so that closures capture the whole `HostData` (Send + Sync), not the field.
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Sends libsda's log messages (fallback warnings, backend loading, ...) to `callback`, or with NULL
/// stops sending them. Without a callback libsda prints nothing, unless the environment variable
/// `SDA_LOG` is set (`error`, `warn`, `info` or `debug`), in which case messages go to stderr.
///
/// Lifetime: when this call returns, the previous callback is not running on any thread and will
/// never be called again, so the host may free its `user_data` (and a binding its thunk) right
/// away. The call waits for calls of the previous callback that are running on other threads.
///
/// The callback may call back into libsda (select a device, load the backend, even replace itself):
/// that neither deadlocks nor recurses, because messages logged on a thread while it runs the
/// callback are not delivered to it again. Replacing the callback from inside itself returns without
/// waiting for its own frame.
///
/// Thread safety: [thread-safe]; the callback is process-wide.
#[no_mangle]
pub extern "C" fn sda_set_log_callback(
    callback: sda_log_callback,
    user_data: *mut c_void,
) -> Status {
    guard(|| {
        let sink: Option<log::Sink> = callback.map(|cb| {
            let data = HostData(user_data);
            let sink: log::Sink = Arc::new(move |level: Level, message: &str| {
                let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
                // SAFETY: `cb` and `data` are the callback and user_data the host registered together
                // through sda_set_log_callback, whose contract makes `cb` callable from any thread and
                // forbids it to unwind into libsda. `text` is a NUL-terminated CString owned here and
                // alive until `cb` returns, which is as long as the message is documented to be valid.
                unsafe { cb(data.get(), level.into(), text.as_ptr()) }
            });
            sink
        });
        log::set_sink(sink);
        Ok(())
    })
}
