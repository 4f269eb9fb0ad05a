//! Which shared libraries this process has mapped, and libtorch's file names, per OS: the core asks
//! before it opens the backend (is a libtorch already there, the host's or Python's?), the backend to
//! find the libtorch it is bound to. Linux: `dl_iterate_phdr`; macOS: `_dyld_image_count` /
//! `_dyld_get_image_name`; Windows: `K32EnumProcessModules` + `GetModuleFileNameW`.

use std::path::{Path, PathBuf};

/// File name of libtorch's CPU library, the one every libtorch build has.
#[cfg(target_os = "linux")]
pub const LIBTORCH_CPU: &str = "libtorch_cpu.so";
/// File name of libtorch's CUDA library, present only in CUDA builds.
#[cfg(target_os = "linux")]
pub const LIBTORCH_CUDA: &str = "libtorch_cuda.so";
/// File name of libtorch's C++ API library (`torch::`), which AOTInductor packages link.
#[cfg(target_os = "linux")]
pub const LIBTORCH_API: &str = "libtorch.so";

/// File name of libtorch's CPU library, the one every libtorch build has.
#[cfg(target_os = "macos")]
pub const LIBTORCH_CPU: &str = "libtorch_cpu.dylib";
/// File name of libtorch's CUDA library (PyTorch ships no CUDA build for macOS; never found).
#[cfg(target_os = "macos")]
pub const LIBTORCH_CUDA: &str = "libtorch_cuda.dylib";
/// File name of libtorch's C++ API library (`torch::`), which AOTInductor packages link.
#[cfg(target_os = "macos")]
pub const LIBTORCH_API: &str = "libtorch.dylib";

/// File name of libtorch's CPU library, the one every libtorch build has.
#[cfg(windows)]
pub const LIBTORCH_CPU: &str = "torch_cpu.dll";
/// File name of libtorch's CUDA library, present only in CUDA builds.
#[cfg(windows)]
pub const LIBTORCH_CUDA: &str = "torch_cuda.dll";
/// File name of libtorch's C++ API library (`torch::`), which AOTInductor packages link.
#[cfg(windows)]
pub const LIBTORCH_API: &str = "torch.dll";

/// Name of the static every backend module exports: `[u8; BUILT_LIBTORCH_LEN]` holding
/// "VERSION\nDIR" (the libtorch version and `lib/` directory it was built against), NUL-padded. The
/// core reads it from the module's file without loading it, to choose the module that matches the
/// libtorch it found.
pub const BUILT_LIBTORCH_SYMBOL: &str = "sda_torch_built_libtorch";
/// Length in bytes of the [`BUILT_LIBTORCH_SYMBOL`] record.
pub const BUILT_LIBTORCH_LEN: usize = 512;

/// Parses a [`BUILT_LIBTORCH_SYMBOL`] record into (version, directory); `None` when it has no
/// version.
pub fn parse_built_libtorch(record: &[u8]) -> Option<(String, PathBuf)> {
    let end = record.iter().position(|&b| b == 0).unwrap_or(record.len());
    let text = std::str::from_utf8(&record[..end]).ok()?;
    let (version, dir) = text.split_once('\n').unwrap_or((text, ""));
    let version = version.trim();
    (!version.is_empty()).then(|| (version.to_string(), PathBuf::from(dir)))
}

/// Whether `path`'s file name is `file_name` (ASCII case ignored on Windows, whose file names are).
fn has_file_name(path: &Path, file_name: &str) -> bool {
    path.file_name().is_some_and(|f| {
        if cfg!(windows) {
            f.to_string_lossy().eq_ignore_ascii_case(file_name)
        } else {
            f == file_name
        }
    })
}

