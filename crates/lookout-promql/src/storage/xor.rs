//! Gorilla-style chunk compression: delta-of-delta timestamps and XOR'd float values, the
//! scheme of Prometheus's XOR chunks (same timestamp buckets, millisecond timestamps), plus
//! an integer-step mode for values.
//!
//! Written by hand rather than taken from a crate: `tsz` (last released 2017) encodes
//! second-resolution `u64` timestamps and must be `close()`d before it can be read, so an
//! open head chunk could not be queried without copying it; `gortsz` needs a nightly
//! compiler and stores `f32`; `tsz-compress` handles integers only. The format here is
//! small (a bit writer, a bit reader, an encoder and an iterator) and is tested by round
//! trips of random series, NaN payloads and stale markers included (values are compared
//! by their bits, so every NaN survives unchanged).
//!
//! Layout of one chunk's bit stream:
//! * first sample: timestamp as zig-zag varint, value as 64 raw bits;
//! * second sample: delta as zig-zag varint, value XOR-encoded;
//! * later samples: delta-of-delta in buckets `0` | `10`+14 bits | `110`+17 bits |
//!   `1110`+20 bits | `1111`+64 bits, value XOR-encoded.
//!
//! A value is written against the previous one:
//! * `0`: the same bits;
//! * `11` and an integer step, when both values are integers (|v| ≤ 2^53) and the step
//!   gives back the exact bits: `0`+8 bits, `10`+16 bits or `11`+32 bits, two's
//!   complement. This is an addition to Prometheus's format: counters and integer gauges,
//!   most of what exporters publish, change by small integers, which cost 11 bits this way
//!   against 14 to 20 bits of XOR;
//! * `10` and the XOR with the previous value: `0` and the meaningful bits inside the
//!   previous leading/trailing-zero window when they fit, or `1`, 5 bits of leading zeros,
//!   6 bits of meaningful-bit count (64 written as 0) and those bits.

/// A sink of bits, most significant bit first: [`BitWriter`] over a growing `Vec` (block
/// chunks), [`HeadWriter`] over the open head chunk's boxed buffer. Both write through
/// [`or_bits`]; the varints are written the same way for both.
pub(crate) trait WriteBits {
    /// Writes the low `n` bits of `v` (n ≤ 64).
    fn write_bits(&mut self, v: u64, n: u8);

    fn write_bit(&mut self, bit: bool) {
        self.write_bits(bit as u64, 1);
    }

    /// A varint as Go's `binary.PutUvarint` writes it, a byte (8 bits) per 7 bits of `v`.
    fn write_uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.write_bits((v & 0x7f) | 0x80, 8);
            v >>= 7;
        }
        self.write_bits(v, 8);
    }

    /// A zig-zag varint, as Go's `binary.PutVarint`.
    fn write_varint(&mut self, v: i64) {
        self.write_uvarint(((v << 1) ^ (v >> 63)) as u64);
    }
}

/// ORs the low `n` bits of `v` (n ≤ 64) into `buf` at bit `pos`, most significant first, a
/// byte at a time; `buf` holds at least `(pos + n).div_ceil(8)` bytes, and its bits from
/// `pos` on are zeros.
fn or_bits(buf: &mut [u8], mut pos: usize, v: u64, mut n: u8) {
    while n > 0 {
        let free = 8 - (pos % 8) as u8;
        let take = n.min(free);
        // The `take` bits of v just below bit n.
        let chunk = ((v >> (n - take)) & ((1u64 << take) - 1)) as u8;
        buf[pos / 8] |= chunk << (free - take);
        pos += usize::from(take);
        n -= take;
    }
}

/// Appends bits to a byte buffer, most significant bit first.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    /// Free bits left in the last byte (0..=7; 0 means the next bit opens a new byte).
    free: u8,
}

impl BitWriter {
    /// The bytes written so far (the last one zero-padded).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Overwrites the first bytes written (a count patched in place as samples come).
    pub(crate) fn set_first_bytes<const N: usize>(&mut self, bytes: [u8; N]) {
        if let Some(head) = self.buf.get_mut(..N) {
            head.copy_from_slice(&bytes);
        }
    }

