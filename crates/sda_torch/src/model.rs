//! Model files as the workload: the table's `model_load`, `model_run`, `model_free` and
//! `model_count` (ABI 2).
//!
//! The work itself is in the C++ shim (`sda_shim_model_*`): `torch::jit::load` for TorchScript,
//! `torch::inductor::AOTIModelPackageLoader` for AOTInductor packages (`.pt2`), a registry of loaded
//! models keyed by a `u64` handle (so that a stale or forged handle is an error, never a wild
//! pointer). This side checks every argument first (device, path, batch, shape, dtype, flags), so that
//! the shim only ever sees valid values, and classifies libtorch's failures like the built-in workload
//! does ([`crate::torch_failure`]): out-of-memory texts become `STATUS_OUT_OF_MEMORY`.

use std::ffi::CStr;
use std::os::raw::c_char;

use sda_backend_abi::{
    ErrBuf, ModelFacts, DEVICE_CPU, DTYPE_BF16, DTYPE_F16, DTYPE_F32, MODEL_FORMAT_AOTI,
    MODEL_FORMAT_TORCHSCRIPT, STATUS_INVALID_ARGUMENT, STATUS_OK, STATUS_OUT_OF_MEMORY,
    STATUS_TORCH_ERROR,
};

use crate::{accelerator, ffi, guarded, target, torch_failure, Failure, Outcome, Target};

// The shim hard-codes these values: keep them in step.
const _: () = {
    assert!(MODEL_FORMAT_TORCHSCRIPT == 1 && MODEL_FORMAT_AOTI == 2);
    assert!(DTYPE_F32 == 0 && DTYPE_F16 == 1 && DTYPE_BF16 == 2);
};

/// Capacity of the scratch buffer for the shim's model messages: the TorchScript interpreter's
/// texts are long even condensed.
const MODEL_ERR_CAP: usize = 2048;

/// Calls a model function of the shim with a scratch message buffer; a non-OK status becomes a
/// [`Failure`], a `STATUS_TORCH_ERROR` classified by libtorch's out-of-memory texts.
fn model_shim(call: impl FnOnce(*mut c_char, usize) -> i32) -> Outcome {
    let mut buf = [0 as c_char; MODEL_ERR_CAP];
    let status = call(buf.as_mut_ptr(), buf.len());
    if status == STATUS_OK {
        return Ok(());
    }
    let text = sda_backend_abi::read_fixed(&buf);
    if status == STATUS_TORCH_ERROR {
        // The shim prefixed the text with what it was doing; `torch_failure` adds its own context,
        // so split it off again to keep one prefix.
        let (context, message) = text.split_once(": ").unwrap_or(("model", text.as_str()));
        return Err(torch_failure(
            context,
            &tch::TchError::Torch(message.to_string()),
        ));
    }
    Err(Failure::new(status, text))
}

/// The shim's `(kind, index)` of a validated target (accelerators: CUDA loaded, index below the
/// count, MPS present).
fn device_codes(kind: i32, index: i32) -> Result<(i32, i32), Failure> {
    match target(kind, index)? {
        Target::Cpu => Ok((DEVICE_CPU, 0)),
        other => accelerator(other),
    }
}

/// Bytes of one element of a `DTYPE_*`; `None` for an unknown code.
fn element_bytes(dtype: i32) -> Option<u64> {
    match dtype {
        DTYPE_F32 => Some(4),
        DTYPE_F16 | DTYPE_BF16 => Some(2),
        _ => None,
    }
}

