//! Range functions evaluated for every step of a query at once.
//!
//! A range query evaluates its expression step by step. For a range function over a plain
//! matrix selector (`rate(x[5m])`, `max_over_time(x[1h])`, …) that would mean, at every
//! step, finding each series' window again, copying its points out and allocating a result
//! sample per series. Instead, the first time such a call is evaluated at a step of the
//! query, it is computed for all steps in one pass: each series' points are copied once
//! and its window slides forward with two moving indexes, the way Prometheus evaluates a
//! matrix-selector function for one series across all steps. Later steps are served from
//! the stored values.
//!
//! Results are exactly those of the step-by-step evaluation: the same per-window kernel
//! ([`super::functions::range_kernel`]) computes each value; annotations are replayed at
//! the step where the step-by-step evaluation would first raise them, and an error (too
//! many samples in a window, timeout) is returned at the step where it would occur.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::rc::Rc;

use promql_parser::parser::{Call, Expr, MatrixSelector, VectorSelector};

use super::functions::{
    counter_info, counter_rate, is_counter_reset, range_kernel, st_overlap, st_overlap_warning,
};
use super::{
    AnnotationLevel, Evaluator, FPoint, FnvBuild, Matrix, QueryError, RangeArg, RangeMode, Sample,
    Series, SeriesData, Value, Vector, drop_metric_name, dropped_with_name, dur_ms, range_mode,
};
use crate::labels::Labels;
use crate::storage::is_stale;

/// Range functions with one argument whose value depends on the window's points only.
pub(super) const STEP_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "resets",
    "changes",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "first_over_time",
    "present_over_time",
    "mad_over_time",
    "ts_of_first_over_time",
    "ts_of_last_over_time",
    "ts_of_min_over_time",
    "ts_of_max_over_time",
];

/// Whether all of `labels` have the same values (or absence) for the labels dropped with
/// the metric name.
fn agree_on_name_labels(labels: &[Labels]) -> bool {
    fn name_labels(l: &Labels) -> [Option<(&str, &str)>; 3] {
        let mut dropped = l.iter().filter(|(k, _)| dropped_with_name(k));
        [dropped.next(), dropped.next(), dropped.next()]
    }
    match labels.split_first() {
        None => true,
        Some((first, rest)) => {
            let want = name_labels(first);
            rest.iter().all(|l| name_labels(l) == want)
        }
    }
}

/// Addresses of [`Call`] nodes.
pub(crate) type CallSet = HashSet<usize, FnvBuild>;

/// A range function's results at every step of the query.
pub(crate) struct StepValues {
    /// Labels of the selector's series.
    pub(crate) labels: Vec<Labels>,
    /// Whether results drop the metric name when the query finishes.
    pub(crate) drop_name: bool,
    /// First step's time and the step (0 for an instant query), to find a value's step.
    start: i64,
    step: i64,
    /// Whether the values are kept per series (`series`) rather than per step (`rows`):
    /// for the call that is a range query's whole expression, whose result is one series
    /// per input series, taking these vectors over. Other calls are read step by step (by
    /// an aggregation or an operator), and so are one-step queries.
    by_series: bool,
    /// With `by_series`: per series, its values in step order, each at its step's time.
    series: Vec<Vec<FPoint>>,
    /// Per step, how many series have a value there.
    per_step: Vec<usize>,
    /// Per step, the series (index into `labels`) with a value, in series order; built
    /// from `series` if a step is ever read when the values are kept by series.
    rows: OnceCell<Vec<Vec<(u32, f64)>>>,
    /// Per step, the info annotations the step-by-step evaluation raises there first.
    annotations: Vec<Vec<String>>,
    /// Per step, the warnings raised there first (start times overlapping samples).
    warnings: Vec<Vec<String>>,
    /// Text of the selector, where the annotations point.
    anchor: String,
    /// An error raised at a step; that step and later ones fail with it.
    error: Option<(usize, QueryError)>,
}

