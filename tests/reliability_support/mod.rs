//! Shared by the reliability tests (`tests/reliability_*.rs`, issue 7): children with a watchdog, the
//! bounded and long sizes of each run, and the rows of RELIABILITY.md.
//!
//! Every test here runs its real work in a child process (the test binary itself, re-executed with an
//! environment variable), so that a crash, an abort or a hang of libsda is a finding the parent reports
//! instead of the end of the test run: the parent kills a child that outlives its deadline.
//!
//! Sizes: the bounded size runs in `make test`; `SDA_RELIABILITY_LONG=1` (set by `make reliability`,
//! i.e. `scripts/reliability.sh --long`) selects the long one; a test-specific variable overrides both.
//! With `SDA_RELIABILITY_RESULTS=<file>` each test appends its RELIABILITY.md row to that file (one
//! tab-separated line: item, what was tried, how many times, the result), from which the script
//! writes the table.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

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

/// What a child did.
pub struct ChildOutcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ChildOutcome {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = if self.timed_out {
            format!("HUNG: killed after {:.1} s", self.elapsed.as_secs_f64())
        } else {
            match self.status {
                Some(s) if s.signal().is_some() => {
                    format!("CRASHED: killed by signal {}", s.signal().unwrap())
                }
                Some(s) => format!("exit status {}", s.code().unwrap_or(-1)),
                None => "unknown".into(),
            }
        };
        format!(
            "{how}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            tail(&self.stdout, 4000),
            tail(&self.stderr, 4000)
        )
    }

    /// The value of `key=` in the child's `RESULT` line.
    pub fn field(&self, key: &str) -> Option<String> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("RESULT"))?;
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    }
}

fn tail(text: &str, n: usize) -> &str {
    if text.len() <= n {
        return text;
    }
    let mut start = text.len() - n;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs the test `test_name` of the current test binary again as a child, with `env` added, and
/// kills it after `deadline`.
pub fn run_self(test_name: &str, env: &[(&str, String)], deadline: Duration) -> ChildOutcome {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test_name, "--nocapture", "--test-threads", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, deadline)
}

/// Runs `cmd` with its output captured, killing it after `deadline`.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> ChildOutcome {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn child");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let (status, timed_out) = wait_until(&mut child, started + deadline);
    ChildOutcome {
        status,
        timed_out,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` until `deadline`; kills it (SIGKILL) after that.
pub fn wait_until(child: &mut Child, deadline: Instant) -> (Option<ExitStatus>, bool) {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().ok(), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn statm_field(i: usize) -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = text.split_whitespace().nth(i).unwrap().parse().unwrap();
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// Address space of this process, bytes.
pub fn vm_size() -> u64 {
    statm_field(0)
}

/// Resident set of this process, bytes.
pub fn rss() -> u64 {
    statm_field(1)
}

/// Limits this process's address space to `bytes` (RLIMIT_AS): allocations beyond fail for real.
pub fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
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
