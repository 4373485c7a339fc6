//! `lookout rules test` with native histograms, against Debian's promtool 2.42.
//!
//! promtool 2.42 cannot read native histograms in unit tests at all (`{{…}}` input values are
//! a parse error, `histogram:` in `exp_samples` an unknown field; both came with promtool
//! 2.47). So the oracle is used twice over:
//!
//! * a *twin* test file: the same test group (alerts, recording rules, expectations, one
//!   failing promql check and one failing alert check), once over native histograms for
//!   Lookout and once over the equivalent classic `_bucket`/`_count`/`_sum` series for
//!   promtool, with rules that record the same float results under the same names. Exit
//!   code, stdout and stderr must be the same bytes;
//! * a native-only file with `histogram:` expectations, which promtool 2.42 refuses (checked),
//!   compared with the output promtool 2.47 and later print (`cmd/promtool/unittest.go`:
//!   `parsedSample.String()` with `FloatHistogram.TestExpression()`), written out below.

use std::path::{Path, PathBuf};
use std::process::Command;

use lookout_evaluator::unittest::{TestOptions, run_files};
use lookout_promql::engine::WindowSemantics;

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lookout(test: &Path, windows: WindowSemantics) -> Outcome {
    let opts = TestOptions {
        windows,
        ..TestOptions::default()
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary =
        run_files(&[test.display().to_string()], &opts, &mut out, &mut err).expect("runner starts");
    Outcome {
        code: i32::from(summary.exit_code()),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn promtool(test: &Path) -> Outcome {
    let out = Command::new("/usr/bin/promtool")
        .args(["test", "rules"])
        .arg(test)
        .output()
        .expect("Debian's promtool is installed at /usr/bin/promtool (apt-get install prometheus)");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `rules.yml` and `test.yml` into `dir`; returns the test file's path.
fn write(dir: &Path, rules: &str, test: &str) -> PathBuf {
    std::fs::write(dir.join("rules.yml"), rules).expect("write rules");
    let path = dir.join("test.yml");
    std::fs::write(&path, test).expect("write test");
    path
}

/// Two instances of one job. Per minute, `a` observes 60 requests (15 in (0.5,1], 15 in
/// (1,2], 30 in (2,4]; sum 90) and `b` 30 requests in (0.5,1] (sum 15).
const NATIVE_INPUTS: &str = r#"      - series: 'http_request_duration_seconds{job="api",instance="a"}'
        values: '{{schema:0 sum:0 count:0}}+{{schema:0 sum:90 count:60 buckets:[15 15 30]}}x20'
      - series: 'http_request_duration_seconds{job="api",instance="b"}'
        values: '{{sum:0 count:0}}+{{sum:15 count:30 buckets:[30]}}x20'
"#;

/// The same observations as classic histogram series.
const CLASSIC_INPUTS: &str = r#"      - series: 'http_request_duration_seconds_bucket{job="api",instance="a",le="0.5"}'
        values: '0x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="a",le="1"}'
        values: '0+15x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="a",le="2"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="a",le="4"}'
        values: '0+60x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="a",le="+Inf"}'
        values: '0+60x20'
      - series: 'http_request_duration_seconds_count{job="api",instance="a"}'
        values: '0+60x20'
      - series: 'http_request_duration_seconds_sum{job="api",instance="a"}'
        values: '0+90x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="b",le="0.5"}'
        values: '0x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="b",le="1"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="b",le="2"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="b",le="4"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_bucket{job="api",instance="b",le="+Inf"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_count{job="api",instance="b"}'
        values: '0+30x20'
      - series: 'http_request_duration_seconds_sum{job="api",instance="b"}'
        values: '0+15x20'
"#;

const NATIVE_RULES: &str = r#"groups:
  - name: latency
    rules:
      - record: job:requests:rate5m
        expr: histogram_count(sum by (job) (rate(http_request_duration_seconds[5m])))
      - record: job:request_duration_seconds:p50
        expr: histogram_quantile(0.5, sum by (job) (rate(http_request_duration_seconds[5m])))
      - record: instance:request_duration_seconds:mean5m
        expr: histogram_sum(rate(http_request_duration_seconds[5m])) / histogram_count(rate(http_request_duration_seconds[5m]))
      - alert: SlowRequests
        expr: instance:request_duration_seconds:mean5m > 1
        for: 2m
        labels:
          severity: page
        annotations:
          summary: 'mean latency of {{ $labels.instance }} is {{ $value }}s'
      - alert: Busy
        expr: histogram_count(rate(http_request_duration_seconds[5m])) > 0.75
"#;

const CLASSIC_RULES: &str = r#"groups:
  - name: latency
    rules:
      - record: job:requests:rate5m
        expr: sum by (job) (rate(http_request_duration_seconds_count[5m]))
      - record: job:request_duration_seconds:p50
        expr: histogram_quantile(0.5, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))
      - record: instance:request_duration_seconds:mean5m
        expr: rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])
      - alert: SlowRequests
        expr: instance:request_duration_seconds:mean5m > 1
        for: 2m
        labels:
          severity: page
        annotations:
          summary: 'mean latency of {{ $labels.instance }} is {{ $value }}s'
      - alert: Busy
        expr: rate(http_request_duration_seconds_count[5m]) > 0.75
"#;

/// The twin test group; `INPUTS` is replaced by one of the input blocks. The last alert
/// check (b is not busy) and the mean of b (0.5, not 0.4) fail.
const TWIN_TEST: &str = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - name: latency
    interval: 1m
    input_series:
INPUTS
    alert_rule_test:
      - eval_time: 2m
        alertname: SlowRequests
        exp_alerts: []
      - eval_time: 10m
        alertname: SlowRequests
        exp_alerts:
          - exp_labels: {severity: page, instance: a, job: api}
            exp_annotations:
              summary: mean latency of a is 1.5s
      - eval_time: 10m
        alertname: Busy
        exp_alerts:
          - exp_labels: {instance: a, job: api}
          - exp_labels: {instance: b, job: api}
    promql_expr_test:
      - expr: job:requests:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:requests:rate5m{job="api"}'
            value: 1.5
      - expr: job:request_duration_seconds:p50
        eval_time: 10m
        exp_samples:
          - labels: 'job:request_duration_seconds:p50{job="api"}'
            value: 1
      - expr: instance:request_duration_seconds:mean5m
        eval_time: 10m
        exp_samples:
          - labels: 'instance:request_duration_seconds:mean5m{instance="a",job="api"}'
            value: 1.5
          - labels: 'instance:request_duration_seconds:mean5m{instance="b",job="api"}'
            value: 0.4
"#;

/// Recording rules and alerts over native histograms give, byte for byte, what promtool
/// 2.42 prints for the same test over classic histograms: the passing checks and the two
/// failure messages. Lookout runs with Prometheus 2's windows, as promtool 2.42 evaluates.
#[test]
fn native_histogram_rules_match_promtool_on_the_classic_twin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = write(
        dir.path(),
        NATIVE_RULES,
        &TWIN_TEST.replace("INPUTS\n", NATIVE_INPUTS),
    );
    let ours = lookout(&native, WindowSemantics::Prometheus2);
    let classic = write(
        dir.path(),
        CLASSIC_RULES,
        &TWIN_TEST.replace("INPUTS\n", CLASSIC_INPUTS),
    );
    let theirs = promtool(&classic);
    assert_eq!(theirs.code, 1, "{}", theirs.stderr);
    assert!(
        theirs.stderr.contains("    alertname: Busy, time: 10m, \n")
            && theirs.stderr.contains(" 4E-01\n        got: "),
        "promtool's failures: {}",
        theirs.stderr
    );
    assert_eq!(ours.code, theirs.code, "{}", ours.stderr);
    assert_eq!(ours.stdout, theirs.stdout);
    assert_eq!(ours.stderr, theirs.stderr);
}

