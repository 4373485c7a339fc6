//! Durability: a write-ahead log in Prometheus 2.42's on-disk format (`DIR/wal/`), so a
//! restart keeps the storage's history and Prometheus's tools can read it (and Lookout can
//! read Prometheus's).
//!
//! * **Format** ([`segment`], [`record`]): segments `00000000`, `00000001`, … of at most
//!   128 MiB made of 32 KiB pages; records split into full/first/middle/last fragments
//!   with a 7-byte header (type with the snappy flag, length, CRC32 Castagnoli); records
//!   snappy-compressed when that makes them smaller. Series records (reference + labels)
//!   are written when a series is created, samples records and float histogram samples
//!   records in batches (a batch's floats before its histograms, as Prometheus writes a
//!   commit, unless a series switched from histograms to floats within it). A series'
//!   reference is the storage's series id, stable for the life of the directory.
//! * **Writing**: appenders only push onto a pending batch under a mutex; a background
//!   thread turns the batch into records every [`WalOptions::flush_interval`] (sooner once
//!   [`WalOptions::batch_samples`] samples wait) and hands them to the operating system.
//!   Memory is bounded: an appender that finds [`WalOptions::max_pending_samples`]
//!   samples waiting blocks (with no storage lock held) until the writer has caught up.
//! * **Syncing**: a segment is fsynced when it is closed (full, or at shutdown) and the
//!   open segment at most every [`WalOptions::sync_interval`] when it has new data, and
//!   on [`Storage::sync_wal`](super::Storage::sync_wal).
//! * **What a crash loses**: `kill -9` (the process dies, the machine does not) loses
//!   only the samples still pending: those appended in the last `flush_interval`
//!   (100 ms by default) or so; everything written is in the operating system's cache
//!   and reaches the disk. A power loss or kernel crash loses at most what was written
//!   since the last sync: about `sync_interval` (5 s by default) plus the pending batch.
//!   A record torn by either is found by its checksum at the next start and cut off.
//! * **Replay** ([`replay`]): at start the last `checkpoint.NNNNNNNN` and the segments
//!   after it are read back into the storage; a corrupt or torn record ends the replay of
//!   its segment, which is truncated there (later segments are deleted, as Prometheus
//!   repairs a WAL), and the loss is logged and counted.
//! * **Truncation**: once the oldest segments hold only samples older than the head's
//!   start (the end of the newest block, or the retention cut), a checkpoint of the live
//!   series records is written (in Prometheus's
//!   `checkpoint.NNNNNNNN` directory format, so every later sample's series reference
//!   still resolves) and those segments are deleted.
//! * A `lock` file in the data directory (`flock`) keeps a second writer out.
//!
//! Not kept in the WAL: start timestamps (Prometheus 2.42's records have no place for
//! them). A segment is only dropped once it is closed (full, 128 MiB by default) and all
//! its samples are in blocks, so the WAL holds about the last 3 h plus one segment.
//! After a replay, samples older than the newest block's end are dropped (they are in
//! the block).

pub mod record;
pub(crate) mod replay;
pub mod segment;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::histogram::FloatHistogram;
use crate::labels::Labels;
use segment::SegmentWriter;

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Largest segment file (128 MiB as in Prometheus; rounded down to whole 32 KiB pages).
    pub segment_size: usize,
    /// Longest time the open segment goes without fsync while it has new data (5 s).
    pub sync_interval: Duration,
    /// Longest time a sample waits in memory before it is written (100 ms).
    pub flush_interval: Duration,
    /// Pending samples that wake the writer early (8192).
    pub batch_samples: usize,
    /// Pending samples at which appenders wait for the writer (1,000,000: about 24 MB).
    pub max_pending_samples: usize,
    /// Snappy-compress records (on, as Prometheus's `--storage.tsdb.wal-compression`).
    pub compress: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: segment::DEFAULT_SEGMENT_SIZE,
            sync_interval: Duration::from_secs(5),
            flush_interval: Duration::from_millis(100),
            batch_samples: 8192,
            max_pending_samples: 1_000_000,
            compress: true,
        }
    }
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// Another process holds the directory's lock.
    #[error(
        "data directory {dir} is in use by another process (it holds {dir}/lock): stop that process, or give this one another --storage.tsdb.path (an empty one, --storage.tsdb.path=, keeps samples in memory only)"
    )]
    Locked {
        /// The data directory.
        dir: String,
    },
    /// A file system error.
    #[error("data directory {dir}: {source}")]
    Io {
        /// The data directory.
        dir: String,
        /// The error.
        source: io::Error,
    },
}

