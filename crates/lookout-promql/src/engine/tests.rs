//! Focused tests of evaluation semantics.

use super::*;
use crate::storage::{STALE_NAN, Storage, StorageOptions};

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

fn instant(s: &Storage, q: &str, t: i64) -> Value {
    Engine::default().instant_query(s, q, t).expect("query")
}

fn one_value(v: Value) -> f64 {
    match v {
        Value::Vector(v) if v.len() == 1 => v[0].f,
        Value::Scalar { v, .. } => v,
        other => panic!("expected one value, got {other:?}"),
    }
}

#[test]
fn lookback_window_is_left_open() {
    let s = store(&[(&[("__name__", "m")], &[(0, 1.0)])]);
    assert_eq!(one_value(instant(&s, "m", 299_999)), 1.0);
    assert_eq!(instant(&s, "m", 300_000), Value::Vector(vec![]));
}

#[test]
fn stale_marker_ends_series_at_once() {
    let s = store(&[(&[("__name__", "m")], &[(0, 1.0), (10_000, STALE_NAN)])]);
    assert_eq!(one_value(instant(&s, "m", 5_000)), 1.0);
    assert_eq!(instant(&s, "m", 10_000), Value::Vector(vec![]));
}

#[test]
fn rate_extrapolates_like_prometheus() {
    // 0, 10, …, 100 every 5 m: rate over 50 m at 50 m is 10/300 per second.
    let pts: Vec<(i64, f64)> = (0..=10).map(|i| (i * 300_000, i as f64 * 10.0)).collect();
    let s = store(&[(&[("__name__", "c_total")], &pts)]);
    let v = one_value(instant(&s, "rate(c_total[50m])", 3_000_000));
    assert!((v - 10.0 / 300.0).abs() < 1e-12, "{v}");
}

#[test]
fn many_to_many_matching_is_an_error() {
    let s = store(&[
        (&[("__name__", "a"), ("x", "1")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("x", "1"), ("y", "1")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("x", "1"), ("y", "2")], &[(0, 1.0)]),
    ]);
    let err = Engine::default()
        .instant_query(&s, "a + on(x) b", 0)
        .expect_err("must fail");
    assert!(err.message().starts_with("found duplicate series"), "{err}");
}

#[test]
fn delayed_name_removal_lets_label_replace_keep_the_name() {
    let s = store(&[(&[("__name__", "m_total")], &[(0, 0.0), (60_000, 60.0)])]);
    let v = instant(
        &s,
        r#"label_replace(rate(m_total[2m]), "__name__", "r_$1", "__name__", "(.+)")"#,
        60_000,
    );
    let Value::Vector(v) = v else {
        panic!("not a vector")
    };
    assert_eq!(v[0].metric.metric_name(), Some("r_m_total"));
}

#[test]
fn subquery_steps_are_aligned_to_absolute_time() {
    let pts: Vec<(i64, f64)> = (0..=20).map(|i| (i * 30_000, i as f64)).collect();
    let s = store(&[(&[("__name__", "m")], &pts)]);
    // Steps at 60 s, 120 s, 180 s within (30 s, 190 s].
    let v = one_value(instant(&s, "count_over_time(m[160s:1m])", 190_000));
    assert_eq!(v, 3.0);
}

#[test]
fn parse_errors_name_the_query() {
    let err = Engine::default()
        .instant_query(&store(&[]), "sum(", 0)
        .expect_err("must fail");
    assert!(err.to_string().contains("sum("), "{err}");
}
