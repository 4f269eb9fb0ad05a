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

/// The structs of the header, with their fields: `(name, field lines)`.
fn header_structs(header: &str) -> Vec<(String, Vec<String>)> {
    let mut structs = Vec::new();
    let mut fields: Option<Vec<String>> = None;
    for line in header.lines() {
        if line.starts_with("typedef struct") && line.trim_end().ends_with('{') {
            fields = Some(Vec::new());
        } else if let Some(body) = fields.as_mut() {
            if let Some(name) = line.strip_prefix("} ") {
                structs.push((
                    name.trim_end_matches(';').to_string(),
                    fields.take().unwrap(),
                ));
            } else {
                let t = line.trim();
                if t.ends_with(';') && !t.starts_with('*') && !t.starts_with("/*") {
                    body.push(t.to_string());
                }
            }
        }
    }
    structs
}

/// Issue 11: every struct can grow. It starts with the caller's `uint32_t struct_size`, has an init
/// function taking the caller's size and a macro passing `sizeof`, holds no C `bool` (a byte a binding
/// may fill with anything), and no function returns it by value.
#[test]
fn every_struct_carries_its_size_and_is_initialised_through_a_pointer() {
    let header = committed();
    let structs = header_structs(&header);
    assert!(structs.len() >= 13, "found only {structs:?}");
    for (name, fields) in &structs {
        assert_eq!(
            fields.first().map(String::as_str),
            Some("uint32_t struct_size;"),
            "{name} does not start with uint32_t struct_size"
        );
        for field in fields {
            assert!(
                !field.starts_with("bool "),
                "{name} has a C bool field: {field}"
            );
        }
        for line in header.lines() {
            assert!(
                !line.starts_with(&format!("{name} sda_")),
                "{line}: returns {name} by value"
            );
        }
        if name == "sda_probe_progress" {
            continue; // filled by the library only, for a callback
        }
        assert!(
            header.contains(&format!("sda_status {name}_init({name} *")),
            "{name} has no init function {name}_init({name} *, size_t)"
        );
        let upper = name.trim_start_matches("sda_").to_ascii_uppercase();
        assert!(
            header.contains(&format!(
                "#define SDA_{upper}_INIT(ptr) {name}_init((ptr), sizeof *(ptr))"
            )),
            "no SDA_{upper}_INIT macro"
        );
    }
    assert!(header.contains("typedef uint32_t sda_bool;"));
    assert!(
        !header.contains("SDA_ABI_GROWTH_TEST") && !header.contains("abi_growth_test"),
        "the growth test's field leaked into the header"
    );
}

/// The SONAME names the ABI version: libsda.so.<major> from 1.0 on, libsda.so.0.<minor> before.
#[test]
fn the_soname_names_the_abi_version() {
    let version = cargo_version();
    let parts: Vec<&str> = version.split('.').collect();
    let abi = if parts[0] == "0" {
        format!("0.{}", parts[1])
    } else {
        parts[0].to_string()
    };
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        })
        .join("libsda.so");
    let Ok(bytes) = std::fs::read(&lib) else {
        eprintln!("{} not built: skipped", lib.display());
        return;
    };
    let needle = format!("libsda.so.{abi}\0");
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "{} has no SONAME {needle:?}",
        lib.display()
    );
}
