//! What Linux and macOS share: `dlopen`, `dladdr`, `sysconf`, `access`, POSIX file modes and flags.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Opens a shared library with every symbol bound now (a missing libtorch symbol is an error here,
/// not a crash later) and its symbols kept out of the host's namespace (`RTLD_NOW | RTLD_LOCAL`).
///
/// # Safety
/// Opening a library runs its initialisers: the caller vouches for what they do.
pub(crate) unsafe fn open_library(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: the caller vouches for the library's initialisers (this function's contract).
    unsafe { libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL) }
        .map(libloading::Library::from)
}

/// Opens a shared library for the libraries opened after it (`RTLD_NOW | RTLD_GLOBAL`): how the core
/// preloads the libtorch it chose, so that the backend module's own `libtorch_cpu.so` and `libc10.so`
/// resolve to it (the loader matches an already loaded library by its SONAME) and libtorch's later
/// `dlopen`s (`libtorch_cuda.so`) see its symbols.
///
/// # Safety
/// Opening a library runs its initialisers: the caller vouches for what they do.
pub(crate) unsafe fn open_library_global(
    path: &Path,
) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: the caller vouches for the library's initialisers (this function's contract).
    unsafe { libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_GLOBAL) }
        .map(libloading::Library::from)
}

/// Directory of the shared object (or executable) that contains this function, found with `dladdr`.
pub(crate) fn own_directory() -> Option<PathBuf> {
    // SAFETY: Dl_info is four plain pointers, for which all-zero (NULL) is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = own_directory as *const libc::c_void;
    // SAFETY: dladdr only looks `here` up in the loader's tables (any address is allowed) and
    // writes the live, correctly typed `info`.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: on success dli_fname is NULL (checked above) or a NUL-terminated path owned by the
    // loader, valid while the object containing `here` (this very code) stays mapped.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    let path = PathBuf::from(OsStr::from_bytes(name.to_bytes()));
    let path = if path.is_absolute() {
        path
    } else {
        std::fs::canonicalize(&path).ok()?
    };
    path.parent().map(Path::to_path_buf)
}

/// A path as the NUL-terminated bytes C functions take (its bytes as they are); `None` when it holds
/// a NUL byte.
pub(crate) fn path_to_c(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// Bytes per memory page.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Whether this process may write into `path` (an existing directory), asked with `access(2)`, which
/// changes nothing.
pub(crate) fn dir_writable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The permissions a newly created file gets: 0666 minus the umask, as any editor would create it
/// (tempfile's own default is 0600).
pub(crate) fn new_file_permissions() -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt;
    Some(std::fs::Permissions::from_mode(0o666))
}

/// Makes `options` open without blocking: a FIFO with no writer would otherwise block the host.
pub(crate) fn open_nonblocking(options: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_NONBLOCK);
}

/// Flushes a directory entry change (the rename) to disk. Filesystems that cannot sync a directory
/// say so with EINVAL; there is nothing more to do on them.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}
