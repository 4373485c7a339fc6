//! Prometheus's native-histogram chunk encodings, as blocks hold them: Prometheus
//! 2.42's, with Prometheus 3's custom bucket bounds in the layout of schema -53 chunks.
//!
//! Both start like every chunk with a 2-byte big-endian sample count, then one header
//! byte whose top two bits say what the chunk knows of counter resets (`00` unknown,
//! `10` a reset before its first sample, `01` none, `11` gauge histograms), then the
//! layout every sample of the chunk shares: the zero threshold (one byte `0` for 0, one
//! byte `k + 244` for a power of two `2^k` with `-243 ≤ k ≤ 10`, else `255` and the
//! 64 float bits), the schema, and the positive then negative spans (their number, then
//! per span its length and offset), all numbers in the "varbit" code below. For schema
//! -53 (custom buckets) the layout ends with the bounds, as Prometheus 3 writes them:
//! their number, then each bound `b` as the varbit unsigned `1000·b + 1` when that is a
//! whole number up to 33,554,431 (bounds `0..=33554.43` in steps of 0.001), else a `0`
//! bit and its 64 float bits. A chunk holds one set of bounds: it is cut where they
//! change. Prometheus 2.42 fails on such a chunk (its layout reader does not expect
//! bounds, nor the schema).
//!
//! * **Float histograms** (encoding 3, what Lookout writes): the first sample's
//!   timestamp as a varbit integer, its count, zero count, sum and every bucket count
//!   as 64 raw bits; each later sample the delta-of-delta of its timestamp, then its
//!   count, zero count, sum and bucket counts each XOR-coded against the same field of
//!   the previous sample (the XOR chunk's value code, one leading/trailing window per
//!   field).
//! * **Integer histograms** (encoding 2, what Prometheus writes for scraped
//!   histograms; read only): the first sample's timestamp (varbit integer), count and
//!   zero count (varbit unsigned), sum (64 bits) and buckets as varbit integers, each
//!   the difference to the previous bucket of its side; later samples the
//!   delta-of-deltas of timestamp, count, zero count and of each bucket's value, and the
//!   sum XOR-coded.
//!
//! A sample whose sum is the staleness marker has no buckets after the first sample of
//! its chunk: it reads as a float staleness marker. Varbit numbers take a prefix of up to
//! eight `1` bits ended by a `0` (`0`, `10`, …, `11111110`, or eight ones) and then 0, 3,
//! 6, 9, 12, 18, 25, 56 or 64 bits; signed ones cover `-(2^(n-1) - 1)..=2^(n-1)`.
//!
//! Reading trusts no count: spans and buckets are checked against the bits left before
//! anything is allocated, and each chunk's layout is checked as appended histograms are.

use std::sync::Arc;

use crate::histogram::{Bucket, CounterResetHint, FloatHistogram, HPoint};
use crate::storage::xor::{BitReader, BitWriter, WriteBits, sign_extend};
use crate::storage::{STALE_NAN_BITS, Sample};

use super::promxor::{read_value, write_value};

/// Prometheus's number for integer histogram chunks.
pub(crate) const ENCODING_HISTOGRAM: u8 = 2;
/// Prometheus's number for float histogram chunks.
pub(crate) const ENCODING_FLOAT_HISTOGRAM: u8 = 3;

const HEADER_UNKNOWN: u8 = 0b0000_0000;
const HEADER_RESET: u8 = 0b1000_0000;
const HEADER_NOT_RESET: u8 = 0b0100_0000;
const HEADER_GAUGE: u8 = 0b1100_0000;

/// Payload widths after a prefix of 1..=7 ones.
const VARBIT_WIDTHS: [u8; 7] = [3, 6, 9, 12, 18, 25, 56];

