//! Lookout's own Alertmanager-like dispatcher for its receivers (webhooks, email): alerts
//! are routed through the `route` tree into aggregation groups; each group is flushed
//! `group_wait` after it was created, then every `group_interval`; at each flush inhibited
//! alerts are left out, and a receiver is notified only when the group changed (new firing
//! alerts, newly resolved ones for `send_resolved` receivers, everything resolved) or
//! `repeat_interval` has passed — the rules of Alertmanager's `dispatch.go` and
//! `notify/dedup_stage.go`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use serde::Deserialize;
use tokio::time::Instant;

use super::email::{EmailConfig, EmailIntegration};
use super::route::{FiringIndex, Inhibitor, Route, RouteOpts};
use super::webhook::is_firing;
use super::webhook::{WebhookConfig, WebhookFormat, group_payload, slack_text};
use super::{DeliveryError, NotifierMetrics};
use crate::alert::Alert;
use crate::scrape_config::HttpClientConfig;

/// Most aggregation groups kept at once; alerts that would open more are not routed.
pub const MAX_GROUPS: usize = 10_000;
/// Most distinct alerts remembered (for inhibition and grouping).
pub const MAX_ALERTS: usize = 100_000;
/// How long a notification log entry is kept (Alertmanager's `--data.retention` default).
const NFLOG_RETENTION: Duration = Duration::from_secs(120 * 3600);
/// How long a resolved alert is remembered after it resolved.
const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// One named entry of `receivers`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// The name routes refer to.
    pub name: String,
    /// Webhooks, in Lookout's formats.
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    /// Email over SMTP.
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
}

/// What one integration is asked to deliver.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Receiver name.
    pub receiver: String,
    /// Alertmanager-style group key (`{}/{severity="critical"}:{alertname="X"}`).
    pub group_key: String,
    /// The labels the group is keyed on.
    pub group_labels: Labels,
    /// The alerts: firing ones, and resolved ones when the integration wants them.
    pub alerts: Vec<Alert>,
    /// The flush time (firing means `ends_at` after it).
    pub now: SystemTime,
    /// The evaluator's external URL.
    pub external_url: String,
}

/// One way of delivering a notification.
pub trait Integration: Send + Sync {
    /// `webhook` or `email` (for metrics and logs).
    fn kind(&self) -> &'static str;
    /// Whether resolved alerts are delivered.
    fn send_resolved(&self) -> bool;
    /// Delivers `n`.
    fn notify<'a>(
        &'a self,
        n: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
}

/// A webhook inside a receiver.
pub struct WebhookIntegration {
    url: String,
    format: WebhookFormat,
    timeout: Duration,
    max_alerts: usize,
    send_resolved: bool,
    http: HttpClientConfig,
    client: reqwest::Client,
}

impl WebhookIntegration {
    /// A webhook for `cfg`.
    pub fn new(cfg: &WebhookConfig, client: reqwest::Client) -> WebhookIntegration {
        WebhookIntegration {
            url: cfg.url.clone(),
            format: cfg.format,
            timeout: cfg.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(10)),
            max_alerts: cfg.max_alerts,
            send_resolved: cfg.send_resolved.unwrap_or(true),
            http: HttpClientConfig {
                basic_auth: cfg.basic_auth.clone(),
                authorization: cfg.authorization.clone(),
                ..Default::default()
            },
            client,
        }
    }
}

impl Integration for WebhookIntegration {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(
        &'a self,
        n: &'a Notification,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let body = match self.format {
                WebhookFormat::Alertmanager => serde_json::to_vec(&group_payload(
                    &n.receiver,
                    &n.external_url,
                    &n.group_key,
                    &n.group_labels,
                    &n.alerts,
                    self.max_alerts,
                    n.now,
                )),
                WebhookFormat::Slack => {
                    serde_json::to_vec(&serde_json::json!({"text": slack_text(&n.alerts, n.now)}))
                }
            }
            .map_err(|e| DeliveryError::Encode(e.to_string()))?;
            super::post_json(&self.client, &self.url, self.timeout, &self.http, body).await
        })
    }
}

/// A receiver with its integrations.
pub struct Receiver {
    name: String,
    integrations: Vec<Arc<dyn Integration>>,
}

