use super::*;
use crate::histogram::notation::parse;

fn h(text: &str) -> FloatHistogram {
    parse(text).expect("histogram notation").h
}

fn decode_all(enc: u8, chunk: &[u8]) -> Option<(Vec<HPoint>, Vec<Sample>)> {
    let (mut hs, mut fs) = (Vec::new(), Vec::new());
    decode_until(enc, chunk, i64::MAX, &mut hs, &mut fs)?;
    Some((hs, fs))
}

/// `pts` cut into chunks of at most 120 samples, each encoded and decoded.
fn through_chunks(pts: &[HPoint]) -> Vec<HPoint> {
    let mut got = Vec::new();
    for run in chunk_runs(pts, 120) {
        got.extend(
            decode_all(ENCODING_FLOAT_HISTOGRAM, &encode_float(run))
                .unwrap()
                .0,
        );
    }
    got
}

/// Histograms of one layout with fractional counts, odd sums and irregular timestamps.
fn one_layout(n: usize) -> Vec<HPoint> {
    let mut out = Vec::new();
    let mut t = 1_700_000_000_000i64;
    for i in 0..n {
        t += [15_000, 15_001, 14_000, 1, 3_600_000, 10_000_000_000][i % 6];
        let k = i as f64;
        let mut x = h(&format!(
            "schema:3 count:{} sum:{} z_bucket:{} z_bucket_w:0.001 offset:-2 buckets:[{} 0 {}] n_buckets:[{}]",
            10.5 + 3.0 * k,
            -0.1 * k,
            k,
            2.25 * k,
            7.0 + k,
            0.5
        ));
        x.counter_reset_hint = if i == 0 {
            CounterResetHint::Unknown
        } else {
            CounterResetHint::NotReset
        };
        out.push(HPoint { t, h: Arc::new(x) });
    }
    out
}

#[test]
fn float_histograms_round_trip_bit_for_bit() {
    let pts = one_layout(120);
    assert_eq!(chunk_runs(&pts, 120).len(), 1);
    let chunk = encode_float(&pts);
    let (got, stale) = decode_all(ENCODING_FLOAT_HISTOGRAM, &chunk).expect("decodes");
    assert!(stale.is_empty());
    assert_eq!(got, pts);
    // Decoding stops after maxt.
    let (mut hs, mut fs) = (Vec::new(), Vec::new());
    decode_until(ENCODING_FLOAT_HISTOGRAM, &chunk, pts[9].t, &mut hs, &mut fs).unwrap();
    assert_eq!(hs, pts[..10]);
}

#[test]
fn chunks_are_cut_at_resets_layout_changes_gauges_and_size() {
    let mut pts = one_layout(10);
    // A reset hint, a new layout, a gauge: each starts a chunk.
    Arc::make_mut(&mut pts[3].h).counter_reset_hint = CounterResetHint::Reset;
    for p in &mut pts[5..7] {
        Arc::make_mut(&mut p.h).zero_threshold = 0.5;
    }
    for p in &mut pts[7..] {
        Arc::make_mut(&mut p.h).counter_reset_hint = CounterResetHint::Gauge;
    }
    let runs: Vec<usize> = chunk_runs(&pts, 120).iter().map(|r| r.len()).collect();
    assert_eq!(runs, [3, 2, 2, 3]);
    let runs: Vec<usize> = chunk_runs(&one_layout(250), 120)
        .iter()
        .map(|r| r.len())
        .collect();
    assert_eq!(runs, [120, 120, 10]);
    // Each run reads back with its hints: the header's for the first sample, "no reset"
    // (or gauge) after. A chunk cut for its layout starts with an unknown hint, as in
    // Prometheus: a reader cannot know the previous chunk is still there.
    let got = through_chunks(&pts);
    let mut want = pts.clone();
    Arc::make_mut(&mut want[5].h).counter_reset_hint = CounterResetHint::Unknown;
    assert_eq!(got, want);
}

