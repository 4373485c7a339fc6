//! Aggregations over vectors that hold native histograms, as Prometheus does them:
//! `sum` and `avg` add histograms (a group mixing floats and histograms gives no result
//! and a warning), `count` and `group` count both kinds, and the float-only operators
//! (`max`, `min`, `stddev`, `stdvar`, `quantile`, `topk`, `bottomk`) ignore histograms
//! with an info annotation.

use std::sync::Arc;

use super::histogram_range::{SumNotes, avg_histograms, sum_histograms};
use super::{AnnotationLevel, Evaluator, FastMap, QueryError, Sample, Vector};
use crate::histogram::FloatHistogram;
use crate::labels::Labels;

/// The samples of one output group.
struct Members {
    metric: Labels,
    drop_name: bool,
    floats: Vec<f64>,
    hists: Vec<Arc<FloatHistogram>>,
}

impl Evaluator<'_> {
    /// Drops the histograms of `vec` for an operator that ignores them, with the info
    /// annotation Prometheus raises.
    pub(crate) fn ignore_histograms(&self, op: &str, vec: &mut Vector, anchor: &str) {
        let before = vec.len();
        vec.retain(|s| s.h.is_none());
        if vec.len() != before {
            self.annotate(
                AnnotationLevel::Info,
                format!("ignored histogram in {op} aggregation"),
                anchor,
            );
        }
    }

    /// `sum`, `avg`, `count` or `group` of a vector holding histograms; `grouper` gives
    /// a sample's group key and labels.
    pub(crate) fn aggregate_histograms(
        &self,
        op: &str,
        vec: Vector,
        mut grouper: impl FnMut(&Labels) -> (u64, Labels),
        anchor: &str,
    ) -> Result<Vector, QueryError> {
        let mut order: Vec<u64> = Vec::new();
        let mut groups: FastMap<u64, Members> = FastMap::default();
        for s in vec {
            self.poll()?;
            let (key, metric) = grouper(&s.metric);
            let g = groups.entry(key).or_insert_with(|| {
                order.push(key);
                Members {
                    metric,
                    drop_name: false,
                    floats: Vec::new(),
                    hists: Vec::new(),
                }
            });
            g.drop_name |= s.drop_name;
            match s.h {
                Some(h) => g.hists.push(h),
                None => g.floats.push(s.f),
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let Some(g) = groups.remove(&key) else {
                continue;
            };
            if let Some(s) = self.finish_group(op, g, anchor)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn finish_group(
        &self,
        op: &str,
        g: Members,
        anchor: &str,
    ) -> Result<Option<Sample>, QueryError> {
        let n = (g.floats.len() + g.hists.len()) as f64;
        let (f, h) = match op {
            "count" => (n, None),
            "group" => (1.0, None),
            // Floats alone: the float aggregation itself (for `avg`, its switch to an
            // incremental mean when the sum overflows).
            _ if g.hists.is_empty() => {
                let input = g.floats.iter().map(|&f| (0, Labels::default(), f, false));
                let done = super::aggregations::aggregate(op, 0.0, input, self.stop())?;
                (done.first().map_or(f64::NAN, |s| s.f), None)
            }
            _ if !g.floats.is_empty() => {
                self.annotate(
                    AnnotationLevel::Warning,
                    "encountered a mix of histograms and floats for aggregation".into(),
                    anchor,
                );
                return Ok(None);
            }
            _ => {
                let mut notes = SumNotes::default();
                let hs: Vec<&FloatHistogram> = g.hists.iter().map(|h| &**h).collect();
                let value = if op == "avg" {
                    avg_histograms(&hs, &mut notes, self.stop())?
                } else {
                    sum_histograms(&hs, &mut notes, self.stop())?
                };
                self.sum_notes(&notes, "aggregation", anchor);
                let Ok(Some(mut h)) = value else {
                    self.warn_mixed_schemas(g.metric.metric_name().unwrap_or(""), anchor);
                    return Ok(None);
                };
                h.compact();
                (0.0, Some(Arc::new(h)))
            }
        };
        Ok(Some(Sample {
            metric: g.metric,
            t: 0,
            f,
            drop_name: g.drop_name,
            h,
        }))
    }
}
