//! A model file as the workload: a TorchScript module (what `torch.jit.save` writes, what audio
//! plugins such as nn~ and neutone ship) or an AOTInductor package (`.pt2`, from
//! `torch._inductor.aoti_compile_and_package`, inference only), run by the torch backend on the
//! selected device with random input of a given per-sample shape and dtype.
//!
//! - [`ModelWorkload`] says what to run: the file, the shape of one sample (the batch dimension is
//!   put in front), the input dtype and the mode (inference without autograd, or one training step:
//!   forward, the mean of the outputs as the loss, backward, gradients freed).
//! - [`ModelWorkload::load`] loads it once and returns a [`LoadedModel`], which frees the backend's
//!   model when dropped; [`LoadedModel::run`] runs one batch. The probe
//!   ([`crate::probe::ProbeWorkload::Model`]) and guarded runs ([`crate::guard::run_model`]) take a
//!   loaded model; [`ModelWorkload::run`] is the one-shot form (load, run, free).
//!
//! The model runs as it was saved: the input is made in `dtype`, the weights are not converted (a
//! float32 model given float16 input fails with the model's own message).
//!
//! Errors: bad input is an error with the model's own message and leaves nothing loaded. A missing
//! file, a file that is neither TorchScript nor a `.pt2` package, training an AOTInductor package,
//! training a model whose output is not a tensor (or a tuple/list of tensors) and a shape or dtype
//! the model rejects are [`ErrorKind::InvalidArgument`](crate::error::ErrorKind::InvalidArgument)
//! (a file libtorch cannot read is [`ErrorKind::Torch`](crate::error::ErrorKind::Torch) with
//! libtorch's message). A model traced or exported with a fixed batch, which fails at any other
//! batch, is reported as exactly that (`accepts only its traced batch`), as InvalidArgument and never
//! as an out-of-memory error, so the probe stops with it instead of searching smaller batches: when
//! a batch fails with a non-memory error, the batch that ran before (or, when none has, a diagnostic
//! run at batch 1) tells a batch-dependent failure from an input the model rejects at every batch.

use crate::backend::Backend;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::preference::DeviceKind;
use sda_backend_abi as abi;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Element type of the model's random input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelDtype {
    /// 32-bit float (the default).
    #[default]
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    Bf16,
}

impl ModelDtype {
    /// `f32`, `f16` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelDtype::F32 => "f32",
            ModelDtype::F16 => "f16",
            ModelDtype::Bf16 => "bf16",
        }
    }

    /// Parses `f32`/`float32`, `f16`/`float16`/`half`, `bf16`/`bfloat16` (any case).
    pub fn parse(text: &str) -> Result<ModelDtype> {
        match text.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(ModelDtype::F32),
            "f16" | "float16" | "half" => Ok(ModelDtype::F16),
            "bf16" | "bfloat16" => Ok(ModelDtype::Bf16),
            _ => Err(Error::invalid_argument(format!(
                "unknown dtype {text:?}: use f32, f16 or bf16"
            ))),
        }
    }

    /// The backend's `DTYPE_*` code.
    fn code(self) -> i32 {
        match self {
            ModelDtype::F32 => abi::DTYPE_F32,
            ModelDtype::F16 => abi::DTYPE_F16,
            ModelDtype::Bf16 => abi::DTYPE_BF16,
        }
    }
}

/// The kind of model file that was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// A TorchScript module (`torch.jit.save`).
    TorchScript,
    /// An AOTInductor package (`.pt2`), inference only.
    Aoti,
}

impl ModelFormat {
    /// `torchscript` or `aoti`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::TorchScript => "torchscript",
            ModelFormat::Aoti => "aoti",
        }
    }
}

/// Parses a per-sample shape such as `2,88200` (comma-separated positive integers; spaces and an
/// `x` separator are accepted too: `2x88200`). An empty text is a scalar per sample.
pub fn parse_shape(text: &str) -> Result<Vec<u64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split([',', 'x'])
        .map(|part| {
            let part = part.trim();
            match part.parse::<u64>() {
                Ok(0) => Err(Error::invalid_argument(format!(
                    "input shape {text:?}: a dimension of 0 holds no data"
                ))),
                Ok(n) => Ok(n),
                Err(_) => Err(Error::invalid_argument(format!(
                    "input shape {text:?}: {part:?} is not a positive integer (write the shape of \
                     one sample, e.g. 2,88200; the batch dimension is added in front)"
                ))),
            }
        })
        .collect()
}

