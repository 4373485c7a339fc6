use super::*;
use crate::storage::wal::WalOptions;
use crate::storage::{Queryable, Storage, StorageOptions};
use promql_parser::label::{MatchOp, Matcher};

/// Start of the test data: an aligned block boundary plus 17 minutes.
pub(super) const T0: i64 = 1_700_006_400_000 + 17 * 60_000;

/// Options that keep the blocks as the head cuts them (no leveled compaction).
pub(super) fn raw_blocks() -> StorageOptions {
    StorageOptions {
        max_block_duration: std::time::Duration::from_millis(BLOCK_RANGE_MS as u64),
        ..Default::default()
    }
}

/// How long a test waits for the compactor thread to write the head blocks due.
pub(super) const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Appends `hours` of samples of `series` series every 15 s from [`T0`], an hour at a
/// time, each followed by a wait for the head blocks due, as when samples come in real
/// time: the compactor thread writes them, never the appender.
pub(super) fn fill(st: &Storage, series: usize, hours: i64) {
    for h in 0..hours {
        append_steps(st, series, h * 240..(h + 1) * 240);
        assert!(
            st.wait_for_head_blocks(WAIT),
            "no head block after {WAIT:?}"
        );
    }
}

/// Appends steps `steps` (15 s apart from [`T0`]) of `series` series.
fn append_steps(st: &Storage, series: usize, steps: std::ops::Range<i64>) {
    for i in steps {
        for s in 0..series {
            let labels = Labels::new([
                ("__name__", "m"),
                ("instance", format!("i{s}").as_str()),
                ("job", if s % 2 == 0 { "a" } else { "b" }),
            ]);
            let v = if s % 3 == 0 {
                (i * 7) as f64
            } else {
                (i as f64 * 0.37).sin()
            };
            st.append(&labels, T0 + i * 15_000 + s as i64, v)
                .expect("append");
        }
    }
}

pub(super) fn all(st: &Storage, job: &str) -> Vec<(String, Vec<(i64, u64)>)> {
    let m = [Matcher::new(MatchOp::Equal, "job", job)];
    st.select(&m, i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            let v = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            (s.labels.to_string(), v)
        })
        .collect()
}

pub(super) fn block_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| is_ulid(&n.to_string_lossy())))
        .collect();
    v.sort();
    v
}

#[test]
fn blocks_are_cut_from_the_head_and_queries_see_the_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Storage::new(raw_blocks());
    fill(&mem, 6, 7);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    fill(&st, 6, 7);
    // 0:17 to 7:17: [0:17, 2:00), [2:00, 4:00) and [4:00, 6:00) are cut as the head
    // passes 3 h.
    let stats = st.block_stats().expect("blocks");
    assert_eq!(stats.blocks_loaded, 3, "{stats:?}");
    assert_eq!(stats.compactions, 3);
    assert_eq!(all(&st, "a"), all(&mem, "a"));
    assert_eq!(all(&st, "b"), all(&mem, "b"));
    assert_eq!(st.label_values("instance"), mem.label_values("instance"));
    // Ranges that cross a block boundary.
    let m = [Matcher::new(MatchOp::NotEqual, "job", "zzz")];
    for (a, b) in [
        (T0 + 3_600_000, T0 + 9_000_000),
        (T0, T0 + 1),
        (T0 + 6_000_000, T0 + 6_000_000),
    ] {
        assert_eq!(st.select(&m, a, b), mem.select(&m, a, b));
    }
    st.close_wal();
    drop(st);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(st.block_stats().expect("blocks").blocks_loaded, 3);
    assert_eq!(all(&st, "a"), all(&mem, "a"));
    assert_eq!(all(&st, "b"), all(&mem, "b"));
    let metas: Vec<BlockMeta> = block_dirs(dir.path())
        .iter()
        .map(|d| BlockMeta::read(d).expect("meta"))
        .collect();
    let mut ranges: Vec<(i64, i64)> = metas.iter().map(|m| (m.min_time, m.max_time)).collect();
    ranges.sort();
    let b = 1_700_006_400_000;
    let r = BLOCK_RANGE_MS;
    assert_eq!(
        ranges,
        vec![(T0, b + r), (b + r, b + 2 * r), (b + 2 * r, b + 3 * r)]
    );
}

