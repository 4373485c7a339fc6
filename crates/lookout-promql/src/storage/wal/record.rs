//! WAL record bodies in Prometheus's encoding (`tsdb/record`): a type byte, then
//!
//! * **series** (1): per series, its reference as a big-endian `u64`, the number of
//!   labels as an unsigned varint, and each name and value as a varint-length-prefixed
//!   string;
//! * **samples** (2): the first sample's reference and timestamp as big-endian 64-bit
//!   integers, then per sample the signed (zigzag) varint deltas of reference and
//!   timestamp to that first sample and the value's bits as a big-endian `u64`;
//! * **tombstones** (3): per deleted interval, reference (`u64` big-endian), then start
//!   and end as signed varints;
//! * **histogram samples** (7, integer histograms, read only) and **float histogram
//!   samples** (8, what Lookout writes): the first sample's reference and timestamp as
//!   in a samples record, then per sample the varint deltas of reference and timestamp,
//!   the counter reset hint byte, the schema (signed varint), the zero threshold
//!   (big-endian float bits), zero count, count (unsigned varints for integer
//!   histograms, float bits for float ones), the sum (float bits), the positive and the
//!   negative spans (a count, then per span its offset as a signed and its length as an
//!   unsigned varint), and the positive and negative bucket counts (a count, then each as
//!   a signed varint difference to the previous bucket of its side for integer
//!   histograms, as float bits for float ones);
//! * **custom-bucket histogram samples** (9, integer, read only) and **custom-bucket
//!   float histogram samples** (10, what Lookout writes for schema -53), Prometheus 3's
//!   records: laid out as types 7 and 8, each histogram followed by its custom bucket
//!   bounds (a count as an unsigned varint, then each bound as big-endian float bits).
//!   The bounds follow any histogram of schema -53, whatever the record type, as
//!   Prometheus 3 reads them. Prometheus 2.42 knows neither type.
//!
//! Other types (exemplars, memory-map markers, metadata) are recognised and skipped on
//! replay. Decoding never trusts a length: every count and string is checked
//! against the bytes left.

use crate::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::labels::Labels;

/// Record type bytes (Prometheus's `record.Type`).
pub const SERIES: u8 = 1;
/// Float samples.
pub const SAMPLES: u8 = 2;
/// Deleted intervals.
pub const TOMBSTONES: u8 = 3;
/// Integer native histogram samples.
pub const HISTOGRAM_SAMPLES: u8 = 7;
/// Float native histogram samples.
pub const FLOAT_HISTOGRAM_SAMPLES: u8 = 8;
/// Integer custom-bucket histogram samples (Prometheus 3).
pub const CUSTOM_BUCKETS_HISTOGRAM_SAMPLES: u8 = 9;
/// Float custom-bucket histogram samples (Prometheus 3).
pub const CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES: u8 = 10;

/// A decoded record.
#[derive(Debug, PartialEq)]
pub enum Record {
    /// Series references and their labels.
    Series(Vec<(u64, Labels)>),
    /// Samples: reference, timestamp (ms), value.
    Samples(Vec<(u64, i64, f64)>),
    /// Deleted intervals: reference, first and last deleted timestamp.
    Tombstones(Vec<(u64, i64, i64)>),
    /// Native histogram samples (integer ones converted): reference, timestamp (ms),
    /// histogram. Bucket indexes are not checked beyond fitting an `i32`.
    Histograms(Vec<(u64, i64, FloatHistogram)>),
    /// A record of another type, skipped.
    Other(u8),
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record ends in the middle of a field.
    #[error("record truncated at byte {0}")]
    Truncated(usize),
    /// A varint longer than ten bytes or overflowing 64 bits.
    #[error("invalid varint at byte {0}")]
    Varint(usize),
    /// A label name or value that is not UTF-8.
    #[error("label not UTF-8 at byte {0}")]
    Utf8(usize),
    /// The record is empty (not even a type byte).
    #[error("empty record")]
    Empty,
    /// A histogram whose spans do not match its buckets, or whose indexes overflow.
    #[error("histogram with spans not matching its buckets at byte {0}")]
    Spans(usize),
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, ((x << 1) ^ (x >> 63)) as u64);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a series record for `series` to `out`.
pub fn encode_series<'a>(series: impl IntoIterator<Item = (u64, &'a Labels)>, out: &mut Vec<u8>) {
    out.push(SERIES);
    for (r, labels) in series {
        out.extend_from_slice(&r.to_be_bytes());
        put_uvarint(out, labels.len() as u64);
        for (n, v) in labels.iter() {
            put_str(out, n);
            put_str(out, v);
        }
    }
}

