//! Validity of a histogram, as Prometheus's `FloatHistogram.Validate` defines it, and the
//! bucket indexes a schema can represent. Histograms from outside (test scripts, rule
//! unit tests, appends) are checked here before any bucket arithmetic sees them, so
//! shifts by the schema and index arithmetic stay far from the ends of `i32`.

use super::{Bucket, CUSTOM_BUCKETS_SCHEMA, FloatHistogram, MAX_SCHEMA, MIN_SCHEMA};

/// Whether `schema` is one Prometheus accepts: exponential -4..=8 or custom buckets.
pub fn valid_schema(schema: i32) -> bool {
    (MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) || schema == CUSTOM_BUCKETS_SCHEMA
}

/// The lowest and highest bucket index of a valid exponential `schema` that can hold a
/// float. Bucket `i` covers `(2^((i-1)/2^s), 2^(i/2^s)]`: the smallest positive float,
/// `2^-1074`, lies in bucket `ceil(-1074 * 2^s)`; the largest, just below `2^1024`, in
/// bucket `1024 * 2^s`; the bucket after it is the overflow bucket for infinities.
pub fn exponential_index_range(schema: i32) -> (i32, i32) {
    if schema >= 0 {
        (-(1074 << schema), (1024 << schema) + 1)
    } else {
        (-(1074 >> -schema), (1024 >> -schema) + 1)
    }
}

/// Checks that `buckets` ascend within `lo..=hi`; `limit` says where the range comes from.
fn check_indexes(
    buckets: &[Bucket],
    (lo, hi): (i32, i32),
    side: &str,
    limit: &str,
) -> Result<(), String> {
    let mut prev: Option<i32> = None;
    for b in buckets {
        if b.index < lo || b.index > hi {
            return Err(format!(
                "{side} bucket index {} is outside the range {lo}..={hi} {limit}",
                b.index
            ));
        }
        if prev.is_some_and(|p| p >= b.index) {
            return Err(format!("{side} bucket indexes are not ascending"));
        }
        prev = Some(b.index);
    }
    Ok(())
}

fn check_custom_bounds(bounds: &[f64]) -> Result<(), String> {
    let mut prev = f64::NEG_INFINITY;
    for (i, &v) in bounds.iter().enumerate() {
        if !v.is_finite() {
            return Err(format!(
                "custom bucket bound {v} (number {}) is not finite; the +Inf bucket is implicit",
                i + 1
            ));
        }
        if i > 0 && v <= prev {
            return Err(format!(
                "custom bucket bounds must be strictly increasing: {v} (number {}) follows {prev}",
                i + 1
            ));
        }
        prev = v;
    }
    Ok(())
}

impl FloatHistogram {
    /// Checks what bucket arithmetic relies on: a valid schema, finite strictly increasing
    /// custom bounds (custom schema only), and ascending bucket indexes within the range
    /// the schema can represent (0 up to the number of bounds for custom buckets).
    /// Counts are not checked: an expected query result may hold negative ones.
    pub fn check_structure(&self) -> Result<(), String> {
        if !valid_schema(self.schema) {
            return Err(format!(
                "histogram schema {} is invalid: it must be between {MIN_SCHEMA} and {MAX_SCHEMA}, or {CUSTOM_BUCKETS_SCHEMA} for custom buckets",
                self.schema
            ));
        }
        if !self.uses_custom_buckets() {
            if !self.custom_values.is_empty() {
                return Err(
                    "a histogram with an exponential schema must not have custom bounds".into(),
                );
            }
            let range = exponential_index_range(self.schema);
            let limit = format!("that schema {} can represent", self.schema);
            check_indexes(&self.positive, range, "positive", &limit)?;
            return check_indexes(&self.negative, range, "negative", &limit);
        }
        check_custom_bounds(&self.custom_values)?;
        let n = self.custom_values.len();
        let range = (0, i32::try_from(n).unwrap_or(i32::MAX));
        let limit = format!("that {n} custom bounds allow");
        check_indexes(&self.positive, range, "positive", &limit)?;
        check_indexes(&self.negative, range, "negative", &limit)
    }

