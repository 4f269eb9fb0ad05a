//! Issue 7, item 1: a seeded random-call driver over the whole C ABI.
//!
//! Every exported function is called with random arguments: NULL and dangling-free garbage pointers
//! where the header allows the caller to get it wrong (handles), NULL for every pointer, invalid
//! UTF-8, very long and empty strings, huge and negative numbers, random and mutated TOML, deeply
//! nested TOML, freed, forged and cross-typed handles, wrong `struct_size`s, callbacks that return
//! statuses that do not exist, fail, re-enter libsda and free the handle they run on, and paths that
//! are FIFOs, devices, directories, huge files and missing directories. Each call must come back with
//! an `sda_status` (no crash, abort or hang) and keep the ABI's promises: out-parameters untouched on
//! failure, buffers untouched when too small, a message on every failure, freed and forged handles
//! refused.
//!
//! The driver runs in a child process under `RLIMIT_AS` (2 GiB above its warmed-up size), so that a
//! runaway allocation is a finding in seconds instead of the machine's OOM killer, and with a watchdog
//! that names the call that hung. The child sees no GPU (`CUDA_VISIBLE_DEVICES=""`): a CUDA context
//! and an address-space limit do not mix. The parent names the call that crashed (from a trace file) and the
//! seed to replay it: `SDA_FUZZ_SEED=<seed> SDA_FUZZ_CALLS=<n> cargo nextest run -p sda --features
//! test-hooks -E 'binary(reliability_fuzz)'`.
//!
//! Sizes: 20 000 calls in `make test`, 300 000 in `make reliability` (`SDA_FUZZ_CALLS` overrides).
//! Calls that legitimately take long are kept small: the built-in workload and probes only with tiny
//! shapes or with sizes so large that the allocation fails at once.

mod reliability_support;

use reliability_support::{self as rs, Rng};
use sda::backend::sda_backend_details_init;
use sda::backend::{sda_backend_details, sda_backend_info, sda_backend_load};
use sda::classify::sda_classify_error;
use sda::config::{
    sda_config, sda_config_free, sda_config_get, sda_config_load, sda_config_load_str,
    sda_config_new, sda_config_save, sda_config_set, sda_config_to_string,
};
use sda::context::{sda_context, sda_context_free, sda_context_new};
use sda::device::{
    sda_device_details, sda_device_details_init, sda_device_info, sda_device_kind_str,
    sda_list_devices, sda_select_device, sda_selection, sda_selection_init,
};
use sda::guarded_run::{
    sda_guard_options, sda_guard_options_init, sda_guarded_run, sda_guarded_run_batched,
    sda_run_report, sda_run_report_init,
};
use sda::log::sda_log_level;
use sda::log::sda_set_log_callback;
use sda::memory::{
    sda_clear_cache, sda_memory_figures, sda_memory_figures_init, sda_memory_info, sda_reset_peak,
};
use sda::model::{
    sda_guarded_run_model, sda_model, sda_model_details, sda_model_details_init, sda_model_free,
    sda_model_info, sda_model_load, sda_model_options, sda_model_options_init, sda_model_run,
};
use sda::plan::{sda_plan_workers, sda_worker_plan_init};
use sda::probe::{
    sda_probe_batch, sda_probe_options, sda_probe_options_init, sda_probe_progress,
    sda_probe_result_init,
};
use sda::recommend::{sda_recommend, sda_recommendation_init};
use sda::report::{sda_report, sda_report_json};
use sda::sized::{initialised, Growable};
use sda::status::Status;
use sda::status::{sda_last_error_message, sda_set_error_message, sda_status_str, sda_version};
use sda::test_hooks::sda_debug_force_panic;
use sda::validate::{sda_problem, sda_problem_init, sda_severity_str, sda_validate_environment};
use sda::workload::{sda_run_workload, sda_workload, sda_workload_init};
use sda_testkit::{ChildRun, MIB};
use std::collections::BTreeMap;
use std::ffi::{c_void, CStr, CString};
use std::os::raw::c_char;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TEST: &str = "random_calls_with_bad_arguments_always_return_a_status";

/// More calls than one step of the driver makes: three pool trims and the step's own calls.
const MAX_CALLS_PER_STEP: u64 = 16;

/// Every function of include/sda.h; the test fails when the header gains one the driver does not
/// call, so that new exports are fuzzed too.
const EXPORTS: &[&str] = &[
    "sda_backend_load",
    "sda_backend_info",
    "sda_classify_error",
    "sda_config_new",
    "sda_config_load",
    "sda_config_load_str",
    "sda_config_save",
    "sda_config_get",
    "sda_config_set",
    "sda_config_to_string",
    "sda_config_free",
    "sda_context_new",
    "sda_context_free",
    "sda_select_device",
    "sda_device_info",
    "sda_list_devices",
    "sda_device_kind_str",
    "sda_guard_options_init",
    "sda_run_report_init",
    "sda_guarded_run",
    "sda_guarded_run_batched",
    "sda_set_log_callback",
    "sda_memory_info",
    "sda_clear_cache",
    "sda_reset_peak",
    "sda_worker_plan_init",
    "sda_plan_workers",
    "sda_probe_options_init",
    "sda_probe_result_init",
    "sda_probe_batch",
    "sda_recommendation_init",
    "sda_recommend",
    "sda_report",
    "sda_report_json",
    "sda_status_str",
    "sda_last_error_message",
    "sda_set_error_message",
    "sda_version",
    "sda_validate_environment",
    "sda_severity_str",
    "sda_workload_init",
    "sda_selection_init",
    "sda_device_details_init",
    "sda_memory_figures_init",
    "sda_backend_details_init",
    "sda_problem_init",
    "sda_run_workload",
    "sda_model_options_init",
    "sda_model_details_init",
    "sda_model_load",
    "sda_model_free",
    "sda_model_run",
    "sda_model_info",
    "sda_guarded_run_model",
];