fn put_varbit_int(w: &mut BitWriter, v: i64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (k, &n) in VARBIT_WIDTHS.iter().enumerate() {
        let half = 1i64 << (n - 1);
        if -(half - 1) <= v && v <= half {
            // k + 1 ones and a zero.
            w.write_bits((1u64 << (k + 2)) - 2, k as u8 + 2);
            w.write_bits(v as u64, n);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v as u64, 64);
}

fn put_varbit_uint(w: &mut BitWriter, v: u64) {
    if v == 0 {
        w.write_bit(false);
        return;
    }
    for (k, &n) in VARBIT_WIDTHS.iter().enumerate() {
        if v < 1u64 << n {
            w.write_bits((1u64 << (k + 2)) - 2, k as u8 + 2);
            w.write_bits(v, n);
            return;
        }
    }
    w.write_bits(0xff, 8);
    w.write_bits(v, 64);
}

/// The prefix of a varbit number: its payload width (0 for the value 0).
fn read_varbit_width(r: &mut BitReader<'_>) -> Option<u8> {
    let mut ones = 0;
    while ones < 8 && r.read_bits(1)? == 1 {
        ones += 1;
    }
    Some(match ones {
        0 => 0,
        8 => 64,
        k => VARBIT_WIDTHS[k - 1],
    })
}

fn read_varbit_int(r: &mut BitReader<'_>) -> Option<i64> {
    let n = read_varbit_width(r)?;
    let bits = r.read_bits(n)?;
    Some(match n {
        0 => 0,
        64 => bits as i64,
        // Values up to 2^(n-1) are positive (Prometheus's asymmetric range).
        _ if bits > 1u64 << (n - 1) => sign_extend(bits, n),
        _ => bits as i64,
    })
}

fn read_varbit_uint(r: &mut BitReader<'_>) -> Option<u64> {
    let n = read_varbit_width(r)?;
    r.read_bits(n)
}

fn put_zero_threshold(w: &mut BitWriter, z: f64) {
    if z == 0.0 {
        w.write_bits(0, 8);
        return;
    }
    let bits = z.to_bits();
    let exp_field = ((bits >> 52) & 0x7ff) as i64;
    let power_of_two = bits >> 63 == 0 && bits & ((1 << 52) - 1) == 0;
    let k = exp_field - 1023;
    if power_of_two && exp_field != 0 && (-243..=10).contains(&k) {
        w.write_bits((k + 244) as u64, 8);
    } else {
        w.write_bits(255, 8);
        w.write_bits(bits, 64);
    }
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Option<f64> {
    Some(match r.read_bits(8)? {
        0 => 0.0,
        255 => f64::from_bits(r.read_bits(64)?),
        b => f64::from_bits(((b as i64 - 244 + 1023) as u64) << 52),
    })
}

/// The header bits for a chunk starting with a sample of hint `hint`.
fn header(hint: CounterResetHint) -> u8 {
    match hint {
        CounterResetHint::Unknown => HEADER_UNKNOWN,
        CounterResetHint::Reset => HEADER_RESET,
        CounterResetHint::NotReset => HEADER_NOT_RESET,
        CounterResetHint::Gauge => HEADER_GAUGE,
    }
}

/// The hint a sample reads with: what the header says for the first, no reset for later
/// ones (a chunk is cut at each reset), gauge throughout a gauge chunk (Prometheus's
/// `counterResetHint`).
fn hint(header: u8, first: bool) -> CounterResetHint {
    match header & 0b1100_0000 {
        HEADER_GAUGE => CounterResetHint::Gauge,
        _ if !first => CounterResetHint::NotReset,
        HEADER_RESET => CounterResetHint::Reset,
        _ => CounterResetHint::Unknown,
    }
}

fn is_stale_sum(h: &FloatHistogram) -> bool {
    h.sum.to_bits() == STALE_NAN_BITS
}

/// Whether `b` can continue a chunk that `a` started: the same schema, zero threshold
/// bits, bucket indexes and custom bounds. A stale sample is written without buckets: its layout is
/// empty.
fn same_layout(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let empty = FloatHistogram::default();
    let a = if is_stale_sum(a) { &empty } else { a };
    let b = if is_stale_sum(b) { &empty } else { b };
    let same_indexes = |x: &[Bucket], y: &[Bucket]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.index == q.index)
    };
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && same_indexes(&a.positive, &b.positive)
        && same_indexes(&a.negative, &b.negative)
        && a.custom_values == b.custom_values
}

/// Whether `h` can follow in the chunk that `first` started: both gauges or both not, a
/// "no reset" hint for a counter, and the same layout.
fn continues(first: &FloatHistogram, h: &FloatHistogram) -> bool {
    let gauge = |h: &FloatHistogram| h.counter_reset_hint == CounterResetHint::Gauge;
    gauge(first) == gauge(h)
        && (gauge(h) || h.counter_reset_hint == CounterResetHint::NotReset)
        && same_layout(first, h)
}

