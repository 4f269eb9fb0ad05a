//! A model file as the workload: `sda_model`, a TorchScript module or an AOTInductor package loaded
//! once on the context's selected device, run for inference or a training step, probed
//! (`sda_probe_options.model`) and run under guard (`sda_guarded_run_model`).

use crate::context::{context_of, sda_context};
use crate::device::sda_device_kind;
use crate::guarded_run::{read_options, sda_guard_options, sda_run_report, write_report};
use crate::handle::Registry;
use crate::sized::{self, check_bool, growable, sda_bool, zeroed_with_size, Out};
use crate::status::Status;
use crate::{guard, out, str_arg};
use sda_core::context::Context;
use sda_core::error::{Error, Result};
use sda_core::guard as core_guard;
use sda_core::model::{LoadedModel, ModelDtype, ModelFormat, ModelWorkload};
use sda_core::preference::DeviceKind;
use std::ffi::c_void;
use std::os::raw::c_char;
use std::path::PathBuf;
use std::sync::Arc;

/// Element type of a model's input (`sda_model_options.dtype`).
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_dtype {
    /// 32-bit float (the default).
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// bfloat16.
    Bf16 = 2,
}

impl From<ModelDtype> for sda_dtype {
    fn from(dtype: ModelDtype) -> sda_dtype {
        match dtype {
            ModelDtype::F32 => sda_dtype::F32,
            ModelDtype::F16 => sda_dtype::F16,
            ModelDtype::Bf16 => sda_dtype::Bf16,
        }
    }
}

/// The `sda_dtype` a caller wrote (any `int32_t`).
fn dtype_of(code: i32) -> Result<ModelDtype> {
    match code {
        0 => Ok(ModelDtype::F32),
        1 => Ok(ModelDtype::F16),
        2 => Ok(ModelDtype::Bf16),
        other => Err(Error::invalid_argument(format!(
            "sda_model_options.dtype is {other}: use SDA_DTYPE_F32 (0), SDA_DTYPE_F16 (1) or \
             SDA_DTYPE_BF16 (2)"
        ))),
    }
}

/// The kind of model file that was loaded (`sda_model_details.format`).
///
/// cbindgen:rename-all=QualifiedScreamingSnakeCase
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sda_model_format {
    /// A TorchScript module (`torch.jit.save`).
    Torchscript = 0,
    /// An AOTInductor package (`.pt2`, `torch._inductor.aoti_compile_and_package`): inference only.
    Aoti = 1,
}

impl From<ModelFormat> for sda_model_format {
    fn from(format: ModelFormat) -> sda_model_format {
        match format {
            ModelFormat::TorchScript => sda_model_format::Torchscript,
            ModelFormat::Aoti => sda_model_format::Aoti,
        }
    }
}

/// The most dimensions `sda_model_options.input_rank` may name.
const MAX_RANK: usize = 64;

/// What `sda_model_load` loads and how each run feeds it. Initialise it with
/// `SDA_MODEL_OPTIONS_INIT(&options)` (or `sda_model_options_init(&options, sizeof options)`), then
/// set `path` and the input shape.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_model_options {
    /// `sizeof(sda_model_options)` as the caller was compiled; set by `sda_model_options_init`.
    pub struct_size: u32,
    /// The model file, NUL-terminated UTF-8: a TorchScript module (`torch.jit.save`) or an
    /// AOTInductor package (`.pt2`). Required (default NULL). Read during `sda_model_load` only.
    pub path: *const c_char,
    /// Shape of one sample, `input_rank` entries, each at least 1; every run's input is
    /// `[batch, input_shape...]` (the batch dimension is added in front). May be NULL when
    /// `input_rank` is 0 (one scalar per sample). Read during `sda_model_load` only.
    pub input_shape: *const u64,
    /// Entries of `input_shape` (0 to 64; default 0).
    pub input_rank: usize,
    /// Element type of the random input (default `SDA_DTYPE_F32`). The weights are not converted: a
    /// float32 model given float16 input fails with the model's own message.
    pub dtype: sda_dtype,
    /// 1: every run is one training step (forward, the mean of the outputs as the loss, backward,
    /// gradients freed; TorchScript only); 0 (default): inference without autograd.
    pub train: sda_bool,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_model_options {
    struct_size, path, input_shape, input_rank, dtype, train,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = sda_model_options {
    struct_size: std::mem::size_of::<sda_model_options>() as u32,
    path: std::ptr::null(),
    input_shape: std::ptr::null(),
    input_rank: 0,
    dtype: ModelDtype::default().into(),
    train: 0,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test: 0,
});

