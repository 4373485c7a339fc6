//! Persisted blocks in Prometheus's TSDB format: every two hours of samples that leave the
//! head become a directory `DIR/<ULID>/` holding
//!
//! * `index` ([`index`]): format v2, symbol table, series with their chunk metas,
//!   postings, TOC;
//! * `chunks/000001`, … ([`chunks`]): the samples as Prometheus XOR chunks
//!   ([`promxor`], encoding 1) of at most [`CHUNK_SAMPLES`](super::CHUNK_SAMPLES) samples,
//!   native histograms as float histogram chunks ([`histochunk`], encoding 3; integer
//!   histogram chunks, encoding 2, are read too);
//! * `meta.json` ([`meta`]): ULID, `minTime`, `maxTime` (exclusive), counts, compaction
//!   level, sources and (for a compacted block) parents;
//! * `tombstones` ([`tombstones`]): empty (compaction applies the inputs' tombstones).
//!
//! A block is written into `<ULID>.tmp/`, each file fsynced, then renamed into place: a
//! crash leaves a `.tmp` directory, removed at the next open. A block is deleted by
//! renaming it to `<ULID>.tmp-for-deletion` first, also removed at the next open. Blocks
//! are merged by [`compact`]. Prometheus 2.42 and
//! `promtool tsdb` read Lookout's blocks and Lookout reads theirs.
//!
//! An open block maps its index and chunk files into memory and reads what a query needs
//! in place ([`index_reader::IndexReader`], [`chunks::ChunkReader`]); on the heap it keeps
//! only the offsets that find symbols and postings lists in the index. A chunk that fails its checksum or lies outside its
//! file is dropped from the answer, logged once with its file and counted; the rest of
//! the block still answers.

pub(crate) mod chunks;
pub(crate) mod compact;
pub(crate) mod histochunk;
pub(crate) mod index;
pub(crate) mod index_reader;
mod mapping;
pub mod meta;
pub(crate) mod promxor;
pub(crate) mod tombstones;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::index::Prepared;
use super::{CHUNK_SAMPLES, Sample, SeriesData};
use crate::histogram::HPoint;
use crate::labels::Labels;
use chunks::{ChunkReader, ChunkWriter};
use index::{ChunkMeta, IndexSeries};
use index_reader::IndexReader;
use meta::{BlockMeta, BlockStatsMeta, Compaction};

/// Width of the blocks cut from the head (Prometheus's 2 h).
pub const BLOCK_RANGE_MS: i64 = 2 * 3600 * 1000;

/// An error in a block's file, naming the file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("block file {path}: {msg}")]
pub struct BlockError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub msg: String,
}

impl BlockError {
    pub(crate) fn new(path: &Path, msg: String) -> BlockError {
        BlockError {
            path: path.display().to_string(),
            msg,
        }
    }
}

