//! Protobuf exposition bodies for the scrape tests.

use lookout_promql::protowire::{put_bytes, put_double, put_sint, put_uint, put_varint, zigzag};

/// A body of one family: `name`, type `kind`, the given `Metric` messages.
pub(crate) fn family(name: &str, kind: u64, metrics: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    put_bytes(&mut f, 1, name.as_bytes());
    put_bytes(&mut f, 2, b"help");
    put_uint(&mut f, 3, kind);
    for m in metrics {
        put_bytes(&mut f, 4, m);
    }
    let mut out = Vec::new();
    put_varint(&mut out, f.len() as u64);
    out.extend_from_slice(&f);
    out
}

/// A `Metric` with `labels` and `value` (field `field`: 2 gauge, 3 counter, 5 untyped,
/// 4 summary, 7 histogram), holding the encoded value message.
pub(crate) fn metric(labels: &[(&str, &str)], field: u32, value: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for (k, v) in labels {
        let mut l = Vec::new();
        put_bytes(&mut l, 1, k.as_bytes());
        put_bytes(&mut l, 2, v.as_bytes());
        put_bytes(&mut m, 1, &l);
    }
    put_bytes(&mut m, field, value);
    m
}

pub(crate) fn double(v: f64) -> Vec<u8> {
    let mut b = Vec::new();
    put_double(&mut b, 1, v);
    b
}

/// A histogram message: count, sum, classic buckets, and native parts when `native` is
/// given as (schema, zero threshold, zero count, positive spans, positive deltas).
pub(crate) fn histogram(
    count: u64,
    sum: f64,
    classic: &[(f64, u64)],
    native: Option<NativeParts>,
) -> Vec<u8> {
    let mut h = Vec::new();
    put_uint(&mut h, 1, count);
    put_double(&mut h, 2, sum);
    for (upper, c) in classic {
        let mut b = Vec::new();
        put_uint(&mut b, 1, *c);
        put_double(&mut b, 2, *upper);
        put_bytes(&mut h, 3, &b);
    }
    if let Some(n) = native {
        put_sint(&mut h, 5, n.schema);
        put_double(&mut h, 6, n.zero_threshold);
        put_uint(&mut h, 7, n.zero_count);
        for (offset, length) in n.spans {
            let mut s = Vec::new();
            put_sint(&mut s, 1, *offset);
            put_uint(&mut s, 2, *length);
            put_bytes(&mut h, 12, &s);
        }
        let mut packed = Vec::new();
        for d in n.deltas {
            put_varint(&mut packed, zigzag(*d));
        }
        if !packed.is_empty() {
            put_bytes(&mut h, 13, &packed);
        }
    }
    h
}

pub(crate) struct NativeParts {
    pub(crate) schema: i64,
    pub(crate) zero_threshold: f64,
    pub(crate) zero_count: u64,
    pub(crate) spans: &'static [(i64, u64)],
    pub(crate) deltas: &'static [i64],
}

pub(crate) const NATIVE: NativeParts = NativeParts {
    schema: 0,
    zero_threshold: 0.001,
    zero_count: 1,
    spans: &[(0, 2), (3, 1)],
    deltas: &[2, 1, -2],
};
