//! Delivers alerts from the rule manager to Alertmanagers (API v2) and webhooks, the way
//! Prometheus's `notifier.Manager` does: external labels added (never overriding the
//! alert's own), `alert_relabel_configs` applied, a bounded queue that drops the oldest
//! alerts when full, batches of at most 256 alerts sent to every receiver concurrently with a
//! per-request timeout, and sent/error/dropped counters.
//!
//! Configuration is Prometheus's `alerting` section plus a `webhooks` list:
//!
//! ```yaml
//! alerting:
//!   alert_relabel_configs: []
//!   alertmanagers:
//!     - static_configs: [{targets: ["127.0.0.1:9093"]}]
//!       path_prefix: /
//!       scheme: http
//!       timeout: 10s
//!       api_version: v2
//!   webhooks:
//!     - url: https://hooks.slack.com/services/...
//!       format: slack        # or alertmanager (the webhook payload, default)
//!   # Alertmanager's vocabulary for Lookout's own receivers (see docs/notifications.md):
//!   route: {receiver: ops, group_by: [alertname]}
//!   receivers: [{name: ops, webhook_configs: [{url: ...}], email_configs: [...]}]
//!   inhibit_rules: []
//!   dependency_inhibition: true
//! ```

pub mod alertmanager;
pub mod dispatch;
pub mod email;
pub mod queue;
pub mod route;
pub mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lookout_promql::Labels;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::alert::{Alert, Notify};
use crate::scrape::relabel::{self, RelabelConfig};
use crate::scrape_config::{
    Authorization, BasicAuth, HttpClientConfig, PromDuration, StaticConfig,
};
pub use alertmanager::AlertmanagerClient;
use queue::{BoundedQueue, MAX_BATCH_SIZE};
pub use webhook::{WebhookConfig, WebhookFormat, WebhookSink};

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Connection error or timeout.
    #[error("{0}")]
    Http(String),
    /// The receiver answered with a non-2xx status.
    #[error("bad response status {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The payload could not be encoded.
    #[error("cannot encode alerts: {0}")]
    Encode(String),
    /// A credentials file could not be read.
    #[error("{0}")]
    Credentials(String),
}

/// A receiver of alert batches.
pub trait Sink: Send + Sync {
    /// The name in logs and in the `alertmanager` label of the metrics (the URL for
    /// Alertmanagers).
    fn name(&self) -> &str;

    /// Whether firing alerts muted by inhibition are left out of this sink's batches (the
    /// legacy `webhooks`; Alertmanagers inhibit for themselves).
    fn inhibitable(&self) -> bool {
        false
    }

    /// Delivers one batch (at most 256 alerts); returns how many alerts were actually posted
    /// (a webhook leaves out repeats it already delivered).
    fn deliver<'a>(
        &'a self,
        alerts: &'a [Alert],
    ) -> Pin<Box<dyn Future<Output = Result<usize, DeliveryError>> + Send + 'a>>;
}

/// POSTs a JSON `body` to `url` with the receiver's timeout and credentials, and checks the
/// answer as [`send_checked`] does.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    timeout: std::time::Duration,
    http: &HttpClientConfig,
    body: Vec<u8>,
) -> Result<(), DeliveryError> {
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body);
    let req = http
        .apply(req)
        .map_err(|e| DeliveryError::Credentials(e.to_string()))?;
    send_checked(req).await
}

