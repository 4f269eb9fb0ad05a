//! Real out-of-memory errors, not simulated: the guarded work runs in a child process whose address
//! space is limited with `setrlimit(RLIMIT_AS, start + budget)`, so libtorch's CPU allocator really
//! fails. Everything goes through the C ABI, as a host would call it.

use sda::config::{sda_config_free, sda_config_new};
use sda::context::{sda_context, sda_context_free, sda_context_new};
use sda::device::{sda_select_device, sda_selection};
use sda::guarded_run::{
    sda_guard_options_default, sda_guarded_run, sda_guarded_run_batched, sda_run_report,
    sda_run_report_default,
};
use sda::status::Status;
use sda::workload::{sda_run_workload, sda_workload, sda_workload_default};
use std::ffi::{c_void, CStr};
use std::process::Command;

const MIB: u64 = 1 << 20;
/// Memory the child may use above what it holds after warming up.
const BUDGET: u64 = 768 * MIB;
/// A batch whose conv1d output (256 × 48000 fp32 = 47 MiB per sample) is far beyond the budget, while
/// its input (188 KiB per sample) fits: the failure comes from the big allocation.
const TOO_LARGE: u32 = 100;

/// The workload used here: one second of 48 kHz audio as in the seeds, with more filters and a short
/// kernel, so that memory is large and compute stays fast.
fn workload() -> sda_workload {
    let mut w = sda_workload_default();
    w.out_channels = 256;
    w.kernel_size = 8;
    w.padding = 4;
    w
}

struct Work {
    context: *const sda_context,
    workload: sda_workload,
    batch: u32,
}

/// A host's work callback: runs the workload at the batch in `Work` (single runs).
unsafe extern "C" fn run_fixed(user_data: *mut c_void) -> i32 {
    let work = &*(user_data as *const Work);
    sda_run_workload(work.context, &work.workload, work.batch) as i32
}

/// A host's batched work callback.
unsafe extern "C" fn run_batch(user_data: *mut c_void, batch: u32, _accumulation: u32) -> i32 {
    let work = &*(user_data as *const Work);
    sda_run_workload(work.context, &work.workload, batch) as i32
}

fn statm_field(i: usize) -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = text.split_whitespace().nth(i).unwrap().parse().unwrap();
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn vm_size() -> u64 {
    statm_field(0)
}

fn rss() -> u64 {
    statm_field(1)
}

fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

fn guarded(work: &mut Work, batch: u32) -> (Status, sda_run_report) {
    work.batch = batch;
    let mut options = sda_guard_options_default();
    options.batch_size = batch;
    options.budget_bytes = BUDGET;
    let mut report = sda_run_report_default();
    let status = sda_guarded_run(
        work.context,
        Some(run_fixed),
        work as *mut Work as *mut c_void,
        &options,
        &mut report,
    );
    (status, report)
}

fn guidance(report: &sda_run_report) -> String {
    unsafe { CStr::from_ptr(report.guidance.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The child: select the CPU, warm up, limit the address space, then fail and recover for real.
fn child() {
    let mut config = std::ptr::null_mut();
    assert_eq!(sda_config_new(&mut config), Status::SDA_OK);
    let mut context = std::ptr::null_mut();
    assert_eq!(sda_context_new(config, &mut context), Status::SDA_OK);
    let mut selection: sda_selection = unsafe { std::mem::zeroed() };
    assert_eq!(
        sda_select_device(context, c"cpu".as_ptr(), &mut selection),
        Status::SDA_OK
    );
    let mut work = Work {
        context,
        workload: workload(),
        batch: 4,
    };
    // Warm up: libtorch loaded, its thread pool and heap arenas created, before the limit is taken.
    let (status, _) = guarded(&mut work, 2);
    assert_eq!(status, Status::SDA_OK);
    limit_address_space(vm_size() + BUDGET);

    // 1. A real OOM, reported with numbers and a concrete smaller batch.
    let (status, report) = guarded(&mut work, TOO_LARGE);
    let text = guidance(&report);
    println!("oom: {text}");
    assert_eq!(status, Status::SDA_ERR_OUT_OF_MEMORY, "{text}");
    assert_eq!(report.status, Status::SDA_ERR_OUT_OF_MEMORY);
    assert!(
        report.measured && report.failed_allocation_bytes > 0,
        "{text}"
    );
    let suggested = report.suggested_batch;
    assert!(
        suggested > 0 && suggested < TOO_LARGE,
        "suggested {suggested}: {text}"
    );
    assert!(text.contains(&format!("try batch {suggested}")), "{text}");
    assert!(
        text.contains("can't allocate memory"),
        "libtorch's own text is quoted: {text}"
    );
    assert_eq!(
        report.memory_after, report.memory_before,
        "recovery released the attempt"
    );
    let message = unsafe { CStr::from_ptr(sda::status::sda_last_error_message()) };
    assert_eq!(
        message.to_string_lossy(),
        text,
        "the last error is the guidance"
    );

    // 2. The next run, at the suggested batch, succeeds in the same process.
    let (status, report) = guarded(&mut work, suggested);
    assert_eq!(
        status,
        Status::SDA_OK,
        "batch {suggested}: {}",
        guidance(&report)
    );
    println!(
        "suggested batch {suggested} ran; peak {} MiB",
        report.peak_bytes / MIB
    );

    // 3. The batched variant finds a fitting batch by itself, logging each retry.
    let mut options = sda_guard_options_default();
    options.batch_size = TOO_LARGE;
    options.budget_bytes = BUDGET;
    let mut report = sda_run_report_default();
    let status = sda_guarded_run_batched(
        context,
        Some(run_batch),
        &mut work as *mut Work as *mut c_void,
        &options,
        &mut report,
    );
    assert_eq!(status, Status::SDA_OK, "{}", guidance(&report));
    assert!(report.oom_attempts >= 1 && report.final_batch < TOO_LARGE);
    println!(
        "batched: {} attempts, {} OOM, final batch {}",
        report.attempts, report.oom_attempts, report.final_batch
    );

    // 4. 200 OOMs in a row leave the resident set where it started (within 2 %).
    for _ in 0..5 {
        guarded(&mut work, TOO_LARGE);
    }
    let start = rss();
    for i in 0..200 {
        let (status, _) = guarded(&mut work, TOO_LARGE);
        assert_eq!(status, Status::SDA_ERR_OUT_OF_MEMORY, "OOM #{i}");
    }
    let end = rss();
    let growth = (end as f64 - start as f64) / start as f64;
    println!(
        "200 OOMs: RSS {} -> {} MiB ({:+.2} %)",
        start / MIB,
        end / MIB,
        growth * 100.0
    );
    assert!(growth < 0.02, "RSS grew {:.2} %", growth * 100.0);
    // Still computing afterwards.
    let (status, _) = guarded(&mut work, 1);
    assert_eq!(status, Status::SDA_OK);

    assert_eq!(sda_context_free(context), Status::SDA_OK);
    assert_eq!(sda_config_free(config), Status::SDA_OK);
}

#[test]
fn real_cpu_oom_under_rlimit_is_reported_recovered_and_leaves_rss_flat() {
    if std::env::var_os("SDA_OOM_CHILD").is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "real_cpu_oom_under_rlimit_is_reported_recovered_and_leaves_rss_flat",
            "--nocapture",
        ])
        .env("SDA_OOM_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("200 OOMs"), "{stdout}");
}
