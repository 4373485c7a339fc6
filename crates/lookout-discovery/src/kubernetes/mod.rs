//! `kubernetes_sd_configs`: targets from the Kubernetes API, as Prometheus's
//! `discovery/kubernetes`, with its configuration fields, meta labels and group sources.
//!
//! Each provider lists and watches ([`watch`]) the resources its `role` needs: nodes;
//! services; pods; endpoints or endpoint slices together with services and pods (whose
//! labels are joined to the targets, as Prometheus's informers do); ingresses; and nodes
//! too when `attach_metadata: {node: true}` is set for the pod, endpoints and endpointslice
//! roles. The groups are rebuilt from what the watches hold (at most every
//! [`REBUILD_GAP`]) once every watch has listed once. The API paths are the current ones:
//! `/api/v1`, `discovery.k8s.io/v1` endpoint slices and `networking.k8s.io/v1` ingresses.
//!
//! Without `api_server`, the in-cluster configuration is used, as Prometheus's:
//! `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`, the service account's token and CA.
//! `kubeconfig_file` is refused.
//!
//! Failures count in `prometheus_sd_kubernetes_failures_total`, changes in
//! `prometheus_sd_kubernetes_events_total{role,event}`.

mod client;
mod endpoints;
mod ingress;
mod node;
mod pod;
mod service;
pub mod types;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

pub use client::{BasicAuth, Secret, TlsConfig};
use types::{Node, Object, Pod, Service};
use watch::{Api, Msg, Watch};

use crate::{DiscoveryOptions, Sink, TargetGroup};

/// The shortest time between two rebuilds of the groups.
pub const REBUILD_GAP: Duration = Duration::from_millis(200);

/// Labels of a target or group.
pub(crate) type Labels = BTreeMap<String, String>;

/// `role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    Service,
    Pod,
    Endpoints,
    #[serde(rename = "endpointslice")]
    EndpointSlice,
    Ingress,
}

impl Role {
    /// The name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Service => "service",
            Role::Pod => "pod",
            Role::Endpoints => "endpoints",
            Role::EndpointSlice => "endpointslice",
            Role::Ingress => "ingress",
        }
    }

    /// The roles whose selectors this role accepts (Prometheus's `allowedSelectors`).
    fn allowed_selectors(self) -> &'static [Role] {
        match self {
            Role::Endpoints => &[Role::Pod, Role::Service, Role::Endpoints],
            Role::EndpointSlice => &[Role::Pod, Role::Service, Role::EndpointSlice],
            Role::Node => &[Role::Node],
            Role::Service => &[Role::Service],
            Role::Pod => &[Role::Pod, Role::Node],
            Role::Ingress => &[Role::Ingress],
        }
    }
}

/// A watched resource kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Node,
    Service,
    Pod,
    Endpoints,
    EndpointSlice,
    Ingress,
}

impl Kind {
    /// The role whose selector applies to this kind, and the `role` label of the events
    /// metric.
    fn role(self) -> Role {
        match self {
            Kind::Node => Role::Node,
            Kind::Service => Role::Service,
            Kind::Pod => Role::Pod,
            Kind::Endpoints => Role::Endpoints,
            Kind::EndpointSlice => Role::EndpointSlice,
            Kind::Ingress => Role::Ingress,
        }
    }