impl Receiver {
    /// Builds and checks `cfg` (`path` names it in errors).
    pub fn build(
        cfg: &ReceiverConfig,
        client: &reqwest::Client,
        path: &str,
    ) -> Result<Receiver, String> {
        let mut integrations: Vec<Arc<dyn Integration>> = Vec::new();
        for (i, w) in cfg.webhook_configs.iter().enumerate() {
            let p = format!("{path}.webhook_configs[{i}]");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "{p}: url {:?} must start with http:// or https://",
                    w.url
                ));
            }
            if w.name.is_some() || w.repeat_interval.is_some() {
                return Err(format!(
                    "{p}: name and repeat_interval belong to the receiver and its route, not to a webhook_configs entry"
                ));
            }
            integrations.push(Arc::new(WebhookIntegration::new(w, client.clone())));
        }
        for (i, e) in cfg.email_configs.iter().enumerate() {
            e.validate()
                .map_err(|m| format!("{path}.email_configs[{i}]: {m}"))?;
            integrations.push(Arc::new(EmailIntegration::new(e.clone())));
        }
        Ok(Receiver {
            name: cfg.name.clone(),
            integrations,
        })
    }
}

/// The notification log entry of one (group, receiver, integration).
#[derive(Clone, Debug)]
struct Sent {
    firing: HashSet<Labels>,
    resolved: HashSet<Labels>,
    at: SystemTime,
}

/// Alertmanager's `DedupStage.needsUpdate`.
fn needs_update(
    entry: Option<&Sent>,
    firing: &HashSet<Labels>,
    resolved: &HashSet<Labels>,
    send_resolved: bool,
    repeat: Duration,
    now: SystemTime,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    e.at + repeat <= now
}

struct Group {
    route_key: String,
    labels: Labels,
    opts: RouteOpts,
    alerts: HashMap<Labels, Alert>,
    next: Instant,
    busy: bool,
}

/// State kept across reloads: the alerts seen and what each receiver was told.
#[derive(Default)]
pub struct DispatchState {
    alerts: HashMap<Labels, Alert>,
    groups: HashMap<(String, String), Group>,
    nflog: HashMap<NflogKey, Sent>,
}

/// Routes, groups, inhibits and notifies.
pub struct Dispatcher {
    pub(super) roots: Vec<Route>,
    pub(super) receivers: HashMap<String, Arc<Receiver>>,
    pub(super) inhibitor: Inhibitor,
    pub(super) external_url: String,
    /// Alerts and the notification log, carried over from the previous configuration.
    pub(super) state: Arc<Mutex<DispatchState>>,
    pub(super) wake: Arc<tokio::sync::Notify>,
    pub(super) metrics: NotifierMetrics,
}

impl Dispatcher {
    /// Routes every remembered alert again into fresh groups (as Alertmanager does on
    /// reload); the notification log is kept, so nothing is notified twice.
    pub(super) fn start(self) -> Dispatcher {
        if let Ok(mut st) = self.state.lock() {
            st.groups.clear();
            let alerts: Vec<Alert> = st.alerts.values().cloned().collect();
            self.route_into(&mut st, &alerts);
        }
        self
    }

    /// The shared state (handed to the next configuration's dispatcher).
    pub(super) fn state(&self) -> Arc<Mutex<DispatchState>> {
        self.state.clone()
    }

    /// Whether any route tree is configured.
    pub fn has_routes(&self) -> bool {
        !self.roots.is_empty()
    }

