//! Native histograms through the WAL, head blocks and compaction.

use std::sync::Arc;

use super::tests::{T0, WAIT, raw_blocks};
use super::*;
use crate::histogram::{Bucket, CounterResetHint, FloatHistogram};
use crate::storage::wal::WalOptions;
use crate::storage::{Queryable, STALE_NAN, Storage, StorageOptions};
use promql_parser::label::{MatchOp, Matcher};

/// Step `i`'s histogram: counts growing with `i`, a reset every 500 steps, a new bucket
/// (a layout change) every 300, and fractional counts.
fn hist(i: i64) -> Arc<FloatHistogram> {
    let k = (i % 500) as f64;
    let mut positive = vec![
        Bucket {
            index: -1,
            count: 1.0 + k,
        },
        Bucket {
            index: 2,
            count: 0.5 * k,
        },
    ];
    if (i / 300) % 2 == 1 {
        positive.push(Bucket {
            index: 5,
            count: 2.0,
        });
    }
    let count = positive.iter().map(|b| b.count).sum::<f64>() + k;
    Arc::new(FloatHistogram {
        schema: 1,
        zero_threshold: 2f64.powi(-128),
        zero_count: k,
        count,
        sum: 0.25 * k,
        positive,
        negative: vec![Bucket {
            index: 0,
            count: 0.0,
        }],
        ..Default::default()
    })
}

/// Step `i`'s histogram of series `nhcb`: custom buckets whose bounds change every 250
/// steps (of both of the chunk encoding's bound codes), exponential ones every third 250
/// steps, counts growing with a reset every 400.
fn nhcb(i: i64) -> Arc<FloatHistogram> {
    let k = (i % 400) as f64;
    let bounds: &[f64] = match (i / 250) % 3 {
        0 => &[0.005, 0.1, 2.5, 60.0],
        1 => &[-1.5, 0.1, 1e-9, 1e6].map(|x| x * 0.5),
        _ => return hist(i),
    };
    let mut bounds = bounds.to_vec();
    bounds.sort_by(f64::total_cmp);
    Arc::new(FloatHistogram {
        schema: crate::histogram::CUSTOM_BUCKETS_SCHEMA,
        count: 3.0 * k + 1.0,
        sum: 0.5 * k - 3.0,
        positive: vec![
            Bucket { index: 0, count: k },
            Bucket {
                index: 2,
                count: 2.0 * k,
            },
            Bucket {
                index: 4,
                count: 1.0,
            },
        ],
        custom_values: Arc::from(bounds),
        ..Default::default()
    })
}

/// Appends steps `steps` (15 s apart from [`T0`]): histogram series `h`, float series
/// `f`, series `mixed` that switches between floats and histograms every 100 steps
/// (with a staleness marker before each switch to floats), and custom-bucket series
/// `nhcb` ([`nhcb`]), all of job `j`.
fn append(st: &Storage, steps: std::ops::Range<i64>) {
    let l = |name: &str| Labels::new([("__name__", name), ("job", "j")]);
    for i in steps {
        let t = T0 + i * 15_000;
        st.append_histogram(&l("h"), t, hist(i)).expect("histogram");
        st.append_histogram(&l("nhcb"), t, nhcb(i))
            .expect("custom buckets");
        st.append(&l("f"), t, i as f64).expect("float");
        match (i / 100) % 2 {
            0 if i % 100 == 0 && i > 0 => st.append(&l("mixed"), t, STALE_NAN),
            0 => st.append(&l("mixed"), t, -(i as f64)),
            _ => st.append_histogram(&l("mixed"), t, hist(i)),
        }
        .expect("mixed");
    }
}

/// Every sample of job `j`: floats as bits, histograms with a hint a reader can tell
/// (a chunk boundary reads "unknown" where the head said "no reset").
/// Per series: labels, float samples (bits) and histograms.
type Answer = Vec<(String, Vec<(i64, u64)>, Vec<(i64, FloatHistogram)>)>;

fn answers(st: &Storage) -> Answer {
    let m = [Matcher::new(MatchOp::Equal, "job", "j")];
    st.select(&m, i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            let f = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            let h = s
                .histograms
                .iter()
                .map(|p| {
                    let mut h = (*p.h).clone();
                    if h.counter_reset_hint == CounterResetHint::NotReset {
                        h.counter_reset_hint = CounterResetHint::Unknown;
                    }
                    (p.t, h)
                })
                .collect();
            (s.labels.to_string(), f, h)
        })
        .collect()
}