/// Ranges written as head blocks by the calling thread.
fn written_here() -> usize {
    crate::storage::persist::RANGES_WRITTEN_HERE.with(|n| n.get())
}

#[test]
fn the_compactor_thread_writes_head_blocks_never_the_appender() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Storage::new(raw_blocks());
    append_steps(&mem, 50, 0..7 * 240);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    // 7 h at once, no waiting: the head passes 3 h, 5 h and 7 h while this thread appends.
    append_steps(&st, 50, 0..7 * 240);
    assert_eq!(written_here(), 0, "the appending thread wrote a head block");
    assert!(
        st.wait_for_head_blocks(WAIT),
        "no head block after {WAIT:?}"
    );
    let stats = st.block_stats().expect("blocks");
    assert_eq!(
        (stats.blocks_loaded, stats.compactions),
        (3, 3),
        "{stats:?}"
    );
    assert_eq!(written_here(), 0, "the appending thread wrote a head block");
    assert_eq!(all(&st, "a"), all(&mem, "a"));
    assert_eq!(all(&st, "b"), all(&mem, "b"));
    // The counter does see writes made here: `persist_head` writes in its caller.
    append_steps(&st, 50, 7 * 240..8 * 240);
    st.persist_head();
    assert_eq!(written_here(), 1);
    assert_eq!(st.block_stats().expect("blocks").blocks_loaded, 4);
}

#[test]
fn dropping_the_storage_while_head_blocks_are_due_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = Storage::new(raw_blocks());
    append_steps(&mem, 50, 0..7 * 240);
    {
        let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
        // Dropped at once: the compactor thread stops after the block under way, if any.
        append_steps(&st, 50, 0..7 * 240);
        st.close_wal();
    }
    // What is not in a block is in the WAL; the reopened storage writes the blocks still
    // due without waiting for an append.
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("reopen");
    assert!(
        st.wait_for_head_blocks(WAIT),
        "no head block after {WAIT:?}"
    );
    assert_eq!(st.block_stats().expect("blocks").blocks_loaded, 3);
    assert_eq!(all(&st, "a"), all(&mem, "a"));
    assert_eq!(all(&st, "b"), all(&mem, "b"));
}

#[test]
fn unfinished_and_broken_blocks_are_removed_or_ignored_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
        fill(&st, 3, 5);
        st.close_wal();
    }
    let blocks = block_dirs(dir.path());
    assert_eq!(blocks.len(), 2);
    let tmp = dir.path().join(format!("{}.tmp", new_ulid(1)));
    std::fs::create_dir_all(tmp.join("chunks")).expect("tmp");
    let no_meta = dir.path().join(new_ulid(2));
    std::fs::create_dir_all(&no_meta).expect("no meta");
    let bad_index = dir.path().join(new_ulid(3));
    copy_dir(&blocks[0], &bad_index);
    std::fs::write(bad_index.join("index"), b"\xba\xaa\xd7\x00\x02garbage").expect("index");
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    let stats = st.block_stats().expect("blocks");
    assert_eq!(
        (stats.blocks_loaded, stats.blocks_ignored),
        (2, 3),
        "{stats:?}"
    );
    assert!(!tmp.exists() && !no_meta.exists());
    assert!(
        bad_index.exists(),
        "a block with a readable meta.json is kept for inspection"
    );
}

pub(super) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn a_chunk_with_a_bad_checksum_is_dropped_logged_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = {
        let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
        fill(&st, 2, 5);
        st.close_wal();
        all(&st, "a")
    };
    let block = block_dirs(dir.path()).remove(0);
    let seg = block.join("chunks").join("000001");
    let mut bytes = std::fs::read(&seg).expect("segment");
    // The first chunk's data starts after the header, its length and encoding.
    bytes[8 + 2 + 1 + 5] ^= 0xff;
    std::fs::write(&seg, bytes).expect("write");
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    let got = all(&st, "a");
    let stats = st.block_stats().expect("blocks");
    assert_eq!(stats.chunks_dropped, 1, "{stats:?}");
    // Only the first series lost its first chunk (120 samples).
    assert_eq!(got.len(), want.len());
    assert_eq!(got[0].1.len(), want[0].1.len() - 120);
    assert_eq!(got[0].1[..], want[0].1[120..]);
}