/// A bounds-checked reader of big-endian numbers and varints.
pub(crate) struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Dec<'a> {
        Dec { b, pos: 0 }
    }

    /// A reader at `off` of `b`.
    pub(crate) fn at(b: &'a [u8], off: usize) -> Result<Dec<'a>, String> {
        if off > b.len() {
            return Err(format!("offset {off} past the end ({} bytes)", b.len()));
        }
        Ok(Dec { b, pos: off })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.b.len()
    }

    /// The offset read next.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(format!(
                "{n} bytes wanted at offset {}, past the end",
                self.pos
            ));
        };
        let out = &self.b[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn byte(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn be32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn be64(&mut self) -> Result<u64, String> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    pub(crate) fn uvarint(&mut self) -> Result<u64, String> {
        let rest = self.b.get(self.pos..).unwrap_or(&[]);
        let (v, n) =
            chunks::uvarint(rest).ok_or_else(|| format!("bad varint at offset {}", self.pos))?;
        self.pos += n;
        Ok(v)
    }

    pub(crate) fn varint(&mut self) -> Result<i64, String> {
        let u = self.uvarint()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A length or count: an unsigned varint no larger than the bytes left.
    pub(crate) fn uvarint_len(&mut self) -> Result<usize, String> {
        let v = self.uvarint()?;
        let left = self.b.len() - self.pos;
        if v > left as u64 {
            return Err(format!(
                "length {v} at offset {} exceeds the {left} bytes left",
                self.pos
            ));
        }
        Ok(v as usize)
    }
}

/// A new ULID: 48 bits of milliseconds and 80 random bits in Crockford's base 32.
pub fn new_ulid(ms: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut rand = 0u128;
    for _ in 0..2 {
        // `RandomState` is seeded from the operating system's randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        rand = (rand << 64) | u128::from(h.finish());
    }
    let v = (u128::from(ms & 0xffff_ffff_ffff) << 80) | (rand & ((1u128 << 80) - 1));
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    (0..26)
        .map(|i| ALPHABET[((v >> (5 * (25 - i))) & 31) as usize] as char)
        .collect()
}

/// Whether `name` has the shape of a ULID.
pub fn is_ulid(name: &str) -> bool {
    name.len() == 26
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes the series of `series` (sorted by labels, each with its float and histogram
/// samples in `[mint, maxt)` sorted by time; series without samples are skipped) as a
/// block in `parent`; returns its directory, or `None` when no series had samples (no
/// block is written then).
pub(crate) fn write_block(
    parent: &Path,
    series: impl Iterator<Item = (Labels, Vec<Sample>, Vec<HPoint>)>,
    mint: i64,
    maxt: i64,
    compaction: Compaction,
) -> io::Result<Option<PathBuf>> {
    write_block_with(parent, mint, maxt, compaction, |cw, stats| {
        let mut index_series = Vec::new();
        for (labels, samples, hists) in series {
            let mut metas = Vec::with_capacity(samples.len().div_ceil(CHUNK_SAMPLES as usize));
            write_series(cw, &samples, &hists, stats, &mut metas)?;
            if !metas.is_empty() {
                index_series.push(IndexSeries {
                    r: 0,
                    labels,
                    chunks: metas,
                });
            }
        }
        Ok(index_series)
    })
}

/// Writes one series' float samples and histograms (each sorted by time) as chunks in
/// time order: each stretch of floats between histograms as XOR chunks, each stretch of
/// histograms as float histogram chunks, so that no two chunks of the series overlap.
pub(crate) fn write_series(
    cw: &mut ChunkWriter,
    samples: &[Sample],
    hists: &[HPoint],
    stats: &mut BlockStatsMeta,
    metas: &mut Vec<ChunkMeta>,
) -> io::Result<()> {
    let (mut i, mut j) = (0, 0);
    while i < samples.len() || j < hists.len() {
        let floats_first = match (samples.get(i), hists.get(j)) {
            (Some(s), Some(h)) => s.t < h.t,
            (s, _) => s.is_some(),
        };
        if floats_first {
            let end = hists.get(j).map_or(samples.len(), |h| {
                i + samples[i..].partition_point(|s| s.t < h.t)
            });
            write_samples(cw, &samples[i..end], stats, metas)?;
            i = end;
        } else {
            let end = samples.get(i).map_or(hists.len(), |s| {
                j + hists[j..].partition_point(|h| h.t <= s.t)
            });
            write_histograms(cw, &hists[j..end], stats, metas)?;
            j = end;
        }
    }
    Ok(())
}

/// Encodes `hists` (sorted by time) as float histogram chunks of at most
/// [`CHUNK_SAMPLES`](super::CHUNK_SAMPLES) samples, cut where the layout or the counter
/// reset hint asks for a new chunk ([`histochunk::chunk_runs`]).
fn write_histograms(
    cw: &mut ChunkWriter,
    hists: &[HPoint],
    stats: &mut BlockStatsMeta,
    metas: &mut Vec<ChunkMeta>,
) -> io::Result<()> {
    for part in histochunk::chunk_runs(hists, CHUNK_SAMPLES as usize) {
        let data = histochunk::encode_float(part);
        let r = cw.write(histochunk::ENCODING_FLOAT_HISTOGRAM, &data)?;
        metas.push(ChunkMeta {
            mint: part[0].t,
            maxt: part[part.len() - 1].t,
            r,
        });
    }
    stats.num_samples += hists.len() as u64;
    Ok(())
}

/// Encodes `samples` (sorted by time) as XOR chunks of at most
/// [`CHUNK_SAMPLES`](super::CHUNK_SAMPLES) samples into `cw`, appending their metas to
/// `metas` and counting the samples in `stats`.
pub(crate) fn write_samples(
    cw: &mut ChunkWriter,
    samples: &[Sample],
    stats: &mut BlockStatsMeta,
    metas: &mut Vec<ChunkMeta>,
) -> io::Result<()> {
    for part in samples.chunks(CHUNK_SAMPLES as usize) {
        let data = promxor::encode(part);
        let r = cw.write(promxor::ENCODING_XOR, &data)?;
        metas.push(ChunkMeta {
            mint: part[0].t,
            maxt: part[part.len() - 1].t,
            r,
        });
    }
    stats.num_samples += samples.len() as u64;
    Ok(())
}

/// Writes a block in `parent` whose chunks `fill` writes (counting its samples) and
/// whose series (sorted by labels) it returns: into `<ULID>.tmp/`, every file fsynced,
/// then renamed into place. `None` (nothing left on disk) when `fill` returns no series.
pub(crate) fn write_block_with(
    parent: &Path,
    mint: i64,
    maxt: i64,
    compaction: Compaction,
    fill: impl FnOnce(&mut ChunkWriter, &mut BlockStatsMeta) -> io::Result<Vec<IndexSeries>>,
) -> io::Result<Option<PathBuf>> {
    let ulid = new_ulid(now_ms());
    let tmp = parent.join(format!("{ulid}.tmp"));
    let result = write_block_files(&tmp, &ulid, mint, maxt, compaction, fill);
    match result {
        Ok(Some(_)) => {}
        other => {
            let _ = std::fs::remove_dir_all(&tmp);
            return other.map(|_| None);
        }
    };
    let dir = parent.join(&ulid);
    std::fs::rename(&tmp, &dir)?;
    super::wal::sync_dir(parent)?;
    Ok(Some(dir))
}

fn write_block_files(
    tmp: &Path,
    ulid: &str,
    mint: i64,
    maxt: i64,
    mut compaction: Compaction,
    fill: impl FnOnce(&mut ChunkWriter, &mut BlockStatsMeta) -> io::Result<Vec<IndexSeries>>,
) -> io::Result<Option<BlockMeta>> {
    std::fs::create_dir_all(tmp)?;
    let mut cw = ChunkWriter::new(&tmp.join("chunks"))?;
    let mut stats = BlockStatsMeta::default();
    let index_series = fill(&mut cw, &mut stats)?;
    if index_series.is_empty() {
        return Ok(None);
    }
    stats.num_series = index_series.len() as u64;
    stats.num_chunks = index_series.iter().map(|s| s.chunks.len() as u64).sum();
    cw.finish()?;
    index::write_index(&tmp.join("index"), &index_series)?;
    drop(index_series);
    if compaction.sources.is_empty() {
        compaction.sources.push(ulid.to_string());
    }
    let meta = BlockMeta {
        ulid: ulid.to_string(),
        min_time: mint,
        max_time: maxt,
        stats,
        compaction,
        version: 1,
    };
    meta.write(tmp)?;
    tombstones::write_empty(tmp)?;
    super::wal::sync_dir(&tmp.join("chunks"))?;
    super::wal::sync_dir(tmp)?;
    Ok(Some(meta))
}

/// An open block.
pub(crate) struct Block {
    pub dir: PathBuf,
    pub meta: BlockMeta,
    /// The index file, read in place.
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: tombstones::Tombstones,
    /// Bytes of the block's files.
    pub bytes: u64,
    /// Chunk references found damaged (each logged once).
    bad_chunks: Mutex<HashSet<u64>>,
    /// Series found damaged after the open (each logged once).
    bad_series: Mutex<HashSet<u64>>,
}

impl Block {
    /// Opens the block in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta = BlockMeta::read(dir)?;
        let index = IndexReader::open(&dir.join("index"))?;
        let chunks = ChunkReader::open(&dir.join("chunks"))?;
        let tombstones = tombstones::read(dir)?;
        let file_len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let bytes = chunks.bytes()
            + file_len(dir.join("index"))
            + file_len(dir.join("meta.json"))
            + file_len(dir.join("tombstones"));
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            tombstones,
            bytes,
            bad_chunks: Mutex::new(HashSet::new()),
            bad_series: Mutex::new(HashSet::new()),
        })
    }

    /// Whether the block's range meets `[mint, maxt]` (inclusive).
    pub(crate) fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_time <= maxt && mint < self.meta.max_time
    }

    /// The series matching `matchers` with their samples in `[mint, maxt]`, sorted by
    /// labels. Damaged chunks are left out and counted in `bad`.
    pub(crate) fn select(
        &self,
        matchers: &[Prepared],
        mint: i64,
        maxt: i64,
        bad: &AtomicU64,
    ) -> Vec<SeriesData> {
        let mut out = Vec::new();
        let mut metas = Vec::new();
        for id in super::index::select(&self.index, matchers) {
            let labels = match self.index.series(id, &mut metas, Some((mint, maxt))) {
                Ok(Some(labels)) => labels,
                Ok(None) => continue,
                Err(e) => {
                    self.series_damaged(id, &e, bad);
                    continue;
                }
            };
            // The file's postings are trusted only as far as the series' own labels agree.
            if !matchers.iter().all(|m| m.matches(&labels)) {
                continue;
            }
            let mut samples: Vec<Sample> = Vec::new();
            let mut hists: Vec<HPoint> = Vec::new();
            for c in metas.iter().filter(|c| c.maxt >= mint && c.mint <= maxt) {
                // Decoded in place (decoding stops past `maxt`); the samples before `mint`
                // (timestamps rise) are cut off after.
                let (s0, h0) = (samples.len(), hists.len());
                if self.read_chunk(c.r, maxt, &mut samples, &mut hists, bad) {
                    let early = samples[s0..].partition_point(|x| x.t < mint);
                    samples.drain(s0..s0 + early);
                    let early = hists[h0..].partition_point(|x| x.t < mint);
                    hists.drain(h0..h0 + early);
                }
            }
            if let Some(deleted) = self.tombstones.get(&id) {
                let gone = |t: i64| deleted.iter().any(|&(a, b)| t >= a && t <= b);
                samples.retain(|x| !gone(x.t));
                hists.retain(|x| !gone(x.t));
            }
            if !samples.is_empty() || !hists.is_empty() {
                out.push(SeriesData {
                    labels,
                    samples,
                    st: None,
                    histograms: hists,
                    hst: None,
                });
            }
        }
        if !self.index.in_label_order() {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        out
    }

    /// Logs (once) and counts a series that could not be decoded at query time.
    fn series_damaged(&self, id: u64, why: &str, bad: &AtomicU64) {
        let mut seen = self.bad_series.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(id) {
            bad.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(block = %self.dir.display(), series_ref = id, err = %why, "block series dropped from query results");
        }
    }

    /// Every series of the block with its chunk metas, sorted by labels.
    pub(crate) fn all_series(&self) -> Result<Vec<IndexSeries>, BlockError> {
        self.index.all_series()
    }

    /// Heap bytes the open block holds (its files' pages are the kernel's cache).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
    }

    /// Appends the samples of chunk `r` up to `maxt` to `out` (floats, and the
    /// staleness markers of a histogram chunk) and `hists`; false (both unchanged, logged
    /// once, counted) when it is damaged.
    fn read_chunk(
        &self,
        r: u64,
        maxt: i64,
        out: &mut Vec<Sample>,
        hists: &mut Vec<HPoint>,
        bad: &AtomicU64,
    ) -> bool {
        let why = match self.chunks.read(r) {
            Ok((enc, data)) => match decode_chunk(enc, data, maxt, out, hists) {
                Ok(()) => return true,
                Err(why) => why,
            },
            Err(e) => e.to_string(),
        };
        let mut seen = self.bad_chunks.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(r) {
            bad.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(block = %self.dir.display(), chunk_ref = r, err = %why, "block chunk dropped from query results");
        }
        false
    }

    pub(crate) fn label_names(&self) -> Vec<String> {
        self.index.label_names()
    }

    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.index.label_values(name)
    }
}