const HISTOGRAM_RULES: &str = r#"groups:
  - name: histograms
    rules:
      - record: job:request_duration_seconds:rate5m
        expr: sum by (job) (rate(http_request_duration_seconds[5m]))
      - alert: TooManyRequests
        expr: histogram_count(job:request_duration_seconds:rate5m) > 1
        annotations:
          summary: '{{ $labels.job }} serves {{ $value }} requests per second'
      - alert: RecordedHistogram
        expr: job:request_duration_seconds:rate5m
        annotations:
          value: '{{ $value }}'
"#;

/// `histogram:` expectations: a recorded histogram (a gauge: rate's result), input
/// histograms read back with the counter reset hints the TSDB gives them, a gauge input
/// with `{{…}}xN`, and four failures: a hint left out, a wrong quantile, a float expected
/// where a histogram is, and a `histogram:` that is not one.
const HISTOGRAM_TEST: &str = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - name: histograms
    interval: 1m
    input_series:
INPUTS      - series: 'queue_histogram'
        values: '{{schema:1 count:3 sum:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 0 1] offset:-1 counter_reset_hint:gauge}}x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: TooManyRequests
        exp_alerts:
          - exp_labels: {job: api}
            exp_annotations:
              summary: api serves 1.5 requests per second
      # $value of a histogram sample is the histogram (Prometheus 2.52 and later).
      - eval_time: 10m
        alertname: RecordedHistogram
        exp_alerts:
          - exp_labels: {job: api}
            exp_annotations:
              value: '{count:1.5, sum:1.75, (0.5,1]:0.75, (1,2]:0.25, (2,4]:0.5}'
    promql_expr_test:
      - expr: job:request_duration_seconds:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:request_duration_seconds:rate5m{job="api"}'
            histogram: '{{count:1.5 sum:1.75 counter_reset_hint:gauge buckets:[0.75 0.25 0.5]}}'
      - expr: http_request_duration_seconds
        eval_time: 2m
        exp_samples:
          - labels: 'http_request_duration_seconds{job="api",instance="a"}'
            histogram: '{{count:120 sum:180 counter_reset_hint:not_reset buckets:[30 30 60]}}'
          - labels: 'http_request_duration_seconds{job="api",instance="b"}'
            histogram: '{{count:60 sum:30 counter_reset_hint:not_reset buckets:[60]}}'
      - expr: queue_histogram
        eval_time: 5m
        exp_samples:
          - labels: queue_histogram
            histogram: '{{schema:1 count:3 sum:4 z_bucket:1 z_bucket_w:0.001 counter_reset_hint:gauge offset:-1 buckets:[1 0 1]}}'
      - expr: histogram_count(http_request_duration_seconds) > 0
        eval_time: 0m
        exp_samples: []
      - expr: job:request_duration_seconds:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:request_duration_seconds:rate5m{job="api"}'
            histogram: '{{count:1.5 sum:1.75 buckets:[0.75 0.25 0.5]}}'
      - expr: histogram_quantile(0.5, job:request_duration_seconds:rate5m)
        eval_time: 10m
        exp_samples:
          - labels: '{job="api"}'
            value: 0.75
      - expr: http_request_duration_seconds{instance="b"}
        eval_time: 1m
        exp_samples:
          - labels: 'http_request_duration_seconds{job="api",instance="b"}'
            value: 30
      - expr: queue_histogram
        eval_time: 1m
        exp_samples:
          - labels: queue_histogram
            histogram: '1'
