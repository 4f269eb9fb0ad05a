//! The `sda` command line, run as a real process on this machine.

use std::process::Command;

fn sda(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sda"))
        .args(args)
        .env_remove("SDA_DEVICE")
        .env_remove("SDA_CONFIG")
        .output()
        .expect("sda runs")
}

#[test]
fn info_prints_the_essentials() {
    let out = sda(&["info", "--device", "cpu"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Device:  cpu ("), "{text}");
    assert!(text.contains("free of"), "{text}");
    assert!(!text.contains("Budget"), "essentials only: {text}");
}

#[test]
fn info_verbose_json_has_the_documented_fields() {
    let out = sda(&["info", "--device", "cpu", "--verbose", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["device"]["device"], "cpu");
    assert!(v["device"]["memory_total"].as_u64().unwrap() > 0);
    assert!(v["memory"]["budget"].as_u64().unwrap() > 0);
    assert_eq!(v["memory"]["strategy"], "balanced");
    assert_eq!(
        v["backend"]["loaded"], false,
        "info on cpu must not load libtorch"
    );
    assert_eq!(v["devices"][0]["kind"], "cpu");
}

#[test]
fn a_malformed_device_is_an_error_with_the_accepted_forms() {
    let out = sda(&["info", "--device", "tpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("tpu") && err.contains("accepted"), "{err}");
    assert!(err.contains("SDA_ERR_INVALID_ARGUMENT"), "{err}");
}

#[test]
fn sda_device_env_overrides_the_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_sda"))
        .args(["info", "--json"])
        .env("SDA_DEVICE", "cuda:x")
        .env_remove("SDA_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SDA_DEVICE"));
}