/// A model file and the input to run it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelWorkload {
    /// The TorchScript module or `.pt2` AOTInductor package.
    pub path: PathBuf,
    /// Shape of one sample; each run's input is `[batch, input_shape..]`.
    pub input_shape: Vec<u64>,
    /// Element type of the input.
    pub dtype: ModelDtype,
    /// One training step per run instead of inference.
    pub train: bool,
}

impl ModelWorkload {
    /// Rejects a shape with a zero dimension.
    pub fn validate(&self) -> Result<()> {
        if let Some(at) = self.input_shape.iter().position(|&d| d == 0) {
            return Err(Error::invalid_argument(format!(
                "dimension {at} of the input shape {:?} is 0",
                self.input_shape
            )));
        }
        Ok(())
    }

    /// `[N, 2, 88200] f32, inference` (or `training`): the input and mode in words.
    pub fn describe_input(&self, batch: Option<u32>) -> String {
        let mut dims: Vec<String> = vec![batch.map_or("N".to_string(), |b| b.to_string())];
        dims.extend(self.input_shape.iter().map(u64::to_string));
        format!(
            "[{}] {}, {}",
            dims.join(", "),
            self.dtype.as_str(),
            if self.train { "training" } else { "inference" }
        )
    }

    /// Loads the model onto the context's selected device (loads the torch backend if needed).
    /// Nothing stays loaded when this fails.
    pub fn load(&self, context: &Context) -> Result<LoadedModel> {
        self.validate()?;
        let selected = context.selected()?;
        let backend = context.backend()?;
        let (kind, index) = (selected.selection.kind, selected.selection.index);
        let (handle, facts) = backend.model_load(&self.path, kind, index)?;
        let format = if facts.format == abi::MODEL_FORMAT_AOTI {
            ModelFormat::Aoti
        } else {
            ModelFormat::TorchScript
        };
        let model = LoadedModel {
            backend,
            handle,
            kind,
            index,
            workload: self.clone(),
            format,
            param_bytes: facts.param_bytes,
            buffer_bytes: facts.buffer_bytes,
            ran_at: AtomicU32::new(0),
            work_id: next_work_id(),
        };
        if self.train && format == ModelFormat::Aoti {
            // `model` is dropped here, which frees it.
            return Err(Error::invalid_argument(format!(
                "the model at {} is an AOTInductor package, which is inference-only: training needs \
                 a TorchScript module",
                self.path.display()
            )));
        }
        Ok(model)
    }

    /// Loads the model, runs `batch` once and frees it: the one-shot form of [`LoadedModel::run`].
    pub fn run(&self, context: &Context, batch: u32) -> Result<()> {
        self.load(context)?.run(batch)
    }
}

/// A model loaded in the torch backend; freed when dropped. Runs of one model are serialised by the
/// backend.
pub struct LoadedModel {
    backend: &'static Backend,
    handle: u64,
    kind: DeviceKind,
    index: u32,
    workload: ModelWorkload,
    format: ModelFormat,
    param_bytes: u64,
    buffer_bytes: u64,
    /// The last batch that ran (0 = none yet), to tell a fixed traced batch from a rejected input.
    ran_at: AtomicU32,
    /// This model's key in the context's memory of what work costs per sample.
    work_id: u64,
}

/// Work ids of loaded models: the top bit set, a counter below it, never reused in a process.
static NEXT_MODEL_WORK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The work id for the next loaded model.
fn next_work_id() -> u64 {
    (1 << 63) | NEXT_MODEL_WORK.fetch_add(1, Ordering::Relaxed)
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("handle", &self.handle)
            .field("kind", &self.kind)
            .field("index", &self.index)
            .field("workload", &self.workload)
            .field("format", &self.format)
            .field("param_bytes", &self.param_bytes)
            .field("buffer_bytes", &self.buffer_bytes)
            .finish()
    }
}

impl LoadedModel {
    /// What was loaded and how it runs.
    pub fn workload(&self) -> &ModelWorkload {
        &self.workload
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        &self.workload.path
    }

    /// TorchScript or AOTInductor.
    pub fn format(&self) -> ModelFormat {
        self.format
    }

    /// The device it was loaded on.
    pub fn device(&self) -> (DeviceKind, u32) {
        (self.kind, self.index)
    }

    /// Bytes of the parameters (AOTInductor: of the constants).
    pub fn param_bytes(&self) -> u64 {
        self.param_bytes
    }

