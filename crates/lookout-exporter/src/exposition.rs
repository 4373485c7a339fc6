//! Renders one probe's samples in the Prometheus text exposition format (version 0.0.4), the
//! format blackbox_exporter answers `/probe` with.
//!
//! A probe's samples are a handful of gauges collected into a fresh list per request, so a
//! small renderer is simpler and faster here than building a `prometheus-client` registry
//! per request; `/metrics` uses `prometheus-client` (see [`crate::metrics`]).

use std::fmt::Write;

use crate::prober::ProbeMetric;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders samples grouped by metric name (in order of first appearance), each group with
/// `# HELP` and `# TYPE … gauge`.
pub fn render(metrics: &[ProbeMetric]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for metric in metrics {
        if !names.contains(&metric.name.as_str()) {
            names.push(&metric.name);
        }
    }
    let mut out = String::with_capacity(64 * metrics.len() + 64);
    for name in names {
        let mut samples = metrics.iter().filter(|m| m.name == name).peekable();
        let help = samples.peek().map(|m| m.help.as_str()).unwrap_or_default();
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for sample in samples {
            out.push_str(name);
            write_labels(
                &mut out,
                sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            out.push(' ');
            out.push_str(&format_value(sample.value));
            out.push('\n');
        }
    }
    out
}

/// Writes `{k="v",…}` (nothing when there are no labels), escaping values.
pub fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut first = true;
    for (key, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value_into(out, value);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// Escapes a label value for the text format: backslash, double quote and newline.
pub fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Formats a sample value the way Prometheus' Go client does (`NaN`, `+Inf`, shortest float).
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value == f64::INFINITY {
        "+Inf".to_string()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if value == value.trunc() && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else if value.abs() >= 1e21 || (value != 0.0 && value.abs() < 1e-4) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(name: &str, labels: &[(&str, &str)], value: f64) -> ProbeMetric {
        ProbeMetric {
            name: name.to_string(),
            help: format!("help of {name}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn groups_by_name_in_first_appearance_order() {
        let text = render(&[
            gauge("probe_http_duration_seconds", &[("phase", "connect")], 0.25),
            gauge("probe_success", &[], 1.0),
            gauge("probe_http_duration_seconds", &[("phase", "tls")], 0.0),
        ]);
        assert_eq!(
            text,
            "# HELP probe_http_duration_seconds help of probe_http_duration_seconds\n\
             # TYPE probe_http_duration_seconds gauge\n\
             probe_http_duration_seconds{phase=\"connect\"} 0.25\n\
             probe_http_duration_seconds{phase=\"tls\"} 0\n\
             # HELP probe_success help of probe_success\n\
             # TYPE probe_success gauge\n\
             probe_success 1\n"
        );
    }

    #[test]
    fn escapes_label_values() {
        let text = render(&[gauge("x", &[("a", "q\"b\\s\nn")], 1.0)]);
        assert!(text.contains("x{a=\"q\\\"b\\\\s\\nn\"} 1\n"), "{text}");
    }

    #[test]
    fn formats_special_values() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(1.7e9), "1700000000");
        assert_eq!(format_value(0.001), "0.001");
    }
}
