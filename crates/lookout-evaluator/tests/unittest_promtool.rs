//! `lookout rules test` against promtool's own fixtures (`cmd/promtool/testdata`, with the
//! exit codes `cmd/promtool/unittest_test.go` expects) and against the shipped rules' unit
//! tests, which must also pass under Debian's real `promtool test rules`.

use std::path::{Path, PathBuf};
use std::process::Command;

use lookout_evaluator::unittest::{Summary, TestOptions, run_files};

/// The fixtures: `../shared/conformance/promtool` next to the checkout when present, else
/// the copy in `testdata/promtool`.
fn fixture_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = manifest.join("../../../shared/conformance/promtool");
    if shared.join("unittest.yml").is_file() {
        return shared;
    }
    manifest.join("testdata/promtool")
}

struct Run {
    summary: Summary,
    stdout: String,
    stderr: String,
}

fn run(files: &[PathBuf], opts: TestOptions) -> Run {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = run_files(&names, &opts, &mut out, &mut err).expect("runner starts");
    Run {
        summary,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn with_run(patterns: &[&str]) -> TestOptions {
    TestOptions {
        run: patterns.iter().map(|s| s.to_string()).collect(),
        ..TestOptions::default()
    }
}

/// (file, options, expected exit code, lines that must appear in stderr).
fn cases() -> Vec<(&'static str, TestOptions, u8, Vec<&'static str>)> {
    let none = TestOptions::default;
    vec![
        ("unittest.yml", none(), 0, vec![]),
        ("long-period.yml", none(), 0, vec![]),
        (
            "bad-input-series.yml",
            none(),
            1,
            vec!["unexpected character inside braces"],
        ),
        (
            "bad-promql.yml",
            none(),
            1,
            vec![
                "    expr: \"join_1 + on(a) join_2\", time: 0s, err: found duplicate series for the match group {a=\"1\"} on the right hand-side of the operation",
            ],
        ),
        (
            "bad-rules-syntax-test.yml",
            none(),
            1,
            vec![
                "bad-rules-syntax.yml: 7:15: group \"bad-syntax\", rule 1, \"x\": could not parse expression",
            ],
        ),
        (
            "bad-rules-error-test.yml",
            none(),
            1,
            vec![
                "    rule: joined, time: 0s, err: found duplicate series for the match group {a=\"1\"}",
                "many-to-many matching not allowed: matching labels must be unique on one side\n",
            ],
        ),
        (
            "failing.yml",
            none(),
            1,
            vec![
                "    name: Failing test,\n    alertname: Test, time: 0s, \n        exp:[\n            0:\n              Labels:{alertname=\"Test\"}\n              Annotations:{}\n            ], \n        got:[]\n",
                "    expr: \"test\", time: 0s,\n        exp: {__name__=\"test\"} 1E+00\n        got: {__name__=\"test\"} 0E+00\n",
                "    name: Failing alert test,\n    alertname: InstanceDown, time: 5m, \n        exp:[], \n        got:[\n            0:\n              Labels:{alertname=\"InstanceDown\", job=\"test\", severity=\"page\"}\n              Annotations:{description=\" of job test has been down for more than 5 minutes.\", summary=\"Instance  down\"}\n            ]\n",
                "    name: Failing alert test,\n    alertname: AlwaysFiring, time: 5m, \n        exp:[], \n        got:[\n            0:\n              Labels:{alertname=\"AlwaysFiring\"}\n              Annotations:{}\n            ]\n",
            ],
        ),
        ("at-modifier-test.yml", none(), 0, vec![]),
        ("negative-offset-test.yml", none(), 0, vec![]),
        ("no-test-group-interval.yml", none(), 0, vec![]),
        ("start-time-test.yml", none(), 0, vec![]),
        (
            "rules_run.yml",
            none(),
            1,
            vec![
                "    expr: \"test\", time: 0s,\n        exp: {__name__=\"test\"} 1E+00\n        got: {__name__=\"test\"} 0E+00",
            ],
        ),
        ("rules_run.yml", with_run(&["correct"]), 0, vec![]),
        (
            "rules_run.yml",
            with_run(&["wrong"]),
            1,
            vec!["got: {__name__=\"test\"} 0E+00"],
        ),
        (
            "rules_run_extrafields.yml",
            TestOptions {
                ignore_unknown_fields: true,
                ..TestOptions::default()
            },
            0,
            vec![],
        ),
        // Strict by default, as promtool without the flag.
        ("rules_run_extrafields.yml", none(), 1, vec!["namespace"]),
        ("rules_run_fuzzy.yml", with_run(&["correct"]), 0, vec![]),
        (
            "rules_run_fuzzy.yml",
            with_run(&["wrong"]),
            1,
            vec!["got: {__name__=\"test_low\"} 2.9999999999999987E+00"],
        ),
        (
            "rules_run_no_fuzzy.yml",
            none(),
            1,
            vec![
                "    expr: \"test_high\", time: 0s,\n        exp: {__name__=\"test_high\"} 3E+00\n        got: {__name__=\"test_high\"} 3.0000000000000004E+00",
            ],
        ),
    ]
}

#[test]
fn promtool_fixtures_exit_as_promtool() {
    let dir = fixture_dir();
    let mut failures = Vec::new();
    for (file, opts, want, lines) in cases() {
        let path = dir.join(file);
        let label = format!(
            "{file} (run={:?}, ignore_unknown_fields={})",
            opts.run, opts.ignore_unknown_fields
        );
        let filtered = !opts.run.is_empty();
        let r = run(std::slice::from_ref(&path), opts);
        let header = format!("Unit Testing:  {}\n", path.display());
        if !r.stdout.starts_with(&header) {
            failures.push(format!(
                "{label}: stdout does not start with {header:?}: {:?}",
                r.stdout
            ));
        }
        let got = r.summary.exit_code();
        if got != want {
            failures.push(format!(
                "{label}: exit code {got}, want {want}\nstdout:\n{}\nstderr:\n{}",
                r.stdout, r.stderr
            ));
            continue;
        }
        if want == 0 {
            if !r.stdout.contains("\n  SUCCESS\n") || r.stderr.contains("FAILED") {
                failures.push(format!(
                    "{label}: no SUCCESS line: {} / {}",
                    r.stdout, r.stderr
                ));
            }
        } else if !r.stderr.starts_with("  FAILED:\n") && !r.stderr.contains("\n  FAILED:\n") {
            failures.push(format!("{label}: no FAILED line: {}", r.stderr));
        }
        for l in lines {
            if !r.stderr.contains(l) {
                failures.push(format!("{label}: stderr lacks {l:?}:\n{}", r.stderr));
            }
        }
        // Every selected test group ran: none is skipped, the native-histogram group of
        // unittest.yml included.
        if !filtered && group_count(&path) != r.summary.groups_run {
            failures.push(format!(
                "{label}: {} test groups ran, the file has {}",
                r.summary.groups_run,
                group_count(&path)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The number of test groups in a test file (0 when it does not decode).
fn group_count(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    lookout_evaluator::unittest::parse_test_file(&text).map_or(0, |u| u.tests.len())
}

/// unittest.yml's first test group loads native histograms in all three notations
/// (`{{…}}`, `{{…}}x2`, `{{…}}+{{…}}x2`) and expects `histogram:` samples, counter reset
/// hints included: it runs, and passes.
#[test]
fn native_histogram_fixture_group_runs_and_passes() {
    let path = fixture_dir().join("unittest.yml");
    let text = std::fs::read_to_string(&path).expect("unittest.yml");
    let utf = lookout_evaluator::unittest::parse_test_file(&text).expect("decodes");
    assert!(
        utf.tests[0]
            .input_series
            .iter()
            .any(|s| s.values.0.contains("}}+{{"))
    );
    let r = run(std::slice::from_ref(&path), TestOptions::default());
    assert_eq!(r.summary.exit_code(), 0, "{}", r.stderr);
    assert_eq!(r.summary.groups_run, utf.tests.len());
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn every_fixture_is_in_the_table() {
    let dir = fixture_dir();
    let listed: Vec<&str> = cases().iter().map(|c| c.0).collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name.ends_with(".yml")
            && text.lines().any(|l| l.starts_with("tests:"))
            && !listed.contains(&name.as_str())
        {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "fixtures not covered: {missing:?}");
    assert_eq!(
        listed
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        15
    );
}

#[test]
fn several_files_in_one_run_fail_when_one_fails() {
    let dir = fixture_dir();
    let r = run(
        &[
            dir.join("no-test-group-interval.yml"),
            dir.join("rules_run_no_fuzzy.yml"),
        ],
        TestOptions::default(),
    );
    assert_eq!(r.summary.exit_code(), 1);
    assert_eq!(r.summary.failed_files.len(), 1);
    assert!(
        r.stdout
            .contains("no-test-group-interval.yml\n  SUCCESS\n\nUnit Testing:  ")
    );
}

#[test]
fn bad_run_pattern_is_an_error() {
    let dir = fixture_dir();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let r = run_files(
        &[dir.join("rules_run.yml").display().to_string()],
        &with_run(&["("]),
        &mut out,
        &mut err,
    );
    assert!(r.is_err());
}

/// The shipped rules' unit tests: rules/tests/*.yml.
fn shipped_tests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/tests");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("rules/tests exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn shipped_rule_tests_pass_under_lookout() {
    let files = shipped_tests();
    assert!(!files.is_empty(), "no unit tests under rules/tests");
    let r = run(&files, TestOptions::default());
    assert_eq!(
        r.summary.exit_code(),
        0,
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.summary.groups_run,
        files.iter().map(|f| group_count(f)).sum::<usize>()
    );
    assert_eq!(r.stdout.matches("  SUCCESS\n").count(), files.len());
}

#[test]
fn shipped_rule_tests_pass_under_promtool() {
    let files = shipped_tests();
    let out = Command::new("/usr/bin/promtool")
        .arg("test")
        .arg("rules")
        .args(&files)
        .output()
        .expect("Debian's promtool is installed at /usr/bin/promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool test rules failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("  SUCCESS\n").count(),
        files.len(),
        "{stdout}"
    );
}

/// A failing case from the format's documentation, checked against promtool's output
/// byte for byte (stdout and stderr) when both runners see the same file.
#[test]
fn failure_output_matches_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: Down\n        expr: up == 0\n        for: 2m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.instance }} down since {{ $value }}'\n      - record: job:up:sum\n        expr: sum by (job) (up)\n",
    )
    .expect("write rules");
    std::fs::write(
        dir.path().join("t.yml"),
        "rule_files: [r.yml]\ntests:\n  - name: t1\n    interval: 1m\n    input_series:\n      - series: 'up{job=\"a\",instance=\"x\"}'\n        values: 0x10\n      - series: 'up{job=\"a\",instance=\"y\"}'\n        values: 1 1 0 0 0 _ stale\n    alert_rule_test:\n      - eval_time: 3m\n        alertname: Down\n        exp_alerts:\n          - exp_labels: {instance: y, job: a}\n      - eval_time: 4m\n        alertname: Down\n        exp_alerts: []\n    promql_expr_test:\n      - expr: job:up:sum\n        eval_time: 6m\n        exp_samples:\n          - labels: 'job:up:sum{job=\"b\"}'\n            value: 0.5\n      - expr: count(ALERTS) by (alertstate)\n        eval_time: 2m30s\n        exp_samples:\n          - labels: '{alertstate=\"firing\"}'\n            value: 1\n",
    )
    .expect("write test");
    let test = dir.path().join("t.yml");
    let ours = run(std::slice::from_ref(&test), TestOptions::default());
    let theirs = Command::new("/usr/bin/promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .expect("promtool runs");
    assert_eq!(theirs.status.code(), Some(1));
    assert_eq!(ours.summary.exit_code(), 1);
    assert_eq!(ours.stdout, String::from_utf8_lossy(&theirs.stdout));
    assert_eq!(ours.stderr, String::from_utf8_lossy(&theirs.stderr));
}

const ORDER_RULES: &str = r#"groups:
  - name: second
    rules:
      - record: doubled
        expr: base_sum * 2
  - name: first
    rules:
      - record: base_sum
        expr: sum(x)
      - alert: Flapping
        expr: x > 5
        keep_firing_for: 3m
        labels:
          env: '{{ $externalLabels.env }}'
        annotations:
          link: '{{ $externalURL }}/x/{{ $labels.i }}'
          v: '{{ $value }}'
"#;

const ORDER_TEST: &str = r#"rule_files: [r2.yml]
group_eval_order: [first, second]
tests:
  - name: order
    interval: 1m
    external_labels: {env: prod}
    external_url: http://lookout.example
    input_series:
      - series: 'x{i="a"}'
        values: 1 10 10 1 1 1 1 1 stale
      - series: 'x{i="b"}'
        values: 2x10
    alert_rule_test:
      - eval_time: 2m
        alertname: Flapping
        exp_alerts:
          - exp_labels: {i: a, env: prod}
            exp_annotations: {link: "http://lookout.example/x/a", v: "10"}
      - eval_time: 5m
        alertname: Flapping
        exp_alerts:
          - exp_labels: {i: a, env: prod}
            exp_annotations: {link: "http://lookout.example/x/a", v: "10"}
      - eval_time: 6m
        alertname: Flapping
        exp_alerts: []
    promql_expr_test:
      - expr: doubled
        eval_time: 1m
        exp_samples:
          - labels: doubled
            value: 24
      - expr: ALERTS
        eval_time: 4m
        exp_samples:
          - labels: 'ALERTS{alertname="Flapping",alertstate="firing",env="prod",i="a"}'
            value: 1
      - expr: x
        eval_time: 8m
        exp_samples:
          - labels: 'x{i="b"}'
            value: 2
"#;

/// group_eval_order (a recording rule reading another group's output), external labels and
/// URL in templates, keep_firing_for and stale inputs: same exit code and the same bytes on
/// stdout and stderr as promtool, passing and failing.
#[test]
fn group_order_templates_and_keep_firing_match_promtool() {
    let failing = ORDER_TEST.replace("value: 24", "value: 20").replacen(
        "exp_alerts: []",
        "exp_alerts: [{exp_labels: {i: a, env: prod}}]",
        1,
    );
    for (test, want) in [(ORDER_TEST.to_string(), 0), (failing, 1)] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r2.yml"), ORDER_RULES).expect("write rules");
        let path = dir.path().join("t.yml");
        std::fs::write(&path, &test).expect("write test");
        let ours = run(std::slice::from_ref(&path), TestOptions::default());
        let theirs = Command::new("/usr/bin/promtool")
            .args(["test", "rules"])
            .arg(&path)
            .output()
            .expect("promtool runs");
        assert_eq!(theirs.status.code(), Some(i32::from(want)));
        assert_eq!(ours.summary.exit_code(), want, "{}", ours.stderr);
        assert_eq!(ours.stdout, String::from_utf8_lossy(&theirs.stdout));
        assert_eq!(ours.stderr, String::from_utf8_lossy(&theirs.stderr));
    }
}
