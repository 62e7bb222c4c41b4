//! Sizes and durations as users type them in dfs.toml: `50GiB`, `10%`,
//! `180d`. Anything else is rejected, so a typo cannot mean "zero".

use std::time::Duration;

/// A size threshold: absolute, or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Size {
    /// A number of bytes.
    Bytes(u64),
    /// A percentage of the filesystem's size (0..=100).
    Percent(f64),
}

impl Size {
    /// The threshold in bytes for a filesystem of `total` bytes.
    pub fn bytes_of(&self, total: u64) -> u64 {
        match *self {
            Size::Bytes(b) => b,
            Size::Percent(p) => (total as f64 * p / 100.0) as u64,
        }
    }
}

/// Parses `123`, `4KiB`, `5 MiB`, `6G`, `7GB`, `10%`.
pub fn parse_size(s: &str) -> Result<Size, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a percentage like `10%`"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("`{s}`: a percentage must be between 0% and 100%"));
        }
        return Ok(Size::Percent(v));
    }
    let (n, unit) = number_and_unit(t)
        .ok_or_else(|| format!("`{s}` is not a size like `50GiB`, `512MiB` or `10%`"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB or %)"
            ));
        }
    };
    Ok(Size::Bytes((n * mult as f64) as u64))
}

/// Splits `12.5 MiB` into 12.5 and `MiB`.
fn number_and_unit(t: &str) -> Option<(f64, &str)> {
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n = t[..split].parse().ok()?;
    Some((n, t[split..].trim()))
}

/// Parses `30s`, `15m`, `1h`, `180d`, `2w`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(s.trim())
        .ok_or_else(|| format!("`{s}` is not a duration like `30s`, `1h` or `180d`"))?;
    let secs = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        "" => return Err(format!("`{s}`: give a unit (ms, s, m, h, d, w)")),
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use ms, s, m, h, d, w)"
            ));
        }
    };
    Ok(Duration::from_secs_f64(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10%"), Ok(Size::Percent(10.0)));
        assert_eq!(parse_size("50GiB"), Ok(Size::Bytes(50 << 30)));
        assert_eq!(parse_size("1.5 MiB"), Ok(Size::Bytes(3 << 19)));
        assert_eq!(parse_size("4096"), Ok(Size::Bytes(4096)));
        assert_eq!(parse_size("2GB"), Ok(Size::Bytes(2_000_000_000)));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("120%").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(Size::Percent(10.0).bytes_of(1000), 100);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("180d"),
            Ok(Duration::from_secs(180 * 86_400))
        );
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }
}
