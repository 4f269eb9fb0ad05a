//! sda-testkit: what libsda's tests and benches share, so that each helper exists once.
//!
//! A dev-dependency only; nothing here ships. Every test double is named for what it replaces (an
//! injected machine stands in for GPUs this computer does not have).

#![deny(missing_docs)]

pub mod machine;

pub use machine::{env, InjectedMachine};
