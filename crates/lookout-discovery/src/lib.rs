//! Service discovery shared by `lookout exporter` (`target_groups:`) and `lookout evaluator`
//! (`scrape_configs`): Prometheus's `file_sd_configs`, `http_sd_configs`, `dns_sd_configs`
//! and `kubernetes_sd_configs` ([`kubernetes`]), producing Prometheus's target groups
//! (`__address__` plus `__meta_*` labels), and Prometheus's relabelling ([`relabel`]).
//!
//! [`Discovery`] runs one task per configured provider. Each task keeps the last good list
//! of target groups: a file that cannot be read or parsed, an HTTP response that fails, is
//! too large or does not parse, a DNS lookup that fails, a Kubernetes LIST or WATCH that
//! fails, keeps what that source last gave
//! and counts the failure in Prometheus's metric (`prometheus_sd_file_read_errors_total`,
//! `prometheus_sd_http_failures_total`, `prometheus_sd_dns_lookup_failures_total`,
//! `prometheus_sd_kubernetes_failures_total`).
//! Every input is bounded by [`DiscoveryOptions`]: file and response sizes, targets per
//! source, HTTP time.
//!
//! A provider whose configuration is unchanged across [`Discovery::apply`] keeps running
//! with its state; subscribers ([`Discovery::subscribe`]) are told whenever any provider's
//! groups change.

pub mod dns;
pub mod file;
pub mod http;
pub mod kubernetes;
pub mod relabel;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use dns::DnsSdConfig;
pub use file::FileSdConfig;
pub use http::HttpSdConfig;
pub use kubernetes::KubernetesSdConfig;

/// A group of targets sharing labels, as Prometheus's `targetgroup.Group`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetGroup {
    /// Where the group comes from (`file:index`, `url:index`, the DNS name).
    pub source: String,
    /// One label set per target, each with `__address__`.
    pub targets: Vec<BTreeMap<String, String>>,
    /// Labels of the whole group (the `__meta_*` labels of the provider included).
    pub labels: BTreeMap<String, String>,
}

impl TargetGroup {
    /// Each target's labels merged with the group's (the target's win), as Prometheus
    /// builds a target's discovered labels.
    pub fn merged(&self) -> impl Iterator<Item = BTreeMap<String, String>> + '_ {
        self.targets.iter().map(|t| {
            let mut m = self.labels.clone();
            m.extend(t.iter().map(|(k, v)| (k.clone(), v.clone())));
            m
        })
    }
}

