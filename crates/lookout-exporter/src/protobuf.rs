//! `/metrics` in the protobuf exposition: length-delimited `io.prometheus.client.MetricFamily`
//! messages (client_model's `metrics.proto`), which a Prometheus with
//! `--enable-feature=native-histograms` asks for first, because only this format carries
//! native histograms.
//!
//! The messages are written by hand (no protobuf library): [`Exposition`] writes families
//! one at a time; [`convert_openmetrics`] turns the OpenMetrics text of a
//! `prometheus-client` registry (the exporter's own counters, gauges, histograms and info
//! metrics) into the same messages.

use lookout_promql::protowire::{put_bytes, put_double, put_sint, put_uint, put_varint};

use crate::metrics::Histogram;
use crate::native_histogram::{self, NativeHistogram};

/// The `Content-Type` of [`Exposition::finish`]'s output (client_golang's, which Prometheus
/// picks its protobuf parser by).
pub const CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// client_model's `MetricType`, as the exposition numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `COUNTER`: the family is named with its `_total`.
    Counter = 0,
    /// `GAUGE`.
    Gauge = 1,
    /// `UNTYPED`: OpenMetrics' `unknown`.
    Untyped = 3,
    /// `HISTOGRAM`.
    Histogram = 4,
}

/// Writes the families of one exposition, each as a varint length and a `MetricFamily`.
#[derive(Debug, Default)]
pub struct Exposition {
    out: Vec<u8>,
    /// The family being written: name, help, type and its metrics so far.
    family: Vec<u8>,
    metrics: usize,
    kind: Option<Kind>,
    /// Scratch buffers for the nested messages.
    metric: Vec<u8>,
    inner: Vec<u8>,
    part: Vec<u8>,
}

impl Exposition {
    /// Starts a family (ending the one before).
    pub fn begin(&mut self, name: &str, help: &str, kind: Kind) {
        self.end();
        put_bytes(&mut self.family, 1, name.as_bytes());
        put_bytes(&mut self.family, 2, help.as_bytes());
        put_uint(&mut self.family, 3, kind as u64);
        self.kind = Some(kind);
    }

    /// Ends the current family; one without metrics is left out, as Prometheus would skip it.
    pub fn end(&mut self) {
        if self.metrics > 0 {
            put_varint(&mut self.out, self.family.len() as u64);
            self.out.extend_from_slice(&self.family);
        }
        self.family.clear();
        self.metrics = 0;
        self.kind = None;
    }

    fn start_metric<'a>(&mut self, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.metric.clear();
        for (name, value) in labels {
            self.part.clear();
            put_bytes(&mut self.part, 1, name.as_bytes());
            put_bytes(&mut self.part, 2, value.as_bytes());
            put_bytes(&mut self.metric, 1, &self.part);
        }
    }

    fn end_metric(&mut self) {
        put_bytes(&mut self.family, 4, &self.metric);
        self.metrics += 1;
    }

    /// A counter's, gauge's or untyped metric's sample in the current family.
    pub fn sample<'a>(&mut self, labels: impl IntoIterator<Item = (&'a str, &'a str)>, v: f64) {
        let field = match self.kind {
            Some(Kind::Counter) => 3,
            Some(Kind::Gauge) => 2,
            Some(Kind::Untyped) => 5,
            Some(Kind::Histogram) | None => return,
        };
        self.start_metric(labels);
        self.inner.clear();
        put_double(&mut self.inner, 1, v);
        put_bytes(&mut self.metric, field, &self.inner);
        self.end_metric();
    }

    /// A histogram in the current family: count, sum and the classic buckets (cumulative
    /// counts by upper bound; the `+Inf` bucket is left out, the count stands for it), and
    /// when `native` is given its schema, zero bucket, spans and deltas beside them.
    pub fn histogram<'a>(
        &mut self,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        classic: &Classic<'_>,
        native: Option<&NativeHistogram>,
    ) {
        if self.kind != Some(Kind::Histogram) {
            return;
        }
        self.start_metric(labels);
        let h = &mut self.inner;
        h.clear();
        put_uint(h, 1, classic.count);
        put_double(h, 2, classic.sum);
        for (upper_bound, cumulative) in classic.buckets {
            if *upper_bound == f64::INFINITY {
                continue;
            }
            self.part.clear();
            put_uint(&mut self.part, 1, *cumulative);
            put_double(&mut self.part, 2, *upper_bound);
            put_bytes(h, 3, &self.part);
        }
        if let Some(native) = native {
            put_sint(h, 5, i64::from(native.schema()));
            put_double(h, 6, native_histogram::ZERO_THRESHOLD);
            put_uint(h, 7, native.zero_count());
            for (spans_field, deltas_field, buckets) in
                [(9, 10, native.negative()), (12, 13, native.positive())]
            {
                let (spans, deltas) = native_histogram::spans_and_deltas(buckets);
                for (offset, length) in spans {
                    self.part.clear();
                    put_sint(&mut self.part, 1, i64::from(offset));
                    put_uint(&mut self.part, 2, u64::from(length));
                    put_bytes(h, spans_field, &self.part);
                }
                if !deltas.is_empty() {
                    // Packed, as proto3 writes repeated numbers.
                    self.part.clear();
                    for delta in deltas {
                        put_varint(&mut self.part, lookout_promql::protowire::zigzag(delta));
                    }
                    put_bytes(h, deltas_field, &self.part);
                }
            }
        }
        put_bytes(&mut self.metric, 7, &self.inner);
        self.end_metric();
    }

    /// Ends the last family and returns the body.
    pub fn finish(mut self) -> Vec<u8> {
        self.end();
        self.out
    }
}

