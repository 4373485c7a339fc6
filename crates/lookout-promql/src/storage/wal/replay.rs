//! Reading a WAL back at start: the last checkpoint, then every segment after it, into
//! the storage; a corrupt or torn record is cut off and counted.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::record::{self, Record};
use super::segment::{self, Corruption};
use crate::histogram::FloatHistogram;
use crate::storage::{AppendError, ByLabels, MemSeries, STALE_NAN, Storage, is_stale};

/// What a replay found.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplayReport {
    pub corruptions: u64,
    pub corrupt_bytes_dropped: u64,
    pub duration: Duration,
    pub series: u64,
    pub samples: u64,
    pub dropped_samples: u64,
    /// Samples skipped because they are older than the newest block's end: the blocks
    /// hold them.
    pub persisted_samples: u64,
    /// The segment to write next.
    pub next_segment: u32,
    /// Newest sample timestamp of each segment kept (`i64::MIN`: none).
    pub segment_maxt: BTreeMap<u32, i64>,
}

/// The checkpoints in `dir` (`checkpoint.NNNNNNNN`), ascending; unfinished ones
/// (`.tmp`) are removed.
pub(crate) fn checkpoints(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("checkpoint.") else {
            continue;
        };
        if rest.ends_with(".tmp") {
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        if !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = rest.parse::<u32>()
            && entry.file_type()?.is_dir()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Applies records to a storage being restored.
struct Apply<'a> {
    storage: &'a Storage,
    refs: HashMap<u64, Arc<MemSeries>>,
    max_ref: Option<u64>,
    max_t: i64,
    /// Samples older than this are in the blocks already: not loaded into the head.
    min_t: i64,
    report: ReplayReport,
}

impl Apply<'_> {
    /// Applies one record; returns the newest sample timestamp it held.
    fn record(&mut self, rec: &[u8]) -> Result<Option<i64>, record::DecodeError> {
        match record::decode(rec)? {
            Record::Series(series) => {
                let mut inner = self.storage.write_inner();
                for (r, labels) in series {
                    self.max_ref = Some(self.max_ref.map_or(r, |m| m.max(r)));
                    if labels.is_empty() || self.refs.contains_key(&r) {
                        continue;
                    }
                    // The same labels under a second reference (Prometheus can log that)
                    // share the first one's series.
                    if let Some(s) = inner.by_labels.get(&labels) {
                        self.refs.insert(r, s.0.clone());
                        continue;
                    }
                    if inner.by_id.contains_key(&r) {
                        continue;
                    }
                    let series = Arc::new(MemSeries::new(r, labels.clone()));
                    inner.index.add(r, &labels);
                    inner.by_id.insert(r, series.clone());
                    inner.by_labels.insert(ByLabels(series.clone()));
                    self.refs.insert(r, series);
                    self.report.series += 1;
                }
                self.storage.ranks_valid.store(false, Ordering::Release);
                Ok(None)
            }
            Record::Samples(samples) => {
                let mut maxt = None;
                for (r, t, v) in samples {
                    maxt = Some(maxt.map_or(t, |m: i64| m.max(t)));
                    let Some(s) = self.refs.get(&r) else {
                        self.report.dropped_samples += 1;
                        continue;
                    };
                    if t < self.min_t {
                        self.report.persisted_samples += 1;
                        continue;
                    }
                    if s.lock().push(&s.labels, 0, t, v).is_err() {
                        self.report.dropped_samples += 1;
                        continue;
                    }
                    self.report.samples += 1;
                    self.storage.head.head_min_t.fetch_min(t, Ordering::Relaxed);
                    self.max_t = self.max_t.max(t);
                }
                Ok(maxt)
            }
            Record::Histograms(histograms) => Ok(self.histograms(histograms)),
            // Lookout never deletes series; Prometheus's tombstones and other records
            // (exemplars, metadata, chunk markers) are skipped.
            Record::Tombstones(_) | Record::Other(_) => Ok(None),
        }
    }

    /// Applies histogram samples; returns the newest timestamp applied. A histogram whose
    /// sum is the staleness marker (how Prometheus marks a histogram series stale) becomes
    /// a float staleness marker; one that an append would refuse is dropped and counted.
    fn histograms(&mut self, histograms: Vec<(u64, i64, FloatHistogram)>) -> Option<i64> {
        let mut maxt = None;
        for (r, t, h) in histograms {
            maxt = Some(maxt.map_or(t, |m: i64| m.max(t)));
            let Some(s) = self.refs.get(&r) else {
                self.report.dropped_samples += 1;
                continue;
            };
            if t < self.min_t {
                self.report.persisted_samples += 1;
                continue;
            }
            let pushed = if is_stale(h.sum) {
                s.lock().push(&s.labels, 0, t, STALE_NAN)
            } else {
                match h.validate() {
                    Ok(()) => s.lock().push_histogram(&s.labels, 0, t, Arc::new(h)),
                    Err(reason) => Err(AppendError::InvalidHistogram {
                        series: s.labels.to_string(),
                        reason,
                    }),
                }
            };
            if pushed.is_err() {
                self.report.dropped_samples += 1;
                continue;
            }
            self.report.samples += 1;
            self.storage.head.head_min_t.fetch_min(t, Ordering::Relaxed);
            self.max_t = self.max_t.max(t);
        }
        maxt
    }

    /// Reads one segment file; `Some` when it ended in a corruption.
    fn segment(&mut self, path: &Path) -> io::Result<(Option<Corruption>, i64)> {
        let mut maxt = i64::MIN;
        let mut bad = None;
        let c = segment::read_segment(path, |rec| {
            if bad.is_some() {
                return;
            }
            match self.record(rec) {
                Ok(t) => maxt = maxt.max(t.unwrap_or(i64::MIN)),
                Err(e) => bad = Some(e),
            }
        })?;
        if let Some(e) = bad {
            // A record that passed its checksum but does not decode: reported, the rest of
            // the segment is still read (its framing is sound). Counted as a corruption.
            tracing::warn!(segment = %path.display(), err = %e, "WAL: undecodable record skipped");
            self.report.corruptions += 1;
        }
        Ok((c, maxt))
    }
}

