//! Time-series storage: series identified by their label sets, float samples with
//! millisecond timestamps in compressed chunks, selection by PromQL label matchers through
//! an inverted index, and a retention window. A storage made with [`Storage::new`] keeps
//! everything in memory (the head); one opened on a data directory ([`Storage::open`])
//! also logs to a write-ahead log ([`wal`]) and moves old samples into persisted blocks
//! ([`block`]), both in Prometheus 2.42's on-disk format.
//!
//! * **Head and blocks**: once the head spans more than 3 h (1.5 block ranges, as in
//!   Prometheus), its oldest aligned 2 h range is written as a block (`DIR/<ULID>/`) and
//!   freed from memory. The append that finds the head past the threshold only wakes the
//!   compactor thread, which writes the block; appenders go on meanwhile (samples for the
//!   range being written are refused as out of bounds). Queries read the blocks
//!   overlapping their range and the head and merge series by labels; on an equal
//!   timestamp the head wins. `label_names`/`label_values` cover both.
//! * **Compaction** ([`block::compact`]): a dedicated thread (`lookout-compactor`), woken
//!   at open, when the head is due a block and after each head block, writes the head's
//!   due blocks, then merges blocks as Prometheus's leveled compactor
//!   does: overlapping blocks first, then three 2 h blocks into 6 h, three 6 h into
//!   18 h, … up to [`StorageOptions::max_block_duration`] (by default 10 % of the
//!   retention or 31 days). Series are merged one at a time; chunk data is read from the
//!   inputs as it is written, only the new index's series list is held in memory. The new
//!   block names its inputs as parents; they are deleted once it is in place, and at
//!   open if a crash came first. A failed compaction is logged and counted, and its
//!   blocks are left out of compaction until the next open.
//!
//! * **Index** (`index.rs`): label name → value → sorted posting list of series ids;
//!   matchers are answered by intersecting and subtracting postings, with fast paths for
//!   `.*`, `.+`, literal sets `a|b|c` and literal prefixes `abc.*`. Regexes are anchored
//!   and `.` matches a newline, as Prometheus compiles them (`^(?s:…)$`). Large
//!   selections are put in label order through a cached rank of every series.
//! * **Native histograms**: kept in the head beside a series' floats, in chunks of the
//!   float histogram encoding written a sample at a time (`head_histograms.rs`); with
//!   a data directory logged to the WAL and written to blocks in Prometheus 2.42's float
//!   histogram formats (see [`wal::record`] and [`block`]).
//! * **Chunks** (`xor.rs`): Gorilla/XOR compression as in Prometheus's XOR chunks, plus
//!   an integer-step mode for counters and integer gauges; [`CHUNK_SAMPLES`] samples per
//!   chunk. Regular 15 s series of counters, gauges, histogram buckets and constants take
//!   about 1.8 bytes per sample, chunk bookkeeping included. A series keeps its sealed
//!   chunks and one open head chunk that queries read in place, starting from a
//!   checkpoint when they want only its newest samples.
//! * **Concurrency**: one `RwLock` guards the index and the series map, one `Mutex` each
//!   series' chunks. Appending to a known series takes the index lock for reading only,
//!   so readers and the writer block each other just for a map look-up; new series take
//!   the write lock briefly. A query copies the samples it needs out of each series, one
//!   series lock at a time.
//! * **Retention**: with [`StorageOptions::retention`] set, appends past the window
//!   truncate the head now and then ([`Storage::truncate_before`]): whole chunks older
//!   than the cut are freed, samples before it are hidden from queries, and series left
//!   without samples are removed from the index.
//!   Blocks go whole, as in Prometheus: after each block is written (and at open), every
//!   block whose end is more than the window before the newest block's end is deleted, and
//!   with [`StorageOptions::retention_size`] the oldest blocks go until blocks plus WAL fit
//!   (checked when a block is written, so the WAL may be a segment or two past it).
//! * **Series limit**: with [`StorageOptions::max_series`] set, a sample that would create
//!   a series beyond it is refused ([`AppendError::SeriesLimit`], decided under the read
//!   lock, so a flood of new series does not queue on the write lock); series already held
//!   keep taking samples, and series removed by retention free their place.

pub mod block;
#[doc(hidden)]
pub mod fuzzing;
mod head_histograms;
mod index;
mod persist;
pub mod wal;
mod xor;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use promql_parser::label::Matcher;
use regex::Regex;

use crate::histogram::{FloatHistogram, HPoint};
use crate::labels::Labels;
use head_histograms::HistColumn;
use index::{Index, Prepared, SeriesId};
use xor::{XorEncoder, XorIter};

/// Returns the memory freed by a block write, a head truncation or a compaction to the
/// system. glibc keeps freed memory in its arenas (the evaluator has one per core) and gives
/// back only what lies at the top of the main one; a block write allocates the range's
/// samples and series list and the truncation then frees the head's chunks, on the
/// compactor thread's arena, where the scrapes and queries of other threads seldom reuse
/// it. Under series churn that showed as resident memory rising by tens of MiB at each
/// block while the head shrank.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the allocator holds, from glibc's `mallinfo2`: the bytes it has from the system
/// (its arenas and the blocks it maps on their own) and how many of those are free, kept for
/// later allocations. Their difference is the live heap; a free share that grows while the
/// live heap stays level is fragmentation. `None` where the allocator is not glibc's. Locks
/// each arena in turn: for a metrics scrape, not for a hot path.
pub fn allocator_bytes() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        let held = info.arena as u64 + info.hblkhd as u64;
        Some((held, info.fordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// Samples per compressed chunk (as in Prometheus).
pub const CHUNK_SAMPLES: u16 = 120;

/// Bit pattern of Prometheus's staleness marker (a signalling NaN distinct from ordinary NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0000000000002;

/// Prometheus's staleness marker as a float. Compare with [`is_stale`], never with `==`.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// Whether `v` is the staleness marker (bit comparison: NaN never equals itself).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Timestamp in milliseconds since the Unix epoch.
    pub t: i64,
    /// The value (may be NaN, ±Inf or [`STALE_NAN`]).
    pub v: f64,
}

/// A series and its samples in a queried time range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    /// The series' labels, `__name__` included.
    pub labels: Labels,
    /// Samples sorted by timestamp.
    pub samples: Vec<Sample>,
    /// Start timestamps (ms; 0 = unknown, as in Prometheus) aligned with `samples`, or
    /// `None` when no sample in the range has one (most series never do).
    pub st: Option<Vec<i64>>,
    /// Native histogram samples sorted by time. A series may switch between floats and
    /// histograms; no timestamp is in both lists.
    pub histograms: Vec<HPoint>,
    /// Start timestamps aligned with `histograms`, as `st` is with `samples`.
    pub hst: Option<Vec<i64>>,
}

/// Something PromQL can read series from.
pub trait Queryable: Send + Sync {
    /// The series matching all `matchers`, sorted by labels, each with its samples in
    /// `[mint_ms, maxt_ms]` (both inclusive) sorted by time. Series without samples in the
    /// range are left out.
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesData>;
}

/// Whether [`StorageOptions::max_series`] may refuse a sample that creates a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeriesLimit {
    Applies,
    Exempt,
}

/// Why a sample was not appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    /// The timestamp is older than the newest sample of the series.
    #[error(
        "out-of-order sample for series {series}: timestamp {t_ms} is before the newest sample at {last_ms}"
    )]
    OutOfOrder {
        /// The series, in Prometheus notation.
        series: String,
        /// The rejected timestamp.
        t_ms: i64,
        /// The newest timestamp already stored.
        last_ms: i64,
    },
    /// A sample with this timestamp but a different value is already stored.
    #[error("duplicate sample for series {series} at timestamp {t_ms} with a different value")]
    DuplicateTimestamp {
        /// The series, in Prometheus notation.
        series: String,
        /// The timestamp.
        t_ms: i64,
    },
    /// The label set is empty.
    #[error("a series needs at least one label")]
    EmptyLabels,
    /// The sample would create a new series while the storage already holds
    /// [`StorageOptions::max_series`] series. Samples of existing series are still taken.
    #[error(
        "new series {series} refused: the storage holds its limit of {limit} series (--storage.max-series)"
    )]
    SeriesLimit {
        /// The refused series, in Prometheus notation.
        series: String,
        /// The limit.
        limit: usize,
    },
    /// A native histogram that Prometheus would not store either (invalid schema, custom
    /// bounds not strictly increasing, a negative bucket count, …), or one with a bucket
    /// index outside what its schema can represent.
    #[error("invalid native histogram for series {series}: {reason}")]
    InvalidHistogram {
        /// The series, in Prometheus notation.
        series: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The timestamp is before the retention cut: the sample would never be visible.
    #[error(
        "sample for series {series} at timestamp {t_ms} is older than the retention cut at {min_ms}"
    )]
    OutOfBounds {
        /// The series, in Prometheus notation.
        series: String,
        /// The rejected timestamp.
        t_ms: i64,
        /// The oldest timestamp kept.
        min_ms: i64,
    },
}

/// Storage settings.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// How long samples are kept behind the newest appended timestamp; `Duration::ZERO`
    /// (the default) keeps everything.
    pub retention: Duration,
    /// Most series held at once; a sample that would create one more is refused with
    /// [`AppendError::SeriesLimit`]. Series removed by retention free their place. 0 (the
    /// default) is unlimited.
    pub max_series: usize,
    /// Most bytes of blocks plus WAL in a data directory (Prometheus's
    /// `--storage.tsdb.retention.size`): past it the oldest blocks are deleted. 0 (the
    /// default) is unlimited. The head and the WAL themselves are never cut by it.
    pub retention_size: u64,
    /// Widest block compaction makes (Prometheus's `--storage.tsdb.max-block-duration`).
    /// `Duration::ZERO` (the default) is 10 % of `retention` or 31 days, whichever is
    /// smaller; 2 h leaves blocks as the head cut them (overlapping blocks are still
    /// merged).
    pub max_block_duration: Duration,
    /// Range of the blocks the head is cut into, and of the smallest compaction
    /// (Prometheus's `--storage.tsdb.min-block-duration`): the head is written out once it
    /// spans 1.5 of them, and its series without newer samples leave memory then.
    /// `Duration::ZERO` (the default) is 2 h. Shorter ranges are for tests and benches
    /// (series churn bounded in minutes, not hours), as in Prometheus.
    pub min_block_duration: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            retention: Duration::ZERO,
            max_series: 0,
            retention_size: 0,
            max_block_duration: Duration::ZERO,
            min_block_duration: Duration::ZERO,
        }
    }
}

/// Memory and size figures of a [`Storage`], approximated from heap allocations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageStats {
    /// Number of series.
    pub series: usize,
    /// Number of samples held (samples hidden by the retention cut but still inside a
    /// partly expired chunk included).
    pub samples: usize,
    /// Heap bytes of sample data: compressed chunk bytes (head chunks at their allocated
    /// capacity) plus the per-chunk bookkeeping.
    pub chunk_bytes: usize,
    /// Heap bytes of everything else: labels, series records and locks, the label-set map,
    /// the id map and the posting lists.
    pub index_bytes: usize,
    /// `chunk_bytes / samples` (0 without samples).
    pub bytes_per_sample: f64,
    /// `(chunk_bytes + index_bytes) / series` (0 without series).
    pub bytes_per_series: f64,
}

