//! Bucket boundaries and the walk over all buckets in ascending order.

use super::{Bucket, FloatHistogram};

/// One bucket with its boundaries, as the bucket walks return them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketRange {
    /// Lower boundary (exclusive, except for the zero bucket).
    pub lower: f64,
    /// Upper boundary (inclusive).
    pub upper: f64,
    /// Observations in the bucket.
    pub count: f64,
}

/// Which part of a histogram a bucket is in, which says which of its boundaries are
/// inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketSide {
    /// A negative bucket: `[lower, upper)`.
    Negative,
    /// The zero bucket: `[-threshold, threshold]`.
    Zero,
    /// A positive (or custom) bucket: `(lower, upper]`.
    Positive,
}

impl BucketSide {
    /// The boundary rule of Prometheus's query API: 0 `(lower, upper]`, 1 `[lower, upper)`,
    /// 3 `[lower, upper]` (2, both open, no bucket has).
    pub fn boundary_rule(self) -> u8 {
        match self {
            BucketSide::Positive => 0,
            BucketSide::Negative => 1,
            BucketSide::Zero => 3,
        }
    }
}

/// Entry `k` of the bucket boundaries in `[0.5, 1)` at schema 8: `2^(k/256) / 2`, as
/// close as the platform's `powf` gets (within a unit in the last place); schema `s` uses
/// every `2^(8-s)`th entry. Prometheus takes these from a table whose numbers differ from
/// the correctly rounded ones by up to four units in the last place for about two thirds of
/// the entries, so a boundary can differ from the one Prometheus writes in its last digit
/// (see the README's Differences table).
fn fraction(k: i64) -> f64 {
    2f64.powf(k as f64 / 256.0) / 2.0
}

/// `frac · 2^exp`, rounded once to the nearest float (ties to even), as Go's `math.Ldexp`:
/// subnormal results keep their bits down to 2^-1074, and results below 2^-1075 are 0.
/// `frac` is in `[0.5, 1]`.
fn ldexp(frac: f64, exp: i64) -> f64 {
    // 2^e for a normal exponent (-1022..=1023): exact.
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    match exp {
        e if e > 2046 => f64::INFINITY,
        // The first product is exact; the second rounds (to infinity past the largest float).
        e if e > 1023 => frac * pow2(1023) * pow2(e - 1023),
        e if e >= -1022 => frac * pow2(e),
        // Exact into the normal range, then one rounding into the subnormal range.
        e if e >= -1075 => frac * pow2(e + 53) * pow2(-53),
        _ => 0.0,
    }
}

