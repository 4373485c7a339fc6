//! A runner for Prometheus's PromQL test scripts (`promql/promqltest/testdata/*.test`),
//! doing what Prometheus's harness (`promqltest/test.go`) does: every instant eval is also
//! run with `@ <t>` added to its selectors at several times and as a range query around
//! `t`, results are compared with a relative tolerance of 1e-6, and `expect` lines check
//! failures and annotations.
//!
//! Native histograms (`{{…}}` values, `load_with_nhcb`) are loaded into the storage and
//! compared as Prometheus's harness compares them. Evals this engine cannot run are
//! reported as skipped with the reason, never dropped: those that call the experimental
//! `integral()` function. Every other experimental feature is
//! implemented and runs like any other eval: `start_timestamp()`, duration expressions,
//! `anchored`/`smoothed`, `fill*()`, `limitk`, `limit_ratio`, `info()`, `sort_by_label`,
//! `mad_over_time`, `ts_of_*_over_time`, `double_exponential_smoothing`,
//! `histogram_quantiles`, `step()`, `range()`, `start()`, `end()`, `min_of`/`max_of`.
//!
//! `@st` start-timestamp lines give the samples of the series line after them start times
//! (offsets from each sample's time; a standalone `@st` line is the default of the block),
//! stored with [`Storage::append_with_st`] as Prometheus's harness appends them.

mod nhcb;
pub mod script;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use promql_parser::parser::{AtModifier, Expr};
use regex::Regex;

use crate::engine::{
    self, AnnotationLevel, Engine, EngineOptions, QueryError, QueryOutput, Value, WindowSemantics,
    visit,
};
use crate::histogram::notation;
use crate::storage::{Storage, StorageOptions};
pub use script::{Command, Eval, Load, Matcher, ScriptError, SeqValue, parse_script};

/// Result of one eval.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Every check passed.
    Passed,
    /// A check failed; the text says what was expected and what came back.
    Failed(String),
    /// Not run; the text says why.
    Skipped(String),
}

/// The outcome of one `eval` command.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOutcome {
    /// 1-based line of the eval in the script.
    pub line: usize,
    /// The query.
    pub query: String,
    /// What happened.
    pub status: Status,
}

/// Outcomes of a whole script.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScriptReport {
    /// One entry per eval, in script order.
    pub evals: Vec<EvalOutcome>,
    /// Problems outside evals (a `load` the storage rejected), with their lines.
    pub errors: Vec<String>,
}

impl ScriptReport {
    /// Number of passed evals.
    pub fn passed(&self) -> usize {
        self.evals
            .iter()
            .filter(|e| e.status == Status::Passed)
            .count()
    }

    /// Number of failed evals plus script-level errors.
    pub fn failed(&self) -> usize {
        self.evals
            .iter()
            .filter(|e| matches!(e.status, Status::Failed(_)))
            .count()
            + self.errors.len()
    }

    /// Number of skipped evals.
    pub fn skipped(&self) -> usize {
        self.evals
            .iter()
            .filter(|e| matches!(e.status, Status::Skipped(_)))
            .count()
    }
}

/// Why a script file could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The script does not parse.
    #[error("{path}:{}: {}", .source.line, .source.message)]
    Script {
        /// The file.
        path: String,
        /// The parse error.
        source: ScriptError,
    },
}

/// The engine options Prometheus's harness uses.
pub fn harness_engine_options() -> EngineOptions {
    EngineOptions {
        lookback_delta: Duration::from_secs(300),
        max_samples: 10_000,
        default_subquery_step: Duration::from_secs(60),
        enable_at_modifier: true,
        enable_negative_offset: true,
        timeout: Some(Duration::from_secs(100)),
        max_depth: crate::engine::depth::DEFAULT_MAX_DEPTH,
        windows: WindowSemantics::Prometheus3,
        split_series: None,
    }
}

/// Reads and runs a script file with the harness's engine options.
pub fn run_file(path: &Path) -> Result<ScriptReport, RunError> {
    run_file_with(path, harness_engine_options())
}