    /// The plural resource name.
    fn resource(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Service => "services",
            Kind::Pod => "pods",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslices",
            Kind::Ingress => "ingresses",
        }
    }

    /// The collection's path, in `namespace` or cluster-wide.
    fn path(self, namespace: Option<&str>) -> String {
        let group = match self {
            Kind::EndpointSlice => "/apis/discovery.k8s.io/v1",
            Kind::Ingress => "/apis/networking.k8s.io/v1",
            _ => "/api/v1",
        };
        match namespace {
            Some(ns) => format!("{group}/namespaces/{ns}/{}", self.resource()),
            None => format!("{group}/{}", self.resource()),
        }
    }

    /// Decodes one object of this kind.
    fn parse(self, v: Value) -> Result<Object, String> {
        let r = match self {
            Kind::Node => serde_json::from_value(v).map(Object::Node),
            Kind::Service => serde_json::from_value(v).map(Object::Service),
            Kind::Pod => serde_json::from_value(v).map(Object::Pod),
            Kind::Endpoints => serde_json::from_value(v).map(Object::Endpoints),
            Kind::EndpointSlice => serde_json::from_value(v).map(Object::EndpointSlice),
            Kind::Ingress => serde_json::from_value(v).map(Object::Ingress),
        };
        r.map_err(|e| format!("decoding a {}: {e}", self.resource()))
    }
}

/// `namespaces`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// Also the namespace Lookout runs in (from the service account's files).
    #[serde(default)]
    pub own_namespace: bool,
    /// Namespaces to watch; none (and no `own_namespace`): all.
    #[serde(default)]
    pub names: Vec<String>,
}

/// One `selectors` entry: label and field selectors for one role's resources.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub role: Role,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
}

/// `attach_metadata`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachMetadata {
    /// Adds the node's labels to pod, endpoints and endpointslice targets.
    #[serde(default)]
    pub node: bool,
    /// Refused when true: the namespace's labels are not attached yet.
    #[serde(default)]
    pub namespace: bool,
    /// Refused when true: the pod's deployment is not resolved yet.
    #[serde(default)]
    pub deployment: bool,
    /// Refused when true: the pod's job is not attached yet.
    #[serde(default)]
    pub job: bool,
    /// Refused when true: the pod's cron job is not resolved yet.
    #[serde(default)]
    pub cronjob: bool,
}

impl AttachMetadata {
    fn validate(&self) -> Result<(), String> {
        let unsupported = [
            ("namespace", self.namespace),
            ("deployment", self.deployment),
            ("job", self.job),
            ("cronjob", self.cronjob),
        ];
        match unsupported.iter().find(|(_, on)| *on) {
            Some((name, _)) => Err(format!(
                "attach_metadata.{name} is not supported by Lookout (only attach_metadata.node is)"
            )),
            None => Ok(()),
        }
    }
}

/// One `kubernetes_sd_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSdConfig {
    /// What to discover (required).
    #[serde(default)]
    pub role: Option<Role>,
    /// The API server's URL; without it, the in-cluster configuration.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Refused: not supported.
    #[serde(default)]
    pub kubeconfig_file: Option<PathBuf>,
    #[serde(default)]
    pub namespaces: Namespaces,
    #[serde(default)]
    pub selectors: Vec<Selector>,
    #[serde(default)]
    pub attach_metadata: AttachMetadata,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
}

impl KubernetesSdConfig {
    fn has_client_settings(&self) -> bool {
        self.basic_auth.is_some()
            || self.bearer_token.is_some()
            || self.bearer_token_file.is_some()
            || self.tls_config.is_some()
    }