"#;

/// What promtool 2.47 and later print for [`HISTOGRAM_TEST`] (after the `Unit Testing:`
/// line): the `exp:`/`got:` lines write histograms as their test expression, numbers in
/// Go's `%g`, the counter reset hint when it is not unknown.
const HISTOGRAM_FAILURES: &str = r#"  FAILED:
    expr: "job:request_duration_seconds:rate5m", time: 10m,
        exp: {__name__="job:request_duration_seconds:rate5m", job="api"} {{count:1.5 sum:1.75 buckets:[0.75 0.25 0.5]}}
        got: {__name__="job:request_duration_seconds:rate5m", job="api"} {{count:1.5 sum:1.75 counter_reset_hint:gauge buckets:[0.75 0.25 0.5]}}
    expr: "histogram_quantile(0.5, job:request_duration_seconds:rate5m)", time: 10m,
        exp: {job="api"} 7.5E-01
        got: {job="api"} 1E+00
    expr: "http_request_duration_seconds{instance=\"b\"}", time: 1m,
        exp: {__name__="http_request_duration_seconds", instance="b", job="api"} 3E+01
        got: {__name__="http_request_duration_seconds", instance="b", job="api"} {{count:30 sum:15 counter_reset_hint:not_reset buckets:[30]}}
    expr: "queue_histogram", time: 1m, err: labels "queue_histogram": expected histogram, got 1.000000
