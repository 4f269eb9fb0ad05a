//! One error type for the whole library and its one mapping to the status codes of the C ABI.

/// Status code returned by every fallible function of the C ABI (`SDA_OK` is 0).
///
/// The numeric values are part of the ABI: new codes are only ever appended.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// An argument is out of range or malformed (the message names it and the accepted values).
    InvalidArgument = 1,
    /// A required pointer argument was NULL (the message names the parameter).
    NullPointer = 2,
    /// A string argument was not valid UTF-8 (the message names the parameter).
    InvalidUtf8 = 3,
    /// The caller's buffer is too small; `*needed` holds the size required, terminating NUL included.
    BufferTooSmall = 4,
    /// A configuration key does not exist (the message names it and lists the known keys).
    UnknownKey = 5,
    /// A configuration value has the wrong type or is out of range (the message names key and range).
    InvalidValue = 6,
    /// A configuration text or file could not be parsed.
    Parse = 7,
    /// A file could not be read or written (the message names the path).
    Io = 8,
    /// The requested device does not exist or failed its smoke test, and the configuration asked for
    /// strict selection instead of a fallback to the CPU.
    DeviceUnavailable = 9,
    /// The torch backend module or its libtorch could not be loaded (the message says what was looked
    /// for and how to fix it). Everything that needs no torch keeps working.
    BackendUnavailable = 10,
    /// A device ran out of memory.
    OutOfMemory = 11,
    /// libtorch reported an error other than out-of-memory.
    Torch = 12,
    /// The operation was cancelled by the caller's callback.
    Cancelled = 13,
    /// A bug inside libsda was caught at the boundary (a Rust panic); the process is unharmed.
    Panic = 14,
    /// A handle was used after it was freed, or is not a handle of the expected type.
    InvalidHandle = 15,
    /// The operation is not supported on this device or platform.
    Unsupported = 16,
}

impl Status {
    /// Every status, in numeric order.
    pub const ALL: [Status; 17] = [
        Status::Ok,
        Status::InvalidArgument,
        Status::NullPointer,
        Status::InvalidUtf8,
        Status::BufferTooSmall,
        Status::UnknownKey,
        Status::InvalidValue,
        Status::Parse,
        Status::Io,
        Status::DeviceUnavailable,
        Status::BackendUnavailable,
        Status::OutOfMemory,
        Status::Torch,
        Status::Cancelled,
        Status::Panic,
        Status::InvalidHandle,
        Status::Unsupported,
    ];

    /// The status for a raw code, if the code is known.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.get(usize::try_from(code).ok()?).copied()
    }

    /// The constant's name as the C header spells it (`"SDA_ERR_OUT_OF_MEMORY"`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "SDA_OK",
            Status::InvalidArgument => "SDA_ERR_INVALID_ARGUMENT",
            Status::NullPointer => "SDA_ERR_NULL_POINTER",
            Status::InvalidUtf8 => "SDA_ERR_INVALID_UTF8",
            Status::BufferTooSmall => "SDA_ERR_BUFFER_TOO_SMALL",
            Status::UnknownKey => "SDA_ERR_UNKNOWN_KEY",
            Status::InvalidValue => "SDA_ERR_INVALID_VALUE",
            Status::Parse => "SDA_ERR_PARSE",
            Status::Io => "SDA_ERR_IO",
            Status::DeviceUnavailable => "SDA_ERR_DEVICE_UNAVAILABLE",
            Status::BackendUnavailable => "SDA_ERR_BACKEND_UNAVAILABLE",
            Status::OutOfMemory => "SDA_ERR_OUT_OF_MEMORY",
            Status::Torch => "SDA_ERR_TORCH",
            Status::Cancelled => "SDA_ERR_CANCELLED",
            Status::Panic => "SDA_ERR_PANIC",
            Status::InvalidHandle => "SDA_ERR_INVALID_HANDLE",
            Status::Unsupported => "SDA_ERR_UNSUPPORTED",
        }
    }
}

/// Everything that can go wrong inside libsda. Each variant carries the full, human-readable message
/// that the C ABI hands out through `sda_last_error_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// See [`Status::InvalidArgument`].
    #[error("{0}")]
    InvalidArgument(String),
    /// See [`Status::NullPointer`].
    #[error("{0}")]
    NullPointer(String),
    /// See [`Status::InvalidUtf8`].
    #[error("{0}")]
    InvalidUtf8(String),
    /// See [`Status::BufferTooSmall`].
    #[error("{0}")]
    BufferTooSmall(String),
    /// See [`Status::UnknownKey`].
    #[error("{0}")]
    UnknownKey(String),
    /// See [`Status::InvalidValue`].
    #[error("{0}")]
    InvalidValue(String),
    /// See [`Status::Parse`].
    #[error("{0}")]
    Parse(String),
    /// See [`Status::Io`].
    #[error("{0}")]
    Io(String),
    /// See [`Status::DeviceUnavailable`].
    #[error("{0}")]
    DeviceUnavailable(String),
    /// See [`Status::BackendUnavailable`].
    #[error("{0}")]
    BackendUnavailable(String),
    /// See [`Status::OutOfMemory`].
    #[error("{0}")]
    OutOfMemory(String),
    /// See [`Status::Torch`].
    #[error("{0}")]
    Torch(String),
    /// See [`Status::Cancelled`].
    #[error("{0}")]
    Cancelled(String),
    /// See [`Status::Panic`].
    #[error("{0}")]
    Panic(String),
    /// See [`Status::InvalidHandle`].
    #[error("{0}")]
    InvalidHandle(String),
    /// See [`Status::Unsupported`].
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The status code the C ABI returns for this error: the library's one mapping.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::NullPointer(_) => Status::NullPointer,
            Error::InvalidUtf8(_) => Status::InvalidUtf8,
            Error::BufferTooSmall(_) => Status::BufferTooSmall,
            Error::UnknownKey(_) => Status::UnknownKey,
            Error::InvalidValue(_) => Status::InvalidValue,
            Error::Parse(_) => Status::Parse,
            Error::Io(_) => Status::Io,
            Error::DeviceUnavailable(_) => Status::DeviceUnavailable,
            Error::BackendUnavailable(_) => Status::BackendUnavailable,
            Error::OutOfMemory(_) => Status::OutOfMemory,
            Error::Torch(_) => Status::Torch,
            Error::Cancelled(_) => Status::Cancelled,
            Error::Panic(_) => Status::Panic,
            Error::InvalidHandle(_) => Status::InvalidHandle,
            Error::Unsupported(_) => Status::Unsupported,
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
    fn codes_are_dense_and_round_trip() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(*s as i32, i as i32);
            assert_eq!(Status::from_code(i as i32), Some(*s));
        }
        assert_eq!(Status::from_code(-1), None);
        assert_eq!(Status::from_code(Status::ALL.len() as i32), None);
    }

    #[test]
    fn every_status_name_is_prefixed() {
        for s in Status::ALL {
            assert!(s.name().starts_with("SDA_"), "{}", s.name());
        }
    }
}
