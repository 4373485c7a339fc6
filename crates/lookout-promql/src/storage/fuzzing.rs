//! Entry points for the fuzz targets in `fuzz/` (not an API): each takes the bytes of one
//! file, or one record, of a data directory and drives the storage's decoder of it to the
//! end — every record, sample, series and postings list — through the same functions the
//! storage uses on a data directory, so that the decoders stay `pub(crate)`.
//!
//! A decoder may refuse its input with an error; it must never panic, hang or allocate
//! without bound. Where the storage has an encoder, what decodes is encoded again and must
//! decode to the same thing (compared bit for bit).
//!
//! The readers of files take paths: the input is written to a scratch directory of this
//! process under the system's temporary directory, removed when the process calls
//! [`remove_scratch`] (fuzz processes are killed as often as they exit: a later run
//! overwrites the same names, one directory per process id).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::block::histochunk::{self, ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM};
use super::block::{chunks, decode_chunk, index_reader::IndexReader, meta, promxor, tombstones};
use super::index::Postings;
use super::wal::{record, replay, segment};
use super::xor::{XorEncoder, XorIter};
use super::{Sample, Storage, StorageOptions};
use crate::histogram::HPoint;

/// This process's scratch directory, created on first use.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("lookout-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the fuzz scratch directory");
        d
    })
}

/// Removes this process's scratch directory.
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

/// A fresh, empty directory `name` in the scratch directory.
fn fresh_dir(name: &str) -> PathBuf {
    let d = scratch().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a fuzz directory");
    d
}

/// Debug text of decoded values: compares NaNs and signed zeros exactly, unlike `==`.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// One WAL record: decoded, and the kinds the storage writes encoded again and decoded to
/// the same record.
pub fn wal_record(rec: &[u8]) {
    let Ok(decoded) = record::decode(rec) else {
        return;
    };
    let mut again = Vec::new();
    match &decoded {
        record::Record::Series(series) => {
            record::encode_series(series.iter().map(|(r, l)| (*r, l)), &mut again);
        }
        record::Record::Samples(samples) => {
            let bits: Vec<(u64, i64, u64)> = samples
                .iter()
                .map(|&(r, t, v)| (r, t, v.to_bits()))
                .collect();
            record::encode_samples(&bits, &mut again);
        }
        _ => return,
    }
    let redecoded = record::decode(&again).expect("a re-encoded record decodes");
    assert!(
        same(&decoded, &redecoded),
        "re-encoded record differs:\n{decoded:?}\n{redecoded:?}"
    );
}

/// One WAL segment file: its page and fragment framing read to the end (every record
/// decoded), then replayed as a whole WAL into an empty storage, as at start.
pub fn wal_segment(data: &[u8]) {
    let dir = fresh_dir("wal");
    let path = segment::segment_path(&dir, 0);
    std::fs::write(&path, data).expect("write the segment");
    let mut series = 0u64;
    let corruption = segment::read_segment(&path, |rec| {
        if let Ok(record::Record::Series(s)) = record::decode(rec) {
            series += s.len() as u64;
        }
    })
    .expect("read the segment");
    if let Some(c) = &corruption {
        assert!(
            c.offset <= data.len() as u64,
            "corruption past the end: {c:?}"
        );
    }
    let storage = Storage::new(StorageOptions::default());
    let report = replay::replay(&storage, &dir, i64::MIN).expect("replay the segment");
    assert!(
        report.series <= series,
        "{} series replayed of {series}",
        report.series
    );
}

/// One chunk: the first byte picks the encoding — 0 a block's XOR chunk, 1 a block's
/// histogram chunk, 2 a block's float histogram chunk, 3 the head's XOR chunk (its first
/// two bytes the sample count), 4 the head's float histogram chunk, 5 samples (16 bytes
/// each: timestamp, value bits) encoded as a block's XOR chunk and as the head's — and
/// decodes every sample. What decodes is encoded again and must decode the same.
pub fn chunk(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            let (mut out, mut hists) = (Vec::new(), Vec::new());
            if decode_chunk(promxor::ENCODING_XOR, rest, i64::MAX, &mut out, &mut hists).is_ok() {
                assert!(hists.is_empty());
                check_block_xor(&out);
            }
        }
        1 | 2 => {
            let enc = if kind % 6 == 1 {
                ENCODING_HISTOGRAM
            } else {
                ENCODING_FLOAT_HISTOGRAM
            };
            let (mut out, mut hists) = (Vec::new(), Vec::new());
            if decode_chunk(enc, rest, i64::MAX, &mut out, &mut hists).is_ok() && out.is_empty() {
                check_float_histograms(&hists);
            }
        }
        3 => {
            let Some((count, bytes)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let samples: Vec<(i64, f64)> =
                XorIter::new(bytes, u16::from_be_bytes(*count)).collect();
            check_head_xor(&samples);
        }
        4 => {
            let mut hists = Vec::new();
            if histochunk::decode_head_chunk(rest, i64::MAX, &mut hists).is_some() {
                check_float_histograms(&hists);
            }
        }
        _ => {
            let mut samples: Vec<Sample> = rest
                .chunks_exact(16)
                .map(|b| Sample {
                    t: i64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                    v: f64::from_bits(u64::from_be_bytes(b[8..].try_into().expect("8 bytes"))),
                })
                .collect();
            // Both encoders take rising timestamps.
            samples.sort_by_key(|s| s.t);
            samples.dedup_by_key(|s| s.t);
            check_block_xor(&samples);
            let pairs: Vec<(i64, f64)> = samples.iter().map(|s| (s.t, s.v)).collect();
            check_head_xor(&pairs);
        }
    }
}

