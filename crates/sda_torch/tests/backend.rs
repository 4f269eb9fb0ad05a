//! The module as the core sees it, on the CPU, without ever loading CUDA.

mod common;

use std::path::Path;

use common::{api, entry, serial, Msg};
use sda_backend_abi::*;

fn stats(kind: i32, index: i32) -> (i32, MemoryStats, String) {
    let mut out = MemoryStats::default();
    let mut msg = Msg::new();
    // SAFETY: `out` is a live, aligned MemoryStats and `msg` a live `Msg` valid for `msg.cap()`
    // bytes; kind and index are plain integers the function checks.
    let rc = unsafe { (api().memory_stats)(kind, index, &mut out, msg.ptr(), msg.cap()) };
    (rc, out, msg.text())
}

fn smoke(kind: i32, index: i32) -> (i32, String) {
    let mut msg = Msg::new();
    // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
    // plain values the function checks (BackendApi's calling contract).
    let rc = unsafe { (api().smoke_test)(kind, index, msg.ptr(), msg.cap()) };
    (rc, msg.text())
}

#[test]
fn entry_hands_out_the_table_only_for_its_own_abi_version() {
    let _s = serial();
    // SAFETY: sda_torch_backend_entry takes a plain integer and may be called at any time.
    let table = unsafe { entry()(ABI_VERSION) };
    assert!(!table.is_null());
    // SAFETY: just checked non-NULL: the entry point returns NULL or the module's static table,
    // which lives as long as the process (`common::library()` never unloads the module).
    let table = unsafe { &*table };
    assert_eq!(table.abi_version, ABI_VERSION);
    assert_eq!(table.size as usize, std::mem::size_of::<BackendApi>());
    // SAFETY: a plain integer, as above; the result is only compared, not dereferenced.
    assert!(unsafe { entry()(ABI_VERSION + 1) }.is_null());
    // SAFETY: as above.
    assert!(unsafe { entry()(0) }.is_null());
    // The same static table every time.
    // SAFETY: as above.
    assert_eq!(unsafe { entry()(ABI_VERSION) }, table as *const BackendApi);
}

#[test]
fn the_module_exports_only_its_entry_point() {
    // `nm` comes with binutils, which the Rust toolchain's linker setup needs anyway; skip if absent.
    let out = match std::process::Command::new("nm")
        .args(["-D", "--defined-only", "--format=just-symbols"])
        .arg(common::module_path())
        .output()
    {
        Ok(out) if out.status.success() => out,
        _ => {
            eprintln!("nm not available: export check skipped");
            return;
        }
    };
    let symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    // The entry point, and the record of the libtorch it was built against that the core reads
    // from the file (sda_backend_abi::BUILT_LIBTORCH_SYMBOL).
    assert_eq!(
        symbols,
        vec![
            "sda_torch_backend_entry".to_string(),
            sda_backend_abi::BUILT_LIBTORCH_SYMBOL.to_string()
        ]
    );
}

#[test]
fn facts_describe_the_built_and_the_mapped_libtorch() {
    let _s = serial();
    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers, no pointer or enum), so
    // all-zero is a valid value.
    let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
    let mut msg = Msg::new();
    // SAFETY: `facts` is a live, aligned BackendFacts and `msg` a live `Msg` valid for `msg.cap()`
    // bytes (BackendApi's calling contract).
    let rc = unsafe { (api().facts)(&mut facts, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());

    // This module's libtorch: 2.13.0 (tch 0.26), or 2.11.0 for crates/sda_torch_2_11 (tch 0.24).
    let expected = if cfg!(sda_libtorch_2_11) {
        "2.11.0"
    } else {
        "2.13.0"
    };
    assert_eq!(read_fixed(&facts.built_libtorch_version), expected);
    let built_dir = read_fixed(&facts.built_libtorch_dir);
    assert!(
        Path::new(&built_dir).join("libtorch_cpu.so").is_file(),
        "built dir {built_dir}"
    );
    let loaded = read_fixed(&facts.loaded_libtorch_path);
    assert!(loaded.ends_with("/libtorch_cpu.so"), "loaded {loaded}");
    // Loaded through the module's rpath, so it is the libtorch it was built against.
    assert_eq!(Path::new(&loaded).parent().unwrap(), Path::new(&built_dir));
    // This machine's wheel is a CUDA build; a CPU-only libtorch would report 0.
    let has_cuda_lib = Path::new(&built_dir).join("libtorch_cuda.so").is_file();
    assert_eq!(facts.cuda_build, u8::from(has_cuda_lib));
    assert_eq!(
        facts.cuda_build, 1,
        "this machine's torch 2.13.0+cu130 wheel has libtorch_cuda.so"
    );
    assert_eq!(facts.cuda_loaded, 0);
    assert_eq!(facts.cuda_device_count, 0);
    assert_eq!(facts.mps_available, 0, "no MPS off macOS");
}

