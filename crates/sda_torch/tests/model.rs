//! Model files through the backend's table alone (`model_load`, `model_run`, `model_free`,
//! `model_count`): TorchScript modules (conv, recurrent, attention) and an AOTInductor package, made
//! at test time with the project's own torch (`.venv/bin/python`, `crates/sda-core/tests/model_gen.py`);
//! nothing is downloaded.

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{api, serial, Msg};
use sda_backend_abi::*;

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes the named model files into a fresh directory with the project's torch.
fn generate(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let root = repo_root();
    // The torch of this module's own libtorch: .venv (2.13), or .venv-2.11 for crates/sda_torch_2_11.
    let venv = if cfg!(sda_libtorch_2_11) {
        ".venv-2.11"
    } else {
        ".venv"
    };
    let out = std::process::Command::new(root.join(venv).join("bin/python"))
        .arg(root.join("crates/sda-core/tests/model_gen.py"))
        .arg(dir)
        .args(names)
        .output()
        .expect("run the venv's python");
    assert!(
        out.status.success(),
        "model_gen.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TorchScript files, made once per test binary.
fn models() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sda_torch_models_{}", std::process::id()));
        generate(
            &dir,
            &[
                "conv.pt",
                "gru.pt",
                "lstm.pt",
                "attention.pt",
                "fixed.pt",
                "dict.pt",
                "half.pt",
            ],
        );
        dir
    })
}

fn load(path: &Path) -> (i32, u64, ModelFacts, String) {
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let mut handle = u64::MAX;
    let mut facts = ModelFacts::default();
    let mut msg = Msg::new();
    // SAFETY: `cpath` is a live NUL-terminated string, `handle` and `facts` are live locals and
    // `msg` a live buffer of `msg.cap()` bytes (the table's calling contract).
    let rc = unsafe {
        (api().model_load)(
            cpath.as_ptr(),
            DEVICE_CPU,
            0,
            &mut handle,
            &mut facts,
            msg.ptr(),
            msg.cap(),
        )
    };
    (rc, handle, facts, msg.text())
}

fn run(handle: u64, batch: u32, shape: &[u64], dtype: i32, train: bool) -> (i32, String) {
    let mut msg = Msg::new();
    // SAFETY: `shape` is a live slice of `shape.len()` u64s and `msg` a live buffer of
    // `msg.cap()` bytes; the rest are plain values the function checks.
    let rc = unsafe {
        (api().model_run)(
            handle,
            batch,
            shape.as_ptr(),
            shape.len(),
            dtype,
            u8::from(train),
            msg.ptr(),
            msg.cap(),
        )
    };
    (rc, msg.text())
}

fn free(handle: u64) -> i32 {
    let mut msg = Msg::new();
    // SAFETY: a plain integer and a live buffer of `msg.cap()` bytes.
    unsafe { (api().model_free)(handle, msg.ptr(), msg.cap()) }
}

