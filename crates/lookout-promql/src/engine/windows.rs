//! Which samples a window holds at its left edge.
//!
//! Prometheus 3 made every window left-open: a range selector `x[5m]` at `t` reads
//! `(t - 5m, t]`, the instant lookback `(t - 5m, t]`, and a subquery's first step is the
//! first multiple of its step *after* `t - range`. Prometheus 2 read the same windows
//! left-closed (`[t - 5m, t]`, first subquery step *at or after* `t - range`), so a sample
//! lying exactly on a window's left edge counts there and not in Prometheus 3. Unit tests
//! written for `promtool test rules` 2.x (samples every minute, windows of whole minutes,
//! evaluation on the minute) often depend on it.
//!
//! [`WindowSemantics::Prometheus2`] selects the old edges everywhere a window is cut:
//! range selectors (also the all-steps path of the `steps` module), the instant lookback
//! (and `timestamp()`, `start_timestamp()`), subquery steps, `info()`'s lookback, and the
//! lookback part of `anchored`/`smoothed` windows. Only selection changes: `rate`,
//! `increase` and `delta` still extrapolate to `t - range`, as both versions do. Timestamps
//! are whole milliseconds, so `[a, b]` selects exactly what `(a - 1, b]` does: the engine
//! keeps its left-open comparisons and moves the open edge back by one millisecond.

/// How the left edge of a window is cut (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WindowSemantics {
    /// Prometheus 3: left-open windows `(t - range, t]` (the default).
    #[default]
    Prometheus3,
    /// Prometheus 2: left-closed windows `[t - range, t]`.
    Prometheus2,
}

