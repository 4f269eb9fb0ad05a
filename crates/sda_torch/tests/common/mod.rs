//! Loads the built `libsda_torch.so` the way the core does: `dlopen` (RTLD_LOCAL), `dlsym` of the
//! entry symbol, one call with the ABI version.

#![allow(dead_code)] // each test binary uses a different subset

use std::os::raw::c_char;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use sda_backend_abi::{read_fixed, BackendApi, EntryFn, ABI_VERSION, ENTRY_SYMBOL};

/// `target/<profile>/`: the directory above this test executable's `deps/`, where cargo put the
/// cdylib built for this same profile (also under a custom CARGO_TARGET_DIR).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of the module under test.
pub fn module_path() -> PathBuf {
    let path = profile_dir().join("libsda_torch.so");
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// The loaded module; leaked on purpose (the module is `-z nodelete` anyway).
pub fn library() -> &'static libloading::Library {
    static LIB: OnceLock<libloading::Library> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: loading our own module runs only its static initialisers and libtorch's (found
        // through its rpath), which have no preconditions; the Library lives in a static and is
        // never unloaded, so pointers taken from it stay valid.
        unsafe { libloading::Library::new(module_path()) }.expect("dlopen libsda_torch.so")
    })
}

/// The entry point.
pub fn entry() -> EntryFn {
    // SAFETY: ENTRY_SYMBOL names sda_torch_backend_entry, which the module defines with exactly the
    // EntryFn type (both sides are built from sda_backend_abi); the copied pointer stays valid
    // because `library()` never unloads the module.
    unsafe {
        *library()
            .get::<EntryFn>(ENTRY_SYMBOL)
            .expect("entry symbol")
    }
}

/// The table for this ABI version.
pub fn api() -> &'static BackendApi {
    // SAFETY: the entry point takes a plain integer and may be called from any thread at any time.
    let ptr = unsafe { entry()(ABI_VERSION) };
    assert!(!ptr.is_null(), "entry returned NULL for ABI_VERSION");
    // SAFETY: a non-NULL result points at the module's static, immutable table, which lives as long
    // as the never-unloaded module, so a `'static` shared borrow of it is sound.
    unsafe { &*ptr }
}

/// An error buffer for one call: [`Msg::ptr`] is valid for [`Msg::cap`] bytes of writes for as long
/// as the `Msg` lives and is not moved.
pub struct Msg {
    /// The caller-owned message buffer.
    pub buf: [c_char; 512],
}

impl Msg {
    /// An empty buffer.
    pub fn new() -> Self {
        Self { buf: [0; 512] }
    }
    /// Pointer to pass as `err`.
    pub fn ptr(&mut self) -> *mut c_char {
        self.buf.as_mut_ptr()
    }
    /// Capacity to pass as `err_cap`.
    pub fn cap(&self) -> usize {
        self.buf.len()
    }
    /// The message written, if any.
    pub fn text(&self) -> String {
        read_fixed(&self.buf)
    }
}

/// Serialises the tests of one binary: CPU byte counts are process-wide, so a concurrent smoke test
/// would move another test's numbers.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
