//! The built-in conv1d workload on the CPU, in a process of its own (its out-of-memory tests ask the
//! allocator for more than the machine has, and every test compares the process-wide byte count
//! with a baseline).
//!
//! `conv1d_profile` (ignored by default) prints wall time and peak bytes of the seeds' benchmark
//! workload at batches 1, 4 and 16:
//! `cargo test --release -p sda_torch --test conv1d -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{api, serial, Msg};
use sda_backend_abi::*;

/// The seeds' benchmark workload: 1 s of 48 kHz mono audio through 16 filters of 1024 taps.
const BENCH: Conv1dWorkload = Conv1dWorkload {
    in_channels: 1,
    sample_length: 48000,
    out_channels: 16,
    kernel_size: 1024,
    padding: 512,
    with_backward: 0,
};

fn run(kind: i32, index: i32, workload: &Conv1dWorkload, batch: u32) -> (i32, String) {
    let mut msg = Msg::new();
    // SAFETY: `workload` borrows a live Conv1dWorkload and `msg` is a live `Msg` valid for
    // `msg.cap()` bytes; the rest are plain integers the function checks.
    let rc = unsafe { (api().run_conv1d)(kind, index, workload, batch, msg.ptr(), msg.cap()) };
    (rc, msg.text())
}

fn cpu(workload: &Conv1dWorkload, batch: u32) -> (i32, String) {
    run(DEVICE_CPU, 0, workload, batch)
}

fn cpu_stats() -> MemoryStats {
    let mut out = MemoryStats::default();
    let mut msg = Msg::new();
    // SAFETY: `out` is a live, aligned MemoryStats and `msg` a live `Msg` valid for
    // `msg.cap()` bytes (BackendApi's calling contract).
    let rc = unsafe { (api().memory_stats)(DEVICE_CPU, 0, &mut out, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());
    out
}

fn reset_cpu_peak() {
    let mut msg = Msg::new();
    // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
    // plain values the function checks (BackendApi's calling contract).
    let rc = unsafe { (api().reset_peak)(DEVICE_CPU, 0, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());
}

/// The batch the tests run: small, but above libtorch's intra-op thread count (`OMP_NUM_THREADS`,
/// else one per CPU the process may use). At a batch no larger than that, libtorch picks another
/// convolution algorithm for this workload (im2col, about 196 MB of scratch per sample): far slower
/// (1.7 s at batch 1 against 60 ms at batch 4 on 2 cores) and with a forward pass that needs more
/// memory than the backward pass (measured with OMP_NUM_THREADS=8 at batch 4: 800 MB against
/// 210 MB).
fn small() -> u32 {
    let threads = std::env::var("OMP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    u32::try_from(threads + 1).unwrap_or(u32::MAX).max(4)
}

/// Runs the workload once per process (forward, and forward + backward) so that libtorch's lazily
/// created, long-lived state (thread pools, kernel caches) is in the baseline, then returns the
/// baseline byte count.
fn warm_baseline() -> u64 {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let train = Conv1dWorkload {
            with_backward: 1,
            ..BENCH
        };
        for w in [&BENCH, &train] {
            let (rc, text) = cpu(w, small());
            assert_eq!(rc, STATUS_OK, "{text}");
        }
    });
    cpu_stats().allocated
}

/// Peak CPU tensor bytes (above the baseline) and wall time of one run.
fn measure(workload: &Conv1dWorkload, batch: u32) -> (u64, Duration) {
    let before = cpu_stats().allocated;
    reset_cpu_peak();
    let start = Instant::now();
    let (rc, text) = cpu(workload, batch);
    let took = start.elapsed();
    assert_eq!(rc, STATUS_OK, "batch {batch}: {text}");
    let after = cpu_stats();
    assert_eq!(
        after.allocated, before,
        "batch {batch}: every tensor is freed"
    );
    (after.peak_allocated - before, took)
}

/// Bytes of input, filters, bias and output of the forward pass: a lower bound of its peak.
fn forward_bytes(w: &Conv1dWorkload, batch: u64) -> u64 {
    let out_len =
        u64::from(w.sample_length) + 2 * u64::from(w.padding) - u64::from(w.kernel_size) + 1;
    let (cin, len, cout, k) = (
        u64::from(w.in_channels),
        u64::from(w.sample_length),
        u64::from(w.out_channels),
        u64::from(w.kernel_size),
    );
    4 * (batch * cin * len + cout * cin * k + cout + batch * cout * out_len)
}

/// `/proc/sys/vm/overcommit_memory`: with 1 ("always") the kernel grants any allocation that fits
/// the address space and the OOM killer ends the process when it is touched, so the tests that
/// need a refused allocation below the address-space limit are skipped there.
fn overcommit_always() -> bool {
    std::fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|s| s.trim() == "1")
}

