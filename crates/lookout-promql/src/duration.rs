//! Prometheus durations (`model.Duration`): the one parser and formatter the workspace uses
//! for `5m`, `1h30m`, `2d`, `100ms` and `0`, in rule files, configuration, the HTTP API and
//! PromQL text.
//!
//! The syntax is that of `model.ParseDuration`: a non-empty sequence of `<integer><unit>`
//! with units `y w d h m s ms` (a year is 365 days), each unit at most once and in that
//! order, or a bare `0`. The value is a whole number of milliseconds that fits an `i64`.

use std::fmt::Write as _;
use std::time::Duration;

/// Why a text is not a Prometheus duration. The messages are Prometheus's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("empty duration string")]
    Empty,
    /// The text does not follow the syntax.
    #[error("not a valid duration string: {0:?}")]
    Invalid(String),
    /// The value does not fit in an `i64` of milliseconds.
    #[error("duration out of range")]
    OutOfRange,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Units from largest to smallest: name, milliseconds, and whether formatting uses the unit
/// only when it divides the value exactly (as `model.Duration.String()` does).
const UNITS: [(&str, i64, bool); 7] = [
    ("y", 365 * DAY_MS, true),
    ("w", 7 * DAY_MS, true),
    ("d", DAY_MS, false),
    ("h", 3600 * 1000, false),
    ("m", 60 * 1000, false),
    ("s", 1000, false),
    ("ms", 1, false),
];

/// Parses a Prometheus duration into milliseconds (`model.ParseDuration`).
pub fn parse_duration_ms(s: &str) -> Result<i64, DurationError> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(s.to_string());
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number = &rest[..digits];
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let idx = UNITS[next_unit..]
            .iter()
            .position(|(u, _, _)| *u == unit)
            .ok_or_else(invalid)?
            + next_unit;
        next_unit = idx + 1;
        let n: i64 = number.parse().map_err(|_| DurationError::OutOfRange)?;
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or(DurationError::OutOfRange)?;
    }
    Ok(total)
}

/// Parses a Prometheus duration (`model.ParseDuration`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse_duration_ms(s).map(|ms| Duration::from_millis(ms.unsigned_abs()))
}

/// Formats milliseconds as `model.Duration.String()` does (`1h30m`, `8d`, `2w`, `0s`):
/// years and weeks only when they divide the value exactly.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if ms < 0 {
        out.push('-');
    }
    let mut rest = ms.unsigned_abs();
    for (unit, size, exact_only) in UNITS {
        let size = size.unsigned_abs();
        if exact_only && rest % size != 0 {
            continue;
        }
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

/// Formats a duration as `model.Duration.String()` does; sub-millisecond parts are dropped
/// and values beyond `i64` milliseconds are clamped.
pub fn format_duration(d: Duration) -> String {
    format_duration_ms(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_model_parse_duration() {
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("100ms"), Ok(100));
        assert_eq!(parse_duration_ms("1w2d"), Ok(9 * DAY_MS));
        assert_eq!(parse_duration_ms("1y"), Ok(365 * DAY_MS));
        assert_eq!(
            parse_duration("2m59s999ms"),
            Ok(Duration::from_millis(179_999))
        );
        assert_eq!(parse_duration_ms(""), Err(DurationError::Empty));
        for bad in ["5", "1m1h", "1s1s", "1.5m", "1x", "s", "-1s", " 1s", "1 s"] {
            assert_eq!(
                parse_duration_ms(bad),
                Err(DurationError::Invalid(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_duration_ms("1y")
                .map(|_| ())
                .and(parse_duration_ms("300000000y")),
            Err(DurationError::OutOfRange)
        );
        assert_eq!(
            DurationError::Invalid("1x".into()).to_string(),
            "not a valid duration string: \"1x\""
        );
    }

    #[test]
    fn formats_like_model_duration_string() {
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(8 * DAY_MS), "8d");
        assert_eq!(format_duration_ms(14 * DAY_MS), "2w");
        assert_eq!(format_duration_ms(365 * DAY_MS), "1y");
        assert_eq!(format_duration_ms(179_999), "2m59s999ms");
        assert_eq!(format_duration_ms(-1500), "-1s500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        for text in ["1h30m", "2w", "8d", "2m59s999ms", "1y"] {
            let ms = parse_duration_ms(text).expect("valid");
            assert_eq!(format_duration_ms(ms), text);
        }
    }
}