/// Sends `req` and turns a non-2xx status into [`DeliveryError::Status`].
pub(crate) async fn send_checked(req: reqwest::RequestBuilder) -> Result<(), DeliveryError> {
    let resp = req
        .send()
        .await
        .map_err(|e| DeliveryError::Http(crate::scrape::target::describe(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(512).collect();
    Err(DeliveryError::Status {
        status: status.as_u16(),
        body,
    })
}

/// Alertmanager API version; only v2 exists in current Alertmanagers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    /// `/api/v2/alerts`.
    #[default]
    V2,
}

/// One `alertmanagers` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// `host:port` of each Alertmanager.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Rewrites `__address__`, `__scheme__` and `__alerts_path__` of each Alertmanager;
    /// dropping one removes it.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Prefix of the API path (default `/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// `http` (default) or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// Per-request time limit (default 10s).
    #[serde(default)]
    pub timeout: Option<PromDuration>,
    /// API version (only `v2`).
    #[serde(default)]
    pub api_version: ApiVersion,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Bearer token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<std::path::PathBuf>,
}

/// The `alerting` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    /// Relabelling applied to every alert (after external labels) before it is queued;
    /// dropped alerts are not sent.
    #[serde(default)]
    pub alert_relabel_configs: Vec<RelabelConfig>,
    /// Alertmanagers.
    #[serde(default)]
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Webhooks (a Lookout extension): every alert, posted as it starts, resolves and
    /// every `repeat_interval`, inhibited firing alerts left out.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Routing tree of Lookout's own receivers, Alertmanager's `route`.
    #[serde(default)]
    pub route: Option<route::RouteConfig>,
    /// Named receivers the routes refer to.
    #[serde(default)]
    pub receivers: Vec<dispatch::ReceiverConfig>,
    /// Alertmanager's `inhibit_rules`, applied to Lookout's own receivers.
    #[serde(default)]
    pub inhibit_rules: Vec<route::InhibitRuleConfig>,
    /// Mute a blocked target's alerts while the target it is blocked by has a firing alert
    /// (default true).
    #[serde(default)]
    pub dependency_inhibition: Option<bool>,
}

/// Checks what decoding cannot in `route`, `receivers` and `inhibit_rules`: receivers
/// named by routes exist, receivers are unique, email and webhook settings hold together.
/// An error comes with the path to the offending entry under `alerting` (empty when the
/// message names none).
pub fn check_routing(cfg: &AlertingConfig) -> Result<(), (Vec<PathStep>, String)> {
    if cfg.route.is_none()
        && cfg.receivers.is_empty()
        && cfg.inhibit_rules.is_empty()
        && cfg.webhooks.iter().all(|w| w.send_resolved.is_none())
    {
        return Ok(());
    }
    let mut registry = Registry::default();
    let manager = NotifierManager::new(NotifierOptions::default(), &mut registry);
    manager
        .apply_config(cfg, &Labels::default())
        .map_err(|NotifierConfigError(message)| (error_path(&message), message))
}

/// One step of the path to a configuration entry.
#[derive(Clone, Debug, PartialEq)]
pub enum PathStep {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// The path an error message starts with (`route.routes[0]: ...`,
/// `receivers[1] ("ops").email_configs[0]: ...`).
fn error_path(message: &str) -> Vec<PathStep> {
    let Some((head, _)) = message.split_once(": ") else {
        return Vec::new();
    };
    let mut head = head.to_string();
    // Leave out the quoted receiver names.
    while let (Some(i), Some(j)) = (head.find(" ("), head.find(')')) {
        if j < i {
            break;
        }
        head.replace_range(i..=j, "");
    }
    let mut out = Vec::new();
    for part in head.split('.') {
        let mut rest = part;
        let key_end = rest.find('[').unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Vec::new();
        }
        out.push(PathStep::Key(key.to_string()));
        rest = &rest[key_end..];
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, tail)) = r.split_once(']') else {
                return Vec::new();
            };
            let Ok(i) = n.parse() else {
                return Vec::new();
            };
            out.push(PathStep::Index(i));
            rest = tail;
        }
    }
    out
}

/// Why an `alerting` section is invalid.
#[derive(Debug, thiserror::Error)]
#[error("alerting configuration: {0}")]
pub struct NotifierConfigError(pub String);

/// Settings that come from flags rather than the configuration file.
#[derive(Clone, Debug)]
pub struct NotifierOptions {
    /// `--alertmanager.notification-queue-capacity` (default 10000).
    pub queue_capacity: usize,
    /// The evaluator's external URL (for webhook payloads).
    pub external_url: String,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: queue::DEFAULT_CAPACITY,
            external_url: String::new(),
        }
    }
}

type SinkLabels = Vec<(String, String)>;

#[derive(Clone)]
struct NotifierMetrics {
    sent: Family<SinkLabels, Counter>,
    errors: Family<SinkLabels, Counter>,
    latency: Family<SinkLabels, Histogram>,
    dropped: Counter,
    queue_length: Gauge,
    queue_capacity: Gauge,
    discovered: Gauge,
}