/// The functions the header declares.
fn header_functions() -> Vec<String> {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/sda.h"))
            .unwrap();
    let mut names = Vec::new();
    for line in header.lines() {
        // Declarations start at column 0 with a return type: `sda_status sda_x(`, `const char *sda_x(`.
        if line.starts_with(' ')
            || line.starts_with('*')
            || line.starts_with("typedef")
            || line.starts_with("/*")
            || line.starts_with("//")
        {
            continue;
        }
        if let Some(open) = line.find('(') {
            let before = &line[..open];
            if let Some(name) = before
                .rsplit([' ', '*'])
                .next()
                .filter(|n| n.starts_with("sda_"))
            {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_driver_calls_every_function_of_the_header() {
    let mut header = header_functions();
    header.sort();
    let mut ours: Vec<String> = EXPORTS.iter().map(|s| s.to_string()).collect();
    ours.sort();
    assert_eq!(
        header, ours,
        "include/sda.h and the fuzz driver's list of exports differ: teach the driver the new function"
    );
}

#[test]
fn random_calls_with_bad_arguments_always_return_a_status() {
    if std::env::var_os("SDA_FUZZ_CHILD").is_some() {
        child();
        return;
    }
    let calls = rs::size("SDA_FUZZ_CALLS", 20_000, 300_000);
    let seed = rs::seed("SDA_FUZZ_SEED");
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    println!("fuzz: seed {seed}, {calls} calls");
    let deadline = Duration::from_secs(180 + calls / 50);
    let out = ChildRun::test(TEST, "SDA_FUZZ_CHILD")
        .env("SDA_FUZZ_CALLS", calls.to_string())
        .env("SDA_FUZZ_SEED", seed.to_string())
        .env("SDA_FUZZ_TRACE", &trace)
        // The child runs under RLIMIT_AS, which a CUDA context must not meet: the driver is
        // shown no GPU, and "auto"/"cuda" take their no-GPU paths on every machine.
        .env("CUDA_VISIBLE_DEVICES", "")
        .address_space_budget(2048 * MIB)
        .deadline(deadline)
        .run();
    if !out.success() {
        let last = std::fs::read_to_string(&trace).unwrap_or_default();
        panic!(
            "fuzz child failed (replay: SDA_FUZZ_SEED={seed} SDA_FUZZ_CALLS={calls}); last call: \
             {}\n{}",
            last.trim_end_matches('\0').trim(),
            out.describe()
        );
    }
    for line in out.stdout.lines() {
        if line.starts_with("time per function")
            || line.starts_with("per function")
            || line.starts_with("slow:")
        {
            println!("{line}");
        }
    }
    let made: u64 = out.field("calls").unwrap().parse().unwrap();
    // One step of the driver may make a few calls (the pool trims free handles before it), so the
    // child can pass `calls` by those; it must never stop short of it.
    assert!(
        (calls..calls + MAX_CALLS_PER_STEP).contains(&made),
        "the child made {made} calls, not {calls} (at most {} more)",
        MAX_CALLS_PER_STEP - 1
    );
    let exports = out.field("exports").unwrap();
    let statuses = out.field("statuses").unwrap();
    let secs = out.elapsed.as_secs_f64();
    println!("fuzz: {made} calls in {secs:.1} s; statuses {statuses}");
    rs::record(
        "1. Fuzzing the C ABI",
        &format!(
            "seeded random calls to all {exports} functions of sda.h: NULLs, invalid UTF-8, long \
             strings, huge/negative numbers, random and deeply nested TOML, freed/forged/cross-typed \
             handles, wrong struct_size, re-entrant callbacks, FIFO/device/huge-file paths; child under \
             RLIMIT_AS with a watchdog"
        ),
        &format!("{made} calls (seed {seed})"),
        &format!(
            "every call returned a valid sda_status and kept the ABI's promises (out-parameters \
             and too-small buffers untouched on failure, a message of its own on every failure and \
             the last error untouched on success, freed/forged handles refused, no panic inside \
             libsda); 0 crashes, 0 hangs, {secs:.0} s; statuses: {}",
            statuses.replace(',', ", ")
        ),
    );
}

// ------------------------------------------------------------------------------------------------
// The child.

/// The thread's last error before each call.
const SENTINEL: &str = "(fuzz sentinel: no libsda call failed since)";

/// Calls made so far, for the watchdog.
static PROGRESS: AtomicU64 = AtomicU64::new(0);
/// Log messages received by the fuzzed log callback.
static LOGGED: AtomicU64 = AtomicU64::new(0);

/// What a handle argument was, for the checks after the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Live,
    Null,
    /// Freed earlier, or never created by libsda, or a handle of the other type.
    Invalid,
}

struct Fuzz {
    rng: Rng,
    dir: PathBuf,
    configs: Vec<*mut sda_config>,
    contexts: Vec<*mut sda_context>,
    dead_configs: Vec<*mut sda_config>,
    dead_contexts: Vec<*mut sda_context>,
    /// Live models and the context each was loaded with (perhaps freed since).
    models: Vec<(*mut sda_model, *mut sda_context)>,
    dead_models: Vec<*mut sda_model>,
    /// The model files written at start-up (empty when no Python with torch is at hand).
    model_files: Vec<String>,
    calls: BTreeMap<&'static str, u64>,
    time: BTreeMap<&'static str, Duration>,
    current: Option<(&'static str, Instant)>,
    current_args: String,
    statuses: BTreeMap<&'static str, u64>,
    trace: std::fs::File,
    n: u64,
    default_toml: String,
}

/// A string argument: the pointer to pass and what it was.
struct Text {
    c: Option<CString>,
    utf8: bool,
}

impl Text {
    fn ptr(&self) -> *const c_char {
        self.c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
    }
    fn is_null(&self) -> bool {
        self.c.is_none()
    }
}

fn cstring(bytes: Vec<u8>) -> CString {
    let bytes: Vec<u8> = bytes
        .into_iter()
        .map(|b| if b == 0 { b'0' } else { b })
        .collect();
    CString::new(bytes).unwrap()
}

const USEFUL_KEYS: &[&str] = &[
    "general.first_run_complete",
    "paths.datasets",
    "paths.models",
    "paths.generated",
    "hardware.device",
    "hardware.platform_priority",
    "hardware.memory_strategy",
    "hardware.memory_fraction",
    "hardware.max_batch_size",
    "hardware.strict",
    "hardware.backend",
    "environment.SDA_FUZZ_VAR",
    "environment.",
    "environment",
    "hardware",
    "hardware.",
    ".",
    "tiers",
    "tiers.0.batch_size",
    "general.first_run_complete.x",
    "HARDWARE.DEVICE",
];

const USEFUL_VALUES: &[&str] = &[
    "cpu",
    "auto",
    "cuda",
    "cuda:0",
    "cuda:1",
    "cuda:99",
    "cuda:-1",
    "cuda:4294967296",
    "cuda:x",
    "mps",
    "tpu",
    " CPU ",
    "true",
    "false",
    "yes",
    "0",
    "1",
    "-1",
    "4294967295",
    "18446744073709551616",
    "0.5",
    "1e308",
    "-0.0",
    "nan",
    "inf",
    "balanced",
    "custom",
    "aggressive",
    "conservative",
    "cuda,mps,cpu",
    "cpu,cpu",
    ",,,",
    "/nonexistent/libsda_torch.so",
    "data/datasets",
    "/dev/null",
    "",
];

const CLASSIFY_TEXTS: &[&str] = &[
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 99999999999 bytes",
    "CUDA error: an illegal memory access was encountered",
    "MPS backend out of memory",
    "std::bad_alloc",
    "RESOURCE_EXHAUSTED",
    "could not create a primitive",
    "Tried to allocate 18446744073709551615.99 EiB",
    "Tried to allocate -1 bytes",
];

const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "{",
    "}",
    ",",
    "\n",
    ".",
    " ",
    "#",
    "general",
    "paths",
    "hardware",
    "environment",
    "tiers",
    "device",
    "backend",
    "strict",
    "memory_fraction",
    "max_batch_size",
    "platform_priority",
    "memory_strategy",
    "min_memory_gb",
    "max_memory_gb",
    "batch_size",
    "label",
    "1e999",
    "-0",
    "nan",
    "-inf",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "0x7fffffffffffffff",
    "99999999999999999999",
    "-9223372036854775809",
    "\\u0000",
    "\\uD800",
    "\"cpu\"",
    "\"cuda:99\"",
    "[\"cuda\", \"cpu\"]",
    "0.75",
    "1_000",
];

fn vm_size_and_limit() {
    // Warmed up (libtorch and its threads exist): the parent's 2 GiB more address space than now.
    sda_testkit::child::apply_address_space_budget();
}

fn child() {
    let calls: u64 = std::env::var("SDA_FUZZ_CALLS").unwrap().parse().unwrap();
    let seed: u64 = std::env::var("SDA_FUZZ_SEED").unwrap().parse().unwrap();
    let trace_path = std::env::var("SDA_FUZZ_TRACE").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    // The watchdog: a call that takes more than 60 s is a hang; say which and end the process.
    let trace_for_watchdog = trace_path.clone();
    std::thread::spawn(move || {
        let mut last = (0, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(60) {
                let what = std::fs::read_to_string(&trace_for_watchdog).unwrap_or_default();
                eprintln!("HUNG for 60 s in {}", what.trim_end_matches('\0').trim());
                std::process::abort();
            }
        }
    });

    let mut f = Fuzz {
        rng: Rng::new(seed),
        dir: dir.path().to_path_buf(),
        configs: Vec::new(),
        contexts: Vec::new(),
        dead_configs: Vec::new(),
        dead_contexts: Vec::new(),
        models: Vec::new(),
        dead_models: Vec::new(),
        model_files: Vec::new(),
        calls: BTreeMap::new(),
        time: BTreeMap::new(),
        current: None,
        current_args: String::new(),
        statuses: BTreeMap::new(),
        trace: std::fs::File::create(&trace_path).unwrap(),
        n: 0,
        default_toml: String::new(),
    };
    f.prepare_files();
    // Warm up: a context on the CPU with the backend loaded (guarded runs then measure, workloads
    // run), before the address-space limit is taken.
    let mut config = std::ptr::null_mut();
    assert_eq!(sda_config_new(&mut config), Status::SDA_OK);
    let mut context = std::ptr::null_mut();
    assert_eq!(sda_context_new(config, &mut context), Status::SDA_OK);
    let mut sel = blank_selection();
    assert_eq!(
        sda_select_device(context, c"cpu".as_ptr(), &mut sel),
        Status::SDA_OK
    );
    let backend = sda_backend_load(context);
    println!("backend: {} {}", backend.name(), last_error());
    if backend == Status::SDA_OK {
        let mut w: sda_workload = initialised(sda_workload_init);
        w.sample_length = 64;
        w.kernel_size = 4;
        assert_eq!(sda_run_workload(context, &w, 4), Status::SDA_OK);
    }
    f.write_model_files();
    if backend == Status::SDA_OK {
        // A model loaded and run before the limit: the TorchScript interpreter's start-up is mapped.
        if let Some(conv) = f.model_files.first().cloned() {
            let path = CString::new(conv).unwrap();
            let shape = [2u64, 64];
            let mut o: sda_model_options = initialised(sda_model_options_init);
            o.path = path.as_ptr();
            o.input_shape = shape.as_ptr();
            o.input_rank = 2;
            let mut model = std::ptr::null_mut();
            assert_eq!(
                sda_model_load(context, &o, &mut model),
                Status::SDA_OK,
                "{}",
                last_error()
            );
            assert_eq!(sda_model_run(model, 2), Status::SDA_OK, "{}", last_error());
            f.models.push((model, context));
        }
    }
    f.default_toml = f.to_string_of(config);
    f.configs.push(config);
    f.contexts.push(context);
    if std::env::var_os("SDA_FUZZ_NO_RLIMIT").is_none() {
        vm_size_and_limit();
    }

    let started = Instant::now();
    while f.n < calls {
        let before = f.n;
        f.one_call();
        assert!(
            (1..MAX_CALLS_PER_STEP).contains(&(f.n - before)),
            "one step made {} calls",
            f.n - before
        );
        PROGRESS.store(f.n, Ordering::Relaxed);
        if f.n % 5000 == 0 {
            println!("{} calls, {:.1} s", f.n, started.elapsed().as_secs_f64());
        }
    }
    // Everything still live is freed once, and a second time is refused.
    for (m, _) in std::mem::take(&mut f.models) {
        assert_eq!(sda_model_free(m), Status::SDA_OK);
        assert_eq!(sda_model_free(m), Status::SDA_ERR_INVALID_HANDLE);
    }
    for c in std::mem::take(&mut f.contexts) {
        assert_eq!(sda_context_free(c), Status::SDA_OK);
        assert_eq!(sda_context_free(c), Status::SDA_ERR_INVALID_HANDLE);
    }
    for c in std::mem::take(&mut f.configs) {
        assert_eq!(sda_config_free(c), Status::SDA_OK);
        assert_eq!(sda_config_free(c), Status::SDA_ERR_INVALID_HANDLE);
    }
    assert_eq!(
        sda_set_log_callback(None, std::ptr::null_mut()),
        Status::SDA_OK
    );
    let exports_called = f.calls.len();
    let missing: Vec<&&str> = EXPORTS
        .iter()
        .filter(|e| !f.calls.contains_key(**e))
        .collect();
    if calls >= 5000 {
        assert!(missing.is_empty(), "never called: {missing:?}");
    }
    println!("per function: {:?}", f.calls);
    let mut slow: Vec<_> = f.time.iter().collect();
    slow.sort_by_key(|(_, d)| std::cmp::Reverse(**d));
    println!(
        "time per function: {}",
        slow.iter()
            .map(|(k, d)| format!("{k} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "RESULT calls={} exports={} logged={} statuses={}",
        f.n,
        exports_called,
        LOGGED.load(Ordering::Relaxed),
        f.statuses
            .iter()
            .map(|(k, v)| format!("{}:{v}", k.trim_start_matches("SDA_")))
            .collect::<Vec<_>>()
            .join(",")
    );
}

impl Fuzz {
    fn prepare_files(&mut self) {
        let d = &self.dir;
        std::fs::create_dir_all(d.join("adir")).unwrap();
        std::fs::write(d.join("malformed.toml"), "[hardware\ndevice = ").unwrap();
        std::fs::write(d.join("valid.toml"), "[hardware]\ndevice = \"cpu\"\n").unwrap();
        // A FIFO (opening it for reading would wait for a writer), and a file over the size limit.
        let fifo = CString::new(d.join("fifo").display().to_string()).unwrap();
        // SAFETY: `fifo` is a CString, so the path is NUL-terminated, and it lives until after the
        // call; mkfifo only reads the path and keeps no pointer to it.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let big = std::fs::File::create(d.join("huge.toml")).unwrap();
        big.set_len(17 << 20).unwrap();
    }

    /// Records the call about to be made, so that a crash or hang can be attributed.
    fn begin(&mut self, name: &'static str, args: &str) {
        if let Some((prev, at)) = self.current.take() {
            let took = at.elapsed();
            *self.time.entry(prev).or_default() += took;
            if took > Duration::from_millis(250) {
                println!(
                    "slow: {:.2} s {prev}({})",
                    took.as_secs_f64(),
                    self.current_args
                );
            }
        }
        self.current_args = args.chars().take(300).collect();
        self.current = Some((name, Instant::now()));
        self.n += 1;
        *self.calls.entry(name).or_default() += 1;
        let line: String = format!("#{} {name}({args})", self.n)
            .chars()
            .take(120) // at most 480 bytes: the record stays whole UTF-8 in its 512
            .collect();
        let mut bytes = line.into_bytes();
        bytes.resize(512, 0);
        let _ = self.trace.write_all_at(&bytes, 0);
        // A known message, to tell whether the call sets its own.
        let sentinel = CString::new(SENTINEL).unwrap();
        assert_eq!(sda_set_error_message(sentinel.as_ptr()), Status::SDA_OK);
    }

    /// The checks every status-returning call gets.
    fn end(&mut self, name: &'static str, status: Status) -> Status {
        let code = status as i32;
        let status = Status::from_code(code)
            .unwrap_or_else(|| panic!("{name} returned {code}, which is not an sda_status"));
        let key = match (status, name) {
            (Status::SDA_ERR_PANIC, "sda_debug_force_panic") => "SDA_ERR_PANIC_from_the_test_hook",
            (Status::SDA_ERR_PANIC, _) => "SDA_ERR_PANIC_returned_by_callbacks",
            _ => status.name(),
        };
        *self.statuses.entry(key).or_default() += 1;
        let message = last_error();
        // A panic inside libsda is a bug, even when the boundary catches it: only the test hook
        // may produce one (a callback returning SDA_ERR_PANIC passes its own status through).
        assert!(
            name == "sda_debug_force_panic" || !message.starts_with("internal error in libsda"),
            "{name} panicked inside libsda: {message}"
        );
        // Every failure leaves its own message; a success leaves the thread's message alone (except
        // calls that run the host's callbacks, which may call failing functions themselves).
        let runs_callbacks = name.starts_with("sda_guarded_run") || name == "sda_probe_batch";
        if status != Status::SDA_OK && name != "sda_classify_error" {
            assert!(
                message != SENTINEL && !message.is_empty(),
                "{name} failed with {} but left no message of its own",
                status.name()
            );
        } else if status == Status::SDA_OK && !runs_callbacks && name != "sda_set_error_message" {
            assert_eq!(
                message, SENTINEL,
                "{name} succeeded but changed the last error"
            );
        }
        status
    }

    fn handle_origin_config(&mut self) -> (*mut sda_config, Origin) {
        let r = self.rng.below(100);
        if r < 65 && !self.configs.is_empty() {
            (*self.rng.pick(&self.configs), Origin::Live)
        } else if r < 75 {
            (std::ptr::null_mut(), Origin::Null)
        } else if r < 85 && !self.dead_configs.is_empty() {
            (*self.rng.pick(&self.dead_configs), Origin::Invalid)
        } else if r < 92 && !self.contexts.is_empty() {
            // A context handle passed as a configuration.
            (self.rng.pick(&self.contexts).cast(), Origin::Invalid)
        } else {
            (self.forged().cast(), Origin::Invalid)
        }
    }

    fn handle_origin_context(&mut self) -> (*mut sda_context, Origin) {
        let r = self.rng.below(100);
        if r < 70 && !self.contexts.is_empty() {
            (*self.rng.pick(&self.contexts), Origin::Live)
        } else if r < 78 {
            (std::ptr::null_mut(), Origin::Null)
        } else if r < 88 && !self.dead_contexts.is_empty() {
            (*self.rng.pick(&self.dead_contexts), Origin::Invalid)
        } else if r < 94 && !self.configs.is_empty() {
            (self.rng.pick(&self.configs).cast(), Origin::Invalid)
        } else {
            (self.forged().cast(), Origin::Invalid)
        }
    }

    /// A pointer-sized value libsda never handed out. Safe to pass: handles are looked up, never
    /// dereferenced.
    fn forged(&mut self) -> *mut c_void {
        let v = match self.rng.below(6) {
            0 => 1,
            1 => usize::MAX,
            2 => 0xdead_beef,
            3 => self.rng.next_u64() as usize | 1,
            4 => (&PROGRESS as *const AtomicU64) as usize,
            _ => 0x5da0_0000 - 16,
        };
        v as *mut c_void
    }

    /// After a call with a handle that was not live: it must have been refused.
    fn check_handle(&self, name: &str, origin: Origin, status: Status) {
        match origin {
            Origin::Live => {}
            Origin::Null => assert_ne!(status, Status::SDA_OK, "{name} accepted a NULL handle"),
            Origin::Invalid => assert!(
                matches!(
                    status,
                    Status::SDA_ERR_INVALID_HANDLE
                        | Status::SDA_ERR_NULL_POINTER
                        | Status::SDA_ERR_INVALID_UTF8
                        | Status::SDA_ERR_INVALID_ARGUMENT
                ),
                "{name} with a freed or forged handle returned {}",
                status.name()
            ),
        }
    }

    fn text(&mut self, useful: &[&str]) -> Text {
        let r = self.rng.below(100);
        let (bytes, utf8) = if r < 8 {
            return Text {
                c: None,
                utf8: true,
            };
        } else if r < 50 {
            (self.rng.pick(useful).as_bytes().to_vec(), true)
        } else if r < 60 {
            let mut s = self.rng.pick(useful).to_string();
            match self.rng.below(4) {
                0 => s = s.to_uppercase(),
                1 => s = format!("  {s}\t"),
                2 => {
                    let t = *self.rng.pick(useful);
                    s.push_str(t)
                }
                _ => s = s.chars().rev().collect(),
            }
            (s.into_bytes(), true)
        } else if r < 70 {
            // Invalid UTF-8: a lone continuation byte, an overlong encoding, a surrogate, a cut sequence.
            let mut b = self.rng.pick(useful).as_bytes().to_vec();
            let bad: &[&[u8]] = &[b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"];
            let at = self.rng.below(b.len() as u64 + 1) as usize;
            let ins = *self.rng.pick(bad);
            b.splice(at..at, ins.iter().copied());
            (b, false)
        } else if r < 78 {
            let n = self.rng.below(64) as usize;
            let b: Vec<u8> = (0..n).map(|_| self.rng.below(255) as u8 + 1).collect();
            let ok = std::str::from_utf8(&b).is_ok();
            (b, ok)
        } else if r < 83 {
            let n = [1usize << 10, 1 << 16, 1 << 20][self.rng.below(3) as usize];
            (vec![b'a'; n], true)
        } else if r < 88 {
            (Vec::new(), true)
        } else if r < 94 {
            (
                "déjà vu — 設定 🎛️ \u{202e}\u{feff}".as_bytes().to_vec(),
                true,
            )
        } else {
            (
                format!(
                    "{}\n{}\r\u{7}",
                    self.rng.pick(useful),
                    self.rng.pick(useful)
                )
                .into_bytes(),
                true,
            )
        };
        let c = cstring(bytes);
        let utf8 = utf8 && std::str::from_utf8(c.as_bytes()).is_ok();
        Text { c: Some(c), utf8 }
    }

    fn number_u32(&mut self) -> u32 {
        let random = self.rng.next_u64();
        *self.rng.pick(&[
            0,
            1,
            2,
            3,
            7,
            64,
            1000,
            65536,
            i32::MAX as u32,
            1 << 31,
            u32::MAX - 1,
            u32::MAX,
            random as u32,
        ])
    }

    fn number_u64(&mut self) -> u64 {
        let random = self.rng.next_u64();
        *self.rng.pick(&[
            0,
            1,
            4096,
            1 << 20,
            1 << 30,
            1 << 40,
            i64::MAX as u64,
            u64::MAX,
            u64::MAX - 1,
            random,
        ])
    }

    fn number_i32(&mut self) -> i32 {
        let random = self.rng.next_u64() as i32;
        *self
            .rng
            .pick(&[0, 1, 2, 3, -1, 16, 17, 100, i32::MIN, i32::MAX, random])
    }

    /// A `struct_size` for a struct of `right` bytes with no room after it: never larger (the
    /// library would read or write past the struct, as the header's rule allows it to).
    fn struct_size(&mut self, right: u32) -> u32 {
        match self.rng.below(10) {
            0 => 0,
            1 => right - 1,
            2 => self.rng.below(4) as u32,
            3 => self.rng.below(u64::from(right) + 1) as u32,
            _ => right,
        }
    }

    /// A `struct_size` that is no older version's prefix (which would take the defaults of the
    /// fields past it: for a workload or probe options, the seeds' workload, real work of seconds).
    fn struct_size_no_prefix(&mut self, right: u32) -> u32 {
        match self.rng.below(10) {
            0 => 0,
            1 => right - 1,
            2 => self.rng.below(4) as u32,
            _ => right,
        }
    }

    /// A `struct_size` for a [`Padded`] struct: up to [`TAIL`] bytes larger (a newer program's).
    fn struct_size_padded(&mut self, right: u32) -> u32 {
        match self.rng.below(6) {
            0 => right + 8,
            1 => right + self.rng.below(TAIL as u64 + 1) as u32,
            _ => self.struct_size(right),
        }
    }

    /// The tail of a padded input struct: mostly zero (accepted), sometimes not (refused).
    fn tail(&mut self) -> [u8; TAIL] {
        let mut tail = [0u8; TAIL];
        if self.rng.chance(1, 4) {
            tail[self.rng.below(TAIL as u64) as usize] = 1 + self.rng.below(255) as u8;
        }
        tail
    }

    /// A boolean field: mostly 0 or 1, sometimes a value a buggy binding might write (refused).
    fn sda_bool(&mut self) -> u32 {
        if self.rng.chance(1, 8) {
            *self.rng.pick(&[2, 255, 256, u32::MAX])
        } else {
            u32::from(self.rng.chance(1, 2))
        }
    }

    /// A capacity and a buffer that really holds it: (buffer, capacity passed). The buffer is filled
    /// with a pattern, so that a write on failure can be seen.
    fn buffer(&mut self) -> (Option<Vec<u8>>, usize) {
        match self.rng.below(8) {
            0 => (None, 0),
            1 => (None, 16), // NULL with a capacity: must be refused, never written.
            2 => (Some(vec![0xAB; 1]), 1),
            3 => (Some(vec![0xAB; 8]), 8),
            4 => (Some(vec![0xAB; 64]), 64),
            _ => (Some(vec![0xAB; 1 << 17]), 1 << 17),
        }
    }

    fn check_buffer(
        &self,
        name: &str,
        status: Status,
        buf: &Option<Vec<u8>>,
        needed: Option<usize>,
    ) {
        match (status, buf) {
            (Status::SDA_OK, Some(b)) => {
                let len = b.iter().position(|&c| c == 0).expect("NUL-terminated");
                if let Some(n) = needed {
                    assert_eq!(
                        n,
                        len + 1,
                        "{name}: *needed disagrees with the text written"
                    );
                }
            }
            (Status::SDA_ERR_BUFFER_TOO_SMALL, Some(b)) => {
                assert!(
                    b.iter().all(|&c| c == 0xAB),
                    "{name}: a buffer that was too small was written"
                );
                if let Some(n) = needed {
                    assert!(
                        n > b.len(),
                        "{name}: *needed {n} fits the {} bytes",
                        b.len()
                    );
                }
            }
            _ => {}
        }
    }

    fn to_string_of(&self, config: *mut sda_config) -> String {
        let mut needed = 0usize;
        let _ = sda_config_to_string(config, std::ptr::null_mut(), 0, &mut needed);
        let mut buf = vec![0u8; needed];
        assert_eq!(
            sda_config_to_string(config, buf.as_mut_ptr().cast(), needed, &mut needed),
            Status::SDA_OK
        );
        CStr::from_bytes_until_nul(&buf)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn random_toml(&mut self) -> Vec<u8> {
        let r = self.rng.below(100);
        if r < 30 {
            // Plausible configurations with random values.
            let mut s = String::new();
            for _ in 0..self.rng.below(6) {
                let section = *self.rng.pick(&[
                    "[general]",
                    "[paths]",
                    "[hardware]",
                    "[environment]",
                    "[[tiers]]",
                    "[unknown]",
                    "[hardware.deeper]",
                ]);
                s.push_str(section);
                s.push('\n');
                for _ in 0..self.rng.below(5) {
                    let key = *self.rng.pick(&[
                        "device",
                        "backend",
                        "strict",
                        "memory_strategy",
                        "memory_fraction",
                        "max_batch_size",
                        "platform_priority",
                        "first_run_complete",
                        "datasets",
                        "models",
                        "PYTORCH_CUDA_ALLOC_CONF",
                        "min_memory_gb",
                        "max_memory_gb",
                        "batch_size",
                        "blocks",
                        "channels",
                        "gradient_checkpointing",
                        "label",
                        "nope",
                    ]);
                    let value = *self.rng.pick(&[
                        "\"cpu\"",
                        "\"cuda:99\"",
                        "\"\"",
                        "true",
                        "-1",
                        "0",
                        "1e308",
                        "nan",
                        "inf",
                        "0.75",
                        "18446744073709551615",
                        "[\"cuda\", \"cpu\"]",
                        "[]",
                        "[1, \"a\"]",
                        "{ a = 1 }",
                        "1979-05-27",
                        "\"balanced\"",
                        "\"custom\"",
                        "'''multi\nline'''",
                    ]);
                    s.push_str(&format!("{key} = {value}\n"));
                }
            }
            s.into_bytes()
        } else if r < 55 {
            // The default file, mutated.
            let mut b = self.default_toml.clone().into_bytes();
            for _ in 0..1 + self.rng.below(8) {
                if b.is_empty() {
                    break;
                }
                let at = self.rng.below(b.len() as u64) as usize;
                match self.rng.below(4) {
                    0 => b[at] = self.rng.below(256) as u8,
                    1 => b.truncate(at),
                    2 => {
                        let tok = self.rng.pick(TOML_TOKENS).as_bytes().to_vec();
                        b.splice(at..at, tok);
                    }
                    _ => {
                        let end = (at + self.rng.below(64) as usize).min(b.len());
                        let dup = b[at..end].to_vec();
                        b.splice(at..at, dup);
                    }
                }
            }
            b
        } else if r < 65 {
            // Deep nesting: arrays, inline tables, dotted keys.
            let depth = *self.rng.pick(&[10usize, 100, 1000, 10_000, 100_000]);
            match self.rng.below(3) {
                0 => format!("a = {}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                1 => format!("a = {}{}", "{b=".repeat(depth), "}".repeat(depth)).into_bytes(),
                _ => format!("{} = 1", vec!["k"; depth].join(".")).into_bytes(),
            }
        } else if r < 75 {
            let n = self.rng.below(512) as usize;
            (0..n).map(|_| self.rng.below(256) as u8).collect()
        } else {
            let n = self.rng.below(40) as usize;
            let mut s = String::new();
            for _ in 0..n {
                let t = *self.rng.pick(TOML_TOKENS);
                s.push_str(t);
            }
            s.into_bytes()
        }
    }

    fn path(&mut self) -> Text {
        let d = self.dir.display().to_string();
        let r = self.rng.below(100);
        let p = if r < 6 {
            return Text {
                c: None,
                utf8: true,
            };
        } else if r < 40 {
            format!("{d}/cfg-{}.toml", self.rng.below(4))
        } else if r < 48 {
            format!("{d}/fifo")
        } else if r < 54 {
            "/dev/zero".to_string()
        } else if r < 58 {
            "/dev/null".to_string()
        } else if r < 64 {
            format!("{d}/huge.toml")
        } else if r < 70 {
            format!("{d}/adir")
        } else if r < 76 {
            format!("{d}/missing/dir/x.toml")
        } else if r < 82 {
            format!("{d}/malformed.toml")
        } else if r < 88 {
            format!("{d}/valid.toml")
        } else if r < 92 {
            String::new()
        } else {
            let mut b = format!("{d}/bad-").into_bytes();
            b.extend_from_slice(b"\xff\xfe.toml");
            return Text {
                c: Some(cstring(b)),
                utf8: false,
            };
        };
        Text {
            c: Some(cstring(p.into_bytes())),
            utf8: true,
        }
    }

    fn guard_options(&mut self) -> Padded<sda_guard_options> {
        let mut o: sda_guard_options = initialised(sda_guard_options_init);
        o.struct_size = self.struct_size_padded(o.struct_size);
        if self.rng.chance(1, 2) {
            o.batch_size = self.number_u32();
        }
        if self.rng.chance(1, 3) {
            o.min_batch = self.number_u32();
        }
        // At most 64 attempts: a host asking for billions of retries of work that always fails has
        // asked for a long run.
        o.max_attempts = self.rng.below(65) as u32;
        o.keep_effective_batch = self.sda_bool();
        if self.rng.chance(1, 2) {
            o.budget_bytes = self.number_u64();
        }
        if self.rng.chance(1, 3) {
            o.margin_bytes = self.number_u64();
        }
        if self.rng.chance(1, 3) {
            o.work_id = self.number_u64();
        }
        Padded {
            value: o,
            tail: self.tail(),
        }
    }

    /// A workload that either finishes at once or fails at once: tiny shapes, or a field so large
    /// that some tensor needs more than the 2 GiB of address space the child has left.
    fn workload(&mut self) -> Padded<sda_workload> {
        let mut w: sda_workload = initialised(sda_workload_init);
        w.struct_size = if self.rng.chance(1, 3) {
            w.struct_size + self.rng.below(TAIL as u64 + 1) as u32
        } else {
            self.struct_size_no_prefix(w.struct_size)
        };
        w.channels = 1 + self.rng.below(2) as u32;
        w.sample_length = 1 + self.rng.below(256) as u32;
        w.out_channels = 1 + self.rng.below(4) as u32;
        w.kernel_size = 1 + self.rng.below(u64::from(w.sample_length) + 4) as u32;
        w.padding = self.rng.below(8) as u32;
        w.with_backward = self.sda_bool();
        if self.rng.chance(1, 4) {
            let huge = *self.rng.pick(&[1u32 << 30, 1 << 31, u32::MAX]);
            match self.rng.below(6) {
                0 => w.channels = huge,
                1 => w.sample_length = huge,
                2 => w.out_channels = huge,
                3 => w.kernel_size = huge,
                4 => w.padding = huge,
                _ => w.kernel_size = 0,
            }
        }
        Padded {
            value: w,
            tail: self.tail(),
        }
    }

    fn workload_batch(&mut self) -> u32 {
        *self.rng.pick(&[0, 1, 2, 3, 7, 16, 1 << 31, u32::MAX])
    }

    fn one_call(&mut self) {
        // Keep the handle pools small.
        if self.configs.len() > 24 {
            let c = self.configs.swap_remove(0);
            self.begin("sda_config_free", "pool trim");
            let s = sda_config_free(c);
            assert_eq!(self.end("sda_config_free", s), Status::SDA_OK);
            self.dead_configs.push(c);
        }
        if self.contexts.len() > 12 {
            let c = self.contexts.swap_remove(0);
            self.begin("sda_context_free", "pool trim");
            let s = sda_context_free(c);
            assert_eq!(self.end("sda_context_free", s), Status::SDA_OK);
            self.dead_contexts.push(c);
        }
        if self.models.len() > 8 {
            let (m, _) = self.models.swap_remove(0);
            self.begin("sda_model_free", "pool trim");
            let s = sda_model_free(m);
            assert_eq!(self.end("sda_model_free", s), Status::SDA_OK);
            self.dead_models.push(m);
        }
        self.dead_configs.truncate(64);
        self.dead_contexts.truncate(64);
        self.dead_models.truncate(64);

        match self.rng.below(60) {
            0 => self.config_new(),
            1 | 2 => self.config_load(),
            3..=5 => self.config_load_str(),
            6 => self.config_save(),
            7..=9 => self.config_get(),
            10..=12 => self.config_set(),
            13 => self.config_to_string(),
            14 => self.config_free(),
            15 | 16 => self.context_new(),
            17 => self.context_free(),
            18..=20 => self.select_device(),
            21 | 22 => self.device_info(),
            23 => self.list_devices(),
            24 => self.memory(),
            25 => self.backend(),
            26 | 27 => self.classify(),
            28 | 29 => self.guarded_run(),
            30 | 31 => self.guarded_run_batched(),
            32 => self.log_callback(),
            33 => self.plan(),
            34 | 35 => self.probe(),
            36 => self.recommend(),
            37 => self.report(),
            38..=40 => self.status_functions(),
            41 => self.validate(),
            42 | 43 => self.run_workload(),
            44 => self.set_error_message(),
            45 => self.inits(),
            46 => {
                self.begin("sda_debug_force_panic", "");
                let s = sda_debug_force_panic();
                assert_eq!(self.end("sda_debug_force_panic", s), Status::SDA_ERR_PANIC);
            }
            47 | 48 => self.model_load(),
            49 => self.model_run(),
            50 => self.model_info(),
            51 => self.model_free(),
            52 => self.guarded_run_model(),
            53 => self.probe_model(),
            _ => self.config_get(),
        }
    }

    fn config_new(&mut self) {
        let mut out: *mut sda_config = 0x1234 as *mut sda_config;
        let null_out = self.rng.chance(1, 10);
        self.begin("sda_config_new", if null_out { "NULL" } else { "&out" });
        let s = sda_config_new(if null_out {
            std::ptr::null_mut()
        } else {
            &mut out
        });
        let s = self.end("sda_config_new", s);
        if null_out {
            assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
        } else if s == Status::SDA_OK {
            self.configs.push(out);
        } else {
            assert_eq!(out as usize, 0x1234, "out written on failure");
        }
    }

    fn config_load(&mut self) {
        let path = self.path();
        let mut out: *mut sda_config = 0x1234 as *mut sda_config;
        let null_out = self.rng.chance(1, 12);
        let shown = path
            .c
            .as_ref()
            .map_or("NULL".into(), |c| c.to_string_lossy().into_owned());
        self.begin("sda_config_load", &shown);
        let started = Instant::now();
        let s = sda_config_load(
            path.ptr(),
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut out
            },
        );
        let s = self.end("sda_config_load", s);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sda_config_load({shown}) took {:?}",
            started.elapsed()
        );
        if s == Status::SDA_OK {
            assert!(!null_out && !path.is_null() && path.utf8);
            self.configs.push(out);
        } else {
            assert_eq!(out as usize, 0x1234, "out written on failure");
            // Arguments are checked in order: the path first, then the out-parameter.
            if path.is_null() {
                assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
            } else if !path.utf8 {
                assert_eq!(s, Status::SDA_ERR_INVALID_UTF8);
            } else if null_out {
                assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
            }
            for special in ["/dev/zero", "fifo", "huge.toml", "adir"] {
                if shown.ends_with(special) && !null_out {
                    assert_eq!(s, Status::SDA_ERR_IO, "{shown}: {}", last_error());
                }
            }
        }
    }

    fn config_load_str(&mut self) {
        let text = if self.rng.chance(1, 12) {
            None
        } else {
            Some(cstring(self.random_toml()))
        };
        let mut out: *mut sda_config = 0x1234 as *mut sda_config;
        let null_out = self.rng.chance(1, 12);
        let shown = text.as_ref().map_or("NULL".into(), |t| {
            let s = t.to_string_lossy();
            format!(
                "{} bytes: {:?}",
                s.len(),
                s.chars().take(120).collect::<String>()
            )
        });
        self.begin("sda_config_load_str", &shown);
        let s = sda_config_load_str(
            text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut out
            },
        );
        let s = self.end("sda_config_load_str", s);
        if s == Status::SDA_OK {
            self.configs.push(out);
        } else {
            assert_eq!(out as usize, 0x1234, "out written on failure");
        }
    }

    fn config_save(&mut self) {
        let (config, origin) = self.handle_origin_config();
        let path = self.path();
        let shown = path
            .c
            .as_ref()
            .map_or("NULL".into(), |c| c.to_string_lossy().into_owned());
        // The file before, to prove that a refused save leaves it alone.
        let before = path
            .c
            .as_ref()
            .and_then(|c| std::fs::metadata(c.to_str().ok()?).ok())
            .filter(|m| m.is_file() && m.len() < (1 << 20))
            .and_then(|_| std::fs::read(path.c.as_ref()?.to_str().ok()?).ok());
        self.begin("sda_config_save", &format!("{origin:?}, {shown}"));
        let s = sda_config_save(config, path.ptr());
        let s = self.end("sda_config_save", s);
        self.check_handle("sda_config_save", origin, s);
        if s != Status::SDA_OK {
            if let (Some(before), Some(p)) = (before, path.c.as_ref()) {
                let after = std::fs::read(p.to_str().unwrap()).unwrap_or_default();
                assert_eq!(before, after, "a failed save changed {shown}");
            }
        } else {
            let p = path.c.as_ref().unwrap().to_str().unwrap();
            let mut loaded = std::ptr::null_mut();
            assert_eq!(
                sda_config_load(path.ptr(), &mut loaded),
                Status::SDA_OK,
                "the saved {p} does not load: {}",
                last_error()
            );
            assert_eq!(sda_config_free(loaded), Status::SDA_OK);
        }
        for special in ["/dev/zero", "/dev/null", "fifo", "adir", "malformed.toml"] {
            if origin == Origin::Live && shown.ends_with(special) {
                assert_ne!(s, Status::SDA_OK, "saved over {shown}");
            }
        }
    }

    fn config_get(&mut self) {
        let (config, origin) = self.handle_origin_config();
        let key = self.text(USEFUL_KEYS);
        let (mut buf, cap) = self.buffer();
        let mut needed = usize::MAX;
        let want_needed = self.rng.chance(4, 5);
        self.begin(
            "sda_config_get",
            &format!("{origin:?}, {:?}, cap {cap}", key.c),
        );
        let s = sda_config_get(
            config,
            key.ptr(),
            buf.as_mut()
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
            cap,
            if want_needed {
                &mut needed
            } else {
                std::ptr::null_mut()
            },
        );
        let s = self.end("sda_config_get", s);
        self.check_handle("sda_config_get", origin, s);
        if origin == Origin::Live && !key.is_null() && !key.utf8 {
            assert_eq!(s, Status::SDA_ERR_INVALID_UTF8);
        }
        self.check_buffer("sda_config_get", s, &buf, want_needed.then_some(needed));
    }

    fn config_set(&mut self) {
        let (config, origin) = self.handle_origin_config();
        let key = self.text(USEFUL_KEYS);
        let value = self.text(USEFUL_VALUES);
        let before = (origin == Origin::Live).then(|| self.to_string_of(config));
        self.begin(
            "sda_config_set",
            &format!("{origin:?}, {:?}, {:?}", key.c, value.c),
        );
        let s = sda_config_set(config, key.ptr(), value.ptr());
        let s = self.end("sda_config_set", s);
        self.check_handle("sda_config_set", origin, s);
        if let Some(before) = before {
            if s != Status::SDA_OK {
                assert_eq!(
                    before,
                    self.to_string_of(config),
                    "a refused set changed the configuration"
                );
            }
        }
    }

    fn config_to_string(&mut self) {
        let (config, origin) = self.handle_origin_config();
        let (mut buf, cap) = self.buffer();
        let mut needed = usize::MAX;
        self.begin("sda_config_to_string", &format!("{origin:?}, cap {cap}"));
        let s = sda_config_to_string(
            config,
            buf.as_mut()
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
            cap,
            &mut needed,
        );
        let s = self.end("sda_config_to_string", s);
        self.check_handle("sda_config_to_string", origin, s);
        self.check_buffer("sda_config_to_string", s, &buf, Some(needed));
        if s == Status::SDA_OK {
            // What a configuration writes, it reads back.
            let text = CStr::from_bytes_until_nul(buf.as_ref().unwrap()).unwrap();
            let mut back = std::ptr::null_mut();
            assert_eq!(
                sda_config_load_str(text.as_ptr(), &mut back),
                Status::SDA_OK,
                "{}",
                last_error()
            );
            assert_eq!(sda_config_free(back), Status::SDA_OK);
        }
    }

    fn config_free(&mut self) {
        let (config, origin) = self.handle_origin_config();
        self.begin("sda_config_free", &format!("{origin:?}"));
        let s = sda_config_free(config);
        let s = self.end("sda_config_free", s);
        match origin {
            Origin::Live => {
                assert_eq!(s, Status::SDA_OK);
                self.configs.retain(|&c| c != config);
                self.dead_configs.push(config);
            }
            Origin::Null => assert_eq!(s, Status::SDA_OK),
            Origin::Invalid => assert_eq!(s, Status::SDA_ERR_INVALID_HANDLE),
        }
    }

    fn context_new(&mut self) {
        let (config, origin) = if self.rng.chance(1, 6) {
            (std::ptr::null_mut(), Origin::Live) // NULL config = defaults: valid
        } else {
            self.handle_origin_config()
        };
        let mut out: *mut sda_context = 0x1234 as *mut sda_context;
        let null_out = self.rng.chance(1, 12);
        self.begin("sda_context_new", &format!("{origin:?}"));
        let s = sda_context_new(
            config,
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut out
            },
        );
        let s = self.end("sda_context_new", s);
        if origin == Origin::Invalid {
            assert_ne!(s, Status::SDA_OK);
        }
        if s == Status::SDA_OK {
            self.contexts.push(out);
        } else {
            assert_eq!(out as usize, 0x1234, "out written on failure");
        }
    }

    fn context_free(&mut self) {
        let (context, origin) = self.handle_origin_context();
        self.begin("sda_context_free", &format!("{origin:?}"));
        let s = sda_context_free(context);
        let s = self.end("sda_context_free", s);
        match origin {
            Origin::Live => {
                assert_eq!(s, Status::SDA_OK);
                self.contexts.retain(|&c| c != context);
                self.dead_contexts.push(context);
            }
            Origin::Null => assert_eq!(s, Status::SDA_OK),
            Origin::Invalid => assert_eq!(s, Status::SDA_ERR_INVALID_HANDLE),
        }
    }

    fn select_device(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let pref = self.text(USEFUL_VALUES);
        let null_out = self.rng.chance(1, 12);
        let mut sel = blank_selection();
        self.begin("sda_select_device", &format!("{origin:?}, {:?}", pref.c));
        let s = sda_select_device(
            context,
            pref.ptr(),
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut sel
            },
        );
        let s = self.end("sda_select_device", s);
        self.check_handle("sda_select_device", origin, s);
        if s == Status::SDA_OK {
            // SAFETY: `sel.device` is a 32-byte array of the local `sel`: zero-filled by
            // blank_selection and, on SDA_OK, written by libsda NUL-terminated and truncated to fit
            // (the field's documentation), so a NUL lies inside the array.
            let device = unsafe { CStr::from_ptr(sel.device.as_ptr()) };
            assert!(!device.to_bytes().is_empty());
        }
    }

    fn device_info(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut d = blank_device_details();
        let null_out = self.rng.chance(1, 12);
        self.begin("sda_device_info", &format!("{origin:?}"));
        let s = sda_device_info(
            context,
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut d
            },
        );
        let s = self.end("sda_device_info", s);
        self.check_handle("sda_device_info", origin, s);
        if s == Status::SDA_OK {
            assert!(d.memory_free <= d.memory_total.max(d.memory_free));
        }
    }

    fn list_devices(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let cap = *self.rng.pick(&[0usize, 1, 2, 8]);
        let mut devices: Vec<sda_device_details> = vec![blank_device_details(); cap];
        let null_array = self.rng.chance(1, 6);
        let mut count = 0usize;
        self.begin("sda_list_devices", &format!("{origin:?}, cap {cap}"));
        let s = sda_list_devices(
            context,
            if null_array {
                std::ptr::null_mut()
            } else {
                devices.as_mut_ptr()
            },
            cap,
            if self.rng.chance(1, 10) {
                std::ptr::null_mut()
            } else {
                &mut count
            },
        );
        let s = self.end("sda_list_devices", s);
        self.check_handle("sda_list_devices", origin, s);
        if s == Status::SDA_OK {
            assert!(count >= 1 && count <= cap);
        }
    }

    fn memory(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut m: sda_memory_figures = initialised(sda_memory_figures_init);
        let which = self.rng.below(3);
        let name = ["sda_memory_info", "sda_clear_cache", "sda_reset_peak"][which as usize];
        self.begin(name, &format!("{origin:?}"));
        let s = match which {
            0 => sda_memory_info(
                context,
                if self.rng.chance(1, 10) {
                    std::ptr::null_mut()
                } else {
                    &mut m
                },
            ),
            1 => sda_clear_cache(context),
            _ => sda_reset_peak(context),
        };
        let s = self.end(name, s);
        self.check_handle(name, origin, s);
    }

    fn backend(&mut self) {
        if self.rng.chance(1, 2) {
            let (context, origin) = self.handle_origin_context();
            self.begin("sda_backend_load", &format!("{origin:?}"));
            let s = sda_backend_load(context);
            let s = self.end("sda_backend_load", s);
            self.check_handle("sda_backend_load", origin, s);
        } else {
            let mut d: sda_backend_details = initialised(sda_backend_details_init);
            let lie = self.rng.chance(1, 5);
            if lie {
                d.struct_size = self.struct_size(d.struct_size);
            }
            let null_out = self.rng.chance(1, 5);
            self.begin("sda_backend_info", "");
            let s = sda_backend_info(if null_out {
                std::ptr::null_mut()
            } else {
                &mut d
            });
            let s = self.end("sda_backend_info", s);
            if null_out {
                assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
            } else if !lie {
                assert_eq!(s, Status::SDA_OK);
            }
        }
    }

    fn classify(&mut self) {
        let text = self.text(CLASSIFY_TEXTS);
        self.begin("sda_classify_error", &format!("{:?}", text.c));
        let s = sda_classify_error(text.ptr());
        let s = self.end("sda_classify_error", s);
        if text.is_null() {
            assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
        } else {
            assert!(matches!(
                s,
                Status::SDA_ERR_OUT_OF_MEMORY | Status::SDA_ERR_TORCH
            ));
            assert_eq!(
                last_error(),
                SENTINEL,
                "a classification changed the last error"
            );
        }
    }

    fn guarded_run(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut options = self.guard_options();
        let use_options = self.rng.chance(3, 4);
        let mut report = self.run_report();
        let use_report = self.rng.chance(3, 4);
        let mut work = Nested::new(self, context);
        let callback: sda::guarded_run::sda_work_callback = match self.rng.below(8) {
            0 => None,
            1..=3 => Some(work_returning),
            _ => Some(work_nested),
        };
        self.begin(
            "sda_guarded_run",
            &format!(
                "{origin:?}, action {}, returns {}, options {:?}",
                work.action, work.code, options.value
            ),
        );
        let s = sda_guarded_run(
            context,
            callback,
            (&mut work as *mut Nested).cast(),
            if use_options {
                &mut options.value
            } else {
                std::ptr::null()
            },
            if use_report {
                &mut report.value
            } else {
                std::ptr::null_mut()
            },
        );
        let s = self.end("sda_guarded_run", s);
        self.check_handle("sda_guarded_run", origin, s);
        work.settle(self);
        report.check_tail("sda_guarded_run");
        let options_readable =
            !use_options || (options.is_plain() && options.value.keep_effective_batch <= 1);
        if use_report
            && s != Status::SDA_OK
            && report.is_plain()
            && origin == Origin::Live
            && callback.is_some()
            && options_readable
        {
            assert_eq!(report.value.status, s, "the report's status is the call's");
        }
        let bad_boolean = options.keep_flag_is_invalid();
        if use_options && (!options.tail_is_zero() || bad_boolean) {
            assert_ne!(
                s,
                Status::SDA_OK,
                "options with a nonzero unknown tail or a bad boolean were accepted"
            );
        }
    }

    fn guarded_run_batched(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut options = self.guard_options();
        let mut report = self.run_report();
        let mut work = Batched {
            fits_up_to: self.number_u32(),
            other: *self.rng.pick(&[0, 11, 12, 99, -3]),
            calls: 0,
        };
        let callback: sda::guarded_run::sda_batch_callback = if self.rng.chance(1, 10) {
            None
        } else {
            Some(batch_work)
        };
        self.begin(
            "sda_guarded_run_batched",
            &format!(
                "{origin:?}, fits up to {}, else {}, options {:?}",
                work.fits_up_to, work.other, options.value
            ),
        );
        let s = sda_guarded_run_batched(
            context,
            callback,
            (&mut work as *mut Batched).cast(),
            if self.rng.chance(4, 5) {
                &mut options.value
            } else {
                std::ptr::null()
            },
            if self.rng.chance(4, 5) {
                &mut report.value
            } else {
                std::ptr::null_mut()
            },
        );
        let s = self.end("sda_guarded_run_batched", s);
        report.check_tail("sda_guarded_run_batched");
        self.check_handle("sda_guarded_run_batched", origin, s);
        assert!(
            work.calls <= 64,
            "{} attempts for max_attempts ≤ 64",
            work.calls
        );
    }

    fn log_callback(&mut self) {
        let cb: sda::log::sda_log_callback = if self.rng.chance(1, 2) {
            None
        } else {
            Some(log_sink)
        };
        self.begin("sda_set_log_callback", &format!("{}", cb.is_some()));
        let s = sda_set_log_callback(cb, std::ptr::null_mut());
        assert_eq!(self.end("sda_set_log_callback", s), Status::SDA_OK);
    }

    fn plan(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let strategy = self.text(&[
            "auto",
            "cpu",
            "single_gpu",
            "multi-gpu",
            "MULTI_GPU",
            "gpu",
            "",
        ]);
        let workers = self.number_u32();
        let worker = self.number_u32();
        let mut plan = initialised(sda_worker_plan_init);
        plan.struct_size = self.struct_size(plan.struct_size);
        let (mut buf, cap) = self.buffer();
        let mut needed = usize::MAX;
        self.begin(
            "sda_plan_workers",
            &format!(
                "{origin:?}, {:?}, {workers}, {worker}, cap {cap}",
                strategy.c
            ),
        );
        let s = sda_plan_workers(
            context,
            strategy.ptr(),
            workers,
            worker,
            if self.rng.chance(1, 10) {
                std::ptr::null_mut()
            } else {
                &mut plan
            },
            buf.as_mut()
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
            cap,
            &mut needed,
        );
        let s = self.end("sda_plan_workers", s);
        self.check_handle("sda_plan_workers", origin, s);
        if buf.is_some() {
            self.check_buffer("sda_plan_workers", s, &buf, Some(needed));
        }
    }

    fn probe(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut o = initialised(sda_probe_options_init);
        o.struct_size = self.struct_size_no_prefix(o.struct_size);
        o.min_batch = *self.rng.pick(&[0, 1, 2, 5, 100, u32::MAX]);
        o.max_batch = *self.rng.pick(&[0, 1, 4, 8, 1000, u32::MAX]);
        o.max_runs = *self.rng.pick(&[0, 1, 3, 8, 32, u32::MAX]);
        o.start_batch = *self.rng.pick(&[0, 0, 0, 1, 3, 9, 1000, u32::MAX]);
        o.budget_bytes = self.number_u64();
        o.margin_bytes = self.number_u64();
        let mut workload = self.workload();
        let _ = &mut workload;
        let mut probe_work = ProbeWork {
            oom_above: self.number_u32(),
            other: *self.rng.pick(&[0, 0, 0, 12, 77]),
            cancel_after: *self.rng.pick(&[0, 1, 3, u32::MAX]),
            progress_calls: 0,
            runs: 0,
        };
        let custom = self.rng.chance(4, 5);
        if custom {
            o.custom_workload = Some(probe_workload);
            o.workload_user_data = (&mut probe_work as *mut ProbeWork).cast();
        } else {
            // The built-in workload only with a tiny shape and a few batches.
            o.max_batch = o.max_batch.min(8);
            o.max_runs = o.max_runs.min(8);
            workload.value.struct_size = std::mem::size_of::<sda_workload>() as u32;
            workload.tail = [0; TAIL];
            o.workload = &workload.value;
        }
        if self.rng.chance(1, 2) {
            o.progress = Some(probe_progress);
            o.progress_user_data = (&mut probe_work as *mut ProbeWork).cast();
        }
        let (save_to, save_origin) = if self.rng.chance(1, 4) {
            self.handle_origin_config()
        } else {
            (std::ptr::null_mut(), Origin::Null)
        };
        o.save_to = save_to;
        let mut result = initialised(sda_probe_result_init);
        result.struct_size = self.struct_size(result.struct_size);
        self.begin(
            "sda_probe_batch",
            &format!(
                "{origin:?}, save_to {save_origin:?}, custom {custom}, min {} max {} runs {} \
                 start {} budget {} margin {}, oom above {}",
                o.min_batch,
                o.max_batch,
                o.max_runs,
                o.start_batch,
                o.budget_bytes,
                o.margin_bytes,
                probe_work.oom_above
            ),
        );
        // NULL options = the defaults: the seeds' workload up to batch 65536 against most of the RAM,
        // seconds to minutes of real work. Only with a handle that is refused first.
        let null_options = origin != Origin::Live && self.rng.chance(1, 3);
        let s = sda_probe_batch(
            context,
            if null_options { std::ptr::null() } else { &o },
            if self.rng.chance(1, 10) {
                std::ptr::null_mut()
            } else {
                &mut result
            },
        );
        let s = self.end("sda_probe_batch", s);
        self.check_handle("sda_probe_batch", origin, s);
        if save_origin == Origin::Invalid && origin == Origin::Live {
            assert_ne!(
                s,
                Status::SDA_OK,
                "a probe saved into a freed configuration"
            );
        }
        if s == Status::SDA_OK {
            assert!(result.recommended_batch <= result.max_batch);
            // A start batch the options declare must have been within the range, else refused.
            let declares_start =
                o.struct_size as usize >= std::mem::offset_of!(sda_probe_options, start_batch) + 4;
            if !null_options && declares_start && o.start_batch != 0 {
                assert!(
                    (o.min_batch.max(1)..=o.max_batch).contains(&o.start_batch),
                    "a start_batch outside min_batch..=max_batch was accepted"
                );
            }
        }
    }

    fn recommend(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let mut r = initialised(sda_recommendation_init);
        r.struct_size = self.struct_size(r.struct_size);
        let params = self.number_u64();
        self.begin("sda_recommend", &format!("{origin:?}, {params}"));
        let s = sda_recommend(
            context,
            params,
            if self.rng.chance(1, 10) {
                std::ptr::null_mut()
            } else {
                &mut r
            },
        );
        let s = self.end("sda_recommend", s);
        self.check_handle("sda_recommend", origin, s);
    }

    fn report(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let verbosity = self.number_i32();
        let (mut buf, cap) = self.buffer();
        let mut needed = usize::MAX;
        let json = self.rng.chance(1, 2);
        let name = if json {
            "sda_report_json"
        } else {
            "sda_report"
        };
        self.begin(
            name,
            &format!("{origin:?}, verbosity {verbosity}, cap {cap}"),
        );
        let f = if json { sda_report_json } else { sda_report };
        let s = f(
            context,
            verbosity,
            buf.as_mut()
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr().cast()),
            cap,
            &mut needed,
        );
        let s = self.end(name, s);
        self.check_handle(name, origin, s);
        self.check_buffer(name, s, &buf, Some(needed));
        if s == Status::SDA_OK && json {
            let text = CStr::from_bytes_until_nul(buf.as_ref().unwrap()).unwrap();
            serde_json::from_str::<serde_json::Value>(text.to_str().unwrap())
                .expect("sda_report_json writes JSON");
        }
    }

    fn status_functions(&mut self) {
        let v = self.number_i32();
        let which = self.rng.below(5);
        let name = [
            "sda_status_str",
            "sda_device_kind_str",
            "sda_severity_str",
            "sda_version",
            "sda_last_error_message",
        ][which as usize];
        // First `begin` (it calls into libsda): the last error's pointer is valid only until then.
        self.begin(name, &v.to_string());
        let p = match which {
            0 => sda_status_str(v),
            1 => sda_device_kind_str(v),
            2 => sda_severity_str(v),
            3 => sda_version(),
            _ => sda_last_error_message(),
        };
        assert!(!p.is_null(), "{name} returned NULL");
        // SAFETY: `p` is non-null (asserted above). The four *_str / version functions return static
        // NUL-terminated literals; sda_last_error_message's text is NUL-terminated and valid until the
        // next libsda call on this thread, and none happens before `text` is last used (`begin`, the
        // one that does, ran before the call).
        let text = unsafe { CStr::from_ptr(p) };
        assert!(
            text.to_str().is_ok(),
            "{name} returned text that is not UTF-8"
        );
    }

    fn set_error_message(&mut self) {
        let text = self.text(CLASSIFY_TEXTS);
        self.begin("sda_set_error_message", &format!("{:?}", text.c));
        let s = sda_set_error_message(text.ptr());
        let s = self.end("sda_set_error_message", s);
        if text.is_null() {
            assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
        } else {
            assert_eq!(s, Status::SDA_OK);
            let expected =
                String::from_utf8_lossy(text.c.as_ref().unwrap().as_bytes()).into_owned();
            assert_eq!(last_error(), expected);
        }
    }

    fn validate(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let cap = *self.rng.pick(&[0usize, 1, 4, 32]);
        let mut problems: Vec<sda_problem> = vec![initialised(sda_problem_init); cap];
        if cap > 0 && self.rng.chance(1, 6) {
            problems[0].struct_size = self.struct_size(problems[0].struct_size);
        }
        let mut count = 0usize;
        let load = self.rng.chance(1, 4);
        self.begin(
            "sda_validate_environment",
            &format!("{origin:?}, cap {cap}, load {load}"),
        );
        let s = sda_validate_environment(
            context,
            load,
            if self.rng.chance(1, 8) {
                std::ptr::null_mut()
            } else {
                problems.as_mut_ptr()
            },
            cap,
            if self.rng.chance(1, 10) {
                std::ptr::null_mut()
            } else {
                &mut count
            },
        );
        let s = self.end("sda_validate_environment", s);
        self.check_handle("sda_validate_environment", origin, s);
    }

    fn run_workload(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let w = self.workload();
        let batch = self.workload_batch();
        let null_workload = self.rng.chance(1, 5);
        // The default workload (NULL) is real work (a second per sample on a busy machine): only
        // batches of 0 or far too many.
        let batch = if null_workload && (1..(1 << 31)).contains(&batch) {
            0
        } else {
            batch
        };
        self.begin(
            "sda_run_workload",
            &format!(
                "{origin:?}, {:?} (null {null_workload}), batch {batch}",
                w.value
            ),
        );
        let s = sda_run_workload(
            context,
            if null_workload {
                std::ptr::null()
            } else {
                &w.value
            },
            batch,
        );
        let s = self.end("sda_run_workload", s);
        self.check_handle("sda_run_workload", origin, s);
        if origin == Origin::Live && batch >= 1 << 31 && s != Status::SDA_ERR_INVALID_ARGUMENT {
            assert_ne!(s, Status::SDA_OK, "{batch} samples ran in 2 GiB");
        }
    }

    /// Writes the model files of the model calls with the project's own torch (before the limit);
    /// without it the model calls meet bad paths only.
    fn write_model_files(&mut self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join(".venv/bin/python");
        let out = std::process::Command::new(&python)
            .arg(root.join("crates/sda-core/tests/model_gen.py"))
            .arg(&self.dir)
            .args(["conv.pt", "fixed.pt"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                for name in ["conv.pt", "fixed.pt"] {
                    self.model_files
                        .push(self.dir.join(name).display().to_string());
                }
            }
            Ok(o) => println!(
                "model files not written: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => println!("model files not written: {} ({e})", python.display()),
        }
    }

    fn handle_origin_model(&mut self) -> (*mut sda_model, Origin) {
        let r = self.rng.below(100);
        if r < 65 && !self.models.is_empty() {
            (self.rng.pick(&self.models).0, Origin::Live)
        } else if r < 75 {
            (std::ptr::null_mut(), Origin::Null)
        } else if r < 87 && !self.dead_models.is_empty() {
            (*self.rng.pick(&self.dead_models), Origin::Invalid)
        } else if r < 93 && !self.contexts.is_empty() {
            // A context handle passed as a model.
            (self.rng.pick(&self.contexts).cast(), Origin::Invalid)
        } else {
            (self.forged().cast(), Origin::Invalid)
        }
    }

    /// A model's path: a model file, a model traced at batch 1, or anything a host may get wrong.
    fn model_path(&mut self) -> Text {
        if !self.model_files.is_empty() && self.rng.chance(1, 2) {
            let p = self.rng.pick(&self.model_files).clone();
            return Text {
                c: Some(cstring(p.into_bytes())),
                utf8: true,
            };
        }
        // Missing files, directories, FIFOs, devices, text, huge files, invalid UTF-8, NULL.
        self.path()
    }

    /// A per-sample shape: conv.pt's `[2, L]` with a small L, or wrong ranks, zeros and sizes far
    /// beyond the child's address space (every run then fails at once).
    fn model_shape(&mut self) -> Vec<u64> {
        match self.rng.below(8) {
            0..=3 => vec![2, 1 + self.rng.below(128)],
            4 => (0..self.rng.below(4)).map(|_| self.rng.below(4)).collect(),
            5 => vec![2, *self.rng.pick(&[1u64 << 30, 1 << 40, u64::MAX])],
            6 => vec![1; 1 + self.rng.below(70) as usize],
            _ => vec![2, 100],
        }
    }

    fn model_load(&mut self) {
        let (context, origin) = self.handle_origin_context();
        let path = self.model_path();
        let shape = self.model_shape();
        let defaults: sda_model_options = initialised(sda_model_options_init);
        let mut o = PaddedModelOptions {
            value: RawModelOptions {
                struct_size: self.struct_size_padded(defaults.struct_size),
                path: path.ptr(),
                input_shape: if self.rng.chance(1, 10) {
                    std::ptr::null()
                } else {
                    shape.as_ptr()
                },
                input_rank: if self.rng.chance(1, 10) {
                    *self.rng.pick(&[0, 3, 65, usize::MAX])
                } else {
                    shape.len()
                },
                dtype: if self.rng.chance(1, 6) {
                    *self.rng.pick(&[3, -1, i32::MAX, i32::MIN])
                } else {
                    self.rng.below(3) as i32
                },
                train: self.sda_bool(),
            },
            tail: self.tail(),
        };
        // A rank larger than the array would make libsda read past it: only when refused anyway.
        if o.value.input_rank > shape.len() && o.value.input_rank <= 64 {
            o.value.input_rank = shape.len();
        }
        let use_options = self.rng.chance(9, 10);
        let null_out = self.rng.chance(1, 10);
        let untouched = 0x5eed_0000 as *mut sda_model;
        let mut model = untouched;
        self.begin(
            "sda_model_load",
            &format!(
                "{origin:?}, {:?}, shape {shape:?}, options {use_options} {:?}",
                path.c, o.value
            ),
        );
        let s = sda_model_load(
            context,
            if use_options {
                (&o.value as *const RawModelOptions).cast::<sda_model_options>()
            } else {
                std::ptr::null()
            },
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut model
            },
        );
        let s = self.end("sda_model_load", s);
        self.check_handle("sda_model_load", origin, s);
        if s == Status::SDA_OK {
            assert!(use_options && !null_out && !path.is_null() && path.utf8);
            // Fields past the declared size are an older program's defaults, never read.
            let declared = o.value.struct_size as usize;
            let covers = |offset: usize| declared >= offset + 4;
            assert!(o.tail_is_zero());
            assert!(!covers(std::mem::offset_of!(RawModelOptions, train)) || o.value.train <= 1);
            assert!(
                !covers(std::mem::offset_of!(RawModelOptions, dtype))
                    || (0..3).contains(&o.value.dtype)
            );
            assert_ne!(
                model, untouched,
                "sda_model_load succeeded but wrote no handle"
            );
            self.models.push((model, context));
        } else {
            assert_eq!(
                model, untouched,
                "sda_model_load failed but wrote *out_model"
            );
        }
        if !use_options || null_out || path.is_null() {
            assert_ne!(s, Status::SDA_OK);
        }
        if !path.utf8 && origin == Origin::Live && use_options && !null_out && o.is_plain() {
            assert!(
                matches!(
                    s,
                    Status::SDA_ERR_INVALID_UTF8 | Status::SDA_ERR_INVALID_ARGUMENT
                ),
                "a path that is not UTF-8 gave {}",
                s.name()
            );
        }
    }

    /// A batch for a model run: mostly small (real, quick work), sometimes far too large.
    fn model_batch(&mut self) -> u32 {
        *self.rng.pick(&[0, 1, 1, 2, 3, 7, 16, 1 << 31, u32::MAX])
    }

    fn model_run(&mut self) {
        let (model, origin) = self.handle_origin_model();
        let batch = self.model_batch();
        self.begin("sda_model_run", &format!("{origin:?}, batch {batch}"));
        let s = sda_model_run(model, batch);
        let s = self.end("sda_model_run", s);
        self.check_handle("sda_model_run", origin, s);
        if batch == 0 {
            assert_ne!(s, Status::SDA_OK, "a model ran a batch of 0");
        }
    }

    fn model_info(&mut self) {
        let (model, origin) = self.handle_origin_model();
        let mut d: Padded<sda_model_details> = Padded {
            value: initialised(sda_model_details_init),
            tail: [CANARY; TAIL],
        };
        d.value.struct_size = self.struct_size_padded(d.value.struct_size);
        let before = d.value.param_bytes;
        let null_out = self.rng.chance(1, 10);
        self.begin(
            "sda_model_info",
            &format!("{origin:?}, null out {null_out}"),
        );
        let s = sda_model_info(
            model,
            if null_out {
                std::ptr::null_mut()
            } else {
                &mut d.value
            },
        );
        let s = self.end("sda_model_info", s);
        self.check_handle("sda_model_info", origin, s);
        d.check_tail("sda_model_info");
        if s != Status::SDA_OK {
            assert_eq!(
                d.value.param_bytes, before,
                "sda_model_info failed but wrote"
            );
        } else if d.is_plain() {
            assert_eq!(
                d.value.resident_bytes,
                d.value.param_bytes + d.value.buffer_bytes
            );
            assert!(d.value.work_id != 0 && d.value.train <= 1);
        }
    }

    fn model_free(&mut self) {
        let (model, origin) = self.handle_origin_model();
        self.begin("sda_model_free", &format!("{origin:?}"));
        let s = sda_model_free(model);
        let s = self.end("sda_model_free", s);
        match origin {
            Origin::Live => {
                assert_eq!(s, Status::SDA_OK);
                self.models.retain(|&(m, _)| m != model);
                self.dead_models.push(model);
            }
            Origin::Null => assert_eq!(s, Status::SDA_OK),
            Origin::Invalid => assert_eq!(s, Status::SDA_ERR_INVALID_HANDLE),
        }
    }

    /// The context to use a model with: mostly the one that loaded it (perhaps freed since).
    fn model_context(&mut self, model: *mut sda_model) -> (*mut sda_context, Origin) {
        let paired = self
            .models
            .iter()
            .find(|&&(m, _)| m == model)
            .map(|&(_, c)| c);
        match paired {
            Some(c) if self.rng.chance(3, 4) => {
                let origin = if self.contexts.contains(&c) {
                    Origin::Live
                } else {
                    Origin::Invalid
                };
                (c, origin)
            }
            _ => self.handle_origin_context(),
        }
    }

    fn guarded_run_model(&mut self) {
        let (model, model_origin) = self.handle_origin_model();
        let (context, origin) = self.model_context(model);
        let mut options = self.guard_options();
        // Quick work only: small batches and budgets (a retry's batch comes from the budget), or a
        // first batch far too large for the child's address space.
        options.value.batch_size = self.model_batch();
        options.value.budget_bytes = *self.rng.pick(&[0u64, 1, 4096, 1 << 20, 16 << 20]);
        options.value.min_batch = *self.rng.pick(&[0, 1, 2, 4]);
        if options.value.budget_bytes == 0 {
            options.value.max_attempts = options.value.max_attempts.min(1);
        }
        let use_options = self.rng.chance(9, 10);
        let mut report = self.run_report();
        let use_report = self.rng.chance(4, 5);
        self.begin(
            "sda_guarded_run_model",
            &format!(
                "context {origin:?}, model {model_origin:?}, options {use_options} {:?}",
                options.value
            ),
        );
        let s = sda_guarded_run_model(
            context,
            model,
            if use_options {
                &options.value
            } else {
                std::ptr::null()
            },
            if use_report {
                &mut report.value
            } else {
                std::ptr::null_mut()
            },
        );
        let s = self.end("sda_guarded_run_model", s);
        self.check_handle("sda_guarded_run_model", origin, s);
        self.check_handle("sda_guarded_run_model", model_origin, s);
        report.check_tail("sda_guarded_run_model");
        if !use_options || options.value.batch_size == 0 {
            assert_ne!(s, Status::SDA_OK);
        }
        let bad_boolean = options.keep_flag_is_invalid();
        if use_options && (!options.tail_is_zero() || bad_boolean) {
            assert_ne!(
                s,
                Status::SDA_OK,
                "options with a bad tail or boolean were accepted"
            );
        }
    }

    /// The probe with a model: small batches and budgets, sometimes with another workload set too
    /// (refused).
    fn probe_model(&mut self) {
        let (model, model_origin) = self.handle_origin_model();
        let (context, origin) = self.model_context(model);
        let mut o = initialised(sda_probe_options_init);
        o.struct_size = self.struct_size_no_prefix(o.struct_size);
        o.min_batch = *self.rng.pick(&[0, 1, 2, 5, u32::MAX]);
        o.max_batch = *self.rng.pick(&[0, 1, 4, 8, 32]);
        o.max_runs = *self.rng.pick(&[0, 1, 3, 8]);
        o.budget_bytes = *self.rng.pick(&[1u64, 4096, 1 << 20, 16 << 20, 64 << 20]);
        o.margin_bytes = self.number_u64();
        o.model = model;
        // A tiny shape: without a model (NULL) the probe runs it.
        let mut workload: sda_workload = initialised(sda_workload_init);
        workload.sample_length = 64;
        workload.kernel_size = 4;
        workload.padding = 0;
        let mut probe_work = ProbeWork {
            oom_above: 4,
            other: 0,
            cancel_after: *self.rng.pick(&[0, 1, 3, u32::MAX]),
            progress_calls: 0,
            runs: 0,
        };
        let both = match self.rng.below(8) {
            0 => {
                o.custom_workload = Some(probe_workload);
                o.workload_user_data = (&mut probe_work as *mut ProbeWork).cast();
                true
            }
            1 => {
                o.workload = &workload;
                true
            }
            _ => false,
        };
        if model_origin == Origin::Null && !both {
            // No model: the host's quick callback, not the seeds' workload (seconds of real work).
            o.custom_workload = Some(probe_workload);
            o.workload_user_data = (&mut probe_work as *mut ProbeWork).cast();
        }
        if self.rng.chance(1, 2) {
            o.progress = Some(probe_progress);
            o.progress_user_data = (&mut probe_work as *mut ProbeWork).cast();
        }
        let mut result = initialised(sda_probe_result_init);
        result.struct_size = self.struct_size(result.struct_size);
        self.begin(
            "sda_probe_batch",
            &format!(
                "model {model_origin:?}, context {origin:?}, also another workload {both}, min {} \
                 max {} runs {} budget {}",
                o.min_batch, o.max_batch, o.max_runs, o.budget_bytes
            ),
        );
        let s = sda_probe_batch(context, &o, &mut result);
        let s = self.end("sda_probe_batch", s);
        self.check_handle("sda_probe_batch", origin, s);
        if model_origin != Origin::Null {
            self.check_handle("sda_probe_batch", model_origin, s);
        }
        if both && model_origin != Origin::Null {
            assert_ne!(
                s,
                Status::SDA_OK,
                "a probe with a model and another workload ran"
            );
        }
        if s == Status::SDA_OK {
            assert!(result.recommended_batch <= result.max_batch);
        }
    }

    fn inits(&mut self) {
        match self.rng.below(14) {
            0 => self.init_one("sda_guard_options_init", sda_guard_options_init),
            1 => self.init_one("sda_run_report_init", sda_run_report_init),
            2 => self.init_one("sda_worker_plan_init", sda_worker_plan_init),
            3 => self.init_one("sda_probe_options_init", sda_probe_options_init),
            4 => self.init_one("sda_probe_result_init", sda_probe_result_init),
            5 => self.init_one("sda_recommendation_init", sda_recommendation_init),
            6 => self.init_one("sda_workload_init", sda_workload_init),
            7 => self.init_one("sda_selection_init", sda_selection_init),
            8 => self.init_one("sda_device_details_init", sda_device_details_init),
            9 => self.init_one("sda_memory_figures_init", sda_memory_figures_init),
            10 => self.init_one("sda_backend_details_init", sda_backend_details_init),
            11 => self.init_one("sda_model_options_init", sda_model_options_init),
            12 => self.init_one("sda_model_details_init", sda_model_details_init),
            _ => self.init_one("sda_problem_init", sda_problem_init),
        }
    }

    /// One init function with a size that may lie (within real memory), or NULL: it writes nothing
    /// when it fails, sets `struct_size` to the size given, zeroes what lies past its own size, and
    /// never writes at or past the size given.
    fn init_one<T: Growable>(
        &mut self,
        name: &'static str,
        init: extern "C" fn(*mut T, usize) -> Status,
    ) {
        let right = std::mem::size_of::<T>();
        let total = right + TAIL;
        let size = match self.rng.below(6) {
            0 => self.rng.below(4) as usize,
            1 => right + self.rng.below(TAIL as u64 + 1) as usize,
            2 => self.rng.below(right as u64) as usize,
            _ => right,
        };
        let null = self.rng.chance(1, 10);
        // u64 words: aligned for every struct; read and written here only as bytes.
        let mut words = vec![u64::from_ne_bytes([CANARY; 8]); total.div_ceil(8)];
        self.begin(name, &format!("size {size}, null {null}"));
        let s = init(
            if null {
                std::ptr::null_mut()
            } else {
                words.as_mut_ptr().cast()
            },
            size,
        );
        let s = self.end(name, s);
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        if null {
            assert_eq!(s, Status::SDA_ERR_NULL_POINTER);
        } else if size < 4 {
            assert_eq!(s, Status::SDA_ERR_INVALID_ARGUMENT);
        } else if size == right {
            assert_eq!(s, Status::SDA_OK);
        }
        if s != Status::SDA_OK {
            assert!(
                bytes.iter().all(|&b| b == CANARY),
                "{name} failed but wrote"
            );
            return;
        }
        assert_eq!(
            &bytes[..4],
            &(size as u32).to_ne_bytes(),
            "{name}: struct_size"
        );
        assert!(
            bytes[size..].iter().all(|&b| b == CANARY),
            "{name} wrote at or past the size it was given ({size})"
        );
        if size > right {
            assert!(
                bytes[right..size].iter().all(|&b| b == 0),
                "{name} did not zero the bytes past its own size"
            );
        }
    }

    /// A run report as its init function leaves it, `struct_size` perhaps lying, with canary bytes
    /// after it.
    fn run_report(&mut self) -> Padded<sda_run_report> {
        let mut r: sda_run_report = initialised(sda_run_report_init);
        r.struct_size = self.struct_size_padded(r.struct_size);
        Padded {
            value: r,
            tail: [CANARY; TAIL],
        }
    }
}

/// Room after a struct, so that a larger `struct_size` (a newer program's) stays in real memory.
const TAIL: usize = 24;

/// What an output struct's tail holds before the call; no call may change it.
const CANARY: u8 = 0xAB;

/// A struct followed by [`TAIL`] bytes: an input struct of a newer program (the tail holds the
/// fields this library does not know), or an output struct with canary bytes after it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Padded<T> {
    value: T,
    tail: [u8; TAIL],
}

