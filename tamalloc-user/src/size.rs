//! Human sizes, percentages, rates and durations: parsing (for clap `value_parser`s) and
//! printing.
//!
//! Sizes are binary: `4096`, `512k`, `512KiB`, `10M`, `10MiB`, `4G` (k/M/G and KB/MB/GB mean
//! powers of 1024, like `dd` and the kernel). Printing uses KiB/MiB/GiB.

use std::time::Duration;

use crate::error::Error;

const SIZE_PARSER: parse_size::Config = parse_size::Config::new().with_binary();

/// Parses a size in bytes: `4096`, `512k`, `10MiB`, `4G`, `1.5GiB`.
pub fn parse_size(input: &str) -> Result<u64, Error> {
    let trimmed = input.trim();
    SIZE_PARSER.parse_size(trimmed).map_err(|e| Error::Size {
        input: input.to_owned(),
        reason: match e {
            parse_size::Error::Empty => "empty".to_owned(),
            parse_size::Error::InvalidDigit => {
                "expected a number with an optional unit such as 4096, 512k, 10MiB, 4G".to_owned()
            }
            parse_size::Error::PosOverflow => "too large".to_owned(),
            other => other.to_string(),
        },
    })
}

/// clap parser: a size of at least one byte that fits in `usize`.
pub fn parse_nonzero_size(input: &str) -> Result<usize, Error> {
    let n = parse_size(input)?;
    if n == 0 {
        return Err(Error::Size {
            input: input.to_owned(),
            reason: "must be at least 1 byte".to_owned(),
        });
    }
    usize::try_from(n).map_err(|_| Error::Size {
        input: input.to_owned(),
        reason: "too large".to_owned(),
    })
}

/// A percentage in hundredths of a percent (`12.5%` = 1250), 0..=10000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(u32);

impl Percent {
    pub const ZERO: Percent = Percent(0);
    pub const FULL: Percent = Percent(10_000);

    /// Hundredths of a percent.
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    /// `n * self`, rounded to nearest (half up).
    pub const fn of(self, n: u64) -> u64 {
        ((n as u128 * self.0 as u128 + 5_000) / 10_000) as u64
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            write!(f, "{whole}%")
        } else if frac % 10 == 0 {
            write!(f, "{whole}.{}%", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

/// clap parser: `100%`, `12.5%` or a bare `50`, between 0 and 100 inclusive.
pub fn parse_percent(input: &str) -> Result<Percent, Error> {
    let err = |reason: &str| Error::Percent {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let s = input.trim();
    let s = s.strip_suffix('%').unwrap_or(s).trim_end();
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("expected a percentage such as 50% or 12.5%"));
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("expected a percentage such as 50% or 12.5%"));
    }
    if frac.len() > 2 {
        return Err(err("at most two decimals"));
    }
    if whole.len() > 3 {
        return Err(err("must be between 0% and 100%"));
    }
    let whole: u32 = whole
        .parse()
        .map_err(|_| err("expected a percentage such as 50% or 12.5%"))?;
    let mut frac_v = 0u32;
    for (i, b) in frac.bytes().enumerate() {
        frac_v += u32::from(b - b'0') * if i == 0 { 10 } else { 1 };
    }
    let bp = whole * 100 + frac_v;
    if bp > 10_000 {
        return Err(err("must be between 0% and 100%"));
    }
    Ok(Percent(bp))
}

/// clap parser: bytes per second, `4MiB/s`, `512k/s`, `4MiB` (the `/s` is optional); `0` means
/// "as fast as possible".
pub fn parse_rate(input: &str) -> Result<u64, Error> {
    let s = input.trim();
    let s = s
        .strip_suffix("/s")
        .or_else(|| s.strip_suffix("/sec"))
        .unwrap_or(s);
    parse_size(s).map_err(|e| Error::Rate {
        input: input.to_owned(),
        reason: match e {
            Error::Size { reason, .. } => reason.replace("10MiB", "4MiB/s"),
            other => other.to_string(),
        },
    })
}

/// clap parser: `5s`, `500ms`, `2m`, `1.5s` or bare seconds `5`.
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let err = |reason: &str| Error::Duration {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err("expected a duration such as 5s, 500ms or 2m")),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| err("expected a duration such as 5s, 500ms or 2m"))?;
    let secs = v * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(err("out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// clap `value_parser`s: the same parsers, with errors that do not repeat the input (clap
/// prints it already).
pub mod arg {
    use super::*;

    fn reason(e: Error) -> String {
        match e {
            Error::Size { reason, .. }
            | Error::Percent { reason, .. }
            | Error::Rate { reason, .. }
            | Error::Duration { reason, .. } => reason,
            other => other.to_string(),
        }
    }

    /// A size of at least one byte: `4096`, `512k`, `10MiB`, `4G`.
    pub fn size(s: &str) -> Result<usize, String> {
        parse_nonzero_size(s).map_err(reason)
    }

    /// A percentage between 0% and 100%.
    pub fn percent(s: &str) -> Result<Percent, String> {
        parse_percent(s).map_err(reason)
    }

    /// Bytes per second, 0 = unlimited.
    pub fn rate(s: &str) -> Result<u64, String> {
        parse_rate(s).map_err(reason)
    }

    /// A duration: `5s`, `500ms`, `2m`.
    pub fn duration(s: &str) -> Result<Duration, String> {
        parse_duration(s).map_err(reason)
    }
}

/// Bytes as `0`, `512B`, `4.0KiB`, `10.0MiB`, `1.5GiB`.
pub fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_owned();
    }
    bytesize::ByteSize::b(bytes)
        .display()
        .iec()
        .to_string()
        .replace(' ', "")
}