fn count() -> u64 {
    let mut out = u64::MAX;
    let mut msg = Msg::new();
    // SAFETY: `out` is a live u64 and `msg` a live buffer of `msg.cap()` bytes.
    let rc = unsafe { (api().model_count)(&mut out, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());
    out
}

fn cpu_allocated() -> u64 {
    let mut out = MemoryStats::default();
    let mut msg = Msg::new();
    // SAFETY: `out` is a live, aligned MemoryStats and `msg` a live buffer of `msg.cap()` bytes.
    let rc = unsafe { (api().memory_stats)(DEVICE_CPU, 0, &mut out, msg.ptr(), msg.cap()) };
    assert_eq!(rc, STATUS_OK, "{}", msg.text());
    out.allocated
}

#[test]
fn conv_recurrent_and_attention_modules_run_inference_and_training_and_free_everything() {
    let _s = serial();
    let dir = models();
    let cases: [(&str, &[u64]); 4] = [
        ("conv.pt", &[2, 4000]),
        ("gru.pt", &[50, 8]),
        ("lstm.pt", &[50, 8]),
        ("attention.pt", &[20, 16]),
    ];
    for (name, shape) in cases {
        let before = cpu_allocated();
        let (rc, handle, facts, msg) = load(&dir.join(name));
        assert_eq!(rc, STATUS_OK, "{name}: {msg}");
        assert_ne!(handle, 0);
        assert_eq!(facts.format, MODEL_FORMAT_TORCHSCRIPT);
        assert!(facts.param_bytes > 0, "{name}: {facts:?}");
        assert_eq!(count(), 1);
        let loaded = cpu_allocated();
        assert!(
            loaded >= before + facts.param_bytes,
            "{name}: the weights are on the CPU"
        );
        for train in [false, true, false] {
            let (rc, msg) = run(handle, 3, shape, DTYPE_F32, train);
            assert_eq!(rc, STATUS_OK, "{name} train={train}: {msg}");
            // Inputs, activations, graph and gradients are gone after the call.
            assert_eq!(cpu_allocated(), loaded, "{name} train={train}");
        }
        assert_eq!(free(handle), STATUS_OK);
        assert_eq!(count(), 0);
        assert_eq!(cpu_allocated(), before, "{name}: the weights were freed");
        assert_eq!(free(handle), STATUS_INVALID_ARGUMENT, "a second free");
        let (rc, _) = run(handle, 1, shape, DTYPE_F32, false);
        assert_eq!(rc, STATUS_INVALID_ARGUMENT, "a freed handle");
    }
}

#[test]
fn bad_inputs_are_a_status_with_the_models_message_and_nothing_stays_loaded() {
    let _s = serial();
    let dir = models();
    // A missing file.
    let (rc, handle, _, msg) = load(&dir.join("no_such.pt"));
    assert_eq!((rc, handle), (STATUS_INVALID_ARGUMENT, 0), "{msg}");
    assert!(msg.contains("no_such.pt"), "{msg}");
    // A file that is not TorchScript.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "not a model\n").unwrap();
    let (rc, handle, _, msg) = load(&text);
    assert_eq!((rc, handle), (STATUS_TORCH_ERROR, 0), "{msg}");
    assert!(msg.contains("notes.txt"), "{msg}");
    assert!(!msg.contains("Exception raised from"), "{msg}");
    // A text file named like a package.
    let fake = dir.join("fake.pt2");
    std::fs::write(&fake, "not a package\n").unwrap();
    let (rc, handle, _, msg) = load(&fake);
    assert_ne!(rc, STATUS_OK, "{msg}");
    assert_eq!(handle, 0);
    assert_eq!(count(), 0);

    let (rc, conv, _, msg) = load(&dir.join("conv.pt"));
    assert_eq!(rc, STATUS_OK, "{msg}");
    // A shape the model rejects (3 channels for a 2-channel convolution).
    let (rc, msg) = run(conv, 2, &[3, 1000], DTYPE_F32, false);
    assert_eq!(rc, STATUS_TORCH_ERROR, "{msg}");
    assert!(msg.contains("channels"), "the model's own message: {msg}");
    assert!(!msg.contains("Traceback of TorchScript"), "{msg}");
    // A dtype the model rejects (float16 input, float32 weights).
    let (rc, msg) = run(conv, 2, &[2, 1000], DTYPE_F16, false);
    assert_eq!(rc, STATUS_TORCH_ERROR, "{msg}");
    // Argument errors.
    assert_eq!(
        run(conv, 0, &[2, 1000], DTYPE_F32, false).0,
        STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        run(conv, 1, &[2, 0], DTYPE_F32, false).0,
        STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        run(conv, 1, &[2, 1000], 9, false).0,
        STATUS_INVALID_ARGUMENT
    );
    assert_eq!(
        run(conv, u32::MAX, &[u64::MAX / 4, 2], DTYPE_F32, false).0,
        STATUS_OUT_OF_MEMORY
    );
    // Still usable after every failure.
    assert_eq!(run(conv, 2, &[2, 1000], DTYPE_F32, true).0, STATUS_OK);
    assert_eq!(free(conv), STATUS_OK);

    // A float16 model takes float16 input.
    let (rc, half, _, msg) = load(&dir.join("half.pt"));
    assert_eq!(rc, STATUS_OK, "{msg}");
    let (rc, msg) = run(half, 2, &[2, 500], DTYPE_F16, false);
    assert_eq!(rc, STATUS_OK, "{msg}");
    assert_eq!(free(half), STATUS_OK);

    // A dict output runs for inference, not for training.
    let (rc, dict, _, msg) = load(&dir.join("dict.pt"));
    assert_eq!(rc, STATUS_OK, "{msg}");
    assert_eq!(run(dict, 2, &[4], DTYPE_F32, false).0, STATUS_OK);
    let (rc, msg) = run(dict, 2, &[4], DTYPE_F32, true);
    assert_eq!(rc, STATUS_INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("GenericDict") || msg.contains("Dict"), "{msg}");
    assert_eq!(free(dict), STATUS_OK);

    // A traced batch: batch 1 runs, batch 3 fails with the model's message.
    let (rc, fixed, _, msg) = load(&dir.join("fixed.pt"));
    assert_eq!(rc, STATUS_OK, "{msg}");
    assert_eq!(run(fixed, 1, &[2, 100], DTYPE_F32, false).0, STATUS_OK);
    let (rc, msg) = run(fixed, 3, &[2, 100], DTYPE_F32, false);
    assert_eq!(rc, STATUS_TORCH_ERROR, "{msg}");
    assert!(msg.contains("batch 3"), "{msg}");
    assert_eq!(free(fixed), STATUS_OK);
    assert_eq!(count(), 0);
}

#[test]
fn an_aoti_package_runs_inference_at_any_batch_and_refuses_training() {
    let _s = serial();
    let dir = std::env::temp_dir().join(format!("sda_torch_aoti_{}", std::process::id()));
    generate(&dir, &["conv.pt2"]);
    let (rc, handle, facts, msg) = load(&dir.join("conv.pt2"));
    assert_eq!(rc, STATUS_OK, "{msg}");
    assert_eq!(facts.format, MODEL_FORMAT_AOTI);
    for batch in [1, 2, 9] {
        let (rc, msg) = run(handle, batch, &[1, 256], DTYPE_F32, false);
        assert_eq!(rc, STATUS_OK, "batch {batch}: {msg}");
    }
    let (rc, msg) = run(handle, 2, &[1, 256], DTYPE_F32, true);
    assert_eq!(rc, STATUS_INVALID_ARGUMENT, "{msg}");
    assert_eq!(free(handle), STATUS_OK);
    assert_eq!(count(), 0);
    // The package and AOTInductor's compile cache beside it (model_gen.py puts it there).
    std::fs::remove_dir_all(&dir).unwrap();
}
