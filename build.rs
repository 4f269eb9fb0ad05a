//! Generates the C header `include/sda.h` from the Rust sources with cbindgen.
//!
//! The header is always generated into `$OUT_DIR/sda.h`; outside CI it is also copied to
//! `include/sda.h` when it changed, so a developer sees the change in `git status` and commits it. In
//! CI (`CI` set) the source tree is left alone and the test `header_is_fresh` fails if the committed
//! header differs from the generated one.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CI");

    // A versioned SONAME, so that hosts bind to the ABI's version, not a file name: the major version
    // from 1.0 on (libsda.so.1), and major.minor before it (libsda.so.0.2), because under semver (and
    // Cargo's rules) 0.y releases break with every y. Makefile, cmake/CMakeLists.txt (the version
    // file's compatibility) and the Python binding follow the same rule.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").expect("set by cargo");
    let abi = if major == "0" {
        format!("0.{minor}")
    } else {
        major.clone()
    };
    // The name the library records for the programs that link it, per target linker (a build script
    // sees the target through CARGO_CFG_TARGET_OS, not through cfg!):
    // - Linux (GNU ld, lld): the SONAME libsda.so.{abi};
    // - macOS (ld64, which has no -soname): the install name @rpath/libsda.{abi}.dylib, the file
    //   cmake/CMakeLists.txt installs beside the real libsda.X.Y.Z.dylib, so that a host finds it
    //   through its own rpath; dyld refuses a library whose compatibility version is older than the
    //   one the host was linked against ({abi}.0 for every release of this ABI);
    // - Windows: nothing. A program's import library names the DLL itself (sda.dll), which the loader
    //   looks for beside the program and on PATH.
    let patch = std::env::var("CARGO_PKG_VERSION_PATCH").expect("set by cargo");
    match std::env::var("CARGO_CFG_TARGET_OS")
        .unwrap_or_default()
        .as_str()
    {
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libsda.{abi}.dylib");
            let compat = if major == "0" {
                format!("0.{minor}.0")
            } else {
                format!("{major}.0.0")
            };
            println!("cargo:rustc-cdylib-link-arg=-Wl,-compatibility_version,{compat}");
            println!("cargo:rustc-cdylib-link-arg=-Wl,-current_version,{major}.{minor}.{patch}");
        }
        "windows" => {}
        _ => println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsda.so.{abi}"),
    }

    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let version =
        |part: &str| std::env::var(format!("CARGO_PKG_VERSION_{part}")).expect("set by cargo");
    config.after_includes = Some(format!(
        "\n/* Version of this header; sda_version() returns the library's. */\n\
         #define SDA_VERSION_MAJOR {}\n#define SDA_VERSION_MINOR {}\n#define SDA_VERSION_PATCH {}\n\
         #define SDA_VERSION_STRING \"{}\"\n",
        version("MAJOR"),
        version("MINOR"),
        version("PATCH"),
        std::env::var("CARGO_PKG_VERSION").expect("set by cargo")
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut text = Vec::new();
    bindings.write(&mut text);
    let text = String::from_utf8(text).expect("cbindgen writes UTF-8");
    let text = with_init_macros(&strip_growth_test_fields(&text));
    let generated = out_dir.join("sda.h");
    if std::fs::read(&generated).ok().as_deref() != Some(text.as_bytes()) {
        std::fs::write(&generated, &text).expect("OUT_DIR writable");
    }

    if std::env::var_os("CI").is_none() {
        let committed = crate_dir.join("include").join("sda.h");
        let new = std::fs::read(&generated).expect("generated header readable");
        if std::fs::read(&committed).ok().as_deref() != Some(new.as_slice()) {
            std::fs::create_dir_all(committed.parent().expect("include/ has a parent"))
                .expect("include/ can be created");
            std::fs::write(&committed, new).expect("include/sda.h writable");
        }
    }
}

/// Removes the test-only fields (`#if defined(SDA_ABI_GROWTH_TEST)` ... `#endif`, with the doc comment
/// cbindgen puts before them): the header describes the library as released; the growth test's
/// library (feature `abi-growth-test`) has one more trailing field in each struct.
fn strip_growth_test_fields(header: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut skipping = false;
    let mut just_ended = false;
    for line in header.lines() {
        if line.trim() == "#if defined(SDA_ABI_GROWTH_TEST)" {
            skipping = true;
            while out.last().is_some_and(|l| {
                let t = l.trim_start();
                t.starts_with("/**") || t.starts_with("*")
            }) {
                out.pop();
            }
            continue;
        }
        if skipping {
            if line.trim() == "#endif" {
                skipping = false;
                just_ended = true;
            }
            continue;
        }
        // cbindgen writes a conditional field's `;` after its `#endif`.
        if std::mem::take(&mut just_ended) && line.trim() == ";" {
            continue;
        }
        out.push(line);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Adds one `SDA_X_INIT(ptr)` macro for every `sda_x_init(ptr, size)` function, after the version
/// macros: the macro passes the caller's own `sizeof *(ptr)`, which is what lets a struct grow.
fn with_init_macros(header: &str) -> String {
    let mut names: Vec<&str> = header
        .lines()
        .filter_map(|l| l.strip_prefix("sda_status sda_"))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name))
        .filter_map(|name| name.strip_suffix("_init"))
        .collect();
    names.dedup();
    let mut macros = String::from(
        "\n/*\n * Initialise a struct that may grow with its caller's own size (see the rule above):\n \
         *   sda_guard_options options;\n *   SDA_GUARD_OPTIONS_INIT(&options);\n \
         * Each expands to sda_x_init(ptr, sizeof *(ptr)) and returns its sda_status.\n */\n",
    );
    for name in names {
        macros.push_str(&format!(
            "#define SDA_{}_INIT(ptr) sda_{name}_init((ptr), sizeof *(ptr))\n",
            name.to_ascii_uppercase()
        ));
    }
    let anchor = "#define SDA_VERSION_STRING ";
    let at = header
        .find(anchor)
        .expect("the version macros are in the header");
    let end = at + header[at..].find('\n').expect("a line") + 1;
    format!("{}{}{}", &header[..end], macros, &header[end..])
}
