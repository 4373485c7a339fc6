//! A reader for the protobuf exposition format: varint-length-delimited
//! `io.prometheus.client.MetricFamily` messages (client_model's `metrics.proto`), the only
//! format that carries native histograms, and the one a scrape with
//! `scrape_native_histograms` asks for first.
//!
//! Written by hand, like the writer in `lookout_promql::protowire`: the messages are small
//! and fixed, and a reader of our own can be bounded where a general protobuf library is not.
//! Every length is checked against the bytes that are left before anything is sliced or
//! reserved, nesting follows the schema (MetricFamily → Metric → Histogram → BucketSpan, so
//! four levels; unknown fields are skipped unread, groups refused), a histogram holds at
//! most [`MAX_BUCKETS`] native buckets and spans per side and a metric at most
//! [`MAX_BUCKETS`] classic buckets or quantiles, and the series text the body expands to
//! (the labels of a metric repeat on each of its bucket series) is bounded by
//! [`expansion_budget`]. Errors name the byte offset in the body and what is wrong; nothing
//! here panics.
//!
//! Which histograms are native follows Prometheus 3 (`isNativeHistogram` in
//! `model/textparse/protobufparse.go`): one with a span on either side, a zero threshold
//! above 0 or a zero count above 0. Otherwise it is a classic histogram, stored as its
//! `_count`, `_sum` and `_bucket` series; with `always_scrape_classic_histograms` a native
//! histogram's classic buckets (when it has any) are stored too.

use std::sync::atomic::{AtomicBool, Ordering};

use lookout_promql::Labels;
use lookout_promql::histogram::nhcb::ClassicHistogram;
use lookout_promql::histogram::{Bucket, CounterResetHint, FloatHistogram, Span, valid_schema};
use lookout_promql::labels::METRIC_NAME;

/// The most native buckets a histogram may have (both sides), the most spans per side and
/// the most classic buckets or quantiles per metric.
pub const MAX_BUCKETS: usize = 16_384;

/// How many metrics are read between two looks at the stop flag.
const STOP_CHECK_EVERY: usize = 256;

/// The message of the error a stopped read returns.
pub const STOPPED: &str = "parsing stopped before the end of the body";

/// The most bytes of series text (metric name and labels, as the text format spells them)
/// a body of `body_len` bytes may expand to: 16 times the body, and at least 1 MiB.
pub fn expansion_budget(body_len: usize) -> usize {
    body_len.saturating_mul(16).max(1 << 20)
}

/// A malformed body: where and what.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("byte {offset}: {message}")]
pub struct ProtoError {
    /// Offset in the body of the field or message that is wrong.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

fn fail<T>(offset: usize, message: impl Into<String>) -> Result<T, ProtoError> {
    Err(ProtoError {
        offset,
        message: message.into(),
    })
}

/// What the reader does with histograms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Read native histograms (`scrape_native_histograms`); without it every histogram is
    /// a classic one.
    pub native_histograms: bool,
    /// Also give the classic series of a native histogram that has classic buckets
    /// (`always_scrape_classic_histograms`); with `nhcb`, also keep the classic series of
    /// a converted histogram.
    pub always_classic: bool,
    /// Convert classic histograms to native histograms with custom buckets
    /// (`convert_classic_histograms_to_nhcb`).
    pub nhcb: bool,
}

/// A sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A float sample.
    Float(f64),
    /// A native histogram.
    Histogram(Box<FloatHistogram>),
}

/// One sample of the body.
#[derive(Debug)]
pub struct Sample<'a> {
    /// The series as the text format would spell it (`name{a="b",le="1.0"}`): what a
    /// scrape cache looks up.
    pub series: &'a str,
    /// The value.
    pub value: Value,
    /// The metric's `timestamp_ms`, when it is not 0 (proto3 cannot tell 0 from unset;
    /// Prometheus reads 0 as unset too).
    pub timestamp_ms: Option<i64>,
    name: &'a str,
    pairs: &'a [(&'a str, &'a str)],
    extra: Option<(&'static str, &'a str)>,
    offset: usize,
}