#[test]
fn hostile_index_lengths_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let series = vec![IndexSeries {
        r: 0,
        labels: Labels::new([("a", "b")]),
        chunks: vec![ChunkMeta {
            mint: 1,
            maxt: 2,
            r: 8,
        }],
    }];
    index::write_index(&path, &series).expect("write");
    let good = std::fs::read(&path).expect("read");
    let read = |path: &Path| IndexReader::open(path).and_then(|r| r.all_series());
    let back = read(&path).expect("reads");
    assert_eq!(back[0].labels, series[0].labels);
    assert_eq!(back[0].chunks, series[0].chunks);
    let matchers = [
        Matcher::new(MatchOp::Equal, "a", "b"),
        Matcher::new(MatchOp::NotEqual, "a", ""),
        Matcher::new(
            MatchOp::Re(regex::Regex::new("^(?:b|c)$").unwrap()),
            "a",
            "b|c",
        ),
        Matcher::new(
            MatchOp::NotRe(regex::Regex::new("^(?:x.*)$").unwrap()),
            "a",
            "x.*",
        ),
    ];
    let prepared: Vec<Prepared> = matchers
        .iter()
        .map(|m| Prepared::new(m, &|_| None))
        .collect();
    // Every 4-byte window set to 0xffffffff, one at a time: errors, never a panic; what
    // opens answers queries without a panic too.
    for at in 0..good.len() - 4 {
        let mut bad = good.clone();
        bad[at..at + 4].copy_from_slice(&[0xff; 4]);
        std::fs::write(&path, &bad).expect("write");
        match IndexReader::open(&path) {
            Err(e) => assert!(e.to_string().contains("index"), "{e}"),
            Ok(r) => {
                for m in &prepared {
                    let mut metas = Vec::new();
                    for id in crate::storage::index::select(&r, std::slice::from_ref(m)) {
                        let _ = r.series(id, &mut metas, Some((0, 10)));
                    }
                }
                let _ = (r.all_series(), r.label_names(), r.label_values("a"));
            }
        }
    }
    std::fs::write(&path, &good[..good.len() / 2]).expect("write");
    assert!(read(&path).is_err());
}

#[test]
fn merge_prefers_the_later_answer_on_equal_timestamps() {
    let s = |v: f64, ts: &[i64]| SeriesData {
        labels: Labels::new([("a", "1")]),
        samples: ts.iter().map(|&t| Sample { t, v }).collect(),
        st: None,
        histograms: Vec::new(),
        hst: None,
    };
    let merged = merge(vec![vec![s(1.0, &[1, 2, 3])], vec![s(2.0, &[3, 4])]]);
    let got: Vec<(i64, f64)> = merged[0].samples.iter().map(|x| (x.t, x.v)).collect();
    assert_eq!(got, vec![(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0)]);
}

#[test]
fn ulids_sort_by_time_and_are_unique() {
    let a = new_ulid(1_700_000_000_000);
    let b = new_ulid(1_700_000_000_001);
    assert!(is_ulid(&a) && a < b && a != new_ulid(1_700_000_000_000));
    assert_eq!(&new_ulid(0)[..10], "0000000000");
}

/// Bytes of the files under `dir` (all levels).
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("metadata");
            if m.is_dir() { du(&e.path()) } else { m.len() }
        })
        .sum()
}

