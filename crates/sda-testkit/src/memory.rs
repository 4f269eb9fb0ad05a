//! This process's memory as the kernel counts it: address space (what `RLIMIT_AS` limits) and
//! resident set (what a leak grows).
//!
//! Read from `/proc/self/status` (`VmSize`, `VmRSS`, in kB), so that no page size has to be asked
//! for. Linux only, like the tests that limit their address space.

/// One mebibyte, the unit the memory tests speak in (budgets, resident sets, limits).
pub const MIB: u64 = 1 << 20;

/// This process's address space (`VmSize`), in bytes: the figure `RLIMIT_AS` is compared with, so a
/// child limits itself to `vm_size() + budget` after warming up.
pub fn vm_size() -> u64 {
    status_kb("VmSize") * 1024
}

/// This process's resident set (`VmRSS`), in bytes: what a leak makes grow from one sample to the
/// next.
pub fn rss() -> u64 {
    status_kb("VmRSS") * 1024
}

/// The value of `field` (a line `field:   N kB`) in `/proc/self/status`.
fn status_kb(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/status: {e}"));
    parse_status_kb(&text, field)
        .unwrap_or_else(|| panic!("no {field} line in /proc/self/status:\n{text}"))
}

/// `field`'s value in kB from the text of a `/proc/<pid>/status` file.
fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if name != field {
            return None;
        }
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_of_a_status_file() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmSize:\t  8192 kB\nVmRSS:\t    512 kB\n";
        assert_eq!(parse_status_kb(text, "VmSize"), Some(8192));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(512));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn this_process_has_an_address_space_larger_than_its_resident_set() {
        let (size, resident) = (vm_size(), rss());
        assert!(resident > 0 && size >= resident, "{size} {resident}");
    }
}
