use super::*;
use crate::storage::block::BLOCK_RANGE_MS;
use crate::storage::block::tests::{T0, all, block_dirs, copy_dir, fill, raw_blocks};
use crate::storage::wal::WalOptions;
use crate::storage::{Queryable, Storage};
use promql_parser::label::{MatchOp, Matcher};

const H: i64 = 3600 * 1000;

/// A block `ulid` over `[min_h, max_h)` hours.
fn m(ulid: &str, min_h: i64, max_h: i64) -> BlockMeta {
    BlockMeta {
        ulid: ulid.into(),
        min_time: min_h * H,
        max_time: max_h * H,
        stats: Default::default(),
        compaction: Compaction {
            level: 1,
            ..Default::default()
        },
        version: 1,
    }
}

/// Blocks `(ULID, start hour, end hour)`.
fn ms(spec: &[(&str, i64, i64)]) -> Vec<BlockMeta> {
    spec.iter().map(|&(u, a, b)| m(u, a, b)).collect()
}

fn planned(metas: &[BlockMeta]) -> Vec<String> {
    plan(metas, &block_ranges(BLOCK_RANGE_MS, MAX_BLOCK_RANGE_MS))
}

#[test]
fn ranges_grow_threefold_up_to_a_tenth_of_the_retention_or_31_days() {
    assert_eq!(
        block_ranges(BLOCK_RANGE_MS, max_block_range(0, 0, BLOCK_RANGE_MS)),
        [2, 6, 18, 54, 162, 486].map(|h| h * H)
    );
    assert_eq!(
        block_ranges(
            BLOCK_RANGE_MS,
            max_block_range(15 * 24 * H, 0, BLOCK_RANGE_MS)
        ),
        [2, 6, 18].map(|h| h * H)
    );
    assert_eq!(
        block_ranges(BLOCK_RANGE_MS, max_block_range(6 * H, 0, BLOCK_RANGE_MS)),
        [2 * H]
    );
    assert_eq!(
        block_ranges(BLOCK_RANGE_MS, max_block_range(0, 2 * H, BLOCK_RANGE_MS)),
        [2 * H]
    );
}

#[test]
fn the_newest_block_is_left_alone_until_a_newer_one_exists() {
    assert!(planned(&[m("a", 0, 2), m("b", 2, 4)]).is_empty());
    // Without the newest, `b` is the newest: a group must fill its range or end before
    // `b` starts.
    assert!(planned(&[m("a", 0, 2), m("b", 2, 4), m("c", 4, 6)]).is_empty());
    assert_eq!(
        planned(&[m("a", 0, 2), m("b", 2, 4), m("c", 4, 6), m("d", 6, 8)]),
        ["a", "b", "c"]
    );
    // A partial first range is merged once it ends before the newest-but-one starts.
    let metas = [m("a", 1, 2), m("b", 2, 4), m("c", 4, 6), m("d", 6, 8)];
    assert!(planned(&metas).is_empty());
    let metas = [
        m("a", 1, 2),
        m("b", 2, 4),
        m("c", 4, 6),
        m("d", 6, 8),
        m("e", 8, 10),
    ];
    assert_eq!(planned(&metas), ["a", "b", "c"]);
    assert!(planned(&[m("a", 0, 2)]).is_empty());
    assert!(planned(&[]).is_empty());
}

#[test]
fn the_widest_filled_range_after_the_narrower_ones() {
    // Three 6 h blocks fill an 18 h range once a newer block exists.
    let metas = [m("a", 0, 6), m("b", 6, 12), m("c", 12, 18), m("d", 18, 20)];
    assert_eq!(planned(&metas), ["a", "b", "c"]);
    // A 6 h range with two blocks comes before.
    let metas = ms(&[
        ("a", 0, 6),
        ("b", 6, 12),
        ("c", 12, 14),
        ("d", 14, 16),
        ("e", 18, 20),
        ("f", 20, 22),
    ]);
    assert_eq!(planned(&metas), ["c", "d"]);
    // A block across an aligned boundary is never grouped.
    assert!(planned(&[m("a", 1, 7), m("b", 7, 8), m("c", 8, 10)]).is_empty());
    // With only the 2 h range, nothing is merged.
    let metas = [m("a", 0, 2), m("b", 2, 4), m("c", 4, 6), m("d", 6, 8)];
    assert!(plan(&metas, &[2 * H]).is_empty());
}

