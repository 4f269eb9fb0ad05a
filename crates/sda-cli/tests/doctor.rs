//! `sda doctor`, `sda plan`, `sda recommend` and `sda config`, run as real processes on this machine.
//! Environments are given to the child processes only; the test process's own is never changed.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sda_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sda"));
    c.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("SDA_DEVICE")
        .env_remove("SDA_CONFIG")
        .env_remove("SDA_BACKEND");
    for var in [
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "SLURM_NTASKS",
        "MASTER_ADDR",
        "MASTER_PORT",
        "OMP_NUM_THREADS",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("sda runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_driver_here() -> bool {
    sda_core::cuda_driver::cuda_facts().reason().is_some()
}

#[test]
fn doctor_on_this_machine_reports_no_cuda_driver_as_information_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = sda_in(dir.path(), &["doctor"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.starts_with("Device:  "), "{text}");
    if no_driver_here() {
        assert!(text.contains("Problem (info, cuda.no_driver)"), "{text}");
    }
    // The data directories do not exist in a fresh directory: information, and nothing was created.
    assert!(text.contains("Problem (info, paths.missing)"), "{text}");
    assert!(
        !dir.path().join("data").exists(),
        "the doctor created something"
    );
    assert!(
        !text.contains("(error,") && !text.contains("(warning,"),
        "{text}"
    );
    assert!(text.contains("0 error(s), 0 warning(s)"), "{text}");
    assert!(text.trim_end().ends_with("exit code 0"), "{text}");
}

#[test]
fn doctor_with_a_broken_config_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[hardware]\nmemory_fraction = 7\n").unwrap();
    for args in [
        vec!["--config", bad.to_str().unwrap(), "doctor"],
        vec!["doctor", "--json", "--no-backend"],
    ] {
        let out = sda_in(dir.path(), &args, &[("SDA_CONFIG", bad.to_str().unwrap())]);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {text}{}",
            stderr(&out)
        );
        assert!(text.contains("config.invalid"), "{text}");
        assert!(text.contains("hardware.memory_fraction"), "{text}");
        assert!(text.contains("bad.toml"), "{text}");
    }
    // An unknown key, and a file that is not there.
    std::fs::write(&bad, "[hardware]\ndevcie = \"cpu\"\n").unwrap();
    let out = sda_in(
        dir.path(),
        &["--config", "bad.toml", "doctor", "--no-backend"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("hardware.devcie"), "{}", stdout(&out));
    let out = sda_in(
        dir.path(),
        &["--config", "missing.toml", "doctor", "--no-backend"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("sda config init"), "{}", stdout(&out));
}

#[test]
fn doctor_exit_codes_follow_the_worst_severity() {
    if !no_driver_here() {
        return; // the cases below need a machine without CUDA devices
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sda.toml");
    // A requested GPU that is missing: a warning (the CPU is used) → 1.
    std::fs::write(&cfg, "[hardware]\ndevice = \"cuda\"\n").unwrap();
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "doctor", "--no-backend"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("Problem (warning, device.fallback)"));
    // Strict: an error, and the selection failure is reported with a report of the CPU → 2.
    std::fs::write(&cfg, "[hardware]\ndevice = \"cuda\"\nstrict = true\n").unwrap();
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "doctor", "--no-backend"],
        &[],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("device.unavailable"), "{text}");
    assert!(text.contains("device.selection_failed"), "{text}");
    assert!(text.starts_with("Device:  cpu"), "{text}");
    // A malformed --device is a usage error.
    let out = sda_in(dir.path(), &["doctor", "--device", "tpu"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tpu"), "{}", stderr(&out));
}

#[test]
fn doctor_loads_the_backend_and_reports_the_environment_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sda.toml"),
        "[environment]\nSDA_TEST_APPLIED = \"from-config\"\nSDA_TEST_KEPT = \"from-config\"\n",
    )
    .unwrap();
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "doctor", "--verbose", "--json"],
        &[("SDA_TEST_KEPT", "from-process")],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["backend"]["loaded"], true, "{v:#}");
    let env = v["environment"].as_array().unwrap();
    let entry = |name: &str| env.iter().find(|e| e["name"] == name).unwrap().clone();
    assert_eq!(entry("SDA_TEST_APPLIED")["outcome"], "applied");
    assert_eq!(entry("SDA_TEST_KEPT")["outcome"], "process_value_kept");
    assert_eq!(entry("SDA_TEST_KEPT")["process_value"], "from-process");
    assert!(v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["code"] == "environment.process_value_kept" && p["severity"] == "info"));
    // The libtorch the backend loaded is the one it was built against.
    assert_eq!(
        v["backend"]["libtorch_version"],
        v["backend"]["built_libtorch_version"]
    );
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    // The text says the same.
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "doctor", "--verbose"],
        &[("SDA_TEST_KEPT", "from-process")],
    );
    let text = stdout(&out);
    assert!(
        text.contains("Environment: SDA_TEST_APPLIED=from-config (applied)"),
        "{text}"
    );
    assert!(
        text.contains(
            "Environment: SDA_TEST_KEPT=from-config (kept the process's value from-process)"
        ),
        "{text}"
    );
}