/// MemTotal + SwapTotal in bytes, from /proc/meminfo.
fn ram_and_swap() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .filter(|l| l.starts_with("MemTotal:") || l.starts_with("SwapTotal:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum::<u64>()
        * 1024
}

#[test]
fn a_small_batch_runs_in_sane_time_and_frees_every_tensor() {
    let _s = serial();
    let baseline = warm_baseline();
    let batch = small();
    let (peak, took) = measure(&BENCH, batch);
    // 1.6 GFLOP per sample in optimised libtorch: 60 ms for 4 samples on 2 cores.
    assert!(
        took < Duration::from_secs(30),
        "batch {batch} took {took:?}"
    );
    assert!(
        peak >= forward_bytes(&BENCH, batch.into()),
        "peak {peak} below the tensors' own {}",
        forward_bytes(&BENCH, batch.into())
    );
    assert_eq!(cpu_stats().allocated, baseline);
}

#[test]
fn bad_workloads_are_invalid_argument_and_bad_devices_unavailable() {
    let _s = serial();
    let check = |w: &Conv1dWorkload, batch: u32, needle: &str| {
        let (rc, text) = cpu(w, batch);
        assert_eq!(rc, STATUS_INVALID_ARGUMENT, "{w:?} batch {batch}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
    };
    check(&BENCH, 0, "batch must not be 0");
    check(
        &Conv1dWorkload {
            in_channels: 0,
            ..BENCH
        },
        1,
        "in_channels",
    );
    check(
        &Conv1dWorkload {
            sample_length: 0,
            ..BENCH
        },
        1,
        "sample_length",
    );
    check(
        &Conv1dWorkload {
            out_channels: 0,
            ..BENCH
        },
        1,
        "out_channels",
    );
    check(
        &Conv1dWorkload {
            kernel_size: 0,
            ..BENCH
        },
        1,
        "kernel_size",
    );
    check(
        &Conv1dWorkload {
            kernel_size: 48000 + 2 * 512 + 1,
            ..BENCH
        },
        1,
        "longer than the padded sample",
    );
    check(
        &Conv1dWorkload {
            with_backward: 2,
            ..BENCH
        },
        1,
        "with_backward",
    );
    let mut msg = Msg::new();
    // SAFETY: a NULL `workload` is allowed by the calling contract (it is answered with
    // STATUS_INVALID_ARGUMENT); `msg` is a live `Msg` valid for `msg.cap()` bytes.
    let rc =
        unsafe { (api().run_conv1d)(DEVICE_CPU, 0, std::ptr::null(), 1, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_INVALID_ARGUMENT);
    assert!(msg.text().contains("NULL"), "{}", msg.text());
    // A NULL error buffer is fine.
    // SAFETY: `BENCH` is a static Conv1dWorkload; a NULL error buffer with a capacity of 0 is
    // allowed by the calling contract.
    let rc = unsafe { (api().run_conv1d)(DEVICE_CPU, 0, &BENCH, 0, std::ptr::null_mut(), 0) };
    assert_eq!(rc, STATUS_INVALID_ARGUMENT);

    // A kernel exactly as long as the padded sample gives one output position and runs.
    let exact = Conv1dWorkload {
        sample_length: 10,
        padding: 3,
        kernel_size: 16,
        ..BENCH
    };
    assert_eq!(cpu(&exact, 3), (STATUS_OK, String::new()));

    assert_eq!(run(DEVICE_CPU, 1, &BENCH, 1).0, STATUS_UNAVAILABLE);
    assert_eq!(run(DEVICE_CPU, -1, &BENCH, 1).0, STATUS_INVALID_ARGUMENT);
    assert_eq!(run(42, 0, &BENCH, 1).0, STATUS_INVALID_ARGUMENT);
    assert_eq!(run(DEVICE_MPS, 0, &BENCH, 1).0, STATUS_UNAVAILABLE);
}

#[test]
fn cuda_without_load_cuda_is_unavailable() {
    let _s = serial();
    for index in [0, 1000] {
        let (rc, text) = run(DEVICE_CUDA, index, &BENCH, 1);
        assert_eq!(rc, STATUS_UNAVAILABLE, "{text}");
        assert!(text.contains("load_cuda"), "{text}");
    }
    // Argument errors are reported before the device is looked at.
    assert_eq!(run(DEVICE_CUDA, 0, &BENCH, 0).0, STATUS_INVALID_ARGUMENT);
    // Nothing above loaded CUDA.
    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers, no pointer or enum), so
    // all-zero is a valid value.
    let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
    let mut msg = Msg::new();
    assert_eq!(
        // SAFETY: `facts` is a live, aligned BackendFacts and `msg` a live `Msg` valid for `msg.cap()`
        // bytes (BackendApi's calling contract).
        unsafe { (api().facts)(&mut facts, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
    assert_eq!(facts.cuda_loaded, 0);
}

#[test]
fn a_batch_past_2_pow_63_bytes_is_out_of_memory_without_asking_libtorch() {
    let _s = serial();
    let baseline = warm_baseline();
    let ooms = cpu_stats().num_ooms;
    let wide = Conv1dWorkload {
        sample_length: u32::MAX,
        out_channels: 1 << 20,
        ..BENCH
    };
    let (rc, text) = cpu(&wide, u32::MAX);
    assert_eq!(rc, STATUS_OUT_OF_MEMORY, "{text}");
    assert_eq!(
        text,
        format!("conv1d: batch {} needs more than 2^63 bytes", u32::MAX)
    );
    let after = cpu_stats();
    assert_eq!(after.num_ooms, ooms, "the allocator was never asked");
    assert_eq!(after.allocated, baseline);
}

/// One refused run: OUT_OF_MEMORY with libtorch's allocator message, the failure counted, every
/// tensor freed; then a small batch still runs in the same process.
fn assert_cpu_oom_then_recovers(workload: &Conv1dWorkload, batch: u32) {
    let baseline = warm_baseline();
    let ooms = cpu_stats().num_ooms;
    let (rc, text) = cpu(workload, batch);
    assert_eq!(rc, STATUS_OUT_OF_MEMORY, "batch {batch}: {text}");
    eprintln!("batch {batch}: {text}");
    assert!(text.contains("can't allocate memory"), "{text}");
    assert!(
        text.contains(": DefaultCPUAllocator: can't allocate memory: you tried to allocate "),
        "libtorch's message, without its source location: {text}"
    );
    assert!(
        !text.contains("Exception raised from"),
        "no C++ backtrace: {text}"
    );
    let after = cpu_stats();
    assert_eq!(after.num_ooms, ooms + 1, "the counting allocator saw it");
    assert_eq!(
        after.allocated, baseline,
        "tensors allocated before the failure are freed"
    );

    let (rc, text) = cpu(&BENCH, small());
    assert_eq!(rc, STATUS_OK, "after the OOM: {text}");
    assert_eq!(cpu_stats().allocated, baseline);
}

#[test]
fn a_batch_beyond_the_address_space_is_a_libtorch_allocation_failure() {
    let _s = serial();
    // 4e9 samples of 48000 fp32: the first tensor alone is 768 TB, more than a 47-bit address
    // space, so the kernel refuses it whatever the overcommit policy.
    assert_cpu_oom_then_recovers(&BENCH, 4_000_000_000);
}

#[test]
fn a_batch_far_beyond_ram_is_a_libtorch_allocation_failure() {
    let _s = serial();
    if overcommit_always() {
        eprintln!("vm.overcommit_memory = 1: skipped (the kernel would grant it, then OOM-kill)");
        return;
    }
    // 10^7 samples: 1.9 TB of input and 30 TB of output, more than RAM + swap anywhere.
    assert_cpu_oom_then_recovers(&BENCH, 10_000_000);
}

#[test]
fn an_allocation_failure_mid_run_frees_what_was_allocated_before_it() {
    let _s = serial();
    if overcommit_always() {
        eprintln!("vm.overcommit_memory = 1: skipped (the kernel would grant it, then OOM-kill)");
        return;
    }
    // 1024 filters: each sample's output (196 MB) is 1024 times its input (192 kB). The batch is
    // chosen so that the output is twice RAM + swap (which the kernel refuses outright) while the
    // inputs, allocated and filled first, stay small (about 0.2% of RAM).
    let wide = Conv1dWorkload {
        out_channels: 1024,
        ..BENCH
    };
    let per_sample_output = 1024 * 48001 * 4;
    let batch = u32::try_from((2 * ram_and_swap()).div_ceil(per_sample_output)).unwrap();
    assert_cpu_oom_then_recovers(&wide, batch);
}

#[test]
fn the_backward_pass_runs_and_needs_at_least_the_memory_of_the_forward_pass() {
    let _s = serial();
    let baseline = warm_baseline();
    let train = Conv1dWorkload {
        with_backward: 1,
        ..BENCH
    };
    // Which convolution algorithms libtorch picks, and so which pass needs more memory, depends on
    // the CPU, the batch and the thread count. At four times the small batch, the backward pass's
    // im2col scratch (about 196 MB) made it the larger one with 1, 2 and 8 threads on the first
    // machine measured; on AVX2 CPUs (AMD EPYC, measured) oneDNN's forward scratch (~390 MB from
    // batch 4 on) is the peak of both passes, so the two peaks are equal. What holds everywhere:
    // the backward pass never needs less, and it leaves nothing behind (checked below).
    let batch = 4 * small();
    let (forward_peak, _) = measure(&BENCH, batch);
    let (backward_peak, took) = measure(&train, batch);
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(
        backward_peak >= forward_peak,
        "batch {batch}: backward peak {backward_peak} vs forward {forward_peak}"
    );
    eprintln!("batch {batch}: backward peak {backward_peak} vs forward {forward_peak}");
    assert_eq!(cpu_stats().allocated, baseline);
}

#[test]
#[ignore = "prints timings; run in release with --ignored --nocapture"]
fn conv1d_profile() {
    let _s = serial();
    warm_baseline();
    let train = Conv1dWorkload {
        with_backward: 1,
        ..BENCH
    };
    println!("workload {BENCH:?}");
    println!(
        "| pass | batch | wall ms (median of 5) | min ms | peak bytes | forward tensors' bytes |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, w) in [("forward", &BENCH), ("forward+backward", &train)] {
        for batch in [1u32, 4, 16] {
            let mut times = Vec::new();
            let mut peak = 0;
            for _ in 0..5 {
                let (p, t) = measure(w, batch);
                peak = peak.max(p);
                times.push(t);
            }
            times.sort();
            println!(
                "| {name} | {batch} | {:.1} | {:.1} | {peak} | {} |",
                times[2].as_secs_f64() * 1e3,
                times[0].as_secs_f64() * 1e3,
                forward_bytes(&BENCH, u64::from(batch))
            );
        }
    }
}
