//! Host facts: CPU brand and cores, RAM, the cgroup memory limit, native bf16/fp16 support, and fresh
//! memory figures.
//!
//! Facts that cannot change while the process runs are gathered once ([`static_facts`]). Memory
//! figures are read fresh on every call ([`memory_now`]), which sits on hot paths (budgets, probes,
//! `sda_memory_info`), so on Linux it reads `/proc/meminfo`, `/proc/self/statm` and the cgroup files
//! straight into stack buffers and parses them without allocating, instead of a sysinfo refresh.
//!
//! Inside a container `/proc/meminfo` shows the whole machine, while the kernel kills the container
//! at its cgroup limit: the figures therefore take the smaller of the two, so that a probe budget is
//! never computed from memory the process may not use.
//!
//! Everything here is compiled on every OS: whether `/proc` and cgroups exist is a constant of the
//! platform layer ([`crate::platform::HAS_PROC_FS`]); without them (macOS, Windows) the figures come
//! from sysinfo and there is no cgroup limit.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Facts about the host that do not change while the process runs, gathered once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostStatic {
    /// CPU model name, e.g. "AMD Ryzen 9 7950X 16-Core Processor"; "unknown CPU" when the OS does
    /// not say.
    pub cpu_brand: String,
    /// Logical CPUs (hardware threads) of the machine.
    pub logical_cores: u32,
    /// Physical cores of the machine, when the OS reports them.
    pub physical_cores: Option<u32>,
    /// CPUs this process may actually run on (affinity mask and cgroup CPU quota applied): what a
    /// CPU worker plan should size itself by.
    pub usable_cores: u32,
    /// Installed RAM in bytes.
    pub ram_total: u64,
    /// The memory limit of the process's cgroup (the tightest one on its path), if any.
    pub cgroup_memory_limit: Option<u64>,
    /// The CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; Arm BF16).
    pub bf16_native: bool,
    /// The CPU computes float16 natively (x86 AVX512-FP16 or AMX-FP16; Arm FP16 arithmetic).
    pub fp16_native: bool,
    /// Where [`memory_now`] reads the cgroup's current usage (empty when there is no limit).
    cgroup: Vec<CgroupLimit>,
    /// Bytes per page, for `/proc/self/statm`.
    page_size: u64,
}

/// One cgroup directory on the process's path that sets a memory limit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CgroupLimit {
    dir: PathBuf,
    limit: u64,
    version: CgroupVersion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    fn limit_file(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }
    }
    fn usage_file(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        }
    }
    /// The `memory.stat` field of page cache the kernel reclaims first (v1 reports the hierarchical
    /// total under its own name).
    fn inactive_file_key(self) -> &'static [u8] {
        match self {
            CgroupVersion::V1 => b"total_inactive_file",
            CgroupVersion::V2 => b"inactive_file",
        }
    }
}

/// Memory figures at one instant, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostMemory {
    /// Memory this process may use in all: installed RAM, or the cgroup limit when smaller.
    pub total: u64,
    /// Memory that can still be allocated without swapping or hitting the cgroup limit: the kernel's
    /// `MemAvailable`, or what is left under the cgroup limit when that is smaller.
    pub available: u64,
    /// Resident set size of this process.
    pub process_rss: u64,
}

/// The host facts, gathered on the first call and cached for the life of the process.
pub fn static_facts() -> &'static HostStatic {
    static FACTS: OnceLock<HostStatic> = OnceLock::new();
    FACTS.get_or_init(gather_static)
}

/// The CPU brand string (the "name" of the CPU device): sysinfo's, else `/proc/cpuinfo`'s
/// "model name", else "unknown CPU".
pub fn cpu_brand() -> &'static str {
    &static_facts().cpu_brand
}

/// Memory figures now. Cheap enough for hot paths on Linux (a few small file reads, no heap
/// allocation); elsewhere it asks sysinfo.
pub fn memory_now() -> HostMemory {
    let facts = static_facts();
    if crate::platform::HAS_PROC_FS {
        proc_memory_now(facts)
    } else {
        other_memory_now(facts)
    }
}