/// A sealed (full, read-only) chunk.
struct SealedChunk {
    /// Timestamp of its last sample.
    maxt: i64,
    /// [`CHUNK_SAMPLES`] XOR-encoded samples.
    data: Box<[u8]>,
}

/// The samples of one series.
///
/// One per series, so kept small (80 bytes; see the `series_record_size` test): sealed
/// chunks in a boxed slice (no spare capacity, nothing allocated before the first), the
/// newest sample's timestamp and value read from the head encoder, which keeps them for
/// encoding the next sample (and carries them over when the chunk is dropped) or from the
/// histogram column, and the columns most series do without behind one pointer.
struct Chunks {
    /// Oldest first; replaced by one a chunk longer when the head is sealed (every
    /// [`CHUNK_SAMPLES`] samples, so the copies cost nothing that shows).
    sealed: Box<[SealedChunk]>,
    head: XorEncoder,
    /// Created with the first start timestamp or histogram sample, dropped when neither is
    /// left.
    rare: Option<Box<RareColumns>>,
}

/// The columns of a series that most series do without, boxed together in [`Chunks`].
#[derive(Default)]
struct RareColumns {
    /// Start timestamps, from the series' first one on. Inline: a float series with start
    /// timestamps (every series of some sources) pays one allocation for them, as when
    /// the column had its own box.
    st: Option<StColumn>,
    /// Native histogram samples, from the first one on, in compressed chunks.
    hist: Option<Box<HistColumn>>,
}

/// Value bits [`Chunks::last`] gives for a histogram sample: a NaN payload no float
/// append produces, so a float at the same timestamp is a duplicate with another value.
const HISTOGRAM_LAST_BITS: u64 = 0x7ff8_4849_5354_0001;

/// The start timestamps of one series, one stream per chunk aligned with its samples.
///
/// Each stream holds one unsigned varint per sample: the zigzag-encoded difference to
/// the previous sample's start timestamp (0 before the first, and 0 is "unknown"). A
/// cumulative series keeps its start, so it costs one byte per sample; a delta series
/// (start = previous timestamp) costs two or three. A stream shorter than its chunk
/// reads as zeros: chunks sealed before the first start timestamp are empty.
struct StColumn {
    sealed: VecDeque<Box<[u8]>>,
    head: Vec<u8>,
    /// Start timestamp of the newest sample of the head chunk.
    head_prev: i64,
}

impl StColumn {
    fn push(&mut self, st: i64) {
        let mut u = zigzag(st.wrapping_sub(self.head_prev));
        self.head_prev = st;
        while u >= 0x80 {
            self.head.push((u as u8) | 0x80);
            u >>= 7;
        }
        self.head.push(u as u8);
    }

    fn seal(&mut self) {
        let full = std::mem::take(&mut self.head);
        self.sealed.push_back(full.into_boxed_slice());
        self.head_prev = 0;
    }

    /// Heap bytes held, beside the column itself.
    fn heap_bytes(&self) -> usize {
        self.sealed.capacity() * size_of::<Box<[u8]>>()
            + self.sealed.iter().map(|c| c.len()).sum::<usize>()
            + self.head.capacity()
    }
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Decodes a start-timestamp stream (see [`StColumn`]); zeros once it runs out.
struct StIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    prev: i64,
}

impl<'a> StIter<'a> {
    fn new(bytes: &'a [u8]) -> StIter<'a> {
        StIter {
            bytes,
            pos: 0,
            prev: 0,
        }
    }

    fn next_st(&mut self) -> i64 {
        let (mut u, mut shift) = (0u64, 0u32);
        while let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            if shift < 64 {
                u |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b < 0x80 {
                let d = (u >> 1) as i64 ^ -((u & 1) as i64);
                self.prev = self.prev.wrapping_add(d);
                return self.prev;
            }
        }
        0
    }
}

impl Chunks {
    fn new() -> Chunks {
        Chunks {
            sealed: Box::default(),
            head: XorEncoder::new(),
            rare: None,
        }
    }

    /// The start timestamps of the float samples, when any has one.
    fn st(&self) -> Option<&StColumn> {
        self.rare.as_ref().and_then(|r| r.st.as_ref())
    }

    fn st_mut(&mut self) -> Option<&mut StColumn> {
        self.rare.as_mut().and_then(|r| r.st.as_mut())
    }

    /// The native histogram samples, when there are any.
    fn hist(&self) -> Option<&HistColumn> {
        self.rare.as_ref().and_then(|r| r.hist.as_deref())
    }

    /// Drops the rare columns' box once both are gone.
    fn drop_empty_rare(&mut self) {
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.st.is_none() && r.hist.is_none())
        {
            self.rare = None;
        }
    }

    /// Timestamp and value bits of the newest sample, for ordering and duplicate checks
    /// ([`HISTOGRAM_LAST_BITS`] for a histogram). A float and a histogram never share a
    /// timestamp (the second is a duplicate), so the newer of the two columns' newest
    /// samples is the series' newest.
    fn last(&self) -> Option<(i64, u64)> {
        let float = self.head.last();
        let hist = self.hist().and_then(|h| h.last()).map(|p| p.t);
        match (float, hist) {
            (Some((ft, _)), Some(ht)) if ht > ft => Some((ht, HISTOGRAM_LAST_BITS)),
            (None, Some(ht)) => Some((ht, HISTOGRAM_LAST_BITS)),
            (float, _) => float,
        }
    }

    fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.head.count() == 0 && self.hist().is_none_or(|h| h.is_empty())
    }

    fn samples(&self) -> usize {
        self.sealed.len() * CHUNK_SAMPLES as usize
            + self.head.count() as usize
            + self.hist().map_or(0, |h| h.len())
    }

    /// Appends a native histogram sample (same ordering rules as floats; a repeated
    /// timestamp is accepted only with an equal histogram).
    fn push_histogram(
        &mut self,
        labels: &Labels,
        st: i64,
        t: i64,
        h: Arc<FloatHistogram>,
    ) -> Result<(), AppendError> {
        if let Some((last_t, _)) = self.last() {
            if t < last_t {
                return Err(AppendError::OutOfOrder {
                    series: labels.to_string(),
                    t_ms: t,
                    last_ms: last_t,
                });
            }
            if t == last_t {
                let same = self
                    .hist()
                    .and_then(|v| v.last())
                    .is_some_and(|p| p.t == t && same_but_hint(&p.h, &h));
                if same {
                    return Ok(());
                }
                return Err(AppendError::DuplicateTimestamp {
                    series: labels.to_string(),
                    t_ms: t,
                });
            }
        }
        let prev = self
            .hist()
            .and_then(|c| c.last())
            .filter(|p| self.last().is_some_and(|(last_t, _)| last_t == p.t));
        let h = match prev {
            Some(p) => with_reset_hint(&p.h, h),
            None => h,
        };
        let rare = self.rare.get_or_insert_with(Box::default);
        rare.hist
            .get_or_insert_with(Box::default)
            .push(st, HPoint { t, h });
        Ok(())
    }

    /// Copies the histogram samples in `[mint, maxt]` to `out`, and their start timestamps
    /// to `st_out` when any of them has one (`st_out` is left empty otherwise).
    fn read_histograms(&self, mint: i64, maxt: i64, out: &mut Vec<HPoint>, st_out: &mut Vec<i64>) {
        if let Some(col) = self.hist() {
            col.read(mint, maxt, out, st_out);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.sealed.len() * size_of::<SealedChunk>()
            + self.sealed.iter().map(|c| c.data.len()).sum::<usize>()
            + self.head.heap_bytes()
            + self.rare.as_ref().map_or(0, |r| {
                size_of::<RareColumns>()
                    + r.st.as_ref().map_or(0, |c| c.heap_bytes())
                    + r.hist.as_ref().map_or(0, |h| h.heap_bytes())
            })
    }

    /// Appends a sample with start timestamp `st` (0: unknown).
    fn push(&mut self, labels: &Labels, st: i64, t: i64, v: f64) -> Result<(), AppendError> {
        if let Some((last_t, last_v)) = self.last() {
            if t < last_t {
                return Err(AppendError::OutOfOrder {
                    series: labels.to_string(),
                    t_ms: t,
                    last_ms: last_t,
                });
            }
            if t == last_t {
                if last_v == v.to_bits() {
                    return Ok(());
                }
                return Err(AppendError::DuplicateTimestamp {
                    series: labels.to_string(),
                    t_ms: t,
                });
            }
        }
        if self.head.count() >= CHUNK_SAMPLES {
            let maxt = self.head.last_t();
            // The next chunk of a regular series is about as large as this one.
            let hint = self.head.bytes().len() + self.head.bytes().len() / 8 + 4;
            let full = std::mem::replace(&mut self.head, XorEncoder::with_capacity(hint));
            let mut sealed = std::mem::take(&mut self.sealed).into_vec();
            sealed.push(SealedChunk {
                maxt,
                data: full.finish(),
            });
            self.sealed = sealed.into_boxed_slice();
            if let Some(col) = self.st_mut() {
                col.seal();
            }
        }
        if st != 0 && self.st().is_none() {
            // The first start timestamp: earlier chunks read as unknown (empty streams),
            // the head's earlier samples get explicit zeros to keep the alignment.
            let mut col = StColumn {
                sealed: self.sealed.iter().map(|_| Box::default()).collect(),
                head: Vec::new(),
                head_prev: 0,
            };
            for _ in 0..self.head.count() {
                col.push(0);
            }
            self.rare.get_or_insert_with(Box::default).st = Some(col);
        }
        if let Some(col) = self.st_mut() {
            col.push(st);
        }
        self.head.append(t, v);
        Ok(())
    }

    /// Copies the samples in `[mint, maxt]` to `out` and, for a series with start
    /// timestamps, theirs to `st_out` (left empty otherwise).
    fn read(&self, mint: i64, maxt: i64, out: &mut Vec<Sample>, st_out: &mut Vec<i64>) {
        if let Some(col) = self.st() {
            self.read_with_st(col, mint, maxt, out, st_out);
            return;
        }
        let first = self.sealed.partition_point(|c| c.maxt < mint);
        let sealed = self.sealed[first..]
            .iter()
            .map(|c| (&*c.data, CHUNK_SAMPLES));
        for (bytes, count) in sealed {
            if !read_chunk(XorIter::new(bytes, count), mint, maxt, out) {
                return;
            }
        }
        // The open chunk: start at the last checkpoint before the window when there is one.
        let (bytes, count) = (self.head.bytes(), self.head.count());
        let iter = match self.head.checkpoint_before(mint) {
            Some(cp) => XorIter::resume(bytes, count, cp),
            None => XorIter::new(bytes, count),
        };
        read_chunk(iter, mint, maxt, out);
    }

    /// [`Chunks::read`] for a series with start timestamps: every chunk read from its
    /// start (such series are rare, the checkpoints are not worth it).
    fn read_with_st(
        &self,
        col: &StColumn,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
        st_out: &mut Vec<i64>,
    ) {
        let first = self.sealed.partition_point(|c| c.maxt < mint);
        let sealed = self.sealed[first..]
            .iter()
            .zip(col.sealed.range(first..))
            .map(|(c, st)| (&*c.data, CHUNK_SAMPLES, &**st));
        let head = (self.head.bytes(), self.head.count(), col.head.as_slice());
        for (bytes, count, st_bytes) in sealed.chain(std::iter::once(head)) {
            let mut sts = StIter::new(st_bytes);
            for (t, v) in XorIter::new(bytes, count) {
                let st = sts.next_st();
                if t > maxt {
                    return;
                }
                if t >= mint {
                    out.push(Sample { t, v });
                    st_out.push(st);
                }
            }
        }
    }

    /// Frees the chunks whose samples are all before `cut`.
    fn truncate_before(&mut self, cut: i64) {
        // Kept for the ordering checks whatever is dropped.
        let last = self.last();
        if let Some(rare) = &mut self.rare
            && let Some(col) = &mut rare.hist
        {
            col.truncate_before(cut);
            if col.is_empty() {
                rare.hist = None;
            }
        }
        let keep_from = self.sealed.partition_point(|c| c.maxt < cut);
        if keep_from > 0 {
            let mut sealed = std::mem::take(&mut self.sealed).into_vec();
            sealed.drain(..keep_from);
            self.sealed = sealed.into_boxed_slice();
            if let Some(col) = self.st_mut() {
                col.sealed.drain(..keep_from);
            }
        }
        if self.sealed.is_empty() && self.head.count() > 0 && self.head.last_t() < cut {
            self.head = XorEncoder::new();
            // Nothing left that had a start timestamp.
            if let Some(rare) = &mut self.rare {
                rare.st = None;
            }
        }
        self.drop_empty_rare();
        if self.head.count() == 0 {
            self.head = XorEncoder::carrying(last);
        }
    }
}

