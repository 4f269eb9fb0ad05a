//! The status codes, their one mapping from the core's error kinds, status names, the thread's last
//! error message, and the library version.

use crate::{guard, last_error_ptr, set_last_error};
use sda_core::error::{Error, ErrorKind};
use std::os::raw::c_char;

/// Status code returned by every fallible function of the C ABI (`SDA_OK` is 0).
///
/// The numeric values are part of the ABI: new codes are only ever appended. The variants carry the C
/// names so that Rust, C, Python and Swift code all spell a status the same way.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    SDA_OK = 0,
    /// An argument is out of range or malformed (the message names it and the accepted values).
    SDA_ERR_INVALID_ARGUMENT = 1,
    /// A required pointer argument was NULL (the message names the parameter).
    SDA_ERR_NULL_POINTER = 2,
    /// A string argument was not valid UTF-8 (the message names the parameter).
    SDA_ERR_INVALID_UTF8 = 3,
    /// The caller's buffer is too small; `*needed` holds the size required, terminating NUL included.
    SDA_ERR_BUFFER_TOO_SMALL = 4,
    /// A configuration key does not exist (the message names it and lists the known keys).
    SDA_ERR_UNKNOWN_KEY = 5,
    /// A configuration value has the wrong type or is out of range (the message names key and range).
    SDA_ERR_INVALID_VALUE = 6,
    /// A configuration text or file could not be parsed.
    SDA_ERR_PARSE = 7,
    /// A file could not be read or written (the message names the path).
    SDA_ERR_IO = 8,
    /// The requested device does not exist or failed its smoke test, and the configuration asked for
    /// strict selection (`hardware.strict = true`) instead of a fallback to the CPU.
    SDA_ERR_DEVICE_UNAVAILABLE = 9,
    /// The torch backend module or its libtorch could not be loaded (the message says what was looked
    /// for and how to fix it). Everything that needs no torch keeps working.
    SDA_ERR_BACKEND_UNAVAILABLE = 10,
    /// A device ran out of memory.
    SDA_ERR_OUT_OF_MEMORY = 11,
    /// libtorch reported an error other than out-of-memory.
    SDA_ERR_TORCH = 12,
    /// The operation was cancelled by the caller's callback.
    SDA_ERR_CANCELLED = 13,
    /// A bug inside libsda was caught at the boundary (a Rust panic); the process is unharmed.
    SDA_ERR_PANIC = 14,
    /// A handle was used after it was freed, or is not a handle of the expected type.
    SDA_ERR_INVALID_HANDLE = 15,
    /// The operation is not supported on this device or platform.
    SDA_ERR_UNSUPPORTED = 16,
}

/// Lists the variants once more for [`Status::ALL`] and [`Status::name`] (cbindgen reads the enum
/// itself, so the enum cannot come out of a macro); the tests check that the lists agree.
macro_rules! status_list {
    ($($name:ident),* $(,)?) => {
        impl Status {
            /// Every status, in numeric order.
            pub const ALL: &'static [Status] = &[$(Status::$name,)*];

            /// The constant's name as the C header spells it (`"SDA_ERR_OUT_OF_MEMORY"`).
            pub fn name(self) -> &'static str {
                let with_nul = self.name_nul_terminated();
                &with_nul[..with_nul.len() - 1]
            }

            /// [`Status::name`] followed by a NUL byte, for callers that hand it out as a C string
            /// without allocating.
            pub fn name_nul_terminated(self) -> &'static str {
                match self {
                    $(Status::$name => concat!(stringify!($name), "\0"),)*
                }
            }
        }
    };
}

status_list!(
    SDA_OK,
    SDA_ERR_INVALID_ARGUMENT,
    SDA_ERR_NULL_POINTER,
    SDA_ERR_INVALID_UTF8,
    SDA_ERR_BUFFER_TOO_SMALL,
    SDA_ERR_UNKNOWN_KEY,
    SDA_ERR_INVALID_VALUE,
    SDA_ERR_PARSE,
    SDA_ERR_IO,
    SDA_ERR_DEVICE_UNAVAILABLE,
    SDA_ERR_BACKEND_UNAVAILABLE,
    SDA_ERR_OUT_OF_MEMORY,
    SDA_ERR_TORCH,
    SDA_ERR_CANCELLED,
    SDA_ERR_PANIC,
    SDA_ERR_INVALID_HANDLE,
    SDA_ERR_UNSUPPORTED,
);