impl Sample<'_> {
    /// The series' labels, with the metric name as `__name__`; label names must be valid
    /// (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__name__`) and distinct.
    pub fn labels(&self) -> Result<Labels, ProtoError> {
        let mut refs: Vec<(&str, &str)> = Vec::with_capacity(self.pairs.len() + 2);
        for &(k, v) in self.pairs {
            if !is_label_name(k) || k == METRIC_NAME {
                return fail(self.offset, format!("invalid label name {k:?}"));
            }
            refs.push((k, v));
        }
        refs.extend(self.extra);
        refs.push((METRIC_NAME, self.name));
        Labels::try_from_distinct(&refs).map_err(|i| ProtoError {
            offset: self.offset,
            message: format!(
                "duplicate label name {:?} in a metric of {:?}",
                refs[i].0, self.name
            ),
        })
    }
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

// ---- wire format ----

/// One field of a message.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    /// The bytes and their offset in the body.
    Len(&'a [u8], usize),
}

/// The fields of one message, in order. `base` is the message's offset in the body.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], base: usize) -> Fields<'a> {
        Fields { buf, pos: 0, base }
    }

    fn at(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let start = self.at();
        let mut v: u64 = 0;
        for shift in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return fail(start, "truncated varint");
            };
            self.pos += 1;
            if shift == 9 && b > 1 {
                return fail(start, "varint longer than 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * shift);
            if b < 0x80 {
                return Ok(v);
            }
        }
        fail(start, "varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtoError> {
        let start = self.at();
        match self.buf.get(self.pos..).filter(|rest| rest.len() >= n) {
            Some(rest) => {
                self.pos += n;
                Ok(&rest[..n])
            }
            None => fail(
                start,
                format!(
                    "{what} of {n} bytes runs past the end of its message ({} bytes left)",
                    self.buf.len() - self.pos.min(self.buf.len())
                ),
            ),
        }
    }

    /// The next field: its number, value and offset.
    fn next_field(&mut self) -> Result<Option<(u64, Wire<'a>, usize)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.at();
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return fail(at, format!("invalid field number {number}"));
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                let b = self.take(8, "a 64-bit field")?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Wire::Fixed64(u64::from_le_bytes(a))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let start = self.at();
                let b = self.take(len, "a length-delimited field")?;
                Wire::Len(b, start)
            }
            5 => {
                self.take(4, "a 32-bit field")?;
                Wire::Fixed32
            }
            w => {
                return fail(
                    at,
                    format!("field {number} has wire type {w}, which the exposition never uses"),
                );
            }
        };
        Ok(Some((number, wire, at)))
    }
}

fn expect_varint(w: Wire<'_>, at: usize, what: &str) -> Result<u64, ProtoError> {
    match w {
        Wire::Varint(v) => Ok(v),
        _ => fail(at, format!("{what} is not a varint")),
    }
}

fn expect_double(w: Wire<'_>, at: usize, what: &str) -> Result<f64, ProtoError> {
    match w {
        Wire::Fixed64(v) => Ok(f64::from_bits(v)),
        _ => fail(at, format!("{what} is not a double")),
    }
}

fn expect_bytes<'a>(w: Wire<'a>, at: usize, what: &str) -> Result<(&'a [u8], usize), ProtoError> {
    match w {
        Wire::Len(b, off) => Ok((b, off)),
        _ => fail(at, format!("{what} is not length-delimited")),
    }
}

