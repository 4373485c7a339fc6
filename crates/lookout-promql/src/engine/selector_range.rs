//! A range query whose whole expression is an instant vector selector (`x_total`,
//! `up{job="a"} offset 5m`): its answer is every selected series' latest sample at each
//! step, which this builds series by series with one forward pass over the samples. Step
//! by step, the same answer cost a vector per step and a label-set lookup per point to
//! gather the points back into series (205,000 of them for 5,000 series over 41 steps).

use promql_parser::parser::{Expr, VectorSelector};

use super::{Evaluator, FPoint, Matrix, QueryError, RangeMode, Series, range_mode};
use crate::storage::is_stale;

impl Evaluator<'_> {
    /// The result of a range query whose expression is a plain float selector, or `None`
    /// when it is something else (or selects native histograms, or reads `smoothed`): the
    /// step-by-step evaluation then answers, as it would anyway.
    pub(crate) fn selector_matrix(&self, e: &Expr) -> Option<Result<Matrix, QueryError>> {
        let mut inner = e;
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        let Expr::VectorSelector(vs) = inner else {
            return None;
        };
        if range_mode(vs) != RangeMode::Plain || self.step <= 0 {
            return None;
        }
        let data = match self.fetch(vs) {
            Ok(data) => data,
            Err(e) => return Some(Err(e)),
        };
        if data.iter().any(|sd| !sd.histograms.is_empty()) {
            return None;
        }
        Some(self.build_selector_matrix(vs, &data))
    }

    fn build_selector_matrix(
        &self,
        vs: &VectorSelector,
        data: &[crate::storage::SeriesData],
    ) -> Result<Matrix, QueryError> {
        let n_steps = ((self.end - self.start) / self.step + 1) as usize;
        // The reference time of each step (`@` and `offset` applied), and the points each
        // step selects, for the same sample limits the step-by-step evaluation applies.
        let refs = (0..n_steps)
            .map(|k| self.ref_time(vs, self.start + k as i64 * self.step))
            .collect::<Result<Vec<i64>, QueryError>>()?;
        let mut per_step = vec![0usize; n_steps];
        let mut out: Matrix = Vec::new();
        for sd in data {
            self.poll()?;
            let samples = &sd.samples;
            let mut floats = Vec::new();
            let mut i = 0usize;
            // The reference times never decrease (the step is positive; `@` and `offset`
            // are constant), so one cursor moves forward through the samples.
            for (k, &t) in refs.iter().enumerate() {
                while i < samples.len() && samples[i].t <= t {
                    i += 1;
                }
                let Some(s) = i.checked_sub(1).map(|j| samples[j]) else {
                    continue;
                };
                if s.t <= self.window_open(t, self.lookback) || is_stale(s.v) {
                    continue;
                }
                per_step[k] += 1;
                floats.push(FPoint {
                    t: self.start + k as i64 * self.step,
                    f: s.v,
                });
            }
            if !floats.is_empty() {
                out.push(Series {
                    metric: sd.labels.clone(),
                    floats,
                    drop_name: false,
                    st: None,
                    hst: None,
                    histograms: Vec::new(),
                });
            }
        }
        let mut total = 0usize;
        for n in per_step {
            if n > self.opts.max_samples {
                return Err(QueryError::TooManySamples(format!("selector {vs}")));
            }
            total += n;
            if total > self.opts.max_samples {
                return Err(QueryError::TooManySamples("query execution".into()));
            }
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(out)
    }
}
