//! PromQL functions on floats, following Prometheus's `promql/functions.go` and
//! `promql/quantile.go` (extrapolation of `rate`/`increase`/`delta`, Kahan summation,
//! classic-bucket `histogram_quantile`/`histogram_fraction`, …).

use std::collections::HashMap;

use promql_parser::label::{MatchOp, Matcher as LabelMatcher};
use promql_parser::parser::{Call, Expr, VectorSelector};
use regex::Regex;

use super::aggregations::{asc_nan_last, desc_nan_last, quantile};
use super::histogram_fns::split_native;
use super::rewrite::{is_valid_label_name, shown_label_name};
use super::{
    AnnotationLevel, Evaluator, FPoint, QueryError, RangeArg, RangeMode, Sample, Value, Vector,
    edge_indices, extend_floats, go_max, go_min, kahan_sum_inc, pick_left, pick_right,
};
use crate::gofmt::go_fmt_v;
use crate::labels::{Labels, METRIC_NAME};
use crate::storage::is_stale;

/// Functions whose argument is a range vector.
const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "predict_linear",
    "resets",
    "changes",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "first_over_time",
    "present_over_time",
    "mad_over_time",
    "absent_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_min_over_time",
    "ts_of_max_over_time",
    "double_exponential_smoothing",
];

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// The labels that tie a series to its info series.
const INFO_IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The matchers of `info()`'s second argument (a label selector), without Lookout's
/// internal ones; none without it.
fn info_data_matchers(sel: Option<&Expr>) -> Result<Vec<LabelMatcher>, QueryError> {
    let mut data_matchers: Vec<LabelMatcher> = Vec::new();
    let Some(sel) = sel else {
        return Ok(data_matchers);
    };
    let Expr::VectorSelector(vs) = unwrap_parens(sel) else {
        return Err(QueryError::eval(
            "the second argument of info() must be a label selector",
        ));
    };
    if let Some(n) = &vs.name {
        data_matchers.push(LabelMatcher::new(MatchOp::Equal, METRIC_NAME, n));
    }
    data_matchers.extend(
        vs.matchers
            .matchers
            .iter()
            .filter(|m| !m.name.starts_with("__lookout_"))
            .cloned(),
    );
    Ok(data_matchers)
}

/// Info series (labels, newest sample's time) by [`info_signature`].
type InfoBySignature = HashMap<String, (Labels, i64)>;

/// An info series' key: its metric name and identifying labels.
fn info_signature(name: &str, l: &Labels) -> String {
    let mut key = name.to_string();
    for id in INFO_IDENTIFYING {
        key.push('\u{ff}');
        key.push_str(l.get(id).unwrap_or(""));
    }
    key
}

/// Per info metric name and identifying labels, the newest info series (two at the same
/// time are an error, as in Prometheus); and the info metric names in order of appearance.
fn newest_info(
    info_samples: Vec<(Labels, i64)>,
) -> Result<(InfoBySignature, Vec<String>), QueryError> {
    let mut by_sig = InfoBySignature::new();
    let mut info_names: Vec<String> = Vec::new();
    for (l, t) in info_samples {
        let name = l.metric_name().unwrap_or("").to_string();
        if !info_names.contains(&name) {
            info_names.push(name.clone());
        }
        let key = info_signature(&name, &l);
        match by_sig.get(&key) {
            Some((existing, et)) if *et == t => {
                return Err(QueryError::eval(format!(
                    "found duplicate series for info metric: existing {} @ {et}, new {} @ {t}",
                    existing.to_braced_string(),
                    l.to_braced_string()
                )));
            }
            Some((_, et)) if *et > t => {}
            _ => {
                by_sig.insert(key, (l, t));
            }
        }
    }
    Ok((by_sig, info_names))
}