#[test]
fn retention_by_size_keeps_blocks_and_wal_under_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = 200_000;
    let opts = StorageOptions {
        retention_size: limit,
        ..raw_blocks()
    };
    let wal = WalOptions {
        segment_size: 32 * 1024,
        ..Default::default()
    };
    let st = Storage::open(opts, dir.path(), wal).expect("open");
    fill(&st, 6, 30);
    st.close_wal();
    let stats = st.block_stats().expect("blocks");
    let used = du(dir.path());
    eprintln!("{stats:?}, {used} bytes on disk");
    assert!(
        stats.size_retentions > 0 && stats.blocks_loaded >= 1,
        "{stats:?}"
    );
    // The limit is applied when a block is written; the WAL's writer runs on its own
    // thread, so the WAL measured then may be a segment or two behind.
    let slack = 2 * 32 * 1024;
    assert!(used <= limit + slack, "{used} bytes on disk, limit {limit}");
    // The newest data is all there.
    let m = [Matcher::new(MatchOp::Equal, "job", "a")];
    let newest = T0 + (30 * 240 - 1) * 15_000;
    let last = st.select(&m, newest - 3_600_000, newest);
    assert_eq!(last.len(), 3);
    assert!(last.iter().all(|s| s.samples.len() >= 240), "{last:?}");
}

#[test]
fn retention_by_time_deletes_whole_blocks_past_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StorageOptions {
        retention: std::time::Duration::from_secs(6 * 3600),
        ..Default::default()
    };
    let st = Storage::open(opts, dir.path(), WalOptions::default()).expect("open");
    fill(&st, 3, 20);
    let stats = st.block_stats().expect("blocks");
    assert!(stats.time_retentions > 0, "{stats:?}");
    let metas: Vec<BlockMeta> = block_dirs(dir.path())
        .iter()
        .map(|d| BlockMeta::read(d).expect("meta"))
        .collect();
    let newest = metas.iter().map(|m| m.max_time).max().expect("a block");
    assert!(
        metas.iter().all(|m| newest - m.max_time <= 6 * 3600 * 1000),
        "{metas:?}"
    );
    assert_eq!(metas.len() as u64, stats.blocks_loaded);
}

/// With a short `min_block_duration` (as in the churn bench) the head is cut into blocks of
/// that range once it spans 1.5 of them, and a series that stopped leaves memory then: head
/// memory follows the series of the last few minutes, not all series ever seen.
#[test]
fn a_short_block_range_cuts_the_head_in_minutes_and_drops_stopped_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let range = 5 * 60_000;
    let opts = StorageOptions {
        min_block_duration: std::time::Duration::from_millis(range as u64),
        max_block_duration: std::time::Duration::from_millis(range as u64),
        ..Default::default()
    };
    let st = Storage::open(opts, dir.path(), WalOptions::default()).expect("open");
    // Ten series for 10 minutes, then only one more for 10 minutes, a sample every 15 s.
    let series = |i: usize| Labels::new([("__name__", "m"), ("i", i.to_string().as_str())]);
    for step in 0..80 {
        let t = T0 + step * 15_000;
        let live = if step < 40 { 0..10 } else { 10..11 };
        for i in live {
            st.append(&series(i), t, step as f64).expect("append");
        }
        assert!(
            st.wait_for_head_blocks(WAIT),
            "no head block after {WAIT:?}"
        );
    }
    assert_eq!(st.stats().series, 1, "stopped series left the head");
    let blocks = st.block_stats().expect("blocks");
    assert!(blocks.blocks_loaded >= 3, "{blocks:?}");
    for b in block_dirs(dir.path()) {
        let meta = meta::BlockMeta::read(&b).expect("meta");
        assert!(meta.max_time - meta.min_time <= range, "{meta:?}");
    }
    // Nothing lost: every sample of a stopped series is still there, from the blocks.
    let m = [Matcher::new(MatchOp::Equal, "i", "3")];
    let got = st.select(&m, i64::MIN, i64::MAX);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 40);
}