#[test]
fn varbit_numbers_and_zero_thresholds_use_prometheus_codes() {
    let mut w = BitWriter::default();
    let ints = [
        0,
        1,
        -3,
        4,
        5,
        -31,
        32,
        33,
        256,
        -2047,
        2048,
        131_072,
        16_777_216,
        1 << 55,
        i64::MIN,
        i64::MAX,
    ];
    let uints = [
        0,
        7,
        8,
        63,
        64,
        4095,
        262_143,
        33_554_431,
        1 << 56,
        u64::MAX,
    ];
    for &v in &ints {
        put_varbit_int(&mut w, v);
    }
    for &v in &uints {
        put_varbit_uint(&mut w, v);
    }
    let bytes = w.bytes().to_vec();
    let mut r = BitReader::new(&bytes);
    for &v in &ints {
        assert_eq!(read_varbit_int(&mut r), Some(v));
    }
    for &v in &uints {
        assert_eq!(read_varbit_uint(&mut r), Some(v));
    }
    // 4 is `10` and 100; -3 is `10` and 101 (Prometheus's ranges are -3..=4 for 3 bits).
    let mut w = BitWriter::default();
    put_varbit_int(&mut w, 4);
    put_varbit_int(&mut w, -3);
    assert_eq!(w.bytes(), [0b1010_0101, 0b0100_0000]);
    // Prometheus's default zero threshold 2^-128 takes one byte, 116.
    for (z, first) in [
        (2f64.powi(-128), 116u8),
        (0.0, 0),
        (1024.0, 254),
        (0.001, 255),
    ] {
        let mut w = BitWriter::default();
        put_zero_threshold(&mut w, z);
        assert_eq!(w.bytes()[0], first, "{z}");
        let bytes = w.bytes().to_vec();
        assert_eq!(read_zero_threshold(&mut BitReader::new(&bytes)), Some(z));
    }
}

/// An integer histogram chunk as Prometheus's `HistogramAppender` writes one (test-only
/// encoder: counts, zero counts and buckets, as differences to the previous bucket, in
/// delta-of-delta varbit, the sum XOR-coded).
fn int_chunk(
    header_bits: u8,
    samples: &[(i64, u64, u64, f64, Vec<i64>)],
    spans: &[(u32, i32)],
) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.write_bits(samples.len() as u64, 16);
    w.write_bits(u64::from(header_bits), 8);
    put_zero_threshold(&mut w, 2f64.powi(-128));
    put_varbit_int(&mut w, 0);
    put_varbit_uint(&mut w, spans.len() as u64);
    for &(len, off) in spans {
        put_varbit_uint(&mut w, u64::from(len));
        put_varbit_int(&mut w, i64::from(off));
    }
    put_varbit_uint(&mut w, 0);
    let (first, rest) = samples.split_first().unwrap();
    put_varbit_int(&mut w, first.0);
    put_varbit_uint(&mut w, first.1);
    put_varbit_uint(&mut w, first.2);
    w.write_bits(first.3.to_bits(), 64);
    for &b in &first.4 {
        put_varbit_int(&mut w, b);
    }
    let mut prev = first.clone();
    let (mut dt, mut dc, mut dz) = (0i64, 0i64, 0i64);
    let mut db = vec![0i64; first.4.len()];
    let mut sum = XorField::new(first.3, 0xff);
    for s in rest {
        let (t, c, z) = (
            s.0 - prev.0,
            s.1 as i64 - prev.1 as i64,
            s.2 as i64 - prev.2 as i64,
        );
        put_varbit_int(&mut w, t - dt);
        put_varbit_int(&mut w, c - dc);
        put_varbit_int(&mut w, z - dz);
        (dt, dc, dz) = (t, c, z);
        sum.write(&mut w, s.3);
        for (i, &b) in s.4.iter().enumerate() {
            let d = b - prev.4[i];
            put_varbit_int(&mut w, d - db[i]);
            db[i] = d;
        }
        prev = s.clone();
    }
    w.bytes().to_vec()
}

#[test]
fn integer_histogram_chunks_read_as_float_histograms() {
    // Buckets 0,1 and 3: counts 2,3,1 then 4,3,5 (as differences: 2,1,-2 then 4,-1,2).
    let chunk = int_chunk(
        HEADER_RESET,
        &[
            (1000, 6, 0, 3.5, vec![2, 1, -2]),
            (16_000, 12, 0, 9.25, vec![4, -1, 2]),
            (31_000, 12, 0, f64::from_bits(STALE_NAN_BITS), vec![]),
        ],
        &[(2, 0), (1, 1)],
    );
    let (got, stale) = decode_all(ENCODING_HISTOGRAM, &chunk).expect("decodes");
    let idx_counts = |p: &HPoint| {
        p.h.positive
            .iter()
            .map(|b| (b.index, b.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].t, got[0].h.count, got[0].h.sum), (1000, 6.0, 3.5));
    assert_eq!(idx_counts(&got[0]), [(0, 2.0), (1, 3.0), (3, 1.0)]);
    assert_eq!(got[0].h.counter_reset_hint, CounterResetHint::Reset);
    assert_eq!(
        (got[1].t, got[1].h.count, got[1].h.sum),
        (16_000, 12.0, 9.25)
    );
    assert_eq!(idx_counts(&got[1]), [(0, 4.0), (1, 3.0), (3, 5.0)]);
    assert_eq!(got[1].h.counter_reset_hint, CounterResetHint::NotReset);
    assert_eq!(got[0].h.zero_threshold, 2f64.powi(-128));
    // The stale histogram is a float staleness marker.
    assert_eq!(stale.len(), 1);
    assert_eq!((stale[0].t, stale[0].v.to_bits()), (31_000, STALE_NAN_BITS));
}