impl Evaluator<'_> {
    pub(crate) fn eval_call(&self, c: &Call, ts: i64) -> Result<Value, QueryError> {
        let name = c.func.name;
        let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
        // promql-parser checks arity; expressions built by hand are checked here so the
        // code below can index its arguments.
        let declared = c.func.arg_types.len();
        let min = if c.func.variadic == 0 {
            declared
        } else {
            declared.saturating_sub(1)
        };
        if args.len() < min || (c.func.variadic == 0 && args.len() > declared) {
            return Err(QueryError::eval(format!(
                "expected {declared} argument(s) in call to {name:?}, got {}",
                args.len()
            )));
        }
        if RANGE_FUNCTIONS.contains(&name) {
            return self.eval_range_function(name, &args, ts).map(Value::Vector);
        }
        let vec_out = |v: Vector| Ok(Value::Vector(v));
        match name {
            "time" | "pi" | "start" | "end" | "step" | "range" => Ok(Value::Scalar {
                t: ts,
                v: self.constant(name, ts),
            }),
            "scalar" => {
                let v = self.eval_vector(args[0], ts)?;
                let mut floats = v.iter().filter(|s| s.h.is_none());
                let f = match (floats.next(), floats.next()) {
                    (Some(s), None) => s.f,
                    _ => f64::NAN,
                };
                Ok(Value::Scalar { t: ts, v: f })
            }
            "vector" => {
                let f = self.eval_scalar(args[0], ts)?;
                vec_out(vec![Sample {
                    metric: Labels::default(),
                    t: ts,
                    f,
                    drop_name: false,
                    h: None,
                }])
            }
            "max_of" | "min_of" => {
                let a = self.eval_scalar(args[0], ts)?;
                let b = self.eval_scalar(args[1], ts)?;
                let v = if name == "max_of" {
                    go_max(a, b)
                } else {
                    go_min(a, b)
                };
                Ok(Value::Scalar { t: ts, v })
            }
            "start_timestamp" => match unwrap_parens(args[0]) {
                Expr::VectorSelector(vs) => vec_out(self.start_timestamps(vs, ts)?),
                other => {
                    // As in Prometheus, an expression carries no start timestamps.
                    self.eval_vector(other, ts)?;
                    vec_out(Vec::new())
                }
            },
            "timestamp" => self.timestamp(args[0], ts).map(Value::Vector),
            "absent" => self.absent(args[0], ts).map(Value::Vector),
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
                self.sort(name, &args, ts).map(Value::Vector)
            }
            "label_replace" => self.label_replace(&args, ts).map(Value::Vector),
            "label_join" => self.label_join(&args, ts).map(Value::Vector),
            "histogram_quantile" => self.histogram_quantile(&args, ts).map(Value::Vector),
            "histogram_quantiles" => self.histogram_quantiles(&args, ts).map(Value::Vector),
            "histogram_fraction" => self.histogram_fraction(&args, ts).map(Value::Vector),
            // These read native histograms only; float samples are ignored.
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" => {
                let v = self.eval_vector(args[0], ts)?;
                vec_out(self.histogram_simple(name, v, ts))
            }
            "clamp" | "clamp_min" | "clamp_max" | "round" => {
                self.clamp_round(name, &args, ts).map(Value::Vector)
            }
            "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour"
            | "minute" | "month" | "year" => self.date(name, &args, ts).map(Value::Vector),
            "info" => self.info(&args, ts).map(Value::Vector),
            _ => {
                let f = math_fn(name).ok_or_else(|| {
                    QueryError::eval(format!("function {name:?} is not supported"))
                })?;
                let mut v = self.eval_float_vector(args[0], ts)?;
                for s in v.iter_mut() {
                    s.f = f(s.f);
                    s.drop_name = true;
                }
                vec_out(v)
            }
        }
    }

    /// `absent(v)`: one sample of value 1 with the labels the selector fixes, when `v` is
    /// empty.
    fn absent(&self, arg: &Expr, ts: i64) -> Result<Vector, QueryError> {
        if !self.eval_vector(arg, ts)?.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![Sample {
            metric: absent_labels(arg),
            t: ts,
            f: 1.0,
            drop_name: false,
            h: None,
        }])
    }

    /// The date functions, of each sample's value as Unix seconds, or of the evaluation
    /// time without an argument.
    fn date(&self, name: &str, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let f = date_fn(name);
        if args.is_empty() {
            return Ok(vec![Sample {
                metric: Labels::default(),
                t: ts,
                f: f(ts.div_euclid(1000)),
                drop_name: false,
                h: None,
            }]);
        }
        let mut v = self.eval_float_vector(args[0], ts)?;
        for s in v.iter_mut() {
            s.f = f(go_f64_to_i64(s.f));
            s.drop_name = true;
        }
        Ok(v)
    }

    /// `time()`, `pi()` and the query's `start()`, `end()`, `step()` and `range()`.
    fn constant(&self, name: &str, ts: i64) -> f64 {
        match name {
            "time" => ts as f64 / 1000.0,
            "pi" => std::f64::consts::PI,
            "start" => self.start as f64 / 1000.0,
            "end" => self.end as f64 / 1000.0,
            "step" => self.step as f64 / 1000.0,
            _ => (self.end - self.start) as f64 / 1000.0,
        }
    }

    /// `timestamp(v)`: each sample's own timestamp for a selector, the evaluation time
    /// for any other expression.
    fn timestamp(&self, arg: &Expr, ts: i64) -> Result<Vector, QueryError> {
        let vec = match unwrap_parens(arg) {
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, ts, true)?,
            other => self
                .eval_vector(other, ts)?
                .into_iter()
                .map(|mut s| {
                    s.t = ts;
                    s
                })
                .collect(),
        };
        Ok(vec
            .into_iter()
            .map(|mut s| {
                s.f = s.t as f64 / 1000.0;
                s.h = None;
                s.t = ts;
                s.drop_name = true;
                s
            })
            .collect())
    }

    /// `sort`, `sort_desc` (NaN last) and `sort_by_label`, `sort_by_label_desc` (natural
    /// order of the labels' values, then the label sets).
    fn sort(&self, name: &str, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        if matches!(name, "sort" | "sort_desc") {
            let mut v = self.eval_float_vector(args[0], ts)?;
            if name == "sort" {
                v.sort_by(|a, b| asc_nan_last(a.f, b.f));
            } else {
                v.sort_by(|a, b| desc_nan_last(a.f, b.f));
            }
            return Ok(v);
        }
        let mut v = self.eval_vector(args[0], ts)?;
        let mut labels = Vec::new();
        for a in &args[1..] {
            labels.push(self.eval_string(a, ts)?);
        }
        v.sort_by(|a, b| {
            for l in &labels {
                let ord = natural_cmp(a.metric.get(l).unwrap_or(""), b.metric.get(l).unwrap_or(""));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            a.metric.cmp(&b.metric)
        });
        if name == "sort_by_label_desc" {
            v.reverse();
        }
        Ok(v)
    }

    /// `clamp`, `clamp_min`, `clamp_max` and `round`.
    fn clamp_round(&self, name: &str, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let mut v = self.eval_float_vector(args[0], ts)?;
        let f: Box<dyn Fn(f64) -> f64> = match name {
            "clamp" => {
                let min = self.eval_scalar(args[1], ts)?;
                let max = self.eval_scalar(args[2], ts)?;
                if max < min {
                    return Ok(Vec::new());
                }
                Box::new(move |x| go_max(min, go_min(max, x)))
            }
            "clamp_min" => {
                let bound = self.eval_scalar(args[1], ts)?;
                Box::new(move |x| go_max(x, bound))
            }
            "clamp_max" => {
                let bound = self.eval_scalar(args[1], ts)?;
                Box::new(move |x| go_min(x, bound))
            }
            _ => {
                let to_nearest = match args.get(1) {
                    Some(a) => self.eval_scalar(a, ts)?,
                    None => 1.0,
                };
                let inv = 1.0 / to_nearest;
                Box::new(move |x| (x * inv + 0.5).floor() / inv)
            }
        };
        for s in v.iter_mut() {
            s.f = f(s.f);
            s.drop_name = true;
        }
        Ok(v)
    }

    /// Warns when a quantile is outside [0, 1] (`anchor`: its expression).
    pub(super) fn check_quantile(&self, q: f64, anchor: &str) {
        if q.is_nan() || !(0.0..=1.0).contains(&q) {
            self.annotate(
                AnnotationLevel::Warning,
                format!(
                    "quantile value should be between 0 and 1, got {}",
                    go_fmt_v(q)
                ),
                anchor,
            );
        }
    }

    /// The info that a classic histogram's buckets were fixed up to be monotonic.
    fn monotonicity_info(&self, metric: &Labels, anchor: &str) {
        self.annotate(
            AnnotationLevel::Info,
            format!(
                "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                metric.metric_name().unwrap_or("")
            ),
            anchor,
        );
    }

    /// `histogram_quantile(q, v)` over native histograms and classic buckets.
    fn histogram_quantile(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let q = self.eval_scalar(args[0], ts)?;
        let (mut native, mut v) = split_native(self.eval_vector(args[1], ts)?);
        self.check_quantile(q, &args[0].to_string());
        let anchor = args[1].to_string();
        self.drop_classic_native_mix(&mut native, &mut v, &anchor);
        let groups = self.classic_buckets(v, &anchor);
        let mut out = self.native_quantiles(&[q], None, &native, &anchor, ts);
        for (metric, mut buckets) in groups {
            let (res, forced) = bucket_quantile(q, &mut buckets);
            if forced {
                self.monotonicity_info(&metric, &anchor);
            }
            out.push(Sample {
                metric,
                t: ts,
                f: res,
                drop_name: true,
                h: None,
            });
        }
        Ok(out)
    }

    /// `histogram_quantiles(v, label, q...)`: one sample per quantile, told apart by
    /// `label`.
    fn histogram_quantiles(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let (mut native, mut v) = split_native(self.eval_vector(args[0], ts)?);
        let label = self.eval_string(args[1], ts)?;
        let mut qs = Vec::new();
        for a in &args[2..] {
            let q = self.eval_scalar(a, ts)?;
            self.check_quantile(q, &a.to_string());
            qs.push(q);
        }
        let anchor = args[0].to_string();
        self.drop_classic_native_mix(&mut native, &mut v, &anchor);
        let groups = self.classic_buckets(v, &anchor);
        let mut out = self.native_quantiles(&qs, Some(&label), &native, &anchor, ts);
        for (metric, buckets) in groups {
            for q in &qs {
                let (res, forced) = bucket_quantile(*q, &mut buckets.clone());
                if forced {
                    self.monotonicity_info(&metric, &anchor);
                }
                let mut m = metric.clone();
                m.set(&label, &quantile_label(*q));
                out.push(Sample {
                    metric: m,
                    t: ts,
                    f: res,
                    drop_name: true,
                    h: None,
                });
            }
        }
        Ok(out)
    }

    /// `histogram_fraction(lower, upper, v)` over native histograms and classic buckets.
    fn histogram_fraction(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let lower = self.eval_scalar(args[0], ts)?;
        let upper = self.eval_scalar(args[1], ts)?;
        let (mut native, mut v) = split_native(self.eval_vector(args[2], ts)?);
        let anchor = args[2].to_string();
        self.drop_classic_native_mix(&mut native, &mut v, &anchor);
        let groups = self.classic_buckets(v, &anchor);
        let mut out = self.native_fractions(lower, upper, &native, &anchor, ts);
        for (metric, mut buckets) in groups {
            out.push(Sample {
                metric,
                t: ts,
                f: bucket_fraction(lower, upper, &mut buckets),
                drop_name: true,
                h: None,
            });
        }
        Ok(out)
    }

    /// Groups classic bucket series by their labels without `le`.
    fn classic_buckets(&self, v: Vector, anchor: &str) -> Vec<(Labels, Vec<(f64, f64)>)> {
        let mut order: Vec<Labels> = Vec::new();
        let mut groups: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in v {
            let le = s.metric.get("le").unwrap_or("");
            let Some(upper) = parse_go_float(le) else {
                self.annotate(
                    AnnotationLevel::Warning,
                    format!(
                        "bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}",
                        le,
                        s.metric.metric_name().unwrap_or("")
                    ),
                    anchor,
                );
                continue;
            };
            let mut metric = s.metric.clone();
            metric.remove("le");
            groups
                .entry(metric.clone())
                .or_insert_with(|| {
                    order.push(metric);
                    Vec::new()
                })
                .push((upper, s.f));
        }
        order
            .into_iter()
            .filter_map(|m| groups.remove(&m).map(|b| (m, b)))
            .collect()
    }

    /// `info(v [, selector])`: adds the data labels of info series (`target_info` by
    /// default) that share `instance` and `job` with each series of `v`.
    fn info(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let base = self.eval_vector(args[0], ts)?;
        let data_matchers = info_data_matchers(args.get(1).copied())?;
        let mut name_matchers: Vec<LabelMatcher> = data_matchers
            .iter()
            .filter(|m| m.name == METRIC_NAME)
            .cloned()
            .collect();
        if args.len() < 2 {
            name_matchers.push(LabelMatcher::new(
                MatchOp::Equal,
                METRIC_NAME,
                "target_info",
            ));
        }
        // Only a positive name matcher says which series are info series themselves.
        let positive = name_matchers
            .iter()
            .any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_)));
        let is_info = |l: &Labels| {
            positive
                && name_matchers
                    .iter()
                    .all(|m| m.is_match(l.metric_name().unwrap_or("")))
        };
        // Info series are looked at as of the first selector's time (@, offset), subqueries
        // on the way shifting it too.
        let info_time = self.reference_time(args[0], ts)?.unwrap_or(ts);
        let mut id_values: Vec<(&str, Vec<String>)> = Vec::new();
        for l in INFO_IDENTIFYING {
            let mut vals: Vec<String> = base
                .iter()
                .filter(|s| !is_info(&s.metric))
                .filter_map(|s| s.metric.get(l).map(str::to_string))
                .collect();
            vals.sort();
            vals.dedup();
            if !vals.is_empty() {
                id_values.push((l, vals));
            }
        }
        let label_data_matchers: Vec<&LabelMatcher> = data_matchers
            .iter()
            .filter(|m| m.name != METRIC_NAME)
            .collect();
        let info_samples = self.info_samples(&id_values, &data_matchers, info_time)?;
        let (by_sig, info_names) = newest_info(info_samples)?;
        let mut out = Vec::with_capacity(base.len());
        for bs in base {
            if is_info(&bs.metric) {
                out.push(bs);
                continue;
            }
            let mut added: Vec<(String, String)> = Vec::new();
            let mut seen = 0;
            for name in &info_names {
                let Some((il, _)) = by_sig.get(&info_signature(name, &bs.metric)) else {
                    continue;
                };
                seen += 1;
                for (k, v) in il.iter() {
                    if k == METRIC_NAME
                        || (!label_data_matchers.is_empty()
                            && !label_data_matchers.iter().any(|m| m.name == k))
                    {
                        continue;
                    }
                    if let Some((_, prev)) = added.iter().find(|(n, _)| n == k)
                        && prev != v
                    {
                        return Err(QueryError::eval(format!("conflicting label: {k}")));
                    }
                    if bs.metric.contains(k) || added.iter().any(|(n, _)| n == k) {
                        continue;
                    }
                    added.push((k.to_string(), v.to_string()));
                }
            }
            if seen == 0 && label_data_matchers.iter().any(|m| !m.is_match("")) {
                continue;
            }
            let mut metric = bs.metric.clone();
            for (k, v) in &added {
                metric.set(k, v);
            }
            out.push(Sample { metric, ..bs });
        }
        Ok(out)
    }

    /// The info series whose identifying labels take one of `id_values` and that match
    /// `data_matchers` (the default info metric without a name matcher, `*_info` with
    /// only exclusions), with their newest sample's time within the lookback of
    /// `info_time`; stale ones are left out.
    fn info_samples(
        &self,
        id_values: &[(&str, Vec<String>)],
        data_matchers: &[LabelMatcher],
        info_time: i64,
    ) -> Result<Vec<(Labels, i64)>, QueryError> {
        let mut info_samples: Vec<(Labels, i64)> = Vec::new();
        if id_values.is_empty() {
            return Ok(info_samples);
        }
        let mut matchers: Vec<LabelMatcher> = Vec::new();
        for (l, vals) in id_values {
            let re = vals
                .iter()
                .map(|v| regex::escape(v))
                .collect::<Vec<_>>()
                .join("|");
            let rx = Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| QueryError::eval(format!("info(): {e}")))?;
            matchers.push(LabelMatcher::new(MatchOp::Re(rx), l, &re));
        }
        matchers.extend(data_matchers.iter().cloned());
        let has_name = data_matchers.iter().any(|m| m.name == METRIC_NAME);
        let has_positive_name = data_matchers
            .iter()
            .any(|m| m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal | MatchOp::Re(_)));
        if !has_name {
            // No name given: the default info metric.
            matchers.push(LabelMatcher::new(
                MatchOp::Equal,
                METRIC_NAME,
                "target_info",
            ));
        } else if !has_positive_name {
            // Only exclusions: they narrow down the info metrics (`*_info`).
            let rx = Regex::new("^(?:.+_info)$")
                .map_err(|e| QueryError::eval(format!("info(): {e}")))?;
            matchers.push(LabelMatcher::new(MatchOp::Re(rx), METRIC_NAME, ".+_info"));
        }
        for sd in self.q.select(
            &matchers,
            self.window_open(info_time, self.lookback).saturating_add(1),
            info_time,
        ) {
            if !sd.histograms.is_empty() {
                // Prometheus reads info series as floats only.
                return Err(QueryError::eval(format!(
                    "info(): {} has native histogram samples; an info metric has float samples",
                    sd.labels
                )));
            }
            if let Some(last) = sd.samples.last()
                && !crate::storage::is_stale(last.v)
            {
                info_samples.push((sd.labels, last.t));
            }
        }
        Ok(info_samples)
    }

    /// The time the first selector of `e` reads at when `e` is evaluated at `t`.
    fn reference_time(&self, e: &Expr, t: i64) -> Result<Option<i64>, QueryError> {
        Ok(match e {
            Expr::VectorSelector(vs) => Some(self.ref_time(vs, t)?),
            Expr::MatrixSelector(ms) => Some(self.ref_time(&ms.vs, t)?),
            Expr::Subquery(sq) => {
                let t = self.at_ms(&sq.at)?.unwrap_or(t) - self.offset_ms(&sq.offset)?;
                self.reference_time(&sq.expr, t)?
            }
            Expr::Paren(p) => self.reference_time(&p.expr, t)?,
            Expr::Unary(u) => self.reference_time(&u.expr, t)?,
            Expr::Aggregate(a) => self.reference_time(&a.expr, t)?,
            Expr::Binary(b) => match self.reference_time(&b.lhs, t)? {
                Some(r) => Some(r),
                None => self.reference_time(&b.rhs, t)?,
            },
            Expr::Call(c) => {
                let mut found = None;
                for a in &c.args.args {
                    if let Some(r) = self.reference_time(a, t)? {
                        found = Some(r);
                        break;
                    }
                }
                found
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => None,
        })
    }

    fn label_replace(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let dst = self.eval_string(args[1], ts)?;
        let repl = self.eval_string(args[2], ts)?;
        let src = self.eval_string(args[3], ts)?;
        let re_str = self.eval_string(args[4], ts)?;
        let re = crate::re2::compile_anchored(&re_str).map_err(|_| {
            QueryError::eval(format!(
                "invalid regular expression in label_replace(): {re_str}"
            ))
        })?;
        if !is_valid_label_name(&dst) {
            return Err(QueryError::eval(format!(
                "invalid destination label name in label_replace(): {}",
                shown_label_name(&dst)
            )));
        }
        let mut v = self.eval_vector(args[0], ts)?;
        for s in v.iter_mut() {
            self.poll()?;
            let src_val = s.metric.get(&src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&src_val) {
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                s.metric.set(&dst, &res);
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
        }
        Ok(v)
    }

    fn label_join(&self, args: &[&Expr], ts: i64) -> Result<Vector, QueryError> {
        let dst = self.eval_string(args[1], ts)?;
        let sep = self.eval_string(args[2], ts)?;
        let mut srcs = Vec::new();
        for a in &args[3..] {
            srcs.push(self.eval_string(a, ts)?);
        }
        if !is_valid_label_name(&dst) {
            return Err(QueryError::eval(format!(
                "invalid destination label name in label_join(): {}",
                shown_label_name(&dst)
            )));
        }
        if let Some(bad) = srcs.iter().find(|s| !is_valid_label_name(s)) {
            return Err(QueryError::eval(format!(
                "invalid source label name in label_join(): {}",
                shown_label_name(bad)
            )));
        }
        let mut v = self.eval_vector(args[0], ts)?;
        for s in v.iter_mut() {
            self.poll()?;
            let joined = srcs
                .iter()
                .map(|l| s.metric.get(l).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&sep);
            s.metric.set(&dst, &joined);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
        }
        Ok(v)
    }

    /// `start_timestamp(vs)`: the start timestamp (in seconds; 0 when unknown) of the
    /// sample each series of `vs` has at `ts`.
    fn start_timestamps(&self, vs: &VectorSelector, ts: i64) -> Result<Vector, QueryError> {
        let t = self.ref_time(vs, ts)?;
        let data = self.fetch(vs)?;
        let bounds = self.upper_bounds(vs, &data, t);
        let mut out = Vec::new();
        for (sd, &idx) in data.iter().zip(&bounds) {
            // The newest sample at or before `t`, float or histogram, and its start time.
            let float = idx.checked_sub(1).map(|i| {
                let s = sd.samples[i];
                let st = sd.st.as_ref().map_or(0, |st| st[i]);
                (s.t, is_stale(s.v), st)
            });
            let hist = sd
                .histograms
                .partition_point(|p| p.t <= t)
                .checked_sub(1)
                .map(|i| {
                    let st = sd.hst.as_ref().and_then(|st| st.get(i).copied());
                    (sd.histograms[i].t, false, st.unwrap_or(0))
                });
            let newest = match (float, hist) {
                (Some(f), Some(h)) => Some(if h.0 > f.0 { h } else { f }),
                (f, h) => f.or(h),
            };
            let Some((sample_t, stale, st)) = newest else {
                continue;
            };
            if sample_t <= self.window_open(t, self.lookback) || stale {
                continue;
            }
            out.push(Sample {
                metric: sd.labels.clone(),
                t: ts,
                f: st as f64 / 1000.0,
                drop_name: true,
                h: None,
            });
        }
        Ok(out)
    }

    fn eval_range_function(
        &self,
        name: &str,
        args: &[&Expr],
        ts: i64,
    ) -> Result<Vector, QueryError> {
        // Find the range argument and evaluate the scalar ones.
        let range_idx = if name == "quantile_over_time" { 1 } else { 0 };
        let mut scalars = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i != range_idx {
                scalars.push(self.eval_scalar(a, ts)?);
            }
        }
        let arg: RangeArg = self.eval_range_arg(args[range_idx], ts)?;
        match arg.mode {
            RangeMode::Anchored
                if !matches!(name, "changes" | "delta" | "increase" | "rate" | "resets") =>
            {
                return Err(QueryError::eval(format!(
                    "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with {name}"
                )));
            }
            RangeMode::Smoothed if !matches!(name, "delta" | "increase" | "rate") => {
                return Err(QueryError::eval(format!(
                    "smoothed modifier can only be used with: delta, increase, rate - not with {name}"
                )));
            }
            _ => {}
        }
        let anchor = args[range_idx].to_string();
        let anchor = anchor
            .split(['{', '['])
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&anchor)
            .to_string();
        if name == "absent_over_time" {
            if !arg.series.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![Sample {
                metric: absent_labels(args[range_idx]),
                t: ts,
                f: 1.0,
                drop_name: false,
                h: None,
            }]);
        }
        if name == "quantile_over_time" {
            self.check_quantile(scalars[0], &args[0].to_string());
        }
        let mut out = Vec::with_capacity(arg.series.len());
        for s in &arg.series {
            if !s.histograms.is_empty() {
                if let Some(v) = self.histogram_range_value(name, s, &arg, &scalars, &anchor, ts)? {
                    out.push(v);
                }
                continue;
            }
            let extended;
            let (pts, st) =
                if arg.mode == RangeMode::Anchored && matches!(name, "changes" | "resets") {
                    extended = extend_floats(&s.floats, arg.range_start, arg.range_end, false);
                    if extended.is_empty() {
                        continue;
                    }
                    (&extended, None)
                } else {
                    (&s.floats, s.st.as_deref())
                };
            if matches!(name, "rate" | "increase")
                && arg.mode == RangeMode::Plain
                && st_overlap(pts, st)
            {
                self.annotate(
                    AnnotationLevel::Warning,
                    st_overlap_warning(&s.metric),
                    &anchor,
                );
            }
            let value = range_kernel(name, pts, st, &arg, &scalars, ts)?;
            let Some(value) = value else { continue };
            let keeps_name = matches!(name, "last_over_time" | "first_over_time");
            out.push(Sample {
                metric: s.metric.clone(),
                t: ts,
                f: value,
                drop_name: if keeps_name { s.drop_name } else { true },
                h: None,
            });
            if (name == "rate" || name == "increase")
                && let Some(message) = counter_info(&s.metric)
            {
                self.annotate(AnnotationLevel::Info, message, &anchor);
            }
        }
        Ok(out)
    }
}

