//! Compaction of persisted blocks, as Prometheus's leveled compactor does it.
//!
//! * **Ranges**: 2 h, 6 h, 18 h, 54 h, … (each 3×, ten at most) up to the widest block
//!   allowed ([`max_block_range`]: 10 % of the time retention or 31 days, whichever is
//!   smaller, or what is set).
//! * **Plan** ([`plan`]): blocks whose ranges overlap (written by Prometheus or
//!   `promtool`) are merged first; otherwise the newest block (by start) is left alone,
//!   and for each range from 6 h up, the blocks are grouped by aligned range and the first
//!   group of two or more blocks that spans the whole range, or ends before the newest
//!   block starts, is merged; with none to merge, a block with enough tombstones
//!   ([`select_tombstoned`]) is rewritten alone without the data they delete.
//! * **Merge** ([`write_compacted`]): series of the inputs merged by labels, one at a time;
//!   a chunk that overlaps no other chunk of its series and no tombstone is copied as it
//!   is, overlapping chunks are decoded, merged (on an equal timestamp the later block
//!   wins, as in queries), cut by the tombstones and re-encoded. The new block has level
//!   max + 1, the union of the sources and the inputs as parents; the inputs are deleted
//!   once it is in place, and at open a block named as a parent of another is deleted.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use super::chunks::ChunkWriter;
use super::index::{ChunkMeta, IndexSeries};
use super::meta::{BlockMeta, BlockStatsMeta, Compaction, Parent};
use super::{Block, Blocks, decode_chunk, merge_run, write_block_with, write_series};
use crate::histogram::HPoint;
use crate::labels::Labels;
use crate::storage::{Sample, SeriesData};

/// The widest block by default: 31 days (Prometheus's cap).
pub const MAX_BLOCK_RANGE_MS: i64 = 31 * 24 * 3600 * 1000;

/// The widest block compaction makes: `explicit_ms` when set (> 0), else 10 % of
/// `retention_ms` (0: none) or 31 days, whichever is smaller; never under `min_ms` (the
/// head's block range, 2 h by default).
pub fn max_block_range(retention_ms: i64, explicit_ms: i64, min_ms: i64) -> i64 {
    let max = if explicit_ms > 0 {
        explicit_ms
    } else if retention_ms > 0 {
        (retention_ms / 10).min(MAX_BLOCK_RANGE_MS)
    } else {
        MAX_BLOCK_RANGE_MS
    };
    max.max(min_ms)
}

/// Prometheus's block ranges: `min_ms` × 3ⁱ for i < 10 (2 h × 3ⁱ by default), those not
/// wider than `max_ms`.
pub fn block_ranges(min_ms: i64, max_ms: i64) -> Vec<i64> {
    let mut out = vec![min_ms];
    let mut r = min_ms;
    for _ in 1..10 {
        r = r.saturating_mul(3);
        if r > max_ms {
            break;
        }
        out.push(r);
    }
    out
}

/// The ULIDs of the blocks to merge next, empty when there is nothing to do.
pub(crate) fn plan(metas: &[BlockMeta], ranges: &[i64]) -> Vec<String> {
    let mut sorted: Vec<&BlockMeta> = metas.iter().collect();
    sorted.sort_by_key(|m| (m.min_time, m.max_time));
    let overlapping = select_overlapping(&sorted);
    if !overlapping.is_empty() {
        return overlapping;
    }
    // The newest block stays out until a newer one exists.
    sorted.pop();
    let merged: Vec<String> = select_range(&sorted, ranges)
        .iter()
        .map(|m| m.ulid.clone())
        .collect();
    if !merged.is_empty() {
        return merged;
    }
    select_tombstoned(&sorted, ranges)
        .map(|m| vec![m.ulid.clone()])
        .unwrap_or_default()
}

/// A block rewritten alone to drop what its tombstones delete, looked for from the newest
/// (the newest block already left out) back: a block at least as wide as the middle range
/// whose deleted ranges number over 5 % of its series, or a narrower one whose every
/// series is deleted. The first narrower block with some series left ends the search:
/// compaction into wider blocks will drop its deleted data anyway.
fn select_tombstoned<'a>(sorted: &[&'a BlockMeta], ranges: &[i64]) -> Option<&'a BlockMeta> {
    let wide = ranges.get(ranges.len() / 2).copied().unwrap_or(i64::MAX);
    for m in sorted.iter().rev() {
        let (deleted, series) = (m.stats.num_tombstones, m.stats.num_series);
        if m.max_time - m.min_time < wide {
            return (deleted > 0 && deleted >= series).then_some(*m);
        }
        if deleted as f64 / (series as f64 + 1.0) > 0.05 {
            return Some(*m);
        }
    }
    None
}