    /// Bytes allocated for the buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

impl WriteBits for BitWriter {
    fn write_bits(&mut self, v: u64, n: u8) {
        let pos = self.buf.len() * 8 - usize::from(self.free);
        let end = pos + usize::from(n);
        self.buf.resize(end.div_ceil(8), 0);
        or_bits(&mut self.buf, pos, v, n);
        self.free = (self.buf.len() * 8 - end) as u8;
    }
}

/// Reads bits written by [`BitWriter`].
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> BitReader<'a> {
        BitReader { buf, pos: 0 }
    }

    /// The 64 bits starting at byte `i` (zeros past the end), most significant first.
    #[inline]
    fn word_at(&self, i: usize) -> u64 {
        match self.buf.get(i..i + 8) {
            Some(b) => u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            None => {
                let mut b = [0u8; 8];
                let tail = self.buf.get(i..).unwrap_or(&[]);
                b[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(b)
            }
        }
    }

    /// The next bits, most significant first: at least 57 of them are the stream's
    /// (zeros past its end).
    #[inline]
    pub(crate) fn peek(&self) -> u64 {
        self.word_at(self.pos / 8) << (self.pos % 8)
    }

    #[inline]
    pub(crate) fn skip(&mut self, n: u32) {
        self.pos += n as usize;
    }

    /// Bits left to read (0 once past the end).
    pub(crate) fn remaining_bits(&self) -> usize {
        (self.buf.len() * 8).saturating_sub(self.pos)
    }

    /// Whether reads went past the end of the stream.
    #[inline]
    pub(crate) fn past_end(&self) -> bool {
        self.pos > self.buf.len() * 8
    }

    /// Reads `n` bits (n ≤ 64); `None` past the end of the stream.
    #[inline]
    pub(crate) fn read_bits(&mut self, n: u8) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if n > 56 {
            let hi = self.read_bits(n - 32)?;
            let lo = self.read_bits(32)?;
            return Some((hi << 32) | lo);
        }
        let end = self.pos + n as usize;
        if end > self.buf.len() * 8 {
            return None;
        }
        // With at most 7 bits skipped at the front, one 64-bit word holds all n ≤ 56 bits.
        let word = self.word_at(self.pos / 8) << (self.pos % 8);
        self.pos = end;
        Some(word >> (64 - n as u32))
    }

    pub(crate) fn read_uvarint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        let mut shift = 0u32;
        loop {
            let byte = self.read_bits(8)?;
            if shift >= 64 {
                return None;
            }
            out |= (byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(out);
            }
            shift += 7;
        }
    }

    pub(crate) fn read_varint(&mut self) -> Option<i64> {
        let u = self.read_uvarint()?;
        Some((u >> 1) as i64 ^ -((u & 1) as i64))
    }
}

/// Encodes samples into one chunk.
///
/// Every series holds one open, so the fields are laid out to keep it at 56 bytes: the bit
/// stream is a boxed slice (its length is the capacity) with the bits written counted
/// apart, which gives both the bytes in use and the free bits of the last one (a `Vec` and
/// a free-bit count took 32 bytes); the number of checkpoints follows from the sample
/// count, and the checkpoints are boxed when the first one is taken (a chunk of fewer than
/// [`CHECKPOINT_EVERY`] samples pays one pointer for them, not 96 bytes).
#[derive(Clone, Debug)]
pub(crate) struct XorEncoder {
    /// The bit stream: the first `bits.div_ceil(8)` bytes are the chunk's (the last one
    /// zero-padded), the rest zeros that [`HeadWriter`] fills.
    buf: Box<[u8]>,
    t: i64,
    /// Difference of the last two timestamps, from the second sample on. In an empty
    /// chunk, not 0 when `t` and `v` hold a sample from before it (see
    /// [`XorEncoder::carrying`]): nothing else reads it before the second sample sets it.
    delta: i64,
    v: u64,
    /// Decoder states every [`CHECKPOINT_EVERY`] samples, so that reading the newest
    /// samples of the open chunk (what alert rules ask for) does not decode it all; the
    /// first [`XorEncoder::checkpoints`] are set.
    checkpoints: Option<Box<[Checkpoint; CHECKPOINTS]>>,
    /// Bits written: fewer than 2^32 (see [`MAX_SAMPLE_BITS`]).
    bits: u32,
    count: u16,
    leading: u8,
    trailing: u8,
}

