//! libsda: one libtorch-backed hardware layer for audio plugins, C/C++ hosts, Python and Swift.
//!
//! The safe Rust core lives in the modules below and knows nothing about C; [`ffi`] is the thin C ABI
//! on top of it. The core never links libtorch: [`backend`] loads the separate torch module on first
//! need.

#![deny(missing_docs)]

pub mod error;
pub mod preference;
