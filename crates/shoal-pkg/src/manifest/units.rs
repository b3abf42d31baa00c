//! The units manifests write values in: durations (`"10s"`, `"1d"`, humantime's syntax) and
//! sizes (`"100MB"`, `"512KiB"`, or a plain number of bytes).

use std::time::Duration;

/// Parses a duration such as `"10s"`, `"1m30s"` or `"1d"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| e.to_string())
}

/// The form `parse_duration` reads back: `"1m 30s"`, `"1day"`.
pub(crate) fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Decimal units are powers of 1000 and binary ones powers of 1024, as their names say; a
/// bare `K`, `M` or `G` is refused because people mean either.
const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// Parses a size such as `"100MB"`, `"1.5 GiB"` or `"4096"` (bytes); units are case-blind.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = (&text[..split], text[split..].trim_start());
    let unit = unit.to_ascii_lowercase();
    let multiplier = match UNITS.iter().find(|(name, _)| *name == unit) {
        Some((_, m)) => *m,
        None if unit.is_empty() => 1,
        None => {
            return Err(format!(
                "unknown unit {unit:?}: use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, \
                 GiB, TiB (powers of 1024)"
            ))
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || fraction.len() > 9 {
        return Err("expected a number followed by a unit, like \"100MB\"".to_owned());
    }
    let whole: u128 = whole.parse().map_err(|_| "the number is too large")?;
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| "the number is too large")?
    };
    let bytes = whole * u128::from(multiplier) + fraction * u128::from(multiplier) / scale;
    u64::try_from(bytes).map_err(|_| "the size is too large".to_owned())
}

/// A size for people: `"100 MB"`, `"3.4 kB"`, `"512 B"` (powers of 1000, one decimal).
pub fn format_size(bytes: u64) -> String {
    const STEPS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut step = 0;
    while value >= 1000.0 && step + 1 < STEPS.len() {
        value /= 1000.0;
        step += 1;
    }
    if step == 0 {
        format!("{bytes} B")
    } else if value.fract() == 0.0 {
        format!("{value} {}", STEPS[step])
    } else {
        format!("{value:.1} {}", STEPS[step])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let check = |text: &str, expected: Result<u64, ()>| {
            assert_eq!(parse_size(text).map_err(|_| ()), expected, "{text:?}");
        };
        check("100MB", Ok(100_000_000));
        check("100 mb", Ok(100_000_000));
        check("1.5GiB", Ok(3 << 29));
        check("512KiB", Ok(512 * 1024));
        check("4096", Ok(4096));
        check("7B", Ok(7));
        check("0.5kB", Ok(500));
        check("100M", Err(()));
        check("MB", Err(()));
        check("1.2.3MB", Err(()));
        check("-1MB", Err(()));
        check("99999999999TB", Err(()));
        check("", Err(()));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(100_000_000), "100 MB");
        assert_eq!(format_size(3_412_345), "3.4 MB");
    }

    #[test]
    fn durations_read_back() {
        let d = parse_duration("1d").unwrap();
        assert_eq!(d, Duration::from_secs(86_400));
        assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        assert!(parse_duration("soon").is_err());
    }
}