impl NotifierMetrics {
    fn new(registry: &mut Registry, capacity: usize) -> NotifierMetrics {
        let m = NotifierMetrics {
            sent: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            dropped: Counter::default(),
            queue_length: Gauge::default(),
            queue_capacity: Gauge::default(),
            discovered: Gauge::default(),
        };
        m.queue_capacity.set(capacity as i64);
        registry.register(
            "prometheus_notifications_sent",
            "Total number of alerts sent.",
            m.sent.clone(),
        );
        registry.register(
            "prometheus_notifications_errors",
            "Total number of alerts affected by errors when sending them.",
            m.errors.clone(),
        );
        registry.register(
            "prometheus_notifications_latency_seconds",
            "Latency of sending alerts to a receiver.",
            m.latency.clone(),
        );
        registry.register(
            "prometheus_notifications_dropped",
            "Total number of alerts dropped due to errors or a full queue.",
            m.dropped.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_length",
            "The number of alerts in the queue.",
            m.queue_length.clone(),
        );
        registry.register(
            "prometheus_notifications_queue_capacity",
            "The capacity of the alert notifications queue.",
            m.queue_capacity.clone(),
        );
        registry.register(
            "prometheus_notifications_alertmanagers_discovered",
            "The number of alertmanagers discovered and active.",
            m.discovered.clone(),
        );
        m
    }
}

struct Inner {
    queue: BoundedQueue<Alert>,
    wake: tokio::sync::Notify,
    dispatch_wake: Arc<tokio::sync::Notify>,
    dispatcher: RwLock<Arc<dispatch::Dispatcher>>,
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
    relabel: RwLock<Vec<RelabelConfig>>,
    external_labels: RwLock<Labels>,
    external_url: String,
    client: reqwest::Client,
    metrics: NotifierMetrics,
}

/// The notifier: implements [`Notify`] for the rule manager; [`run`](Self::run) delivers.
#[derive(Clone)]
pub struct NotifierManager {
    inner: Arc<Inner>,
}

impl NotifierManager {
    /// A manager with no receivers yet; its metrics go to `registry`.
    pub fn new(opts: NotifierOptions, registry: &mut Registry) -> NotifierManager {
        let metrics = NotifierMetrics::new(registry, opts.queue_capacity);
        let client = reqwest::Client::builder()
            .user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let dispatch_wake = Arc::new(tokio::sync::Notify::new());
        let dispatcher = Arc::new(dispatch::Dispatcher {
            roots: Vec::new(),
            receivers: HashMap::new(),
            inhibitor: route::Inhibitor::new(Vec::new(), true),
            external_url: opts.external_url.clone(),
            state: Arc::default(),
            wake: dispatch_wake.clone(),
            metrics: metrics.clone(),
        });
        NotifierManager {
            inner: Arc::new(Inner {
                queue: BoundedQueue::new(opts.queue_capacity),
                wake: tokio::sync::Notify::new(),
                dispatch_wake,
                dispatcher: RwLock::new(dispatcher),
                sinks: RwLock::new(Vec::new()),
                relabel: RwLock::new(Vec::new()),
                external_labels: RwLock::new(Labels::default()),
                external_url: opts.external_url,
                client,
                metrics,
            }),
        }
    }