    /// Remembers `alerts` and puts them into their groups.
    pub fn ingest(&self, alerts: &[Alert]) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let now = SystemTime::now();
        st.alerts.retain(|_, a| {
            is_firing(a, now) || a.ends_at.is_some_and(|e| e + RESOLVED_RETENTION > now)
        });
        st.nflog.retain(|_, s| s.at + NFLOG_RETENTION > now);
        for a in alerts {
            if st.alerts.len() >= MAX_ALERTS && !st.alerts.contains_key(&a.labels) {
                tracing::warn!("more than {MAX_ALERTS} alerts; not routing new ones");
                continue;
            }
            st.alerts.insert(a.labels.clone(), a.clone());
        }
        self.route_into(&mut st, alerts);
        drop(st);
        self.wake.notify_one();
    }

    fn route_into(&self, st: &mut DispatchState, alerts: &[Alert]) {
        let now = Instant::now();
        let wall = SystemTime::now();
        for a in alerts {
            for (ri, root) in self.roots.iter().enumerate() {
                for route in root.routes_for(&a.labels) {
                    let labels = route.group_labels(&a.labels);
                    let key = (
                        format!("{ri}|{}|{}", route.key, route.opts.receiver),
                        labels.to_braced_string(),
                    );
                    if !st.groups.contains_key(&key) {
                        if st.groups.len() >= MAX_GROUPS {
                            tracing::warn!("more than {MAX_GROUPS} alert groups; dropping alert");
                            continue;
                        }
                        // A new group waits group_wait, unless its alert is older than that.
                        let old_enough = a.starts_at + route.opts.group_wait <= wall;
                        let next = if old_enough {
                            now
                        } else {
                            now + route.opts.group_wait
                        };
                        st.groups.insert(
                            key.clone(),
                            Group {
                                route_key: route.key.clone(),
                                labels,
                                opts: route.opts.clone(),
                                alerts: HashMap::new(),
                                next,
                                busy: false,
                            },
                        );
                    }
                    if let Some(g) = st.groups.get_mut(&key) {
                        g.alerts.insert(a.labels.clone(), a.clone());
                    }
                }
            }
        }
    }

    /// For each alert of `alerts`: whether it fires and is muted now.
    pub fn muted(&self, alerts: &[Alert]) -> Vec<bool> {
        let Ok(st) = self.state.lock() else {
            return vec![false; alerts.len()];
        };
        let now = SystemTime::now();
        let idx = FiringIndex::new(st.alerts.values(), now);
        alerts
            .iter()
            .map(|a| is_firing(a, now) && self.inhibitor.mutes(&idx, &a.labels))
            .collect()
    }

    /// When the next group is due (none: no group waits).
    pub fn next_deadline(&self) -> Option<Instant> {
        let st = self.state.lock().ok()?;
        st.groups.values().filter(|g| !g.busy).map(|g| g.next).min()
    }

    /// Starts the flush of every group that is due; returns how many were started.
    pub fn flush_due(self: &Arc<Self>) -> usize {
        let flushes = self.plan_due(Instant::now(), SystemTime::now());
        let n = flushes.len();
        for f in flushes {
            tokio::spawn(self.clone().run_flush(f));
        }
        n
    }

    /// Marks every due group busy and plans its flush: the alerts that are not inhibited,
    /// and the integrations the deduplication says need an update.
    fn plan_due(&self, now: Instant, wall: SystemTime) -> Vec<Flush> {
        let Ok(mut st) = self.state.lock() else {
            return Vec::new();
        };
        let st = &mut *st;
        let due: Vec<(String, String)> = st
            .groups
            .iter()
            .filter(|(_, g)| !g.busy && g.next <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let known: Vec<Alert> = st.alerts.values().cloned().collect();
        let idx = FiringIndex::new(known.iter(), wall);
        let mut flushes = Vec::new();
        for key in due {
            let Some(g) = st.groups.get_mut(&key) else {
                continue;
            };
            g.busy = true;
            g.next = now + g.opts.group_interval;
            // Alertmanager's MuteStage: inhibited alerts are left out.
            let mut alerts: Vec<Alert> = g
                .alerts
                .values()
                .filter(|a| !self.inhibitor.mutes(&idx, &a.labels))
                .cloned()
                .collect();
            alerts.sort_by(|a, b| a.labels.iter().cmp(b.labels.iter()));
            let group_key = format!("{}:{}", g.route_key, g.labels.to_braced_string());
            let snapshot: Vec<Alert> = g.alerts.values().cloned().collect();
            let (labels, repeat) = (g.labels.clone(), g.opts.repeat_interval);
            let Some(receiver) = self.receivers.get(&g.opts.receiver).cloned() else {
                continue;
            };
            let (firing, resolved): (Vec<&Alert>, Vec<&Alert>) =
                alerts.iter().partition(|a| is_firing(a, wall));
            let firing: HashSet<Labels> = firing.into_iter().map(|a| a.labels.clone()).collect();
            let resolved: HashSet<Labels> =
                resolved.into_iter().map(|a| a.labels.clone()).collect();
            let mut sends = Vec::new();
            for (i, integ) in receiver.integrations.iter().enumerate() {
                let nkey = (group_key.clone(), receiver.name.clone(), i);
                let entry = st.nflog.get(&nkey);
                if !needs_update(
                    entry,
                    &firing,
                    &resolved,
                    integ.send_resolved(),
                    repeat,
                    wall,
                ) {
                    continue;
                }
                let to_send: Vec<Alert> = alerts
                    .iter()
                    .filter(|a| integ.send_resolved() || is_firing(a, wall))
                    .cloned()
                    .collect();
                sends.push(Delivery {
                    index: i,
                    integ: integ.clone(),
                    nkey,
                    alerts: to_send,
                });
            }
            flushes.push(Flush {
                key,
                group_key,
                labels,
                receiver,
                firing,
                resolved,
                sends,
                snapshot,
                wall,
            });
        }
        flushes
    }

    /// Delivers a planned flush to its integrations at once, then records it.
    async fn run_flush(self: Arc<Self>, mut f: Flush) {
        let mut all_ok = true;
        let mut done = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for Delivery {
            index: i,
            integ,
            nkey,
            alerts: to_send,
        } in std::mem::take(&mut f.sends)
        {
            if to_send.is_empty() {
                // Everything resolved and the integration does not want resolved
                // alerts: only the notification log changes.
                done.push(nkey);
                continue;
            }
            let n = Notification {
                receiver: f.receiver.name.clone(),
                group_key: f.group_key.clone(),
                group_labels: f.labels.clone(),
                alerts: to_send,
                now: f.wall,
                external_url: self.external_url.clone(),
            };
            let name = format!("{}/{}[{i}]", f.receiver.name, integ.kind());
            tasks.spawn(deliver(self.metrics.clone(), integ, n, name, nkey));
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Some(k)) => done.push(k),
                _ => all_ok = false,
            }
        }
        self.finish_flush(&f, done, all_ok);
        self.wake.notify_one();
    }

    /// Records what a flush delivered (`done`) in the notification log and frees its
    /// group: resolved alerts that were notified are forgotten when every delivery
    /// succeeded, and a group left empty goes with its log entries.
    fn finish_flush(&self, f: &Flush, done: Vec<NflogKey>, all_ok: bool) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        for k in done {
            st.nflog.insert(
                k,
                Sent {
                    firing: f.firing.clone(),
                    resolved: f.resolved.clone(),
                    at: f.wall,
                },
            );
        }
        let Some(g) = st.groups.get_mut(&f.key) else {
            return;
        };
        g.busy = false;
        if all_ok {
            // Resolved alerts that were notified, unless re-sent since.
            for a in f.snapshot.iter().filter(|a| !is_firing(a, f.wall)) {
                if g.alerts.get(&a.labels) == Some(a) {
                    g.alerts.remove(&a.labels);
                }
            }
        }
        let stale = SystemTime::now();
        g.alerts.retain(|_, a| {
            is_firing(a, stale) || a.ends_at.is_some_and(|e| e + RESOLVED_RETENTION > stale)
        });
        if g.alerts.is_empty() {
            st.groups.remove(&f.key);
            // What this receiver was told about the group goes with it.
            let (gk, name) = (&f.group_key, &f.receiver.name);
            st.nflog.retain(|(g, r, _), _| !(g == gk && r == name));
        }
    }
}