fn expect_str<'a>(w: Wire<'a>, at: usize, what: &str) -> Result<&'a str, ProtoError> {
    let (b, off) = expect_bytes(w, at, what)?;
    std::str::from_utf8(b).or_else(|e| fail(off + e.valid_up_to(), format!("{what} is not UTF-8")))
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends the values of a repeated numeric field, packed or not, refusing more than
/// [`MAX_BUCKETS`] in all.
fn repeated<T>(
    out: &mut Vec<T>,
    w: Wire<'_>,
    at: usize,
    what: &str,
    one: impl Fn(&mut Fields<'_>) -> Result<T, ProtoError>,
    single: impl Fn(Wire<'_>) -> Option<T>,
) -> Result<(), ProtoError> {
    let too_many = || format!("more than {MAX_BUCKETS} {what} in one histogram");
    match w {
        Wire::Len(b, off) => {
            let mut f = Fields::new(b, off);
            while f.pos < b.len() {
                if out.len() >= MAX_BUCKETS {
                    return fail(f.at(), too_many());
                }
                out.push(one(&mut f)?);
            }
            Ok(())
        }
        w => match single(w) {
            Some(v) if out.len() < MAX_BUCKETS => {
                out.push(v);
                Ok(())
            }
            Some(_) => fail(at, too_many()),
            None => fail(at, format!("{what} has the wrong wire type")),
        },
    }
}

// ---- messages ----

/// client_model's `MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Summary,
    Untyped,
    Histogram,
    GaugeHistogram,
}

impl Kind {
    fn from_number(n: u64) -> Option<Kind> {
        Some(match n {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            2 => Kind::Summary,
            3 => Kind::Untyped,
            4 => Kind::Histogram,
            5 => Kind::GaugeHistogram,
            _ => return None,
        })
    }
}

/// A `Histogram` message as read.
#[derive(Debug, Default)]
struct RawHistogram {
    sample_count: u64,
    sample_count_float: f64,
    sample_sum: f64,
    /// Classic buckets: upper bound and cumulative count (the float one when above 0).
    buckets: Vec<(f64, f64)>,
    schema: i64,
    zero_threshold: f64,
    zero_count: u64,
    zero_count_float: f64,
    spans: [Vec<Span>; 2],
    deltas: [Vec<i64>; 2],
    counts: [Vec<f64>; 2],
}

/// Side indexes of [`RawHistogram`]'s arrays.
const NEGATIVE: usize = 0;
const POSITIVE: usize = 1;

impl RawHistogram {
    fn read(b: &[u8], base: usize) -> Result<RawHistogram, ProtoError> {
        let mut h = RawHistogram::default();
        let mut f = Fields::new(b, base);
        while let Some((n, w, at)) = f.next_field()? {
            match n {
                1 => h.sample_count = expect_varint(w, at, "sample_count")?,
                4 => h.sample_count_float = expect_double(w, at, "sample_count_float")?,
                2 => h.sample_sum = expect_double(w, at, "sample_sum")?,
                3 => {
                    if h.buckets.len() >= MAX_BUCKETS {
                        return fail(at, format!("more than {MAX_BUCKETS} classic buckets"));
                    }
                    let (b, off) = expect_bytes(w, at, "bucket")?;
                    h.buckets.push(read_bucket(b, off)?);
                }
                5 => {
                    h.schema = unzigzag(expect_varint(w, at, "schema")?);
                }
                6 => h.zero_threshold = expect_double(w, at, "zero_threshold")?,
                7 => h.zero_count = expect_varint(w, at, "zero_count")?,
                8 => h.zero_count_float = expect_double(w, at, "zero_count_float")?,
                9 | 12 => {
                    let side = if n == 9 { NEGATIVE } else { POSITIVE };
                    if h.spans[side].len() >= MAX_BUCKETS {
                        return fail(at, format!("more than {MAX_BUCKETS} spans on one side"));
                    }
                    let (b, off) = expect_bytes(w, at, "span")?;
                    h.spans[side].push(read_span(b, off)?);
                }
                10 | 13 => {
                    let side = if n == 10 { NEGATIVE } else { POSITIVE };
                    let one = |f: &mut Fields<'_>| f.varint().map(unzigzag);
                    let single = |w: Wire<'_>| match w {
                        Wire::Varint(v) => Some(unzigzag(v)),
                        _ => None,
                    };
                    repeated(&mut h.deltas[side], w, at, "bucket deltas", one, single)?;
                }
                11 | 14 => {
                    let side = if n == 11 { NEGATIVE } else { POSITIVE };
                    let one = |f: &mut Fields<'_>| {
                        let b = f.take(8, "a packed double")?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        Ok(f64::from_le_bytes(a))
                    };
                    let single = |w: Wire<'_>| match w {
                        Wire::Fixed64(v) => Some(f64::from_bits(v)),
                        _ => None,
                    };
                    repeated(&mut h.counts[side], w, at, "bucket counts", one, single)?;
                }
                _ => {} // created_timestamp, exemplars: not stored
            }
        }
        Ok(h)
    }

    /// Prometheus 3's rule: spans on either side, a zero threshold or a zero count.
    fn is_native(&self) -> bool {
        !self.spans[NEGATIVE].is_empty()
            || !self.spans[POSITIVE].is_empty()
            || self.zero_threshold > 0.0
            || self.zero_count > 0
    }

    fn is_float(&self) -> bool {
        self.sample_count_float > 0.0 || self.zero_count_float > 0.0
    }

    fn count(&self) -> f64 {
        if self.sample_count_float != 0.0 {
            self.sample_count_float
        } else {
            self.sample_count as f64
        }
    }

    /// The native histogram, checked (spans against buckets, schema, bucket indexes,
    /// counts). `name` and `at` are for the errors.
    fn native(&self, gauge: bool, name: &str, at: usize) -> Result<FloatHistogram, ProtoError> {
        let bad = |m: String| fail::<FloatHistogram>(at, format!("histogram {name:?}: {m}"));
        let schema = match i32::try_from(self.schema) {
            Ok(s) if valid_schema(s) && s != lookout_promql::histogram::CUSTOM_BUCKETS_SCHEMA => s,
            _ => return bad(format!("schema {} is not one of -4..=8", self.schema)),
        };
        let float = self.is_float();
        let mut sides: [Vec<Bucket>; 2] = [Vec::new(), Vec::new()];
        for (side, word) in [(NEGATIVE, "negative"), (POSITIVE, "positive")] {
            let counts: Vec<f64> = if float {
                self.counts[side].clone()
            } else {
                let mut running: i64 = 0;
                let mut out = Vec::with_capacity(self.deltas[side].len());
                for &d in &self.deltas[side] {
                    running = running.wrapping_add(d);
                    out.push(running as f64);
                }
                out
            };
            let want: u64 = self.spans[side].iter().map(|s| u64::from(s.length)).sum();
            if want != counts.len() as u64 {
                return bad(format!(
                    "{word} side: spans require {want} buckets, have {}",
                    counts.len()
                ));
            }
            match FloatHistogram::buckets_from_spans(&self.spans[side], &counts) {
                Some(b) => sides[side] = b,
                None => return bad(format!("{word} side: a span's offset is out of range")),
            }
        }
        if sides[0].len() + sides[1].len() > MAX_BUCKETS {
            return bad(format!("more than {MAX_BUCKETS} buckets"));
        }
        let [negative, positive] = sides;
        let mut h = FloatHistogram {
            schema,
            zero_threshold: self.zero_threshold,
            zero_count: if float {
                self.zero_count_float
            } else {
                self.zero_count as f64
            },
            count: if float {
                self.sample_count_float
            } else {
                self.sample_count as f64
            },
            sum: self.sample_sum,
            positive,
            negative,
            counter_reset_hint: if gauge {
                CounterResetHint::Gauge
            } else {
                CounterResetHint::Unknown
            },
            ..FloatHistogram::default()
        };
        h.compact();
        if let Err(e) = h.validate() {
            return bad(e);
        }
        Ok(h)
    }
}

