//! The current test binary run again as a child process, for work that must not take the test run
//! down with it or that needs a process of its own: real out-of-memory errors under `RLIMIT_AS`, a
//! crash or hang of libsda reported as a finding, a panic hook watched from outside.
//!
//! The parent describes the child with [`ChildRun`] (which test, the environment variable that tells
//! it that it is the child, extra environment, an address-space budget, a deadline) and gets a
//! [`ChildOutcome`]. The child, recognised by [`is_child`], warms up and then calls
//! [`apply_address_space_budget`] before the work, so that the limit is what it holds then plus the
//! budget the parent chose.
//!
//! Every child runs with `MALLOC_ARENA_MAX=1`: `RLIMIT_AS` counts reserved address space, and glibc
//! reserves 64 MiB for each new thread arena the first time a thread allocates, at a moment no
//! warm-up can pin down. With one arena the limit measures memory in use, not how many threads
//! happened to allocate (it once decided the "true maximum" of the probe tests instead of memory).
//!
//! ```no_run
//! use sda_testkit::child::{self, ChildRun};
//! use sda_testkit::memory::MIB;
//! use std::time::Duration;
//!
//! #[test]
//! fn fails_for_real_under_a_limit() {
//!     if child::is_child("MY_CHILD") {
//!         // ... warm up ...
//!         child::apply_address_space_budget();
//!         // ... the work that must meet the limit ...
//!         return;
//!     }
//!     ChildRun::test("fails_for_real_under_a_limit", "MY_CHILD")
//!         .address_space_budget(768 * MIB)
//!         .deadline(Duration::from_secs(120))
//!         .run()
//!         .assert_success("the limited child");
//! }
//! ```

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The variable that carries the parent's address-space budget (bytes) to the child.
const BUDGET_VAR: &str = "SDA_TESTKIT_ADDRESS_SPACE_BUDGET";

/// glibc's tunable for the number of heap arenas; see the module documentation for why it is 1.
const ARENA_VAR: &str = "MALLOC_ARENA_MAX";

/// How long a child may run when the test names no deadline of its own: long enough for the long
/// reliability sizes, short enough that a hung child ends the test instead of the CI job.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// How much of the child's stdout and stderr a failure message quotes (the ends, where the panic is).
const TAIL_BYTES: usize = 4000;

/// A child process to run: the current executable again, with the arguments, environment, budget
/// and deadline set here. Built like [`std::process::Command`] (`&mut self` setters), run with
/// [`ChildRun::run`].
#[derive(Debug, Clone)]
pub struct ChildRun {
    /// Arguments for the current executable (a test filter, or none for a `harness = false` bench).
    args: Vec<String>,
    /// Variables to set (`Some`) or remove (`None`), in the order the test gave them.
    env: Vec<(OsString, Option<OsString>)>,
    /// Address space the child may add after warming up, bytes; `None`: no limit.
    budget: Option<u64>,
    /// When the child is killed.
    deadline: Duration,
    /// What the child is, for messages: the test's name, or the bench.
    name: String,
}

impl ChildRun {
    /// The test `test_name` of the current test binary, alone (`--exact`, one test thread, output
    /// not captured so that the parent sees it), with `role` set to `1` so that the test knows it is
    /// the child (see [`is_child`]).
    pub fn test(test_name: &str, role: &str) -> ChildRun {
        let args = ["--exact", test_name, "--nocapture", "--test-threads", "1"];
        ChildRun::new(args.map(String::from).to_vec(), role, test_name)
    }

    /// The current executable with no arguments, for a `harness = false` bench whose `main` looks at
    /// `role` (set to `1`) to know that it is the child.
    pub fn main(role: &str) -> ChildRun {
        let exe = std::env::current_exe().map(|p| p.display().to_string());
        ChildRun::new(Vec::new(), role, &exe.unwrap_or_else(|_| "main".into()))
    }

    fn new(args: Vec<String>, role: &str, name: &str) -> ChildRun {
        ChildRun {
            args,
            env: vec![(role.into(), Some("1".into()))],
            budget: None,
            deadline: DEFAULT_DEADLINE,
            name: name.to_string(),
        }
    }

