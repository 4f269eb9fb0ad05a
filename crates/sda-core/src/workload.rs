//! The built-in workload: the seeds' benchmark, a conv1d over one second of 48 kHz mono audio per
//! sample with 16 output channels, kernel 1024 and padding 512. Guarded runs, examples and the batch
//! probe use it as real torch work of a known shape.

use crate::context::Context;
use crate::error::{Error, Result};
use sda_backend_abi as abi;

/// Shape of the built-in conv1d workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Input channels per sample (1 = mono).
    pub channels: u32,
    /// Samples per channel (48000 = one second at 48 kHz).
    pub sample_length: u32,
    /// Filters of the convolution.
    pub out_channels: u32,
    /// Kernel width.
    pub kernel_size: u32,
    /// Zero padding on each side.
    pub padding: u32,
    /// Also run a backward pass (training memory) instead of inference only.
    pub with_backward: bool,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            channels: 1,
            sample_length: 48_000,
            out_channels: 16,
            kernel_size: 1024,
            padding: 512,
            with_backward: false,
        }
    }
}

impl Workload {
    /// Rejects shapes the convolution cannot run, naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("channels", self.channels),
            ("sample_length", self.sample_length),
            ("out_channels", self.out_channels),
            ("kernel_size", self.kernel_size),
        ] {
            if value == 0 {
                return Err(Error::invalid_argument(format!(
                    "workload {name} must be at least 1"
                )));
            }
        }
        let padded = u64::from(self.sample_length) + 2 * u64::from(self.padding);
        if u64::from(self.kernel_size) > padded {
            return Err(Error::invalid_argument(format!(
                "workload kernel_size {} is longer than the padded input ({padded} samples)",
                self.kernel_size
            )));
        }
        Ok(())
    }

    /// Runs the workload once with `batch` samples on the context's selected device (loads the torch
    /// backend if needed). An allocation failure is [`ErrorKind::OutOfMemory`](crate::error::ErrorKind::OutOfMemory) with libtorch's message.
    pub fn run(&self, context: &Context, batch: u32) -> Result<()> {
        self.validate()?;
        if batch == 0 {
            return Err(Error::invalid_argument("batch must be at least 1".into()));
        }
        let selected = context.selected()?;
        let backend = context.backend()?;
        let spec = abi::Conv1dWorkload {
            in_channels: self.channels,
            sample_length: self.sample_length,
            out_channels: self.out_channels,
            kernel_size: self.kernel_size,
            padding: self.padding,
            with_backward: u8::from(self.with_backward),
        };
        backend.run_conv1d(
            selected.selection.kind,
            selected.selection.index,
            &spec,
            batch,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_seeds_benchmark_and_valid() {
        let w = Workload::default();
        assert_eq!(
            (w.sample_length, w.out_channels, w.kernel_size, w.padding),
            (48_000, 16, 1024, 512)
        );
        w.validate().unwrap();
    }

    #[test]
    fn impossible_shapes_name_the_field() {
        let zero = Workload {
            out_channels: 0,
            ..Workload::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .message()
            .contains("out_channels"));
        let long = Workload {
            sample_length: 10,
            padding: 0,
            kernel_size: 11,
            ..Workload::default()
        };
        assert!(long
            .validate()
            .unwrap_err()
            .message()
            .contains("kernel_size"));
    }
}