impl RawHistogram {
    /// The classic buckets as a native histogram with custom buckets, as Prometheus 3's
    /// protobuf parser converts them: data that does not convert fails the scrape.
    fn custom_buckets(
        &self,
        gauge: bool,
        name: &str,
        at: usize,
    ) -> Result<FloatHistogram, ProtoError> {
        let mut c = ClassicHistogram::new();
        c.set_count(self.count());
        c.set_sum(self.sample_sum);
        for &(upper, count) in &self.buckets {
            c.set_bucket(upper, count);
        }
        let mut h = c.convert().map_err(|e| ProtoError {
            offset: at,
            message: format!("histogram {name:?}: converting its classic buckets: {e}"),
        })?;
        if gauge {
            h.counter_reset_hint = CounterResetHint::Gauge;
        }
        Ok(h)
    }
}

fn read_bucket(b: &[u8], base: usize) -> Result<(f64, f64), ProtoError> {
    let (mut count, mut count_float, mut upper) = (0u64, 0f64, 0f64);
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match n {
            1 => count = expect_varint(w, at, "cumulative_count")?,
            4 => count_float = expect_double(w, at, "cumulative_count_float")?,
            2 => upper = expect_double(w, at, "upper_bound")?,
            _ => {}
        }
    }
    let count = if count_float != 0.0 {
        count_float
    } else {
        count as f64
    };
    Ok((upper, count))
}