#[test]
fn truncated_or_garbled_chunks_are_errors_not_panics() {
    let pts = one_layout(30);
    let chunk = encode_float(&pts);
    let int = int_chunk(
        0,
        &[(1, 3, 0, 1.0, vec![1, 1, 1]), (2, 6, 0, 2.0, vec![2, 2, 2])],
        &[(3, -1)],
    );
    for (enc, c) in [
        (ENCODING_FLOAT_HISTOGRAM, &chunk),
        (ENCODING_HISTOGRAM, &int),
    ] {
        for cut in 0..c.len() {
            assert!(decode_all(enc, &c[..cut]).is_none(), "cut at {cut}");
        }
        // Flipped bits decode to something or nothing, never a panic.
        for i in 0..c.len() * 8 {
            let mut g = c.clone();
            g[i / 8] ^= 0x80 >> (i % 8);
            let _ = decode_all(enc, &g);
        }
    }
    // A span count, span length or schema that no chunk could hold: refused at once.
    let lies: [fn(&mut BitWriter); 3] = [
        |w| put_varbit_uint(w, u64::MAX),
        |w| {
            put_varbit_uint(w, 1);
            put_varbit_uint(w, u64::from(u32::MAX));
            put_varbit_int(w, 0);
        },
        |w| {
            put_varbit_uint(w, 1);
            put_varbit_uint(w, 1);
            put_varbit_int(w, i64::from(i32::MAX));
        },
    ];
    for lie in lies {
        let mut w = BitWriter::default();
        w.write_bits(1, 16);
        w.write_bits(0, 8);
        put_zero_threshold(&mut w, 0.0);
        put_varbit_int(&mut w, 0);
        lie(&mut w);
        put_varbit_uint(&mut w, 0);
        for _ in 0..8 {
            w.write_bits(0, 64);
        }
        let bytes = w.bytes().to_vec();
        assert!(decode_all(ENCODING_FLOAT_HISTOGRAM, &bytes).is_none());
        assert!(decode_all(ENCODING_HISTOGRAM, &bytes).is_none());
    }
    let mut bad_schema = chunk.clone();
    bad_schema[4] = 0xff;
    let _ = decode_all(ENCODING_FLOAT_HISTOGRAM, &bad_schema);
    assert!(decode_all(9, &chunk).is_none());
    // An empty chunk is fine.
    assert_eq!(
        decode_all(ENCODING_FLOAT_HISTOGRAM, &[0, 0, 0]),
        Some((vec![], vec![]))
    );
}

#[test]
fn a_histogram_with_a_stale_sum_reads_as_a_float_staleness_marker() {
    let mut pts = one_layout(4);
    let stale = FloatHistogram {
        sum: f64::from_bits(STALE_NAN_BITS),
        ..(*pts[1].h).clone()
    };
    pts[1].h = Arc::new(stale.clone());
    pts[2].h = Arc::new(stale);
    // Stale samples have no buckets: they share a chunk with each other only.
    let runs = chunk_runs(&pts, 120);
    assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [1, 2, 1]);
    let (mut hs, mut fs) = (Vec::new(), Vec::new());
    for run in runs {
        let chunk = encode_float(run);
        decode_until(ENCODING_FLOAT_HISTOGRAM, &chunk, i64::MAX, &mut hs, &mut fs).unwrap();
    }
    assert_eq!(
        hs.iter().map(|p| p.t).collect::<Vec<_>>(),
        [pts[0].t, pts[3].t]
    );
    let stale: Vec<(i64, u64)> = fs.iter().map(|s| (s.t, s.v.to_bits())).collect();
    assert_eq!(
        stale,
        [(pts[1].t, STALE_NAN_BITS), (pts[2].t, STALE_NAN_BITS)]
    );
}

/// Custom-bucket histograms over `bounds`, counts growing.
fn custom_run(bounds: &str, n: usize, t0: i64) -> Vec<HPoint> {
    (0..n)
        .map(|i| {
            let k = i as f64;
            let mut x = h(&format!(
                "schema:-53 count:{} sum:{} buckets:[{} {} 1] custom_values:[{bounds}]",
                3.5 * k + 1.0,
                0.75 * k,
                k,
                2.5 * k
            ));
            if i > 0 {
                x.counter_reset_hint = CounterResetHint::NotReset;
            }
            HPoint {
                t: t0 + i as i64 * 15_000,
                h: Arc::new(x),
            }
        })
        .collect()
}