/// Whether a stored histogram equals an appended one: the stored hint may have been set
/// by [`with_reset_hint`].
fn same_but_hint(stored: &FloatHistogram, h: &FloatHistogram) -> bool {
    let mut s = stored.clone();
    s.counter_reset_hint = h.counter_reset_hint;
    s == *h
}

/// The counter reset hint Prometheus's TSDB gives a histogram appended after `prev`: a
/// detected reset or a changed layout starts a new chunk, whose first sample reads with
/// an unknown hint (queries see no `Reset` hint there, Prometheus issue 15346), and any
/// other sample continues the chunk (`NotReset`). Gauges and explicit hints are kept.
fn with_reset_hint(prev: &FloatHistogram, h: Arc<FloatHistogram>) -> Arc<FloatHistogram> {
    use crate::histogram::CounterResetHint as Hint;
    if h.counter_reset_hint != Hint::Unknown || prev.counter_reset_hint == Hint::Gauge {
        return h;
    }
    if h.detect_reset(prev)
        || h.schema != prev.schema
        || h.zero_threshold != prev.zero_threshold
        || h.custom_values != prev.custom_values
    {
        return h;
    }
    let mut h = h;
    Arc::make_mut(&mut h).counter_reset_hint = Hint::NotReset;
    h
}

/// Copies the samples of `iter` in `[mint, maxt]` to `out`; false once past `maxt`.
fn read_chunk(iter: XorIter<'_>, mint: i64, maxt: i64, out: &mut Vec<Sample>) -> bool {
    for (t, v) in iter {
        if t > maxt {
            return false;
        }
        if t >= mint {
            out.push(Sample { t, v });
        }
    }
    true
}

/// One series: its labels and its chunks.
/// In C order so that what every append reads, `removed`, `id` and the lock word of
/// `chunks`, sits within 24 bytes: Rust's own order put `removed` after `chunks`, on
/// another cache line, a second cache miss per sample on series not touched since the
/// last scrape. The size is the same.
#[repr(C)]
struct MemSeries {
    /// Position of the series among all series sorted by labels, valid while
    /// [`Storage::ranks_valid`] is set; lets a large selection sort by an integer.
    rank: AtomicU32,
    /// Set when the series has been removed from the index; appenders holding it retry.
    /// Read and written only under `chunks`' lock, which orders the accesses (here rather
    /// than in [`Chunks`], it takes a byte the record pads anyway).
    removed: AtomicBool,
    id: SeriesId,
    chunks: Mutex<Chunks>,
    labels: Labels,
}

impl MemSeries {
    fn new(id: SeriesId, labels: Labels) -> MemSeries {
        MemSeries {
            id,
            labels,
            rank: AtomicU32::new(0),
            removed: AtomicBool::new(false),
            chunks: Mutex::new(Chunks::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.chunks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the series was removed; the caller holds [`MemSeries::lock`].
    fn removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Marks the series removed; the caller holds [`MemSeries::lock`].
    fn set_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }
}

/// A stored series, from [`Storage::series_ref`]: appends through it skip the look-up by
/// labels.
#[derive(Clone)]
pub struct SeriesRef(Arc<MemSeries>);

impl SeriesRef {
    /// The series' labels.
    pub fn labels(&self) -> &Labels {
        &self.0.labels
    }
}

impl std::fmt::Debug for SeriesRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeriesRef({})", self.0.labels)
    }
}

/// Key of the label-set map: a series, hashed and compared by its labels, so the map
/// needs no second copy of each label set.
struct ByLabels(Arc<MemSeries>);

impl PartialEq for ByLabels {
    fn eq(&self, other: &Self) -> bool {
        self.0.labels == other.0.labels
    }
}
impl Eq for ByLabels {}
impl Hash for ByLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.labels.hash(state)
    }
}
impl std::borrow::Borrow<Labels> for ByLabels {
    fn borrow(&self) -> &Labels {
        &self.0.labels
    }
}

#[derive(Default)]
struct Inner {
    by_labels: HashSet<ByLabels>,
    by_id: HashMap<SeriesId, Arc<MemSeries>>,
    index: Index,
    next_id: SeriesId,
}

/// The in-memory part of a storage (series, their chunks and the head's time bounds),
/// shared with the compactor thread that writes its old ranges as blocks.
struct Head {
    inner: RwLock<Inner>,
    /// Samples before this are hidden (the retention cut, or the end of the newest block).
    min_valid_t: Arc<AtomicI64>,
    /// Newest timestamp appended.
    max_t: AtomicI64,
    /// Oldest timestamp appended to the head (`i64::MAX`: none); the head's start is the
    /// later of it and `min_valid_t`.
    head_min_t: AtomicI64,
    /// Appends before this are refused while a block of the time before it is written.
    append_floor: AtomicI64,
    /// Held while a range of the head is written as a block (retention after it
    /// included): one writer at a time. Only block writers take it, never appenders or
    /// queries.
    writer: Mutex<()>,
    /// When writing a block last failed (retried a minute later).
    compact_failed_at: Mutex<Option<std::time::Instant>>,
}