    /// Sets `key` to `value` in the child's environment (after what was set before).
    /// `MALLOC_ARENA_MAX` cannot be changed this way: it is always 1.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut ChildRun {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes `key` from the child's environment (it inherits the parent's otherwise).
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut ChildRun {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Lets the child limit its address space to what it holds after warming up plus `bytes`, when
    /// it calls [`apply_address_space_budget`]; its allocations beyond then fail for real.
    pub fn address_space_budget(&mut self, bytes: u64) -> &mut ChildRun {
        self.budget = Some(bytes);
        self
    }

    /// Kills the child (SIGKILL) when it runs longer than `deadline`; the outcome then says HUNG.
    /// [`DEFAULT_DEADLINE`] when not set.
    pub fn deadline(&mut self, deadline: Duration) -> &mut ChildRun {
        self.deadline = deadline;
        self
    }

    /// The command this describes, for a test that drives the child itself (reads its output while
    /// it runs, kills it at a moment of its choosing). Its deadline is then the test's business.
    pub fn command(&self) -> Command {
        let exe = std::env::current_exe().expect("the path of the current executable");
        let mut cmd = Command::new(exe);
        cmd.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        match self.budget {
            Some(bytes) => cmd.env(BUDGET_VAR, bytes.to_string()),
            // A parent that is itself a limited child does not hand its budget down.
            None => cmd.env_remove(BUDGET_VAR),
        };
        // Last, so that nothing above can undo it.
        cmd.env(ARENA_VAR, "1");
        cmd
    }

    /// Runs the child to its end or its deadline, with stdout and stderr captured.
    pub fn run(&self) -> ChildOutcome {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the child {}: {e}", self.name));
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let (status, timed_out) = wait_until(&mut child, started + self.deadline);
        ChildOutcome {
            name: self.name.clone(),
            status,
            timed_out,
            stdout: stdout.join().expect("the stdout reader"),
            stderr: stderr.join().expect("the stderr reader"),
            elapsed: started.elapsed(),
            deadline: self.deadline,
        }
    }
}

/// Reads `r` to its end on a thread of its own, so that a child never blocks on a full pipe while
/// the parent waits for it.
fn drain(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` until `deadline` and kills it (SIGKILL) then; `true` when it had to be killed.
fn wait_until(child: &mut Child, deadline: Instant) -> (Option<ExitStatus>, bool) {
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return (Some(status), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return (child.wait().ok(), true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a child did: how it ended and what it printed.
#[derive(Debug, Clone)]
pub struct ChildOutcome {
    /// What the child was (its test's name), for messages.
    pub name: String,
    /// How it ended (`None` if even waiting for it failed).
    pub status: Option<ExitStatus>,
    /// Whether it outlived its deadline and was killed.
    pub timed_out: bool,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// The deadline it ran under.
    pub deadline: Duration,
}

impl ChildOutcome {
    /// Whether it ended by itself with exit status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// How it ended (HUNG, CRASHED by a signal, or its exit status) and the ends of its output, for
    /// assertion messages.
    pub fn describe(&self) -> String {
        let how = if self.timed_out {
            format!(
                "HUNG: killed after {:.1} s (its deadline: {} s)",
                self.elapsed.as_secs_f64(),
                self.deadline.as_secs()
            )
        } else {
            match self.status {
                Some(s) => match s.signal() {
                    Some(signal) => format!("CRASHED: killed by signal {signal}"),
                    None => format!("exit status {}", s.code().unwrap_or(-1)),
                },
                None => "ended in an unknown way".into(),
            }
        };
        format!(
            "child {}: {how}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.name,
            tail(&self.stdout, TAIL_BYTES),
            tail(&self.stderr, TAIL_BYTES)
        )
    }

    /// Fails the test, saying `what` and [`ChildOutcome::describe`], unless the child succeeded.
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &ChildOutcome {
        assert!(self.success(), "{what}: {}", self.describe());
        self
    }

    /// The child's last `RESULT` line (from the word `RESULT` on): how a child hands its figures to
    /// the parent (`RESULT runs=3 ratio=0.97`). The word need not start the line: the test harness
    /// writes `test NAME ... ` before the first thing a test prints, on the same line.
    pub fn result_line(&self) -> Option<&str> {
        self.stdout
            .lines()
            .rev()
            .find_map(|l| l.find("RESULT ").map(|at| &l[at..]))
    }

    /// The value of `key=` in the child's [`ChildOutcome::result_line`].
    pub fn field(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.result_line()?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&prefix))
            .map(str::to_string)
    }

    /// [`ChildOutcome::field`] parsed, failing the test with the child's output when it is missing
    /// or does not parse.
    #[track_caller]
    pub fn parsed_field<T: std::str::FromStr>(&self, key: &str) -> T {
        let value = self.field(key);
        match value.as_deref().map(str::parse) {
            Some(Ok(v)) => v,
            _ => panic!(
                "RESULT field {key}: {value:?} does not parse: {}",
                self.describe()
            ),
        }
    }
}

/// The last `n` bytes of `text` (or a little less, at a character boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Whether this process is the child that [`ChildRun`] started with `role`: the test calls it first
/// and does the child's work instead of the parent's when it is true.
pub fn is_child(role: &str) -> bool {
    std::env::var_os(role).is_some()
}

/// The address-space budget the parent gave this child ([`ChildRun::address_space_budget`]), bytes;
/// `None` when it gave none (or this is no child).
pub fn address_space_budget() -> Option<u64> {
    let value = std::env::var(BUDGET_VAR).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{BUDGET_VAR}={value}: {e}")),
    )
}

/// In the child, after its warm-up and before the work: limits the address space to what the
/// process holds now plus the parent's budget, and returns that limit; does nothing and returns
/// `None` when the parent gave no budget.
///
/// Warming up first matters: libtorch's libraries, its thread pool and their stacks take address
/// space once, and the budget is meant for the work, not for them.
pub fn apply_address_space_budget() -> Option<u64> {
    let budget = address_space_budget()?;
    assert_eq!(
        std::env::var(ARENA_VAR).as_deref(),
        Ok("1"),
        "{ARENA_VAR}=1 is missing: under RLIMIT_AS each glibc thread arena reserves 64 MiB, and the \
         limit would measure arenas instead of memory (start children with ChildRun)"
    );
    let limit = crate::memory::vm_size() + budget;
    limit_address_space(limit);
    Some(limit)
}

/// Limits this process's address space to `bytes` (`RLIMIT_AS`, soft limit; the hard limit stays
/// unlimited): allocations beyond it fail as on a machine without more memory.
pub fn limit_address_space(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the rlimit struct through the pointer only during the call; `limit` is
    // a fully initialised local that outlives it. RLIMIT_AS is a valid resource for this process.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    assert_eq!(
        rc,
        0,
        "setrlimit(RLIMIT_AS, {bytes}): {}",
        std::io::Error::last_os_error()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stdout: &str) -> ChildOutcome {
        ChildOutcome {
            name: "t".into(),
            status: Some(ExitStatus::from_raw(0)),
            timed_out: false,
            stdout: stdout.into(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
            deadline: DEFAULT_DEADLINE,
        }
    }

    #[test]
    fn the_last_result_line_gives_the_fields() {
        let out = outcome("RESULT runs=9\ntest t ... RESULT runs=3 ratio=0.97\nnoise runs=1\n");
        assert_eq!(out.result_line(), Some("RESULT runs=3 ratio=0.97"));
        assert_eq!(out.field("runs").as_deref(), Some("3"));
        assert_eq!(out.parsed_field::<f64>("ratio"), 0.97);
        assert_eq!(out.field("missing"), None);
    }

    #[test]
    fn every_child_gets_one_arena_and_only_its_own_budget() {
        let mut run = ChildRun::test("x", "ROLE");
        run.env(ARENA_VAR, "8").env("A", "1").env_remove("A");
        let cmd = run.command();
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(env.contains(&(OsStr::new(ARENA_VAR), Some(OsStr::new("1")))));
        assert!(env.contains(&(OsStr::new("ROLE"), Some(OsStr::new("1")))));
        assert!(env.contains(&(OsStr::new("A"), None)));
        assert!(env.contains(&(OsStr::new(BUDGET_VAR), None)));
        let cmd = ChildRun::test("x", "ROLE")
            .address_space_budget(5 * crate::memory::MIB)
            .command();
        assert!(cmd
            .get_envs()
            .any(|e| e == (OsStr::new(BUDGET_VAR), Some(OsStr::new("5242880")))));
    }

    /// The role of the children the tests below start (this unit-test binary run again).
    const SELF_TEST: &str = "SDA_TESTKIT_SELF_TEST_CHILD";

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reported_as_hung() {
        if is_child(SELF_TEST) {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let out = ChildRun::test(
            "child::tests::a_child_past_its_deadline_is_killed_and_reported_as_hung",
            SELF_TEST,
        )
        .deadline(Duration::from_millis(500))
        .run();
        assert!(out.timed_out && !out.success(), "{}", out.describe());
        assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
        assert!(out.describe().contains("HUNG"), "{}", out.describe());
    }

    #[test]
    fn a_child_with_a_budget_cannot_allocate_beyond_it() {
        const BUDGET: u64 = 256 * crate::memory::MIB;
        if is_child(SELF_TEST) {
            assert_eq!(address_space_budget(), Some(BUDGET));
            let limit = apply_address_space_budget().unwrap();
            let mut v: Vec<u8> = Vec::new();
            let too_much = v.try_reserve_exact(2 * BUDGET as usize).is_err();
            let mut w: Vec<u8> = Vec::new();
            let fits = w.try_reserve_exact((BUDGET / 4) as usize).is_ok();
            println!("RESULT limit={limit} too_much_failed={too_much} quarter_fits={fits}");
            return;
        }
        let out = ChildRun::test(
            "child::tests::a_child_with_a_budget_cannot_allocate_beyond_it",
            SELF_TEST,
        )
        .address_space_budget(BUDGET)
        .deadline(Duration::from_secs(60))
        .run();
        out.assert_success("the limited child");
        assert!(out.parsed_field::<u64>("limit") > BUDGET);
        assert_eq!(out.field("too_much_failed").as_deref(), Some("true"));
        assert_eq!(out.field("quarter_fits").as_deref(), Some("true"));
    }

    #[test]
    fn a_tail_never_splits_a_character() {
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("aé", 2), "é");
        assert_eq!(tail("abc", 10), "abc");
    }
}
