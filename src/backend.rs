//! Loading the torch backend when the host chooses, and reporting what was loaded.

use crate::context::{context_of, sda_context};
use crate::sized::{self, growable, sda_bool, zeroed_with_size, Growable, Out};
use crate::status::Status;
use crate::{fill_fixed, guard};
use sda_core::backend;
use std::os::raw::c_char;

/// What the torch backend module loaded. Initialise it with `SDA_BACKEND_DETAILS_INIT(&details)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sda_backend_details {
    /// `sizeof(sda_backend_details)` as the caller was compiled; set by `sda_backend_details_init`.
    pub struct_size: u32,
    /// 1 once the backend is loaded in this process, else 0; all other fields are empty until then.
    pub loaded: sda_bool,
    /// 1 when the loaded libtorch is a CUDA build (ships `libtorch_cuda.so`), else 0.
    pub cuda_build: sda_bool,
    /// Path of the backend module, NUL-terminated.
    pub module_path: [c_char; 1024],
    /// Path of the libtorch (`libtorch_cpu.so`) mapped into the process, NUL-terminated.
    pub libtorch_path: [c_char; 1024],
    /// Version of the mapped libtorch (`2.13.0`), empty when it cannot be told, NUL-terminated.
    pub libtorch_version: [c_char; 64],
    /// libtorch version the backend was built against, NUL-terminated.
    pub built_libtorch_version: [c_char; 64],
    /// CUDA version of the libtorch build (`13.0`), empty for CPU builds, NUL-terminated.
    pub libtorch_cuda_version: [c_char; 16],
    /// 1 when the mapped libtorch was already in the process before the backend was opened (the
    /// host's own, or Python's after `import torch`), 0 when it was loaded for the backend.
    pub libtorch_preloaded: sda_bool,
    /// How the libtorch was found, a short stable name, NUL-terminated: `mapped` (already in the
    /// process), `SDA_LIBTORCH`, `hardware.libtorch` (the config key), `bundled` (beside libsda) or
    /// `built` (the one the backend was built against); empty for a backend module that records no
    /// libtorch (its own run path found one).
    pub libtorch_found_by: [c_char; 32],
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_backend_details {
    struct_size, loaded, cuda_build, module_path, libtorch_path, libtorch_version,
    built_libtorch_version, libtorch_cuda_version, libtorch_preloaded, libtorch_found_by,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_backend_details is repr(C) of integers, sda_bool and c_char arrays (0 = empty
    // string): all-zero bytes are a valid value, the "not loaded" report.
    unsafe { zeroed_with_size() }
});

/// Initialises an empty backend report (`struct_size` = `size`, the caller's
/// `sizeof(sda_backend_details)`; `SDA_BACKEND_DETAILS_INIT(&details)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_backend_details_init(
    details: *mut sda_backend_details,
    size: usize,
) -> Status {
    guard(|| sized::init(details, size, "details"))
}

/// Loads the torch backend module and its libtorch now, so that the host pays for libtorch's start-up
/// (about a quarter of a second, and 100+ MB) when it chooses — at start-up, off the audio thread —
/// instead of on the first call that needs torch. Loading happens once per process; later calls return
/// at once.
///
/// The module is looked for at `$SDA_BACKEND`, the configuration's `hardware.backend`, and beside
/// libsda. When it or its libtorch is missing or of the wrong version the call returns
/// `SDA_ERR_BACKEND_UNAVAILABLE` with a message naming what was looked for and the fix; everything that
/// needs no torch keeps working.
///
/// Thread safety: [thread-safe]; [main-thread] recommended (slow the first time).
#[no_mangle]
pub extern "C" fn sda_backend_load(context: *const sda_context) -> Status {
    guard(|| context_of(context)?.load_backend().map(|_| ()))
}

/// Reports the loaded backend (`out->loaded` is `false` when none is loaded yet; that is not an
/// error). Never loads anything.
///
/// Thread safety: [thread-safe].
#[no_mangle]
pub extern "C" fn sda_backend_info(out_details: *mut sda_backend_details) -> Status {
    guard(|| {
        let slot = Out::new(out_details, "out_details")?;
        let mut d = sda_backend_details::defaults();
        if let Some(b) = backend::loaded() {
            let info = b.info();
            d.loaded = 1;
            d.cuda_build = info.cuda_build.into();
            fill_fixed(&mut d.module_path, &info.module_path.display().to_string());
            fill_fixed(
                &mut d.libtorch_path,
                &info.loaded_libtorch_path.display().to_string(),
            );
            fill_fixed(
                &mut d.libtorch_version,
                info.loaded_libtorch_version.as_deref().unwrap_or(""),
            );
            fill_fixed(&mut d.built_libtorch_version, &info.built_libtorch_version);
            fill_fixed(
                &mut d.libtorch_cuda_version,
                info.libtorch_cuda_version.as_deref().unwrap_or(""),
            );
            d.libtorch_preloaded = info.libtorch_preloaded.into();
            fill_fixed(
                &mut d.libtorch_found_by,
                info.libtorch_found_by.map_or("", |s| s.as_str()),
            );
        }
        slot.write(&d);
        Ok(())
    })
}