/// Resets the process's peak resident set (`VmHWM`) to its current size and returns that size.
///
/// Linux only (`/proc/self/clear_refs`, value 5); this is process-wide, so only explicit measuring
/// operations (batch probes) use it. Returns 0 where unsupported.
pub fn reset_peak_rss() -> u64 {
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        return 0;
    }
    peak_rss()
}

/// The process's peak resident set (`VmHWM`) in bytes since start or the last [`reset_peak_rss`];
/// 0 where unsupported.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let kb = l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim();
                kb.parse::<u64>().ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// Mean wall time of one [`memory_now`] call over `iterations` calls (at least one), for benchmarks
/// and `sda doctor`.
pub fn time_memory_now(iterations: u32) -> Duration {
    let n = iterations.max(1);
    let _ = static_facts();
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(memory_now());
    }
    start.elapsed() / n
}

fn gather_static() -> HostStatic {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpuinfo = read_to_string_lossy("/proc/cpuinfo").unwrap_or_default();

    let sysinfo_brand = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_owned())
        .unwrap_or_default();
    let cpu_brand = if !sysinfo_brand.is_empty() {
        sysinfo_brand
    } else {
        cpuinfo_model_name(&cpuinfo).unwrap_or_else(|| "unknown CPU".to_owned())
    };

    let usable_cores = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let logical_cores = match u32::try_from(sys.cpus().len()) {
        Ok(n) if n > 0 => n,
        _ => usable_cores,
    };
    let physical_cores = sys
        .physical_core_count()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0);

    let (bf16_native, fp16_native) = cpu_half_precision(&cpuinfo);
    let cgroup = detect_cgroup_limits();
    let cgroup_memory_limit = cgroup.iter().map(|c| c.limit).min();

    HostStatic {
        cpu_brand,
        logical_cores,
        physical_cores,
        usable_cores,
        ram_total: sys.total_memory(),
        cgroup_memory_limit,
        bf16_native,
        fp16_native,
        cgroup,
        page_size: page_size(),
    }
}

fn page_size() -> u64 {
    crate::platform::page_size()
}

fn read_to_string_lossy(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The first "model name" of `/proc/cpuinfo` (x86, and some Arm kernels).
fn cpuinfo_model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_owned())
    })
}

/// Native (bf16, fp16) arithmetic from the CPU feature list: the x86 `flags` line or the Arm
/// `Features` line of `/proc/cpuinfo`. fp16 *conversion* (x86 F16C) does not count: it does not make
/// half-precision compute faster.
fn cpu_half_precision(cpuinfo: &str) -> (bool, bool) {
    let features = cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "flags" | "Features").then_some(value)
    });
    let (mut bf16, mut fp16) = (false, false);
    for flag in features.unwrap_or("").split_whitespace() {
        match flag {
            "avx512_bf16" | "amx_bf16" | "bf16" => bf16 = true,
            "avx512_fp16" | "amx_fp16" | "fphp" | "asimdhp" => fp16 = true,
            _ => {}
        }
    }
    // macOS and Windows have no /proc/cpuinfo; the platform layer asks the OS there.
    let (os_bf16, os_fp16) = crate::platform::os_half_precision();
    (bf16 | os_bf16, fp16 | os_fp16)
}

// ---------------------------------------------------------------------------------------------
// cgroups
// ---------------------------------------------------------------------------------------------

/// cgroup v1 writes "unlimited" as LONG_MAX rounded down to a page (9223372036854771712); anything
/// this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// A limit file's value: `None` for "max" (v2), a v1 "unlimited" number, or unreadable text.
fn parse_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&n| n < V1_UNLIMITED)
}

/// The process's cgroup path for memory from `/proc/self/cgroup`: the v1 line whose controller
/// list names `memory`, and the v2 (`0::`) line.
fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v1, mut v2) = (None, None);
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_owned());
        }
    }
    (v1, v2)
}

/// A cgroup mount from `/proc/self/mountinfo`: its root inside the hierarchy and its mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: String,
}

