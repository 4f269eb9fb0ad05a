//! Linux: the POSIX calls of `unix.rs`, `/proc` for fresh memory figures and cgroups, glibc's heap
//! trim.

pub(crate) use super::unix::{
    dir_writable, new_file_permissions, open_library, open_library_global, open_nonblocking,
    own_directory, page_size, path_to_c, sync_dir,
};

/// `/proc/meminfo`, `/proc/self/statm`, `/proc/self/cgroup` and the cgroup files exist: the host
/// module reads memory figures there without allocating, instead of asking sysinfo.
pub(crate) const HAS_PROC_FS: bool = true;

/// Returns freed heap pages to the OS (glibc's `malloc_trim`; nothing with other C libraries).
pub(crate) fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap under its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