impl StepValues {
    /// The index of the step at time `t`.
    fn step_of(&self, t: i64) -> usize {
        step_index_of(t, self.start, self.step)
    }

    /// The series with a value at step `k` and their values, in series order.
    pub(crate) fn row(&self, k: usize) -> &[(u32, f64)] {
        let rows = self.rows.get_or_init(|| {
            let mut rows: Vec<Vec<(u32, f64)>> = self
                .per_step
                .iter()
                .map(|&n| Vec::with_capacity(n))
                .collect();
            for (i, values) in self.series.iter().enumerate() {
                for p in values {
                    rows[self.step_of(p.t)].push((i as u32, p.f));
                }
            }
            rows
        });
        rows.get(k).map_or(&[], Vec::as_slice)
    }

    /// Each series' values in step order, taken out.
    fn into_series(self) -> Vec<Vec<FPoint>> {
        if self.by_series {
            self.series
        } else {
            self.series_cloned()
        }
    }

    /// Each series' values in step order, copied.
    fn series_cloned(&self) -> Vec<Vec<FPoint>> {
        if self.by_series {
            return self.series.clone();
        }
        let mut series: Vec<Vec<FPoint>> = vec![Vec::new(); self.labels.len()];
        for k in 0..self.per_step.len() {
            let t = self.start + k as i64 * self.step;
            for &(i, f) in self.row(k) {
                series[i as usize].push(FPoint { t, f });
            }
        }
        series
    }

    /// Keeps only the values of the steps before `done` (the step of an error).
    fn truncate_steps(&mut self, done: usize) {
        self.per_step.truncate(done);
        if let Some(rows) = self.rows.get_mut() {
            rows.truncate(done);
        }
        let (start, step) = (self.start, self.step);
        for values in &mut self.series {
            values.retain(|p| step_index_of(p.t, start, step) < done);
        }
    }
}

/// The index of the step at time `t` among steps `step` apart from `start` (0 for an
/// instant query, whose `step` is 0).
fn step_index_of(t: i64, start: i64, step: i64) -> usize {
    if step == 0 {
        0
    } else {
        ((t - start) / step) as usize
    }
}

/// The matrix selector of a call that can be evaluated for all steps at once.
fn step_call_arg(c: &Call) -> Option<&MatrixSelector> {
    if c.args.args.len() != 1 || !STEP_FUNCTIONS.contains(&c.func.name) {
        return None;
    }
    let mut arg: &Expr = &c.args.args[0];
    while let Expr::Paren(p) = arg {
        arg = &p.expr;
    }
    match arg {
        Expr::MatrixSelector(ms) if range_mode(&ms.vs) == RangeMode::Plain => Some(ms),
        _ => None,
    }
}

