//! Segment files in Prometheus's WAL format (`tsdb/docs/format/wal.md`): files named by an
//! eight-digit sequence number, made of 32 KiB pages. A record is written as one or more
//! fragments, never across a page's end and never across segments; each fragment has a
//! 7-byte header: a type byte (low three bits full 1 / first 2 / middle 3 / last 4, bit 3
//! set when the record is snappy-compressed), the fragment's length as a big-endian `u16`
//! and the CRC32 (Castagnoli) of its bytes as a big-endian `u32`. When fewer than 7 bytes
//! are left in a page, the rest of the page is zeros; a closed segment is padded to a
//! whole page.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes per page.
pub const PAGE_SIZE: usize = 32 * 1024;
/// Bytes of a fragment header.
pub const HEADER_SIZE: usize = 7;
/// Prometheus's default segment size.
pub const DEFAULT_SEGMENT_SIZE: usize = 128 * 1024 * 1024;
const SNAPPY_FLAG: u8 = 0x08;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82f6_3b78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC32 with the Castagnoli polynomial, as Go's `crc32.Checksum(b, castagnoliTable)`:
/// with the SSE 4.2 `crc32` instruction where the CPU has it (as Go does; 8 bytes a step),
/// else a byte at a time from a table. Block chunks are checked on every query read.
pub fn crc32c(bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE 4.2 (checked just above).
        return !unsafe { crc32c_sse42(!0, bytes) };
    }
    !crc32c_table(!0, bytes)
}

fn crc32c_table(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

/// # Safety
/// The CPU must have SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
// The intrinsics are safe to call here from Rust 1.87 on, unsafe before (the MSRV).
#[allow(unused_unsafe)]
unsafe fn crc32c_sse42(c: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut words = bytes.chunks_exact(8);
    let mut c = u64::from(c);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        // SAFETY: the caller guarantees SSE 4.2.
        c = unsafe { _mm_crc32_u64(c, u64::from_le_bytes(b)) };
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        // SAFETY: as above.
        c = unsafe { _mm_crc32_u8(c, b) };
    }
    c
}

/// The path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}"))
}

/// The segment numbers in `dir`, ascending (files whose name is all digits).
pub fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(n) = name.parse::<u32>()
            && entry.file_type()?.is_file()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes records into one segment file, page by page.
pub struct SegmentWriter {
    /// The segment's number.
    pub index: u32,
    file: File,
    page: Box<[u8]>,
    /// Bytes of the page in use.
    alloc: usize,
    /// Bytes of the page already written to the file.
    flushed: usize,
    /// Pages completed in this segment.
    done_pages: usize,
    pages_per_segment: usize,
}

impl SegmentWriter {
    /// Creates segment `index` in `dir` (an existing file of that name is truncated).
    pub fn create(dir: &Path, index: u32, segment_size: usize) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(segment_path(dir, index))?;
        Ok(SegmentWriter {
            index,
            file,
            page: vec![0; PAGE_SIZE].into_boxed_slice(),
            alloc: 0,
            flushed: 0,
            done_pages: 0,
            pages_per_segment: (segment_size / PAGE_SIZE).max(1),
        })
    }

    /// Bytes written and buffered.
    pub fn size(&self) -> usize {
        self.done_pages * PAGE_SIZE + self.alloc
    }

    fn page_full(&self) -> bool {
        PAGE_SIZE - self.alloc < HEADER_SIZE
    }

    /// Whether a record of `len` bytes (after compression) still fits in this segment.
    pub fn fits(&self, len: usize) -> bool {
        let left_pages = self.pages_per_segment.saturating_sub(self.done_pages + 1);
        let left = (PAGE_SIZE - self.alloc).saturating_sub(HEADER_SIZE)
            + (PAGE_SIZE - HEADER_SIZE) * left_pages;
        len <= left
    }

    /// Writes the page's unwritten bytes; with `pad`, or when the page is full, the page
    /// is completed with zeros and a new one started.
    fn flush_page(&mut self, pad: bool) -> io::Result<()> {
        let clear = pad || self.page_full();
        if clear {
            self.alloc = PAGE_SIZE;
        }
        self.file.write_all(&self.page[self.flushed..self.alloc])?;
        self.flushed = self.alloc;
        if clear {
            self.page.fill(0);
            self.alloc = 0;
            self.flushed = 0;
            self.done_pages += 1;
        }
        Ok(())
    }

    /// Writes one record (already compressed when `compressed`) as fragments and hands
    /// the bytes to the operating system. The caller checks [`SegmentWriter::fits`]
    /// first: records never cross segments.
    pub fn log(&mut self, rec: &[u8], compressed: bool) -> io::Result<()> {
        if self.page_full() {
            self.flush_page(true)?;
        }
        let mut rest = rec;
        let mut first = true;
        loop {
            let room = PAGE_SIZE - self.alloc - HEADER_SIZE;
            let n = rest.len().min(room);
            let (part, tail) = rest.split_at(n);
            let mut typ = match (first, tail.is_empty()) {
                (true, true) => FULL,
                (false, true) => LAST,
                (true, false) => FIRST,
                (false, false) => MIDDLE,
            };
            if compressed {
                typ |= SNAPPY_FLAG;
            }
            let h = &mut self.page[self.alloc..self.alloc + HEADER_SIZE];
            h[0] = typ;
            h[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            h[3..7].copy_from_slice(&crc32c(part).to_be_bytes());
            self.page[self.alloc + HEADER_SIZE..self.alloc + HEADER_SIZE + n].copy_from_slice(part);
            self.alloc += HEADER_SIZE + n;
            rest = tail;
            first = false;
            if self.page_full() {
                self.flush_page(true)?;
            }
            if rest.is_empty() {
                break;
            }
        }
        // Everything logged reaches the operating system at once: a killed process loses
        // nothing it wrote, only a machine crash loses what was not yet synced.
        if self.alloc > self.flushed {
            self.flush_page(false)?;
        }
        Ok(())
    }

    /// Flushes file data to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Pads the last page with zeros and syncs: the segment is complete.
    pub fn close(mut self) -> io::Result<()> {
        if self.alloc > 0 {
            self.flush_page(true)?;
        }
        self.file.sync_all()
    }
}