/// Reads and runs a script file with engine options `opts` (the harness's, with Prometheus
/// 2 windows, for scripts written for Prometheus 2).
pub fn run_file_with(path: &Path, opts: EngineOptions) -> Result<ScriptReport, RunError> {
    let src = std::fs::read_to_string(path).map_err(|source| RunError::Io {
        path: path.display().to_string(),
        source,
    })?;
    run_script_with(&src, opts).map_err(|source| RunError::Script {
        path: path.display().to_string(),
        source,
    })
}

/// Parses and runs a script with the harness's engine options.
pub fn run_script(src: &str) -> Result<ScriptReport, ScriptError> {
    run_script_with(src, harness_engine_options())
}

/// Parses and runs a script with engine options `opts`.
pub fn run_script_with(src: &str, opts: EngineOptions) -> Result<ScriptReport, ScriptError> {
    let cmds = parse_script(src)?;
    let mut runner = Runner::new(opts);
    let mut report = ScriptReport::default();
    for cmd in &cmds {
        match cmd {
            Command::Clear => runner.clear(),
            Command::Load(load) => {
                if let Err(e) = runner.load(load) {
                    report.errors.push(format!("line {}: {e}", load.line));
                }
            }
            Command::Eval(ev) => {
                let status = runner.eval(ev);
                report.evals.push(EvalOutcome {
                    line: ev.line,
                    query: ev.expr.clone(),
                    status,
                });
            }
        }
    }
    Ok(report)
}

/// Functions whose result depends on the evaluation time even with `@` everywhere.
const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "time",
    "timestamp",
    "start",
    "end",
    "step",
    "range",
];

/// Experimental functions this engine does not implement (`integral()` is unspecified).
const UNSUPPORTED_FUNCTIONS: &[&str] = &["integral"];

/// Functions promql-parser marks experimental (Prometheus gates them behind a flag).
const EXPERIMENTAL_FUNCTIONS: &[&str] = &[
    "double_exponential_smoothing",
    "end",
    "histogram_quantiles",
    "info",
    "integral",
    "mad_over_time",
    "max_of",
    "min_of",
    "range",
    "sort_by_label",
    "sort_by_label_desc",
    "start",
    "start_timestamp",
    "step",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_max_over_time",
    "ts_of_min_over_time",
];

struct Runner {
    storage: Storage,
    engine: Engine,
}

impl Runner {
    fn new(opts: EngineOptions) -> Runner {
        Runner {
            storage: Storage::new(StorageOptions::default()),
            engine: Engine::new(opts),
        }
    }

    fn clear(&mut self) {
        self.storage.clear();
    }

