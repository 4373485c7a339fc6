//! One test group, run as promtool's `testGroup.test` does:
//!
//! * the input series (floats and native histograms) are appended lazily: before the
//!   evaluation at `ts`, every sample up to `ts` (so `offset -5m` and `@` cannot see the
//!   future, as with promtool's lazy loader);
//! * every rule group is evaluated at `start, start + evaluation_interval, …` up to the
//!   largest `eval_time` of the test group — with the evaluator's own [`Group::eval`] over an
//!   [`EmbeddedDatasource`], so `for`, `keep_firing_for`, `ALERTS`, `ALERTS_FOR_STATE` and
//!   staleness markers are exactly what `lookout evaluator` produces;
//! * a rule that fails ends the test group with `rule: …, time: …, err: …`;
//! * the firing alerts of each `alert_rule_test` are compared, order-insensitively, with the
//!   evaluation at or just before its `eval_time`;
//! * afterwards each `promql_expr_test` is an instant query over the same storage (input
//!   series plus rule outputs), compared after sorting by labels; histograms are compared
//!   as their `FloatHistogram.TestExpression()` text, as promtool 2.47 and later do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::engine::{Engine, EngineOptions, Value, WindowSemantics};
use lookout_promql::histogram::FloatHistogram;
use lookout_promql::promqltest::script::{SeqValue, parse_series_counted, parse_series_upto};
use lookout_promql::storage::{Queryable, Storage, StorageOptions};

use crate::alert::{Alert, AlertState, Notify};
use crate::embedded::EmbeddedDatasource;
use crate::rules::Rule;
use crate::rules::file::RuleFile;
use crate::rules::group::Group;
use crate::rules::manager::{ManagerOptions, RuleManager};
use crate::rules::metrics::RuleMetrics;
use crate::rules::status::RuleSnapshot;
use crate::unittest::format::{
    ExpSample, ModelDuration, TestGroup, format_float_e, go_duration, go_quote, indent_lines,
    labels_string, pairs_string, parse_start_timestamp,
};

/// What a test file shares with its test groups.
pub(crate) struct FileContext<'a> {
    /// Decoded rule files (or the errors loading them gave).
    pub rule_files: &'a Result<Vec<RuleFile>, Vec<String>>,
    /// `evaluation_interval` in ms.
    pub eval_interval_ms: i64,
    /// `group_eval_order` positions.
    pub group_order: &'a HashMap<String, usize>,
    /// `fuzzy_compare`.
    pub fuzzy: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--query.prometheus2-windows`.
    pub windows: WindowSemantics,
}

/// Alerts go nowhere in unit tests (promtool's `NotifyFunc` does nothing).
struct NoNotify;

impl Notify for NoNotify {
    fn send(&self, _alerts: Vec<Alert>) {}
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// `model.Duration` → ms offset added to the start.
fn max_eval_time(tg: &TestGroup) -> i64 {
    tg.alert_rule_test
        .iter()
        .map(|a| a.eval_time.0)
        .chain(tg.promql_expr_test.iter().map(|p| p.eval_time.0))
        .max()
        .unwrap_or(0)
        .max(0)
}

type AlertView = (Labels, BTreeMap<String, String>);

/// promtool's `labelsAndAnnotations.String()`.
fn alerts_string(v: &[AlertView]) -> String {
    if v.is_empty() {
        return "[]".to_string();
    }
    let mut s = String::from("[");
    for (i, (l, a)) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let one = format!(
            "Labels:{}\nAnnotations:{}",
            labels_string(l),
            pairs_string(a.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        );
        s.push_str(&format!(
            "\n{i}:{}",
            indent_lines(&format!("\n{one}"), "  ")
        ));
    }
    s.push_str("\n]");
    s
}

fn floats_equal(a: f64, b: f64, fuzzy: bool) -> bool {
    a == b
        || (fuzzy && (next_after(a, f64::NEG_INFINITY) == b || next_after(a, f64::INFINITY) == b))
}

/// Go's `math.Nextafter`.
fn next_after(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == y {
        return x;
    }
    if x == 0.0 {
        return f64::from_bits(1).copysign(y);
    }
    let bits = x.to_bits();
    if (y > x) == (x > 0.0) {
        f64::from_bits(bits + 1)
    } else {
        f64::from_bits(bits - 1)
    }
}

/// Removes the `query "<expr>": ` prefix the datasource puts before the engine's message,
/// so rule errors read like Prometheus's.
fn rule_error_text(rule_expr: &str, e: &str) -> String {
    let prefix = format!("query {rule_expr:?}: ");
    let e = e.strip_prefix(&prefix).unwrap_or(e);
    // The engine names the failing sub-expression (`… (in `expr`)`); Prometheus does not.
    match e.rfind(" (in `") {
        Some(i) if e.ends_with("`)") => e[..i].to_string(),
        _ => e.to_string(),
    }
}

