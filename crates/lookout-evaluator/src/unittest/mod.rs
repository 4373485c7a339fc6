//! `lookout rules test`: runs `promtool test rules` files unchanged.
//!
//! The file format, the evaluation loop, the comparisons and the messages follow Prometheus's
//! `cmd/promtool/unittest.go` (see `docs/configuration/unit_testing_rules.md`): rule files
//! relative to the test file (globs allowed), `evaluation_interval` (1m), `group_eval_order`,
//! `tests[]` with `interval`, `input_series`, `alert_rule_test`, `promql_expr_test`,
//! `external_labels`, `external_url`, `name`, `start_timestamp`, and `fuzzy_compare`;
//! `--run` selects test groups by a regular expression on their name (promtool 2.49) and
//! `--ignore-unknown-fields` accepts unknown keys in rule files (promtool 3.2).
//!
//! Rules are evaluated by the evaluator's own groups and alert state machine over the
//! embedded datasource ([`runner`]); nothing here re-implements rule semantics.
//!
//! Native histograms are read, evaluated and compared as promtool 2.47 and later do:
//! `{{…}}` values (and `{{…}}xN`, `{{…}}+{{…}}xN`) in `input_series`, recording rules that
//! produce histograms, and `histogram:` in `exp_samples`, compared (and printed in failures)
//! as `FloatHistogram.TestExpression()`, counter reset hint included. promtool 2.42 refuses
//! all of these.
//!
//! Differences, stated: promtool's per-query limit of 10,000 samples is not enforced;
//! `--diff` and JUnit output are not implemented.

pub mod format;
mod runner;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::rules::file::{self, RuleFile};
use format::{TestGroup, UnitTestFile};
use runner::FileContext;

/// Flags of `lookout rules test`.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// `--run` patterns (joined with `|`); empty runs every test group.
    pub run: Vec<String>,
    /// `--ignore-unknown-fields`: unknown keys in rule files are ignored.
    pub ignore_unknown_fields: bool,
    /// `--debug`: timings and a dump of all series per test group on stderr.
    pub debug: bool,
    /// `--rules.max-file-size`: the largest test file or rule file read, in bytes.
    pub max_file_bytes: u64,
    /// `--query.prometheus2-windows`: evaluate with Prometheus 2's left-closed windows, as
    /// `promtool test rules` 2.x does.
    pub windows: lookout_promql::engine::WindowSemantics,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            run: Vec::new(),
            ignore_unknown_fields: false,
            debug: false,
            max_file_bytes: crate::limits::MAX_RULE_FILE_BYTES,
            windows: lookout_promql::engine::WindowSemantics::Prometheus3,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Test files that failed.
    pub failed_files: Vec<String>,
    /// Test groups that ran.
    pub groups_run: usize,
}

impl Summary {
    /// promtool's exit code: 0 when every file passed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.failed_files.is_empty())
    }
}

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A `--run` pattern is not a valid regular expression.
    #[error("invalid --run pattern: {0}")]
    Run(#[from] regex::Error),
    /// The async runtime could not be created.
    #[error("cannot start the evaluation runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Runs every test file, writing promtool's output: `Unit Testing:  FILE` and `SUCCESS` on
/// `out`, `FAILED:` and the failures on `err`.
pub fn run_files(
    files: &[String],
    opts: &TestOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, TestError> {
    let run = if opts.run.is_empty() {
        None
    } else {
        Some(regex::Regex::new(&opts.run.join("|"))?)
    };
    // Queries run on tokio's blocking pool in the embedded datasource; one worker thread
    // is enough, evaluation is sequential.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_stack_size(lookout_promql::engine::depth::EVAL_STACK_BYTES)
        .build()?;
    let mut summary = Summary::default();
    for f in files {
        let _ = writeln!(out, "Unit Testing:  {f}");
        let errors =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
                run_file(f, opts, run.as_ref(), &rt, err, &mut summary)
            });
        if errors.is_empty() {
            let _ = writeln!(out, "  SUCCESS");
        } else {
            let _ = writeln!(err, "  FAILED:");
            for e in &errors {
                let _ = writeln!(err, "{e}");
                let _ = writeln!(out);
            }
            summary.failed_files.push(f.clone());
        }
        let _ = writeln!(out);
    }
    Ok(summary)
}

/// Runs one file; returns its failures (empty: passed).
fn run_file(
    path: &str,
    opts: &TestOptions,
    run: Option<&regex::Regex>,
    rt: &tokio::runtime::Runtime,
    err: &mut dyn Write,
    summary: &mut Summary,
) -> Vec<String> {
    let limit = crate::limits::FileLimit::rule_test_file(opts.max_file_bytes);
    let text = match crate::limits::read_capped(Path::new(path), limit) {
        Ok(t) => t,
        Err(e) => return vec![format!("open {path}: {e}")],
    };
    let utf = match parse_test_file(&text) {
        Ok(u) => u,
        Err(e) => return vec![format!("{path}: {e}")],
    };
    let rule_paths = match resolve_rule_files(Path::new(path), &utf.rule_files, err) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let eval_interval_ms = utf
        .evaluation_interval
        .map(|d| d.0)
        .filter(|d| *d != 0)
        .unwrap_or(60_000);
    let mut group_order = HashMap::new();
    for (i, g) in utf.group_eval_order.iter().enumerate() {
        if group_order.insert(g.clone(), i).is_some() {
            return vec![format!("group name repeated in evaluation order: {g}")];
        }
    }
    // Rule files are read once per test file (promtool re-reads them per test group, with
    // the same result).
    let rule_files = load_rule_files(&rule_paths, opts);
    let ctx = FileContext {
        rule_files: &rule_files,
        eval_interval_ms,
        group_order: &group_order,
        fuzzy: utf.fuzzy_compare,
        debug: opts.debug,
        windows: opts.windows,
    };
    let mut errors = Vec::new();
    for (i, tg) in utf.tests.iter().enumerate() {
        if let Some(re) = run
            && !re.is_match(&tg.name.0)
        {
            continue;
        }
        let name = group_name(tg, i);
        errors.extend(runner::run_group(&ctx, tg, &name, rt, err));
        summary.groups_run += 1;
    }
    errors
}