#[test]
fn smoke_test_passes_on_the_cpu() {
    let _s = serial();
    let (rc, text) = smoke(DEVICE_CPU, 0);
    assert_eq!(rc, STATUS_OK, "{text}");
}

#[test]
fn cpu_counting_allocator_sees_the_smoke_tests_tensors() {
    let _s = serial();
    // Warm up once so that any lazily created, long-lived libtorch state is already in the baseline.
    assert_eq!(smoke(DEVICE_CPU, 0).0, STATUS_OK);

    let mut msg = Msg::new();
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().reset_peak)(DEVICE_CPU, 0, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
    let (rc, before, text) = stats(DEVICE_CPU, 0);
    assert_eq!(rc, STATUS_OK, "{text}");
    assert_eq!(
        before.peak_allocated, before.allocated,
        "reset_peak starts at the current value"
    );

    assert_eq!(smoke(DEVICE_CPU, 0).0, STATUS_OK);
    let (rc, after, text) = stats(DEVICE_CPU, 0);
    assert_eq!(rc, STATUS_OK, "{text}");
    // Two 32×32 f32 inputs alone are 8 KiB.
    assert!(
        after.peak_allocated >= before.allocated + 2 * 32 * 32 * 4,
        "peak {} vs baseline {}",
        after.peak_allocated,
        before.allocated
    );
    assert_eq!(
        after.allocated, before.allocated,
        "every smoke-test tensor is freed"
    );
    assert_eq!(
        after.reserved, after.allocated,
        "the CPU allocator does not cache"
    );
    assert_eq!(after.peak_reserved, after.peak_allocated);
    assert_eq!(
        (after.free, after.total),
        (0, 0),
        "the core fills CPU free/total from the host"
    );

    // empty_cache is a no-op on the CPU; reset_peak brings the peak back down.
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().empty_cache)(DEVICE_CPU, 0, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().reset_peak)(DEVICE_CPU, 0, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
    let (_, reset, _) = stats(DEVICE_CPU, 0);
    assert_eq!(reset.peak_allocated, reset.allocated);
}

#[test]
fn cuda_calls_without_load_cuda_are_unavailable_and_do_not_abort() {
    let _s = serial();
    let (rc, text) = smoke(DEVICE_CUDA, 0);
    assert_eq!(rc, STATUS_UNAVAILABLE);
    assert!(text.contains("load_cuda"), "{text}");

    let (rc, _, text) = stats(DEVICE_CUDA, 0);
    assert_eq!(rc, STATUS_UNAVAILABLE);
    assert!(!text.is_empty());

    let mut msg = Msg::new();
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().empty_cache)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) },
        STATUS_UNAVAILABLE
    );
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().reset_peak)(DEVICE_CUDA, 0, msg.ptr(), msg.cap()) },
        STATUS_UNAVAILABLE
    );
    assert_eq!(
        // SAFETY: `msg` is a live `Msg`, valid for `msg.cap()` bytes of writes; the other arguments are
        // plain values the function checks (BackendApi's calling contract).
        unsafe { (api().set_memory_fraction)(DEVICE_CUDA, 0, 0.5, msg.ptr(), msg.cap()) },
        STATUS_UNAVAILABLE
    );
    // A huge index is refused the same way, before libtorch could see it.
    assert_eq!(smoke(DEVICE_CUDA, 1000).0, STATUS_UNAVAILABLE);

    // Nothing above loaded CUDA.
    // SAFETY: BackendFacts is plain data (`c_char` arrays and integers, no pointer or enum), so
    // all-zero is a valid value.
    let mut facts: BackendFacts = unsafe { std::mem::zeroed() };
    assert_eq!(
        // SAFETY: `facts` is a live, aligned BackendFacts and `msg` a live `Msg` valid for `msg.cap()`
        // bytes (BackendApi's calling contract).
        unsafe { (api().facts)(&mut facts, msg.ptr(), msg.cap()) },
        STATUS_OK
    );
    assert_eq!(facts.cuda_loaded, 0);
}