/// Replays the WAL in `wal_dir` into `storage` (which must be empty), repairing a
/// corrupt tail. Samples older than `min_t` (the newest block's end: the blocks hold them)
/// are skipped rather than loaded, so the replay's memory peak is the head's, not the whole
/// log's; samples older than the storage's retention are dropped afterwards.
pub(crate) fn replay(storage: &Storage, wal_dir: &Path, min_t: i64) -> io::Result<ReplayReport> {
    let start = Instant::now();
    let mut a = Apply {
        storage,
        refs: HashMap::new(),
        max_ref: None,
        max_t: i64::MIN,
        min_t,
        report: ReplayReport::default(),
    };
    let cps = checkpoints(wal_dir)?;
    let mut first_segment = 0;
    if let Some((n, path)) = cps.last() {
        first_segment = n + 1;
        for k in segment::list_segments(path)? {
            let p = segment::segment_path(path, k);
            let (c, _) = a.segment(&p)?;
            if let Some(c) = c {
                // A checkpoint is written whole before it is renamed into place: damage
                // here is the disk's. What was read is kept.
                tracing::warn!(segment = %p.display(), offset = c.offset, reason = %c.reason, "WAL: corrupt checkpoint, rest of it ignored");
                a.report.corruptions += 1;
                break;
            }
        }
    }
    let segments = segment::list_segments(wal_dir)?;
    let mut next = first_segment;
    let mut iter = segments.into_iter().peekable();
    while let Some(k) = iter.next() {
        let path = segment::segment_path(wal_dir, k);
        if k < first_segment {
            // Covered by the checkpoint; its removal was interrupted.
            std::fs::remove_file(&path)?;
            continue;
        }
        next = k + 1;
        let (c, maxt) = a.segment(&path)?;
        a.report.segment_maxt.insert(k, maxt);
        let Some(c) = c else { continue };
        // Cut the segment after its last good record and drop every later segment, as
        // Prometheus repairs a WAL: samples after a hole could miss their series.
        let size = std::fs::metadata(&path)?.len();
        let mut dropped = size.saturating_sub(c.offset);
        let later: Vec<u32> = iter.by_ref().collect();
        for &l in &later {
            let p = segment::segment_path(wal_dir, l);
            dropped += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&p)?;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.set_len(c.offset)?;
        f.sync_all()?;
        a.report.corruptions += 1;
        a.report.corrupt_bytes_dropped += dropped;
        tracing::warn!(
            segment = %path.display(),
            offset = c.offset,
            reason = %c.reason,
            bytes_dropped = dropped,
            later_segments_removed = later.len(),
            "WAL corruption: truncated after the last good record"
        );
    }
    a.report.next_segment = next;
    let (max_ref, max_t, mut report) = (a.max_ref, a.max_t, a.report);
    if let Some(m) = max_ref {
        let mut inner = storage.write_inner();
        inner.next_id = inner.next_id.max(m.saturating_add(1));
    }
    if max_t > i64::MIN {
        storage.head.max_t.fetch_max(max_t, Ordering::Relaxed);
        let retention = storage.opts.retention;
        if !retention.is_zero() {
            let cut =
                max_t.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            storage.last_cut.store(cut, Ordering::Relaxed);
            storage.truncate_before(cut);
        }
    }
    report.duration = start.elapsed();
    Ok(report)
}
