//! The core's one error type: a kind that callers branch on, and the message a person reads.
//!
//! The kinds say what went wrong in the core's terms; the C ABI crate maps each kind to its status
//! code (one `match`, in the `sda` crate), and nothing anywhere recognises an error by its wording.

/// What kind of failure an [`Error`] is. Callers branch on the kind, never on the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An argument is out of range or malformed (the message names it and the accepted values).
    InvalidArgument,
    /// A required pointer argument was missing (the message names the parameter).
    NullPointer,
    /// A string argument was not valid UTF-8 (the message names the parameter).
    InvalidUtf8,
    /// The caller's buffer is too small for the result.
    BufferTooSmall,
    /// A configuration key does not exist (the message names it and lists the known keys).
    UnknownKey,
    /// A configuration value has the wrong type or is out of range (the message names key and range).
    InvalidValue,
    /// A configuration text or file could not be parsed.
    Parse,
    /// A file could not be read or written (the message names the path).
    Io,
    /// The requested device does not exist or failed its smoke test, and strict selection was asked
    /// for instead of a fallback to the CPU.
    DeviceUnavailable,
    /// The torch backend module or its libtorch could not be loaded (the message says what was looked
    /// for and how to fix it).
    BackendUnavailable,
    /// The backend module was refused because the process holds a libtorch of another version than
    /// the one the module was built against (a special case of [`ErrorKind::BackendUnavailable`]).
    LibtorchVersionMismatch,
    /// A device ran out of memory.
    OutOfMemory,
    /// libtorch reported an error other than out-of-memory.
    Torch,
    /// The operation was cancelled by the caller.
    Cancelled,
    /// A bug was caught (a Rust panic, inside libsda or inside the backend module).
    Panic,
    /// A handle was used after it was freed, or is not a handle of the expected type.
    InvalidHandle,
    /// The operation is not supported on this device or platform.
    Unsupported,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidArgument,
        ErrorKind::NullPointer,
        ErrorKind::InvalidUtf8,
        ErrorKind::BufferTooSmall,
        ErrorKind::UnknownKey,
        ErrorKind::InvalidValue,
        ErrorKind::Parse,
        ErrorKind::Io,
        ErrorKind::DeviceUnavailable,
        ErrorKind::BackendUnavailable,
        ErrorKind::LibtorchVersionMismatch,
        ErrorKind::OutOfMemory,
        ErrorKind::Torch,
        ErrorKind::Cancelled,
        ErrorKind::Panic,
        ErrorKind::InvalidHandle,
        ErrorKind::Unsupported,
    ];

    /// A short, stable name of the kind in words (`"out of memory"`), for messages and the CLI.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NullPointer => "null pointer",
            ErrorKind::InvalidUtf8 => "invalid UTF-8",
            ErrorKind::BufferTooSmall => "buffer too small",
            ErrorKind::UnknownKey => "unknown key",
            ErrorKind::InvalidValue => "invalid value",
            ErrorKind::Parse => "parse error",
            ErrorKind::Io => "I/O error",
            ErrorKind::DeviceUnavailable => "device unavailable",
            ErrorKind::BackendUnavailable => "backend unavailable",
            ErrorKind::LibtorchVersionMismatch => "libtorch version mismatch",
            ErrorKind::OutOfMemory => "out of memory",
            ErrorKind::Torch => "torch error",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panic => "internal error",
            ErrorKind::InvalidHandle => "invalid handle",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Everything that can go wrong inside libsda: a [`ErrorKind`] and the full, human-readable message
/// (the text the C ABI hands out through `sda_last_error_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// One constructor per kind, so that a call site reads `Error::out_of_memory(text)`.
macro_rules! constructors {
    ($($fn_name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
                pub fn $fn_name(message: String) -> Error {
                    Error::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

constructors!(
    invalid_argument => InvalidArgument,
    null_pointer => NullPointer,
    invalid_utf8 => InvalidUtf8,
    buffer_too_small => BufferTooSmall,
    unknown_key => UnknownKey,
    invalid_value => InvalidValue,
    parse => Parse,
    io => Io,
    device_unavailable => DeviceUnavailable,
    backend_unavailable => BackendUnavailable,
    libtorch_version_mismatch => LibtorchVersionMismatch,
    out_of_memory => OutOfMemory,
    torch => Torch,
    cancelled => Cancelled,
    panic => Panic,
    invalid_handle => InvalidHandle,
    unsupported => Unsupported,
);

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error reports that a device ran out of memory.
    pub fn is_out_of_memory(&self) -> bool {
        self.kind == ErrorKind::OutOfMemory
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_message_and_has_a_distinct_description() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            let e = Error::new(*kind, "m");
            assert_eq!(
                (e.kind(), e.message(), e.to_string().as_str()),
                (*kind, "m", "m")
            );
            assert!(seen.insert(kind.describe()), "{kind:?}");
        }
        assert!(Error::out_of_memory("x".into()).is_out_of_memory());
        assert!(!Error::torch("x".into()).is_out_of_memory());
    }
}
