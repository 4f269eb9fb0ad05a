//! Issue 7, item 6: broken installations of the torch backend.
//!
//! Each case points a child process at a broken backend (through `SDA_BACKEND`, or the config key
//! `hardware.backend`) and checks, through the C ABI, that loading it is `SDA_ERR_BACKEND_UNAVAILABLE`
//! with a message that names the file and says what to do, that asking again gives the same answer,
//! and that everything that needs no torch keeps working: configuration, selecting the CPU (and
//! `auto`), device and memory information, listing devices, guarded runs (unmeasured), reports and
//! validation (which lists the problem). The child must also exit cleanly: a backend that was opened
//! and refused must not crash the process later.
//!
//! The cases: the module missing; truncated to half its size; a shared object that is not a backend;
//! a backend of another ABI version (a module whose entry point refuses version 1, and one that hands
//! out a table of another version and size); a backend that resolves a libtorch of another version
//! than it was built against (the real libraries under a `version.py` that says 2.9.1) and one that
//! resolves an incompatible `libtorch_cpu.so` (a stand-in without libtorch's symbols), both named by
//! `SDA_LIBTORCH` (and `LD_LIBRARY_PATH`); a truncated `libtorch_cpu.so` named the same way; and
//! `SDA_LIBTORCH` naming a directory that does not exist.

mod reliability_support;

use reliability_support::{self as rs};
use sda::backend::{sda_backend_details, sda_backend_info, sda_backend_load};
use sda::config::{
    sda_config_free, sda_config_get, sda_config_new, sda_config_save, sda_config_set,
};
use sda::context::{sda_context_free, sda_context_new};
use sda::device::{
    sda_device_details, sda_device_info, sda_list_devices, sda_select_device, sda_selection,
};
use sda::guarded_run::{sda_guarded_run, sda_run_report_init};
use sda::memory::{sda_memory_figures, sda_memory_info};
use sda::report::sda_report;
use sda::status::sda_last_error_message;
use sda::status::Status;
use sda::validate::{sda_problem, sda_validate_environment};
use sda::workload::sda_run_workload;
use sda_testkit::ChildRun;
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TEST: &str = "every_broken_install_is_backend_unavailable_with_a_fix_and_the_core_works";