fn read_span(b: &[u8], base: usize) -> Result<Span, ProtoError> {
    let mut span = Span {
        offset: 0,
        length: 0,
    };
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match n {
            1 => {
                let v = unzigzag(expect_varint(w, at, "span offset")?);
                span.offset = i32::try_from(v).or_else(|_| fail(at, "span offset out of range"))?;
            }
            2 => {
                let v = expect_varint(w, at, "span length")?;
                span.length = u32::try_from(v).or_else(|_| fail(at, "span length out of range"))?;
                if span.length as usize > MAX_BUCKETS {
                    return fail(at, format!("span length {v} is more than {MAX_BUCKETS}"));
                }
            }
            _ => {}
        }
    }
    Ok(span)
}

/// A `Metric` message as read: labels, the value message of its family's kind, timestamp.
#[derive(Debug, Default)]
struct RawMetric<'a> {
    labels: Vec<(&'a str, &'a str)>,
    /// The value field of a counter, gauge or untyped metric.
    value: f64,
    summary: Option<RawSummary>,
    histogram: Option<RawHistogram>,
    timestamp_ms: i64,
}

#[derive(Debug, Default)]
struct RawSummary {
    count: u64,
    sum: f64,
    quantiles: Vec<(f64, f64)>,
}

/// Reads the `value` (field 1, a double) of a `Counter`, `Gauge` or `Untyped`.
fn read_value(b: &[u8], base: usize) -> Result<f64, ProtoError> {
    let mut v = 0.0;
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        if n == 1 {
            v = expect_double(w, at, "value")?;
        }
    }
    Ok(v)
}

fn read_label(b: &[u8], base: usize) -> Result<(&str, &str), ProtoError> {
    let (mut name, mut value) = ("", "");
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match n {
            1 => name = expect_str(w, at, "label name")?,
            2 => value = expect_str(w, at, "label value")?,
            _ => {}
        }
    }
    Ok((name, value))
}

fn read_summary(b: &[u8], base: usize) -> Result<RawSummary, ProtoError> {
    let mut s = RawSummary::default();
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match n {
            1 => s.count = expect_varint(w, at, "sample_count")?,
            2 => s.sum = expect_double(w, at, "sample_sum")?,
            3 => {
                if s.quantiles.len() >= MAX_BUCKETS {
                    return fail(at, format!("more than {MAX_BUCKETS} quantiles"));
                }
                let (b, off) = expect_bytes(w, at, "quantile")?;
                let (mut q, mut v) = (0.0, 0.0);
                let mut g = Fields::new(b, off);
                while let Some((n, w, at)) = g.next_field()? {
                    match n {
                        1 => q = expect_double(w, at, "quantile")?,
                        2 => v = expect_double(w, at, "value")?,
                        _ => {}
                    }
                }
                s.quantiles.push((q, v));
            }
            _ => {}
        }
    }
    Ok(s)
}

fn read_metric(b: &[u8], base: usize, kind: Kind) -> Result<RawMetric<'_>, ProtoError> {
    let mut m = RawMetric::default();
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match (n, kind) {
            (1, _) => {
                let (b, off) = expect_bytes(w, at, "label")?;
                m.labels.push(read_label(b, off)?);
            }
            (2, Kind::Gauge) | (3, Kind::Counter) | (5, Kind::Untyped) => {
                let (b, off) = expect_bytes(w, at, "value message")?;
                m.value = read_value(b, off)?;
            }
            (4, Kind::Summary) => {
                let (b, off) = expect_bytes(w, at, "summary")?;
                m.summary = Some(read_summary(b, off)?);
            }
            (7, Kind::Histogram | Kind::GaugeHistogram) => {
                let (b, off) = expect_bytes(w, at, "histogram")?;
                m.histogram = Some(RawHistogram::read(b, off)?);
            }
            (6, _) => m.timestamp_ms = expect_varint(w, at, "timestamp_ms")? as i64,
            _ => {} // a value of another kind, as Prometheus ignores it
        }
    }
    Ok(m)
}

