//! Prometheus's XOR chunk encoding (chunk encoding 1), as blocks must hold it: a 2-byte
//! big-endian sample count, then the first timestamp as a zig-zag varint and its value as
//! 64 bits, the second timestamp's delta as an unsigned varint, later timestamps as
//! delta-of-deltas in the buckets `0` | `10`+14 | `110`+17 | `1110`+20 | `1111`+64 bits,
//! and every value after the first as `0` (unchanged) or `1` and the XOR with the previous
//! value: `0` and the meaningful bits in the previous window, or `1`, 5 bits of leading
//! zeros, 6 bits of meaningful-bit count (64 written as 0) and those bits.
//!
//! The head's chunks ([`super::super::xor`]) add an integer-step mode to this, so samples
//! are re-encoded when a block is written.

use crate::storage::Sample;
use crate::storage::xor::{BitReader, BitWriter, WriteBits, dod_bits};

/// Prometheus's number for the XOR encoding.
pub(crate) const ENCODING_XOR: u8 = 1;

/// Encodes `samples` (at most 65,535, timestamps increasing) as one XOR chunk.
pub(crate) fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let n = u16::try_from(samples.len()).unwrap_or(u16::MAX);
    w.write_bits(u64::from(n), 16);
    let (mut t, mut delta, mut v) = (0i64, 0i64, 0u64);
    // No leading/trailing-zero window yet.
    let (mut leading, mut trailing) = (0xffu8, 0u8);
    for (i, s) in samples.iter().take(usize::from(n)).enumerate() {
        let bits = s.v.to_bits();
        match i {
            0 => {
                w.write_varint(s.t);
                w.write_bits(bits, 64);
            }
            1 => {
                delta = s.t.wrapping_sub(t);
                w.write_uvarint(delta as u64);
                write_value(&mut w, v, bits, &mut leading, &mut trailing);
            }
            _ => {
                let d = s.t.wrapping_sub(t);
                write_dod(&mut w, d.wrapping_sub(delta));
                write_value(&mut w, v, bits, &mut leading, &mut trailing);
                delta = d;
            }
        }
        t = s.t;
        v = bits;
    }
    w.bytes().to_vec()
}

fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
    } else if (-8191..=8192).contains(&dod) {
        w.write_bits(0b10, 2);
        w.write_bits(dod as u64, 14);
    } else if (-65535..=65536).contains(&dod) {
        w.write_bits(0b110, 3);
        w.write_bits(dod as u64, 17);
    } else if (-524287..=524288).contains(&dod) {
        w.write_bits(0b1110, 4);
        w.write_bits(dod as u64, 20);
    } else {
        w.write_bits(0b1111, 4);
        w.write_bits(dod as u64, 64);
    }
}

pub(crate) fn write_value(
    w: &mut BitWriter,
    prev: u64,
    bits: u64,
    leading: &mut u8,
    trailing: &mut u8,
) {
    let xor = bits ^ prev;
    if xor == 0 {
        w.write_bit(false);
        return;
    }
    w.write_bit(true);
    let lz = (xor.leading_zeros() as u8).min(31);
    let tz = xor.trailing_zeros() as u8;
    if *leading != 0xff && lz >= *leading && tz >= *trailing {
        w.write_bit(false);
        w.write_bits(xor >> *trailing, 64 - *leading - *trailing);
    } else {
        w.write_bit(true);
        let sig = 64 - lz - tz;
        w.write_bits(u64::from(lz), 5);
        w.write_bits(u64::from(sig & 63), 6);
        w.write_bits(xor >> tz, sig);
        *leading = lz;
        *trailing = tz;
    }
}

/// Decodes a whole XOR chunk; `None` when it is malformed or truncated (no sample of it
/// is trusted then).
#[cfg(test)]
pub(crate) fn decode(chunk: &[u8], out: &mut Vec<Sample>) -> Option<()> {
    decode_until(chunk, out, i64::MAX)
}

/// Decodes an XOR chunk's samples up to the first one after `maxt` (timestamps rise, so
/// none later is wanted); `None` when the part read is malformed or truncated.
pub(crate) fn decode_until(chunk: &[u8], out: &mut Vec<Sample>, maxt: i64) -> Option<()> {
    let start = out.len();
    let ok = decode_into(chunk, out, maxt);
    if ok.is_none() {
        out.truncate(start);
    }
    ok
}

fn decode_into(chunk: &[u8], out: &mut Vec<Sample>, maxt: i64) -> Option<()> {
    let n = u16::from_be_bytes([*chunk.first()?, *chunk.get(1)?]);
    let mut r = BitReader::new(&chunk[2..]);
    let (mut t, mut delta, mut v) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u8, 0u8);
    // Each sample takes at least one bit: a count past that is a lie.
    out.reserve(usize::from(n).min(chunk.len() * 8));
    for i in 0..n {
        match i {
            0 => {
                t = r.read_varint()?;
                v = r.read_bits(64)?;
            }
            1 => {
                delta = r.read_uvarint()? as i64;
                t = t.wrapping_add(delta);
                read_value(&mut r, &mut v, &mut leading, &mut trailing)?;
            }
            _ => {
                delta = delta.wrapping_add(read_dod(&mut r)?);
                t = t.wrapping_add(delta);
                read_value(&mut r, &mut v, &mut leading, &mut trailing)?;
            }
        }
        if r.past_end() {
            return None;
        }
        if t > maxt {
            break;
        }
        out.push(Sample {
            t,
            v: f64::from_bits(v),
        });
    }
    Some(())
}

fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    let w = r.peek();
    Some(match w.leading_ones() {
        0 => {
            r.skip(1);
            0
        }
        1 => {
            r.skip(16);
            dod_bits((w << 2) >> 50, 14)
        }
        2 => {
            r.skip(20);
            dod_bits((w << 3) >> 47, 17)
        }
        3 => {
            r.skip(24);
            dod_bits((w << 4) >> 44, 20)
        }
        _ => {
            r.skip(4);
            r.read_bits(64)? as i64
        }
    })
}

/// Reads a value's XOR with the previous one. The control bits (`0`, `10`, or `11`, 5 bits
/// of leading zeros and 6 of meaningful-bit count) come from one 64-bit look-ahead word
/// instead of four reads; a stream that ends inside them is refused as before.
#[inline]
pub(crate) fn read_value(
    r: &mut BitReader<'_>,
    v: &mut u64,
    leading: &mut u8,
    trailing: &mut u8,
) -> Option<()> {
    let w = r.peek();
    if w >> 63 == 0 {
        r.skip(1);
        return (!r.past_end()).then_some(());
    }
    if (w >> 62) & 1 == 1 {
        *leading = ((w >> 57) & 0x1f) as u8;
        let mut sig = ((w >> 51) & 0x3f) as u8;
        if sig == 0 {
            sig = 64;
        }
        r.skip(13);
        // A window wider than 64 bits is malformed.
        *trailing = 64u8.checked_sub(*leading + sig)?;
    } else {
        r.skip(2);
    }
    let sig = 64u8.checked_sub(*leading + *trailing)?;
    let bits = r.read_bits(sig)?;
    *v ^= bits.checked_shl(u32::from(*trailing)).unwrap_or(0);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(samples: &[Sample]) {
        let chunk = encode(samples);
        let mut got = Vec::new();
        decode(&chunk, &mut got).expect("decodes");
        let bits = |s: &[Sample]| s.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(samples));
    }

    #[test]
    fn samples_of_every_shape_round_trip() {
        let mut s = Vec::new();
        let mut t = 1_700_000_000_000i64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..120 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += [15_000, 15_001, 14_000, 1, 3_600_000, 10_000_000_000][i % 6];
            let v = match i % 5 {
                0 => i as f64,
                1 => f64::from_bits(x),
                2 => crate::storage::STALE_NAN,
                3 => -0.0,
                _ => 0.1 * i as f64,
            };
            s.push(Sample { t, v });
        }
        round_trip(&s);
        round_trip(&s[..1]);
        round_trip(&s[..2]);
        round_trip(&[]);
    }

    #[test]
    fn decoding_stops_after_maxt() {
        let s: Vec<Sample> = (0..120)
            .map(|i| Sample {
                t: 1000 + 15_000 * i,
                v: i as f64,
            })
            .collect();
        let chunk = encode(&s);
        for (maxt, want) in [
            (0, 0),
            (1000, 1),
            (16_000, 2),
            (1000 + 15_000 * 50, 51),
            (i64::MAX, 120),
        ] {
            let mut got = Vec::new();
            decode_until(&chunk, &mut got, maxt).expect("decodes");
            assert_eq!(got, s[..want], "maxt {maxt}");
        }
    }

    #[test]
    fn the_layout_is_prometheus_s() {
        // Two samples: count 2, varint(1000)=0xd0 0x0f, value 1.0, uvarint delta 15 and
        // `0` (same value), as Prometheus's xorAppender writes them.
        let chunk = encode(&[Sample { t: 1000, v: 1.0 }, Sample { t: 1015, v: 1.0 }]);
        assert_eq!(
            chunk,
            vec![0, 2, 0xd0, 0x0f, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x0f, 0x00]
        );
    }

    #[test]
    fn truncated_or_lying_chunks_are_refused() {
        let s: Vec<Sample> = (0..50)
            .map(|i| Sample {
                t: i * 1000,
                v: i as f64 * 0.3,
            })
            .collect();
        let chunk = encode(&s);
        let mut out = Vec::new();
        assert!(decode(&chunk[..chunk.len() / 2], &mut out).is_none());
        assert!(out.is_empty());
        let mut lying = chunk.clone();
        lying[0] = 0xff;
        assert!(decode(&lying, &mut out).is_none());
        assert!(decode(&[], &mut out).is_none());
    }

    /// Found by fuzzing (`tsdb_chunks`): the encoder writes deltas-of-deltas up to +2^13,
    /// +2^16 and +2^19 in 14, 17 and 20 bits, as Prometheus does, and the reader took those
    /// exact values for -2^13, -2^16 and -2^19, shifting every later timestamp of the
    /// chunk (a scrape 8.192 s late, in a Prometheus block too).
    #[test]
    fn deltas_of_deltas_at_the_edges_of_each_width_round_trip() {
        for dod in [
            8192i64, -8191, 8193, -8192, 65536, -65535, 65537, 524288, -524287, 524289,
        ] {
            let s = [
                Sample { t: 0, v: 1.0 },
                Sample { t: 1000, v: 1.0 },
                Sample {
                    t: 2000 + dod,
                    v: 1.0,
                },
                Sample {
                    t: 3000 + dod,
                    v: 2.0,
                },
            ];
            round_trip(&s);
        }
        // Prometheus's bytes for a dod of +8192: `10` then 14 bits 0b10_0000_0000_0000.
        let chunk = encode(&[
            Sample { t: 0, v: 0.0 },
            Sample { t: 10, v: 0.0 },
            Sample { t: 8212, v: 0.0 },
        ]);
        let mut out = Vec::new();
        decode(&chunk, &mut out).unwrap();
        assert_eq!(out[2].t, 8212);
    }
}
