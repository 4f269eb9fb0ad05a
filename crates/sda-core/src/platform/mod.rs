//! Everything in the core that differs between operating systems, behind one platform-free interface.
//!
//! The rest of sda-core is written once for every OS: it names no `cfg(target_os)`, `cfg(unix)` or
//! `std::os::*` (checked by `crates/sda-core/tests/layout.rs`), and asks this module instead:
//!
//! - paths as C strings for the backend ([`path_to_c`]: bytes on Unix, UTF-8 on Windows);
//! - opening a shared library and "the folder this library was loaded from" ([`open_library`],
//!   [`own_directory`]: `dlopen`/`dladdr` on Linux and macOS, `LoadLibraryExW`/`GetModuleFileNameW` on
//!   Windows);
//! - file names and search paths: the backend module's name, the NVIDIA driver's and NVML's, the
//!   loader's search-path variable and its separator ([`Os`], a table for every OS, so that the names
//!   of all three are tested on any one of them);
//! - the header check of a module before it is opened ([`find_truncated`], [`search_dirs`]: ELF,
//!   Mach-O thin and universal, PE, read with the `object` crate in `image.rs`);
//! - libraries already mapped into the process ([`mapped_library`]: lives in `sda_backend_abi`,
//!   because the backend module asks the same question);
//! - file-system details of the atomic config save ([`new_file_permissions`], [`open_nonblocking`],
//!   [`sync_dir`], [`dir_writable`]);
//! - host facts that the OS answers differently ([`page_size`], [`HAS_PROC_FS`],
//!   [`os_half_precision`], [`trim_heap`]).
//!
//! One file per OS: `linux.rs`, `macos.rs` (the two share `unix.rs`) and `windows.rs`, each exporting
//! the same names; this file picks one. Linux is where libsda runs and is tested; macOS and Windows are
//! type-checked and linted (`make cross-check`) but not run here.

mod image;

#[cfg(unix)]
mod unix;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as os;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as os;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
compile_error!("libsda supports Linux, macOS and Windows: crates/sda-core/src/platform/ has no file for this OS");

pub(crate) use image::{exported_bytes, find_truncated, search_dirs};
pub(crate) use os::{
    dir_writable, new_file_permissions, open_library, open_library_global, open_nonblocking,
    own_directory, page_size, path_to_c, sync_dir, trim_heap, HAS_PROC_FS,
};
pub(crate) use sda_backend_abi::mapped_library;

use std::path::PathBuf;

/// The operating systems libsda knows, with what differs between them as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Os {
    /// Linux (glibc or musl): ELF, `dlopen`, `LD_LIBRARY_PATH`.
    Linux,
    /// macOS: Mach-O, `dlopen`, `DYLD_LIBRARY_PATH`.
    MacOs,
    /// Windows: PE, `LoadLibraryExW`, `PATH`.
    Windows,
}

/// The OS this library was built for.
#[cfg(target_os = "linux")]
pub const OS: Os = Os::Linux;
/// The OS this library was built for.
#[cfg(target_os = "macos")]
pub const OS: Os = Os::MacOs;
/// The OS this library was built for.
#[cfg(windows)]
pub const OS: Os = Os::Windows;

