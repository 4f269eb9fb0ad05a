//! Shared by the reliability tests (`tests/reliability_*.rs`, issue 7) and by them only: the bounded
//! and long sizes of each run, seeds, the rows of RELIABILITY.md, and the build tree's backend module.
//!
//! Every test here runs its real work in a child process (`sda_testkit::child::ChildRun`: the test
//! binary itself, re-executed with an environment variable, killed when it outlives its deadline), so
//! that a crash, an abort or a hang of libsda is a finding the parent reports instead of the end of
//! the test run.
//!
//! Sizes: the bounded size runs in `make test`; `SDA_RELIABILITY_LONG=1` (set by `make reliability`,
//! i.e. `scripts/reliability.sh --long`) selects the long one; a test-specific variable overrides both.
//! With `SDA_RELIABILITY_RESULTS=<file>` each test appends its RELIABILITY.md row to that file (one
//! tab-separated line: item, what was tried, how many times, the result), from which the script
//! writes the table.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Whether the long run was asked for.
pub fn long_run() -> bool {
    std::env::var("SDA_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

/// A count: `$var` when set, else the long or the bounded size.
pub fn size(var: &str, bounded: u64, long: u64) -> u64 {
    if let Some(v) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
        return v;
    }
    if long_run() {
        long
    } else {
        bounded
    }
}

/// Appends this test's row of RELIABILITY.md to `$SDA_RELIABILITY_RESULTS`, when set.
pub fn record(item: &str, tried: &str, count: &str, result: &str) {
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        clean(item),
        clean(tried),
        clean(count),
        clean(result)
    );
    print!("ROW {line}");
    if let Ok(path) = std::env::var("SDA_RELIABILITY_RESULTS") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot append to {path}: {e}"));
        f.write_all(line.as_bytes()).unwrap();
    }
}

/// A small, seeded, reproducible random source (splitmix64). A dozen lines instead of a dependency:
/// the tests need reproducible numbers from a printed seed, nothing statistical.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A seed from `$var`, else from the clock (printed by the caller, so that a failure can be replayed).
pub fn seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// The directory of the test binary's build profile (`target/debug`), where the backend module is.
pub fn profile_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

/// The backend module the tests load (`target/debug/libsda_torch.so`).
pub fn backend_module() -> std::path::PathBuf {
    let p = profile_dir().join("libsda_torch.so");
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build --workspace --features sda/test-hooks)",
        p.display()
    );
    p
}

/// Compiles a C source into a shared object with the system's C compiler.
pub fn compile_shared_object(source: &str, out: &Path, extra: &[&str]) {
    let dir = out.parent().unwrap();
    let src = dir.join(format!("{}.c", out.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&src, source).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(out)
        .arg(&src)
        .args(extra)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(status.success(), "{cc} failed for {}", src.display());
}