/// Runs one test group. `name` is the group's name for messages (`unnamed#N` when empty).
pub(crate) fn run_group(
    ctx: &FileContext<'_>,
    tg: &TestGroup,
    name: &str,
    rt: &tokio::runtime::Runtime,
    debug_out: &mut dyn std::io::Write,
) -> Vec<String> {
    let started = std::time::Instant::now();
    if ctx.debug {
        let _ = writeln!(debug_out, "DEBUG: Starting test {name}");
    }
    let errors = run_inner(ctx, tg, rt, debug_out);
    if ctx.debug {
        let _ = writeln!(
            debug_out,
            "DEBUG: Test {name} finished, took {:?}",
            started.elapsed()
        );
    }
    errors
}

fn run_inner(
    ctx: &FileContext<'_>,
    tg: &TestGroup,
    rt: &tokio::runtime::Runtime,
    debug_out: &mut dyn std::io::Write,
) -> Vec<String> {
    let interval_ms = tg
        .interval
        .map(|d| d.0)
        .filter(|d| *d != 0)
        .unwrap_or(ctx.eval_interval_ms);
    let mint = match &tg.start_timestamp {
        None => 0,
        Some(s) => match parse_start_timestamp(&s.0) {
            Ok(t) => t,
            Err(e) => return vec![e],
        },
    };

    let inputs = match load_inputs(tg, mint, interval_ms) {
        Ok(i) => i,
        Err(e) => return vec![e],
    };

    let files = match ctx.rule_files {
        Ok(f) => f,
        Err(errs) => return errs.clone(),
    };

    // Storage, engine and datasource as `lookout evaluator` builds them in embedded mode,
    // with promtool's engine settings (@ and negative offsets on, 5m lookback, the
    // evaluation interval as default subquery step).
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let engine = Engine::new(EngineOptions {
        default_subquery_step: Duration::from_millis(ctx.eval_interval_ms.max(1) as u64),
        enable_at_modifier: true,
        enable_negative_offset: true,
        windows: ctx.windows,
        ..EngineOptions::default()
    });
    let groups = build_groups(ctx, tg, files, &storage, &engine, interval_ms);

    // Alert checks by eval_time.
    let mut alert_tests: BTreeMap<ModelDuration, Vec<usize>> = BTreeMap::new();
    for (i, a) in tg.alert_rule_test.iter().enumerate() {
        if a.alertname.0.is_empty() {
            let in_group = if tg.name.0.is_empty() {
                String::new()
            } else {
                format!(" (in TestGroup {})", tg.name.0)
            };
            return vec![format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{in_group}",
                a.eval_time
            )];
        }
        alert_tests.entry(a.eval_time).or_default().push(i);
    }
    let alert_times: Vec<ModelDuration> = alert_tests.keys().copied().collect();
    let mut curr = 0usize;

    let maxt = mint.saturating_add(max_eval_time(tg));
    let step = ctx.eval_interval_ms.max(1);
    let mut cursors = vec![0usize; inputs.len()];
    let mut errs: Vec<String> = Vec::new();
    let mut ts = mint;
    while ts <= maxt {
        // Input samples up to ts.
        append_inputs(&storage, &inputs, &mut cursors, ts, &mut errs);
        let eval_errs = eval_groups(&groups, rt, ts);
        if !eval_errs.is_empty() {
            errs.extend(eval_errs);
            return errs;
        }

        while curr < alert_times.len()
            && ts - mint <= alert_times[curr].0
            && alert_times[curr].0 < ts + step - mint
        {
            errs.extend(check_alerts(tg, &groups, &alert_tests[&alert_times[curr]]));
            curr += 1;
        }
        ts = match ts.checked_add(step) {
            Some(t) => t,
            None => break,
        };
    }

    errs.extend(check_promql(ctx, tg, &engine, &storage, mint));

    if ctx.debug {
        dump(&engine, &storage, mint, max_eval_time(tg), debug_out);
    }
    errs
}

