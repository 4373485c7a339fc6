//! Chunk segment files of a block (`chunks/000001`, `000002`, …): an 8-byte header (magic
//! `0x85BD40DD`, version 1, three zero bytes), then chunks, each `len <uvarint>`,
//! `encoding <1 byte>`, `data <len bytes>`, `CRC32C(encoding, data) <4 bytes>`. A chunk is
//! referenced from the index by `segment sequence (from 0) << 32 | offset in the file`.
//!
//! Reading maps the files into memory ([`ChunkReader`]): chunk data stays in the page cache.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::BlockError;
use super::mapping::Mapping;
use crate::storage::wal::segment::crc32c;

const MAGIC: u32 = 0x85BD_40DD;
const HEADER: usize = 8;
/// Largest segment file written (Prometheus's 512 MiB).
pub(crate) const MAX_SEGMENT: u64 = 512 << 20;
/// Largest chunk accepted when reading: a 65,535-sample XOR chunk stays well under it.
pub(crate) const MAX_CHUNK: u64 = 4 << 20;
/// Most segment files a block may have (2 TiB of chunks).
const MAX_SEGMENTS: usize = 4096;

/// The path of segment `seq` (0-based) in `chunks_dir`.
fn segment_path(chunks_dir: &Path, seq: usize) -> PathBuf {
    chunks_dir.join(format!("{:06}", seq + 1))
}

/// Writes a block's chunk segments.
pub(crate) struct ChunkWriter {
    dir: PathBuf,
    file: Option<io::BufWriter<File>>,
    seq: usize,
    offset: u64,
    /// Bytes written, headers included.
    pub(crate) bytes: u64,
}

impl ChunkWriter {
    /// Writes into `chunks_dir` (created).
    pub(crate) fn new(chunks_dir: &Path) -> io::Result<ChunkWriter> {
        std::fs::create_dir_all(chunks_dir)?;
        Ok(ChunkWriter {
            dir: chunks_dir.to_path_buf(),
            file: None,
            seq: 0,
            offset: 0,
            bytes: 0,
        })
    }

    fn open_segment(&mut self) -> io::Result<()> {
        self.finish_segment()?;
        let seq = if self.offset == 0 {
            self.seq
        } else {
            self.seq + 1
        };
        let mut f =
            io::BufWriter::with_capacity(1 << 20, File::create(segment_path(&self.dir, seq))?);
        f.write_all(&MAGIC.to_be_bytes())?;
        f.write_all(&[1, 0, 0, 0])?;
        self.file = Some(f);
        self.seq = seq;
        self.offset = HEADER as u64;
        self.bytes += HEADER as u64;
        Ok(())
    }

    /// Appends one chunk; returns its reference.
    pub(crate) fn write(&mut self, encoding: u8, data: &[u8]) -> io::Result<u64> {
        let mut head = [0u8; 11];
        let mut n = 0;
        let mut len = data.len() as u64;
        while len >= 0x80 {
            head[n] = (len as u8) | 0x80;
            len >>= 7;
            n += 1;
        }
        head[n] = len as u8;
        head[n + 1] = encoding;
        let total = (n + 2 + data.len() + 4) as u64;
        if self.file.is_none() || self.offset + total > MAX_SEGMENT {
            self.open_segment()?;
        }
        let crc = crc32c_parts(&[&head[n + 1..n + 2], data]);
        let r = ((self.seq as u64) << 32) | self.offset;
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        f.write_all(&head[..n + 2])?;
        f.write_all(data)?;
        f.write_all(&crc.to_be_bytes())?;
        self.offset += total;
        self.bytes += total;
        Ok(r)
    }

    fn finish_segment(&mut self) -> io::Result<()> {
        if let Some(f) = self.file.take() {
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the last segment.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        self.finish_segment()?;
        Ok(self.bytes)
    }
}

/// CRC32C of parts laid end to end.
fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        buf.extend_from_slice(p);
    }
    crc32c(&buf)
}

