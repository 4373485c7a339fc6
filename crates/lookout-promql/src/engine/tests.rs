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

fn vector(v: Value) -> Vec<(String, f64)> {
    match v {
        Value::Vector(v) => v.into_iter().map(|s| (s.metric.to_string(), s.f)).collect(),
        other => panic!("expected a vector, got {other:?}"),
    }
}

#[test]
fn negative_offset_looks_ahead() {
    let s = store(&[(&[("__name__", "m")], &[(0, 1.0), (60_000, 2.0)])]);
    assert_eq!(one_value(instant(&s, "m offset -1m", 0)), 2.0);
    let no_neg = Engine::new(EngineOptions {
        enable_negative_offset: false,
        ..EngineOptions::default()
    });
    assert!(no_neg.instant_query(&s, "m offset -1m", 0).is_err());
}

#[test]
fn at_start_and_end_refer_to_the_range_query() {
    let pts: Vec<(i64, f64)> = (0..=10).map(|i| (i * 60_000, i as f64)).collect();
    let s = store(&[(&[("__name__", "m")], &pts)]);
    let e = Engine::default();
    let m = e
        .range_query(&s, "m @ end()", 120_000, 300_000, 60_000)
        .expect("query");
    assert_eq!(m.len(), 1);
    assert!(m[0].floats.iter().all(|p| p.f == 5.0), "{m:?}");
    let m = e
        .range_query(&s, "m @ start()", 120_000, 300_000, 60_000)
        .expect("query");
    assert!(m[0].floats.iter().all(|p| p.f == 2.0), "{m:?}");
}

#[test]
fn topk_orders_instant_results_and_keeps_labels() {
    let s = store(&[
        (&[("__name__", "m"), ("i", "a")], &[(0, 1.0)]),
        (&[("__name__", "m"), ("i", "b")], &[(0, f64::NAN)]),
        (&[("__name__", "m"), ("i", "c")], &[(0, 3.0)]),
    ]);
    let v = vector(instant(&s, "topk(3, m)", 0));
    assert_eq!(v[0], ("m{i=\"c\"}".to_string(), 3.0));
    assert_eq!(v[1], ("m{i=\"a\"}".to_string(), 1.0));
    assert!(v[2].1.is_nan(), "NaN sorts last: {v:?}");
}