/// Copies a C string from libsda: only for sda_last_error_message() and the NUL-terminated c_char
/// fields of the result structs below.
fn cstr(p: *const std::os::raw::c_char) -> String {
    // SAFETY: every caller passes either sda_last_error_message(), which is never NULL and stays valid
    // until the next libsda call on this thread (none happens before the copy here), or a c_char
    // array field of a local result struct that was zero-filled and then written by libsda
    // NUL-terminated (truncated to fit); both end in a NUL and outlive this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

unsafe extern "C" fn ok_work(_: *mut c_void) -> i32 {
    0
}

/// The child: everything a host does when the backend is broken.
fn child() {
    let mut config = std::ptr::null_mut();
    assert_eq!(sda_config_new(&mut config), Status::SDA_OK);
    if let Ok(path) = std::env::var("SDA_BROKEN_CONFIG_BACKEND") {
        let p = CString::new(path).unwrap();
        assert_eq!(
            sda_config_set(config, c"hardware.backend".as_ptr(), p.as_ptr()),
            Status::SDA_OK
        );
    }
    let mut ctx = std::ptr::null_mut();
    assert_eq!(sda_context_new(config, &mut ctx), Status::SDA_OK);

    // The load fails with a message, twice (failures are not cached, and not different).
    let first = sda_backend_load(ctx);
    let message = cstr(sda_last_error_message());
    println!("MESSAGE {}", message.replace('\n', " "));
    assert_eq!(first, Status::SDA_ERR_BACKEND_UNAVAILABLE, "{message}");
    assert_eq!(sda_backend_load(ctx), Status::SDA_ERR_BACKEND_UNAVAILABLE);
    let mut details: sda_backend_details =
        sda::sized::initialised(sda::backend::sda_backend_details_init);
    assert_eq!(sda_backend_info(&mut details), Status::SDA_OK);
    assert_eq!(details.loaded, 0);

    // Torch work says why it cannot run.
    assert_eq!(
        sda_run_workload(ctx, std::ptr::null(), 1),
        Status::SDA_ERR_BACKEND_UNAVAILABLE
    );

    // The core keeps working.
    let mut sel: sda_selection = sda::sized::initialised(sda::device::sda_selection_init);
    assert_eq!(
        sda_select_device(ctx, c"cpu".as_ptr(), &mut sel),
        Status::SDA_OK
    );
    assert_eq!(cstr(sel.device.as_ptr()), "cpu");
    let mut d: sda_device_details = sda::sized::initialised(sda::device::sda_device_details_init);
    assert_eq!(sda_device_info(ctx, &mut d), Status::SDA_OK);
    assert!(d.memory_total > 0);
    let mut m: sda_memory_figures = sda::sized::initialised(sda::memory::sda_memory_figures_init);
    assert_eq!(sda_memory_info(ctx, &mut m), Status::SDA_OK);
    assert!(m.total > 0 && m.budget > 0);
    let mut devices: [sda_device_details; 8] =
        [sda::sized::initialised(sda::device::sda_device_details_init); 8];
    let mut count = 0;
    assert_eq!(
        sda_list_devices(ctx, devices.as_mut_ptr(), 8, &mut count),
        Status::SDA_OK
    );
    assert!(count >= 1);
    let mut report = sda::sized::initialised(sda_run_report_init);
    assert_eq!(
        sda_guarded_run(
            ctx,
            Some(ok_work),
            std::ptr::null_mut(),
            std::ptr::null(),
            &mut report
        ),
        Status::SDA_OK
    );
    assert_eq!(report.measured, 0, "no backend, nothing measured");
    assert_eq!(
        sda_config_set(config, c"hardware.max_batch_size".as_ptr(), c"64".as_ptr()),
        Status::SDA_OK
    );
    let mut buf = [0u8; 64];
    let mut needed = 0;
    assert_eq!(
        sda_config_get(
            config,
            c"hardware.max_batch_size".as_ptr(),
            buf.as_mut_ptr().cast(),
            64,
            &mut needed
        ),
        Status::SDA_OK
    );
    let dir = tempfile::tempdir().unwrap();
    let saved = CString::new(dir.path().join("sda.toml").display().to_string()).unwrap();
    assert_eq!(sda_config_save(config, saved.as_ptr()), Status::SDA_OK);
    let mut text = vec![0u8; 1 << 16];
    assert_eq!(
        sda_report(ctx, 1, text.as_mut_ptr().cast(), text.len(), &mut needed),
        Status::SDA_OK
    );
    // Validation lists the broken backend as an error, with its fix.
    let mut problems: Vec<sda_problem> =
        vec![sda::sized::initialised(sda::validate::sda_problem_init); 32];
    let mut n = 0;
    assert_eq!(
        sda_validate_environment(ctx, true, problems.as_mut_ptr(), 32, &mut n),
        Status::SDA_OK
    );
    let backend_problem = problems[..n]
        .iter()
        .find(|p| {
            cstr(p.code.as_ptr()).starts_with("backend")
                || cstr(p.code.as_ptr()).contains("libtorch")
        })
        .map(|p| {
            format!(
                "{}: {} — {}",
                cstr(p.code.as_ptr()),
                cstr(p.message.as_ptr()),
                cstr(p.fix.as_ptr())
            )
        });
    println!(
        "PROBLEM {}",
        backend_problem
            .clone()
            .unwrap_or_default()
            .replace('\n', " ")
    );
    assert!(
        backend_problem.is_some(),
        "validation did not list the broken backend"
    );
    // `auto` still chooses a device (the CPU here; on a GPU machine it falls back and says why).
    assert_eq!(
        sda_select_device(ctx, c"auto".as_ptr(), &mut sel),
        Status::SDA_OK
    );

    assert_eq!(sda_context_free(ctx), Status::SDA_OK);
    assert_eq!(sda_config_free(config), Status::SDA_OK);
    println!("RESULT core=ok");
}

struct Case {
    name: &'static str,
    /// `SDA_BACKEND`, or with `via_config` the config key `hardware.backend`.
    module: PathBuf,
    via_config: bool,
    ld_library_path: Option<PathBuf>,
    /// Words the message must contain (besides a fix).
    expect: Vec<String>,
}

/// A copy of the real torch library directory made of symbolic links, with `version.py` one level up
/// saying `version`, and optionally `libtorch_cpu.so` replaced by `replacement`.
fn fake_torch(root: &Path, version: &str, replacement: Option<&Path>) -> PathBuf {
    let real_lib = rs::backend_module();
    // The directory the module was built against: its libtorch_cpu.so's directory, from the venv.
    let real = torch_lib_dir(&real_lib);
    let lib = root.join("torch/lib");
    std::fs::create_dir_all(&lib).unwrap();
    // libtorch finds its own dependencies (a wheel's nvidia-* libraries) through `$ORIGIN/../..`:
    // the fake tree mirrors the real one's neighbours.
    let real_torch = real.parent().unwrap();
    if let Some(site) = real_torch.parent() {
        for entry in std::fs::read_dir(site).unwrap().flatten() {
            if entry.file_name() != "torch" {
                std::os::unix::fs::symlink(entry.path(), root.join(entry.file_name())).unwrap();
            }
        }
    }
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "libtorch_cpu.so" {
            if replacement.is_none() {
                // The backend reports the canonical path of the libtorch it mapped, and reads the
                // version beside it: a symbolic link would lead back to the real tree. A hard link
                // (or, across file systems, a copy) is a libtorch of its own here.
                let to = lib.join(&name);
                if std::fs::hard_link(entry.path(), &to).is_err() {
                    std::fs::copy(entry.path(), &to).unwrap();
                }
            }
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), lib.join(&name)).unwrap();
    }
    if let Some(r) = replacement {
        std::fs::copy(r, lib.join("libtorch_cpu.so")).unwrap();
    }
    std::fs::write(
        root.join("torch/version.py"),
        format!("__version__ = '{version}+cpu'\ncuda: Optional[str] = None\n"),
    )
    .unwrap();
    lib
}