/// Figures of the WAL, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalStats {
    /// Corrupt or torn records found and cut off (`prometheus_tsdb_wal_corruptions_total`).
    pub corruptions: u64,
    /// Bytes dropped by repairs (the corrupt tail and any later segment).
    pub corrupt_bytes_dropped: u64,
    /// Time the replay at start took.
    pub replay_duration: Duration,
    /// Series and samples restored by the replay.
    pub replayed_series: u64,
    /// Samples restored by the replay.
    pub replayed_samples: u64,
    /// Samples of the WAL not restored: older than the retention cut, out of order, or of
    /// an unknown series.
    pub replay_dropped_samples: u64,
    /// Number of the segment being written (`prometheus_tsdb_wal_segment_current`).
    pub segment_current: u32,
    /// Bytes written to segments since start.
    pub bytes_written: u64,
    /// Samples written since start.
    pub samples_written: u64,
    /// Fsyncs of segments since start.
    pub fsyncs: u64,
    /// Checkpoints written and old segments removed (`prometheus_tsdb_wal_truncations_total`).
    pub truncations: u64,
    /// Failed writes (`prometheus_tsdb_wal_writes_failed_total`); the samples stay in
    /// memory but may be missing after a restart.
    pub write_failures: u64,
}

#[derive(Default)]
struct Counters {
    bytes_written: AtomicU64,
    samples_written: AtomicU64,
    fsyncs: AtomicU64,
    truncations: AtomicU64,
    write_failures: AtomicU64,
    segment_current: AtomicU64,
}

#[derive(Default)]
struct Pending {
    series: Vec<(u64, Labels)>,
    samples: Vec<(u64, i64, u64)>,
    histograms: Vec<PendingHistogram>,
    /// Entries pushed so far.
    logged: u64,
    /// Entries written to the operating system.
    written: u64,
    /// Entries written and fsynced.
    synced: u64,
    sync_requested: bool,
    closing: bool,
    closed: bool,
}

/// A histogram sample waiting to be written, and how many float samples were logged
/// before it in the same batch (so that a series switching between floats and
/// histograms keeps its order in the log).
struct PendingHistogram {
    id: u64,
    t: i64,
    h: Arc<FloatHistogram>,
    after: usize,
}

impl Pending {
    /// Float and histogram samples waiting.
    fn pending_samples(&self) -> usize {
        self.samples.len() + self.histograms.len()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes appenders waiting for room and callers of `sync`.
    done: Condvar,
    counters: Counters,
    opts: WalOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the writer asks of the storage when it writes a checkpoint.
pub(crate) struct Source {
    /// The retention cut: samples before it are gone.
    pub min_valid_t: Arc<AtomicI64>,
    /// The live series and their references.
    pub live_series: Box<dyn Fn() -> Vec<(u64, Labels)> + Send>,
}

/// An open WAL: the handle appenders log through.
pub(crate) struct Wal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held for the life of the WAL: the `flock` on `DIR/lock`.
    _lock: File,
    pub(crate) replay: replay::ReplayReport,
}

/// Takes the lock of data directory `dir` (created if missing) and makes `dir/wal`.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let io_err = |source| WalError::Io {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir.join("wal")).map_err(io_err)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(io_err)?;
    match try_flock(&lock) {
        Ok(true) => Ok(lock),
        Ok(false) => Err(WalError::Locked {
            dir: dir.display().to_string(),
        }),
        Err(e) => Err(io_err(e)),
    }
}

/// An exclusive, non-blocking `flock` (released when the file is closed, also when the
/// process dies); false when another open file description holds it.
#[cfg(unix)]
fn try_flock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor owned by `file`, which outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> io::Result<bool> {
    Ok(true)
}