/// The rule groups over an embedded datasource on `storage`, as `lookout evaluator`
/// builds them, in `group_eval_order`.
fn build_groups(
    ctx: &FileContext<'_>,
    tg: &TestGroup,
    files: &[RuleFile],
    storage: &Arc<Storage>,
    engine: &Engine,
    interval_ms: i64,
) -> Vec<Group> {
    let datasource =
        Arc::new(EmbeddedDatasource::new(storage.clone(), engine.clone()).with_inline_queries());
    let external_labels = Labels::new(
        tg.external_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str())),
    );
    let manager = RuleManager::new(ManagerOptions {
        datasource,
        notifier: Arc::new(NoNotify),
        external_labels,
        external_url: tg.external_url.0.clone(),
        default_interval: Duration::from_millis(interval_ms.max(1) as u64),
        resend_delay: Duration::from_secs(60),
        outage_tolerance: Duration::from_secs(3600),
        for_grace_period: Duration::from_secs(600),
        state_file: None,
        metrics: RuleMetrics::default(),
        max_rule_file_bytes: crate::limits::MAX_RULE_FILE_BYTES,
        template_max_output_bytes: crate::limits::MAX_TEMPLATE_OUTPUT_BYTES,
        template_timeout: crate::limits::DEFAULT_TEMPLATE_TIMEOUT,
    });
    // `restored = true`: promtool marks every alerting rule restored so ALERTS is written.
    let mut groups: Vec<Group> = manager.build_groups(files, true);
    groups.sort_by_key(|g| ctx.group_order.get(g.name()).copied().unwrap_or(0));
    groups
}

/// Evaluates every group at `ts`; the rules that failed, as promtool reports them.
fn eval_groups(groups: &[Group], rt: &tokio::runtime::Runtime, ts: i64) -> Vec<String> {
    let at = system_time(ts);
    let mut eval_errs = Vec::new();
    for g in groups {
        rt.block_on(g.eval(at));
        for (rule, snap) in g.rules().iter().zip(g.snapshot().rules) {
            let common = match &snap {
                RuleSnapshot::Alerting(a) => &a.common,
                RuleSnapshot::Recording(c) => c,
            };
            if let Some(e) = &common.last_error {
                let expr = match rule {
                    Rule::Alerting(r) => r.expr(),
                    Rule::Recording(r) => r.expr(),
                };
                eval_errs.push(format!(
                    "    rule: {}, time: {}, err: {}",
                    rule.name(),
                    go_duration(ts),
                    rule_error_text(expr, e)
                ));
            }
        }
    }
    eval_errs
}

/// The `alert_rule_test` cases of one eval time (indexes into `tg.alert_rule_test`):
/// the firing alerts of each, compared order-insensitively with the expected ones.
fn check_alerts(tg: &TestGroup, groups: &[Group], cases: &[usize]) -> Vec<String> {
    let mut errs = Vec::new();
    let wanted: BTreeSet<&str> = cases
        .iter()
        .map(|&i| tg.alert_rule_test[i].alertname.0.as_str())
        .collect();
    let mut got: HashMap<&str, Vec<AlertView>> = HashMap::new();
    for g in groups {
        for r in g.rules() {
            let Rule::Alerting(ar) = r else { continue };
            if !wanted.contains(ar.name()) {
                continue;
            }
            let entry = got.entry(ar.name()).or_default();
            for a in ar.active_alerts() {
                if a.state == AlertState::Firing {
                    entry.push((a.labels, a.annotations));
                }
            }
        }
    }
    for &i in cases {
        let case = &tg.alert_rule_test[i];
        let mut got_alerts = got
            .get(case.alertname.0.as_str())
            .cloned()
            .unwrap_or_default();
        let mut exp_alerts: Vec<AlertView> = case
            .exp_alerts
            .iter()
            .map(|a| {
                let mut l: Vec<(&str, &str)> = a
                    .exp_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.0.as_str()))
                    .collect();
                l.push(("alertname", case.alertname.0.as_str()));
                (
                    Labels::new(l),
                    a.exp_annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect(),
                )
            })
            .collect();
        got_alerts.sort();
        exp_alerts.sort();
        if got_alerts != exp_alerts {
            let test_name = if tg.name.0.is_empty() {
                String::new()
            } else {
                format!("    name: {},\n", tg.name.0)
            };
            errs.push(format!(
                "{test_name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                case.alertname.0,
                case.eval_time,
                indent_lines(&alerts_string(&exp_alerts), "            "),
                indent_lines(&alerts_string(&got_alerts), "            ")
            ));
        }
    }
    errs
}

