//! `lookout rules check` against the real `promtool check rules` on the same files: same exit
//! status, same stdout, and the same error lines (file, line:column, group, rule, message)
//! except where the message text comes from a different parser (PromQL and template syntax
//! errors, YAML decoding), where only the part before that text is compared.
//!
//! CI installs Debian's `prometheus` package, which ships `promtool`.

use std::path::Path;
use std::process::Command;

use lookout_evaluator::rules::check::check_files;

const GOOD: &str = r#"groups:
  - name: availability
    interval: 30s
    limit: 10
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
        labels:
          team: ops
      - alert: ServerDown
        expr: up == 0
        for: 1m
        keep_firing_for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} is down"
          description: "{{ $value | humanize }} for {{ 300 | humanizeDuration }} {{ with query \"up\" }}{{ . | first | value }}{{ end }}"
  - name: latency
    rules:
      - alert: HighLatency
        expr: |
          sum(rate(http_request_duration_seconds_sum[5m])) by (instance)
            /
          sum(rate(http_request_duration_seconds_count[5m])) by (instance) > 0.5
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "High latency on {{ $labels.instance | stripPort }}"
"#;

const BAD: &str = r#"groups:
  - name: ""
    rules:
      - expr: up
      - record: "bad name"
        expr: up
        for: 5m
        annotations:
          a: b
        labels:
          __name__: x
          "bad-label": y
      - alert: A
        expr: ""
        annotations:
          "bad-ann": "{{ .Foo }}"
          ok: "{{ humanize 1 }} {{ nosuch }}"
  - name: g2
    rules:
      - record: job:up:sum
        expr: sum by (job) (up
      - alert: Severity
        expr: up == 0
        labels:
          severity: "{{ $labels.x"
      - record: job:up:sum
        alert: X
        expr: up
  - name: g2
    rules: []
"#;

const DUPLICATES: &str = r#"groups:
  - name: a
    rules:
      - record: job:up:sum
        expr: up
      - record: job:up:sum
        expr: up
  - name: b
    rules:
      - alert: X
        expr: up == 0
        labels:
          severity: page
      - alert: X
        expr: up == 1
        labels:
          severity: page
"#;

const UNKNOWN_FIELD: &str = r#"groups:
  - name: a
    rules:
      - record: job:up:sum
        expr: up
        foo: bar
"#;

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn paths(dir: &Path, files: &[&str]) -> Vec<String> {
    files
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect()
}

fn promtool(dir: &Path, files: &[&str]) -> Outcome {
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .args(paths(dir, files))
        .output()
        .expect("promtool must be installed (Debian package prometheus)");
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lookout(dir: &Path, files: &[&str]) -> Outcome {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = check_files(
        &paths(dir, files),
        lookout_evaluator::limits::MAX_RULE_FILE_BYTES,
        &mut out,
        &mut err,
    );
    Outcome {
        ok,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Error lines, sorted (Go reports map entries in random order), with parser-specific
/// message text cut off.
fn normalized(stderr: &str) -> Vec<String> {
    let mut v: Vec<String> = stderr
        .lines()
        .map(|l| {
            for marker in ["could not parse expression: ", "template: "] {
                if let Some(i) = l.find(marker) {
                    return l[..i + marker.len()].to_string();
                }
            }
            l.to_string()
        })
        .collect();
    v.sort();
    v
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("good.yml", GOOD),
        ("bad.yml", BAD),
        ("dups.yml", DUPLICATES),
        ("unknown.yml", UNKNOWN_FIELD),
        ("empty.yml", ""),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn valid_files_give_the_same_report() {
    let dir = setup();
    let files = ["good.yml", "empty.yml"];
    let p = promtool(dir.path(), &files);
    let l = lookout(dir.path(), &files);
    assert!(p.ok, "promtool: {}", p.stderr);
    assert!(l.ok, "lookout: {}", l.stderr);
    assert_eq!(l.stdout, p.stdout);
    assert!(
        l.stdout.contains("  SUCCESS: 3 rules found\n"),
        "{}",
        l.stdout
    );
    assert_eq!(l.stderr, p.stderr);
}

#[test]
fn invalid_rules_report_the_same_errors_and_positions() {
    let dir = setup();
    let p = promtool(dir.path(), &["bad.yml"]);
    let l = lookout(dir.path(), &["bad.yml"]);
    assert!(!p.ok);
    assert!(!l.ok);
    assert_eq!(l.stdout, p.stdout);
    assert_eq!(
        normalized(&l.stderr),
        normalized(&p.stderr),
        "lookout:\n{}\npromtool:\n{}",
        l.stderr,
        p.stderr
    );
}

#[test]
fn duplicate_rules_are_a_lint_warning_with_success_status() {
    let dir = setup();
    let p = promtool(dir.path(), &["dups.yml"]);
    let l = lookout(dir.path(), &["dups.yml"]);
    assert!(p.ok);
    assert!(l.ok);
    assert_eq!(l.stdout, p.stdout);
    assert_eq!(l.stderr, p.stderr);
}

#[test]
fn unknown_fields_fail_in_both() {
    let dir = setup();
    let p = promtool(dir.path(), &["unknown.yml", "good.yml"]);
    let l = lookout(dir.path(), &["unknown.yml", "good.yml"]);
    assert!(!p.ok);
    assert!(!l.ok);
    assert_eq!(l.stdout, p.stdout);
    let first_error = l.stderr.lines().nth(1).unwrap_or_default();
    assert!(
        first_error.starts_with(&paths(dir.path(), &["unknown.yml"])[0]),
        "{}",
        l.stderr
    );
    assert!(l.stderr.contains("line 6"), "{}", l.stderr);
}
