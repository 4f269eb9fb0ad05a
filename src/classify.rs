//! `sda_classify_error`: is an exception text an out-of-memory?

use crate::guard;
use crate::status::Status;
use sda_core::classify::classify_error;
use sda_core::error::Error;
use std::ffi::CStr;
use std::os::raw::c_char;

/// Tells whether an error text reports out-of-memory, so that a C++ or Python host can decide what
/// to do with an exception it caught (`e.what()`, `str(e)`): `SDA_ERR_OUT_OF_MEMORY` means a device
/// ran out of memory (retry with a smaller batch, on `device=cpu`, or after closing other GPU
/// work); `SDA_ERR_TORCH` means any other failure (a bug, a shape or device mismatch, a device-side
/// assert).
///
/// Knows the texts of CUDA (`CUDA out of memory. Tried to allocate ...`, `CUDA error: out of
/// memory`, the per-process-fraction rejection), HIP, XPU, MPS, Metal, cuBLAS, cuDNN, PyTorch's CPU
/// allocator (Linux and Windows), oneDNN, `std::bad_alloc`, `torch.OutOfMemoryError`, Python's
/// `MemoryError` and XLA's `RESOURCE_EXHAUSTED`. Case-insensitive; prefixes such as `RuntimeError:
/// ` and appended C++ backtraces do not matter. `CUDA error: an illegal memory access was
/// encountered` is not an out-of-memory.
///
/// `message` is a NUL-terminated string in any encoding: bytes that are not UTF-8 are replaced,
/// never rejected. Returns `SDA_ERR_OUT_OF_MEMORY` or `SDA_ERR_TORCH`, or `SDA_ERR_NULL_POINTER`
/// when `message` is NULL. A classification is not a failure: it leaves `sda_last_error_message()`
/// unchanged.
///
/// Thread safety: [thread-safe]; cheap (one copy of the text, no lock), but it allocates, so keep
/// it off the audio thread.
#[no_mangle]
pub extern "C" fn sda_classify_error(message: *const c_char) -> Status {
    // `guard` maps Ok(()) to SDA_OK, so the verdict travels out beside it: guard keeps the panic
    // safety and records a message only for the NULL error, never for a classification.
    let mut verdict = Status::SDA_ERR_TORCH;
    let status = guard(|| {
        if message.is_null() {
            return Err(Error::null_pointer("message is NULL".to_string()));
        }
        // SAFETY: `message` is non-null (checked above), and the documentation above requires a
        // NUL-terminated string in any encoding, alive during the call; `from_ptr` asks nothing of the
        // bytes before the NUL, and the lossy conversion below copies them.
        let bytes = unsafe { CStr::from_ptr(message) }.to_bytes();
        // Exception texts come in the host's encoding (Windows code pages, Latin-1 file names): the
        // markers are ASCII, so a lossy conversion classifies them as well as a strict one would.
        verdict = Status::from(classify_error(&String::from_utf8_lossy(bytes)));
        Ok(())
    });
    if status == Status::SDA_OK {
        verdict
    } else {
        status
    }
}