/// Compresses `rec` into `buf` with snappy when that makes it smaller, as Prometheus does;
/// returns whether `buf` holds the record (compressed) rather than `rec`.
pub fn compress(enc: &mut snap::raw::Encoder, rec: &[u8], buf: &mut Vec<u8>) -> bool {
    buf.resize(snap::raw::max_compress_len(rec.len()), 0);
    if buf.is_empty() {
        return false;
    }
    match enc.compress(rec, buf) {
        Ok(n) if n < rec.len() => {
            buf.truncate(n);
            true
        }
        _ => false,
    }
}

/// Where and why reading a segment stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// Byte offset in the segment of the first record not read whole: everything before
    /// it is good.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Largest record accepted after decompression: a corrupt length cannot make the reader
/// allocate more.
const MAX_RECORD: usize = DEFAULT_SEGMENT_SIZE;

/// Reads the records of one segment in order, calling `f` with each (decompressed)
/// record. Stops at the first corruption (bad CRC, torn or invalid fragment, broken
/// compression) and returns where the good part ends; `Ok(None)` when the whole file is
/// well-formed. I/O errors are returned as errors.
pub fn read_segment(path: &Path, mut f: impl FnMut(&[u8])) -> io::Result<Option<Corruption>> {
    let mut file = File::open(path)?;
    let mut page = vec![0u8; PAGE_SIZE];
    let mut rec: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut dec = snap::raw::Decoder::new();
    // Offset of the first fragment of the record being assembled.
    let mut rec_start: Option<u64> = None;
    let mut compressed = false;
    let mut page_no: u64 = 0;
    loop {
        let filled = read_full(&mut file, &mut page)?;
        if filled == 0 {
            break;
        }
        let base = page_no * PAGE_SIZE as u64;
        let mut pos = 0usize;
        let corrupt = |pos: usize, start: Option<u64>, reason: String| {
            Ok(Some(Corruption {
                offset: start.unwrap_or(base + pos as u64),
                reason,
            }))
        };
        while pos < filled {
            let typ = page[pos];
            if typ == 0 {
                // The rest of the page is padding and must be zeros.
                if page[pos..filled].iter().any(|&b| b != 0) {
                    return corrupt(pos, rec_start, "non-zero bytes in page padding".into());
                }
                break;
            }
            if filled - pos < HEADER_SIZE {
                return corrupt(pos, rec_start, "torn fragment header".into());
            }
            let len = usize::from(u16::from_be_bytes([page[pos + 1], page[pos + 2]]));
            let crc = u32::from_be_bytes(page[pos + 3..pos + 7].try_into().expect("4 bytes"));
            if pos + HEADER_SIZE + len > PAGE_SIZE {
                return corrupt(pos, rec_start, format!("invalid fragment length {len}"));
            }
            if pos + HEADER_SIZE + len > filled {
                return corrupt(pos, rec_start, "torn fragment".into());
            }
            let data = &page[pos + HEADER_SIZE..pos + HEADER_SIZE + len];
            if crc32c(data) != crc {
                return corrupt(pos, rec_start, "checksum mismatch".into());
            }
            let kind = typ & !SNAPPY_FLAG;
            match (kind, rec_start.is_some()) {
                (FULL | FIRST, false) => {
                    rec_start = Some(base + pos as u64);
                    compressed = typ & SNAPPY_FLAG != 0;
                    rec.clear();
                }
                (MIDDLE | LAST, true) => {}
                (FULL | FIRST, true) => {
                    return corrupt(pos, rec_start, "record started inside another".into());
                }
                (MIDDLE | LAST, false) => {
                    return corrupt(pos, rec_start, "record continued without a start".into());
                }
                _ => return corrupt(pos, rec_start, format!("invalid fragment type {typ}")),
            }
            if rec.len() + len > MAX_RECORD {
                return corrupt(pos, rec_start, "record too large".into());
            }
            rec.extend_from_slice(data);
            pos += HEADER_SIZE + len;
            if kind == FULL || kind == LAST {
                if compressed {
                    let n = match snap::raw::decompress_len(&rec) {
                        Ok(n) if n <= MAX_RECORD && n <= rec.len().saturating_mul(64) + 64 => n,
                        _ => {
                            return corrupt(pos, rec_start, "invalid snappy length".into());
                        }
                    };
                    out.resize(n, 0);
                    if dec.decompress(&rec, &mut out).is_err() {
                        return corrupt(pos, rec_start, "invalid snappy data".into());
                    }
                    f(&out);
                } else {
                    f(&rec);
                }
                rec_start = None;
            }
        }
        if filled < PAGE_SIZE {
            break;
        }
        page_no += 1;
    }
    match rec_start {
        Some(start) => Ok(Some(Corruption {
            offset: start,
            reason: "last record torn".into(),
        })),
        None => Ok(None),
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn crc32c_with_the_cpu_instruction_matches_the_table() {
        let bytes: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..9 {
            for end in (start..bytes.len()).step_by(37).chain([bytes.len()]) {
                let b = &bytes[start..end];
                assert_eq!(crc32c(b), !crc32c_table(!0, b), "{start}..{end}");
            }
        }
    }

    fn records_of(path: &Path) -> (Vec<Vec<u8>>, Option<Corruption>) {
        let mut recs = Vec::new();
        let c = read_segment(path, |r| recs.push(r.to_vec())).unwrap();
        (recs, c)
    }

    #[test]
    fn records_of_every_size_round_trip_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, DEFAULT_SEGMENT_SIZE).unwrap();
        let mut enc = snap::raw::Encoder::new();
        let mut buf = Vec::new();
        let mut want = Vec::new();
        let mut x = 12345u64;
        for i in 0..200usize {
            let len = [
                0,
                1,
                6,
                7,
                PAGE_SIZE - 7,
                PAGE_SIZE,
                3 * PAGE_SIZE + 5,
                i * 97,
            ][i % 8];
            let rec: Vec<u8> = (0..len)
                .map(|j| {
                    if i % 2 == 0 {
                        (j % 7) as u8
                    } else {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (x >> 56) as u8
                    }
                })
                .collect();
            if compress(&mut enc, &rec, &mut buf) {
                w.log(&buf, true).unwrap();
            } else {
                w.log(&rec, false).unwrap();
            }
            want.push(rec);
        }
        let size = w.size();
        w.close().unwrap();
        let path = segment_path(dir.path(), 0);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize % PAGE_SIZE,
            0
        );
        assert!(size > 0);
        let (got, c) = records_of(&path);
        assert_eq!(c, None);
        assert_eq!(got, want);
    }

    #[test]
    fn a_torn_or_flipped_tail_stops_at_the_last_good_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 0, DEFAULT_SEGMENT_SIZE).unwrap();
        let rec = vec![42u8; 50_000];
        w.log(b"hello", false).unwrap();
        w.log(&rec, false).unwrap();
        drop(w);
        let path = segment_path(dir.path(), 0);
        let full = std::fs::read(&path).unwrap();
        // Torn anywhere inside the second record: the first survives, the cut is at 12.
        for cut in [13, 20, PAGE_SIZE, PAGE_SIZE + 10, full.len() - 1] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (got, c) = records_of(&path);
            assert_eq!(got, vec![b"hello".to_vec()], "cut {cut}");
            assert_eq!(c.unwrap().offset, 12, "cut {cut}");
        }
        // A flipped bit in the data: checksum mismatch.
        let mut bad = full.clone();
        bad[PAGE_SIZE + 100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (got, c) = records_of(&path);
        assert_eq!(got.len(), 1);
        let c = c.unwrap();
        assert_eq!((c.offset, c.reason.as_str()), (12, "checksum mismatch"));
        // Garbage of every kind never panics.
        let mut x = 99u64;
        for round in 0..200 {
            let mut g = full.clone();
            for _ in 0..(round % 5 + 1) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (x >> 33) as usize % g.len();
                g[at] = (x >> 20) as u8;
            }
            std::fs::write(&path, &g).unwrap();
            let _ = records_of(&path);
        }
    }
}