/// The first run of blocks (sorted by start) whose ranges overlap.
fn select_overlapping(sorted: &[&BlockMeta]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = sorted.first() else {
        return out;
    };
    let mut max_t = first.max_time;
    for (i, m) in sorted.iter().enumerate().skip(1) {
        if m.min_time < max_t {
            if out.is_empty() {
                out.push(sorted[i - 1].ulid.clone());
            }
            out.push(m.ulid.clone());
        } else if !out.is_empty() {
            break;
        }
        max_t = max_t.max(m.max_time);
    }
    out
}

/// The first group, by range from the second on, of two or more blocks that fills its
/// aligned range or ends before the start of the newest block of `sorted`.
fn select_range<'a>(sorted: &[&'a BlockMeta], ranges: &[i64]) -> Vec<&'a BlockMeta> {
    let Some(newest) = sorted.last() else {
        return Vec::new();
    };
    let high = newest.min_time;
    for &range in ranges.iter().skip(1) {
        for group in split_by_range(sorted, range) {
            let (mint, maxt) = (group[0].min_time, group[group.len() - 1].max_time);
            if group.len() > 1 && (maxt - mint == range || maxt <= high) {
                return group.to_vec();
            }
        }
    }
    Vec::new()
}

/// Consecutive blocks grouped by the aligned range of width `range` they fall in;
/// blocks that do not fit in one are left out.
fn split_by_range<'a, 'b>(sorted: &'b [&'a BlockMeta], range: i64) -> Vec<&'b [&'a BlockMeta]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i].min_time.div_euclid(range) * range;
        if sorted[i].max_time > start + range {
            i += 1;
            continue;
        }
        let from = i;
        while i < sorted.len() && sorted[i].max_time <= start + range {
            i += 1;
        }
        out.push(&sorted[from..i]);
    }
    out
}

/// Writes `inputs` (sorted by start) merged into one block in `parent`; `None` when
/// nothing is left of them (every sample deleted by tombstones).
pub(crate) fn write_compacted(parent: &Path, inputs: &[Arc<Block>]) -> io::Result<Option<PathBuf>> {
    let mint = inputs.iter().map(|b| b.meta.min_time).min().unwrap_or(0);
    let maxt = inputs.iter().map(|b| b.meta.max_time).max().unwrap_or(0);
    let mut sources: Vec<String> = inputs
        .iter()
        .flat_map(|b| b.meta.compaction.sources.iter().cloned())
        .collect();
    sources.sort();
    sources.dedup();
    let compaction = Compaction {
        level: inputs
            .iter()
            .map(|b| b.meta.compaction.level)
            .max()
            .unwrap_or(0)
            + 1,
        sources,
        parents: inputs
            .iter()
            .map(|b| Parent {
                ulid: b.meta.ulid.clone(),
                min_time: b.meta.min_time,
                max_time: b.meta.max_time,
            })
            .collect(),
    };
    write_block_with(parent, mint, maxt, compaction, |cw, stats| {
        merge_series(inputs, cw, stats)
    })
}

/// Writes the chunks of every series of `inputs`, merged by labels one series at a time;
/// returns the new index's series.
fn merge_series(
    inputs: &[Arc<Block>],
    cw: &mut ChunkWriter,
    stats: &mut BlockStatsMeta,
) -> io::Result<Vec<IndexSeries>> {
    // Each block's series in label order, and a cursor into them.
    let series: Vec<Vec<IndexSeries>> = inputs
        .iter()
        .map(|b| b.all_series())
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let mut pos = vec![0usize; inputs.len()];
    let current = |i: usize, pos: &[usize]| -> Option<&IndexSeries> { series[i].get(pos[i]) };
    let mut out = Vec::new();
    loop {
        let smallest: Option<Labels> = (0..inputs.len())
            .filter_map(|i| current(i, &pos).map(|s| &s.labels))
            .min()
            .cloned();
        let Some(labels) = smallest else { break };
        let mut parts: Vec<(usize, &IndexSeries)> = Vec::new();
        for i in 0..inputs.len() {
            if let Some(s) = current(i, &pos).filter(|s| s.labels == labels) {
                parts.push((i, s));
                pos[i] += 1;
            }
        }
        let chunks = merge_chunks(inputs, &parts, cw, stats)?;
        if !chunks.is_empty() {
            out.push(IndexSeries {
                r: 0,
                labels,
                chunks,
            });
        }
    }
    Ok(out)
}