/// Reads chunks of a block's segment files by reference, as slices of the files mapped
/// into memory (as Prometheus does): no system call, copy or allocation per chunk.
///
/// The mappings live as long as the reader, which lives as long as its [`Block`](super::Block):
/// a query holding an `Arc` of a block that retention or compaction deletes meanwhile
/// keeps reading the mapped pages (unlinking a file leaves its mappings valid; the space
/// is freed when the last one goes).
///
/// Caveat, accepted as Prometheus accepts it: if a segment file is *truncated* (not
/// deleted) underneath a live mapping, by another program or a disk error, touching the
/// pages past its new end raises `SIGBUS` and the process dies. Lookout never truncates or
/// rewrites a block's files (blocks are written to a temporary directory, renamed into
/// place, and only ever deleted whole), so this takes an outside actor. A file that was
/// already short or damaged when the block was opened is harmless: every chunk reference
/// is checked against the mapped length and every chunk against its checksum.
pub(crate) struct ChunkReader {
    segments: Vec<(PathBuf, Mapping)>,
}

impl ChunkReader {
    /// Opens and maps every segment of `chunks_dir`, checking their headers.
    pub(crate) fn open(chunks_dir: &Path) -> Result<ChunkReader, BlockError> {
        let err = |p: &Path, msg: String| BlockError::new(p, msg);
        let mut names: Vec<(usize, PathBuf)> = Vec::new();
        let rd = std::fs::read_dir(chunks_dir).map_err(|e| err(chunks_dir, e.to_string()))?;
        for entry in rd {
            let entry = entry.map_err(|e| err(chunks_dir, e.to_string()))?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|s| s.parse::<usize>().ok()) else {
                continue;
            };
            if names.len() >= MAX_SEGMENTS {
                return Err(err(
                    chunks_dir,
                    format!("more than {MAX_SEGMENTS} segment files"),
                ));
            }
            names.push((n, entry.path()));
        }
        names.sort();
        let mut segments = Vec::with_capacity(names.len());
        for (i, (n, path)) in names.into_iter().enumerate() {
            if n != i + 1 {
                return Err(err(
                    &path,
                    format!("segment sequence broken: expected {:06}", i + 1),
                ));
            }
            let f = File::open(&path).map_err(|e| err(&path, e.to_string()))?;
            let size = f.metadata().map_err(|e| err(&path, e.to_string()))?.len();
            if size < HEADER as u64 {
                return Err(err(&path, format!("header: file of {size} bytes")));
            }
            let map = Mapping::of(&f, size).map_err(|e| err(&path, format!("mmap: {e}")))?;
            let h = &map.bytes()[..HEADER];
            if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != MAGIC || h[4] != 1 {
                return Err(err(
                    &path,
                    "not a chunk segment (bad magic or version)".into(),
                ));
            }
            segments.push((path, map));
        }
        Ok(ChunkReader { segments })
    }

    /// Total size of the segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1.bytes().len() as u64).sum()
    }

    /// The encoding and data of chunk `r`, checksum verified (as Prometheus's chunk reader
    /// does on every read; the CRC32C runs on the CPU's instruction where there is one).
    pub(crate) fn read(&self, r: u64) -> Result<(u8, &[u8]), BlockError> {
        let (seq, off) = ((r >> 32) as usize, (r & 0xffff_ffff) as usize);
        let Some((path, map)) = self.segments.get(seq) else {
            return Err(BlockError::new(
                Path::new("chunks"),
                format!("chunk ref {r:#x}: no segment {}", seq + 1),
            ));
        };
        let file = map.bytes();
        let size = file.len();
        let err = |msg: String| BlockError::new(path, format!("chunk at offset {off}: {msg}"));
        if off < HEADER || off >= size {
            return Err(err(format!("offset outside the file of {size} bytes")));
        }
        let rest = &file[off..];
        let (len, used) =
            uvarint(&rest[..rest.len().min(10)]).ok_or_else(|| err("bad length".into()))?;
        if len > MAX_CHUNK {
            return Err(err(format!(
                "length {len} over the limit of {MAX_CHUNK} bytes"
            )));
        }
        // `len` is at most MAX_CHUNK: no overflow.
        let body_end = used + 1 + len as usize;
        let (Some(body), Some(sum)) = (rest.get(used..body_end), rest.get(body_end..body_end + 4))
        else {
            return Err(err(format!("length {len} runs past the end of the file")));
        };
        if crc32c(body).to_be_bytes() != sum {
            return Err(err("checksum mismatch".into()));
        }
        Ok((body[0], &body[1..]))
    }
}

