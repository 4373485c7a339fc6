use lookout_promql::protowire::{put_bytes, put_double, put_sint, put_uint, put_varint};

use super::testbody::*;
use super::*;

/// Every sample as (series text, value) with floats as text and histograms in the test
/// notation.
fn read(body: &[u8], opts: Options) -> Result<Vec<(String, String)>, ProtoError> {
    let mut out = Vec::new();
    for_each_sample(body, opts, &AtomicBool::new(false), |s| {
        s.labels()?;
        let v = match &s.value {
            Value::Float(v) => v.to_string(),
            Value::Histogram(h) => lookout_promql::histogram::notation::format(h),
        };
        out.push((s.series.to_string(), v));
        Ok::<(), ProtoError>(())
    })?;
    Ok(out)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const NATIVE_ON: Options = Options {
    native_histograms: true,
    always_classic: false,
    nhcb: false,
};

#[test]
fn counters_gauges_untyped_and_summaries() {
    let mut body = family("c_total", 0, &[metric(&[("a", "x\"y")], 3, &double(4.0))]);
    body.extend(family("g", 1, &[metric(&[], 2, &double(-1.5))]));
    body.extend(family("u", 3, &[metric(&[], 5, &double(7.0))]));
    let mut summary = Vec::new();
    put_uint(&mut summary, 1, 3);
    put_double(&mut summary, 2, 1.25);
    let mut q = Vec::new();
    put_double(&mut q, 1, 0.5);
    put_double(&mut q, 2, 0.25);
    put_bytes(&mut summary, 3, &q);
    body.extend(family("s", 2, &[metric(&[], 4, &summary)]));
    body.extend(family("empty", 1, &[]));
    assert_eq!(
        read(&body, Options::default()).unwrap(),
        pairs(&[
            ("c_total{a=\"x\\\"y\"}", "4"),
            ("g{}", "-1.5"),
            ("u{}", "7"),
            ("s_count{}", "3"),
            ("s_sum{}", "1.25"),
            ("s{quantile=\"0.5\"}", "0.25"),
        ])
    );
}

#[test]
fn classic_histograms_get_an_inf_bucket_and_openmetrics_bounds() {
    let h = histogram(5, 2.5, &[(1.0, 2), (2.5, 4)], None);
    let body = family("h", 4, &[metric(&[("k", "v")], 7, &h)]);
    let want = pairs(&[
        ("h_count{k=\"v\"}", "5"),
        ("h_sum{k=\"v\"}", "2.5"),
        ("h_bucket{k=\"v\",le=\"1.0\"}", "2"),
        ("h_bucket{k=\"v\",le=\"2.5\"}", "4"),
        ("h_bucket{k=\"v\",le=\"+Inf\"}", "5"),
    ]);
    assert_eq!(read(&body, Options::default()).unwrap(), want);
    // Without native parts it stays classic even with native histograms on.
    assert_eq!(read(&body, NATIVE_ON).unwrap(), want);
    assert_eq!(format_bound(1e6), "1e+06");
    assert_eq!(format_bound(100.0), "100.0");
    assert_eq!(format_bound(f64::INFINITY), "+Inf");
}

#[test]
fn native_histograms_with_and_without_their_classic_buckets() {
    let h = histogram(6, 3.0, &[(1.0, 3)], Some(NATIVE));
    let body = family("h", 4, &[metric(&[], 7, &h)]);
    let got = read(&body, NATIVE_ON).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "h{}");
    let mut seen = None;
    for_each_sample(&body, NATIVE_ON, &AtomicBool::new(false), |s| {
        if let Value::Histogram(h) = s.value {
            seen = Some(*h);
        }
        Ok::<(), ProtoError>(())
    })
    .unwrap();
    let seen = seen.expect("a histogram");
    assert_eq!(seen.count, 6.0);
    assert_eq!(seen.zero_count, 1.0);
    assert_eq!(
        seen.positive
            .iter()
            .map(|b| (b.index, b.count))
            .collect::<Vec<_>>(),
        [(0, 2.0), (1, 3.0), (5, 1.0)]
    );
    let both = Options {
        native_histograms: true,
        always_classic: true,
        nhcb: false,
    };
    let got = read(&body, both).unwrap();
    let series: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        series,
        [
            "h{}",
            "h_count{}",
            "h_sum{}",
            "h_bucket{le=\"1.0\"}",
            "h_bucket{le=\"+Inf\"}"
        ]
    );
    // Native histograms off: classic only.
    assert_eq!(read(&body, Options::default()).unwrap().len(), 4);
    // A gauge histogram says so.
    let body = family("g", 5, &[metric(&[], 7, &h)]);
    for_each_sample(&body, NATIVE_ON, &AtomicBool::new(false), |s| {
        let Value::Histogram(h) = s.value else {
            panic!("a histogram")
        };
        assert_eq!(h.counter_reset_hint, CounterResetHint::Gauge);
        Ok::<(), ProtoError>(())
    })
    .unwrap();
}