    fn load(&mut self, load: &Load) -> Result<(), String> {
        for s in &load.series {
            for (i, v) in s.values.iter().enumerate() {
                let t = i as i64 * load.step_ms;
                // A start time is an offset from the sample's time; 0 stays unknown.
                let st = s.st_offsets.get(i).copied().flatten().map_or(0, |o| t + o);
                match v {
                    SeqValue::Float(f) => self
                        .storage
                        .append_with_st(&s.labels, st, t, *f)
                        .map_err(|e| e.to_string())?,
                    SeqValue::Histogram(p) => self
                        .storage
                        .append_histogram_with_st(&s.labels, st, t, Arc::new(p.h.clone()))
                        .map_err(|e| e.to_string())?,
                    SeqValue::Omitted => {}
                }
            }
        }
        if load.with_nhcb {
            for (labels, t, h) in nhcb::convert(load) {
                self.storage
                    .append_histogram(&labels, t, Arc::new(h))
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Why an eval cannot run here, if it cannot.
    fn skip_reason(&self, expr: Option<&Expr>) -> Option<String> {
        let expr = expr?;
        let mut reason = None;
        visit(expr, &mut |e| {
            if reason.is_some() {
                return;
            }
            match e {
                Expr::Call(c) if UNSUPPORTED_FUNCTIONS.contains(&c.func.name) => {
                    reason = Some(format!(
                        "experimental parser feature not implemented: function {}()",
                        c.func.name
                    ));
                }
                _ => {}
            }
        });
        reason
    }

    /// Skip reasons for a query promql-parser rejects: judged from its text.
    fn skip_reason_unparsed(&self, q: &str) -> Option<String> {
        let words: Vec<&str> = q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(f) = words.iter().find(|w| EXPERIMENTAL_FUNCTIONS.contains(w)) {
            return Some(format!("experimental parser feature: function {f}()"));
        }
        None
    }

    fn eval(&self, ev: &Eval) -> Status {
        let parsed = match (ev.instant_at, ev.range) {
            (_, Some((start, end, step))) if !ev.expect_range_vector => {
                engine::parse_for_step(&ev.expr, step, end - start)
            }
            _ => engine::parse(&ev.expr),
        };
        if let Some(reason) = self.skip_reason(parsed.as_ref().ok()) {
            return Status::Skipped(reason);
        }
        let expr = match parsed {
            Ok(e) => e,
            Err(e) => {
                if let Some(reason) = self.skip_reason_unparsed(&ev.expr) {
                    return Status::Skipped(reason);
                }
                return match &ev.fail {
                    Some(m) => check_failure(m, &e),
                    None => Status::Failed(format!("query does not parse: {e}")),
                };
            }
        };
        let result = match (ev.instant_at, ev.range) {
            (_, Some((start, end, step))) if !ev.expect_range_vector => {
                self.range_eval(ev, &expr, start, end, step)
            }
            (Some(t), _) => self.instant_eval(ev, &expr, t),
            _ => Err("eval has neither a time nor a range".into()),
        };
        match result {
            Ok(()) => Status::Passed,
            Err(msg) => Status::Failed(msg),
        }
    }

    fn range_eval(
        &self,
        ev: &Eval,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(), String> {
        let res = self
            .engine
            .exec_range(&self.storage, expr, &ev.expr, start, end, step);
        match (res, &ev.fail) {
            (Err(e), Some(m)) => as_result(check_failure(m, &e)),
            (Err(e), None) => Err(format!("unexpected error: {}", e.message())),
            (Ok(_), Some(_)) => Err("expected the query to fail, but it succeeded".into()),
            (Ok(out), None) => {
                check_annotations(ev, &out.annotations)?;
                compare_matrix(ev, &out.value, start, step, end)
            }
        }
    }

    fn instant_eval(&self, ev: &Eval, expr: &Expr, t: i64) -> Result<(), String> {
        let mut variants: Vec<(Expr, String, i64)> = vec![(expr.clone(), ev.expr.clone(), t)];
        if let Some(at_expr) = with_at_everywhere(expr, t) {
            let text = go_infinities(&at_expr.to_string());
            let times: Vec<i64> = if t == 0 {
                vec![-1000, 0, 1000]
            } else {
                vec![-10 * t, 0, t / 5, t, 10 * t]
            };
            for et in times {
                variants.push((at_expr.clone(), text.clone(), et));
            }
        }
        for (i, (e, text, et)) in variants.iter().enumerate() {
            let what = if i == 0 {
                String::new()
            } else {
                format!(" [variant `{text}` at {et}ms]")
            };
            self.instant_variant(ev, e, text, *et)
                .map_err(|m| format!("{m}{what}"))?;
        }
        Ok(())
    }

    fn instant_variant(&self, ev: &Eval, expr: &Expr, text: &str, t: i64) -> Result<(), String> {
        let res = self.engine.exec_instant(&self.storage, expr, text, t);
        let out: QueryOutput<Value> = match (res, &ev.fail) {
            (Err(e), Some(m)) => return as_result(check_failure(m, &e)),
            (Err(e), None) => return Err(format!("unexpected error: {}", e.message())),
            (Ok(_), Some(_)) => return Err("expected the query to fail, but it succeeded".into()),
            (Ok(out), None) => out,
        };
        check_annotations(ev, &out.annotations)?;
        compare_value(ev, &out.value)?;
        if ev.expect_range_vector || ev.expect_string.is_some() {
            return Ok(());
        }
        if ["start()", "end()", "range()", "step()"]
            .iter()
            .any(|f| text.contains(f))
        {
            return Ok(());
        }
        let range = self
            .engine
            .exec_range(&self.storage, expr, text, t - 60_000, t + 60_000, 60_000)
            .map_err(|e| format!("range-mode check: unexpected error: {}", e.message()))?;
        if ev.ordered {
            return Ok(());
        }
        check_sorted(&range.value).map_err(|m| format!("range-mode check: {m}"))?;
        let vec: Vec<engine::Sample> = range
            .value
            .iter()
            .filter_map(|s| {
                let f = s.floats.iter().find(|p| p.t == t).map(|p| (p.f, None));
                let h = s.histograms.iter().find(|p| p.t == t);
                f.or_else(|| h.map(|p| (0.0, Some(p.h.clone()))))
                    .map(|(f, h)| engine::Sample {
                        metric: s.metric.clone(),
                        t,
                        f,
                        drop_name: false,
                        h,
                    })
            })
            .collect();
        let as_value = match out.value {
            Value::Scalar { .. } => match vec.first() {
                Some(s) => Value::Scalar { t, v: s.f },
                None => return Err("range-mode check: no point at the middle step".into()),
            },
            _ => Value::Vector(vec),
        };
        compare_value(ev, &as_value).map_err(|m| format!("range-mode check: {m}"))
    }
}

fn as_result(s: Status) -> Result<(), String> {
    match s {
        Status::Failed(m) => Err(m),
        _ => Ok(()),
    }
}

fn check_failure(m: &Matcher, e: &QueryError) -> Status {
    let msg = e.message();
    match m {
        Matcher::Any => Status::Passed,
        Matcher::Message(want) if *want == msg => Status::Passed,
        Matcher::Regex(re) if Regex::new(re).is_ok_and(|r| r.is_match(&msg)) => Status::Passed,
        Matcher::Message(want) => Status::Failed(format!("expected error {want:?}, got {msg:?}")),
        Matcher::Regex(re) => {
            Status::Failed(format!("expected error matching {re:?}, got {msg:?}"))
        }
    }
}

fn matcher_matches(m: &Matcher, s: &str) -> bool {
    match m {
        Matcher::Any => true,
        Matcher::Message(want) => want == s,
        Matcher::Regex(re) => Regex::new(re).is_ok_and(|r| r.is_match(s)),
    }
}

fn check_annotations(ev: &Eval, annos: &[engine::Annotation]) -> Result<(), String> {
    let warnings: Vec<&str> = annos
        .iter()
        .filter(|a| a.level == AnnotationLevel::Warning)
        .map(|a| a.message.as_str())
        .collect();
    let infos: Vec<&str> = annos
        .iter()
        .filter(|a| a.level == AnnotationLevel::Info)
        .map(|a| a.message.as_str())
        .collect();
    for (kind, expected, actual) in [("warn", &ev.warn, &warnings), ("info", &ev.info, &infos)] {
        if expected.is_empty() {
            continue;
        }
        if actual.is_empty() {
            return Err(format!("expected {kind} annotations but none were found"));
        }
        for e in expected {
            if !actual.iter().any(|a| matcher_matches(e, a)) {
                return Err(format!(
                    "expected {kind} annotation {e:?} but found {actual:?}"
                ));
            }
        }
        for a in actual.iter() {
            if !expected.iter().any(|e| matcher_matches(e, a)) {
                return Err(format!("unexpected {kind} annotation {a:?}"));
            }
        }
    }
    if ev.no_warn && !warnings.is_empty() {
        return Err(format!("unexpected warnings: {warnings:?}"));
    }
    if ev.no_info && !infos.is_empty() {
        return Err(format!("unexpected infos: {infos:?}"));
    }
    Ok(())
}

/// Prometheus's `almost.Equal` with the harness's tolerance.
fn almost_equal(a: f64, b: f64) -> bool {
    crate::engine::almost_equal_pub(a, b, 1e-6)
}

fn fmt_f(f: f64) -> String {
    crate::engine::value::format_float(f)
}

fn check_sorted(m: &[engine::Series]) -> Result<(), String> {
    for w in m.windows(2) {
        if w[0].metric > w[1].metric {
            return Err(format!(
                "matrix results should always be sorted by labels: {} before {}",
                w[0].metric, w[1].metric
            ));
        }
    }
    Ok(())
}

fn compare_value(ev: &Eval, v: &Value) -> Result<(), String> {
    match v {
        Value::Matrix(m) => {
            let (start, end, step) = ev.range.unwrap_or((0, 0, 0));
            compare_matrix(ev, m, start, step, end)
        }
        Value::Vector(vec) => {
            if ev.expect_scalar.is_some() {
                return Err(format!("expected scalar result, but got vector {v}"));
            }
            let mut seen = vec![false; ev.expected.len()];
            for (pos, s) in vec.iter().enumerate() {
                let Some(idx) = ev.expected.iter().position(|(l, _)| *l == s.metric) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        s.metric,
                        fmt_sample(s)
                    ));
                };
                if ev.ordered && idx != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        s.metric,
                        idx + 1,
                        pos + 1
                    ));
                }
                compare_sample(ev.expected[idx].1.first(), s)?;
                seen[idx] = true;
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(format!("expected metric {} not found", ev.expected[i].0));
            }
            Ok(())
        }
        Value::Scalar { v, .. } => {
            let Some(want) = ev.expect_scalar else {
                return Err(format!(
                    "expected vector or matrix result, but got scalar {}",
                    fmt_f(*v)
                ));
            };
            if !almost_equal(want, *v) {
                return Err(format!(
                    "expected scalar {} but got {}",
                    fmt_f(want),
                    fmt_f(*v)
                ));
            }
            Ok(())
        }
        Value::String { s, .. } => {
            if ev.expect_string.as_deref() != Some(s.as_str()) {
                return Err(format!(
                    "expected string {:?} but got {s:?}",
                    ev.expect_string.as_deref().unwrap_or("")
                ));
            }
            Ok(())
        }
    }
}

