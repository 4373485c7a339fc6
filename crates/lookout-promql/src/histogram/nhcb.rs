//! Classic histograms (cumulative `le` buckets, a count and a sum) turned into native
//! histograms with custom buckets (schema -53), as Prometheus 3 converts them
//! (`util/convertnhcb`): the finite `le` bounds become `custom_values`, the bucket counts
//! become non-cumulative, a missing `+Inf` bucket takes the count, a missing count takes
//! the highest bucket's. Used by scraping (`convert_classic_histograms_to_nhcb`) and by
//! the test language's `load_with_nhcb`.

use std::sync::Arc;

use super::{Bucket, CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram};

/// The classic data of one histogram, collected series by series.
#[derive(Debug, Default, Clone)]
pub struct ClassicHistogram {
    /// (le, cumulative count) sorted by le, at most one per le.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    /// The first thing wrong with the data; the histogram then does not convert.
    error: Option<String>,
}

impl ClassicHistogram {
    /// An empty histogram.
    pub fn new() -> ClassicHistogram {
        ClassicHistogram::default()
    }

    /// How many distinct buckets were set.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(message);
        }
    }

    /// Sets the cumulative `count` of the bucket `le`. A second value for the same bound
    /// is ignored (a duplicate series); a NaN bound, a negative count or a count that is
    /// not cumulative (less than a lower bucket's, more than a higher one's) makes the
    /// histogram fail to convert.
    pub fn set_bucket(&mut self, le: f64, count: f64) {
        if self.error.is_some() {
            return;
        }
        if le.is_nan() {
            return self.fail("a bucket's le is NaN".into());
        }
        if count < 0.0 {
            return self.fail(format!("bucket le={le} has the negative count {count}"));
        }
        let i = self.buckets.partition_point(|b| b.0 < le);
        if self.buckets.get(i).is_some_and(|b| b.0 == le) {
            return;
        }
        if i > 0 && count < self.buckets[i - 1].1 {
            let (l, c) = self.buckets[i - 1];
            return self.fail(format!(
                "buckets are not cumulative: le={le} has {count}, less than le={l} with {c}"
            ));
        }
        if let Some(&(l, c)) = self.buckets.get(i)
            && count > c
        {
            return self.fail(format!(
                "buckets are not cumulative: le={le} has {count}, more than le={l} with {c}"
            ));
        }
        self.buckets.insert(i, (le, count));
    }

    /// Sets the observation count; a negative one fails the conversion.
    pub fn set_count(&mut self, count: f64) {
        if count < 0.0 {
            self.fail(format!("the count {count} is negative"));
        }
        self.count = Some(count);
    }

    /// Sets the sum of observations.
    pub fn set_sum(&mut self, sum: f64) {
        self.sum = sum;
    }

    /// The native histogram with custom buckets (counter reset hint unknown), or why the
    /// data does not make one: an error recorded while collecting, a count that differs
    /// from the `+Inf` bucket's, or bounds that do not make a valid histogram (such as an
    /// `le` of `-Inf`).
    pub fn convert(mut self) -> Result<FloatHistogram, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let count = self
            .count
            .or_else(|| self.buckets.last().map(|b| b.1))
            .unwrap_or(0.0);
        if self.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        let inf = self.buckets.last().map_or(count, |b| b.1);
        if inf != count {
            return Err(format!(
                "the count {count} differs from the +Inf bucket's {inf}"
            ));
        }
        let mut prev = 0.0;
        let positive = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &(_, c))| {
                let b = Bucket {
                    index: i32::try_from(i).unwrap_or(i32::MAX),
                    count: c - prev,
                };
                prev = c;
                b
            })
            .collect();
        let bounds: Vec<f64> = self.buckets[..self.buckets.len() - 1]
            .iter()
            .map(|b| b.0)
            .collect();
        let mut h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: self.sum,
            positive,
            custom_values: Arc::from(bounds),
            counter_reset_hint: CounterResetHint::Unknown,
            ..Default::default()
        };
        h.compact();
        h.validate()?;
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(buckets: &[(f64, f64)], count: Option<f64>, sum: f64) -> ClassicHistogram {
        let mut c = ClassicHistogram::new();
        for &(le, n) in buckets {
            c.set_bucket(le, n);
        }
        if let Some(n) = count {
            c.set_count(n);
        }
        c.set_sum(sum);
        c
    }

    fn counts(h: &FloatHistogram) -> Vec<(i32, f64)> {
        h.positive.iter().map(|b| (b.index, b.count)).collect()
    }

    #[test]
    fn cumulative_buckets_become_custom_buckets() {
        let inf = f64::INFINITY;
        let h = classic(&[(0.1, 1.0), (1.0, 3.0), (inf, 6.0)], Some(6.0), 4.5)
            .convert()
            .unwrap();
        assert_eq!(h.schema, CUSTOM_BUCKETS_SCHEMA);
        assert_eq!(&*h.custom_values, &[0.1, 1.0]);
        assert_eq!(counts(&h), vec![(0, 1.0), (1, 2.0), (2, 3.0)]);
        assert_eq!((h.count, h.sum), (6.0, 4.5));
        assert_eq!(h.counter_reset_hint, CounterResetHint::Unknown);
    }

    #[test]
    fn missing_inf_bucket_takes_the_count_and_missing_count_the_top_bucket() {
        let h = classic(&[(1.0, 2.0)], Some(5.0), 0.0).convert().unwrap();
        assert_eq!(&*h.custom_values, &[1.0]);
        assert_eq!(counts(&h), vec![(0, 2.0), (1, 3.0)]);
        let h = classic(&[(1.0, 2.0), (2.0, 4.0)], None, 0.0)
            .convert()
            .unwrap();
        assert_eq!(h.count, 4.0);
        assert_eq!(counts(&h), vec![(0, 2.0), (1, 2.0)]);
        // Only a count: one +Inf bucket.
        let h = classic(&[], Some(3.0), 1.0).convert().unwrap();
        assert!(h.custom_values.is_empty());
        assert_eq!(counts(&h), vec![(0, 3.0)]);
    }

    #[test]
    fn out_of_order_buckets_sort_and_duplicates_keep_the_first() {
        let h = classic(&[(2.0, 4.0), (1.0, 1.0), (1.0, 3.0)], Some(4.0), 0.0)
            .convert()
            .unwrap();
        assert_eq!(&*h.custom_values, &[1.0, 2.0]);
        assert_eq!(counts(&h), vec![(0, 1.0), (1, 3.0)]);
    }

    #[test]
    fn inconsistent_data_does_not_convert() {
        let inf = f64::INFINITY;
        for (what, c) in [
            (
                "not cumulative",
                classic(&[(1.0, 3.0), (2.0, 2.0)], None, 0.0),
            ),
            (
                "not cumulative below",
                classic(&[(2.0, 2.0), (1.0, 3.0)], None, 0.0),
            ),
            ("negative bucket", classic(&[(1.0, -1.0)], None, 0.0)),
            ("negative count", classic(&[(1.0, 1.0)], Some(-1.0), 0.0)),
            (
                "count differs from +Inf",
                classic(&[(inf, 3.0)], Some(4.0), 0.0),
            ),
            ("NaN le", classic(&[(f64::NAN, 1.0)], None, 0.0)),
            (
                "-Inf le",
                classic(&[(f64::NEG_INFINITY, 1.0)], Some(1.0), 0.0),
            ),
        ] {
            assert!(c.convert().is_err(), "{what}");
        }
    }
}
