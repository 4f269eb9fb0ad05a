//! The built-in workload, for hosts and tests that want real torch work of a known shape.

use crate::context::{context_of, sda_context};
use crate::guard;
use crate::status::Status;
use sda_core::error::{Error, Result};
use sda_core::workload::Workload;

/// Shape of the built-in workload (the seeds' benchmark): conv1d over `[batch, channels,
/// sample_length]` fp32. Get it from `sda_workload_default()`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_workload {
    /// `sizeof(sda_workload)` as the caller was compiled; set by `sda_workload_default()`.
    pub struct_size: u32,
    /// Input channels per sample (default 1, mono).
    pub channels: u32,
    /// Samples per channel (default 48000: one second at 48 kHz).
    pub sample_length: u32,
    /// Filters of the convolution (default 16).
    pub out_channels: u32,
    /// Kernel width (default 1024).
    pub kernel_size: u32,
    /// Zero padding on each side (default 512).
    pub padding: u32,
    /// Also run a backward pass, as training does (default false: inference).
    pub with_backward: bool,
}

/// The seeds' workload: 1 × 48000 input, 16 filters of 1024, padding 512, forward only.
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_workload_default() -> sda_workload {
    let d = Workload::default();
    sda_workload {
        struct_size: std::mem::size_of::<sda_workload>() as u32,
        channels: d.channels,
        sample_length: d.sample_length,
        out_channels: d.out_channels,
        kernel_size: d.kernel_size,
        padding: d.padding,
        with_backward: d.with_backward,
    }
}

/// Reads a workload pointer (NULL = the default).
pub(crate) fn read_workload(workload: *const sda_workload) -> Result<Workload> {
    // SAFETY: `as_ref` turns NULL into None (the default workload). A non-null `workload` is
    // documented (sda_run_workload, sda_probe_options.workload) as an sda_workload from
    // sda_workload_default(), readable and alive during the call; only copies of its fields are kept.
    let Some(w) = (unsafe { workload.as_ref() }) else {
        return Ok(Workload::default());
    };
    if w.struct_size as usize != std::mem::size_of::<sda_workload>() {
        return Err(Error::invalid_argument(format!(
            "workload->struct_size is {}, expected {}: initialise it with sda_workload_default()",
            w.struct_size,
            std::mem::size_of::<sda_workload>()
        )));
    }
    Ok(Workload {
        channels: w.channels,
        sample_length: w.sample_length,
        out_channels: w.out_channels,
        kernel_size: w.kernel_size,
        padding: w.padding,
        with_backward: w.with_backward,
    })
}

/// Runs the built-in workload once with `batch` samples on the context's selected device (`workload`
/// NULL = the default). Loads the torch backend if needed. A real allocation failure returns
/// `SDA_ERR_OUT_OF_MEMORY` with libtorch's message in `sda_last_error_message()` — inside an
/// `sda_guarded_run` callback, return that status and the guard picks up the message.
///
/// Thread safety: [thread-safe]; [main-thread] (heavy: it computes).
#[no_mangle]
pub extern "C" fn sda_run_workload(
    context: *const sda_context,
    workload: *const sda_workload,
    batch: u32,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        read_workload(workload)?.run(&context, batch)
    })
}
