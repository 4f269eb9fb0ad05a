//! Device kinds and the preference strings hosts and config files use to ask for one.

use crate::error::{Error, Result};
use std::fmt;

/// A family of compute devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu = 0,
    /// An NVIDIA GPU through CUDA.
    Cuda = 1,
    /// Apple silicon through Metal Performance Shaders.
    Mps = 2,
}

impl DeviceKind {
    /// Every kind, in code order.
    pub const ALL: [DeviceKind; 3] = [DeviceKind::Cpu, DeviceKind::Cuda, DeviceKind::Mps];

    /// Lower-case name as used in preference strings and config files.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Mps => "mps",
        }
    }

    /// Parses a kind name (case-insensitive, trimmed).
    pub fn parse(text: &str) -> Result<DeviceKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "mps" => Ok(DeviceKind::Mps),
            other => Err(Error::invalid_argument(format!(
                "unknown device kind {other:?}: accepted kinds are cpu, cuda, mps"
            ))),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a host asked for: `auto`, a kind, or a kind with an index (`cuda:1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// Walk the priority list and take the first device that exists and works.
    Auto,
    /// A device kind, with an explicit index or none (meaning the first, or `LOCAL_RANK`).
    Device {
        /// The requested kind.
        kind: DeviceKind,
        /// The requested index, when the string had one.
        index: Option<u32>,
    },
}

/// The accepted forms, for error messages.
pub const ACCEPTED_PREFERENCES: &str = "auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps";

impl Preference {
    /// Parses `auto | cpu | cuda | cuda:N | mps`, case-insensitive and trimmed. Anything else, the
    /// empty string included, is an error that quotes the input and lists the accepted forms.
    pub fn parse(text: &str) -> Result<Preference> {
        let normalized = text.trim().to_ascii_lowercase();
        let bad = |why: &str| {
            Error::invalid_argument(format!(
                "invalid device preference {text:?}: {why}; accepted: {ACCEPTED_PREFERENCES}"
            ))
        };
        if normalized.is_empty() {
            return Err(bad("it is empty"));
        }
        if normalized == "auto" {
            return Ok(Preference::Auto);
        }
        let (kind_text, index_text) = match normalized.split_once(':') {
            Some((k, i)) => (k, Some(i)),
            None => (normalized.as_str(), None),
        };
        let kind = DeviceKind::parse(kind_text)
            .map_err(|_| bad(&format!("{kind_text:?} is not a device kind")))?;
        let index = match index_text {
            None => None,
            Some(i) => {
                if kind != DeviceKind::Cuda {
                    return Err(bad(&format!("{kind} takes no device index")));
                }
                if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(&format!("device index {i:?} is not a number")));
                }
                Some(
                    i.parse::<u32>()
                        .map_err(|_| bad(&format!("device index {i:?} is too large")))?,
                )
            }
        };
        Ok(Preference::Device { kind, index })
    }
}

impl fmt::Display for Preference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preference::Auto => f.write_str("auto"),
            Preference::Device { kind, index: None } => write!(f, "{kind}"),
            Preference::Device {
                kind,
                index: Some(i),
            } => write!(f, "{kind}:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn accepts_documented_forms_case_insensitively() {
        assert_eq!(Preference::parse(" AUTO ").unwrap(), Preference::Auto);
        assert_eq!(
            Preference::parse("Cuda:1").unwrap(),
            Preference::Device {
                kind: DeviceKind::Cuda,
                index: Some(1)
            }
        );
        assert_eq!(
            Preference::parse("mps").unwrap(),
            Preference::Device {
                kind: DeviceKind::Mps,
                index: None
            }
        );
        assert_eq!(Preference::parse("cuda:3").unwrap().to_string(), "cuda:3");
    }

    #[test]
    fn rejects_malformed_with_the_input_and_accepted_forms() {
        for bad in [
            "", "  ", "tpu", "cuda:x", "cuda:", "cuda:-1", "cpu:0", "mps:1", "cuda:1:2",
        ] {
            let err = Preference::parse(bad).unwrap_err();
            assert!(err.kind() == ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.message().contains("accepted"), "{bad:?}: {err}");
        }
    }
}
