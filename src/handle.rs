//! Opaque handles that survive misuse: a handle is only ever looked up in a registry of live handles,
//! never dereferenced on the caller's word, so a double free or a use after free returns
//! `SDA_ERR_INVALID_HANDLE` instead of touching freed memory.
//!
//! Each registry maps the handle to an `Arc` of the object. A call clones the `Arc` and releases the
//! registry lock before doing its work, so long calls on one handle never block calls on others, and
//! freeing a handle while another thread still uses it only drops the object afterwards.
//!
//! A handle is a number drawn from one process-wide counter, not the object's address: an address
//! comes back from the allocator for the next object created after a free, so a stale handle would
//! silently reach that new object (a double free would free somebody else's configuration). Numbers
//! are never handed out twice and never shared between handle types.

use sda_core::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The next handle value, for every registry. Steps of 16 keep handles looking like aligned pointers
/// to debuggers and to bindings that assume so; at one handle per nanosecond it would take thousands
/// of years to wrap.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0x5da0_0000);
const HANDLE_STEP: usize = 16;

/// Live handles of one type.
pub(crate) struct Registry<T> {
    kind: &'static str,
    live: RwLock<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    /// An empty registry; `kind` names the handle type in messages (`sda_config`).
    pub(crate) const fn new(kind: &'static str) -> Registry<T> {
        Registry {
            kind,
            live: RwLock::new(None),
        }
    }

    /// Registers `value` and returns its handle (a number never handed out before in this process).
    pub(crate) fn insert(&self, value: T) -> *mut std::ffi::c_void {
        let value = Arc::new(value);
        let handle = NEXT_HANDLE.fetch_add(HANDLE_STEP, Ordering::Relaxed);
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.get_or_insert_with(HashMap::new).insert(handle, value);
        handle as *mut std::ffi::c_void
    }

    /// The object behind a live handle.
    pub(crate) fn get(&self, handle: *const std::ffi::c_void, name: &str) -> Result<Arc<T>> {
        if handle.is_null() {
            return Err(Error::null_pointer(format!("{name} is NULL")));
        }
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.as_ref()
            .and_then(|m| m.get(&(handle as usize)))
            .cloned()
            .ok_or_else(|| self.invalid(name))
    }

    /// Unregisters a handle. NULL is a no-op; an unknown or already freed handle is an error.
    pub(crate) fn remove(&self, handle: *const std::ffi::c_void, name: &str) -> Result<()> {
        if handle.is_null() {
            return Ok(());
        }
        let removed = {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            live.as_mut().and_then(|m| m.remove(&(handle as usize)))
        };
        // The object (when this was the last reference) is dropped here, outside the lock.
        removed.map(drop).ok_or_else(|| self.invalid(name))
    }

    fn invalid(&self, name: &str) -> Error {
        Error::invalid_handle(format!(
            "{name} is not a live {} handle (already freed, or not created by libsda)",
            self.kind
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sda_core::error::ErrorKind;

    #[test]
    fn double_free_and_use_after_free_are_errors() {
        let reg: Registry<u32> = Registry::new("thing");
        let h = reg.insert(7);
        assert_eq!(*reg.get(h, "h").unwrap(), 7);
        reg.remove(h, "h").unwrap();
        assert!(matches!(reg.get(h, "h"), Err(e) if e.kind() == ErrorKind::InvalidHandle));
        assert!(matches!(reg.remove(h, "h"), Err(e) if e.kind() == ErrorKind::InvalidHandle));
        assert!(reg.remove(std::ptr::null(), "h").is_ok());
        assert!(matches!(
            reg.get(std::ptr::null(), "h"),
            Err(e) if e.kind() == ErrorKind::NullPointer
        ));
    }

    #[test]
    fn a_freed_handle_stays_invalid_after_new_objects_take_its_memory() {
        let reg: Registry<String> = Registry::new("thing");
        let other: Registry<String> = Registry::new("other");
        let old = reg.insert("old".to_string());
        reg.remove(old, "h").unwrap();
        // The allocator hands the freed block to the next objects of the same size.
        let fresh: Vec<_> = (0..64).map(|i| reg.insert(format!("new {i}"))).collect();
        let foreign = other.insert("foreign".to_string());
        assert!(!fresh.contains(&old) && foreign != old);
        assert!(matches!(reg.get(old, "h"), Err(e) if e.kind() == ErrorKind::InvalidHandle));
        assert!(matches!(reg.remove(old, "h"), Err(e) if e.kind() == ErrorKind::InvalidHandle));
        // A handle of one type is never a handle of another.
        assert!(matches!(
            reg.get(foreign, "h"),
            Err(e) if e.kind() == ErrorKind::InvalidHandle
        ));
        assert!(fresh.iter().all(|&h| reg.get(h, "h").is_ok()));
    }

    #[test]
    fn an_object_in_use_outlives_its_free() {
        let reg: Registry<String> = Registry::new("thing");
        let h = reg.insert("alive".to_string());
        let held = reg.get(h, "h").unwrap();
        reg.remove(h, "h").unwrap();
        assert_eq!(*held, "alive");
    }
}