/// The JSON/YAML shape of a target group in a file or an HTTP SD response.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// A label name Prometheus accepts (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turns decoded groups into [`TargetGroup`]s with `meta` (e.g. `__meta_filepath`) added to
/// each group's labels and `source(i)` as their source; checks label names and the target
/// count.
fn into_groups(
    raw: Vec<RawGroup>,
    meta: (&str, &str),
    source: impl Fn(usize) -> String,
    max_targets: usize,
) -> Result<Vec<TargetGroup>, String> {
    let total: usize = raw.iter().map(|g| g.targets.len()).sum();
    if total > max_targets {
        return Err(format!(
            "{total} targets, more than the limit of {max_targets} per source"
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        let mut labels = g.labels.unwrap_or_default();
        if let Some(bad) = labels.keys().find(|k| !is_valid_label_name(k)) {
            return Err(format!("{bad:?} is not a valid label name"));
        }
        labels.insert(meta.0.to_string(), meta.1.to_string());
        out.push(TargetGroup {
            source: source(i),
            targets: g
                .targets
                .into_iter()
                .map(|t| BTreeMap::from([("__address__".to_string(), t)]))
                .collect(),
            labels,
        });
    }
    Ok(out)
}

/// Reads the regular file `path` whole if it has at most `max` bytes (`Ok(None)` when it
/// has more); refuses a FIFO or a device instead of blocking on it
/// ([`lookout_web::files::open_regular`]).
pub(crate) fn read_capped(path: &std::path::Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let (f, _) = lookout_web::files::open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// `host:port`, with brackets around an IPv6 host (Go's `net.JoinHostPort`).
pub(crate) fn join_host_port(host: &str, port: impl fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The client builder of the providers that ask over HTTP (HTTP SD, Kubernetes), with
/// Lookout's user agent.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
}

/// Reads a whole response body, refusing one of more than `max` bytes as soon as it is.
pub(crate) async fn read_body(mut resp: reqwest::Response, max: u64) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(format!("response body larger than the {max}-byte limit"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Deserializes a string through `parse` inside a visitor, so that YAML errors point at the
/// offending scalar rather than at the enclosing mapping.
pub fn deserialize_parsed<'de, D, T, F>(d: D, what: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: Fn(&str) -> Result<T, String>,
{
    struct V<F>(F, &'static str);
    impl<'de, T, F: Fn(&str) -> Result<T, String>> serde::de::Visitor<'de> for V<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.1)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            (self.0)(&v.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            (self.0)(&v.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_any(V(parse, what))
}

/// A Prometheus duration (`30s`, `5m`) in a discovery setting; must be greater than 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdDuration(pub Duration);

impl<'de> Deserialize<'de> for SdDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a duration such as 30s or 5m", |s| {
            match lookout_promql::duration::parse_duration(s) {
                Ok(d) if d.is_zero() => Err("refresh_interval must be greater than 0".into()),
                Ok(d) => Ok(SdDuration(d)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// The discovery settings of one scrape job or exporter target group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SdConfigs {
    /// `file_sd_configs`.
    pub file: Vec<FileSdConfig>,
    /// `http_sd_configs`.
    pub http: Vec<HttpSdConfig>,
    /// `dns_sd_configs`.
    pub dns: Vec<DnsSdConfig>,
    /// `kubernetes_sd_configs`.
    pub kubernetes: Vec<KubernetesSdConfig>,
}

impl SdConfigs {
    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
            && self.http.is_empty()
            && self.dns.is_empty()
            && self.kubernetes.is_empty()
    }

    /// Checks every provider's settings (Prometheus's config validation); the message names
    /// the setting.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.file {
            f.validate()?;
        }
        for h in &self.http {
            h.validate()?;
        }
        for d in &self.dns {
            d.validate()?;
        }
        for k in &self.kubernetes {
            k.validate()?;
        }
        Ok(())
    }
}

/// Bounds and settings of the discovery tasks.
#[derive(Clone, Debug)]
pub struct DiscoveryOptions {
    /// Largest target file read (bytes); a larger file is an error and keeps its last list.
    pub max_file_bytes: u64,
    /// Largest HTTP SD response body (bytes).
    pub max_http_bytes: u64,
    /// Time limit of one HTTP SD request (also capped at the refresh interval).
    pub http_timeout: Duration,
    /// Most targets one source (a file, a response, a DNS name) may list.
    pub max_targets_per_source: usize,
    /// How often target files are checked for changes (modification time, size, inode),
    /// besides the full re-read every `refresh_interval`; the smaller of the two is used.
    pub file_poll_interval: Duration,
    /// Nameservers for `dns_sd_configs` (empty: the system's `/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
}

/// [`DiscoveryOptions::max_file_bytes`]'s default: 16 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;
/// [`DiscoveryOptions::max_http_bytes`]'s default: 16 MiB.
pub const DEFAULT_MAX_HTTP_BYTES: u64 = 16 << 20;
/// [`DiscoveryOptions::max_targets_per_source`]'s default.
pub const DEFAULT_MAX_TARGETS_PER_SOURCE: usize = 100_000;

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_http_bytes: DEFAULT_MAX_HTTP_BYTES,
            http_timeout: Duration::from_secs(30),
            max_targets_per_source: DEFAULT_MAX_TARGETS_PER_SOURCE,
            file_poll_interval: Duration::from_secs(5),
            dns_servers: Vec::new(),
        }
    }
}

/// Discovery metrics, under Prometheus's names.
#[derive(Clone, Debug, Default)]
pub struct DiscoveryMetrics {
    pub(crate) file_read_errors: Counter,
    pub(crate) http_failures: Counter,
    pub(crate) dns_lookups: Counter,
    pub(crate) dns_failures: Counter,
    pub(crate) kubernetes_failures: Counter,
    pub(crate) kubernetes_events: Family<Vec<(String, String)>, Counter>,
    pub(crate) discovered: Family<Vec<(String, String)>, Gauge>,
}

impl DiscoveryMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "prometheus_sd_file_read_errors",
            "The number of File-SD read errors.",
            self.file_read_errors.clone(),
        );
        registry.register(
            "prometheus_sd_http_failures",
            "Number of HTTP service discovery refresh failures.",
            self.http_failures.clone(),
        );
        registry.register(
            "prometheus_sd_dns_lookups",
            "The number of DNS-SD lookups.",
            self.dns_lookups.clone(),
        );
        registry.register(
            "prometheus_sd_dns_lookup_failures",
            "The number of DNS-SD lookup failures.",
            self.dns_failures.clone(),
        );
        registry.register(
            "prometheus_sd_kubernetes_failures",
            "The number of failed WATCH/LIST requests.",
            self.kubernetes_failures.clone(),
        );
        registry.register(
            "prometheus_sd_kubernetes_events",
            "The number of Kubernetes events handled.",
            self.kubernetes_events.clone(),
        );
        registry.register(
            "prometheus_sd_discovered_targets",
            "Current number of discovered targets.",
            self.discovered.clone(),
        );
    }
}

