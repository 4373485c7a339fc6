//! Durations as configuration files write them.
//!
//! Two syntaxes meet in a blackbox.yml: Prometheus durations (`15s`, `1h30m`, `2d`, `1w`,
//! `1y`) and Go's `time.ParseDuration` (`1.5s`, `500ms`, `250us`, `10ns`), which
//! blackbox_exporter uses for a module's `timeout`. This parser accepts the union: a sequence
//! of `<number><unit>` with units `y w d h m s ms us µs ns`, numbers with an optional
//! fraction, and a bare `0`. A year is 365 days, as in Prometheus.

use std::time::Duration;

/// Parses a duration; the error says what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map_or(rest.len(), |(i, _)| i);
        if num_len == 0 {
            return Err(invalid(text));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| invalid(text))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let seconds_per_unit = match &rest[..unit_len] {
            "y" => 365.0 * 86_400.0,
            "w" => 7.0 * 86_400.0,
            "d" => 86_400.0,
            "h" => 3_600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid(text)),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

fn invalid(text: &str) -> String {
    format!(
        "invalid duration {text:?}: write a number and a unit, e.g. 500ms, 15s, 1m30s, 2h, 1d (units: y w d h m s ms us ns)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_prometheus_and_go_syntax() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "s", "5x", "1.2.3s", "-1s", "5 s", "1h-3m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
