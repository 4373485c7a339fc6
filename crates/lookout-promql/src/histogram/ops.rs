//! Addition and subtraction of histograms (with schema and zero-bucket reconciliation),
//! resolution reduction and counter-reset detection, following Prometheus's
//! `FloatHistogram.Add`, `Sub`, `ReduceResolution` and `DetectReset`.

use std::sync::Arc;

use super::{Bucket, CounterResetHint, FloatHistogram, custom_bounds_match};

/// Why two histograms cannot be combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// One uses custom buckets, the other an exponential schema.
    #[error("cannot mix exponential and custom buckets histograms")]
    IncompatibleSchema,
}

/// What an addition or subtraction had to paper over (each is an annotation in PromQL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Combined {
    /// One side said "counter reset", the other "not a counter reset".
    pub counter_reset_collision: bool,
    /// Custom-bucket bounds differed and were reduced to the common ones.
    pub nhcb_bounds_reconciled: bool,
}

/// Bucket index `idx` of schema `from` in the coarser schema `to`.
fn target_index(idx: i32, from: i32, to: i32) -> i32 {
    (idx.saturating_sub(1) >> (from - to).clamp(0, 31)).saturating_add(1)
}

/// Maps sorted buckets to a coarser schema, merging those that land in one bucket.
fn reduce(buckets: &[Bucket], from: i32, to: i32) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets {
        let index = target_index(b.index, from, to);
        match out.last_mut() {
            Some(last) if last.index == index => last.count += b.count,
            _ => out.push(Bucket {
                index,
                count: b.count,
            }),
        }
    }
    out
}

