//! PromQL parse errors of `lookout rules check` against the real `promtool check rules`:
//! for each broken expression, a rule file holding it is checked by both, and the error
//! lines must name the same file position, the same `line:col` inside the expression and
//! the same message. promql-parser alone says "invalid promql query" for most of them.
//!
//! Skipped, saying so, when `promtool` (Debian package `prometheus`) is not installed.

use std::process::Command;

use lookout_evaluator::rules::check::check_files;

/// Broken expressions: unclosed brackets, bad durations, missing operands, unknown
/// functions, argument counts, label matchers, trailing garbage, strings, keywords.
const CASES: &[&str] = &[
    "sum(rate(x[5m])",
    "up{job=\"a\"",
    "x[5m",
    "rate(x[5m]",
    "up{job=\"a\",",
    "up +",
    "+ ",
    "sum by (job",
    "x[5x]",
    "x[5m:1q]",
    "x offset 5z",
    "foo(up)",
    "rate()",
    "rate(x[5m], 1)",
    "round(x, 1, 2)",
    "up{job=~}",
    "up{job=\"a\" instance=\"b\"}",
    "up{job=}",
    "up{=~\"a\"}",
    "up )",
    "up 5",
    "up}",
    "\"abc",
    "'abc",
    "sum(x) by (job) y",
    "up == == 1",
    "1 +* 2",
    "x[5m] offset",
    "up{job!~\"(\"}",
    "histogram_quantile(0.9)",
    "label_replace(up, \"a\", \"b\", \"c\")",
    "x @ foo",
    "up[5m][5m]",
    "sum without job (x)",
    "up by",
    "up sum",
    "up \"a\"",
    "up 5m",
    "up a:b",
    "sum(x) by by",
    "up ,",
    "x[5m 1]",
    "x[",
    "up @",
    "up == bool",
    "up{a=\"b\" c}",
    "sum by (a,",
    "up offset -",
    "x + \"abc",
    "1 + foo(up)",
];

/// A rule file holding `expr` (single-quoted YAML, so the expression's position in the
/// file is 5:15 and its own columns are the file's columns minus 14).
fn rule_file(expr: &str) -> String {
    format!(
        "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: '{}'\n",
        expr.replace('\'', "''")
    )
}

/// The text after `could not parse expression: ` of the error line about `file`.
fn parse_error(output: &str, file: &str) -> Option<String> {
    output
        .lines()
        .find(|l| l.starts_with(&format!("{file}: ")))
        .map(|l| l.replace(file, "FILE"))
}

/// Whether promtool can be run; says why the test is skipped when not.
fn have_promtool() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "promtool is not installed, and CI needs it (scripts/install-test-deps.sh)"
    );
    if !found {
        eprintln!("SKIPPED: promtool is not installed (Debian package prometheus)");
    }
    found
}

/// What `promtool check rules` and `lookout rules check` print on stderr for `files`.
fn both(files: &[String]) -> (String, String) {
    let promtool = Command::new("promtool")
        .args(["check", "rules"])
        .args(files)
        .output()
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    check_files(
        files,
        lookout_evaluator::limits::MAX_RULE_FILE_BYTES,
        &mut out,
        &mut err,
    );
    (
        String::from_utf8_lossy(&promtool.stderr).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[test]
fn parse_errors_match_promtool() {
    if !have_promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = CASES
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            let path = dir.path().join(format!("case{i}.yml"));
            std::fs::write(&path, rule_file(expr)).unwrap();
            path.display().to_string()
        })
        .collect();
    let (promtool, lookout) = both(&files);
    let mut differ = Vec::new();
    for (expr, file) in CASES.iter().zip(&files) {
        let want = parse_error(&promtool, file);
        let got = parse_error(&lookout, file);
        assert!(want.is_some(), "promtool accepted {expr:?}:\n{promtool}");
        if want != got {
            differ.push(format!(
                "{expr:?}\n  promtool: {}\n  lookout:  {}",
                want.unwrap_or_default(),
                got.unwrap_or_default()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} cases differ:\n{}",
        differ.len(),
        CASES.len(),
        differ.join("\n")
    );
}

#[test]
fn multi_line_expressions_count_lines_inside_the_expression() {
    if !have_promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |\n          sum(rate(x[5m]))\n            / * 2\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let (promtool, lookout) = both(std::slice::from_ref(&file));
    let want = parse_error(&promtool, &file);
    assert!(
        want.as_deref()
            .is_some_and(|w| w.contains("2:5: parse error")),
        "{promtool}"
    );
    assert_eq!(parse_error(&lookout, &file), want, "{lookout}");
}