/// Collects the calls of `e` that are evaluated at the query's own steps (not inside a
/// subquery, whose steps differ) and can be evaluated for all of them at once.
pub(crate) fn collect_step_calls(e: &Expr, out: &mut CallSet) {
    match e {
        Expr::Subquery(_) => {}
        Expr::Call(c) => {
            if step_call_arg(c).is_some() {
                out.insert(c as *const Call as usize);
            }
            for a in &c.args.args {
                collect_step_calls(a, out);
            }
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                collect_step_calls(p, out);
            }
            collect_step_calls(&a.expr, out);
        }
        Expr::Unary(u) => collect_step_calls(&u.expr, out),
        Expr::Binary(b) => {
            collect_step_calls(&b.lhs, out);
            collect_step_calls(&b.rhs, out);
        }
        Expr::Paren(p) => collect_step_calls(&p.expr, out),
        Expr::MatrixSelector(_)
        | Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

impl Evaluator<'_> {
    /// The index of `ts` among the query's steps, if it is one.
    fn step_index(&self, ts: i64) -> Option<usize> {
        if ts < self.start || ts > self.end {
            return None;
        }
        if self.step == 0 {
            return (ts == self.start).then_some(0);
        }
        let d = ts - self.start;
        (d % self.step == 0).then_some((d / self.step) as usize)
    }

    /// When `e` is an all-steps call and `ts` one of the query's steps: its results and
    /// the step's index, after raising the step's annotations or error as evaluating `e`
    /// at `ts` would.
    pub(crate) fn step_row(
        &self,
        e: &Expr,
        ts: i64,
    ) -> Result<Option<(Rc<StepValues>, usize)>, QueryError> {
        let mut inner = e;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let Expr::Call(c) = inner else {
            return Ok(None);
        };
        self.step_row_of_call(c, ts)
            .map_err(|err| err.with_expr(|| inner.to_string()))
    }

    /// [`Evaluator::step_row`] for a call node (errors are wrapped by the caller).
    fn step_row_of_call(
        &self,
        c: &Call,
        ts: i64,
    ) -> Result<Option<(Rc<StepValues>, usize)>, QueryError> {
        if !self.step_calls.contains(&(c as *const Call as usize)) {
            return Ok(None);
        }
        let (Some(k), Some(ms)) = (self.step_index(ts), step_call_arg(c)) else {
            return Ok(None);
        };
        if self.selects_histograms(ms)? {
            return Ok(None);
        }
        let sv = self.step_values_of(c, ms, false)?;
        if let Some((at, err)) = &sv.error
            && k >= *at
        {
            return Err(err.clone());
        }
        for message in &sv.annotations[k] {
            self.annotate(AnnotationLevel::Info, message.clone(), &sv.anchor);
        }
        for message in &sv.warnings[k] {
            self.annotate(AnnotationLevel::Warning, message.clone(), &sv.anchor);
        }
        Ok(Some((sv, k)))
    }

    /// Whether the selector reads native histograms: such calls are evaluated step by
    /// step (the all-steps kernels handle floats only). Once the all-steps values exist,
    /// the selector had none.
    fn selects_histograms(&self, ms: &MatrixSelector) -> Result<bool, QueryError> {
        let key = ms as *const MatrixSelector as usize;
        if let Some(&known) = self.histogram_selectors.borrow().get(&key) {
            return Ok(known);
        }
        let has = self
            .fetch(&ms.vs)?
            .iter()
            .any(|sd| !sd.histograms.is_empty());
        self.histogram_selectors.borrow_mut().insert(key, has);
        Ok(has)
    }

    /// Evaluates a call at `ts`, from its all-steps evaluation when it has one.
    pub(crate) fn eval_call_at_step(&self, c: &Call, ts: i64) -> Result<Value, QueryError> {
        let Some((sv, k)) = self.step_row_of_call(c, ts)? else {
            return self.eval_call(c, ts);
        };
        let row = sv.row(k);
        let mut out: Vector = Vec::with_capacity(row.len());
        for &(i, f) in row {
            out.push(Sample {
                metric: sv.labels[i as usize].clone(),
                t: ts,
                f,
                drop_name: sv.drop_name,
                h: None,
            });
        }
        Ok(Value::Vector(out))
    }

    /// The all-steps results of call `c` over `ms`, computed on first use, kept by series
    /// (see [`StepValues::by_series`]) if `by_series` and the query has several steps.
    fn step_values_of(
        &self,
        c: &Call,
        ms: &MatrixSelector,
        by_series: bool,
    ) -> Result<Rc<StepValues>, QueryError> {
        let key = c as *const Call as usize;
        let cached = self.step_values.borrow().get(&key).cloned();
        Ok(match cached {
            Some(sv) => sv,
            None => {
                let sv = Rc::new(self.compute_steps(c.func.name, ms, by_series)?);
                self.step_values.borrow_mut().insert(key, sv.clone());
                sv
            }
        })
    }

    /// The result of a range query whose whole expression is an all-steps call, built
    /// directly as one series per input series instead of step by step. `None` when the
    /// expression is not such a call, or when dropping metric names makes two series
    /// equal (the step-by-step evaluation then reports or merges them).
    pub(crate) fn steps_matrix(&self, e: &Expr) -> Option<Result<Matrix, QueryError>> {
        let mut inner = e;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let Expr::Call(c) = inner else { return None };
        if !self.step_calls.contains(&(c as *const Call as usize)) {
            return None;
        }
        let ms = step_call_arg(c)?;
        match self.selects_histograms(ms) {
            Ok(false) => {}
            Ok(true) => return None,
            Err(e) => return Some(Err(e)),
        }
        let sv = match self.step_values_of(c, ms, true) {
            Ok(sv) => sv,
            Err(e) => return Some(Err(e)),
        };
        let key = c as *const Call as usize;
        let labels: Vec<Labels> = if sv.drop_name {
            sv.labels
                .iter()
                .map(|l| {
                    let mut l = l.clone();
                    drop_metric_name(&mut l);
                    l
                })
                .collect()
        } else {
            sv.labels.clone()
        };
        // The selector's series are distinct; dropping the name keeps them so when they all
        // agree on the labels it removes (one metric name, as `x[5m]` selects).
        if sv.drop_name && !agree_on_name_labels(&sv.labels) {
            let mut seen = HashSet::with_capacity_and_hasher(labels.len(), FnvBuild);
            if !labels.iter().all(|l| seen.insert(l)) {
                return None;
            }
        }
        let n_steps = if self.step == 0 {
            1
        } else {
            ((self.end - self.start) / self.step + 1) as usize
        };
        let mut total = 0usize;
        for k in 0..n_steps {
            if let Some((at, err)) = &sv.error
                && k >= *at
            {
                return Some(Err(err.clone().with_expr(|| inner.to_string())));
            }
            for message in &sv.annotations[k] {
                self.annotate(AnnotationLevel::Info, message.clone(), &sv.anchor);
            }
            for message in &sv.warnings[k] {
                self.annotate(AnnotationLevel::Warning, message.clone(), &sv.anchor);
            }
            total += sv.per_step[k];
            if total > self.opts.max_samples {
                return Some(Err(QueryError::TooManySamples("query execution".into())));
            }
        }
        // Nothing else reads this call's values now: take them over.
        self.step_values.borrow_mut().remove(&key);
        let series = match Rc::try_unwrap(sv) {
            Ok(sv) => sv.into_series(),
            Err(shared) => shared.series_cloned(),
        };
        let mut out: Matrix = labels
            .into_iter()
            .zip(series)
            .filter(|(_, floats)| !floats.is_empty())
            .map(|(metric, floats)| Series {
                metric,
                floats,
                drop_name: false,
                st: None,
                hst: None,
                histograms: Vec::new(),
            })
            .collect();
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Some(Ok(out))
    }

    /// Evaluates range function `name` over `ms` at every step of the query.
    fn compute_steps(
        &self,
        name: &str,
        ms: &MatrixSelector,
        by_series: bool,
    ) -> Result<StepValues, QueryError> {
        let data = self.fetch(&ms.vs)?;
        let n_steps = if self.step == 0 {
            1
        } else {
            ((self.end - self.start) / self.step + 1) as usize
        };
        let labels: Vec<Labels> = data.iter().map(|sd| sd.labels.clone()).collect();
        // This call is the selector's only user: take its data out of the cache, so each
        // series' samples can be turned into points in place.
        self.cache
            .borrow_mut()
            .remove(&(&ms.vs as *const VectorSelector as usize));
        let data = Rc::try_unwrap(data).unwrap_or_else(|shared| (*shared).clone());
        // Each series slides its window across all steps in one pass (series by series:
        // its points are made and then read while they are in cache); what the
        // step-by-step evaluation would raise at a step (annotations, too many samples,
        // errors) is recorded per step and replayed in the same order.
        let (times, mut error) = self.step_times(&ms.vs, n_steps);
        // By series: one series' values, copied out at their exact size when the series is
        // done. By step: every step's row.
        let sweep = Sweep {
            name,
            range: dur_ms(&ms.range),
            counter_check: matches!(name, "rate" | "increase"),
            by_series: by_series && times.len() > 1,
            windows: self.opts.windows,
            labels: &labels,
            times,
        };
        let tally = self.sweep_shares(&sweep, data)?;
        let Sweep {
            times,
            by_series,
            counter_check,
            ..
        } = sweep;
        // The first failing step: too many samples there wins over a function error, as
        // the window is read before the function runs.
        if let Some(k) = tally.totals.iter().position(|&n| n > self.opts.max_samples)
            && error.as_ref().is_none_or(|(at, _)| k < *at)
        {
            let e = QueryError::TooManySamples(format!("selector {}", ms.vs));
            error = Some((k, e));
        }
        if let Some((k, e)) = tally.kernel_error
            && error.as_ref().is_none_or(|(at, _)| k < *at)
        {
            error = Some((k, e));
        }
        let done = error.as_ref().map_or(times.len(), |(at, _)| *at);
        let mut warnings = tally.warns;
        warnings.truncate(done);
        let annotations = if counter_check {
            counter_infos(&labels, &tally.first_value, done)
        } else {
            (0..done).map(|_| Vec::new()).collect()
        };
        let mut sv = StepValues {
            labels,
            drop_name: !matches!(name, "last_over_time" | "first_over_time"),
            start: self.start,
            step: self.step,
            series: tally.series,
            by_series,
            per_step: tally.per_step,
            rows: if by_series {
                OnceCell::new()
            } else {
                OnceCell::from(tally.rows)
            },
            annotations,
            warnings,
            anchor: anchor_of(ms),
            error,
        };
        if done < sv.per_step.len() {
            sv.truncate_steps(done);
        }
        Ok(sv)
    }

    /// Slides the windows of every series of `data` in contiguous shares, one per core
    /// when there is enough work ([`EngineOptions::split_series`](super::EngineOptions)),
    /// and joins the shares' tallies in series order: the same tally one pass gives.
    fn sweep_shares(&self, sweep: &Sweep<'_>, data: Vec<SeriesData>) -> Result<Tally, QueryError> {
        let n_steps = sweep.times.len();
        // A share is worth a thread from about 20,000 windows on.
        let min = (20_000 / n_steps.max(1)).max(64);
        let forced = self.opts.split_series.map_or(0, |n| n.max(1));
        let shares = crate::parallel::shares(data.len(), min, forced);
        let mut rest = data;
        let mut pieces = Vec::with_capacity(shares.len());
        for r in shares.iter().rev() {
            pieces.push((r.start, rest.split_off(r.start), self.stop().fork()));
        }
        pieces.reverse();
        let mut tallies = crate::parallel::map(pieces, |(offset, part, stop)| {
            sweep.run(offset, part, &stop)
        })
        .into_iter();
        let mut tally = match tallies.next() {
            Some(t) => t?,
            None => Tally::new(n_steps, sweep.by_series),
        };
        for later in tallies {
            tally.join(later?);
        }
        Ok(tally)
    }

    /// Each step's time and the time its window ends (`@` and `offset` applied), up to
    /// the first step where that fails, with its error.
    fn step_times(
        &self,
        vs: &VectorSelector,
        n_steps: usize,
    ) -> (Vec<(i64, i64)>, Option<StepError>) {
        let mut times: Vec<(i64, i64)> = Vec::with_capacity(n_steps);
        for k in 0..n_steps {
            let ts = self.start + k as i64 * self.step;
            match self.ref_time(vs, ts) {
                Ok(t) => times.push((ts, t)),
                Err(e) => return (times, Some((k, e))),
            }
        }
        (times, None)
    }
}

