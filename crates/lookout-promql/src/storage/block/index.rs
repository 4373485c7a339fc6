//! The index file of a block, format v2 (`tsdb/docs/format/index.md` in Prometheus):
//! header (magic `0xBAAAD700`, version 2), symbol table, series (16-byte aligned, the
//! series reference is `offset / 16`, labels as symbol numbers, chunk metas as deltas),
//! one label index per name, the label offset table, postings lists (the all-series list
//! under the empty name and value first), the postings offset table and the TOC. Every
//! section ends in a CRC32C of its bytes.
//!
//! Reading is [`super::index_reader`]'s: it checks every length against the file and every
//! count against the bytes that could hold it, so a damaged or hostile file gives an
//! error, never a huge allocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use crate::labels::Labels;
use crate::storage::wal::record::{put_str, put_uvarint, put_varint};
use crate::storage::wal::segment::crc32c;

pub(crate) const MAGIC: u32 = 0xBAAA_D700;
/// The TOC: six 8-byte offsets and a CRC32C.
pub(crate) const TOC_LEN: usize = 6 * 8 + 4;
/// Largest index file read.
pub(crate) const MAX_INDEX: u64 = 4 << 30;

/// Where a chunk of a series is and what time it covers (both ends inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    pub r: u64,
}

/// One series of a block.
#[derive(Clone, Debug)]
pub(crate) struct IndexSeries {
    /// The series reference in the index read (`offset / 16`; ignored when writing).
    pub r: u64,
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// Appends `body` as a section: `len <4b>`, the body, CRC32C of the body.
fn put_section(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c(body).to_be_bytes());
}

/// Writes the index of `series` (sorted by labels) to `path`, fsynced; returns its size.
pub(crate) fn write_index(path: &Path, series: &[IndexSeries]) -> io::Result<u64> {
    let mut syms: BTreeSet<&str> = BTreeSet::new();
    for s in series {
        for (n, v) in s.labels.iter() {
            syms.insert(n);
            syms.insert(v);
        }
    }
    let sym_ref: HashMap<&str, u32> = syms
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i as u32))
        .collect();
    let mut out = Vec::with_capacity(64 << 10);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(2);
    let mut toc = [0u64; 6];
    toc[0] = out.len() as u64;
    let mut body = (syms.len() as u32).to_be_bytes().to_vec();
    for s in &syms {
        put_str(&mut body, s);
    }
    put_section(&mut out, &body);
    let ids = write_series(&mut out, series, &sym_ref, &mut toc[1])?;
    // Postings of every label pair, in name then value order.
    let mut postings: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for (s, &id) in series.iter().zip(&ids) {
        for (n, v) in s.labels.iter() {
            postings.entry((n, v)).or_default().push(id);
        }
    }
    write_label_indices(&mut out, &postings, &sym_ref, &mut toc);
    toc[4] = out.len() as u64;
    let mut offsets: Vec<(&str, &str, u64)> = Vec::with_capacity(postings.len() + 1);
    offsets.push(("", "", put_postings(&mut out, &ids)));
    for ((n, v), list) in &postings {
        offsets.push((n, v, put_postings(&mut out, list)));
    }
    toc[5] = out.len() as u64;
    let mut body = (offsets.len() as u32).to_be_bytes().to_vec();
    for (n, v, off) in &offsets {
        body.push(2);
        put_str(&mut body, n);
        put_str(&mut body, v);
        put_uvarint(&mut body, *off);
    }
    put_section(&mut out, &body);
    let toc_bytes: Vec<u8> = toc.iter().flat_map(|r| r.to_be_bytes()).collect();
    out.extend_from_slice(&toc_bytes);
    out.extend_from_slice(&crc32c(&toc_bytes).to_be_bytes());
    let mut f = std::fs::File::create(path)?;
    f.write_all(&out)?;
    f.sync_all()?;
    Ok(out.len() as u64)
}

/// Writes the series section; returns each series' reference.
fn write_series(
    out: &mut Vec<u8>,
    series: &[IndexSeries],
    sym_ref: &HashMap<&str, u32>,
    toc_series: &mut u64,
) -> io::Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(series.len());
    let mut body = Vec::new();
    for s in series {
        while out.len() % 16 != 0 {
            out.push(0);
        }
        if ids.is_empty() {
            *toc_series = out.len() as u64;
        }
        let id = u32::try_from(out.len() / 16)
            .map_err(|_| io::Error::other("index series section over 64 GiB"))?;
        ids.push(id);
        body.clear();
        put_uvarint(&mut body, s.labels.len() as u64);
        for (n, v) in s.labels.iter() {
            put_uvarint(&mut body, u64::from(sym_ref[n]));
            put_uvarint(&mut body, u64::from(sym_ref[v]));
        }
        put_uvarint(&mut body, s.chunks.len() as u64);
        let mut prev: Option<ChunkMeta> = None;
        for c in &s.chunks {
            match prev {
                None => {
                    put_varint(&mut body, c.mint);
                    put_uvarint(&mut body, (c.maxt - c.mint) as u64);
                    put_uvarint(&mut body, c.r);
                }
                Some(p) => {
                    put_uvarint(&mut body, (c.mint - p.maxt) as u64);
                    put_uvarint(&mut body, (c.maxt - c.mint) as u64);
                    put_varint(&mut body, c.r as i64 - p.r as i64);
                }
            }
            prev = Some(*c);
        }
        put_uvarint(out, body.len() as u64);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32c(&body).to_be_bytes());
    }
    Ok(ids)
}

/// One label index per name and the label offset table (kept for older readers).
fn write_label_indices(
    out: &mut Vec<u8>,
    postings: &BTreeMap<(&str, &str), Vec<u32>>,
    sym_ref: &HashMap<&str, u32>,
    toc: &mut [u64; 6],
) {
    let mut names: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (n, v) in postings.keys() {
        names.entry(n).or_default().push(sym_ref[v]);
    }
    let mut offsets = Vec::with_capacity(names.len());
    for (i, (name, values)) in names.iter().enumerate() {
        while out.len() % 4 != 0 {
            out.push(0);
        }
        if i == 0 {
            toc[2] = out.len() as u64;
        }
        offsets.push((*name, out.len() as u64));
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&(values.len() as u32).to_be_bytes());
        for v in values {
            body.extend_from_slice(&v.to_be_bytes());
        }
        put_section(out, &body);
    }
    toc[3] = out.len() as u64;
    let mut body = (offsets.len() as u32).to_be_bytes().to_vec();
    for (name, off) in offsets {
        body.push(1);
        put_str(&mut body, name);
        put_uvarint(&mut body, off);
    }
    put_section(out, &body);
}

/// Appends a postings list (4-byte aligned); returns its offset.
fn put_postings(out: &mut Vec<u8>, ids: &[u32]) -> u64 {
    while out.len() % 4 != 0 {
        out.push(0);
    }
    let off = out.len() as u64;
    let mut body = Vec::with_capacity(4 + 4 * ids.len());
    body.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        body.extend_from_slice(&id.to_be_bytes());
    }
    put_section(out, &body);
    off
}