#[test]
fn overlapping_blocks_come_first_even_the_newest() {
    let metas = ms(&[
        ("a", 0, 2),
        ("b", 2, 4),
        ("c", 4, 6),
        ("d", 6, 8),
        ("e", 7, 9),
    ]);
    assert_eq!(planned(&metas), ["d", "e"]);
    let metas = [m("a", 0, 6), m("b", 1, 2), m("c", 5, 7), m("d", 8, 10)];
    assert_eq!(planned(&metas), ["a", "b", "c"]);
    // Without leveled ranges too.
    assert_eq!(plan(&[m("a", 0, 2), m("b", 0, 2)], &[2 * H]), ["a", "b"]);
}

/// `m` with `deleted` tombstones over `series` series.
fn tombstoned(ulid: &str, min_h: i64, max_h: i64, series: u64, deleted: u64) -> BlockMeta {
    let mut b = m(ulid, min_h, max_h);
    b.stats.num_series = series;
    b.stats.num_tombstones = deleted;
    b
}

#[test]
fn a_block_with_enough_tombstones_is_rewritten_alone() {
    // Ranges 2 h, 6 h, 18 h: a block is wide from 6 h; 18 h blocks merge no further.
    let ranges = block_ranges(BLOCK_RANGE_MS, 18 * H);
    let wide = |u, a, b, d| tombstoned(u, a, b, 100, d);
    // 5 of 100 series: 5/101 is not over 5 %; 6/101 is.
    let metas = [wide("a", 0, 18, 5), wide("b", 18, 36, 0), m("c", 36, 38)];
    assert!(plan(&metas, &ranges).is_empty());
    let metas = [wide("a", 0, 18, 6), wide("b", 18, 36, 0), m("c", 36, 38)];
    assert_eq!(plan(&metas, &ranges), ["a"]);
    // The newest block is never chosen, and merging comes first.
    assert!(plan(&[wide("a", 0, 18, 0), wide("b", 18, 36, 50)], &ranges).is_empty());
    let metas = [
        wide("a", 0, 18, 50),
        m("b", 18, 20),
        m("c", 20, 22),
        m("d", 22, 24),
        m("e", 24, 26),
    ];
    assert_eq!(plan(&metas, &ranges), ["b", "c", "d"]);
    // Without leveled ranges a 2 h block is wide, a shorter one (a partial range) narrow:
    // a narrow block only when every series is deleted, and a narrow one with series
    // left ends the search from the newest back.
    let metas = [tombstoned("a", 0, 2, 4, 1), m("b", 2, 4)];
    assert_eq!(plan(&metas, &[2 * H]), ["a"]);
    let narrow = |u, a, b, d| tombstoned(u, a, b, 4, d);
    let metas = [narrow("a", 0, 1, 4), narrow("b", 2, 3, 0), m("c", 4, 6)];
    assert!(plan(&metas, &[2 * H]).is_empty());
    let metas = [narrow("a", 0, 1, 3), narrow("b", 2, 3, 4), m("c", 4, 6)];
    assert_eq!(plan(&metas, &[2 * H]), ["b"]);
}

/// Five 2 h blocks (`[0:17, 2:00)` … `[8:00, 10:00)`) written by a storage on `dir`, and
/// what the storage answers. The first three are ready to merge: they end before the
/// newest but one starts.
fn five_blocks(dir: &Path) -> Vec<(String, Vec<(i64, u64)>)> {
    let st = Storage::open(raw_blocks(), dir, WalOptions::default()).expect("open");
    fill(&st, 6, 11);
    assert_eq!(st.block_stats().expect("blocks").blocks_loaded, 5);
    let mut want = all(&st, "a");
    want.extend(all(&st, "b"));
    st.close_wal();
    want
}

fn answers(st: &Storage) -> Vec<(String, Vec<(i64, u64)>)> {
    let mut got = all(st, "a");
    got.extend(all(st, "b"));
    got
}

