//! The PromQL evaluator.
//!
//! Written by hand because no embeddable Rust evaluator exists: `promql-parser` only parses,
//! GreptimeDB's evaluator is bound to DataFusion and OpenObserve's is AGPL. The semantics
//! follow Prometheus 3 (`promql/engine.go`, `functions.go`): 5 m lookback with left-open
//! windows `(t - range, t]` (Prometheus 2's left-closed windows on request, see the
//! [`windows`] module), stale markers ending a series at once, `offset` (negative too),
//! `@` with `start()`/`end()`, subqueries aligned to absolute multiples of their step, and
//! delayed `__name__` removal (names to drop are only dropped when the query finishes, so
//! `label_replace` can still read or keep them).
//!
//! Evaluation is step by step: a range query evaluates the expression at every step, which
//! matches Prometheus's results (its step-invariant and range evaluation are optimisations of
//! the same definition). Series data is fetched once per selector for the whole query and
//! sliced per step.
//!
//! Beyond stable PromQL, the experimental features Prometheus puts behind flags are
//! implemented too: `limitk`/`limit_ratio`, `fill*()` matching modifiers, duration
//! expressions, `anchored`/`smoothed` selectors, `info()`, `sort_by_label`,
//! `mad_over_time`, `ts_of_*_over_time`, `double_exponential_smoothing`,
//! `histogram_quantiles`, `step()`/`range()`/`start()`/`end()`, `min_of`/`max_of`. Syntax
//! promql-parser lacks is rewritten before parsing (see the `rewrite` module).
//! Native histograms are not supported yet: [`Sample`] and [`Series`] will gain histogram
//! fields beside the floats.
//!
//! `max_samples` bounds the samples one selector, subquery or range-query result holds
//! (Prometheus counts the peak over the whole query; the bound here is per part).

mod aggregations;
mod aggregations_histogram;
mod binary;
mod binary_histogram;
pub mod cancel;
pub mod depth;
pub mod error;
mod functions;
mod histogram_extended;
mod histogram_fns;
pub(crate) use histogram_fns::histogram_string;
mod histogram_range;
mod histogram_rate;
mod histogram_stats;
pub mod parse_cache;
mod rewrite;
mod selector_range;
mod steps;
pub mod value;
pub mod windows;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

pub use cancel::{CancelOnDrop, QueryControl};
pub use error::{Annotation, AnnotationLevel, QueryError};
pub(crate) use functions::almost_equal as almost_equal_pub;
pub use parse_cache::ParseCache;
pub use value::{FPoint, HPoint, Matrix, Sample, Series, Value, Vector};
pub use windows::WindowSemantics;

use crate::labels::{Labels, METRIC_NAME};
use crate::storage::{Queryable, SeriesData, is_stale};

/// Evaluation settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (Prometheus: 5 m).
    pub lookback_delta: Duration,
    /// Upper bound of samples one selector or result may hold; a native histogram counts
    /// as its size in float samples, as in Prometheus (at least 11, more with buckets).
    pub max_samples: usize,
    /// Step of subqueries written without one (`x[1h:]`); Prometheus uses the global
    /// evaluation interval, 1 m by default.
    pub default_subquery_step: Duration,
    /// Whether the `@` modifier is allowed.
    pub enable_at_modifier: bool,
    /// Whether negative offsets are allowed.
    pub enable_negative_offset: bool,
    /// How long one query may run (Prometheus's `--query.timeout`, 2 m by default);
    /// `None` for no limit.
    pub timeout: Option<Duration>,
    /// How deep a query's expression tree may nest (`--query.max-depth`); see the
    /// [`depth`] module.
    pub max_depth: usize,
    /// Whether windows are left-open (Prometheus 3, the default) or left-closed
    /// (Prometheus 2); see the [`windows`] module.
    pub windows: WindowSemantics,
    /// How a range function's work over many series is split across threads: `None`
    /// splits work large enough to gain from it (about 20,000 windows a share) into one
    /// share per core; `Some(n)` splits any work over two or more series into up to `n`
    /// shares (`Some(1)`: never), so that tests can check split evaluation on small data.
    pub split_series: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta: Duration::from_secs(300),
            max_samples: 50_000_000,
            default_subquery_step: Duration::from_secs(60),
            enable_at_modifier: true,
            enable_negative_offset: true,
            timeout: Some(Duration::from_secs(120)),
            max_depth: depth::DEFAULT_MAX_DEPTH,
            windows: WindowSemantics::Prometheus3,
            split_series: None,
        }
    }
}

/// A value plus the annotations (warnings, infos) the evaluation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryOutput<T> {
    /// The result.
    pub value: T,
    /// Warnings and infos, in the order they were raised, without duplicates.
    pub annotations: Vec<Annotation>,
}

/// A PromQL engine: parse and evaluate expressions against a [`Queryable`].
#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// Parses `query` for an instant query; see [`parse_for_step`].
pub fn parse(query: &str) -> Result<Expr, QueryError> {
    parse_for_step(query, 0, 0)
}

/// Parses `query` for an instant query, refusing trees deeper than `max_depth`.
pub fn parse_with_depth(query: &str, max_depth: usize) -> Result<Expr, QueryError> {
    parse_limited(query, 0, 0, max_depth)
}

/// [`parse_for_step`] with the default depth limit ([`depth::DEFAULT_MAX_DEPTH`]).
pub fn parse_for_step(query: &str, step_ms: i64, range_ms: i64) -> Result<Expr, QueryError> {
    parse_limited(query, step_ms, range_ms, depth::DEFAULT_MAX_DEPTH)
}

/// Parses `query`, first replacing duration expressions (`[5m + 1m]`, `offset step()`,
/// which promql-parser does not know) by literals computed with the query's step and range
/// (`end - start`, both 0 for instant queries). promql-parser's terse messages are wrapped
/// with the query text and, where it can be found, the position of the offending token.
/// Before anything else, a query that could parse to a tree deeper than `max_depth` is
/// refused (see the [`depth`] module): everything after this point recurses over it.
pub fn parse_limited(
    query: &str,
    step_ms: i64,
    range_ms: i64,
    max_depth: usize,
) -> Result<Expr, QueryError> {
    if let Err(too_deep) = depth::check_depth(query, max_depth) {
        return Err(QueryError::Parse {
            query: query.to_string(),
            message: too_deep.message(),
            position: Some(line_col(query, too_deep.at)),
        });
    }
    let rewritten = rewrite::rewrite(query, step_ms, range_ms).map_err(|e| QueryError::Parse {
        query: query.to_string(),
        message: e.message(),
        position: None,
    })?;
    if rewritten != query {
        return parse_plain(&rewritten).map_err(|e| match e {
            QueryError::Parse { message, .. } => QueryError::Parse {
                query: query.to_string(),
                message,
                position: None,
            },
            other => other,
        });
    }
    parse_plain(query)
}