/// `sda_model_options` as a caller's bytes: the same layout with the enum as a plain `int32_t`
/// (a caller may have written any value there, and only integers may be read from its memory).
/// Only `read_input` reads it, field by field as `sda_model_options` lists them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // struct_size (and the test field) are read as bytes, never by name
struct ModelOptionsBytes {
    struct_size: u32,
    path: *const c_char,
    input_shape: *const u64,
    input_rank: usize,
    dtype: i32,
    train: sda_bool,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test: u32,
}

// SAFETY: ModelOptionsBytes is repr(C) with the fields of sda_model_options in the same order and of
// the same sizes (an i32 for the repr(i32) enum; the unit test below compares every offset), so
// sda_model_options's listing is its listing; every field is an integer, sda_bool or raw pointer,
// so every bit pattern is a valid value (read_input's requirement).
unsafe impl sized::Growable for ModelOptionsBytes {
    const NAME: &'static str = "sda_model_options";
    fn defaults() -> ModelOptionsBytes {
        let d = <sda_model_options as sized::Growable>::defaults();
        ModelOptionsBytes {
            struct_size: d.struct_size,
            path: d.path,
            input_shape: d.input_shape,
            input_rank: d.input_rank,
            dtype: d.dtype as i32,
            train: d.train,
            #[cfg(feature = "abi-growth-test")]
            abi_growth_test: 0,
        }
    }
    fn for_each_field(visit: &mut dyn FnMut(&'static str, usize, usize, usize)) {
        <sda_model_options as sized::Growable>::for_each_field(visit)
    }
    fn check(&self) -> Result<()> {
        check_bool(self.train, "sda_model_options", "train")?;
        dtype_of(self.dtype).map(|_| ())
    }
}

/// What a loaded model is (`sda_model_info`). Initialise it with `SDA_MODEL_DETAILS_INIT(&details)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sda_model_details {
    /// `sizeof(sda_model_details)` as the caller was compiled; set by `sda_model_details_init`.
    pub struct_size: u32,
    /// TorchScript or AOTInductor.
    pub format: sda_model_format,
    /// Kind of the device the model was loaded on (the context's selection at load time).
    pub kind: sda_device_kind,
    /// Index of that device.
    pub index: i32,
    /// Element type of the input each run makes.
    pub dtype: sda_dtype,
    /// 1 when each run is a training step, 0 for inference.
    pub train: sda_bool,
    /// Bytes of the parameters (AOTInductor: of the constants).
    pub param_bytes: u64,
    /// Bytes of the buffers (TorchScript; 0 for AOTInductor).
    pub buffer_bytes: u64,
    /// Bytes the loaded model occupies on its device while it is loaded (parameters and buffers):
    /// part of every run's memory, counted in every probe run's peak.
    pub resident_bytes: u64,
    /// The key under which the context remembers what one sample of this model costs (probes and
    /// guarded runs of the model use it when `sda_guard_options.work_id` is 0); never reused.
    pub work_id: u64,
    /// Test builds only (`abi-growth-test`): the field a later version might append.
    #[cfg(feature = "abi-growth-test")]
    pub abi_growth_test: u32,
}

