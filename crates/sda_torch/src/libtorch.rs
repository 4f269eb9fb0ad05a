//! Where libtorch lives in this process, and loading its CUDA half on demand.
//!
//! tch links with `--as-needed`, so `libtorch_cuda.so` is never loaded by itself and libtorch then
//! behaves as a CPU-only build even on a GPU machine. Loading it ourselves (`RTLD_NOW | RTLD_GLOBAL`)
//! registers the CUDA hooks. It must be loaded from the directory of the `libtorch_cpu.so` that is
//! actually mapped (a bare name has no search path to go by, and a different copy would be a second
//! libtorch in the process), which `dl_iterate_phdr` tells us.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::Failure;
use sda_backend_abi::{STATUS_TORCH_ERROR, STATUS_UNAVAILABLE};

/// File name of libtorch's CPU library, the one every libtorch build has.
const CPU_LIB: &str = "libtorch_cpu.so";
/// File name of libtorch's CUDA library, present only in CUDA builds.
const CUDA_LIB: &str = "libtorch_cuda.so";

/// Set once `load_cuda` has succeeded; never cleared (the library is never unloaded).
static CUDA_LOADED: AtomicBool = AtomicBool::new(false);
/// Serialises `load_cuda` so that two threads do not race on dlopen/dlerror.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// True once `libtorch_cuda.so` has been loaded by [`load_cuda`].
pub fn cuda_loaded() -> bool {
    CUDA_LOADED.load(Ordering::Acquire)
}

/// Path of the `libtorch_cpu.so` mapped into this process (canonicalised when possible), if any.
pub fn mapped_libtorch_cpu() -> Option<PathBuf> {
    sda_backend_abi::mapped_library(CPU_LIB)
}

/// Path where this libtorch's CUDA library would be: beside the mapped `libtorch_cpu.so`.
pub fn cuda_lib_path() -> Option<PathBuf> {
    mapped_libtorch_cpu().and_then(|cpu| cpu.parent().map(|dir| dir.join(CUDA_LIB)))
}

/// Loads `libtorch_cuda.so` from beside the mapped `libtorch_cpu.so`. Idempotent and thread-safe.
///
/// The handle is deliberately never closed: libtorch keeps pointers into it (its registered hooks).
pub fn load_cuda() -> Result<(), Failure> {
    let _guard = LOAD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if cuda_loaded() {
        return Ok(());
    }
    let cpu = mapped_libtorch_cpu().ok_or_else(|| {
        Failure::new(
            STATUS_TORCH_ERROR,
            format!("{CPU_LIB} is not mapped into this process"),
        )
    })?;
    let path = cpu
        .parent()
        .map(|dir| dir.join(CUDA_LIB))
        .unwrap_or_else(|| PathBuf::from(CUDA_LIB));
    if !path.is_file() {
        return Err(Failure::new(
            STATUS_UNAVAILABLE,
            format!(
                "this libtorch has no CUDA library ({} does not exist): it is a CPU-only build",
                path.display()
            ),
        ));
    }
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Failure::new(
            STATUS_TORCH_ERROR,
            format!("path {} contains a NUL byte", path.display()),
        )
    })?;
    // SAFETY: `cpath` is a live NUL-terminated path; dlopen runs libtorch_cuda's initialisers, which
    // register its CUDA hooks with the libtorch_cpu already mapped (the purpose of the call); dlerror
    // is cleared and read under LOAD_LOCK, so no other load_cuda races on its thread state.
    let handle = unsafe {
        libc::dlerror(); // clear any stale error so the text below is ours
        libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL)
    };
    if handle.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call.
        let detail = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown dlopen error".to_string()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(Failure::new(
            STATUS_TORCH_ERROR,
            format!("loading {} failed: {detail}", path.display()),
        ));
    }
    CUDA_LOADED.store(true, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapped_libtorch_cpu() {
        // The unit-test binary links libtorch like the cdylib does.
        let path = mapped_libtorch_cpu().expect("libtorch_cpu.so is mapped");
        assert!(path.ends_with(CPU_LIB), "{}", path.display());
        assert!(path.is_absolute(), "{}", path.display());
    }
}
