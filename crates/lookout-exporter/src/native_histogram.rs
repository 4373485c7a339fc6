//! Sparse exponential buckets (a Prometheus native histogram), kept beside the classic
//! buckets of the per-target histograms and published when a scraper asks for protobuf.
//!
//! The parameters are client_golang's for `NativeHistogramBucketFactor: 1.1`: schema 3 (each
//! bucket is 2^(1/8) ≈ 1.09 times as wide as the one below it), a zero bucket of width
//! 2^-128, and at most [`MAX_BUCKETS`] populated buckets. An observation that would go over
//! that limit halves the resolution (the schema drops by one and each pair of neighbouring
//! buckets is merged into one) until it fits again, so one histogram never holds more than
//! [`MAX_BUCKETS`] buckets whatever it is fed: at the lowest schema, -4, all of the finite
//! floats above the zero bucket fit in 72 buckets per sign.
//!
//! Bucket `i` at schema `s` holds the values in `(2^((i-1)·2^-s), 2^(i·2^-s)]`; negative
//! values go to the mirrored negative buckets. NaN goes to no bucket (it still counts in the
//! histogram's count and sum, as in client_golang).

/// The schema a new histogram starts at (bucket factor 2^(1/8)).
pub const START_SCHEMA: i8 = 3;
/// The lowest schema the resolution is reduced to.
pub const MIN_SCHEMA: i8 = -4;
/// Observations with `|v| <= ZERO_THRESHOLD` (2^-128) go to the zero bucket.
pub const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;
/// The most populated buckets (both signs together) a histogram keeps.
pub const MAX_BUCKETS: usize = 160;

/// The upper bounds of the eight buckets of schema 3 within one power of two, as fractions
/// in `[0.5, 1)`: `2^(j/8 - 1)` for `j` in `0..8`, each the nearest double.
const SCHEMA3_FRACTION_BOUNDS: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    std::f64::consts::FRAC_1_SQRT_2,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_5,
    0.917_004_043_204_671_2,
];

/// A native histogram's buckets (the count and sum live in the classic histogram beside it).
#[derive(Debug, Clone, PartialEq)]
pub struct NativeHistogram {
    schema: i8,
    zero_count: u64,
    /// Populated buckets by ascending index, `(index, count)`, count > 0.
    positive: Vec<(i32, u64)>,
    negative: Vec<(i32, u64)>,
}

impl Default for NativeHistogram {
    fn default() -> Self {
        NativeHistogram {
            schema: START_SCHEMA,
            zero_count: 0,
            positive: Vec::new(),
            negative: Vec::new(),
        }
    }
}

/// The index of the schema-3 bucket that holds `v` (finite or infinite, `v > 0`).
///
/// `v = frac · 2^exp` with `frac` in `[0.5, 1)`; the bucket is `8·(exp-1)` plus the first of
/// the eight fraction bounds that is at least `frac`. `+Inf` goes with the largest finite
/// value, into the bucket whose upper bound, 2^1024, is itself infinite.
pub fn schema3_index(v: f64) -> i32 {
    let v = v.min(f64::MAX);
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // A subnormal: scale it into the normal range first (2^64 is exact).
        return schema3_index(v * 18_446_744_073_709_551_616.0) - 64 * 8;
    }
    let exp = biased - 1022;
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    let within = SCHEMA3_FRACTION_BOUNDS.partition_point(|bound| *bound < frac) as i32;
    within + (exp - 1) * 8
}

/// The index at a schema `shift` lower of bucket `index`: bucket `i` merges into bucket
/// `ceil(i / 2^shift)`.
fn coarser(index: i32, shift: u32) -> i32 {
    // Floor division by a power of two is an arithmetic shift, for negative indexes too.
    (index + (1 << shift) - 1) >> shift
}

/// Adds one to the bucket `index` of a sorted list, inserting it when new.
fn increment(buckets: &mut Vec<(i32, u64)>, index: i32) {
    match buckets.binary_search_by_key(&index, |(i, _)| *i) {
        Ok(at) => buckets[at].1 += 1,
        Err(at) => buckets.insert(at, (index, 1)),
    }
}

/// Merges each pair of neighbouring buckets into one (the schema drops by one).
fn halve(buckets: &mut Vec<(i32, u64)>) {
    let mut kept = 0;
    for at in 0..buckets.len() {
        let (index, count) = buckets[at];
        let index = coarser(index, 1);
        if kept > 0 && buckets[kept - 1].0 == index {
            buckets[kept - 1].1 += count;
        } else {
            buckets[kept] = (index, count);
            kept += 1;
        }
    }
    buckets.truncate(kept);
}