/// A `MetricFamily` as read: name and kind; its metrics are read in a second pass over
/// the message (the type may follow them), so none is held before its turn.
struct RawFamily<'a> {
    name: &'a str,
    kind: Kind,
    has_metrics: bool,
}

fn read_family(b: &[u8], base: usize) -> Result<RawFamily<'_>, ProtoError> {
    let (mut name, mut kind_number, mut has_metrics) = ("", 0u64, false);
    let mut f = Fields::new(b, base);
    while let Some((n, w, at)) = f.next_field()? {
        match n {
            1 => name = expect_str(w, at, "metric family name")?,
            2 => {
                expect_str(w, at, "help")?;
            }
            3 => kind_number = expect_varint(w, at, "type")?,
            4 => {
                expect_bytes(w, at, "metric")?;
                has_metrics = true;
            }
            _ => {}
        }
    }
    let Some(kind) = Kind::from_number(kind_number) else {
        return fail(
            base,
            format!("unknown metric type {kind_number} for metric {name:?}"),
        );
    };
    if has_metrics && !is_metric_name(name) {
        return fail(base, format!("invalid metric name {name:?}"));
    }
    Ok(RawFamily {
        name,
        kind,
        has_metrics,
    })
}

// ---- samples ----

/// Builds the series text of each sample and hands the samples out.
struct Emitter<'f, E, F> {
    f: &'f mut F,
    key: String,
    count: usize,
    budget: usize,
    _e: std::marker::PhantomData<E>,
}

impl<E: From<ProtoError>, F: FnMut(Sample<'_>) -> Result<(), E>> Emitter<'_, E, F> {
    fn emit(
        &mut self,
        name: &str,
        suffix: &str,
        m: &RawMetric<'_>,
        extra: Option<(&'static str, &str)>,
        value: Value,
        offset: usize,
    ) -> Result<(), E> {
        self.key.clear();
        self.key.push_str(name);
        self.key.push_str(suffix);
        self.key.push('{');
        let mut first = true;
        for (k, v) in m.labels.iter().copied().chain(extra) {
            if !first {
                self.key.push(',');
            }
            first = false;
            self.key.push_str(k);
            self.key.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.key.push_str("\\\\"),
                    '"' => self.key.push_str("\\\""),
                    '\n' => self.key.push_str("\\n"),
                    c => self.key.push(c),
                }
            }
            self.key.push('"');
        }
        self.key.push('}');
        if self.key.len() > self.budget {
            let e = ProtoError {
                offset,
                message: "the body's series (labels repeated on every bucket and quantile) \
                          would take more than 16 times its size"
                    .into(),
            };
            return Err(e.into());
        }
        self.budget -= self.key.len();
        let full_name = format!("{name}{suffix}");
        let sample = Sample {
            series: &self.key,
            value,
            timestamp_ms: (m.timestamp_ms != 0).then_some(m.timestamp_ms),
            name: &full_name,
            pairs: &m.labels,
            extra,
            offset,
        };
        (self.f)(sample)?;
        self.count += 1;
        Ok(())
    }
}

/// `v` as Prometheus writes an `le` or `quantile` value (`FormatOpenMetricsFloat`: Go's
/// shortest form, with `.0` added to a whole number).
pub fn format_bound(v: f64) -> String {
    let s = lookout_promql::gofmt::go_fmt_v(v);
    if v.is_finite() && !s.contains(['.', 'e']) {
        s + ".0"
    } else {
        s
    }
}