/// The selector's metric name (its text up to `{` or `[`), where annotations point.
fn anchor_of(ms: &MatrixSelector) -> String {
    let text = Expr::MatrixSelector(ms.clone()).to_string();
    text.split(['{', '['])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(&text)
        .to_string()
}

/// A series' points without stale markers, and their start timestamps when it has them.
fn series_points(sd: SeriesData) -> (Vec<FPoint>, Option<Vec<i64>>) {
    let st_all: Option<Vec<i64>> = sd.st.as_ref().map(|st| {
        sd.samples
            .iter()
            .zip(st)
            .filter(|(s, _)| !is_stale(s.v))
            .map(|(_, &st)| st)
            .collect()
    });
    // Same layout: `collect` reuses the samples' buffer instead of allocating and
    // faulting in a copy.
    let pts: Vec<FPoint> = sd
        .samples
        .into_iter()
        .filter(|s| !is_stale(s.v))
        .map(|s| FPoint { t: s.t, f: s.v })
        .collect();
    (pts, st_all)
}

/// An error raised at a step (its index).
type StepError = (usize, QueryError);

/// What every share of a sweep reads: the function, its window and the steps.
struct Sweep<'a> {
    name: &'a str,
    range: i64,
    /// rate/increase: counter resets and start-time overlaps are checked.
    counter_check: bool,
    /// Whether values are kept per series (see [`StepValues`]).
    by_series: bool,
    windows: super::WindowSemantics,
    /// Labels of all the selector's series (warnings name them).
    labels: &'a [Labels],
    /// Each step's time and the end of its window.
    times: Vec<(i64, i64)>,
}

