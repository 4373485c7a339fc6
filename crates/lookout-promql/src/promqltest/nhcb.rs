//! `load_with_nhcb`: classic histogram series (`_bucket` with `le`, `_count`, `_sum`)
//! also loaded as native histograms with custom buckets, as Prometheus's harness does.
//! A timestamp whose classic data does not convert (buckets not cumulative, a count
//! that differs from the `+Inf` bucket) gets no histogram.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::script::{Load, SeqValue};
use crate::histogram::{Bucket, CUSTOM_BUCKETS_SCHEMA, FloatHistogram};
use crate::labels::{Labels, METRIC_NAME};

/// The classic data of one histogram at one timestamp.
#[derive(Default)]
struct Temp {
    /// (le, cumulative count) sorted by le.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    bad: bool,
}

impl Temp {
    fn set_bucket(&mut self, le: f64, count: f64) {
        if count < 0.0 {
            self.bad = true;
            return;
        }
        let i = self.buckets.partition_point(|b| b.0 < le);
        if self.buckets.get(i).is_some_and(|b| b.0 == le) {
            return;
        }
        if (i > 0 && count < self.buckets[i - 1].1)
            || self.buckets.get(i).is_some_and(|b| count > b.1)
        {
            self.bad = true;
            return;
        }
        self.buckets.insert(i, (le, count));
    }

    fn convert(mut self) -> Option<FloatHistogram> {
        if self.bad || self.count.is_some_and(|c| c < 0.0) {
            return None;
        }
        let count = self
            .count
            .or_else(|| self.buckets.last().map(|b| b.1))
            .unwrap_or(0.0);
        if self.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        if self.buckets.last().map(|b| b.1) != Some(count) {
            return None;
        }
        let mut prev = 0.0;
        let mut positive = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            positive.push(Bucket {
                index: i as i32,
                count: b.1 - prev,
            });
            prev = b.1;
        }
        let custom: Vec<f64> = self.buckets[..self.buckets.len() - 1]
            .iter()
            .map(|b| b.0)
            .collect();
        let mut h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: self.sum,
            positive,
            custom_values: Arc::from(custom),
            ..Default::default()
        };
        h.compact();
        Some(h)
    }
}

/// The native histograms the classic histograms of `load` convert to, with their series
/// labels and timestamps.
pub(super) fn convert(load: &Load) -> Vec<(Labels, i64, FloatHistogram)> {
    let mut by_series: BTreeMap<Labels, BTreeMap<i64, Temp>> = BTreeMap::new();
    for s in &load.series {
        let name = s.labels.metric_name().unwrap_or("");
        let (base, le) = if let Some(b) = name.strip_suffix("_bucket") {
            match s.labels.get("le").and_then(|v| v.parse::<f64>().ok()) {
                Some(le) if !le.is_nan() => (b, Some(le)),
                _ => continue,
            }
        } else if let Some(b) = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
        {
            (b, None)
        } else {
            continue;
        };
        let mut labels = s.labels.clone();
        labels.remove("le");
        labels.set(METRIC_NAME, base);
        let entry = by_series.entry(labels).or_default();
        for (i, v) in s.values.iter().enumerate() {
            let SeqValue::Float(f) = v else { continue };
            let temp = entry.entry(i as i64 * load.step_ms).or_default();
            match le {
                Some(le) => temp.set_bucket(le, *f),
                None if name.ends_with("_sum") => temp.sum = *f,
                None => temp.count = Some(*f),
            }
        }
    }
    let mut out = Vec::new();
    for (labels, temps) in by_series {
        for (t, temp) in temps {
            if let Some(h) = temp.convert() {
                out.push((labels.clone(), t, h));
            }
        }
    }
    out
}
