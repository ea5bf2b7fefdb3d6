//! Sizes as operators write them (`10G`, `512M`, `1.5T`, `none`), in powers of 1024 as ZFS
//! reads them, and back into ZFS's short form for tables.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid size {input:?}: {reason}")]
pub struct SizeError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `123`, `64K`, `10G`, `1.5T`, `2GiB`, `2gb` into bytes.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError { input: input.to_string(), reason };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err("no number"));
    }
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.strip_suffix("IB").or_else(|| unit.strip_suffix('B')).unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(err("unknown unit (use K, M, G, T or P)")),
    };
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    if shift == 0 && num.contains('.') {
        return Err(err("a byte count must be whole"));
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes as ZFS does in its tables: `0`, `512`, `1.50K`, `20.5M`, `499G`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut v = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.2}{unit}")
    } else if v < 100.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512mb"), Ok(512 << 20));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "G", "10X", "1.5", "-3G", "1e999G", "99999999999P"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn formats_like_zfs() {
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1536), "1.50K");
        assert_eq!(format_size(20 * 1024 * 1024 + 512 * 1024), "20.5M");
        assert_eq!(format_size(499 << 30), "499G");
    }
}