#[test]
fn custom_bucket_chunks_hold_their_bounds_and_are_cut_where_they_change() {
    // Bounds of both codes: thousandths in range as varbit, the rest as float bits.
    let a = "-5 0 0.001 0.3 1 33554.43 33554.431 1e300";
    let b = "-5 0 0.001 0.3 1 33554.43 33554.431 2e300";
    let mut pts = custom_run(a, 5, 1000);
    pts.extend(custom_run(b, 4, 100_000).into_iter().map(|mut p| {
        Arc::make_mut(&mut p.h).counter_reset_hint = CounterResetHint::NotReset;
        p
    }));
    let runs: Vec<usize> = chunk_runs(&pts, 120).iter().map(|r| r.len()).collect();
    assert_eq!(runs, [5, 4]);
    let got = through_chunks(&pts);
    // The second chunk's first sample reads with an unknown hint (a new chunk).
    Arc::make_mut(&mut pts[5].h).counter_reset_hint = CounterResetHint::Unknown;
    assert_eq!(got, pts);
    assert_eq!(got[0].h.custom_values[7], 1e300);
    assert_eq!(got[5].h.custom_values[7], 2e300);
    // The head's appender cuts at the same place.
    let mut app = FloatAppender::new(&pts[0]);
    for p in &pts[1..5] {
        assert!(app.fits(&p.h, 120));
        app.append(p);
    }
    assert!(!app.fits(&pts[5].h, 120));
}

/// A one-sample chunk's count, an unknown-hint header, then a layout of zero threshold 0,
/// schema -53 (prefix 1110 and 9 bits) and no spans, up to the bounds.
fn custom_layout_start() -> BitWriter {
    let mut w = BitWriter::default();
    w.write_bits(1, 16);
    w.write_bits(0, 16);
    w.write_bits(0b1110, 4);
    w.write_bits((-53i64 as u64) & 0x1ff, 9);
    w.write_bits(0, 2);
    w
}

#[test]
fn custom_bounds_use_prometheus_3_codes() {
    // Layout of one sample of schema -53 with bounds [0.5, 1e300] and no buckets:
    // zero threshold 0 (8 bits), schema -53 (prefix 1110 + 9 bits), no spans (0, 0),
    // two bounds (10 + 3 bits: 2), 0.5 as 501 (1110 + 9 bits), 1e300 as 0 and 64 bits.
    let x = h("schema:-53 count:0 sum:0 custom_values:[0.5 1e300]");
    let chunk = encode_float(&[HPoint {
        t: 0,
        h: Arc::new(x.clone()),
    }]);
    let mut w = custom_layout_start();
    w.write_bits(0b10, 2);
    w.write_bits(2, 3);
    w.write_bits(0b1110, 4);
    w.write_bits(501, 9);
    w.write_bits(0, 1);
    w.write_bits(1e300f64.to_bits(), 64);
    w.write_bits(0, 1);
    for _ in 0..3 {
        w.write_bits(0, 64);
    }
    assert_eq!(chunk, w.bytes());
    let (got, _) = decode_all(ENCODING_FLOAT_HISTOGRAM, &chunk).unwrap();
    assert_eq!(*got[0].h, x);
}

#[test]
fn garbled_custom_bucket_chunks_are_errors_not_panics() {
    let pts = custom_run("0.1 0.5 1e300", 10, 0);
    let chunk = encode_float(&pts);
    for cut in 3..chunk.len() {
        let _ = decode_all(ENCODING_FLOAT_HISTOGRAM, &chunk[..cut]);
    }
    assert!(decode_all(ENCODING_FLOAT_HISTOGRAM, &chunk[..20]).is_none());
    for i in 2..chunk.len() {
        for bit in 0..8 {
            let mut g = chunk.clone();
            g[i] ^= 1 << bit;
            if let Some((hs, _)) = decode_all(ENCODING_FLOAT_HISTOGRAM, &g) {
                // What decodes has a layout appends would take.
                assert!(hs.iter().all(|p| p.h.check_structure().is_ok()));
            }
        }
    }
    // A bound count past the bits left is refused before anything is allocated.
    let mut w = custom_layout_start();
    w.write_bits(0xff, 8);
    w.write_bits(u64::MAX >> 1, 64);
    assert!(decode_all(ENCODING_FLOAT_HISTOGRAM, w.bytes()).is_none());
}