/// An unsigned varint at the start of `b`: the value and the bytes it took.
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes chunks of 1, 2, … 40 bytes into `dir`; returns their references and data.
    fn write_chunks(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let mut w = ChunkWriter::new(dir).expect("writer");
        let chunks: Vec<(u64, Vec<u8>)> = (1..=40u8)
            .map(|n| {
                let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(n)).collect();
                (w.write(1, &data).expect("write"), data)
            })
            .collect();
        w.finish().expect("finish");
        chunks
    }

    #[test]
    fn chunks_read_back_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = write_chunks(dir.path());
        let r = ChunkReader::open(dir.path()).expect("open");
        for (cref, data) in &chunks {
            assert_eq!(r.read(*cref).expect("read"), (1, &data[..]));
        }
    }

    #[test]
    fn a_truncated_segment_gives_errors_past_its_end_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = write_chunks(dir.path());
        let seg = segment_path(dir.path(), 0);
        let full = std::fs::metadata(&seg).expect("stat").len();
        // Cut every few bytes: inside a length, the data and the checksum.
        for cut in (HEADER as u64..full).step_by(7) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&seg)
                .expect("open");
            f.set_len(cut).expect("truncate");
            drop(f);
            let r = ChunkReader::open(dir.path()).expect("open");
            for (cref, data) in &chunks {
                let off = cref & 0xffff_ffff;
                let end = off + 1 + 1 + data.len() as u64 + 4;
                match r.read(*cref) {
                    Ok(got) => {
                        assert!(end <= cut, "read past the cut at {cut}");
                        assert_eq!(got, (1, &data[..]));
                    }
                    Err(e) => assert!(end > cut, "chunk within the cut at {cut} refused: {e}"),
                }
            }
            // References nowhere: past the file, in the header, in a missing segment.
            for bad in [cut, cut + 1000, 0, 3, (1 << 32) | 8, u64::MAX] {
                assert!(r.read(bad).is_err(), "ref {bad:#x} at cut {cut}");
            }
            // Rewrite the whole file for the next cut.
            std::fs::remove_file(&seg).expect("rm");
            write_chunks(dir.path());
        }
        // A file shorter than its header is refused at open.
        std::fs::write(&seg, [0x85, 0xbd]).expect("write");
        assert!(ChunkReader::open(dir.path()).is_err());
    }

    #[test]
    fn a_length_running_past_the_end_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_chunks(dir.path());
        let seg = segment_path(dir.path(), 0);
        let mut bytes = std::fs::read(&seg).expect("read");
        // The first chunk's length: a 10-byte varint of the largest value, then garbage.
        bytes[HEADER..HEADER + 10].fill(0xff);
        std::fs::write(&seg, &bytes).expect("write");
        let r = ChunkReader::open(dir.path()).expect("open");
        assert!(r.read(HEADER as u64).is_err());
        // Under the limit, but past the end of the file.
        let n: u64 = (1 << 20) + 5;
        let v = [(n as u8) | 0x80, ((n >> 7) as u8) | 0x80, (n >> 14) as u8];
        assert!(n < MAX_CHUNK && n >> 21 == 0);
        bytes[HEADER..HEADER + 3].copy_from_slice(&v);
        std::fs::write(&seg, &bytes).expect("write");
        let r = ChunkReader::open(dir.path()).expect("open");
        let e = r.read(HEADER as u64).expect_err("past the end");
        assert!(e.msg.contains("past the end"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_mapped_segment_stays_readable_after_its_file_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = write_chunks(dir.path());
        let r = ChunkReader::open(dir.path()).expect("open");
        std::fs::remove_dir_all(dir.path()).expect("rm");
        for (cref, data) in &chunks {
            assert_eq!(r.read(*cref).expect("read"), (1, &data[..]));
        }
    }
}