/// Compares one sample of an instant vector with its expected value.
fn compare_sample(want: Option<&SeqValue>, s: &engine::Sample) -> Result<(), String> {
    match (want, &s.h) {
        (Some(SeqValue::Float(want)), None) if !almost_equal(*want, s.f) => Err(format!(
            "expected {} for {} but got {}",
            fmt_f(*want),
            s.metric,
            fmt_f(s.f)
        )),
        (Some(SeqValue::Float(_)), None) => Ok(()),
        (Some(SeqValue::Float(want)), Some(h)) => Err(format!(
            "expected float value {} for {} but got histogram {}",
            fmt_f(*want),
            s.metric,
            notation::format(h)
        )),
        (Some(SeqValue::Histogram(p)), None) => Err(format!(
            "expected histogram {} for {} but got float value {}",
            notation::format(&p.h),
            s.metric,
            fmt_f(s.f)
        )),
        (Some(SeqValue::Histogram(p)), Some(h)) if !p.h.matches(h, 1e-6, p.hint_set) => {
            Err(format!(
                "expected {} for {} but got {}",
                notation::format(&p.h),
                s.metric,
                notation::format(h)
            ))
        }
        (Some(SeqValue::Histogram(_)), Some(_)) => Ok(()),
        _ => Err(format!("no expected value for {}", s.metric)),
    }
}

