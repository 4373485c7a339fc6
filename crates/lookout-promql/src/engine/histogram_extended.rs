//! Native histograms under the `anchored` and `smoothed` modifiers: `rate`, `increase`
//! and `delta` from the (interpolated) histograms at the window's edges, and the smoothed
//! instant selector (Prometheus's `extendedHistogramRate` and `interpolateHistograms`).

use std::sync::Arc;

use super::{
    AnnotationLevel, Evaluator, FPoint, RangeArg, RangeMode, Sample, Series, edge_indices,
};
use crate::histogram::{CounterResetHint, FloatHistogram, HPoint};
use crate::storage::{SeriesData, is_stale};

/// A failed combination: exponential and custom buckets mixed.
struct Mixed;

impl Evaluator<'_> {
    /// `a + b` or `a - b` in place, raising the reconciliation info.
    fn combine(
        &self,
        a: &mut FloatHistogram,
        b: &FloatHistogram,
        sub: bool,
        anchor: &str,
    ) -> Result<(), Mixed> {
        let r = if sub { a.sub(b) } else { a.add(b) };
        let c = r.map_err(|_| Mixed)?;
        if c.nhcb_bounds_reconciled {
            self.reconciled_info(if sub { "subtraction" } else { "addition" }, anchor);
        }
        Ok(())
    }

    /// The histogram at `t` between `(t1, h1)` and `(t2, h2)`; after a counter reset the
    /// counter is taken to restart from zero.
    fn interpolate_histograms(
        &self,
        (t1, h1): (i64, &FloatHistogram),
        (t2, h2): (i64, &FloatHistogram),
        t: i64,
        is_counter: bool,
        anchor: &str,
    ) -> Result<FloatHistogram, Mixed> {
        if t == t1 {
            return Ok(h1.clone());
        }
        if t == t2 {
            return Ok(h2.clone());
        }
        let fraction = (t - t1) as f64 / (t2 - t1) as f64;
        let mut out = h2.clone();
        if is_counter && h2.detect_reset(h1) {
            out.mul(fraction);
            return Ok(out);
        }
        self.combine(&mut out, h1, true, anchor)?;
        out.mul(fraction);
        self.combine(&mut out, h1, false, anchor)?;
        Ok(out)
    }

    fn edge_histogram(
        &self,
        h: &[HPoint],
        (a, b): (usize, usize),
        t: i64,
        interpolate: bool,
        is_counter: bool,
        anchor: &str,
    ) -> Result<FloatHistogram, Mixed> {
        if interpolate && b < h.len() {
            return self.interpolate_histograms(
                (h[a].t, &h[a].h),
                (h[b].t, &h[b].h),
                t,
                is_counter,
                anchor,
            );
        }
        Ok((*h[a].h).clone())
    }

    /// `rate`/`increase`/`delta` over an anchored or smoothed window of histograms.
    pub(crate) fn extended_histogram_rate(
        &self,
        s: &Series,
        arg: &RangeArg,
        is_counter: bool,
        is_rate: bool,
        anchor: &str,
    ) -> Option<FloatHistogram> {
        let h = &s.histograms;
        let smoothed = arg.mode == RangeMode::Smoothed;
        let name = s.metric.metric_name().unwrap_or("");
        let times: Vec<FPoint> = h.iter().map(|p| FPoint { t: p.t, f: 0.0 }).collect();
        let (first, last) = edge_indices(&times, arg.range_start, arg.range_end, smoothed)?;
        let custom = h[first].h.uses_custom_buckets();
        for p in &h[first..=last] {
            if p.h.uses_custom_buckets() != custom {
                self.warn_mixed_schemas(name, anchor);
                return None;
            }
            if is_counter && p.h.counter_reset_hint == CounterResetHint::Gauge {
                self.not_counter_warning(name, anchor);
            }
        }
        let (start, end) = (arg.range_start, arg.range_end);
        let edges = || -> Result<(FloatHistogram, FloatHistogram), Mixed> {
            let left_i = smoothed && h[first].t < start;
            let left =
                self.edge_histogram(h, (first, first + 1), start, left_i, is_counter, anchor)?;
            let right_i = smoothed && last > 0 && h[last].t > end;
            let right = if right_i {
                self.edge_histogram(h, (last - 1, last), end, true, is_counter, anchor)?
            } else {
                (*h[last].h).clone()
            };
            Ok((left, right))
        };
        let Ok((left, right)) = edges() else {
            self.warn_mixed_schemas(name, anchor);
            return None;
        };
        let gauge = |x: &FloatHistogram| x.counter_reset_hint == CounterResetHint::Gauge;
        if !is_counter && (!gauge(&left) || !gauge(&right)) {
            self.not_gauge_warning(name, anchor);
        }
        let mut result = right.clone();
        if self.combine(&mut result, &left, true, anchor).is_err() {
            self.warn_mixed_schemas(name, anchor);
            return None;
        }
        if is_counter {
            let correction =
                self.reset_correction(h, (first, last), (&left, &right), start, smoothed, anchor);
            match correction {
                Err(Mixed) => {
                    self.warn_mixed_schemas(name, anchor);
                    return None;
                }
                Ok(Some(c)) => {
                    if self.combine(&mut result, &c, false, anchor).is_err() {
                        self.warn_mixed_schemas(name, anchor);
                        return None;
                    }
                }
                Ok(None) => {}
            }
        }
        if is_rate {
            result.div(arg.range as f64 / 1000.0);
        }
        result.counter_reset_hint = CounterResetHint::Gauge;
        result.compact();
        Some(result)
    }

    /// What counter resets inside the window add to `right - left`.
    fn reset_correction(
        &self,
        h: &[HPoint],
        (first_idx, last_idx): (usize, usize),
        (left, right): (&FloatHistogram, &FloatHistogram),
        start: i64,
        smoothed: bool,
        anchor: &str,
    ) -> Result<Option<FloatHistogram>, Mixed> {
        let mut first = first_idx + 1;
        let mut prev: &FloatHistogram = left;
        if smoothed
            && h[first_idx].t < start
            && first_idx + 1 < h.len()
            && h[first_idx + 1].h.detect_reset(&h[first_idx].h)
        {
            prev = &h[first_idx + 1].h;
            first += 1;
        }
        // The last sample is `right` (or what it was interpolated from): left out.
        let end = last_idx; // exclusive
        if first > end {
            return Ok(None);
        }
        let mut correction: Option<FloatHistogram> = None;
        let mut add = |c: &FloatHistogram| -> Result<(), Mixed> {
            match &mut correction {
                None => correction = Some(c.clone()),
                Some(acc) => self.combine(acc, c, false, anchor)?,
            }
            Ok(())
        };
        for p in &h[first..end] {
            if p.h.detect_reset(prev) {
                add(prev)?;
            }
            prev = &p.h;
        }
        if right.detect_reset(prev) {
            add(prev)?;
        }
        Ok(correction)
    }

    /// `x smoothed` at `t` for a series with histograms: the histogram interpolated
    /// between the samples around `t` within the lookback delta (the previous one when
    /// there is no next yet).
    pub(crate) fn smoothed_histogram(
        &self,
        sd: &SeriesData,
        t: i64,
        ts: i64,
        anchor: &str,
    ) -> Option<Sample> {
        let (lo, hi) = (self.window_open(t, self.lookback), t + self.lookback);
        let in_window = |pt: i64| pt > lo && pt <= hi;
        let name = sd.labels.metric_name().unwrap_or("");
        if sd.samples.iter().any(|s| in_window(s.t) && !is_stale(s.v)) {
            self.annotate(
                AnnotationLevel::Warning,
                format!("encountered a mix of histograms and floats for metric name {name:?}"),
                anchor,
            );
            return None;
        }
        let a = sd.histograms.partition_point(|p| p.t <= lo);
        let b = sd.histograms.partition_point(|p| p.t <= hi);
        let hs = &sd.histograms[a..b];
        let i = hs.partition_point(|p| p.t < t);
        let h = if i < hs.len() && hs[i].t == t {
            (*hs[i].h).clone()
        } else if i > 0 && i < hs.len() {
            let (prev, next) = (&hs[i - 1], &hs[i]);
            if prev.h.uses_custom_buckets() != next.h.uses_custom_buckets() {
                self.warn_mixed_schemas(name, anchor);
                return None;
            }
            let gauge = |x: &FloatHistogram| x.counter_reset_hint == CounterResetHint::Gauge;
            let is_counter = !gauge(&prev.h) || !gauge(&next.h);
            match self.interpolate_histograms(
                (prev.t, &prev.h),
                (next.t, &next.h),
                t,
                is_counter,
                anchor,
            ) {
                Ok(h) => h,
                Err(Mixed) => {
                    self.warn_mixed_schemas(name, anchor);
                    return None;
                }
            }
        } else if i > 0 {
            let mut h = (*hs[i - 1].h).clone();
            h.counter_reset_hint = CounterResetHint::Unknown;
            h
        } else {
            return None;
        };
        Some(Sample {
            metric: sd.labels.clone(),
            t: ts,
            f: 0.0,
            drop_name: false,
            h: Some(Arc::new(h)),
        })
    }
}