/// A classic histogram's parts: count, sum and `(upper bound, cumulative count)` pairs.
#[derive(Debug)]
pub struct Classic<'a> {
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Cumulative counts by ascending upper bound.
    pub buckets: &'a [(f64, u64)],
}

impl Histogram {
    /// Writes this histogram, its native buckets included, into `out`'s current family.
    pub(crate) fn write_protobuf<'a>(
        &self,
        out: &mut Exposition,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let buckets = self.cumulative_buckets();
        let classic = Classic {
            count: self.count(),
            sum: self.sum(),
            buckets: &buckets,
        };
        out.histogram(labels, &classic, Some(self.native()));
    }
}

/// One histogram metric being converted: its labels (`le` left out) and what it holds.
#[derive(Debug)]
struct PendingHistogram {
    labels: Vec<(String, String)>,
    count: u64,
    sum: f64,
    buckets: Vec<(f64, u64)>,
}

impl PendingHistogram {
    fn write(self, out: &mut Exposition) {
        let classic = Classic {
            count: self.count,
            sum: self.sum,
            buckets: &self.buckets,
        };
        out.histogram(
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &classic,
            None,
        );
    }
}

/// A sample read back from text: name, labels and value.
pub(crate) type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// One sample line of OpenMetrics text: name, labels and value (exemplars and timestamps,
/// which `prometheus-client` writes for none of the exporter's metrics, are ignored).
pub(crate) fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    Some((name, labels, value.parse().ok()?))
}

/// Converts the OpenMetrics text of a `prometheus-client` registry into families of
/// `out`: counters (named with `_total`), gauges, `unknown` as untyped, info metrics as
/// gauges named with `_info` (the protobuf format has no info type) and histograms with
/// their classic buckets. A sample it cannot read, or of a type the exporter does not
/// register (summaries, state sets), is left out and counted in the returned number.
pub fn convert_openmetrics(text: &str, out: &mut Exposition) -> usize {
    let mut skipped = 0;
    let mut help = "";
    let mut family = "";
    let mut kind = None;
    let mut pending: Option<PendingHistogram> = None;
    // The name the current protobuf family was started under.
    let mut started = String::new();
    for line in text.lines() {
        if line == "# EOF" {
            break;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = pending.take() {
                h.write(out);
            }
            out.end();
            started.clear();
            (family, help) = rest.split_once(' ').unwrap_or((rest, ""));
            kind = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind = rest.split_once(' ').map(|(_, t)| t);
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            skipped += 1;
            continue;
        };
        let suffix = name.strip_prefix(family).unwrap_or("?");
        let pairs = || labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match (kind, suffix) {
            (Some("counter"), "_total")
            | (Some("gauge" | "unknown"), "")
            | (Some("info"), "_info") => {
                if started != name {
                    let kind = match kind {
                        Some("counter") => Kind::Counter,
                        Some("unknown") => Kind::Untyped,
                        _ => Kind::Gauge,
                    };
                    out.begin(name, help, kind);
                    started = name.to_string();
                }
                out.sample(pairs(), value);
            }
            (Some("counter"), "_created") => {}
            (Some("histogram"), "_sum" | "_count" | "_bucket") => {
                if started != family {
                    out.begin(family, help, Kind::Histogram);
                    started = family.to_string();
                }
                let (le, labels): (Vec<_>, Vec<_>) =
                    labels.into_iter().partition(|(k, _)| k == "le");
                if suffix == "_sum" {
                    // prometheus-client writes each metric's sum first.
                    if let Some(h) = pending.take() {
                        h.write(out);
                    }
                    pending = Some(PendingHistogram {
                        labels,
                        count: 0,
                        sum: value,
                        buckets: Vec::new(),
                    });
                } else if let Some(h) = pending.as_mut() {
                    if suffix == "_count" {
                        h.count = value as u64;
                    } else if let Some((_, le)) = le.first() {
                        h.buckets
                            .push((le.parse().unwrap_or(f64::NAN), value as u64));
                    }
                } else {
                    skipped += 1;
                }
            }
            _ => skipped += 1,
        }
    }
    if let Some(h) = pending.take() {
        h.write(out);
    }
    out.end();
    skipped
}