/// The notification log's key: (group key, receiver, integration index).
type NflogKey = (String, String, usize);

/// One group's flush, planned under the state's lock and run without it.
struct Flush {
    key: (String, String),
    group_key: String,
    labels: Labels,
    receiver: Arc<Receiver>,
    firing: HashSet<Labels>,
    resolved: HashSet<Labels>,
    /// Each integration that needs an update.
    sends: Vec<Delivery>,
    /// The group's alerts at the flush, inhibited ones included.
    snapshot: Vec<Alert>,
    wall: SystemTime,
}

/// One integration of a flush: its index in the receiver, itself, its log key and the
/// alerts it gets.
struct Delivery {
    index: usize,
    integ: Arc<dyn Integration>,
    nkey: NflogKey,
    alerts: Vec<Alert>,
}

/// Delivers `n` through one integration, counting it; the log key when it succeeded.
async fn deliver(
    metrics: NotifierMetrics,
    integ: Arc<dyn Integration>,
    n: Notification,
    name: String,
    nkey: NflogKey,
) -> Option<NflogKey> {
    let label = vec![("alertmanager".to_string(), name.clone())];
    let start = std::time::Instant::now();
    let r = integ.notify(&n).await;
    metrics
        .latency
        .get_or_create(&label)
        .observe(start.elapsed().as_secs_f64());
    match r {
        Ok(()) => {
            metrics
                .sent
                .get_or_create(&label)
                .inc_by(n.alerts.len() as u64);
            Some(nkey)
        }
        Err(e) => {
            metrics
                .errors
                .get_or_create(&label)
                .inc_by(n.alerts.len() as u64);
            tracing::error!(receiver = %name, group = %n.group_key, error = %e, "notify failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notifier::route::RouteConfig;

    /// Counts deliveries.
    struct Counting(Arc<Mutex<usize>>);

    impl Integration for Counting {
        fn kind(&self) -> &'static str {
            "counting"
        }
        fn send_resolved(&self) -> bool {
            true
        }
        fn notify<'a>(
            &'a self,
            _n: &'a Notification,
        ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
            Box::pin(async move {
                *self.0.lock().expect("lock") += 1;
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn a_finished_group_leaves_nothing_behind() {
        let cfg: RouteConfig = serde_yaml_ng::from_str(
            "receiver: r\ngroup_by: ['...']\ngroup_wait: 0s\ngroup_interval: 10ms\n",
        )
        .unwrap();
        let route = Route::build(&cfg, &["r".to_string()].into()).unwrap();
        let count = Arc::new(Mutex::new(0));
        let receiver = Receiver {
            name: "r".into(),
            integrations: vec![Arc::new(Counting(count.clone()))],
        };
        let d = Arc::new(
            Dispatcher {
                roots: vec![route],
                receivers: HashMap::from([("r".to_string(), Arc::new(receiver))]),
                inhibitor: Inhibitor::new(Vec::new(), true),
                external_url: String::new(),
                state: Arc::default(),
                wake: Arc::default(),
                metrics: NotifierMetrics::new(
                    &mut prometheus_client::registry::Registry::default(),
                    1,
                ),
            }
            .start(),
        );
        let now = SystemTime::now();
        let mut a = Alert {
            labels: Labels::new([("alertname", "A"), ("instance", "x")]),
            annotations: Default::default(),
            starts_at: now,
            ends_at: Some(now + Duration::from_secs(600)),
            generator_url: String::new(),
        };
        let settle = || async {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                d.flush_due();
            }
        };
        d.ingest(std::slice::from_ref(&a));
        settle().await;
        assert_eq!(*count.lock().unwrap(), 1);
        assert_eq!(d.state.lock().unwrap().nflog.len(), 1);
        a.ends_at = Some(SystemTime::now() - Duration::from_millis(1));
        d.ingest(std::slice::from_ref(&a));
        settle().await;
        assert_eq!(*count.lock().unwrap(), 2, "the resolved notification");
        let st = d.state.lock().unwrap();
        assert!(st.groups.is_empty());
        assert!(st.nflog.is_empty(), "{:?}", st.nflog);
    }

    fn set(names: &[&str]) -> HashSet<Labels> {
        names
            .iter()
            .map(|n| Labels::new([("alertname", *n)]))
            .collect()
    }

    #[test]
    fn needs_update_follows_alertmanager() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let h = Duration::from_secs(3600);
        assert!(needs_update(None, &set(&["a"]), &set(&[]), true, h, t0));
        assert!(!needs_update(None, &set(&[]), &set(&["a"]), true, h, t0));
        let e = Sent {
            firing: set(&["a"]),
            resolved: set(&[]),
            at: t0,
        };
        assert!(!needs_update(
            Some(&e),
            &set(&["a"]),
            &set(&[]),
            true,
            h,
            t0
        ));
        assert!(needs_update(
            Some(&e),
            &set(&["a", "b"]),
            &set(&[]),
            true,
            h,
            t0
        ));
        // A firing alert leaving the group is news only for send_resolved receivers,
        // unless nothing fires any more.
        let e2 = Sent {
            firing: set(&["a", "b"]),
            resolved: set(&[]),
            at: t0,
        };
        assert!(needs_update(
            Some(&e2),
            &set(&["a"]),
            &set(&["b"]),
            true,
            h,
            t0
        ));
        assert!(!needs_update(
            Some(&e2),
            &set(&["a"]),
            &set(&["b"]),
            false,
            h,
            t0
        ));
        assert!(needs_update(
            Some(&e2),
            &set(&[]),
            &set(&["a", "b"]),
            false,
            h,
            t0
        ));
        assert!(needs_update(
            Some(&e),
            &set(&["a"]),
            &set(&[]),
            true,
            h,
            t0 + h
        ));
    }
}