    /// Replaces receivers, alert relabelling and external labels (on start and reload).
    /// Queued alerts are kept. On error nothing changes.
    pub fn apply_config(
        &self,
        cfg: &AlertingConfig,
        external_labels: &Labels,
    ) -> Result<(), NotifierConfigError> {
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        for am in &cfg.alertmanagers {
            let http = HttpClientConfig {
                basic_auth: am.basic_auth.clone(),
                authorization: am.authorization.clone(),
                bearer_token: am.bearer_token.clone(),
                bearer_token_file: am.bearer_token_file.clone(),
                follow_redirects: None,
            };
            http.validate().map_err(NotifierConfigError)?;
            let scheme = am.scheme.clone().unwrap_or_else(|| "http".into());
            if scheme != "http" && scheme != "https" {
                return Err(NotifierConfigError(format!(
                    "unsupported scheme {scheme:?}"
                )));
            }
            let prefix = am.path_prefix.clone().unwrap_or_else(|| "/".into());
            let alerts_path = format!("{}/api/v2/alerts", prefix.trim_end_matches('/'));
            let timeout = am.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10));
            for sc in &am.static_configs {
                for address in &sc.targets {
                    let mut pairs: Vec<(String, String)> = sc
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    pairs.push(("__address__".into(), address.clone()));
                    pairs.push(("__scheme__".into(), scheme.clone()));
                    pairs.push(("__alerts_path__".into(), alerts_path.clone()));
                    let Some(l) = relabel::process(&Labels::new(pairs), &am.relabel_configs) else {
                        continue;
                    };
                    let addr = l.get("__address__").unwrap_or("");
                    if addr.is_empty() || addr.contains('/') {
                        return Err(NotifierConfigError(format!(
                            "invalid Alertmanager address {addr:?}"
                        )));
                    }
                    let path = l.get("__alerts_path__").unwrap_or("/api/v2/alerts");
                    let base = format!(
                        "{}://{}{}",
                        l.get("__scheme__").unwrap_or("http"),
                        addr,
                        path.strip_suffix("/api/v2/alerts").unwrap_or(path)
                    );
                    sinks.push(Arc::new(AlertmanagerClient::new(
                        &base,
                        timeout,
                        http.clone(),
                        self.inner.client.clone(),
                    )));
                }
            }
        }
        let discovered = sinks.len();
        for wh in &cfg.webhooks {
            if wh.send_resolved.is_some() {
                return Err(NotifierConfigError(format!(
                    "webhook {:?}: send_resolved belongs to a receiver's webhook_configs; the webhooks list always posts resolutions",
                    wh.url
                )));
            }
            if !(wh.url.starts_with("http://") || wh.url.starts_with("https://")) {
                return Err(NotifierConfigError(format!(
                    "webhook url {:?} must start with http:// or https://",
                    wh.url
                )));
            }
            sinks.push(Arc::new(WebhookSink::new(
                wh,
                &self.inner.external_url,
                self.inner.client.clone(),
            )));
        }
        let dispatcher = self.build_dispatcher(cfg)?;
        if let Ok(mut d) = self.inner.dispatcher.write() {
            *d = Arc::new(dispatcher);
        }
        if let Ok(mut s) = self.inner.sinks.write() {
            *s = sinks;
        }
        if let Ok(mut r) = self.inner.relabel.write() {
            *r = cfg.alert_relabel_configs.clone();
        }
        if let Ok(mut e) = self.inner.external_labels.write() {
            *e = external_labels.clone();
        }
        self.inner.metrics.discovered.set(discovered as i64);
        Ok(())
    }

    fn build_dispatcher(
        &self,
        cfg: &AlertingConfig,
    ) -> Result<dispatch::Dispatcher, NotifierConfigError> {
        let err = |m: String| NotifierConfigError(m);
        let mut receivers = HashMap::new();
        for (i, r) in cfg.receivers.iter().enumerate() {
            if r.name.is_empty() {
                return Err(err(format!("receivers[{i}]: name is required")));
            }
            let built = dispatch::Receiver::build(
                r,
                &self.inner.client,
                &format!("receivers[{i}] ({:?})", r.name),
            )
            .map_err(err)?;
            if receivers.insert(r.name.clone(), Arc::new(built)).is_some() {
                return Err(err(format!(
                    "receivers[{i}]: receiver {:?} is defined twice",
                    r.name
                )));
            }
        }
        let mut roots = Vec::new();
        match &cfg.route {
            Some(rc) => {
                let names = receivers.keys().cloned().collect();
                roots.push(route::Route::build(rc, &names).map_err(err)?);
            }
            None if !cfg.receivers.is_empty() => {
                return Err(err(
                    "receivers are configured but no route sends alerts to them".into(),
                ));
            }
            None => {}
        }
        let mut rules = Vec::new();
        for (i, r) in cfg.inhibit_rules.iter().enumerate() {
            rules.push(route::InhibitRule::build(r, &format!("inhibit_rules[{i}]")).map_err(err)?);
        }
        let inhibitor = route::Inhibitor::new(rules, cfg.dependency_inhibition.unwrap_or(true));
        let state = self
            .inner
            .dispatcher
            .read()
            .map(|d| d.state())
            .unwrap_or_default();
        Ok(dispatch::Dispatcher {
            roots,
            receivers,
            inhibitor,
            external_url: self.inner.external_url.clone(),
            state,
            wake: self.inner.dispatch_wake.clone(),
            metrics: self.inner.metrics.clone(),
        }
        .start())
    }

    fn dispatcher(&self) -> Option<Arc<dispatch::Dispatcher>> {
        self.inner.dispatcher.read().ok().map(|d| d.clone())
    }

    /// Adds extra receivers (tests, embedding programs).
    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        if let Ok(mut s) = self.inner.sinks.write() {
            s.push(sink);
        }
    }

    /// Number of queued alerts.
    pub fn queue_len(&self) -> usize {
        self.inner.queue.len()
    }

    /// Delivers queued alerts until `shutdown` completes, then sends what is still queued
    /// (Prometheus drains on shutdown) and returns.
    pub async fn run<F: Future<Output = ()>>(&self, shutdown: F) {
        tokio::pin!(shutdown);
        loop {
            let deadline = self.dispatcher().and_then(|d| d.next_deadline());
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = self.inner.dispatch_wake.notified() => {}
                _ = sleep => {}
                _ = &mut shutdown => break,
            }
            self.flush().await;
            if let Some(d) = self.dispatcher() {
                d.flush_due();
            }
        }
        self.flush().await;
    }

    /// Sends everything queued now, in batches of at most 256.
    pub async fn flush(&self) {
        loop {
            let batch = self.inner.queue.pop_batch(MAX_BATCH_SIZE);
            self.inner
                .metrics
                .queue_length
                .set(self.inner.queue.len() as i64);
            if batch.is_empty() {
                return;
            }
            self.send_all(Arc::new(batch)).await;
        }
    }

    async fn send_all(&self, batch: Arc<Vec<Alert>>) {
        let sinks: Vec<Arc<dyn Sink>> = self
            .inner
            .sinks
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        let dispatcher = self.dispatcher();
        if let Some(d) = &dispatcher {
            d.ingest(&batch);
        }
        if sinks.is_empty() {
            return;
        }
        // The legacy webhooks leave out firing alerts that inhibition mutes now.
        let uninhibited: Arc<Vec<Alert>> = match &dispatcher {
            Some(d) if sinks.iter().any(|s| s.inhibitable()) => {
                let muted = d.muted(&batch);
                Arc::new(
                    batch
                        .iter()
                        .zip(muted)
                        .filter(|(_, m)| !m)
                        .map(|(a, _)| a.clone())
                        .collect(),
                )
            }
            _ => batch.clone(),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for sink in sinks {
            let batch = if sink.inhibitable() {
                uninhibited.clone()
            } else {
                batch.clone()
            };
            let metrics = self.inner.metrics.clone();
            tasks.spawn(async move {
                let label = vec![("alertmanager".to_string(), sink.name().to_string())];
                let start = Instant::now();
                let result = sink.deliver(&batch).await;
                metrics
                    .latency
                    .get_or_create(&label)
                    .observe(start.elapsed().as_secs_f64());
                match result {
                    Ok(n) => {
                        metrics.sent.get_or_create(&label).inc_by(n as u64);
                        true
                    }
                    Err(e) => {
                        metrics
                            .errors
                            .get_or_create(&label)
                            .inc_by(batch.len() as u64);
                        tracing::error!(receiver = %sink.name(), count = batch.len(), error = %e, "error sending alerts");
                        false
                    }
                }
            });
        }
        let mut any_ok = false;
        while let Some(r) = tasks.join_next().await {
            any_ok |= r.unwrap_or(false);
        }
        if !any_ok {
            self.inner.metrics.dropped.inc_by(batch.len() as u64);
        }
    }
}

impl Notify for NotifierManager {
    fn send(&self, alerts: Vec<Alert>) {
        let external = self
            .inner
            .external_labels
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        let relabel_cfgs = self
            .inner
            .relabel
            .read()
            .map(|r| r.clone())
            .unwrap_or_default();
        let mut prepared = Vec::with_capacity(alerts.len());
        for mut a in alerts {
            for (k, v) in external.iter() {
                if a.labels.get(k).is_none() {
                    a.labels.set(k, v);
                }
            }
            if !relabel_cfgs.is_empty() {
                match relabel::process(&a.labels, &relabel_cfgs) {
                    Some(l) if !l.is_empty() => a.labels = l,
                    _ => continue,
                }
            }
            prepared.push(a);
        }
        if prepared.is_empty() {
            return;
        }
        let dropped = self.inner.queue.push(prepared);
        if dropped > 0 {
            self.inner.metrics.dropped.inc_by(dropped as u64);
            tracing::warn!(
                count = dropped,
                "alert notification queue full, dropping alerts"
            );
        }
        self.inner
            .metrics
            .queue_length
            .set(self.inner.queue.len() as i64);
        self.inner.wake.notify_one();
    }
}