/// The module's RUNPATH (the libtorch `lib/` directory it was built against).
fn torch_lib_dir(module: &Path) -> PathBuf {
    let bytes = std::fs::read(module).unwrap();
    let (offset, len) = elf_runpath(&bytes).expect("the backend module has a RUNPATH");
    let text = String::from_utf8_lossy(&bytes[offset..offset + len]).into_owned();
    PathBuf::from(text.split(':').next().unwrap())
}

fn u16_at(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes(b[o..o + 2].try_into().unwrap()))
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// File offset and length of the DT_RUNPATH (or DT_RPATH) string of a 64-bit little-endian ELF file.
/// Twenty lines of ELF instead of a patchelf dependency.
fn elf_runpath(b: &[u8]) -> Option<(usize, usize)> {
    if b.get(..4)? != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_at(b, 0x20), u16_at(b, 0x36), u16_at(b, 0x38));
    let phdr = |i: u64| (phoff + i * phentsize) as usize;
    let segments: Vec<(u64, u64, u64, u64)> = (0..phnum)
        .map(|i| {
            let p = phdr(i);
            (
                u32_at(b, p),
                u64_at(b, p + 8),
                u64_at(b, p + 16),
                u64_at(b, p + 32),
            )
        })
        .collect(); // (type, offset, vaddr, filesz)
    let &(_, dyn_off, _, dyn_size) = segments.iter().find(|s| s.0 == 2)?; // PT_DYNAMIC
    let (mut strtab, mut runpath) = (None, None);
    for i in 0..dyn_size / 16 {
        let e = (dyn_off + i * 16) as usize;
        match u64_at(b, e) {
            5 => strtab = Some(u64_at(b, e + 8)), // DT_STRTAB
            29 | 15 => runpath = runpath.or(Some(u64_at(b, e + 8))), // DT_RUNPATH, DT_RPATH
            0 => break,
            _ => {}
        }
    }
    let (strtab, runpath) = (strtab?, runpath?);
    let load = segments
        .iter()
        .find(|s| s.0 == 1 && s.2 <= strtab && strtab < s.2 + s.3)?; // PT_LOAD holding it
    let start = (strtab - load.2 + load.1 + runpath) as usize;
    let len = b[start..].iter().position(|&c| c == 0)?;
    Some((start, len))
}

/// End of the loadable segments' bytes in a 64-bit ELF file.
fn load_extent(b: &[u8]) -> u64 {
    let (phoff, phentsize, phnum) = (u64_at(b, 0x20), u16_at(b, 0x36), u16_at(b, 0x38));
    (0..phnum)
        .map(|i| (phoff + i * phentsize) as usize)
        .filter(|&p| u32_at(b, p) == 1)
        .map(|p| u64_at(b, p + 8) + u64_at(b, p + 32))
        .max()
        .unwrap()
}