impl WindowSemantics {
    /// The exclusive lower bound of the window of `range` ms that ends at `t`: a sample at
    /// `s` is in the window when `open_start(t, range) < s <= t`.
    pub fn open_start(self, t: i64, range: i64) -> i64 {
        let start = t.saturating_sub(range);
        match self {
            WindowSemantics::Prometheus3 => start,
            WindowSemantics::Prometheus2 => start.saturating_sub(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WindowSemantics::{self, Prometheus2, Prometheus3};
    use crate::engine::{Engine, EngineOptions, Value};
    use crate::labels::Labels;
    use crate::storage::{Storage, StorageOptions};

    const MIN: i64 = 60_000;

    type SeriesDef<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

    fn store(series: &[SeriesDef]) -> Storage {
        let s = Storage::new(StorageOptions::default());
        for (labels, samples) in series {
            let l = Labels::new(labels.iter().copied());
            for (t, v) in samples.iter() {
                s.append(&l, *t, *v).expect("append");
            }
        }
        s
    }

    fn engine(windows: WindowSemantics) -> Engine {
        Engine::new(EngineOptions {
            windows,
            ..EngineOptions::default()
        })
    }

    /// The values of an instant query, `None` for an empty result.
    fn values(s: &Storage, w: WindowSemantics, q: &str, t: i64) -> Vec<f64> {
        match engine(w).instant_query(s, q, t).expect("query") {
            Value::Vector(v) => v.iter().map(|s| s.f).collect(),
            Value::Scalar { v, .. } => vec![v],
            Value::Matrix(m) => m.iter().map(|s| s.floats.len() as f64).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// One sample a minute from 0 to 5 minutes, values `v`.
    fn minutely(v: &[f64]) -> Vec<(i64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, &f)| (i as i64 * MIN, f))
            .collect()
    }

    #[test]
    fn the_left_edge_is_in_the_window_only_under_prometheus_2() {
        let (t, range) = (600_000, 300_000);
        let inside = |w: WindowSemantics, s: i64| w.open_start(t, range) < s && s <= t;
        assert!(!inside(Prometheus3, 300_000));
        assert!(inside(Prometheus2, 300_000));
        for w in [Prometheus3, Prometheus2] {
            assert!(!inside(w, 299_999));
            assert!(inside(w, 300_001));
            assert!(inside(w, t));
        }
        assert_eq!(WindowSemantics::default(), Prometheus3);
        assert_eq!(Prometheus2.open_start(i64::MIN, 5), i64::MIN);
    }

    #[test]
    fn the_lookback_holds_a_sample_exactly_5m_old_only_under_prometheus_2() {
        let s = store(&[(&[("__name__", "m")], &[(0, 7.0)])]);
        for q in ["m", "timestamp(m)", "last_over_time(m[5m])"] {
            assert_eq!(
                values(&s, Prometheus3, q, 5 * MIN),
                Vec::<f64>::new(),
                "{q}"
            );
            assert_eq!(values(&s, Prometheus2, q, 5 * MIN).len(), 1, "{q}");
            assert_eq!(
                values(&s, Prometheus2, q, 5 * MIN + 1),
                Vec::<f64>::new(),
                "{q}"
            );
        }
        assert_eq!(values(&s, Prometheus2, "m", 5 * MIN), vec![7.0]);
    }

    #[test]
    fn range_selectors_and_subqueries_include_their_left_edge_under_prometheus_2() {
        let pts = minutely(&[10.0, 10.0, 10.0, 10.0, 10.0, 310.0]);
        let s = store(&[(&[("__name__", "c_total")], &pts)]);
        let at = 5 * MIN;
        for (q, p3, p2) in [
            ("count_over_time(c_total[5m])", 5.0, 6.0),
            ("c_total[5m]", 5.0, 6.0),
            ("count_over_time(c_total[2m:1m])", 2.0, 3.0),
            ("count_over_time(c_total[4m] offset 1m)", 4.0, 5.0),
            ("count_over_time(c_total[5m] @ 300)", 5.0, 6.0),
            // Prometheus 2 sees the whole rise from t - 5m; Prometheus 3 extrapolates
            // the first sample it sees back to the counter's zero point. Both take the
            // window's start as t - 5m.
            ("increase(c_total[5m])", 310.0, 300.0),
        ] {
            for (w, want) in [(Prometheus3, p3), (Prometheus2, p2)] {
                let got = values(&s, w, q, at);
                assert!(
                    got.len() == 1 && (got[0] - want).abs() < 1e-9,
                    "{q} {w:?}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn range_queries_use_the_same_windows_as_instant_queries() {
        let pts = minutely(&[1.0, 3.0, 4.0, 8.0, 9.0, 15.0]);
        let s = store(&[(&[("__name__", "c_total"), ("job", "a")], &pts)]);
        // The first query takes the all-steps path, the second one step by step.
        for q in [
            "rate(c_total[2m])",
            "rate(c_total[2m]) + 0 * scalar(vector(1))",
        ] {
            let mut results = Vec::new();
            for w in [Prometheus3, Prometheus2] {
                let m = engine(w)
                    .range_query(&s, q, 2 * MIN, 5 * MIN, 30_000)
                    .expect("range query");
                for p in &m[0].floats {
                    assert_eq!(vec![p.f], values(&s, w, q, p.t), "{q} at {}", p.t);
                }
                results.push(m);
            }
            assert_ne!(results[0], results[1], "{q}: the edges make a difference");
        }
    }

    #[test]
    fn anchored_and_info_look_back_to_a_closed_edge_under_prometheus_2() {
        let s = store(&[
            (&[("__name__", "g")], &[(0, 1.0), (7 * MIN, 4.0)]),
            (
                &[("__name__", "m"), ("instance", "a"), ("job", "j")],
                &[(5 * MIN, 1.0)],
            ),
            (
                &[
                    ("__name__", "target_info"),
                    ("instance", "a"),
                    ("job", "j"),
                    ("version", "1"),
                ],
                &[(0, 1.0)],
            ),
        ]);
        let q = "increase(g[5m] anchored)";
        assert_eq!(values(&s, Prometheus3, q, 10 * MIN), vec![0.0]);
        assert_eq!(values(&s, Prometheus2, q, 10 * MIN), vec![3.0]);
        let version = |w| match engine(w).instant_query(&s, "info(m)", 5 * MIN) {
            Ok(Value::Vector(v)) => v[0].metric.get("version").map(str::to_string),
            other => panic!("{other:?}"),
        };
        assert_eq!(version(Prometheus3), None);
        assert_eq!(version(Prometheus2), Some("1".to_string()));
    }
}