/// The v1 memory-controller mount and the v2 mount from `/proc/self/mountinfo`.
fn parse_mountinfo(text: &str) -> (Option<CgroupMount>, Option<CgroupMount>) {
    let (mut v1, mut v2) = (None, None);
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let (Some(fstype), _, Some(super_options)) = (right.next(), right.next(), right.next())
        else {
            continue;
        };
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let mount = CgroupMount {
            root: unescape_mountinfo(root),
            mount_point: unescape_mountinfo(mount_point),
        };
        if fstype == "cgroup2" && v2.is_none() {
            v2 = Some(mount);
        } else if fstype == "cgroup"
            && v1.is_none()
            && super_options.split(',').any(|o| o == "memory")
        {
            v1 = Some(mount);
        }
    }
    (v1, v2)
}

/// mountinfo writes space, tab, newline and backslash as 3-digit octal escapes (`\040`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(value) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of the process's cgroup: the mount point plus the cgroup path relative to the
/// mount's root (a container sees only its own subtree, mounted with that subtree as root).
fn cgroup_dir(mount: &CgroupMount, cgroup_path: &str) -> PathBuf {
    let root = mount.root.trim_end_matches('/');
    let relative = cgroup_path
        .strip_prefix(root)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(cgroup_path);
    let mut dir = PathBuf::from(&mount.mount_point);
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    dir
}

/// The directories on the path from the process's cgroup up to the mount point that set a memory
/// limit (a parent's limit binds its children too).
fn limits_on_path(leaf: &Path, mount_point: &Path, version: CgroupVersion) -> Vec<CgroupLimit> {
    let mut found = Vec::new();
    let mut dir = Some(leaf);
    while let Some(d) = dir {
        if !d.starts_with(mount_point) {
            break;
        }
        if let Some(limit) = std::fs::read_to_string(d.join(version.limit_file()))
            .ok()
            .as_deref()
            .and_then(parse_limit)
        {
            found.push(CgroupLimit {
                dir: d.to_path_buf(),
                limit,
                version,
            });
        }
        if d == mount_point {
            break;
        }
        dir = d.parent();
    }
    found
}

fn detect_cgroup_limits() -> Vec<CgroupLimit> {
    // cgroups are Linux's; elsewhere there is no limit to find.
    if !crate::platform::HAS_PROC_FS {
        return Vec::new();
    }
    let Some(proc_cgroup) = read_to_string_lossy("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mountinfo = read_to_string_lossy("/proc/self/mountinfo").unwrap_or_default();
    let (path_v1, path_v2) = parse_proc_cgroup(&proc_cgroup);
    let (mount_v1, mount_v2) = parse_mountinfo(&mountinfo);
    // On hybrid hosts the v1 memory controller, when mounted, is the one that enforces limits.
    let (mount, path, version) = match (mount_v1, path_v1, mount_v2, path_v2) {
        (Some(m), Some(p), _, _) => (m, p, CgroupVersion::V1),
        (_, _, Some(m), Some(p)) => (m, p, CgroupVersion::V2),
        _ => return Vec::new(),
    };
    let mount_point = PathBuf::from(&mount.mount_point);
    let leaf = cgroup_dir(&mount, &path);
    // With an unusual namespace layout the computed directory may not exist: the mount point is then
    // the process's own cgroup as far as it can see.
    let leaf = if leaf.is_dir() {
        leaf
    } else {
        mount_point.clone()
    };
    limits_on_path(&leaf, &mount_point, version)
}

// ---------------------------------------------------------------------------------------------
// fresh figures (Linux)
// ---------------------------------------------------------------------------------------------

/// Reads up to `buf.len()` bytes of a file into `buf` without allocating; returns the filled part.
fn read_small<'a>(path: &Path, buf: &'a mut [u8]) -> Option<&'a [u8]> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(&buf[..filled])
}

