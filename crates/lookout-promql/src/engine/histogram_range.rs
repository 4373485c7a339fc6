//! Range functions over series holding native histograms: `rate`, `increase`, `delta`,
//! `irate`, `idelta`, `resets`, `changes` and the `*_over_time` functions that take
//! histograms (`sum`, `avg`, `count`, `last`, `first`, `present`). The float-only
//! functions use a series' floats and ignore its histograms.

use std::sync::Arc;

use super::cancel::Stop;
use super::functions::{instant_value, is_st_reset, range_kernel};
use super::histogram_rate::histogram_sts;
use super::kahan_sum_inc;
use super::{AnnotationLevel, Evaluator, FPoint, QueryError, RangeArg, RangeMode, Sample, Series};
use crate::histogram::{CounterResetHint, FloatHistogram, HPoint, HistogramError};

/// What summing histograms ran into (each an annotation).
#[derive(Default)]
pub(crate) struct SumNotes {
    /// Both "counter reset" and "not a counter reset" hints were summed.
    pub(crate) collision: bool,
    /// Mismatched custom bounds were reconciled.
    pub(crate) reconciled: bool,
}

/// A running sum of histograms with Kahan compensation of the sum, count and zero count
/// (the fields where adding large values of opposite sign loses the small ones).
#[derive(Clone)]
struct KahanSum {
    sum: FloatHistogram,
    c: (f64, f64, f64),
}

impl KahanSum {
    fn add(&mut self, h: &FloatHistogram) -> Result<bool, HistogramError> {
        let s = &mut self.sum;
        let (sum0, count0, zero0, zt0) = (s.sum, s.count, s.zero_count, s.zero_threshold);
        let reconciled = s.add(h)?.nhcb_bounds_reconciled;
        (s.sum, self.c.0) = kahan_sum_inc(h.sum, sum0, self.c.0);
        (s.count, self.c.1) = kahan_sum_inc(h.count, count0, self.c.1);
        if s.zero_threshold == h.zero_threshold && s.zero_threshold == zt0 {
            (s.zero_count, self.c.2) = kahan_sum_inc(h.zero_count, zero0, self.c.2);
        }
        Ok(reconciled)
    }

    fn value(&self) -> FloatHistogram {
        let mut v = self.sum.clone();
        v.sum += self.c.0;
        v.count += self.c.1;
        v.zero_count += self.c.2;
        v
    }
}

/// Whether both "counter reset" and "not a counter reset" hints are among `hs`: the
/// test Prometheus makes over all inputs of `sum`/`avg` and `*_over_time`, which can differ
/// from the pairwise collision a binary `+` or `-` reports (`Combined`): a gauge or unknown
/// hint in between hides the pair there, not here.
fn hints_collide(hs: &[&FloatHistogram]) -> bool {
    let hint = |k| hs.iter().any(|h| h.counter_reset_hint == k);
    hint(CounterResetHint::Reset) && hint(CounterResetHint::NotReset)
}

/// A sum or mean of histograms: `Err` when exponential and custom-bucket histograms are
/// mixed, `None` for no histograms.
pub(crate) type Summed = Result<Option<FloatHistogram>, HistogramError>;

