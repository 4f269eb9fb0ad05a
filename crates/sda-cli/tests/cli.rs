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
    assert_eq!(v["schema_version"], 2);
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
    assert!(err.contains("(invalid argument)"), "{err}");
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

#[test]
fn probe_json_carries_every_result_field() {
    let out = sda(&["probe", "--device", "cpu", "--budget", "128MiB", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in [
        "device",
        "max_batch",
        "recommended_batch",
        "runs",
        "oom_runs",
        "fixed_bytes",
        "per_sample_bytes",
        "predicted_peak_bytes",
        "measured_peak_bytes",
        "budget_bytes",
        "margin_bytes",
        "elapsed_ms",
        "stop",
        "capped",
        "trials",
    ] {
        assert!(!v[field].is_null(), "missing {field}: {v}");
    }
    assert_eq!(v["budget_bytes"], 128 << 20);
    assert_eq!(v["oom_runs"], 0);
    assert!(v["max_batch"].as_u64().unwrap() > 0);
    // Not a terminal: one plain line per run on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().filter(|l| l.starts_with("run ")).count() as u64 == v["runs"].as_u64().unwrap(),
        "{err}"
    );
}

#[test]
fn probe_start_is_the_first_batch_run_and_outside_the_range_an_error() {
    let out = sda(&[
        "probe", "--device", "cpu", "--budget", "128MiB", "--start", "3", "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trials"][0]["batch"], 3, "{v}");
    let bad = sda(&["probe", "--device", "cpu", "--max", "8", "--start", "9"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("start_batch 9"), "{err}");
}

#[test]
fn probe_save_writes_the_recommended_batch_into_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    sda_core::config::Config::default().save(&path).unwrap();
    let out = sda(&[
        "--config",
        path.to_str().unwrap(),
        "probe",
        "--device",
        "cpu",
        "--budget",
        "64MiB",
        "--save",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = sda_core::config::Config::from_toml_str(&text).unwrap();
    assert!(config.hardware.max_batch_size > 0, "{text}");
    let bad = sda(&["probe", "--budget", "lots"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("512MiB"));
}