/// Parses an unsigned decimal at the start of `bytes` (after spaces).
fn leading_u64(bytes: &[u8]) -> Option<u64> {
    let start = bytes.iter().position(|b| *b != b' ' && *b != b'\t')?;
    let digits = &bytes[start..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    digits[..len].iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The number after `key` on the line that starts with `key` followed by `sep` (`MemAvailable:`
/// in meminfo, `inactive_file ` in memory.stat).
fn field_value(text: &[u8], key: &[u8], sep: u8) -> Option<u64> {
    text.split(|b| *b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(&[sep])?;
        leading_u64(rest)
    })
}

/// (MemTotal, MemAvailable) in bytes from `/proc/meminfo` text. Kernels older than 3.14 have no
/// MemAvailable; MemFree + Buffers + Cached stands in for it there.
fn parse_meminfo(text: &[u8]) -> Option<(u64, u64)> {
    let kib = |key: &[u8]| field_value(text, key, b':').map(|v| v.saturating_mul(1024));
    let total = kib(b"MemTotal")?;
    let available = kib(b"MemAvailable").or_else(|| {
        Some(
            kib(b"MemFree")?
                .saturating_add(kib(b"Buffers").unwrap_or(0))
                .saturating_add(kib(b"Cached").unwrap_or(0)),
        )
    })?;
    Some((total, available))
}

/// Resident pages (the second field) from `/proc/self/statm`.
fn parse_statm_resident(text: &[u8]) -> Option<u64> {
    let mut fields = text
        .split(|b| *b == b' ' || *b == b'\n')
        .filter(|f| !f.is_empty());
    fields.next()?;
    leading_u64(fields.next()?)
}

/// What is left under a cgroup limit: the limit minus the usage that cannot be reclaimed at once.
/// The usage counters include page cache; inactive file pages are dropped before the kernel kills
/// anything, so they count as available (the working set Kubernetes evicts by).
fn cgroup_available(limit: u64, usage: u64, inactive_file: u64) -> u64 {
    limit.saturating_sub(usage.saturating_sub(inactive_file))
}

/// Memory figures from `/proc` and the cgroup files (Linux).
fn proc_memory_now(facts: &HostStatic) -> HostMemory {
    let mut buf = [0u8; 8192];

    let (ram_total, mut available) = read_small(Path::new("/proc/meminfo"), &mut buf[..2048])
        .and_then(parse_meminfo)
        .unwrap_or_else(sysinfo_memory);
    let mut total = ram_total;

    for cgroup in &facts.cgroup {
        total = total.min(cgroup.limit);
        let usage = read_small(
            &cgroup.dir.join(cgroup.version.usage_file()),
            &mut buf[..64],
        )
        .and_then(leading_u64);
        let Some(usage) = usage else {
            continue;
        };
        if cgroup.limit.saturating_sub(usage) >= available {
            // Not the binding figure even before crediting reclaimable cache: skip memory.stat,
            // the most expensive read here.
            continue;
        }
        let inactive = read_small(&cgroup.dir.join("memory.stat"), &mut buf)
            .and_then(|stat| field_value(stat, cgroup.version.inactive_file_key(), b' '))
            .unwrap_or(0);
        available = available.min(cgroup_available(cgroup.limit, usage, inactive));
    }

    let process_rss = read_small(Path::new("/proc/self/statm"), &mut buf[..256])
        .and_then(parse_statm_resident)
        .map_or(0, |pages| pages.saturating_mul(facts.page_size));

    HostMemory {
        total,
        available: available.min(total),
        process_rss,
    }
}

/// Total and available RAM through sysinfo: the fallback when `/proc/meminfo` cannot be read.
fn sysinfo_memory() -> (u64, u64) {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
    (sys.total_memory(), sys.available_memory())
}

/// Memory figures from sysinfo, where there is no `/proc` (macOS, Windows).
fn other_memory_now(facts: &HostStatic) -> HostMemory {
    let (total, available) = sysinfo_memory();
    let mut sys = sysinfo::System::new();
    let process_rss = sysinfo::get_current_pid()
        .ok()
        .and_then(|pid| {
            sys.refresh_processes_specifics(
                sysinfo::ProcessesToUpdate::Some(&[pid]),
                false,
                sysinfo::ProcessRefreshKind::nothing().with_memory(),
            );
            sys.process(pid).map(|p| p.memory())
        })
        .unwrap_or(0);
    let total = match facts.cgroup_memory_limit {
        Some(limit) => total.min(limit),
        None => total,
    };
    HostMemory {
        total,
        available: available.min(total),
        process_rss,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &[u8] = b"MemTotal:       24684084 kB\n\
MemFree:        23272012 kB\n\
MemAvailable:   24042568 kB\n\
Buffers:            3564 kB\n\
Cached:           936972 kB\n\
SwapCached:            0 kB\n";

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Some((24_684_084 * 1024, 24_042_568 * 1024))
        );
        // Old kernels: no MemAvailable.
        let old = b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 1 kB\n";
        assert_eq!(parse_meminfo(old), Some((1_024_000, 111 * 1024)));
        assert_eq!(parse_meminfo(b""), None);
        assert_eq!(parse_meminfo(b"MemTotalish: 5 kB\n"), None);
        // A prefix of another key does not match ("MemAvailable" vs "MemAvailableX").
        assert_eq!(
            field_value(b"MemFreeX: 1 kB\nMemFree: 2 kB\n", b"MemFree", b':'),
            Some(2)
        );
    }

    #[test]
    fn statm_resident_field() {
        assert_eq!(parse_statm_resident(b"12345 678 90 1 0 400 0\n"), Some(678));
        assert_eq!(parse_statm_resident(b"12345"), None);
        assert_eq!(parse_statm_resident(b""), None);
    }

    #[test]
    fn cgroup_limits_max_and_v1_unlimited_are_none() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("9223372036854775807"), None);
        assert_eq!(parse_limit("8589934592\n"), Some(8 << 30));
        assert_eq!(parse_limit("garbage"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn cgroup_available_subtracts_only_the_working_set() {
        assert_eq!(cgroup_available(8 << 30, 6 << 30, 1 << 30), 3 << 30);
        assert_eq!(cgroup_available(8 << 30, 9 << 30, 0), 0);
        assert_eq!(cgroup_available(8 << 30, 1 << 30, 2 << 30), 8 << 30);
        let stat = b"anon 100\nfile 2000\nactive_file 500\ninactive_file 1500\n";
        assert_eq!(field_value(stat, b"inactive_file", b' '), Some(1500));
        let v1 = b"cache 10\ninactive_file 7\ntotal_inactive_file 1500\n";
        assert_eq!(
            field_value(v1, CgroupVersion::V1.inactive_file_key(), b' '),
            Some(1500)
        );
    }

    #[test]
    fn proc_self_cgroup_v1_v2_and_hybrid() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            (Some("/process_api/abc".into()), Some("/".into()))
        );
        let v2 = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            parse_proc_cgroup(v2),
            (
                None,
                Some("/user.slice/user-1000.slice/session-2.scope".into())
            )
        );
        let combined = "5:cpuacct,memory,cpu:/docker/x\n";
        assert_eq!(parse_proc_cgroup(combined).0, Some("/docker/x".into()));
    }

    #[test]
    fn mountinfo_finds_cgroup_mounts() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let (v1, v2) = parse_mountinfo(text);
        let v1 = v1.unwrap();
        assert_eq!(v1.root, "/docker/abc");
        assert_eq!(v1.mount_point, "/sys/fs/cgroup/memory");
        assert_eq!(v2.unwrap().mount_point, "/sys/fs/cgroup/unified");
        // A container sees its own subtree mounted as root.
        assert_eq!(
            cgroup_dir(&v1, "/docker/abc"),
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(
            cgroup_dir(&v1, "/docker/abc/inner"),
            PathBuf::from("/sys/fs/cgroup/memory/inner")
        );
        let root_mount = CgroupMount {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup".into(),
        };
        assert_eq!(
            cgroup_dir(&root_mount, "/user.slice/a.scope"),
            PathBuf::from("/sys/fs/cgroup/user.slice/a.scope")
        );
        assert_eq!(
            cgroup_dir(&root_mount, "/"),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert_eq!(unescape_mountinfo("/a\\040b\\134"), "/a b\\");
        assert_eq!(unescape_mountinfo("/x\\04"), "/x\\04");
    }

    #[test]
    fn limits_on_path_walks_up_to_the_mount_point() {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("memory");
        let leaf = mount.join("a/b");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(mount.join("memory.max"), "max\n").unwrap();
        std::fs::write(mount.join("a/memory.max"), "4294967296\n").unwrap();
        std::fs::write(leaf.join("memory.max"), "max\n").unwrap();
        // Above the mount point: never read.
        std::fs::write(root.path().join("memory.max"), "1\n").unwrap();
        let found = limits_on_path(&leaf, &mount, CgroupVersion::V2);
        assert_eq!(
            found,
            vec![CgroupLimit {
                dir: mount.join("a"),
                limit: 4 << 30,
                version: CgroupVersion::V2
            }]
        );
    }

    #[test]
    fn cpu_feature_flags() {
        let x86 = "processor : 0\nflags\t\t: fpu sse avx512_bf16 amx_bf16 avx512_fp16 f16c\n";
        assert_eq!(cpu_half_precision(x86), (true, true));
        let x86_old = "flags : fpu sse avx2 f16c\n";
        assert_eq!(cpu_half_precision(x86_old), (false, false));
        let arm = "processor : 0\nFeatures : fp asimd evtstrm aes fphp asimdhp bf16\n";
        assert_eq!(cpu_half_precision(arm), (true, true));
        let arm_a72 = "Features\t: fp asimd evtstrm crc32 cpuid\n";
        assert_eq!(cpu_half_precision(arm_a72), (false, false));
        assert_eq!(
            cpuinfo_model_name("processor : 0\nmodel name\t: Intel(R) Xeon(R)\n"),
            Some("Intel(R) Xeon(R)".to_owned())
        );
        assert_eq!(cpuinfo_model_name("model name :   \n"), None);
    }

    #[test]
    fn static_facts_are_sane_and_cached() {
        let a = static_facts();
        let b = static_facts();
        assert!(std::ptr::eq(a, b));
        assert!(!a.cpu_brand.is_empty());
        assert_eq!(cpu_brand(), a.cpu_brand);
        assert!(a.logical_cores >= 1);
        assert!(a.usable_cores >= 1);
        assert!(a.ram_total > 0);
        if let Some(p) = a.physical_cores {
            assert!(p <= a.logical_cores);
        }
        assert!(a.page_size >= 4096);
        assert_eq!(
            a.cgroup_memory_limit,
            a.cgroup.iter().map(|c| c.limit).min()
        );
        if crate::platform::HAS_PROC_FS {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            assert_eq!((a.bf16_native, a.fp16_native), cpu_half_precision(&cpuinfo));
        }
    }

    #[test]
    fn the_sysinfo_figures_of_macos_and_windows_are_sane_here_too() {
        // The path macOS and Windows take, run on this machine against the /proc one.
        let facts = static_facts();
        let other = other_memory_now(facts);
        assert!(
            other.total > 0 && other.available <= other.total,
            "{other:?}"
        );
        assert!(other.process_rss > 0, "{other:?}");
        if let Some(limit) = facts.cgroup_memory_limit {
            assert!(other.total <= limit);
        }
    }

    #[test]
    fn memory_now_is_fresh_and_consistent() {
        let facts = static_facts();
        let m = memory_now();
        assert!(m.total > 0);
        assert!(m.total <= facts.ram_total.max(m.total));
        if let Some(limit) = facts.cgroup_memory_limit {
            assert!(m.total <= limit);
        }
        assert!(m.available <= m.total);
        assert!(m.process_rss > 0);
        // Touching 64 MiB raises the RSS by about that much.
        let before = memory_now().process_rss;
        let block = vec![1u8; 64 << 20];
        let after = memory_now().process_rss;
        std::hint::black_box(&block);
        assert!(after >= before + (32 << 20), "{before} -> {after}");
    }

    #[test]
    fn memory_now_is_cheap() {
        let per_call = time_memory_now(2000);
        // The target is 50 µs in release builds; an unoptimised test build on a busy machine gets
        // generous slack so that this only catches an accidental full sysinfo refresh (milliseconds).
        assert!(per_call < Duration::from_micros(1000), "{per_call:?}");
    }
}
