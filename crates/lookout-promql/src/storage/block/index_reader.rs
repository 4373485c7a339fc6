//! Reading a block's index file in place: the file is mapped into memory and only what
//! finds things in it stays on the heap — the offset of every symbol (4 bytes each) and,
//! per label name, the offsets of each value and of its postings list (8 bytes per label
//! pair). Series (labels and chunk metas) and postings lists are decoded from the mapping
//! when a query asks for them, as Prometheus's index reader does, so an open block costs
//! memory in proportion to its label pairs, not to its series and their labels.
//!
//! Opening checks the whole file once: every section's checksum, every series (its
//! checksum, symbol references and chunk metas), every postings list (sorted, naming
//! series of the block). A file that fails is refused, and the block is ignored as before.
//! A query that later meets a damaged series (the file changed underneath) leaves it out.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::index::{ChunkMeta, IndexSeries, MAGIC, MAX_INDEX, TOC_LEN};
use super::mapping::Mapping;
use super::{BlockError, Dec};
use crate::labels::Labels;
use crate::storage::index::{Postings, SeriesId};
use crate::storage::wal::segment::crc32c;

/// Label pairs of a series decoded without a heap buffer (more take one).
const INLINE_PAIRS: usize = 16;

/// A label value of the postings offset table: where its string and its postings list
/// are in the file.
#[derive(Clone, Copy)]
struct ValueAt {
    value: u32,
    postings: u32,
}

/// A block's index file, mapped.
pub(crate) struct IndexReader {
    path: PathBuf,
    map: Mapping,
    /// File offset of each symbol's length, by symbol number.
    symbols: Vec<u32>,
    /// Label name → its values, sorted by value.
    names: BTreeMap<Box<str>, Vec<ValueAt>>,
    /// File offset of the all-series postings list.
    all: u32,
    /// Whether series references rise with the series' labels, as Prometheus writes them:
    /// then every postings list is in label order too.
    in_label_order: bool,
}

impl IndexReader {
    /// Maps and checks the index file at `path`.
    pub(crate) fn open(path: &Path) -> Result<IndexReader, BlockError> {
        let err = |msg: String| BlockError::new(path, msg);
        let f = File::open(path).map_err(|e| err(e.to_string()))?;
        let size = f.metadata().map_err(|e| err(e.to_string()))?.len();
        if size > MAX_INDEX {
            return Err(err(format!("{size} bytes, over the limit of {MAX_INDEX}")));
        }
        if size < (5 + TOC_LEN) as u64 {
            return Err(err(format!("not an index v2 file ({size} bytes)")));
        }
        let map = Mapping::of(&f, size).map_err(|e| err(format!("mmap: {e}")))?;
        let mut r = IndexReader {
            path: path.to_path_buf(),
            map,
            symbols: Vec::new(),
            names: BTreeMap::new(),
            all: 0,
            in_label_order: true,
        };
        r.load().map_err(err)?;
        // The check read every page; queries read few of them again.
        r.map.release_pages();
        Ok(r)
    }

    fn load(&mut self) -> Result<(), String> {
        let b = self.map.bytes();
        if Dec::new(b).be32().ok() != Some(MAGIC) || b[4] != 2 {
            return Err("not an index v2 file (bad magic or version)".into());
        }
        let toc_at = b.len() - TOC_LEN;
        let toc_bytes = &b[toc_at..toc_at + 48];
        if Dec::new(&b[toc_at + 48..]).be32().ok() != Some(crc32c(toc_bytes)) {
            return Err("TOC checksum mismatch".into());
        }
        let mut t = Dec::new(toc_bytes);
        let mut toc = [0u64; 6];
        for r in &mut toc {
            *r = t.be64()?;
        }
        self.symbols = symbol_offsets(b, toc[0]).map_err(|m| format!("symbol table: {m}"))?;
        let (names, all) =
            postings_table(b, toc[5]).map_err(|m| format!("postings offset table: {m}"))?;
        self.names = names;
        self.all = all;
        let all = self
            .postings_at(all)
            .map_err(|m| format!("all-series postings: {m}"))?;
        if !all.windows(2).all(|w| w[0] < w[1]) {
            return Err("all-series postings list not sorted".into());
        }
        self.check_series(&all)?;
        self.check_postings(&all)
    }

