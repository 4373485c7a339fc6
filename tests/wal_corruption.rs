//! Issue #13, with real processes: the last WAL segment of `lookout evaluator` is damaged
//! on purpose between two runs (bytes overwritten in its last record, the file cut in the
//! middle of that record, garbage appended). The next start must succeed, log what it cut
//! off (the segment's file name and the bytes dropped), count it in
//! `prometheus_tsdb_wal_corruptions_total` and `lookout_tsdb_wal_corrupt_bytes_dropped_total`,
//! and serve the samples written before the damage.
//!
//! Each case also proves a graceful stop loses nothing: the target is frozen, the evaluator
//! stopped with SIGTERM, and what the next run replays is compared with what the first
//! held.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::crash::{CountingTarget, Evaluator, assert_only_served, fragments, segments};

/// What a damage did: where the good part of the segment ends, and the bytes cut off.
struct Damage {
    offset: usize,
    dropped: usize,
}

/// Offset and length of the last record of `segment` (its fragments taken together).
fn last_record(segment: &[u8]) -> (usize, usize) {
    let frags = fragments(segment);
    // Fragment types: 1 full, 2 first, 3 middle, 4 last (the 0x08 bit is snappy's).
    let first = frags
        .iter()
        .rposition(|&(off, _)| matches!(segment[off] & 0x07, 1 | 2))
        .expect("a record in the last segment");
    let (start, _) = frags[first];
    let (end_off, end_len) = frags[frags.len() - 1];
    (start, end_off + end_len - start)
}

/// A first run stopped with SIGTERM: its directory, target and the samples it held.
struct Stopped {
    dir: tempfile::TempDir,
    target: CountingTarget,
    before: BTreeMap<i64, f64>,
}

impl Stopped {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// Runs the evaluator until it has scraped, freezes the target (nothing new comes in) and
/// stops the evaluator with SIGTERM.
async fn run_and_stop() -> Stopped {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = CountingTarget::start().await;
    common::crash::write_scrape_config(dir.path(), target.addr, 100);
    let mut ev = Evaluator::start(dir.path(), &dir.path().join("data"), 0).await;
    ev.wait_for_samples(10).await;
    target.freeze(true);
    // Let a scrape under way finish and its samples be written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ev.stored().await;
    assert_eq!(
        before.len(),
        target.served().len(),
        "every served sample scraped"
    );
    let status = ev
        .process
        .terminate()
        .await
        .expect("exit within 30 s of SIGTERM");
    assert!(status.success(), "SIGTERM: {status:?}");
    Stopped {
        dir,
        target,
        before,
    }
}

/// Stops a first run, damages its last WAL segment with `damage` and starts it again;
/// checks the restart.
async fn damaged_restart(what: &str, damage: impl FnOnce(&Path) -> Damage) {
    let first = run_and_stop().await;
    let last = segments(&first.data().join("wal"))
        .pop()
        .expect("a WAL segment");
    let name = last
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let size = std::fs::metadata(&last).expect("segment").len();
    let d = damage(&last);
    eprintln!(
        "{what}: segment {name} of {size} bytes, good part ends at {}, {} bytes cut",
        d.offset, d.dropped
    );

    let ev = Evaluator::start(first.dir.path(), &first.data(), 0).await;
    let metrics = ev.metrics().await;
    let figure = |name: &str| common::sample(&metrics, name, &[]);
    assert_eq!(
        figure("prometheus_tsdb_wal_corruptions_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        figure("lookout_tsdb_wal_corrupt_bytes_dropped_total"),
        Some(d.dropped as f64),
        "{metrics}"
    );
    let log = ev.process.log();
    // The log goes to a file, not a terminal: plain text, no colour codes (issue 12).
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log that is not a terminal:\n{log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("WAL corruption"))
        .unwrap_or_else(|| panic!("no corruption logged:\n{log}"));
    assert!(line.contains(&name), "{line}");
    assert!(
        line.contains(&format!("bytes_dropped={}", d.dropped)),
        "{line}"
    );
    assert!(line.contains(&format!("offset={}", d.offset)), "{line}");
    assert_eq!(
        std::fs::metadata(&last).expect("segment").len(),
        d.offset as u64
    );
    let after = ev.stored().await;
    assert_only_served(&after, &first.target.served());
    // The damage is in the last record; the records written while the target was frozen
    // (`up` and the scrape's own series) come after every sample of the counter.
    let kept: Vec<_> = first.before.iter().take(after.len()).collect();
    assert_eq!(kept, after.iter().collect::<Vec<_>>(), "not a prefix");
    assert!(
        after.len() + 2 >= first.before.len(),
        "{} of {} samples kept",
        after.len(),
        first.before.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_nothing() {
    let first = run_and_stop().await;
    let ev = Evaluator::start(first.dir.path(), &first.data(), 0).await;
    let metrics = ev.metrics().await;
    let corruptions = common::sample(&metrics, "prometheus_tsdb_wal_corruptions_total", &[]);
    assert_eq!(corruptions, Some(0.0), "{metrics}");
    assert_eq!(
        ev.stored().await,
        first.before,
        "every sample held at SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_last_record_is_cut_off() {
    damaged_restart("overwritten", |seg| {
        let mut bytes = std::fs::read(seg).expect("read segment");
        let (off, len) = last_record(&bytes);
        let middle = off + 7 + (len - 7) / 2;
        for b in &mut bytes[middle..(middle + 2).min(off + len)] {
            *b ^= 0xFF;
        }
        let dropped = bytes.len() - off;
        std::fs::write(seg, &bytes).expect("write segment");
        Damage {
            offset: off,
            dropped,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_cut_mid_page_is_repaired() {
    damaged_restart("cut mid-page", |seg| {
        let bytes = std::fs::read(seg).expect("read segment");
        let (off, len) = last_record(&bytes);
        let cut = off + len / 2;
        assert!(cut % (32 * 1024) != 0, "the cut is inside a page");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .expect("open");
        f.set_len(cut as u64).expect("truncate");
        Damage {
            offset: off,
            dropped: cut - off,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_page_is_dropped() {
    damaged_restart("garbage appended", |seg| {
        let mut bytes = std::fs::read(seg).expect("read segment");
        let end = bytes.len();
        bytes.extend((0..100u8).map(|i| 0xA5 ^ i));
        std::fs::write(seg, &bytes).expect("write segment");
        Damage {
            offset: end,
            dropped: 100,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_evaluator_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let target = CountingTarget::start().await;
    common::crash::write_scrape_config(dir.path(), target.addr, 100);
    let _first = Evaluator::start(dir.path(), &data, 0).await;
    let args = common::evaluator_args(dir.path(), common::free_port(), &data.display().to_string());
    let out = std::process::Command::new(common::LOOKOUT)
        .args(&args)
        .output()
        .expect("run a second evaluator");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let expected = format!(
        "data directory {} is in use by another process",
        data.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("--storage.tsdb.path"), "{err}");
}