impl NativeHistogram {
    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        if v.abs() <= ZERO_THRESHOLD {
            self.zero_count += 1;
            return;
        }
        let shift = (START_SCHEMA - self.schema) as u32;
        let index = coarser(schema3_index(v.abs()), shift);
        let side = if v > 0.0 {
            &mut self.positive
        } else {
            &mut self.negative
        };
        increment(side, index);
        while self.positive.len() + self.negative.len() > MAX_BUCKETS && self.schema > MIN_SCHEMA {
            halve(&mut self.positive);
            halve(&mut self.negative);
            self.schema -= 1;
        }
    }

    /// The current schema.
    pub fn schema(&self) -> i8 {
        self.schema
    }

    /// Observations in the zero bucket.
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// The populated positive buckets, `(index, count)` by ascending index.
    pub fn positive(&self) -> &[(i32, u64)] {
        &self.positive
    }

    /// The populated negative buckets (of `|v|`), `(index, count)` by ascending index.
    pub fn negative(&self) -> &[(i32, u64)] {
        &self.negative
    }
}

/// Spans and deltas of one side, as the exposition carries them: each span is
/// `(offset, length)`, the first offset is the first bucket's index and each later one the
/// number of empty buckets skipped; a gap of one or two empty buckets is cheaper written as
/// zero counts inside a span. Deltas are each bucket's count minus the previous bucket's.
pub fn spans_and_deltas(buckets: &[(i32, u64)]) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let mut previous_count = 0i64;
    let mut next_index = 0i32;
    for &(index, count) in buckets {
        let gap = index - next_index;
        match spans.last_mut() {
            Some(span) if gap <= 2 => {
                for _ in 0..gap {
                    deltas.push(-previous_count);
                    previous_count = 0;
                }
                span.1 += gap as u32 + 1;
            }
            Some(_) => spans.push((gap, 1)),
            None => spans.push((index, 1)),
        }
        let count = count as i64;
        deltas.push(count - previous_count);
        previous_count = count;
        next_index = index + 1;
    }
    (spans, deltas)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upper bound of bucket `index` at schema 3, from `powf`.
    fn upper_bound(index: i32) -> f64 {
        2f64.powf(f64::from(index) / 8.0)
    }

    #[test]
    fn fraction_bounds_are_the_nearest_doubles() {
        for (j, bound) in SCHEMA3_FRACTION_BOUNDS.iter().enumerate() {
            assert_eq!(*bound, 2f64.powf(j as f64 / 8.0 - 1.0), "bound {j}");
        }
        assert_eq!(ZERO_THRESHOLD, 2f64.powi(-128));
    }

    #[test]
    fn schema3_index_of_known_values() {
        // Powers of two are upper bounds: 1 = 2^(0/8) closes bucket 0, 2 = 2^(8/8) bucket 8.
        assert_eq!(schema3_index(1.0), 0);
        assert_eq!(schema3_index(2.0), 8);
        assert_eq!(schema3_index(0.5), -8);
        assert_eq!(schema3_index(0.25), -16);
        // Just above a bound goes to the next bucket.
        assert_eq!(schema3_index(1.0 + f64::EPSILON), 1);
        assert_eq!(schema3_index(1.05), 1);
        assert_eq!(schema3_index(1.1), 2);
        // 10 ms: 2^-6.64 → bucket ceil(-6.64·8) = -53.
        assert_eq!(schema3_index(0.01), -53);
        // 1.5 s: log2 = 0.585, ·8 = 4.68 → 5.
        assert_eq!(schema3_index(1.5), 5);
        assert_eq!(schema3_index(f64::MAX), 8192);
        assert_eq!(schema3_index(f64::INFINITY), 8192);
        assert_eq!(schema3_index(ZERO_THRESHOLD * 1.0001), -1023);
        assert_eq!(schema3_index(f64::MIN_POSITIVE), -1022 * 8);
        assert_eq!(schema3_index(f64::MIN_POSITIVE / 4.0), -1024 * 8);
    }

    #[test]
    fn every_value_lies_within_its_bucket() {
        let mut v = 1e-12;
        while v < 1e12 {
            let i = schema3_index(v);
            assert!(v <= upper_bound(i), "{v} above bucket {i}");
            assert!(v > upper_bound(i - 1), "{v} not above bucket {}", i - 1);
            // The bounds themselves belong to the bucket they close.
            let bound = upper_bound(i);
            assert_eq!(schema3_index(bound), i, "bound of {i}");
            v *= 1.013;
        }
    }

    #[test]
    fn observations_fill_buckets_by_sign() {
        let mut h = NativeHistogram::default();
        for v in [0.01, 0.01, 1.05, -1.05, 0.0, -1e-40, f64::NAN] {
            h.observe(v);
        }
        assert_eq!(h.schema(), 3);
        assert_eq!(h.zero_count(), 2);
        assert_eq!(h.positive(), &[(-53, 2), (1, 1)]);
        assert_eq!(h.negative(), &[(1, 1)]);
    }

    #[test]
    fn coarser_index_is_the_merged_bucket() {
        // Schema 2 bucket j holds schema 3 buckets 2j-1 and 2j.
        assert_eq!(coarser(1, 1), 1);
        assert_eq!(coarser(2, 1), 1);
        assert_eq!(coarser(0, 1), 0);
        assert_eq!(coarser(-1, 1), 0);
        assert_eq!(coarser(-2, 1), -1);
        assert_eq!(coarser(-3, 1), -1);
        // Three halvings: schema 0, where bucket k is (2^(k-1), 2^k].
        assert_eq!(coarser(schema3_index(1.5), 3), 1);
        assert_eq!(coarser(schema3_index(0.01), 3), -6);
    }

    #[test]
    fn going_over_the_limit_halves_the_resolution() {
        let mut h = NativeHistogram::default();
        // 160 neighbouring buckets fit at schema 3: 1, 2^(1/8), ... (each a bound).
        for i in 0..160 {
            h.observe(upper_bound(i));
        }
        assert_eq!(h.schema(), 3);
        assert_eq!(h.positive().len(), 160);
        assert_eq!(h.positive()[0], (0, 1));
        // The 161st: pairs merge, bucket 0 alone (it pairs with -1), then (1,2), (3,4), ...
        h.observe(upper_bound(160));
        assert_eq!(h.schema(), 2);
        assert_eq!(h.positive().len(), 81);
        assert_eq!(h.positive()[0], (0, 1));
        assert_eq!(h.positive()[1], (1, 2));
        assert_eq!(h.positive()[80], (80, 2));
        let total: u64 = h.positive().iter().map(|(_, c)| c).sum();
        assert_eq!(total, 161);
        // Later observations land at the new schema: 2^(1/4) closes bucket 1 there.
        h.observe(upper_bound(2));
        assert_eq!(h.positive()[1], (1, 3));
    }

    #[test]
    fn memory_is_bounded_whatever_the_values() {
        let mut h = NativeHistogram::default();
        // Every power of two from the zero threshold to the largest double, both signs.
        for e in -127..=1023 {
            h.observe(2f64.powi(e));
            h.observe(-(2f64.powi(e)));
            assert!(h.positive().len() + h.negative().len() <= MAX_BUCKETS);
        }
        h.observe(f64::INFINITY);
        h.observe(f64::NEG_INFINITY);
        assert!(h.positive().len() + h.negative().len() <= MAX_BUCKETS);
        assert_eq!(h.schema(), MIN_SCHEMA);
        // At schema -4 a bucket spans 2^16: 72 buckets per sign from 2^-128 to infinity.
        assert_eq!((h.positive().len(), h.negative().len()), (72, 72));
        let total: u64 = h
            .positive()
            .iter()
            .chain(h.negative())
            .map(|(_, c)| c)
            .sum();
        assert_eq!(total, 2 * 1151 + 2);
    }

    #[test]
    fn spans_and_deltas_follow_the_exposition() {
        // Buckets -53 (2), -52 (1), gap of 2, -49 (4), gap of 3, -45 (4).
        let (spans, deltas) = spans_and_deltas(&[(-53, 2), (-52, 1), (-49, 4), (-45, 4)]);
        assert_eq!(spans, vec![(-53, 5), (3, 1)]);
        assert_eq!(deltas, vec![2, -1, -1, 0, 4, 0]);
        assert_eq!(spans_and_deltas(&[]), (vec![], vec![]));
        let (spans, deltas) = spans_and_deltas(&[(3, 7)]);
        assert_eq!((spans, deltas), (vec![(3, 1)], vec![7]));
    }
}