/// Sums histograms; fails when the query is stopped (polled once a histogram, as each
/// addition walks all buckets).
pub(crate) fn sum_histograms(
    hs: &[&FloatHistogram],
    notes: &mut SumNotes,
    stop: &Stop,
) -> Result<Summed, QueryError> {
    let Some((first, rest)) = hs.split_first() else {
        return Ok(Ok(None));
    };
    notes.collision |= hints_collide(hs);
    let mut acc = KahanSum {
        sum: (*first).clone(),
        c: (0.0, 0.0, 0.0),
    };
    for h in rest {
        stop.check()?;
        match acc.add(h) {
            Ok(reconciled) => notes.reconciled |= reconciled,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(Some(acc.value())))
}

/// The mean of histograms: their sum divided by their number, or, once the sum
/// overflows, an incremental mean from there on (as Prometheus's `avg` does). Polls
/// `stop` as [`sum_histograms`] does.
pub(crate) fn avg_histograms(
    hs: &[&FloatHistogram],
    notes: &mut SumNotes,
    stop: &Stop,
) -> Result<Summed, QueryError> {
    let Some((first, mut rest)) = hs.split_first() else {
        return Ok(Ok(None));
    };
    notes.collision |= hints_collide(hs);
    let mut acc = KahanSum {
        sum: (*first).clone(),
        c: (0.0, 0.0, 0.0),
    };
    let mut n = 1.0;
    while let Some((h, tail)) = rest.split_first() {
        stop.check()?;
        let mut next = acc.clone();
        let reconciled = match next.add(h) {
            Ok(reconciled) => reconciled,
            Err(e) => return Ok(Err(e)),
        };
        if next.value().has_overflow() {
            break;
        }
        notes.reconciled |= reconciled;
        acc = next;
        n += 1.0;
        rest = tail;
    }
    if rest.is_empty() {
        let mut mean = acc.value();
        mean.div(n);
        return Ok(Ok(Some(mean)));
    }
    // Incremental mean, compensated the same way.
    acc.sum.div(n);
    acc.c = (acc.c.0 / n, acc.c.1 / n, acc.c.2 / n);
    for h in rest {
        stop.check()?;
        n += 1.0;
        let q = (n - 1.0) / n;
        acc.sum.mul(q);
        acc.c = (acc.c.0 * q, acc.c.1 * q, acc.c.2 * q);
        let mut add = (*h).clone();
        add.div(n);
        match acc.add(&add) {
            Ok(reconciled) => notes.reconciled |= reconciled,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(Some(acc.value())))
}

/// Exact equality as `changes()` sees it (the counter reset hint aside).
fn same_histogram(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.zero_count.to_bits() == b.zero_count.to_bits()
        && a.count.to_bits() == b.count.to_bits()
        && a.sum.to_bits() == b.sum.to_bits()
        && a.positive == b.positive
        && a.negative == b.negative
        && a.custom_values == b.custom_values
}

/// A point of a series that may hold floats and histograms.
enum Pt<'a> {
    F(&'a FPoint),
    H(&'a HPoint),
}

/// The points of `s` merged by time.
fn merged(s: &Series) -> Vec<Pt<'_>> {
    let mut out = Vec::with_capacity(s.floats.len() + s.histograms.len());
    let (mut i, mut j) = (0, 0);
    while i < s.floats.len() || j < s.histograms.len() {
        if j >= s.histograms.len() || (i < s.floats.len() && s.floats[i].t < s.histograms[j].t) {
            out.push(Pt::F(&s.floats[i]));
            i += 1;
        } else {
            out.push(Pt::H(&s.histograms[j]));
            j += 1;
        }
    }
    out
}

/// The start time (0 when unknown) and time of a point of `s`.
fn start_of(s: &Series, p: &Pt) -> (i64, i64) {
    let (t, i, sts) = match p {
        Pt::F(p) => (
            p.t,
            s.floats.binary_search_by_key(&p.t, |q| q.t).ok(),
            s.st.as_deref().filter(|st| st.len() == s.floats.len()),
        ),
        Pt::H(p) => (
            p.t,
            s.histograms.binary_search_by_key(&p.t, |q| q.t).ok(),
            Some(histogram_sts(s)),
        ),
    };
    let st = i.and_then(|i| sts?.get(i).copied());
    (st.unwrap_or(0), t)
}

/// A result sample of a range function.
fn result(metric: &super::Labels, ts: i64, f: f64, h: Option<FloatHistogram>) -> Sample {
    Sample {
        metric: metric.clone(),
        t: ts,
        f,
        drop_name: true,
        h: h.map(Arc::new),
    }
}

impl Evaluator<'_> {
    fn name_of(s: &Series) -> &str {
        s.metric.metric_name().unwrap_or("")
    }

    pub(crate) fn warn_mixed_floats_histograms(&self, s: &Series, anchor: &str) {
        self.annotate(
            AnnotationLevel::Warning,
            format!(
                "encountered a mix of histograms and floats for metric name {:?}",
                Self::name_of(s)
            ),
            anchor,
        );
    }

    pub(crate) fn warn_mixed_schemas(&self, name: &str, anchor: &str) {
        self.annotate(
            AnnotationLevel::Warning,
            format!(
                "vector contains a mix of histograms with exponential and custom buckets schemas for metric name {name:?}"
            ),
            anchor,
        );
    }

    pub(crate) fn sum_notes(&self, notes: &SumNotes, op: &str, anchor: &str) {
        if notes.collision {
            self.annotate(
                AnnotationLevel::Warning,
                format!("conflicting counter resets during histogram {op}"),
                anchor,
            );
        }
        if notes.reconciled {
            self.annotate(
                AnnotationLevel::Info,
                format!("mismatched custom buckets were reconciled during {op}"),
                anchor,
            );
        }
    }

    /// The value of range function `name` over series `s`, which holds histograms.
    pub(crate) fn histogram_range_value(
        &self,
        name: &str,
        s: &Series,
        arg: &RangeArg,
        scalars: &[f64],
        anchor: &str,
        ts: i64,
    ) -> Result<Option<Sample>, QueryError> {
        let m = &s.metric;
        let mixed = !s.floats.is_empty();
        Ok(match name {
            "rate" | "increase" | "delta" if arg.mode == RangeMode::Plain => {
                if mixed {
                    self.warn_mixed_floats_histograms(s, anchor);
                    return Ok(None);
                }
                self.histogram_rate(s, arg, name != "delta", name == "rate", anchor)
                    .map(|h| result(m, ts, 0.0, Some(h)))
            }
            "rate" | "increase" | "delta" => {
                if mixed {
                    self.warn_mixed_floats_histograms(s, anchor);
                    return Ok(None);
                }
                self.extended_histogram_rate(s, arg, name != "delta", name == "rate", anchor)
                    .map(|h| result(m, ts, 0.0, Some(h)))
            }
            "irate" | "idelta" => self.histogram_instant(s, name == "irate", anchor, ts),
            "resets" | "changes" => resets_or_changes(name, s, arg, ts),
            "count_over_time" => Some(result(
                m,
                ts,
                (s.floats.len() + s.histograms.len()) as f64,
                None,
            )),
            "present_over_time" => Some(result(m, ts, 1.0, None)),
            "ts_of_last_over_time"
            | "ts_of_first_over_time"
            | "last_over_time"
            | "first_over_time" => first_or_last(name, s, ts),
            "sum_over_time" | "avg_over_time" => {
                if mixed {
                    self.warn_mixed_floats_histograms(s, anchor);
                    return Ok(None);
                }
                let mut notes = SumNotes::default();
                let hs: Vec<&FloatHistogram> = s.histograms.iter().map(|p| &*p.h).collect();
                let value = if name == "avg_over_time" {
                    avg_histograms(&hs, &mut notes, self.stop())?
                } else {
                    sum_histograms(&hs, &mut notes, self.stop())?
                };
                self.sum_notes(&notes, "aggregation", anchor);
                let Ok(Some(h)) = value else {
                    self.warn_mixed_schemas(Self::name_of(s), anchor);
                    return Ok(None);
                };
                Some(result(m, ts, 0.0, Some(h)))
            }
            _ => {
                // Float-only functions: the histograms are ignored.
                if !mixed {
                    return Ok(None);
                }
                self.annotate(
                    AnnotationLevel::Info,
                    format!(
                        "ignored histograms in a range containing both floats and histograms for metric name {:?}",
                        Self::name_of(s)
                    ),
                    anchor,
                );
                range_kernel(name, &s.floats, None, arg, scalars, ts)?
                    .map(|f| result(m, ts, f, None))
            }
        })
    }

    /// `irate`/`idelta` over the last two points, which must both be histograms.
    fn histogram_instant(
        &self,
        s: &Series,
        is_rate: bool,
        anchor: &str,
        ts: i64,
    ) -> Option<Sample> {
        let pts = merged(s);
        let [.., a, b] = pts.as_slice() else {
            return None;
        };
        let (Pt::H(a), Pt::H(b)) = (a, b) else {
            if matches!((a, b), (Pt::F(_), Pt::F(_))) {
                return instant_value(&s.floats, &[], is_rate)
                    .map(|f| result(&s.metric, ts, f, None));
            }
            self.warn_mixed_floats_histograms(s, anchor);
            return None;
        };
        let interval = b.t - a.t;
        if interval == 0 {
            return None;
        }
        let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
        let name = Self::name_of(s);
        if is_rate && (gauge(&a.h) || gauge(&b.h)) {
            self.not_counter_warning(name, anchor);
        }
        if !is_rate && (!gauge(&a.h) || !gauge(&b.h)) {
            self.not_gauge_warning(name, anchor);
        }
        let sts = histogram_sts(s);
        let st_reset = match sts {
            [.., sa, sb] => is_st_reset(*sa, a.t, *sb, b.t),
            _ => false,
        };
        let mut h = (*b.h).clone();
        if !is_rate || !(st_reset || b.h.detect_reset(&a.h)) {
            match h.sub(&a.h) {
                Err(_) => {
                    self.warn_mixed_schemas(name, anchor);
                    return None;
                }
                Ok(c) if c.nhcb_bounds_reconciled => self.annotate(
                    AnnotationLevel::Info,
                    "mismatched custom buckets were reconciled during subtraction".into(),
                    anchor,
                ),
                Ok(_) => {}
            }
        }
        h.counter_reset_hint = CounterResetHint::Gauge;
        h.compact();
        if is_rate {
            h.div(interval as f64 / 1000.0);
        }
        Some(result(&s.metric, ts, 0.0, Some(h)))
    }

    pub(crate) fn not_counter_warning(&self, name: &str, anchor: &str) {
        self.annotate(
            AnnotationLevel::Warning,
            format!("this native histogram metric is not a counter: {name:?}"),
            anchor,
        );
    }

    pub(crate) fn not_gauge_warning(&self, name: &str, anchor: &str) {
        self.annotate(
            AnnotationLevel::Warning,
            format!("this native histogram metric is not a gauge: {name:?}"),
            anchor,
        );
    }
}

/// `resets` or `changes` over a window of floats and histograms (a change between the two
/// kinds counts); anchored, from the last sample at or before the window's start.
fn resets_or_changes(name: &str, s: &Series, arg: &RangeArg, ts: i64) -> Option<Sample> {
    let m = &s.metric;
    let mut pts = merged(s);
    if arg.mode == RangeMode::Anchored {
        // From the last sample at or before the window's start.
        let t = |p: &Pt| match p {
            Pt::F(p) => p.t,
            Pt::H(p) => p.t,
        };
        let inside = pts.partition_point(|p| t(p) <= arg.range_start);
        if inside == pts.len() {
            return None;
        }
        pts.drain(..inside.saturating_sub(1));
    }
    let st_reset = |a: &Pt, b: &Pt| {
        let (a_st, a_t) = start_of(s, a);
        let (b_st, b_t) = start_of(s, b);
        is_st_reset(a_st, a_t, b_st, b_t)
    };
    let n = pts
        .windows(2)
        .filter(|w| match (&w[0], &w[1]) {
            (Pt::F(a), Pt::F(b)) if name == "resets" => b.f < a.f || st_reset(&w[0], &w[1]),
            (Pt::F(a), Pt::F(b)) => !(b.f == a.f || (b.f.is_nan() && a.f.is_nan())),
            (Pt::H(a), Pt::H(b)) if name == "resets" => {
                st_reset(&w[0], &w[1]) || b.h.detect_reset(&a.h)
            }
            (Pt::H(a), Pt::H(b)) => !same_histogram(&a.h, &b.h),
            _ => true,
        })
        .count();
    Some(result(m, ts, n as f64, None))
}

/// `first_over_time`, `last_over_time` and their `ts_of_` forms over a window of floats
/// and histograms.
fn first_or_last(name: &str, s: &Series, ts: i64) -> Option<Sample> {
    let m = &s.metric;
    let pts = merged(s);
    let p = if matches!(name, "last_over_time" | "ts_of_last_over_time") {
        pts.last()
    } else {
        pts.first()
    }?;
    if name.starts_with("ts_of_") {
        let t = match p {
            Pt::F(p) => p.t,
            Pt::H(p) => p.t,
        };
        return Some(result(m, ts, t as f64 / 1000.0, None));
    }
    let mut out = match p {
        Pt::F(p) => result(m, ts, p.f, None),
        Pt::H(p) => Sample {
            h: Some(p.h.clone()),
            ..result(m, ts, 0.0, None)
        },
    };
    out.drop_name = s.drop_name;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::QueryControl;
    use crate::histogram::notation::parse;

    #[test]
    fn summing_histograms_stops_with_the_query() {
        let h = parse("count:1 sum:1 buckets:[1]").expect("notation").h;
        let hs = vec![&h; 3];
        let control = QueryControl::new();
        let stop = Stop::new(None, &control);
        let mut notes = SumNotes::default();
        for sum in [sum_histograms, avg_histograms] {
            let v = sum(&hs, &mut notes, &stop)
                .expect("running")
                .expect("one layout");
            assert!(v.is_some());
        }
        control.cancel();
        for sum in [sum_histograms, avg_histograms] {
            let err = sum(&hs, &mut notes, &stop).expect_err("cancelled");
            assert!(err.message().contains("canceled"), "{err}");
            // A single histogram needs no addition, so nothing polls.
            assert!(sum(&hs[..1], &mut notes, &stop).is_ok());
        }
    }
}