/// Decodes a chunk of encoding `enc` up to its first sample after `maxt`: floats (and
/// the staleness markers of histogram chunks) to `out`, histograms to `hists`; both are
/// left unchanged and the reason returned when it is damaged or of an unknown encoding.
pub(crate) fn decode_chunk(
    enc: u8,
    data: &[u8],
    maxt: i64,
    out: &mut Vec<Sample>,
    hists: &mut Vec<HPoint>,
) -> Result<(), String> {
    match enc {
        promxor::ENCODING_XOR => {
            promxor::decode_until(data, out, maxt).ok_or_else(|| "undecodable XOR chunk".into())
        }
        histochunk::ENCODING_HISTOGRAM | histochunk::ENCODING_FLOAT_HISTOGRAM => {
            histochunk::decode_until(enc, data, maxt, hists, out)
                .ok_or_else(|| format!("undecodable histogram chunk (encoding {enc})"))
        }
        _ => Err(format!(
            "chunk encoding {enc} not supported (XOR floats and histograms only)"
        )),
    }
}

/// Figures of the blocks, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BlockStats {
    /// Blocks open (`prometheus_tsdb_blocks_loaded`).
    pub blocks_loaded: u64,
    /// Bytes of the blocks' files (`prometheus_tsdb_storage_blocks_bytes`).
    pub blocks_bytes: u64,
    /// Blocks written from the head or by compaction (`prometheus_tsdb_compactions_total`).
    pub compactions: u64,
    /// Failed block writes (`prometheus_tsdb_compactions_failed_total`).
    pub compactions_failed: u64,
    /// Block directories ignored at open: unfinished (`.tmp`), without a readable
    /// `meta.json`, or with an unreadable index or chunk files.
    pub blocks_ignored: u64,
    /// Damaged chunks (and series damaged after the open) left out of query results.
    pub chunks_dropped: u64,
    /// Heap bytes the open blocks hold: what finds symbols and postings lists in their
    /// index files (the files themselves are mapped, their pages the kernel's cache).
    pub blocks_heap_bytes: u64,
    /// Blocks deleted by the time retention (`prometheus_tsdb_time_retentions_total`).
    pub time_retentions: u64,
    /// Blocks deleted by the size retention (`prometheus_tsdb_size_retentions_total`).
    pub size_retentions: u64,
    /// Seconds the last block write took, from the head or by compaction
    /// (`prometheus_tsdb_compaction_duration_seconds`, a gauge here where Prometheus has a
    /// histogram).
    pub last_compaction_seconds: f64,
    /// `--storage.tsdb.retention.size`, 0 when unset (`prometheus_tsdb_retention_limit_bytes`).
    pub retention_limit_bytes: u64,
}

