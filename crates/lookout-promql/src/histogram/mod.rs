//! Float native histograms, as Prometheus defines them (`model/histogram`): exponential
//! schemas -4..=8 with a zero bucket, and the custom-bucket schema -53 whose bucket
//! bounds are listed in `custom_values`.
//!
//! Buckets are held sparsely as `(index, count)` pairs sorted by index, one list for the
//! positive and one for the negative side. Prometheus's spans are only a compact wire
//! encoding of the same thing ([`FloatHistogram::buckets_from_spans`] and
//! [`FloatHistogram::spans`] convert), so operations here work on indexes directly.
//! Histograms from outside are validated first (`check_structure`), which keeps bucket
//! indexes within the range a schema can represent, far from the ends of `i32`.
//! A bucket may hold an explicit 0 (a test may list one); [`FloatHistogram::compact`]
//! drops them.
//!
//! Bucket `i` of an exponential schema `s` covers `(2^((i-1)/2^s), 2^(i/2^s)]`; bucket
//! `i` of a custom-bucket histogram covers `(custom_values[i-1], custom_values[i]]`, with
//! `-Inf` below the first bound and `+Inf` above the last.

mod bounds;
pub mod nhcb;
pub mod notation;
mod ops;
pub mod stats;
mod trim;
mod validate;

use std::sync::Arc;

pub use bounds::{BucketRange, BucketSide, bucket_upper};
pub use ops::HistogramError;
pub use validate::{exponential_index_range, valid_schema};

/// Prometheus's `FloatHistogram.String()` (`{count:2, sum:3, (0.5,1]:2}`).
pub fn go_string(h: &FloatHistogram) -> String {
    crate::engine::histogram_string(h)
}

/// The schema of custom-bucket histograms (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// Lowest exponential schema.
pub const MIN_SCHEMA: i32 = -4;
/// Highest exponential schema.
pub const MAX_SCHEMA: i32 = 8;

/// What a histogram says about counter resets relative to the previous sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    /// Not known (the default).
    #[default]
    Unknown,
    /// A counter reset happened before this sample.
    Reset,
    /// No counter reset happened.
    NotReset,
    /// A gauge histogram: counts may go down.
    Gauge,
}

impl CounterResetHint {
    /// The word the test notation uses.
    pub fn word(self) -> &'static str {
        match self {
            CounterResetHint::Unknown => "unknown",
            CounterResetHint::Reset => "reset",
            CounterResetHint::NotReset => "not_reset",
            CounterResetHint::Gauge => "gauge",
        }
    }
}

/// One populated (or explicitly empty) bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Bucket index in the histogram's schema.
    pub index: i32,
    /// Observations in the bucket.
    pub count: f64,
}

/// A float native histogram.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FloatHistogram {
    /// Resolution: -4..=8 exponential, or [`CUSTOM_BUCKETS_SCHEMA`].
    pub schema: i32,
    /// Observations with an absolute value up to this go to the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of the observations.
    pub sum: f64,
    /// Positive buckets sorted by index.
    pub positive: Vec<Bucket>,
    /// Negative buckets sorted by index (index `i` mirrors positive bucket `i`).
    pub negative: Vec<Bucket>,
    /// Upper bounds of the custom buckets (custom-bucket schema only), ascending.
    pub custom_values: Arc<[f64]>,
    /// Counter reset hint.
    pub counter_reset_hint: CounterResetHint,
}

/// A span of consecutive buckets in Prometheus's encoding: `offset` is the gap to the
/// end of the previous span (to index 0 for the first), `length` the buckets in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Gap before the span.
    pub offset: i32,
    /// Buckets in the span.
    pub length: u32,
}

/// A histogram at a point in time.
#[derive(Clone, Debug, PartialEq)]
pub struct HPoint {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The histogram (shared: selections and results clone points often).
    pub h: Arc<FloatHistogram>,
}

impl FloatHistogram {
    /// Whether this is a custom-bucket histogram.
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Buckets from Prometheus's span encoding; `None` when the spans do not cover exactly
    /// `counts.len()` buckets or an index overflows.
    pub fn buckets_from_spans(spans: &[Span], counts: &[f64]) -> Option<Vec<Bucket>> {
        let mut out = Vec::with_capacity(counts.len());
        let mut idx: i64 = 0;
        let mut k = 0usize;
        for (n, s) in spans.iter().enumerate() {
            idx += s.offset as i64;
            if n > 0 && s.offset < 0 {
                return None;
            }
            for _ in 0..s.length {
                let count = *counts.get(k)?;
                out.push(Bucket {
                    index: i32::try_from(idx).ok()?,
                    count,
                });
                k += 1;
                idx += 1;
            }
        }
        (k == counts.len()).then_some(out)
    }

