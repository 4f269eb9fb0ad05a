//! macOS: the POSIX calls of `unix.rs`; no `/proc`, so memory figures come from sysinfo (Mach calls).

pub(crate) use super::unix::{
    dir_writable, new_file_permissions, open_library, open_library_global, open_nonblocking,
    own_directory, page_size, path_to_c, sync_dir,
};

/// macOS has no `/proc`: memory figures come from sysinfo, and there are no cgroups.
pub(crate) const HAS_PROC_FS: bool = false;

/// The system allocator returns freed pages by itself; nothing to do.
pub(crate) fn trim_heap() {}