    /// Decodes every series once; notes whether they come in label order.
    fn check_series(&mut self, all: &[SeriesId]) -> Result<(), String> {
        let mut metas = Vec::new();
        let mut prev: Option<Labels> = None;
        for &id in all {
            let labels = self
                .series(id, &mut metas, None)
                .map_err(|m| format!("series {id}: {m}"))?
                .ok_or_else(|| format!("series {id}: unreadable"))?;
            if prev.as_ref().is_some_and(|p| *p >= labels) {
                self.in_label_order = false;
            }
            prev = Some(labels);
        }
        Ok(())
    }

    /// Reads every postings list once: sorted, and naming only series of the block.
    fn check_postings(&self, all: &[SeriesId]) -> Result<(), String> {
        // One bit per possible reference (at most 2^28 for a 4 GiB file): O(1) lookups.
        let mut known = vec![0u64; all.last().map_or(0, |&m| m as usize / 64 + 1)];
        for &id in all {
            known[id as usize / 64] |= 1 << (id % 64);
        }
        let is_known = |id: SeriesId| {
            known
                .get(id as usize / 64)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
        };
        let b = self.map.bytes();
        for (name, values) in &self.names {
            for (i, v) in values.iter().enumerate() {
                let list = self.postings_at(v.postings).map_err(|m| {
                    let value = str_at(b, v.value).unwrap_or("?");
                    format!("postings of {name}={value:?}: {m}")
                })?;
                let sorted = list.windows(2).all(|w| w[0] < w[1]);
                if !sorted || !list.iter().all(|&id| is_known(id)) {
                    return Err(format!(
                        "postings list {i} of label {name:?} is unsorted or names unknown series"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The series `id`: its chunk metas into `metas` (cleared first) and its labels, or
    /// `None` when `within` is given and no chunk meets that range (inclusive).
    pub(crate) fn series(
        &self,
        id: SeriesId,
        metas: &mut Vec<ChunkMeta>,
        within: Option<(i64, i64)>,
    ) -> Result<Option<Labels>, String> {
        let b = self.map.bytes();
        let off = usize::try_from(id.saturating_mul(16)).map_err(|_| "offset too large")?;
        let mut d = Dec::at(b, off)?;
        let len = d.uvarint_len()?;
        let body = d.bytes(len)?;
        if d.be32()? != crc32c(body) {
            return Err("checksum mismatch".into());
        }
        let mut d = Dec::new(body);
        let n = d.uvarint_len()?;
        let label_refs = d.pos();
        for _ in 0..2 * n {
            d.uvarint()?;
        }
        decode_chunk_metas(&mut d, metas, len)?;
        if let Some((mint, maxt)) = within
            && !metas.iter().any(|c| c.maxt >= mint && c.mint <= maxt)
        {
            return Ok(None);
        }
        let mut d = Dec::at(body, label_refs)?;
        // The pairs borrow the mapping; a label set of up to `INLINE_PAIRS` pairs (nearly
        // all) is gathered on the stack, so the label set is the series' one allocation.
        let mut inline = [("", ""); INLINE_PAIRS];
        let mut heap = Vec::new();
        let pairs: &mut [(&str, &str)] = if n <= INLINE_PAIRS {
            &mut inline[..n]
        } else {
            heap.resize(n, ("", ""));
            &mut heap
        };
        for p in pairs.iter_mut() {
            let name = self.symbol(d.uvarint()?)?;
            let value = self.symbol(d.uvarint()?)?;
            *p = (name, value);
        }
        let pairs = &*pairs;
        // As Prometheus writes them: names strictly rising, no empty value. Anything else
        // takes the general constructor (sorts, drops empty values, last repeat wins).
        let canonical =
            pairs.windows(2).all(|w| w[0].0 < w[1].0) && pairs.iter().all(|(_, v)| !v.is_empty());
        Ok(Some(if canonical {
            Labels::from_sorted(pairs.iter().copied())
        } else {
            Labels::new(pairs.iter().copied())
        }))
    }

    fn symbol(&self, r: u64) -> Result<&str, String> {
        let off = usize::try_from(r)
            .ok()
            .and_then(|i| self.symbols.get(i))
            .ok_or_else(|| format!("symbol {r} out of range"))?;
        str_at(self.map.bytes(), *off)
    }

    /// The postings list whose section starts at `off`.
    fn postings_at(&self, off: u32) -> Result<Vec<SeriesId>, String> {
        let body = section(self.map.bytes(), u64::from(off))?;
        let mut d = Dec::new(body);
        let n = d.be32()? as usize;
        if n.saturating_mul(4) != body.len() - 4 {
            return Err(format!(
                "postings list of {n} entries in {} bytes",
                body.len()
            ));
        }
        (0..n).map(|_| d.be32().map(SeriesId::from)).collect()
    }

    /// A postings list for a query: a list damaged since the block was opened is logged
    /// and read as empty.
    fn postings_or_empty(&self, off: u32) -> Vec<SeriesId> {
        self.postings_at(off).unwrap_or_else(|e| {
            tracing::warn!(index = %self.path.display(), offset = off, err = %e, "postings list unreadable, read as empty");
            Vec::new()
        })
    }

    /// The values of `name` that `keep` accepts, with their postings.
    fn values_where<'a>(
        &'a self,
        name: &str,
        keep: &'a dyn Fn(&str) -> bool,
    ) -> impl Iterator<Item = &'a ValueAt> + 'a {
        let b = self.map.bytes();
        self.names
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter(move |v| str_at(b, v.value).is_ok_and(keep))
    }

    /// The entry of `name`=`value`.
    fn find(&self, name: &str, value: &str) -> Option<ValueAt> {
        let values = self.names.get(name)?;
        let b = self.map.bytes();
        let i = values
            .binary_search_by(|v| str_at(b, v.value).unwrap_or("").cmp(value))
            .ok()?;
        Some(values[i])
    }

    /// Union of the postings lists of `values`.
    fn union_of<'a>(&self, values: impl Iterator<Item = &'a ValueAt>) -> Cow<'_, [SeriesId]> {
        let mut out: Vec<SeriesId> = Vec::new();
        let mut lists = 0;
        for v in values {
            out.extend(self.postings_or_empty(v.postings));
            lists += 1;
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Cow::Owned(out)
    }

    /// Whether postings lists come in label order (else answers must be sorted).
    pub(crate) fn in_label_order(&self) -> bool {
        self.in_label_order
    }

    /// Label names, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        self.names.keys().map(|n| n.to_string()).collect()
    }

    /// Values of `name`, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let b = self.map.bytes();
        self.names.get(name).map_or_else(Vec::new, |values| {
            values
                .iter()
                .filter_map(|v| str_at(b, v.value).ok().map(str::to_string))
                .collect()
        })
    }

    /// Every series, sorted by labels (for compaction).
    pub(crate) fn all_series(&self) -> Result<Vec<IndexSeries>, BlockError> {
        let err = |m: String| BlockError::new(&self.path, m);
        let all = self.postings_at(self.all).map_err(err)?;
        let mut out = Vec::with_capacity(all.len());
        for id in all {
            let mut chunks = Vec::new();
            let labels = self
                .series(id, &mut chunks, None)
                .map_err(|m| err(format!("series {id}: {m}")))?
                .ok_or_else(|| err(format!("series {id}: unreadable")))?;
            out.push(IndexSeries {
                r: id,
                labels,
                chunks,
            });
        }
        if !self.in_label_order {
            out.sort_by(|a, b| a.labels.cmp(&b.labels));
        }
        Ok(out)
    }

    /// Heap bytes held (the mapping is not counted: its pages are the kernel's cache).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.symbols.capacity() * 4
            + self
                .names
                .iter()
                .map(|(n, v)| n.len() + 48 + v.capacity() * size_of::<ValueAt>())
                .sum::<usize>()
    }
}

impl Postings for IndexReader {
    fn all_ids(&self) -> Cow<'_, [SeriesId]> {
        Cow::Owned(self.postings_or_empty(self.all))
    }

