//! `--query.prometheus2-windows` side by side with Debian's `promtool` 2.42.
//!
//! `tests/prometheus2_windows/` holds one rule file and two unit-test files over the same
//! input, whose expectations depend on samples lying exactly on a window's left edge (a
//! range function, a recording rule with `increase`, a subquery, the instant lookback of
//! exactly 5m and an alert): `edges-prometheus2_test.yml` with Prometheus 2's results,
//! `edges-prometheus3_test.yml` with Prometheus 3's. promtool 2.42 passes the first and
//! fails the second; `lookout rules test` does the opposite by default and the same as
//! promtool with the switch, down to the failure report.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PROMTOOL: &str = "/usr/bin/promtool";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus2_windows")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(fixtures())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (promtool: apt-get install prometheus)"))
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every expectation of the files depends on the window edges: a failing run names each.
fn assert_every_case_failed(o: &Output) {
    assert_eq!(o.status.code(), Some(1), "{}", show(o));
    let text = String::from_utf8_lossy(&o.stderr);
    for case in [
        "alertname: RestartedTwice, time: 5m",
        "expr: \"count_over_time(requests_total[5m])\", time: 5m",
        "expr: \"job:requests:increase5m\", time: 5m",
        "expr: \"count_over_time(requests_total[2m:1m])\", time: 5m",
        "expr: \"up\", time: 5m",
    ] {
        assert!(text.contains(case), "{case} did not fail:\n{}", show(o));
    }
}

#[test]
fn prometheus2_windows_pass_what_promtool_2_passes() {
    let p2 = "edges-prometheus2_test.yml";
    let promtool = run(PROMTOOL, &["test", "rules", p2]);
    assert_eq!(promtool.status.code(), Some(0), "{}", show(&promtool));
    let switched = run(
        common::LOOKOUT,
        &["rules", "test", "--query.prometheus2-windows", p2],
    );
    assert_eq!(switched.status.code(), Some(0), "{}", show(&switched));
    assert_eq!(switched.stdout, promtool.stdout, "{}", show(&switched));
    assert_every_case_failed(&run(common::LOOKOUT, &["rules", "test", p2]));
}

#[test]
fn prometheus2_windows_fail_what_promtool_2_fails_with_its_report() {
    let p3 = "edges-prometheus3_test.yml";
    let by_default = run(common::LOOKOUT, &["rules", "test", p3]);
    assert_eq!(by_default.status.code(), Some(0), "{}", show(&by_default));
    let promtool = run(PROMTOOL, &["test", "rules", p3]);
    assert_every_case_failed(&promtool);
    let switched = run(
        common::LOOKOUT,
        &["rules", "test", "--query.prometheus2-windows", p3],
    );
    assert_every_case_failed(&switched);
    assert_eq!(
        (&switched.stdout, &switched.stderr),
        (&promtool.stdout, &promtool.stderr),
        "lookout:\n{}\npromtool:\n{}",
        show(&switched),
        show(&promtool)
    );
}

#[test]
fn promqltest_takes_the_switch() {
    let by_default = run(common::LOOKOUT, &["promqltest", "edges.test"]);
    assert_eq!(by_default.status.code(), Some(1), "{}", show(&by_default));
    assert!(
        String::from_utf8_lossy(&by_default.stdout).contains("0 passed, 5 failed, 0 skipped"),
        "{}",
        show(&by_default)
    );
    let switched = run(
        common::LOOKOUT,
        &["promqltest", "--query.prometheus2-windows", "edges.test"],
    );
    assert_eq!(switched.status.code(), Some(0), "{}", show(&switched));
    assert!(
        String::from_utf8_lossy(&switched.stdout).contains("5 passed, 0 failed, 0 skipped"),
        "{}",
        show(&switched)
    );
}
