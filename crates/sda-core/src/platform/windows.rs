//! Windows: `LoadLibraryExW`, `GetModuleHandleExW` + `GetModuleFileNameW`, `GetSystemInfo`. No
//! `/proc`, no cgroups, no POSIX modes. Type-checked and linted here (`make cross-check`), not run.

use std::ffi::OsString;
use std::os::windows::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use windows_sys::Win32::Foundation::HMODULE;
use windows_sys::Win32::System::LibraryLoader::{
    GetModuleFileNameW, GetModuleHandleExW, GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
    GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};

/// No `/proc` on Windows: memory figures come from sysinfo, and there are no cgroups.
pub(crate) const HAS_PROC_FS: bool = false;

/// Opens a DLL so that the DLLs it needs are looked for in its own directory first
/// (`LOAD_WITH_ALTERED_SEARCH_PATH`: the module's libtorch DLLs lie beside it or on `PATH`).
///
/// # Safety
/// Opening a library runs its initialisers (`DllMain`): the caller vouches for what they do.
pub(crate) unsafe fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: the caller vouches for the library's initialisers (this function's contract).
    unsafe {
        libloading::os::windows::Library::load_with_flags(
            path,
            libloading::os::windows::LOAD_WITH_ALTERED_SEARCH_PATH,
        )
    }
    .map(libloading::Library::from)
}

/// Opens a DLL that later DLLs need (the libtorch the core chose, before the backend module): Windows
/// has one namespace of loaded modules, so this is `open_library` (a DLL already loaded under a name
/// is what a later import of that name binds to).
///
/// # Safety
/// Opening a library runs its initialisers: the caller vouches for what they do.
pub(crate) unsafe fn open_library_global(
    path: &Path,
) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: the caller vouches for the library's initialisers (this function's contract).
    unsafe { open_library(path) }
}

/// Directory of the DLL (or executable) that contains this function.
pub(crate) fn own_directory() -> Option<PathBuf> {
    let mut module: HMODULE = std::ptr::null_mut();
    // SAFETY: with FROM_ADDRESS the "name" is an address inside the module (this function's own),
    // UNCHANGED_REFCOUNT takes no reference that would need freeing, and `module` is a live out slot.
    let found = unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
            own_directory as *const u16,
            &mut module,
        )
    };
    if found == 0 {
        return None;
    }
    let mut buf = vec![0u16; 1024];
    loop {
        let cap = u32::try_from(buf.len()).ok()?;
        // SAFETY: `module` is this code's own module (mapped while this runs) and `buf` is a live
        // buffer of `cap` UTF-16 units, which the call writes at most.
        let n = unsafe { GetModuleFileNameW(module, buf.as_mut_ptr(), cap) } as usize;
        if n == 0 {
            return None;
        }
        if n < buf.len() {
            let path = PathBuf::from(OsString::from_wide(&buf[..n]));
            return path.parent().map(Path::to_path_buf);
        }
        // Truncated: try again with more room (paths may be up to 32767 units long).
        if buf.len() >= 1 << 15 {
            return None;
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// A path as the NUL-terminated UTF-8 that the backend's C functions take (libtorch opens files by
/// narrow names); `None` when it is not Unicode or holds a NUL.
pub(crate) fn path_to_c(path: &Path) -> Option<std::ffi::CString> {
    std::ffi::CString::new(path.to_str()?).ok()
}

/// Bytes per memory page.
pub(crate) fn page_size() -> u64 {
    // SAFETY: SYSTEM_INFO is plain integers and pointers, for which all-zero is valid.
    let mut info: SYSTEM_INFO = unsafe { std::mem::zeroed() };
    // SAFETY: GetSystemInfo only writes the live, correctly typed `info`.
    unsafe { GetSystemInfo(&mut info) };
    Some(u64::from(info.dwPageSize))
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// Whether this process may write into `path` (an existing directory). Windows has no `access(2)`:
/// an existing directory without the read-only attribute counts as writable (ACLs are not asked).
pub(crate) fn dir_writable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir() && !m.permissions().readonly())
}

/// Windows files have no POSIX mode: a new file gets the directory's inherited ACL.
pub(crate) fn new_file_permissions() -> Option<std::fs::Permissions> {
    None
}

/// Opening a file path never blocks on Windows (a busy named pipe fails instead): nothing to set.
pub(crate) fn open_nonblocking(_options: &mut std::fs::OpenOptions) {}

/// Windows cannot open a directory to flush it; the replacing rename (`MoveFileExW`) is where NTFS
/// makes the change durable.
pub(crate) fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Nothing to trim: the Windows heap returns freed pages by itself.
pub(crate) fn trim_heap() {}
