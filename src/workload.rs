//! The built-in workload, for hosts and tests that want real torch work of a known shape.

use crate::context::{context_of, sda_context};
use crate::guard;
use crate::sized::{self, check_bool, growable, sda_bool};
use crate::status::Status;
use sda_core::error::Result;
use sda_core::workload::Workload;

/// Shape of the built-in workload (the seeds' benchmark): conv1d over `[batch, channels,
/// sample_length]` fp32. Initialise it with `SDA_WORKLOAD_INIT(&workload)` (or
/// `sda_workload_init(&workload, sizeof workload)`), then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_workload {
    /// `sizeof(sda_workload)` as the caller was compiled; set by `sda_workload_init`.
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
    /// 1: also run a backward pass, as training does; 0 (default): inference.
    pub with_backward: sda_bool,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_workload {
    struct_size, channels, sample_length, out_channels, kernel_size, padding, with_backward,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    let d = Workload::default();
    sda_workload {
        struct_size: std::mem::size_of::<sda_workload>() as u32,
        channels: d.channels,
        sample_length: d.sample_length,
        out_channels: d.out_channels,
        kernel_size: d.kernel_size,
        padding: d.padding,
        with_backward: d.with_backward.into(),
        #[cfg(feature = "abi-growth-test")]
        abi_growth_test: 0,
    }
}, check = |w| check_bool(w.with_backward, "sda_workload", "with_backward").map(|_| ()));

/// Initialises a workload with the seeds' shape: 1 × 48000 input, 16 filters of 1024, padding 512,
/// forward only. `size` is the caller's `sizeof(sda_workload)` (`SDA_WORKLOAD_INIT(&workload)`
/// passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_workload_init(workload: *mut sda_workload, size: usize) -> Status {
    guard(|| sized::init(workload, size, "workload"))
}

/// Reads a workload pointer (NULL = the default); `arg` names it in messages.
pub(crate) fn read_workload(workload: *const sda_workload, arg: &str) -> Result<Workload> {
    let Some(w) = sized::read_input(workload, arg)? else {
        return Ok(Workload::default());
    };
    Ok(Workload {
        channels: w.channels,
        sample_length: w.sample_length,
        out_channels: w.out_channels,
        kernel_size: w.kernel_size,
        padding: w.padding,
        with_backward: w.with_backward == 1,
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
        read_workload(workload, "workload")?.run(&context, batch)
    })
}