#[cfg(test)]
pub(crate) mod decode {
    //! A small reader of the wire format, for the tests: it turns messages back into
    //! fields so the encoder's output can be checked field by field.

    /// One field: its number and value.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Varint(u64),
        Fixed64(u64),
        Bytes(Vec<u8>),
    }

    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (first, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(first & 0x7f) << shift;
            if first & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long")
    }

    /// The fields of one message, in order.
    pub fn fields(mut b: &[u8]) -> Vec<(u32, Value)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut b)),
                1 => {
                    let (v, rest) = b.split_at(8);
                    b = rest;
                    Value::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
                }
                2 => {
                    let len = varint(&mut b) as usize;
                    let (v, rest) = b.split_at(len);
                    b = rest;
                    Value::Bytes(v.to_vec())
                }
                t => panic!("wire type {t}"),
            };
            out.push(((key >> 3) as u32, value));
        }
        out
    }

    /// The messages of a length-delimited stream.
    pub fn delimited(mut b: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = varint(&mut b) as usize;
            let (message, rest) = b.split_at(len);
            out.push(message.to_vec());
            b = rest;
        }
        out
    }

    /// Packed zigzag varints.
    pub fn sints(mut b: &[u8]) -> Vec<i64> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let v = varint(&mut b);
            out.push(((v >> 1) as i64) ^ -((v & 1) as i64));
        }
        out
    }

    /// A decoded `MetricFamily`, enough of it for the tests.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Family {
        pub name: String,
        pub help: String,
        pub kind: u64,
        pub metrics: Vec<Metric>,
    }

    /// A decoded `Metric`.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Metric {
        pub labels: Vec<(String, String)>,
        /// Gauge, counter or untyped value, with the field it came in.
        pub value: Option<(u32, f64)>,
        pub histogram: Option<Histogram>,
    }

    /// A decoded `Histogram`.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Histogram {
        pub count: u64,
        pub sum: f64,
        pub buckets: Vec<(f64, u64)>,
        pub schema: Option<i64>,
        pub zero_threshold: f64,
        pub zero_count: u64,
        pub negative_spans: Vec<(i64, u64)>,
        pub negative_deltas: Vec<i64>,
        pub positive_spans: Vec<(i64, u64)>,
        pub positive_deltas: Vec<i64>,
    }

    fn text(v: &Value) -> String {
        match v {
            Value::Bytes(b) => String::from_utf8(b.clone()).expect("UTF-8"),
            v => panic!("not bytes: {v:?}"),
        }
    }

    fn bytes(v: &Value) -> &[u8] {
        match v {
            Value::Bytes(b) => b,
            v => panic!("not bytes: {v:?}"),
        }
    }

    fn double(v: &Value) -> f64 {
        match v {
            Value::Fixed64(b) => f64::from_bits(*b),
            v => panic!("not fixed64: {v:?}"),
        }
    }

    fn uint(v: &Value) -> u64 {
        match v {
            Value::Varint(u) => *u,
            v => panic!("not varint: {v:?}"),
        }
    }

    fn sint(v: &Value) -> i64 {
        let u = uint(v);
        ((u >> 1) as i64) ^ -((u & 1) as i64)
    }

    fn span(b: &[u8]) -> (i64, u64) {
        let mut span = (0, 0);
        for (field, v) in fields(b) {
            match field {
                1 => span.0 = sint(&v),
                2 => span.1 = uint(&v),
                f => panic!("span field {f}"),
            }
        }
        span
    }

    fn histogram(b: &[u8]) -> Histogram {
        let mut h = Histogram::default();
        for (field, v) in fields(b) {
            match field {
                1 => h.count = uint(&v),
                2 => h.sum = double(&v),
                3 => {
                    let mut bucket = (0.0, 0);
                    for (f, v) in fields(bytes(&v)) {
                        match f {
                            1 => bucket.1 = uint(&v),
                            2 => bucket.0 = double(&v),
                            f => panic!("bucket field {f}"),
                        }
                    }
                    h.buckets.push(bucket);
                }
                5 => h.schema = Some(sint(&v)),
                6 => h.zero_threshold = double(&v),
                7 => h.zero_count = uint(&v),
                9 => h.negative_spans.push(span(bytes(&v))),
                10 => h.negative_deltas.extend(sints(bytes(&v))),
                12 => h.positive_spans.push(span(bytes(&v))),
                13 => h.positive_deltas.extend(sints(bytes(&v))),
                f => panic!("histogram field {f}"),
            }
        }
        h
    }

    /// Decodes one `MetricFamily`, panicking on anything the encoder should not write.
    pub fn family(b: &[u8]) -> Family {
        let mut family = Family::default();
        for (field, v) in fields(b) {
            match field {
                1 => family.name = text(&v),
                2 => family.help = text(&v),
                3 => family.kind = uint(&v),
                4 => {
                    let mut metric = Metric::default();
                    for (f, v) in fields(bytes(&v)) {
                        match f {
                            1 => {
                                let pair = fields(bytes(&v));
                                metric.labels.push((text(&pair[0].1), text(&pair[1].1)));
                            }
                            2 | 3 | 5 => {
                                let inner = fields(bytes(&v));
                                metric.value = Some((f, double(&inner[0].1)));
                            }
                            7 => metric.histogram = Some(histogram(bytes(&v))),
                            f => panic!("metric field {f}"),
                        }
                    }
                    family.metrics.push(metric);
                }
                f => panic!("family field {f}"),
            }
        }
        family
    }

    /// Decodes a whole exposition.
    pub fn exposition(b: &[u8]) -> Vec<Family> {
        delimited(b).iter().map(|m| family(m)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::decode::{self, Value};
    use super::*;

    #[test]
    fn known_bytes_of_a_gauge_family() {
        let mut e = Exposition::default();
        e.begin("up", "h", Kind::Gauge);
        e.sample([("job", "a")], 1.0);
        let body = e.finish();
        let one = 1f64.to_le_bytes();
        let mut expected = vec![
            0x0a, 2, b'u', b'p', // name
            0x12, 1, b'h', // help
            0x18, 1, // type GAUGE
            0x22, 21, // metric
            0x0a, 8, 0x0a, 3, b'j', b'o', b'b', 0x12, 1, b'a', // label job="a"
            0x12, 9, 0x09, // gauge { value }
        ];
        expected.extend_from_slice(&one);
        let mut delimited = vec![expected.len() as u8];
        delimited.extend(expected);
        assert_eq!(body, delimited);
    }

    #[test]
    fn families_without_metrics_are_left_out() {
        let mut e = Exposition::default();
        e.begin("empty", "", Kind::Counter);
        e.begin("x_total", "", Kind::Counter);
        e.sample(std::iter::empty(), 2.5);
        let families = decode::exposition(&e.finish());
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].name, "x_total");
        assert_eq!(families[0].kind, 0);
        assert_eq!(families[0].metrics[0].value, Some((3, 2.5)));
    }

    #[test]
    fn histogram_carries_classic_and_native_buckets() {
        let mut h = Histogram::default();
        for v in [0.003, 0.012, 0.013, 0.2, 0.0, 60.0] {
            h.observe(v);
        }
        let mut e = Exposition::default();
        e.begin("d", "help", Kind::Histogram);
        h.write_protobuf(&mut e, [("instance", "i")]);
        let families = decode::exposition(&e.finish());
        let metric = &families[0].metrics[0];
        assert_eq!(families[0].kind, 4);
        assert_eq!(metric.labels, vec![("instance".into(), "i".into())]);
        let got = metric.histogram.clone().unwrap();
        assert_eq!(got.count, 6);
        assert_eq!(got.sum, h.sum());
        // Eleven finite bounds, cumulative; +Inf is left to the count.
        assert_eq!(got.buckets.len(), 11);
        assert_eq!(got.buckets[0], (0.005, 2));
        assert_eq!(got.buckets[2], (0.025, 4));
        assert_eq!(got.buckets[10], (10.0, 5));
        assert_eq!(got.schema, Some(3));
        assert_eq!(got.zero_threshold, 2f64.powi(-128));
        assert_eq!(got.zero_count, 1);
        // The positive buckets, counted here with the index function.
        let index = native_histogram::schema3_index;
        let mut expected: Vec<(i32, u64)> = Vec::new();
        for v in [0.003, 0.012, 0.013, 0.2, 60.0] {
            match expected.iter_mut().find(|(i, _)| *i == index(v)) {
                Some(b) => b.1 += 1,
                None => expected.push((index(v), 1)),
            }
        }
        expected.sort();
        // Rebuild absolute buckets from the spans and deltas.
        let mut buckets = Vec::new();
        let (mut at, mut count) = (0i64, 0i64);
        let mut deltas = got.positive_deltas.iter();
        for (n, (offset, length)) in got.positive_spans.iter().enumerate() {
            at = if n == 0 { *offset } else { at + offset };
            for _ in 0..*length {
                count += deltas.next().unwrap();
                if count > 0 {
                    buckets.push((at as i32, count as u64));
                }
                at += 1;
            }
        }
        assert_eq!(deltas.next(), None);
        assert_eq!(buckets, expected);
        assert!(got.negative_spans.is_empty() && got.negative_deltas.is_empty());
    }

    #[test]
    fn schema_and_offsets_are_zigzag() {
        let mut h = Histogram::default();
        h.observe(0.01);
        let mut e = Exposition::default();
        e.begin("d", "", Kind::Histogram);
        h.write_protobuf(&mut e, std::iter::empty());
        let family = &decode::delimited(&e.finish())[0];
        let metric = match &decode::fields(family)[3] {
            (4, Value::Bytes(b)) => b.clone(),
            other => panic!("{other:?}"),
        };
        let histogram = match &decode::fields(&metric)[0] {
            (7, Value::Bytes(b)) => b.clone(),
            other => panic!("{other:?}"),
        };
        let fields = decode::fields(&histogram);
        // Schema 3 as a sint32 is 6; the span's offset -53 is 105.
        assert!(fields.contains(&(5, Value::Varint(6))), "{fields:?}");
        let span = fields
            .iter()
            .find_map(|(f, v)| match (f, v) {
                (12, Value::Bytes(b)) => Some(decode::fields(b)),
                _ => None,
            })
            .unwrap();
        assert_eq!(span, vec![(1, Value::Varint(105)), (2, Value::Varint(1))]);
    }

    #[test]
    fn openmetrics_text_converts_by_type() {
        let text = "# HELP a_requests Requests.\n\
                    # TYPE a_requests counter\n\
                    a_requests_total{result=\"ok\"} 3\n\
                    a_requests_total{result=\"q\\\"x\\\\y\\nz\"} 1\n\
                    # HELP temp Temperature.\n\
                    # TYPE temp gauge\n\
                    temp 21.5\n\
                    # HELP build Build.\n\
                    # TYPE build info\n\
                    build_info{version=\"1\"} 1\n\
                    # HELP raw Raw.\n\
                    # TYPE raw unknown\n\
                    raw -2\n\
                    # HELP lat Latency.\n\
                    # TYPE lat histogram\n\
                    lat_sum{p=\"x\"} 1.5\n\
                    lat_count{p=\"x\"} 2\n\
                    lat_bucket{le=\"0.5\",p=\"x\"} 1\n\
                    lat_bucket{le=\"+Inf\",p=\"x\"} 2\n\
                    lat_sum{p=\"y\"} 0.0\n\
                    lat_count{p=\"y\"} 0\n\
                    lat_bucket{le=\"0.5\",p=\"y\"} 0\n\
                    lat_bucket{le=\"+Inf\",p=\"y\"} 0\n\
                    # HELP s States.\n\
                    # TYPE s stateset\n\
                    s{s=\"a\"} 1\n\
                    # EOF\n";
        let mut e = Exposition::default();
        assert_eq!(convert_openmetrics(text, &mut e), 1);
        let families = decode::exposition(&e.finish());
        let names: Vec<(&str, u64)> = families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("a_requests_total", 0),
                ("temp", 1),
                ("build_info", 1),
                ("raw", 3),
                ("lat", 4)
            ]
        );
        assert_eq!(families[0].help, "Requests.");
        assert_eq!(
            families[0].metrics[1].labels,
            vec![("result".into(), "q\"x\\y\nz".into())]
        );
        assert_eq!(families[1].metrics[0].value, Some((2, 21.5)));
        assert_eq!(families[3].metrics[0].value, Some((5, -2.0)));
        let lat = &families[4].metrics;
        assert_eq!(lat.len(), 2);
        assert_eq!(lat[0].labels, vec![("p".into(), "x".into())]);
        let h = lat[0].histogram.as_ref().unwrap();
        assert_eq!(
            (h.count, h.sum, h.buckets.clone()),
            (2, 1.5, vec![(0.5, 1)])
        );
        // Classic only: no schema, no zero bucket, so Prometheus keeps it a classic one.
        assert_eq!((h.schema, h.zero_threshold), (None, 0.0));
        assert_eq!(lat[1].histogram.as_ref().unwrap().count, 0);
    }
}