#[test]
fn three_2h_blocks_become_one_6h_block_with_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = five_blocks(dir.path());
    let before = block_dirs(dir.path());
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    let blocks = st.blocks.clone().expect("blocks");
    let start = Instant::now();
    assert_eq!(
        blocks.compact_all(&block_ranges(BLOCK_RANGE_MS, MAX_BLOCK_RANGE_MS)),
        1
    );
    eprintln!("compacted 6 series × 6 h in {:?}", start.elapsed());
    let stats = st.block_stats().expect("blocks");
    assert_eq!(
        (stats.blocks_loaded, stats.compactions),
        (3, 1),
        "{stats:?}"
    );
    assert_eq!(answers(&st), want);
    let after = block_dirs(dir.path());
    assert_eq!(after.len(), 3);
    assert!(before[..3].iter().all(|d| !d.exists()), "parents deleted");
    let meta = BlockMeta::read(&blocks.list()[0].dir).expect("meta");
    assert_eq!(
        (meta.min_time, meta.max_time),
        (T0, T0 - 17 * 60_000 + 6 * H)
    );
    assert_eq!(meta.compaction.level, 2);
    assert_eq!(meta.compaction.sources.len(), 3);
    assert_eq!(meta.compaction.parents.len(), 3);
    let m = [Matcher::new(MatchOp::NotEqual, "job", "zzz")];
    let samples: usize = st
        .select(&m, meta.min_time, meta.max_time - 1)
        .iter()
        .map(|s| s.samples.len())
        .sum();
    assert_eq!(meta.stats.num_samples as usize, samples);
    drop(blocks);
    st.close_wal();
    drop(st);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("reopen");
    assert_eq!(answers(&st), want);
}

#[test]
fn parents_left_behind_by_a_crash_are_deleted_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let want = five_blocks(dir.path());
    let saved = tempfile::tempdir().expect("tempdir");
    let before = block_dirs(dir.path());
    for d in &before {
        copy_dir(d, &saved.path().join(d.file_name().expect("name")));
    }
    let blocks = Blocks::open(dir.path()).expect("open");
    assert_eq!(
        blocks.compact_all(&block_ranges(BLOCK_RANGE_MS, MAX_BLOCK_RANGE_MS)),
        1
    );
    drop(blocks);
    // The crash: the merged block is in place, its parents are not deleted yet.
    for d in &before[..3] {
        copy_dir(&saved.path().join(d.file_name().expect("name")), d);
    }
    assert_eq!(block_dirs(dir.path()).len(), 6);
    let st = Storage::open(raw_blocks(), dir.path(), WalOptions::default()).expect("open");
    assert_eq!(st.block_stats().expect("blocks").blocks_loaded, 3);
    assert!(before[..3].iter().all(|d| !d.exists()), "parents deleted");
    assert_eq!(answers(&st), want);
}

/// A block in `dir` of series `x` and `y` with samples every minute in `[from_h, to_h)`
/// hours (values `v0 + minute`).
fn write_hours(dir: &Path, from_h: i64, to_h: i64, v0: f64, names: &[&str]) {
    let series = names.iter().map(|n| {
        let samples = (from_h * 60..to_h * 60)
            .map(|k| Sample {
                t: k * 60_000,
                v: v0 + k as f64,
            })
            .collect();
        (Labels::new([("__name__", *n)]), samples, Vec::new())
    });
    let c = Compaction {
        level: 1,
        ..Default::default()
    };
    super::super::write_block(dir, series, from_h * H, to_h * H, c)
        .expect("write")
        .expect("a block");
}

#[test]
fn overlapping_blocks_are_merged_with_the_same_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_hours(dir.path(), 0, 2, 0.0, &["x", "y"]);
    write_hours(dir.path(), 1, 3, 0.5, &["x", "z"]);
    write_hours(dir.path(), 4, 6, 0.0, &["x"]);
    let blocks = Blocks::open(dir.path()).expect("open");
    let query = |b: &Blocks| {
        let parts = b
            .list()
            .iter()
            .map(|b| b.select(&[], i64::MIN, i64::MAX, &Default::default()))
            .collect();
        super::super::merge(parts)
    };
    let want = query(&blocks);
    assert_eq!(blocks.compact_all(&[2 * H]), 1);
    let list = blocks.list();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].meta.min_time, list[0].meta.max_time), (0, 3 * H));
    assert_eq!(query(&blocks), want);
    // The later block won the overlap.
    let x = &want[0];
    assert_eq!(x.samples[60].v, 60.5);
    assert_eq!(x.samples.len(), 3 * 60 + 2 * 60);
    drop(blocks);
    let blocks = Blocks::open(dir.path()).expect("reopen");
    assert_eq!(query(&blocks), want);
}