/// The info `rate`/`increase` raise for a series whose name does not look like a counter's.
pub(crate) fn counter_info(metric: &Labels) -> Option<String> {
    let metric_name = metric.metric_name()?;
    let counter_like = metric_name.ends_with("_total")
        || metric_name.ends_with("_sum")
        || metric_name.ends_with("_count")
        || metric_name.ends_with("_bucket");
    (!counter_like).then(|| {
        format!(
            "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric_name:?}"
        )
    })
}

/// The warning `rate`/`increase` raise for a series whose start timestamps overlap.
pub(crate) fn st_overlap_warning(metric: &Labels) -> String {
    format!(
        "sample has start time that overlaps with previous sample timestamp for metric {:?}",
        metric.metric_name().unwrap_or("")
    )
}

/// Whether the start timestamps `sts` (aligned with `pts`) say that a counter was reset
/// between sample `i - 1` and sample `i`, as Prometheus's `isStartTimestampReset` does: a
/// start time after the previous sample, or at it when the previous sample's start time
/// was known (a delta series; an unknown start repeated as the previous timestamp is not
/// a reset). A start time of 0 is unknown; one at or after its own sample is ignored.
fn st_reset(pts: &[FPoint], sts: &[i64], i: usize) -> bool {
    if i == 0 || i >= sts.len() || i >= pts.len() {
        return false;
    }
    is_st_reset(sts[i - 1], pts[i - 1].t, sts[i], pts[i].t)
}

