//! Native histograms as a scrape target serves them to Prometheus: the delimited protobuf
//! exposition (client_model's `MetricFamily` of type histogram), with counts that grow at
//! each scrape. Shared by the interop tests against Prometheus (storage, remote mode, query
//! API); included by path by the evaluator's tests, so it needs only `lookout_promql`.
#![allow(dead_code)]

use lookout_promql::protowire::{put_bytes, put_double, put_sint, put_uint, put_varint, zigzag};

/// The content type of the delimited protobuf exposition.
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// One native histogram of the exposition: its `path` label, schema, zero bucket and
/// populated buckets. After `n` scrapes every count grows with `n` at its own pace (unless
/// `idle`); with `reset_every` the counts start over every that many scrapes (a counter
/// reset), and `appears` adds bucket `.0` from the `.1`th scrape of each round on (a layout
/// change).
pub struct Shape {
    /// The `path` label.
    pub path: &'static str,
    /// Counts frozen at those of the fifth scrape.
    pub idle: bool,
    /// The schema.
    pub schema: i32,
    /// The zero bucket's threshold.
    pub zero_threshold: f64,
    /// Populated negative bucket indexes, ascending.
    pub negative: &'static [i32],
    /// Populated positive bucket indexes, ascending.
    pub positive: &'static [i32],
    /// Scrapes between counter resets.
    pub reset_every: Option<u64>,
    /// A positive bucket index (above the others) and the scrape of the round it appears at.
    pub appears: Option<(i32, u64)>,
}

/// Schema 3 with client_golang's default zero threshold (2^-128), three negative buckets
/// and positive ones with gaps, as the `a` histogram of the interop tests.
pub const SCHEMA3: Shape = Shape {
    path: "a",
    idle: false,
    schema: 3,
    zero_threshold: 2.938735877055719e-39,
    negative: &[-27, -26, -20],
    positive: &[-9, -8, -3, 0, 1, 2, 9],
    reset_every: None,
    appears: None,
};

/// Schema 0 with a zero bucket 0.01 wide and no negative buckets, as the `b` histogram.
pub const SCHEMA0: Shape = Shape {
    path: "b",
    idle: false,
    schema: 0,
    zero_threshold: 0.01,
    negative: &[],
    positive: &[-3, 1, 2],
    reset_every: None,
    appears: None,
};

/// Spans and packed zigzag deltas of sorted `(index, count)` buckets (client_model's
/// encoding), as fields `spans_field` and `spans_field + 1` of a `Histogram`.
pub fn put_buckets(h: &mut Vec<u8>, spans_field: u32, buckets: &[(i32, u64)]) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut next = 0;
    for (n, &(index, _)) in buckets.iter().enumerate() {
        match spans.last_mut() {
            Some(last) if n > 0 && index == next => last.1 += 1,
            _ => spans.push((index - next, 1)),
        }
        next = index + 1;
    }
    let mut part = Vec::new();
    for (offset, length) in spans {
        part.clear();
        put_sint(&mut part, 1, i64::from(offset));
        put_uint(&mut part, 2, u64::from(length));
        put_bytes(h, spans_field, &part);
    }
    part.clear();
    let mut previous = 0i64;
    for &(_, count) in buckets {
        put_varint(&mut part, zigzag(count as i64 - previous));
        previous = count as i64;
    }
    if !part.is_empty() {
        put_bytes(h, spans_field + 1, &part);
    }
}

/// A `Metric` with the histogram of `shape` after `n` scrapes.
pub fn metric(shape: &Shape, n: u64) -> Vec<u8> {
    let n = match (shape.idle, shape.reset_every) {
        (true, _) => 5,
        (false, Some(every)) => n % every.max(1),
        (false, None) => n,
    };
    let grow = |k: usize| (k as u64 + 1) * n + n * n / 7;
    let mut positive_indexes = shape.positive.to_vec();
    if let Some((index, from)) = shape.appears
        && n >= from
    {
        positive_indexes.push(index);
    }
    let negative: Vec<(i32, u64)> = shape
        .negative
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, grow(k + 3)))
        .collect();
    let positive: Vec<(i32, u64)> = positive_indexes
        .iter()
        .enumerate()
        .map(|(k, &i)| (i, grow(k)))
        .collect();
    let zero = 2 * n + n / 3;
    let count = zero + negative.iter().chain(&positive).map(|b| b.1).sum::<u64>();
    let mut h = Vec::new();
    put_uint(&mut h, 1, count);
    put_double(&mut h, 2, n as f64 * 3.7 - 1.25);
    put_sint(&mut h, 5, i64::from(shape.schema));
    put_double(&mut h, 6, shape.zero_threshold);
    put_uint(&mut h, 7, zero);
    put_buckets(&mut h, 9, &negative);
    put_buckets(&mut h, 12, &positive);
    let mut label = Vec::new();
    put_bytes(&mut label, 1, b"path");
    put_bytes(&mut label, 2, shape.path.as_bytes());
    let mut m = Vec::new();
    put_bytes(&mut m, 1, &label);
    put_bytes(&mut m, 7, &h);
    m
}

/// The delimited protobuf exposition of histogram family `name` with `shapes` after `n`
/// scrapes.
pub fn exposition(name: &str, help: &str, shapes: &[Shape], n: u64) -> Vec<u8> {
    let mut family = Vec::new();
    put_bytes(&mut family, 1, name.as_bytes());
    put_bytes(&mut family, 2, help.as_bytes());
    put_uint(&mut family, 3, 4);
    for shape in shapes {
        put_bytes(&mut family, 4, &metric(shape, n));
    }
    let mut out = Vec::new();
    put_varint(&mut out, family.len() as u64);
    out.extend_from_slice(&family);
    out
}
