//! Sizes for people: one place that turns byte counts into text, so that every report, message and
//! command writes a size the same way.
//!
//! Two units on purpose. Memory figures are binary (`1.5 GiB`), as allocators and drivers count.
//! Tier bounds are decimal gigabytes (`39.6 GB`), as the cards they are named after are sold (see
//! [`crate::tiers`]).

/// Bytes per decimal gigabyte (10^9), the unit of auto-configuration tier bounds.
pub const BYTES_PER_GB: f64 = 1e9;

/// `1536 MiB`-style sizes for people: bytes below 1 KiB, else one decimal in the largest binary unit
/// that keeps the number at 1 or above.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A size in decimal gigabytes with one decimal, `39.6 GB`: the unit tier bounds are written in.
pub fn decimal_gb(bytes: u64) -> String {
    format!("{:.1} GB", gigabytes(bytes))
}

/// A size in decimal gigabytes, for comparing with tier bounds.
pub fn gigabytes(bytes: u64) -> f64 {
    bytes as f64 / BYTES_PER_GB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes_pick_the_largest_unit_that_keeps_one() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn decimal_sizes_are_in_gigabytes() {
        assert_eq!(decimal_gb(39_600_000_000), "39.6 GB");
        assert_eq!(decimal_gb(0), "0.0 GB");
        assert_eq!(gigabytes(16_000_000_000), 16.0);
    }
}