/// One series' chunks from several blocks, written as runs of overlapping chunks.
fn merge_chunks(
    inputs: &[Arc<Block>],
    parts: &[(usize, &IndexSeries)],
    cw: &mut ChunkWriter,
    stats: &mut BlockStatsMeta,
) -> io::Result<Vec<ChunkMeta>> {
    let mut deleted: Vec<&[(i64, i64)]> = vec![&[]; inputs.len()];
    let mut all: Vec<(usize, ChunkMeta)> = Vec::new();
    for &(i, s) in parts {
        if let Some(d) = inputs[i].tombstones.get(&s.r) {
            deleted[i] = d;
        }
        all.extend(s.chunks.iter().map(|c| (i, *c)));
    }
    all.sort_by_key(|(i, c)| (c.mint, *i));
    let mut out = Vec::new();
    let mut run: Vec<(usize, ChunkMeta)> = Vec::new();
    let mut run_maxt = i64::MIN;
    for (i, c) in all {
        if !run.is_empty() && c.mint > run_maxt {
            write_run(inputs, &deleted, &run, cw, stats, &mut out)?;
            run.clear();
        }
        run_maxt = if run.is_empty() {
            c.maxt
        } else {
            run_maxt.max(c.maxt)
        };
        run.push((i, c));
    }
    if !run.is_empty() {
        write_run(inputs, &deleted, &run, cw, stats, &mut out)?;
    }
    Ok(out)
}

/// Writes a run of chunks that overlap one another: a lone chunk untouched by tombstones
/// is copied, anything else is decoded, merged and re-encoded.
fn write_run(
    inputs: &[Arc<Block>],
    deleted: &[&[(i64, i64)]],
    run: &[(usize, ChunkMeta)],
    cw: &mut ChunkWriter,
    stats: &mut BlockStatsMeta,
    out: &mut Vec<ChunkMeta>,
) -> io::Result<()> {
    let hit = |i: usize, c: &ChunkMeta| deleted[i].iter().any(|&(a, b)| a <= c.maxt && b >= c.mint);
    if let [(i, c)] = run
        && !hit(*i, c)
    {
        let (enc, data) = inputs[*i].chunks.read(c.r).map_err(io::Error::other)?;
        let r = cw.write(enc, data)?;
        // Every chunk encoding starts with its sample count (2 bytes, big-endian).
        stats.num_samples += data
            .get(..2)
            .map_or(0, |b| u64::from(u16::from_be_bytes([b[0], b[1]])));
        out.push(ChunkMeta { r, ..*c });
        return Ok(());
    }
    let mut parts = Vec::with_capacity(run.len());
    for &(i, c) in run {
        let (mut samples, mut histograms) = (Vec::new(), Vec::new());
        decode(&inputs[i], c.r, &mut samples, &mut histograms)?;
        let gone = |t: i64| deleted[i].iter().any(|&(a, b)| t >= a && t <= b);
        samples.retain(|x| !gone(x.t));
        histograms.retain(|x| !gone(x.t));
        parts.push(SeriesData {
            labels: Labels::default(),
            samples,
            st: None,
            histograms,
            hst: None,
        });
    }
    // Chunks of one block do not overlap; where blocks do, the later block wins a tie.
    let parts = order_by_block(parts, run);
    let merged = merge_run(parts);
    write_series(cw, &merged.samples, &merged.histograms, stats, out)
}

/// The decoded chunks of a run in block order (stable: a block's chunks keep their time
/// order), so that merging lets the later block win a tie.
fn order_by_block(parts: Vec<SeriesData>, run: &[(usize, ChunkMeta)]) -> Vec<SeriesData> {
    let mut v: Vec<(usize, SeriesData)> = run.iter().map(|(i, _)| *i).zip(parts).collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, p)| p).collect()
}

/// Decodes chunk `r` of `block` into `out` and `histograms`; an error naming the block
/// when it is damaged or of an encoding Lookout does not know.
fn decode(
    block: &Block,
    r: u64,
    out: &mut Vec<Sample>,
    histograms: &mut Vec<HPoint>,
) -> io::Result<()> {
    let err =
        |msg: String| io::Error::other(format!("block {}: chunk {r}: {msg}", block.dir.display()));
    let (enc, data) = block.chunks.read(r).map_err(|e| err(e.to_string()))?;
    decode_chunk(enc, data, i64::MAX, out, histograms).map_err(err)
}