/// `samples` encoded as a block's XOR chunk decode the same.
fn check_block_xor(samples: &[Sample]) {
    let bytes = promxor::encode(samples);
    let mut again = Vec::new();
    promxor::decode_until(&bytes, &mut again, i64::MAX).expect("a re-encoded XOR chunk decodes");
    assert!(
        same(&samples, &again.as_slice()),
        "XOR chunk round trip differs:\n{samples:?}\n{again:?}"
    );
}

/// `samples` encoded as the head's XOR chunk decode the same.
fn check_head_xor(samples: &[(i64, f64)]) {
    let samples = &samples[..samples.len().min(usize::from(u16::MAX))];
    let mut e = XorEncoder::new();
    for &(t, v) in samples {
        e.append(t, v);
    }
    let again: Vec<(i64, f64)> = XorIter::new(e.bytes(), e.count()).collect();
    assert!(
        same(&samples, &again.as_slice()),
        "head XOR chunk round trip differs:\n{samples:?}\n{again:?}"
    );
}

/// Histograms decoded from one chunk (one layout) encoded as a float histogram chunk
/// decode the same.
fn check_float_histograms(hists: &[HPoint]) {
    if hists.is_empty() {
        return;
    }
    let bytes = histochunk::encode_float(hists);
    let mut again = Vec::new();
    histochunk::decode_head_chunk(&bytes, i64::MAX, &mut again)
        .expect("a re-encoded float histogram chunk decodes");
    // The chunk writes a zero threshold or a custom bound equal to 0 as 0, as Prometheus's
    // does, so -0 reads back as 0: the same threshold, the same bound.
    let key = |p: &[HPoint]| -> Vec<(i64, String)> {
        p.iter()
            .map(|p| {
                let positive_zero = |x: f64| if x == 0.0 { 0.0 } else { x };
                let mut h = (*p.h).clone();
                h.zero_threshold = positive_zero(h.zero_threshold);
                h.custom_values = h.custom_values.iter().map(|&b| positive_zero(b)).collect();
                (p.t, format!("{h:?}"))
            })
            .collect()
    };
    assert_eq!(
        key(hists),
        key(&again),
        "float histogram chunk round trip differs"
    );
}

/// One block index file: opened (which checks it whole), then every label name, value,
/// postings list and series read as queries do.
pub fn block_index(data: &[u8]) {
    let dir = fresh_dir("index");
    let path = dir.join("index");
    std::fs::write(&path, data).expect("write the index");
    let Ok(index) = IndexReader::open(&path) else {
        return;
    };
    let all = index.all_ids();
    let mut metas = Vec::new();
    for &id in all.iter() {
        let _ = index.series(id, &mut metas, None);
        let _ = index.series(id, &mut metas, Some((0, 1000)));
    }
    for name in index.label_names() {
        let values = index.label_values(&name);
        for (i, v) in values.iter().enumerate() {
            let _ = index.ids(&name, v);
            // A prefix scans every value: a few of them, not a quadratic number of scans.
            if i < 4 {
                let _ = index.ids_prefixed(&name, v);
            }
        }
        let _ = index.ids_where(&name, &|_| true);
        if !values.is_empty() {
            let _ = index.ids_in(&name, &values);
        }
    }
    let _ = index.all_series();
}

