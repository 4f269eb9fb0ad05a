//! Exports that exist only in builds with the `test-hooks` feature, so that tests can prove the
//! boundary's guarantees. Never present in release artifacts.

use crate::guard;
use crate::status::Status;

/// Panics inside an export on purpose; must return `SDA_ERR_PANIC` and leave the process running.
#[no_mangle]
pub extern "C" fn sda_debug_force_panic() -> Status {
    guard(|| panic!("forced by sda_debug_force_panic"))
}