impl Padded<sda_guard_options> {
    /// `keep_effective_batch` lies within the declared size and is not a valid sda_bool: the library
    /// must refuse the options.
    fn keep_flag_is_invalid(&self) -> bool {
        let keep = std::mem::offset_of!(sda_guard_options, keep_effective_batch);
        self.declares_u32_at(keep) && self.value.keep_effective_batch > 1
    }
}

impl<T: Growable> Padded<T> {
    fn declared(&self) -> usize {
        // SAFETY: every growable struct starts with `struct_size: u32` at offset 0 (sda::sized's
        // Growable contract); `self.value` is a live, aligned T of at least four bytes.
        unsafe { (&self.value as *const T).cast::<u32>().read() as usize }
    }

    /// The bytes past this library's size that the struct declares are all zero.
    fn tail_is_zero(&self) -> bool {
        let known = std::mem::size_of::<T>();
        let declared = self.declared();
        declared <= known
            || self.tail[..(declared - known).min(TAIL)]
                .iter()
                .all(|&b| b == 0)
    }

    /// The struct declares exactly this library's size.
    fn is_plain(&self) -> bool {
        self.declared() == std::mem::size_of::<T>()
    }

    /// The declared size covers the 4-byte field at `offset`: a field past it belongs to a newer
    /// version than the caller's, so the library reads its default instead of the bytes there.
    fn declares_u32_at(&self, offset: usize) -> bool {
        self.declared() >= offset + 4
    }