impl Wal {
    /// Starts writing in `wal_dir` after a replay that ended at segment `last` (a new
    /// segment is started after it, as Prometheus does).
    pub(crate) fn start(
        wal_dir: PathBuf,
        lock: File,
        opts: WalOptions,
        replay: replay::ReplayReport,
        source: Source,
    ) -> io::Result<Wal> {
        let first = replay.next_segment;
        let seg = SegmentWriter::create(&wal_dir, first, opts.segment_size)?;
        sync_dir(&wal_dir)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            counters: Counters::default(),
            opts,
        });
        shared
            .counters
            .segment_current
            .store(u64::from(first), Ordering::Relaxed);
        let mut writer = Writer {
            dir: wal_dir,
            seg: Some(seg),
            seg_maxt: replay.segment_maxt.clone(),
            shared: shared.clone(),
            source,
            enc: snap::raw::Encoder::new(),
            buf: Vec::new(),
            zbuf: Vec::new(),
            last_sync: Instant::now(),
            dirty: false,
        };
        writer.seg_maxt.insert(first, i64::MIN);
        writer.maybe_truncate();
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run())?;
        Ok(Wal {
            shared,
            writer: Mutex::new(Some(handle)),
            _lock: lock,
            replay,
        })
    }

    /// Logs the creation of series `id`. Never blocks on the writer.
    pub(crate) fn log_series(&self, id: u64, labels: &Labels) {
        let mut p = self.shared.lock();
        if p.closed {
            return;
        }
        p.series.push((id, labels.clone()));
        p.logged += 1;
    }

    /// Logs a sample. Never blocks; returns true when the caller should call
    /// [`Wal::wait_for_room`] once it holds no lock.
    pub(crate) fn log_sample(&self, id: u64, t: i64, v: f64) -> bool {
        let mut p = self.shared.lock();
        if p.closed {
            return false;
        }
        p.samples.push((id, t, v.to_bits()));
        p.logged += 1;
        let n = p.pending_samples();
        if n == self.shared.opts.batch_samples {
            self.shared.work.notify_one();
        }
        n >= self.shared.opts.max_pending_samples
    }

    /// Logs a native histogram sample, as [`Wal::log_sample`] does a float.
    pub(crate) fn log_histogram(&self, id: u64, t: i64, h: Arc<FloatHistogram>) -> bool {
        let mut p = self.shared.lock();
        if p.closed {
            return false;
        }
        let after = p.samples.len();
        p.histograms.push(PendingHistogram { id, t, h, after });
        p.logged += 1;
        let n = p.pending_samples();
        if n == self.shared.opts.batch_samples {
            self.shared.work.notify_one();
        }
        n >= self.shared.opts.max_pending_samples
    }

    /// Blocks until the pending batch is below its bound.
    pub(crate) fn wait_for_room(&self) {
        let mut p = self.shared.lock();
        while p.pending_samples() >= self.shared.opts.max_pending_samples && !p.closed {
            self.shared.work.notify_one();
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes and fsyncs everything logged so far.
    pub(crate) fn sync(&self) {
        let mut p = self.shared.lock();
        let target = p.logged;
        while p.synced < target && !p.closed {
            p.sync_requested = true;
            self.shared.work.notify_one();
            p = self.shared.done.wait(p).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Writes everything logged, closes (pads and fsyncs) the segment and stops the
    /// writer. Later appends are kept in memory only.
    pub(crate) fn close(&self) {
        {
            let mut p = self.shared.lock();
            p.closing = true;
            self.shared.work.notify_one();
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub(crate) fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        let r = &self.replay;
        WalStats {
            corruptions: r.corruptions,
            corrupt_bytes_dropped: r.corrupt_bytes_dropped,
            replay_duration: r.duration,
            replayed_series: r.series,
            replayed_samples: r.samples,
            replay_dropped_samples: r.dropped_samples,
            segment_current: c.segment_current.load(Ordering::Relaxed) as u32,
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            samples_written: c.samples_written.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            truncations: c.truncations.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Fsyncs a directory, so that files created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Most samples per samples record, and series per series record.
const SAMPLES_PER_RECORD: usize = 2000;
const SERIES_PER_RECORD: usize = 1000;
/// Most histograms per float histogram samples record (a histogram of 160 buckets takes
/// about 1.4 KB: records stay well under a megabyte).
const HISTOGRAMS_PER_RECORD: usize = 500;

/// The background thread that owns the segment files.
struct Writer {
    dir: PathBuf,
    seg: Option<SegmentWriter>,
    /// Newest sample timestamp of each segment still on disk (`i64::MIN`: none).
    seg_maxt: BTreeMap<u32, i64>,
    shared: Arc<Shared>,
    source: Source,
    enc: snap::raw::Encoder,
    buf: Vec<u8>,
    zbuf: Vec<u8>,
    last_sync: Instant,
    /// Data written since the last fsync.
    dirty: bool,
}

impl Writer {
    fn run(mut self) {
        let opts = self.shared.opts.clone();
        let mut series = Vec::new();
        let mut samples = Vec::new();
        let mut histograms = Vec::new();
        loop {
            let (upto, want_sync, closing) = {
                let mut p = self.shared.lock();
                let idle = p.series.is_empty() && p.pending_samples() == 0;
                if idle && !p.sync_requested && !p.closing {
                    let wait = if self.dirty {
                        opts.flush_interval
                            .min(opts.sync_interval.saturating_sub(self.last_sync.elapsed()))
                    } else {
                        opts.flush_interval
                    };
                    p = self
                        .shared
                        .work
                        .wait_timeout(p, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                std::mem::swap(&mut series, &mut p.series);
                std::mem::swap(&mut samples, &mut p.samples);
                std::mem::swap(&mut histograms, &mut p.histograms);
                let want_sync = std::mem::take(&mut p.sync_requested);
                (p.logged, want_sync, p.closing)
            };
            // Appenders waiting for room can go on while the batch is written.
            self.shared.done.notify_all();
            self.write_batch(&series, &samples, &histograms);
            series.clear();
            samples.clear();
            histograms.clear();
            let synced = if closing {
                if let Some(seg) = self.seg.take()
                    && let Err(e) = seg.close()
                {
                    self.failed("closing the segment", &e);
                }
                true
            } else if want_sync || (self.dirty && self.last_sync.elapsed() >= opts.sync_interval) {
                self.sync();
                true
            } else {
                !self.dirty
            };
            {
                let mut p = self.shared.lock();
                p.written = upto;
                if synced {
                    p.synced = upto;
                }
                if closing {
                    p.closed = true;
                }
            }
            self.shared.done.notify_all();
            if closing {
                return;
            }
        }
    }

    fn failed(&self, what: &str, e: &io::Error) {
        self.shared
            .counters
            .write_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(dir = %self.dir.display(), err = %e, "WAL: {what} failed");
    }

    fn sync(&mut self) {
        if let Some(seg) = &mut self.seg {
            if let Err(e) = seg.sync() {
                self.failed("fsync", &e);
                return;
            }
            self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    fn write_batch(
        &mut self,
        series: &[(u64, Labels)],
        samples: &[(u64, i64, u64)],
        histograms: &[PendingHistogram],
    ) {
        for chunk in series.chunks(SERIES_PER_RECORD) {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            record::encode_series(chunk.iter().map(|(r, l)| (*r, l)), &mut buf);
            self.log(&buf, None);
            self.buf = buf;
        }
        // Floats are written before histograms, as Prometheus writes a commit; a float of
        // a series with a histogram logged before it starts a new pair of writes, so that
        // the replay sees each series' samples in order.
        let (mut f0, mut h0, mut h) = (0, 0, 0);
        let mut with_histograms = std::collections::HashSet::new();
        for (j, s) in samples.iter().enumerate() {
            while h < histograms.len() && histograms[h].after <= j {
                with_histograms.insert(histograms[h].id);
                h += 1;
            }
            if with_histograms.contains(&s.0) {
                self.write_samples(&samples[f0..j]);
                self.write_histograms(&histograms[h0..h]);
                (f0, h0) = (j, h);
                with_histograms.clear();
            }
        }
        self.write_samples(&samples[f0..]);
        self.write_histograms(&histograms[h0..]);
    }

    fn write_samples(&mut self, samples: &[(u64, i64, u64)]) {
        for chunk in samples.chunks(SAMPLES_PER_RECORD) {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            record::encode_samples(chunk, &mut buf);
            let maxt = chunk.iter().map(|s| s.1).max().unwrap_or(i64::MIN);
            self.log_samples(buf, maxt, chunk.len());
        }
    }

    /// Writes float histogram samples records: exponential histograms first, then
    /// custom-bucket ones in records of their own type (Prometheus 3's order). A series
    /// whose histograms switch between the two kinds starts a new pair of writes, so that
    /// the replay sees each series' samples in order.
    fn write_histograms(&mut self, histograms: &[PendingHistogram]) {
        let mut kind_of = std::collections::HashMap::new();
        let mut start = 0;
        for (j, p) in histograms.iter().enumerate() {
            let custom = p.h.uses_custom_buckets();
            if kind_of.insert(p.id, custom).is_some_and(|k| k != custom) {
                self.write_histogram_kinds(&histograms[start..j]);
                start = j;
                kind_of.clear();
                kind_of.insert(p.id, custom);
            }
        }
        self.write_histogram_kinds(&histograms[start..]);
    }

    /// Writes the exponential histograms of `histograms`, then the custom-bucket ones.
    fn write_histogram_kinds(&mut self, histograms: &[PendingHistogram]) {
        for custom in [false, true] {
            let refs: Vec<(u64, i64, &FloatHistogram)> = histograms
                .iter()
                .filter(|p| p.h.uses_custom_buckets() == custom)
                .map(|p| (p.id, p.t, &*p.h))
                .collect();
            for chunk in refs.chunks(HISTOGRAMS_PER_RECORD) {
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                record::encode_float_histograms(chunk, custom, &mut buf);
                let maxt = chunk.iter().map(|p| p.1).max().unwrap_or(i64::MIN);
                self.log_samples(buf, maxt, chunk.len());
            }
        }
    }

    /// Writes a record of `n` samples (floats or histograms) whose newest is `maxt`,
    /// counts them when written, and keeps `buf` for the next record.
    fn log_samples(&mut self, buf: Vec<u8>, maxt: i64, n: usize) {
        if self.log(&buf, Some(maxt)) {
            self.shared
                .counters
                .samples_written
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        self.buf = buf;
    }

    /// Writes one record, starting a new segment when it does not fit; `maxt` is the
    /// newest sample timestamp of a samples record.
    fn log(&mut self, rec: &[u8], maxt: Option<i64>) -> bool {
        let mut zbuf = std::mem::take(&mut self.zbuf);
        let compressed =
            self.shared.opts.compress && segment::compress(&mut self.enc, rec, &mut zbuf);
        let bytes: &[u8] = if compressed { &zbuf } else { rec };
        if self.seg.as_ref().is_none_or(|s| !s.fits(bytes.len()))
            && let Err(e) = self.next_segment()
        {
            self.failed("starting a segment", &e);
            self.zbuf = zbuf;
            return false;
        }
        let ok = self.log_in_segment(bytes, compressed, maxt);
        self.zbuf = zbuf;
        ok
    }

    fn log_in_segment(&mut self, bytes: &[u8], compressed: bool, maxt: Option<i64>) -> bool {
        let Some(seg) = &mut self.seg else {
            return false;
        };
        if !seg.fits(bytes.len()) {
            let e = io::Error::other(format!(
                "record of {} bytes larger than a segment",
                bytes.len()
            ));
            self.failed("writing a record", &e);
            return false;
        }
        let before = seg.size();
        let index = seg.index;
        match seg.log(bytes, compressed) {
            Ok(()) => {
                let written = (seg.size() - before) as u64;
                self.shared
                    .counters
                    .bytes_written
                    .fetch_add(written, Ordering::Relaxed);
                self.dirty = true;
                if let Some(t) = maxt {
                    let m = self.seg_maxt.entry(index).or_insert(i64::MIN);
                    *m = (*m).max(t);
                }
                true
            }
            Err(e) => {
                self.failed("writing a record", &e);
                // Whatever was half-written ends this segment; a new one starts clean.
                self.seg = None;
                false
            }
        }
    }

    /// Closes the segment (padded and fsynced) and starts the next one.
    fn next_segment(&mut self) -> io::Result<()> {
        let next = match self.seg.take() {
            Some(seg) => {
                let n = seg.index + 1;
                seg.close()?;
                self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                n
            }
            None => self.seg_maxt.keys().next_back().map_or(0, |n| n + 1),
        };
        self.seg = Some(SegmentWriter::create(
            &self.dir,
            next,
            self.shared.opts.segment_size,
        )?);
        sync_dir(&self.dir)?;
        self.seg_maxt.insert(next, i64::MIN);
        self.shared
            .counters
            .segment_current
            .store(u64::from(next), Ordering::Relaxed);
        self.dirty = false;
        self.maybe_truncate();
        Ok(())
    }

    /// Removes the oldest segments when they hold only samples older than the retention
    /// cut, after writing a checkpoint of the live series.
    fn maybe_truncate(&mut self) {
        let cut = self.source.min_valid_t.load(Ordering::Relaxed);
        let current = self.seg.as_ref().map(|s| s.index);
        let mut last = None;
        for (&n, &maxt) in &self.seg_maxt {
            if Some(n) == current || maxt >= cut {
                break;
            }
            last = Some(n);
        }
        let Some(last) = last else { return };
        match self.checkpoint(last) {
            Ok(()) => {
                self.shared
                    .counters
                    .truncations
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.failed("writing a checkpoint", &e),
        }
    }

    fn checkpoint(&mut self, last: u32) -> io::Result<()> {
        let name = format!("checkpoint.{last:08}");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp)?;
        let series = (self.source.live_series)();
        let mut seg = SegmentWriter::create(&tmp, 0, self.shared.opts.segment_size)?;
        let mut n = 0;
        for chunk in series.chunks(SERIES_PER_RECORD) {
            let mut buf = Vec::new();
            record::encode_series(chunk.iter().map(|(r, l)| (*r, l)), &mut buf);
            let compressed =
                self.shared.opts.compress && segment::compress(&mut self.enc, &buf, &mut self.zbuf);
            let bytes: &[u8] = if compressed { &self.zbuf } else { &buf };
            if !seg.fits(bytes.len()) {
                seg.close()?;
                n += 1;
                seg = SegmentWriter::create(&tmp, n, self.shared.opts.segment_size)?;
            }
            seg.log(bytes, compressed)?;
        }
        seg.close()?;
        sync_dir(&tmp)?;
        let dst = self.dir.join(&name);
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::rename(&tmp, &dst)?;
        sync_dir(&self.dir)?;
        // The checkpoint is durable: the segments it replaces and older checkpoints go.
        let old: Vec<u32> = self.seg_maxt.range(..=last).map(|(&k, _)| k).collect();
        for k in &old {
            self.seg_maxt.remove(k);
            match std::fs::remove_file(segment::segment_path(&self.dir, *k)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        for (k, path) in replay::checkpoints(&self.dir)? {
            if k < last {
                std::fs::remove_dir_all(path)?;
            }
        }
        tracing::info!(
            dir = %self.dir.display(),
            checkpoint = %name,
            series = series.len(),
            segments_removed = old.len(),
            "WAL truncated: segments older than the retention cut removed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Queryable, Storage, StorageOptions};
    use promql_parser::label::{MatchOp, Matcher};

    fn all(st: &Storage) -> Vec<(String, Vec<(i64, u64)>)> {
        let m = Matcher::new(
            MatchOp::Re(regex::Regex::new(".+").unwrap()),
            "__name__",
            ".+",
        );
        st.select(&[m], i64::MIN, i64::MAX)
            .into_iter()
            .map(|s| {
                let v = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
                (s.labels.to_string(), v)
            })
            .collect()
    }

    fn small() -> WalOptions {
        WalOptions {
            segment_size: 2 * segment::PAGE_SIZE,
            ..WalOptions::default()
        }
    }

    fn fill(st: &Storage, series: usize, from: i64, to: i64) {
        for t in from..to {
            for i in 0..series {
                let l = Labels::new([("__name__", "m"), ("i", &i.to_string())]);
                st.append(&l, t * 15_000, (t * i as i64) as f64).unwrap();
            }
        }
    }

    #[test]
    fn a_reopened_directory_has_every_sample_and_keeps_series_refs() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::open(StorageOptions::default(), dir.path(), small()).unwrap();
        fill(&st, 30, 0, 400);
        st.append(
            &Labels::new([("__name__", "stale")]),
            5,
            crate::storage::STALE_NAN,
        )
        .unwrap();
        let want = all(&st);
        drop(st);
        assert!(
            segment::list_segments(&dir.path().join("wal"))
                .unwrap()
                .len()
                >= 2
        );
        let st = Storage::open(StorageOptions::default(), dir.path(), small()).unwrap();
        assert_eq!(all(&st), want);
        let stats = st.wal_stats().unwrap();
        assert_eq!((stats.replayed_series, stats.replayed_samples), (31, 12001));
        assert_eq!(stats.corruptions, 0);
        // A series created after the restart gets a reference of its own.
        st.append(&Labels::new([("__name__", "new")]), 1, 1.0)
            .unwrap();
        fill(&st, 30, 400, 410);
        let want = all(&st);
        drop(st);
        let st = Storage::open(StorageOptions::default(), dir.path(), small()).unwrap();
        assert_eq!(all(&st), want);
    }

    #[test]
    fn a_second_writer_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _st = Storage::open(StorageOptions::default(), dir.path(), small()).unwrap();
        let err = Storage::open(StorageOptions::default(), dir.path(), small())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, WalError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another process"));
    }

    #[test]
    fn a_corrupt_tail_is_cut_off_counted_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let st =
            Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
        fill(&st, 10, 0, 50);
        st.sync_wal();
        let first = all(&st);
        fill(&st, 10, 50, 100);
        drop(st);
        let wal = dir.path().join("wal");
        let path = segment::segment_path(&wal, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        // Damage the last written record (the padding after it is zeros).
        let end = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[end - 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let st =
            Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
        let stats = st.wal_stats().unwrap();
        assert_eq!(stats.corruptions, 1);
        assert!(stats.corrupt_bytes_dropped > 0);
        let got = all(&st);
        // Everything synced before the damaged record is there.
        for ((l1, s1), (l2, s2)) in first.iter().zip(&got) {
            assert_eq!(l1, l2);
            assert!(s2.starts_with(s1));
        }
        drop(st);
        // Repaired: the next start finds nothing wrong.
        let st =
            Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
        assert_eq!(st.wal_stats().unwrap().corruptions, 0);
        assert_eq!(all(&st), got);
    }

    #[test]
    fn old_segments_give_way_to_a_checkpoint_and_refs_still_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StorageOptions {
            retention: Duration::from_secs(3600),
            max_series: 0,
            retention_size: 0,
            ..Default::default()
        };
        let st = Storage::open(opts.clone(), dir.path(), small()).unwrap();
        // Six hours of 20 series every 15 s: the first five hours leave the WAL.
        fill(&st, 20, 0, 6 * 240);
        drop(st);
        let wal = dir.path().join("wal");
        let cps = replay::checkpoints(&wal).unwrap();
        assert_eq!(cps.len(), 1, "one checkpoint left");
        let segs = segment::list_segments(&wal).unwrap();
        assert!(segs[0] > cps[0].0);
        let st = Storage::open(opts, dir.path(), small()).unwrap();
        let got = all(&st);
        assert_eq!(got.len(), 20);
        let newest = (6 * 240 - 1) * 15_000;
        for (_, s) in &got {
            assert_eq!(s.last().unwrap().0, newest);
            assert!(s.first().unwrap().0 >= newest - 3_600_000);
        }
    }

    #[test]
    fn a_tiny_pending_bound_makes_appenders_wait_but_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wal_opts = WalOptions {
            max_pending_samples: 10,
            batch_samples: 5,
            ..small()
        };
        let st = Arc::new(
            Storage::open(StorageOptions::default(), dir.path(), wal_opts.clone()).unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let st = st.clone();
                std::thread::spawn(move || {
                    for t in 0..500 {
                        let l = Labels::new([("__name__", "m"), ("k", &k.to_string())]);
                        st.append(&l, t, t as f64).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let want = all(&st);
        st.close_wal();
        drop(st);
        let st = Storage::open(StorageOptions::default(), dir.path(), wal_opts).unwrap();
        assert_eq!(all(&st), want);
        assert_eq!(st.wal_stats().unwrap().replayed_samples, 2000);
    }
}
