//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, …) with `by`/`without`.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::cancel::Stop;
use super::steps::StepValues;
use super::value::format_float;
use super::{
    AnnotationLevel, Evaluator, FastMap, QueryError, Sample, Value, Vector, kahan_sum_inc,
    label_hash,
};
use crate::labels::{Labels, METRIC_NAME};

/// Accumulator of one output group.
struct Group {
    metric: Labels,
    value: f64,
    mean: f64,
    kahan_c: f64,
    count: f64,
    incremental_mean: bool,
    drop_name: bool,
    values: Vec<f64>,
}

impl Evaluator<'_> {
    pub(crate) fn eval_aggregate(&self, a: &AggregateExpr, ts: i64) -> Result<Value, QueryError> {
        let op = a.op.to_string().to_ascii_lowercase();
        let (without, grouping) = grouping_of(a);
        if op == "count_values" {
            return self
                .count_values_of(a, without, &grouping, ts)
                .map(Value::Vector);
        }
        let param = match &a.param {
            Some(p) => Some(self.eval_scalar(p, ts)?),
            None => None,
        };
        let is_k = matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio");
        let fast_k = matches!(op.as_str(), "topk" | "bottomk");
        if (!is_k || fast_k)
            && let Some((sv, k)) = self.step_row(&a.expr, ts)?
        {
            // The input is a range function's step: group by per-series keys computed once.
            self.warn_quantile_param(&op, param, a);
            let groups = self.step_groups_of(a, &sv, without, &grouping);
            if fast_k {
                return top_bottom_k_of_row(&op, param, &sv, k, &groups, ts).map(Value::Vector);
            }
            // Groups by dense number: no hashing, and a group's labels are cloned once.
            let row = sv.row(k);
            let labels = &groups.labels;
            let input = row.iter().map(|&(i, f)| {
                let gid = groups.ids[i as usize] as usize;
                (gid, f, sv.drop_name, move || labels[gid].clone())
            });
            let stop = self.stop();
            return aggregate_dense(&op, param.unwrap_or(f64::NAN), input, stop).map(Value::Vector);
        }
        let mut vec = self.eval_vector(&a.expr, ts)?;
        if vec.iter().any(|s| s.h.is_some()) {
            let anchor = a.expr.to_string();
            match op.as_str() {
                "sum" | "avg" | "count" | "group" => {
                    let mut grouper = |l: &Labels| {
                        (
                            group_key(l, without, &grouping),
                            group_labels(l, without, &grouping),
                        )
                    };
                    return self
                        .aggregate_histograms(&op, vec, &mut grouper, &anchor)
                        .map(Value::Vector);
                }
                "limitk" | "limit_ratio" | "count_values" => {}
                _ => self.ignore_histograms(&op, &mut vec, &anchor),
            }
        }
        match op.as_str() {
            "topk" | "bottomk" | "limitk" | "limit_ratio" => {
                let p = param.unwrap_or(f64::NAN);
                self.aggregate_k(&op, p, vec, without, &grouping)
                    .map(Value::Vector)
            }
            _ => {
                self.warn_quantile_param(&op, param, a);
                let node = a as *const AggregateExpr as usize;
                let mut memo = self.group_memo.borrow_mut();
                let mut grouper = |l: &Labels| {
                    let (_, key, labels) = memo.entry((node, l.ptr_id())).or_insert_with(|| {
                        (
                            l.clone(),
                            group_key(l, without, &grouping),
                            group_labels(l, without, &grouping),
                        )
                    });
                    (*key, labels.clone())
                };
                let input = vec.into_iter().map(|s| {
                    let (key, labels) = grouper(&s.metric);
                    (key, labels, s.f, s.drop_name)
                });
                let stop = self.stop();
                aggregate(&op, param.unwrap_or(f64::NAN), input, stop).map(Value::Vector)
            }
        }
    }

    /// `count_values("label", v)`: its parameter must be a valid label name.
    fn count_values_of(
        &self,
        a: &AggregateExpr,
        without: bool,
        grouping: &[String],
        ts: i64,
    ) -> Result<Vector, QueryError> {
        let param = a
            .param
            .as_ref()
            .ok_or_else(|| QueryError::eval("count_values needs a label name parameter"))?;
        let label = self.eval_string(param, ts)?;
        if !super::rewrite::is_valid_label_name(&label) {
            return Err(QueryError::eval(format!(
                "invalid label name \"{}\"",
                super::rewrite::shown_label_name(&label)
            )));
        }
        let vec = self.eval_vector(&a.expr, ts)?;
        count_values(vec, &label, without, grouping, self.stop())
    }

    /// The groups of a range function's series for aggregation `a`, computed at its first
    /// step and kept for the others.
    fn step_groups_of(
        &self,
        a: &AggregateExpr,
        sv: &StepValues,
        without: bool,
        grouping: &[String],
    ) -> Rc<StepGroups> {
        let node = a as *const AggregateExpr as usize;
        let cached = self.step_groups.borrow().get(&node).cloned();
        match cached {
            Some(g) => g,
            None => {
                let g = Rc::new(StepGroups::of(&sv.labels, without, grouping));
                self.step_groups.borrow_mut().insert(node, g.clone());
                g
            }
        }
    }

    /// The warning `quantile` raises for a parameter outside [0, 1].
    fn warn_quantile_param(&self, op: &str, param: Option<f64>, a: &AggregateExpr) {
        if op == "quantile"
            && let Some(q) = param
        {
            let anchor = a.param.as_ref().map(|p| p.to_string()).unwrap_or_default();
            self.check_quantile(q, &anchor);
        }
    }

    fn aggregate_k(
        &self,
        op: &str,
        param: f64,
        vec: Vector,
        without: bool,
        grouping: &[String],
    ) -> Result<Vector, QueryError> {
        if op == "limit_ratio" {
            if param.is_nan() {
                return Err(QueryError::eval("Ratio value is NaN"));
            }
        } else if param.is_nan() {
            return Err(QueryError::eval("Parameter value is NaN"));
        }
        if op != "limit_ratio"
            && !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&param)
        {
            return Err(QueryError::eval(format!(
                "Scalar value {} overflows int64",
                format_float(param)
            )));
        }
        let k = (param as i64).min(vec.len() as i64);
        if op != "limit_ratio" && k < 1 {
            return Ok(Vec::new());
        }
        let ratio = param.clamp(-1.0, 1.0);
        if op == "limit_ratio" && ratio != param {
            self.annotate_first_arg(
                AnnotationLevel::Warning,
                format!(
                    "ratio value should be between -1 and 1, got {}, capping to {}",
                    format_float(param),
                    format_float(ratio)
                ),
                "limit_ratio(",
            );
        }
        if op == "limit_ratio" && ratio == 0.0 {
            return Ok(Vec::new());
        }
        let mut order: Vec<u64> = Vec::new();
        let mut groups: FastMap<u64, Vec<Sample>> = FastMap::default();
        for s in vec {
            self.poll()?;
            let key = group_key(&s.metric, without, grouping);
            let g = groups.entry(key).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            g.push(s);
        }
        let mut out = Vec::new();
        for key in order {
            let Some(mut samples) = groups.remove(&key) else {
                continue;
            };
            match op {
                "topk" => first_k(&mut samples, k as usize, desc_nan_last),
                "bottomk" => first_k(&mut samples, k as usize, asc_nan_last),
                "limitk" => samples.truncate(k as usize),
                _ => samples.retain(|s| ratio_keep(ratio, &s.metric)),
            }
            out.extend(samples);
        }
        Ok(out)
    }
}