/// Merges sorted `b` into sorted `a` (added, or subtracted with `negate`), skipping
/// buckets of `b` that `skip` says lie in the zero bucket.
fn merge(a: &[Bucket], b: &[Bucket], negate: bool, skip: impl Fn(i32) -> bool) -> Vec<Bucket> {
    let sign = if negate { -1.0 } else { 1.0 };
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j < b.len() && skip(b[j].index) {
            j += 1;
            continue;
        }
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.index == y.index => {
                out.push(Bucket {
                    index: x.index,
                    count: x.count + sign * y.count,
                });
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.index < y.index => {
                out.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push(Bucket {
                    index: y.index,
                    count: sign * y.count,
                });
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Maps custom buckets with `bounds` to the coarser common `target` bounds.
fn map_custom(buckets: &[Bucket], bounds: &[f64], target: &[f64]) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for b in buckets {
        let upper = usize::try_from(b.index)
            .ok()
            .and_then(|i| bounds.get(i).copied())
            .unwrap_or(f64::INFINITY);
        let index = target.partition_point(|t| *t < upper) as i32;
        match out.last_mut() {
            Some(last) if last.index == index => last.count += b.count,
            _ => out.push(Bucket {
                index,
                count: b.count,
            }),
        }
    }
    out
}

/// The bounds both lists have, in one pass over both (custom bounds are validated to be
/// strictly increasing), as Prometheus's `intersectCustomBucketBounds` walks them.
fn intersect(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        if x == y {
            out.push(x);
            i += 1;
            j += 1;
        } else if x < y {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

impl FloatHistogram {
    /// Reduces the resolution to exponential schema `target` (no-op when not finer).
    pub fn reduce_resolution(&mut self, target: i32) {
        if self.uses_custom_buckets() || target >= self.schema {
            return;
        }
        self.positive = reduce(&self.positive, self.schema, target);
        self.negative = reduce(&self.negative, self.schema, target);
        self.schema = target;
    }

    /// Adds `other` (in place).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<Combined, HistogramError> {
        self.combine(other, false)
    }

    /// Subtracts `other` (in place).
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<Combined, HistogramError> {
        self.combine(other, true)
    }

    fn combine(
        &mut self,
        other: &FloatHistogram,
        negate: bool,
    ) -> Result<Combined, HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let sign = if negate { -1.0 } else { 1.0 };
        let mut res = Combined {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_bounds_reconciled: false,
        };
        if !self.uses_custom_buckets() {
            let other_zero = self.reconcile_zero_buckets(other);
            self.zero_count += sign * other_zero;
        }
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            if custom_bounds_match(&self.custom_values, &other.custom_values) {
                self.positive = merge(&self.positive, &other.positive, negate, |_| false);
            } else {
                res.nhcb_bounds_reconciled = true;
                let common = intersect(&self.custom_values, &other.custom_values);
                let mine = map_custom(&self.positive, &self.custom_values, &common);
                let theirs = map_custom(&other.positive, &other.custom_values, &common);
                self.positive = merge(&mine, &theirs, negate, |_| false);
                self.custom_values = Arc::from(common);
            }
            return Ok(res);
        }
        let (mut op, mut on) = (None, None);
        if other.schema < self.schema {
            self.reduce_resolution(other.schema);
        } else if other.schema > self.schema {
            op = Some(reduce(&other.positive, other.schema, self.schema));
            on = Some(reduce(&other.negative, other.schema, self.schema));
        }
        let (zt, schema) = (self.zero_threshold, self.schema);
        let in_zero = |i: i32| super::bucket_upper(i, schema, &[]) <= zt;
        self.positive = merge(
            &self.positive,
            op.as_deref().unwrap_or(&other.positive),
            negate,
            in_zero,
        );
        self.negative = merge(
            &self.negative,
            on.as_deref().unwrap_or(&other.negative),
            negate,
            in_zero,
        );
        Ok(res)
    }

    /// Prometheus's `adjustCounterReset`: true on a reset/not-reset collision.
    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        let (mine, theirs) = (self.counter_reset_hint, other.counter_reset_hint);
        match (mine, theirs) {
            _ if mine == theirs => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.counter_reset_hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.counter_reset_hint = Unknown;
                false
            }
            _ => {
                self.counter_reset_hint = Unknown;
                true
            }
        }
    }

    /// The zero count this histogram would have with the larger zero threshold `larger`,
    /// and the threshold actually needed (moved up to a bucket boundary when `larger`
    /// falls inside a populated bucket).
    pub(crate) fn zero_count_for_threshold(&self, mut larger: f64) -> (f64, f64) {
        if larger == self.zero_threshold {
            return (self.zero_count, larger);
        }
        // Each pass either finishes or raises `larger` to a bucket bound; bounded by the
        // number of negative buckets.
        for _ in 0..=self.negative.len() + 1 {
            let mut zero = self.zero_count;
            for b in &self.positive {
                let (lo, up) = (self.lower(b.index), self.upper(b.index));
                if lo >= larger {
                    break;
                }
                zero += b.count;
                if up > larger {
                    if b.count != 0.0 {
                        larger = up;
                    }
                    break;
                }
            }
            let mut again = false;
            for b in &self.negative {
                let (lo, up) = (-self.upper(b.index), -self.lower(b.index));
                if up <= -larger {
                    break;
                }
                zero += b.count;
                if lo < -larger {
                    if b.count != 0.0 {
                        larger = -lo;
                        again = true;
                    }
                    break;
                }
            }
            if !again {
                return (zero, larger);
            }
        }
        (self.zero_count, larger)
    }

    /// Widens the zero buckets of this histogram to cover the other's; returns the zero
    /// count the other histogram has with the common threshold.
    fn reconcile_zero_buckets(&mut self, other: &FloatHistogram) -> f64 {
        let mut other_zero = other.zero_count;
        let mut other_zt = other.zero_threshold;
        for _ in 0..64 {
            if other_zt == self.zero_threshold {
                break;
            }
            if self.zero_threshold > other_zt {
                (other_zero, other_zt) = other.zero_count_for_threshold(self.zero_threshold);
            }
            if other_zt > self.zero_threshold {
                let (zc, zt) = self.zero_count_for_threshold(other_zt);
                self.zero_count = zc;
                self.zero_threshold = zt;
                self.trim_buckets_in_zero_bucket();
            }
        }
        other_zero
    }

    fn trim_buckets_in_zero_bucket(&mut self) {
        let zt = self.zero_threshold;
        let (schema, custom) = (self.schema, self.custom_values.clone());
        let lower = |i: i32| super::bucket_upper(i.saturating_sub(1), schema, &custom);
        self.positive.retain(|b| lower(b.index) >= zt);
        self.negative.retain(|b| lower(b.index) >= zt);
    }

    /// Whether this histogram, following `prev`, starts a new counter (Prometheus's
    /// `DetectReset`).
    pub fn detect_reset(&self, prev: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::Reset => return true,
            CounterResetHint::NotReset => return false,
            _ => {}
        }
        if self.count < prev.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !prev.uses_custom_buckets() {
                return true;
            }
            if !custom_bounds_match(&self.custom_values, &prev.custom_values) {
                let common = intersect(&self.custom_values, &prev.custom_values);
                let cur = map_custom(&self.positive, &self.custom_values, &common);
                let old = map_custom(&prev.positive, &prev.custom_values, &common);
                return buckets_decreased(&cur, &old);
            }
        } else if prev.uses_custom_buckets() {
            return true;
        }
        if self.schema > prev.schema || self.zero_threshold < prev.zero_threshold {
            return true;
        }
        let (prev_zero, zt) = prev.zero_count_for_threshold(self.zero_threshold);
        if zt != self.zero_threshold || self.zero_count < prev_zero {
            return true;
        }
        let above = |h: &FloatHistogram, v: &[Bucket]| -> Vec<Bucket> {
            let v = if h.schema > self.schema && !h.uses_custom_buckets() {
                reduce(v, h.schema, self.schema)
            } else {
                v.to_vec()
            };
            v.into_iter()
                .filter(|b| self.uses_custom_buckets() || self.upper(b.index) > zt)
                .collect()
        };
        buckets_decreased(&above(self, &self.positive), &above(prev, &prev.positive))
            || buckets_decreased(&above(self, &self.negative), &above(prev, &prev.negative))
    }
}

