//! Build script of the torch backend module.
//!
//! - Compiles the C++ shim (`shim/sda_shim.cpp`) against the libtorch that torch-sys links.
//! - Gives `libsda_torch.so` an rpath to that libtorch's `lib/`: tch's own link arguments do not reach
//!   a downstream cdylib, and without an rpath the module fails to load unless `LD_LIBRARY_PATH` is set.
//! - Restricts the module's dynamic symbols to the one entry point (`--exclude-libs,ALL`) and marks
//!   it `-z nodelete`, because libtorch keeps pointers into it (the counting CPU allocator, deleters of
//!   live tensors) that must stay valid even if the host `dlclose`s the module.
//! - Hands the libtorch directory and version it was built against to the Rust code
//!   (`SDA_BUILT_LIBTORCH_DIR`, `SDA_BUILT_LIBTORCH_VERSION`), reported through `facts`, and to the
//!   core as an exported static it reads from the file without loading it (`built_libtorch.rs`).
//! - The rpath is the build tree's libtorch, for the build tree's tests; `make install` replaces it
//!   with `$ORIGIN/sda/libtorch/lib` (cmake/CMakeLists.txt), and the core preloads the libtorch it
//!   chose before it opens the module anyway (crates/sda-core/src/libtorch_discovery.rs).
//!
//! The link arguments depend on the target's linker: GNU ld / lld on Linux (above); ld64 on macOS
//! (`-rpath` to libtorch and `@loader_path`, `install_name` `@rpath/libsda_torch.dylib`, only the
//! entry point exported; Mach-O has no `nodelete`, and the core never closes the module); on
//! Windows nothing (a DLL has no rpath: libtorch's DLLs must lie beside the module or on `PATH`, and
//! a cdylib exports only its own `#[no_mangle]` items). With the `check-only` feature (`make
//! cross-check`) nothing is compiled or linked at all: the Rust is only type-checked.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The libtorch version tch 0.26 / torch-sys 0.26 is written for (torch-sys's `TORCH_VERSION`); used
/// when the libtorch directory carries no version file. crates/sda_torch_2_11 (tch 0.24) builds this
/// same script with its `libtorch-2-11` feature, whose version is 2.11.0.
fn tch_torch_version() -> &'static str {
    if env::var_os("CARGO_FEATURE_LIBTORCH_2_11").is_some() {
        "2.11.0"
    } else {
        "2.13.0"
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=shim/sda_shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CHECK_ONLY").is_some() {
        // torch-sys (doc-only) found no libtorch; the Rust only needs the two names to exist.
        println!("cargo:rustc-env=SDA_BUILT_LIBTORCH_DIR=");
        let version = tch_torch_version();
        println!("cargo:rustc-env=SDA_BUILT_LIBTORCH_VERSION={version}");
        write_built_record(version, "");
        version_cfg(version);
        return;
    }
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let msvc = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "msvc");

    // torch-sys (`links = "tch"`) exports the lib dir it linked against to direct dependents only.
    let lib_dir = env::var("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from).unwrap_or_else(|_| {
        panic!("DEP_TCH_LIBTORCH_LIB is not set: torch-sys must be a direct dependency of sda_torch")
    });
    // Canonical so that the rpath and the reported directory compare equal to the path the loader
    // maps at run time (which the module canonicalises too), whatever symlinks LIBTORCH went through.
    let lib_dir = fs::canonicalize(&lib_dir).unwrap_or(lib_dir);
    let root = lib_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lib_dir.clone());
    let include = env::var("LIBTORCH_INCLUDE")
        .map(|dir| PathBuf::from(dir).join("include"))
        .unwrap_or_else(|_| root.join("include"));

    compile_shim(&include, msvc);

    match target_os.as_str() {
        "macos" | "ios" => link_args_macos(&lib_dir),
        "windows" => {}
        _ => link_args_gnu(&lib_dir),
    }

    let version = libtorch_version(&root);
    println!(
        "cargo:rustc-env=SDA_BUILT_LIBTORCH_DIR={}",
        lib_dir.display()
    );
    println!("cargo:rustc-env=SDA_BUILT_LIBTORCH_VERSION={version}");
    write_built_record(&version, &lib_dir.display().to_string());
    version_cfg(&version);
}