    /// An output struct: no byte after it was written.
    fn check_tail(&self, name: &str) {
        assert!(
            self.tail.iter().all(|&b| b == CANARY),
            "{name} wrote past the struct it knows (struct_size {})",
            self.declared()
        );
    }
}

fn last_error() -> String {
    let p = sda_last_error_message();
    assert!(!p.is_null());
    // SAFETY: `p` is non-null (asserted above) and, as sda_last_error_message documents, points to
    // this thread's NUL-terminated message, valid until the next libsda call on this thread; the text
    // is copied into a String before any other call.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .expect("the last error is UTF-8")
        .to_string()
}

/// An `sda_selection` to pass as an out-parameter, as SDA_SELECTION_INIT leaves it.
fn blank_selection() -> sda_selection {
    initialised(sda_selection_init)
}

/// An `sda_device_details` to pass as an out-parameter, as SDA_DEVICE_DETAILS_INIT leaves it.
fn blank_device_details() -> sda_device_details {
    initialised(sda_device_details_init)
}

// ------------------------------------------------------------------------------------------------
// Callbacks.

/// The state of a guarded run's work: what it returns and what it does inside libsda first.
struct Nested {
    code: i32,
    action: u64,
    context: *mut sda_context,
    config: *mut sda_config,
    freed_context: bool,
    freed_config: bool,
    depth: u32,
}

