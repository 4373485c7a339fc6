//! Estimates from a histogram's buckets: quantiles, fractions and the variance, as
//! Prometheus's `HistogramQuantile`, `HistogramFraction` and `histogram_stdvar` compute
//! them (log-scale interpolation in exponential buckets, linear in custom and zero
//! buckets).

use super::{BucketRange, FloatHistogram};

/// Something a quantile or fraction estimate wants reported (an info annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EstimateNote {
    /// The quantile landed beyond all buckets because of NaN observations.
    QuantileNaNResult,
    /// NaN observations skewed the quantile.
    QuantileNaNSkew,
    /// NaN observations are left out of the fraction.
    FractionNaNs,
}

impl FloatHistogram {
    /// Clamps a zero-bucket range to the side that has buckets.
    fn zero_side(&self, b: &mut BucketRange) {
        if self.negative.is_empty() && !self.positive.is_empty() {
            b.lower = 0.0;
        } else if self.positive.is_empty() && !self.negative.is_empty() {
            b.upper = 0.0;
        }
    }

    /// The `q` quantile of the observations.
    pub fn quantile(&self, q: f64) -> (f64, Option<EstimateNote>) {
        if q < 0.0 {
            return (f64::NEG_INFINITY, None);
        }
        if q > 1.0 {
            return (f64::INFINITY, None);
        }
        if self.count == 0.0 || q.is_nan() {
            return (f64::NAN, None);
        }
        let forward = self.sum.is_nan() || q < 0.5;
        let buckets = if forward {
            self.all_buckets()
        } else {
            self.all_buckets_rev()
        };
        let mut rank = if forward {
            q * self.count
        } else {
            (1.0 - q) * self.count
        };
        let mut count = 0.0;
        let mut pos = buckets.len();
        let mut bucket = BucketRange {
            lower: 0.0,
            upper: 0.0,
            count: 0.0,
        };
        for (i, b) in buckets.iter().enumerate() {
            bucket = *b;
            if b.count == 0.0 {
                continue;
            }
            count += b.count;
            if count >= rank {
                pos = i + 1;
                break;
            }
        }
        let custom = self.uses_custom_buckets();
        if !custom && bucket.lower < 0.0 && bucket.upper > 0.0 {
            self.zero_side(&mut bucket);
        } else if custom {
            if bucket.lower == f64::NEG_INFINITY {
                if bucket.upper <= 0.0 {
                    return (bucket.upper, None);
                }
                bucket.lower = 0.0;
            } else if bucket.upper == f64::INFINITY {
                return (bucket.lower, None);
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            if self.sum.is_nan() {
                return (f64::NAN, Some(EstimateNote::QuantileNaNResult));
            }
            return (bucket.upper, None);
        }
        if forward {
            rank -= count - bucket.count;
        } else {
            rank = count - rank;
        }
        let mut note = None;
        if self.sum.is_nan() {
            let rest: f64 = buckets[pos.min(buckets.len())..]
                .iter()
                .map(|b| b.count)
                .sum();
            if count + rest < self.count {
                note = Some(EstimateNote::QuantileNaNSkew);
            }
        }
        let fraction = rank / bucket.count;
        if custom || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
            return (
                bucket.lower + (bucket.upper - bucket.lower) * fraction,
                note,
            );
        }
        let log_lower = bucket.lower.abs().log2();
        let log_upper = bucket.upper.abs().log2();
        if bucket.lower > 0.0 {
            return (
                (log_lower + (log_upper - log_lower) * fraction).exp2(),
                note,
            );
        }
        (
            -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(),
            note,
        )
    }

    /// The estimated fraction of observations in `(lower, upper]`.
    pub fn fraction(&self, lower: f64, upper: f64) -> (f64, Option<EstimateNote>) {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return (f64::NAN, None);
        }
        if lower >= upper {
            return (0.0, None);
        }
        let buckets = self.all_buckets();
        let custom = self.uses_custom_buckets();
        let (mut count, mut rank) = (0.0, 0.0);
        let (mut lower_rank, mut upper_rank) = (0.0, 0.0);
        let (mut lower_set, mut upper_set) = (false, false);
        let mut consumed = buckets.len();
        for (i, b0) in buckets.iter().enumerate() {
            let mut b = *b0;
            count += b.count;
            let zero = b.lower <= 0.0 && b.upper >= 0.0;
            if zero {
                self.zero_side(&mut b);
            }
            let interpolate = |v: f64| -> f64 {
                if custom || zero {
                    if b.lower == f64::NEG_INFINITY {
                        return b.count;
                    }
                    rank + b.count * (v - b.lower) / (b.upper - b.lower)
                } else {
                    rank + b.count * fraction_below_log(&b, v)
                }
            };
            if !lower_set && b.lower >= lower {
                lower_rank = rank;
                lower_set = true;
            }
            if !upper_set && b.lower >= upper {
                upper_rank = rank;
                upper_set = true;
            }
            if lower_set && upper_set {
                consumed = i + 1;
                break;
            }
            if !lower_set && b.lower < lower && b.upper > lower {
                lower_rank = interpolate(lower);
                lower_set = true;
            }
            if !upper_set && b.lower < upper && b.upper > upper {
                upper_rank = interpolate(upper);
                upper_set = true;
            }
            if lower_set && upper_set {
                consumed = i + 1;
                break;
            }
            rank += b.count;
        }
        let mut note = None;
        if self.sum.is_nan() {
            count += buckets[consumed.min(buckets.len())..]
                .iter()
                .map(|b| b.count)
                .sum::<f64>();
            if count < self.count {
                note = Some(EstimateNote::FractionNaNs);
            }
        } else {
            count = self.count;
        }
        if !lower_set || lower_rank > count {
            lower_rank = count;
        }
        if !upper_set || upper_rank > count {
            upper_rank = count;
        }
        ((upper_rank - lower_rank) / self.count, note)
    }

    /// The estimated variance of the observations (bucket midpoints: arithmetic for
    /// custom buckets, geometric for exponential ones, 0 for the zero bucket).
    pub fn variance(&self) -> f64 {
        let mean = self.sum / self.count;
        let (mut variance, mut c) = (0.0, 0.0);
        let custom = self.uses_custom_buckets();
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if custom {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let v = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 { -v } else { v }
            };
            let delta = val - mean;
            (variance, c) = crate::engine::kahan_sum_inc(b.count * delta * delta, variance, c);
        }
        (variance + c) / self.count
    }
}

/// Fraction of bucket `b` below `v` on a logarithmic scale (negative buckets mirrored).
pub(crate) fn fraction_below_log(b: &BucketRange, v: f64) -> f64 {
    let log_lower = b.lower.abs().log2();
    let log_upper = b.upper.abs().log2();
    let log_v = v.abs().log2();
    if v > 0.0 {
        return (log_v - log_lower) / (log_upper - log_lower);
    }
    1.0 - ((log_v - log_upper) / (log_lower - log_upper))
}