impl Blocks {
    /// Plans and runs one compaction with block ranges `ranges`; true when it merged
    /// blocks (call again: there may be more to do), false when there was nothing to do or
    /// it failed (logged and counted; its inputs are left out of later plans).
    pub(crate) fn compact_once(&self, ranges: &[i64]) -> bool {
        let _one_at_a_time = self
            .compaction_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let list = self.list();
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let metas: Vec<BlockMeta> = list
            .iter()
            .filter(|b| !failed.contains(&b.meta.ulid))
            .map(|b| b.meta.clone())
            .collect();
        let chosen = plan(&metas, ranges);
        if chosen.is_empty() {
            return false;
        }
        let inputs: Vec<Arc<Block>> = list
            .into_iter()
            .filter(|b| chosen.contains(&b.meta.ulid))
            .collect();
        let start = Instant::now();
        let written = write_compacted(&self.dir, &inputs).and_then(|w| match w {
            Some(dir) => Block::open(&dir).map(Some).map_err(io::Error::other),
            None => Ok(None),
        });
        let secs = start.elapsed().as_secs_f64();
        self.last_compaction_seconds
            .store(secs.to_bits(), Ordering::Relaxed);
        // The merge read every chunk of its inputs: give that memory back (see
        // `release_freed_memory`) once the inputs are closed too.
        drop(inputs);
        match written {
            Ok(new) => {
                let done = self.finish_compaction(new, chosen, secs);
                super::super::release_freed_memory();
                done
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), blocks = ?chosen, err = %e, "compacting blocks failed; they are left as they are");
                self.compactions_failed.fetch_add(1, Ordering::Relaxed);
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                failed.extend(chosen);
                false
            }
        }
    }

    /// Swaps the block `new` merged from `parents` in, deleting them.
    fn finish_compaction(&self, new: Option<Block>, parents: Vec<String>, secs: f64) -> bool {
        let new_dir = new.as_ref().map(|b| b.dir.clone());
        let summary = new.as_ref().map(|b| {
            (
                b.meta.ulid.clone(),
                b.meta.min_time,
                b.meta.max_time,
                b.meta.stats.num_series,
            )
        });
        if !self.swap_in(new, &parents, true) {
            // Retention deleted an input meanwhile: the merged block would bring it back.
            if let Some(dir) = new_dir {
                super::delete_block_dir(&dir);
            }
            return true;
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(dir = %self.dir.display(), block = ?summary, parents = ?parents, seconds = secs, "blocks compacted");
        true
    }

    /// Runs compactions until there is nothing left to do; returns how many ran.
    pub(crate) fn compact_all(&self, ranges: &[i64]) -> usize {
        let mut n = 0;
        while self.compact_once(ranges) {
            n += 1;
        }
        n
    }
}

/// Work the compactor thread does when woken, before merging blocks: writing the head's
/// due ranges as blocks. It is given a function that says whether to stop, to check
/// between blocks.
pub(crate) type HeadJob = Box<dyn Fn(&dyn Fn() -> bool) + Send>;

/// A thread that, when woken (when the head has grown past 1.5 block ranges, after a head
/// block is written and at open), writes the head's due blocks then merges blocks, so
/// that both, which can take seconds, never run on the appender or an async worker.
/// Dropping it stops the thread after the block it is writing or merging, if any.
pub(crate) struct Compactor {
    signal: Arc<Signal>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    pending: bool,
    stop: bool,
}

impl Compactor {
    /// Starts the thread for `blocks` with block ranges `ranges`, running `head` first at
    /// each wake-up.
    pub(crate) fn start(
        blocks: Weak<Blocks>,
        ranges: Vec<i64>,
        head: Option<HeadJob>,
    ) -> io::Result<Compactor> {
        let signal = Arc::new(Signal::default());
        let s = signal.clone();
        let thread = std::thread::Builder::new()
            .name("lookout-compactor".into())
            .spawn(move || {
                while s.next() {
                    if let Some(job) = &head {
                        job(&|| s.stopped());
                    }
                    let Some(b) = blocks.upgrade() else { return };
                    while !s.stopped() && b.compact_once(&ranges) {}
                }
            })?;
        Ok(Compactor {
            signal,
            thread: Some(thread),
        })
    }

    /// Asks for a pass: head blocks, then merges.
    pub(crate) fn wake(&self) {
        let mut s = self.signal.state.lock().unwrap_or_else(|e| e.into_inner());
        s.pending = true;
        self.signal.cv.notify_all();
    }
}

impl Signal {
    /// Waits for a wake-up; false when asked to stop.
    fn next(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.pending && !s.stop {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.pending = false;
        !s.stop
    }

    fn stopped(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.signal
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop = true;
        self.signal.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
