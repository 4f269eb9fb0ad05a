//! libsda: one libtorch-backed hardware layer for audio plugins, C/C++ hosts, Python and Swift.
//!
//! The safe Rust core lives in the modules below and knows nothing about C; [`ffi`] is the thin C ABI
//! on top of it. The core never links libtorch: [`backend`] loads the separate torch module on first
//! need.

#![deny(missing_docs)]

pub mod backend;
pub mod classify;
pub mod config;
pub mod context;
pub mod cuda_driver;
pub mod device;
mod elf;
pub mod error;
pub mod ffi;
pub mod guard;
pub mod host;
pub mod log;
pub mod memory;
pub mod plan;
pub mod preference;
pub mod probe;
pub mod recommend;
pub mod report;
pub mod validate;
pub mod workload;
