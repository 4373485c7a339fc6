//! Trimming a histogram at a value (the `</` and `>/` operators): observations above
//! (`</`, upper trim) or below (`>/`, lower trim) the value are removed, a bucket that
//! straddles it keeps an interpolated share, and the sum is re-estimated from bucket
//! midpoints, as Prometheus's `TrimBuckets` does.

use super::{BucketRange, FloatHistogram};

/// Midpoint of the surviving part of a bucket: arithmetic for custom buckets, geometric
/// for exponential ones (mirrored for negative buckets).
fn midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        return if upper > 0.0 { upper / 2.0 } else { upper };
    }
    if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let geo = (lower * upper).abs().sqrt();
    if positive { geo } else { -geo }
}

fn zero_if_inf(x: f64) -> f64 {
    if x.is_infinite() { 0.0 } else { x }
}

/// Kept count and midpoint for a bucket with an infinite bound.
fn infinite_bucket(upper_trim: bool, b: &BucketRange, rhs: f64) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY {
        if upper_trim {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper.is_finite() {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, zero_if_inf(b.upper));
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper.is_finite() {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, zero_if_inf(b.upper));
    }
    // Upper bound +Inf.
    if upper_trim {
        return (0.0, zero_if_inf(b.lower));
    }
    if rhs >= b.lower {
        return (b.count, rhs);
    }
    (0.0, zero_if_inf(b.lower))
}

/// Kept count and midpoint for a bucket that contains the trim value.
fn straddling(
    b: &BucketRange,
    rhs: f64,
    upper_trim: bool,
    positive: bool,
    linear: bool,
) -> (f64, f64) {
    if b.lower == f64::NEG_INFINITY || b.upper == f64::INFINITY {
        return infinite_bucket(upper_trim, b, rhs);
    }
    let under = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else if linear {
        b.count * (rhs - b.lower) / (b.upper - b.lower)
    } else {
        b.count * super::stats::fraction_below_log(b, rhs)
    };
    if upper_trim {
        (under, midpoint(b.lower, rhs, positive, linear))
    } else {
        (b.count - under, midpoint(rhs, b.upper, positive, linear))
    }
}

/// Kept count and midpoint of the zero bucket.
fn zero_bucket(
    h: &FloatHistogram,
    rhs: f64,
    has_neg: bool,
    has_pos: bool,
    upper_trim: bool,
) -> (f64, f64) {
    let (mut lower, mut upper) = (-h.zero_threshold, h.zero_threshold);
    if has_neg && !has_pos {
        upper = 0.0;
    }
    if has_pos && !has_neg {
        lower = 0.0;
    }
    let count = h.zero_count;
    if upper_trim {
        if rhs <= lower {
            return (0.0, 0.0);
        }
        if rhs >= upper {
            return (count, (lower + upper) / 2.0);
        }
        (count * (rhs - lower) / (upper - lower), (lower + rhs) / 2.0)
    } else {
        if rhs <= lower {
            return (count, (lower + upper) / 2.0);
        }
        if rhs >= upper {
            return (0.0, 0.0);
        }
        (count * (upper - rhs) / (upper - lower), (rhs + upper) / 2.0)
    }
}

impl FloatHistogram {
    /// Removes the observations above `rhs` (`upper_trim`, `</`) or below it (`>/`).
    pub fn trim(&mut self, rhs: f64, upper_trim: bool) {
        let linear = self.uses_custom_buckets();
        let (mut count, mut sum) = (0.0, 0.0);
        let mut trimmed = false;
        let (mut has_pos, mut has_neg) = (false, false);
        for positive in [true, false] {
            let n = if positive {
                self.positive.len()
            } else {
                self.negative.len()
            };
            for i in 0..n {
                let b = if positive {
                    self.positive_range(&self.positive[i])
                } else {
                    self.negative_range(&self.negative[i])
                };
                if b.count == 0.0 {
                    continue;
                }
                if positive {
                    has_pos = true;
                } else {
                    has_neg = true;
                }
                let whole = if upper_trim {
                    b.upper <= rhs
                } else {
                    b.lower >= rhs
                };
                let partial = if upper_trim {
                    b.lower < rhs
                } else {
                    b.upper > rhs
                };
                let keep = if whole {
                    sum += midpoint(b.lower, b.upper, positive, linear) * b.count;
                    b.count
                } else if partial {
                    let (keep, mid) = straddling(&b, rhs, upper_trim, positive, linear);
                    sum += mid * keep;
                    keep
                } else {
                    0.0
                };
                count += keep;
                if keep != b.count {
                    trimmed = true;
                    let side = if positive {
                        &mut self.positive
                    } else {
                        &mut self.negative
                    };
                    side[i].count = keep;
                }
            }
        }
        if self.zero_count > 0.0 {
            let (keep, mid) = zero_bucket(self, rhs, has_neg, has_pos, upper_trim);
            if keep != self.zero_count {
                self.zero_count = keep;
                trimmed = true;
            }
            sum += mid * keep;
            count += keep;
        }
        if trimmed {
            self.count = count;
            self.sum = sum;
            self.compact();
        }
    }
}
