//! Environment validation for C hosts: `sda_validate_environment`.

use crate::context::{context_of, sda_context};
use crate::sized::{self, growable, write_array, zeroed_with_size, Growable};
use crate::status::Status;
use crate::{fill_fixed, guard, out};
use sda_core::validate::{self, Problem, Severity, ValidateOptions};
use std::os::raw::c_char;

/// How bad a problem is.
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum sda_severity {
    /// Worth knowing; nothing to do (e.g. no NVIDIA driver on a machine without an NVIDIA GPU).
    Info = 0,
    /// Works, but not as configured or not as well as it could (e.g. a GPU that will fall back).
    Warning = 1,
    /// Keeps something from working (e.g. no backend, a libtorch of another version).
    Error = 2,
}

/// One finding of `sda_validate_environment`. Initialise the first entry of the array with
/// `SDA_PROBLEM_INIT(&problems[0])`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_problem {
    /// `sizeof(sda_problem)` as the caller was compiled; set by `sda_problem_init`.
    pub struct_size: u32,
    /// How bad it is.
    pub severity: sda_severity,
    /// Stable identifier (`cuda.no_driver`, `paths.not_writable`, ...), NUL-terminated.
    pub code: [c_char; 48],
    /// What is wrong, NUL-terminated, truncated to fit.
    pub message: [c_char; 1024],
    /// What to do about it, NUL-terminated, truncated to fit.
    pub fix: [c_char; 512],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_problem { struct_size, severity, code, message, fix,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_problem is repr(C) of `struct_size`, `severity` (an sda_severity whose 0 is Info)
    // and c_char arrays (0 = empty string): all-zero bytes are a valid value.
    unsafe { zeroed_with_size() }
});

/// Initialises an empty problem (`struct_size` = `size`, the caller's `sizeof(sda_problem)`;
/// `SDA_PROBLEM_INIT(&problem)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_problem_init(problem: *mut sda_problem, size: usize) -> Status {
    guard(|| sized::init(problem, size, "problem"))
}

fn to_c(p: &Problem) -> sda_problem {
    let mut c = sda_problem::defaults();
    c.severity = match p.severity {
        Severity::Info => sda_severity::Info,
        Severity::Warning => sda_severity::Warning,
        Severity::Error => sda_severity::Error,
    };
    fill_fixed(&mut c.code, p.code);
    fill_fixed(&mut c.message, &p.message);
    fill_fixed(&mut c.fix, &p.fix);
    c
}

/// Checks the environment of the context and reports every problem with a severity and a fix
/// instruction, worst first — changing nothing: no file, directory, setting or package is created or
/// edited. Checked: the configuration's values (and a `hardware.device` the machine lacks), the data
/// directories (`paths.*`: missing is information, not writable or not a directory is an error), the
/// `[environment]` entries against the process environment, the torch backend (missing or unloadable,
/// libtorch of another version than it was built against), the CUDA driver (none: information; older
/// than the CUDA runtime libtorch was built for: error; an older minor version: warning), and a CUDA
/// machine with a CPU-only libtorch.
///
/// `load_backend`: load the torch backend when it is not loaded yet, to check its libtorch (costs
/// libtorch's start-up once per process, with the configuration's `[environment]` applied first, as
/// any first torch work would); `false` checks only that the module file exists.
///
/// `out_problems` is an array of `capacity` entries (may be NULL when `capacity` is 0) whose first
/// entry is initialised (`SDA_PROBLEM_INIT(&out_problems[0])`): its `struct_size` is the array's
/// stride. `*count` always receives the number of problems; when `capacity` is smaller the call returns
/// `SDA_ERR_BUFFER_TOO_SMALL` and writes no entry. Problems are not failures: the call returns
/// `SDA_OK` whatever it finds.
///
/// Thread safety: [thread-safe]; [main-thread] with `load_backend` (slow the first time).
#[no_mangle]
pub extern "C" fn sda_validate_environment(
    context: *const sda_context,
    load_backend: bool,
    out_problems: *mut sda_problem,
    capacity: usize,
    count: *mut usize,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let count = out(count, "count")?;
        let problems = validate::validate(&context, ValidateOptions { load_backend });
        write_array(
            &problems,
            out_problems,
            capacity,
            count,
            ("problems", "out_problems"),
            to_c,
        )
    })
}

/// The severity's name (`"info"`, `"warning"`, `"error"`) as a static string; `"unknown"` for other
/// values.
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_severity_str(severity: i32) -> *const c_char {
    let name: &'static [u8] = match severity {
        0 => b"info\0",
        1 => b"warning\0",
        2 => b"error\0",
        _ => b"unknown\0",
    };
    name.as_ptr().cast::<c_char>()
}