    fn ids(&self, name: &str, value: &str) -> Cow<'_, [SeriesId]> {
        Cow::Owned(
            self.find(name, value)
                .map_or_else(Vec::new, |v| self.postings_or_empty(v.postings)),
        )
    }

    fn ids_where(&self, name: &str, keep: &dyn Fn(&str) -> bool) -> Cow<'_, [SeriesId]> {
        self.union_of(self.values_where(name, keep))
    }

    fn ids_in(&self, name: &str, set: &[String]) -> Cow<'_, [SeriesId]> {
        let found: Vec<ValueAt> = set.iter().filter_map(|v| self.find(name, v)).collect();
        self.union_of(found.iter())
    }
}

/// Decodes a series' chunk metas (deltas, as written) into `metas`.
fn decode_chunk_metas(
    d: &mut Dec<'_>,
    metas: &mut Vec<ChunkMeta>,
    len: usize,
) -> Result<(), String> {
    metas.clear();
    let n = d.uvarint_len()?;
    metas.reserve(n.min(len / 3));
    for i in 0..n {
        let c = if i == 0 {
            let mint = d.varint()?;
            let maxt = mint.wrapping_add(d.uvarint()? as i64);
            ChunkMeta {
                mint,
                maxt,
                r: d.uvarint()?,
            }
        } else {
            let p = metas[i - 1];
            let mint = p.maxt.wrapping_add(d.uvarint()? as i64);
            let maxt = mint.wrapping_add(d.uvarint()? as i64);
            ChunkMeta {
                mint,
                maxt,
                r: p.r.wrapping_add(d.varint()? as u64),
            }
        };
        metas.push(c);
    }
    Ok(())
}