#[test]
fn which_histograms_are_native_follows_prometheus_3() {
    let parts = |zero_threshold, zero_count, spans: &'static [(i64, u64)]| NativeParts {
        schema: 3,
        zero_threshold,
        zero_count,
        spans,
        deltas: &[],
    };
    let cases = [
        (parts(0.0, 0, &[]), false),
        // client_golang's no-op span marks an empty native histogram.
        (parts(0.0, 0, &[(0, 0)]), true),
        (parts(1e-128, 0, &[]), true),
    ];
    for (n, native) in cases {
        let body = family("h", 4, &[metric(&[], 7, &histogram(0, 0.0, &[], Some(n)))]);
        let got = read(&body, NATIVE_ON).unwrap();
        assert_eq!(got[0].0 == "h{}", native, "{got:?}");
    }
}

#[test]
fn float_histograms_take_the_float_counts() {
    let mut h = Vec::new();
    put_double(&mut h, 4, 2.5);
    put_double(&mut h, 2, 1.0);
    put_sint(&mut h, 5, 1);
    put_double(&mut h, 8, 0.5);
    let mut s = Vec::new();
    put_sint(&mut s, 1, -1);
    put_uint(&mut s, 2, 2);
    put_bytes(&mut h, 12, &s);
    // Unpacked doubles are read too.
    put_double(&mut h, 14, 1.5);
    put_double(&mut h, 14, 0.5);
    let body = family("f", 4, &[metric(&[], 7, &h)]);
    let mut seen = None;
    for_each_sample(&body, NATIVE_ON, &AtomicBool::new(false), |s| {
        if let Value::Histogram(h) = s.value {
            seen = Some(*h);
        }
        Ok::<(), ProtoError>(())
    })
    .unwrap();
    let h = seen.expect("a histogram");
    assert_eq!((h.count, h.zero_count, h.schema), (2.5, 0.5, 1));
    assert_eq!(
        h.positive
            .iter()
            .map(|b| (b.index, b.count))
            .collect::<Vec<_>>(),
        [(-1, 1.5), (0, 0.5)]
    );
}

/// The error of reading `body` with native histograms on.
fn error(body: &[u8]) -> String {
    read(body, NATIVE_ON).unwrap_err().to_string()
}