fn parse_plain(query: &str) -> Result<Expr, QueryError> {
    if let Some(at) = unrepresentable_number_duration(query) {
        return Err(QueryError::Parse {
            query: query.to_string(),
            message: "duration out of range".to_string(),
            position: Some(line_col(query, at)),
        });
    }
    parser::parse(query).map_err(|raw| {
        let e = crate::syntax::explain(query, &raw);
        QueryError::Parse {
            query: query.to_string(),
            message: e.message,
            position: Some(line_col(query, e.offset)),
        }
    })
}

/// The byte offset of a duration written as a plain number (`x[5e300]`, `x offset Inf`,
/// `x[1m:NaN]`) that no `Duration` can hold. promql-parser converts these with
/// `Duration::from_secs_f64`, which panics on them (found by fuzzing).
fn unrepresentable_number_duration(q: &str) -> Option<usize> {
    let b = q.as_bytes();
    let mut in_string: Option<u8> = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(quote) = in_string {
            if c == b'\\' && quote != b'`' {
                i += 1;
            } else if c == quote {
                in_string = None;
            }
            i += 1;
            continue;
        }
        let mut duration_at = None;
        match c {
            b'"' | b'\'' | b'`' => in_string = Some(c),
            b'[' => {
                depth += 1;
                duration_at = Some(i + 1);
            }
            b']' => depth = depth.saturating_sub(1),
            b':' if depth > 0 => duration_at = Some(i + 1),
            b'o' | b'O'
                if q.get(i..i + 6)
                    .is_some_and(|w| w.eq_ignore_ascii_case("offset"))
                    && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
                    && b.get(i + 6)
                        .is_none_or(|n| !(n.is_ascii_alphanumeric() || *n == b'_')) =>
            {
                let mut j = i + 6;
                while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                duration_at = Some(j);
            }
            _ => {}
        }
        if let Some(start) = duration_at {
            let rest = &q[start..];
            let tok = rest.trim_start();
            let at = start + (rest.len() - tok.len());
            let end = tok
                .find(|ch: char| ch.is_whitespace() || matches!(ch, ']' | ':' | ')' | ','))
                .unwrap_or(tok.len());
            let tok = &tok[..end];
            let value = if let Some(hex) = tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X"))
            {
                u64::from_str_radix(hex, 16).ok().map(|v| v as f64)
            } else {
                tok.parse::<f64>().ok()
            };
            if value.is_some_and(|v| !(0.0..=1e15).contains(&v)) {
                return Some(at);
            }
        }
        i += 1;
    }
    None
}

/// 1-based line and column of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

