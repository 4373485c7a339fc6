//! Prometheus remote write (protocol 1.0: a snappy-compressed protobuf `WriteRequest`) for
//! rule outputs in remote mode, like `vmalert -remoteWrite.url` or the Thanos ruler's remote
//! write: recording-rule results, `ALERTS` and `ALERTS_FOR_STATE` reach the server the
//! rules query, so later rules see recorded series and `for` timers can be restored from
//! `ALERTS_FOR_STATE` after a restart.
//!
//! The protobuf messages are a few small ones (`WriteRequest`, `TimeSeries`, `Label`,
//! `Sample`, and `Histogram` with its `BucketSpan`s for native-histogram rule outputs); they
//! are encoded by hand here rather than pulling in a protobuf code generator and its build
//! step. A native histogram is written as a float histogram (`count_float`,
//! `zero_count_float`, absolute `positive_counts`/`negative_counts`), as Prometheus writes
//! its own float histograms; custom-bucket histograms (schema -53) are not sent, since
//! protocol 1.0 has no field for their bounds (Prometheus's `custom_values` is marked as not
//! for remote-write clients). Samples are queued (bounded, oldest dropped, counted) and sent by one
//! background task in batches, in order, with retries and back-off on 5xx and connection
//! errors; a 4xx answer drops the batch, as Prometheus does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lookout_promql::Labels;
use lookout_promql::histogram::{Bucket, CounterResetHint, FloatHistogram};
use lookout_promql::protowire::{put_bytes, put_double, put_key, put_sint, put_uint, put_varint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::datasource::QuerySample;
use crate::notifier::queue::BoundedQueue;
use crate::scrape_config::HttpClientConfig;

/// Where and how to remote-write.
#[derive(Clone, Debug)]
pub struct RemoteWriteConfig {
    /// The receiver, e.g. `http://prometheus:9090/api/v1/write` (Prometheus started with
    /// `--web.enable-remote-write-receiver`), Mimir's `/api/v1/push`, VictoriaMetrics'
    /// `/api/v1/write`.
    pub url: String,
    /// Authentication.
    pub http: HttpClientConfig,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Samples per request (Prometheus: 2000).
    pub max_samples_per_send: usize,
    /// Samples held while the receiver is slow or down; the oldest are dropped beyond it.
    pub capacity: usize,
    /// Attempts per batch on recoverable errors before it is dropped.
    pub max_attempts: usize,
}

impl RemoteWriteConfig {
    /// Defaults: 30 s timeout, 2000 samples per send, 100000 queued, 10 attempts.
    pub fn new(url: impl Into<String>) -> RemoteWriteConfig {
        RemoteWriteConfig {
            url: url.into(),
            http: HttpClientConfig::default(),
            timeout: Duration::from_secs(30),
            max_samples_per_send: 2000,
            capacity: 100_000,
            max_attempts: 10,
        }
    }
}

/// Why remote write could not start.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The URL is not http(s).
    #[error("remote write url {0:?} must start with http:// or https://")]
    Url(String),
    /// Authentication settings conflict.
    #[error("remote write authentication: {0}")]
    Auth(String),
    /// Not called inside a tokio runtime.
    #[error("remote write must be started inside the tokio runtime")]
    NoRuntime,
}

#[derive(Clone, Default)]
struct WriteMetrics {
    sent: Counter,
    failed: Counter,
    histograms_sent: Counter,
    histograms_failed: Counter,
    dropped: Counter,
    pending: Gauge,
}

struct Inner {
    cfg: RemoteWriteConfig,
    client: reqwest::Client,
    queue: BoundedQueue<(QuerySample, i64)>,
    wake: tokio::sync::Notify,
    send_lock: tokio::sync::Mutex<()>,
    last_error: std::sync::Mutex<Option<String>>,
    metrics: WriteMetrics,
}