/// The blocks of a data directory.
pub(crate) struct Blocks {
    pub dir: PathBuf,
    /// Sorted by `minTime`.
    list: std::sync::RwLock<Vec<std::sync::Arc<Block>>>,
    pub compactions: AtomicU64,
    pub compactions_failed: AtomicU64,
    pub ignored: AtomicU64,
    pub chunks_dropped: AtomicU64,
    pub time_retentions: AtomicU64,
    pub size_retentions: AtomicU64,
    /// Bits of the `f64` seconds the last block write took.
    pub last_compaction_seconds: AtomicU64,
    /// Held while blocks are merged: one compaction at a time.
    compaction_lock: Mutex<()>,
    /// Blocks whose compaction failed: left out of the plans until the next open.
    failed: Mutex<HashSet<String>>,
}

impl Blocks {
    /// Opens every block of `dir`. Unfinished blocks (`*.tmp`) and blocks whose
    /// `meta.json` is missing or unparseable are deleted; blocks whose other files cannot
    /// be read are left in place and ignored. Each is logged and counted.
    pub(crate) fn open(dir: &Path) -> io::Result<Blocks> {
        let blocks = Blocks {
            dir: dir.to_path_buf(),
            list: Default::default(),
            compactions: AtomicU64::new(0),
            compactions_failed: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            chunks_dropped: AtomicU64::new(0),
            time_retentions: AtomicU64::new(0),
            size_retentions: AtomicU64::new(0),
            last_compaction_seconds: AtomicU64::new(0),
            compaction_lock: Mutex::new(()),
            failed: Mutex::new(HashSet::new()),
        };
        let mut list = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let unfinished = name.strip_suffix(".tmp").is_some_and(is_ulid);
            if unfinished || name.strip_suffix(DELETING).is_some_and(is_ulid) {
                tracing::warn!(dir = %path.display(), "unfinished block removed");
                blocks.ignored.fetch_add(1, Ordering::Relaxed);
                std::fs::remove_dir_all(&path)?;
                continue;
            }
            if !is_ulid(&name) {
                continue;
            }
            match Block::open(&path) {
                Ok(b) => list.push(std::sync::Arc::new(b)),
                Err(e) => blocks.ignore(&path, &e)?,
            }
        }
        remove_parents(&mut list);
        list.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        *blocks.list.write().unwrap_or_else(|e| e.into_inner()) = list;
        Ok(blocks)
    }

    /// Logs and counts a block that could not be opened; deletes it when its
    /// `meta.json` is missing or unparseable (it was never finished).
    fn ignore(&self, path: &Path, e: &BlockError) -> io::Result<()> {
        self.ignored.fetch_add(1, Ordering::Relaxed);
        let meta_bad = e.path.ends_with("meta.json")
            && (!path.join("meta.json").exists() || !e.msg.contains("os error"));
        if meta_bad {
            tracing::warn!(dir = %path.display(), err = %e, "block without a usable meta.json deleted");
            std::fs::remove_dir_all(path)?;
        } else {
            tracing::warn!(dir = %path.display(), err = %e, "block ignored: it cannot be read");
        }
        Ok(())
    }

    /// The open blocks, sorted by `minTime`.
    pub(crate) fn list(&self) -> Vec<std::sync::Arc<Block>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Adds a block just written and removes the blocks in `replaced` (their directories
    /// too).
    pub(crate) fn replace(&self, new: Option<Block>, replaced: &[String]) {
        self.swap_in(new, replaced, false);
    }

    /// Adds `new` and removes the blocks in `replaced` (their directories too). With
    /// `all_present`, nothing changes and false is returned when one of `replaced` is no
    /// longer loaded (retention deleted it while it was being compacted).
    fn swap_in(&self, new: Option<Block>, replaced: &[String], all_present: bool) -> bool {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if all_present
            && !replaced
                .iter()
                .all(|u| list.iter().any(|b| &b.meta.ulid == u))
        {
            return false;
        }
        let gone = take_blocks(&mut list, |u| replaced.iter().any(|r| r == u));
        if let Some(b) = new {
            list.push(std::sync::Arc::new(b));
        }
        list.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        drop(list);
        for dir in gone {
            delete_block_dir(&dir);
        }
        true
    }

    /// Deletes blocks as Prometheus's retention does: by time, every block whose end is
    /// more than `retention_ms` (0: no limit) before the newest block's end; by size,
    /// walking from the newest block, every block from the one that takes the blocks'
    /// bytes plus `wal_bytes` past `max_bytes` (0: no limit) on.
    pub(crate) fn apply_retention(&self, retention_ms: i64, max_bytes: u64, wal_bytes: u64) {
        let mut list = self.list();
        list.sort_by_key(|b| std::cmp::Reverse(b.meta.max_time));
        let newest = list.first().map_or(i64::MIN, |b| b.meta.max_time);
        let (mut by_time, mut by_size) = (Vec::new(), Vec::new());
        let mut total = wal_bytes;
        for (i, b) in list.iter().enumerate() {
            total += b.bytes;
            if i > 0 && retention_ms > 0 && newest - b.meta.max_time > retention_ms {
                by_time.push(b.meta.ulid.clone());
            } else if max_bytes > 0 && total > max_bytes {
                by_size.push(b.meta.ulid.clone());
            }
        }
        for (gone, counter, why) in [
            (by_time, &self.time_retentions, "time"),
            (by_size, &self.size_retentions, "size"),
        ] {
            if gone.is_empty() {
                continue;
            }
            tracing::info!(dir = %self.dir.display(), blocks = ?gone, retention = why, "blocks deleted by retention");
            counter.fetch_add(1, Ordering::Relaxed);
            self.replace(None, &gone);
        }
    }

    /// End of the newest block's range (`i64::MIN` without blocks).
    pub(crate) fn max_time(&self) -> i64 {
        self.list()
            .iter()
            .map(|b| b.meta.max_time)
            .max()
            .unwrap_or(i64::MIN)
    }

    pub(crate) fn stats(&self) -> BlockStats {
        let list = self.list();
        BlockStats {
            blocks_loaded: list.len() as u64,
            blocks_bytes: list.iter().map(|b| b.bytes).sum(),
            blocks_heap_bytes: list.iter().map(|b| b.heap_bytes() as u64).sum(),
            compactions: self.compactions.load(Ordering::Relaxed),
            compactions_failed: self.compactions_failed.load(Ordering::Relaxed),
            blocks_ignored: self.ignored.load(Ordering::Relaxed),
            chunks_dropped: self.chunks_dropped.load(Ordering::Relaxed),
            time_retentions: self.time_retentions.load(Ordering::Relaxed),
            size_retentions: self.size_retentions.load(Ordering::Relaxed),
            last_compaction_seconds: f64::from_bits(
                self.last_compaction_seconds.load(Ordering::Relaxed),
            ),
            retention_limit_bytes: 0,
        }
    }
}