/// An input sample: a float (stale markers included) or a native histogram.
#[derive(Clone, Debug)]
enum InputValue {
    Float(f64),
    Histogram(Arc<FloatHistogram>),
}

/// One input series and its samples, by time.
type InputSeries = (Labels, Vec<(i64, InputValue)>);

/// The input series, in the `.test` load notation (the promqltest parser: floats, `_`,
/// `stale`, `{{…}}` histograms, `{{…}}xN`, `{{…}}+{{…}}xN`), at `mint + k * interval_ms`.
/// Only the values up to the last evaluation are expanded: `0x10000000` over a ten-minute
/// test is read as the eleven values the test can see. A series listed twice keeps its
/// last definition, as in promtool.
fn load_inputs(tg: &TestGroup, mint: i64, interval_ms: i64) -> Result<Vec<InputSeries>, String> {
    let keep = usize::try_from(max_eval_time(tg) / interval_ms.max(1))
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut inputs: Vec<InputSeries> = Vec::with_capacity(tg.input_series.len());
    let mut seen: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in tg.input_series.iter().enumerate() {
        let line = format!("{} {}", s.series.0, s.values.0);
        let parsed = parse_series_upto(&line, i + 2, Some(keep)).map_err(|e| {
            format!(
                "parse error in input series {:?}: {}",
                s.series.0, e.message
            )
        })?;
        let samples = parsed
            .values
            .into_iter()
            .enumerate()
            .filter_map(|(k, v)| {
                let t = mint + k as i64 * interval_ms;
                match v {
                    SeqValue::Float(f) => Some((t, InputValue::Float(f))),
                    SeqValue::Histogram(p) => Some((t, InputValue::Histogram(Arc::new(p.h)))),
                    SeqValue::Omitted => None,
                }
            })
            .collect();
        match seen.get(&parsed.labels) {
            Some(&at) => inputs[at].1 = samples,
            None => {
                seen.insert(parsed.labels.clone(), inputs.len());
                inputs.push((parsed.labels, samples));
            }
        }
    }
    Ok(inputs)
}

/// Appends the input samples up to `ts` not yet appended (`cursors`: the next sample of
/// each series).
fn append_inputs(
    storage: &Storage,
    inputs: &[InputSeries],
    cursors: &mut [usize],
    ts: i64,
    errs: &mut Vec<String>,
) {
    for (k, (labels, samples)) in inputs.iter().enumerate() {
        while let Some((t, v)) = samples.get(cursors[k]) {
            if *t > ts {
                break;
            }
            let appended = match v {
                InputValue::Float(f) => storage.append(labels, *t, *f),
                InputValue::Histogram(h) => storage.append_histogram(labels, *t, h.clone()),
            };
            if let Err(e) = appended {
                errs.push(format!("{}: {e}", labels_string(labels)));
            }
            cursors[k] += 1;
        }
    }
}

/// promtool's `parsedSample`: labels, the float value, and the histogram written as
/// `FloatHistogram.TestExpression()` (empty for a float sample).
#[derive(Clone, Debug)]
struct ParsedSample {
    labels: Labels,
    value: f64,
    histogram: String,
}

impl ParsedSample {
    fn new(labels: Labels, value: f64, h: Option<&FloatHistogram>) -> ParsedSample {
        ParsedSample {
            labels,
            value,
            histogram: h.map(histogram_expression).unwrap_or_default(),
        }
    }

    /// `parsedSample.String()`.
    fn render(&self) -> String {
        if self.histogram.is_empty() {
            format!(
                "{} {}",
                labels_string(&self.labels),
                format_float_e(self.value)
            )
        } else {
            format!("{} {}", labels_string(&self.labels), self.histogram)
        }
    }
}

/// `FloatHistogram.TestExpression()`: the test notation, compacted, numbers in Go's `%g`.
fn histogram_expression(h: &FloatHistogram) -> String {
    lookout_promql::histogram::notation::format_with(h, crate::template::go_fmt_v)
}

