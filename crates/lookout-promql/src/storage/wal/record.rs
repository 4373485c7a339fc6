//! WAL record bodies in Prometheus's encoding (`tsdb/record`): a type byte, then
//!
//! * **series** (1): per series, its reference as a big-endian `u64`, the number of
//!   labels as an unsigned varint, and each name and value as a varint-length-prefixed
//!   string;
//! * **samples** (2): the first sample's reference and timestamp as big-endian 64-bit
//!   integers, then per sample the signed (zigzag) varint deltas of reference and
//!   timestamp to that first sample and the value's bits as a big-endian `u64`;
//! * **tombstones** (3): per deleted interval, reference (`u64` big-endian), then start
//!   and end as signed varints.
//!
//! Other types (exemplars, memory-map markers, metadata, histograms) are recognised and
//! skipped on replay. Decoding never trusts a length: every count and string is checked
//! against the bytes left.

use crate::labels::Labels;

/// Record type bytes (Prometheus's `record.Type`).
pub const SERIES: u8 = 1;
/// Float samples.
pub const SAMPLES: u8 = 2;
/// Deleted intervals.
pub const TOMBSTONES: u8 = 3;

/// A decoded record.
#[derive(Debug, PartialEq)]
pub enum Record {
    /// Series references and their labels.
    Series(Vec<(u64, Labels)>),
    /// Samples: reference, timestamp (ms), value.
    Samples(Vec<(u64, i64, f64)>),
    /// Deleted intervals: reference, first and last deleted timestamp.
    Tombstones(Vec<(u64, i64, i64)>),
    /// A record of another type, skipped.
    Other(u8),
}

/// Why a record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
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
        assert_eq!(decode(&[9, 1, 2]), Ok(Record::Other(9)));
    }
}
