//! Status names, the thread's last error message, and the library version.

use super::{guard, last_error_ptr, set_last_error};
use crate::error::Error;
use crate::error::Status;
use std::os::raw::c_char;

/// The name of a status code as a static string (`"SDA_ERR_OUT_OF_MEMORY"`), or
/// `"SDA_UNKNOWN_STATUS"` for a code this version does not know. Never NULL.
///
/// Thread safety: [thread-safe], [audio-thread] (no allocation, no lock).
#[no_mangle]
pub extern "C" fn sda_status_str(status: i32) -> *const c_char {
    // A lookup in static data: cannot panic, allocates nothing, so it needs no guard.
    Status::from_code(status)
        .map_or("SDA_UNKNOWN_STATUS\0", Status::name_nul_terminated)
        .as_ptr()
        .cast::<c_char>()
}

/// The message of the last failing libsda call on the calling thread (empty when none failed yet).
/// Successful calls leave it unchanged. The pointer stays valid until the next libsda call on the same
/// thread; copy the text if you need it longer. Never NULL.
///
/// Thread safety: [thread-safe] (each thread has its own message).
#[no_mangle]
pub extern "C" fn sda_last_error_message() -> *const c_char {
    last_error_ptr()
}

/// Sets the calling thread's error message, as a failing libsda call would. For work callbacks: a C++
/// or Python host that caught an exception inside `sda_guarded_run`'s work passes its text here before
/// returning the status, so that the guard reads the real message (e.g. the size a failed allocation
/// asked for) instead of only the status. `message` NULL is `SDA_ERR_NULL_POINTER`; bytes that are not
/// UTF-8 are replaced.
///
/// Thread safety: [thread-safe] (each thread has its own message).
#[no_mangle]
pub extern "C" fn sda_set_error_message(message: *const c_char) -> Status {
    guard(|| {
        if message.is_null() {
            return Err(Error::NullPointer("message is NULL".into()));
        }
        // SAFETY: a non-null message is a NUL-terminated string (documented).
        let text = unsafe { std::ffi::CStr::from_ptr(message) }.to_string_lossy();
        set_last_error(&text);
        Ok(())
    })
}

/// The library version as a static string, `"MAJOR.MINOR.PATCH"`; equals the `SDA_VERSION_*` macros
/// of the header the host was compiled with when header and library match. Never NULL.
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0")
        .as_ptr()
        .cast::<c_char>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_status_has_its_name() {
        for s in Status::ALL {
            let name = unsafe { CStr::from_ptr(sda_status_str(*s as i32)) };
            assert_eq!(name.to_str().unwrap(), s.name());
        }
        let unknown = unsafe { CStr::from_ptr(sda_status_str(-5)) };
        assert_eq!(unknown.to_str().unwrap(), "SDA_UNKNOWN_STATUS");
    }
}