fn cases(dir: &Path) -> Vec<Case> {
    let real = rs::backend_module();
    let module_str = |p: &Path| p.display().to_string();
    let mut out = Vec::new();

    let missing = dir.join("missing/libsda_torch.so");
    out.push(Case {
        name: "module missing (SDA_BACKEND)",
        module: missing.clone(),
        via_config: false,
        ld_library_path: None,
        expect: vec![module_str(&missing), "not found".into()],
    });
    out.push(Case {
        name: "module missing (config hardware.backend)",
        module: missing.clone(),
        via_config: true,
        ld_library_path: None,
        expect: vec![module_str(&missing), "not found".into()],
    });

    // Cut to half of its loadable part: half of a debug build's file is only debug information,
    // which the loader never reads.
    let truncated = dir.join("truncated/libsda_torch.so");
    std::fs::create_dir_all(truncated.parent().unwrap()).unwrap();
    let bytes = std::fs::read(&real).unwrap();
    let half = (load_extent(&bytes) / 2) as usize;
    std::fs::write(&truncated, &bytes[..half]).unwrap();
    out.push(Case {
        name: "module truncated to half (of its loadable segments)",
        module: truncated.clone(),
        via_config: false,
        ld_library_path: None,
        expect: vec![
            module_str(&truncated),
            "damaged".into(),
            "Reinstall libsda".into(),
        ],
    });

    // libtorch_cpu.so cut short (an interrupted pip install), found first through LD_LIBRARY_PATH.
    let cut_torch = dir.join("cut-torch/libtorch_cpu.so");
    std::fs::create_dir_all(cut_torch.parent().unwrap()).unwrap();
    {
        use std::io::Read;
        let real_torch = torch_lib_dir(&real).join("libtorch_cpu.so");
        let mut head = vec![0u8; 1 << 20];
        std::fs::File::open(&real_torch)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        std::fs::write(&cut_torch, &head).unwrap();
    }
    let cut_dir = fake_torch(&dir.join("torch-cut"), "2.13.0", Some(&cut_torch));
    out.push(Case {
        name: "libtorch_cpu.so truncated (an interrupted install)",
        module: real.clone(),
        via_config: false,
        ld_library_path: Some(cut_dir.clone()),
        expect: vec![
            cut_dir.join("libtorch_cpu.so").display().to_string(),
            "damaged".into(),
        ],
    });

    let not_backend = dir.join("other/libsda_torch.so");
    std::fs::create_dir_all(not_backend.parent().unwrap()).unwrap();
    rs::compile_shared_object("int not_a_backend = 1;\n", &not_backend, &[]);
    out.push(Case {
        name: "a shared object that is not a backend",
        module: not_backend.clone(),
        via_config: false,
        ld_library_path: None,
        expect: vec![
            module_str(&not_backend),
            "not a libsda torch backend".into(),
        ],
    });

    let refuses = dir.join("abi-refuses/libsda_torch.so");
    std::fs::create_dir_all(refuses.parent().unwrap()).unwrap();
    rs::compile_shared_object(
        "#include <stdint.h>\n#include <stddef.h>\n\
         const void *sda_torch_backend_entry(uint32_t v) { (void)v; return NULL; }\n",
        &refuses,
        &[],
    );
    out.push(Case {
        name: "backend of another ABI version (entry refuses version 1)",
        module: refuses.clone(),
        via_config: false,
        ld_library_path: None,
        expect: vec![module_str(&refuses), "ABI version".into()],
    });

    let other_table = dir.join("abi-table/libsda_torch.so");
    std::fs::create_dir_all(other_table.parent().unwrap()).unwrap();
    rs::compile_shared_object(
        "#include <stdint.h>\n\
         static const struct { uint32_t abi_version, size; void *fns[16]; } table = { 999, 24, {0} };\n\
         const void *sda_torch_backend_entry(uint32_t v) { (void)v; return &table; }\n",
        &other_table,
        &[],
    );
    out.push(Case {
        name: "backend of another ABI version (table version 999)",
        module: other_table.clone(),
        via_config: false,
        ld_library_path: None,
        expect: vec![module_str(&other_table), "table version 999".into()],
    });

    let other_version = fake_torch(&dir.join("torch-2.9.1"), "2.9.1", None);
    out.push(Case {
        name: "resolves a libtorch of another version (2.9.1)",
        module: real.clone(),
        via_config: false,
        ld_library_path: Some(other_version.clone()),
        expect: vec!["2.9.1".into(), other_version.display().to_string()],
    });

    let stand_in = dir.join("stand-in/libtorch_cpu.so");
    std::fs::create_dir_all(stand_in.parent().unwrap()).unwrap();
    rs::compile_shared_object(
        "int libtorch_stand_in = 1;\n",
        &stand_in,
        &["-Wl,-soname,libtorch_cpu.so"],
    );
    let incompatible = fake_torch(&dir.join("torch-incompatible"), "2.13.0", Some(&stand_in));
    out.push(Case {
        name: "resolves an incompatible libtorch_cpu.so (symbols missing)",
        module: real.clone(),
        via_config: false,
        ld_library_path: Some(incompatible),
        expect: vec![module_str(&real), "undefined symbol".into()],
    });

    let gone = dir.join("libtorch-removed/lib");
    out.push(Case {
        name: "libtorch directory removed (SDA_LIBTORCH names a missing directory)",
        module: real.clone(),
        via_config: false,
        ld_library_path: Some(gone.clone()),
        expect: vec!["SDA_LIBTORCH".into(), gone.display().to_string()],
    });
    out
}