/// Decodes the text of a test file (strictly: unknown keys are errors); empty text is an
/// empty file.
pub fn parse_test_file(text: &str) -> Result<UnitTestFile, String> {
    if text.trim().is_empty() {
        Ok(UnitTestFile::default())
    } else {
        crate::yaml::from_str(&quote_number_like_values(text))
    }
}

/// Quotes `values:` scalars that YAML would read as hexadecimal or octal integers
/// (`values: 0x10` is "0, ten more times", not 16). Go's yaml.v2 keeps the source text of a
/// scalar decoded into a string field; serde's YAML resolver does not, so the text is
/// quoted before decoding.
fn quote_number_like_values(text: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"(?m)^(\s*(?:-\s+)?values:\s*)(0[xXoO][0-9A-Fa-f_]+)(\s*(?:#.*)?)$")
            .unwrap_or_else(|_| unreachable!("constant regex"))
    });
    re.replace_all(text, "${1}'${2}'${3}").into_owned()
}

fn group_name(tg: &TestGroup, i: usize) -> String {
    if tg.name.0.is_empty() {
        format!("unnamed#{i}")
    } else {
        tg.name.0.clone()
    }
}

/// promtool's `resolveAndGlobFilepaths`: relative paths are joined to the test file's
/// directory, then globbed; a pattern matching nothing is a warning.
fn resolve_rule_files(
    test_file: &Path,
    patterns: &[String],
    err: &mut dyn Write,
) -> Result<Vec<PathBuf>, String> {
    let base = test_file.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    for rf in patterns {
        let joined = if rf.is_empty() || Path::new(rf).is_absolute() || base.as_os_str().is_empty()
        {
            PathBuf::from(rf)
        } else {
            base.join(rf)
        };
        let pattern = joined.to_string_lossy().to_string();
        let matches = glob::glob(&pattern).map_err(|e| format!("{pattern}: {e}"))?;
        let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
        found.sort();
        if found.is_empty() {
            let _ = writeln!(err, "  WARNING: no file match pattern {pattern}");
        }
        out.extend(found);
    }
    Ok(out)
}

/// Loads the rule files; errors are formatted as `lookout rules check` prints them.
fn load_rule_files(paths: &[PathBuf], opts: &TestOptions) -> Result<Vec<RuleFile>, Vec<String>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let loaded = if opts.ignore_unknown_fields {
            crate::limits::read_capped(p, crate::limits::FileLimit::rule_file(opts.max_file_bytes))
                .map_err(|e| format!("{}: {e}", p.display()))
                .and_then(|text| {
                    let text =
                        strip_unknown_fields(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                    file::parse_str(p, &text).map_err(|e| e.to_string())
                })
        } else {
            file::load_file_with_limit(p, opts.max_file_bytes).map_err(|e| e.to_string())
        };
        match loaded {
            Ok(f) => files.push(f),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(errors)
    }
}

const FILE_KEYS: &[&str] = &["groups"];
const GROUP_KEYS: &[&str] = &[
    "name",
    "interval",
    "query_offset",
    "limit",
    "labels",
    "rules",
];
const RULE_KEYS: &[&str] = &[
    "record",
    "alert",
    "expr",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
];

/// Drops keys the rule-file schema does not know, at file, group and rule level (what
/// Prometheus's non-strict decoding does with `--ignore-unknown-fields`).
fn strip_unknown_fields(text: &str) -> Result<String, String> {
    use serde_yaml_ng::Value;
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    lookout_web::yaml_depth::check(text).map_err(|e| e.to_string())?;
    let mut doc: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    doc.apply_merge()
        .map_err(|e| format!("YAML merge key: {e}"))?;
    fn retain(v: &mut Value, keys: &[&str]) {
        if let Value::Mapping(m) = v {
            m.retain(|k, _| k.as_str().is_some_and(|k| keys.contains(&k)));
        }
    }
    retain(&mut doc, FILE_KEYS);
    if let Some(Value::Sequence(groups)) = doc.get_mut("groups") {
        for g in groups {
            retain(g, GROUP_KEYS);
            if let Some(Value::Sequence(rules)) = g.get_mut("rules") {
                for r in rules {
                    retain(r, RULE_KEYS);
                }
            }
        }
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_rule_fields_are_dropped() {
        let text = "groups:\n  - name: g\n    owner: x\n    rules:\n      - record: a\n        expr: '1'\n        team: y\n";
        let out = strip_unknown_fields(text).unwrap();
        assert!(!out.contains("owner"));
        assert!(!out.contains("team"));
        assert!(out.contains("record: a"));
    }

    #[test]
    fn hex_looking_values_stay_text() {
        let t = "tests:\n  - input_series:\n      - series: up\n        values: 0x10\n      - values: 0x3 # c\n        series: x\n";
        let q = quote_number_like_values(t);
        assert!(q.contains("values: '0x10'\n"));
        assert!(q.contains("- values: '0x3' # c"));
        let u: UnitTestFile = serde_yaml_ng::from_str(&q).unwrap();
        assert_eq!(u.tests[0].input_series[0].values.0, "0x10");
    }
}
