//! Issue 7, item 5: saving a configuration is crash-safe.
//!
//! A child process saves two configurations in turn (`sda_config_save`, as a host would) until the
//! parent kills it with SIGKILL after a random delay — 200 times. After every kill the file on disk
//! must parse and be byte for byte one of the two contents, old or new, never a mix or a truncation.
//! The delays are spread over a few save durations, measured first, so that kills land in every phase
//! of a save; temporary files left behind prove that a kill landed inside a save (a killed process
//! cannot clean up; they are counted and removed, and never mistaken for the configuration).
//!
//! Then two processes save different configurations to the same path at the same time while the
//! parent reads the file continuously: every read parses and is one complete configuration.
//!
//! Sizes: 200 kills and 2 × 200 concurrent saves in `make test`; 2000 kills and 2 × 2000 saves in
//! `make reliability` (`SDA_CRASH_KILLS`, `SDA_CRASH_SAVES` override).

mod reliability_support;

use reliability_support::{self as rs, Rng};
use sda::config::{sda_config_free, sda_config_load, sda_config_save};
use sda::status::Status;
use sda_core::config::Config;
use sda_testkit::ChildRun;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TEST_KILL: &str = "a_save_killed_at_random_points_leaves_the_old_or_the_new_file";
const TEST_CONCURRENT: &str = "concurrent_saves_from_two_processes_never_tear_the_file";

/// A configuration whose file is large enough (about 30 KB) that writing it is not one tiny step.
fn content(tag: &str, batch: u64) -> String {
    let mut c = Config::default();
    c.set("hardware.max_batch_size", &batch.to_string())
        .unwrap();
    c.set("paths.models", &format!("models/{tag}")).unwrap();
    for i in 0..300 {
        c.set(
            &format!("environment.SDA_CRASH_{tag}_{i:03}"),
            &format!("{tag}-{i}-{}", "x".repeat(64)),
        )
        .unwrap();
    }
    c.to_toml_string()
}

/// Writes each content to a source file the children load, and returns (source path, text).
fn sources(dir: &Path, tags: &[(&str, u64)]) -> Vec<(PathBuf, String)> {
    tags.iter()
        .map(|(tag, batch)| {
            let text = content(tag, *batch);
            let p = dir.join(format!("source-{tag}.toml"));
            std::fs::write(&p, &text).unwrap();
            // What sda_config_save writes is what to_toml_string gives: check the round trip once.
            assert_eq!(Config::load(&p).unwrap().to_toml_string(), text);
            (p, text)
        })
        .collect()
}

fn save_via_abi(source: &Path, target: &Path) {
    let s = CString::new(source.to_str().unwrap()).unwrap();
    let t = CString::new(target.to_str().unwrap()).unwrap();
    let mut config = std::ptr::null_mut();
    assert_eq!(sda_config_load(s.as_ptr(), &mut config), Status::SDA_OK);
    assert_eq!(sda_config_save(config, t.as_ptr()), Status::SDA_OK);
    assert_eq!(sda_config_free(config), Status::SDA_OK);
}

/// The child: loads the configurations named in `SDA_CRASH_SOURCES` and saves them in turn to
/// `SDA_CRASH_TARGET`, `SDA_CRASH_SAVES` times (0 = until killed), saying "ready" first.
fn saver() {
    let target = CString::new(std::env::var("SDA_CRASH_TARGET").unwrap()).unwrap();
    let saves: u64 = std::env::var("SDA_CRASH_SAVES").unwrap().parse().unwrap();
    let configs: Vec<_> = std::env::var("SDA_CRASH_SOURCES")
        .unwrap()
        .split(':')
        .map(|p| {
            let p = CString::new(p).unwrap();
            let mut c = std::ptr::null_mut();
            assert_eq!(sda_config_load(p.as_ptr(), &mut c), Status::SDA_OK);
            c
        })
        .collect();
    println!("SDA_SAVER_READY");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let mut i = 0u64;
    while saves == 0 || i < saves {
        let c = configs[(i % configs.len() as u64) as usize];
        let s = sda_config_save(c, target.as_ptr());
        assert_eq!(s, Status::SDA_OK, "save #{i}");
        i += 1;
    }
}

fn spawn_saver(test: &str, target: &Path, sources: &[&Path], saves: u64) -> Child {
    let joined: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    ChildRun::test(test, "SDA_CRASH_CHILD")
        .env("SDA_CRASH_TARGET", target)
        .env("SDA_CRASH_SOURCES", joined.join(":"))
        .env("SDA_CRASH_SAVES", saves.to_string())
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until the saver says it is ready (60 s at most; a saver that never does is killed).
fn wait_ready(child: &mut Child) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining the pipe after "ready", so that the saver never blocks on it.
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.trim_end().ends_with("SDA_SAVER_READY") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        panic!("the saver did not get ready within 60 s (or ended first)");
    }
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".sda-config-"))
        })
        .collect()
}

/// Which of `allowed` the file at `target` is; panics with the evidence when it is none of them.
fn which(target: &Path, allowed: &[&str], when: &str) -> usize {
    let bytes = std::fs::read(target).unwrap_or_else(|e| panic!("{when}: cannot read: {e}"));
    let text = String::from_utf8(bytes).unwrap_or_else(|_| panic!("{when}: not UTF-8"));
    if let Err(e) = Config::from_toml_str(&text) {
        panic!(
            "{when}: the file does not parse: {e} ({} bytes)",
            text.len()
        );
    }
    allowed
        .iter()
        .position(|a| *a == text)
        .unwrap_or_else(|| panic!("{when}: the file parses but is none of the saved contents"))
}

