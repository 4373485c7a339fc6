//! One scrape target: its labels (Prometheus's `PopulateLabels`), its URL, and the scrape
//! loop that fetches, parses, relabels and stores its samples with staleness handling.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::storage::{STALE_NAN, Storage};
use tokio::sync::watch;

use super::ScrapeMetrics;
use super::cache::{self, Ingested, Job, ScrapeCache};
use super::protobuf;
use super::relabel::{self, RelabelConfig};
use super::textparse::{self, Format};
use crate::scrape_config::{HttpClientConfig, PromDuration, ScrapeConfig, ScrapeDefaults};

/// The `Accept` header Prometheus sends.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The `Accept` header Prometheus 2.42 sends with native histograms on: the delimited
/// protobuf exposition first, then the text formats.
pub const ACCEPT_HEADER_PROTOBUF: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The exposition format of a scraped body, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    /// Prometheus text or OpenMetrics.
    Text(Format),
    /// Delimited `MetricFamily` messages (`application/vnd.google.protobuf`).
    Protobuf,
}

impl BodyFormat {
    /// The format a `Content-Type` announces, as Prometheus picks its parser: by media type
    /// alone, anything unknown read as Prometheus text.
    pub fn from_content_type(content_type: Option<&str>) -> BodyFormat {
        let media = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        if media.as_deref() == Some("application/vnd.google.protobuf") {
            return BodyFormat::Protobuf;
        }
        BodyFormat::Text(Format::from_content_type(content_type))
    }
}

/// Body size cap when the job sets no `body_size_limit`.
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;

/// Why a target could not be built from its labels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// No `__address__` after relabelling.
    #[error("no address")]
    NoAddress,
    /// The address contains a path or scheme.
    #[error("{0:?} is not a valid hostname")]
    InvalidAddress(String),
    /// `__scrape_interval__` / `__scrape_timeout__` do not parse or are inconsistent.
    #[error("{0}")]
    InvalidInterval(String),
}

/// A target ready to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The job name.
    pub job: String,
    /// Labels attached to every scraped series (no `__`-prefixed labels).
    pub labels: Labels,
    /// The labels before relabelling (`discoveredLabels` in `/api/v1/targets`).
    pub discovered: Labels,
    /// The URL to fetch.
    pub url: String,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout.
    pub timeout: Duration,
}

/// Builds the targets of one job from its `static_configs`, the groups its service
/// discovery found (`discovered`) and its `relabel_configs`; targets dropped by relabelling
/// are left out, invalid ones come back as errors.
pub fn targets_for(
    cfg: &ScrapeConfig,
    defaults: &ScrapeDefaults,
    discovered: &[lookout_discovery::TargetGroup],
) -> Vec<Result<Target, (Labels, TargetError)>> {
    let mut out = Vec::new();
    let statics =
        cfg.static_configs
            .iter()
            .enumerate()
            .map(|(i, g)| lookout_discovery::TargetGroup {
                source: i.to_string(),
                targets: g
                    .targets
                    .iter()
                    .map(|a| BTreeMap::from([("__address__".to_string(), a.clone())]))
                    .collect(),
                labels: g.labels.clone(),
            });
    for group in statics.chain(discovered.iter().cloned()) {
        for pairs in group.merged() {
            let mut lb = Labels::new(pairs);
            let defaults_pairs = [
                ("job", cfg.job_name.clone()),
                (
                    "__scrape_interval__",
                    PromDuration(cfg.interval(defaults)).to_string(),
                ),
                (
                    "__scrape_timeout__",
                    PromDuration(cfg.timeout(defaults)).to_string(),
                ),
                ("__metrics_path__", cfg.metrics_path.clone()),
                ("__scheme__", cfg.scheme.clone()),
            ];
            for (k, v) in defaults_pairs {
                if lb.get(k).is_none() {
                    lb.set(k, &v);
                }
            }
            for (name, values) in &cfg.params {
                let key = format!("__param_{name}");
                if lb.get(&key).is_none()
                    && let Some(first) = values.first()
                {
                    lb.set(&key, first);
                }
            }
            let discovered = lb.clone();
            let Some(lb) = relabel::process(&lb, &cfg.relabel_configs) else {
                continue;
            };
            out.push(build(cfg, lb, discovered.clone()).map_err(|e| (discovered, e)));
        }
    }
    out
}