/// Writes `$OUT_DIR/built_libtorch.rs`: the exported static `sda_torch_built_libtorch`
/// (`sda_backend_abi::BUILT_LIBTORCH_SYMBOL`), "VERSION\nDIR\0" padded with NULs, which the core
/// reads from the file without loading it (it chooses the module that matches the libtorch it found,
/// and must not map a module built for another one).
fn write_built_record(version: &str, dir: &str) {
    let mut record = format!("{version}\n{dir}").into_bytes();
    record.truncate(BUILT_RECORD_LEN - 1);
    record.resize(BUILT_RECORD_LEN, 0);
    let bytes: Vec<String> = record.iter().map(u8::to_string).collect();
    let code = format!(
        "/// What this module was built against, \"VERSION\\nDIR\", read by the core from the file.\n\
         #[no_mangle]\n#[used]\n#[allow(non_upper_case_globals)]\n\
         pub static sda_torch_built_libtorch: [u8; {BUILT_RECORD_LEN}] = [{}];\n",
        bytes.join(",")
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("built_libtorch.rs"), code).expect("write built_libtorch.rs");
}

/// Length of the exported record (`sda_backend_abi::BUILT_LIBTORCH_LEN`).
const BUILT_RECORD_LEN: usize = 512;

/// `cfg(sda_libtorch_2_11)` when building against libtorch 2.11 (tch 0.24, crates/sda_torch_2_11), for
/// the few places where the tch 0.24 and 0.26 APIs differ.
fn version_cfg(version: &str) {
    println!("cargo::rustc-check-cfg=cfg(sda_libtorch_2_11)");
    if version.starts_with("2.11.") {
        println!("cargo:rustc-cfg=sda_libtorch_2_11");
    }
}

/// Linux (GNU ld, lld): rpath to libtorch, `-z nodelete`, only the entry point exported.
fn link_args_gnu(lib_dir: &Path) {
    // For every linked target (the cdylib, and the unit-test binary that links libtorch the same way).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    // The module must export only its entry point. rustc's own version script for a cdylib exports
    // every `#[no_mangle]` item of every upstream crate (tch's `tch_read_stream_*`, bzip2-sys's
    // `bz_internal_error`), and a second version script cannot take those back (GNU ld merges the
    // globals of both: measured). So symbols that come from archives (every upstream
    // rlib, std included, and the C/C++ static libraries: libtch and our shim) are made hidden; the
    // entry point lives in this crate's own object files, which are not archives.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
}

/// macOS (ld64): rpaths to libtorch and to the module's own directory, an `@rpath` install name
/// (so that an installed copy is found through its host's rpath), only the entry point exported.
fn link_args_macos(lib_dir: &Path) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,@loader_path");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libsda_torch.dylib");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-exported_symbol,_sda_torch_backend_entry");
}

/// Compiles the shim with the ABI and standard libtorch's headers require.
fn compile_shim(include: &Path, msvc: bool) {
    let mut build = cc::Build::new();
    build.cpp(true).file("shim/sda_shim.cpp").std("c++17");
    if msvc {
        // MSVC: no -isystem; /external:I keeps libtorch's headers out of the warnings.
        build
            .flag("/external:W0")
            .flag(format!("/external:I{}", include.display()))
            .flag(format!(
                "/external:I{}",
                include.join("torch/csrc/api/include").display()
            ))
            // libtorch's headers need standard-conforming preprocessing and exceptions.
            .flag("/Zc:preprocessor")
            .flag("/EHsc");
    } else {
        build
            // -isystem, not -I: libtorch's headers trip -Wextra (unused parameters, C++20 bit-field
            // initialisers under c++17); as system headers they stay quiet while the shim itself
            // keeps full warnings.
            .flag("-isystem")
            .flag(include.as_os_str())
            .flag("-isystem")
            .flag(include.join("torch/csrc/api/include").as_os_str())
            // libtorch wheels use the new libstdc++ string ABI; 0 fails to link against them.
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            // Nothing in the shim is meant to be seen outside the module.
            .flag("-fvisibility=hidden")
            .flag("-fvisibility-inlines-hidden");
    }
    build
        .warnings(true)
        .extra_warnings(true)
        .compile("sda_torch_shim");
}

/// Reads `__version__` from `<libtorch>/version.py` (a PyTorch wheel) or `<libtorch>/build-version`
/// (a libtorch zip), dropping a local suffix such as `+cu130`; falls back to tch's expected version.
fn libtorch_version(root: &Path) -> String {
    let raw = fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let rest = line.trim().strip_prefix("__version__")?.trim_start();
                let value = rest.strip_prefix('=')?.trim();
                Some(value.trim_matches(|c| c == '\'' || c == '"').to_string())
            })
        })
        .or_else(|| {
            fs::read_to_string(root.join("build-version"))
                .ok()
                .map(|v| v.trim().to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| tch_torch_version().to_string());
    raw.split('+').next().unwrap_or(&raw).to_string()
}
