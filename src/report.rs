//! Reports for C hosts: `sda_report` (text) and `sda_report_json`.

use crate::context::{context_of, sda_context};
use crate::status::Status;
use crate::{guard, write_string};
use sda_core::error::{Error, ErrorKind, Result};
use sda_core::report::{self, Verbosity};
use sda_core::validate::ValidateOptions;
use std::cell::RefCell;
use std::os::raw::c_char;

/// How much a report says (the values `sda_report` and `sda_report_json` take).
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_verbosity {
    /// The device, its memory, a fallback warning, and problems that need attention.
    Essential = 0,
    /// Everything: selection, budget, allocator figures, precision, CUDA versions, CPU, backend,
    /// applied environment, auto-configuration, every device, all problems, version.
    Verbose = 1,
}

fn verbosity(value: i32) -> Result<Verbosity> {
    match value {
        0 => Ok(Verbosity::Essential),
        1 => Ok(Verbosity::Verbose),
        other => Err(Error::invalid_argument(format!(
            "verbosity {other} is out of range; accepted: SDA_VERBOSITY_ESSENTIAL (0), \
             SDA_VERBOSITY_VERBOSE (1)"
        ))),
    }
}

/// A report too large for the caller's buffer, kept for the caller's next call with the same
/// arguments on the same thread: the figures change between two gatherings, so a second gathering
/// could need more room than the `*needed` the first one reported. It is served only as that
/// immediate retry: within [`PENDING_TTL`], while the context still has the selection it was
/// gathered for, and to a buffer large enough for it; otherwise the report is gathered fresh.
struct Pending {
    context: usize,
    verbosity: i32,
    json: bool,
    /// The context's selection the report describes (its address: a new selection is a new Arc).
    selection: usize,
    gathered: std::time::Instant,
    text: String,
}

/// How long a report that did not fit waits for the retry with a larger buffer.
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(2);

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

fn report_into(
    context: *const sda_context,
    verbosity_value: i32,
    json: bool,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Result<()> {
    let shared = context_of(context)?;
    let level = verbosity(verbosity_value)?;
    let key = context as usize;
    let selection = std::sync::Arc::as_ptr(&shared.selected()?) as usize;
    let cached = PENDING.with(|p| {
        let mut slot = p.borrow_mut();
        match slot.take() {
            Some(pending)
                if pending.context == key
                    && pending.verbosity == verbosity_value
                    && pending.json == json
                    && pending.selection == selection
                    && pending.gathered.elapsed() < PENDING_TTL
                    && capacity > pending.text.len() =>
            {
                Some(pending.text)
            }
            _ => None,
        }
    });
    let text = match cached {
        Some(text) => text,
        None => {
            let r = report::gather(&shared, None, ValidateOptions::default())?;
            if json {
                // Pretty-printed: the JSON is as much for people reading a log as for programs.
                serde_json::to_string_pretty(&r.render_json(level))
                    .map_err(|e| Error::invalid_argument(format!("report JSON: {e}")))?
            } else {
                r.render_text(level)
            }
        }
    };
    let result = write_string(&text, buf, capacity, needed);
    if matches!(&result, Err(e) if e.kind() == ErrorKind::BufferTooSmall) {
        PENDING.with(|p| {
            *p.borrow_mut() = Some(Pending {
                context: key,
                verbosity: verbosity_value,
                json,
                selection,
                gathered: std::time::Instant::now(),
                text,
            })
        });
    }
    result
}

/// Writes the context's report as text: `SDA_VERBOSITY_ESSENTIAL` (device, memory, a fallback
/// warning, problems that need attention) or `SDA_VERBOSITY_VERBOSE` (everything). Uses the context's
/// selected device (selecting with the configuration's `hardware.device` first if needed); validates
/// without loading the torch backend (see `sda_validate_environment`). `sda_report_json` gives the
/// same facts as JSON.
///
/// Buffer rules as `sda_config_get`. A report is gathered fresh on every call, except that after
/// `SDA_ERR_BUFFER_TOO_SMALL` the retry on the same thread with the same context and verbosity and a
/// buffer of at least `*needed` bytes, within 2 seconds and before the context selects another
/// device, returns the report that did not fit, so the size query and the second call agree.
///
/// Errors: `SDA_ERR_INVALID_ARGUMENT` for a verbosity other than 0 or 1.
///
/// Thread safety: [thread-safe]; reads /proc and the driver (milliseconds).
#[no_mangle]
pub extern "C" fn sda_report(
    context: *const sda_context,
    verbosity: i32,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Status {
    guard(|| report_into(context, verbosity, false, buf, capacity, needed))
}

/// Writes the context's report as JSON (UTF-8, pretty-printed), with the same facts as `sda_report`
/// at the same verbosity. The layout is versioned (`schema_version`, now 2) and documented by the JSON
/// Schema `docs/report.schema.json`. Buffer rules and errors as `sda_report`.
///
/// Thread safety: [thread-safe]; reads /proc and the driver (milliseconds).
#[no_mangle]
pub extern "C" fn sda_report_json(
    context: *const sda_context,
    verbosity: i32,
    buf: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> Status {
    guard(|| report_into(context, verbosity, true, buf, capacity, needed))
}