"#;

/// Native-histogram expectations: promtool 2.42 refuses the file; Lookout prints what
/// promtool 2.47 and later print, as read from their source (not run: Debian has none).
#[test]
fn histogram_expectations_print_as_promtool_2_47_source_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let test = write(
        dir.path(),
        HISTOGRAM_RULES,
        &HISTOGRAM_TEST.replace("INPUTS", NATIVE_INPUTS),
    );
    let theirs = promtool(&test);
    assert_eq!(theirs.code, 1);
    assert!(
        theirs
            .stderr
            .contains("field histogram not found in type main.sample"),
        "{}",
        theirs.stderr
    );

    let ours = lookout(&test, WindowSemantics::Prometheus2);
    assert_eq!(ours.code, 1, "{}", ours.stderr);
    // One empty line on stdout per failure, then the file's closing one.
    assert_eq!(
        ours.stdout,
        format!("Unit Testing:  {}\n{}\n", test.display(), "\n".repeat(4))
    );
    assert_eq!(ours.stderr, HISTOGRAM_FAILURES);
}

/// Without the failing checks the same file passes, with Prometheus 3's windows too.
#[test]
fn histogram_expectations_pass() {
    let passing: String = {
        let full = HISTOGRAM_TEST.replace("INPUTS", NATIVE_INPUTS);
        let cut = full
            .find("      - expr: job:request_duration_seconds:rate5m\n        eval_time: 10m\n        exp_samples:\n          - labels: 'job:request_duration_seconds:rate5m{job=\"api\"}'\n            histogram: '{{count:1.5 sum:1.75 buckets")
            .expect("the first failing check");
        full[..cut].to_string()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let test = write(dir.path(), HISTOGRAM_RULES, &passing);
    for windows in [WindowSemantics::Prometheus2, WindowSemantics::Prometheus3] {
        let ours = lookout(&test, windows);
        assert_eq!(ours.code, 0, "{windows:?}: {}", ours.stderr);
        assert_eq!(
            ours.stdout,
            format!("Unit Testing:  {}\n  SUCCESS\n\n", test.display())
        );
        assert_eq!(ours.stderr, "");
    }
}

/// Hostile histogram values: an input series that would expand to gigabytes is refused
/// with the limit named, and an expectation that repeats a histogram is counted, not
/// expanded, before it is refused.
#[test]
fn hostile_histogram_inputs_and_expectations_are_refused_cheaply() {
    let big = format!(
        "{{{{schema:8 buckets:[{}]}}}}",
        vec!["1"; 100_000].join(" ")
    );
    // One test group: `big` repeated as the input, evaluated at `at`, expecting `exp`.
    let group = |at: &str, exp: &str| {
        format!(
            r#"  - interval: 1m
    input_series:
      - series: 'h'
        values: '{big}x100000'
    promql_expr_test:
      - expr: h
        eval_time: {at}
        exp_samples:
          - labels: h
            histogram: '{exp}'
"#
        )
    };
    let test = format!(
        "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n{}{}",
        group("100000m", &big),
        group("1m", &format!("{big}x100000000"))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let test = write(dir.path(), "groups: []\n", &test);
    let ours = lookout(&test, WindowSemantics::Prometheus2);
    assert_eq!(ours.code, 1, "{}", ours.stderr);
    assert!(
        ours.stderr.contains(
            "parse error in input series \"h\": series expands to more than 2000000 values, counting each histogram as 1 + its buckets (100001 here)"
        ),
        "{}",
        ours.stderr
    );
    assert!(
        ours.stderr
            .contains("err: labels \"h\": expected 1 value, got 100000001"),
        "{}",
        ours.stderr
    );
}
