//! Cutting the head into blocks: once the head spans more than 1.5 block ranges (3 h),
//! its oldest aligned 2 h range is written as a block, then freed from memory, as
//! Prometheus's head compaction does. As in Prometheus, the append never writes it: the
//! append that finds the head past the threshold wakes the compactor thread
//! ([`block::compact::Compactor`]), which writes the due blocks before merging blocks, so
//! that a write of a second or more never stalls an appender (a scrape, or an async
//! worker). The WAL then drops its segments older than the block's end at its next
//! checkpoint.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::block::{self, BLOCK_RANGE_MS, Block, Blocks, compact::HeadJob, meta::Compaction};
use super::{Head, MemSeries, Storage, StorageOptions};

/// How long a failed block write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

#[cfg(test)]
thread_local! {
    /// Head ranges written as blocks by this thread (tests check who writes them).
    pub(super) static RANGES_WRITTEN_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Head {
    /// Start of the head: its oldest sample not yet in a block or cut by retention.
    fn min_time(&self) -> i64 {
        self.head_min_t
            .load(Ordering::Relaxed)
            .max(self.min_valid_t.load(Ordering::Relaxed))
    }

    /// Whether the head spans more than 1.5 block ranges of `range` ms (Prometheus's rule).
    fn compactable(&self, range: i64) -> bool {
        let (mint, maxt) = (self.min_time(), self.max_t.load(Ordering::Relaxed));
        mint != i64::MAX && maxt != i64::MIN && maxt.saturating_sub(mint) > range / 2 * 3
    }

    /// Whether writing a block failed less than [`RETRY_AFTER`] ago.
    fn backing_off(&self) -> bool {
        lock(&self.compact_failed_at).is_some_and(|at| at.elapsed() < RETRY_AFTER)
    }

    /// Every head series, sorted by labels.
    fn sorted_series(&self) -> Vec<Arc<MemSeries>> {
        let inner = self.read_inner();
        let mut v: Vec<Arc<MemSeries>> = inner.by_id.values().cloned().collect();
        drop(inner);
        v.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

/// The range of the blocks the head is cut into, in ms:
/// [`StorageOptions::min_block_duration`](super::StorageOptions), 2 h by default.
pub(super) fn head_block_range(opts: &StorageOptions) -> i64 {
    match i64::try_from(opts.min_block_duration.as_millis()) {
        Ok(0) => BLOCK_RANGE_MS,
        Ok(ms) => ms,
        Err(_) => i64::MAX / 4,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The compactor thread's [`HeadJob`] for a storage's head and blocks. It holds them weakly
/// (the storage owns the thread): once the storage is gone it does nothing.
pub(super) fn head_job(head: &Arc<Head>, blocks: &Arc<Blocks>, opts: &StorageOptions) -> HeadJob {
    let (head, blocks, opts) = (Arc::downgrade(head), Arc::downgrade(blocks), opts.clone());
    Box::new(move |stop| {
        let (Some(head), Some(blocks)) = (head.upgrade(), blocks.upgrade()) else {
            return;
        };
        let w = HeadWriter {
            head: &head,
            blocks: &blocks,
            opts: &opts,
        };
        w.write_due(stop);
    })
}

/// What writing head blocks needs: the head, the blocks, and the retention to apply after.
struct HeadWriter<'a> {
    head: &'a Head,
    blocks: &'a Blocks,
    opts: &'a StorageOptions,
}

impl HeadWriter<'_> {
    /// Writes blocks of the head's oldest ranges while it is compactable, unless writing
    /// failed less than [`RETRY_AFTER`] ago; `stop` is checked between blocks.
    fn write_due(&self, stop: &dyn Fn() -> bool) {
        while !stop() && !self.head.backing_off() {
            let _one_writer = lock(&self.head.writer);
            // Under the lock: `persist_head` may have written the range meanwhile.
            let range = head_block_range(self.opts);
            if !self.head.compactable(range) {
                return;
            }
            let mint = self.head.min_time();
            let maxt = (mint.div_euclid(range) + 1) * range;
            if !self.persist_range(mint, maxt) {
                return;
            }
        }
    }

    /// Writes the head's samples in `[mint, maxt)` as a block, drops them from the head and
    /// applies the block retention; false when the block could not be written (logged,
    /// counted, kept in memory). The caller holds the head's `writer` lock.
    fn persist_range(&self, mint: i64, maxt: i64) -> bool {
        #[cfg(test)]
        RANGES_WRITTEN_HERE.with(|n| n.set(n.get() + 1));
        let (head, blocks) = (self.head, self.blocks);
        // Samples for the range arriving now would miss the block: refused as too old.
        head.append_floor.fetch_max(maxt, Ordering::Relaxed);
        let start = Instant::now();
        let series = head.sorted_series();
        let n_series = series.len();
        let iter = series.into_iter().map(|s| {
            let (mut out, mut st, mut hists, mut hst) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let chunks = s.lock();
            chunks.read(mint, maxt - 1, &mut out, &mut st);
            chunks.read_histograms(mint, maxt - 1, &mut hists, &mut hst);
            drop(chunks);
            (s.labels.clone(), out, hists)
        });
        let written = block::write_block(
            &blocks.dir,
            iter,
            mint,
            maxt,
            Compaction {
                level: 1,
                ..Default::default()
            },
        );
        let opened = written.and_then(|w| match w {
            Some(dir) => Block::open(&dir).map(Some).map_err(std::io::Error::other),
            None => Ok(None),
        });
        match opened {
            Ok(b) => {
                if let Some(b) = &b {
                    tracing::info!(
                        block = %b.meta.ulid,
                        mint,
                        maxt,
                        series = b.meta.stats.num_series,
                        samples = b.meta.stats.num_samples,
                        bytes = b.bytes,
                        head_series = n_series,
                        duration = ?start.elapsed(),
                        "head block written"
                    );
                    blocks.compactions.fetch_add(1, Ordering::Relaxed);
                }
                let secs = start.elapsed().as_secs_f64();
                blocks
                    .last_compaction_seconds
                    .store(secs.to_bits(), Ordering::Relaxed);
                blocks.replace(b, &[]);
                head.truncate_before(maxt);
                self.apply_retention();
                super::release_freed_memory();
                true
            }
            Err(e) => {
                tracing::error!(dir = %blocks.dir.display(), mint, maxt, err = %e, "writing a block failed; its samples stay in memory");
                blocks.compactions_failed.fetch_add(1, Ordering::Relaxed);
                *lock(&head.compact_failed_at) = Some(Instant::now());
                false
            }
        }
    }

    /// Deletes the blocks that [`StorageOptions::retention`](super::StorageOptions) or
    /// `retention_size` no longer keep.
    fn apply_retention(&self) {
        let retention = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        let wal_bytes = if self.opts.retention_size > 0 {
            dir_bytes(&self.blocks.dir.join("wal"), 2)
        } else {
            0
        };
        self.blocks
            .apply_retention(retention, self.opts.retention_size, wal_bytes);
    }
}

impl Storage {
    /// The head writer of a storage with blocks.
    fn head_writer(&self) -> Option<HeadWriter<'_>> {
        Some(HeadWriter {
            head: &self.head,
            blocks: self.blocks.as_deref()?,
            opts: &self.opts,
        })
    }

    /// Wakes the compactor thread when the head has blocks to write (nothing for a
    /// memory-only storage). Cheap when it has none: two atomic loads.
    pub(super) fn wake_head_compaction(&self) {
        if let Some(c) = &self.compactor
            && self.head.compactable(head_block_range(&self.opts))
            && !self.head.backing_off()
        {
            c.wake();
        }
    }

    /// Deletes the blocks that [`StorageOptions::retention`](super::StorageOptions) or
    /// `retention_size` no longer keep.
    pub(super) fn apply_block_retention(&self) {
        if let Some(w) = self.head_writer() {
            w.apply_retention();
        }
    }

    /// Prometheus's block ranges for this storage's options.
    pub(super) fn block_ranges(&self) -> Vec<i64> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let min = head_block_range(&self.opts);
        block::compact::block_ranges(
            min,
            block::compact::max_block_range(
                ms(self.opts.retention),
                ms(self.opts.max_block_duration),
                min,
            ),
        )
    }

    /// Merges blocks now, in the caller, until the planner finds nothing to do (the
    /// background compactor waits meanwhile); returns how many compactions ran. For tests
    /// and tools: the storage does it by itself after each head block.
    pub fn compact_blocks(&self) -> usize {
        let Some(blocks) = &self.blocks else { return 0 };
        blocks.compact_all(&self.block_ranges())
    }

    /// Figures of the blocks, `None` for a memory-only storage.
    pub fn block_stats(&self) -> Option<block::BlockStats> {
        self.blocks.as_ref().map(|b| block::BlockStats {
            retention_limit_bytes: self.opts.retention_size,
            ..b.stats()
        })
    }

    /// Writes every full block range the head holds now, in the caller, as if it had grown
    /// past 1.5 ranges (for tests and tools): everything before the start of the newest
    /// sample's range leaves memory. A block the compactor thread is writing is waited for.
    pub fn persist_head(&self) {
        let Some(w) = self.head_writer() else { return };
        let newest = self.head.max_t.load(Ordering::Relaxed);
        let range = head_block_range(&self.opts);
        let end = newest.div_euclid(range) * range;
        let mut written = false;
        loop {
            let _one_writer = lock(&self.head.writer);
            let mint = self.head.min_time();
            if mint == i64::MAX || mint >= end {
                break;
            }
            let maxt = ((mint.div_euclid(range) + 1) * range).min(end);
            if !w.persist_range(mint, maxt) {
                break;
            }
            written = true;
        }
        if written && let Some(c) = &self.compactor {
            c.wake();
        }
    }

    /// Waits until the compactor thread has written the blocks the head is due (it spans
    /// at most 1.5 block ranges again, or the last write failed and waits for its retry),
    /// for about `timeout` at most; false when it timed out. For tests and tools: the
    /// storage does it by itself. True at once for a memory-only storage.
    pub fn wait_for_head_blocks(&self, timeout: Duration) -> bool {
        if self.blocks.is_none() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                // Under the writer lock: a block under way is finished, retention included.
                let _one_writer = lock(&self.head.writer);
                if !self.head.compactable(head_block_range(&self.opts)) || self.head.backing_off() {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Bytes of the files under `dir`, `depth` directory levels deep.
fn dir_bytes(dir: &std::path::Path, depth: u32) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in rd.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() && depth > 0 => total += dir_bytes(&e.path(), depth - 1),
            Ok(m) if m.is_file() => total += m.len(),
            _ => {}
        }
    }
    total
}