fn fmt_sample(s: &engine::Sample) -> String {
    match &s.h {
        Some(h) => notation::format(h),
        None => fmt_f(s.f),
    }
}

fn fmt_series(s: &engine::Series) -> String {
    let mut parts: Vec<(i64, String)> = s.floats.iter().map(|p| (p.t, fmt_f(p.f))).collect();
    parts.extend(s.histograms.iter().map(|p| (p.t, notation::format(&p.h))));
    parts.sort_by_key(|p| p.0);
    format!("{parts:?}")
}

fn compare_matrix(
    ev: &Eval,
    m: &[engine::Series],
    start: i64,
    step: i64,
    end: i64,
) -> Result<(), String> {
    if ev.ordered {
        return Err("expected ordered result, but query returned a matrix".into());
    }
    if ev.expect_scalar.is_some() {
        return Err("expected scalar result, but got a matrix".into());
    }
    check_sorted(m)?;
    let mut seen = vec![false; ev.expected.len()];
    for s in m {
        let Some(idx) = ev.expected.iter().position(|(l, _)| *l == s.metric) else {
            return Err(format!(
                "unexpected metric {} in result, has {}",
                s.metric,
                fmt_series(s)
            ));
        };
        seen[idx] = true;
        compare_series(&ev.expected[idx].1, s, start, step, end)?;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!("expected metric {} not found", ev.expected[i].0));
    }
    Ok(())
}

