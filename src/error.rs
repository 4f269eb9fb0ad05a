//! One error type for the whole library and its one mapping to the status codes of the C ABI.

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
}

/// Everything that can go wrong inside libsda. Each variant carries the full, human-readable message
/// that the C ABI hands out through `sda_last_error_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// See [`Status::SDA_ERR_INVALID_ARGUMENT`].
    #[error("{0}")]
    InvalidArgument(String),
    /// See [`Status::SDA_ERR_NULL_POINTER`].
    #[error("{0}")]
    NullPointer(String),
    /// See [`Status::SDA_ERR_INVALID_UTF8`].
    #[error("{0}")]
    InvalidUtf8(String),
    /// See [`Status::SDA_ERR_BUFFER_TOO_SMALL`].
    #[error("{0}")]
    BufferTooSmall(String),
    /// See [`Status::SDA_ERR_UNKNOWN_KEY`].
    #[error("{0}")]
    UnknownKey(String),
    /// See [`Status::SDA_ERR_INVALID_VALUE`].
    #[error("{0}")]
    InvalidValue(String),
    /// See [`Status::SDA_ERR_PARSE`].
    #[error("{0}")]
    Parse(String),
    /// See [`Status::SDA_ERR_IO`].
    #[error("{0}")]
    Io(String),
    /// See [`Status::SDA_ERR_DEVICE_UNAVAILABLE`].
    #[error("{0}")]
    DeviceUnavailable(String),
    /// See [`Status::SDA_ERR_BACKEND_UNAVAILABLE`].
    #[error("{0}")]
    BackendUnavailable(String),
    /// See [`Status::SDA_ERR_OUT_OF_MEMORY`].
    #[error("{0}")]
    OutOfMemory(String),
    /// See [`Status::SDA_ERR_TORCH`].
    #[error("{0}")]
    Torch(String),
    /// See [`Status::SDA_ERR_CANCELLED`].
    #[error("{0}")]
    Cancelled(String),
    /// See [`Status::SDA_ERR_PANIC`].
    #[error("{0}")]
    Panic(String),
    /// See [`Status::SDA_ERR_INVALID_HANDLE`].
    #[error("{0}")]
    InvalidHandle(String),
    /// See [`Status::SDA_ERR_UNSUPPORTED`].
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The status code the C ABI returns for this error: the library's one mapping.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::SDA_ERR_INVALID_ARGUMENT,
            Error::NullPointer(_) => Status::SDA_ERR_NULL_POINTER,
            Error::InvalidUtf8(_) => Status::SDA_ERR_INVALID_UTF8,
            Error::BufferTooSmall(_) => Status::SDA_ERR_BUFFER_TOO_SMALL,
            Error::UnknownKey(_) => Status::SDA_ERR_UNKNOWN_KEY,
            Error::InvalidValue(_) => Status::SDA_ERR_INVALID_VALUE,
            Error::Parse(_) => Status::SDA_ERR_PARSE,
            Error::Io(_) => Status::SDA_ERR_IO,
            Error::DeviceUnavailable(_) => Status::SDA_ERR_DEVICE_UNAVAILABLE,
            Error::BackendUnavailable(_) => Status::SDA_ERR_BACKEND_UNAVAILABLE,
            Error::OutOfMemory(_) => Status::SDA_ERR_OUT_OF_MEMORY,
            Error::Torch(_) => Status::SDA_ERR_TORCH,
            Error::Cancelled(_) => Status::SDA_ERR_CANCELLED,
            Error::Panic(_) => Status::SDA_ERR_PANIC,
            Error::InvalidHandle(_) => Status::SDA_ERR_INVALID_HANDLE,
            Error::Unsupported(_) => Status::SDA_ERR_UNSUPPORTED,
        }
    }

    /// An error of the given status with a message (`SDA_OK` has no error: it becomes
    /// [`Error::InvalidArgument`] saying so).
    pub fn from_status(status: Status, message: String) -> Error {
        match status {
            Status::SDA_OK => Error::InvalidArgument(format!("not an error (SDA_OK): {message}")),
            Status::SDA_ERR_INVALID_ARGUMENT => Error::InvalidArgument(message),
            Status::SDA_ERR_NULL_POINTER => Error::NullPointer(message),
            Status::SDA_ERR_INVALID_UTF8 => Error::InvalidUtf8(message),
            Status::SDA_ERR_BUFFER_TOO_SMALL => Error::BufferTooSmall(message),
            Status::SDA_ERR_UNKNOWN_KEY => Error::UnknownKey(message),
            Status::SDA_ERR_INVALID_VALUE => Error::InvalidValue(message),
            Status::SDA_ERR_PARSE => Error::Parse(message),
            Status::SDA_ERR_IO => Error::Io(message),
            Status::SDA_ERR_DEVICE_UNAVAILABLE => Error::DeviceUnavailable(message),
            Status::SDA_ERR_BACKEND_UNAVAILABLE => Error::BackendUnavailable(message),
            Status::SDA_ERR_OUT_OF_MEMORY => Error::OutOfMemory(message),
            Status::SDA_ERR_TORCH => Error::Torch(message),
            Status::SDA_ERR_CANCELLED => Error::Cancelled(message),
            Status::SDA_ERR_PANIC => Error::Panic(message),
            Status::SDA_ERR_INVALID_HANDLE => Error::InvalidHandle(message),
            Status::SDA_ERR_UNSUPPORTED => Error::Unsupported(message),
        }
    }

    /// The message without the variant.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::NullPointer(m)
            | Error::InvalidUtf8(m)
            | Error::BufferTooSmall(m)
            | Error::UnknownKey(m)
            | Error::InvalidValue(m)
            | Error::Parse(m)
            | Error::Io(m)
            | Error::DeviceUnavailable(m)
            | Error::BackendUnavailable(m)
            | Error::OutOfMemory(m)
            | Error::Torch(m)
            | Error::Cancelled(m)
            | Error::Panic(m)
            | Error::InvalidHandle(m)
            | Error::Unsupported(m) => m,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_status_round_trips_every_error_status() {
        for s in Status::ALL.iter().skip(1) {
            assert_eq!(Error::from_status(*s, "m".into()).status(), *s);
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
}