/// The block's index answers every kind of matcher as the in-memory index does, from
/// the mapped file, holding a few bytes per label pair on the heap.
#[test]
fn a_block_index_read_in_place_answers_as_the_memory_index() {
    use crate::storage::index::Index;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("index");
    let labels = |i: u32| {
        let mut l = vec![
            (
                "__name__".to_string(),
                ["up", "x_total", "h_bucket"][i as usize % 3].to_string(),
            ),
            ("instance".to_string(), format!("host-{:05}", i)),
            (
                "job".to_string(),
                ["api", "db", "web", "cache"][i as usize % 4].to_string(),
            ),
        ];
        if i % 5 == 0 {
            l.push((
                "env".to_string(),
                ["", "prod", "dev"][i as usize % 3].to_string(),
            ));
        }
        Labels::new(l.into_iter().filter(|(_, v)| !v.is_empty()))
    };
    let mut series: Vec<IndexSeries> = (0..10_000)
        .map(|i| IndexSeries {
            r: 0,
            labels: labels(i),
            chunks: vec![ChunkMeta {
                mint: i64::from(i),
                maxt: i64::from(i) + 10,
                r: 8 + u64::from(i),
            }],
        })
        .collect();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    index::write_index(&path, &series).expect("write");
    let reader = IndexReader::open(&path).expect("opens");
    assert!(reader.in_label_order());
    let mut memory = Index::default();
    for (i, s) in series.iter().enumerate() {
        memory.add(i as u64, &s.labels);
    }
    let re = |p: &str| regex::Regex::new(&format!("^(?s:{p})$")).unwrap();
    let cases: Vec<Vec<Matcher>> = vec![
        vec![Matcher::new(MatchOp::Equal, "__name__", "up")],
        vec![
            Matcher::new(MatchOp::Equal, "__name__", "x_total"),
            Matcher::new(MatchOp::Equal, "job", "db"),
        ],
        vec![Matcher::new(MatchOp::Equal, "env", "")],
        vec![Matcher::new(MatchOp::NotEqual, "env", "")],
        vec![Matcher::new(MatchOp::NotEqual, "job", "api")],
        vec![Matcher::new(MatchOp::Re(re("api|web")), "job", "api|web")],
        vec![Matcher::new(
            MatchOp::Re(re("host-0001.*")),
            "instance",
            "host-0001.*",
        )],
        vec![Matcher::new(
            MatchOp::Re(re("host-0[0-2]5.7")),
            "instance",
            "host-0[0-2]5.7",
        )],
        vec![Matcher::new(MatchOp::Re(re("|prod")), "env", "|prod")],
        vec![Matcher::new(MatchOp::NotRe(re(".*")), "env", ".*")],
        vec![Matcher::new(MatchOp::NotRe(re("prod|")), "env", "prod|")],
        vec![
            Matcher::new(MatchOp::NotRe(re("d.*")), "job", "d.*"),
            Matcher::new(MatchOp::Re(re(".+")), "env", ".+"),
        ],
        vec![Matcher::new(MatchOp::Equal, "nope", "x")],
        vec![Matcher::new(MatchOp::Equal, "job", "nope")],
    ];
    let mut metas = Vec::new();
    for m in &cases {
        let prepared: Vec<Prepared> = m.iter().map(|m| Prepared::new(m, &|_| None)).collect();
        let want: Vec<Labels> = memory
            .select(&prepared)
            .into_iter()
            .map(|i| series[i as usize].labels.clone())
            .collect();
        let got: Vec<Labels> = crate::storage::index::select(&reader, &prepared)
            .into_iter()
            .map(|id| {
                reader
                    .series(id, &mut metas, None)
                    .expect("decodes")
                    .expect("labels")
            })
            .collect();
        assert_eq!(got, want, "{m:?}");
    }
    assert_eq!(reader.label_names(), memory.label_names());
    assert_eq!(reader.label_values("job"), memory.label_values("job"));
    // The heap holds offsets only: here about 10,000 distinct instances and a few more
    // pairs, 8 bytes each, and 4 bytes per symbol.
    let heap = reader.heap_bytes();
    assert!(heap < 10_000 * 16, "{heap} bytes");
    assert!(
        memory.heap_bytes() > 5 * heap,
        "{} vs {heap}",
        memory.heap_bytes()
    );
}