/// Compares the float and histogram points of one result series with its expected values.
fn compare_series(
    values: &[SeqValue],
    s: &engine::Series,
    start: i64,
    step: i64,
    end: i64,
) -> Result<(), String> {
    let mut floats = Vec::new();
    let mut hists = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let t = start + i as i64 * step;
        if t > end {
            return Err(format!(
                "expected {} points for {}, but query time range cannot return this many points",
                values.len(),
                s.metric
            ));
        }
        match v {
            SeqValue::Float(f) => floats.push((t, *f)),
            SeqValue::Histogram(p) => hists.push((t, p)),
            SeqValue::Omitted => {}
        }
    }
    let got = || fmt_series(s);
    if floats.len() != s.floats.len() || hists.len() != s.histograms.len() {
        return Err(format!(
            "expected {} float points and {} histogram points for {}, but got {}",
            floats.len(),
            hists.len(),
            s.metric,
            got()
        ));
    }
    for ((t, f), p) in floats.iter().zip(&s.floats) {
        if *t != p.t {
            return Err(format!(
                "expected point for {} at {t}, got one at {} (result {})",
                s.metric,
                p.t,
                got()
            ));
        }
        if !almost_equal(*f, p.f) {
            return Err(format!(
                "expected {} for {} at {t} but got {} (result {})",
                fmt_f(*f),
                s.metric,
                fmt_f(p.f),
                got()
            ));
        }
    }
    for ((t, want), p) in hists.iter().zip(&s.histograms) {
        if *t != p.t || !want.h.matches(&p.h, 1e-6, want.hint_set) {
            return Err(format!(
                "expected histogram {} at {t} for {}, got {} at {} (result {})",
                notation::format(&want.h),
                s.metric,
                notation::format(&p.h),
                p.t,
                got()
            ));
        }
    }
    Ok(())
}

