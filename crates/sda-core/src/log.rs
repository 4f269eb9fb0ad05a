//! Where the library's messages go: a sink the host installs, or stderr only when `SDA_LOG` asks for it.
//!
//! A library loaded into a DAW must not write to the host's stdout/stderr on its own, so without a sink
//! and without `SDA_LOG` every message is dropped.

use std::sync::{Arc, OnceLock, RwLock};

/// Severity of a log message, most severe first (the order of `Ord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something needs attention, e.g. a fallback to the CPU.
    Warn = 2,
    /// A notable step, e.g. the backend module was loaded.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl Level {
    /// Lower-case name (`"warn"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" | "1" | "true" | "yes" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }
}

/// A log sink: called with the level and the message, from whichever thread logs.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

/// Installs (or with `None` removes) the process-wide sink. Messages logged while another thread is in
/// the middle of this call go to either the old or the new sink, never to both.
pub fn set_sink(sink: Option<Sink>) {
    // A poisoned lock only means a sink panicked earlier; the slot itself is still a valid Option.
    let mut slot = SINK.write().unwrap_or_else(|e| e.into_inner());
    *slot = sink;
}

/// The most verbose level `SDA_LOG` asks for on stderr, read once per process.
fn stderr_level() -> Option<Level> {
    static LEVEL: OnceLock<Option<Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| std::env::var("SDA_LOG").ok().and_then(|v| Level::parse(&v)))
}

/// Sends a message to the host's sink, or to stderr when `SDA_LOG` is set and no sink is installed.
pub fn emit(level: Level, message: &str) {
    // Clone the sink out of the lock so that a sink which calls back into libsda cannot deadlock.
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
    match sink {
        Some(sink) => sink(level, message),
        None => {
            if stderr_level().is_some_and(|max| level <= max) {
                eprintln!("libsda {}: {message}", level.as_str()); // ok: only when the user sets SDA_LOG
            }
        }
    }
}

/// Logs a warning.
pub fn warn(message: &str) {
    emit(Level::Warn, message);
}

/// Logs an informational message.
pub fn info(message: &str) {
    emit(Level::Info, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_parse_back() {
        for l in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::parse("nonsense"), None);
    }
}
