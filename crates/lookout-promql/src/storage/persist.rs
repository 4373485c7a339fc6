//! Cutting the head into blocks: once the head spans more than 1.5 block ranges (3 h),
//! its oldest aligned 2 h range is written as a block, then freed from memory, as
//! Prometheus's head compaction does. The WAL then drops its segments older than the
//! block's end at its next checkpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::block::{self, BLOCK_RANGE_MS, Block, meta::Compaction};
use super::{MemSeries, Storage};

/// How long a failed block write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

impl Storage {
    /// Start of the head: its oldest sample not yet in a block or cut by retention.
    pub(super) fn head_min_time(&self) -> i64 {
        self.head_min_t
            .load(Ordering::Relaxed)
            .max(self.min_valid_t.load(Ordering::Relaxed))
    }

    /// Whether the head spans more than 1.5 block ranges (Prometheus's rule).
    pub(super) fn head_compactable(&self) -> bool {
        let (mint, maxt) = (self.head_min_time(), self.max_t.load(Ordering::Relaxed));
        mint != i64::MAX && maxt != i64::MIN && maxt.saturating_sub(mint) > BLOCK_RANGE_MS / 2 * 3
    }

    /// Writes blocks of the head's oldest ranges while it is compactable. One caller at a
    /// time; the others go on appending.
    pub(super) fn compact_head(&self) {
        if self
            .compacting
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let failed_at = *self
            .compact_failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failed_at.is_none_or(|at| at.elapsed() >= RETRY_AFTER) {
            while self.head_compactable() {
                let mint = self.head_min_time();
                let maxt = (mint.div_euclid(BLOCK_RANGE_MS) + 1) * BLOCK_RANGE_MS;
                if !self.persist_range(mint, maxt) {
                    break;
                }
            }
        }
        self.compacting.store(false, Ordering::Release);
    }

    /// Writes the head's samples in `[mint, maxt)` as a block and drops them from the
    /// head; false when the block could not be written (logged, counted, kept in memory).
    pub(crate) fn persist_range(&self, mint: i64, maxt: i64) -> bool {
        let Some(blocks) = self.blocks.clone() else {
            return false;
        };
        // Samples for the range arriving now would miss the block: refused as too old.
        self.append_floor.fetch_max(maxt, Ordering::Relaxed);
        let start = Instant::now();
        let series = self.sorted_series();
        let n_series = series.len();
        let iter = series.into_iter().map(|s| {
            let (mut out, mut st) = (Vec::new(), Vec::new());
            s.lock().read(mint, maxt - 1, &mut out, &mut st);
            (s.labels.clone(), out)
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
                self.truncate_before(maxt);
                self.apply_block_retention();
                if let Some(c) = &self.compactor {
                    c.wake();
                }
                true
            }
            Err(e) => {
                tracing::error!(dir = %blocks.dir.display(), mint, maxt, err = %e, "writing a block failed; its samples stay in memory");
                blocks.compactions_failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .compact_failed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                false
            }
        }
    }

    /// Deletes the blocks that [`StorageOptions::retention`](super::StorageOptions) or
    /// `retention_size` no longer keep.
    pub(super) fn apply_block_retention(&self) {
        let Some(blocks) = &self.blocks else { return };
        let retention = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        let wal_bytes = if self.opts.retention_size > 0 {
            dir_bytes(&blocks.dir.join("wal"), 2)
        } else {
            0
        };
        blocks.apply_retention(retention, self.opts.retention_size, wal_bytes);
    }

    /// Every head series, sorted by labels.
    fn sorted_series(&self) -> Vec<Arc<MemSeries>> {
        let inner = self.read_inner();
        let mut v: Vec<Arc<MemSeries>> = inner.by_id.values().cloned().collect();
        drop(inner);
        v.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// Prometheus's block ranges for this storage's options.
    pub(super) fn block_ranges(&self) -> Vec<i64> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        block::compact::block_ranges(block::compact::max_block_range(
            ms(self.opts.retention),
            ms(self.opts.max_block_duration),
        ))
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
        self.blocks.as_ref().map(|b| b.stats())
    }

    /// Writes every full block range the head holds now, as if it had grown past 1.5
    /// ranges (for tests and tools): everything before the start of the newest sample's
    /// range leaves memory.
    pub fn persist_head(&self) {
        let Some(_) = &self.blocks else { return };
        let newest = self.max_t.load(Ordering::Relaxed);
        let end = newest.div_euclid(BLOCK_RANGE_MS) * BLOCK_RANGE_MS;
        loop {
            let mint = self.head_min_time();
            if mint == i64::MAX || mint >= end {
                return;
            }
            let maxt = ((mint.div_euclid(BLOCK_RANGE_MS) + 1) * BLOCK_RANGE_MS).min(end);
            if !self.persist_range(mint, maxt) {
                return;
            }
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