/// One of a block's other files: the first byte picks it — 0 `meta.json`, 1
/// `tombstones`, 2 a chunk segment (`chunks/000001`, every chunk in it read and decoded in
/// turn).
pub fn block_file(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let dir = fresh_dir("block");
    match kind % 3 {
        0 => {
            std::fs::write(dir.join("meta.json"), rest).expect("write meta.json");
            if let Ok(m) = meta::BlockMeta::read(&dir) {
                assert!(m.min_time <= m.max_time);
            }
        }
        1 => {
            std::fs::write(dir.join("tombstones"), rest).expect("write tombstones");
            let _ = tombstones::read(&dir);
        }
        _ => {
            let chunks_dir = dir.join("chunks");
            std::fs::create_dir_all(&chunks_dir).expect("create chunks/");
            std::fs::write(chunks_dir.join("000001"), rest).expect("write the segment");
            let Ok(reader) = chunks::ChunkReader::open(&chunks_dir) else {
                return;
            };
            // Chunks follow each other from the 8-byte header on: length, encoding, data,
            // checksum.
            let mut off = 8usize;
            let (mut out, mut hists) = (Vec::new(), Vec::new());
            while let Ok((enc, body)) = reader.read(off as u64) {
                out.clear();
                hists.clear();
                let _ = decode_chunk(enc, body, i64::MAX, &mut out, &mut hists);
                let (len, used) = chunks::uvarint(&rest[off..]).expect("a chunk read has a length");
                off += used + 1 + len as usize + 4;
            }
        }
    }
}

/// Writes the seed corpora of the storage's fuzz targets from the storage's own writers:
/// `cargo test -p lookout-promql --lib write_fuzz_seeds -- --ignored`.
#[cfg(test)]
mod seeds {
    use std::path::Path;
    use std::sync::Arc;

    use super::super::block::{self, meta::Compaction};
    use super::super::wal::record;
    use super::super::wal::segment::SegmentWriter;
    use super::*;
    use crate::Labels;
    use crate::histogram::notation;

    fn hist(s: &str) -> crate::histogram::FloatHistogram {
        notation::parse(s).expect("a histogram").h
    }

    fn exponential() -> crate::histogram::FloatHistogram {
        hist(
            "schema:2 count:9.5 sum:-3.25 z_bucket:1.5 z_bucket_w:0.001 offset:-3 buckets:[1 0 2.5] n_buckets:[4.5]",
        )
    }

    fn custom() -> crate::histogram::FloatHistogram {
        hist("schema:-53 count:6 sum:7.5 buckets:[1 2 3] custom_values:[0.25 1 1e300]")
    }

    fn records() -> Vec<(&'static str, Vec<u8>)> {
        let a = Labels::new([("__name__", "up"), ("job", "node")]);
        let b = Labels::new([("__name__", "rpc_seconds"), ("le", "+Inf")]);
        let mut series = Vec::new();
        record::encode_series([(1, &a), (2, &b)], &mut series);
        let mut samples = Vec::new();
        record::encode_samples(
            &[
                (1, 1_700_000_000_000, 1f64.to_bits()),
                (2, 1_700_000_015_000, 0.5f64.to_bits()),
                (1, 1_700_000_030_000, crate::storage::STALE_NAN_BITS),
            ],
            &mut samples,
        );
        let (e, c) = (exponential(), custom());
        let mut hists = Vec::new();
        record::encode_float_histograms(
            &[(2, 1_700_000_000_000, &e), (2, 1_700_000_015_000, &e)],
            false,
            &mut hists,
        );
        let mut custom_hists = Vec::new();
        record::encode_float_histograms(&[(2, 1_700_000_000_000, &c)], true, &mut custom_hists);
        vec![
            ("series", series),
            ("samples", samples),
            ("float-histograms", hists),
            ("custom-bucket-histograms", custom_hists),
        ]
    }

    fn points(h: crate::histogram::FloatHistogram) -> Vec<HPoint> {
        let h = Arc::new(h);
        (0..5)
            .map(|i| HPoint {
                t: 1_700_000_000_000 + i * 15_000 + (i == 3) as i64 * 8_192,
                h: h.clone(),
            })
            .collect()
    }

    fn samples() -> Vec<Sample> {
        [1.0, 1.0, 2.5, f64::NAN, -0.0, 1e300, 7.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| Sample {
                t: 1_700_000_000_000 + i as i64 * 15_000 - (i == 4) as i64 * 70_000,
                v,
            })
            .collect()
    }

    fn put(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }

    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when the formats change"]
    fn write_fuzz_seeds() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let tmp = tempfile::tempdir().unwrap();