growable!(sda_model_details {
    struct_size, format, kind, index, dtype, train, param_bytes, buffer_bytes, resident_bytes,
    work_id,
    #[cfg(feature = "abi-growth-test")]
    abi_growth_test,
} defaults = {
    // SAFETY: sda_model_details is repr(C) of integers, sda_bool and three enums whose 0 is a
    // variant (TORCHSCRIPT, CPU, F32): all-zero bytes are a valid value of every field.
    unsafe { zeroed_with_size() }
});

/// An opaque loaded model: a model file on the device its context selected, ready to run. Create it
/// with `sda_model_load`, release it with `sda_model_free`. One model may be used by any number of
/// threads; its runs are serialised.
pub struct sda_model {
    _private: [u8; 0],
}

/// A loaded model and the context it was loaded with (kept alive by the model).
pub(crate) struct Model {
    context: Arc<Context>,
    loaded: LoadedModel,
}

impl Model {
    /// The core's loaded model.
    pub(crate) fn loaded(&self) -> &LoadedModel {
        &self.loaded
    }
}

static MODELS: Registry<Model> = Registry::new("sda_model");

/// The model behind a handle.
fn model_of(model: *const sda_model, name: &str) -> Result<Arc<Model>> {
    MODELS.get(model.cast::<c_void>(), name)
}

/// The model behind a handle, checked to belong to `context` and to sit on the device the context
/// selects now (a context may select another device after the model was loaded).
pub(crate) fn model_for(
    context: &Arc<Context>,
    model: *const sda_model,
    name: &str,
) -> Result<Arc<Model>> {
    let model = model_of(model, name)?;
    if !Arc::ptr_eq(context, &model.context) {
        return Err(Error::invalid_argument(format!(
            "{name} was loaded with another sda_context: probe and run a model with the context \
             that loaded it"
        )));
    }
    let selected = context.selected()?;
    let (kind, index) = model.loaded.device();
    let now = (selected.selection.kind, selected.selection.index);
    if (kind, index) != now {
        return Err(Error::invalid_argument(format!(
            "{name} was loaded on {}:{index}, but its context selects {}:{} now: load the model \
             again after selecting another device",
            kind.as_str(),
            now.0.as_str(),
            now.1
        )));
    }
    Ok(model)
}

/// Reads `input_rank` entries of a caller's shape (byte-wise: any alignment).
fn read_shape(shape: *const u64, rank: usize) -> Result<Vec<u64>> {
    if rank == 0 {
        return Ok(Vec::new());
    }
    if rank > MAX_RANK {
        return Err(Error::invalid_argument(format!(
            "options->input_rank is {rank}: at most {MAX_RANK} dimensions per sample"
        )));
    }
    if shape.is_null() {
        return Err(Error::null_pointer(format!(
            "options->input_shape is NULL but options->input_rank is {rank}"
        )));
    }
    Ok((0..rank)
        // SAFETY: `shape` is non-null, and sda_model_options documents it as `input_rank` readable
        // uint64_t entries, alive during sda_model_load; `rank` is that count, so every entry read
        // lies inside the array. read_unaligned makes no assumption about its alignment.
        .map(|i| unsafe { shape.add(i).read_unaligned() })
        .collect())
}

/// Initialises model options with the library's defaults: no path, a scalar per sample, float32,
/// inference. `size` is the caller's `sizeof(sda_model_options)` (`SDA_MODEL_OPTIONS_INIT(&options)`
/// passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_model_options_init(options: *mut sda_model_options, size: usize) -> Status {
    guard(|| sized::init(options, size, "options"))
}

/// Initialises empty model details (`struct_size` = `size`, the caller's
/// `sizeof(sda_model_details)`; `SDA_MODEL_DETAILS_INIT(&details)` passes it).
///
/// Thread safety: [thread-safe], [audio-thread].
#[no_mangle]
pub extern "C" fn sda_model_details_init(details: *mut sda_model_details, size: usize) -> Status {
    guard(|| sized::init(details, size, "details"))
}