    /// The span encoding of sorted `buckets` (consecutive indexes share a span). A gap
    /// wider than an `i32` offset (only between indexes near both ends of `i32`) is
    /// bridged by empty spans, so the encoding stays exact.
    pub fn spans(buckets: &[Bucket]) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        let mut next = 0i64;
        for (n, b) in buckets.iter().enumerate() {
            let idx = i64::from(b.index);
            match spans.last_mut() {
                Some(last) if n > 0 && idx == next && last.length < u32::MAX => {
                    last.length += 1;
                }
                _ => {
                    let mut gap = idx - next;
                    while gap > i64::from(i32::MAX) {
                        spans.push(Span {
                            offset: i32::MAX,
                            length: 0,
                        });
                        gap -= i64::from(i32::MAX);
                    }
                    spans.push(Span {
                        offset: i32::try_from(gap).unwrap_or(i32::MIN),
                        length: 1,
                    });
                }
            }
            next = idx + 1;
        }
        spans
    }

    /// Drops buckets holding exactly 0 (what Prometheus's `Compact(0)` leaves out).
    pub fn compact(&mut self) {
        self.positive.retain(|b| b.count != 0.0);
        self.negative.retain(|b| b.count != 0.0);
    }

    /// Multiplies every count and the sum by `factor`; a negative factor makes a gauge.
    pub fn mul(&mut self, factor: f64) {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        for b in self.positive.iter_mut().chain(self.negative.iter_mut()) {
            b.count *= factor;
        }
        if factor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Divides every count and the sum by `divisor`; dividing by 0 removes the buckets.
    pub fn div(&mut self, divisor: f64) {
        self.zero_count /= divisor;
        self.count /= divisor;
        self.sum /= divisor;
        if divisor == 0.0 {
            self.positive.clear();
            self.negative.clear();
            return;
        }
        for b in self.positive.iter_mut().chain(self.negative.iter_mut()) {
            b.count /= divisor;
        }
        if divisor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Whether a count, the sum or a bucket is infinite.
    pub fn has_overflow(&self) -> bool {
        !self.count.is_finite() && !self.count.is_nan()
            || self.sum.is_infinite()
            || self.zero_count.is_infinite()
            || self
                .positive
                .iter()
                .chain(&self.negative)
                .any(|b| b.count.is_infinite())
    }

    /// Equality as Prometheus's test harness compares histograms: both compacted, floats
    /// within the relative tolerance `eps`, the counter reset hint only when `check_hint`.
    pub fn matches(&self, other: &FloatHistogram, eps: f64, check_hint: bool) -> bool {
        let close = |a: f64, b: f64| crate::engine::almost_equal_pub(a, b, eps);
        if self.schema != other.schema
            || !close(self.count, other.count)
            || !close(self.sum, other.sum)
            || self.zero_threshold != other.zero_threshold
            || !close(self.zero_count, other.zero_count)
        {
            return false;
        }
        if self.uses_custom_buckets()
            && !custom_bounds_match(&self.custom_values, &other.custom_values)
        {
            return false;
        }
        if check_hint && self.counter_reset_hint != other.counter_reset_hint {
            return false;
        }
        let same = |a: &[Bucket], b: &[Bucket]| {
            let a = a.iter().filter(|x| x.count != 0.0);
            let b: Vec<&Bucket> = b.iter().filter(|x| x.count != 0.0).collect();
            a.clone().count() == b.len()
                && a.zip(b)
                    .all(|(x, y)| x.index == y.index && close(x.count, y.count))
        };
        same(&self.positive, &other.positive) && same(&self.negative, &other.negative)
    }
}

/// Whether two custom-bucket bound lists are the same (bit for bit, as Prometheus).
pub fn custom_bounds_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(indexes: &[i32]) -> Vec<Bucket> {
        indexes
            .iter()
            .map(|&index| Bucket { index, count: 1.0 })
            .collect()
    }

    #[test]
    fn spans_round_trip_at_the_ends_of_i32() {
        for indexes in [
            vec![-3, -2, 0, 5, 6],
            vec![i32::MIN, i32::MIN + 1, -1, 0, i32::MAX - 1, i32::MAX],
            vec![i32::MIN, i32::MAX],
            vec![i32::MAX],
        ] {
            let b = buckets(&indexes);
            let spans = FloatHistogram::spans(&b);
            let counts = vec![1.0; b.len()];
            assert_eq!(
                FloatHistogram::buckets_from_spans(&spans, &counts),
                Some(b),
                "{spans:?}"
            );
        }
        let spans = FloatHistogram::spans(&buckets(&[i32::MIN, i32::MAX]));
        assert_eq!(spans[0].offset, i32::MIN);
        assert!(spans[1..].iter().all(|s| s.offset >= 0));
    }

    #[test]
    fn spans_past_i32_or_the_counts_are_refused() {
        let span = |offset, length| Span { offset, length };
        let from = FloatHistogram::buckets_from_spans;
        // Indexes past i32::MAX, huge lengths with few counts, a later negative offset.
        assert_eq!(from(&[span(i32::MAX, 2)], &[1.0, 1.0]), None);
        assert_eq!(from(&[span(i32::MAX, 1), span(0, 1)], &[1.0, 1.0]), None);
        assert_eq!(from(&[span(i32::MAX - 1, u32::MAX)], &[1.0]), None);
        assert_eq!(from(&[span(0, 1), span(-1, 1)], &[1.0, 1.0]), None);
        assert_eq!(from(&[span(i32::MIN, 1)], &[1.0, 1.0]), None);
        assert_eq!(
            from(&[span(i32::MAX, 1)], &[2.0]),
            Some(vec![Bucket {
                index: i32::MAX,
                count: 2.0
            }])
        );
    }
}