/// Samples between two checkpoints of the open chunk.
pub(crate) const CHECKPOINT_EVERY: u16 = 30;
const CHECKPOINTS: usize = 3;

/// The most bits one sample takes: a first sample 10 bytes of varint and 64 bits, a second
/// 10 bytes of varint and a value, a later one 68 bits of timestamp and a value; a value at
/// most 78 bits (`10`, `1`, 5 + 6 bits of window and 64 meaningful bits).
const MAX_SAMPLE_BITS: u64 = 80 + 78;

// A chunk holds at most `u16::MAX` samples (its count is a `u16`), so its bit count fits
// in [`XorEncoder::bits`].
const _: () = assert!(u16::MAX as u64 * MAX_SAMPLE_BITS < u32::MAX as u64);

/// The decoder's state before sample `read` of a chunk.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Checkpoint {
    /// Bit position of sample `read`.
    pos: u32,
    read: u16,
    leading: u8,
    trailing: u8,
    /// Timestamp of sample `read - 1`: every sample before the checkpoint is at or
    /// before it.
    t: i64,
    delta: i64,
    v: u64,
}

/// Appends bits to [`XorEncoder::buf`], most significant bit first, as [`BitWriter`] does
/// to a `Vec`: the bytes past the position are zeros, so a write ORs its bits in.
struct HeadWriter {
    buf: Box<[u8]>,
    /// Position in bits.
    pos: usize,
}

impl WriteBits for HeadWriter {
    #[inline]
    fn write_bits(&mut self, v: u64, n: u8) {
        let end = self.pos + usize::from(n);
        if end > self.buf.len() * 8 {
            self.grow(end.div_ceil(8));
        }
        let (i, skip, n32) = (self.pos / 8, (self.pos % 8) as u32, u32::from(n));
        // Most writes: one 64-bit word read, ORed and written back (the bits past the
        // stream are zeros).
        if n > 0
            && skip + n32 <= 64
            && let Some(word) = self.buf.get_mut(i..).and_then(|b| b.first_chunk_mut::<8>())
        {
            let bits = u64::from_be_bytes(*word) | ((v << (64 - n32)) >> skip);
            *word = bits.to_be_bytes();
            self.pos = end;
            return;
        }
        // Within the last 8 bytes of the buffer, or 64 bits not aligned to a byte.
        or_bits(&mut self.buf, self.pos, v, n);
        self.pos = end;
    }
}

impl HeadWriter {
    /// Makes room for at least `bytes` bytes: a quarter more than held and at least 16
    /// more (a chunk reallocates a few times, not once a sample), rounded up so that the
    /// request and glibc malloc's 8-byte header fill a multiple of 16 bytes (the bytes it
    /// would round up to anyway).
    #[cold]
    fn grow(&mut self, bytes: usize) {
        let held = self.buf.len();
        let want = bytes.max(held + (held / 4).max(16));
        let want = (want + 8).next_multiple_of(16) - 8;
        let mut v = Vec::from(std::mem::take(&mut self.buf));
        v.reserve_exact(want - held);
        // Zeros up to the capacity, which `into_boxed_slice` then keeps without copying.
        v.resize(v.capacity(), 0);
        self.buf = v.into_boxed_slice();
    }
}

impl XorEncoder {
    /// An empty chunk.
    pub(crate) fn new() -> XorEncoder {
        XorEncoder::with_capacity(0)
    }

    /// An empty chunk with room for `bytes` bytes, so that appends do not reallocate (and
    /// leave freed blocks behind) when the size is known from the series' previous chunk.
    pub(crate) fn with_capacity(bytes: usize) -> XorEncoder {
        XorEncoder {
            buf: vec![0; bytes].into_boxed_slice(),
            t: 0,
            delta: 0,
            v: 0,
            checkpoints: None,
            bits: 0,
            count: 0,
            // No leading/trailing-zero window yet.
            leading: 0xff,
            trailing: 0,
        }
    }