#[test]
fn mps_is_unavailable_off_macos() {
    let _s = serial();
    let (rc, text) = smoke(DEVICE_MPS, 0);
    assert_eq!(rc, STATUS_UNAVAILABLE, "{text}");
    assert_eq!(stats(DEVICE_MPS, 0).0, STATUS_UNAVAILABLE);
}

#[test]
fn memory_fraction_is_validated_and_unavailable_on_the_cpu() {
    let _s = serial();
    let mut msg = Msg::new();
    // SAFETY: each call borrows a live `Msg`, valid for `msg.cap()` bytes for the whole call;
    // kind and fraction are plain values the function checks.
    let set = |kind, fraction, msg: &mut Msg| unsafe {
        (api().set_memory_fraction)(kind, 0, fraction, msg.ptr(), msg.cap())
    };
    assert_eq!(set(DEVICE_CPU, 0.5, &mut msg), STATUS_UNAVAILABLE);
    assert!(!msg.text().is_empty());
    for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let mut msg = Msg::new();
        assert_eq!(
            set(DEVICE_CPU, bad, &mut msg),
            STATUS_INVALID_ARGUMENT,
            "{bad}"
        );
        assert!(msg.text().contains("fraction"), "{}", msg.text());
        assert_eq!(
            set(DEVICE_CUDA, bad, &mut msg),
            STATUS_INVALID_ARGUMENT,
            "{bad}"
        );
    }
}

#[test]
fn bad_arguments_are_invalid_argument() {
    let _s = serial();
    let mut msg = Msg::new();
    assert_eq!(smoke(DEVICE_CPU, -1).0, STATUS_INVALID_ARGUMENT);
    assert_eq!(smoke(42, 0).0, STATUS_INVALID_ARGUMENT);
    assert_eq!(smoke(DEVICE_CPU, 1).0, STATUS_UNAVAILABLE);
    // SAFETY: a NULL `out` is allowed by the calling contract (it is answered with
    // STATUS_INVALID_ARGUMENT); `msg` is a live `Msg` valid for `msg.cap()` bytes.
    let rc =
        unsafe { (api().memory_stats)(DEVICE_CPU, 0, std::ptr::null_mut(), msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_INVALID_ARGUMENT);
    // SAFETY: as above, for `facts`' NULL `out`.
    let rc = unsafe { (api().facts)(std::ptr::null_mut(), msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_INVALID_ARGUMENT);
    // A NULL or tiny error buffer is fine.
    assert_eq!(
        // SAFETY: a NULL error buffer with a capacity of 0 is allowed by the calling contract.
        unsafe { (api().smoke_test)(42, 0, std::ptr::null_mut(), 0) },
        STATUS_INVALID_ARGUMENT
    );
    let mut tiny = [0 as std::os::raw::c_char; 4];
    assert_eq!(
        // SAFETY: `tiny` is a live 4-byte local, the capacity passed.
        unsafe { (api().smoke_test)(42, 0, tiny.as_mut_ptr(), tiny.len()) },
        STATUS_INVALID_ARGUMENT
    );
    assert_eq!(read_fixed(&tiny).len(), 3);
}