/// Splits `points` (sorted by time) into the runs that become one chunk each: at most
/// `max` samples sharing a layout, cut where a sample's hint is not "no reset" (a reset,
/// or unknown: a reader must look at the previous sample) and where gauges start or end.
pub(crate) fn chunk_runs(points: &[HPoint], max: usize) -> Vec<&[HPoint]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        let cut =
            i == points.len() || i - start >= max || !continues(&points[start].h, &points[i].h);
        if cut {
            out.push(&points[start..i]);
            start = i;
        }
    }
    out
}

/// The stream of one float field: its bits and XOR window.
struct XorField {
    bits: u64,
    leading: u8,
    trailing: u8,
}

impl XorField {
    fn new(v: f64, leading: u8) -> XorField {
        XorField {
            bits: v.to_bits(),
            leading,
            trailing: 0,
        }
    }

    fn write(&mut self, w: &mut BitWriter, v: f64) {
        let bits = v.to_bits();
        write_value(w, self.bits, bits, &mut self.leading, &mut self.trailing);
        self.bits = bits;
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Option<f64> {
        read_value(r, &mut self.bits, &mut self.leading, &mut self.trailing)?;
        Some(f64::from_bits(self.bits))
    }
}

fn write_layout(w: &mut BitWriter, h: &FloatHistogram) {
    put_zero_threshold(w, h.zero_threshold);
    put_varbit_int(w, i64::from(h.schema));
    for side in [&h.positive, &h.negative] {
        let spans = FloatHistogram::spans(side);
        put_varbit_uint(w, spans.len() as u64);
        for s in spans {
            put_varbit_uint(w, u64::from(s.length));
            put_varbit_int(w, i64::from(s.offset));
        }
    }
    if h.uses_custom_buckets() {
        put_varbit_uint(w, h.custom_values.len() as u64);
        for &b in h.custom_values.iter() {
            put_custom_bound(w, b);
        }
    }
}

/// Largest `1000·b` written as a varbit number (the widest that fits four bytes, less
/// one for the `+ 1`).
const CUSTOM_BOUND_MILLIS_MAX: f64 = 33_554_430.0;

/// A custom bound: `1000·b + 1` as a varbit unsigned when `b` is a whole number of
/// thousandths in range (so never 0), else a 0 bit and the float bits.
fn put_custom_bound(w: &mut BitWriter, b: f64) {
    let millis = b * 1000.0;
    let whole = (b * 1000.0).round() / 1000.0 == b;
    if (0.0..=CUSTOM_BOUND_MILLIS_MAX).contains(&millis) && whole {
        put_varbit_uint(w, millis.round() as u64 + 1);
    } else {
        w.write_bit(false);
        w.write_bits(b.to_bits(), 64);
    }
}

fn read_custom_bound(r: &mut BitReader<'_>) -> Option<f64> {
    Some(match read_varbit_uint(r)? {
        0 => f64::from_bits(r.read_bits(64)?),
        m => (m - 1) as f64 / 1000.0,
    })
}

/// Reads the custom bounds of a schema -53 layout; `None` past the bits left (a bound
/// takes five bits at least).
fn read_custom_bounds(r: &mut BitReader<'_>) -> Option<Arc<[f64]>> {
    let n = read_varbit_uint(r)?;
    if n > (r.remaining_bits() / 5) as u64 {
        return None;
    }
    (0..n).map(|_| read_custom_bound(r)).collect()
}

/// Encodes `points` (1 to 65,535 samples sharing the first one's layout, as
/// [`chunk_runs`] cuts them, timestamps increasing) as one float histogram chunk.
pub(crate) fn encode_float(points: &[HPoint]) -> Vec<u8> {
    let Some(first) = points.first() else {
        let mut w = BitWriter::default();
        w.write_bits(0, 16);
        return w.bytes().to_vec();
    };
    let mut a = FloatAppender::new(first);
    for p in points.iter().skip(1).take(usize::from(u16::MAX) - 1) {
        a.append(p);
    }
    a.bytes().to_vec()
}

/// A float histogram chunk written one sample at a time (the head's open chunk): the
/// bytes read as a whole chunk of the samples appended so far at any time.
pub(crate) struct FloatAppender {
    w: BitWriter,
    n: u16,
    /// The first sample: its layout and hint decide what may follow.
    first: Arc<FloatHistogram>,
    heads: [XorField; 3],
    buckets: Vec<XorField>,
    t: i64,
    delta: i64,
}

impl FloatAppender {
    /// A chunk starting with `first`.
    pub(crate) fn new(first: &HPoint) -> FloatAppender {
        let mut w = BitWriter::default();
        w.write_bits(1, 16);
        w.write_bits(u64::from(header(first.h.counter_reset_hint)), 8);
        let h = if is_stale_sum(&first.h) {
            FloatHistogram {
                sum: first.h.sum,
                ..FloatHistogram::default()
            }
        } else {
            (*first.h).clone()
        };
        write_layout(&mut w, &h);
        put_varbit_int(&mut w, first.t);
        let fields = [h.count, h.zero_count, h.sum];
        let buckets = h.positive.iter().chain(&h.negative).map(|b| b.count);
        for v in fields.into_iter().chain(buckets.clone()) {
            w.write_bits(v.to_bits(), 64);
        }
        FloatAppender {
            w,
            n: 1,
            first: first.h.clone(),
            heads: fields.map(|v| XorField::new(v, 0xff)),
            buckets: buckets.map(|v| XorField::new(v, 0xff)).collect(),
            t: first.t,
            delta: 0,
        }
    }