impl Engine {
    /// An engine with `opts`.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `t_ms` (milliseconds since the epoch).
    pub fn instant_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        t_ms: i64,
    ) -> Result<Value, QueryError> {
        self.instant_query_controlled(q, query, t_ms, &QueryControl::new())
    }

    /// [`instant_query`](Self::instant_query) that `control` can stop.
    pub fn instant_query_controlled(
        &self,
        q: &dyn Queryable,
        query: &str,
        t_ms: i64,
        control: &QueryControl,
    ) -> Result<Value, QueryError> {
        let expr = parse_with_depth(query, self.opts.max_depth)?;
        Ok(self
            .exec_instant_with(q, &expr, query, t_ms, control)?
            .value)
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` (inclusive).
    pub fn range_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Matrix, QueryError> {
        let control = QueryControl::new();
        self.range_query_controlled(q, query, (start_ms, end_ms, step_ms), &control)
    }

    /// [`range_query`](Self::range_query) over `(start, end, step)` that `control` can stop.
    pub fn range_query_controlled(
        &self,
        q: &dyn Queryable,
        query: &str,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
        control: &QueryControl,
    ) -> Result<Matrix, QueryError> {
        let expr = parse_limited(query, step_ms, end_ms - start_ms, self.opts.max_depth)?;
        let range = (start_ms, end_ms, step_ms);
        Ok(self.exec_range_with(q, &expr, query, range, control)?.value)
    }

    /// Evaluates a parsed expression at `t_ms`. `query_text` is the text the positions in
    /// annotations refer to (the expression's own text when it was parsed from one).
    pub fn exec_instant(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        query_text: &str,
        t_ms: i64,
    ) -> Result<QueryOutput<Value>, QueryError> {
        self.exec_instant_with(q, expr, query_text, t_ms, &QueryControl::new())
    }

    /// [`exec_instant`](Self::exec_instant) that `control` can stop.
    pub fn exec_instant_with(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        query_text: &str,
        t_ms: i64,
        control: &QueryControl,
    ) -> Result<QueryOutput<Value>, QueryError> {
        let span = (t_ms, t_ms, 0);
        let ev = Evaluator::new(q, &self.opts, query_text, expr, span, control)?;
        let value = ev.eval(expr, t_ms)?;
        let value = match value {
            Value::Vector(v) => {
                let mut memo = LabelMemo {
                    once: true,
                    ..LabelMemo::default()
                };
                let mut v = memo.finish_vector(v)?;
                for s in v.iter_mut() {
                    s.t = t_ms;
                }
                Value::Vector(v)
            }
            Value::Matrix(m) => Value::Matrix(finish_matrix(m)?),
            other => other,
        };
        Ok(QueryOutput {
            value,
            annotations: ev.take_annotations(),
        })
    }

    /// Evaluates a parsed expression as a range query; see [`Engine::exec_instant`].
    pub fn exec_range(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        query_text: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryOutput<Matrix>, QueryError> {
        let range = (start_ms, end_ms, step_ms);
        self.exec_range_with(q, expr, query_text, range, &QueryControl::new())
    }

    /// [`exec_range`](Self::exec_range) over `(start, end, step)` that `control` can stop.
    pub fn exec_range_with(
        &self,
        q: &dyn Queryable,
        expr: &Expr,
        query_text: &str,
        (start_ms, end_ms, step_ms): (i64, i64, i64),
        control: &QueryControl,
    ) -> Result<QueryOutput<Matrix>, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::eval(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::eval(
                "end timestamp must not be before start time",
            ));
        }
        match expr.value_type() {
            parser::value::ValueType::Scalar | parser::value::ValueType::Vector => {}
            other => {
                let name = match other {
                    parser::value::ValueType::Matrix => "range vector",
                    parser::value::ValueType::String => "string",
                    _ => "unknown",
                };
                return Err(QueryError::eval(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let span = (start_ms, end_ms, step_ms);
        let ev = Evaluator::new(q, &self.opts, query_text, expr, span, control)?;
        ev.warn_sort_in_range(expr);
        if let Some(result) = ev.selector_matrix(expr).or_else(|| ev.steps_matrix(expr)) {
            return Ok(QueryOutput {
                value: result?,
                annotations: ev.take_annotations(),
            });
        }
        let mut memo = LabelMemo::default();
        let mut out: Matrix = Vec::new();
        let mut t = start_ms;
        let mut total = 0usize;
        while t <= end_ms {
            ev.check_deadline()?;
            match ev.eval(expr, t)? {
                Value::Scalar { v, .. } => {
                    memo.push_point(&mut out, Labels::default(), t, v);
                    total += 1;
                }
                Value::Vector(vec) => {
                    let vec = memo.finish_vector(vec)?;
                    total += value::vector_weight(&vec);
                    for s in vec {
                        match s.h {
                            Some(h) => memo.push_histogram(&mut out, s.metric, HPoint { t, h }),
                            None => memo.push_point(&mut out, s.metric, t, s.f),
                        }
                    }
                }
                other => {
                    return Err(QueryError::eval(format!(
                        "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                        other.type_name()
                    )));
                }
            }
            if total > self.opts.max_samples {
                return Err(QueryError::TooManySamples("query execution".into()));
            }
            t += step_ms;
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(QueryOutput {
            value: out,
            annotations: ev.take_annotations(),
        })
    }
}

/// Per-query memo of label-set work that would otherwise repeat at every step of a range
/// query: the same series reach the end of every step with the same shared label sets.
/// Entries keep their source label set alive, so a pointer cannot be reused by another set.
#[derive(Default)]
struct LabelMemo {
    dropped: FastMap<usize, (Labels, Labels)>,
    hashes: FastMap<usize, (Labels, u64)>,
    series_by_ptr: FastMap<usize, (Labels, usize)>,
    series_by_labels: FastMap<Labels, usize>,
    /// Used once (an instant query's result): compute directly, remember nothing.
    once: bool,
}

impl LabelMemo {
    fn drop_name(&mut self, l: &Labels) -> Labels {
        if self.once {
            let mut d = l.clone();
            drop_metric_name(&mut d);
            return d;
        }
        let (_, dropped) = self.dropped.entry(l.ptr_id()).or_insert_with(|| {
            let mut d = l.clone();
            drop_metric_name(&mut d);
            (l.clone(), d)
        });
        dropped.clone()
    }

    fn hash(&mut self, l: &Labels) -> u64 {
        use std::hash::BuildHasher;
        if self.once {
            return FnvBuild.hash_one(l);
        }
        self.hashes
            .entry(l.ptr_id())
            .or_insert_with(|| (l.clone(), FnvBuild.hash_one(l)))
            .1
    }

    /// Applies delayed name removal to a final vector and rejects duplicate label sets.
    fn finish_vector(&mut self, mut v: Vector) -> Result<Vector, QueryError> {
        for s in v.iter_mut() {
            if s.drop_name {
                s.metric = self.drop_name(&s.metric);
                s.drop_name = false;
            }
        }
        if v.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity_and_hasher(v.len(), FnvBuild);
            let mut collision = false;
            for s in &v {
                if !seen.insert(self.hash(&s.metric)) {
                    collision = true;
                    break;
                }
            }
            if collision {
                let mut exact =
                    std::collections::HashSet::with_capacity_and_hasher(v.len(), FnvBuild);
                for s in &v {
                    if !exact.insert(&s.metric) {
                        return Err(QueryError::eval(
                            "vector cannot contain metrics with the same labelset",
                        ));
                    }
                }
            }
        }
        Ok(v)
    }

    /// Appends a histogram point to the range-query result series with labels `metric`.
    fn push_histogram(&mut self, out: &mut Matrix, metric: Labels, p: HPoint) {
        let i = match self.series_by_labels.get(&metric) {
            Some(&i) => i,
            None => {
                self.series_by_labels.insert(metric.clone(), out.len());
                out.push(Series {
                    metric: metric.clone(),
                    ..Series::default()
                });
                out.len() - 1
            }
        };
        out[i].histograms.push(p);
        self.series_by_ptr.insert(metric.ptr_id(), (metric, i));
    }

    /// Appends a point to the range-query result series with labels `metric`.
    fn push_point(&mut self, out: &mut Matrix, metric: Labels, t: i64, f: f64) {
        if let Some((_, i)) = self.series_by_ptr.get(&metric.ptr_id()) {
            out[*i].floats.push(FPoint { t, f });
            return;
        }
        let i = match self.series_by_labels.get(&metric) {
            Some(&i) => i,
            None => {
                self.series_by_labels.insert(metric.clone(), out.len());
                out.push(Series {
                    metric: metric.clone(),
                    floats: Vec::new(),
                    drop_name: false,
                    st: None,
                    hst: None,
                    histograms: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[i].floats.push(FPoint { t, f });
        self.series_by_ptr.insert(metric.ptr_id(), (metric, i));
    }
}

/// Removes the labels a name-dropping operation discards: `__name__` and the metadata
/// labels `__type__` and `__unit__`.
pub(crate) fn drop_metric_name(l: &mut Labels) {
    l.retain(|k, _| !dropped_with_name(k));
}

/// Whether label `name` goes when the metric name is dropped.
pub(crate) fn dropped_with_name(name: &str) -> bool {
    name == METRIC_NAME || name == "__type__" || name == "__unit__"
}

/// Applies delayed name removal to a final matrix, merging series that end up equal.
fn finish_matrix(m: Matrix) -> Result<Matrix, QueryError> {
    let mut out: Matrix = Vec::with_capacity(m.len());
    let mut index: FastMap<Labels, usize> = FastMap::default();
    for mut s in m {
        if s.drop_name {
            drop_metric_name(&mut s.metric);
            s.drop_name = false;
        }
        match index.get(&s.metric) {
            Some(&i) => {
                let base = &mut out[i];
                base.floats.extend(s.floats);
                base.floats.sort_by_key(|p| p.t);
                base.histograms.extend(s.histograms);
                base.histograms.sort_by_key(|p| p.t);
                let mut times: Vec<i64> = base.floats.iter().map(|p| p.t).collect();
                times.extend(base.histograms.iter().map(|p| p.t));
                times.sort_unstable();
                if times.windows(2).any(|w| w[0] == w[1]) {
                    return Err(QueryError::eval(
                        "vector cannot contain metrics with the same labelset",
                    ));
                }
            }
            None => {
                index.insert(s.metric.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// Milliseconds of a duration.
pub(crate) fn dur_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

/// Milliseconds since the epoch of a time that may lie before it.
pub(crate) fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The `anchored` / `smoothed` modifier of a selector (experimental in Prometheus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeMode {
    /// A plain selector.
    Plain,
    /// `anchored`: the window's value at its start is the last sample before it.
    Anchored,
    /// `smoothed`: values at the window edges (or at the evaluation time) are interpolated.
    Smoothed,
}

/// The modifier of a selector, carried by the marker matcher [`rewrite::MODIFIER_LABEL`].
pub(crate) fn range_mode(vs: &VectorSelector) -> RangeMode {
    match vs
        .matchers
        .matchers
        .iter()
        .find(|m| m.name == rewrite::MODIFIER_LABEL)
        .map(|m| m.value.as_str())
    {
        Some("anchored") => RangeMode::Anchored,
        Some("smoothed") => RangeMode::Smoothed,
        _ => RangeMode::Plain,
    }
}

/// Prometheus's `extendFloats`: the points of an anchored/smoothed window `(mint, maxt]`
/// with synthetic points at both edges.
pub(crate) fn extend_floats(
    floats: &[FPoint],
    mint: i64,
    maxt: i64,
    smoothed: bool,
) -> Vec<FPoint> {
    let Some((first, last)) = edge_indices(floats, mint, maxt, smoothed) else {
        return Vec::new();
    };
    let left = pick_left(floats, first, mint, smoothed, false);
    let right = pick_right(floats, last, maxt, smoothed, false);
    let lo = if floats[first].t <= mint {
        first + 1
    } else {
        first
    };
    let hi = if floats[last].t >= maxt {
        last
    } else {
        last + 1
    };
    let mut out = Vec::with_capacity(hi.saturating_sub(lo) + 2);
    out.push(FPoint { t: mint, f: left });
    if lo < hi {
        out.extend_from_slice(&floats[lo..hi]);
    }
    out.push(FPoint { t: maxt, f: right });
    out
}

/// First and last sample indices an anchored/smoothed window uses, or `None` when the
/// window holds nothing.
pub(crate) fn edge_indices(
    floats: &[FPoint],
    mint: i64,
    maxt: i64,
    smoothed: bool,
) -> Option<(usize, usize)> {
    if floats.is_empty() {
        return None;
    }
    let mut last = floats.len() - 1;
    let first = floats[..last]
        .partition_point(|p| p.t <= mint)
        .saturating_sub(1);
    if smoothed {
        last = floats[..last].partition_point(|p| p.t < maxt);
    }
    if floats[last].t <= mint || (smoothed && floats[first].t > maxt) {
        return None;
    }
    Some((first, last))
}

pub(crate) fn interpolate(p1: FPoint, p2: FPoint, t: i64, is_counter: bool) -> f64 {
    let y1 = if is_counter && p2.f < p1.f { 0.0 } else { p1.f };
    y1 + (p2.f - y1) * (t - p1.t) as f64 / (p2.t - p1.t) as f64
}

pub(crate) fn pick_left(
    floats: &[FPoint],
    first: usize,
    start: i64,
    smoothed: bool,
    counter: bool,
) -> f64 {
    if smoothed && floats[first].t < start && first + 1 < floats.len() {
        return interpolate(floats[first], floats[first + 1], start, counter);
    }
    floats[first].f
}

pub(crate) fn pick_right(
    floats: &[FPoint],
    last: usize,
    end: i64,
    smoothed: bool,
    counter: bool,
) -> f64 {
    if smoothed && last > 0 && floats[last].t > end {
        return interpolate(floats[last - 1], floats[last], end, counter);
    }
    floats[last].f
}

/// Per-query evaluation state.
pub(crate) struct Evaluator<'a> {
    q: &'a dyn Queryable,
    opts: &'a EngineOptions,
    query: &'a str,
    start: i64,
    end: i64,
    /// Query step in ms (0 for instant queries).
    step: i64,
    lookback: i64,
    annotations: RefCell<Vec<Annotation>>,
    /// Selector data by selector address, fetched once for the whole query.
    cache: RefCell<HashMap<usize, Rc<Vec<SeriesData>>>>,
    /// When the query must give up: its deadline and cancellation flag.
    stop: cancel::Stop,
    /// Grouping key and output labels per (aggregation node, input label set), kept with
    /// the input label set so its identity stays valid.
    pub(crate) group_memo: RefCell<GroupMemo>,
    /// See [`binary::BinaryMemo`].
    pub(crate) binary_memo: RefCell<binary::BinaryMemo>,
    /// Per selector and series, where the last window ended: steps mostly move forward, so
    /// the next window is found by a short forward scan instead of a binary search.
    cursors: RefCell<HashMap<usize, Vec<usize>>>,
    /// The time hull each selector needs over the whole query.
    hulls: HashMap<usize, (i64, i64)>,
    /// Calls evaluated for all steps of the query at once (see the `steps` module).
    step_calls: steps::CallSet,
    /// Their results, computed the first time one of their steps is needed.
    step_values: RefCell<FastMap<usize, Rc<steps::StepValues>>>,
    /// Selectors read with Prometheus's histogram-stats decoding (see `histogram_stats`).
    stats_selectors: std::collections::HashSet<usize>,
    /// Per matrix selector of an all-steps call: whether it reads native histograms.
    histogram_selectors: RefCell<FastMap<usize, bool>>,
    /// Per aggregation over an all-steps call, each input series' group key and labels.
    pub(crate) step_groups: RefCell<FastMap<usize, StepGroups>>,
    /// Whether every node is evaluated at one time only (an instant query without
    /// subqueries): per-query memos of label-set work would then never be read again.
    pub(crate) evaluates_once: bool,
}

/// A range-vector argument with the window it covers.
pub(crate) struct RangeArg {
    pub series: Matrix,
    /// Window start (exclusive) in ms.
    pub range_start: i64,
    /// Window end (inclusive) in ms.
    pub range_end: i64,
    /// The range in ms.
    pub range: i64,
    /// The selector's `anchored`/`smoothed` modifier.
    pub mode: RangeMode,
}

impl<'a> Evaluator<'a> {
    fn new(
        q: &'a dyn Queryable,
        opts: &'a EngineOptions,
        query: &'a str,
        expr: &Expr,
        (start, end, step): (i64, i64, i64),
        control: &QueryControl,
    ) -> Result<Evaluator<'a>, QueryError> {
        let mut ev = Evaluator {
            q,
            opts,
            query,
            start,
            end,
            step,
            lookback: dur_ms(&opts.lookback_delta),
            annotations: RefCell::new(Vec::new()),
            cache: RefCell::new(HashMap::new()),
            cursors: RefCell::new(HashMap::new()),
            stop: cancel::Stop::new(opts.timeout, control),
            group_memo: RefCell::new(FastMap::default()),
            binary_memo: RefCell::new(binary::BinaryMemo::default()),
            hulls: HashMap::new(),
            step_calls: steps::CallSet::default(),
            step_values: RefCell::new(FastMap::default()),
            histogram_selectors: RefCell::new(FastMap::default()),
            stats_selectors: std::collections::HashSet::new(),
            step_groups: RefCell::new(FastMap::default()),
            evaluates_once: false,
        };
        let mut has_subquery = false;
        visit(expr, &mut |e| {
            has_subquery |= matches!(e, Expr::Subquery(_))
        });
        ev.evaluates_once = start == end && !has_subquery;
        steps::collect_step_calls(expr, &mut ev.step_calls);
        histogram_stats::collect_stats_selectors(expr, false, &mut ev.stats_selectors);
        let mut hulls = HashMap::new();
        ev.collect_hulls(expr, start, end, &mut hulls)?;
        ev.hulls = hulls;
        Ok(ev)
    }

    /// The exclusive lower bound of the window of `range` ms ending at `t`, under the
    /// engine's [`WindowSemantics`].
    pub(crate) fn window_open(&self, t: i64, range: i64) -> i64 {
        self.opts.windows.open_start(t, range)
    }

    /// Fails once the query has run longer than its timeout or was cancelled (reads the
    /// clock: for loops with one iteration per step).
    fn check_deadline(&self) -> Result<(), QueryError> {
        self.stop.check_now()
    }

    /// Fails once the query was cancelled or is past its deadline; cheap enough for the
    /// per-series and per-sample loops.
    pub(crate) fn poll(&self) -> Result<(), QueryError> {
        self.stop.check()
    }

    /// The same check for helpers that do not hold the evaluator.
    pub(crate) fn stop(&self) -> &cancel::Stop {
        &self.stop
    }

    fn take_annotations(&self) -> Vec<Annotation> {
        std::mem::take(&mut *self.annotations.borrow_mut())
    }

    /// Records an annotation once. `anchor` is text of the expression the annotation is
    /// about; its first occurrence in the query gives the `(line:col)` suffix.
    pub(crate) fn annotate(&self, level: AnnotationLevel, text: String, anchor: &str) {
        let at = self.query.find(anchor).filter(|_| !anchor.is_empty());
        self.annotate_at(level, text, at);
    }

    /// As [`annotate`](Self::annotate), about the first argument of the first call that
    /// starts with `call` (such as `limit_ratio(`): the position is that argument's first
    /// character.
    pub(crate) fn annotate_first_arg(&self, level: AnnotationLevel, text: String, call: &str) {
        let at = self
            .query
            .find(call)
            .filter(|_| !call.is_empty())
            .map(|at| {
                let rest = &self.query[at + call.len()..];
                at + call.len() + (rest.len() - rest.trim_start().len())
            });
        self.annotate_at(level, text, at);
    }

    fn annotate_at(&self, level: AnnotationLevel, text: String, at: Option<usize>) {
        let pos = at.map(|at| line_col(self.query, at)).unwrap_or((1, 1));
        let prefix = match level {
            AnnotationLevel::Warning => "PromQL warning",
            AnnotationLevel::Info => "PromQL info",
        };
        let message = format!("{prefix}: {text} ({}:{})", pos.0, pos.1);
        let mut annos = self.annotations.borrow_mut();
        if !annos.iter().any(|a| a.message == message) {
            annos.push(Annotation { level, message });
        }
    }

    fn warn_sort_in_range(&self, expr: &Expr) {
        let mut found: Vec<&'static str> = Vec::new();
        visit(expr, &mut |e| {
            if let Expr::Call(c) = e
                && matches!(
                    c.func.name,
                    "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc"
                )
            {
                found.push(c.func.name);
            }
        });
        for name in found {
            self.annotate(
                AnnotationLevel::Warning,
                "sort is ineffective for range queries since results are always ordered by labels"
                    .into(),
                &format!("{name}("),
            );
        }
    }

    fn offset_ms(&self, o: &Option<Offset>) -> Result<i64, QueryError> {
        Ok(match o {
            None => 0,
            Some(Offset::Pos(d)) => dur_ms(d),
            Some(Offset::Neg(d)) => {
                if !self.opts.enable_negative_offset {
                    return Err(QueryError::eval(
                        "negative offsets are not enabled (use the negative offset option)",
                    ));
                }
                -dur_ms(d)
            }
        })
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Result<Option<i64>, QueryError> {
        let Some(at) = at else { return Ok(None) };
        if !self.opts.enable_at_modifier {
            return Err(QueryError::eval("@ modifier is disabled"));
        }
        Ok(Some(match at {
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
            AtModifier::At(t) => system_time_ms(t),
        }))
    }

    /// Walks the expression to find the time range each selector needs.
    fn collect_hulls(
        &self,
        e: &Expr,
        lo: i64,
        hi: i64,
        out: &mut HashMap<usize, (i64, i64)>,
    ) -> Result<(), QueryError> {
        let mut add = |key: usize, a: i64, b: i64| {
            let entry = out.entry(key).or_insert((a, b));
            entry.0 = entry.0.min(a);
            entry.1 = entry.1.max(b);
        };
        match e {
            Expr::Aggregate(a) => {
                self.collect_hulls(&a.expr, lo, hi, out)?;
                if let Some(p) = &a.param {
                    self.collect_hulls(p, lo, hi, out)?;
                }
            }
            Expr::Unary(u) => self.collect_hulls(&u.expr, lo, hi, out)?,
            Expr::Binary(b) => {
                self.collect_hulls(&b.lhs, lo, hi, out)?;
                self.collect_hulls(&b.rhs, lo, hi, out)?;
            }
            Expr::Paren(p) => self.collect_hulls(&p.expr, lo, hi, out)?,
            Expr::Subquery(s) => {
                let (a, b) = match self.at_ms(&s.at)? {
                    Some(t) => (t, t),
                    None => (lo, hi),
                };
                let off = self.offset_ms(&s.offset)?;
                let range = dur_ms(&s.range);
                self.collect_hulls(&s.expr, a - off - range, b - off, out)?;
            }
            Expr::VectorSelector(vs) => {
                let (a, b) = match self.at_ms(&vs.at)? {
                    Some(t) => (t, t),
                    None => (lo, hi),
                };
                let off = self.offset_ms(&vs.offset)?;
                let ahead = if range_mode(vs) == RangeMode::Smoothed {
                    self.lookback
                } else {
                    0
                };
                add(
                    vs as *const VectorSelector as usize,
                    a - off - self.lookback,
                    b - off + ahead,
                );
            }
            Expr::MatrixSelector(ms) => {
                let vs = &ms.vs;
                let (a, b) = match self.at_ms(&vs.at)? {
                    Some(t) => (t, t),
                    None => (lo, hi),
                };
                let off = self.offset_ms(&vs.offset)?;
                let (behind, ahead) = match range_mode(vs) {
                    RangeMode::Plain => (0, 0),
                    RangeMode::Anchored => (self.lookback, 0),
                    RangeMode::Smoothed => (self.lookback, self.lookback),
                };
                add(
                    vs as *const VectorSelector as usize,
                    a - off - dur_ms(&ms.range) - behind,
                    b - off + ahead,
                );
            }
            Expr::Call(c) => {
                for arg in &c.args.args {
                    self.collect_hulls(arg, lo, hi, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }

    /// The matchers of a selector, one list per `or` alternative, with the metric name
    /// added as a matcher.
    fn matcher_sets(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
        let name = vs
            .name
            .as_ref()
            .map(|n| Matcher::new(MatchOp::Equal, METRIC_NAME, n));
        let mut sets: Vec<Vec<Matcher>> = if vs.matchers.or_matchers.is_empty() {
            vec![vs.matchers.matchers.clone()]
        } else {
            vs.matchers.or_matchers.clone()
        };
        for s in sets.iter_mut() {
            s.retain(|m| m.name != rewrite::MODIFIER_LABEL && m.name != rewrite::TRIM_LABEL);
        }
        if let Some(n) = name {
            for s in sets.iter_mut() {
                s.push(n.clone());
            }
        }
        sets
    }

    /// All data of a selector over the query's hull.
    fn fetch(&self, vs: &VectorSelector) -> Result<Rc<Vec<SeriesData>>, QueryError> {
        let key = vs as *const VectorSelector as usize;
        if let Some(d) = self.cache.borrow().get(&key) {
            return Ok(d.clone());
        }
        let (mint, maxt) = self
            .hulls
            .get(&key)
            .copied()
            .unwrap_or((i64::MIN, i64::MAX));
        let sets = Self::matcher_sets(vs);
        let mut data = if sets.len() == 1 {
            self.q.select(&sets[0], mint, maxt)
        } else {
            let mut all: Vec<SeriesData> = Vec::new();
            let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
            for s in &sets {
                for sd in self.q.select(s, mint, maxt) {
                    self.poll()?;
                    if seen.insert(sd.labels.clone()) {
                        all.push(sd);
                    }
                }
            }
            all
        };
        self.check_deadline()?;
        // One selection comes sorted by labels (`Queryable::select`'s contract): sorting
        // it again would compare every neighbouring pair of label sets once more.
        if sets.len() > 1 {
            data.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        debug_assert!(data.is_sorted_by(|a, b| a.labels <= b.labels));
        if self.stats_selectors.contains(&key) {
            histogram_stats::set_stats_hints(&mut data);
        }
        let data = Rc::new(data);
        self.cache.borrow_mut().insert(key, data.clone());
        Ok(data)
    }

    /// For each series of selector `vs` (data `data`), the index of its first sample after
    /// `t`, found from the previous position when time moved forward.
    fn upper_bounds(&self, vs: &VectorSelector, data: &[SeriesData], t: i64) -> Vec<usize> {
        let key = vs as *const VectorSelector as usize;
        let mut cursors = self.cursors.borrow_mut();
        let cur = cursors.entry(key).or_insert_with(|| vec![0; data.len()]);
        if cur.len() != data.len() {
            *cur = vec![0; data.len()];
        }
        for (c, sd) in cur.iter_mut().zip(data) {
            let samples = &sd.samples;
            let mut i = *c;
            if i > samples.len() || (i > 0 && samples[i - 1].t > t) {
                i = samples.partition_point(|s| s.t <= t);
            } else {
                let mut steps = 0;
                while i < samples.len() && samples[i].t <= t {
                    i += 1;
                    steps += 1;
                    if steps == 64 {
                        // A long jump: finish with a binary search.
                        i += samples[i..].partition_point(|s| s.t <= t);
                        break;
                    }
                }
            }
            *c = i;
        }
        cur.clone()
    }

    /// The reference time of a selector evaluated at `ts`.
    fn ref_time(&self, vs: &VectorSelector, ts: i64) -> Result<i64, QueryError> {
        let base = self.at_ms(&vs.at)?.unwrap_or(ts);
        Ok(base - self.offset_ms(&vs.offset)?)
    }

    /// Evaluates an instant vector selector; samples carry the evaluation time unless
    /// `keep_sample_time` (for `timestamp()`).
    fn eval_vector_selector(
        &self,
        vs: &VectorSelector,
        ts: i64,
        keep_sample_time: bool,
    ) -> Result<Vector, QueryError> {
        let t = self.ref_time(vs, ts)?;
        let data = self.fetch(vs)?;
        let mut out = Vec::new();
        let smoothed = range_mode(vs) == RangeMode::Smoothed;
        let bounds = self.upper_bounds(vs, &data, t);
        for (sd, &idx) in data.iter().zip(&bounds) {
            self.poll()?;
            if smoothed && !sd.histograms.is_empty() {
                let anchor = vs.name.as_deref().unwrap_or("");
                if let Some(s) = self.smoothed_histogram(sd, t, ts, anchor) {
                    out.push(s);
                }
                continue;
            }
            if smoothed {
                if let Some(f) = self.smoothed_value(&sd.samples, idx, t) {
                    out.push(Sample {
                        metric: sd.labels.clone(),
                        t: ts,
                        f,
                        drop_name: false,
                        h: None,
                    });
                }
                continue;
            }
            if !sd.histograms.is_empty() {
                if let Some(mut s) = self.latest_sample(sd, idx, t) {
                    if !keep_sample_time {
                        s.t = ts;
                    }
                    out.push(s);
                }
                continue;
            }
            if idx == 0 {
                continue;
            }
            let s = sd.samples[idx - 1];
            if s.t <= self.window_open(t, self.lookback) || is_stale(s.v) {
                continue;
            }
            out.push(Sample {
                metric: sd.labels.clone(),
                t: if keep_sample_time { s.t } else { ts },
                f: s.v,
                drop_name: false,
                h: None,
            });
        }
        if value::vector_weight(&out) > self.opts.max_samples {
            return Err(QueryError::TooManySamples(format!("selector {vs}")));
        }
        Ok(out)
    }

    /// The newest sample of a series with histograms at or before `t` within the lookback
    /// delta, float or histogram, timed at the sample's time; `idx` is the index of its
    /// first float after `t`. A newer stale marker ends the series.
    fn latest_sample(&self, sd: &SeriesData, idx: usize, t: i64) -> Option<Sample> {
        let float = idx.checked_sub(1).map(|i| sd.samples[i]);
        let hi = sd.histograms.partition_point(|p| p.t <= t);
        let hist = hi.checked_sub(1).map(|i| &sd.histograms[i]);
        let open = self.window_open(t, self.lookback);
        let (st, f, h) = match (float, hist) {
            (Some(f), Some(h)) if h.t > f.t => (h.t, 0.0, Some(h.h.clone())),
            (Some(f), _) => (f.t, f.v, None),
            (None, Some(h)) => (h.t, 0.0, Some(h.h.clone())),
            (None, None) => return None,
        };
        if st <= open || (h.is_none() && is_stale(f)) {
            return None;
        }
        Some(Sample {
            metric: sd.labels.clone(),
            t: st,
            f,
            drop_name: false,
            h,
        })
    }

    /// `x smoothed` at `t`: interpolated between the samples around `t` within the lookback
    /// delta on either side; `idx` is the index of the first sample after `t`.
    fn smoothed_value(
        &self,
        samples: &[crate::storage::Sample],
        idx: usize,
        t: i64,
    ) -> Option<f64> {
        let before = idx
            .checked_sub(1)
            .map(|i| samples[i])
            .filter(|s| s.t > self.window_open(t, self.lookback) && !is_stale(s.v));
        let after = samples
            .get(idx)
            .copied()
            .filter(|s| s.t < t + self.lookback && !is_stale(s.v));
        match (before, after) {
            (Some(b), _) if b.t == t => Some(b.v),
            (Some(b), Some(a)) => Some(interpolate(
                FPoint { t: b.t, f: b.v },
                FPoint { t: a.t, f: a.v },
                t,
                false,
            )),
            (Some(b), None) => Some(b.v),
            (None, Some(a)) => Some(a.v),
            (None, None) => None,
        }
    }

    /// The points of a selector in `(t - range, t]` (`[t - range, t]` with Prometheus 2
    /// windows), stale markers left out.
    fn matrix_points(&self, vs: &VectorSelector, t: i64, range: i64) -> Result<Matrix, QueryError> {
        let data = self.fetch(vs)?;
        let mut out = Vec::new();
        let mut total = 0usize;
        let (from, to) = match range_mode(vs) {
            RangeMode::Plain => (self.window_open(t, range), t),
            RangeMode::Anchored => (self.window_open(t - range, self.lookback), t),
            RangeMode::Smoothed => (
                self.window_open(t - range, self.lookback),
                t + self.lookback,
            ),
        };
        let bounds = self.upper_bounds(vs, &data, to);
        for (sd, &hi) in data.iter().zip(&bounds) {
            self.poll()?;
            let mut lo = hi;
            while lo > 0 && sd.samples[lo - 1].t > from {
                lo -= 1;
            }
            let floats: Vec<FPoint> = sd.samples[lo..hi]
                .iter()
                .filter(|s| !is_stale(s.v))
                .map(|s| FPoint { t: s.t, f: s.v })
                .collect();
            let (histograms, hst) = if sd.histograms.is_empty() {
                (Vec::new(), None)
            } else {
                let a = sd.histograms.partition_point(|p| p.t <= from);
                let b = sd.histograms.partition_point(|p| p.t <= to).max(a);
                let hst = sd
                    .hst
                    .as_ref()
                    .and_then(|st| st.get(a..b))
                    .map(<[i64]>::to_vec);
                (sd.histograms[a..b].to_vec(), hst)
            };
            if floats.is_empty() && histograms.is_empty() {
                continue;
            }
            // Start timestamps of the same points (stale markers left out alike).
            let st = sd.st.as_ref().map(|st| {
                sd.samples[lo..hi]
                    .iter()
                    .zip(&st[lo..hi])
                    .filter(|(s, _)| !is_stale(s.v))
                    .map(|(_, &st)| st)
                    .collect()
            });
            total += floats.len()
                + histograms
                    .iter()
                    .map(|p| value::histogram_samples(&p.h))
                    .sum::<usize>();
            out.push(Series {
                metric: sd.labels.clone(),
                floats,
                drop_name: false,
                st,
                histograms,
                hst,
            });
        }
        if total > self.opts.max_samples {
            return Err(QueryError::TooManySamples(format!("selector {vs}")));
        }
        Ok(out)
    }

    /// Evaluates a range-vector argument (matrix selector or subquery) at `ts`.
    pub(crate) fn eval_range_arg(&self, e: &Expr, ts: i64) -> Result<RangeArg, QueryError> {
        match e {
            Expr::Paren(p) => self.eval_range_arg(&p.expr, ts),
            Expr::MatrixSelector(ms) => {
                let t = self.ref_time(&ms.vs, ts)?;
                let range = dur_ms(&ms.range);
                Ok(RangeArg {
                    series: self.matrix_points(&ms.vs, t, range)?,
                    range_start: t - range,
                    range_end: t,
                    range,
                    mode: range_mode(&ms.vs),
                })
            }
            Expr::Subquery(sq) => {
                let (series, t, range) = self.eval_subquery(sq, ts)?;
                Ok(RangeArg {
                    series,
                    range_start: t - range,
                    range_end: t,
                    range,
                    mode: RangeMode::Plain,
                })
            }
            other => Err(QueryError::eval(format!(
                "expected type range vector, got {}",
                type_word(other)
            ))),
        }
    }

    /// Evaluates a subquery at `ts`: the inner expression at every step in the window.
    /// Returns the series, the window end and the range.
    fn eval_subquery(&self, sq: &SubqueryExpr, ts: i64) -> Result<(Matrix, i64, i64), QueryError> {
        let base = self.at_ms(&sq.at)?.unwrap_or(ts);
        let t = base - self.offset_ms(&sq.offset)?;
        let range = dur_ms(&sq.range);
        let step = match &sq.step {
            Some(s) if dur_ms(s) > 0 => dur_ms(s),
            _ => dur_ms(&self.opts.default_subquery_step).max(1),
        };
        // The first step is the first multiple of `step` after the window's open edge.
        let mint = self.window_open(t, range);
        // Go's integer division truncates toward zero.
        let mut start = step * (mint / step);
        if start <= mint {
            start += step;
        }
        let mut index: FastMap<Labels, usize> = FastMap::default();
        let mut out: Matrix = Vec::new();
        let mut total = 0usize;
        let mut st = start;
        while st <= t {
            self.check_deadline()?;
            match self.eval(&sq.expr, st)? {
                Value::Scalar { v, .. } => {
                    let p = (st, v, None);
                    add_sub_point(&mut index, &mut out, Labels::default(), false, p);
                    total += 1;
                }
                Value::Vector(vec) => {
                    total += value::vector_weight(&vec);
                    for s in vec {
                        self.poll()?;
                        let p = (st, s.f, s.h);
                        add_sub_point(&mut index, &mut out, s.metric, s.drop_name, p);
                    }
                }
                other => {
                    return Err(QueryError::eval(format!(
                        "subquery is only allowed on instant vector, got {} instead",
                        other.type_name()
                    )));
                }
            }
            if total > self.opts.max_samples {
                return Err(QueryError::TooManySamples(format!("subquery {sq}")));
            }
            st += step;
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok((out, t, range))
    }

    /// Evaluates `e` at time `ts`.
    pub(crate) fn eval(&self, e: &Expr, ts: i64) -> Result<Value, QueryError> {
        match e {
            Expr::NumberLiteral(n) => Ok(Value::Scalar { t: ts, v: n.val }),
            Expr::StringLiteral(s) => Ok(Value::String {
                t: ts,
                s: s.val.clone(),
            }),
            Expr::Paren(p) => self.eval(&p.expr, ts),
            Expr::VectorSelector(vs) => {
                Ok(Value::Vector(self.eval_vector_selector(vs, ts, false)?))
            }
            Expr::MatrixSelector(ms) => {
                let t = self.ref_time(&ms.vs, ts)?;
                let range = dur_ms(&ms.range);
                let mut m = self.matrix_points(&ms.vs, t, range)?;
                let mode = range_mode(&ms.vs);
                if mode != RangeMode::Plain {
                    for s in m.iter_mut() {
                        s.floats =
                            extend_floats(&s.floats, t - range, t, mode == RangeMode::Smoothed);
                    }
                    m.retain(|s| !s.floats.is_empty());
                }
                Ok(Value::Matrix(m))
            }
            Expr::Subquery(sq) => Ok(Value::Matrix(self.eval_subquery(sq, ts)?.0)),
            Expr::Unary(u) => match self.eval(&u.expr, ts)? {
                Value::Scalar { t, v } => Ok(Value::Scalar { t, v: -v }),
                Value::Vector(mut vec) => {
                    for s in vec.iter_mut() {
                        s.f = -s.f;
                        s.drop_name = true;
                        if let Some(h) = &mut s.h {
                            Arc::make_mut(h).mul(-1.0);
                        }
                    }
                    Ok(Value::Vector(vec))
                }
                other => Err(QueryError::eval(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::Binary(b) => self
                .eval_binary(b, ts)
                .map_err(|err| err.with_expr(|| e.to_string())),
            Expr::Aggregate(a) => self
                .eval_aggregate(a, ts)
                .map_err(|err| err.with_expr(|| e.to_string())),
            Expr::Call(c) => self
                .eval_call_at_step(c, ts)
                .map_err(|err| err.with_expr(|| e.to_string())),
            Expr::Extension(_) => Err(QueryError::eval("extension expressions are not supported")),
        }
    }

    /// Evaluates `e` and requires an instant vector.
    pub(crate) fn eval_vector(&self, e: &Expr, ts: i64) -> Result<Vector, QueryError> {
        match self.eval(e, ts)? {
            Value::Vector(v) => Ok(v),
            other => Err(QueryError::eval(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// [`Evaluator::eval_vector`] without its histogram samples: what a function that
    /// takes floats only (`sort`, `clamp`, `round`, the math and date functions) keeps.
    pub(crate) fn eval_float_vector(&self, e: &Expr, ts: i64) -> Result<Vector, QueryError> {
        let mut v = self.eval_vector(e, ts)?;
        v.retain(|s| s.h.is_none());
        Ok(v)
    }

    /// Evaluates `e` and requires a scalar.
    pub(crate) fn eval_scalar(&self, e: &Expr, ts: i64) -> Result<f64, QueryError> {
        match self.eval(e, ts)? {
            Value::Scalar { v, .. } => Ok(v),
            other => Err(QueryError::eval(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    /// Evaluates `e` and requires a string.
    pub(crate) fn eval_string(&self, e: &Expr, ts: i64) -> Result<String, QueryError> {
        match self.eval(e, ts)? {
            Value::String { s, .. } => Ok(s),
            other => Err(QueryError::eval(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }
}

fn add_sub_point(
    index: &mut FastMap<Labels, usize>,
    out: &mut Matrix,
    metric: Labels,
    drop_name: bool,
    (t, f, h): (i64, f64, Option<Arc<crate::histogram::FloatHistogram>>),
) {
    let i = match index.get(&metric) {
        Some(&i) => {
            out[i].drop_name |= drop_name;
            i
        }
        None => {
            index.insert(metric.clone(), out.len());
            out.push(Series {
                metric,
                drop_name,
                ..Series::default()
            });
            out.len() - 1
        }
    };
    match h {
        Some(mut h) => {
            // Reset hints describe consecutive samples, which a subquery's points may not
            // be: as in Prometheus, they become unknown (resets are detected again).
            use crate::histogram::CounterResetHint as Hint;
            if matches!(h.counter_reset_hint, Hint::Reset | Hint::NotReset) {
                Arc::make_mut(&mut h).counter_reset_hint = Hint::Unknown;
            }
            out[i].histograms.push(HPoint { t, h })
        }
        None => out[i].floats.push(FPoint { t, f }),
    }
}

/// Prometheus's word for the type of an expression.
pub(crate) fn type_word(e: &Expr) -> &'static str {
    match e.value_type() {
        parser::value::ValueType::Scalar => "scalar",
        parser::value::ValueType::String => "string",
        parser::value::ValueType::Vector => "instant vector",
        parser::value::ValueType::Matrix => "range vector",
    }
}

/// Calls `f` on every node of `e`, parents first.
pub fn visit<'e>(e: &'e Expr, f: &mut dyn FnMut(&'e Expr)) {
    f(e);
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                visit(p, f);
            }
            visit(&a.expr, f);
        }
        Expr::Unary(u) => visit(&u.expr, f),
        Expr::Binary(b) => {
            visit(&b.lhs, f);
            visit(&b.rhs, f);
        }
        Expr::Paren(p) => visit(&p.expr, f),
        Expr::Subquery(s) => visit(&s.expr, f),
        Expr::Call(c) => {
            for a in &c.args.args {
                visit(a, f);
            }
        }
        Expr::MatrixSelector(_)
        | Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// FNV-1a: a fast, deterministic hash for label sets (query-local maps need no DoS
/// resistance).
#[derive(Clone, Copy, Default)]
pub(crate) struct FnvBuild;

impl std::hash::BuildHasher for FnvBuild {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

/// See [`FnvBuild`].
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// Integers (pointer identities, hashes, lengths) in one multiply-and-fold instead of
    /// eight byte rounds; the fold brings the well-mixed high bits down to the low bits the
    /// table indexes with (pointers differ little in their low bits).
    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with [`FnvBuild`].
pub(crate) type FastMap<K, V> = HashMap<K, V, FnvBuild>;

/// Group key and output labels of each input series of an aggregation.
pub(crate) type StepGroups = Rc<aggregations::StepGroups>;

/// See `Evaluator::group_memo`.
pub(crate) type GroupMemo = FastMap<(usize, usize), (Labels, u64, Labels)>;

/// Hash of the labels of `l` for which `include(name)` holds: Prometheus groups and
/// matches series by such hashes too.
pub(crate) fn label_hash(l: &Labels, include: impl Fn(&str) -> bool) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = FnvBuild.build_hasher();
    for (k, v) in l.iter().filter(|(k, _)| include(k)) {
        h.write(k.as_bytes());
        h.write(&[0xff]);
        h.write(v.as_bytes());
        h.write(&[0xfe]);
    }
    h.finish()
}

/// Kahan–Neumaier summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_sum_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `math.Max`: NaN wins, +0 beats -0.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a > 0.0 || b.is_infinite() && b > 0.0 {
        return f64::INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b { a } else { b }
}

/// Go's `math.Min`: NaN wins, -0 beats +0.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a < 0.0 || b.is_infinite() && b < 0.0 {
        return f64::NEG_INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b { a } else { b }
}

#[cfg(test)]
mod tests;
