//! Build script of the torch backend module.
//!
//! - Compiles the C++ shim (`shim/sda_shim.cpp`) against the libtorch that torch-sys links.
//! - Gives `libsda_torch.so` an rpath to that libtorch's `lib/`: tch's own link arguments do not reach
//!   a downstream cdylib, and without an rpath the module fails to load unless `LD_LIBRARY_PATH` is set.
//! - Restricts the module's dynamic symbols to the one entry point (`--exclude-libs,ALL`) and marks
//!   it `-z nodelete`, because libtorch keeps pointers into it (the counting CPU allocator, deleters of
//!   live tensors) that must stay valid even if the host `dlclose`s the module.
//! - Hands the libtorch directory and version it was built against to the Rust code
//!   (`SDA_BUILT_LIBTORCH_DIR`, `SDA_BUILT_LIBTORCH_VERSION`), reported through `facts`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// The libtorch version tch 0.26 / torch-sys 0.26 is written for (torch-sys's `TORCH_VERSION`); used
/// when the libtorch directory carries no version file.
const TCH_TORCH_VERSION: &str = "2.13.0";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=shim/sda_shim.cpp");
    println!("cargo:rerun-if-changed=build.rs");

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

    compile_shim(&include);

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

    println!(
        "cargo:rustc-env=SDA_BUILT_LIBTORCH_DIR={}",
        lib_dir.display()
    );
    println!(
        "cargo:rustc-env=SDA_BUILT_LIBTORCH_VERSION={}",
        libtorch_version(&root)
    );
}

/// Compiles the shim with the ABI and standard libtorch's headers require.
fn compile_shim(include: &Path) {
    cc::Build::new()
        .cpp(true)
        .file("shim/sda_shim.cpp")
        // -isystem, not -I: libtorch's headers trip -Wextra (unused parameters, C++20 bit-field
        // initialisers under c++17); as system headers they stay quiet while the shim itself keeps
        // full warnings.
        .flag("-isystem")
        .flag(include.as_os_str())
        .flag("-isystem")
        .flag(include.join("torch/csrc/api/include").as_os_str())
        .std("c++17")
        // libtorch wheels use the new libstdc++ string ABI; 0 fails to link against them.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        // Nothing in the shim is meant to be seen outside the module.
        .flag("-fvisibility=hidden")
        .flag("-fvisibility-inlines-hidden")
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
        .unwrap_or_else(|| TCH_TORCH_VERSION.to_string());
    raw.split('+').next().unwrap_or(&raw).to_string()
}