/// The input's sizes (the batch first) as libtorch's `i64`, after the argument checks: a zero batch
/// or dimension, an unknown dtype and a `train` other than 0/1 are `STATUS_INVALID_ARGUMENT`; an
/// input of more than 2^63 bytes is `STATUS_OUT_OF_MEMORY` (no device holds it).
pub(crate) fn input_sizes(
    batch: u32,
    shape: &[u64],
    dtype: i32,
    train: u8,
) -> Result<Vec<i64>, Failure> {
    let invalid = |msg: String| Failure::new(STATUS_INVALID_ARGUMENT, format!("model: {msg}"));
    if batch == 0 {
        return Err(invalid("batch must not be 0".into()));
    }
    if let Some(at) = shape.iter().position(|&d| d == 0) {
        return Err(invalid(format!(
            "dimension {at} of the input shape {shape:?} is 0"
        )));
    }
    let bytes = element_bytes(dtype)
        .ok_or_else(|| invalid(format!("unknown dtype code {dtype} (0 f32, 1 f16, 2 bf16)")))?;
    if train > 1 {
        return Err(invalid(format!("train is {train}, not 0 or 1")));
    }
    let too_big = || {
        Failure::new(
            STATUS_OUT_OF_MEMORY,
            format!(
                "model: an input of batch {batch} and shape {shape:?} needs more than 2^63 bytes"
            ),
        )
    };
    let total = shape
        .iter()
        .try_fold(u64::from(batch).saturating_mul(bytes), |acc, &d| {
            acc.checked_mul(d)
        })
        .ok_or_else(too_big)?;
    if total > i64::MAX as u64 {
        return Err(too_big());
    }
    // Each size is at most the total, which fits i64 now.
    let mut sizes = Vec::with_capacity(shape.len() + 1);
    sizes.push(i64::from(batch));
    sizes.extend(shape.iter().map(|&d| d as i64));
    Ok(sizes)
}

/// `BackendApi::model_load`.
pub(crate) unsafe extern "C" fn api_model_load(
    path: *const c_char,
    kind: i32,
    index: i32,
    handle: *mut u64,
    facts: *mut ModelFacts,
    err: ErrBuf,
    err_cap: usize,
) -> i32 {
    if !handle.is_null() {
        // SAFETY: non-NULL, and the table's contract makes `handle` valid and aligned for one u64
        // write: "no model" until a load succeeds.
        unsafe { handle.write(0) };
    }
    guarded(err, err_cap, || {
        if path.is_null() || handle.is_null() || facts.is_null() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                "model_load: path, handle and facts must not be NULL",
            ));
        }
        let (kind, index) = device_codes(kind, index)?;
        // SAFETY: `path` is non-NULL (checked) and, by the table's contract, NUL-terminated.
        let cpath = unsafe { CStr::from_ptr(path) };
        let shown = cpath.to_string_lossy().into_owned();
        let Some(file) = c_path(cpath) else {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                format!("model_load: the path {shown} is not UTF-8"),
            ));
        };
        let file = file.as_path();
        if !file.exists() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                format!("no model file at {shown}"),
            ));
        }
        if !file.is_file() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                format!(
                    "{shown} is not a file (a TorchScript module or an AOTInductor .pt2 package)"
                ),
            ));
        }
        if file.extension().is_some_and(|e| e == "pt2") {
            crate::libtorch::ensure_libtorch_for_aoti()?;
        }
        let (mut id, mut params, mut buffers, mut format) = (0u64, 0u64, 0u64, 0i32);
        // SAFETY: `cpath` is a live NUL-terminated string, the four out-pointers are distinct live
        // locals, `(e, c)` is `model_shim`'s live buffer, as ffi.rs declares the shim function;
        // `device_codes` has validated the device (CUDA loaded, index below the count).
        model_shim(|e, c| unsafe {
            ffi::sda_shim_model_load(
                cpath.as_ptr(),
                kind,
                index,
                &mut id,
                &mut params,
                &mut buffers,
                &mut format,
                e,
                c,
            )
        })?;
        // SAFETY: both checked non-NULL above; the table's contract makes them valid and aligned
        // for one write each of plain data (`write` drops nothing).
        unsafe {
            facts.write(ModelFacts {
                param_bytes: params,
                buffer_bytes: buffers,
                format,
            });
            handle.write(id);
        }
        Ok(())
    })
}