        // wal_records: one record each; wal_segment: them all in one segment, one of them
        // compressed.
        let recs = records();
        for (name, r) in &recs {
            put(&corpus.join("wal_records"), name, r);
        }
        let mut w = SegmentWriter::create(tmp.path(), 0, 1 << 20).unwrap();
        for (i, (_, r)) in recs.iter().enumerate() {
            let mut enc = snap::raw::Encoder::new();
            let mut buf = Vec::new();
            if i == 1 && segment::compress(&mut enc, r, &mut buf) {
                w.log(&buf, true).unwrap();
            } else {
                w.log(r, false).unwrap();
            }
        }
        w.close().unwrap();
        let seg = std::fs::read(segment::segment_path(tmp.path(), 0)).unwrap();
        // The page is padded to 32 KiB: the records are at its start.
        let end = seg.len() - seg.iter().rev().take_while(|&&b| b == 0).count();
        put(&corpus.join("wal_segment"), "records", &seg[..end]);

        // tsdb_chunks: the kind byte, then the chunk.
        let dir = corpus.join("tsdb_chunks");
        let xor = promxor::encode(&samples());
        put(&dir, "xor", &[&[0u8][..], &xor].concat());
        for (name, h) in [("exponential", exponential()), ("custom", custom())] {
            let c = histochunk::encode_float(&points(h));
            // An integer histogram chunk shares the layout; its fields differ.
            put(
                &dir,
                &format!("int-histogram-{name}"),
                &[&[1u8][..], &c].concat(),
            );
            put(
                &dir,
                &format!("float-histogram-{name}"),
                &[&[2u8][..], &c].concat(),
            );
            put(
                &dir,
                &format!("head-histogram-{name}"),
                &[&[4u8][..], &c].concat(),
            );
        }
        let mut e = XorEncoder::new();
        for s in samples().iter().filter(|s| s.t != samples()[4].t) {
            e.append(s.t, s.v);
        }
        put(
            &dir,
            "head-xor",
            &[&[3u8][..], &e.count().to_be_bytes(), e.bytes()].concat(),
        );
        let raw: Vec<u8> = samples()
            .iter()
            .flat_map(|s| [s.t.to_be_bytes(), s.v.to_bits().to_be_bytes()].concat())
            .collect();
        put(&dir, "samples", &[&[5u8][..], &raw].concat());

        // block_index and block_files: a block of a float series and two histogram series.
        let series = vec![
            (
                Labels::new([("__name__", "a"), ("job", "x")]),
                samples(),
                vec![],
            ),
            (
                Labels::new([("__name__", "h"), ("job", "x")]),
                vec![],
                points(exponential()),
            ),
            (
                Labels::new([("__name__", "h"), ("job", "y")]),
                vec![],
                points(custom()),
            ),
        ];
        let b = block::write_block(
            tmp.path(),
            series.into_iter(),
            1_600_000_000_000,
            1_800_000_000_000,
            Compaction::default(),
        )
        .unwrap()
        .unwrap();
        put(
            &corpus.join("block_index"),
            "block",
            &std::fs::read(b.join("index")).unwrap(),
        );
        let dir = corpus.join("block_files");
        let file = |p: &str| std::fs::read(b.join(p)).unwrap();
        put(&dir, "meta", &[&[0u8][..], &file("meta.json")].concat());
        put(
            &dir,
            "tombstones-empty",
            &[&[1u8][..], &file("tombstones")].concat(),
        );
        // A tombstones file with two intervals: magic, version, (ref, mint, maxt)..., CRC.
        let mut body = Vec::new();
        for (r, a, z) in [(8u64, 0i64, 10i64), (8, 100, 200)] {
            record::put_uvarint(&mut body, r);
            record::put_varint(&mut body, a);
            record::put_varint(&mut body, z);
        }
        let crc = segment::crc32c(&body).to_be_bytes();
        let t = [&[1u8][..], &0x0130_BA30u32.to_be_bytes(), &[1], &body, &crc].concat();
        put(&dir, "tombstones", &t);
        put(
            &dir,
            "chunks",
            &[&[2u8][..], &file("chunks/000001")].concat(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed input of the storage's fuzz targets (seeds and past crashes) runs
    /// through its entry point without a failure.
    #[test]
    fn the_fuzz_corpora_decode_without_a_failure() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let targets = [
            ("wal_records", super::wal_record as fn(&[u8])),
            ("wal_segment", super::wal_segment),
            ("tsdb_chunks", super::chunk),
            ("block_index", super::block_index),
            ("block_files", super::block_file),
        ];
        for (target, run) in targets {
            let mut n = 0;
            for entry in std::fs::read_dir(corpus.join(target)).unwrap() {
                let path = entry.unwrap().path();
                eprintln!("{}", path.display());
                run(&std::fs::read(&path).unwrap());
                n += 1;
            }
            assert!(n > 0, "no inputs for {target}");
        }
        super::remove_scratch();
    }
}