/// Upper bound of bucket `index` in an exponential `schema`, as Prometheus's `getBound`:
/// `2^(index / 2^schema)` from [`fraction`], down to the smallest subnormal float; the last
/// bucket of regular numbers ends at the largest float.
fn exponential_upper(index: i32, schema: i32) -> f64 {
    // Validation keeps schemas in range; clamping keeps the shifts defined regardless.
    let schema = schema.clamp(super::MIN_SCHEMA, super::MAX_SCHEMA);
    if schema < 0 {
        let exp = i64::from(index) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let idx = i64::from(index);
    let frac = fraction((idx & ((1 << schema) - 1)) << (8 - schema));
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// Upper bound of positive bucket `index` of a histogram with `schema` and `custom` bounds.
pub fn bucket_upper(index: i32, schema: i32, custom: &[f64]) -> f64 {
    if schema == super::CUSTOM_BUCKETS_SCHEMA {
        return match usize::try_from(index) {
            Ok(i) if i < custom.len() => custom[i],
            Ok(_) => f64::INFINITY,
            Err(_) => f64::NEG_INFINITY,
        };
    }
    exponential_upper(index, schema)
}

impl FloatHistogram {
    /// Upper bound of positive bucket `index`.
    pub fn upper(&self, index: i32) -> f64 {
        bucket_upper(index, self.schema, &self.custom_values)
    }

    /// Lower bound of positive bucket `index`.
    pub fn lower(&self, index: i32) -> f64 {
        bucket_upper(index.saturating_sub(1), self.schema, &self.custom_values)
    }

    pub(crate) fn positive_range(&self, b: &Bucket) -> BucketRange {
        BucketRange {
            lower: self.lower(b.index),
            upper: self.upper(b.index),
            count: b.count,
        }
    }

    pub(crate) fn negative_range(&self, b: &Bucket) -> BucketRange {
        BucketRange {
            lower: -self.upper(b.index),
            upper: -self.lower(b.index),
            count: b.count,
        }
    }

    /// Calls `f` with every bucket in ascending order, without allocating: negative, the
    /// zero bucket (when it holds observations), positive. Bucket boundaries inside the
    /// zero bucket are clamped to the zero threshold, as Prometheus's
    /// `AllBucketIterator` does (as Prometheus 3 does: 2.42 also clamps a boundary of
    /// exactly 0, which only the lowest bucket of a schema has).
    pub fn for_each_bucket(&self, mut f: impl FnMut(BucketSide, BucketRange)) {
        let zt = self.zero_threshold;
        for b in self.negative.iter().rev() {
            let mut r = self.negative_range(b);
            if r.upper < 0.0 && r.upper > -zt {
                r.upper = -zt;
            }
            f(BucketSide::Negative, r);
        }
        if self.zero_count > 0.0 {
            let r = BucketRange {
                lower: -zt,
                upper: zt,
                count: self.zero_count,
            };
            f(BucketSide::Zero, r);
        }
        for b in &self.positive {
            let mut r = self.positive_range(b);
            if r.lower > 0.0 && r.lower < zt {
                r.lower = zt;
            }
            f(BucketSide::Positive, r);
        }
    }

    /// All buckets in ascending order (see [`FloatHistogram::for_each_bucket`]).
    pub fn all_buckets(&self) -> Vec<BucketRange> {
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        self.for_each_bucket(|_, r| out.push(r));
        out
    }

    /// [`FloatHistogram::all_buckets`] in descending order.
    pub fn all_buckets_rev(&self) -> Vec<BucketRange> {
        let mut v = self.all_buckets();
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float with bit pattern `n`: `n · 2^-1074` for subnormals.
    fn sub(n: u64) -> f64 {
        f64::from_bits(n)
    }

    #[test]
    fn bounds_reach_the_smallest_subnormal_as_prometheus_get_bound() {
        // Schema 0: bucket i ends at 2^i; 2^-1075 is a tie that rounds to 0 (even).
        assert_eq!(exponential_upper(-1022, 0), f64::MIN_POSITIVE);
        assert_eq!(exponential_upper(-1023, 0), f64::MIN_POSITIVE / 2.0);
        assert_eq!(exponential_upper(-1073, 0), sub(2));
        assert_eq!(exponential_upper(-1074, 0), sub(1));
        assert_eq!(exponential_upper(-1075, 0), 0.0);
        assert_eq!(exponential_upper(-1076, 0), 0.0);
        // Negative schemas: 2^(i·16) at schema -4.
        assert_eq!(exponential_upper(-66, -4), sub(1 << 18));
        assert_eq!(exponential_upper(-67, -4), sub(4));
        assert_eq!(exponential_upper(-68, -4), 0.0);
        // Schema 8 near the bottom: the lowest valid index ends at 2^-1074 and so do the
        // 255 below it (each is above 2^-1075 and rounds up), the next is the tie at 2^-1075.
        let (lo, _) = crate::histogram::exponential_index_range(8);
        assert_eq!(lo, -274_944);
        assert_eq!(exponential_upper(lo, 8), sub(1));
        assert_eq!(exponential_upper(lo - 1, 8), sub(1));
        assert_eq!(exponential_upper(lo - 255, 8), sub(1));
        assert_eq!(exponential_upper(lo - 256, 8), 0.0);
        // 2^(-1064 + 128/256) = 0.7071067811865475 · 2^-1063 = 1448.15… · 2^-1074.
        assert_eq!(exponential_upper(-1064 * 256 + 128, 8), sub(1448));
        assert_eq!(exponential_upper(-1022 * 256, 8), f64::MIN_POSITIVE);
    }

    #[test]
    fn bounds_at_the_top_and_the_fraction_table() {
        for s in super::super::MIN_SCHEMA..=super::super::MAX_SCHEMA {
            let (_, hi) = crate::histogram::exponential_index_range(s);
            assert_eq!(exponential_upper(hi - 1, s), f64::MAX, "schema {s}");
            assert_eq!(exponential_upper(hi, s), f64::INFINITY, "schema {s}");
        }
        // Ascending, and every schema's boundaries are a subset of schema 8's.
        for k in 1..256 {
            assert!(fraction(k) > fraction(k - 1));
        }
        assert_eq!(exponential_upper(6, 3), exponential_upper(6 * 32, 8));
        assert_eq!(exponential_upper(1, 1), std::f64::consts::SQRT_2);
        assert_eq!(exponential_upper(3, -1), 64.0);
    }
}