#[test]
fn errors_name_the_offset_and_the_problem() {
    let good = family("g", 1, &[metric(&[], 2, &double(1.0))]);
    // A length past the end.
    let mut body = good.clone();
    body[0] += 5;
    assert_eq!(
        error(&body),
        format!(
            "byte 0: a MetricFamily message of {} bytes runs past the end of its message ({} bytes left)",
            good.len() + 4,
            good.len() - 1
        )
    );
    // A varint that never ends.
    assert_eq!(error(&[0xff; 12]), "byte 0: varint longer than 64 bits");
    assert_eq!(error(&[0x80]), "byte 0: truncated varint");
    // A huge declared length is refused, not allocated.
    let mut huge = Vec::new();
    put_varint(&mut huge, u64::MAX >> 1);
    assert!(
        error(&huge).contains("runs past the end"),
        "{}",
        error(&huge)
    );
    // Spans that do not match the buckets.
    let bad = NativeParts {
        deltas: &[2, 1],
        ..NATIVE
    };
    let body = family(
        "h",
        4,
        &[metric(&[], 7, &histogram(3, 1.0, &[], Some(bad)))],
    );
    assert!(
        error(&body).ends_with("histogram \"h\": positive side: spans require 3 buckets, have 2"),
        "{}",
        error(&body)
    );
    // Negative counts.
    let neg = NativeParts {
        deltas: &[2, -3, 0],
        ..NATIVE
    };
    let body = family(
        "h",
        4,
        &[metric(&[], 7, &histogram(3, 1.0, &[], Some(neg)))],
    );
    assert!(error(&body).contains("negative"), "{}", error(&body));
    // A schema out of range.
    let schema = NativeParts {
        schema: 9,
        ..NATIVE
    };
    let body = family(
        "h",
        4,
        &[metric(&[], 7, &histogram(3, 1.0, &[], Some(schema)))],
    );
    assert!(error(&body).contains("schema 9 is not one of -4..=8"));
    // Bad names and repeated labels.
    let body = family("1x", 1, &[metric(&[], 2, &double(1.0))]);
    assert!(error(&body).contains("invalid metric name \"1x\""));
    let body = family(
        "g",
        1,
        &[metric(&[("a", "1"), ("a", "2")], 2, &double(1.0))],
    );
    assert!(
        error(&body).contains("duplicate label name \"a\""),
        "{}",
        error(&body)
    );
    let body = family("g", 1, &[metric(&[("a-b", "1")], 2, &double(1.0))]);
    assert!(error(&body).contains("invalid label name \"a-b\""));
    // Not UTF-8.
    let body = family("g", 1, &[metric(&[("a", "\u{e9}")], 2, &double(1.0))]);
    let mut bytes = body.clone();
    let at = bytes.iter().position(|&b| b == 0xc3).expect("é");
    bytes[at] = 0xff;
    assert!(error(&bytes).contains("label value is not UTF-8"));
    // Groups and unknown types.
    let body = family("g", 9, &[metric(&[], 2, &double(1.0))]);
    assert!(error(&body).contains("unknown metric type 9"));
    let mut grouped = Vec::new();
    put_uint(&mut grouped, 3, 1);
    grouped[0] = (5 << 3) | 3;
    let mut body = Vec::new();
    put_varint(&mut body, grouped.len() as u64);
    body.extend(grouped);
    assert!(error(&body).contains("wire type 3"), "{}", error(&body));
}

#[test]
fn too_many_buckets_are_refused_before_they_are_built() {
    let mut h = Vec::new();
    put_uint(&mut h, 1, 1);
    put_sint(&mut h, 5, 0);
    let mut s = Vec::new();
    put_sint(&mut s, 1, 0);
    put_uint(&mut s, 2, MAX_BUCKETS as u64 + 1);
    put_bytes(&mut h, 12, &s);
    let body = family("h", 4, &[metric(&[], 7, &h)]);
    assert!(error(&body).contains("span length 16385 is more than 16384"));
    let mut h = Vec::new();
    put_sint(&mut h, 5, 0);
    put_bytes(&mut h, 13, &vec![0u8; MAX_BUCKETS + 1]);
    let body = family("h", 4, &[metric(&[], 7, &h)]);
    assert!(error(&body).contains("more than 16384 bucket deltas"));
}

#[test]
fn labels_repeated_on_many_buckets_hit_the_expansion_budget() {
    let long = "v".repeat(100_000);
    let classic: Vec<(f64, u64)> = (0..200).map(|i| (f64::from(i), 0)).collect();
    let h = histogram(0, 0.0, &classic, None);
    let body = family("h", 4, &[metric(&[("k", &long)], 7, &h)]);
    assert!(
        error(&body).contains("16 times its size"),
        "{}",
        error(&body)
    );
}

#[test]
fn never_panics_on_any_prefix_or_flipped_byte() {
    let h = histogram(6, 3.0, &[(1.0, 3)], Some(NATIVE));
    let mut body = family("h", 4, &[metric(&[("k", "v")], 7, &h)]);
    body.extend(family("c_total", 0, &[metric(&[], 3, &double(4.0))]));
    for n in 0..body.len() {
        let _ = read(&body[..n], NATIVE_ON);
        for bit in 0..8 {
            let mut b = body.clone();
            b[n] ^= 1 << bit;
            let _ = read(&b, NATIVE_ON);
        }
    }
}

#[test]
fn a_set_stop_flag_ends_the_read() {
    let body = family("g", 1, &[metric(&[], 2, &double(1.0))]);
    let err = for_each_sample(&body, NATIVE_ON, &AtomicBool::new(true), |_| {
        Ok::<(), ProtoError>(())
    })
    .unwrap_err();
    assert_eq!(err.message, STOPPED);
}