    /// Bytes of the buffers (TorchScript; 0 for AOTInductor).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes
    }

    /// The key under which the context remembers what one sample of this model costs (the probe's
    /// and the guard's successful runs store it; the guard's suggestions after an out-of-memory
    /// failure use it). Ids of loaded models have the top bit set and are never reused.
    pub fn work_id(&self) -> u64 {
        self.work_id
    }

    /// Bytes the loaded model occupies on its device for as long as it is loaded (parameters and
    /// buffers): part of every run's memory, although allocated before the run.
    pub fn resident_bytes(&self) -> u64 {
        self.param_bytes.saturating_add(self.buffer_bytes)
    }

    /// Runs the model once with `batch` samples. Every tensor of the run is freed before it returns.
    /// An allocation failure is [`ErrorKind::OutOfMemory`]; a batch the model does not accept is
    /// [`ErrorKind::InvalidArgument`] (see the module's documentation).
    pub fn run(&self, batch: u32) -> Result<()> {
        if batch == 0 {
            return Err(Error::invalid_argument("batch must be at least 1".into()));
        }
        match self.run_once(batch) {
            Ok(()) => {
                self.ran_at.store(batch, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(self.explain(batch, e)),
        }
    }

    fn run_once(&self, batch: u32) -> Result<()> {
        let w = &self.workload;
        self.backend
            .model_run(self.handle, batch, &w.input_shape, w.dtype.code(), w.train)
    }

    /// Puts a failed run's error in the model's terms.
    fn explain(&self, batch: u32, e: Error) -> Error {
        let path = self.workload.path.display();
        match e.kind() {
            ErrorKind::OutOfMemory | ErrorKind::Panic | ErrorKind::Unsupported => e,
            ErrorKind::InvalidArgument => {
                Error::invalid_argument(format!("the model at {path}: {}", e.message()))
            }
            _ => {
                let before = self.ran_at.load(Ordering::Relaxed);
                // A batch that ran before, else a diagnostic run at batch 1.
                let ran = if before != 0 && before != batch {
                    Some(before)
                } else if before == 0 && batch != 1 && self.run_once(1).is_ok() {
                    self.ran_at.store(1, Ordering::Relaxed);
                    Some(1)
                } else {
                    None
                };
                match ran {
                    Some(good) => Error::invalid_argument(format!(
                        "the model at {path} accepts only its traced batch: it ran at batch {good}, \
                         at batch {batch} it failed with: {}",
                        e.message()
                    )),
                    None => Error::invalid_argument(format!(
                        "the model at {path} rejected its input {}: {} (a model traced or exported \
                         with a fixed batch accepts only that batch)",
                        self.workload.describe_input(Some(batch)),
                        e.message()
                    )),
                }
            }
        }
    }
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        // The handle came from this backend, so only a backend bug can refuse it; a destructor has
        // no caller to tell, so the log does.
        if let Err(e) = self.backend.model_free(self.handle) {
            crate::log::warn(&format!(
                "the model at {} could not be freed: {e}",
                self.workload.path.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_per_sample_and_zero_is_refused() {
        assert_eq!(parse_shape("2,88200").unwrap(), vec![2, 88200]);
        assert_eq!(parse_shape(" 1 x 48000 ").unwrap(), vec![1, 48000]);
        assert_eq!(parse_shape("").unwrap(), Vec::<u64>::new());
        for bad in ["2,0", "2,,3", "-1", "two"] {
            let e = parse_shape(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn dtypes_parse_and_print() {
        for (text, dtype) in [
            ("f32", ModelDtype::F32),
            ("FP16", ModelDtype::F32),
            ("half", ModelDtype::F16),
            ("bf16", ModelDtype::Bf16),
        ] {
            match ModelDtype::parse(text) {
                Ok(d) => assert_eq!(d, dtype, "{text}"),
                Err(e) => assert_eq!(text, "FP16", "{e}"),
            }
        }
        assert_eq!(ModelDtype::Bf16.as_str(), "bf16");
        let w = ModelWorkload {
            path: PathBuf::from("m.pt"),
            input_shape: vec![2, 88200],
            dtype: ModelDtype::F16,
            train: true,
        };
        assert_eq!(w.describe_input(None), "[N, 2, 88200] f16, training");
        assert_eq!(w.describe_input(Some(4)), "[4, 2, 88200] f16, training");
    }
}
