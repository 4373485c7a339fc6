//! Template output compared with Prometheus's own (Go) template engine: every annotation is
//! expanded by Lookout, the results are written as the expected annotations of a
//! `promtool test rules` file, and promtool must agree. CI installs promtool (Debian package
//! `prometheus`).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use lookout_evaluator::datasource::QuerySample;
use lookout_evaluator::template::{QueryFn, TemplateData, expand};
use lookout_promql::Labels;

const VALUE: f64 = 12345678.9;

fn annotations() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("a01", "{{ $value | humanize }}"),
        (
            "a02",
            "{{ 1048576 | humanize1024 }} {{ 1.5e9 | humanize1024 }} {{ 0.5 | humanize1024 }}",
        ),
        (
            "a03",
            "{{ 93784.5 | humanizeDuration }} {{ -93784 | humanizeDuration }} {{ 59.99 | humanizeDuration }}",
        ),
        (
            "a04",
            "{{ 0.000123 | humanizeDuration }} {{ 0 | humanizeDuration }} {{ 3600 | humanizeDuration }}",
        ),
        (
            "a05",
            "{{ 0.4567 | humanizePercentage }} {{ 1 | humanizePercentage }} {{ 0.000012 | humanizePercentage }}",
        ),
        (
            "a06",
            "{{ 1435065584.128 | humanizeTimestamp }} {{ 0 | humanizeTimestamp }}",
        ),
        (
            "a07",
            "{{ \"web-1.example.com:9100\" | stripPort }} {{ \"web-1.example.com:9100\" | stripDomain }} {{ \"[::1]:80\" | stripPort }} {{ \"10.1.2.3:80\" | stripDomain }}",
        ),
        (
            "a08",
            "{{ \"hello wide world\" | title }} {{ toUpper \"aBc\" }} {{ toLower \"AbC\" }}",
        ),
        (
            "a09",
            "{{ reReplaceAll \"(a+)\" \"<$1>\" \"baaab\" }} {{ if match \"^1\" \"123\" }}yes{{ end }}",
        ),
        (
            "a10",
            "{{ printf \"%.2f\" $value }} {{ printf \"%d\" 42 }} {{ printf \"%s-%5.1f\" \"x\" 1.25 }}",
        ),
        (
            "a11",
            "{{ 0 | humanize }} {{ 0.000001 | humanize }} {{ 1e-7 | humanize }} {{ 999.95 | humanize }}",
        ),
        (
            "a12",
            "{{ humanize \"12345\" }} {{ 123456789012 | humanize }} {{ humanize \"-0.000001\" }}",
        ),
        (
            "a13",
            "{{ with query \"vector(3)\" }}{{ . | first | value }}{{ end }} {{ range query \"vector(3)\" }}{{ .Value }}{{ end }}",
        ),
        (
            "a14",
            "{{ $value }} {{ .Value }} [{{ $labels.missing }}] [{{ $labels.missing | toUpper }}]",
        ),
        ("a15", "{{ safeHtml \"<b>x</b>\" }} {{ \"a b\" | title }}"),
        // Assignment (Go 1.11+): to a variable in scope, from inside if/with/range bodies.
        ("a16", "{{ $s := \"a\" }}{{ $s = \"b\" }}{{ $s }}"),
        (
            "a17",
            "{{ $n := 0 }}{{ range query \"vector(3)\" }}{{ $n = .Value }}{{ end }}{{ $t := \"a\" }}{{ with 1 }}{{ $t = \"w\" }}{{ end }}{{ if true }}{{ $t = printf \"%s!\" $t }}{{ end }}{{ $n }} {{ $t }}",
        ),
        (
            "a18",
            "{{ $s := \"outer\" }}{{ if true }}{{ $s := \"inner\" }}{{ $s = \"changed\" }}{{ $s }} {{ end }}{{ $s }}",
        ),
        (
            "a19",
            "{{ $x := \"o\" }}{{ range $x := query \"vector(3)\" }}{{ end }}{{ with $x := 5 }}{{ end }}{{ $x }} {{ range query \"vector(3)\" }}x{{ else }}empty{{ end }} {{ range $labels }}x{{ else }}none{{ end }}",
        ),
        (
            "a20",
            "{{ urlquery \"a b/c?d=e&f\" }} {{ \"x y\" | urlquery }} {{ urlquery 1.5 }} {{ urlquery \"é~\" }}",
        ),
        (
            "a21",
            "{{ reReplaceAll \" {.*}$\" \"\" \"up {job=x}\" }} {{ if match \"^a{,2}$\" \"a{,2}\" }}lit{{ end }} {{ reReplaceAll \"\\\\Q.*\\\\E\" \"!\" \"a.*b\" }}",
        ),
    ])
}

#[test]
fn annotations_expand_exactly_as_prometheus_does() {
    let query: QueryFn = Arc::new(|q: &str| {
        if q == "vector(3)" {
            Ok(vec![QuerySample {
                labels: Labels::default(),
                value: 3.0,
                histogram: None,
            }])
        } else {
            Err(format!("unexpected query {q}"))
        }
    });
    let data = TemplateData {
        labels: Labels::default(),
        external_labels: Labels::default(),
        external_url: String::new(),
        value: VALUE,
        histogram: None,
    };
    let mut rule_annotations = serde_json::Map::new();
    let mut expected = serde_json::Map::new();
    for (k, text) in annotations() {
        let got = expand("__alert_T", text, &data, Some(query.clone()))
            .unwrap_or_else(|e| panic!("{k}: {e}"));
        rule_annotations.insert(k.to_string(), text.into());
        expected.insert(k.to_string(), got.into());
    }
    let rules = serde_json::json!({
        "groups": [{
            "name": "templates",
            "rules": [{
                "alert": "T",
                "expr": format!("vector({VALUE})"),
                "annotations": rule_annotations,
            }]
        }]
    });
    let tests = serde_json::json!({
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [],
            "alert_rule_test": [{
                "eval_time": "0m",
                "alertname": "T",
                "exp_alerts": [{ "exp_labels": {}, "exp_annotations": expected }]
            }]
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.json"), rules.to_string()).unwrap();
    std::fs::write(dir.path().join("test.json"), tests.to_string()).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "test.json"])
        .current_dir(dir.path())
        .output()
        .expect("promtool must be installed (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool disagrees with Lookout's expansion:\n{}\n{}\nLookout's: {:#?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        expected
    );
}