/// Suffix of a block directory being deleted: renamed first, so that a crash halfway
/// through leaves a name the next open removes rather than half a block.
const DELETING: &str = ".tmp-for-deletion";

/// Deletes a block directory: renamed to `<ULID>.tmp-for-deletion`, then removed.
fn delete_block_dir(dir: &Path) {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(DELETING);
    let doomed = PathBuf::from(doomed);
    let result = std::fs::rename(dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed));
    if let Err(e) = result {
        tracing::warn!(dir = %dir.display(), err = %e, "could not delete a block");
    }
}

/// Removes the blocks whose ULID `gone` picks from `list`; returns their directories.
fn take_blocks(list: &mut Vec<std::sync::Arc<Block>>, gone: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    list.retain(|b| {
        let keep = !gone(&b.meta.ulid);
        if !keep {
            dirs.push(b.dir.clone());
        }
        keep
    });
    dirs
}

/// Deletes the blocks of `list` that another block of `list` names as a parent: a
/// compaction wrote its block but did not get to delete its inputs (Prometheus does the
/// same at open).
fn remove_parents(list: &mut Vec<std::sync::Arc<Block>>) {
    let parents: HashSet<String> = list
        .iter()
        .flat_map(|b| b.meta.compaction.parents.iter().map(|p| p.ulid.clone()))
        .collect();
    for dir in take_blocks(list, |u| parents.contains(u)) {
        tracing::info!(dir = %dir.display(), "block already compacted into another deleted");
        delete_block_dir(&dir);
    }
}