/// Appends a samples record for `samples` (reference, timestamp, value bits) to `out`.
pub fn encode_samples(samples: &[(u64, i64, u64)], out: &mut Vec<u8>) {
    out.push(SAMPLES);
    let Some(&(r0, t0, _)) = samples.first() else {
        return;
    };
    out.extend_from_slice(&r0.to_be_bytes());
    out.extend_from_slice(&t0.to_be_bytes());
    for &(r, t, v) in samples {
        put_varint(out, (r as i64).wrapping_sub(r0 as i64));
        put_varint(out, t.wrapping_sub(t0));
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Prometheus's `histogram.CounterResetHint` numbers.
fn hint_byte(h: CounterResetHint) -> u8 {
    match h {
        CounterResetHint::Unknown => 0,
        CounterResetHint::Reset => 1,
        CounterResetHint::NotReset => 2,
        CounterResetHint::Gauge => 3,
    }
}

fn hint_from_byte(b: u8) -> CounterResetHint {
    match b {
        1 => CounterResetHint::Reset,
        2 => CounterResetHint::NotReset,
        3 => CounterResetHint::Gauge,
        _ => CounterResetHint::Unknown,
    }
}

fn put_spans(out: &mut Vec<u8>, spans: &[Span]) {
    put_uvarint(out, spans.len() as u64);
    for s in spans {
        put_varint(out, i64::from(s.offset));
        put_uvarint(out, u64::from(s.length));
    }
}

/// Appends a float histogram samples record for `samples` (reference, timestamp,
/// histogram) to `out`: of type [`CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES`] when
/// `custom_buckets`, for custom-bucket histograms (the caller puts those and exponential
/// ones in separate records, as Prometheus 3 does).
pub fn encode_float_histograms(
    samples: &[(u64, i64, &FloatHistogram)],
    custom_buckets: bool,
    out: &mut Vec<u8>,
) {
    out.push(if custom_buckets {
        CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES
    } else {
        FLOAT_HISTOGRAM_SAMPLES
    });
    let Some(&(r0, t0, _)) = samples.first() else {
        return;
    };
    out.extend_from_slice(&r0.to_be_bytes());
    out.extend_from_slice(&t0.to_be_bytes());
    for &(r, t, h) in samples {
        put_varint(out, (r as i64).wrapping_sub(r0 as i64));
        put_varint(out, t.wrapping_sub(t0));
        out.push(hint_byte(h.counter_reset_hint));
        put_varint(out, i64::from(h.schema));
        for v in [h.zero_threshold, h.zero_count, h.count, h.sum] {
            out.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        put_spans(out, &FloatHistogram::spans(&h.positive));
        put_spans(out, &FloatHistogram::spans(&h.negative));
        for side in [&h.positive, &h.negative] {
            put_uvarint(out, side.len() as u64);
            for b in side {
                out.extend_from_slice(&b.count.to_bits().to_be_bytes());
            }
        }
        if h.uses_custom_buckets() {
            put_uvarint(out, h.custom_values.len() as u64);
            for v in h.custom_values.iter() {
                out.extend_from_slice(&v.to_bits().to_be_bytes());
            }
        }
    }
}

/// Reads fields off a record, never past its end.
struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn be64(&mut self) -> Result<u64, DecodeError> {
        let bytes = self
            .b
            .get(self.pos..self.pos + 8)
            .ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 8;
        Ok(u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut u = 0u64;
        for i in 0..10 {
            let &b = self
                .b
                .get(self.pos)
                .ok_or(DecodeError::Truncated(self.pos))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError::Varint(start));
            }
            u |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(u);
            }
        }
        Err(DecodeError::Varint(start))
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.be64()?))
    }

    /// A count of items taking at least `min_bytes` each: never more than the bytes left
    /// can hold.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.uvarint()?;
        if n > (self.left() / min_bytes) as u64 {
            return Err(DecodeError::Truncated(at));
        }
        Ok(n as usize)
    }

    fn spans(&mut self) -> Result<Vec<Span>, DecodeError> {
        // Two varints, a byte each at least.
        let n = self.count(2)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.pos;
            let offset = i32::try_from(self.varint()?).map_err(|_| DecodeError::Spans(at))?;
            let length = u32::try_from(self.uvarint()?).map_err(|_| DecodeError::Spans(at))?;
            out.push(Span { offset, length });
        }
        Ok(out)
    }

    /// One histogram of a histogram samples record (after reference and timestamp);
    /// `float` for the float record's field encodings.
    fn histogram(&mut self, float: bool) -> Result<FloatHistogram, DecodeError> {
        let at = self.pos;
        let hint = hint_from_byte(*self.b.get(self.pos).ok_or(DecodeError::Truncated(at))?);
        self.pos += 1;
        let schema = i32::try_from(self.varint()?).map_err(|_| DecodeError::Spans(at))?;
        let zero_threshold = self.f64()?;
        let (zero_count, count) = if float {
            (self.f64()?, self.f64()?)
        } else {
            (self.uvarint()? as f64, self.uvarint()? as f64)
        };
        let sum = self.f64()?;
        let (pos_spans, neg_spans) = (self.spans()?, self.spans()?);
        let mut sides = [Vec::new(), Vec::new()];
        for side in &mut sides {
            let n = self.count(if float { 8 } else { 1 })?;
            side.reserve(n);
            // Integer buckets are differences to the previous bucket of their side.
            let mut cur = 0i64;
            for _ in 0..n {
                side.push(if float {
                    self.f64()?
                } else {
                    cur = cur.wrapping_add(self.varint()?);
                    cur as f64
                });
            }
        }
        let [pos, neg] = sides;
        let mut custom_values = Vec::new();
        if schema == crate::histogram::CUSTOM_BUCKETS_SCHEMA {
            let n = self.count(8)?;
            custom_values.reserve(n);
            for _ in 0..n {
                custom_values.push(self.f64()?);
            }
        }
        let spans_err = DecodeError::Spans(at);
        Ok(FloatHistogram {
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive: FloatHistogram::buckets_from_spans(&pos_spans, &pos)
                .ok_or(spans_err.clone())?,
            negative: FloatHistogram::buckets_from_spans(&neg_spans, &neg).ok_or(spans_err)?,
            custom_values: custom_values.into(),
            counter_reset_hint: hint,
        })
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let n = self.uvarint()?;
        if n > self.left() as u64 {
            return Err(DecodeError::Truncated(at));
        }
        let bytes = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8(at))
    }
}