/// One provider's identity: the set it belongs to (job or group name), its place and its
/// settings (a changed setting is a new provider).
type ProviderKey = (String, String, String);

#[derive(Default)]
struct State {
    groups: BTreeMap<ProviderKey, Vec<TargetGroup>>,
    tasks: BTreeMap<ProviderKey, AbortHandle>,
}

/// Runs the discovery providers of named sets (scrape jobs, exporter target groups).
pub struct Discovery {
    options: DiscoveryOptions,
    metrics: DiscoveryMetrics,
    /// Label `name` of `prometheus_sd_discovered_targets` (`scrape`, `exporter`).
    name: &'static str,
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

/// What a provider task hands its results to.
#[derive(Clone)]
pub(crate) struct Sink {
    key: ProviderKey,
    name: &'static str,
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
    metrics: DiscoveryMetrics,
}

impl Sink {
    /// Replaces the provider's groups and tells subscribers when they changed.
    pub(crate) fn publish(&self, groups: Vec<TargetGroup>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.tasks.contains_key(&self.key) && !st.groups.contains_key(&self.key) {
            return; // stopped meanwhile
        }
        if st.groups.get(&self.key) == Some(&groups) {
            return;
        }
        st.groups.insert(self.key.clone(), groups);
        let n: usize = st
            .groups
            .iter()
            .filter(|(k, _)| k.0 == self.key.0)
            .map(|(_, g)| g.iter().map(|g| g.targets.len()).sum::<usize>())
            .sum();
        self.metrics
            .discovered
            .get_or_create(&vec![
                ("config".to_string(), self.key.0.clone()),
                ("name".to_string(), self.name.to_string()),
            ])
            .set(n as i64);
        drop(st);
        self.changed.send_modify(|g| *g += 1);
    }
}

impl Discovery {
    /// A discovery with no providers; `name` is the `name` label of
    /// `prometheus_sd_discovered_targets` (Prometheus: `scrape`, `notify`).
    pub fn new(options: DiscoveryOptions, metrics: DiscoveryMetrics, name: &'static str) -> Self {
        Discovery {
            options,
            metrics,
            name,
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// Makes the running providers match `sets` (name and settings): unchanged providers
    /// keep running with their targets, others start or stop. Needs a Tokio runtime.
    pub fn apply(&self, sets: &[(String, SdConfigs)]) {
        let mut wanted: BTreeMap<ProviderKey, Provider> = BTreeMap::new();
        for (name, sd) in sets {
            for (i, c) in sd.file.iter().enumerate() {
                let key = (name.clone(), format!("file/{i}"), format!("{c:?}"));
                wanted.insert(key, Provider::File(c.clone()));
            }
            for (i, c) in sd.http.iter().enumerate() {
                let key = (name.clone(), format!("http/{i}"), format!("{c:?}"));
                wanted.insert(key, Provider::Http(c.clone()));
            }
            for (i, c) in sd.dns.iter().enumerate() {
                let key = (name.clone(), format!("dns/{i}"), format!("{c:?}"));
                wanted.insert(key, Provider::Dns(c.clone()));
            }
            for (i, c) in sd.kubernetes.iter().enumerate() {
                let key = (name.clone(), format!("kubernetes/{i}"), format!("{c:?}"));
                wanted.insert(key, Provider::Kubernetes(Box::new(c.clone())));
            }
        }
        let mut changed = false;
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let running: Vec<ProviderKey> = st.tasks.keys().cloned().collect();
            for key in running {
                if wanted.remove(&key).is_none() {
                    if let Some(t) = st.tasks.remove(&key) {
                        t.abort();
                    }
                    changed |= st.groups.remove(&key).is_some();
                }
            }
            for (key, provider) in wanted {
                let sink = Sink {
                    key: key.clone(),
                    name: self.name,
                    state: self.state.clone(),
                    changed: self.changed.clone(),
                    metrics: self.metrics.clone(),
                };
                let options = self.options.clone();
                let task = match provider {
                    Provider::File(c) => tokio::spawn(file::run(c, options, sink)),
                    Provider::Http(c) => tokio::spawn(http::run(c, options, sink)),
                    Provider::Dns(c) => tokio::spawn(dns::run(c, options, sink)),
                    Provider::Kubernetes(c) => tokio::spawn(kubernetes::run(*c, options, sink)),
                };
                st.tasks.insert(key, task.abort_handle());
            }
        }
        if changed {
            self.changed.send_modify(|g| *g += 1);
        }
    }

    /// The current target groups of set `name`, in provider order.
    pub fn groups(&self, name: &str) -> Vec<TargetGroup> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.groups
            .iter()
            .filter(|(k, _)| k.0 == name)
            .flat_map(|(_, g)| g.iter().cloned())
            .collect()
    }