    /// Samples in the chunk.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.n)
    }

    /// Whether `h` may be appended: fewer than `max` samples so far (at most 65,535) and
    /// `h` continues the chunk (see [`chunk_runs`]).
    pub(crate) fn fits(&self, h: &FloatHistogram, max: usize) -> bool {
        self.len() < max.min(usize::from(u16::MAX)) && continues(&self.first, h)
    }

    /// Appends `p`, which [`FloatAppender::fits`] and comes after the last sample.
    pub(crate) fn append(&mut self, p: &HPoint) {
        let w = &mut self.w;
        let d = p.t.wrapping_sub(self.t);
        put_varbit_int(w, d.wrapping_sub(self.delta));
        (self.t, self.delta) = (p.t, d);
        let stale = is_stale_sum(&p.h);
        let (count, zero_count) = if stale {
            (0.0, 0.0)
        } else {
            (p.h.count, p.h.zero_count)
        };
        for (f, v) in self.heads.iter_mut().zip([count, zero_count, p.h.sum]) {
            f.write(w, v);
        }
        if !stale {
            let counts = p.h.positive.iter().chain(&p.h.negative).map(|b| b.count);
            for (f, v) in self.buckets.iter_mut().zip(counts) {
                f.write(w, v);
            }
        }
        self.n += 1;
        w.set_first_bytes(self.n.to_be_bytes());
    }

    /// The chunk so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.w.bytes()
    }

    /// Bytes on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.w.capacity() + self.buckets.capacity() * size_of::<XorField>()
    }
}

/// What every sample of a chunk shares.
struct Layout {
    schema: i32,
    zero_threshold: f64,
    positive: Vec<i32>,
    negative: Vec<i32>,
    /// Custom bucket bounds (schema -53; empty otherwise), shared by every sample read.
    custom: Arc<[f64]>,
}

impl Layout {
    fn read(r: &mut BitReader<'_>) -> Option<Layout> {
        let zero_threshold = read_zero_threshold(r)?;
        let schema = i32::try_from(read_varbit_int(r)?).ok()?;
        let positive = read_indexes(r)?;
        let negative = read_indexes(r)?;
        let custom = if schema == crate::histogram::CUSTOM_BUCKETS_SCHEMA {
            read_custom_bounds(r)?
        } else {
            Arc::from([])
        };
        let l = Layout {
            schema,
            zero_threshold,
            positive,
            negative,
            custom,
        };
        // Bucket arithmetic relies on what appends are checked for.
        let zeros = |n: usize| vec![0.0; n];
        let probe = l.histogram(&zeros(l.positive.len()), &zeros(l.negative.len()));
        probe.check_structure().ok().map(|()| l)
    }

    fn buckets(indexes: &[i32], counts: &[f64]) -> Vec<Bucket> {
        indexes
            .iter()
            .zip(counts)
            .map(|(&index, &count)| Bucket { index, count })
            .collect()
    }

    fn histogram(&self, pos: &[f64], neg: &[f64]) -> FloatHistogram {
        FloatHistogram {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            positive: Layout::buckets(&self.positive, pos),
            negative: Layout::buckets(&self.negative, neg),
            custom_values: self.custom.clone(),
            ..FloatHistogram::default()
        }
    }

