//! Chunk segment files of a block (`chunks/000001`, `000002`, …): an 8-byte header (magic
//! `0x85BD40DD`, version 1, three zero bytes), then chunks, each `len <uvarint>`,
//! `encoding <1 byte>`, `data <len bytes>`, `CRC32C(encoding, data) <4 bytes>`. A chunk is
//! referenced from the index by `segment sequence (from 0) << 32 | offset in the file`.
//!
//! Reading goes through `pread` on the open files: chunk data stays on disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::BlockError;
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

/// Reads chunks of a block's segment files by reference.
pub(crate) struct ChunkReader {
    files: Vec<(PathBuf, File, u64)>,
}

impl ChunkReader {
    /// Opens every segment of `chunks_dir`, checking their headers.
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
        let mut files = Vec::with_capacity(names.len());
        for (i, (n, path)) in names.into_iter().enumerate() {
            if n != i + 1 {
                return Err(err(
                    &path,
                    format!("segment sequence broken: expected {:06}", i + 1),
                ));
            }
            let f = File::open(&path).map_err(|e| err(&path, e.to_string()))?;
            let size = f.metadata().map_err(|e| err(&path, e.to_string()))?.len();
            let mut h = [0u8; HEADER];
            read_exact_at(&f, &mut h, 0).map_err(|e| err(&path, format!("header: {e}")))?;
            if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != MAGIC || h[4] != 1 {
                return Err(err(
                    &path,
                    "not a chunk segment (bad magic or version)".into(),
                ));
            }
            files.push((path, f, size));
        }
        Ok(ChunkReader { files })
    }

    /// Total size of the segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.2).sum()
    }

    /// The encoding and data of chunk `r`, checksum verified.
    pub(crate) fn read(&self, r: u64) -> Result<(u8, Vec<u8>), BlockError> {
        let (seq, off) = ((r >> 32) as usize, r & 0xffff_ffff);
        let Some((path, f, size)) = self.files.get(seq) else {
            return Err(BlockError::new(
                Path::new("chunks"),
                format!("chunk ref {r:#x}: no segment {}", seq + 1),
            ));
        };
        let err = |msg: String| BlockError::new(path, format!("chunk at offset {off}: {msg}"));
        if off < HEADER as u64 || off >= *size {
            return Err(err(format!("offset outside the file of {size} bytes")));
        }
        // One read covers the length, encoding, data and checksum of a typical chunk (120
        // samples take a few hundred bytes at most); a longer one takes a second read.
        let mut buf = vec![0u8; (size - off).min(SPECULATIVE_READ) as usize];
        read_exact_at(f, &mut buf, off).map_err(|e| err(e.to_string()))?;
        let (len, used) =
            uvarint(&buf[..buf.len().min(10)]).ok_or_else(|| err("bad length".into()))?;
        if len > MAX_CHUNK {
            return Err(err(format!(
                "length {len} over the limit of {MAX_CHUNK} bytes"
            )));
        }
        let total = used as u64 + 1 + len + 4;
        if off + total > *size {
            return Err(err(format!("length {len} runs past the end of the file")));
        }
        let have = buf.len();
        buf.resize(total as usize, 0);
        if (have as u64) < total {
            read_exact_at(f, &mut buf[have..], off + have as u64)
                .map_err(|e| err(e.to_string()))?;
        }
        let body = &buf[used..used + 1 + len as usize];
        let want = u32::from_be_bytes(buf[buf.len() - 4..].try_into().unwrap_or([0; 4]));
        if crc32c(body) != want {
            return Err(err("checksum mismatch".into()));
        }
        let enc = body[0];
        // The data in place: drop the length in front and the checksum behind.
        buf.truncate(used + 1 + len as usize);
        buf.drain(..used + 1);
        Ok((enc, buf))
    }
}

/// Bytes read at once for a chunk (its length is not known before the read).
const SPECULATIVE_READ: u64 = 512;

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

#[cfg(unix)]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, off)
}

#[cfg(not(unix))]
fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = f.try_clone()?;
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(buf)
}