/// The printed expression with a positive infinity literal spelled `+Inf`, as Go's
/// `fmt.Sprint` prints it in Prometheus's variants: the printer here writes `Inf`, which
/// moves every annotation position after it by one column. Only a number can be
/// rewritten: quoted text, label matchers (`{Inf="x"}`) and the label lists of `by`,
/// `without`, `on`, `ignoring`, `group_left` and `group_right` are left alone, and so is
/// an `Inf` that is part of a longer name (`Inf_x`, `a:Inf`) or already signed.
fn go_infinities(text: &str) -> String {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 4);
    let mut quote: Option<u8> = None;
    // Inside `{…}` matchers; inside a label list; after a label-list keyword.
    let (mut braces, mut in_list, mut list_next) = (0usize, false, false);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' && q != b'`' && i + 1 < b.len() {
                // The backslash and the whole character it escapes.
                let len = 1 + text[i + 1..].chars().next().map_or(0, char::len_utf8);
                out.push_str(&text[i..i + len]);
                i += len;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else if is_word(c) {
            let end = b[i..]
                .iter()
                .position(|&x| !is_word(x))
                .map_or(b.len(), |n| i + n);
            let word = &text[i..end];
            let signed = i > 0 && matches!(b[i - 1], b'+' | b'-');
            if word == "Inf" && !signed && braces == 0 && !in_list {
                out.push('+');
            }
            list_next = LABEL_LISTS.iter().any(|k| word.eq_ignore_ascii_case(k));
            out.push_str(word);
            i = end;
            continue;
        } else {
            match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'{' => braces += 1,
                b'}' => braces = braces.saturating_sub(1),
                b'(' if list_next => in_list = true,
                b')' => in_list = false,
                _ => {}
            }
            if !c.is_ascii_whitespace() {
                list_next = false;
            }
        }
        let len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + len]);
        i += len;
    }
    out
}

/// The harness's `@` variant: `@ t` on every selector and subquery without one (not inside
/// subqueries that have one). `None` when the query calls an `@`-unsafe function.
fn with_at_everywhere(expr: &Expr, t: i64) -> Option<Expr> {
    let mut unsafe_call = false;
    visit(expr, &mut |e| {
        if let Expr::Call(c) = e
            && AT_UNSAFE.contains(&c.func.name)
        {
            unsafe_call = true;
        }
    });
    if unsafe_call {
        return None;
    }
    let mut e = expr.clone();
    set_at(&mut e, t);
    Some(e)
}

fn at_from_ms(t: i64) -> AtModifier {
    let st = if t >= 0 {
        UNIX_EPOCH + Duration::from_millis(t as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(t.unsigned_abs())
    };
    AtModifier::At(st)
}

fn set_at(e: &mut Expr, t: i64) {
    match e {
        Expr::VectorSelector(vs) => {
            if vs.at.is_none() {
                vs.at = Some(at_from_ms(t));
            }
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_none() {
                ms.vs.at = Some(at_from_ms(t));
            }
        }
        Expr::Subquery(sq) => {
            if sq.at.is_none() {
                sq.at = Some(at_from_ms(t));
            }
        }
        Expr::Aggregate(a) => {
            set_at(&mut a.expr, t);
            if let Some(p) = a.param.as_mut() {
                set_at(p, t);
            }
        }
        Expr::Unary(u) => set_at(&mut u.expr, t),
        Expr::Binary(b) => {
            set_at(&mut b.lhs, t);
            set_at(&mut b.rhs, t);
        }
        Expr::Paren(p) => set_at(&mut p.expr, t),
        Expr::Call(c) => {
            for a in c.args.args.iter_mut() {
                set_at(a, t);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_spell_infinity_as_go_does() {
        assert_eq!(
            go_infinities(r#"histogram_fraction(-Inf, Inf, h{a="Inf"} @ 60.000) + Inf_x"#),
            r#"histogram_fraction(-Inf, +Inf, h{a="Inf"} @ 60.000) + Inf_x"#
        );
        assert_eq!(go_infinities("x > +Inf"), "x > +Inf");
        assert_eq!(go_infinities("x{a=\"\\é\"} > Inf"), "x{a=\"\\é\"} > +Inf");
        assert_eq!(
            go_infinities(r#"label_replace(x, "a", "\"Inf", "b", "")"#),
            r#"label_replace(x, "a", "\"Inf", "b", "")"#
        );
    }

    #[test]
    fn label_names_called_inf_are_not_numbers() {
        for (printed, go) in [
            (r#"x{Inf="Inf"} > Inf"#, r#"x{Inf="Inf"} > +Inf"#),
            (
                r#"info(x @ 60.000, {Inf=~"a", b!="Inf"}) * Inf"#,
                r#"info(x @ 60.000, {Inf=~"a", b!="Inf"}) * +Inf"#,
            ),
            (
                "sum by (a, Inf) (x @ 60.000) / Inf",
                "sum by (a, Inf) (x @ 60.000) / +Inf",
            ),
            (
                "count without (Inf) (x @ 60.000)",
                "count without (Inf) (x @ 60.000)",
            ),
            (
                "x @ 60.000 + on (Inf) group_left (Inf, b) y @ 60.000 > Inf",
                "x @ 60.000 + on (Inf) group_left (Inf, b) y @ 60.000 > +Inf",
            ),
            (
                "x @ 60.000 / ignoring (Inf) group_right (Inf) (y @ 60.000 + Inf)",
                "x @ 60.000 / ignoring (Inf) group_right (Inf) (y @ 60.000 + +Inf)",
            ),
            (
                "x @ 60.000 + IGNORING(Inf) y @ 60.000",
                "x @ 60.000 + IGNORING(Inf) y @ 60.000",
            ),
            ("a:Inf + Inf:b * Inf", "a:Inf + Inf:b * +Inf"),
            ("clamp(x, -Inf, Inf)", "clamp(x, -Inf, +Inf)"),
            // A label list ends at its parenthesis: the argument after it is a number.
            ("topk by (Inf) (Inf, x)", "topk by (Inf) (+Inf, x)"),
        ] {
            assert_eq!(go_infinities(printed), go, "{printed}");
        }
    }

    fn statuses(src: &str) -> Vec<Status> {
        run_script(src)
            .expect("script parses")
            .evals
            .into_iter()
            .map(|e| e.status)
            .collect()
    }

    #[test]
    fn wrong_expectations_fail_and_right_ones_pass() {
        let st = statuses(
            "load 1m\n  m{a=\"1\"} 1+1x5\n\neval instant at 2m m\n  m{a=\"1\"} 3\n\neval instant at 2m m\n  m{a=\"1\"} 4\n\neval range from 0 to 2m step 1m m * 2\n  {a=\"1\"} 2 4 6\n",
        );
        assert_eq!(st[0], Status::Passed);
        assert!(
            matches!(&st[1], Status::Failed(m) if m.contains("expected 4")),
            "{st:?}"
        );
        assert_eq!(st[2], Status::Passed);
    }

    #[test]
    fn expected_failures_and_annotations_are_checked() {
        let st = statuses(
            "load 1m\n  a{x=\"1\"} 1\n  b{x=\"1\",y=\"1\"} 1\n  b{x=\"1\",y=\"2\"} 1\n\neval instant at 0 a + on(x) b\n  expect fail msg: wrong message\n\neval instant at 0 a + on(x) b\n  expect fail\n\neval instant at 1m rate(a[5m])\n  expect no_info\n",
        );
        assert!(
            matches!(&st[0], Status::Failed(m) if m.contains("wrong message")),
            "{st:?}"
        );
        assert_eq!(st[1], Status::Passed);
        // a has one sample: no rate result and so no annotation.
        assert_eq!(st[2], Status::Passed);
    }

    #[test]
    fn histogram_evals_run_and_compare_histograms() {
        let st = statuses(
            "load 1m\n  h {{schema:0 sum:1 count:1 buckets:[1]}}+{{sum:1 count:1 buckets:[1]}}x2\n  f 1\n\neval instant at 1m h\n  h {{schema:0 sum:2 count:2 buckets:[2]}}\n\neval instant at 1m h\n  h {{schema:0 sum:2 count:2 buckets:[3]}}\n\neval instant at 2m histogram_count(h)\n  {} 3\n\neval range from 0 to 2m step 1m h\n  h {{sum:1 count:1 buckets:[1]}} {{sum:2 count:2 buckets:[2]}} {{sum:3 count:3 buckets:[3]}}\n",
        );
        assert_eq!(st[0], Status::Passed);
        assert!(
            matches!(&st[1], Status::Failed(m) if m.contains("buckets:[2]")),
            "{st:?}"
        );
        assert_eq!(st[2], Status::Passed);
        assert_eq!(st[3], Status::Passed);
    }

    #[test]
    fn instant_evals_are_also_checked_in_range_mode_and_with_at() {
        // `timestamp()` is @-unsafe, so only the plain and range-mode runs apply; a
        // wrong expectation fails in the first of them.
        let st = statuses(
            "load 1m\n  m 1 2 3\n\neval instant at 2m timestamp(m)\n  {} 120\n\neval instant at 2m m\n  m 2\n",
        );
        assert_eq!(st[0], Status::Passed);
        assert!(matches!(&st[1], Status::Failed(_)), "{st:?}");
    }
}