/// Decodes one record.
pub fn decode(rec: &[u8]) -> Result<Record, DecodeError> {
    let (&typ, _) = rec.split_first().ok_or(DecodeError::Empty)?;
    let mut d = Dec { b: rec, pos: 1 };
    match typ {
        SERIES => {
            let mut out = Vec::new();
            while d.left() > 0 {
                let r = d.be64()?;
                let n = d.uvarint()?;
                // Each label takes at least two bytes: a count past that is corrupt.
                if n > d.left() as u64 / 2 {
                    return Err(DecodeError::Truncated(d.pos));
                }
                let mut pairs = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    pairs.push((d.str()?, d.str()?));
                }
                out.push((r, Labels::new(pairs)));
            }
            Ok(Record::Series(out))
        }
        SAMPLES => {
            let mut out = Vec::new();
            if d.left() == 0 {
                return Ok(Record::Samples(out));
            }
            let r0 = d.be64()?;
            let t0 = d.be64()? as i64;
            // At least ten bytes per sample.
            out.reserve(d.left() / 10);
            while d.left() > 0 {
                let dr = d.varint()?;
                let dt = d.varint()?;
                let v = d.be64()?;
                out.push((
                    (r0 as i64).wrapping_add(dr) as u64,
                    t0.wrapping_add(dt),
                    f64::from_bits(v),
                ));
            }
            Ok(Record::Samples(out))
        }
        TOMBSTONES => {
            let mut out = Vec::new();
            while d.left() > 0 {
                let r = d.be64()?;
                let mint = d.varint()?;
                let maxt = d.varint()?;
                out.push((r, mint, maxt));
            }
            Ok(Record::Tombstones(out))
        }
        HISTOGRAM_SAMPLES
        | FLOAT_HISTOGRAM_SAMPLES
        | CUSTOM_BUCKETS_HISTOGRAM_SAMPLES
        | CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES => {
            let mut out = Vec::new();
            if d.left() == 0 {
                return Ok(Record::Histograms(out));
            }
            let r0 = d.be64()?;
            let t0 = d.be64()? as i64;
            while d.left() > 0 {
                let dr = d.varint()?;
                let dt = d.varint()?;
                let float =
                    typ == FLOAT_HISTOGRAM_SAMPLES || typ == CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES;
                let h = d.histogram(float)?;
                out.push(((r0 as i64).wrapping_add(dr) as u64, t0.wrapping_add(dt), h));
            }
            Ok(Record::Histograms(out))
        }
        other => Ok(Record::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_samples_round_trip() {
        let a = Labels::new([("__name__", "up"), ("job", "node")]);
        let b = Labels::new([("__name__", "x"), ("le", "+Inf")]);
        let mut buf = Vec::new();
        encode_series([(1, &a), (300, &b)], &mut buf);
        assert_eq!(
            decode(&buf),
            Ok(Record::Series(vec![(1, a.clone()), (300, b.clone())]))
        );
        let samples = [
            (5, 1_700_000_000_000, 1.5f64.to_bits()),
            (3, 1_699_999_999_000, f64::NAN.to_bits()),
            (u64::MAX, i64::MIN, 0),
        ];
        buf.clear();
        encode_samples(&samples, &mut buf);
        let Ok(Record::Samples(got)) = decode(&buf) else {
            panic!("not samples");
        };
        let bits: Vec<_> = got.iter().map(|&(r, t, v)| (r, t, v.to_bits())).collect();
        assert_eq!(bits, samples);
        buf.clear();
        encode_samples(&[], &mut buf);
        assert_eq!(decode(&buf), Ok(Record::Samples(vec![])));
    }

    #[test]
    fn samples_match_prometheus_bytes() {
        // Two samples of refs 1 and 2 at t=1000 and 1015, as record.Encoder.Samples writes:
        // type, BE64 ref, BE64 t, then per sample varint Δref, varint Δt, BE64 value.
        let mut buf = Vec::new();
        encode_samples(
            &[(1, 1000, 1f64.to_bits()), (2, 1015, 2f64.to_bits())],
            &mut buf,
        );
        let mut want = vec![2u8];
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(&1000u64.to_be_bytes());
        want.extend_from_slice(&[0, 0]);
        want.extend_from_slice(&1f64.to_bits().to_be_bytes());
        want.extend_from_slice(&[2, 30]);
        want.extend_from_slice(&2f64.to_bits().to_be_bytes());
        assert_eq!(buf, want);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let a = Labels::new([("__name__", "up"), ("job", "node")]);
        let mut buf = Vec::new();
        encode_series([(7, &a)], &mut buf);
        for cut in 2..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        // A huge label count, an overlong varint, a string past the end.
        let mut huge = vec![SERIES];
        huge.extend_from_slice(&1u64.to_be_bytes());
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(decode(&huge).is_err());
        let mut long = vec![SAMPLES];
        long.extend_from_slice(&[0; 16]);
        long.extend_from_slice(&[0xff; 11]);
        assert_eq!(decode(&long), Err(DecodeError::Varint(17)));
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[4, 1, 2]), Ok(Record::Other(4)));
    }

    fn float_histogram() -> FloatHistogram {
        let mut h = crate::histogram::notation::parse(
            "schema:2 count:9.5 sum:-3.25 z_bucket:1.5 z_bucket_w:0.001 offset:-3 buckets:[1 0 2.5] n_buckets:[4.5] counter_reset_hint:not_reset",
        )
        .unwrap()
        .h;
        // A second span on the positive side.
        h.positive.push(crate::histogram::Bucket {
            index: 7,
            count: 0.5,
        });
        h
    }

    #[test]
    fn float_histograms_round_trip() {
        let a = float_histogram();
        let b = FloatHistogram::default();
        let mut buf = Vec::new();
        encode_float_histograms(
            &[(5, 1_700_000_000_000, &a), (2, 1_699_999_000_000, &b)],
            false,
            &mut buf,
        );
        assert_eq!(buf[0], FLOAT_HISTOGRAM_SAMPLES);
        assert_eq!(
            decode(&buf),
            Ok(Record::Histograms(vec![
                (5, 1_700_000_000_000, a.clone()),
                (2, 1_699_999_000_000, b)
            ]))
        );
        buf.clear();
        encode_float_histograms(&[], false, &mut buf);
        assert_eq!(decode(&buf), Ok(Record::Histograms(vec![])));
    }

    /// An integer histogram samples record as Prometheus's `Encoder.HistogramSamples`
    /// writes one: one histogram of ref 3 at t=1000, hint "reset", schema 0, zero
    /// threshold 2^-128, zero count 1, count 6, sum 7.5, positive span {offset 1, length
    /// 3} with buckets 2, 1, 2 as differences 2, -1, 1, negative span {0, 1} with bucket 0.
    fn prometheus_integer_record() -> Vec<u8> {
        let mut b = vec![HISTOGRAM_SAMPLES];
        b.extend_from_slice(&3u64.to_be_bytes());
        b.extend_from_slice(&1000u64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 1, 0]);
        b.extend_from_slice(&2f64.powi(-128).to_bits().to_be_bytes());
        b.extend_from_slice(&[1, 6]);
        b.extend_from_slice(&7.5f64.to_bits().to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 1, 0, 1, 3, 4, 1, 2, 1, 0]);
        b
    }

    #[test]
    fn integer_histograms_read_as_float_histograms() {
        let Ok(Record::Histograms(got)) = decode(&prometheus_integer_record()) else {
            panic!("not histograms");
        };
        let (r, t, h) = &got[0];
        assert_eq!((*r, *t), (3, 1000));
        assert_eq!(h.counter_reset_hint, CounterResetHint::Reset);
        assert_eq!((h.schema, h.zero_count, h.count, h.sum), (0, 1.0, 6.0, 7.5));
        let pos: Vec<_> = h.positive.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(pos, [(1, 2.0), (2, 1.0), (3, 2.0)]);
        let neg: Vec<_> = h.negative.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(neg, [(0, 0.0)]);
    }

    #[test]
    fn corrupt_histogram_records_are_errors_not_panics() {
        let a = float_histogram();
        let mut buf = Vec::new();
        encode_float_histograms(&[(1, 1, &a)], false, &mut buf);
        for rec in [buf, prometheus_integer_record()] {
            // Type, reference and timestamp alone are an empty record.
            for cut in (2..rec.len()).filter(|&c| c != 17) {
                assert!(decode(&rec[..cut]).is_err(), "cut at {cut}");
            }
            for i in 17..rec.len() {
                let mut g = rec.clone();
                g[i] ^= 0xa5;
                let _ = decode(&g);
            }
        }
        // Huge span and bucket counts are refused before anything is allocated.
        let mut huge = prometheus_integer_record();
        huge.truncate(17 + 4 + 8 + 2 + 8);
        let mut spans = huge.clone();
        spans.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&spans), Err(DecodeError::Truncated(_))));
        // Spans that do not match the buckets.
        let mut mismatch = huge;
        mismatch.extend_from_slice(&[1, 0, 5, 0, 1, 2, 0]);
        assert!(matches!(decode(&mismatch), Err(DecodeError::Spans(_))));
    }

    fn custom_histogram() -> FloatHistogram {
        crate::histogram::notation::parse(
            "schema:-53 count:6 sum:7.5 buckets:[1 2 3] custom_values:[0.25 1 1e300] counter_reset_hint:not_reset",
        )
        .unwrap()
        .h
    }

    #[test]
    fn custom_bucket_histograms_round_trip_in_their_own_record_type() {
        let a = custom_histogram();
        let mut buf = Vec::new();
        encode_float_histograms(&[(5, 1000, &a), (6, 1015, &a)], true, &mut buf);
        assert_eq!(buf[0], CUSTOM_BUCKETS_FLOAT_HISTOGRAM_SAMPLES);
        let Ok(Record::Histograms(got)) = decode(&buf) else {
            panic!("not histograms");
        };
        assert_eq!(got, vec![(5, 1000, a.clone()), (6, 1015, a.clone())]);
        assert_eq!(&*got[0].2.custom_values, &[0.25, 1.0, 1e300]);
        // The bounds close each histogram: Prometheus 3's EncodeFloatHistogram ends with
        // their count and float bits.
        let mut tail = vec![3u8];
        for v in [0.25f64, 1.0, 1e300] {
            tail.extend_from_slice(&v.to_bits().to_be_bytes());
        }
        assert!(buf.ends_with(&tail));
    }

    /// Prometheus 3's `CustomBucketsHistogramSamples` record (type 9): ref 2 at t=500,
    /// hint unknown, schema -53 (zigzag 105), zero threshold 0, zero count 0, count 3,
    /// sum 1.5, one positive span {0, 2} with buckets 1, 2 (differences 1, 1), no
    /// negative side, bounds [0.5].
    #[test]
    fn integer_custom_bucket_records_read_with_their_bounds() {
        let mut b = vec![CUSTOM_BUCKETS_HISTOGRAM_SAMPLES];
        b.extend_from_slice(&2u64.to_be_bytes());
        b.extend_from_slice(&500u64.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 105]);
        b.extend_from_slice(&0f64.to_bits().to_be_bytes());
        b.extend_from_slice(&[0, 3]);
        b.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        b.extend_from_slice(&[1, 0, 2, 0, 2, 2, 2, 0, 1]);
        b.extend_from_slice(&0.5f64.to_bits().to_be_bytes());
        let Ok(Record::Histograms(got)) = decode(&b) else {
            panic!("not histograms: {:?}", decode(&b));
        };
        let (r, t, h) = &got[0];
        assert_eq!((*r, *t, h.schema, h.count), (2, 500, -53, 3.0));
        let pos: Vec<_> = h.positive.iter().map(|b| (b.index, b.count)).collect();
        assert_eq!(pos, [(0, 1.0), (1, 2.0)]);
        assert_eq!(&*h.custom_values, &[0.5]);
        h.validate().unwrap();
        // Cut anywhere after the header, or with a bound count past the end: an error.
        for cut in 18..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = b[..b.len() - 9].to_vec();
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&huge), Err(DecodeError::Truncated(_))));
    }

    #[test]
    fn corrupt_custom_bucket_records_are_errors_not_panics() {
        let a = custom_histogram();
        let mut buf = Vec::new();
        encode_float_histograms(&[(1, 1, &a)], true, &mut buf);
        for cut in (2..buf.len()).filter(|&c| c != 17) {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for i in 17..buf.len() {
            for bit in 0..8 {
                let mut g = buf.clone();
                g[i] ^= 1 << bit;
                let _ = decode(&g);
            }
        }
    }
}