/// promtool's `parsedSamplesString`.
fn samples_string(v: &[ParsedSample]) -> String {
    if v.is_empty() {
        return "nil".to_string();
    }
    v.iter()
        .map(ParsedSample::render)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The expected sample as promtool reads it: labels by `ParseMetric`, then a non-empty
/// `histogram` as the one value of the series description `{} <histogram>`. Only the
/// first value is expanded: `{{…}}x100000000` is counted, not built.
fn expected_sample(s: &ExpSample) -> Result<ParsedSample, String> {
    let labels = parse_labels(s)?;
    if s.histogram.0.is_empty() {
        return Ok(ParsedSample::new(labels, s.value, None));
    }
    let (parsed, count) = parse_series_counted(&format!("{{}} {}", s.histogram.0), 1, Some(1))
        .map_err(|e| e.message)?;
    match (parsed.values.as_slice(), count) {
        ([SeqValue::Histogram(p)], 1) => Ok(ParsedSample::new(labels, s.value, Some(&p.h))),
        ([other], 1) => Err(format!("expected histogram, got {}", sequence_value(other))),
        _ => Err(format!("expected 1 value, got {count}")),
    }
}

/// Go's `SequenceValue.String()` of a value that is not a histogram.
fn sequence_value(v: &SeqValue) -> String {
    match v {
        SeqValue::Omitted => "_".to_string(),
        SeqValue::Float(f) if f.is_finite() => format!("{f:.6}"),
        SeqValue::Float(f) => crate::template::go_fmt_v(*f),
        SeqValue::Histogram(p) => lookout_promql::histogram::go_string(&p.h),
    }
}

/// The `promql_expr_test` cases: instant queries over the same storage, compared with the
/// expectations after sorting both by labels (floats exactly, or one ULP apart with
/// `fuzzy_compare`; histograms by their test expression, counter reset hint included).
fn check_promql(
    ctx: &FileContext<'_>,
    tg: &TestGroup,
    engine: &Engine,
    storage: &Storage,
    mint: i64,
) -> Vec<String> {
    let mut errs = Vec::new();
    'cases: for case in &tg.promql_expr_test {
        let t = mint.saturating_add(case.eval_time.0);
        let head = format!(
            "    expr: {}, time: {}",
            go_quote(&case.expr.0),
            case.eval_time
        );
        let mut got: Vec<ParsedSample> =
            match engine.instant_query(storage as &dyn Queryable, &case.expr.0, t) {
                Ok(Value::Vector(v)) => v
                    .into_iter()
                    .map(|s| ParsedSample::new(s.metric, s.f, s.h.as_deref()))
                    .collect(),
                Ok(Value::Scalar { v, .. }) => vec![ParsedSample::new(Labels::default(), v, None)],
                Ok(_) => {
                    errs.push(format!(
                        "{head}, err: rule result is not a vector or scalar"
                    ));
                    continue;
                }
                Err(e) => {
                    errs.push(format!("{head}, err: {}", e.message()));
                    continue;
                }
            };
        let mut exp = Vec::with_capacity(case.exp_samples.len());
        for s in &case.exp_samples {
            match expected_sample(s) {
                Ok(p) => exp.push(p),
                Err(e) => {
                    errs.push(format!(
                        "{head}, err: labels {}: {e}",
                        go_quote(&s.labels.0)
                    ));
                    continue 'cases;
                }
            }
        }
        exp.sort_by(|a, b| a.labels.cmp(&b.labels));
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        let equal = exp.len() == got.len()
            && exp.iter().zip(&got).all(|(e, g)| {
                e.labels == g.labels
                    && floats_equal(e.value, g.value, ctx.fuzzy)
                    && e.histogram == g.histogram
            });
        if !equal {
            errs.push(format!(
                "{head},\n        exp: {}\n        got: {}",
                samples_string(&exp),
                samples_string(&got)
            ));
        }
    }
    errs
}

/// promtool `--debug`: every series (inputs and rule outputs) up to the last eval time.
fn dump(
    engine: &Engine,
    storage: &Storage,
    mint: i64,
    max_eval: i64,
    out: &mut dyn std::io::Write,
) {
    // Round up to whole seconds, as promtool does.
    let secs = max_eval / 1000 + 1;
    let expr = format!("{{__name__=~\".+\"}}[{secs}s]");
    match engine.instant_query(storage as &dyn Queryable, &expr, mint + secs * 1000) {
        Ok(Value::Matrix(m)) => {
            let _ = writeln!(
                out,
                "DEBUG: Dump of all data (input_series and rules) at {}:",
                go_duration(secs * 1000)
            );
            for s in m {
                // Floats first, then histograms, as Prometheus's `Series.String()`.
                let points: Vec<String> = s
                    .floats
                    .iter()
                    .map(|p| format!("{} @[{}]", p.f, p.t))
                    .chain(s.histograms.iter().map(|p| {
                        format!("{} @[{}]", lookout_promql::histogram::go_string(&p.h), p.t)
                    }))
                    .collect();
                let _ = writeln!(
                    out,
                    "{} =>\n{}",
                    labels_string(&s.metric),
                    points.join("\n")
                );
            }
        }
        Ok(v) => {
            let _ = writeln!(out, "DEBUG: Got unexpected type {}", v.type_name());
        }
        Err(e) => {
            let _ = writeln!(out, "DEBUG: Failed querying, expr: {expr:?}, err: {e}");
        }
    }
}