impl Head {
    fn new() -> Head {
        Head {
            inner: RwLock::new(Inner::default()),
            min_valid_t: Arc::new(AtomicI64::new(i64::MIN)),
            max_t: AtomicI64::new(i64::MIN),
            head_min_t: AtomicI64::new(i64::MAX),
            append_floor: AtomicI64::new(i64::MIN),
            writer: Mutex::new(()),
            compact_failed_at: Mutex::new(None),
        }
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Storage::truncate_before`].
    fn truncate_before(&self, t_ms: i64) {
        self.min_valid_t.fetch_max(t_ms, Ordering::Relaxed);
        let cut = self.min_valid_t.load(Ordering::Relaxed);
        let mut dead: Vec<Arc<MemSeries>> = Vec::new();
        {
            let inner = self.read_inner();
            for s in inner.by_id.values() {
                let mut chunks = s.lock();
                chunks.truncate_before(cut);
                if chunks.is_empty() {
                    dead.push(s.clone());
                }
            }
        }
        if dead.is_empty() {
            return;
        }
        let mut inner = self.write_inner();
        // Re-check under the write lock: an appender may have revived a series meanwhile.
        dead.retain(|s| {
            let chunks = s.lock();
            if chunks.is_empty() && !s.removed() {
                s.set_removed();
                true
            } else {
                false
            }
        });
        dead.sort_by_key(|s| s.id);
        for s in &dead {
            inner.by_id.remove(&s.id);
            inner.by_labels.remove(&s.labels);
        }
        let ids: Vec<(SeriesId, &Labels)> = dead.iter().map(|s| (s.id, &s.labels)).collect();
        inner.index.remove(&ids);
        if inner.by_id.capacity() > 2 * inner.by_id.len() + 64 {
            inner.by_id.shrink_to_fit();
            inner.by_labels.shrink_to_fit();
        }
    }
}

/// In-memory series storage; see the module documentation.
pub struct Storage {
    opts: StorageOptions,
    /// The series and their samples, shared with the compactor thread.
    head: Arc<Head>,
    /// Where the last automatic truncation cut.
    last_cut: AtomicI64,
    truncating: AtomicBool,
    /// Whether every series' `rank` reflects the current set of series (cleared when a
    /// series is created, under the write lock; removals keep the order).
    ranks_valid: AtomicBool,
    /// What sorting selections by their labels has cost since the ranks were last
    /// computed (about k·log₂k comparisons for k series); once it reaches what computing
    /// them costs, they are computed (see [`Storage::select_head`]).
    rank_debt: AtomicU64,
    regex_cache: Mutex<HashMap<String, Option<Regex>>>,
    /// The write-ahead log of a storage opened on a directory ([`Storage::open`]).
    wal: Option<wal::Wal>,
    /// The persisted blocks of a storage opened on a directory.
    blocks: Option<Arc<block::Blocks>>,
    /// The thread writing head blocks and merging blocks, woken when the head grows past
    /// 1.5 block ranges and after each head block.
    compactor: Option<block::compact::Compactor>,
}

impl Drop for Storage {
    /// Stops the compactor thread first (after the block it may be writing), so that it
    /// never works on a storage half gone.
    fn drop(&mut self) {
        self.compactor.take();
    }
}

/// Regexes kept compiled between queries; the cache is emptied when it grows past this.
const REGEX_CACHE_MAX: usize = 512;

impl Storage {
    /// An empty storage.
    pub fn new(opts: StorageOptions) -> Storage {
        Storage {
            opts,
            head: Arc::new(Head::new()),
            last_cut: AtomicI64::new(i64::MIN),
            truncating: AtomicBool::new(false),
            ranks_valid: AtomicBool::new(false),
            rank_debt: AtomicU64::new(0),
            regex_cache: Mutex::new(HashMap::new()),
            wal: None,
            blocks: None,
            compactor: None,
        }
    }

    /// A storage kept durable in data directory `dir` (created if missing): the
    /// write-ahead log in `dir/wal` is replayed (a corrupt tail is cut off, logged and
    /// counted), then every new series and sample is logged to it; see [`wal`]. The
    /// directory is locked against a second writer. Replaying can take a while: call it
    /// where blocking is fine.
    pub fn open(
        opts: StorageOptions,
        dir: &Path,
        wal_opts: wal::WalOptions,
    ) -> Result<Storage, wal::WalError> {
        let lock = wal::lock_dir(dir)?;
        let io_err = |source| wal::WalError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let wal_dir = dir.join("wal");
        let mut storage = Storage::new(opts);
        let blocks = block::Blocks::open(dir).map_err(io_err)?;
        let block_stats = blocks.stats();
        tracing::info!(
            dir = %dir.display(),
            blocks = block_stats.blocks_loaded,
            bytes = block_stats.blocks_bytes,
            ignored = block_stats.blocks_ignored,
            "blocks loaded"
        );
        let blocks = Arc::new(blocks);
        let head_job = persist::head_job(&storage.head, &blocks, &storage.opts);
        let compactor = block::compact::Compactor::start(
            Arc::downgrade(&blocks),
            storage.block_ranges(),
            Some(head_job),
        )
        .map_err(io_err)?;
        storage.blocks = Some(blocks);
        storage.apply_block_retention();
        compactor.wake();
        storage.compactor = Some(compactor);
        let blocks_maxt = storage.blocks.as_ref().map_or(i64::MIN, |b| b.max_time());
        let report = wal::replay::replay(&storage, &wal_dir, blocks_maxt).map_err(io_err)?;
        if blocks_maxt > i64::MIN {
            // What the WAL still holds from before the newest block is in the blocks (the
            // replay skipped those samples): series left without samples go.
            storage.truncate_before(blocks_maxt);
        }
        tracing::info!(
            dir = %dir.display(),
            series = report.series,
            samples = report.samples,
            dropped_samples = report.dropped_samples,
            persisted_samples = report.persisted_samples,
            corruptions = report.corruptions,
            duration = ?report.duration,
            "WAL replay completed"
        );
        let head = storage.head.clone();
        let source = wal::Source {
            min_valid_t: storage.head.min_valid_t.clone(),
            live_series: Box::new(move || {
                let inner = head.read_inner();
                let mut v: Vec<(u64, Labels)> = inner
                    .by_id
                    .values()
                    .map(|s| (s.id, s.labels.clone()))
                    .collect();
                v.sort_unstable_by_key(|s| s.0);
                v
            }),
        };
        storage.wal =
            Some(wal::Wal::start(wal_dir, lock, wal_opts, report, source).map_err(io_err)?);
        // A head replayed past 1.5 block ranges is cut without waiting for an append.
        storage.wake_head_compaction();
        Ok(storage)
    }

    /// Writes and fsyncs everything appended so far to the write-ahead log (nothing for a
    /// storage without one). After it returns, those samples survive a machine crash.
    pub fn sync_wal(&self) {
        if let Some(w) = &self.wal {
            w.sync();
        }
    }

    /// Writes what is pending, closes the write-ahead log's segment (fsynced) and stops
    /// its writer: for shutdown. Appends after it are kept in memory only.
    pub fn close_wal(&self) {
        if let Some(w) = &self.wal {
            w.close();
        }
    }

    /// Figures of the write-ahead log, `None` for a memory-only storage.
    pub fn wal_stats(&self) -> Option<wal::WalStats> {
        self.wal.as_ref().map(|w| w.stats())
    }

    /// The options this storage was made with.
    pub fn options(&self) -> &StorageOptions {
        &self.opts
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.head.read_inner()
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.head.write_inner()
    }

    /// Appends one sample. Timestamps must increase per series; a repeated timestamp is
    /// accepted (and ignored) only with a bit-identical value, as Prometheus does.
    pub fn append(&self, labels: &Labels, t_ms: i64, v: f64) -> Result<(), AppendError> {
        self.append_with_st(labels, 0, t_ms, v)
    }

    /// [`Storage::append`] with the sample's start timestamp `st_ms` (when the counter
    /// started counting, as OpenTelemetry and Prometheus's created timestamps say; 0 means
    /// unknown). Rate functions use it to see counter resets and where a counter started.
    /// Series that never get one pay nothing for it beyond one pointer.
    pub fn append_with_st(
        &self,
        labels: &Labels,
        st_ms: i64,
        t_ms: i64,
        v: f64,
    ) -> Result<(), AppendError> {
        self.append_sample(labels, st_ms, t_ms, v, SeriesLimit::Applies)
    }

    /// [`Storage::append`] that the series limit never refuses: for series whose number is
    /// bounded elsewhere, such as a scrape's own report series (`up`,
    /// `scrape_duration_seconds`, …, a handful per configured target), so that a full
    /// storage never hides whether a target is up.
    pub fn append_exempt_from_series_limit(
        &self,
        labels: &Labels,
        t_ms: i64,
        v: f64,
    ) -> Result<(), AppendError> {
        self.append_sample(labels, 0, t_ms, v, SeriesLimit::Exempt)
    }

    fn append_sample(
        &self,
        labels: &Labels,
        st_ms: i64,
        t_ms: i64,
        v: f64,
        limit: SeriesLimit,
    ) -> Result<(), AppendError> {
        if labels.is_empty() {
            return Err(AppendError::EmptyLabels);
        }
        self.check_bounds(labels, t_ms)?;
        loop {
            let series = self.lookup_or_create(labels, limit)?;
            if self.append_to(&series, st_ms, t_ms, v)? {
                return Ok(());
            }
            // Removed by retention between the look-up and the lock: look again.
        }
    }

    /// `Err(OutOfBounds)` for a sample older than what the head still takes.
    fn check_bounds(&self, labels: &Labels, t_ms: i64) -> Result<(), AppendError> {
        let min = self
            .head
            .min_valid_t
            .load(Ordering::Relaxed)
            .max(self.head.append_floor.load(Ordering::Relaxed));
        if t_ms < min {
            return Err(AppendError::OutOfBounds {
                series: labels.to_string(),
                t_ms,
                min_ms: min,
            });
        }
        Ok(())
    }

    /// The series with `labels`, created if missing and the series limit allows.
    fn lookup_or_create(
        &self,
        labels: &Labels,
        limit: SeriesLimit,
    ) -> Result<Arc<MemSeries>, AppendError> {
        {
            let inner = self.read_inner();
            match inner.by_labels.get(labels) {
                Some(s) => return Ok(s.0.clone()),
                // Refused under the read lock: at the limit, a flood of new series does
                // not take the write lock once per sample.
                None => self.check_series_limit(&inner, labels, limit)?,
            }
        }
        self.create(labels, limit)
    }

    /// Appends to `series`; `Ok(false)` when retention removed it meanwhile (nothing
    /// appended: the caller looks the labels up again).
    fn append_to(
        &self,
        series: &MemSeries,
        st_ms: i64,
        t_ms: i64,
        v: f64,
    ) -> Result<bool, AppendError> {
        let mut chunks = series.lock();
        if series.removed() {
            return Ok(false);
        }
        chunks.push(&series.labels, st_ms, t_ms, v)?;
        // Logged under the series lock, so a series' samples reach the log in order.
        let full = self
            .wal
            .as_ref()
            .is_some_and(|w| w.log_sample(series.id, t_ms, v));
        drop(chunks);
        // Read before written: nearly every sample leaves both bounds as they are, and a
        // load does not take the shared cache line from the other appending threads.
        if t_ms < self.head.head_min_t.load(Ordering::Relaxed) {
            self.head.head_min_t.fetch_min(t_ms, Ordering::Relaxed);
        }
        if full && let Some(w) = &self.wal {
            w.wait_for_room();
        }
        self.after_append(t_ms);
        Ok(true)
    }

    /// A handle on the series with `labels`, created if missing (the series limit
    /// applies), for appending with [`Storage::append_ref`] without looking the labels up
    /// again: what a scrape cache keeps per exposed series, as Prometheus's `SeriesRef`.
    pub fn series_ref(&self, labels: &Labels) -> Result<SeriesRef, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::EmptyLabels);
        }
        self.lookup_or_create(labels, SeriesLimit::Applies)
            .map(SeriesRef)
    }

    /// [`Storage::append`] through a handle from [`Storage::series_ref`]. A series that
    /// retention removed since is looked up (or created) again and `series` updated.
    pub fn append_ref(&self, series: &mut SeriesRef, t_ms: i64, v: f64) -> Result<(), AppendError> {
        self.check_bounds(&series.0.labels, t_ms)?;
        loop {
            if self.append_to(&series.0, 0, t_ms, v)? {
                return Ok(());
            }
            let labels = series.0.labels.clone();
            series.0 = self.lookup_or_create(&labels, SeriesLimit::Applies)?;
        }
    }

    /// Appends a native histogram sample. A storage with a data directory logs it to the
    /// write-ahead log as a float histogram record and writes it to blocks as float
    /// histogram chunks (Prometheus 2.42's formats); a custom-bucket histogram (schema
    /// -53) goes to Prometheus 3's custom-bucket record type and chunk layout, which
    /// Prometheus 2.42 cannot read.
    pub fn append_histogram(
        &self,
        labels: &Labels,
        t_ms: i64,
        h: Arc<FloatHistogram>,
    ) -> Result<(), AppendError> {
        self.append_histogram_with_st(labels, 0, t_ms, h)
    }

    /// [`Storage::append_histogram`] with the sample's start timestamp `st_ms` (see
    /// [`Storage::append_with_st`]; 0 means unknown).
    pub fn append_histogram_with_st(
        &self,
        labels: &Labels,
        st_ms: i64,
        t_ms: i64,
        h: Arc<FloatHistogram>,
    ) -> Result<(), AppendError> {
        if labels.is_empty() {
            return Err(AppendError::EmptyLabels);
        }
        if let Err(reason) = h.validate() {
            return Err(AppendError::InvalidHistogram {
                series: labels.to_string(),
                reason,
            });
        }
        self.check_bounds(labels, t_ms)?;
        loop {
            let series = self.lookup_or_create(labels, SeriesLimit::Applies)?;
            let mut chunks = series.lock();
            if series.removed() {
                // Removed by retention between the look-up and the lock: look again.
                continue;
            }
            chunks.push_histogram(&series.labels, st_ms, t_ms, h.clone())?;
            // Logged under the series lock, so a series' samples reach the log in order.
            let full = self
                .wal
                .as_ref()
                .is_some_and(|w| w.log_histogram(series.id, t_ms, h.clone()));
            drop(chunks);
            self.head.head_min_t.fetch_min(t_ms, Ordering::Relaxed);
            if full && let Some(w) = &self.wal {
                w.wait_for_room();
            }
            self.after_append(t_ms);
            return Ok(());
        }
    }

    /// `Err(SeriesLimit)` when one more series would pass [`StorageOptions::max_series`].
    fn check_series_limit(
        &self,
        inner: &Inner,
        labels: &Labels,
        applies: SeriesLimit,
    ) -> Result<(), AppendError> {
        let limit = self.opts.max_series;
        if applies == SeriesLimit::Applies && limit > 0 && inner.by_id.len() >= limit {
            return Err(AppendError::SeriesLimit {
                series: labels.to_string(),
                limit,
            });
        }
        Ok(())
    }

    /// Creates the series with `labels` under the write lock (unless another thread just
    /// did), if the series limit allows.
    fn create(&self, labels: &Labels, limit: SeriesLimit) -> Result<Arc<MemSeries>, AppendError> {
        let mut inner = self.write_inner();
        if let Some(s) = inner.by_labels.get(labels) {
            return Ok(s.0.clone());
        }
        self.check_series_limit(&inner, labels, limit)?;
        let id = inner.next_id;
        inner.next_id += 1;
        let series = Arc::new(MemSeries::new(id, labels.clone()));
        self.ranks_valid.store(false, Ordering::Release);
        // Logged under the write lock: before any sample of the series can be.
        if let Some(w) = &self.wal {
            w.log_series(id, labels);
        }
        inner.index.add(id, labels);
        inner.by_id.insert(id, series.clone());
        inner.by_labels.insert(ByLabels(series.clone()));
        Ok(series)
    }

    /// Number of series held now (Prometheus's `prometheus_tsdb_head_series`).
    pub fn num_series(&self) -> usize {
        self.read_inner().by_id.len()
    }

    /// Advances the newest timestamp and applies the retention window now and then
    /// (each time the cut has moved by a tenth of the window, at least a minute).
    fn after_append(&self, t_ms: i64) {
        if t_ms <= self.head.max_t.load(Ordering::Relaxed) {
            return;
        }
        let prev = self.head.max_t.fetch_max(t_ms, Ordering::Relaxed);
        if t_ms <= prev {
            return;
        }
        self.wake_head_compaction();
        if self.opts.retention.is_zero() {
            return;
        }
        let retention = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        let cut = t_ms.saturating_sub(retention);
        let every = (retention / 10).max(60_000);
        if cut < self.last_cut.load(Ordering::Relaxed).saturating_add(every) {
            return;
        }
        if self
            .truncating
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.last_cut.store(cut, Ordering::Relaxed);
            self.truncate_before(cut);
            self.truncating.store(false, Ordering::Release);
        }
    }

    /// Removes every series.
    pub fn clear(&self) {
        let mut inner = self.write_inner();
        for s in inner.by_id.values() {
            let _chunks = s.lock();
            s.set_removed();
        }
        *inner = Inner::default();
        self.head.min_valid_t.store(i64::MIN, Ordering::Relaxed);
        self.head.max_t.store(i64::MIN, Ordering::Relaxed);
        self.last_cut.store(i64::MIN, Ordering::Relaxed);
    }

    /// Drops samples before `t_ms`: they are hidden from queries at once, chunks holding
    /// only such samples are freed, and series left without samples are removed.
    /// Appends before `t_ms` are rejected from then on.
    pub fn truncate_before(&self, t_ms: i64) {
        self.head.truncate_before(t_ms);
    }

    /// Label names in use in the head and the blocks, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let head = self.read_inner().index.label_names();
        self.with_blocks(head, |b| b.label_names())
    }

    /// Values of label `name` in use in the head and the blocks, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let head = self.read_inner().index.label_values(name);
        self.with_blocks(head, |b| b.label_values(name))
    }

    /// `head` and what `f` gives for every block, sorted and deduplicated.
    fn with_blocks(
        &self,
        mut head: Vec<String>,
        f: impl Fn(&block::Block) -> Vec<String>,
    ) -> Vec<String> {
        let Some(blocks) = &self.blocks else {
            return head;
        };
        for b in blocks.list() {
            head.extend(f(&b));
        }
        head.sort_unstable();
        head.dedup();
        head
    }

    /// Size figures (walks every series: meant for reports, not hot paths).
    pub fn stats(&self) -> StorageStats {
        let inner = self.read_inner();
        let mut st = StorageStats {
            series: inner.by_id.len(),
            ..Default::default()
        };
        for s in inner.by_id.values() {
            let chunks = s.lock();
            st.samples += chunks.samples();
            st.chunk_bytes += chunks.heap_bytes();
            st.index_bytes += size_of::<MemSeries>()
                + 2 * size_of::<usize>() // Arc counts of the series
                + s.labels.heap_bytes();
        }
        st.index_bytes += inner.by_labels.capacity() * (size_of::<ByLabels>() + 1)
            + inner.by_id.capacity() * (size_of::<(SeriesId, Arc<MemSeries>)>() + 1)
            + inner.index.heap_bytes();
        if st.samples > 0 {
            st.bytes_per_sample = st.chunk_bytes as f64 / st.samples as f64;
        }
        if st.series > 0 {
            st.bytes_per_series = (st.chunk_bytes + st.index_bytes) as f64 / st.series as f64;
        }
        st
    }

    /// Compiles a PromQL regex as Prometheus does, through a small cache.
    fn compile(&self, pattern: &str) -> Option<Regex> {
        let mut cache = self.regex_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(re) = cache.get(pattern) {
            return re.clone();
        }
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        let re = Regex::new(&format!("^(?s:{pattern})$")).ok();
        cache.insert(pattern.to_string(), re.clone());
        re
    }
}

impl Queryable for Storage {
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesData> {
        let prepared: Vec<Prepared> = matchers
            .iter()
            .map(|m| Prepared::new(m, &|p| self.compile(p)))
            .collect();
        let blocks: Vec<Arc<block::Block>> = match &self.blocks {
            Some(b) => b
                .list()
                .into_iter()
                .filter(|b| b.overlaps(mint_ms, maxt_ms))
                .collect(),
            None => Vec::new(),
        };
        let head = self.select_head(&prepared, mint_ms, maxt_ms);
        let Some(all) = self.blocks.as_ref().filter(|_| !blocks.is_empty()) else {
            return head;
        };
        // Oldest block first and the head last: on an equal timestamp the later wins.
        let mut parts: Vec<Vec<SeriesData>> = blocks
            .iter()
            .map(|b| b.select(&prepared, mint_ms, maxt_ms, &all.chunks_dropped))
            .collect();
        parts.push(head);
        block::merge(parts)
    }
}

impl Storage {
    /// The head's series matching `prepared`, in label order.
    ///
    /// A large selection sorts by a rank of every series, kept between queries; creating a
    /// series invalidates it. Recomputing it sorts every series, so under churn (new series
    /// every second) recomputing it on each query cost more than the query: 10,000 targets
    /// with 1,000 replaced a minute spent 60% of the evaluator's CPU there, and an instant
    /// query over 10,000 series took seconds. While the rank is invalid a selection is
    /// sorted by its labels (as Prometheus sorts its postings on each query), outside the
    /// index lock, and that cost is added up: once it reaches the cost of recomputing the
    /// rank, the rank is recomputed (so never more than about twice either way).
    fn select_sorted(&self, prepared: &[Prepared]) -> Vec<Arc<MemSeries>> {
        fn sort_cost(n: usize) -> u64 {
            let n = n as u64;
            n * u64::from(n.max(2).ilog2() + 1)
        }
        let mut series: Vec<Arc<MemSeries>> = {
            let inner = self.read_inner();
            let series: Vec<Arc<MemSeries>> = inner
                .index
                .select(prepared)
                .into_iter()
                .filter_map(|id| inner.by_id.get(&id).cloned())
                .collect();
            if series.len() < 64 {
                series
            } else {
                // No series can be created while the read lock is held, so ranks read under
                // it are of one consistent order.
                if !self.ranks_valid.load(Ordering::Acquire)
                    && self.rank_debt.load(Ordering::Relaxed) >= sort_cost(inner.by_id.len())
                {
                    let mut all: Vec<&Arc<MemSeries>> = inner.by_id.values().collect();
                    all.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
                    for (rank, s) in all.into_iter().enumerate() {
                        s.rank.store(rank as u32, Ordering::Relaxed);
                    }
                    self.rank_debt.store(0, Ordering::Relaxed);
                    self.ranks_valid.store(true, Ordering::Release);
                }
                if self.ranks_valid.load(Ordering::Acquire) {
                    let mut keyed: Vec<(u32, Arc<MemSeries>)> = series
                        .into_iter()
                        .map(|s| (s.rank.load(Ordering::Relaxed), s))
                        .collect();
                    drop(inner);
                    keyed.sort_unstable_by_key(|(rank, _)| *rank);
                    return keyed.into_iter().map(|(_, s)| s).collect();
                }
                self.rank_debt
                    .fetch_add(sort_cost(series.len()), Ordering::Relaxed);
                series
            }
        };
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        series
    }

    /// [`Queryable::select`] over the head only.
    fn select_head(&self, prepared: &[Prepared], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesData> {
        let mint = mint_ms.max(self.head.min_valid_t.load(Ordering::Relaxed));
        if mint > maxt_ms {
            return Vec::new();
        }
        let series = self.select_sorted(prepared);
        debug_assert!(
            series
                .iter()
                .all(|s| prepared.iter().all(|m| m.matches(&s.labels)))
        );
        read_series(&series, mint, maxt_ms, 0)
    }
}

/// Selections of at least twice this many series are read a share per core.
const PARALLEL_MIN_SERIES: usize = 512;

/// The samples of `series` in `[mint, maxt]`, those with any, in the same order; read in
/// contiguous shares on `pieces` threads (0: one per core when there are enough series).
fn read_series(series: &[Arc<MemSeries>], mint: i64, maxt: i64, pieces: usize) -> Vec<SeriesData> {
    let shares = crate::parallel::shares(series.len(), PARALLEL_MIN_SERIES, pieces);
    if shares.len() <= 1 {
        return read_share(series, mint, maxt);
    }
    let parts = crate::parallel::map(shares, |r| read_share(&series[r], mint, maxt));
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    out
}

/// [`read_series`] on the calling thread.
fn read_share(series: &[Arc<MemSeries>], mint: i64, maxt: i64) -> Vec<SeriesData> {
    let mut out = Vec::with_capacity(series.len());
    // Decoded into one reused buffer, then copied out at the exact size: one allocation
    // per series instead of a growing vector's several.
    let mut scratch = Vec::new();
    let mut st_scratch = Vec::new();
    let mut hst = Vec::new();
    for s in series {
        scratch.clear();
        st_scratch.clear();
        hst.clear();
        let mut histograms = Vec::new();
        {
            let chunks = s.lock();
            chunks.read(mint, maxt, &mut scratch, &mut st_scratch);
            chunks.read_histograms(mint, maxt, &mut histograms, &mut hst);
        }
        if !scratch.is_empty() || !histograms.is_empty() {
            let st = st_scratch
                .iter()
                .any(|&st| st != 0)
                .then(|| st_scratch.as_slice().to_vec());
            out.push(SeriesData {
                labels: s.labels.clone(),
                samples: scratch.as_slice().to_vec(),
                st,
                hst: (!hst.is_empty()).then(|| std::mem::take(&mut hst)),
                histograms,
            });
        }
    }
    out
}

impl Default for Storage {
    fn default() -> Self {
        Storage::new(StorageOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: the per-series record is most of the head's memory at 100k series. With
    /// its 16-byte `Arc` header, 120 bytes is a 144-byte glibc malloc chunk (it was 160,
    /// and 304 before that).
    #[test]
    fn series_record_size() {
        assert!(size_of::<XorEncoder>() <= 56, "{}", size_of::<XorEncoder>());
        assert!(size_of::<Chunks>() <= 80, "{}", size_of::<Chunks>());
        assert!(size_of::<MemSeries>() <= 120, "{}", size_of::<MemSeries>());
        // A float series with start timestamps pays one 80-byte malloc chunk for them.
        assert!(
            size_of::<RareColumns>() <= 72,
            "{}",
            size_of::<RareColumns>()
        );
    }
    use promql_parser::parser::{self, Expr};

    /// The matchers of a selector written in PromQL.
    fn matchers(selector: &str) -> Vec<Matcher> {
        match parser::parse(selector) {
            Ok(Expr::VectorSelector(vs)) => {
                let mut ms = vs.matchers.matchers.clone();
                if let Some(name) = vs.name
                    && !ms.iter().any(|m| m.name == "__name__")
                {
                    ms.push(Matcher::new(
                        promql_parser::label::MatchOp::Equal,
                        "__name__",
                        &name,
                    ));
                }
                ms
            }
            other => panic!("{selector} is not a vector selector: {other:?}"),
        }
    }

    fn names(st: &Storage, selector: &str) -> Vec<String> {
        st.select(&matchers(selector), i64::MIN, i64::MAX)
            .into_iter()
            .map(|s| s.labels.to_string())
            .collect()
    }

    /// A small deterministic generator (xorshift) so the tests need no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn series_refs_append_and_outlive_retention() {
        let st = Storage::default();
        let l = Labels::new([("__name__", "x"), ("job", "a")]);
        let mut r = st.series_ref(&l).unwrap();
        assert_eq!(r.labels(), &l);
        st.append_ref(&mut r, 1000, 1.0).unwrap();
        st.append(&l, 2000, 2.0).unwrap();
        let err = st.append_ref(&mut r, 1500, 3.0).unwrap_err();
        assert!(matches!(err, AppendError::OutOfOrder { .. }), "{err:?}");
        // Retention removes the series; the handle finds (creates) it again.
        st.truncate_before(5000);
        assert_eq!(st.num_series(), 0);
        st.append_ref(&mut r, 6000, 6.0).unwrap();
        assert_eq!(st.num_series(), 1);
        let got = st.select(&matchers("x{job=\"a\"}"), 0, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![Sample { t: 6000, v: 6.0 }]);
        let err = st.append_ref(&mut r, 4000, 1.0).unwrap_err();
        assert!(matches!(err, AppendError::OutOfBounds { .. }), "{err:?}");
        // The series limit applies to a new handle's series.
        let capped = Storage::new(StorageOptions {
            max_series: 1,
            ..StorageOptions::default()
        });
        capped.series_ref(&l).unwrap();
        let other = Labels::new([("__name__", "y")]);
        let err = capped.series_ref(&other).unwrap_err();
        assert!(matches!(err, AppendError::SeriesLimit { .. }), "{err:?}");
    }

    #[test]
    fn append_select_and_reject_out_of_order() {
        let st = Storage::default();
        let l = Labels::new([("__name__", "x"), ("job", "a")]);
        st.append(&l, 1000, 1.0).unwrap();
        st.append(&l, 2000, STALE_NAN).unwrap();
        st.append(&l, 2000, STALE_NAN).unwrap();
        let err = st.append(&l, 2000, 3.0).unwrap_err();
        assert_eq!(
            err,
            AppendError::DuplicateTimestamp {
                series: "x{job=\"a\"}".into(),
                t_ms: 2000
            }
        );
        let err = st.append(&l, 500, 3.0).unwrap_err();
        assert!(err.to_string().contains("x{job=\"a\"}"), "{err}");
        assert!(matches!(
            err,
            AppendError::OutOfOrder {
                t_ms: 500,
                last_ms: 2000,
                ..
            }
        ));
        assert_eq!(
            st.append(&Labels::default(), 1, 1.0),
            Err(AppendError::EmptyLabels)
        );
        let got = st.select(&matchers("x"), 0, 2000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 2);
        assert!(is_stale(got[0].samples[1].v));
        assert!(!is_stale(f64::NAN));
        // Inclusive bounds on both sides.
        assert_eq!(st.select(&matchers("x"), 1000, 1000)[0].samples.len(), 1);
        assert_eq!(st.select(&matchers("x"), 2000, 2000)[0].samples.len(), 1);
        assert!(st.select(&matchers("x"), 2001, 9000).is_empty());
        assert_eq!(st.stats().samples, 2);
        st.clear();
        assert_eq!(st.stats().series, 0);
        assert!(st.select(&matchers("x"), 0, 2000).is_empty());
        st.append(&l, 500, 3.0).unwrap();
    }

    fn selector_fixture() -> Storage {
        let st = Storage::default();
        let series = [
            vec![("__name__", "m"), ("job", "api"), ("env", "prod")],
            vec![("__name__", "m"), ("job", "api"), ("env", "dev")],
            vec![("__name__", "m"), ("job", "web")],
            vec![("__name__", "m"), ("job", "web\nx"), ("env", "prod")],
            vec![("__name__", "m"), ("job", "db"), ("env", "")],
            vec![("__name__", "other"), ("job", "api")],
        ];
        for (i, l) in series.iter().enumerate() {
            st.append(&Labels::new(l.clone()), i as i64, i as f64)
                .unwrap();
        }
        st
    }

    #[test]
    fn selectors_of_all_kinds() {
        let st = selector_fixture();
        let all_m = names(&st, "m");
        assert_eq!(all_m.len(), 5);
        // Sorted by labels: __name__ first, then env (absent sorts before present).
        assert_eq!(
            names(&st, r#"m{job="api"}"#),
            vec![
                r#"m{env="dev", job="api"}"#.to_string(),
                r#"m{env="prod", job="api"}"#.to_string()
            ]
        );
        assert_eq!(names(&st, r#"m{job!="api"}"#).len(), 3);
        assert_eq!(names(&st, r#"m{job=~"a.*|w.b"}"#).len(), 3);
        assert_eq!(names(&st, r#"m{job=~"api|db"}"#).len(), 3);
        assert_eq!(names(&st, r#"m{job!~"api|db"}"#).len(), 2);
        assert_eq!(names(&st, r#"m{job=~"we.*"}"#).len(), 2);
        assert_eq!(names(&st, r#"{job=~"api"}"#).len(), 3);
        // Anchored: "pi" does not match "api".
        assert!(names(&st, r#"m{job=~"pi"}"#).is_empty());
        // `.` matches a newline, as in Prometheus.
        assert_eq!(names(&st, r#"m{job=~"web.x"}"#).len(), 1);
        // Matchers that match the empty string select series without the label.
        assert_eq!(
            names(&st, r#"m{env=""}"#),
            vec![r#"m{job="db"}"#.to_string(), r#"m{job="web"}"#.to_string()]
        );
        assert_eq!(names(&st, r#"m{env!~".+"}"#).len(), 2);
        assert_eq!(names(&st, r#"m{env=~"|dev"}"#).len(), 3);
        assert_eq!(names(&st, r#"m{env=~".*"}"#).len(), 5);
        assert_eq!(names(&st, r#"m{env!=""}"#).len(), 3);
        assert_eq!(names(&st, r#"m{env=~".+"}"#).len(), 3);
        assert_eq!(names(&st, r#"m{env!~"dev"}"#).len(), 4);
        assert_eq!(names(&st, r#"m{env!~"|dev"}"#).len(), 2);
        assert!(names(&st, r#"m{env!~".*"}"#).is_empty());
        assert_eq!(names(&st, r#"m{nope!="x"}"#).len(), 5);
        assert!(names(&st, r#"m{nope="x"}"#).is_empty());
        assert_eq!(names(&st, r#"{__name__=~"m|other", job="api"}"#).len(), 3);
        assert_eq!(names(&st, r#"{__name__!="m", job=~".+"}"#).len(), 1);
        assert_eq!(names(&st, r#"m{job=~"(?i)API"}"#).len(), 2);
        assert_eq!(st.label_values("env"), vec!["dev", "prod"]);
        assert_eq!(st.label_names(), vec!["__name__", "env", "job"]);
    }

    /// Each selector answered through the index equals a scan that applies the matchers
    /// to every series.
    #[test]
    fn index_agrees_with_a_full_scan() {
        let st = Storage::default();
        let mut rng = Rng(42);
        let vals = ["", "a", "b", "ab", "ba", "abc", "x.y"];
        let mut all = Vec::new();
        for _ in 0..400 {
            let pick = |r: &mut Rng| vals[(r.next() % vals.len() as u64) as usize];
            let l = Labels::new([
                ("__name__", "s"),
                ("p", pick(&mut rng)),
                ("q", pick(&mut rng)),
                ("r", pick(&mut rng)),
            ]);
            if st.append(&l, 0, 1.0).is_ok() && !all.contains(&l) {
                all.push(l);
            }
        }
        all.sort();
        let ops = ["=", "!=", "=~", "!~"];
        let pats = [
            "", "a", "ab", "a|b", "a.*", ".*", ".+", "a|", "b.", "x\\.y", "[ab]+",
        ];
        for i in 0..600 {
            let n = 1 + rng.next() % 3;
            let mut parts = vec![r#"__name__="s""#.to_string()];
            for j in 0..n {
                let name = ["p", "q", "r", "z"][((rng.next() + j) % 4) as usize];
                let op = ops[(rng.next() % 4) as usize];
                let pat = pats[(rng.next() % pats.len() as u64) as usize];
                let pat = if op.len() == 1 || op == "!=" {
                    pat.replace('\\', "")
                } else {
                    pat.replace('\\', "\\\\")
                };
                parts.push(format!("{name}{op}\"{pat}\""));
            }
            let sel = format!("{{{}}}", parts.join(","));
            let ms = matchers(&sel);
            let prepared: Vec<Prepared> = ms
                .iter()
                .map(|m| Prepared::new(m, &|p| st.compile(p)))
                .collect();
            let want: Vec<String> = all
                .iter()
                .filter(|l| prepared.iter().all(|m| m.matches(l)))
                .map(|l| l.to_string())
                .collect();
            assert_eq!(names(&st, &sel), want, "case {i}: {sel}");
        }
    }

    #[test]
    fn large_selections_stay_sorted_as_series_come_and_go() {
        let st = Storage::default();
        let add = |i: u32| {
            let l = Labels::new([("__name__", "s"), ("i", &format!("{i:04}"))]);
            st.append(&l, i as i64, 1.0).unwrap();
        };
        for i in (0..200).rev().filter(|i| i % 2 == 0) {
            add(i);
        }
        let sorted = |v: Vec<String>| v.windows(2).all(|w| w[0] < w[1]);
        let first = names(&st, "s");
        assert_eq!(first.len(), 100);
        assert!(sorted(first));
        for i in (0..200).filter(|i| i % 2 == 1) {
            add(i);
        }
        let second = names(&st, "s");
        assert_eq!(second.len(), 200);
        assert!(sorted(second));
        // Repeated queries over a set that no longer changes build the rank (once sorting
        // selections has cost as much), and a new series invalidates it again; the order
        // is the same either way.
        for _ in 0..10 {
            assert!(sorted(names(&st, "s")));
        }
        assert!(st.ranks_valid.load(Ordering::Acquire));
        add(1000);
        assert!(!st.ranks_valid.load(Ordering::Acquire));
        let fourth = names(&st, "s");
        assert_eq!(fourth.len(), 201);
        assert!(sorted(fourth));
        st.truncate_before(150);
        let third = names(&st, "s");
        assert_eq!(third.len(), 51);
        assert!(sorted(third));
    }

    #[test]
    fn samples_round_trip_across_chunks() {
        let st = Storage::default();
        let mut rng = Rng(7);
        for s in 0..20 {
            let l = Labels::new([("__name__", "r"), ("i", &s.to_string())]);
            let n = (rng.next() % 700) as usize + 1;
            let mut t = (rng.next() % 100_000) as i64 - 50_000;
            let mut want = Vec::new();
            for _ in 0..n {
                t += 1 + (rng.next() % 30_000) as i64;
                let v = match rng.next() % 4 {
                    0 => f64::from_bits(rng.next()),
                    1 => STALE_NAN,
                    2 => (rng.next() % 100) as f64,
                    _ => want.last().map(|s: &Sample| s.v).unwrap_or(0.0),
                };
                st.append(&l, t, v).unwrap();
                want.push(Sample { t, v });
            }
            let ms = matchers(&format!(r#"r{{i="{s}"}}"#));
            let bits = |v: &[Sample]| v.iter().map(|s| (s.t, s.v.to_bits())).collect::<Vec<_>>();
            let got = st.select(&ms, i64::MIN, i64::MAX);
            assert_eq!(bits(&got[0].samples), bits(&want));
            // A window inside the series.
            let (lo, hi) = (want[n / 3].t, want[(2 * n) / 3].t);
            let part: Vec<Sample> = want
                .iter()
                .copied()
                .filter(|x| x.t >= lo && x.t <= hi)
                .collect();
            let got = st.select(&ms, lo, hi);
            assert_eq!(bits(&got[0].samples), bits(&part));
        }
        assert_eq!(st.stats().series, 20);
    }

    #[test]
    fn histograms_sit_beside_floats_and_follow_the_ordering_rules() {
        use crate::histogram::FloatHistogram;
        let st = Storage::default();
        let l = Labels::new([("__name__", "h")]);
        let h = |c: f64| {
            Arc::new(FloatHistogram {
                count: c,
                ..Default::default()
            })
        };
        st.append(&l, 1_000, 1.0).unwrap();
        st.append_histogram(&l, 2_000, h(1.0)).unwrap();
        // The same histogram again is ignored, another one or a float is a duplicate.
        st.append_histogram(&l, 2_000, h(1.0)).unwrap();
        assert!(st.append_histogram(&l, 2_000, h(2.0)).is_err());
        assert!(st.append(&l, 2_000, 5.0).is_err());
        assert!(st.append_histogram(&l, 1_500, h(2.0)).is_err());
        st.append(&l, 3_000, 3.0).unwrap();
        let got = st.select(&matchers("{__name__=\"h\"}"), 0, 10_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 2);
        assert_eq!(got[0].histograms.len(), 1);
        assert_eq!(got[0].histograms[0].t, 2_000);
        assert_eq!(st.stats().samples, 3);
        // Retention drops histograms like floats.
        st.truncate_before(2_500);
        let got = st.select(&matchers("{__name__=\"h\"}"), 0, 10_000);
        assert!(got[0].histograms.is_empty());
    }

    /// The newest sample is read from the head encoder or the histogram column; when
    /// retention drops them both, it is carried over for the ordering checks, as before.
    #[test]
    fn the_newest_sample_outlives_its_chunks_for_the_ordering_checks() {
        use crate::histogram::FloatHistogram;
        let l = Labels::new([("__name__", "x")]);
        let mut c = Chunks::new();
        assert_eq!(c.last(), None);
        c.push(&l, 0, 1_000, 1.0).unwrap();
        c.push(&l, 0, 2_000, 2.0).unwrap();
        c.truncate_before(5_000);
        assert!(c.is_empty());
        assert_eq!(c.last(), Some((2_000, 2f64.to_bits())));
        let err = c.push(&l, 0, 1_500, 1.0);
        assert!(
            matches!(err, Err(AppendError::OutOfOrder { .. })),
            "{err:?}"
        );
        c.push(&l, 0, 2_000, 2.0).unwrap();
        let err = c.push(&l, 0, 2_000, 3.0);
        assert!(
            matches!(err, Err(AppendError::DuplicateTimestamp { .. })),
            "{err:?}"
        );
        let h = Arc::new(FloatHistogram {
            count: 1.0,
            ..Default::default()
        });
        c.push_histogram(&l, 0, 3_000, h).unwrap();
        assert_eq!(c.last(), Some((3_000, HISTOGRAM_LAST_BITS)));
        c.truncate_before(5_000);
        assert!(c.is_empty());
        assert_eq!(c.last(), Some((3_000, HISTOGRAM_LAST_BITS)));
        let err = c.push(&l, 0, 3_000, 1.0);
        assert!(
            matches!(err, Err(AppendError::DuplicateTimestamp { .. })),
            "{err:?}"
        );
        c.push(&l, 0, 4_000, 4.0).unwrap();
        let mut out = Vec::new();
        c.read(0, 10_000, &mut out, &mut Vec::new());
        assert_eq!(
            out.iter().map(|s| (s.t, s.v)).collect::<Vec<_>>(),
            [(4_000, 4.0)]
        );
    }

    #[test]
    fn invalid_histograms_are_refused_with_the_reason() {
        use crate::histogram::FloatHistogram;
        let st = Storage::default();
        let l = Labels::new([("__name__", "h")]);
        let bad = [
            FloatHistogram {
                schema: 100,
                ..Default::default()
            },
            FloatHistogram {
                schema: -100,
                ..Default::default()
            },
            FloatHistogram {
                schema: crate::histogram::CUSTOM_BUCKETS_SCHEMA,
                custom_values: Arc::from(vec![2.0, 1.0]),
                ..Default::default()
            },
            FloatHistogram {
                positive: vec![crate::histogram::Bucket {
                    index: 0,
                    count: -1.0,
                }],
                ..Default::default()
            },
            FloatHistogram {
                negative: vec![crate::histogram::Bucket {
                    index: i32::MAX,
                    count: 1.0,
                }],
                ..Default::default()
            },
            FloatHistogram {
                positive: vec![
                    crate::histogram::Bucket {
                        index: 2,
                        count: 1.0,
                    },
                    crate::histogram::Bucket {
                        index: 1,
                        count: 1.0,
                    },
                ],
                ..Default::default()
            },
        ];
        for h in bad {
            let err = st.append_histogram(&l, 1, Arc::new(h)).unwrap_err();
            assert!(matches!(err, AppendError::InvalidHistogram { .. }), "{err}");
            assert!(
                err.to_string()
                    .starts_with("invalid native histogram for series h")
            );
        }
        assert_eq!(st.num_series(), 0);
    }

    /// A selection read in shares on several threads is the one read on one, and a large
    /// one through `select` (split by itself on a machine of several cores) too.
    #[test]
    fn selections_read_in_shares_match_one_pass() {
        let st = Storage::default();
        let h = crate::histogram::notation::parse("schema:0 count:3 sum:2 buckets:[3]")
            .unwrap()
            .h;
        for i in 0..1_500i64 {
            let l = Labels::new([("__name__", "x"), ("i", &format!("{i:04}"))]);
            // Series with no sample in the window, with start times, with histograms.
            let first = if i % 13 == 0 { 900 } else { i % 5 };
            for k in first..(200 + i % 50) {
                let t = k * 15_000;
                if i % 17 == 0 && k % 3 == 0 {
                    st.append_histogram(&l, t, Arc::new(h.clone())).unwrap();
                } else if i % 19 == 0 {
                    st.append_with_st(&l, t - 15_000, t, (i * k) as f64)
                        .unwrap();
                } else {
                    st.append(&l, t, (i * k) as f64).unwrap();
                }
            }
        }
        let (mint, maxt) = (400_000, 2_900_000);
        let series = st.select_sorted(&[]);
        let one = read_series(&series, mint, maxt, 1);
        assert!(one.len() > 1_000 && one.len() < 1_500, "{}", one.len());
        for pieces in [2, 3, 7] {
            assert!(read_series(&series, mint, maxt, pieces) == one, "{pieces}");
        }
        assert!(st.select(&matchers("x"), mint, maxt) == one);
    }

    #[test]
    fn start_timestamps_round_trip_and_cost_nothing_without_them() {
        let st = Storage::default();
        let plain = Labels::new([("__name__", "p")]);
        let with = Labels::new([("__name__", "s")]);
        let mut want = Vec::new();
        for i in 0..400i64 {
            let t = i * 15_000;
            st.append(&plain, t, i as f64).unwrap();
            // Start times appear only after the first two chunks and a bit: earlier samples
            // read as unknown (0); then a cumulative start, a delta start, gaps.
            let s = match i {
                0..=250 => 0,
                251..=300 => 3_000_000,
                _ if i % 7 == 0 => 0,
                _ => t - 15_000,
            };
            st.append_with_st(&with, s, t, i as f64).unwrap();
            want.push(s);
        }
        let got = st.select(&matchers("p"), i64::MIN, i64::MAX);
        assert_eq!(got[0].st, None);
        let got = st.select(&matchers("s"), i64::MIN, i64::MAX);
        assert_eq!(got[0].samples.len(), 400);
        assert_eq!(got[0].st.as_deref(), Some(want.as_slice()));
        // A window inside: still aligned.
        let got = st.select(&matchers("s"), 3_700_000, 4_600_000);
        let lo = (3_700_000 / 15_000 + 1) as usize;
        let hi = (4_600_000 / 15_000) as usize;
        assert_eq!(got[0].samples[0].t, lo as i64 * 15_000);
        assert_eq!(got[0].st.as_deref(), Some(&want[lo..=hi]));
        // A window before the first start time has none.
        let got = st.select(&matchers("s"), 0, 1_000_000);
        assert_eq!(got[0].st, None);
        // Retention keeps the alignment.
        st.truncate_before(2_000_000);
        let got = st.select(&matchers("s"), i64::MIN, i64::MAX);
        let first = (got[0].samples[0].t / 15_000) as usize;
        assert_eq!(got[0].st.as_deref(), Some(&want[first..]));
    }

    #[test]
    fn histogram_start_timestamps_round_trip_aligned() {
        use crate::histogram::FloatHistogram;
        let st = Storage::default();
        let plain = Labels::new([("__name__", "p")]);
        let with = Labels::new([("__name__", "h")]);
        let h = |c: f64| {
            Arc::new(FloatHistogram {
                count: c,
                sum: c,
                ..Default::default()
            })
        };
        let mut want = Vec::new();
        for i in 0..40i64 {
            let t = i * 15_000;
            st.append_histogram(&plain, t, h(i as f64)).unwrap();
            // Unknown first, then a delta series' start times, with gaps.
            let s = if i < 10 || i % 7 == 0 { 0 } else { t - 15_000 };
            st.append_histogram_with_st(&with, s, t, h(i as f64))
                .unwrap();
            want.push(s);
        }
        let got = st.select(&matchers("p"), i64::MIN, i64::MAX);
        assert_eq!(got[0].hst, None);
        let got = st.select(&matchers("h"), i64::MIN, i64::MAX);
        assert_eq!(got[0].hst.as_deref(), Some(want.as_slice()));
        // Before the first start time: none; a window inside: aligned.
        assert_eq!(st.select(&matchers("h"), 0, 100_000)[0].hst, None);
        let got = st.select(&matchers("h"), 200_000, 400_000);
        let lo = (200_000 / 15_000 + 1) as usize;
        assert_eq!(got[0].histograms[0].t, lo as i64 * 15_000);
        assert_eq!(got[0].hst.as_deref(), Some(&want[lo..=400_000 / 15_000]));
        // Retention keeps the alignment.
        st.truncate_before(300_000);
        let got = st.select(&matchers("h"), i64::MIN, i64::MAX);
        let first = (got[0].histograms[0].t / 15_000) as usize;
        assert_eq!(got[0].hst.as_deref(), Some(&want[first..]));
    }

    #[test]
    fn retention_drops_old_chunks_and_dead_series() {
        let st = Storage::new(StorageOptions {
            retention: Duration::from_secs(3600),
            ..StorageOptions::default()
        });
        let live = Labels::new([("__name__", "live")]);
        let dead = Labels::new([("__name__", "dead"), ("job", "gone")]);
        for i in 0..=240 {
            st.append(&dead, i * 15_000, 1.0).unwrap();
        }
        // Six hours of a live series: `dead` stops after the first hour.
        for i in 0..=(6 * 240) {
            st.append(&live, i * 15_000, i as f64).unwrap();
        }
        let end = 6 * 3_600_000;
        assert!(names(&st, "dead").is_empty());
        assert!(names(&st, r#"{job="gone"}"#).is_empty());
        assert_eq!(st.label_names(), vec!["__name__"]);
        let stats = st.stats();
        assert_eq!(stats.series, 1);
        // No more than the window plus the chunk and interval it is cut at.
        assert!(stats.samples <= 240 + 24 + 120 + 1, "{stats:?}");
        let got = st.select(&matchers("live"), 0, end);
        assert!(got[0].samples[0].t >= end - 3_600_000 - 6 * 60_000);
        // An explicit cut hides older samples at once and rejects appends before it.
        st.truncate_before(end - 60_000);
        let got = st.select(&matchers("live"), 0, end);
        assert_eq!(got[0].samples.len(), 5);
        assert!(matches!(
            st.append(&dead, end - 120_000, 1.0),
            Err(AppendError::OutOfBounds { .. })
        ));
        // A series removed by retention can come back.
        st.append(&dead, end, 2.0).unwrap();
        assert_eq!(names(&st, "dead").len(), 1);
        st.truncate_before(end + 1);
        assert_eq!(st.stats().series, 0);
    }

    #[test]
    fn series_over_the_limit_are_refused_and_existing_ones_keep_taking_samples() {
        let st = Storage::new(StorageOptions {
            max_series: 3,
            ..StorageOptions::default()
        });
        let series = |i: u32| Labels::new([("__name__", "m"), ("i", &i.to_string())]);
        for i in 0..3 {
            st.append(&series(i), 1000, 1.0).unwrap();
        }
        let err = st.append(&series(3), 1000, 1.0).unwrap_err();
        assert_eq!(
            err,
            AppendError::SeriesLimit {
                series: r#"m{i="3"}"#.to_string(),
                limit: 3
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("limit of 3 series") && text.contains("--storage.max-series"),
            "{text}"
        );
        // Known series still take samples; the refused one was not created.
        for i in 0..3 {
            st.append(&series(i), 2000, 2.0).unwrap();
        }
        assert_eq!(st.num_series(), 3);
        assert_eq!(names(&st, "m").len(), 3);
        assert_eq!(st.label_values("i"), vec!["0", "1", "2"]);
        // Unlimited by default.
        let free = Storage::default();
        for i in 0..100 {
            free.append(&series(i), 1000, 1.0).unwrap();
        }
        assert_eq!(free.num_series(), 100);
    }

    #[test]
    fn exempt_appends_pass_the_series_limit_and_still_count() {
        let st = Storage::new(StorageOptions {
            max_series: 1,
            ..StorageOptions::default()
        });
        let first = Labels::new([("__name__", "m"), ("i", "1")]);
        let up = Labels::new([("__name__", "up"), ("instance", "a")]);
        let other = Labels::new([("__name__", "m"), ("i", "2")]);
        st.append(&first, 1000, 1.0).unwrap();
        assert!(matches!(
            st.append(&up, 1000, 1.0),
            Err(AppendError::SeriesLimit { limit: 1, .. })
        ));
        st.append_exempt_from_series_limit(&up, 1000, 1.0).unwrap();
        st.append_exempt_from_series_limit(&up, 2000, 0.0).unwrap();
        assert_eq!(st.num_series(), 2);
        assert_eq!(names(&st, "up").len(), 1);
        // The exempt series count towards the limit for everyone else.
        assert!(matches!(
            st.append(&other, 1000, 1.0),
            Err(AppendError::SeriesLimit { .. })
        ));
        // Other errors are still errors.
        assert!(matches!(
            st.append_exempt_from_series_limit(&up, 1500, 1.0),
            Err(AppendError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn series_removed_by_retention_free_their_place_under_the_limit() {
        let st = Storage::new(StorageOptions {
            retention: Duration::from_secs(600),
            max_series: 2,
            retention_size: 0,
            ..Default::default()
        });
        let live = Labels::new([("__name__", "live")]);
        let gone = Labels::new([("__name__", "gone")]);
        let late = Labels::new([("__name__", "late")]);
        st.append(&gone, 0, 1.0).unwrap();
        st.append(&live, 0, 1.0).unwrap();
        assert!(matches!(
            st.append(&late, 15_000, 1.0),
            Err(AppendError::SeriesLimit { limit: 2, .. })
        ));
        // `live` goes on for an hour, `gone` stops: once its samples are all older than
        // the retention window it leaves the index and the count goes down.
        for i in 1..=240 {
            st.append(&live, i * 15_000, 1.0).unwrap();
        }
        assert_eq!(st.num_series(), 1);
        assert!(names(&st, "gone").is_empty());
        st.append(&late, 240 * 15_000, 1.0).unwrap();
        assert_eq!(st.num_series(), 2);
        assert!(matches!(
            st.append(&gone, 241 * 15_000, 1.0),
            Err(AppendError::SeriesLimit { .. })
        ));
    }

    #[test]
    fn concurrent_writers_never_pass_the_series_limit() {
        let st = Arc::new(Storage::new(StorageOptions {
            max_series: 50,
            ..StorageOptions::default()
        }));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut refused = 0;
                    for i in 0..40 {
                        let l = Labels::new([("__name__", "c"), ("s", &format!("{w}-{i}"))]);
                        if let Err(AppendError::SeriesLimit { .. }) = st.append(&l, 1000, 1.0) {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(st.num_series(), 50);
        assert_eq!(refused, 4 * 40 - 50);
    }

    #[test]
    fn readers_query_while_a_writer_appends() {
        let st = Arc::new(Storage::default());
        let writer = {
            let st = st.clone();
            std::thread::spawn(move || {
                for i in 0..600i64 {
                    for s in 0..50 {
                        let l = Labels::new([("__name__", "c"), ("s", &s.to_string())]);
                        st.append(&l, i * 15_000, i as f64).unwrap();
                    }
                }
            })
        };
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let st = st.clone();
                std::thread::spawn(move || {
                    let ms = matchers("c");
                    let mut seen = 0;
                    for _ in 0..200 {
                        for series in st.select(&ms, i64::MIN, i64::MAX) {
                            // Every series read is a consistent prefix: value i at i*15s.
                            for (k, s) in series.samples.iter().enumerate() {
                                assert_eq!(s.t, k as i64 * 15_000);
                                assert_eq!(s.v, k as f64);
                            }
                            seen += series.samples.len();
                        }
                    }
                    seen
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        let got = st.select(&matchers("c"), i64::MIN, i64::MAX);
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|s| s.samples.len() == 600));
    }

    #[test]
    fn retention_runs_while_a_writer_appends() {
        let st = Arc::new(Storage::default());
        let progress = Arc::new(AtomicI64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let truncator = {
            let (st, progress, done) = (st.clone(), progress.clone(), done.clone());
            std::thread::spawn(move || {
                // At least one cut even when the writer finishes before this thread runs.
                let mut cuts = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let p = progress.load(Ordering::Acquire);
                    st.truncate_before((p - 100) * 1000);
                    cuts += 1;
                    if finished {
                        break;
                    }
                    std::thread::yield_now();
                }
                cuts
            })
        };
        // Series k stops after step 300 * k (series 0 never stops).
        for i in 0..2000i64 {
            for k in 0..5i64 {
                if k == 0 || i < 300 * k {
                    let l = Labels::new([("__name__", "w"), ("k", &k.to_string())]);
                    st.append(&l, i * 1000, i as f64).unwrap();
                }
            }
            progress.store(i, Ordering::Release);
        }
        done.store(true, Ordering::Release);
        assert!(truncator.join().unwrap() > 0);
        st.truncate_before(1899 * 1000);
        // Only the series still written survives, with every sample after the cut.
        let got = st.select(&matchers("w"), i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].labels.get("k"), Some("0"));
        let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
        assert_eq!(ts, (1899..2000).map(|i| i * 1000).collect::<Vec<_>>());
        assert_eq!(st.stats().series, 1);
        assert_eq!(st.label_values("k"), vec!["0"]);
    }

    /// Six hours of 15 s samples of realistic series: counters with small increments,
    /// integer gauges, constant series and histogram buckets.
    #[test]
    fn compression_stays_under_two_bytes_per_sample() {
        let st = Storage::default();
        let mut rng = Rng(0xdead_beef);
        let n = 6 * 240;
        for s in 0..100 {
            let counter = Labels::new([("__name__", "requests_total"), ("i", &s.to_string())]);
            let gauge = Labels::new([("__name__", "queue_length"), ("i", &s.to_string())]);
            let up = Labels::new([("__name__", "up"), ("i", &s.to_string())]);
            let (mut c, mut g) = (rng.next() % 1_000_000, 50i64);
            for k in 0..n {
                let t = 1_700_000_000_000 + k * 15_000;
                c += rng.next() % 200;
                g = (g + (rng.next() % 11) as i64 - 5).max(0);
                st.append(&counter, t, c as f64).unwrap();
                st.append(&gauge, t, g as f64).unwrap();
                st.append(&up, t, 1.0).unwrap();
            }
            let mut cum = 0u64;
            for le in ["0.1", "0.5", "1", "+Inf"] {
                let b = Labels::new([("__name__", "h_bucket"), ("i", &s.to_string()), ("le", le)]);
                let mut total = 0u64;
                for k in 0..n {
                    total += rng.next() % 20 + cum % 7;
                    st.append(&b, 1_700_000_000_000 + k * 15_000, total as f64)
                        .unwrap();
                }
                cum += total;
            }
        }
        let stats = st.stats();
        assert_eq!(stats.samples, 700 * n as usize);
        assert!(
            stats.bytes_per_sample <= 2.0,
            "{:.3} bytes per sample: {stats:?}",
            stats.bytes_per_sample
        );
        assert!(stats.index_bytes > 0 && stats.bytes_per_series > stats.bytes_per_sample);
    }
}
