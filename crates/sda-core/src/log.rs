//! Where the library's messages go: a sink the host installs, or stderr only when `SDA_LOG` asks for it.
//!
//! A library loaded into a DAW must not write to the host's stdout/stderr on its own, so without a sink
//! and without `SDA_LOG` every message is dropped.
//!
//! Two guarantees make a host's callback safe to free (the ones zenoh-c gives for a closure's drop and
//! wasmtime for a finalizer):
//! - when [`set_sink`] returns, no call of the previous sink is running or will start, so the host may
//!   free what that sink uses right away;
//! - a sink that calls back into libsda cannot recurse or deadlock: messages logged on a thread while
//!   that thread is inside the sink are not delivered again, and a sink may replace itself (the
//!   replacement does not wait for the calling sink's own frame).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

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

/// One installed sink and the number of its calls now running on any thread.
struct Registration {
    sink: Sink,
    /// Changed only with [`STATE`]'s mutex held, so that [`set_sink`], waiting on [`CALL_ENDED`]
    /// under that mutex, sees every call that began before it swapped the sink out.
    running: AtomicUsize,
}

/// The installed sink, if any.
struct State {
    current: Option<Arc<Registration>>,
}

static STATE: Mutex<State> = Mutex::new(State { current: None });
/// Signalled whenever a sink call ends, for [`set_sink`] waiting on the calls of the sink it replaced.
static CALL_ENDED: Condvar = Condvar::new();

thread_local! {
    /// The registration whose sink this thread is running, if any (null: none).
    static INSIDE: Cell<*const Registration> = const { Cell::new(std::ptr::null()) };
}

fn lock_state() -> std::sync::MutexGuard<'static, State> {
    // A poisoned lock only means a sink panicked earlier; the state itself is still consistent.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs (or with `None` removes) the process-wide sink.
///
/// When this returns, the previous sink is not running on any thread and will not be called again,
/// so whatever it captured may be released. Called from inside a sink (on the thread running it),
/// it waits for every other call of the previous sink but not for the caller's own.
pub fn set_sink(sink: Option<Sink>) {
    let next = sink.map(|sink| {
        Arc::new(Registration {
            sink,
            running: AtomicUsize::new(0),
        })
    });
    let mut state = lock_state();
    let previous = std::mem::replace(&mut state.current, next);
    let Some(previous) = previous else { return };
    let own = INSIDE.with(|inside| std::ptr::eq(inside.get(), Arc::as_ptr(&previous)));
    let allowed = usize::from(own);
    while previous.running.load(Ordering::Relaxed) > allowed {
        state = CALL_ENDED.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    drop(state);
    // The last reference (unless the caller is the previous sink itself, whose frame holds one):
    // the host's data goes with it, after every call ended.
    drop(previous);
}

/// Marks a call of the current sink as running and returns it (`None`: no sink).
fn enter() -> Option<Arc<Registration>> {
    let state = lock_state();
    let registration = state.current.clone()?;
    registration.running.fetch_add(1, Ordering::Relaxed);
    Some(registration)
}

/// Ends a call begun by [`enter`] and wakes a [`set_sink`] that may be waiting for it.
fn leave(registration: &Registration) {
    let state = lock_state();
    registration.running.fetch_sub(1, Ordering::Relaxed);
    drop(state);
    CALL_ENDED.notify_all();
}

/// The most verbose level `SDA_LOG` asks for on stderr, read once per process.
fn stderr_level() -> Option<Level> {
    static LEVEL: OnceLock<Option<Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| std::env::var("SDA_LOG").ok().and_then(|v| Level::parse(&v)))
}

/// Sends a message to the host's sink, or to stderr when `SDA_LOG` is set and no sink is installed.
/// A message logged on a thread that is running the sink (a sink that called back into libsda) is
/// dropped: delivering it would recurse.
pub fn emit(level: Level, message: &str) {
    if INSIDE.with(|inside| !inside.get().is_null()) {
        return;
    }
    match enter() {
        Some(registration) => {
            /// Leaves the call even when the sink unwinds, so that no `set_sink` waits forever.
            struct Running<'a>(&'a Registration);
            impl Drop for Running<'_> {
                fn drop(&mut self) {
                    INSIDE.with(|inside| inside.set(std::ptr::null()));
                    leave(self.0);
                }
            }
            INSIDE.with(|inside| inside.set(Arc::as_ptr(&registration)));
            let running = Running(&registration);
            (registration.sink)(level, message);
            drop(running);
        }
        None => {
            if stderr_level().is_some_and(|max| level <= max) {
                eprintln!("libsda {}: {message}", level.as_str()); // ok: only when the user sets SDA_LOG
            }
        }
    }
}

/// Messages collected while a lock is held, sent when the collector is flushed or dropped, so that a
/// sink which calls back into libsda never runs while libsda holds a lock it would take again.
#[derive(Default)]
pub struct Deferred {
    messages: Vec<(Level, String)>,
}

impl Deferred {
    /// A collector with no messages.
    pub fn new() -> Deferred {
        Deferred::default()
    }

    /// Keeps a message for later.
    pub fn push(&mut self, level: Level, message: String) {
        self.messages.push((level, message));
    }

    /// Sends the collected messages now (call it after releasing the lock).
    pub fn flush(&mut self) {
        for (level, message) in std::mem::take(&mut self.messages) {
            emit(level, &message);
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.flush();
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

    // One test for the process-wide sink: the unit tests of this crate share one process.
    #[test]
    fn a_replaced_sink_is_not_running_when_set_sink_returns_and_sinks_may_reenter() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let loggers: Vec<_> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        warn("from a logging thread");
                    }
                })
            })
            .collect();
        let late_calls = Arc::new(AtomicUsize::new(0));
        let delivered = Arc::new(AtomicUsize::new(0));
        for _ in 0..200 {
            let alive = Arc::new(AtomicBool::new(true));
            let sink: Sink = {
                let (alive, late, delivered) = (
                    Arc::clone(&alive),
                    Arc::clone(&late_calls),
                    Arc::clone(&delivered),
                );
                Arc::new(move |_, _| {
                    if !alive.load(Ordering::SeqCst) {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(20));
                    if !alive.load(Ordering::SeqCst) {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                    delivered.fetch_add(1, Ordering::SeqCst);
                })
            };
            set_sink(Some(sink));
            std::thread::sleep(std::time::Duration::from_micros(50));
            set_sink(None);
            alive.store(false, Ordering::SeqCst);
        }
        stop.store(true, Ordering::Relaxed);
        loggers.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(late_calls.load(Ordering::SeqCst), 0);
        assert!(delivered.load(Ordering::SeqCst) > 0);

        // A sink that logs and replaces itself: no recursion, no deadlock.
        let depth = Arc::new(AtomicUsize::new(0));
        let calls = Arc::new(AtomicUsize::new(0));
        fn reentrant(depth: Arc<AtomicUsize>, calls: Arc<AtomicUsize>) -> Sink {
            Arc::new(move |_, _| {
                let d = depth.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(d, 1, "the sink recursed");
                calls.fetch_add(1, Ordering::SeqCst);
                warn("logged from inside the sink");
                set_sink(Some(reentrant(Arc::clone(&depth), Arc::clone(&calls))));
                depth.fetch_sub(1, Ordering::SeqCst);
            })
        }
        set_sink(Some(reentrant(Arc::clone(&depth), Arc::clone(&calls))));
        warn("one");
        warn("two");
        set_sink(None);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let mut deferred = Deferred::new();
        deferred.push(Level::Info, "later".into());
        deferred.flush();
    }
}