/// Loads a model file onto the context's selected device (selecting the configuration's
/// `hardware.device` first if nothing is selected yet; loads the torch backend if needed) and writes
/// its handle to `*out_model`. The file is read now; `options` and the strings and arrays it points
/// to are not kept.
///
/// Bad input is an error with the model's own message and leaves nothing loaded: a missing file, a
/// file that is neither TorchScript nor an AOTInductor package, training an AOTInductor package, a
/// zero dimension or an unknown dtype are `SDA_ERR_INVALID_ARGUMENT` (a file libtorch cannot read is
/// `SDA_ERR_TORCH` with libtorch's message). A shape or dtype the model rejects, a training model
/// whose output is not tensors, and a model traced with a fixed batch are found by the first run
/// (`sda_model_run`, the probe or a guarded run), also as `SDA_ERR_INVALID_ARGUMENT`, never as
/// `SDA_ERR_OUT_OF_MEMORY`.
///
/// The model keeps its context alive: after `sda_context_free` it still runs and describes itself,
/// and is freed by `sda_model_free`; the probe and guarded runs, which take the context handle, need
/// the live context that loaded it.
///
/// Thread safety: [thread-safe]; [main-thread] (reads the file, may load libtorch).
#[no_mangle]
pub extern "C" fn sda_model_load(
    context: *const sda_context,
    options: *const sda_model_options,
    out_model: *mut *mut sda_model,
) -> Status {
    guard(|| {
        let slot = out(out_model, "out_model")?;
        let context = context_of(context)?;
        let o = sized::read_input(options.cast::<ModelOptionsBytes>(), "options")?
            .ok_or_else(|| Error::null_pointer("options is NULL".into()))?;
        let path = str_arg(o.path, "options->path")?;
        let workload = ModelWorkload {
            path: PathBuf::from(path),
            input_shape: read_shape(o.input_shape, o.input_rank)?,
            dtype: dtype_of(o.dtype)?,
            train: o.train == 1,
        };
        let loaded = workload.load(&context)?;
        *slot = MODELS.insert(Model { context, loaded }).cast::<sda_model>();
        Ok(())
    })
}

/// Releases a model (the backend frees its weights once no call on it is running any more). NULL
/// is a no-op; a handle that was already freed returns `SDA_ERR_INVALID_HANDLE` without touching
/// memory.
///
/// Thread safety: [thread-safe]; calls still running on the model in other threads finish first.
#[no_mangle]
pub extern "C" fn sda_model_free(model: *mut sda_model) -> Status {
    guard(|| MODELS.remove(model.cast::<c_void>(), "model"))
}

/// Runs the model once with `batch` (>= 1) samples of random input `[batch, input_shape...]` on its
/// device, for inference or one training step as loaded; every tensor of the run is freed before it
/// returns. A real allocation failure returns `SDA_ERR_OUT_OF_MEMORY` with libtorch's message; a
/// batch, shape or dtype the model does not accept returns `SDA_ERR_INVALID_ARGUMENT` with the
/// model's message (a model traced with a fixed batch: "accepts only its traced batch").
///
/// Thread safety: [thread-safe] (runs of one model are serialised); [main-thread] (heavy: it
/// computes).
#[no_mangle]
pub extern "C" fn sda_model_run(model: *const sda_model, batch: u32) -> Status {
    guard(|| model_of(model, "model")?.loaded.run(batch))
}

/// Describes a loaded model: its format, device, sizes and work id.
///
/// Thread safety: [thread-safe], [audio-thread] (reads what was measured at load time).
#[no_mangle]
pub extern "C" fn sda_model_info(
    model: *const sda_model,
    out_details: *mut sda_model_details,
) -> Status {
    guard(|| {
        let model = model_of(model, "model")?;
        let slot = Out::new(out_details, "out_details")?;
        let m = &model.loaded;
        let (kind, index) = m.device();
        slot.write(&sda_model_details {
            struct_size: std::mem::size_of::<sda_model_details>() as u32,
            format: m.format().into(),
            kind: kind.into(),
            index: index as i32,
            dtype: m.workload().dtype.into(),
            train: m.workload().train.into(),
            param_bytes: m.param_bytes(),
            buffer_bytes: m.buffer_bytes(),
            resident_bytes: m.resident_bytes(),
            work_id: m.work_id(),
            #[cfg(feature = "abi-growth-test")]
            abi_growth_test: 0,
        });
        Ok(())
    })
}

