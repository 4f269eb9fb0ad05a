//! `sda probe --model PATH --input SHAPE [--dtype ..] [--train]`, as a real process, with a
//! TorchScript module made at test time by the project's own torch (`.venv/bin/python`,
//! `crates/sda-core/tests/model_gen.py`; nothing is downloaded).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn sda(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sda"))
        .args(args)
        .env_remove("SDA_DEVICE")
        .env_remove("SDA_CONFIG")
        .output()
        .expect("sda runs")
}

fn models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sda_cli_models_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Command::new(root.join(".venv/bin/python"))
            .arg(root.join("crates/sda-core/tests/model_gen.py"))
            .arg(&dir)
            .args(["conv.pt", "fixed.pt"])
            .output()
            .expect("run .venv/bin/python");
        assert!(
            out.status.success(),
            "model_gen.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn model(name: &str) -> String {
    models().join(name).to_str().unwrap().to_string()
}

#[test]
fn probe_of_a_model_prints_the_model_and_the_batch_and_json_has_it_too() {
    let conv = model("conv.pt");
    let args = [
        "probe", "--device", "cpu", "--budget", "128MiB", "--max", "64", "--model", &conv,
        "--input", "2,4000",
    ];
    let out = sda(&args);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Model:       ") && text.contains("conv.pt (torchscript"),
        "{text}"
    );
    assert!(
        text.contains("Input:       [N, 2, 4000] f32, inference"),
        "{text}"
    );
    assert!(text.contains("Max batch:"), "{text}");

    let mut json_args = args.to_vec();
    json_args.extend(["--train", "--json"]);
    let out = sda(&json_args);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["max_batch"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["model"]["format"], "torchscript");
    assert_eq!(v["model"]["train"], true);
    assert_eq!(v["model"]["input_shape"], serde_json::json!([2, 4000]));
    assert!(v["model"]["param_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn bad_model_arguments_are_errors_with_the_reason() {
    let conv = model("conv.pt");
    // A shape the model rejects.
    let out = sda(&[
        "probe", "--device", "cpu", "--budget", "128MiB", "--model", &conv, "--input", "3,100",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected its input"), "{err}");
    // A fixed traced batch.
    let fixed = model("fixed.pt");
    let out = sda(&[
        "probe", "--device", "cpu", "--budget", "128MiB", "--model", &fixed, "--input", "2,100",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accepts only its traced batch"), "{err}");
    // A missing file.
    let out = sda(&[
        "probe",
        "--device",
        "cpu",
        "--model",
        "/no/such/model.pt",
        "--input",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/model.pt"));
    // Argument errors, before anything runs.
    for args in [
        vec!["probe", "--model", &conv],
        vec!["probe", "--input", "2,100"],
        vec!["probe", "--model", &conv, "--input", "2,0"],
        vec!["probe", "--model", &conv, "--input", "2", "--dtype", "f64"],
        vec!["probe", "--train"],
    ] {
        let out = sda(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