impl Nested {
    fn new(f: &mut Fuzz, context: *mut sda_context) -> Nested {
        Nested {
            code: *f.rng.pick(&[0, 0, 11, 11, 12, 1, 14, 999, -1, i32::MIN]),
            action: f.rng.below(8),
            context,
            config: f.configs.first().copied().unwrap_or(std::ptr::null_mut()),
            freed_context: false,
            freed_config: false,
            depth: 0,
        }
    }

    /// Moves handles the callback freed to the dead lists.
    fn settle(&self, f: &mut Fuzz) {
        if self.freed_context {
            f.contexts.retain(|&c| c != self.context);
            f.dead_contexts.push(self.context);
        }
        if self.freed_config {
            f.configs.retain(|&c| c != self.config);
            f.dead_configs.push(self.config);
        }
    }
}

unsafe extern "C" fn work_returning(user_data: *mut c_void) -> i32 {
    (*(user_data as *mut Nested)).code
}

unsafe extern "C" fn work_nested(user_data: *mut c_void) -> i32 {
    let w = &mut *(user_data as *mut Nested);
    match w.action {
        0 => {
            let mut m: sda_memory_figures = initialised(sda_memory_figures_init);
            let _ = sda_memory_info(w.context, &mut m);
        }
        1 => {
            // Frees the context the guarded run is running on.
            w.freed_context = sda_context_free(w.context) == Status::SDA_OK;
        }
        2 if w.depth < 3 => {
            // A guarded run inside a guarded run.
            w.depth += 1;
            let _ = sda_guarded_run(
                w.context,
                Some(work_nested),
                user_data,
                std::ptr::null(),
                std::ptr::null_mut(),
            );
        }
        3 => {
            let _ = sda_set_error_message(
                c"CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 1 GiB total)".as_ptr(),
            );
            return Status::SDA_ERR_OUT_OF_MEMORY as i32;
        }
        4 => {
            w.freed_config = !w.config.is_null() && sda_config_free(w.config) == Status::SDA_OK;
        }
        5 => {
            let mut sel = blank_selection();
            let _ = sda_select_device(w.context, c"auto".as_ptr(), &mut sel);
        }
        6 => {
            let mut w8: sda_workload = initialised(sda_workload_init);
            w8.sample_length = 32;
            w8.kernel_size = 3;
            return sda_run_workload(w.context, &w8, 2) as i32;
        }
        _ => {}
    }
    w.code
}