    /// [`FloatHistogram::check_structure`] plus what Prometheus requires of a stored
    /// histogram: no negative bucket counts, and for custom buckets no zero bucket and
    /// no negative buckets.
    pub fn validate(&self) -> Result<(), String> {
        self.check_structure()?;
        if self.uses_custom_buckets() {
            if self.zero_count != 0.0 || self.zero_threshold != 0.0 {
                return Err("a custom-bucket histogram must not have a zero bucket".into());
            }
            if !self.negative.is_empty() {
                return Err("a custom-bucket histogram must not have negative buckets".into());
            }
        }
        for (side, buckets) in [("positive", &self.positive), ("negative", &self.negative)] {
            if let Some(b) = buckets.iter().find(|b| b.count < 0.0) {
                return Err(format!(
                    "{side} bucket {} has a negative observation count {}",
                    b.index, b.count
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::notation::parse;

    /// Asserts that the notation `text` is refused with an error containing `why`.
    fn refused(text: &str, why: &str) {
        let e = parse(text).unwrap_err();
        assert!(e.contains(why), "{text}: {e}");
    }

    #[test]
    fn index_ranges_match_the_float_range() {
        assert_eq!(exponential_index_range(0), (-1074, 1025));
        assert_eq!(exponential_index_range(8), (-274_944, 262_145));
        assert_eq!(exponential_index_range(-4), (-67, 65));
        // The highest regular bucket ends at the largest float; the next is overflow.
        for s in MIN_SCHEMA..=MAX_SCHEMA {
            let (lo, hi) = exponential_index_range(s);
            assert_eq!(crate::histogram::bucket_upper(hi - 1, s, &[]), f64::MAX);
            // Bucket `lo` ends at or above 2^-1074 (the smallest float), bucket `lo - 1`
            // below it: the exponents of their upper bounds, lo / 2^s and (lo-1) / 2^s.
            let exp = |i: i32| f64::from(i) / 2f64.powi(s);
            assert!(exp(lo) >= -1074.0 && exp(lo - 1) < -1074.0, "schema {s}");
        }
    }

    #[test]
    fn hostile_schemas_and_bounds_are_refused() {
        for bad in [
            "schema:100",
            "schema:-100",
            "schema:9",
            "schema:-5",
            "schema:-52",
        ] {
            refused(
                &format!("{bad} buckets:[1]"),
                "must be between -4 and 8, or -53",
            );
        }
        refused(
            "schema:-53 custom_values:[1 1] buckets:[1]",
            "strictly increasing",
        );
        refused("schema:-53 custom_values:[2 1]", "strictly increasing");
        refused("schema:-53 custom_values:[1 +Inf]", "not finite");
        refused("schema:-53 custom_values:[NaN]", "not finite");
        refused("schema:0 custom_values:[1]", "custom bounds");
        assert!(parse("schema:8 buckets:[1] offset:-3").is_ok());
        assert!(parse("schema:-53 custom_values:[1 2] buckets:[1 2 3]").is_ok());
    }

    #[test]
    fn stored_histograms_have_no_negative_counts() {
        let h = parse("buckets:[1 -2]").unwrap().h;
        let e = h.validate().unwrap_err();
        assert!(e.contains("negative observation count"), "{e}");
        let h = parse("schema:-53 custom_values:[1] z_bucket:1").unwrap().h;
        assert!(h.validate().unwrap_err().contains("zero bucket"));
        let h = parse("schema:-53 custom_values:[1] n_buckets:[1]")
            .unwrap()
            .h;
        assert!(h.validate().unwrap_err().contains("negative buckets"));
        assert!(
            parse("buckets:[1 2] n_buckets:[3]")
                .unwrap()
                .h
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn bucket_indexes_at_the_ends_of_i32_are_refused() {
        for bad in [
            "offset:-2147483648 buckets:[1 1]",
            "offset:2147483647 buckets:[1]",
            "n_offset:-2147483648 n_buckets:[1]",
            "n_offset:2147483646 n_buckets:[1 1]",
            "schema:8 offset:262146 buckets:[1]",
            "schema:-4 offset:-68 buckets:[1]",
        ] {
            refused(bad, "can represent");
        }
        let e = parse("schema:8 offset:262146 buckets:[1]").unwrap_err();
        assert_eq!(
            e,
            "positive bucket index 262146 is outside the range -274944..=262145 that schema 8 can represent"
        );
        refused(
            "schema:-53 custom_values:[1] buckets:[1 1 1]",
            "range 0..=1 that 1 custom bounds allow",
        );
        refused(
            "schema:-53 custom_values:[1] offset:-1 buckets:[1]",
            "range 0..=1",
        );
        // The overflow bucket for infinities is still accepted.
        assert!(parse("schema:-4 offset:65 buckets:[1]").is_ok());
        assert!(parse("schema:0 offset:-1074 buckets:[1] n_offset:1025 n_buckets:[1]").is_ok());
    }

    #[test]
    fn index_arithmetic_saturates() {
        let h = parse("schema:8 offset:-274944 buckets:[1] n_offset:262145 n_buckets:[2]")
            .unwrap()
            .h;
        let mut a = h.clone();
        a.reduce_resolution(-4);
        assert_eq!(a.positive[0].index, -67);
        assert_eq!(a.negative[0].index, 65);
        let mut b = parse("schema:-4 z_bucket_w:1 buckets:[1]").unwrap().h;
        b.add(&h).unwrap();
        assert!(b.count.is_finite());
    }
}