/// `BackendApi::model_run`.
pub(crate) unsafe extern "C" fn api_model_run(
    handle: u64,
    batch: u32,
    shape: *const u64,
    shape_len: usize,
    dtype: i32,
    train: u8,
    err: ErrBuf,
    err_cap: usize,
) -> i32 {
    guarded(err, err_cap, || {
        let shape: &[u64] = if shape_len == 0 {
            &[]
        } else if shape.is_null() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                "model_run: shape is NULL with a non-zero length",
            ));
        } else {
            // SAFETY: non-NULL (checked); the table's contract makes `shape` valid for reading
            // `shape_len` aligned u64s, which stay unchanged during the call.
            unsafe { std::slice::from_raw_parts(shape, shape_len) }
        };
        let sizes = input_sizes(batch, shape, dtype, train)?;
        // SAFETY: `sizes` is a live Vec of `sizes.len()` i64s, `(e, c)` is `model_shim`'s live
        // buffer, and every value was checked above, as ffi.rs's declaration requires; an unknown
        // handle is answered by the shim's registry, not dereferenced.
        model_shim(|e, c| unsafe {
            ffi::sda_shim_model_run(handle, sizes.as_ptr(), sizes.len(), dtype, train, e, c)
        })
    })
}

/// `BackendApi::model_free`.
pub(crate) unsafe extern "C" fn api_model_free(handle: u64, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        // SAFETY: a plain integer (looked up in the shim's registry) and `model_shim`'s buffer.
        model_shim(|e, c| unsafe { ffi::sda_shim_model_free(handle, e, c) })
    })
}

/// `BackendApi::model_count`.
pub(crate) unsafe extern "C" fn api_model_count(out: *mut u64, err: ErrBuf, err_cap: usize) -> i32 {
    guarded(err, err_cap, || {
        if out.is_null() {
            return Err(Failure::new(
                STATUS_INVALID_ARGUMENT,
                "model_count: out is NULL",
            ));
        }
        // SAFETY: takes no argument; it only reads the registry's size under its lock.
        let count = unsafe { ffi::sda_shim_model_count() };
        // SAFETY: checked non-NULL; the table's contract makes it valid for one aligned u64 write.
        unsafe { out.write(count) };
        Ok(())
    })
}

/// The path the core passed (`platform::path_to_c`: the OS's bytes on Unix, UTF-8 on Windows).
#[cfg(unix)]
fn c_path(path: &CStr) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Some(std::ffi::OsStr::from_bytes(path.to_bytes()).into())
}

/// The path the core passed (`platform::path_to_c`: the OS's bytes on Unix, UTF-8 on Windows).
#[cfg(not(unix))]
fn c_path(path: &CStr) -> Option<std::path::PathBuf> {
    path.to_str().ok().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_put_the_batch_first_and_check_every_argument() {
        assert_eq!(
            input_sizes(4, &[2, 88200], DTYPE_F32, 0).unwrap(),
            vec![4, 2, 88200]
        );
        assert_eq!(input_sizes(3, &[], DTYPE_BF16, 1).unwrap(), vec![3]);
        for (batch, shape, dtype, train) in [
            (0, vec![2], DTYPE_F32, 0),
            (1, vec![2, 0], DTYPE_F32, 0),
            (1, vec![2], 7, 0),
            (1, vec![2], DTYPE_F16, 2),
        ] {
            let e = input_sizes(batch, &shape, dtype, train).unwrap_err();
            assert_eq!(e.status, STATUS_INVALID_ARGUMENT, "{}", e.message);
        }
        let e = input_sizes(u32::MAX, &[u64::MAX / 2], DTYPE_F32, 0).unwrap_err();
        assert_eq!(e.status, STATUS_OUT_OF_MEMORY);
        let e = input_sizes(2, &[1 << 61], DTYPE_F32, 0).unwrap_err();
        assert_eq!(e.status, STATUS_OUT_OF_MEMORY, "{}", e.message);
    }
}