    fn buckets_total(&self) -> usize {
        self.positive.len() + self.negative.len()
    }
}

/// Reads spans into bucket indexes; `None` when they are malformed, overflow, or promise
/// more buckets than bits are left (every bucket takes a bit in every sample at least).
fn read_indexes(r: &mut BitReader<'_>) -> Option<Vec<i32>> {
    let n = read_varbit_uint(r)?;
    // A span takes two bits at least.
    if n > (r.remaining_bits() / 2) as u64 {
        return None;
    }
    let mut out = Vec::new();
    let mut idx: i64 = 0;
    for k in 0..n {
        let len = read_varbit_uint(r)?;
        let off = read_varbit_int(r)?;
        if len > u64::from(u32::MAX) || i32::try_from(off).is_err() || (k > 0 && off < 0) {
            return None;
        }
        if out.len() as u64 + len > r.remaining_bits() as u64 {
            return None;
        }
        idx = idx.checked_add(off)?;
        for _ in 0..len {
            out.push(i32::try_from(idx).ok()?);
            idx += 1;
        }
    }
    Some(out)
}

/// Decodes a histogram chunk of encoding `enc` up to the first sample after `maxt`:
/// histograms to `hists`, staleness markers to `floats`. `None` (both left as they
/// were) when it is malformed or truncated, or not a histogram encoding.
pub(crate) fn decode_until(
    enc: u8,
    chunk: &[u8],
    maxt: i64,
    hists: &mut Vec<HPoint>,
    floats: &mut Vec<Sample>,
) -> Option<()> {
    let (h0, f0) = (hists.len(), floats.len());
    let ok = match enc {
        ENCODING_FLOAT_HISTOGRAM => decode_chunk::<FloatFields>(chunk, maxt, hists, floats),
        ENCODING_HISTOGRAM => decode_chunk::<IntFields>(chunk, maxt, hists, floats),
        _ => None,
    };
    if ok.is_none() {
        hists.truncate(h0);
        floats.truncate(f0);
    }
    ok
}

/// [`decode_until`] for a float histogram chunk of the head.
pub(crate) fn decode_head_chunk(chunk: &[u8], maxt: i64, hists: &mut Vec<HPoint>) -> Option<()> {
    let h0 = hists.len();
    let mut stale = Vec::new();
    let ok = decode_chunk::<FloatFields>(chunk, maxt, hists, &mut stale);
    if ok.is_none() {
        hists.truncate(h0);
    }
    ok
}