#[test]
fn every_broken_install_is_backend_unavailable_with_a_fix_and_the_core_works() {
    if std::env::var_os("SDA_BROKEN_CHILD").is_some() {
        child();
        return;
    }
    // Inside the build directory: on the file system of the checkout (and of its .venv), so that the
    // fake libtorch trees can hard-link the real libtorch instead of copying half a gigabyte.
    let dir = tempfile::tempdir_in(rs::profile_dir()).unwrap();
    let cases = cases(dir.path());
    let mut failures = Vec::new();
    let mut names = Vec::new();
    for case in &cases {
        let mut run = ChildRun::test(TEST, "SDA_BROKEN_CHILD");
        run.env_remove("LD_LIBRARY_PATH")
            .env_remove("SDA_BACKEND")
            .deadline(Duration::from_secs(180));
        if case.via_config {
            run.env("SDA_BROKEN_CONFIG_BACKEND", &case.module);
        } else {
            run.env("SDA_BACKEND", &case.module);
        }
        if let Some(p) = &case.ld_library_path {
            // The host points libsda at that libtorch (and its loader too).
            run.env("LD_LIBRARY_PATH", p);
            run.env("SDA_LIBTORCH", p);
        }
        let out = run.run();
        let message = out
            .stdout
            .lines()
            .find_map(|l| l.split_once("MESSAGE ").map(|(_, m)| m))
            .unwrap_or("")
            .to_string();
        let problem = out
            .stdout
            .lines()
            .find_map(|l| l.split_once("PROBLEM ").map(|(_, m)| m))
            .unwrap_or("")
            .to_string();
        println!(
            "{}:\n  message: {message}\n  validate: {problem}",
            case.name
        );
        if !out.success() || out.field("core").as_deref() != Some("ok") {
            failures.push(format!("{}: {}", case.name, out.describe()));
            continue;
        }
        let mut missing: Vec<&str> = case
            .expect
            .iter()
            .map(String::as_str)
            .filter(|w| !message.contains(w))
            .collect();
        if !["install", "reinstall", "rebuild", "point SDA_BACKEND"]
            .iter()
            .any(|fix| message.contains(fix))
        {
            missing.push("a fix (install / reinstall / rebuild / point SDA_BACKEND)");
        }
        if !missing.is_empty() {
            failures.push(format!(
                "{}: the message lacks {missing:?}: {message}",
                case.name
            ));
        }
        names.push(case.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    rs::record(
        "6. Broken installs",
        &format!(
            "child processes loading a broken backend through SDA_BACKEND or hardware.backend: {}",
            names.join("; ")
        ),
        &format!("{} cases", cases.len()),
        "each: SDA_ERR_BACKEND_UNAVAILABLE (twice) naming the file and the fix; validation lists \
         it; config, select cpu/auto, device info, memory, list devices, guarded runs, reports \
         kept working; every child exited cleanly",
    );
}
