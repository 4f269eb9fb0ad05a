//! Where libtorch lives in this process, and loading its CUDA half on demand.
//!
//! tch links with `--as-needed`, so `libtorch_cuda.so` is never loaded by itself and libtorch then
//! behaves as a CPU-only build even on a GPU machine. Loading it ourselves (`RTLD_NOW | RTLD_GLOBAL`)
//! registers the CUDA hooks. It must be loaded from the directory of the `libtorch_cpu.so` that is
//! actually mapped (a bare name has no search path to go by, and a different copy would be a second
//! libtorch in the process), which `dl_iterate_phdr` tells us.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::Failure;
use sda_backend_abi::{STATUS_TORCH_ERROR, STATUS_UNAVAILABLE};

/// File name of libtorch's CPU library, the one every libtorch build has (`torch_cpu.dll` on
/// Windows).
const CPU_LIB: &str = sda_backend_abi::LIBTORCH_CPU;
/// File name of libtorch's CUDA library, present only in CUDA builds (`torch_cuda.dll` on Windows).
const CUDA_LIB: &str = sda_backend_abi::LIBTORCH_CUDA;

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
    dlopen_global(&path)?;
    CUDA_LOADED.store(true, Ordering::Release);
    Ok(())
}

/// File name of the library that carries libtorch's `torch::` C++ API symbols beside `libtorch_cpu`;
/// AOTInductor's compiled packages name it as a dependency.
const TORCH_LIB: &str = sda_backend_abi::LIBTORCH_API;

/// Makes `libtorch.so` present in the process, loaded from beside the mapped `libtorch_cpu.so`, so
/// that an AOTInductor package (whose compiled `.so` names `libtorch.so` and carries no search path
/// to it) can be opened. tch links with `--as-needed`, which leaves `libtorch.so` out. In a CUDA
/// build `libtorch.so` needs `libtorch_cuda.so`, so CUDA is loaded first, through [`load_cuda`]
/// (which keeps its bookkeeping right). Idempotent.
pub fn ensure_libtorch_for_aoti() -> Result<(), Failure> {
    if sda_backend_abi::mapped_library(TORCH_LIB).is_some() {
        return Ok(());
    }
    if cuda_lib_path().is_some_and(|p| p.is_file()) {
        load_cuda()?;
    }
    let _guard = LOAD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if sda_backend_abi::mapped_library(TORCH_LIB).is_some() {
        return Ok(());
    }
    let path = mapped_libtorch_cpu()
        .and_then(|cpu| cpu.parent().map(|dir| dir.join(TORCH_LIB)))
        .ok_or_else(|| {
            Failure::new(
                STATUS_TORCH_ERROR,
                format!("{CPU_LIB} is not mapped into this process"),
            )
        })?;
    if !path.is_file() {
        return Err(Failure::new(
            STATUS_UNAVAILABLE,
            format!(
                "AOTInductor packages need {}, which this libtorch does not have",
                path.display()
            ),
        ));
    }
    dlopen_global(&path)
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`, never closed (libtorch keeps pointers into what it
/// loads). Callers hold `LOAD_LOCK`, so that dlerror's text is theirs.
fn dlopen_global(path: &std::path::Path) -> Result<(), Failure> {
    // SAFETY: loading runs the library's initialisers, which register libtorch's hooks with the
    // libtorch_cpu already mapped (the purpose of the call); callers hold LOAD_LOCK, so no two loads
    // race on the loader's error state.
    let library = unsafe { open_global(path) }.map_err(|e| {
        Failure::new(
            STATUS_TORCH_ERROR,
            format!("loading {} failed: {e}", path.display()),
        )
    })?;
    // Never closed: libtorch keeps pointers into it.
    std::mem::forget(library);
    Ok(())
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`: symbols visible to later loads.
///
/// # Safety
/// Opening a library runs its initialisers: the caller vouches for what they do.
#[cfg(unix)]
unsafe fn open_global(
    path: &std::path::Path,
) -> Result<libloading::os::unix::Library, libloading::Error> {
    // SAFETY: the caller vouches for the initialisers (this function's contract).
    unsafe { libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_GLOBAL) }
}

/// `LoadLibraryExW` with the DLLs it needs looked for beside it first. Windows has no global symbol
/// namespace: torch_cuda.dll imports torch_cpu.dll by name, which resolves to the one mapped.
///
/// # Safety
/// Opening a library runs its initialisers (`DllMain`): the caller vouches for what they do.
#[cfg(windows)]
unsafe fn open_global(
    path: &std::path::Path,
) -> Result<libloading::os::windows::Library, libloading::Error> {
    // SAFETY: the caller vouches for the initialisers (this function's contract).
    unsafe {
        libloading::os::windows::Library::load_with_flags(
            path,
            libloading::os::windows::LOAD_WITH_ALTERED_SEARCH_PATH,
        )
    }
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