fn canonical(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// Path of the shared library named `file_name` that is mapped into this process (canonicalised when
/// possible), if any.
#[cfg(target_os = "linux")]
pub fn mapped_library(file_name: &str) -> Option<PathBuf> {
    use std::ffi::{c_int, c_void, CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;

    /// What the iteration looks for and what it found.
    struct Search<'a> {
        file_name: &'a str,
        found: Option<PathBuf>,
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes the `data` pointer given below, an exclusive pointer to a
        // live `Search`, and an `info` valid for the duration of this call.
        let (search, name) = unsafe { (&mut *data.cast::<Search<'_>>(), (*info).dlpi_name) };
        if name.is_null() {
            return 0;
        }
        // SAFETY: a non-null dlpi_name is the loader's NUL-terminated path of the object.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        let path = Path::new(OsStr::from_bytes(bytes));
        if has_file_name(path, search.file_name) {
            search.found = Some(path.to_path_buf());
            return 1; // stop iterating
        }
        0
    }
    let mut search = Search {
        file_name,
        found: None,
    };
    // SAFETY: `visit` has the C signature dl_iterate_phdr expects and only touches `search`, through
    // `data`, an exclusive pointer to it; the iteration is synchronous, so `search` outlives every
    // callback, and nothing else borrows it meanwhile.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search<'_>).cast()) };
    search.found.map(canonical)
}

/// Path of the shared library named `file_name` that is mapped into this process (canonicalised when
/// possible), if any.
#[cfg(target_os = "macos")]
pub fn mapped_library(file_name: &str) -> Option<PathBuf> {
    use std::ffi::{c_char, CStr, OsStr};
    use std::os::unix::ffi::OsStrExt;

    // dyld's own API (<mach-o/dyld.h>, in libSystem, which every program links); declared here
    // because the libc crate deprecates its copies in favour of another crate.
    extern "C" {
        fn _dyld_image_count() -> u32;
        fn _dyld_get_image_name(image_index: u32) -> *const c_char;
    }

    // SAFETY: _dyld_image_count has no preconditions.
    let count = unsafe { _dyld_image_count() };
    (0..count).find_map(|i| {
        // SAFETY: any index is allowed; an index that became invalid (an image unloaded meanwhile)
        // gives NULL, checked below.
        let name = unsafe { _dyld_get_image_name(i) };
        if name.is_null() {
            return None;
        }
        // SAFETY: a non-null result is dyld's NUL-terminated path of the image, valid while it
        // stays loaded (it is copied at once).
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
        let path = Path::new(OsStr::from_bytes(bytes));
        has_file_name(path, file_name).then(|| canonical(path.to_path_buf()))
    })
}

/// Path of the shared library named `file_name` that is mapped into this process (canonicalised when
/// possible), if any.
#[cfg(windows)]
pub fn mapped_library(file_name: &str) -> Option<PathBuf> {
    use std::ffi::{c_void, OsString};
    use std::os::windows::ffi::OsStringExt;

    type Handle = *mut c_void;
    #[link(name = "kernel32")]
    extern "system" {
        fn GetCurrentProcess() -> Handle;
        fn K32EnumProcessModules(
            process: Handle,
            modules: *mut Handle,
            cb: u32,
            needed: *mut u32,
        ) -> i32;
        fn GetModuleFileNameW(module: Handle, name: *mut u16, size: u32) -> u32;
    }

    let mut modules: Vec<Handle> = vec![std::ptr::null_mut(); 512];
    loop {
        let cb = u32::try_from(modules.len() * std::mem::size_of::<Handle>()).ok()?;
        let mut needed = 0u32;
        // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing; `modules` is a
        // live buffer of `cb` bytes and `needed` a live out slot, which is all the call writes.
        let ok = unsafe {
            K32EnumProcessModules(GetCurrentProcess(), modules.as_mut_ptr(), cb, &mut needed)
        };
        if ok == 0 {
            return None;
        }
        let count = needed as usize / std::mem::size_of::<Handle>();
        if count <= modules.len() {
            modules.truncate(count);
            break;
        }
        modules.resize(count, std::ptr::null_mut());
    }
    let mut buf = vec![0u16; 32768];
    modules.into_iter().find_map(|module| {
        // SAFETY: `module` came from the list just taken (a module unloaded meanwhile makes the call
        // fail with 0, checked below); `buf` is a live buffer of the length passed.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) } as usize;
        if n == 0 || n >= buf.len() {
            return None;
        }
        let path = PathBuf::from(OsString::from_wide(&buf[..n]));
        has_file_name(&path, file_name).then(|| canonical(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_record_parses_with_or_without_a_directory() {
        let mut record = b"2.13.0\n/opt/torch/lib".to_vec();
        record.resize(BUILT_LIBTORCH_LEN, 0);
        assert_eq!(
            parse_built_libtorch(&record),
            Some(("2.13.0".into(), PathBuf::from("/opt/torch/lib")))
        );
        assert_eq!(
            parse_built_libtorch(b"2.11.0\0\0"),
            Some(("2.11.0".into(), PathBuf::new()))
        );
        assert_eq!(parse_built_libtorch(&[0; 8]), None);
    }

    #[test]
    fn a_name_that_is_not_mapped_is_not_found() {
        assert_eq!(mapped_library("libsda_no_such_library.so"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_c_library_is_found_mapped() {
        let libc_path = mapped_library("libc.so.6").expect("every Linux process maps libc");
        assert!(libc_path.is_file(), "{}", libc_path.display());
    }

    #[test]
    fn file_names_compare_as_the_os_does() {
        assert!(has_file_name(
            Path::new("/x/libtorch_cpu.so"),
            "libtorch_cpu.so"
        ));
        assert!(!has_file_name(
            Path::new("/x/libtorch_cpu.so.1"),
            "libtorch_cpu.so"
        ));
        assert_eq!(
            has_file_name(Path::new("/x/TORCH_CPU.DLL"), "torch_cpu.dll"),
            cfg!(windows)
        );
    }
}