    /// An empty chunk that remembers `last` (timestamp and value bits) as the newest
    /// sample before it, for [`XorEncoder::last`]; its first sample is encoded as any
    /// chunk's first.
    pub(crate) fn carrying(last: Option<(i64, u64)>) -> XorEncoder {
        let mut e = XorEncoder::new();
        if let Some((t, v)) = last {
            // A `delta` marks the carried sample (see the field).
            (e.t, e.v, e.delta) = (t, v, 1);
        }
        e
    }

    /// Timestamp and value bits of the newest sample, of this chunk or carried over.
    pub(crate) fn last(&self) -> Option<(i64, u64)> {
        (self.count > 0 || self.delta != 0).then_some((self.t, self.v))
    }

    /// The checkpoints taken so far, oldest first: one before sample
    /// [`CHECKPOINT_EVERY`], one before twice that, and so on up to [`CHECKPOINTS`].
    pub(crate) fn checkpoints(&self) -> &[Checkpoint] {
        let taken = usize::from(self.count.saturating_sub(1) / CHECKPOINT_EVERY);
        match &self.checkpoints {
            Some(c) => &c[..taken.min(CHECKPOINTS)],
            None => &[],
        }
    }

    /// The latest checkpoint whose samples before it are all older than `mint`.
    pub(crate) fn checkpoint_before(&self, mint: i64) -> Option<Checkpoint> {
        self.checkpoints()
            .iter()
            .rev()
            .find(|c| c.t < mint)
            .copied()
    }

    /// Number of samples written.
    pub(crate) fn count(&self) -> u16 {
        self.count
    }

    /// Timestamp of the last sample (meaningless without samples).
    pub(crate) fn last_t(&self) -> i64 {
        self.t
    }

    /// The encoded bytes so far (readable at any time).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[..(self.bits as usize).div_ceil(8)]
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buf.len()
            + self
                .checkpoints
                .as_ref()
                .map_or(0, |_| size_of::<[Checkpoint; CHECKPOINTS]>())
    }

    /// The finished chunk, trimmed to size.
    pub(crate) fn finish(self) -> Box<[u8]> {
        let len = self.bytes().len();
        if len == self.buf.len() {
            return self.buf;
        }
        let mut v = Vec::from(self.buf);
        v.truncate(len);
        v.into_boxed_slice()
    }

    /// Appends a sample; the caller guarantees `t` is greater than the previous timestamp.
    pub(crate) fn append(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        let taken = self.count / CHECKPOINT_EVERY;
        if self.count % CHECKPOINT_EVERY == 0 && (1..=CHECKPOINTS as u16).contains(&taken) {
            let checkpoints = self.checkpoints.get_or_insert_with(Box::default);
            checkpoints[usize::from(taken) - 1] = Checkpoint {
                pos: self.bits,
                read: self.count,
                leading: self.leading,
                trailing: self.trailing,
                t: self.t,
                delta: self.delta,
                v: self.v,
            };
        }
        let mut w = HeadWriter {
            buf: std::mem::take(&mut self.buf),
            pos: self.bits as usize,
        };
        match self.count {
            0 => {
                w.write_varint(t);
                w.write_bits(bits, 64);
            }
            1 => {
                let delta = t.wrapping_sub(self.t);
                w.write_varint(delta);
                self.write_value(&mut w, bits);
                self.delta = delta;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                let dod = delta.wrapping_sub(self.delta);
                if dod == 0 {
                    w.write_bit(false);
                } else if (-8191..=8192).contains(&dod) {
                    w.write_bits(0b10, 2);
                    w.write_bits(dod as u64, 14);
                } else if (-65535..=65536).contains(&dod) {
                    w.write_bits(0b110, 3);
                    w.write_bits(dod as u64, 17);
                } else if (-524287..=524288).contains(&dod) {
                    w.write_bits(0b1110, 4);
                    w.write_bits(dod as u64, 20);
                } else {
                    w.write_bits(0b1111, 4);
                    w.write_bits(dod as u64, 64);
                }
                self.write_value(&mut w, bits);
                self.delta = delta;
            }
        }
        (self.buf, self.bits) = (w.buf, w.pos as u32);
        self.t = t;
        self.v = bits;
        self.count += 1;
    }

    fn write_value(&mut self, w: &mut HeadWriter, bits: u64) {
        let xor = bits ^ self.v;
        if xor == 0 {
            w.write_bit(false);
            return;
        }
        if let Some(d) = int_delta(self.v, bits) {
            let (tag, tag_len, n) = if (-128..128).contains(&d) {
                (0b110, 3, 8)
            } else if (-32768..32768).contains(&d) {
                (0b1110, 4, 16)
            } else {
                (0b1111, 4, 32)
            };
            w.write_bits(tag, tag_len);
            w.write_bits(d as u64, n);
            return;
        }
        w.write_bits(0b10, 2);
        let leading = (xor.leading_zeros() as u8).min(31);
        let trailing = xor.trailing_zeros() as u8;
        // A window is valid once set; `leading == 0xff` marks "no window yet".
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            w.write_bits(xor >> self.trailing, sig);
        } else {
            w.write_bit(true);
            let sig = 64 - leading - trailing;
            w.write_bits(leading as u64, 5);
            // 64 meaningful bits do not fit in 6 bits: written as 0.
            w.write_bits((sig & 63) as u64, 6);
            w.write_bits(xor >> trailing, sig);
            self.leading = leading;
            self.trailing = trailing;
        }
    }
}