/// The string (length varint, UTF-8 bytes) at `off` of `b`.
fn str_at(b: &[u8], off: u32) -> Result<&str, String> {
    let off_us = off as usize;
    // Nearly every string is under 128 bytes: a one-byte length, read without the decoder.
    if let Some(&len) = b.get(off_us)
        && len < 0x80
        && let Some(s) = b.get(off_us + 1..off_us + 1 + len as usize)
    {
        return std::str::from_utf8(s).map_err(|_| format!("string at offset {off} is not UTF-8"));
    }
    let mut d = Dec::at(b, off_us)?;
    let len = d.uvarint_len()?;
    std::str::from_utf8(d.bytes(len)?).map_err(|_| format!("string at offset {off} is not UTF-8"))
}

/// The body of the `len <4b>`-prefixed section at `off`, checksum verified.
fn section(b: &[u8], off: u64) -> Result<&[u8], String> {
    let off = usize::try_from(off).map_err(|_| "offset too large".to_string())?;
    let mut d = Dec::at(b, off)?;
    let len = d.be32()? as usize;
    let body = d.bytes(len)?;
    if d.be32()? != crc32c(body) {
        return Err(format!("checksum mismatch in the section at offset {off}"));
    }
    Ok(body)
}

/// File offsets of the symbols of the table at `off`, each checked to be UTF-8.
fn symbol_offsets(b: &[u8], off: u64) -> Result<Vec<u32>, String> {
    let body = section(b, off)?;
    // The body starts 4 bytes into the section.
    let base = off as usize + 4;
    let mut d = Dec::new(body);
    let n = d.be32()? as usize;
    // Every symbol takes at least its one length byte.
    if n > body.len() {
        return Err(format!("{n} symbols cannot fit in {} bytes", body.len()));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let at = base + d.pos();
        let len = d.uvarint_len()?;
        std::str::from_utf8(d.bytes(len)?).map_err(|_| "symbol is not UTF-8".to_string())?;
        out.push(at as u32);
    }
    Ok(out)
}

type NameTable = BTreeMap<Box<str>, Vec<ValueAt>>;

/// The postings offset table at `off`: label name → values (sorted) with their postings,
/// and the all-series list's offset.
fn postings_table(b: &[u8], off: u64) -> Result<(NameTable, u32), String> {
    if off == 0 {
        return Err("missing".into());
    }
    let body = section(b, off)?;
    let base = off as usize + 4;
    let mut d = Dec::new(body);
    let n = d.be32()? as usize;
    if n > body.len() {
        return Err(format!("{n} entries cannot fit in {} bytes", body.len()));
    }
    let mut names: NameTable = BTreeMap::new();
    let mut all = None;
    for _ in 0..n {
        if d.byte()? != 2 {
            return Err("entry without two strings".into());
        }
        let len = d.uvarint_len()?;
        let name = std::str::from_utf8(d.bytes(len)?).map_err(|_| "name is not UTF-8")?;
        let value_at = (base + d.pos()) as u32;
        let len = d.uvarint_len()?;
        let value = std::str::from_utf8(d.bytes(len)?).map_err(|_| "value is not UTF-8")?;
        let postings = u32::try_from(d.uvarint()?).map_err(|_| "postings offset too large")?;
        if name.is_empty() && value.is_empty() {
            all = Some(postings);
            continue;
        }
        let at = ValueAt {
            value: value_at,
            postings,
        };
        match names.get_mut(name) {
            Some(v) => v.push(at),
            None => {
                names.insert(name.into(), vec![at]);
            }
        }
    }
    for (name, values) in names.iter_mut() {
        let key = |v: &ValueAt| str_at(b, v.value).unwrap_or("");
        if !values.is_sorted_by(|x, y| key(x) < key(y)) {
            values.sort_by(|x, y| key(x).cmp(key(y)));
            if values.windows(2).any(|w| key(&w[0]) == key(&w[1])) {
                return Err(format!("label {name:?} has a value listed twice"));
            }
        }
        values.shrink_to_fit();
    }
    let all = all.ok_or("no all-series postings list")?;
    Ok((names, all))
}
