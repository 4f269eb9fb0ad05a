//! The memory strategy: how much of a device's memory probes and the CUDA allocator may use.
//!
//! Its public home is [`crate::memory`] (`sda_core::memory::MemoryStrategy`), beside the budgets it
//! decides. It is defined here, in a module that imports only [`crate::error`], because the
//! configuration stores one: were it defined in `memory`, the config would depend on the backend,
//! device and host modules that `memory` needs, and any of those reading the config would close a
//! cycle.

use crate::error::{Error, Result};
use std::fmt;

/// How much of a device's memory probes and the CUDA allocator may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MemoryStrategy {
    /// 60 %: leaves room for other programs sharing the device.
    Conservative,
    /// 75 %: the default.
    #[default]
    Balanced,
    /// 90 %: for a device dedicated to this process.
    Aggressive,
    /// `hardware.memory_fraction` decides.
    Custom,
}

/// The accepted strategy names with their fractions, for error messages and the key documentation.
pub const ACCEPTED_STRATEGIES: &str =
    "conservative (60 %), balanced (75 %), aggressive (90 %), custom";

impl MemoryStrategy {
    /// Every strategy, in the order of their fractions.
    pub const ALL: [MemoryStrategy; 4] = [
        MemoryStrategy::Conservative,
        MemoryStrategy::Balanced,
        MemoryStrategy::Aggressive,
        MemoryStrategy::Custom,
    ];

    /// Lower-case name as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryStrategy::Conservative => "conservative",
            MemoryStrategy::Balanced => "balanced",
            MemoryStrategy::Aggressive => "aggressive",
            MemoryStrategy::Custom => "custom",
        }
    }

    /// The fixed budget fraction of the strategy. `Custom` has none of its own and reports the
    /// balanced 0.75; use [`Hardware::budget_fraction`](crate::config::Hardware::budget_fraction) to
    /// get the configured custom value.
    pub fn fraction(self) -> f64 {
        match self {
            MemoryStrategy::Conservative => 0.60,
            MemoryStrategy::Balanced | MemoryStrategy::Custom => 0.75,
            MemoryStrategy::Aggressive => 0.90,
        }
    }

    /// Parses a strategy name (case-insensitive, trimmed).
    pub fn parse(text: &str) -> Result<MemoryStrategy> {
        let wanted = text.trim().to_ascii_lowercase();
        MemoryStrategy::ALL
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "unknown memory strategy {text:?}; accepted: {ACCEPTED_STRATEGIES}"
                ))
            })
    }
}

impl fmt::Display for MemoryStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
