//! Validity of a histogram, as Prometheus's `FloatHistogram.Validate` defines it.
//! Histograms from outside (test scripts, rule unit tests, appends) are checked here
//! before any bucket arithmetic sees them, so shifts by the schema stay in range.

use super::{CUSTOM_BUCKETS_SCHEMA, FloatHistogram, MAX_SCHEMA, MIN_SCHEMA};

/// Whether `schema` is one Prometheus accepts: exponential -4..=8 or custom buckets.
pub fn valid_schema(schema: i32) -> bool {
    (MIN_SCHEMA..=MAX_SCHEMA).contains(&schema) || schema == CUSTOM_BUCKETS_SCHEMA
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
    /// custom bounds (custom schema only). Counts are not checked: an expected query
    /// result may hold negative ones.
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
            return Ok(());
        }
        check_custom_bounds(&self.custom_values)
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
    use crate::histogram::notation::parse;

    #[test]
    fn hostile_schemas_and_bounds_are_refused() {
        for bad in [
            "schema:100",
            "schema:-100",
            "schema:9",
            "schema:-5",
            "schema:-52",
        ] {
            let e = parse(&format!("{bad} buckets:[1]")).unwrap_err();
            assert!(e.contains("must be between -4 and 8, or -53"), "{bad}: {e}");
        }
        let e = parse("schema:-53 custom_values:[1 1] buckets:[1]").unwrap_err();
        assert!(e.contains("strictly increasing"), "{e}");
        let e = parse("schema:-53 custom_values:[2 1]").unwrap_err();
        assert!(e.contains("strictly increasing"), "{e}");
        let e = parse("schema:-53 custom_values:[1 +Inf]").unwrap_err();
        assert!(e.contains("not finite"), "{e}");
        let e = parse("schema:-53 custom_values:[NaN]").unwrap_err();
        assert!(e.contains("not finite"), "{e}");
        let e = parse("schema:0 custom_values:[1]").unwrap_err();
        assert!(e.contains("custom bounds"), "{e}");
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
}