    /// Checks the settings as Prometheus does (its messages), and refuses what Lookout does
    /// not support.
    pub fn validate(&self) -> Result<(), String> {
        let Some(role) = self.role else {
            return Err(
                "role missing (one of: pod, service, endpoints, endpointslice, node, ingress)"
                    .into(),
            );
        };
        if self.kubeconfig_file.is_some() {
            if self.api_server.is_some() {
                return Err("cannot use 'kubeconfig_file' and 'api_server' simultaneously".into());
            }
            return Err("kubeconfig_file is not supported by Lookout: set api_server with bearer_token_file and tls_config instead".into());
        }
        match &self.api_server {
            Some(_) if self.namespaces.own_namespace => {
                return Err(
                    "cannot use 'api_server' and 'namespaces.own_namespace' simultaneously".into(),
                );
            }
            Some(u) => {
                let url =
                    reqwest::Url::parse(u).map_err(|e| format!("invalid api_server {u:?}: {e}"))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(format!("api_server {u:?}: scheme must be http or https"));
                }
            }
            None if self.has_client_settings() => {
                return Err("to use custom HTTP client configuration please provide the 'api_server' URL explicitly".into());
            }
            None => {}
        }
        let auths = [
            self.basic_auth.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|b| **b).count() > 1
            || (self.bearer_token.is_some() && self.bearer_token_file.is_some())
        {
            return Err(
                "at most one of basic_auth, bearer_token & bearer_token_file must be configured"
                    .into(),
            );
        }
        if let Some(b) = &self.basic_auth {
            if b.password.is_some() && b.password_file.is_some() {
                return Err(
                    "at most one of basic_auth password & password_file must be configured".into(),
                );
            }
        }
        if let Some(t) = &self.tls_config {
            t.validate()?;
        }
        self.attach_metadata.validate()?;
        self.validate_selectors(role)
    }

    fn validate_selectors(&self, role: Role) -> Result<(), String> {
        let mut seen = Vec::new();
        for s in &self.selectors {
            if seen.contains(&s.role) {
                return Err(format!("duplicated selector role: {}", s.role.name()));
            }
            seen.push(s.role);
            let allowed = role.allowed_selectors();
            if !allowed.contains(&s.role) {
                let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
                return Err(format!(
                    "{} role supports only {} selectors",
                    role.name(),
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The kinds the role watches.
    fn kinds(&self, role: Role) -> Vec<Kind> {
        let node = self.attach_metadata.node;
        let mut k = match role {
            Role::Node => vec![Kind::Node],
            Role::Service => vec![Kind::Service],
            Role::Pod => vec![Kind::Pod],
            Role::Endpoints => vec![Kind::Endpoints, Kind::Service, Kind::Pod],
            Role::EndpointSlice => vec![Kind::EndpointSlice, Kind::Service, Kind::Pod],
            Role::Ingress => vec![Kind::Ingress],
        };
        if node && matches!(role, Role::Pod | Role::Endpoints | Role::EndpointSlice) {
            k.push(Kind::Node);
        }
        k
    }

    /// The watches: each kind in each namespace (nodes cluster-wide).
    fn watches(&self, role: Role, namespaces: &[String]) -> Vec<Watch> {
        let mut out = Vec::new();
        for kind in self.kinds(role) {
            let sel = self.selectors.iter().find(|s| s.role == kind.role());
            let one = |namespace: Option<String>| Watch {
                kind,
                namespace,
                label: sel.and_then(|s| s.label.clone()).filter(|s| !s.is_empty()),
                field: sel.and_then(|s| s.field.clone()).filter(|s| !s.is_empty()),
            };
            if kind == Kind::Node || namespaces.is_empty() {
                out.push(one(None));
            } else {
                out.extend(namespaces.iter().map(|ns| one(Some(ns.clone()))));
            }
        }
        out
    }
}

/// Prometheus's `strutil.SanitizeLabelName`: every character outside `[a-zA-Z0-9_]`
/// becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `__meta_kubernetes_<role>_name`, `_label_*`, `_labelpresent_*`, `_annotation_*`,
/// `_annotationpresent_*`.
pub(crate) fn add_object_meta(ls: &mut Labels, role: &str, m: &types::ObjectMeta) {
    let p = format!("__meta_kubernetes_{role}");
    ls.insert(format!("{p}_name"), m.name.clone());
    for (what, map) in [("label", &m.labels), ("annotation", &m.annotations)] {
        for (k, v) in map {
            let k = sanitize(k);
            ls.insert(format!("{p}_{what}_{k}"), v.clone());
            ls.insert(format!("{p}_{what}present_{k}"), "true".into());
        }
    }
}

/// What the watches hold.
#[derive(Default)]
pub(crate) struct Store {
    objects: BTreeMap<Kind, BTreeMap<String, Object>>,
    /// `attach_metadata.node`.
    pub(crate) attach_node: bool,
}

impl Store {
    fn of(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.get(&kind).into_iter().flat_map(|m| m.values())
    }

    fn get(&self, kind: Kind, key: &str) -> Option<&Object> {
        self.objects.get(&kind)?.get(key)
    }

    pub(crate) fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self.get(Kind::Pod, &format!("{namespace}/{name}")) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        match self.get(Kind::Service, &format!("{namespace}/{name}")) {
            Some(Object::Service(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn node(&self, name: &str) -> Option<&Node> {
        match self.get(Kind::Node, name) {
            Some(Object::Node(n)) => Some(n),
            _ => None,
        }
    }
}

/// The groups of `role` from what `store` holds, in source order; `Err` with the target
/// count (at least) as soon as it is over `max_targets`. The endpoints and endpointslice
/// roles, whose targets are products (addresses × ports), count before building.
pub(crate) fn build(
    role: Role,
    store: &Store,
    max_targets: usize,
) -> Result<Vec<TargetGroup>, usize> {
    let kind = match role {
        Role::Node => Kind::Node,
        Role::Service => Kind::Service,
        Role::Pod => Kind::Pod,
        Role::Endpoints => Kind::Endpoints,
        Role::EndpointSlice => Kind::EndpointSlice,
        Role::Ingress => Kind::Ingress,
    };
    let mut groups = Vec::new();
    let mut total = 0usize;
    for o in store.of(kind) {
        let left = max_targets - total;
        let g = match o {
            Object::Node(n) => node::build(n),
            Object::Service(s) => Some(service::build(s)),
            Object::Pod(p) => {
                let attach = store.attach_node.then(|| store.node(&p.spec.node_name));
                Some(pod::build(p, attach))
            }
            Object::Endpoints(e) => Some(
                endpoints::build_endpoints(e, store, left).map_err(|n| total.saturating_add(n))?,
            ),
            Object::EndpointSlice(e) => Some(
                endpoints::build_endpointslice(e, store, left)
                    .map_err(|n| total.saturating_add(n))?,
            ),
            Object::Ingress(i) => Some(ingress::build(i)),
        };
        let Some(g) = g else { continue };
        total = total.saturating_add(g.targets.len());
        if total > max_targets {
            return Err(total);
        }
        groups.push(g);
    }
    groups.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(groups)
}

/// The provider's state while it runs.
struct Provider {
    role: Role,
    store: Store,
    /// The watches that have listed at least once.
    synced: BTreeSet<(Kind, Option<String>)>,
    sink: Sink,
    max_objects: usize,
}

impl Provider {
    fn event(&self, kind: Kind, event: &str) {
        self.sink
            .metrics
            .kubernetes_events
            .get_or_create(&vec![
                ("event".to_string(), event.to_string()),
                ("role".to_string(), kind.role().name().to_string()),
            ])
            .inc();
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Reset {
                kind,
                namespace,
                items,
            } => {
                let map = self.store.objects.entry(kind).or_default();
                let prefix = namespace.as_ref().map(|ns| format!("{ns}/"));
                let in_scope = |k: &String| prefix.as_ref().is_none_or(|p| k.starts_with(p));
                let fresh: BTreeMap<String, Object> =
                    items.into_iter().map(|o| (o.key(), o)).collect();
                let gone: Vec<String> = map
                    .keys()
                    .filter(|k| in_scope(k) && !fresh.contains_key(*k))
                    .cloned()
                    .collect();
                let mut events = Vec::new();
                for k in gone {
                    map.remove(&k);
                    events.push("delete");
                }
                for (k, o) in fresh {
                    events.push(if map.insert(k, o).is_some() {
                        "update"
                    } else {
                        "add"
                    });
                }
                for e in events {
                    self.event(kind, e);
                }
                self.synced.insert((kind, namespace));
            }
            Msg::Put(kind, o) => {
                let map = self.store.objects.entry(kind).or_default();
                let key = o.key();
                if !map.contains_key(&key) && map.len() >= self.max_objects {
                    self.sink.metrics.kubernetes_failures.inc();
                    tracing::error!(
                        resource = kind.resource(),
                        limit = self.max_objects,
                        "Kubernetes service discovery: too many objects; ignoring a new one"
                    );
                    return;
                }
                let e = if map.insert(key, *o).is_some() {
                    "update"
                } else {
                    "add"
                };
                self.event(kind, e);
            }
            Msg::Delete(kind, key) => {
                let map = self.store.objects.entry(kind).or_default();
                if map.remove(&key).is_some() {
                    self.event(kind, "delete");
                }
            }
        }
    }

    /// Rebuilds and publishes the groups (within the target bound).
    fn publish(&self) {
        match build(self.role, &self.store, self.max_objects) {
            Ok(groups) => self.sink.publish(groups),
            Err(n) => {
                self.sink.metrics.kubernetes_failures.inc();
                tracing::error!(
                    targets = n,
                    limit = self.max_objects,
                    "Kubernetes service discovery: more targets than the limit per source; keeping the last good targets"
                );
            }
        }
    }
}

/// The API endpoint and namespaces of `cfg` (in-cluster files under `sa_dir`).
fn connect(
    cfg: &KubernetesSdConfig,
    options: &DiscoveryOptions,
    sa_dir: &Path,
) -> Result<(Api, Vec<String>), String> {
    let (base, settings) = match &cfg.api_server {
        Some(u) => (
            u.trim_end_matches('/').to_string(),
            client::Settings {
                basic_auth: cfg.basic_auth.clone(),
                bearer_token: cfg.bearer_token.clone(),
                bearer_token_file: cfg.bearer_token_file.clone(),
                tls: cfg.tls_config.clone().unwrap_or_default(),
            },
        ),
        None => client::in_cluster(sa_dir)?,
    };
    let mut namespaces = cfg.namespaces.names.clone();
    if cfg.namespaces.own_namespace {
        namespaces.push(client::own_namespace(sa_dir)?);
    }
    namespaces.sort();
    namespaces.dedup();
    let client = settings.client(options.http_timeout)?;
    let api = Api {
        base,
        client,
        settings,
        options: options.clone(),
    };
    Ok((api, namespaces))
}

pub(crate) async fn run(cfg: KubernetesSdConfig, options: DiscoveryOptions, sink: Sink) {
    let Some(role) = cfg.role else { return };
    let mut backoff = Duration::from_secs(1);
    let (api, namespaces) = loop {
        match connect(&cfg, &options, Path::new(client::SERVICE_ACCOUNT_DIR)) {
            Ok(c) => break c,
            Err(e) => {
                sink.metrics.kubernetes_failures.inc();
                tracing::error!(error = %e, "Kubernetes service discovery cannot start");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    let watches = cfg.watches(role, &namespaces);
    let (tx, mut rx) = mpsc::channel(256);
    // Dropped with this task: the watches stop with the provider.
    let mut tasks = tokio::task::JoinSet::new();
    for w in &watches {
        let failures = sink.metrics.kubernetes_failures.clone();
        tasks.spawn(watch::run(api.clone(), w.clone(), tx.clone(), failures));
    }
    drop(tx);
    let mut p = Provider {
        role,
        store: Store {
            attach_node: cfg.attach_metadata.node,
            ..Default::default()
        },
        synced: BTreeSet::new(),
        sink,
        max_objects: options.max_targets_per_source,
    };
    let mut next = tokio::time::Instant::now();
    while let Some(msg) = rx.recv().await {
        p.apply(msg);
        // Gather what else comes before the next rebuild is due.
        while let Ok(Some(msg)) = tokio::time::timeout_at(next, rx.recv()).await {
            p.apply(msg);
        }
        while let Ok(msg) = rx.try_recv() {
            p.apply(msg);
        }
        if p.synced.len() == watches.len() {
            p.publish();
        }
        next = tokio::time::Instant::now() + REBUILD_GAP;
    }
}