#[test]
fn a_save_killed_at_random_points_leaves_the_old_or_the_new_file() {
    if std::env::var_os("SDA_CRASH_CHILD").is_some() {
        saver();
        return;
    }
    let kills = rs::size("SDA_CRASH_KILLS", 200, 2000);
    let seed = rs::seed("SDA_CRASH_SEED");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let src = sources(dir.path(), &[("A", 1111), ("B", 2222)]);
    let (a, b) = (&src[0], &src[1]);
    let target = dir.path().join("sda.toml");
    save_via_abi(&a.0, &target);

    // How long one save takes here, so that the random delays cover several saves.
    let started = Instant::now();
    for _ in 0..20 {
        save_via_abi(&b.0, &target);
        save_via_abi(&a.0, &target);
    }
    let save_us = (started.elapsed().as_micros() / 40).max(50) as u64;
    println!("one save: {save_us} µs");

    let allowed = [a.1.as_str(), b.1.as_str()];
    let mut seen = [0u64; 2];
    let mut mid_save = 0u64;
    let run = Instant::now();
    for k in 0..kills {
        let mut child = spawn_saver(TEST_KILL, &target, &[&a.0, &b.0], 0);
        wait_ready(&mut child);
        let delay = rng.below(save_us * 6);
        std::thread::sleep(Duration::from_micros(delay));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "kill #{k}: the saver was not killed");
        seen[which(&target, &allowed, &format!("after kill #{k} ({delay} µs)"))] += 1;
        let left = leftovers(dir.path());
        if !left.is_empty() {
            mid_save += 1;
            for p in left {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
    let secs = run.elapsed().as_secs_f64();
    println!(
        "{kills} kills in {secs:.1} s: file was A {} times, B {} times; {mid_save} kills landed \
         inside a save (temporary file left behind)",
        seen[0], seen[1]
    );
    // The kills must really have hit saves: most of them land while a save is running.
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    assert!(mid_save > 0, "no kill landed inside a save");
    rs::record(
        "5. Crash-safe config",
        "a child saving two ~30 KB configurations in turn (sda_config_save), killed with SIGKILL \
         after a random delay of 0–6 save durations; the file parsed and compared byte for byte",
        &format!("{kills} kills (seed {seed})"),
        &format!(
            "the file always parsed and was the old or the new content (A {} ×, B {} ×), never \
             torn; {mid_save} kills landed inside a save (a temporary file was left behind — \
             removed, never read as the configuration)",
            seen[0], seen[1]
        ),
    );
}

#[test]
fn concurrent_saves_from_two_processes_never_tear_the_file() {
    if std::env::var_os("SDA_CRASH_CHILD").is_some() {
        saver();
        return;
    }
    let saves = rs::size("SDA_CRASH_SAVES", 200, 2000);
    let dir = tempfile::tempdir().unwrap();
    let src = sources(
        dir.path(),
        &[("A", 1), ("C1", 31), ("C2", 32), ("D1", 41), ("D2", 42)],
    );
    let target = dir.path().join("sda.toml");
    save_via_abi(&src[0].0, &target);
    let allowed: Vec<&str> = src.iter().map(|s| s.1.as_str()).collect();

    let mut c = spawn_saver(TEST_CONCURRENT, &target, &[&src[1].0, &src[2].0], saves);
    let mut d = spawn_saver(TEST_CONCURRENT, &target, &[&src[3].0, &src[4].0], saves);
    wait_ready(&mut c);
    wait_ready(&mut d);
    let started = Instant::now();
    let mut reads = 0u64;
    let mut seen = vec![0u64; allowed.len()];
    let deadline = started + Duration::from_secs(120 + saves / 10);
    loop {
        seen[which(
            &target,
            &allowed,
            &format!("read #{reads} during concurrent saves"),
        )] += 1;
        reads += 1;
        let done_c = c.try_wait().unwrap();
        let done_d = d.try_wait().unwrap();
        if let (Some(sc), Some(sd)) = (done_c, done_d) {
            assert!(sc.success() && sd.success(), "a saver failed: {sc} {sd}");
            break;
        }
        assert!(Instant::now() < deadline, "the savers did not finish");
    }
    let final_is = which(&target, &allowed, "after both savers finished");
    assert!(final_is >= 1, "the last save was lost");
    assert!(
        leftovers(dir.path()).is_empty(),
        "temporary files left by savers that finished"
    );
    let secs = started.elapsed().as_secs_f64();
    println!("2 × {saves} saves in {secs:.1} s, {reads} reads: {seen:?}");
    assert!(
        seen[1] + seen[2] > 0 && seen[3] + seen[4] > 0,
        "both savers' files were seen: {seen:?}"
    );
    rs::record(
        "5. Crash-safe config (concurrent)",
        "two processes saving different configurations to the same path at the same time, the \
         parent reading and parsing the file in a loop",
        &format!("2 × {saves} saves, {reads} reads"),
        "every read parsed and was one complete configuration; the last save won; no temporary \
         file left behind",
    );
}