impl Os {
    /// File name of the torch backend module (the `sda_torch` cdylib as Cargo names it).
    pub const fn module_file_name(self) -> &'static str {
        match self {
            Os::Linux => "libsda_torch.so",
            Os::MacOs => "libsda_torch.dylib",
            Os::Windows => "sda_torch.dll",
        }
    }

    /// File name of the NVIDIA CUDA driver library. NVIDIA ships no driver for macOS since CUDA
    /// 10.2; the name is what its last one was called, and loading it fails with "no NVIDIA driver".
    pub const fn cuda_driver_library(self) -> &'static str {
        match self {
            Os::Linux => "libcuda.so.1",
            Os::MacOs => "libcuda.dylib",
            Os::Windows => "nvcuda.dll",
        }
    }

    /// File name of NVML (the NVIDIA Management Library).
    pub const fn nvml_library(self) -> &'static str {
        match self {
            Os::Linux => "libnvidia-ml.so.1",
            Os::MacOs => "libnvidia-ml.dylib",
            Os::Windows => "nvml.dll",
        }
    }

    /// The environment variable whose directories the dynamic loader searches first for a
    /// library's dependencies.
    pub const fn library_path_env(self) -> &'static str {
        match self {
            Os::Linux => "LD_LIBRARY_PATH",
            Os::MacOs => "DYLD_LIBRARY_PATH",
            Os::Windows => "PATH",
        }
    }

    /// The directories of a search-path value, in order, empty entries dropped. glibc's loader
    /// splits `LD_LIBRARY_PATH` at `:` and at `;`; dyld splits at `:`; Windows at `;` (its paths
    /// contain `:` after the drive letter).
    pub fn split_search_path(self, value: &str) -> Vec<PathBuf> {
        let separators: &[char] = match self {
            Os::Linux => &[':', ';'],
            Os::MacOs => &[':'],
            Os::Windows => &[';'],
        };
        value
            .split(separators)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// File name of the torch backend module on this OS.
pub const MODULE_FILE_NAME: &str = OS.module_file_name();
/// File name of the NVIDIA CUDA driver library on this OS.
pub const CUDA_DRIVER_LIBRARY: &str = OS.cuda_driver_library();
/// File name of NVML on this OS.
pub const NVML_LIBRARY: &str = OS.nvml_library();

/// The directories of this process's loader search path (`LD_LIBRARY_PATH`, `DYLD_LIBRARY_PATH`,
/// `PATH`), which the header check follows to a module's dependencies.
pub(crate) fn library_search_path() -> Vec<PathBuf> {
    std::env::var(OS.library_path_env())
        .map(|v| OS.split_search_path(&v))
        .unwrap_or_default()
}

/// Native (bf16, fp16) arithmetic as the OS reports it, for systems without `/proc/cpuinfo` (macOS
/// and Windows on Arm); `(false, false)` where the CPU feature list is read from `/proc/cpuinfo`.
pub(crate) fn os_half_precision() -> (bool, bool) {
    #[cfg(all(target_arch = "aarch64", not(target_os = "linux")))]
    {
        (
            std::arch::is_aarch64_feature_detected!("bf16"),
            std::arch::is_aarch64_feature_detected!("fp16"),
        )
    }
    #[cfg(not(all(target_arch = "aarch64", not(target_os = "linux"))))]
    {
        (false, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn every_os_names_its_module_driver_and_nvml() {
        assert_eq!(Os::Linux.module_file_name(), "libsda_torch.so");
        assert_eq!(Os::MacOs.module_file_name(), "libsda_torch.dylib");
        assert_eq!(Os::Windows.module_file_name(), "sda_torch.dll");
        assert_eq!(Os::Linux.cuda_driver_library(), "libcuda.so.1");
        assert_eq!(Os::Windows.cuda_driver_library(), "nvcuda.dll");
        assert_eq!(Os::Linux.nvml_library(), "libnvidia-ml.so.1");
        assert_eq!(Os::Windows.nvml_library(), "nvml.dll");
        assert_eq!(MODULE_FILE_NAME, OS.module_file_name());
        assert_eq!(CUDA_DRIVER_LIBRARY, OS.cuda_driver_library());
        assert_eq!(NVML_LIBRARY, OS.nvml_library());
    }

    #[test]
    fn search_paths_split_as_each_loader_splits_them() {
        let dirs = |os: Os, v: &str| os.split_search_path(v);
        assert_eq!(
            dirs(Os::Linux, "/a:/b;/c::"),
            [Path::new("/a"), Path::new("/b"), Path::new("/c")]
        );
        assert_eq!(
            dirs(Os::MacOs, "/a:/b;c"),
            [Path::new("/a"), Path::new("/b;c")]
        );
        assert_eq!(
            dirs(Os::Windows, r"C:\torch\lib;;D:\x"),
            [Path::new(r"C:\torch\lib"), Path::new(r"D:\x")]
        );
        assert!(dirs(Os::Linux, "").is_empty());
        assert_eq!(Os::Linux.library_path_env(), "LD_LIBRARY_PATH");
        assert_eq!(Os::MacOs.library_path_env(), "DYLD_LIBRARY_PATH");
        assert_eq!(Os::Windows.library_path_env(), "PATH");
    }

    #[test]
    fn this_library_knows_its_own_directory_and_page_size() {
        let dir = own_directory().expect("the loader knows where this code came from");
        assert!(dir.is_absolute() && dir.is_dir(), "{}", dir.display());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            std::fs::canonicalize(exe.parent().unwrap()).unwrap(),
            std::fs::canonicalize(&dir).unwrap()
        );
        let page = page_size();
        assert!(page >= 4096 && page.is_power_of_two(), "{page}");
    }

    #[test]
    fn a_new_directory_is_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(dir_writable(dir.path()));
        assert!(!dir_writable(&dir.path().join("missing")));
        sync_dir(dir.path()).unwrap();
    }
}