    /// A receiver that sees a new value whenever some provider's groups change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stops every provider.
    pub fn stop(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (_, t) in std::mem::take(&mut st.tasks) {
            t.abort();
        }
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Provider {
    File(FileSdConfig),
    Http(HttpSdConfig),
    Dns(DnsSdConfig),
    Kubernetes(Box<KubernetesSdConfig>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_labels_checked_and_meta_added() {
        let raw: Vec<RawGroup> =
            serde_json::from_str(r#"[{"targets":["a:1","b:2"],"labels":{"env":"x"}}]"#).unwrap();
        let g = into_groups(raw, ("__meta_filepath", "f.json"), |i| format!("f:{i}"), 10).unwrap();
        assert_eq!(g[0].source, "f:0");
        assert_eq!(g[0].labels["__meta_filepath"], "f.json");
        let merged: Vec<_> = g[0].merged().collect();
        assert_eq!(merged[1]["__address__"], "b:2");
        assert_eq!(merged[1]["env"], "x");
        let raw: Vec<RawGroup> =
            serde_json::from_str(r#"[{"targets":["a:1"],"labels":{"1x":"y"}}]"#).unwrap();
        assert!(into_groups(raw, ("m", "v"), |i| i.to_string(), 10).is_err());
        let raw: Vec<RawGroup> = serde_json::from_str(r#"[{"targets":["a:1","b:1"]}]"#).unwrap();
        let e = into_groups(raw, ("m", "v"), |i| i.to_string(), 1).unwrap_err();
        assert!(e.contains("limit of 1"), "{e}");
        assert!(serde_json::from_str::<Vec<RawGroup>>(r#"[{"targets":[],"x":1}]"#).is_err());
    }

    async fn wait_for(
        d: &Discovery,
        set: &str,
        f: impl Fn(&[TargetGroup]) -> bool,
    ) -> Vec<TargetGroup> {
        for _ in 0..200 {
            let g = d.groups(set);
            if f(&g) {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out; groups now {:?}", d.groups(set));
    }

    #[tokio::test]
    async fn file_changes_are_seen_and_a_broken_file_keeps_its_last_good_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, r#"[{"targets":["a:1"]}]"#).unwrap();
        let metrics = DiscoveryMetrics::default();
        let d = Discovery::new(
            DiscoveryOptions {
                file_poll_interval: Duration::from_millis(30),
                ..Default::default()
            },
            metrics.clone(),
            "scrape",
        );
        let sd = SdConfigs {
            file: vec![FileSdConfig {
                files: vec![format!("{}/*.json", dir.path().display())],
                refresh_interval: None,
            }],
            ..Default::default()
        };
        let mut rx = d.subscribe();
        d.apply(&[("job".to_string(), sd.clone())]);
        wait_for(&d, "job", |g| g.len() == 1).await;
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        std::fs::write(&path, r#"[{"targets":["a:1"]}, {"targets":["b:2"]}]"#).unwrap();
        wait_for(&d, "job", |g| g.len() == 2).await;
        std::fs::write(&path, r#"[{"targets":["a:1"]}, {"targ"#).unwrap();
        for _ in 0..200 {
            if metrics.file_read_errors.get() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.file_read_errors.get(), 1);
        assert_eq!(d.groups("job").len(), 2, "the last good list stays");
        // Applying the same settings again keeps the provider and its targets.
        d.apply(&[("job".to_string(), sd)]);
        assert_eq!(d.groups("job").len(), 2);
        std::fs::remove_file(&path).unwrap();
        wait_for(&d, "job", |g| g.is_empty()).await;
        d.apply(&[]);
        assert!(d.groups("job").is_empty());
    }
}