#[test]
fn plan_prints_workers_and_their_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = sda_in(
        dir.path(),
        &["plan", "--strategy", "cpu", "--workers", "2", "--json"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["strategy"], "cpu");
    assert_eq!(v["worker_plans"][1]["device"], "cpu");
    assert!(v["worker_plans"][1]["env"]["OMP_NUM_THREADS"].is_string());

    let out = sda_in(
        dir.path(),
        &[
            "plan",
            "--strategy",
            "cpu",
            "--workers",
            "2",
            "--worker",
            "1",
            "--env",
        ],
        &[("OMP_NUM_THREADS", "3")],
    );
    assert_eq!(stdout(&out), "OMP_NUM_THREADS=3\n");

    if no_driver_here() {
        let out = sda_in(dir.path(), &["plan"], &[]);
        assert!(stdout(&out).starts_with("Strategy: cpu (auto: no CUDA device"));
        let out = sda_in(dir.path(), &["plan", "--strategy", "multi_gpu"], &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("multi_gpu needs a CUDA device"));
    }
    let out = sda_in(dir.path(), &["plan", "--strategy", "tpu"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"tpu\"") && stderr(&out).contains("single_gpu"));
    let out = sda_in(
        dir.path(),
        &["plan", "--strategy", "cpu", "--worker", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("worker id 1 is out of range"),
        "{}",
        stderr(&out)
    );
    // Launcher variables are read (here malformed) from the environment the process was given.
    let out = sda_in(dir.path(), &["plan"], &[("SLURM_PROCID", "first")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("SLURM_PROCID=\"first\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recommend_uses_the_tiers_the_probe_and_the_model_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = sda_in(
        dir.path(),
        &[
            "recommend",
            "--device",
            "cpu",
            "--parameters",
            "250M",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["batch_size"], 256);
    assert_eq!(v["batch_source"], "tier");
    assert_eq!(v["memory_strategy"]["strategy"], "conservative");
    assert!(v["memory_strategy"]["reason"]
        .as_str()
        .unwrap()
        .contains("large model"));

    std::fs::write(
        dir.path().join("sda.toml"),
        "[hardware]\nmax_batch_size = 300\n\n[[tiers]]\ndevice = \"cpu\"\nmin_memory_gb = 0\n\
         batch_size = 8\ngradient_checkpointing = true\nblocks = 4\nchannels = 32\n",
    )
    .unwrap();
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "recommend", "--device", "cpu"],
        &[],
    );
    let text = stdout(&out);
    assert!(text.contains("Batch:   300 (measured by a probe"), "{text}");
    assert!(text.contains("Model:   4 blocks of 32 channels"), "{text}");
    assert!(text.contains("from the configuration"), "{text}");
    let out = sda_in(
        dir.path(),
        &["--config", "sda.toml", "recommend", "--tiers"],
        &[],
    );
    let tiers = stdout(&out);
    assert!(tiers.contains("batch_size = 8"), "{tiers}");
    assert!(
        tiers.contains("device = \"cuda\""),
        "built-in kinds stay: {tiers}"
    );
    assert_eq!(
        tiers.matches("device = \"cpu\"").count(),
        1,
        "the built-in cpu tier was replaced: {tiers}"
    );
}

#[test]
fn config_init_writes_defaults_creates_directories_and_never_waits_for_input() {
    let dir = tempfile::tempdir().unwrap();
    // The file's directory is created too.
    let out = sda_in(
        dir.path(),
        &[
            "--config",
            "conf/sda.toml",
            "config",
            "init",
            "--models",
            "my models",
        ],
        &[],
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Created: data/datasets"), "{text}");
    assert!(text.contains("Device:  "), "detection ran: {text}");
    for d in ["data/datasets", "my models", "data/generated"] {
        assert!(dir.path().join(d).is_dir(), "{d}");
    }
    let written = sda_core::config::Config::load(dir.path().join("conf/sda.toml")).unwrap();
    assert!(written.general.first_run_complete);
    assert_eq!(written.paths.models, "my models");
    assert_eq!(
        written.paths.datasets, "data/datasets",
        "relative stays relative"
    );

    // get / set / show on the file; SDA_CONFIG names it as well as --config does.
    let cfg = dir.path().join("conf/sda.toml");
    let env = [("SDA_CONFIG", cfg.to_str().unwrap())];
    let out = sda_in(
        dir.path(),
        &["config", "set", "hardware.memory_strategy", "aggressive"],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sda_in(
        dir.path(),
        &["config", "get", "hardware.memory_strategy"],
        &env,
    );
    assert_eq!(stdout(&out), "aggressive\n");
    let out = sda_in(
        dir.path(),
        &["config", "set", "hardware.memory_fraction", "3"],
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("hardware.memory_fraction"),
        "{}",
        stderr(&out)
    );
    let out = sda_in(dir.path(), &["config", "show"], &env);
    assert!(stdout(&out).contains("memory_strategy = \"aggressive\""));
    let out = sda_in(dir.path(), &["config", "show", "--json"], &env);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["general"]["first_run_complete"], true);
    // SDA_DEVICE is an override for one run, never written into the file.
    let mut with_device = env.to_vec();
    with_device.push(("SDA_DEVICE", "cuda:1"));
    let out = sda_in(
        dir.path(),
        &["config", "get", "hardware.device"],
        &with_device,
    );
    assert_eq!(stdout(&out), "cuda:1\n");
    sda_in(
        dir.path(),
        &["config", "set", "hardware.strict", "yes"],
        &with_device,
    );
    let written = sda_core::config::Config::load(&cfg).unwrap();
    assert_eq!(written.hardware.device, "auto");
    assert!(written.hardware.strict);

    // A second init refuses; set without any file explains.
    let out = sda_in(dir.path(), &["config", "init"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = sda_in(
        dir.path(),
        &["config", "set", "hardware.strict", "true"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sda config init"), "{}", stderr(&out));
    // Without --config or SDA_CONFIG, init writes sda.toml here.
    let out = sda_in(dir.path(), &["config", "init", "--no-detect"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("sda.toml").is_file());
}