/// [`st_reset`] for one pair of samples, floats or histograms: the previous sample's start
/// time and time, then the current one's.
pub(crate) fn is_st_reset(prev_st: i64, prev_t: i64, cur_st: i64, cur_t: i64) -> bool {
    if cur_st == 0 || cur_st >= cur_t || cur_st < prev_t {
        return false;
    }
    if cur_st > prev_t {
        return true;
    }
    prev_st <= prev_t && prev_st != 0 && prev_st != prev_t
}

/// Whether a sample's start time reaches back before the previous sample without being
/// the previous sample's start time (Prometheus's `checkStartTimeOverlap`): the two
/// samples count an overlapping span.
pub(crate) fn st_overlap(pts: &[FPoint], sts: Option<&[i64]>) -> bool {
    let Some(sts) = sts else { return false };
    st_overlap_at(sts, |i| pts[i].t, pts.len())
}

/// [`st_overlap`] over `n` points whose times `t_of` gives, floats or histograms.
pub(crate) fn st_overlap_at(sts: &[i64], t_of: impl Fn(usize) -> i64, n: usize) -> bool {
    (1..n.min(sts.len())).any(|i| sts[i] != 0 && sts[i] < t_of(i - 1) && sts[i] != sts[i - 1])
}

/// The value of range function `name` over the points `pts` of one series' window
/// (`None`: no output sample for this series). `sts` are the points' start timestamps
/// when the series has them, `scalars` the function's other arguments, `ts` the
/// evaluation time.
pub(crate) fn range_kernel(
    name: &str,
    pts: &[FPoint],
    sts: Option<&[i64]>,
    arg: &RangeArg,
    scalars: &[f64],
    ts: i64,
) -> Result<Option<f64>, QueryError> {
    if pts.is_empty() {
        return Ok(None);
    }
    let sts = sts.filter(|s| s.len() == pts.len()).unwrap_or(&[]);
    Ok(match name {
        "rate" | "increase" | "delta" if arg.mode != RangeMode::Plain => {
            extended_rate(pts, arg, name != "delta", name == "rate")
        }
        "rate" | "increase" | "delta" => {
            extrapolated_rate(pts, sts, arg, name != "delta", name == "rate", true)
        }
        "irate" | "idelta" => instant_value(pts, sts, name == "irate"),
        "deriv" => (pts.len() >= 2).then(|| linear_regression(pts, pts[0].t).0),
        "predict_linear" => (pts.len() >= 2).then(|| {
            let (slope, intercept) = linear_regression(pts, ts);
            slope * scalars[0] + intercept
        }),
        "resets" => Some(
            (1..pts.len())
                .filter(|&i| pts[i].f < pts[i - 1].f || st_reset(pts, sts, i))
                .count() as f64,
        ),
        "changes" => Some(
            pts.windows(2)
                .filter(|w| !(w[1].f == w[0].f || (w[1].f.is_nan() && w[0].f.is_nan())))
                .count() as f64,
        ),
        "avg_over_time" => Some(avg_over_time(pts)),
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0, 0.0);
            for p in pts {
                (sum, c) = kahan_sum_inc(p.f, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        "min_over_time" | "max_over_time" => {
            let mut v = pts[0].f;
            for p in &pts[1..] {
                let better = if name == "max_over_time" {
                    p.f > v
                } else {
                    p.f < v
                };
                if better || v.is_nan() {
                    v = p.f;
                }
            }
            Some(v)
        }
        "count_over_time" => Some(pts.len() as f64),
        "present_over_time" => Some(1.0),
        "last_over_time" => pts.last().map(|p| p.f),
        "first_over_time" => pts.first().map(|p| p.f),
        "ts_of_last_over_time" => pts.last().map(|p| p.t as f64 / 1000.0),
        "ts_of_first_over_time" => pts.first().map(|p| p.t as f64 / 1000.0),
        "ts_of_min_over_time" | "ts_of_max_over_time" => {
            let mut best = pts[0];
            for p in &pts[1..] {
                let better = if name == "ts_of_max_over_time" {
                    p.f >= best.f
                } else {
                    p.f <= best.f
                };
                if better || best.f.is_nan() {
                    best = *p;
                }
            }
            Some(best.t as f64 / 1000.0)
        }
        "quantile_over_time" => Some(quantile(scalars[0], pts.iter().map(|p| p.f).collect())),
        "stddev_over_time" | "stdvar_over_time" => {
            let var = variance(pts);
            Some(if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            })
        }
        "mad_over_time" if pts.iter().any(|p| p.f.is_nan()) => Some(f64::NAN),
        "mad_over_time" => {
            let values: Vec<f64> = pts.iter().map(|p| p.f).collect();
            let median = quantile(0.5, values.clone());
            Some(quantile(
                0.5,
                values.iter().map(|v| (v - median).abs()).collect(),
            ))
        }
        "double_exponential_smoothing" => {
            double_exponential_smoothing(pts, scalars[0], scalars[1])?
        }
        _ => {
            return Err(QueryError::eval(format!(
                "function {name:?} is not supported"
            )));
        }
    })
}