#[test]
fn histograms_survive_restarts_head_blocks_and_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Storage::new(raw_blocks());
    append(&mem, 0..9 * 240);
    let want = answers(&mem);
    assert_eq!(want.len(), 4);
    assert!(want[3].2.iter().any(|h| h.1.uses_custom_buckets()));
    assert!(want.iter().all(|s| !s.1.is_empty() || !s.2.is_empty()));
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    // The first hour stays in the WAL only: it must come back from there.
    append(&st, 0..240);
    st.close_wal();
    drop(st);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(answers(&st), answers_upto(&mem, 240));
    for h in 1..9 {
        append(&st, h * 240..(h + 1) * 240);
        assert!(st.wait_for_head_blocks(WAIT));
    }
    let stats = st.block_stats().expect("blocks");
    assert_eq!(stats.blocks_loaded, 4, "{stats:?}");
    assert_eq!(answers(&st), want, "head blocks and head");
    st.close_wal();
    drop(st);
    let opts = StorageOptions::default();
    let st = Storage::open(opts, dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(answers(&st), want, "blocks and WAL after a restart");
    // The first two 2 h blocks are merged into a 4 h one, the chunks copied.
    let blocks = st.blocks.clone().expect("blocks");
    assert_eq!(blocks.compact_all(&[BLOCK_RANGE_MS, 2 * BLOCK_RANGE_MS]), 1);
    let stats = st.block_stats().expect("blocks");
    assert_eq!(stats.blocks_loaded, 3, "{stats:?}");
    assert_eq!(answers(&st), want, "compacted");
}

/// What `st` answers for the first `steps` steps.
fn answers_upto(st: &Storage, steps: i64) -> Answer {
    let end = T0 + steps * 15_000;
    answers(st)
        .into_iter()
        .map(|(l, mut f, mut h)| {
            f.retain(|x| x.0 < end);
            h.retain(|x| x.0 < end);
            (l, f, h)
        })
        .collect()
}

#[test]
fn overlapping_blocks_with_histograms_merge_and_the_later_block_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = 3_600_000;
    let c = || meta::Compaction {
        level: 1,
        ..Default::default()
    };
    // Block 1: histograms every minute of [0, 2 h); block 2: floats for [1 h, 3 h) of the
    // same series, and histograms with other counts for [90 min, 3 h) of another.
    let hs = |from: i64, to: i64, k: i64| -> Vec<HPoint> {
        (from..to)
            .map(|m| HPoint {
                t: m * 60_000,
                h: hist(m + k),
            })
            .collect()
    };
    let x = Labels::new([("__name__", "x")]);
    let y = Labels::new([("__name__", "y")]);
    let one = vec![
        (x.clone(), vec![], hs(0, 120, 0)),
        (y.clone(), vec![], hs(0, 120, 0)),
    ];
    write_block(dir.path(), one.into_iter(), 0, 2 * h, c()).expect("write");
    let floats: Vec<Sample> = (60..180)
        .map(|m| Sample {
            t: m * 60_000,
            v: m as f64,
        })
        .collect();
    let two = vec![(x, floats, vec![]), (y, vec![], hs(90, 180, 7))];
    write_block(dir.path(), two.into_iter(), h, 3 * h, c()).expect("write");
    let blocks = Blocks::open(dir.path()).expect("open");
    let query = |b: &Blocks| {
        let parts = b
            .list()
            .iter()
            .map(|b| b.select(&[], i64::MIN, i64::MAX, &Default::default()))
            .collect();
        merge(parts)
    };
    let want = query(&blocks);
    // x: histograms for the first hour, floats after; y: the second block's histograms
    // from 90 min on.
    assert_eq!((want[0].histograms.len(), want[0].samples.len()), (60, 120));
    assert_eq!(want[1].histograms.len(), 180);
    assert_eq!(want[1].histograms[90].h.sum, hist(97).sum);
    assert_eq!(blocks.compact_all(&[2 * h]), 1);
    assert_eq!(blocks.list().len(), 1);
    assert_eq!(query(&blocks), want);
    assert_eq!(blocks.list()[0].meta.stats.num_samples, 60 + 120 + 180);
}
