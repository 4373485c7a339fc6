//! The `promtool test rules` file format (Prometheus's `cmd/promtool/unittest.go` types,
//! decoded strictly like `yaml.UnmarshalStrict`) and the Go formatting promtool's messages
//! use: `model.Duration` and `time.Duration` strings, `strconv.FormatFloat(v, 'E', -1, 64)`,
//! `labels.Labels.String()`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lookout_promql::Labels;
use serde::Deserialize;

use crate::rules::file::Scalar;

/// A test file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTestFile {
    /// Rule files (relative to the test file; globs allowed).
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Step of the evaluation loop (1m when absent or zero).
    #[serde(default)]
    pub evaluation_interval: Option<ModelDuration>,
    /// Groups evaluated first, in this order (others after, as promtool's partial order).
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    /// The test groups.
    #[serde(default)]
    pub tests: Vec<TestGroup>,
    /// Accept floats one ULP apart (promtool 3.5).
    #[serde(default)]
    pub fuzzy_compare: bool,
}

/// One `tests:` entry: input series plus the checks run against them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Interval between input samples (the file's `evaluation_interval` when absent).
    #[serde(default)]
    pub interval: Option<ModelDuration>,
    /// Input series in the `.test` load notation.
    #[serde(default)]
    pub input_series: Vec<InputSeries>,
    /// Alert checks.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTestCase>,
    /// PromQL checks.
    #[serde(default)]
    pub promql_expr_test: Vec<PromqlTestCase>,
    /// `$externalLabels` of templates.
    #[serde(default)]
    pub external_labels: BTreeMap<String, Scalar>,
    /// `$externalURL` of templates.
    #[serde(default)]
    pub external_url: Scalar,
    /// The group's name (matched by `--run`).
    #[serde(default)]
    pub name: Scalar,
    /// Time of the first sample and evaluation (RFC 3339 or Unix seconds; default 0).
    #[serde(default)]
    pub start_timestamp: Option<Scalar>,
}

/// One input series.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `metric{label="value"}`.
    #[serde(default)]
    pub series: Scalar,
    /// Values notation: `1 2 3`, `0+10x100`, `_`, `_x3`, `stale`, …
    #[serde(default)]
    pub values: Scalar,
}

/// One `alert_rule_test` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTestCase {
    /// When to look at the alerts.
    #[serde(default)]
    pub eval_time: ModelDuration,
    /// Which alert.
    #[serde(default)]
    pub alertname: Scalar,
    /// The firing alerts expected (order does not matter).
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
}

/// One expected alert.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    /// Labels besides `alertname`.
    #[serde(default)]
    pub exp_labels: BTreeMap<String, Scalar>,
    /// Expanded annotations.
    #[serde(default)]
    pub exp_annotations: BTreeMap<String, Scalar>,
}

/// One `promql_expr_test` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromqlTestCase {
    /// The expression.
    #[serde(default)]
    pub expr: Scalar,
    /// When to evaluate it, relative to the start.
    #[serde(default)]
    pub eval_time: ModelDuration,
    /// The expected result (order does not matter).
    #[serde(default)]
    pub exp_samples: Vec<ExpSample>,
}

/// One expected sample.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpSample {
    /// Series notation (`metric{a="b"}`, `{a="b"}` or empty).
    #[serde(default)]
    pub labels: Scalar,
    /// The float value (still compared when `histogram` is given: a histogram sample's
    /// float value is 0, as in promtool).
    #[serde(default)]
    pub value: f64,
    /// A native histogram in the test notation (`{{…}}`).
    #[serde(default)]
    pub histogram: Scalar,
}

/// A `model.Duration`, in milliseconds (`5m`, `1d`, `2m59s999ms`, `0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelDuration(pub i64);

impl<'de> Deserialize<'de> for ModelDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?;
        lookout_promql::duration::parse_duration_ms(&s.0)
            .map(ModelDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ModelDuration {
    /// `model.Duration.String()`: years and weeks only when exact, `0s` for zero.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&lookout_promql::duration::format_duration_ms(self.0))
    }
}

/// Go's `time.Duration.String()` of a millisecond count (`0s`, `500ms`, `1m0s`, `2h3m4.5s`).
pub fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let neg = ms < 0;
    let abs = ms.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if abs < 1000 {
        let _ = write!(out, "{abs}ms");
        return out;
    }
    let (h, rest) = (abs / 3_600_000, abs % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// `strconv.FormatFloat(v, 'E', -1, 64)`: shortest digits, exponent with a sign and at
/// least two digits (`1E+00`, `3.0000000000000004E+00`, `+Inf`, `NaN`).
pub fn format_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let s = format!("{v:E}");
    let Some((mant, exp)) = s.split_once('E') else {
        return s;
    };
    let e: i32 = exp.parse().unwrap_or(0);
    let sign = if e < 0 { '-' } else { '+' };
    format!("{mant}E{sign}{:02}", e.unsigned_abs())
}

/// Go's `%q` of a string (close enough: Rust's escaping of quotes, backslashes and
/// control characters).
pub fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// `labels.Labels.String()` of sorted pairs: `{a="b", c="d"}`, `__name__` included.
pub fn pairs_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&go_quote(v));
    }
    out.push('}');
    out
}

/// `labels.Labels.String()`.
pub fn labels_string(l: &Labels) -> String {
    pairs_string(l.iter())
}

/// promtool's `indentLines`: every line but the first gets `indent`.
pub fn indent_lines(lines: &str, indent: &str) -> String {
    let mut out = String::with_capacity(lines.len());
    for (i, l) in lines.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(indent);
        }
        out.push_str(l);
    }
    out
}

/// Parses `start_timestamp` as promtool's `parseTime`: Unix seconds (possibly
/// fractional) or RFC 3339. Returns milliseconds since the epoch.
pub fn parse_start_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        return Ok((f * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("cannot parse {s:?} to a valid timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_duration_strings() {
        assert_eq!(ModelDuration(0).to_string(), "0s");
        assert_eq!(ModelDuration(5 * 60_000).to_string(), "5m");
        assert_eq!(ModelDuration(86_400_000).to_string(), "1d");
        assert_eq!(ModelDuration(7 * 86_400_000).to_string(), "1w");
        assert_eq!(ModelDuration(90 * 86_400_000).to_string(), "90d");
        assert_eq!(ModelDuration(179_999).to_string(), "2m59s999ms");
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
        assert_eq!(go_duration(1500), "1.5s");
        assert_eq!(go_duration(250), "250ms");
        assert_eq!(go_duration(-61_000), "-1m1s");
    }

    #[test]
    fn floats_like_go() {
        assert_eq!(format_float_e(1.0), "1E+00");
        assert_eq!(format_float_e(0.0), "0E+00");
        assert_eq!(format_float_e(3.0000000000000004), "3.0000000000000004E+00");
        assert_eq!(format_float_e(9_218_880_000.0), "9.21888E+09");
        assert_eq!(format_float_e(1e-7), "1E-07");
        assert_eq!(format_float_e(1e300), "1E+300");
        assert_eq!(format_float_e(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn start_timestamps() {
        assert_eq!(parse_start_timestamp("1609459200"), Ok(1_609_459_200_000));
        assert_eq!(
            parse_start_timestamp("2024-01-01T00:00:00Z"),
            Ok(1_704_067_200_000)
        );
        assert!(parse_start_timestamp("yesterday").is_err());
    }

    #[test]
    fn indent() {
        assert_eq!(indent_lines("a\nb\nc", "  "), "a\n  b\n  c");
        assert_eq!(indent_lines("a", "  "), "a");
    }
}
