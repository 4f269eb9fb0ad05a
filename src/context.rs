//! `sda_context`: a configuration plus the device selected under it.

use crate::config::{config_of, sda_config};
use crate::handle::Registry;
use crate::status::Status;
use crate::{guard, out};
use sda_core::config::Config;
use sda_core::context::Context;
use sda_core::error::Result;
use std::ffi::c_void;
use std::sync::Arc;

/// An opaque context: a snapshot of a configuration and the device selected under it. One context may
/// be shared by any number of threads. Create with `sda_context_new`, release with `sda_context_free`.
pub struct sda_context {
    _private: [u8; 0],
}

static CONTEXTS: Registry<Context> = Registry::new("sda_context");

/// The context behind a handle.
pub(crate) fn context_of(context: *const sda_context) -> Result<Arc<Context>> {
    CONTEXTS.get(context.cast::<c_void>(), "context")
}

/// Creates a context from a snapshot of `config` (later changes to `config` do not affect it), or,
/// when `config` is NULL, from the configuration `sda_config_new` would build. Creating a context
/// selects nothing and loads no libtorch: the device is selected by `sda_select_device`, or on first
/// use with the configuration's `hardware.device`.
///
/// This is the moment the configuration's `[environment]` takes effect: its variables that the
/// process does not have yet are set here, on the calling thread, before anything of libsda reads
/// them (selection starts the CUDA driver, the backend starts libtorch), and never later from a
/// guarded run or a probe. Entries that arrive after the CUDA driver or libtorch started in this
/// process are not set and are reported as `too_late` (verbose report, `sda_validate_environment`).
/// Create the first context at start-up, before other threads read the environment.
///
/// Thread safety: [thread-safe], but setting `[environment]` variables races with `getenv` in other
/// threads (glibc): a configuration with `[environment]` belongs on the thread that starts the host.
#[no_mangle]
pub extern "C" fn sda_context_new(
    config: *const sda_config,
    out_context: *mut *mut sda_context,
) -> Status {
    guard(|| {
        let slot = out(out_context, "out_context")?;
        let config = if config.is_null() {
            Config::from_process_environment()?
        } else {
            let shared = config_of(config)?;
            let snapshot = shared.read().unwrap_or_else(|e| e.into_inner()).clone();
            snapshot
        };
        *slot = CONTEXTS.insert(Context::new(config)).cast::<sda_context>();
        Ok(())
    })
}

/// Releases a context. NULL is a no-op; a handle that was already freed returns
/// `SDA_ERR_INVALID_HANDLE` without touching memory. The torch backend, once loaded, stays loaded for
/// the life of the process (libtorch cannot be unloaded safely).
///
/// Thread safety: [thread-safe]; calls still running on the context in other threads finish first.
#[no_mangle]
pub extern "C" fn sda_context_free(context: *mut sda_context) -> Status {
    guard(|| CONTEXTS.remove(context.cast::<c_void>(), "context"))
}
