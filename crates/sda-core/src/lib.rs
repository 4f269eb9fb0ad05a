//! sda-core: the safe Rust core of libsda, one libtorch-backed hardware layer for audio plugins,
//! C/C++ hosts, Python and Swift.
//!
//! Every behaviour of libsda lives here, in safe Rust that knows nothing about C: the `sda` crate is
//! the thin C ABI over it, and Rust programs depend on this crate directly. The core never links
//! libtorch: [`backend`] loads the separate torch module on first need.

#![deny(missing_docs)]

pub mod backend;
pub mod bytes;
pub mod classify;
pub mod config;
pub mod context;
pub mod cuda_driver;
pub mod device;
pub mod environment;
pub mod error;
pub mod guard;
pub mod host;
pub mod libtorch_discovery;
pub mod log;
pub mod memory;
pub mod model;
pub mod plan;
pub mod platform;
pub mod preference;
pub mod probe;
pub mod recommend;
pub mod report;
pub mod strategy;
pub mod tiers;
pub mod validate;
pub mod workload;
