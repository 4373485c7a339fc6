//! `load_with_nhcb`: classic histogram series (`_bucket` with `le`, `_count`, `_sum`)
//! also loaded as native histograms with custom buckets, as Prometheus's harness does.
//! A timestamp whose classic data does not convert (buckets not cumulative, a count
//! that differs from the `+Inf` bucket) gets no histogram.

use std::collections::BTreeMap;

use super::script::{Load, SeqValue};
use crate::histogram::FloatHistogram;
use crate::histogram::nhcb::ClassicHistogram;
use crate::labels::{Labels, METRIC_NAME};

/// The native histograms the classic histograms of `load` convert to, with their series
/// labels and timestamps.
pub(super) fn convert(load: &Load) -> Vec<(Labels, i64, FloatHistogram)> {
    let mut by_series: BTreeMap<Labels, BTreeMap<i64, ClassicHistogram>> = BTreeMap::new();
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
                None if name.ends_with("_sum") => temp.set_sum(*f),
                None => temp.set_count(*f),
            }
        }
    }
    let mut out = Vec::new();
    for (labels, temps) in by_series {
        for (t, temp) in temps {
            if let Ok(h) = temp.convert() {
                out.push((labels.clone(), t, h));
            }
        }
    }
    out
}