/// `k` of `topk`/`bottomk` for an input of `len` samples: the same checks and errors as
/// `aggregate_k`; `None` when nothing is kept.
fn k_of(param: f64, len: usize) -> Result<Option<usize>, QueryError> {
    if param.is_nan() {
        return Err(QueryError::eval("Parameter value is NaN"));
    }
    if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&param) {
        return Err(QueryError::eval(format!(
            "Scalar value {} overflows int64",
            format_float(param)
        )));
    }
    let k = (param as i64).min(len as i64);
    Ok((k >= 1).then_some(k as usize))
}

/// [`first_k`] on (value, input position) pairs.
fn first_k_keyed(items: &mut Vec<(f64, usize)>, k: usize, cmp: fn(f64, f64) -> std::cmp::Ordering) {
    let order = |a: &(f64, usize), b: &(f64, usize)| cmp(a.0, b.0).then(a.1.cmp(&b.1));
    if k < items.len() {
        items.select_nth_unstable_by(k - 1, order);
        items.truncate(k);
    }
    items.sort_unstable_by(order);
}

/// Keeps the first `k` samples in the order `cmp`, sorted, ties in input order: what a
/// stable sort followed by truncation keeps, found by selection when `k` is small.
fn first_k(samples: &mut Vec<Sample>, k: usize, cmp: fn(f64, f64) -> std::cmp::Ordering) {
    if k >= samples.len() {
        samples.sort_by(|a, b| cmp(a.f, b.f));
        return;
    }
    let mut keyed: Vec<(f64, usize)> = samples.iter().enumerate().map(|(i, s)| (s.f, i)).collect();
    let order = |a: &(f64, usize), b: &(f64, usize)| cmp(a.0, b.0).then(a.1.cmp(&b.1));
    if k > 0 {
        keyed.select_nth_unstable_by(k - 1, order);
    }
    keyed.truncate(k);
    keyed.sort_unstable_by(order);
    let mut slots: Vec<Option<Sample>> = samples.drain(..).map(Some).collect();
    samples.extend(keyed.iter().filter_map(|&(_, i)| slots[i].take()));
}