/// The per-sample fields of one histogram chunk encoding, as its reader keeps them.
trait Fields: Sized {
    /// Reads the first sample's fields after its timestamp.
    fn first(r: &mut BitReader<'_>, layout: &Layout) -> Option<Self>;
    /// Reads a later sample's count, zero count and sum; its buckets only when the sum is
    /// not a staleness marker.
    fn next(&mut self, r: &mut BitReader<'_>) -> Option<()>;
    fn read_buckets(&mut self, r: &mut BitReader<'_>) -> Option<()>;
    fn sum(&self) -> f64;
    /// Count, zero count and the bucket counts (positive then negative).
    fn values(&self) -> (f64, f64, Vec<f64>);
}

fn decode_chunk<F: Fields>(
    chunk: &[u8],
    maxt: i64,
    hists: &mut Vec<HPoint>,
    floats: &mut Vec<Sample>,
) -> Option<()> {
    let n = u16::from_be_bytes([*chunk.first()?, *chunk.get(1)?]);
    let head = *chunk.get(2)?;
    if n == 0 {
        return Some(());
    }
    let mut r = BitReader::new(&chunk[3..]);
    let layout = Layout::read(&mut r)?;
    let mut t = read_varbit_int(&mut r)?;
    let mut fields = F::first(&mut r, &layout)?;
    let mut delta = 0i64;
    for i in 0..n {
        if i > 0 {
            delta = delta.wrapping_add(read_varbit_int(&mut r)?);
            t = t.wrapping_add(delta);
            fields.next(&mut r)?;
            if fields.sum().to_bits() != STALE_NAN_BITS {
                fields.read_buckets(&mut r)?;
            }
        }
        if t > maxt {
            break;
        }
        if fields.sum().to_bits() == STALE_NAN_BITS {
            floats.push(Sample { t, v: fields.sum() });
            continue;
        }
        let (count, zero_count, counts) = fields.values();
        let (pos, neg) = counts.split_at(layout.positive.len());
        let mut h = layout.histogram(pos, neg);
        h.count = count;
        h.zero_count = zero_count;
        h.sum = fields.sum();
        h.counter_reset_hint = hint(head, i == 0);
        hists.push(HPoint { t, h: Arc::new(h) });
    }
    Some(())
}

/// The fields of a float histogram chunk.
struct FloatFields {
    heads: [XorField; 3],
    buckets: Vec<XorField>,
}

impl Fields for FloatFields {
    fn first(r: &mut BitReader<'_>, layout: &Layout) -> Option<Self> {
        let mut raw = || Some(f64::from_bits(r.read_bits(64)?));
        let heads = [
            XorField::new(raw()?, 0),
            XorField::new(raw()?, 0),
            XorField::new(raw()?, 0),
        ];
        // 64 bits per bucket: checked before allocating.
        if layout.buckets_total() > r.remaining_bits() / 64 {
            return None;
        }
        let mut buckets = Vec::with_capacity(layout.buckets_total());
        for _ in 0..layout.buckets_total() {
            buckets.push(XorField::new(f64::from_bits(r.read_bits(64)?), 0));
        }
        Some(FloatFields { heads, buckets })
    }

    fn next(&mut self, r: &mut BitReader<'_>) -> Option<()> {
        for f in &mut self.heads {
            f.read(r)?;
        }
        Some(())
    }

    fn read_buckets(&mut self, r: &mut BitReader<'_>) -> Option<()> {
        for f in &mut self.buckets {
            f.read(r)?;
        }
        Some(())
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.heads[2].bits)
    }

    fn values(&self) -> (f64, f64, Vec<f64>) {
        let counts = self
            .buckets
            .iter()
            .map(|f| f64::from_bits(f.bits))
            .collect();
        (
            f64::from_bits(self.heads[0].bits),
            f64::from_bits(self.heads[1].bits),
            counts,
        )
    }
}

/// The fields of an integer histogram chunk: counts with their deltas, buckets as
/// differences to their neighbour with their deltas, the sum XOR-coded.
struct IntFields {
    count: (u64, i64),
    zero_count: (u64, i64),
    sum: XorField,
    /// Per bucket: its value (difference to the previous bucket) and that value's delta.
    buckets: Vec<(i64, i64)>,
    /// How many of `buckets` are positive ones (they come first).
    positive: usize,
}

impl Fields for IntFields {
    fn first(r: &mut BitReader<'_>, layout: &Layout) -> Option<Self> {
        let count = read_varbit_uint(r)?;
        let zero_count = read_varbit_uint(r)?;
        let sum = XorField::new(f64::from_bits(r.read_bits(64)?), 0);
        if layout.buckets_total() > r.remaining_bits() {
            return None;
        }
        let mut buckets = Vec::with_capacity(layout.buckets_total());
        for _ in 0..layout.buckets_total() {
            buckets.push((read_varbit_int(r)?, 0));
        }
        Some(IntFields {
            count: (count, 0),
            zero_count: (zero_count, 0),
            sum,
            buckets,
            positive: layout.positive.len(),
        })
    }

    fn next(&mut self, r: &mut BitReader<'_>) -> Option<()> {
        for c in [&mut self.count, &mut self.zero_count] {
            c.1 = c.1.wrapping_add(read_varbit_int(r)?);
            c.0 = (c.0 as i64).wrapping_add(c.1) as u64;
        }
        self.sum.read(r)?;
        Some(())
    }

    fn read_buckets(&mut self, r: &mut BitReader<'_>) -> Option<()> {
        for b in &mut self.buckets {
            b.1 = b.1.wrapping_add(read_varbit_int(r)?);
            b.0 = b.0.wrapping_add(b.1);
        }
        Some(())
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum.bits)
    }

    fn values(&self) -> (f64, f64, Vec<f64>) {
        // Each side's buckets are differences to the previous bucket of that side.
        let mut counts = Vec::with_capacity(self.buckets.len());
        let mut cur = 0i64;
        for (i, b) in self.buckets.iter().enumerate() {
            if i == self.positive {
                cur = 0;
            }
            cur = cur.wrapping_add(b.0);
            counts.push(cur as f64);
        }
        (self.count.0 as f64, self.zero_count.0 as f64, counts)
    }
}

#[cfg(test)]
mod tests;
