//! `load_cuda` in a process of its own (it maps libtorch_cuda.so, about 270 MB, for the rest of the
//! process). On a machine without a GPU driver libtorch then sees zero CUDA devices, and every CUDA
//! call must still come back cleanly as STATUS_UNAVAILABLE.

mod common;

use std::path::Path;

use common::{api, Msg};
use sda_backend_abi::*;

/// The seeds' benchmark workload.
const BENCH: Conv1dWorkload = Conv1dWorkload {
    in_channels: 1,
    sample_length: 48000,
    out_channels: 16,
    kernel_size: 1024,
    padding: 512,
    with_backward: 0,
};

#[test]
fn load_cuda_then_cuda_calls_are_checked_against_the_device_count() {
    let api = api();
    let mut msg = Msg::new();
    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers, no pointer or enum), so
    // all-zero is a valid value.
    let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
    assert_eq!(
        // SAFETY: `facts` is a live, aligned BackendFacts and `msg` a live `Msg` valid for `msg.cap()`
        // bytes (BackendApi's calling contract).
        unsafe { (api.facts)(&mut facts, msg.ptr(), msg.cap()) },
        STATUS_OK,
        "{}",
        msg.text()
    );
    let built_dir = read_fixed(&facts.built_libtorch_dir);
    if facts.cuda_build == 0 {
        // A CPU-only libtorch: load_cuda must say so, cleanly.
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        let rc = unsafe { (api.load_cuda)(msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_UNAVAILABLE, "{}", msg.text());
        assert!(msg.text().contains("libtorch_cuda.so"), "{}", msg.text());
        return;
    }
    assert!(Path::new(&built_dir).join("libtorch_cuda.so").is_file());

    // Asked before loading: refused without touching libtorch's accelerator state.
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api.smoke_test)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) },
        STATUS_UNAVAILABLE
    );

    // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
    // plain values the function checks (BackendApi's calling contract).
    let rc = unsafe { (api.load_cuda)(msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());
    // Idempotent.
    // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
    // plain values the function checks (BackendApi's calling contract).
    assert_eq!(unsafe { (api.load_cuda)(msg.ptr(), msg.cap()) }, STATUS_OK);

    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers, no pointer or enum), so
    // all-zero is a valid value.
    let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
    assert_eq!(
        // SAFETY: `facts` is a live, aligned BackendFacts and `msg` a live `Msg` valid for `msg.cap()`
        // bytes (BackendApi's calling contract).
        unsafe { (api.facts)(&mut facts, msg.ptr(), msg.cap()) },
        STATUS_OK,
        "{}",
        msg.text()
    );
    assert_eq!(facts.cuda_loaded, 1);
    let count = facts.cuda_device_count;
    assert!(count >= 0);

    // One past the last device: refused before libtorch could abort on it.
    // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
    // plain values the function checks (BackendApi's calling contract).
    let rc = unsafe { (api.smoke_test)(DEVICE_CUDA, count, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_UNAVAILABLE, "{}", msg.text());
    assert!(msg.text().contains("libtorch sees"), "{}", msg.text());
    let mut stats = MemoryStats::default();
    // SAFETY: `stats` is a live, aligned MemoryStats and `msg` a live `Msg` valid for
    // `msg.cap()` bytes; kind and index are plain integers the function checks.
    let rc = unsafe { (api.memory_stats)(DEVICE_CUDA, count, &mut stats, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_UNAVAILABLE, "{}", msg.text());
    // SAFETY: `BENCH` is a static Conv1dWorkload (valid for reads) and `msg` a live `Msg` valid
    // for `msg.cap()` bytes; the rest are plain integers the function checks.
    let rc = unsafe { (api.run_conv1d)(DEVICE_CUDA, count, &BENCH, 1, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_UNAVAILABLE, "{}", msg.text());

    if count > 0 {
        // A GPU machine: the whole CUDA path works.
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        let rc = unsafe { (api.set_memory_fraction)(DEVICE_CUDA, 0, 0.9, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "{}", msg.text());
        assert_eq!(
            // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
            // plain values the function checks (BackendApi's calling contract).
            unsafe { (api.reset_peak)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) },
            STATUS_OK
        );
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        let rc = unsafe { (api.smoke_test)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "{}", msg.text());
        // SAFETY: as for memory_stats above.
        let rc = unsafe { (api.memory_stats)(DEVICE_CUDA, 0, &mut stats, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "{}", msg.text());
        assert!(stats.peak_allocated > 0 && stats.total > 0, "{stats:?}");
        assert_eq!(
            // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
            // plain values the function checks (BackendApi's calling contract).
            unsafe { (api.empty_cache)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) },
            STATUS_OK
        );

        // The built-in workload: forward, forward + backward, then a batch no GPU can hold
        // (10^7 samples: 1.9 TB of input), which must be a clean OUT_OF_MEMORY that the caching
        // allocator counts, after which a small batch runs again.
        let train = Conv1dWorkload {
            with_backward: 1,
            ..BENCH
        };
        for w in [&BENCH, &train] {
            // SAFETY: `w` borrows a live Conv1dWorkload and `msg` is a live `Msg` valid for
            // `msg.cap()` bytes (BackendApi's calling contract).
            let rc = unsafe { (api.run_conv1d)(DEVICE_CUDA, 0, w, 4, msg.ptr(), msg.cap()) };
            assert_eq!(rc, STATUS_OK, "{w:?}: {}", msg.text());
        }
        // SAFETY: as for memory_stats above.
        let rc = unsafe { (api.memory_stats)(DEVICE_CUDA, 0, &mut stats, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "{}", msg.text());
        let (allocated, ooms) = (stats.allocated, stats.num_ooms);
        // SAFETY: as for run_conv1d above; the huge batch is checked, not trusted, by the module.
        let rc =
            unsafe { (api.run_conv1d)(DEVICE_CUDA, 0, &BENCH, 10_000_000, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OUT_OF_MEMORY, "{}", msg.text());
        assert!(msg.text().contains("out of memory"), "{}", msg.text());
        // SAFETY: as for memory_stats above.
        let rc = unsafe { (api.memory_stats)(DEVICE_CUDA, 0, &mut stats, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "{}", msg.text());
        assert_eq!(stats.num_ooms, ooms + 1, "{stats:?}");
        assert_eq!(stats.allocated, allocated, "every tensor is freed");
        // SAFETY: as for run_conv1d above.
        let rc = unsafe { (api.run_conv1d)(DEVICE_CUDA, 0, &BENCH, 4, msg.ptr(), msg.cap()) };
        assert_eq!(rc, STATUS_OK, "after the OOM: {}", msg.text());
    }

    // The CPU keeps working after CUDA was loaded.
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api.smoke_test)(DEVICE_CPU, 0, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
}