#[test]
fn count_values_labels_by_value() {
    let s = store(&[
        (&[("__name__", "v"), ("i", "a")], &[(0, 1.5)]),
        (&[("__name__", "v"), ("i", "b")], &[(0, 1.5)]),
        (&[("__name__", "v"), ("i", "c")], &[(0, 2.0)]),
    ]);
    let mut v = vector(instant(&s, r#"count_values("value", v)"#, 0));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        v,
        vec![
            ("{value=\"1.5\"}".to_string(), 2.0),
            ("{value=\"2\"}".to_string(), 1.0)
        ]
    );
}

#[test]
fn histogram_quantile_interpolates_and_reports_fixed_monotonicity() {
    let s = store(&[
        (&[("__name__", "h_bucket"), ("le", "1")], &[(0, 10.0)]),
        (&[("__name__", "h_bucket"), ("le", "2")], &[(0, 5.0)]),
        (&[("__name__", "h_bucket"), ("le", "+Inf")], &[(0, 20.0)]),
    ]);
    let expr = parse("histogram_quantile(0.25, h_bucket)").expect("parse");
    let out = Engine::default()
        .exec_instant(&s, &expr, "histogram_quantile(0.25, h_bucket)", 0)
        .expect("query");
    // Counts become 10, 10, 20: rank 5 falls in the first bucket [0, 1].
    assert_eq!(vector(out.value), vec![("{}".to_string(), 0.5)]);
    assert_eq!(out.annotations.len(), 1);
    assert!(
        out.annotations[0]
            .message
            .ends_with("for metric name \"h_bucket\" (1:26)"),
        "{}",
        out.annotations[0].message
    );
}

#[test]
fn rate_on_non_counter_name_gives_an_info_with_position() {
    let s = store(&[(&[("__name__", "gauge")], &[(0, 1.0), (60_000, 2.0)])]);
    let out = Engine::default()
        .exec_instant(
            &s,
            &parse("rate(gauge[5m])").expect("parse"),
            "rate(gauge[5m])",
            60_000,
        )
        .expect("query");
    assert_eq!(out.annotations.len(), 1);
    assert_eq!(
        out.annotations[0].message,
        "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"gauge\" (1:6)"
    );
    assert_eq!(out.annotations[0].level, AnnotationLevel::Info);
}

#[test]
fn range_query_rejects_range_vectors_and_sorts_series() {
    let s = store(&[
        (&[("__name__", "m"), ("i", "b")], &[(0, 1.0)]),
        (&[("__name__", "m"), ("i", "a")], &[(0, 2.0)]),
    ]);
    let e = Engine::default();
    let err = e
        .range_query(&s, "m[5m]", 0, 60_000, 60_000)
        .expect_err("matrix");
    assert!(err.message().contains("range vector"), "{err}");
    let m = e.range_query(&s, "m", 0, 60_000, 60_000).expect("query");
    assert_eq!(m[0].metric.get("i"), Some("a"));
    assert_eq!(m[0].floats.len(), 2);
}

#[test]
fn dropping_names_can_collide() {
    let s = store(&[
        (&[("__name__", "a"), ("x", "1")], &[(0, 1.0)]),
        (&[("__name__", "b"), ("x", "1")], &[(0, 2.0)]),
    ]);
    let err = Engine::default()
        .instant_query(&s, r#"ceil({x="1"})"#, 0)
        .expect_err("duplicate labelset");
    assert_eq!(
        err.message(),
        "vector cannot contain metrics with the same labelset"
    );
    // `or` matches without the name, so the right side is shadowed.
    assert_eq!(
        vector(instant(&s, "-a or -b", 0)),
        vec![("{x=\"1\"}".to_string(), -1.0)]
    );
}

#[test]
fn group_left_copies_labels_from_the_one_side() {
    let s = store(&[
        (
            &[("__name__", "req"), ("job", "j"), ("path", "/a")],
            &[(0, 4.0)],
        ),
        (
            &[("__name__", "req"), ("job", "j"), ("path", "/b")],
            &[(0, 6.0)],
        ),
        (
            &[("__name__", "info"), ("job", "j"), ("team", "t")],
            &[(0, 2.0)],
        ),
    ]);
    let mut v = vector(instant(&s, "req / on(job) group_left(team) info", 0));
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        v,
        vec![
            ("{job=\"j\", path=\"/a\", team=\"t\"}".to_string(), 2.0),
            ("{job=\"j\", path=\"/b\", team=\"t\"}".to_string(), 3.0)
        ]
    );
    let err = Engine::default()
        .instant_query(&s, "req / on(job) info", 0)
        .expect_err("needs group_left");
    assert!(
        err.message().starts_with("multiple matches for labels"),
        "{err}"
    );
}

#[test]
fn syntax_errors_point_at_the_offending_token() {
    let err = parse("foo bar").expect_err("invalid");
    assert_eq!(
        err,
        QueryError::Parse {
            query: "foo bar".into(),
            message: "unexpected identifier \"bar\"".into(),
            position: Some((1, 5)),
        }
    );
    let err = parse(r#"sum(rate(x{job=}[5m]))"#).expect_err("invalid");
    let QueryError::Parse { position, .. } = err else {
        panic!("not a parse error")
    };
    assert_eq!(position, Some((1, 16)));
    assert!(
        parse("rate(x[5x])")
            .expect_err("bad duration")
            .to_string()
            .contains("5x")
    );
}

#[test]
fn a_long_invalid_query_is_located_without_a_parse_per_token() {
    // 60,000 tokens (within the 64 KiB up to which errors are located): one parse per
    // prefix would take hours; bisecting takes ~20 parses.
    let query = format!("vector({}1 1)", "1,".repeat(30_000));
    let err = parse(&query).expect_err("invalid");
    let QueryError::Parse { position, .. } = &err else {
        panic!("not a parse error: {err}")
    };
    assert_eq!(*position, Some((1, query.len() - 1)));
    assert!(
        err.to_string().len() < 1_000,
        "the query is not echoed whole"
    );
}

#[test]
fn invalid_utf8_label_names_are_rejected() {
    let s = store(&[(&[("__name__", "m"), ("src", "a")], &[(0, 1.0)])]);
    let err = Engine::default()
        .instant_query(&s, r#"label_replace(m, "\xff", "", "src", "(.*)")"#, 0)
        .expect_err("invalid label name");
    assert_eq!(
        err.message(),
        r"invalid destination label name in label_replace(): \xff"
    );
    let err = Engine::default()
        .instant_query(&s, r#"count_values("a\xc5z", m)"#, 0)
        .expect_err("invalid label name");
    assert_eq!(err.message(), r#"invalid label name "a\xc5z""#);
    // Valid multi-byte UTF-8 written as escapes is fine.
    assert!(
        Engine::default()
            .instant_query(&s, r#"count_values("\xc3\xa9", m)"#, 0)
            .is_ok()
    );
}

#[test]
fn queries_stop_at_their_timeout() {
    let s = store(&[(&[("__name__", "m")], &[(0, 1.0)])]);
    let e = Engine::new(EngineOptions {
        timeout: Some(std::time::Duration::ZERO),
        ..EngineOptions::default()
    });
    let err = e
        .range_query(&s, "m", 0, 3_600_000, 1_000)
        .expect_err("times out");
    assert_eq!(err.message(), "query timed out in expression evaluation");
}

/// A series with start timestamps: a counter restarted between two scrapes to a higher
/// value (only its start time shows the reset), then read by `start_timestamp()`,
/// `resets`, `irate` and `increase`.
#[test]
fn start_timestamps_show_resets_and_feed_start_timestamp() {
    let s = Storage::new(StorageOptions::default());
    let l = Labels::new([("__name__", "c_total")]);
    // Counting since 0 s: 10 at 60 s, 20 at 120 s; restarted at 150 s: 30 at 180 s.
    for (st, t, v) in [
        (1, 60_000, 10.0),
        (1, 120_000, 20.0),
        (150_000, 180_000, 30.0),
    ] {
        s.append_with_st(&l, st, t, v).expect("append");
    }
    let engine = Engine::default();
    let at = |q: &str, t: i64| one_value(engine.instant_query(&s, q, t).expect(q));
    assert_eq!(at("start_timestamp(c_total)", 120_000), 0.001);
    assert_eq!(at("start_timestamp(c_total)", 200_000), 150.0);
    // An expression carries no start timestamps.
    assert_eq!(
        engine
            .instant_query(&s, "start_timestamp(c_total * 1)", 200_000)
            .expect("query"),
        Value::Vector(vec![])
    );
    assert_eq!(at("resets(c_total[5m])", 180_000), 1.0);
    // The last two samples straddle the reset: 30 over 60 s.
    assert_eq!(at("irate(c_total[5m])", 180_000), 0.5);
    // Window (60 s, 180 s]: 20, then a restart to 30, is 30 gained over 60 s. The first
    // sample's start (1 ms) is outside the window, so the usual extrapolation applies:
    // left by 40 s (where the counter would reach zero), 30 * 100 / 60 = 50.
    assert!((at("increase(c_total[2m])", 180_000) - 50.0).abs() < 1e-9);
    // Without start timestamps the restart to a higher value is invisible.
    let plain = store(&[(
        &[("__name__", "c_total")],
        &[(60_000, 10.0), (120_000, 20.0), (180_000, 30.0)],
    )]);
    assert_eq!(
        one_value(instant(&plain, "resets(c_total[5m])", 180_000)),
        0.0
    );
}

#[test]
fn numeric_durations_no_duration_can_hold_are_parse_errors() {
    // Found by the promql_eval fuzz target: promql-parser panicked in
    // `Duration::from_secs_f64` on these.
    for q in [
        "changes(x[5e111111111111111111111])",
        "x[NaN]",
        "x offset Inf",
        "x offset - 1e300",
        "rate(x[1m:1e20])",
        "x[0xffffffffffffffff]",
    ] {
        // Some are caught earlier by the duration-expression rewrite; none may panic.
        assert!(parse(q).is_err(), "{q}");
    }
    for q in [
        "x[300]",
        "x offset 60",
        "rate(x[5m:30])",
        r#"x{a="[1e400"}"#,
        "1e400 + x",
    ] {
        assert!(parse(q).is_ok(), "{q}");
    }
}

/// Counters that start, stop (stale marker) and reset at different times, and the info
/// series a join takes `team` from.
fn gappy_counters() -> Storage {
    let full: Vec<(i64, f64)> = (0..40).map(|i| (i * 15_000, i as f64 * 3.0)).collect();
    let late: Vec<(i64, f64)> = (20..40).map(|i| (i * 15_000, i as f64)).collect();
    let mut early: Vec<(i64, f64)> = (0..15).map(|i| (i * 15_000, (i % 6) as f64)).collect();
    early.push((15 * 15_000, STALE_NAN));
    store(&[
        (&[("__name__", "c"), ("job", "a"), ("inst", "1")], &full),
        (&[("__name__", "c"), ("job", "a"), ("inst", "2")], &late),
        (&[("__name__", "c"), ("job", "b"), ("inst", "1")], &early),
        (
            &[("__name__", "c_info"), ("inst", "1"), ("team", "t1")],
            &[(0, 1.0), (300_000, 1.0), (585_000, 1.0)],
        ),
        (
            &[("__name__", "c_info"), ("inst", "2"), ("team", "t2")],
            &[(0, 1.0), (300_000, 1.0), (585_000, 1.0)],
        ),
    ])
}

#[test]
fn range_queries_of_range_functions_equal_instant_queries_at_each_step() {
    // Range functions are computed for all steps at once (engine::steps); each step of the
    // range query must still equal the instant query at that time, also where series
    // start, end or reset inside the range.
    let s = gappy_counters();
    let e = Engine::default();
    for q in [
        "rate(c[1m])",
        "increase(c[2m])",
        "max_over_time(c[1m])",
        "sum by (job) (rate(c[1m]))",
        "topk(1, rate(c[1m]))",
        "rate(c[1m]) * on(inst) group_left(team) c_info",
        "rate(c[1m]) > 0.1",
        // A bare selector is built series by series (engine::selector_range).
        "c",
        "(c{job=\"a\"})",
        "c offset 1m",
        "c @ 300",
        "c_info",
    ] {
        // Many steps, and a range query of one step (kept as one row of values).
        for (start, end, step) in [(20_000, 600_000, 35_000), (310_000, 310_000, 60_000)] {
            let m = e.range_query(&s, q, start, end, step).expect(q);
            let mut t = start;
            while t <= end {
                let mut want = vector(instant(&s, q, t));
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let mut got: Vec<(String, f64)> = m
                    .iter()
                    .filter_map(|series| {
                        let p = series.floats.iter().find(|p| p.t == t)?;
                        Some((series.metric.to_string(), p.f))
                    })
                    .collect();
                got.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(got, want, "{q} at {t}");
                t += step;
            }
        }
    }
}

#[test]
fn range_function_sample_limit_fails_at_the_step_that_exceeds_it() {
    let s = gappy_counters();
    // At most three series have a value at a step: two steps stay within a limit of 20
    // values in the result, 37 steps do not; and from 5 m on, the three series' 3 m
    // windows hold 36 samples, over the limit for one selector, while the first windows
    // hold fewer.
    let opts = EngineOptions {
        max_samples: 20,
        ..EngineOptions::default()
    };
    let e = Engine::new(opts);
    let m = e
        .range_query(&s, "rate(c[1m])", 60_000, 120_000, 60_000)
        .expect("within the limit");
    assert_eq!(m.len(), 2);
    let err = e
        .range_query(&s, "rate(c[1m])", 60_000, 600_000, 15_000)
        .expect_err("over the limit");
    assert!(matches!(err, QueryError::TooManySamples(_)), "{err}");
    // A bare selector: two series have values over the first 7 steps (14 values), and
    // from 5 m on two a step, so 11 steps are 22 values, over the limit of 20.
    let m = e.range_query(&s, "c", 0, 90_000, 15_000).expect("7 steps");
    assert_eq!(m.iter().map(|s| s.floats.len()).sum::<usize>(), 14);
    let err = e
        .range_query(&s, "c", 300_000, 450_000, 15_000)
        .expect_err("11 steps of 2");
    assert_eq!(
        err.message(),
        "query processing would load too many samples into memory in query execution"
    );
    for q in ["rate(c[3m])", "sum(rate(c[3m]))"] {
        let err = e
            .range_query(&s, q, 15_000, 600_000, 60_000)
            .expect_err("a window over the limit");
        assert!(err.message().ends_with("in selector c"), "{q}: {err}");
        assert!(matches!(err, QueryError::TooManySamples(_)), "{q}: {err}");
        let v = e.instant_query(&s, q, 45_000).expect("small windows");
        assert!(matches!(v, Value::Vector(ref v) if !v.is_empty()), "{q}");
    }
}

#[test]
fn all_steps_rate_counts_resets_as_the_window_slides() {
    // Inside a subquery a range function is evaluated window by window, scanning each
    // window for counter resets; outside, windows slide and count resets as they go.
    // Both must agree, here on counters that reset every six samples.
    let s = gappy_counters();
    for f in ["rate", "increase"] {
        for range in ["1m", "2m", "75s"] {
            let plain = format!("{f}(c[{range}])");
            let windowed = format!("max_over_time({f}(c[{range}])[15s:15s])");
            let m = Engine::default()
                .range_query(&s, &plain, 0, 600_000, 15_000)
                .expect("range");
            for t in (0..=600_000).step_by(15_000) {
                let mut want = vector(instant(&s, &windowed, t));
                want.sort_by(|a, b| a.0.cmp(&b.0));
                let mut got = vector(instant(&s, &plain, t));
                got.sort_by(|a, b| a.0.cmp(&b.0));
                assert_eq!(got, want, "{plain} at {t}");
                let in_range: Vec<(String, f64)> = m
                    .iter()
                    .filter_map(|series| {
                        let p = series.floats.iter().find(|p| p.t == t)?;
                        Some((series.metric.to_string(), p.f))
                    })
                    .collect();
                assert_eq!(in_range, want, "{plain} in a range query at {t}");
            }
        }
    }
}

#[test]
fn range_rate_over_two_names_merges_or_rejects_series_equal_without_them() {
    // Without their names the two series are one label set: where they never overlap in
    // time the range query merges them, where they do it fails, as in Prometheus.
    let first: Vec<(i64, f64)> = (0..20).map(|i| (i * 15_000, i as f64)).collect();
    let later: Vec<(i64, f64)> = (40..60).map(|i| (i * 15_000, i as f64)).collect();
    let s = store(&[
        (&[("__name__", "a"), ("x", "1")], &first),
        (&[("__name__", "b"), ("x", "1")], &later),
    ]);
    let e = Engine::default();
    let q = r#"rate({x="1"}[1m])"#;
    let m = e.range_query(&s, q, 0, 900_000, 60_000).expect("merged");
    assert_eq!(m.len(), 1);
    for p in &m[0].floats {
        assert_eq!(
            vector(instant(&s, q, p.t)),
            vec![("{x=\"1\"}".to_string(), p.f)]
        );
    }
    assert_eq!(m[0].floats.len(), 10, "{:?}", m[0].floats);
    let overlapping = store(&[
        (&[("__name__", "a"), ("x", "1")], &first),
        (&[("__name__", "b"), ("x", "1")], &first),
    ]);
    let err = e
        .range_query(&overlapping, q, 0, 900_000, 60_000)
        .expect_err("same label set twice");
    assert!(err.message().contains("same labelset"), "{err}");
}

/// Found by fuzzing: with a multi-byte character a few bytes before `anchored`, the
/// rewrite that carries the modifier sliced inside the character while looking for a
/// preceding `offset`.
#[test]
fn range_modifier_after_a_multibyte_character_is_not_a_panic() {
    let fuzzed = format!(
        "chgafs\u{c}\0z\0nloats[0m] {}@{}\u{2}\u{29a};{}{}{}anchored)",
        "\0".repeat(8),
        "\0".repeat(7),
        "\0".repeat(4),
        "\n".repeat(61),
        "\0".repeat(6),
    );
    assert!(parse(&fuzzed).is_err());
    for q in ["x[5m] @ \u{29a}; anchored", "\u{29a}x[5m] anchored"] {
        let _ = parse(q);
    }
    assert!(parse("rate(x[5m] anchored)").is_ok());
}

#[test]
fn histograms_count_by_their_size_against_the_samples_limit() {
    use crate::histogram::notation::parse as nh;
    let s = Storage::new(StorageOptions::default());
    let small = Labels::new([("__name__", "small")]);
    let big = Labels::new([("__name__", "big")]);
    // No buckets: 11 samples' worth (168 + 8 bytes over 16); 100 buckets in one span:
    // (168 + 8 * 101 + 8) / 16 = 61.
    let small_h = Arc::new(nh("count:1 sum:1").expect("notation").h);
    let ones = vec!["1"; 100].join(" ");
    let big_h = Arc::new(
        nh(&format!("schema:8 buckets:[{ones}]"))
            .expect("notation")
            .h,
    );
    assert_eq!(value::histogram_samples(&small_h), 11);
    assert_eq!(value::histogram_samples(&big_h), 61);
    for t in [0, 60_000] {
        s.append_histogram(&small, t, small_h.clone())
            .expect("append");
        s.append_histogram(&big, t, big_h.clone()).expect("append");
    }
    let e = Engine::new(EngineOptions {
        max_samples: 60,
        ..EngineOptions::default()
    });
    let limited = |r: Result<Value, QueryError>, what: &str| {
        let err = r.expect_err("over the limit");
        assert!(
            matches!(err, QueryError::TooManySamples(_)),
            "{what}: {err}"
        );
    };
    // One small histogram fits; one big one is over the limit by itself.
    assert!(e.instant_query(&s, "small", 60_000).is_ok());
    limited(e.instant_query(&s, "big", 60_000), "selector");
    limited(e.instant_query(&s, "big[2m]", 60_000), "range selector");
    assert!(e.instant_query(&s, "small[2m]", 60_000).is_ok());
    // Six small ones: 66 samples in the result or the subquery.
    limited(
        e.range_query(&s, "small", 0, 300_000, 60_000)
            .map(Value::Matrix),
        "range query",
    );
    limited(
        e.instant_query(&s, "last_over_time(small[6m:1m])", 300_000),
        "subquery",
    );
}

/// Range functions over series split across threads answer exactly as in one pass: the
/// values, the annotations in their order (counter-name infos for names first seen at
/// different steps, start-time overlap warnings) and the step a too-many-samples error
/// stops at.
#[test]
fn series_split_across_threads_answer_as_one_pass() {
    let s = Storage::new(StorageOptions::default());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..60i64 {
        // Four names, two of them not counters' (rate/increase annotate them), each first
        // seen at a different time; gaps, resets, and some series with start times that
        // overlap their samples.
        let name = ["a_total", "b", "c_total", "d_count"][(i % 4) as usize];
        let g = (i % 3).to_string();
        let l = Labels::new([("__name__", name), ("g", &g), ("i", &i.to_string())]);
        // The series with start times all begin at 0, so that several names warn at the
        // same steps.
        let first = if i % 9 == 0 {
            0
        } else {
            (i % 4) * 90_000 + (i / 4) * 7_000
        };
        let mut v = 0.0;
        for k in 0..80i64 {
            let t = first + k * 15_000;
            if next() % 5 == 0 {
                continue;
            }
            v = if next() % 23 == 0 {
                1.0
            } else {
                v + (next() % 100) as f64 / 10.0
            };
            if i % 9 == 0 {
                let st = if k % 11 == 0 { t + 1 } else { first - 1 };
                s.append_with_st(&l, st, t, v).expect("append");
            } else {
                s.append(&l, t, v).expect("append");
            }
        }
    }
    let functions = steps::STEP_FUNCTIONS;
    let run = |split: Option<usize>, max_samples: usize, q: &str| {
        let engine = Engine::new(EngineOptions {
            split_series: split,
            max_samples,
            ..EngineOptions::default()
        });
        let expr = parse(q).expect("parses");
        engine.exec_range(&s, &expr, q, 0, 1_500_000, 20_000)
    };
    let mut compared = 0;
    for f in functions {
        for q in [
            format!("{f}({{__name__=~\".+\"}}[1m])"),
            format!("sum by (g) ({f}({{__name__=~\".+\"}}[2m]))"),
            format!("{f}({{__name__=~\"a_total|b\"}}[45s])"),
        ] {
            // 300 samples is reached partway through the query, at a step that depends on
            // the window.
            for max_samples in [50_000_000, 300] {
                let one = run(Some(1), max_samples, &q);
                for split in [2, 3, 7] {
                    assert_eq!(
                        run(Some(split), max_samples, &q),
                        one,
                        "{q} {split} {max_samples}"
                    );
                }
                compared += usize::from(one.is_ok());
            }
        }
    }
    assert!(compared >= functions.len() * 3, "{compared}");
    // The counter-name infos and overlap warnings are there to compare.
    let out = run(Some(1), 50_000_000, "rate({__name__=~\".+\"}[1m])").unwrap();
    assert!(out.annotations.len() >= 3, "{:?}", out.annotations);
}
