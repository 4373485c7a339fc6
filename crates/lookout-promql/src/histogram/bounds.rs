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

/// Upper bound of bucket `index` in an exponential `schema`: `2^(index / 2^schema)`.
fn exponential_upper(index: i32, schema: i32) -> f64 {
    // Validation keeps schemas in range; clamping keeps the shifts defined regardless.
    let schema = schema.clamp(super::MIN_SCHEMA, super::MAX_SCHEMA);
    if schema < 0 {
        let exp = (index as i64) << (-schema);
        if exp == 1024 {
            // The last bucket of regular numbers ends at the largest float.
            return f64::MAX;
        }
        return 2f64.powi(exp.clamp(-2000, 2000) as i32);
    }
    let per = 1i64 << schema;
    let idx = index as i64;
    let whole = idx.div_euclid(per);
    let frac = idx.rem_euclid(per);
    if whole == 1024 && frac == 0 {
        return f64::MAX;
    }
    let base = 2f64.powf(frac as f64 / per as f64);
    base * 2f64.powi(whole.clamp(-2000, 2000) as i32)
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

    /// All buckets in ascending order: negative, the zero bucket (when it holds
    /// observations), positive. Bucket boundaries inside the zero bucket are clamped to
    /// the zero threshold, as Prometheus's `AllBucketIterator` does.
    pub fn all_buckets(&self) -> Vec<BucketRange> {
        let zt = self.zero_threshold;
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        for b in self.negative.iter().rev() {
            let mut r = self.negative_range(b);
            if r.upper < 0.0 && r.upper > -zt {
                r.upper = -zt;
            }
            out.push(r);
        }
        if self.zero_count > 0.0 {
            out.push(BucketRange {
                lower: -zt,
                upper: zt,
                count: self.zero_count,
            });
        }
        for b in &self.positive {
            let mut r = self.positive_range(b);
            if r.lower > 0.0 && r.lower < zt {
                r.lower = zt;
            }
            out.push(r);
        }
        out
    }

    /// [`FloatHistogram::all_buckets`] in descending order.
    pub fn all_buckets_rev(&self) -> Vec<BucketRange> {
        let mut v = self.all_buckets();
        v.reverse();
        v
    }
}