/// Runs the model under guard with `options->batch_size` (required, >= 1) samples, on the context
/// that loaded it. With `options->max_attempts` 1 it is one run, as `sda_guarded_run`; with more
/// (the default is 8) an out-of-memory failure is recovered from and retried with a smaller batch
/// chosen from the measured memory, down to `options->min_batch`, as `sda_guarded_run_batched`
/// (`report->final_batch` holds the batch that fit). After an out-of-memory failure
/// `report->suggested_batch` names a batch that fits: from what earlier runs and probes of the model
/// measured, or, when it never ran before, from a measured run of `min_batch` after the failure. A
/// batch the model does not accept (a fixed traced batch, a rejected shape or dtype) ends the run
/// with `SDA_ERR_INVALID_ARGUMENT`, never as out of memory. `options->work_id` 0 means the model's
/// own work id (`sda_model_details.work_id`).
///
/// `options` is required; `report` may be NULL and, when given, is written whether the run succeeds
/// or fails (not after an argument error). A context other than the one that loaded the model, or a
/// context that selected another device since, is `SDA_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: [thread-safe]; [main-thread] (heavy: it computes).
#[no_mangle]
pub extern "C" fn sda_guarded_run_model(
    context: *const sda_context,
    model: *const sda_model,
    options: *const sda_guard_options,
    report: *mut sda_run_report,
) -> Status {
    guard(|| {
        let context = context_of(context)?;
        let model = model_for(&context, model, "model")?;
        if options.is_null() {
            return Err(Error::null_pointer(
                "options is NULL: a guarded model run needs options->batch_size".into(),
            ));
        }
        let options = read_options(options)?;
        let report = Out::optional(report, "report")?;
        if options.batch_size == 0 {
            return Err(Error::invalid_argument(
                "options->batch_size must be the batch to run (>= 1) for a guarded model run"
                    .into(),
            ));
        }
        let (result, run_report) = core_guard::run_model(&context, &options, &model.loaded);
        let device = (
            run_report.kind.unwrap_or(DeviceKind::Cpu),
            run_report.index as i32,
        );
        write_report(report, device, &run_report);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sized::Growable;

    #[test]
    fn the_options_bytes_have_the_layout_of_the_options() {
        use std::mem::{offset_of, size_of};
        assert_eq!(
            size_of::<sda_model_options>(),
            size_of::<ModelOptionsBytes>()
        );
        assert_eq!(size_of::<sda_dtype>(), size_of::<i32>());
        macro_rules! same {
            ($($field:ident),+) => {
                $(assert_eq!(
                    offset_of!(sda_model_options, $field),
                    offset_of!(ModelOptionsBytes, $field),
                    stringify!($field)
                );)+
            };
        }
        same!(struct_size, path, input_shape, input_rank, dtype, train);
        assert_eq!(ModelOptionsBytes::NAME, "sda_model_options");
        assert_eq!(ModelOptionsBytes::defaults().dtype, sda_dtype::F32 as i32);
    }

    #[test]
    fn dtypes_and_shapes_are_checked() {
        assert!(dtype_of(3).is_err() && dtype_of(-1).is_err());
        assert_eq!(dtype_of(2).unwrap(), ModelDtype::Bf16);
        assert!(read_shape(std::ptr::null(), 2).is_err());
        assert!(read_shape(std::ptr::null(), 0).unwrap().is_empty());
        let shape = [2u64, 88200];
        assert_eq!(read_shape(shape.as_ptr(), 2).unwrap(), vec![2, 88200]);
        assert!(read_shape(shape.as_ptr(), MAX_RANK + 1).is_err());
    }
}
