//! The committed header is what cbindgen generates from the sources, and its version macros agree with
//! Cargo.toml and `sda_version()`.

use std::ffi::CStr;

const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/sda.h"));

fn committed() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/sda.h"))
        .expect("include/sda.h is committed")
}

fn cargo_version() -> String {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let parsed: toml::Value = toml::from_str(&manifest).unwrap();
    parsed["workspace"]["package"]["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn macro_value(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("{name} missing from the header"))
        .trim()
        .trim_matches('"')
        .to_string()
}

#[test]
fn header_is_fresh() {
    assert!(
        committed() == GENERATED,
        "include/sda.h is stale: build outside CI (which regenerates it) and commit the result"
    );
}

#[test]
fn version_macros_match_cargo_toml_and_the_library() {
    let header = committed();
    let version = cargo_version();
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(macro_value(&header, "SDA_VERSION_MAJOR"), parts[0]);
    assert_eq!(macro_value(&header, "SDA_VERSION_MINOR"), parts[1]);
    assert_eq!(macro_value(&header, "SDA_VERSION_PATCH"), parts[2]);
    assert_eq!(macro_value(&header, "SDA_VERSION_STRING"), version);
    // SAFETY: sda_version() is documented never to return NULL; it returns a static NUL-terminated
    // literal (the crate version followed by a NUL), valid for the whole program.
    let runtime = unsafe { CStr::from_ptr(sda::status::sda_version()) };
    assert_eq!(runtime.to_str().unwrap(), version);
}

#[test]
fn header_declares_every_status_with_its_code() {
    let header = committed();
    for s in sda::status::Status::ALL {
        let line = format!("{} = {},", s.name(), *s as i32);
        assert!(header.contains(&line), "header lacks `{line}`");
    }
}
