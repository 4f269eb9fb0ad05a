//! sda-testkit: what libsda's tests and benches share, so that each helper exists once.
//!
//! A dev-dependency only; nothing here ships. Every test double is named for what it replaces (an
//! injected machine stands in for GPUs this computer does not have).
//!
//! - [`child`]: the current test binary run again as a child (real OOMs under `RLIMIT_AS`, crashes
//!   and hangs as findings), always with one glibc heap arena and a deadline.
//! - [`memory`]: this process's address space and resident set.
//! - [`machine`]: injected machines and environments for selection, plan and tier tests.

#![deny(missing_docs)]

pub mod child;
pub mod machine;
pub mod memory;

pub use child::{ChildOutcome, ChildRun};
pub use machine::{env, InjectedMachine};
pub use memory::MIB;