fn build(cfg: &ScrapeConfig, mut lb: Labels, discovered: Labels) -> Result<Target, TargetError> {
    let address = lb.get("__address__").unwrap_or("").to_string();
    if address.is_empty() {
        return Err(TargetError::NoAddress);
    }
    if address.contains('/') || address.contains('?') {
        return Err(TargetError::InvalidAddress(address));
    }
    let parse = |name: &str| -> Result<Duration, TargetError> {
        let v = lb.get(name).unwrap_or("");
        PromDuration::parse(v)
            .map(|d| d.0)
            .map_err(|e| TargetError::InvalidInterval(format!("{name}: {e}")))
    };
    let interval = parse("__scrape_interval__")?;
    let timeout = parse("__scrape_timeout__")?;
    if interval.is_zero() || timeout.is_zero() {
        return Err(TargetError::InvalidInterval(
            "scrape interval and timeout must be greater than 0".into(),
        ));
    }
    if timeout > interval {
        return Err(TargetError::InvalidInterval(format!(
            "scrape timeout cannot be greater than scrape interval ({} > {})",
            PromDuration(timeout),
            PromDuration(interval)
        )));
    }
    let scheme = lb.get("__scheme__").unwrap_or("http").to_string();
    let path = lb.get("__metrics_path__").unwrap_or("/metrics").to_string();
    // Query parameters: the job's params, overridden by __param_ labels.
    let mut params: BTreeMap<String, Vec<String>> = cfg.params.clone();
    for (k, v) in lb.iter() {
        if let Some(name) = k.strip_prefix("__param_") {
            let entry = params.entry(name.to_string()).or_default();
            if entry.is_empty() {
                entry.push(v.to_string());
            } else {
                entry[0] = v.to_string();
            }
        }
    }
    let mut url = format!("{scheme}://{address}{path}");
    let query: Vec<String> = params
        .iter()
        .flat_map(|(k, vs)| {
            vs.iter()
                .map(move |v| format!("{}={}", encode(k), encode(v)))
        })
        .collect();
    if !query.is_empty() {
        url.push(if path.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
    }
    if lb.get("instance").is_none() {
        lb.set("instance", &address);
    }
    let names: Vec<String> = lb
        .iter()
        .filter(|(k, _)| k.starts_with("__"))
        .map(|(k, _)| k.to_string())
        .collect();
    for n in names {
        lb.remove(&n);
    }
    Ok(Target {
        job: cfg.job_name.clone(),
        discovered,
        labels: lb,
        url,
        interval,
        timeout,
    })
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Target {
    /// A stable hash of the target (labels and URL), FNV-1a, as Prometheus's `Target.hash`.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::new();
        for (k, v) in self.labels.iter() {
            h.write(k.as_bytes());
            h.write(&[0xff]);
            h.write(v.as_bytes());
            h.write(&[0xff]);
        }
        h.write(self.url.as_bytes());
        h.0
    }

    /// Prometheus's scrape offset: how long to wait before the first scrape so that targets
    /// are spread over the interval but each target keeps a stable phase.
    pub fn offset(&self, now: SystemTime, seed: u64) -> Duration {
        let interval = self.interval.as_nanos().max(1);
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let base = interval - now_ns % interval;
        let offset = u128::from(self.hash() ^ seed) % interval;
        let mut next = base + offset;
        if next > interval {
            next -= interval;
        }
        Duration::from_nanos(next.min(u128::from(u64::MAX)) as u64)
    }
}

/// FNV-1a, 64 bit.
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The health of a target, as `/api/v1/targets` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not scraped yet.
    Unknown,
    /// Last scrape succeeded.
    Up,
    /// Last scrape failed.
    Down,
}