/// KiB (what /proc and the syscalls report) as [`format_bytes`] does.
pub fn format_kib(kib: u64) -> String {
    format_bytes(kib.saturating_mul(1024))
}

/// A signed difference in KiB: `+4.0MiB`, `-8.0KiB`, `0`.
pub fn format_kib_delta(kib: i64) -> String {
    match kib {
        0 => "0".to_owned(),
        k if k > 0 => format!("+{}", format_kib(k.unsigned_abs())),
        k => format!("-{}", format_kib(k.unsigned_abs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_binary() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("10M").unwrap(), 10 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size(" 1.5GiB ").unwrap(), 3 << 29);
        assert!(parse_size("garbage").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999999").is_err());
    }

    #[test]
    fn nonzero_size_rejects_zero() {
        let e = parse_nonzero_size("0").unwrap_err();
        assert_eq!(e.to_string(), "invalid size '0': must be at least 1 byte");
        assert_eq!(parse_nonzero_size("1").unwrap(), 1);
    }

    #[test]
    fn percentages_are_range_checked() {
        assert_eq!(parse_percent("100%").unwrap(), Percent::FULL);
        assert_eq!(parse_percent("0%").unwrap(), Percent::ZERO);
        assert_eq!(parse_percent("50").unwrap().basis_points(), 5000);
        assert_eq!(parse_percent("12.5%").unwrap().basis_points(), 1250);
        assert_eq!(parse_percent("0.01%").unwrap().basis_points(), 1);
        assert!(parse_percent("150%").is_err());
        assert!(parse_percent("100.01%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("abc").is_err());
        assert!(parse_percent("%").is_err());
        assert!(parse_percent("1.234%").is_err());
        assert!(parse_percent("99999999999%").is_err());
        assert_eq!(
            parse_percent("150%").unwrap_err().to_string(),
            "invalid percentage '150%': must be between 0% and 100%"
        );
    }

    #[test]
    fn percent_of_rounds_and_displays() {
        assert_eq!(Percent::FULL.of(2560), 2560);
        assert_eq!(parse_percent("10%").unwrap().of(65536), 6554);
        assert_eq!(Percent::ZERO.of(100), 0);
        assert_eq!(parse_percent("12.5%").unwrap().to_string(), "12.5%");
        assert_eq!(parse_percent("0.05%").unwrap().to_string(), "0.05%");
        assert_eq!(Percent::FULL.to_string(), "100%");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("4MiB/s").unwrap(), 4 << 20);
        assert_eq!(parse_rate("512k/s").unwrap(), 512 << 10);
        assert_eq!(parse_rate("1M").unwrap(), 1 << 20);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn bytes_format_in_binary_units() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(512), "512B");
        assert_eq!(format_bytes(4096), "4.0KiB");
        assert_eq!(format_bytes(10 << 20), "10.0MiB");
        assert_eq!(format_bytes(3 << 29), "1.5GiB");
        assert_eq!(format_kib(1024), "1.0MiB");
        assert_eq!(format_kib_delta(-8), "-8.0KiB");
        assert_eq!(format_kib_delta(4096), "+4.0MiB");
        assert_eq!(format_kib_delta(0), "0");
    }
}