/// Descending order with NaN last (`sort_desc`, `topk`).
pub(crate) fn desc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Ascending order with NaN last (`sort`, `bottomk`).
pub(crate) fn asc_nan_last(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// Whether `limit_ratio` keeps a series: a stable hash of its labels mapped to [0, 1)
/// compared with the ratio (negative ratios take the complementary slice).
fn ratio_keep(ratio: f64, l: &Labels) -> bool {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    l.hash(&mut h);
    let offset = h.finish() as f64 / u64::MAX as f64;
    (ratio >= 0.0 && offset < ratio) || (ratio < 0.0 && offset >= 1.0 + ratio)
}

/// The grouping key of a series (a hash, as in Prometheus).
fn group_key(l: &Labels, without: bool, grouping: &[String]) -> u64 {
    if without {
        label_hash(l, |k| k != METRIC_NAME && !grouping.iter().any(|g| g == k))
    } else {
        label_hash(l, |k| grouping.iter().any(|g| g == k))
    }
}

fn group_labels(l: &Labels, without: bool, grouping: &[String]) -> Labels {
    let mut out = l.clone();
    if without {
        out.retain(|k, _| k != METRIC_NAME && !grouping.iter().any(|g| g == k));
    } else {
        out.retain(|k, _| grouping.iter().any(|g| g == k));
    }
    out
}

/// Aggregates `input`: per sample its group key, its group's labels, its value and its
/// delayed name removal flag.
pub(super) fn aggregate(
    op: &str,
    param: f64,
    input: impl Iterator<Item = (u64, Labels, f64, bool)>,
    stop: &Stop,
) -> Result<Vector, QueryError> {
    let mut ids: FastMap<u64, usize> = FastMap::default();
    let input = input.map(|(key, metric, f, drop_name)| {
        let next = ids.len();
        let gid = *ids.entry(key).or_insert(next);
        (gid, f, drop_name, move || metric)
    });
    aggregate_dense(op, param, input, stop)
}

/// An aggregation's grouping: whether it is `without`, and the labels.
fn grouping_of(a: &AggregateExpr) -> (bool, Vec<String>) {
    match &a.modifier {
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        None => (false, vec![]),
    }
}

/// topk/bottomk over step `k` of a range function's values: selects on values and
/// positions per group, and builds only the kept samples.
fn top_bottom_k_of_row(
    op: &str,
    param: Option<f64>,
    sv: &StepValues,
    k: usize,
    groups: &StepGroups,
    ts: i64,
) -> Result<Vector, QueryError> {
    let row = sv.row(k);
    let Some(keep) = k_of(param.unwrap_or(f64::NAN), row.len())? else {
        return Ok(Vec::new());
    };
    let cmp = if op == "topk" {
        desc_nan_last
    } else {
        asc_nan_last
    };
    let mut order: Vec<u64> = Vec::new();
    let mut by_group: FastMap<u64, Vec<(f64, usize)>> = FastMap::default();
    for (pos, &(i, f)) in row.iter().enumerate() {
        let key = groups.keys[i as usize];
        by_group
            .entry(key)
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push((f, pos));
    }
    let mut out = Vec::new();
    for key in order {
        let Some(mut items) = by_group.remove(&key) else {
            continue;
        };
        first_k_keyed(&mut items, keep, cmp);
        out.extend(items.iter().map(|&(f, pos)| Sample {
            metric: sv.labels[row[pos].0 as usize].clone(),
            t: ts,
            f,
            drop_name: sv.drop_name,
            h: None,
        }));
    }
    Ok(out)
}

/// The groups of a range function's series for one aggregation, computed once per query:
/// per series its group key and its dense group number, per group number its labels
/// (numbered in series order).
pub(crate) struct StepGroups {
    keys: Vec<u64>,
    ids: Vec<u32>,
    labels: Vec<Labels>,
}

impl StepGroups {
    fn of(series: &[Labels], without: bool, grouping: &[String]) -> StepGroups {
        let mut by_key: FastMap<u64, u32> = FastMap::default();
        let mut out = StepGroups {
            keys: Vec::with_capacity(series.len()),
            ids: Vec::with_capacity(series.len()),
            labels: Vec::new(),
        };
        for l in series {
            let key = group_key(l, without, grouping);
            let next = out.labels.len() as u32;
            let gid = *by_key.entry(key).or_insert_with(|| {
                out.labels.push(group_labels(l, without, grouping));
                next
            });
            out.keys.push(key);
            out.ids.push(gid);
        }
        out
    }
}

/// [`aggregate`] on dense group numbers: per sample its group's number, its value, its
/// delayed name removal flag and how to get its group's labels (called once per group).
fn aggregate_dense<M: FnOnce() -> Labels>(
    op: &str,
    param: f64,
    input: impl Iterator<Item = (usize, f64, bool, M)>,
    stop: &Stop,
) -> Result<Vector, QueryError> {
    let mut order: Vec<usize> = Vec::new();
    let mut groups: Vec<Option<Group>> = Vec::new();
    for (gid, f, drop_name, metric) in input {
        stop.check()?;
        if gid >= groups.len() {
            groups.resize_with(gid + 1, || None);
        }
        match groups[gid].as_mut() {
            Some(g) => {
                g.drop_name |= drop_name;
                g.add(op, f)?;
            }
            None => {
                groups[gid] = Some(Group::first(op, f, drop_name, metric()));
                order.push(gid);
            }
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for gid in order {
        let Some(mut g) = groups[gid].take() else {
            continue;
        };
        let f = g.result(op, param);
        out.push(Sample {
            metric: g.metric,
            t: 0,
            f,
            drop_name: g.drop_name,
            h: None,
        });
    }
    Ok(out)
}

impl Group {
    /// A group started by its first sample, of value `f`.
    #[inline]
    fn first(op: &str, f: f64, drop_name: bool, metric: Labels) -> Group {
        let value = match op {
            "stddev" | "stdvar" => {
                if f.is_nan() || f.is_infinite() {
                    f64::NAN
                } else {
                    0.0
                }
            }
            "group" => 1.0,
            _ => f,
        };
        Group {
            metric,
            value,
            mean: f,
            kahan_c: 0.0,
            count: 1.0,
            incremental_mean: false,
            drop_name,
            values: if op == "quantile" { vec![f] } else { vec![] },
        }
    }

    /// Takes one more sample of value `f` in, as Prometheus's aggregation of `op` does.
    #[inline]
    fn add(&mut self, op: &str, f: f64) -> Result<(), QueryError> {
        let g = self;
        match op {
            "sum" => {
                let (v, c) = kahan_sum_inc(f, g.value, g.kahan_c);
                g.value = v;
                g.kahan_c = c;
            }
            "avg" => {
                g.count += 1.0;
                if !g.incremental_mean {
                    let (v, c) = kahan_sum_inc(f, g.value, g.kahan_c);
                    if !v.is_infinite() {
                        g.value = v;
                        g.kahan_c = c;
                        return Ok(());
                    }
                    g.incremental_mean = true;
                    g.mean = g.value / (g.count - 1.0);
                    g.kahan_c /= g.count - 1.0;
                }
                let q = (g.count - 1.0) / g.count;
                let (m, c) = kahan_sum_inc(f / g.count, q * g.mean, q * g.kahan_c);
                g.mean = m;
                g.kahan_c = c;
            }
            "group" => {}
            "max" => {
                if g.value < f || g.value.is_nan() {
                    g.value = f;
                }
            }
            "min" => {
                if g.value > f || g.value.is_nan() {
                    g.value = f;
                }
            }
            "count" => g.count += 1.0,
            "stddev" | "stdvar" => {
                g.count += 1.0;
                let delta = f - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (f - g.mean);
            }
            "quantile" => g.values.push(f),
            other => {
                return Err(QueryError::eval(format!(
                    "unknown aggregation operator {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// The group's value once every sample is in.
    fn result(&mut self, op: &str, param: f64) -> f64 {
        let g = self;
        match op {
            "avg" => {
                if g.incremental_mean {
                    g.mean + g.kahan_c
                } else {
                    g.value / g.count + g.kahan_c / g.count
                }
            }
            "count" => g.count,
            "stdvar" => g.value / g.count,
            "stddev" => (g.value / g.count).sqrt(),
            "quantile" => quantile(param, std::mem::take(&mut g.values)),
            "sum" => g.value + g.kahan_c,
            _ => g.value,
        }
    }
}

/// Prometheus's `quantile` (linear interpolation between closest ranks; NaN sorts first).
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

fn count_values(
    vec: Vector,
    label: &str,
    without: bool,
    grouping: &[String],
    stop: &Stop,
) -> Result<Vector, QueryError> {
    let mut grouping: Vec<String> = grouping.to_vec();
    if !without {
        grouping.push(label.to_string());
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut counts: FastMap<Labels, f64> = FastMap::default();
    for s in vec {
        stop.check()?;
        let mut metric = s.metric;
        let value = match &s.h {
            Some(h) => super::histogram_fns::histogram_string(h),
            None => format_float_go(s.f),
        };
        metric.set(label, &value);
        let key = group_labels(&metric, without, &grouping);
        let c = counts.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            0.0
        });
        *c += 1.0;
    }
    Ok(order
        .into_iter()
        .map(|m| {
            let f = counts.get(&m).copied().unwrap_or(0.0);
            Sample {
                metric: m,
                t: 0,
                f,
                drop_name: false,
                h: None,
            }
        })
        .collect())
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: shortest representation, no exponent.
pub(crate) fn format_float_go(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        // Rust's Display never uses an exponent and prints the shortest round-trip form.
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A float group aggregates the same whether or not other groups of the vector hold
    /// histograms: `avg` of two 1e308 is 1e308 (its sum overflows, so the mean is taken
    /// incrementally), not +Inf.
    #[test]
    fn float_groups_beside_histograms_aggregate_as_floats() {
        let script = "load 1m\n  m{g=\"x\",i=\"1\"} 1e308\n  m{g=\"x\",i=\"2\"} 1e308\n  m{g=\"y\",i=\"1\"} {{schema:0 sum:1 count:1}}\n\neval instant at 0 avg by (g) (m)\n  {g=\"x\"} 1e308\n  {g=\"y\"} {{schema:0 sum:1 count:1}}\n\neval instant at 0 sum by (g) (m)\n  {g=\"x\"} +Inf\n  {g=\"y\"} {{schema:0 sum:1 count:1}}\n";
        let report = crate::promqltest::run_script(script).expect("script parses");
        assert_eq!(
            (report.passed(), report.failed()),
            (2, 0),
            "{:?}",
            report.evals.iter().map(|e| &e.status).collect::<Vec<_>>()
        );
    }

    /// `first_k` keeps exactly what a stable sort and truncation keep: ties (equal values,
    /// NaNs, signed zeros) in input order.
    #[test]
    fn first_k_matches_stable_sort() {
        let values = [
            3.0,
            f64::NAN,
            1.0,
            3.0,
            -0.0,
            0.0,
            f64::INFINITY,
            1.0,
            f64::NAN,
            -2.0,
            3.0,
        ];
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, &f)| Sample {
                metric: Labels::new([("i", i.to_string())]),
                t: 0,
                f,
                drop_name: false,
                h: None,
            })
            .collect();
        for cmp in [
            desc_nan_last as fn(f64, f64) -> std::cmp::Ordering,
            asc_nan_last,
        ] {
            for k in 1..=values.len() + 1 {
                let mut expected = samples.clone();
                expected.sort_by(|a, b| cmp(a.f, b.f));
                expected.truncate(k);
                let mut got = samples.clone();
                first_k(&mut got, k, cmp);
                let ids = |v: &[Sample]| -> Vec<String> {
                    v.iter()
                        .map(|s| s.metric.get("i").unwrap_or("").to_string())
                        .collect()
                };
                assert_eq!(ids(&got), ids(&expected), "k = {k}");
                let mut keyed: Vec<(f64, usize)> =
                    values.iter().copied().zip(0..values.len()).collect();
                first_k_keyed(&mut keyed, k, cmp);
                let keyed_ids: Vec<String> = keyed.iter().map(|(_, i)| i.to_string()).collect();
                assert_eq!(keyed_ids, ids(&expected), "keyed, k = {k}");
            }
        }
    }
}
