//! The functions reading native histograms: `histogram_count`, `histogram_sum`,
//! `histogram_avg`, `histogram_stddev`, `histogram_stdvar`, and the native halves of
//! `histogram_quantile(s)` and `histogram_fraction` (the classic halves, over `le`
//! buckets, are in `functions`).

use super::{AnnotationLevel, Evaluator, Sample, Vector};
use crate::histogram::FloatHistogram;
use crate::histogram::stats::EstimateNote;
use crate::labels::Labels;

/// Splits a vector into its histogram samples and its float samples.
pub(crate) fn split_native(v: Vector) -> (Vector, Vector) {
    v.into_iter().partition(|s| s.h.is_some())
}

/// Prometheus's `FloatHistogram.String()`: count, sum and the populated buckets in
/// ascending order with their bounds (`count_values` uses it as the label value, and
/// promtool's `--debug` dump prints it).
pub(crate) fn histogram_string(h: &FloatHistogram) -> String {
    use crate::gofmt::go_fmt_v;
    let mut out = format!("{{count:{}, sum:{}", go_fmt_v(h.count), go_fmt_v(h.sum));
    let custom = h.uses_custom_buckets();
    let mut push = |lower: f64, upper: f64, (li, ui): (bool, bool), count: f64| {
        out.push_str(&format!(
            ", {}{},{}{}:{}",
            if li { '[' } else { '(' },
            go_fmt_v(lower),
            go_fmt_v(upper),
            if ui { ']' } else { ')' },
            go_fmt_v(count)
        ));
    };
    for b in h.negative.iter().rev().filter(|b| b.count != 0.0) {
        let (lower, upper) = (-h.upper(b.index), -h.lower(b.index));
        push(lower, upper, (lower < 0.0, upper > 0.0), b.count);
    }
    if h.zero_count != 0.0 {
        push(
            -h.zero_threshold,
            h.zero_threshold,
            (true, true),
            h.zero_count,
        );
    }
    for b in h.positive.iter().filter(|b| b.count != 0.0) {
        let (lower, upper) = (h.lower(b.index), h.upper(b.index));
        let inclusive = if custom {
            (b.index == 0, true)
        } else {
            (lower < 0.0, upper > 0.0)
        };
        push(lower, upper, inclusive, b.count);
    }
    out.push('}');
    out
}

/// A float result sample computed from a histogram sample (the name is dropped).
fn derived(metric: Labels, ts: i64, f: f64) -> Sample {
    Sample {
        metric,
        t: ts,
        f,
        drop_name: true,
        h: None,
    }
}

/// The value of one of the single-argument histogram functions.
fn simple(name: &str, h: &FloatHistogram) -> f64 {
    match name {
        "histogram_count" => h.count,
        "histogram_sum" => h.sum,
        "histogram_avg" => h.sum / h.count,
        "histogram_stddev" => h.variance().sqrt(),
        _ => h.variance(),
    }
}

impl Evaluator<'_> {
    /// Drops the native histograms that have classic buckets with the same labels (and
    /// those buckets), with the warning Prometheus gives for such a mix.
    pub(crate) fn drop_classic_native_mix(
        &self,
        native: &mut Vector,
        floats: &mut Vector,
        anchor: &str,
    ) {
        if native.is_empty() || floats.is_empty() {
            return;
        }
        let classic = |s: &Sample| {
            let le = s.metric.get("le")?;
            super::functions::parse_go_float(le)?;
            let mut l = s.metric.clone();
            l.remove("le");
            Some(l)
        };
        let buckets: std::collections::HashSet<Labels> =
            floats.iter().filter_map(classic).collect();
        let mut mixed = std::collections::HashSet::new();
        native.retain(|s| {
            if !buckets.contains(&s.metric) {
                return true;
            }
            self.annotate(
                AnnotationLevel::Warning,
                format!(
                    "vector contains a mix of classic and native histograms for metric name {:?}",
                    s.metric.metric_name().unwrap_or("")
                ),
                anchor,
            );
            mixed.insert(s.metric.clone());
            false
        });
        if !mixed.is_empty() {
            floats.retain(|s| classic(s).is_none_or(|l| !mixed.contains(&l)));
        }
    }

    /// `histogram_count` and friends: one float per histogram sample, floats ignored.
    pub(crate) fn histogram_simple(&self, name: &str, v: Vector, ts: i64) -> Vector {
        v.into_iter()
            .filter_map(|s| {
                let f = simple(name, s.h.as_deref()?);
                Some(derived(s.metric, ts, f))
            })
            .collect()
    }

    fn estimate_note(&self, note: Option<EstimateNote>, metric: &Labels, anchor: &str) {
        let Some(note) = note else { return };
        let what = match note {
            EstimateNote::QuantileNaNResult => {
                "input to histogram_quantile has NaN observations, result is NaN"
            }
            EstimateNote::QuantileNaNSkew => {
                "input to histogram_quantile has NaN observations, result is skewed higher"
            }
            EstimateNote::FractionNaNs => {
                "input to histogram_fraction has NaN observations, which are excluded from all fractions"
            }
        };
        self.annotate(
            AnnotationLevel::Info,
            format!(
                "{what} for metric name {:?}",
                metric.metric_name().unwrap_or("")
            ),
            anchor,
        );
    }

    /// The `q` quantile of each histogram sample; with `label`, the quantile is also set
    /// as that label (`histogram_quantiles`).
    pub(crate) fn native_quantiles(
        &self,
        qs: &[f64],
        label: Option<&str>,
        native: &[Sample],
        anchor: &str,
        ts: i64,
    ) -> Vector {
        let mut out = Vec::with_capacity(native.len() * qs.len());
        for s in native {
            let Some(h) = s.h.as_deref() else { continue };
            for &q in qs {
                let (f, note) = h.quantile(q);
                self.estimate_note(note, &s.metric, anchor);
                let mut metric = s.metric.clone();
                if let Some(l) = label {
                    metric.set(l, &super::functions::quantile_label(q));
                }
                out.push(derived(metric, ts, f));
            }
        }
        out
    }

    /// The fraction of observations in `(lower, upper]` of each histogram sample.
    pub(crate) fn native_fractions(
        &self,
        lower: f64,
        upper: f64,
        native: &[Sample],
        anchor: &str,
        ts: i64,
    ) -> Vector {
        let mut out = Vec::with_capacity(native.len());
        for s in native {
            let Some(h) = s.h.as_deref() else { continue };
            let (f, note) = h.fraction(lower, upper);
            self.estimate_note(note, &s.metric, anchor);
            out.push(derived(s.metric.clone(), ts, f));
        }
        out
    }
}