/// Calls `f` with every sample of `body`, in order, and returns how many there were.
/// Stops with an error ([`STOPPED`]) soon after `stop` is set.
pub fn for_each_sample<E: From<ProtoError>>(
    body: &[u8],
    opts: Options,
    stop: &AtomicBool,
    mut f: impl FnMut(Sample<'_>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut out = Emitter {
        f: &mut f,
        key: String::new(),
        count: 0,
        budget: expansion_budget(body.len()),
        _e: std::marker::PhantomData,
    };
    let mut top = Fields::new(body, 0);
    let mut metrics = 0usize;
    while top.pos < body.len() {
        let at = top.at();
        let len = top.varint()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let start = top.at();
        let msg = top.take(len, "a MetricFamily message").map_err(|mut e| {
            e.offset = at;
            e
        })?;
        let family = read_family(msg, start)?;
        if !family.has_metrics {
            continue;
        }
        let mut fields = Fields::new(msg, start);
        while let Some((n, w, _)) = fields.next_field()? {
            let Wire::Len(b, off) = w else { continue };
            if n != 4 {
                continue;
            }
            if metrics % STOP_CHECK_EVERY == 0 && stop.load(Ordering::Relaxed) {
                return Err(ProtoError {
                    offset: off,
                    message: STOPPED.into(),
                }
                .into());
            }
            metrics += 1;
            let m = read_metric(b, off, family.kind)?;
            metric_samples(&mut out, &family, &m, opts, off)?;
        }
    }
    Ok(out.count)
}

fn metric_samples<E: From<ProtoError>, F: FnMut(Sample<'_>) -> Result<(), E>>(
    out: &mut Emitter<'_, E, F>,
    family: &RawFamily<'_>,
    m: &RawMetric<'_>,
    opts: Options,
    at: usize,
) -> Result<(), E> {
    let name = family.name;
    match family.kind {
        Kind::Counter | Kind::Gauge | Kind::Untyped => {
            out.emit(name, "", m, None, Value::Float(m.value), at)
        }
        Kind::Summary => {
            let empty = RawSummary::default();
            let s = m.summary.as_ref().unwrap_or(&empty);
            out.emit(name, "_count", m, None, Value::Float(s.count as f64), at)?;
            out.emit(name, "_sum", m, None, Value::Float(s.sum), at)?;
            for &(q, v) in &s.quantiles {
                let q = format_bound(q);
                out.emit(name, "", m, Some(("quantile", &q)), Value::Float(v), at)?;
            }
            Ok(())
        }
        Kind::Histogram | Kind::GaugeHistogram => {
            let empty = RawHistogram::default();
            let h = m.histogram.as_ref().unwrap_or(&empty);
            if opts.native_histograms && h.is_native() {
                let gauge = family.kind == Kind::GaugeHistogram;
                let native = h.native(gauge, name, at)?;
                out.emit(name, "", m, None, Value::Histogram(Box::new(native)), at)?;
                if !opts.always_classic || h.buckets.is_empty() {
                    return Ok(());
                }
            }
            if !opts.nhcb {
                return classic_samples(out, name, h, m, at);
            }
            if opts.always_classic {
                classic_samples(out, name, h, m, at)?;
            }
            let nhcb = h.custom_buckets(family.kind == Kind::GaugeHistogram, name, at)?;
            out.emit(name, "", m, None, Value::Histogram(Box::new(nhcb)), at)
        }
    }
}

/// A histogram's `_count`, `_sum` and `_bucket` series, with an `le="+Inf"` bucket of the
/// count when the buckets do not end with one.
fn classic_samples<E: From<ProtoError>, F: FnMut(Sample<'_>) -> Result<(), E>>(
    out: &mut Emitter<'_, E, F>,
    name: &str,
    h: &RawHistogram,
    m: &RawMetric<'_>,
    at: usize,
) -> Result<(), E> {
    out.emit(name, "_count", m, None, Value::Float(h.count()), at)?;
    out.emit(name, "_sum", m, None, Value::Float(h.sample_sum), at)?;
    for &(upper, count) in &h.buckets {
        let le = format_bound(upper);
        out.emit(
            name,
            "_bucket",
            m,
            Some(("le", &le)),
            Value::Float(count),
            at,
        )?;
        if upper == f64::INFINITY {
            return Ok(());
        }
    }
    let inf = Some(("le", "+Inf"));
    out.emit(name, "_bucket", m, inf, Value::Float(h.count()), at)
}

#[cfg(test)]
pub(crate) mod testbody;
#[cfg(test)]
mod tests;
