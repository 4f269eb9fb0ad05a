//! Issue 7, item 4: many threads on one context, and the header's thread-safety statements.
//!
//! 8 threads × 10 000 mixed calls (device info, memory info, selecting "cpu", config get/set on one
//! shared configuration, classification, guarded runs and batched guarded runs of a tiny callback,
//! the thread's own error message) on ONE shared context, in a child process with a deadline and a
//! watchdog that names the threads that stopped moving. Every result is checked for consistency: the
//! device never changes, memory figures are sane, every value read from the shared configuration is
//! one that some thread wrote, each thread's last error is its own, every guarded run ran its
//! callback exactly once and reported the callback's status.
//!
//! A second phase frees a context while 8 threads are calling into it: each call either works or
//! returns `SDA_ERR_INVALID_HANDLE`, and every call that starts after the free is refused.
//!
//! Sizes: 8 × 10 000 in `make test`; 8 × 200 000 in `make reliability` (`SDA_THREADS_CALLS` overrides
//! the calls per thread).

mod reliability_support;

use reliability_support::{self as rs, Rng};
use sda::classify::sda_classify_error;
use sda::config::{sda_config, sda_config_free, sda_config_get, sda_config_new, sda_config_set};
use sda::context::{sda_context, sda_context_free, sda_context_new};
use sda::device::{sda_device_details, sda_device_info, sda_select_device, sda_selection};
use sda::guarded_run::{
    sda_guard_options_init, sda_guarded_run, sda_guarded_run_batched, sda_run_report_init,
};
use sda::memory::{sda_memory_figures, sda_memory_info};
use sda::status::Status;
use sda::status::{sda_last_error_message, sda_set_error_message};
use sda_testkit::ChildRun;
use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const THREADS: usize = 8;
const TEST: &str = "eight_threads_share_one_context_without_crash_deadlock_or_inconsistency";

#[derive(Clone, Copy)]
struct Handles {
    config: *mut sda_config,
    context: *mut sda_context,
}
// SAFETY: the two pointers are libsda handles: numbers that libsda looks up in its registry of live
// handles, never memory this test or libsda dereferences. The header documents every export called
// with them here as [thread-safe], and a handle freed on another thread is refused with
// SDA_ERR_INVALID_HANDLE, so moving them to other threads is allowed (and is what is tested).
unsafe impl Send for Handles {}
// SAFETY: Handles has no interior mutability: a `&Handles` only lets a thread copy the two handle
// values, which (see Send above) any thread may pass to libsda's thread-safe exports concurrently.
unsafe impl Sync for Handles {}

#[test]
fn eight_threads_share_one_context_without_crash_deadlock_or_inconsistency() {
    if std::env::var_os("SDA_THREADS_CHILD").is_some() {
        child();
        return;
    }
    let per_thread = rs::size("SDA_THREADS_CALLS", 10_000, 200_000);
    let seed = rs::seed("SDA_THREADS_SEED");
    let deadline = Duration::from_secs(240 + per_thread / 100);
    let out = ChildRun::test(TEST, "SDA_THREADS_CHILD")
        .env("SDA_THREADS_CALLS", per_thread.to_string())
        .env("SDA_THREADS_SEED", seed.to_string())
        .deadline(deadline)
        .run();
    assert!(
        out.success(),
        "threads child failed (replay: SDA_THREADS_SEED={seed}): {}",
        out.describe()
    );
    for line in out.stdout.lines().filter(|l| l.starts_with("phase")) {
        println!("{line}");
    }
    let calls: u64 = out.field("calls").unwrap().parse().unwrap();
    let secs: f64 = out.field("seconds").unwrap().parse().unwrap();
    let runs: u64 = out.field("guarded_runs").unwrap().parse().unwrap();
    let freed_ok: u64 = out.field("free_phase_ok").unwrap().parse().unwrap();
    let freed_refused: u64 = out.field("free_phase_refused").unwrap().parse().unwrap();
    assert_eq!(calls, per_thread * THREADS as u64);
    rs::record(
        "4. Threads",
        "8 threads × mixed calls on ONE shared context and config (device info, memory info, select \
         \"cpu\", config get/set, classify, guarded and batched guarded runs of a tiny callback, \
         per-thread error messages), child with watchdog; then 8 threads calling into a context \
         while it is freed",
        &format!("{THREADS} × {per_thread} = {calls} calls (seed {seed})"),
        &format!(
            "no crash, no deadlock ({secs:.1} s, {:.0} calls/s); every result consistent \
             ({runs} guarded runs each ran its callback once); free during use: {freed_ok} calls \
             worked, {freed_refused} refused with SDA_ERR_INVALID_HANDLE, none crashed",
            calls as f64 / secs
        ),
    );
}