/// What sliding the windows of some series (a share, or all once the shares are joined)
/// across the steps gathers.
struct Tally {
    /// By series: each series' values.
    series: Vec<Vec<FPoint>>,
    /// By series: the current series' values.
    values: Vec<FPoint>,
    /// By step: each step's values, series by series.
    rows: Vec<Vec<(u32, f64)>>,
    /// Per step, the warnings raised there, series by series.
    warns: Vec<Vec<String>>,
    /// Per step, the samples read there.
    totals: Vec<usize>,
    /// Per step, how many series have a value there.
    per_step: Vec<usize>,
    /// Per series, the step of its first value (rate/increase name check).
    first_value: Vec<Option<usize>>,
    /// The earliest step a function failed at, with its error.
    kernel_error: Option<StepError>,
}

impl Tally {
    fn new(n_steps: usize, by_series: bool) -> Tally {
        let (values, rows) = if by_series {
            (Vec::with_capacity(n_steps), Vec::new())
        } else {
            (Vec::new(), (0..n_steps).map(|_| Vec::new()).collect())
        };
        Tally {
            series: Vec::new(),
            values,
            rows,
            warns: (0..n_steps).map(|_| Vec::new()).collect(),
            totals: vec![0; n_steps],
            per_step: vec![0; n_steps],
            first_value: Vec::new(),
            kernel_error: None,
        }
    }