/// Integers up to 2^53 are exact in an `f64`.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// The integer step from `prev` to `cur` when both are integral floats and adding the step
/// to `prev` gives back exactly `cur`'s bits (so `-0.0` and NaNs never take this path), and
/// the step fits in 32 bits.
fn int_delta(prev: u64, cur: u64) -> Option<i64> {
    let (p, c) = (f64::from_bits(prev), f64::from_bits(cur));
    if !(p.abs() <= MAX_EXACT_INT && c.abs() <= MAX_EXACT_INT)
        || p.fract() != 0.0
        || c.fract() != 0.0
    {
        return None;
    }
    let d = c as i64 - p as i64;
    if !(i32::MIN as i64..=i32::MAX as i64).contains(&d) {
        return None;
    }
    ((p as i64 + d) as f64).to_bits().eq(&cur).then_some(d)
}

/// Iterates over the samples of a chunk.
pub(crate) struct XorIter<'a> {
    r: BitReader<'a>,
    remaining: u16,
    read: u16,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl<'a> XorIter<'a> {
    /// Reads `count` samples from `bytes`.
    pub(crate) fn new(bytes: &'a [u8], count: u16) -> XorIter<'a> {
        XorIter {
            r: BitReader { buf: bytes, pos: 0 },
            remaining: count,
            read: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
        }
    }

    /// Reads the samples of a `count`-sample chunk from `cp` on.
    pub(crate) fn resume(bytes: &'a [u8], count: u16, cp: Checkpoint) -> XorIter<'a> {
        XorIter {
            r: BitReader {
                buf: bytes,
                pos: cp.pos as usize,
            },
            remaining: count.saturating_sub(cp.read),
            read: cp.read,
            t: cp.t,
            delta: cp.delta,
            v: cp.v,
            leading: cp.leading,
            trailing: cp.trailing,
        }
    }

    /// Decodes a value. Prefix codes are read from one 64-bit look-ahead word instead of
    /// bit by bit; a read past the end is caught by [`XorIter::step`]'s final check.
    #[inline]
    fn read_value(&mut self) -> Option<()> {
        let w = self.r.peek();
        if w >> 63 == 0 {
            self.r.skip(1);
            return Some(());
        }
        if w >> 62 == 0b11 {
            // Integer step: `110`+8, `1110`+16 or `1111`+32 bits.
            let (head, n) = match (w >> 60) & 0b11 {
                0b00 | 0b01 => (3, 8),
                0b10 => (4, 16),
                _ => (4, 32),
            };
            let d = sign_extend((w << head) >> (64 - n), n as u8);
            self.r.skip(head + n);
            let prev = f64::from_bits(self.v) as i64;
            self.v = (prev.wrapping_add(d) as f64).to_bits();
            return Some(());
        }
        if (w >> 61) & 1 == 1 {
            // New window: 5 bits of leading zeros, 6 of meaningful-bit count.
            self.leading = ((w >> 56) & 0x1f) as u8;
            let mut sig = ((w >> 50) & 0x3f) as u8;
            if sig == 0 {
                sig = 64;
            }
            // A window wider than 64 bits is malformed (the head writes none; its bytes
            // are checked like a block's).
            self.trailing = 64u8.checked_sub(self.leading + sig)?;
            self.r.skip(14);
        } else {
            self.r.skip(3);
        }
        let sig = 64u8.checked_sub(self.leading + self.trailing)?;
        let bits = self.r.read_bits(sig)?;
        self.v ^= bits.checked_shl(u32::from(self.trailing)).unwrap_or(0);
        Some(())
    }

    fn step(&mut self) -> Option<(i64, f64)> {
        match self.read {
            0 => {
                self.t = self.r.read_varint()?;
                self.v = self.r.read_bits(64)?;
            }
            1 => {
                self.delta = self.r.read_varint()?;
                self.t = self.t.wrapping_add(self.delta);
                self.read_value()?;
            }
            _ => {
                let w = self.r.peek();
                let dod = match w.leading_ones() {
                    0 => {
                        self.r.skip(1);
                        0
                    }
                    1 => {
                        self.r.skip(16);
                        dod_bits((w << 2) >> 50, 14)
                    }
                    2 => {
                        self.r.skip(20);
                        dod_bits((w << 3) >> 47, 17)
                    }
                    3 => {
                        self.r.skip(24);
                        dod_bits((w << 4) >> 44, 20)
                    }
                    _ => {
                        self.r.skip(4);
                        self.r.read_bits(64)? as i64
                    }
                };
                self.delta = self.delta.wrapping_add(dod);
                self.t = self.t.wrapping_add(self.delta);
                self.read_value()?;
            }
        }
        if self.r.past_end() {
            return None;
        }
        self.read += 1;
        Some((self.t, f64::from_bits(self.v)))
    }
}

/// A timestamp delta-of-delta of `n` (14, 17 or 20) bits as written by Prometheus's (and
/// our) XOR encoders, whose ranges are asymmetric: `-(2^(n-1) - 1)..=2^(n-1)`. The bit
/// pattern `1` followed by zeros is therefore `+2^(n-1)`, not `-2^(n-1)` as a plain sign
/// extension reads it (which shifted every later timestamp of the chunk).
pub(crate) fn dod_bits(v: u64, n: u8) -> i64 {
    if v > 1u64 << (n - 1) {
        sign_extend(v, n)
    } else {
        v as i64
    }
}

/// Sign-extends the low `n` bits of `v`.
pub(crate) fn sign_extend(v: u64, n: u8) -> i64 {
    let shift = 64 - n as u32;
    ((v << shift) as i64) >> shift
}

impl Iterator for XorIter<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let out = self.step();
        if out.is_none() {
            // A truncated stream ends the iteration instead of yielding garbage.
            self.remaining = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::CHUNK_SAMPLES;
    use super::*;

    fn round_trip(samples: &[(i64, f64)]) {
        let mut e = XorEncoder::new();
        for &(t, v) in samples {
            e.append(t, v);
        }
        let got: Vec<(i64, u64)> = XorIter::new(e.bytes(), e.count())
            .map(|(t, v)| (t, v.to_bits()))
            .collect();
        let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want);
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

    /// A reference bit sink: one `bool` a bit, packed most significant first on demand.
    #[derive(Default)]
    struct BitList(Vec<bool>);
    impl WriteBits for BitList {
        fn write_bits(&mut self, v: u64, n: u8) {
            self.0.extend((0..n).rev().map(|i| (v >> i) & 1 == 1));
        }
    }
    impl BitList {
        fn bytes(&self) -> Vec<u8> {
            let mut out = vec![0u8; self.0.len().div_ceil(8)];
            for (i, &bit) in self.0.iter().enumerate() {
                out[i / 8] |= u8::from(bit) << (7 - i % 8);
            }
            out
        }
    }

    /// Both writers give the bytes of a plain list of bits for any mix of widths, varints
    /// and alignments, across the open chunk's growth and its word-at-a-time path's last
    /// 8 bytes.
    #[test]
    fn head_and_block_writers_write_the_same_bytes() {
        let mut rng = Rng(0x51ed_2701_d3a5_b4c9);
        for _ in 0..200 {
            let mut block = BitWriter::default();
            let mut head = HeadWriter {
                buf: Box::default(),
                pos: 0,
            };
            let mut list = BitList::default();
            for _ in 0..(rng.next() % 300) {
                let v = rng.next();
                match rng.next() % 4 {
                    0 => {
                        block.write_varint(v as i64 >> (v % 64));
                        head.write_varint(v as i64 >> (v % 64));
                        list.write_varint(v as i64 >> (v % 64));
                    }
                    1 => {
                        block.write_bit(v & 1 == 1);
                        head.write_bit(v & 1 == 1);
                        list.write_bit(v & 1 == 1);
                    }
                    _ => {
                        let n = (rng.next() % 65) as u8;
                        block.write_bits(v, n);
                        head.write_bits(v, n);
                        list.write_bits(v, n);
                    }
                }
                assert_eq!(block.bytes(), list.bytes());
                assert_eq!(&head.buf[..head.pos.div_ceil(8)], list.bytes());
                assert!(head.buf[head.pos.div_ceil(8)..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn special_values_round_trip_bit_exactly() {
        let stale = f64::from_bits(super::super::STALE_NAN_BITS);
        round_trip(&[
            (0, 1.0),
            (15_000, stale),
            (30_000, f64::NAN),
            (45_000, f64::INFINITY),
            (60_000, f64::NEG_INFINITY),
            (75_000, -0.0),
            (90_000, 0.0),
            (105_000, f64::from_bits(0x7ff8_dead_beef_0001)),
            (120_000, f64::MIN_POSITIVE),
            (135_000, f64::MAX),
            (136_000, stale),
        ]);
    }

    #[test]
    fn integer_steps_round_trip() {
        let big = 9_007_199_254_740_992.0;
        let vals = [
            0.0,
            -0.0,
            0.0,
            5.0,
            -0.0,
            127.0,
            255.0,
            -1.0,
            32_767.0,
            100_000.0,
            4e9,
            -4e9,
            big,
            big - 1.0,
            -big,
            1e300,
            3.0,
            3.5,
            4.0,
            4.0,
            2_147_483_647.0,
            -1.0,
        ];
        let samples: Vec<(i64, f64)> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 * 15_000, v))
            .collect();
        round_trip(&samples);
        // Small integer steps cost 12 bits with the timestamp bit.
        let mut e = XorEncoder::new();
        for i in 0..120 {
            e.append(i * 15_000, (1000 + i * 37) as f64);
        }
        assert!(
            e.bytes().len() <= 12 + 119 * 12 / 8 + 1,
            "{}",
            e.bytes().len()
        );
    }

    #[test]
    fn checkpoints_resume_where_they_were_taken() {
        let mut rng = Rng(99);
        let mut e = XorEncoder::new();
        let mut all = Vec::new();
        let mut t = 0i64;
        for i in 0..120u64 {
            t += 1 + (rng.next() % 40_000) as i64;
            let v = match i % 3 {
                0 => (rng.next() % 50) as f64,
                1 => f64::from_bits(rng.next()),
                _ => 0.5,
            };
            e.append(t, v);
            all.push((t, v.to_bits()));
        }
        assert_eq!(e.checkpoints().len(), CHECKPOINTS);
        for (k, &cp) in e.checkpoints().iter().enumerate() {
            let got: Vec<(i64, u64)> = XorIter::resume(e.bytes(), e.count(), cp)
                .map(|(t, v)| (t, v.to_bits()))
                .collect();
            assert_eq!(got, all[cp.read as usize..], "checkpoint {k}");
            assert_eq!(cp.t, all[cp.read as usize - 1].0);
        }
        let mint = all[70].0;
        let cp = e.checkpoint_before(mint).unwrap();
        assert_eq!(cp.read, 60);
        assert!(e.checkpoint_before(all[10].0).is_none());
    }

    /// The boxed buffer grows with spare zeros past the bits written: the chunk handed
    /// over is the bytes written, no more, from an empty chunk or a presized one.
    #[test]
    fn a_finished_chunk_is_exactly_the_bytes_written() {
        for capacity in [0, 3, 40, 4096] {
            let mut e = XorEncoder::with_capacity(capacity);
            let mut want = Vec::new();
            for i in 0..CHUNK_SAMPLES as i64 {
                e.append(i * 15_000 + i % 7, (i * i) as f64 / 3.0);
                want = e.bytes().to_vec();
                assert!(e.heap_bytes() >= want.len());
            }
            assert_eq!(*e.finish(), *want, "capacity {capacity}");
        }
        assert!(XorEncoder::new().finish().is_empty());
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        round_trip(&[(i64::MIN / 4, 1.0)]);
        round_trip(&[
            (-5_000, 1.0),
            (-4_999, 2.0),
            (10_000_000_000, 3.0),
            (10_000_000_001, 3.0),
        ]);
        round_trip(&[
            (0, 1.0),
            (1, 1.0),
            (i64::MAX / 2, 1.0),
            (i64::MAX / 2 + 9000, 1.0),
        ]);
    }

    #[test]
    fn random_series_round_trip() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let n = (rng.next() % 200) as usize + 1;
            let mut t = (rng.next() % 2_000_000) as i64 - 1_000_000;
            let mut v = 0.0f64;
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                // Mix regular steps, jitter and big gaps.
                t += match rng.next() % 10 {
                    0 => (rng.next() % 10_000_000) as i64 + 1,
                    1..=3 => 15_000 + (rng.next() % 200) as i64 - 100,
                    _ => 15_000,
                };
                v = match (case + rng.next()) % 6 {
                    0 => v + (rng.next() % 100) as f64,
                    1 => f64::from_bits(rng.next()),
                    2 => v,
                    3 => (rng.next() % 1000) as f64 / 7.0,
                    4 => -v,
                    _ => v * 1.5 + 0.25,
                };
                samples.push((t, v));
            }
            round_trip(&samples);
        }
    }

    /// As `promxor`'s test of the same name: a delta-of-delta of exactly +2^13, +2^16 or
    /// +2^19 read back as its negative.
    #[test]
    fn deltas_of_deltas_at_the_edges_of_each_width_round_trip() {
        for dod in [8192i64, -8191, 65536, -65535, 524288, -524287] {
            round_trip(&[(0, 1.0), (1000, 1.0), (2000 + dod, 1.0), (3000 + dod, 2.0)]);
        }
    }

    /// Found by fuzzing (`tsdb_chunks`, its reproducer is a seed): a value window whose
    /// leading zeros and meaningful bits add up past 64 overflowed computing the trailing
    /// zeros; the chunk now ends there, as a truncated one does.
    #[test]
    fn a_value_window_wider_than_64_bits_ends_the_chunk() {
        let mut w = BitWriter::default();
        w.write_varint(1000);
        w.write_bits(1f64.to_bits(), 64);
        w.write_varint(15);
        // `101` (a new window), 31 leading zeros, 63 meaningful bits, then the bits.
        w.write_bits(0b101, 3);
        w.write_bits(31, 5);
        w.write_bits(63, 6);
        w.write_bits(u64::MAX, 63);
        let got: Vec<(i64, f64)> = XorIter::new(w.bytes(), 2).collect();
        assert_eq!(got, vec![(1000, 1.0)]);
    }
}