/// `parser.ParseMetric` of an expected sample's labels (empty means no labels).
fn parse_labels(s: &ExpSample) -> Result<Labels, String> {
    let text = s.labels.0.trim();
    if text.is_empty() {
        return Ok(Labels::default());
    }
    // One value is enough to tell that there is text after the labels.
    let parsed = parse_series_upto(text, 1, Some(1)).map_err(|e| e.message)?;
    if !parsed.values.is_empty() {
        return Err(format!("unexpected text after the label set in {text:?}"));
    }
    Ok(parsed.labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_after_like_go() {
        assert_eq!(next_after(3.0, f64::INFINITY), 3.0000000000000004);
        assert_eq!(next_after(3.0, f64::NEG_INFINITY), 2.9999999999999996);
        assert!(floats_equal(3.0, 3.0000000000000004, true));
        assert!(!floats_equal(3.0, 3.0000000000000004, false));
        assert!(!floats_equal(3.0, 3.0000000000000013, true));
        assert!(!floats_equal(f64::NAN, f64::NAN, true));
    }

    #[test]
    fn histograms_print_as_test_expressions() {
        let p = lookout_promql::histogram::notation::parse(
            "sum:1234567 count:0.00001 buckets:[0 2 0 1] offset:-1 counter_reset_hint:reset",
        )
        .unwrap();
        // Compacted (the leading empty bucket goes, and the offset with it), Go's `%g`.
        assert_eq!(
            histogram_expression(&p.h),
            "{{count:1e-05 sum:1.234567e+06 counter_reset_hint:reset buckets:[2 0 1]}}"
        );
    }

    #[test]
    fn expected_histograms_are_one_histogram_value() {
        let exp = |h: &str| {
            expected_sample(&ExpSample {
                labels: crate::rules::file::Scalar("x".to_string()),
                value: 0.0,
                histogram: crate::rules::file::Scalar(h.to_string()),
            })
        };
        let ok = exp("{{schema:0 count:2 sum:3 buckets:[2]}}").unwrap();
        assert_eq!(ok.histogram, "{{count:2 sum:3 buckets:[2]}}");
        assert_eq!(
            ok.render(),
            "{__name__=\"x\"} {{count:2 sum:3 buckets:[2]}}"
        );
        assert_eq!(exp("{{count:1}}x1").unwrap_err(), "expected 1 value, got 2");
        assert_eq!(exp("").map(|p| p.histogram), Ok(String::new()));
        assert_eq!(exp("_x0").unwrap_err(), "expected 1 value, got 0");
        // Hostile expectations are counted, not expanded.
        let big = format!(
            "{{{{schema:8 buckets:[{}]}}}}",
            vec!["1"; 100_000].join(" ")
        );
        assert_eq!(
            exp(&format!("{big}x100000000")).unwrap_err(),
            "expected 1 value, got 100000001"
        );
        assert_eq!(
            exp(&format!("1 {big}+{big}x18446744073709551615")).unwrap_err(),
            "expected 1 value, got 18446744073709551615"
        );
        assert_eq!(exp("_").unwrap_err(), "expected histogram, got _");
        assert_eq!(exp("2").unwrap_err(), "expected histogram, got 2.000000");
        assert_eq!(exp("stale").unwrap_err(), "expected histogram, got NaN");
        let float = ParsedSample::new(Labels::default(), 2.5, None);
        assert_eq!(float.render(), "{} 2.5E+00");
    }

    #[test]
    fn alert_list_format() {
        let a = vec![(
            Labels::new([("alertname", "X"), ("job", "a")]),
            BTreeMap::from([("summary".to_string(), "s".to_string())]),
        )];
        assert_eq!(
            alerts_string(&a),
            "[\n0:\n  Labels:{alertname=\"X\", job=\"a\"}\n  Annotations:{summary=\"s\"}\n]"
        );
        assert_eq!(alerts_string(&[]), "[]");
    }
}