/// `rate`, `increase` and `delta` with Prometheus's extrapolation to the window edges.
///
/// For counters, start timestamps `sts` (empty when unknown) add the resets they imply,
/// and when the first sample's start time lies inside the window the counter is taken to
/// have been 0 then: the increase runs from there instead of being extrapolated to the
/// left (which also gives a value for a single sample).
/// `may_reset` false says that no point of the window is a counter reset, which spares
/// scanning for them.
fn extrapolated_rate(
    pts: &[FPoint],
    sts: &[i64],
    arg: &RangeArg,
    is_counter: bool,
    is_rate: bool,
    may_reset: bool,
) -> Option<f64> {
    let sts = if is_counter { sts } else { &[] };
    let n_minus_one = pts.len() - 1;
    let first = pts[0];
    let last = pts[n_minus_one];
    let mut result = last.f - first.f;
    if is_counter && may_reset {
        for i in 1..pts.len() {
            if is_counter_reset(pts, sts, i) {
                result += pts[i - 1].f;
            }
        }
    }
    let mut duration_to_start = (first.t - arg.range_start) as f64 / 1000.0;
    let mut duration_to_end = (arg.range_end - last.t) as f64 / 1000.0;
    let mut sampled_interval = (last.t - first.t) as f64 / 1000.0;
    let avg_between = if n_minus_one > 0 {
        sampled_interval / n_minus_one as f64
    } else {
        0.0
    };
    let threshold = avg_between * 1.1;
    match sts.first() {
        Some(&st) if st != 0 && st > arg.range_start && st < first.t => {
            duration_to_start = 0.0;
            sampled_interval = (last.t - st) as f64 / 1000.0;
            result += first.f;
        }
        _ if n_minus_one == 0 => return None,
        _ => {
            if duration_to_start >= threshold {
                duration_to_start = avg_between / 2.0;
            }
            if is_counter && result > 0.0 && first.f >= 0.0 {
                let duration_to_zero = sampled_interval * (first.f / result);
                if duration_to_zero < duration_to_start {
                    duration_to_start = duration_to_zero;
                }
            }
        }
    }
    if duration_to_end >= threshold {
        duration_to_end = avg_between / 2.0;
    }
    let extrapolate_to = sampled_interval + duration_to_start + duration_to_end;
    let mut factor = if sampled_interval != 0.0 {
        extrapolate_to / sampled_interval
    } else {
        1.0
    };
    if is_rate {
        factor /= arg.range as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Whether point `i` of `pts` (start times `sts`, aligned or empty) resets the counter
/// that `rate` and `increase` follow: its value drops, or its start time says the series
/// restarted after the previous point. The first point is not a reset.
pub(crate) fn is_counter_reset(pts: &[FPoint], sts: &[i64], i: usize) -> bool {
    i > 0 && i < pts.len() && (pts[i].f < pts[i - 1].f || st_reset(pts, sts, i))
}

/// `rate` (or `increase`) over a plain window, as [`range_kernel`] computes it, when the
/// caller already knows whether a counter reset lies inside the window (`may_reset`;
/// see [`is_counter_reset`]): an all-steps evaluation counts them as its windows slide.
pub(crate) fn counter_rate(
    pts: &[FPoint],
    sts: Option<&[i64]>,
    arg: &RangeArg,
    is_rate: bool,
    may_reset: bool,
) -> Option<f64> {
    if pts.is_empty() {
        return None;
    }
    let sts = sts.filter(|s| s.len() == pts.len()).unwrap_or(&[]);
    extrapolated_rate(pts, sts, arg, true, is_rate, may_reset)
}

/// `rate`, `increase` and `delta` over an anchored or smoothed window: the difference of
/// the (picked or interpolated) edge values, plus counter resets inside, no extrapolation.
fn extended_rate(f: &[FPoint], arg: &RangeArg, is_counter: bool, is_rate: bool) -> Option<f64> {
    let smoothed = arg.mode == RangeMode::Smoothed;
    let (mut first, mut last) = edge_indices(f, arg.range_start, arg.range_end, smoothed)?;
    let left = pick_left(f, first, arg.range_start, smoothed, is_counter);
    let right = pick_right(f, last, arg.range_end, smoothed, is_counter);
    let mut result = right - left;
    if is_counter {
        if f[first].t <= arg.range_start {
            first += 1;
        }
        if f[last].t >= arg.range_end {
            last = last.wrapping_sub(1);
        }
        let inner: &[FPoint] = if last != usize::MAX && first <= last {
            &f[first..=last]
        } else {
            &[]
        };
        let mut prev = left;
        let mut correction = 0.0;
        for p in inner {
            if p.f < prev {
                correction += prev;
            }
            prev = p.f;
        }
        if right < prev {
            correction += prev;
        }
        result += correction;
    }
    if is_rate {
        result /= arg.range as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` / `idelta`: the last two samples (for `irate`, a reset the start timestamps
/// `sts` show counts like a drop in value).
pub(crate) fn instant_value(pts: &[FPoint], sts: &[i64], is_rate: bool) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let last = pts[pts.len() - 1];
    let prev = pts[pts.len() - 2];
    let mut v = if is_rate && (last.f < prev.f || st_reset(pts, sts, pts.len() - 1)) {
        last.f
    } else {
        last.f - prev.f
    };
    if is_rate {
        let interval = last.t - prev.t;
        if interval == 0 {
            return None;
        }
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept, x in seconds relative to `intercept_time`.
fn linear_regression(pts: &[FPoint], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut c_x, mut sum_y, mut c_y) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut c_xy, mut sum_x2, mut c_x2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = pts[0].f;
    let mut const_y = true;
    for (i, p) in pts.iter().enumerate() {
        if const_y && i > 0 && p.f != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_time) as f64 / 1e3;
        (sum_x, c_x) = kahan_sum_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_sum_inc(p.f, sum_y, c_y);
        (sum_xy, c_xy) = kahan_sum_inc(x * p.f, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_sum_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sum_x += c_x;
    sum_y += c_y;
    sum_xy += c_xy;
    sum_x2 += c_x2;
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn avg_over_time(pts: &[FPoint]) -> f64 {
    let mut sum = pts[0].f;
    let mut count = 1.0;
    let (mut mean, mut kahan_c) = (0.0, 0.0);
    let mut incremental = false;
    for (i, p) in pts[1..].iter().enumerate() {
        count = (i + 2) as f64;
        if !incremental {
            let (new_sum, new_c) = kahan_sum_inc(p.f, sum, kahan_c);
            if !new_sum.is_infinite() {
                sum = new_sum;
                kahan_c = new_c;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            kahan_c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, kahan_c) = kahan_sum_inc(p.f / count, q * mean, q * kahan_c);
    }
    if incremental {
        mean + kahan_c
    } else {
        sum / count + kahan_c / count
    }
}

fn variance(pts: &[FPoint]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in pts {
        count += 1.0;
        let delta = p.f - (mean + c_mean);
        (mean, c_mean) = kahan_sum_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_sum_inc(delta * (p.f - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

fn double_exponential_smoothing(
    pts: &[FPoint],
    sf: f64,
    tf: f64,
) -> Result<Option<f64>, QueryError> {
    if !(sf > 0.0 && sf < 1.0) {
        return Err(QueryError::eval(format!(
            "invalid smoothing factor. Expected: 0 < sf < 1, got: {}",
            go_fmt_v(sf)
        )));
    }
    if !(tf > 0.0 && tf < 1.0) {
        return Err(QueryError::eval(format!(
            "invalid trend factor. Expected: 0 < tf < 1, got: {}",
            go_fmt_v(tf)
        )));
    }
    if pts.len() < 2 {
        return Ok(None);
    }
    let mut s0 = 0.0;
    let mut s1 = pts[0].f;
    let mut b = pts[1].f - pts[0].f;
    for (i, p) in pts.iter().enumerate().skip(1) {
        let x = sf * p.f;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Ok(Some(s1))
}

/// Labels `absent()` reports: the equality matchers of a selector argument (a label
/// matched more than once is left out).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dup: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if pairs.iter().any(|(k, _)| *k == m.name) {
            dup.push(m.name.clone());
            continue;
        }
        if matches!(m.op, MatchOp::Equal) {
            pairs.push((m.name.clone(), m.value.clone()));
        } else {
            dup.push(m.name.clone());
        }
    }
    // A name matched several times (any operator) is ambiguous.
    let names_seen: Vec<&str> = vs
        .matchers
        .matchers
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    pairs.retain(|(k, _)| names_seen.iter().filter(|n| **n == k.as_str()).count() == 1);
    Labels::new(pairs)
}

/// Go's `strconv.ParseFloat` for bucket bounds (accepts `+Inf`, `Inf`, `NaN`, …).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    s.parse::<f64>().ok()
}

/// The label value `histogram_quantiles` gives a quantile: always with a fraction
/// (`0.0`, `0.25`, `1.0`).
pub(crate) fn quantile_label(q: f64) -> String {
    if q.is_nan() {
        "NaN".into()
    } else if q.is_infinite() {
        if q > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{q:?}")
    }
}

/// Go's `int64(f)` conversion (saturating here; Go's result for out-of-range is undefined).
fn go_f64_to_i64(f: f64) -> i64 {
    if f.is_nan() { i64::MIN } else { f as i64 }
}

/// Prometheus's classic-bucket quantile; returns the value and whether monotonicity had
/// to be forced.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return (f64::NAN, false);
    }
    coalesce(buckets);
    let forced = ensure_monotonic(buckets, 1e-12);
    if buckets.len() < 2 {
        return (f64::NAN, false);
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, false);
    }
    let mut rank = q * observations;
    let n = buckets.len() - 1;
    let b = buckets[..n].partition_point(|x| x.1 < rank);
    if b == n {
        return (buckets[n - 1].0, forced);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, forced);
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        bucket_start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    (
        bucket_start + (bucket_end - bucket_start) * (rank / count),
        forced,
    )
}

fn coalesce(buckets: &mut Vec<(f64, f64)>) {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => out.push((ub, c)),
        }
    }
    *buckets = out;
}

fn ensure_monotonic(buckets: &mut [(f64, f64)], tolerance: f64) -> bool {
    let mut forced = false;
    let Some(first) = buckets.first() else {
        return false;
    };
    let mut prev = first.1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, tolerance) {
            b.1 = prev;
            continue;
        }
        if curr < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    forced
}

/// Prometheus's `almost.Equal`.
pub(crate) fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < epsilon * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Prometheus's classic-bucket `histogram_fraction`.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    coalesce(buckets);
    let count = buckets[buckets.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for i in 0..buckets.len() {
        let (ub, c) = buckets[i];
        let mut lb = if i > 0 {
            buckets[i - 1].0
        } else {
            f64::NEG_INFINITY
        };
        if i == 0 && ub > 0.0 {
            lb = 0.0;
        }
        // No interpolation inside a bucket of infinite width: the (-Inf, x] bucket counts
        // as wholly below the value, the (x, +Inf] bucket as wholly above it.
        let interpolate = |v: f64| {
            if lb == f64::NEG_INFINITY {
                c
            } else if ub == f64::INFINITY {
                rank
            } else {
                rank + (c - rank) * (v - lb) / (ub - lb)
            }
        };
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = c;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

/// Compares strings the way `sort_by_label` does (numbers inside compare by value).
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = ai.peek().copied().filter(|c| c.is_ascii_digit()) {
                    na.push(c);
                    ai.next();
                }
                let mut nb = String::new();
                while let Some(c) = bi.peek().copied().filter(|c| c.is_ascii_digit()) {
                    nb.push(c);
                    bi.next();
                }
                let ta = na.trim_start_matches('0');
                let tb = nb.trim_start_matches('0');
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                ai.next();
                bi.next();
            }
        }
    }
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

/// Civil date (year, month 1-12, day 1-31) of a day count since the epoch.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_fn(name: &str) -> fn(i64) -> f64 {
    match name {
        "days_in_month" => |secs| {
            let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
            let days = match m {
                1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                4 | 6 | 9 | 11 => 30,
                _ => {
                    if is_leap(y) {
                        29
                    } else {
                        28
                    }
                }
            };
            days as f64
        },
        "day_of_month" => |secs| civil_from_days(secs.div_euclid(86_400)).2 as f64,
        "day_of_week" => |secs| (secs.div_euclid(86_400) + 4).rem_euclid(7) as f64,
        "day_of_year" => |secs| {
            let days = secs.div_euclid(86_400);
            let (y, _, _) = civil_from_days(days);
            let jan1 = days_from_civil(y, 1, 1);
            (days - jan1 + 1) as f64
        },
        "hour" => |secs| (secs.rem_euclid(86_400) / 3600) as f64,
        "minute" => |secs| (secs.rem_euclid(3600) / 60) as f64,
        "month" => |secs| civil_from_days(secs.div_euclid(86_400)).1 as f64,
        _ => |secs| civil_from_days(secs.div_euclid(86_400)).0 as f64,
    }
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        assert_eq!(natural_cmp("a10", "a9"), std::cmp::Ordering::Greater);
        assert_eq!(natural_cmp("a", "b"), std::cmp::Ordering::Less);
    }
}