/// Copies a C string from libsda: only for sda_last_error_message() and the NUL-terminated c_char
/// fields of the result structs below.
fn cstr(p: *const std::os::raw::c_char) -> String {
    // SAFETY: every caller passes either sda_last_error_message(), which is never NULL and stays valid
    // until the next libsda call on this thread (none happens before the copy here), or a c_char
    // array field of a local result struct that blank_device_details zero-filled or libsda wrote
    // NUL-terminated (truncated to fit); both end in a NUL and outlive this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An `sda_device_details` to pass as an out-parameter, zero-filled as a C host's `= {0}` would be.
fn blank_device_details() -> sda_device_details {
    sda::sized::initialised(sda::device::sda_device_details_init)
}

fn get(config: *mut sda_config, key: &CStr) -> String {
    let mut buf = [0u8; 256];
    let mut needed = 0;
    let s = sda_config_get(
        config,
        key.as_ptr(),
        buf.as_mut_ptr().cast(),
        buf.len(),
        &mut needed,
    );
    assert_eq!(s, Status::SDA_OK, "{}", cstr(sda_last_error_message()));
    CStr::from_bytes_until_nul(&buf)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// A guarded run's work: counts its calls and returns the status it was given.
struct Work {
    calls: u64,
    code: i32,
}

unsafe extern "C" fn tiny_work(user_data: *mut c_void) -> i32 {
    let w = &mut *(user_data as *mut Work);
    w.calls += 1;
    std::hint::black_box(w.calls.wrapping_mul(31));
    w.code
}

unsafe extern "C" fn batched_work(user_data: *mut c_void, batch: u32, _steps: u32) -> i32 {
    let w = &mut *(user_data as *mut Work);
    w.calls += 1;
    if batch > 4 {
        Status::SDA_ERR_OUT_OF_MEMORY as i32
    } else {
        Status::SDA_OK as i32
    }
}

struct Progress {
    calls: Vec<AtomicU64>,
}

fn worker(t: usize, h: Handles, per_thread: u64, seed: u64, progress: &Progress) -> u64 {
    let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9));
    let mut reference: Option<String> = None;
    let mut guarded = 0u64;
    let own_message = format!("thread {t} message");
    let own_c = CString::new(own_message.clone()).unwrap();
    for i in 0..per_thread {
        progress.calls[t].store(i, Ordering::Relaxed);
        match rng.below(100) {
            0..=14 => {
                let mut d = blank_device_details();
                assert_eq!(sda_device_info(h.context, &mut d), Status::SDA_OK);
                let name = format!(
                    "{}|{}|{}",
                    cstr(d.device.as_ptr()),
                    cstr(d.name.as_ptr()),
                    d.memory_total
                );
                assert_eq!(cstr(d.device.as_ptr()), "cpu");
                assert!(d.memory_total > 0 && d.device_count >= 1);
                // The static facts never change between calls or threads.
                match &reference {
                    None => reference = Some(name),
                    Some(r) => assert_eq!(*r, name, "device facts changed"),
                }
            }
            15..=27 => {
                let mut m: sda_memory_figures =
                    sda::sized::initialised(sda::memory::sda_memory_figures_init);
                assert_eq!(sda_memory_info(h.context, &mut m), Status::SDA_OK);
                assert!(
                    m.total > 0 && m.free <= m.total && m.budget <= m.total,
                    "{m:?}"
                );
                assert!(m.process_resident > 0 && m.peak >= m.allocated, "{m:?}");
            }
            28..=35 => {
                let mut sel: sda_selection =
                    sda::sized::initialised(sda::device::sda_selection_init);
                assert_eq!(
                    sda_select_device(h.context, c"cpu".as_ptr(), &mut sel),
                    Status::SDA_OK
                );
                assert_eq!(cstr(sel.device.as_ptr()), "cpu");
                assert_eq!(sel.fell_back, 0);
            }
            36..=47 => {
                // Every value read is one that some thread wrote (or the default 0).
                let v: u64 = get(h.config, c"hardware.max_batch_size").parse().unwrap();
                assert!(
                    v == 0 || (1..=THREADS as u64).contains(&(v / 100_000)),
                    "read {v}, which no thread wrote"
                );
                let d = get(h.config, c"hardware.device");
                assert!(d == "cpu" || d == "auto", "hardware.device = {d:?}");
            }
            48..=57 => {
                let v = CString::new(((t as u64 + 1) * 100_000 + i % 100_000).to_string()).unwrap();
                assert_eq!(
                    sda_config_set(h.config, c"hardware.max_batch_size".as_ptr(), v.as_ptr()),
                    Status::SDA_OK
                );
                let d = if i % 2 == 0 { c"cpu" } else { c"auto" };
                assert_eq!(
                    sda_config_set(h.config, c"hardware.device".as_ptr(), d.as_ptr()),
                    Status::SDA_OK
                );
                // A refused value changes nothing and reports on this thread only.
                assert_eq!(
                    sda_config_set(
                        h.config,
                        c"hardware.memory_fraction".as_ptr(),
                        c"7".as_ptr()
                    ),
                    Status::SDA_ERR_INVALID_VALUE
                );
                assert!(cstr(sda_last_error_message()).contains("memory_fraction"));
            }
            58..=67 => {
                let (text, want) = *rng.pick(&[
                    (
                        c"CUDA out of memory. Tried to allocate 2.00 GiB",
                        Status::SDA_ERR_OUT_OF_MEMORY,
                    ),
                    (
                        c"CUDA error: an illegal memory access was encountered",
                        Status::SDA_ERR_TORCH,
                    ),
                    (
                        c"DefaultCPUAllocator: can't allocate memory",
                        Status::SDA_ERR_OUT_OF_MEMORY,
                    ),
                    (c"shape mismatch", Status::SDA_ERR_TORCH),
                ]);
                assert_eq!(sda_classify_error(text.as_ptr()), want);
            }
            68..=83 => {
                let code = if rng.chance(1, 4) {
                    Status::SDA_ERR_OUT_OF_MEMORY
                } else {
                    Status::SDA_OK
                };
                let mut work = Work {
                    calls: 0,
                    code: code as i32,
                };
                let mut options = sda::sized::initialised(sda_guard_options_init);
                options.batch_size = 1 + rng.below(64) as u32;
                let mut report = sda::sized::initialised(sda_run_report_init);
                let s = sda_guarded_run(
                    h.context,
                    Some(tiny_work),
                    (&mut work as *mut Work).cast(),
                    &options,
                    &mut report,
                );
                assert_eq!(s, code, "{}", cstr(sda_last_error_message()));
                assert_eq!(report.status, code);
                assert_eq!(work.calls, 1, "the work ran once");
                guarded += 1;
            }
            84..=89 => {
                let mut work = Work { calls: 0, code: 0 };
                let mut options = sda::sized::initialised(sda_guard_options_init);
                options.batch_size = 16;
                options.max_attempts = 16;
                let mut report = sda::sized::initialised(sda_run_report_init);
                let s = sda_guarded_run_batched(
                    h.context,
                    Some(batched_work),
                    (&mut work as *mut Work).cast(),
                    &options,
                    &mut report,
                );
                assert_eq!(s, Status::SDA_OK, "{}", cstr(sda_last_error_message()));
                assert!(report.final_batch >= 1 && report.final_batch <= 4);
                assert_eq!(u64::from(report.attempts), work.calls);
                guarded += 1;
            }
            90..=95 => {
                // Each thread has its own last error.
                assert_eq!(sda_set_error_message(own_c.as_ptr()), Status::SDA_OK);
                std::thread::yield_now();
                assert_eq!(cstr(sda_last_error_message()), own_message);
            }
            _ => {
                // Private contexts created and freed next to the shared one.
                let mut ctx = std::ptr::null_mut();
                assert_eq!(sda_context_new(h.config, &mut ctx), Status::SDA_OK);
                let mut d = blank_device_details();
                let _ = sda_device_info(ctx, &mut d);
                assert_eq!(sda_context_free(ctx), Status::SDA_OK);
                assert_eq!(sda_context_free(ctx), Status::SDA_ERR_INVALID_HANDLE);
            }
        }
    }
    progress.calls[t].store(per_thread, Ordering::Relaxed);
    guarded
}