impl Health {
    /// Prometheus's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// What the last scrape of a target did.
#[derive(Clone, Debug)]
pub struct TargetStatus {
    /// The target.
    pub target: Target,
    /// Health after the last scrape.
    pub health: Health,
    /// Error of the last scrape, or (with health up) how many samples the storage's series
    /// limit refused; empty when the scrape succeeded and everything was stored.
    pub last_error: String,
    /// Start of the last scrape.
    pub last_scrape: Option<SystemTime>,
    /// Duration of the last scrape.
    pub last_duration: Duration,
    /// Samples stored by the last scrape.
    pub last_samples: usize,
}

/// Options of a scrape loop that come from its job.
#[derive(Clone)]
pub(crate) struct LoopOptions {
    pub(crate) honor_labels: bool,
    pub(crate) honor_timestamps: bool,
    pub(crate) metric_relabel: Vec<RelabelConfig>,
    pub(crate) sample_limit: usize,
    pub(crate) label_limit: usize,
    pub(crate) label_name_length_limit: usize,
    pub(crate) label_value_length_limit: usize,
    pub(crate) body_size_limit: u64,
    pub(crate) http: HttpClientConfig,
    /// The job's own client when it sets `tls_config`.
    pub(crate) tls: Option<Arc<crate::scrape_tls::ScrapeTls>>,
    /// What the protobuf reader does with histograms (`scrape_native_histograms`,
    /// `always_scrape_classic_histograms`).
    pub(crate) histograms: protobuf::Options,
    /// `native_histogram_bucket_limit` (0: none).
    pub(crate) bucket_limit: usize,
    /// The highest schema `native_histogram_min_bucket_factor` allows.
    pub(crate) max_schema: i32,
}

impl LoopOptions {
    pub(crate) fn from_config(cfg: &ScrapeConfig, defaults: &ScrapeDefaults) -> LoopOptions {
        LoopOptions {
            histograms: protobuf::Options {
                native_histograms: cfg.native_histograms(defaults),
                always_classic: cfg.always_classic(defaults),
                nhcb: cfg.nhcb(defaults),
            },
            bucket_limit: cfg.native_histogram_bucket_limit,
            max_schema: cfg.max_schema(),
            honor_labels: cfg.honor_labels,
            honor_timestamps: cfg.honor_timestamps,
            metric_relabel: cfg.metric_relabel_configs.clone(),
            sample_limit: cfg.sample_limit,
            label_limit: cfg.label_limit,
            label_name_length_limit: cfg.label_name_length_limit,
            label_value_length_limit: cfg.label_value_length_limit,
            body_size_limit: if cfg.body_size_limit.0 == 0 {
                DEFAULT_BODY_SIZE_LIMIT
            } else {
                cfg.body_size_limit.0
            },
            http: cfg.http(),
            tls: cfg
                .tls_config
                .clone()
                .map(|t| Arc::new(crate::scrape_tls::ScrapeTls::new(t))),
        }
    }
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connection, timeout or protocol error.
    #[error("{0}")]
    Http(String),
    /// The target answered with a non-2xx status.
    #[error("server returned HTTP status {0}")]
    Status(reqwest::StatusCode),
    /// The body is larger than `body_size_limit`.
    #[error("body size limit exceeded ({0} bytes)")]
    BodyTooLarge(u64),
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// The body does not parse.
    #[error("parse error: {0}")]
    Parse(#[from] textparse::ParseError),
    /// The protobuf body does not parse.
    #[error("protobuf parse error: {0}")]
    Protobuf(#[from] protobuf::ProtoError),
    /// A native histogram has more buckets than `native_histogram_bucket_limit` even at
    /// the lowest resolution.
    #[error("native histogram bucket limit exceeded: {0}")]
    BucketLimit(String),
    /// More samples than `sample_limit`.
    #[error("sample limit exceeded ({0} > {1})")]
    SampleLimit(usize, usize),
    /// A series has more labels or longer labels than allowed.
    #[error("label limits exceeded: {0}")]
    LabelLimit(String),
    /// Parsing, relabelling and checking the body outlived the scrape timeout.
    #[error(
        "scrape timed out after {}: the body could not be parsed within scrape_timeout",
        PromDuration(*.0)
    )]
    ParseTimeout(Duration),
    /// Credentials could not be read.
    #[error("{0}")]
    Credentials(#[from] crate::scrape_config::CredentialsError),
    /// A `tls_config` file could not be read or used.
    #[error("{0}")]
    Tls(String),
}

/// State shared between a scrape loop and its manager.
pub(crate) struct LoopState {
    pub(crate) status: TargetStatus,
    /// Timestamp of the last append, to keep stale markers after it.
    pub(crate) last_t_ms: i64,
    /// The size of the last body read: the next read's first allocation when the response
    /// has no `Content-Length` (the buffer itself is not kept between scrapes).
    pub(crate) last_body_len: usize,
}

/// A running scrape loop.
pub(crate) struct ScrapeLoop {
    pub(crate) state: Arc<Mutex<LoopState>>,
    /// The loop's scrape cache, which also knows the series of its last scrape.
    cache: Arc<Mutex<ScrapeCache>>,
    target: Target,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

pub(crate) struct LoopContext {
    pub(crate) storage: Arc<Storage>,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: ScrapeMetrics,
    pub(crate) offset_seed: u64,
}

impl ScrapeLoop {
    /// Starts scraping `target`; `carried` carries over the series set of a previous loop
    /// for the same target (on reload) so that no stale markers are written in between.
    pub(crate) fn start(
        target: Target,
        opts: Arc<LoopOptions>,
        ctx: Arc<LoopContext>,
        carried: Option<(HashSet<Labels>, i64)>,
    ) -> ScrapeLoop {
        let (series, last_t_ms) = carried.unwrap_or_default();
        let cache = Arc::new(Mutex::new(ScrapeCache::new(series)));
        let state = Arc::new(Mutex::new(LoopState {
            status: TargetStatus {
                target: target.clone(),
                health: Health::Unknown,
                last_error: String::new(),
                last_scrape: None,
                last_duration: Duration::ZERO,
                last_samples: 0,
            },
            last_t_ms,
            last_body_len: 0,
        }));
        let (stop, mut stop_rx) = watch::channel(false);
        let (task_state, task_cache) = (state.clone(), cache.clone());
        // Shared with each scrape's blocking task, which would otherwise copy the target.
        let task_target = Arc::new(target.clone());
        let handle = tokio::spawn(async move {
            let offset = task_target.offset(SystemTime::now(), ctx.offset_seed);
            tokio::select! {
                _ = tokio::time::sleep(offset) => {}
                _ = stop_rx.changed() => return,
            }
            let mut ticker = tokio::time::interval(task_target.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                let scrape = scrape_once(&task_target, &opts, &ctx, &task_state, &task_cache);
                tokio::select! {
                    _ = scrape => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        ScrapeLoop {
            state,
            cache,
            target,
            stop,
            handle,
        }
    }

    /// Stops the loop and waits for it. With `stale`, writes stale markers for every series
    /// of the last scrape (the target went away); otherwise returns them for the next loop.
    pub(crate) async fn stop(self, storage: &Arc<Storage>, stale: bool) -> (HashSet<Labels>, i64) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
        let last = self.state.lock().map(|st| st.last_t_ms).unwrap_or(0);
        let (cache, target, storage) = (self.cache, self.target, storage.clone());
        // A scrape the stop interrupted may still be storing on its blocking thread: the
        // cache is free once it is done (soon: its parse was told to stop).
        let done = tokio::task::spawn_blocking(move || {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            let mut series = cache.last_series();
            if last > 0 {
                series.extend(cache::report_labels(&target));
            }
            if !stale {
                return (series, last);
            }
            let t = now_ms().max(last + 1);
            for s in &series {
                let _ = storage.append(s, t, STALE_NAN);
            }
            (HashSet::new(), t)
        });
        done.await.unwrap_or_default()
    }
}

pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Fetches the body of one scrape; `size_hint` is the last body's size.
async fn fetch(
    target: &Target,
    opts: &LoopOptions,
    client: &reqwest::Client,
    size_hint: usize,
) -> Result<(Vec<u8>, BodyFormat), ScrapeError> {
    let own;
    let client = match &opts.tls {
        Some(tls) => {
            own = tls
                .client(super::client_builder)
                .map_err(ScrapeError::Tls)?;
            &own
        }
        None => client,
    };
    let req = client
        .get(&target.url)
        .header(
            reqwest::header::ACCEPT,
            if opts.histograms.native_histograms {
                ACCEPT_HEADER_PROTOBUF
            } else {
                ACCEPT_HEADER
            },
        )
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", target.timeout.as_secs_f64()),
        )
        .timeout(target.timeout);
    let req = opts.http.apply(req)?;
    let mut resp = req
        .send()
        .await
        .map_err(|e| ScrapeError::Http(describe(&e)))?;
    if !resp.status().is_success() {
        return Err(ScrapeError::Status(resp.status()));
    }
    let format = BodyFormat::from_content_type(
        resp.headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    if let Some(len) = resp.content_length()
        && len > opts.body_size_limit
    {
        return Err(ScrapeError::BodyTooLarge(opts.body_size_limit));
    }
    // Allocated once at its size (checked against the limit above) or the last body's,
    // rather than grown chunk by chunk: each growth copied the body and faulted in fresh
    // pages.
    let limit = usize::try_from(opts.body_size_limit).unwrap_or(usize::MAX);
    let expected = resp
        .content_length()
        .and_then(|len| usize::try_from(len).ok())
        .unwrap_or(size_hint);
    let mut body: Vec<u8> = Vec::new();
    // A reservation the allocator refuses (a job's limit set above the machine's memory,
    // and a target announcing that much) is no error: the body then grows as it arrives,
    // up to the limit.
    let _ = body.try_reserve_exact(expected.min(limit));
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ScrapeError::Http(describe(&e)))?
    {
        if (body.len() + chunk.len()) as u64 > opts.body_size_limit {
            return Err(ScrapeError::BodyTooLarge(opts.body_size_limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, format))
}

/// A reqwest error with its causes, which reqwest's `Display` leaves out.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// The labels of `lookout_scrape_target_up`: the job and the target's `instance`.
pub(crate) fn health_labels(job: &str, labels: &Labels) -> Vec<(String, String)> {
    vec![
        ("scrape_job".to_string(), job.to_string()),
        (
            "instance".to_string(),
            labels.get("instance").unwrap_or("").to_string(),
        ),
    ]
}

/// Target labels merged into a scraped series (Prometheus's `mutateSampleLabels`).
pub(crate) fn merge_target_labels(scraped: &Labels, target: &Labels, honor: bool) -> Labels {
    // The target's few labels are decided against the scraped set plus what was decided
    // so far, then written in one pass: a scraped series can have 200,000 labels, and
    // re-encoding it once per target label is what the scrape timeout cannot interrupt.
    let mut sets: BTreeMap<String, String> = BTreeMap::new();
    let get = |sets: &BTreeMap<String, String>, name: &str| -> Option<String> {
        match sets.get(name) {
            Some(v) => (!v.is_empty()).then(|| v.clone()),
            None => scraped.get(name).map(str::to_string),
        }
    };
    for (name, value) in target.iter() {
        if honor {
            if get(&sets, name).is_none() {
                sets.insert(name.to_string(), value.to_string());
            }
        } else {
            if let Some(existing) = get(&sets, name) {
                let mut exported = format!("exported_{name}");
                while get(&sets, &exported).is_some() {
                    exported = format!("exported_{exported}");
                }
                sets.insert(exported, existing);
            }
            sets.insert(name.to_string(), value.to_string());
        }
    }
    let mut out = scraped.clone();
    out.set_all(sets.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    out
}

pub(crate) fn check_label_limits(l: &Labels, opts: &LoopOptions) -> Result<(), ScrapeError> {
    if opts.label_limit > 0 && l.len() > opts.label_limit {
        return Err(ScrapeError::LabelLimit(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            l.metric_name().unwrap_or(""),
            l.len(),
            opts.label_limit
        )));
    }
    for (k, v) in l.iter() {
        if opts.label_name_length_limit > 0 && k.len() > opts.label_name_length_limit {
            return Err(ScrapeError::LabelLimit(format!(
                "label_name_length_limit exceeded (label name: {k})"
            )));
        }
        if opts.label_value_length_limit > 0 && v.len() > opts.label_value_length_limit {
            return Err(ScrapeError::LabelLimit(format!(
                "label_value_length_limit exceeded (label name: {k})"
            )));
        }
    }
    Ok(())
}

/// Sets its flag when dropped: a parse running on a blocking thread stops soon after the
/// scrape that started it ends, whether it timed out or its loop was stopped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs [`cache::ingest`] on a blocking thread (a body can take far longer than a runtime
/// worker may be held: one series of 200,000 labels is 2.3 MB, a large target 100,000
/// series), with parsing bounded by what is left of the scrape timeout. A parse that runs
/// out of time stops within a few thousand lines; its result is awaited even then, so that
/// the cache (and the stale markers it writes) always follows the scrape.
async fn ingest_off_the_runtime(
    body: Option<(Vec<u8>, BodyFormat)>,
    target: &Arc<Target>,
    opts: &Arc<LoopOptions>,
    ctx: &Arc<LoopContext>,
    cache: &Arc<Mutex<ScrapeCache>>,
    t: i64,
    deadline: tokio::time::Instant,
) -> (Result<Ingested, ScrapeError>, Instant) {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = stop.0.clone();
    let (task_target, task_opts, task_ctx, task_cache) =
        (target.clone(), opts.clone(), ctx.clone(), cache.clone());
    let mut task = tokio::task::spawn_blocking(move || {
        let mut cache = task_cache.lock().unwrap_or_else(|e| e.into_inner());
        let job = Job {
            target: &task_target,
            opts: &task_opts,
            storage: &task_ctx.storage,
            metrics: &task_ctx.metrics,
            t,
            stop: &flag,
        };
        cache::ingest(&mut cache, body, &job)
    });
    let joined = match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => joined,
        Err(_) => {
            stop.0.store(true, Ordering::Relaxed);
            task.await
        }
    };
    joined.unwrap_or_else(|e| {
        let failed = ScrapeError::Http(format!("storing the scrape failed: {e}"));
        (Err(failed), Instant::now())
    })
}

async fn scrape_once(
    target: &Arc<Target>,
    opts: &Arc<LoopOptions>,
    ctx: &Arc<LoopContext>,
    state: &Mutex<LoopState>,
    cache: &Arc<Mutex<ScrapeCache>>,
) {
    let start_wall = SystemTime::now();
    let start = Instant::now();
    let size_hint = state.lock().map_or(0, |st| st.last_body_len);
    let fetched = fetch(target, opts, &ctx.client, size_hint).await;
    let last_t_ms = {
        let Ok(mut st) = state.lock() else {
            return;
        };
        if let Ok((body, _)) = &fetched {
            st.last_body_len = body.len();
        }
        st.last_t_ms
    };
    let t = to_ms(start_wall).max(last_t_ms + 1);
    let deadline = tokio::time::Instant::from_std(start + target.timeout);
    let (body, fetch_err) = match fetched {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e)),
    };
    let (result, parsed) =
        ingest_off_the_runtime(body, target, opts, ctx, cache, t, deadline).await;
    let duration = parsed.duration_since(start);
    let (done, err) = match (fetch_err, result) {
        (Some(e), _) | (None, Err(e)) => (Ingested::default(), Some(e)),
        (None, Ok(done)) => (done, None),
    };
    match err {
        Some(ScrapeError::SampleLimit(..)) => ctx.metrics.exceeded_sample_limit.inc(),
        Some(ScrapeError::BodyTooLarge(..)) => ctx.metrics.exceeded_body_size_limit.inc(),
        Some(ScrapeError::LabelLimit(..)) => ctx.metrics.exceeded_label_limits.inc(),
        Some(ScrapeError::BucketLimit(..)) => ctx.metrics.exceeded_bucket_limit.inc(),
        _ => 0,
    };
    let up = if err.is_none() { 1.0 } else { 0.0 };
    let values = [
        up,
        duration.as_secs_f64(),
        done.scraped as f64,
        done.post_relabel as f64,
        done.added as f64,
    ];
    for (l, value) in cache::report_labels(target).iter().zip(values) {
        // Exempt from --storage.max-series: a full storage must not hide whether a target
        // is up (a few series per configured target, bounded by the configuration).
        if let Err(e) = ctx.storage.append_exempt_from_series_limit(l, t, value) {
            crate::limits::count_append_error(&e);
        }
    }
    let Ok(mut st) = state.lock() else {
        return;
    };
    st.last_t_ms = t;
    st.status.health = if err.is_none() {
        Health::Up
    } else {
        Health::Down
    };
    st.status.last_error = match &err {
        Some(e) => e.to_string(),
        // The scrape worked but part of it was not kept: say so on the targets page.
        None if done.refused > 0 => format!(
            "{} samples of new series refused: the storage holds its limit of {} series (--storage.max-series)",
            done.refused, done.series_limit
        ),
        None => String::new(),
    };
    st.status.last_scrape = Some(start_wall);
    st.status.last_duration = duration;
    st.status.last_samples = done.stored;
    drop(st);
    count_scrape(target, ctx, err.as_ref());
}

/// The scrape's own metrics: the target's health and the job's scrape counters.
fn count_scrape(target: &Target, ctx: &LoopContext, err: Option<&ScrapeError>) {
    let job = target.job.clone();
    ctx.metrics
        .target_up
        .get_or_create(&health_labels(&job, &target.labels))
        .set(i64::from(err.is_none()));
    ctx.metrics
        .scrapes
        .get_or_create(&vec![("scrape_job".to_string(), job.clone())])
        .inc();
    if let Some(e) = err {
        ctx.metrics
            .scrape_failures
            .get_or_create(&vec![("scrape_job".to_string(), job)])
            .inc();
        tracing::debug!(target = %target.url, error = %e, "scrape failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honor_labels_off_renames_conflicts() {
        let scraped = Labels::new([("__name__", "m"), ("job", "inner"), ("exported_job", "x")]);
        let target = Labels::new([("job", "outer"), ("instance", "h:1")]);
        let out = merge_target_labels(&scraped, &target, false);
        assert_eq!(out.get("job"), Some("outer"));
        assert_eq!(out.get("exported_exported_job"), Some("inner"));
        let out = merge_target_labels(&scraped, &target, true);
        assert_eq!(out.get("job"), Some("inner"));
        assert_eq!(out.get("instance"), Some("h:1"));
    }

    #[test]
    fn targets_from_blackbox_pattern() {
        let y = r#"
job_name: blackbox
metrics_path: /probe
params: {module: [http_2xx]}
static_configs: [{targets: ["https://example.org/x?y=1"], labels: {team: web}}]
relabel_configs:
  - {source_labels: [__address__], target_label: __param_target}
  - {source_labels: [__param_target], target_label: instance}
  - {target_label: __address__, replacement: "127.0.0.1:9115"}
"#;
        let cfg: ScrapeConfig = serde_yaml_ng::from_str(y).unwrap();
        let ts = targets_for(&cfg, &ScrapeDefaults::default(), &[]);
        let t = ts[0].as_ref().unwrap();
        assert_eq!(
            t.url,
            "http://127.0.0.1:9115/probe?module=http_2xx&target=https%3A%2F%2Fexample.org%2Fx%3Fy%3D1"
        );
        assert_eq!(
            t.labels,
            Labels::new([
                ("job", "blackbox"),
                ("instance", "https://example.org/x?y=1"),
                ("team", "web")
            ])
        );
        assert_eq!(t.interval, Duration::from_secs(60));
    }

    #[test]
    fn offset_is_within_interval_and_stable() {
        let t = Target {
            job: "j".into(),
            labels: Labels::new([("job", "j")]),
            discovered: Labels::new([("job", "j")]),
            url: "http://127.0.0.1:1/metrics".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let o = t.offset(now, 7);
        assert!(o <= Duration::from_secs(15));
        let later = t.offset(now + Duration::from_secs(15), 7);
        assert_eq!(o, later);
    }
}
