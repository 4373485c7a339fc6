//! Prometheus remote write (protocol 1.0: a snappy-compressed protobuf `WriteRequest`) for
//! rule outputs in remote mode, like `vmalert -remoteWrite.url` or the Thanos ruler's remote
//! write: recording-rule results, `ALERTS` and `ALERTS_FOR_STATE` reach the server the
//! rules query, so later rules see recorded series and `for` timers can be restored from
//! `ALERTS_FOR_STATE` after a restart.
//!
//! The protobuf messages are four small ones (`WriteRequest`, `TimeSeries`, `Label`,
//! `Sample`); they are encoded by hand here rather than pulling in a protobuf code generator
//! and its build step. Samples are queued (bounded, oldest dropped, counted) and sent by one
//! background task in batches, in order, with retries and back-off on 5xx and connection
//! errors; a 4xx answer drops the batch, as Prometheus does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lookout_promql::Labels;
use lookout_promql::protowire::{put_bytes, put_key, put_varint};
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
    dropped: Counter,
    pending: Gauge,
}

struct Inner {
    cfg: RemoteWriteConfig,
    client: reqwest::Client,
    queue: BoundedQueue<(Labels, i64, f64)>,
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
            "prometheus_remote_storage_samples_dropped",
            "Samples dropped because the remote-write queue was full.",
            metrics.dropped.clone(),
        );
        registry.register(
            "prometheus_remote_storage_samples_pending",
            "Samples waiting in the remote-write queue.",
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
        // Native-histogram samples are not sent: the queue carries floats only, and a
        // histogram written as its float value (0) would be wrong data.
        let items = samples
            .iter()
            .filter(|s| s.histogram.is_none())
            .map(|s| (s.labels.clone(), t_ms, s.value))
            .collect();
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
        let n = batch.len() as u64;
        let body = match snap::raw::Encoder::new().compress_vec(&encode_write_request(&batch)) {
            Ok(b) => b,
            Err(e) => {
                inner.metrics.failed.inc_by(n);
                fail(format!("snappy: {e}"));
                continue;
            }
        };
        match send_with_retries(inner, body).await {
            Ok(()) => {
                inner.metrics.sent.inc_by(n);
            }
            Err(e) => {
                inner.metrics.failed.inc_by(n);
                tracing::error!(url = %inner.cfg.url, count = n, error = %e, "remote write failed, dropping samples");
                fail(e);
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

/// Encodes a `prometheus.WriteRequest` with one `TimeSeries` per distinct label set, samples
/// in the order given.
pub fn encode_write_request(samples: &[(Labels, i64, f64)]) -> Vec<u8> {
    let mut order: Vec<&Labels> = Vec::new();
    let mut by_series: HashMap<&Labels, Vec<(i64, f64)>> = HashMap::new();
    for (l, t, v) in samples {
        by_series
            .entry(l)
            .or_insert_with(|| {
                order.push(l);
                Vec::new()
            })
            .push((*t, *v));
    }
    let mut out = Vec::new();
    let mut ts = Vec::new();
    let mut tmp = Vec::new();
    for l in order {
        ts.clear();
        for (name, value) in l.iter() {
            tmp.clear();
            put_bytes(&mut tmp, 1, name.as_bytes());
            put_bytes(&mut tmp, 2, value.as_bytes());
            put_bytes(&mut ts, 1, &tmp);
        }
        for (t, v) in by_series.get(l).map(Vec::as_slice).unwrap_or(&[]) {
            tmp.clear();
            put_key(&mut tmp, 1, 1);
            tmp.extend_from_slice(&v.to_bits().to_le_bytes());
            put_key(&mut tmp, 2, 0);
            put_varint(&mut tmp, *t as u64);
            put_bytes(&mut ts, 2, &tmp);
        }
        put_bytes(&mut out, 1, &ts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_protobuf_by_the_book() {
        let l = Labels::new([("__name__", "a")]);
        let buf = encode_write_request(&[(l.clone(), 1, 2.0), (l, 2, 3.0)]);
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
        let neg = encode_write_request(&[(Labels::new([("a", "b")]), -1, 0.0)]);
        assert!(neg.ends_with(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]));
    }
}