impl Status {
    /// The status for a raw code, if the code is known.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// The core's error kind for a failure status a host callback returned (`SDA_OK` has none).
    pub fn error_kind(self) -> Option<ErrorKind> {
        Some(match self {
            Status::SDA_OK => return None,
            Status::SDA_ERR_INVALID_ARGUMENT => ErrorKind::InvalidArgument,
            Status::SDA_ERR_NULL_POINTER => ErrorKind::NullPointer,
            Status::SDA_ERR_INVALID_UTF8 => ErrorKind::InvalidUtf8,
            Status::SDA_ERR_BUFFER_TOO_SMALL => ErrorKind::BufferTooSmall,
            Status::SDA_ERR_UNKNOWN_KEY => ErrorKind::UnknownKey,
            Status::SDA_ERR_INVALID_VALUE => ErrorKind::InvalidValue,
            Status::SDA_ERR_PARSE => ErrorKind::Parse,
            Status::SDA_ERR_IO => ErrorKind::Io,
            Status::SDA_ERR_DEVICE_UNAVAILABLE => ErrorKind::DeviceUnavailable,
            Status::SDA_ERR_BACKEND_UNAVAILABLE => ErrorKind::BackendUnavailable,
            Status::SDA_ERR_OUT_OF_MEMORY => ErrorKind::OutOfMemory,
            Status::SDA_ERR_TORCH => ErrorKind::Torch,
            Status::SDA_ERR_CANCELLED => ErrorKind::Cancelled,
            Status::SDA_ERR_PANIC => ErrorKind::Panic,
            Status::SDA_ERR_INVALID_HANDLE => ErrorKind::InvalidHandle,
            Status::SDA_ERR_UNSUPPORTED => ErrorKind::Unsupported,
        })
    }
}

/// The one mapping from the core's error kinds to the C ABI's status codes.
impl From<ErrorKind> for Status {
    fn from(kind: ErrorKind) -> Status {
        match kind {
            ErrorKind::InvalidArgument => Status::SDA_ERR_INVALID_ARGUMENT,
            ErrorKind::NullPointer => Status::SDA_ERR_NULL_POINTER,
            ErrorKind::InvalidUtf8 => Status::SDA_ERR_INVALID_UTF8,
            ErrorKind::BufferTooSmall => Status::SDA_ERR_BUFFER_TOO_SMALL,
            ErrorKind::UnknownKey => Status::SDA_ERR_UNKNOWN_KEY,
            ErrorKind::InvalidValue => Status::SDA_ERR_INVALID_VALUE,
            ErrorKind::Parse => Status::SDA_ERR_PARSE,
            ErrorKind::Io => Status::SDA_ERR_IO,
            ErrorKind::DeviceUnavailable => Status::SDA_ERR_DEVICE_UNAVAILABLE,
            ErrorKind::BackendUnavailable | ErrorKind::LibtorchVersionMismatch => {
                Status::SDA_ERR_BACKEND_UNAVAILABLE
            }
            ErrorKind::OutOfMemory => Status::SDA_ERR_OUT_OF_MEMORY,
            ErrorKind::Torch => Status::SDA_ERR_TORCH,
            ErrorKind::Cancelled => Status::SDA_ERR_CANCELLED,
            ErrorKind::Panic => Status::SDA_ERR_PANIC,
            ErrorKind::InvalidHandle => Status::SDA_ERR_INVALID_HANDLE,
            ErrorKind::Unsupported => Status::SDA_ERR_UNSUPPORTED,
        }
    }
}

impl From<&Error> for Status {
    fn from(error: &Error) -> Status {
        error.kind().into()
    }
}

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
            return Err(Error::null_pointer("message is NULL".into()));
        }
        // SAFETY: `message` is non-null (checked above), and sda_set_error_message documents it as a
        // NUL-terminated string that is alive during the call; to_string_lossy copies what is kept.
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
    fn every_error_status_round_trips_through_its_kind() {
        for s in Status::ALL.iter().skip(1) {
            assert_eq!(Status::from(s.error_kind().unwrap()), *s);
        }
        assert_eq!(Status::SDA_OK.error_kind(), None);
        for kind in ErrorKind::ALL {
            assert_ne!(Status::from(*kind), Status::SDA_OK, "{kind:?}");
        }
    }

    #[test]
    fn codes_are_dense_and_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as i32, i as i32);
            assert_eq!(Status::from_code(i as i32), Some(*s));
        }
        assert_eq!(Status::from_code(-1), None);
        assert_eq!(Status::from_code(Status::ALL.len() as i32), None);
    }

    #[test]
    fn every_status_name_is_prefixed_and_matches_the_variant() {
        for s in Status::ALL {
            assert!(s.name().starts_with("SDA_"), "{}", s.name());
            assert_eq!(s.name(), format!("{s:?}"));
        }
        // The last variant is in ALL, so ALL (dense, checked above) covers the whole enum.
        assert_eq!(Status::ALL.last(), Some(&Status::SDA_ERR_UNSUPPORTED));
    }

    #[test]
    fn every_status_has_its_name() {
        for s in Status::ALL {
            // SAFETY: sda_status_str never returns NULL: it returns a pointer into a static literal
            // that ends in a NUL (name_nul_terminated), valid for the whole program.
            let name = unsafe { CStr::from_ptr(sda_status_str(*s as i32)) };
            assert_eq!(name.to_str().unwrap(), s.name());
        }
        // SAFETY: for a code it does not know, sda_status_str returns the static literal
        // "SDA_UNKNOWN_STATUS\0", NUL-terminated and never freed.
        let unknown = unsafe { CStr::from_ptr(sda_status_str(-5)) };
        assert_eq!(unknown.to_str().unwrap(), "SDA_UNKNOWN_STATUS");
    }
}