fn child() {
    let per_thread: u64 = std::env::var("SDA_THREADS_CALLS").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("SDA_THREADS_SEED").unwrap().parse().unwrap();
    let mut config = std::ptr::null_mut();
    assert_eq!(sda_config_new(&mut config), Status::SDA_OK);
    assert_eq!(
        sda_config_set(config, c"hardware.device".as_ptr(), c"cpu".as_ptr()),
        Status::SDA_OK
    );
    let mut context = std::ptr::null_mut();
    assert_eq!(sda_context_new(config, &mut context), Status::SDA_OK);
    let h = Handles { config, context };
    // Nothing selected and no backend loaded yet: the threads race to select and to load libtorch.
    let progress = Arc::new(Progress {
        calls: (0..THREADS).map(|_| AtomicU64::new(0)).collect(),
    });
    let done = Arc::new(AtomicBool::new(false));
    {
        // The watchdog: a thread whose count has not moved for 60 s is stuck.
        let progress = progress.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last: Vec<(u64, Instant)> = (0..THREADS).map(|_| (0, Instant::now())).collect();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                for (t, slot) in last.iter_mut().enumerate() {
                    let now = progress.calls[t].load(Ordering::Relaxed);
                    if now != slot.0 || now == per_thread {
                        *slot = (now, Instant::now());
                    } else if slot.1.elapsed() > Duration::from_secs(60) {
                        eprintln!("DEADLOCK: thread {t} stuck at call {now} for 60 s");
                        std::process::abort();
                    }
                }
            }
        });
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let progress = progress.clone();
            std::thread::spawn(move || worker(t, h, per_thread, seed, &progress))
        })
        .collect();
    let guarded: u64 = handles
        .into_iter()
        .map(|j| j.join().expect("a thread panicked"))
        .sum();
    let secs = started.elapsed().as_secs_f64();
    println!("phase 1: {THREADS} × {per_thread} calls in {secs:.2} s, {guarded} guarded runs");

    // Phase 2: a context freed while threads call into it.
    let mut doomed = std::ptr::null_mut();
    assert_eq!(sda_context_new(config, &mut doomed), Status::SDA_OK);
    let doomed_h = Handles {
        config,
        context: doomed,
    };
    let freed = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let freed = freed.clone();
            std::thread::spawn(move || {
                let h = doomed_h;
                let (mut ok, mut refused) = (0u64, 0u64);
                for i in 0..2000u64 {
                    let after_free = freed.load(Ordering::SeqCst);
                    let s = if (i + t as u64) % 2 == 0 {
                        let mut d = blank_device_details();
                        sda_device_info(h.context, &mut d)
                    } else {
                        let mut work = Work { calls: 0, code: 0 };
                        sda_guarded_run(
                            h.context,
                            Some(tiny_work),
                            (&mut work as *mut Work).cast(),
                            std::ptr::null(),
                            std::ptr::null_mut(),
                        )
                    };
                    match s {
                        Status::SDA_OK => {
                            assert!(!after_free, "a call that started after the free worked");
                            ok += 1;
                        }
                        Status::SDA_ERR_INVALID_HANDLE => refused += 1,
                        other => panic!("{}: {}", other.name(), cstr(sda_last_error_message())),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sda_context_free(doomed), Status::SDA_OK);
    freed.store(true, Ordering::SeqCst);
    let (mut ok, mut refused) = (0, 0);
    for j in threads {
        let (o, r) = j.join().expect("a thread panicked");
        ok += o;
        refused += r;
    }
    assert!(refused > 0, "the free happened after all calls");
    println!("phase 2: {ok} calls worked, {refused} refused after the free");
    done.store(true, Ordering::Relaxed);

    assert_eq!(sda_context_free(context), Status::SDA_OK);
    assert_eq!(sda_config_free(config), Status::SDA_OK);
    println!(
        "RESULT calls={} seconds={secs:.2} guarded_runs={guarded} free_phase_ok={ok} \
         free_phase_refused={refused}",
        per_thread * THREADS as u64
    );
}

/// Every function declared in include/sda.h says how it may be called from threads: its doc comment
/// has a "Thread safety:" line (the header is generated from the Rust docs, so this checks those).
#[test]
fn every_function_in_the_header_states_its_thread_safety() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sda.h"))
            .unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    let mut doc = String::new();
    let mut in_doc = false;
    for line in header.lines() {
        let trimmed = line.trim_start();
        if in_doc || trimmed.starts_with("/**") {
            if trimmed.starts_with("/**") {
                doc.clear();
            }
            in_doc = !trimmed.ends_with("*/");
            doc.push_str(line);
            doc.push('\n');
            continue;
        }
        if line.is_empty() || line.starts_with(char::is_whitespace) {
            continue; // continuation lines of a declaration, struct fields
        }
        if line.starts_with("/*") || line.starts_with("//") {
            doc.clear();
            continue; // a plain comment, not a declaration
        }
        // A function declaration at column 0: `<type> sda_name(`.
        let name = line.find('(').and_then(|open| {
            line[..open]
                .rsplit([' ', '*'])
                .next()
                .filter(|n| n.starts_with("sda_") && !line.starts_with("typedef"))
        });
        if let Some(name) = name {
            checked += 1;
            if !doc.contains("Thread safety:") {
                missing.push(name.to_string());
            }
        }
        // Any other top-level line ends the reach of the doc comment above it.
        doc.clear();
    }
    assert!(checked >= 40, "only {checked} functions found in sda.h");
    assert!(
        missing.is_empty(),
        "functions whose doc in include/sda.h has no \"Thread safety:\" line: {missing:?}"
    );
    rs::record(
        "4. Threads: the header",
        "every function declared in include/sda.h has a \"Thread safety:\" line in its doc",
        &format!("{checked} functions"),
        "all state their thread safety ([thread-safe], [audio-thread], [main-thread])",
    );
}