/// Whether a bucket of `prev` is missing (and populated) in `cur` or holds more there.
fn buckets_decreased(cur: &[Bucket], prev: &[Bucket]) -> bool {
    let mut j = 0;
    for p in prev {
        while j < cur.len() && cur[j].index < p.index {
            j += 1;
        }
        match cur.get(j) {
            Some(c) if c.index == p.index => {
                if c.count < p.count {
                    return true;
                }
            }
            _ => {
                if p.count != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_keeps_the_common_bounds_in_one_pass() {
        // What the quadratic filter it replaces returned, for sorted bounds.
        let naive = |a: &[f64], b: &[f64]| -> Vec<f64> {
            a.iter().filter(|x| b.contains(x)).copied().collect()
        };
        let cases: [(&[f64], &[f64]); 8] = [
            (&[], &[]),
            (&[1.0, 2.0], &[]),
            (&[1.0, 2.0, 5.0], &[2.0, 5.0, 10.0]),
            (&[-3.0, -0.0, 0.5], &[-3.0, 0.0, 0.5]),
            (&[0.1, 0.2, 0.3], &[0.4, 0.5]),
            (&[0.4, 0.5], &[0.1, 0.2, 0.3]),
            (&[1.0, 3.0, 5.0, 7.0], &[2.0, 3.0, 4.0, 7.0, 8.0]),
            (&[-1e300, 1e-300, 1e300], &[-1e300, 1e300]),
        ];
        for (a, b) in cases {
            assert_eq!(intersect(a, b), naive(a, b), "{a:?} ∩ {b:?}");
            assert_eq!(intersect(b, a), naive(b, a), "{b:?} ∩ {a:?}");
        }
        // Large lists stay linear: 100,000 bounds each, every other one shared.
        let a: Vec<f64> = (0..100_000).map(f64::from).collect();
        let b: Vec<f64> = (0..100_000).map(|i| f64::from(i) * 2.0).collect();
        assert_eq!(intersect(&a, &b).len(), 50_000);
    }

    #[test]
    fn adding_custom_buckets_with_other_bounds_uses_the_common_ones() {
        let parse = |s: &str| crate::histogram::notation::parse(s).unwrap().h;
        let mut a = parse("schema:-53 custom_values:[1 2 5] buckets:[1 2 3 4] count:10");
        let b = parse("schema:-53 custom_values:[2 5 10] buckets:[1 1 1 1] count:4");
        let res = a.add(&b).unwrap();
        assert!(res.nhcb_bounds_reconciled);
        assert_eq!(&*a.custom_values, &[2.0, 5.0]);
        let counts: Vec<(i32, f64)> = a.positive.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(counts, [(0, 4.0), (1, 4.0), (2, 6.0)]);
    }
}
