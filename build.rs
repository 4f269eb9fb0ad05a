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

    // A versioned SONAME, so that hosts bind to the ABI's major version (libsda.so.0), not a file name.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsda.so.{major}");

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
    let generated = out_dir.join("sda.h");
    bindings.write_to_file(&generated);

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