/// Merges answers sorted by labels into one: series with equal labels are merged by
/// timestamp, and on an equal timestamp the later answer in `parts` wins.
pub(crate) fn merge(mut parts: Vec<Vec<SeriesData>>) -> Vec<SeriesData> {
    // A query within one block (or the head alone) has one answer: already sorted.
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all: Vec<(usize, SeriesData)> = parts
        .into_iter()
        .enumerate()
        .flat_map(|(i, p)| p.into_iter().map(move |s| (i, s)))
        .collect();
    // Stable: equal labels keep the order of `parts`.
    all.sort_by(|a, b| a.1.labels.cmp(&b.1.labels));
    let mut out: Vec<SeriesData> = Vec::with_capacity(all.len());
    let mut run: Vec<SeriesData> = Vec::new();
    for (_, s) in all {
        if run.first().is_some_and(|f| f.labels != s.labels) {
            out.push(merge_run(std::mem::take(&mut run)));
        }
        run.push(s);
    }
    if !run.is_empty() {
        out.push(merge_run(run));
    }
    out
}

/// One sample of a series being merged: a float with its start timestamp, or a
/// histogram.
enum Merged {
    Float(f64, i64),
    Hist(std::sync::Arc<crate::histogram::FloatHistogram>, i64),
}

/// Merges the samples of one series from several answers (the later wins a tie, whether
/// the samples are floats or histograms).
fn merge_run(mut run: Vec<SeriesData>) -> SeriesData {
    if run.len() == 1
        && let Some(s) = run.pop()
    {
        return s;
    }
    let with_st = run.iter().any(|s| s.st.is_some());
    let with_hst = run.iter().any(|s| s.hst.is_some());
    let mut all: Vec<(i64, usize, Merged)> = Vec::new();
    for (i, s) in run.iter_mut().enumerate() {
        for (k, x) in s.samples.iter().enumerate() {
            let st = s.st.as_ref().and_then(|v| v.get(k).copied()).unwrap_or(0);
            all.push((x.t, i, Merged::Float(x.v, st)));
        }
        let hst = s.hst.take().unwrap_or_default();
        for (k, p) in std::mem::take(&mut s.histograms).into_iter().enumerate() {
            let st = hst.get(k).copied().unwrap_or(0);
            all.push((p.t, i, Merged::Hist(p.h, st)));
        }
    }
    all.sort_by_key(|a| (a.0, a.1));
    all.dedup_by(|later, earlier| {
        // `dedup_by` keeps the first of equal elements: keep the later answer's instead.
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    let mut samples: Vec<Sample> = Vec::with_capacity(all.len());
    let mut st = Vec::new();
    let mut histograms = Vec::new();
    let mut hst = Vec::new();
    for (t, _, m) in all {
        match m {
            Merged::Float(v, s) => {
                samples.push(Sample { t, v });
                st.push(s);
            }
            Merged::Hist(h, s) => {
                histograms.push(HPoint { t, h });
                hst.push(s);
            }
        }
    }
    let labels = run.swap_remove(0).labels;
    SeriesData {
        labels,
        samples,
        st: with_st.then_some(st),
        histograms,
        hst: with_hst.then_some(hst),
    }
}

#[cfg(test)]
mod hist_tests;
#[cfg(test)]
mod tests;