/// A running remote-write queue; dropping it stops the sender (call
/// [`flush`](Self::flush) first to send what is queued).
pub struct RemoteWriter {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteWriter {
    /// Checks `cfg`, registers the `prometheus_remote_storage_*` metrics and starts the
    /// sender on the current tokio runtime.
    pub fn start(
        cfg: RemoteWriteConfig,
        registry: &mut Registry,
    ) -> Result<RemoteWriter, RemoteWriteError> {
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
            return Err(RemoteWriteError::Url(cfg.url));
        }
        cfg.http.validate().map_err(RemoteWriteError::Auth)?;
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| RemoteWriteError::NoRuntime)?;
        let metrics = WriteMetrics::default();
        registry.register(
            "prometheus_remote_storage_samples",
            "Samples sent to remote storage.",
            metrics.sent.clone(),
        );
        registry.register(
            "prometheus_remote_storage_samples_failed",
            "Samples that failed to be sent to remote storage.",
            metrics.failed.clone(),
        );
        registry.register(
            "prometheus_remote_storage_histograms",
            "Native histograms sent to remote storage.",
            metrics.histograms_sent.clone(),
        );
        registry.register(
            "prometheus_remote_storage_histograms_failed",
            "Native histograms that failed to be sent to remote storage or cannot be (custom buckets).",
            metrics.histograms_failed.clone(),
        );
        registry.register(
            "prometheus_remote_storage_samples_dropped",
            "Samples and native histograms dropped because the remote-write queue was full.",
            metrics.dropped.clone(),
        );
        registry.register(
            "prometheus_remote_storage_samples_pending",
            "Samples and native histograms waiting in the remote-write queue.",
            metrics.pending.clone(),
        );
        let client = reqwest::Client::builder()
            .user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let inner = Arc::new(Inner {
            queue: BoundedQueue::new(cfg.capacity),
            cfg,
            client,
            wake: tokio::sync::Notify::new(),
            send_lock: tokio::sync::Mutex::new(()),
            last_error: std::sync::Mutex::new(None),
            metrics,
        });
        let bg = inner.clone();
        let task = handle.spawn(async move {
            loop {
                bg.wake.notified().await;
                drain(&bg).await;
            }
        });
        Ok(RemoteWriter { inner, task })
    }

    /// Queues `samples` with timestamp `t_ms` for sending.
    pub fn enqueue(&self, samples: &[QuerySample], t_ms: i64) {
        if samples.is_empty() {
            return;
        }
        let (items, custom): (Vec<_>, Vec<_>) = samples
            .iter()
            .map(|s| (s.clone(), t_ms))
            .partition(|(s, _)| {
                !s.histogram
                    .as_ref()
                    .is_some_and(|h| h.uses_custom_buckets())
            });
        if !custom.is_empty() {
            self.inner
                .metrics
                .histograms_failed
                .inc_by(custom.len() as u64);
            tracing::warn!(
                count = custom.len(),
                "custom-bucket histograms cannot be remote-written (protocol 1.0 has no field for their bounds), dropping them"
            );
        }
        let dropped = self.inner.queue.push(items);
        if dropped > 0 {
            self.inner.metrics.dropped.inc_by(dropped as u64);
            tracing::warn!(count = dropped, "remote-write queue full, dropping samples");
        }
        self.inner
            .metrics
            .pending
            .set(self.inner.queue.len() as i64);
        self.inner.wake.notify_one();
    }

    /// Sends everything queued now; `Err` names the last failure since the previous flush,
    /// whether this call or the background sender met it (its samples were dropped).
    pub async fn flush(&self) -> Result<(), String> {
        drain(&self.inner).await;
        match self.inner.last_error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

async fn drain(inner: &Inner) {
    let _guard = inner.send_lock.lock().await;
    let fail = |e: String| {
        if let Ok(mut last) = inner.last_error.lock() {
            *last = Some(e);
        }
    };
    loop {
        let batch = inner.queue.pop_batch(inner.cfg.max_samples_per_send.max(1));
        inner.metrics.pending.set(inner.queue.len() as i64);
        if batch.is_empty() {
            return;
        }
        let histograms = batch.iter().filter(|(s, _)| s.histogram.is_some()).count() as u64;
        let n = batch.len() as u64 - histograms;
        let failed = |e: String| {
            inner.metrics.failed.inc_by(n);
            inner.metrics.histograms_failed.inc_by(histograms);
            fail(e);
        };
        let body = match snap::raw::Encoder::new().compress_vec(&encode_write_request(&batch)) {
            Ok(b) => b,
            Err(e) => {
                failed(format!("snappy: {e}"));
                continue;
            }
        };
        match send_with_retries(inner, body).await {
            Ok(()) => {
                inner.metrics.sent.inc_by(n);
                inner.metrics.histograms_sent.inc_by(histograms);
            }
            Err(e) => {
                tracing::error!(url = %inner.cfg.url, count = n + histograms, error = %e, "remote write failed, dropping samples");
                failed(e);
            }
        }
    }
}

async fn send_with_retries(inner: &Inner, body: Vec<u8>) -> Result<(), String> {
    let mut backoff = Duration::from_millis(30);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req = inner
            .client
            .post(&inner.cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .timeout(inner.cfg.timeout)
            .body(body.clone());
        let req = inner.cfg.http.apply(req).map_err(|e| e.to_string())?;
        let err = match req.send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let text: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(512)
                    .collect();
                let msg = format!("server returned HTTP status {status}: {}", text.trim());
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Err(msg);
                }
                msg
            }
            Err(e) => crate::scrape::target::describe(&e),
        };
        if attempt >= inner.cfg.max_attempts.max(1) {
            return Err(err);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Encodes a `prometheus.WriteRequest`: per distinct label set, in the order given, its
/// samples and histograms. Prometheus's receiver appends a `TimeSeries`' samples before its
/// histograms, so a sample that follows a histogram of the same series (the staleness
/// marker of a histogram series) starts another `TimeSeries` with the same labels: the
/// receiver sees them in their order.
pub fn encode_write_request(samples: &[(QuerySample, i64)]) -> Vec<u8> {
    let mut order: Vec<&Labels> = Vec::new();
    let mut by_series: HashMap<&Labels, Vec<&(QuerySample, i64)>> = HashMap::new();
    for item in samples {
        let l = &item.0.labels;
        by_series
            .entry(l)
            .or_insert_with(|| {
                order.push(l);
                Vec::new()
            })
            .push(item);
    }
    let mut out = Vec::new();
    let mut labels = Vec::new();
    let mut ts = Vec::new();
    let mut tmp = Vec::new();
    for l in order {
        labels.clear();
        for (name, value) in l.iter() {
            tmp.clear();
            put_bytes(&mut tmp, 1, name.as_bytes());
            put_bytes(&mut tmp, 2, value.as_bytes());
            put_bytes(&mut labels, 1, &tmp);
        }
        ts.clear();
        ts.extend_from_slice(&labels);
        let mut has_histograms = false;
        for (s, t) in by_series.get(l).map(Vec::as_slice).unwrap_or(&[]) {
            tmp.clear();
            match &s.histogram {
                Some(h) => {
                    encode_histogram(&mut tmp, h, *t);
                    put_bytes(&mut ts, 4, &tmp);
                    has_histograms = true;
                    continue;
                }
                None if has_histograms => {
                    put_bytes(&mut out, 1, &ts);
                    ts.clear();
                    ts.extend_from_slice(&labels);
                    has_histograms = false;
                }
                None => {}
            }
            put_double(&mut tmp, 1, s.value);
            put_key(&mut tmp, 2, 0);
            put_varint(&mut tmp, *t as u64);
            put_bytes(&mut ts, 2, &tmp);
        }
        put_bytes(&mut out, 1, &ts);
    }
    out
}

/// Encodes a `prometheus.Histogram` (float histogram fields) with timestamp `t`.
fn encode_histogram(out: &mut Vec<u8>, h: &FloatHistogram, t: i64) {
    put_double(out, 2, h.count);
    put_double(out, 3, h.sum);
    put_sint(out, 4, i64::from(h.schema));
    put_double(out, 5, h.zero_threshold);
    put_double(out, 7, h.zero_count);
    encode_buckets(out, 8, 10, &h.negative);
    encode_buckets(out, 11, 13, &h.positive);
    let hint = match h.counter_reset_hint {
        CounterResetHint::Unknown => 0,
        CounterResetHint::Reset => 1,
        CounterResetHint::NotReset => 2,
        CounterResetHint::Gauge => 3,
    };
    put_uint(out, 14, hint);
    put_key(out, 15, 0);
    put_varint(out, t as u64);
}

/// One side's `BucketSpan`s (field `spans_field`) and packed absolute counts
/// (`counts_field`).
fn encode_buckets(out: &mut Vec<u8>, spans_field: u32, counts_field: u32, buckets: &[Bucket]) {
    let mut tmp = Vec::new();
    for span in FloatHistogram::spans(buckets) {
        tmp.clear();
        put_sint(&mut tmp, 1, i64::from(span.offset));
        put_uint(&mut tmp, 2, u64::from(span.length));
        put_bytes(out, spans_field, &tmp);
    }
    if !buckets.is_empty() {
        tmp.clear();
        for b in buckets {
            tmp.extend_from_slice(&b.count.to_le_bytes());
        }
        put_bytes(out, counts_field, &tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(l: &Labels, value: f64) -> QuerySample {
        QuerySample {
            labels: l.clone(),
            value,
            histogram: None,
        }
    }

    #[test]
    fn encodes_protobuf_by_the_book() {
        let l = Labels::new([("__name__", "a")]);
        let buf = encode_write_request(&[(float(&l, 2.0), 1), (float(&l, 3.0), 2)]);
        // WriteRequest.timeseries (1, LEN)
        assert_eq!(buf[0], 0x0a);
        let ts = &buf[2..];
        assert_eq!(buf[1] as usize, ts.len());
        // Label {name: "__name__", value: "a"}
        assert_eq!(&ts[..2], &[0x0a, 13]);
        assert_eq!(&ts[2..4], &[0x0a, 8]);
        assert_eq!(&ts[4..12], b"__name__");
        assert_eq!(&ts[12..15], &[0x12, 1, b'a']);
        // Sample {value: 2.0, timestamp: 1}
        assert_eq!(&ts[15..17], &[0x12, 11]);
        assert_eq!(ts[17], 0x09);
        assert_eq!(&ts[18..26], &2.0f64.to_le_bytes());
        assert_eq!(&ts[26..28], &[0x10, 1]);
        // Negative timestamps use ten-byte varints.
        let neg = encode_write_request(&[(float(&Labels::new([("a", "b")]), 0.0), -1)]);
        assert!(neg.ends_with(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
    }

    /// A protobuf field's value, as the test decoder reads it.
    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64(u64),
        Bytes(Vec<u8>),
    }

    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }

    /// The fields of a message, in order (a decoder independent of the encoder).
    fn fields(mut b: &[u8]) -> Vec<(u64, Field)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = varint(&mut b);
            let value = match key & 7 {
                0 => Field::Varint(varint(&mut b)),
                1 => {
                    let v = u64::from_le_bytes(b[..8].try_into().unwrap());
                    b = &b[8..];
                    Field::Fixed64(v)
                }
                2 => {
                    let n = varint(&mut b) as usize;
                    let v = b[..n].to_vec();
                    b = &b[n..];
                    Field::Bytes(v)
                }
                w => panic!("wire type {w}"),
            };
            out.push((key >> 3, value));
        }
        out
    }

    fn unzigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    fn double(f: &Field) -> f64 {
        match f {
            Field::Fixed64(v) => f64::from_bits(*v),
            other => panic!("not a double: {other:?}"),
        }
    }

    /// A `prometheus.Histogram` decoded back into a histogram and its timestamp.
    fn decode_histogram(b: &[u8]) -> (FloatHistogram, i64) {
        let mut h = FloatHistogram::default();
        let (mut t, mut spans, mut counts) = (0, [vec![], vec![]], [vec![], vec![]]);
        for (field, value) in fields(b) {
            match (field, &value) {
                (2, _) => h.count = double(&value),
                (3, _) => h.sum = double(&value),
                (4, Field::Varint(v)) => h.schema = unzigzag(*v) as i32,
                (5, _) => h.zero_threshold = double(&value),
                (7, _) => h.zero_count = double(&value),
                (8 | 11, Field::Bytes(span)) => {
                    let f = fields(span);
                    let get = |n| match f.iter().find(|(k, _)| *k == n) {
                        Some((_, Field::Varint(v))) => *v,
                        _ => 0,
                    };
                    spans[usize::from(field == 11)].push(lookout_promql::histogram::Span {
                        offset: unzigzag(get(1)) as i32,
                        length: get(2) as u32,
                    });
                }
                (10 | 13, Field::Bytes(packed)) => {
                    counts[usize::from(field == 13)] = packed
                        .chunks(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                }
                (14, Field::Varint(v)) => {
                    h.counter_reset_hint = [
                        CounterResetHint::Unknown,
                        CounterResetHint::Reset,
                        CounterResetHint::NotReset,
                        CounterResetHint::Gauge,
                    ][*v as usize];
                }
                (15, Field::Varint(v)) => t = *v as i64,
                other => panic!("unexpected field {other:?}"),
            }
        }
        h.negative = FloatHistogram::buckets_from_spans(&spans[0], &counts[0]).unwrap();
        h.positive = FloatHistogram::buckets_from_spans(&spans[1], &counts[1]).unwrap();
        (h, t)
    }

    fn histogram(l: &Labels, text: &str) -> QuerySample {
        QuerySample {
            labels: l.clone(),
            value: 0.0,
            histogram: Some(Arc::new(
                lookout_promql::histogram::notation::parse(text).unwrap().h,
            )),
        }
    }

    #[test]
    fn histograms_round_trip_through_a_decoder() {
        let l = Labels::new([("__name__", "h")]);
        let texts = [
            "schema:3 sum:-2.5 count:7.25 z_bucket:0.5 z_bucket_w:0.001 buckets:[1 0.5 0 2] \
             offset:-3 n_buckets:[1 2] n_offset:5 counter_reset_hint:gauge",
            "schema:-4 count:0 sum:0",
            "schema:8 sum:1 count:2 buckets:[1] offset:-274944 n_buckets:[1] n_offset:262145 \
             counter_reset_hint:reset",
        ];
        let batch: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (histogram(&l, t), i as i64 - 1))
            .collect();
        let buf = encode_write_request(&batch);
        let series = fields(&buf);
        assert_eq!(series.len(), 1, "one series");
        let Field::Bytes(ts) = &series[0].1 else {
            panic!("{series:?}")
        };
        let parts = fields(ts);
        assert_eq!(parts[0].0, 1, "labels first");
        let decoded: Vec<_> = parts[1..]
            .iter()
            .map(|(field, value)| {
                assert_eq!(*field, 4, "TimeSeries.histograms");
                let Field::Bytes(b) = value else {
                    panic!("{value:?}")
                };
                decode_histogram(b)
            })
            .collect();
        for ((h, t), (sample, want_t)) in decoded.iter().zip(&batch) {
            assert_eq!(Some(h), sample.histogram.as_deref());
            assert_eq!(t, want_t);
        }
    }

    #[test]
    fn histogram_bytes_by_the_book() {
        // {count:3, sum:1.5, schema:-1, zero_threshold:0, zero_count:1,
        //  positive span {offset:-1, length:2}, counts [1, 1], reset_hint GAUGE, t 5}.
        let l = Labels::new([("a", "b")]);
        let s = histogram(
            &l,
            "schema:-1 count:3 sum:1.5 z_bucket:1 z_bucket_w:0 buckets:[1 1] offset:-1 \
             counter_reset_hint:gauge",
        );
        let buf = encode_write_request(&[(s, 5)]);
        let mut want = vec![0x11];
        want.extend_from_slice(&3.0f64.to_le_bytes());
        want.push(0x19);
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x20, 0x01, 0x29]);
        want.extend_from_slice(&0.0f64.to_le_bytes());
        want.push(0x39);
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x5a, 4, 0x08, 0x01, 0x10, 0x02, 0x6a, 16]);
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&1.0f64.to_le_bytes());
        want.extend_from_slice(&[0x70, 3, 0x78, 5]);
        assert!(buf.ends_with(&want), "{buf:02x?}");
        // TimeSeries: the label (7 bytes), then field 4 holding the histogram.
        assert_eq!(&buf[2..11], &[0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', 0x22]);
        assert_eq!(buf[11] as usize, want.len());
    }

    #[test]
    fn a_sample_after_a_histogram_starts_another_time_series() {
        let l = Labels::new([("__name__", "h")]);
        let other = Labels::new([("__name__", "x")]);
        let marker = lookout_promql::storage::STALE_NAN;
        let batch = [
            (float(&l, 1.0), 1),
            (histogram(&l, "count:1 sum:1 buckets:[1]"), 2),
            (float(&other, 5.0), 2),
            (float(&l, marker), 3),
            (histogram(&l, "count:2 sum:1 buckets:[2]"), 4),
        ];
        let kinds: Vec<Vec<u64>> = fields(&encode_write_request(&batch))
            .iter()
            .map(|(_, ts)| match ts {
                Field::Bytes(b) => fields(b).iter().map(|(k, _)| *k).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Per series in order of appearance: [sample, histogram], then [marker, histogram].
        assert_eq!(kinds, [vec![1, 2, 4], vec![1, 2, 4], vec![1, 2]]);
    }
}
