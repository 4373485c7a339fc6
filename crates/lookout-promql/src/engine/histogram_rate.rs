//! `rate`, `increase` and `delta` over native histograms (Prometheus's `histogramRate`
//! and the extrapolation of `extrapolatedRate`).

use super::functions::{is_st_reset, st_overlap_at, st_overlap_warning};
use super::{AnnotationLevel, Evaluator, RangeArg, Series};
use crate::histogram::{CounterResetHint, FloatHistogram};

/// How far the difference between the first and last sample is extrapolated to the
/// window's edges: the factor the difference is multiplied with. `first` is the first
/// sample's count and `result` the difference's count. `from_start`: the first sample's
/// start time lies inside the window, so the window starts there from zero (Prometheus
/// assumes a zero sample at that time instead of extrapolating to the left); `None` for a
/// single sample without one.
fn extrapolation_factor(
    s: &Series,
    arg: &RangeArg,
    (first, result): (f64, f64),
    from_start: Option<i64>,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    let n_minus_one = s.histograms.len().checked_sub(1)?;
    let (first_t, last_t) = (s.histograms[0].t, s.histograms[n_minus_one].t);
    let mut to_start = (first_t - arg.range_start) as f64 / 1000.0;
    let mut to_end = (arg.range_end - last_t) as f64 / 1000.0;
    let mut sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = if n_minus_one > 0 {
        sampled / n_minus_one as f64
    } else {
        0.0
    };
    let threshold = avg * 1.1;
    if let Some(st) = from_start {
        to_start = 0.0;
        sampled = (last_t - st) as f64 / 1000.0;
    } else if n_minus_one == 0 {
        return None;
    } else {
        if to_start >= threshold {
            to_start = avg / 2.0;
        }
        if is_counter && result > 0.0 && first >= 0.0 {
            let to_zero = sampled * (first / result);
            if to_zero < to_start {
                to_start = to_zero;
            }
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = if sampled != 0.0 {
        (sampled + to_start + to_end) / sampled
    } else {
        1.0
    };
    if is_rate {
        factor /= arg.range as f64 / 1000.0;
    }
    Some(factor)
}

/// The start timestamps of the histograms of `s` (empty when it has none).
pub(crate) fn histogram_sts(s: &Series) -> &[i64] {
    s.hst
        .as_deref()
        .filter(|st| st.len() == s.histograms.len())
        .unwrap_or(&[])
}

impl Evaluator<'_> {
    /// The extrapolated increase (`is_counter`) or delta of the histograms of `s`, per
    /// second with `is_rate`.
    pub(crate) fn histogram_rate(
        &self,
        s: &Series,
        arg: &RangeArg,
        is_counter: bool,
        is_rate: bool,
        anchor: &str,
    ) -> Option<FloatHistogram> {
        let pts = &s.histograms;
        let sts = histogram_sts(s);
        // A counter's first start time inside the window: the increase counts from zero
        // there, so even a single sample has one.
        let from_start = sts
            .first()
            .copied()
            .filter(|&st| is_counter && st != 0 && st > arg.range_start && st < pts[0].t);
        if pts.len() < 2 {
            let st = from_start?;
            let mut h = (*pts.first()?.h).clone();
            h.mul(extrapolation_factor(
                s,
                arg,
                (0.0, 0.0),
                Some(st),
                true,
                is_rate,
            )?);
            return Some(h);
        }
        let st_reset =
            |i: usize| i < sts.len() && is_st_reset(sts[i - 1], pts[i - 1].t, sts[i], pts[i].t);
        let name = s.metric.metric_name().unwrap_or("");
        let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
        let last = &pts[pts.len() - 1].h;
        let mut prev: FloatHistogram = (*pts[0].h).clone();
        if is_counter && (gauge(&prev) || gauge(last)) {
            self.not_counter_warning(name, anchor);
        }
        if is_counter && (st_reset(1) || pts[1].h.detect_reset(&prev)) {
            // A reset right after the first sample: its layout does not matter.
            prev = FloatHistogram {
                schema: pts[1].h.schema,
                custom_values: pts[1].h.custom_values.clone(),
                ..Default::default()
            };
        }
        let custom = prev.uses_custom_buckets();
        if last.uses_custom_buckets() != custom {
            self.warn_mixed_schemas(name, anchor);
            return None;
        }
        let mut min_schema = last.schema.min(prev.schema);
        for p in &pts[1..pts.len() - 1] {
            if !is_counter {
                continue;
            }
            if gauge(&p.h) {
                self.not_counter_warning(name, anchor);
            }
            min_schema = min_schema.min(p.h.schema);
            if p.h.uses_custom_buckets() != custom {
                self.warn_mixed_schemas(name, anchor);
                return None;
            }
        }
        let mut h = (**last).clone();
        h.reduce_resolution(min_schema);
        match h.sub(&prev) {
            Err(_) => {
                self.warn_mixed_schemas(name, anchor);
                return None;
            }
            Ok(c) if c.nhcb_bounds_reconciled => self.reconciled_info("subtraction", anchor),
            Ok(_) => {}
        }
        if is_counter {
            self.add_resets(s, &prev, &mut h, anchor)?;
        } else if !gauge(&pts[0].h) || !gauge(last) {
            self.not_gauge_warning(name, anchor);
        }
        h.counter_reset_hint = CounterResetHint::Gauge;
        h.compact();
        if from_start.is_some() && h.add(&pts[0].h).is_err() {
            self.warn_mixed_schemas(name, anchor);
            return None;
        }
        let factor = extrapolation_factor(
            s,
            arg,
            (pts[0].h.count, h.count),
            from_start,
            is_counter,
            is_rate,
        )?;
        h.mul(factor);
        Some(h)
    }

    /// Adds to the difference `h` the histogram before each counter reset among the
    /// histograms of `s` (told by the histograms or their start timestamps), `prev` standing
    /// for the first; warns once if start timestamps overlap. `None` (warned) when the
    /// histograms cannot be added.
    fn add_resets(
        &self,
        s: &Series,
        prev: &FloatHistogram,
        h: &mut FloatHistogram,
        anchor: &str,
    ) -> Option<()> {
        let (pts, sts) = (&s.histograms, histogram_sts(s));
        if st_overlap_at(sts, |i| pts[i].t, pts.len()) {
            self.annotate(
                AnnotationLevel::Warning,
                st_overlap_warning(&s.metric),
                anchor,
            );
        }
        let st_reset =
            |i: usize| i < sts.len() && is_st_reset(sts[i - 1], pts[i - 1].t, sts[i], pts[i].t);
        let mut before = prev;
        for (i, p) in pts.iter().enumerate().skip(1) {
            if st_reset(i) || p.h.detect_reset(before) {
                match h.add(before) {
                    Err(_) => {
                        self.warn_mixed_schemas(s.metric.metric_name().unwrap_or(""), anchor);
                        return None;
                    }
                    Ok(c) if c.nhcb_bounds_reconciled => self.reconciled_info("addition", anchor),
                    Ok(_) => {}
                }
            }
            before = &p.h;
        }
        Some(())
    }

    pub(crate) fn reconciled_info(&self, op: &str, anchor: &str) {
        self.annotate(
            AnnotationLevel::Info,
            format!("mismatched custom buckets were reconciled during {op}"),
            anchor,
        );
    }
}