    /// Adds the tally of the series that follow this one's.
    fn join(&mut self, later: Tally) {
        self.series.extend(later.series);
        for (row, more) in self.rows.iter_mut().zip(later.rows) {
            row.extend(more);
        }
        for (warns, more) in self.warns.iter_mut().zip(later.warns) {
            warns.extend(more);
        }
        for (n, more) in self.totals.iter_mut().zip(later.totals) {
            *n += more;
        }
        for (n, more) in self.per_step.iter_mut().zip(later.per_step) {
            *n += more;
        }
        self.first_value.extend(later.first_value);
        // On the same step the earlier series' error stands, as in one pass.
        if let Some((k, e)) = later.kernel_error
            && self.kernel_error.as_ref().is_none_or(|(at, _)| k < *at)
        {
            self.kernel_error = Some((k, e));
        }
    }
}

impl Sweep<'_> {
    /// The tally of series `part`, the first of which is series `offset` of the selector.
    fn run(
        &self,
        offset: usize,
        part: Vec<SeriesData>,
        stop: &super::cancel::Stop,
    ) -> Result<Tally, QueryError> {
        let mut tally = Tally::new(self.times.len(), self.by_series);
        tally.first_value = vec![None; part.len()];
        if self.by_series {
            tally.series.reserve(part.len());
        }
        for (j, sd) in part.into_iter().enumerate() {
            // A stopped query fails at every step: no values are read.
            stop.check()?;
            let (pts, st_all) = series_points(sd);
            self.slide(offset + j, j, &pts, st_all.as_deref(), &mut tally);
            if self.by_series {
                tally.series.push(tally.values.as_slice().to_vec());
                tally.values.clear();
            }
        }
        Ok(tally)
    }

    /// Slides the window of series `i` of the selector (`j` of the tally; its points
    /// `pts`, their start timestamps `st_all`) across every step, recording its values and
    /// what each step raises.
    fn slide(&self, i: usize, j: usize, pts: &[FPoint], st_all: Option<&[i64]>, sw: &mut Tally) {
        let (counter_check, range) = (self.counter_check, self.range);
        let (mut a, mut b) = (0usize, 0usize);
        // rate/increase: how many points of the window after its first are counter
        // resets, kept as the window slides, so windows without one skip the scan.
        let sts_all = st_all.unwrap_or(&[]);
        let is_reset = |j: usize| counter_check && is_counter_reset(pts, sts_all, j);
        let mut resets = 0usize;
        let mut prev_t = i64::MIN;
        let mut overlap_warned = false;
        for (k, &(ts, t)) in self.times.iter().enumerate() {
            if t < prev_t {
                // Windows only move forward here; start over if one ever moves back.
                (a, b, resets) = (0, 0, 0);
            }
            prev_t = t;
            while b < pts.len() && pts[b].t <= t {
                if b > a && is_reset(b) {
                    resets += 1;
                }
                b += 1;
            }
            let open = self.windows.open_start(t, range);
            while a < b && pts[a].t <= open {
                a += 1;
                if a < b && is_reset(a) {
                    resets -= 1;
                }
            }
            if a == b {
                continue;
            }
            sw.totals[k] += b - a;
            let st = st_all.map(|st| &st[a..b]);
            if counter_check && !overlap_warned && st_overlap(&pts[a..b], st) {
                overlap_warned = true;
                sw.warns[k].push(st_overlap_warning(&self.labels[i]));
            }
            let arg = RangeArg {
                series: Vec::new(),
                range_start: t - range,
                range_end: t,
                range,
                mode: RangeMode::Plain,
            };
            let value = if counter_check {
                let is_rate = self.name == "rate";
                Ok(counter_rate(&pts[a..b], st, &arg, is_rate, resets > 0))
            } else {
                range_kernel(self.name, &pts[a..b], st, &arg, &[], ts)
            };
            match value {
                Ok(Some(f)) => {
                    if self.by_series {
                        sw.values.push(FPoint { t: ts, f });
                    } else {
                        sw.rows[k].push((i as u32, f));
                    }
                    sw.per_step[k] += 1;
                    if sw.first_value[j].is_none() {
                        sw.first_value[j] = Some(k);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if sw.kernel_error.as_ref().is_none_or(|(at, _)| k < *at) {
                        sw.kernel_error = Some((k, e));
                    }
                    break;
                }
            }
        }
    }
}

/// The info annotations of rate/increase over series whose name does not look like a
/// counter's, in the order the step-by-step evaluation raises them (by step, then
/// series), once per metric name; `first_value` is each series' first step with a value.
fn counter_infos(
    labels: &[Labels],
    first_value: &[Option<usize>],
    done: usize,
) -> Vec<Vec<String>> {
    let mut annos: Vec<Vec<String>> = (0..done).map(|_| Vec::new()).collect();
    let mut by_step: Vec<Vec<usize>> = (0..done).map(|_| Vec::new()).collect();
    for (i, k) in first_value.iter().enumerate() {
        if let Some(k) = *k
            && k < done
        {
            by_step[k].push(i);
        }
    }
    let mut names_seen: HashSet<String, FnvBuild> = HashSet::default();
    for (k, series) in by_step.iter().enumerate() {
        for &i in series {
            // The message depends on the name only: build it once per name.
            if let Some(name) = labels[i].metric_name()
                && !names_seen.contains(name)
            {
                names_seen.insert(name.to_string());
                if let Some(message) = counter_info(&labels[i]) {
                    annos[k].push(message);
                }
            }
        }
    }
    annos
}