struct Batched {
    fits_up_to: u32,
    other: i32,
    calls: u32,
}

unsafe extern "C" fn batch_work(user_data: *mut c_void, batch: u32, _steps: u32) -> i32 {
    let w = &mut *(user_data as *mut Batched);
    w.calls += 1;
    if batch <= w.fits_up_to {
        w.other
    } else {
        Status::SDA_ERR_OUT_OF_MEMORY as i32
    }
}

struct ProbeWork {
    oom_above: u32,
    other: i32,
    cancel_after: u32,
    progress_calls: u32,
    runs: u64,
}

unsafe extern "C" fn probe_workload(user_data: *mut c_void, batch: u32) -> i32 {
    let w = &mut *(user_data as *mut ProbeWork);
    w.runs += 1;
    if batch > w.oom_above {
        Status::SDA_ERR_OUT_OF_MEMORY as i32
    } else {
        w.other
    }
}

unsafe extern "C" fn probe_progress(user_data: *mut c_void, p: *const sda_probe_progress) -> bool {
    let w = &mut *(user_data as *mut ProbeWork);
    assert!(!p.is_null());
    w.progress_calls += 1;
    w.progress_calls < w.cancel_after
}

unsafe extern "C" fn log_sink(
    _user_data: *mut c_void,
    _level: sda_log_level,
    message: *const c_char,
) {
    assert!(!message.is_null());
    let _ = CStr::from_ptr(message).to_bytes().len();
    LOGGED.fetch_add(1, Ordering::Relaxed);
}

/// `sda_model_options` with its `sda_dtype` as the plain `int32_t` a C caller may fill with any
/// value (a Rust enum may not hold one it does not name).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawModelOptions {
    struct_size: u32,
    path: *const c_char,
    input_shape: *const u64,
    input_rank: usize,
    dtype: i32,
    train: u32,
}

/// [`RawModelOptions`] and a newer program's tail.
#[repr(C)]
struct PaddedModelOptions {
    value: RawModelOptions,
    tail: [u8; TAIL],
}

impl PaddedModelOptions {
    fn tail_is_zero(&self) -> bool {
        let known = std::mem::size_of::<sda_model_options>();
        let declared = self.value.struct_size as usize;
        declared <= known
            || self.tail[..(declared - known).min(TAIL)]
                .iter()
                .all(|&b| b == 0)
    }

    fn is_plain(&self) -> bool {
        self.value.struct_size as usize == std::mem::size_of::<sda_model_options>()
    }
}

const _: () =
    assert!(std::mem::size_of::<RawModelOptions>() == std::mem::size_of::<sda_model_options>());
