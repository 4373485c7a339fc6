//! The status page at `/`: what an operator on call wants to see at a glance, rendered on
//! the server as plain HTML (no JavaScript, no build step).
//!
//! * **Outages**: the cascade view. A target that is down and not blocked by a dependency
//!   is a root cause; the targets `lookout_target_blocked{instance,blocked_by}` marks as
//!   blocked by it (directly or through other blocked targets) are listed under it.
//! * **Alerts**: firing then pending alerts with their annotations and how long they have
//!   been active.
//! * **Targets**: every `up` series (the exporter's continuously probed targets and
//!   heartbeats, and the evaluator's own scrape targets) with its state, the latency of the
//!   last probe (`lookout_target_probe_duration_seconds`) or scrape
//!   (`scrape_duration_seconds`) and why it failed (`lookout_target_probe_failure_info`, or
//!   the scrape error). A job scraping `/probe` the blackbox_exporter way is down when its
//!   `probe_success` is 0, with `probe_duration_seconds` as latency.
//! * **Rule groups**: last evaluation, its duration, and the errors of its rules.
//!
//! Everything comes from PromQL queries on the evaluator's datasource, so the page works the
//! same in embedded mode (the in-process storage) and in remote mode (a Prometheus-API
//! server), plus the rule manager's snapshots and, in embedded mode, the scrape manager.
//!
//! Every value shown passes through [`escape_html`]: label values and annotations come from
//! configuration files and scraped data, and must never become markup. The page refreshes
//! itself every 15 seconds (`<meta http-equiv="refresh">`) and stacks into one column on
//! narrow screens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lookout_promql::Labels;
use lookout_promql::histogram::FloatHistogram;

use super::WebState;
use crate::alert::AlertState;
use crate::datasource::{Datasource, QuerySample};
use crate::embedded::EmbeddedDatasource;
use crate::rules::status::{GroupSnapshot, RuleHealth, RuleSnapshot, RulesStatus};

/// Seconds between two automatic reloads of the page.
pub const REFRESH_SECONDS: u32 = 15;

/// An alert's value as the status page shows it: the number, or for a native histogram its
/// count and sum (where the rules API, as Prometheus's, says 0; templates get the whole
/// histogram as `$value`).
fn alert_value(a: &AlertRow) -> String {
    use lookout_promql::engine::value::format_float;
    match &a.histogram {
        Some(h) => format!(
            "histogram: count {}, sum {}",
            format_float(h.count),
            format_float(h.sum)
        ),
        None => format_float(a.value),
    }
}

/// Escapes `s` for use in HTML text and in double- or single-quoted attribute values:
/// `&`, `<`, `>`, `"` and `'` become character references.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a target answered its last probe or scrape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TargetState {
    /// `up` is 0.
    Down,
    /// `up` is 1.
    Up,
}

/// One row of the targets table.
#[derive(Clone, Debug)]
pub struct TargetRow {
    /// The `job` label.
    pub job: String,
    /// The `instance` label.
    pub instance: String,
    /// Up or down.
    pub state: TargetState,
    /// Duration of the last probe or scrape, when known.
    pub latency: Option<f64>,
    /// Why the last probe or scrape failed, when known.
    pub reason: Option<String>,
    /// The other labels of the `up` series (team, env, ...).
    pub labels: Vec<(String, String)>,
    /// HTTP status of the last probe (`lookout_target_http_status_code`, or blackbox's
    /// `probe_http_status_code`), when known and not 0.
    pub http_status: Option<u16>,
    /// Share of the last 24 hours the target was up (0 to 1), when known.
    pub uptime_24h: Option<f64>,
    /// Share of the last 7 days the target was up, when known.
    pub uptime_7d: Option<f64>,
    /// Probe or scrape duration over the last hour: `(milliseconds, seconds)`.
    pub response: Vec<(i64, f64)>,
}

/// One heartbeat: `up{job="heartbeat"}` with the exporter's last push and `max_silence`.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatRow {
    /// The heartbeat's name.
    pub name: String,
    /// Pushed within `max_silence`.
    pub up: bool,
    /// Unix seconds of the last push, if any.
    pub last_seen: Option<f64>,
    /// The configured `max_silence` in seconds, when the exporter publishes it.
    pub max_silence: Option<f64>,
}

/// DNS resolvers giving different answers for the same name (`dns_answer_info`).
#[derive(Clone, Debug, PartialEq)]
pub struct DnsDisagreement {
    /// The queried name.
    pub domain: String,
    /// `(nameserver, instance, answers)` for each resolver, sorted.
    pub answers: Vec<(String, String, Vec<String>)>,
}

/// One active alert.
#[derive(Clone, Debug)]
pub struct AlertRow {
    /// The alert name.
    pub name: String,
    /// Pending or firing.
    pub state: AlertState,
    /// The alert's labels, `alertname` left out.
    pub labels: Vec<(String, String)>,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When the alert became active.
    pub active_at: SystemTime,
    /// The value of the expression.
    pub value: f64,
    /// The native histogram, when the expression returned one (`value` is then 0).
    pub histogram: Option<Arc<FloatHistogram>>,
}

/// One rule group.
#[derive(Clone, Debug)]
pub struct GroupRow {
    /// The group name.
    pub name: String,
    /// Its rule file.
    pub file: String,
    /// Evaluation interval.
    pub interval: Duration,
    /// Number of rules.
    pub rules: usize,
    /// When the last evaluation started.
    pub last_evaluation: Option<SystemTime>,
    /// How long it took.
    pub duration: Duration,
    /// `rule name: error` for each rule whose last evaluation failed.
    pub errors: Vec<String>,
}

/// An outage: a target that is down and not blocked by any dependency, and the targets
/// blocked because of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outage {
    /// The root cause's instance name.
    pub root: String,
    /// Instances blocked by it, directly or through other blocked instances, with the
    /// dependency each one is blocked by.
    pub blocked: Vec<(String, String)>,
}

/// Everything the page shows.
#[derive(Clone, Debug, Default)]
pub struct StatusData {
    /// `embedded` or `remote`.
    pub mode: &'static str,
    /// Targets, down first.
    pub targets: Vec<TargetRow>,
    /// Firing then pending alerts.
    pub alerts: Vec<AlertRow>,
    /// Rule groups in file order.
    pub groups: Vec<GroupRow>,
    /// Root causes and what they block.
    pub outages: Vec<Outage>,
    /// Queries or lookups that failed (shown at the top of the page).
    pub problems: Vec<String>,
    /// `(instance, depends_on)` for every configured dependency
    /// (`lookout_target_dependency_info`), up or down.
    pub dependencies: Vec<(String, String)>,
    /// Instances blocked by a dependency now (`lookout_target_blocked`).
    pub blocked: BTreeSet<String>,
    /// Heartbeats by name.
    pub heartbeats: Vec<HeartbeatRow>,
    /// Names the DNS resolvers answer differently.
    pub dns_disagreements: Vec<DnsDisagreement>,
    /// Start and end (milliseconds) and step of the response-time sparklines.
    pub chart_window: (i64, i64, i64),
}

/// How far back the response-time sparklines go.
pub const SPARKLINE_WINDOW: Duration = Duration::from_secs(3600);
/// Points per sparkline (one a minute over [`SPARKLINE_WINDOW`]).
pub const SPARKLINE_POINTS: i64 = 61;
/// The most targets that get a sparkline, uptime and DNS rows (the page stays fast with
/// thousands of targets; the table still lists them all).
pub const MAX_CHARTED_TARGETS: usize = 500;
/// The most names listed as DNS disagreements.
pub const MAX_DNS_NAMES: usize = 20;

/// `GET /`: the status page.
pub async fn page(State(st): State<WebState>) -> Response {
    let now = SystemTime::now();
    let data = collect(&st, now).await;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&data, now),
    )
        .into_response()
}

pub(crate) fn datasource_of(st: &WebState) -> Option<Arc<dyn Datasource>> {
    if let Some(ds) = &st.datasource {
        return Some(ds.clone());
    }
    st.storage.as_ref().map(|s| {
        Arc::new(EmbeddedDatasource::new(s.clone(), st.engine.clone())) as Arc<dyn Datasource>
    })
}

fn key(labels: &Labels) -> (String, String) {
    (
        labels.get("job").unwrap_or_default().to_string(),
        labels.get("instance").unwrap_or_default().to_string(),
    )
}

async fn query(
    ds: &dyn Datasource,
    expr: &str,
    at: SystemTime,
    problems: &mut Vec<String>,
) -> Vec<QuerySample> {
    match ds.query(expr, at).await {
        Ok(v) => v,
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    }
}

/// Gathers the page's data from the datasource, the rule manager and the scrape manager.
pub async fn collect(st: &WebState, now: SystemTime) -> StatusData {
    let mut data = StatusData {
        mode: if st.storage.is_some() {
            "embedded"
        } else {
            "remote"
        },
        ..StatusData::default()
    };
    let mut blocked_edges = Vec::new();
    if let Some(ds) = datasource_of(st) {
        let q = Queried::fetch(ds.as_ref(), now, &mut data.problems).await;
        data.dependencies = dependency_edges(&q.dependencies);
        data.heartbeats = heartbeat_rows(&q.up, &q.last_seen, &q.max_silence);
        data.dns_disagreements = dns_disagreements(&q.answers);
        let (response, window) =
            response_times(st, !q.up.is_empty(), now, &mut data.problems).await;
        data.chart_window = window;
        data.targets = target_rows(st, &q, response).await;
        for s in &q.blocked {
            if let (Some(i), Some(b)) = (s.labels.get("instance"), s.labels.get("blocked_by")) {
                blocked_edges.push((i.to_string(), b.to_string()));
            }
        }
    } else {
        data.problems
            .push("no datasource: targets cannot be queried".to_string());
    }
    let down: Vec<String> = data
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Down)
        .map(|t| t.instance.clone())
        .collect();
    data.outages = outages(&down, &blocked_edges);
    data.blocked = blocked_edges.iter().map(|(i, _)| i.clone()).collect();
    data.problems.extend(notification_problems(st));

    if let Some(rules) = &st.rules {
        let groups = rules.groups();
        data.alerts = alert_rows(&groups);
        sort_alerts(&mut data.alerts, &data.blocked);
        data.groups = groups.iter().map(group_row).collect();
        data.problems.extend(rule_problems(rules.as_ref()));
    }
    data
}

/// The instant queries behind the page, asked in this order (a failing one adds its error
/// to the page's problems and reads as no samples).
struct Queried {
    up: Vec<QuerySample>,
    probe_latency: Vec<QuerySample>,
    scrape_latency: Vec<QuerySample>,
    failures: Vec<QuerySample>,
    blocked: Vec<QuerySample>,
    /// blackbox_exporter's pattern (a job scraping /probe?target=...): `up` only says the
    /// exporter answered; probe_success says whether the target did.
    probe_success: Vec<QuerySample>,
    blackbox_latency: Vec<QuerySample>,
    status_codes: Vec<QuerySample>,
    /// The share of samples that were up over 1 day and 7 days, by (job, instance).
    uptime: [HashMap<(String, String), f64>; 2],
    dependencies: Vec<QuerySample>,
    last_seen: Vec<QuerySample>,
    max_silence: Vec<QuerySample>,
    answers: Vec<QuerySample>,
}

impl Queried {
    async fn fetch(ds: &dyn Datasource, now: SystemTime, problems: &mut Vec<String>) -> Self {
        let up = query(ds, "up", now, problems).await;
        let probe_latency = query(ds, "lookout_target_probe_duration_seconds", now, problems).await;
        let scrape_latency = query(ds, "scrape_duration_seconds", now, problems).await;
        let failures = query(ds, "lookout_target_probe_failure_info", now, problems).await;
        let blocked = query(ds, "lookout_target_blocked == 1", now, problems).await;
        let probe_success = query(ds, "probe_success", now, problems).await;
        let blackbox_latency = query(ds, "probe_duration_seconds", now, problems).await;
        let status_codes = query(
            ds,
            "lookout_target_http_status_code or probe_http_status_code",
            now,
            problems,
        )
        .await;
        // Uptime as Uptime Kuma shows it: the share of samples that were up; a /probe job's
        // probe_success wins over its `up`.
        let mut uptime: [HashMap<(String, String), f64>; 2] = Default::default();
        for (i, range) in ["1d", "7d"].iter().enumerate() {
            let expr = format!(
                "avg by (job, instance) (avg_over_time(up[{range}])) unless on (job, instance) probe_success \
                 or avg by (job, instance) (avg_over_time(probe_success[{range}]))"
            );
            for s in query(ds, &expr, now, problems).await {
                if s.value.is_finite() {
                    uptime[i].insert(key(&s.labels), s.value);
                }
            }
        }
        let dependencies = query(ds, "lookout_target_dependency_info", now, problems).await;
        let last_seen = query(
            ds,
            "lookout_heartbeat_last_seen_timestamp_seconds",
            now,
            problems,
        )
        .await;
        let max_silence = query(ds, "lookout_heartbeat_max_silence_seconds", now, problems).await;
        let answers = query(ds, "dns_answer_info", now, problems).await;
        Queried {
            up,
            probe_latency,
            scrape_latency,
            failures,
            blocked,
            probe_success,
            blackbox_latency,
            status_codes,
            uptime,
            dependencies,
            last_seen,
            max_silence,
            answers,
        }
    }
}

/// `(instance, depends_on)` pairs from `lookout_target_dependency_info`, sorted, unique.
fn dependency_edges(dependencies: &[QuerySample]) -> Vec<(String, String)> {
    let mut edges: Vec<(String, String)> = dependencies
        .iter()
        .filter_map(|s| {
            let i = s.labels.get("instance")?;
            let d = s.labels.get("depends_on")?;
            Some((i.to_string(), d.to_string()))
        })
        .collect();
    edges.sort();
    edges.dedup();
    edges
}

/// One row per `up{job="heartbeat"}` series, silent ones first.
fn heartbeat_rows(
    up: &[QuerySample],
    last_seen: &[QuerySample],
    max_silence: &[QuerySample],
) -> Vec<HeartbeatRow> {
    let by_name = |v: &[QuerySample]| -> HashMap<String, f64> {
        v.iter()
            .filter_map(|s| Some((s.labels.get("name")?.to_string(), s.value)))
            .collect()
    };
    let (last_seen, max_silence) = (by_name(last_seen), by_name(max_silence));
    let mut rows: Vec<HeartbeatRow> = up
        .iter()
        .filter(|s| s.labels.get("job") == Some("heartbeat"))
        .map(|s| {
            let name = s.labels.get("instance").unwrap_or_default().to_string();
            HeartbeatRow {
                up: s.value >= 1.0,
                last_seen: last_seen.get(&name).copied(),
                max_silence: max_silence.get(&name).copied(),
                name,
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.up, &a.name).cmp(&(b.up, &b.name)));
    rows
}

/// Each target's response times over the sparkline window (when there are targets), and
/// the window as (start, end, step) in milliseconds.
async fn response_times(
    st: &WebState,
    any_target: bool,
    now: SystemTime,
    problems: &mut Vec<String>,
) -> (HashMap<(String, String), Vec<(i64, f64)>>, (i64, i64, i64)) {
    let end = crate::scrape::target::to_ms(now);
    let start = end - SPARKLINE_WINDOW.as_millis() as i64;
    let mut response = HashMap::new();
    let mut step = super::chart::step_for(start, end, SPARKLINE_POINTS).max(1000);
    if any_target {
        match super::chart::range(
            st,
            "max by (job, instance) (lookout_target_probe_duration_seconds) \
             or max by (job, instance) (probe_duration_seconds) \
             or max by (job, instance) (scrape_duration_seconds)",
            start,
            end,
            SPARKLINE_POINTS,
        )
        .await
        {
            Ok((series, used)) => {
                step = used;
                for s in series.into_iter().take(MAX_CHARTED_TARGETS) {
                    response.insert(key(&s.labels), s.points);
                }
            }
            Err(e) => problems.push(format!("response times: {e}")),
        }
    }
    (response, (start, end, step))
}

/// One row per `up` series: down when `up` or a /probe job's probe_success says so, with
/// the reason the exporter or the scrape manager gives; sorted down first.
async fn target_rows(
    st: &WebState,
    q: &Queried,
    mut response: HashMap<(String, String), Vec<(i64, f64)>>,
) -> Vec<TargetRow> {
    let mut http_status: HashMap<(String, String), u16> = HashMap::new();
    for s in &q.status_codes {
        if s.value >= 1.0 && s.value < 1000.0 {
            http_status.insert(key(&s.labels), s.value as u16);
        }
    }
    let failed_probes: BTreeSet<(String, String)> = q
        .probe_success
        .iter()
        .filter(|s| s.value == 0.0)
        .map(|s| key(&s.labels))
        .collect();

    let mut latency: HashMap<(String, String), f64> = HashMap::new();
    for s in q
        .scrape_latency
        .iter()
        .chain(&q.blackbox_latency)
        .chain(&q.probe_latency)
    {
        if s.value.is_finite() {
            latency.insert(key(&s.labels), s.value);
        }
    }
    let mut reasons: HashMap<(String, String), String> = HashMap::new();
    for s in &q.failures {
        if let Some(r) = s.labels.get("reason") {
            reasons.insert(key(&s.labels), r.to_string());
        }
    }
    if let Some(sm) = &st.scrape {
        for t in sm.targets().await {
            if !t.last_error.is_empty() {
                reasons.insert(key(&t.target.labels), t.last_error.clone());
            }
        }
    }
    let mut rows = Vec::new();
    for s in &q.up {
        if !s.value.is_finite() {
            continue;
        }
        let k = key(&s.labels);
        let state = if s.value >= 1.0 && !failed_probes.contains(&k) {
            TargetState::Up
        } else {
            TargetState::Down
        };
        if s.value >= 1.0 && failed_probes.contains(&k) {
            reasons
                .entry(k.clone())
                .or_insert_with(|| "probe failed (probe_success 0)".to_string());
        }
        rows.push(TargetRow {
            http_status: http_status.get(&k).copied(),
            uptime_24h: q.uptime[0].get(&k).copied(),
            uptime_7d: q.uptime[1].get(&k).copied(),
            response: response.remove(&k).unwrap_or_default(),
            latency: latency.get(&k).copied(),
            reason: if state == TargetState::Down {
                reasons.get(&k).cloned()
            } else {
                None
            },
            labels: s
                .labels
                .iter()
                .filter(|(n, _)| !matches!(*n, "__name__" | "job" | "instance"))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            job: k.0,
            instance: k.1,
            state,
        });
    }
    rows.sort_by(|a, b| (a.state, &a.job, &a.instance).cmp(&(b.state, &b.job, &b.instance)));
    rows
}

/// Names whose answers differ between resolvers: `dns_answer_info{domain, nameserver,
/// instance, answer}` grouped by domain, then by resolver. At most [`MAX_DNS_NAMES`].
pub fn dns_disagreements(samples: &[QuerySample]) -> Vec<DnsDisagreement> {
    type Resolvers = BTreeMap<(String, String), BTreeSet<String>>;
    let mut by_domain: BTreeMap<String, Resolvers> = BTreeMap::new();
    for s in samples {
        let l = &s.labels;
        let (Some(domain), Some(answer)) = (l.get("domain"), l.get("answer")) else {
            continue;
        };
        let resolver = (
            l.get("nameserver").unwrap_or_default().to_string(),
            l.get("instance").unwrap_or_default().to_string(),
        );
        by_domain
            .entry(domain.to_string())
            .or_default()
            .entry(resolver)
            .or_default()
            .insert(answer.to_string());
    }
    by_domain
        .into_iter()
        .filter(|(_, resolvers)| {
            let distinct: BTreeSet<&BTreeSet<String>> = resolvers.values().collect();
            distinct.len() > 1
        })
        .take(MAX_DNS_NAMES)
        .map(|(domain, resolvers)| DnsDisagreement {
            domain,
            answers: resolvers
                .into_iter()
                .map(|((ns, instance), a)| (ns, instance, a.into_iter().collect()))
                .collect(),
        })
        .collect()
}

/// A banner when alerts could not be delivered: the notifier's
/// `prometheus_notifications_errors_total{alertmanager}` and
/// `prometheus_notifications_dropped_total`, read from the evaluator's own registry.
fn notification_problems(st: &WebState) -> Vec<String> {
    let mut text = String::new();
    match st.registry.read() {
        Ok(r) => {
            if prometheus_client::encoding::text::encode(&mut text, &r).is_err() {
                return Vec::new();
            }
        }
        Err(_) => return Vec::new(),
    }
    notification_failures(&text)
}

/// The banner text for the notifier's counters in `exposition` (OpenMetrics text).
pub fn notification_failures(exposition: &str) -> Vec<String> {
    let mut failed: Vec<(String, f64)> = Vec::new();
    let mut dropped = 0.0;
    for line in exposition.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(rest) = series.strip_prefix("prometheus_notifications_errors_total") {
            if value > 0.0 {
                let receiver = rest
                    .split_once("alertmanager=\"")
                    .and_then(|(_, r)| r.rsplit_once('"'))
                    .map(|(r, _)| r.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_default();
                failed.push((receiver, value));
            }
        } else if series == "prometheus_notifications_dropped_total" {
            dropped += value;
        }
    }
    let mut out = Vec::new();
    if !failed.is_empty() {
        let list = failed
            .iter()
            .map(|(r, n)| format!("{} to {r}", format_count(*n)))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "Notifications failed: alerts could not be delivered ({list}) since the evaluator \
             started. Check the receivers; the log says why (\"error sending alerts\")."
        ));
    }
    if dropped > 0.0 {
        out.push(format!(
            "Notifications dropped: {} {} dropped (queue full or delivery failed) since the \
             evaluator started.",
            format_count(dropped),
            if dropped == 1.0 {
                "alert was"
            } else {
                "alerts were"
            }
        ));
    }
    out
}

fn format_count(n: f64) -> String {
    lookout_promql::engine::value::format_float(n)
}

/// Ordering of the `severity` label: critical, warning, info, then anything else.
fn severity_rank(labels: &[(String, String)]) -> u8 {
    match labels
        .iter()
        .find(|(n, _)| n == "severity")
        .map(|(_, v)| v.to_ascii_lowercase())
        .as_deref()
    {
        Some("critical" | "page") => 0,
        Some("warning") => 1,
        Some("info") => 2,
        _ => 3,
    }
}

/// What a newcomer should read first: critical before warning before info before the
/// rest; within a severity, root causes before the alerts of instances blocked by a
/// dependency; then firing before pending, oldest first.
pub fn sort_alerts(rows: &mut [AlertRow], blocked: &BTreeSet<String>) {
    let is_blocked = |a: &AlertRow| {
        a.labels
            .iter()
            .any(|(n, v)| n == "instance" && blocked.contains(v))
    };
    let rank = |s: AlertState| match s {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Inactive => 2,
    };
    rows.sort_by(|a, b| {
        (
            severity_rank(&a.labels),
            is_blocked(a),
            rank(a.state),
            a.active_at,
            &a.name,
        )
            .cmp(&(
                severity_rank(&b.labels),
                is_blocked(b),
                rank(b.state),
                b.active_at,
                &b.name,
            ))
    });
}

/// Banners about the rules: a failed reload, patterns that match nothing, no rules at all.
fn rule_problems(rules: &dyn RulesStatus) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((at, message)) = rules.last_reload_error() {
        out.push(format!(
            "Reloading the configuration failed at {}; the previous configuration is still \
             running. {message}",
            utc(at)
        ));
    }
    for pattern in rules.unmatched_patterns() {
        out.push(format!(
            "rule_files pattern {pattern} matches no file (relative patterns are resolved \
             from the evaluator configuration file's directory)."
        ));
    }
    if rules.groups().is_empty() {
        out.push(
            "No rule groups are loaded: no alert can fire. Check rule_files in the evaluator \
             configuration."
                .to_string(),
        );
    }
    out
}

/// The cascade: `down` instances that are not blocked are root causes; `blocked` holds
/// `(instance, blocked_by)` edges from `lookout_target_blocked`. Each root cause lists the
/// instances reachable from it through the edges (breadth first), with their direct
/// dependency. Blocked instances whose dependencies form a cycle (no root) are reported as
/// their own outage so nothing down is hidden.
pub fn outages(down: &[String], blocked: &[(String, String)]) -> Vec<Outage> {
    let blocked_set: BTreeSet<&str> = blocked.iter().map(|(i, _)| i.as_str()).collect();
    let mut dependants: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, b) in blocked {
        dependants.entry(b.as_str()).or_default().insert(i.as_str());
    }
    let mut roots: BTreeSet<&str> = down
        .iter()
        .map(String::as_str)
        .filter(|d| !blocked_set.contains(d))
        .collect();
    // A dependency that blocks something but is not itself in `up` (e.g. another job's
    // target) is still the root of what it blocks.
    for b in dependants.keys() {
        if !blocked_set.contains(b) {
            roots.insert(b);
        }
    }
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let walk = |root: &str, covered: &mut BTreeSet<String>| {
        let mut seen = BTreeSet::from([root.to_string()]);
        let mut queue = std::collections::VecDeque::from([root.to_string()]);
        let mut list = Vec::new();
        while let Some(node) = queue.pop_front() {
            for d in dependants.get(node.as_str()).into_iter().flatten() {
                if seen.insert(d.to_string()) {
                    list.push((d.to_string(), node.clone()));
                    queue.push_back(d.to_string());
                }
            }
        }
        covered.extend(list.iter().map(|(d, _)| d.clone()));
        Outage {
            root: root.to_string(),
            blocked: list,
        }
    };
    for r in &roots {
        out.push(walk(r, &mut covered));
    }
    for b in &blocked_set {
        if !covered.contains(*b) {
            covered.insert(b.to_string());
            out.push(walk(b, &mut covered));
        }
    }
    out
}

fn alert_rows(groups: &[GroupSnapshot]) -> Vec<AlertRow> {
    let mut rows = Vec::new();
    for g in groups {
        for r in &g.rules {
            let RuleSnapshot::Alerting(a) = r else {
                continue;
            };
            for al in &a.alerts {
                if al.state == AlertState::Inactive {
                    continue;
                }
                rows.push(AlertRow {
                    name: a.common.name.clone(),
                    state: al.state,
                    labels: al
                        .labels
                        .iter()
                        .filter(|(n, _)| *n != "alertname")
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    annotations: al.annotations.clone(),
                    active_at: al.active_at,
                    value: al.value,
                    histogram: al.histogram.clone(),
                });
            }
        }
    }
    let rank = |s: AlertState| match s {
        AlertState::Firing => 0,
        AlertState::Pending => 1,
        AlertState::Inactive => 2,
    };
    rows.sort_by(|a, b| {
        (rank(a.state), a.active_at, &a.name).cmp(&(rank(b.state), b.active_at, &b.name))
    });
    rows
}

fn group_row(g: &GroupSnapshot) -> GroupRow {
    let errors = g
        .rules
        .iter()
        .filter_map(|r| {
            let c = match r {
                RuleSnapshot::Alerting(a) => &a.common,
                RuleSnapshot::Recording(c) => c,
            };
            (c.health == RuleHealth::Err).then(|| {
                format!(
                    "{}: {}",
                    c.name,
                    c.last_error.as_deref().unwrap_or("evaluation failed")
                )
            })
        })
        .collect();
    GroupRow {
        name: g.name.clone(),
        file: g.file.clone(),
        interval: g.interval,
        rules: g.rules.len(),
        last_evaluation: g.last_evaluation,
        duration: g.evaluation_duration,
        errors,
    }
}

/// "3m 12s", "2h 5m", "4d 1h": two units at most; "500ms" under a second.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else if s == 0 && d.subsec_millis() > 0 {
        format!("{}ms", d.subsec_millis())
    } else {
        format!("{seconds}s")
    }
}

/// Seconds as "42 ms", "1.25 s" or "850 µs".
pub fn human_latency(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 0.001 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{:.0} µs", seconds * 1_000_000.0)
    }
}

fn ago(now: SystemTime, t: SystemTime) -> String {
    match now.duration_since(t) {
        Ok(d) => format!("{} ago", human_duration(d)),
        Err(_) => "just now".to_string(),
    }
}

/// Wall-clock time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

const CSS: &str = r#"
:root{--bg:#f4f6f9;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;
--red:#d92d20;--red-bg:#fef3f2;--amber:#b54708;--amber-bg:#fffaeb;--green:#067647;--green-bg:#ecfdf3;--blue:#175cd3}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;background:var(--bg);color:var(--ink)}
header{background:#101828;color:#fff;padding:18px 24px}
header h1{margin:0;font-size:20px;font-weight:650;letter-spacing:.2px}
header .sub{color:#98a2b3;font-size:13px;margin-top:2px}
.summary{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.chip{border-radius:999px;padding:4px 12px;font-size:13px;font-weight:600;background:#1d2939;color:#d0d5dd}
.chip.bad{background:var(--red);color:#fff}.chip.warn{background:#f79009;color:#101828}.chip.good{background:#12b76a;color:#052e16}
main{max-width:1200px;margin:0 auto;padding:20px;display:grid;grid-template-columns:1fr 1fr;gap:20px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;min-width:0}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 12px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted)}
.empty{color:var(--muted);margin:0}
.problem{grid-column:1/-1;background:var(--amber-bg);border:1px solid #fedf89;color:var(--amber);border-radius:10px;padding:10px 16px}
.outage{border-left:4px solid var(--red);background:var(--red-bg);border-radius:6px;padding:10px 14px;margin-bottom:10px}
.outage .root{font-weight:650}
.outage ul{margin:6px 0 0;padding-left:20px;color:#912018}
.alert{border-left:4px solid var(--red);padding:8px 12px;margin-bottom:10px;border-radius:6px;background:var(--red-bg)}
.alert.pending{border-color:#f79009;background:var(--amber-bg)}
.alert .name{font-weight:650}
.alert .summary-line{margin:2px 0}
.alert .desc{color:var(--muted);font-size:13px}
.badge{display:inline-block;border-radius:4px;padding:1px 7px;font-size:12px;font-weight:650;text-transform:uppercase;letter-spacing:.4px}
.badge.down,.badge.firing,.badge.err{background:var(--red);color:#fff}
.badge.pending{background:#f79009;color:#101828}
.badge.up,.badge.ok{background:var(--green-bg);color:var(--green);border:1px solid #abefc6}
.lbl{display:inline-block;background:#f2f4f7;border:1px solid var(--line);border-radius:4px;padding:0 6px;margin:2px 4px 2px 0;font-size:12px;color:#344054;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.4px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:8px;vertical-align:top}
tr.down td{background:var(--red-bg)}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}
.reason{color:#912018;font-size:13px}
.badge.unknown{background:#f2f4f7;color:var(--muted);border:1px solid var(--line)}
.tree,.tree ul{list-style:none;margin:0;padding-left:0}
.tree ul{padding-left:18px;border-left:2px solid var(--line);margin-left:8px}
.tree li{margin:5px 0}
svg.spark{display:block}
.err{color:var(--red);font-size:13px}
.muted{color:var(--muted);font-size:13px}
footer{text-align:center;color:var(--muted);font-size:12px;padding:0 20px 24px}
a{color:var(--blue)}
@media (max-width:700px){
 header{padding:14px 16px}
 main{grid-template-columns:1fr;padding:12px;gap:12px}
 section{padding:12px}
 table,thead,tbody,tr,td{display:block}
 thead{display:none}
 tr{border-bottom:1px solid var(--line);padding:6px 0}
 td{border:0;padding:2px 0}
 td[data-label]:empty{display:none}
 td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:12px}
}
"#;

fn labels_html(out: &mut String, labels: &[(String, String)]) {
    for (n, v) in labels {
        let _ = write!(
            out,
            r#"<span class="lbl">{}="{}"</span>"#,
            escape_html(n),
            escape_html(v)
        );
    }
}

/// The most nodes the dependency tree draws.
const MAX_TREE_NODES: usize = 500;

/// The dependency tree: each target that depends on nothing (a root), with the targets
/// that depend on it nested under it, each with its state. A target in a cycle that no
/// root reaches is drawn as its own root so nothing is hidden.
fn dependency_tree(o: &mut String, data: &StatusData) {
    let mut dependants: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut has_deps: BTreeSet<&str> = BTreeSet::new();
    let mut nodes: BTreeSet<&str> = BTreeSet::new();
    for (i, d) in &data.dependencies {
        dependants.entry(d.as_str()).or_default().push(i.as_str());
        has_deps.insert(i.as_str());
        nodes.insert(i.as_str());
        nodes.insert(d.as_str());
    }
    let state: HashMap<&str, TargetState> = data
        .targets
        .iter()
        .map(|t| (t.instance.as_str(), t.state))
        .collect();
    let mut roots: Vec<&str> = nodes
        .iter()
        .copied()
        .filter(|n| !has_deps.contains(n))
        .collect();
    let mut drawn: BTreeSet<&str> = BTreeSet::new();
    o.push_str("<ul class=\"tree\">");
    let mut i = 0;
    loop {
        if i == roots.len() {
            // Whatever no root reached (a cycle) starts its own tree.
            match nodes.iter().find(|n| !drawn.contains(*n)) {
                Some(n) => roots.push(n),
                None => break,
            }
        }
        let root = roots[i];
        i += 1;
        if !drawn.contains(root) {
            tree_node(o, root, &dependants, &state, &data.blocked, &mut drawn, 0);
        }
    }
    o.push_str("</ul>\n");
}

fn tree_node<'a>(
    o: &mut String,
    node: &'a str,
    dependants: &BTreeMap<&'a str, Vec<&'a str>>,
    state: &HashMap<&str, TargetState>,
    blocked: &BTreeSet<String>,
    drawn: &mut BTreeSet<&'a str>,
    depth: usize,
) {
    let again = !drawn.insert(node);
    let (cls, text) = if blocked.contains(node) {
        ("pending", "blocked")
    } else {
        match state.get(node) {
            Some(TargetState::Up) => ("up", "up"),
            Some(TargetState::Down) => ("down", "down"),
            None => ("unknown", "no data"),
        }
    };
    let _ = write!(
        o,
        r#"<li><span class="badge {cls}">{text}</span> <b>{}</b>"#,
        escape_html(node)
    );
    let children = dependants.get(node).map(Vec::as_slice).unwrap_or_default();
    if again {
        o.push_str(" <span class=\"muted\">(shown above)</span>");
    } else if !children.is_empty() && depth < 32 && drawn.len() < MAX_TREE_NODES {
        o.push_str("<ul>");
        for c in children {
            tree_node(o, c, dependants, state, blocked, drawn, depth + 1);
        }
        o.push_str("</ul>");
    }
    o.push_str("</li>");
}

/// "99.95%", "100%", "–".
fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1.0 => "100%".to_string(),
        // Never round a little downtime up to 100%.
        Some(v) => format!("{:.2}%", (v * 10_000.0).floor() / 100.0),
        None => "–".to_string(),
    }
}

/// Renders the page. Pure: the same data and time give the same HTML.
pub fn render(data: &StatusData, now: SystemTime) -> String {
    let down = data
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Down)
        .count();
    let firing = data
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let pending = data.alerts.len() - firing;
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>{title}Lookout status</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Lookout status</h1>
<div class="sub">{mode} mode · updated {time} · refreshes every {REFRESH_SECONDS}s</div>
<div class="summary">
<span class="chip {tcls}">{total} targets · {down} down</span>
<span class="chip {fcls}">{firing} firing</span>
<span class="chip {pcls}">{pending} pending</span>
<span class="chip">{groups} rule groups</span>
</div>
</header>
<main>
"#,
        title = if down > 0 || firing > 0 {
            format!("({} down, {firing} firing) ", down)
        } else {
            String::new()
        },
        mode = escape_html(data.mode),
        time = escape_html(&utc(now)),
        total = data.targets.len(),
        tcls = if down > 0 { "bad" } else { "good" },
        fcls = if firing > 0 { "bad" } else { "good" },
        pcls = if pending > 0 { "warn" } else { "good" },
        groups = data.groups.len(),
    );
    for p in &data.problems {
        let _ = write!(o, r#"<div class="problem">{}</div>"#, escape_html(p));
    }

    outages_html(&mut o, data);
    alerts_html(&mut o, data, now);
    dependencies_html(&mut o, data);
    heartbeats_html(&mut o, data, now);
    dns_html(&mut o, data);
    targets_html(&mut o, data);
    groups_html(&mut o, data, now);
    o.push_str("</main>\n");
    o.push_str(
        r#"<footer>Lookout · <a href="/graph">graph</a> · <a href="/api/v1/alerts">alerts API</a> · <a href="/api/v1/rules">rules API</a> · <a href="/api/v1/targets">targets API</a> · <a href="/metrics">metrics</a></footer>
</body>
</html>
"#,
    );
    o
}

/// The cascade view: each outage's root cause and what it blocks.
fn outages_html(o: &mut String, data: &StatusData) {
    o.push_str("<section id=\"outages\"><h2>Outages</h2>\n");
    if data.outages.is_empty() {
        o.push_str("<p class=\"empty\">No outage: every target is up.</p>\n");
    }
    for out in &data.outages {
        let _ = write!(
            o,
            r#"<div class="outage"><div class="root">Root cause: {}</div>"#,
            escape_html(&out.root)
        );
        if out.blocked.is_empty() {
            o.push_str("<div class=\"muted\">Nothing depends on it.</div>");
        } else {
            let _ = write!(
                o,
                "<div class=\"muted\">{} blocked by it:</div><ul>",
                out.blocked.len()
            );
            for (i, by) in &out.blocked {
                if by == &out.root {
                    let _ = write!(o, "<li>{}</li>", escape_html(i));
                } else {
                    let _ = write!(
                        o,
                        "<li>{} <span class=\"muted\">(via {})</span></li>",
                        escape_html(i),
                        escape_html(by)
                    );
                }
            }
            o.push_str("</ul>");
        }
        o.push_str("</div>\n");
    }
    o.push_str("</section>\n");
}

/// Firing and pending alerts with their annotations and labels.
fn alerts_html(o: &mut String, data: &StatusData, now: SystemTime) {
    o.push_str("<section id=\"alerts\"><h2>Alerts</h2>\n");
    if data.alerts.is_empty() {
        o.push_str("<p class=\"empty\">No alert is firing or pending.</p>\n");
    }
    for a in &data.alerts {
        let state = a.state.as_str();
        let _ = write!(
            o,
            r#"<div class="alert {state}"><div><span class="badge {state}">{state}</span> <span class="name">{}</span> <span class="muted">active for {} · since {} · value {}</span></div>"#,
            escape_html(&a.name),
            escape_html(&human_duration(
                now.duration_since(a.active_at).unwrap_or_default()
            )),
            escape_html(&utc(a.active_at)),
            escape_html(&alert_value(a)),
        );
        if let Some(s) = a.annotations.get("summary") {
            let _ = write!(o, r#"<div class="summary-line">{}</div>"#, escape_html(s));
        }
        if let Some(d) = a.annotations.get("description") {
            let _ = write!(o, r#"<div class="desc">{}</div>"#, escape_html(d));
        }
        for (k, v) in &a.annotations {
            if k != "summary" && k != "description" {
                let _ = write!(
                    o,
                    r#"<div class="desc"><b>{}</b>: {}</div>"#,
                    escape_html(k),
                    escape_html(v)
                );
            }
        }
        o.push_str("<div>");
        labels_html(o, &a.labels);
        o.push_str("</div></div>\n");
    }
    o.push_str("</section>\n");
}

/// The dependency tree, drawn while everything is up too.
fn dependencies_html(o: &mut String, data: &StatusData) {
    o.push_str("<section id=\"dependencies\"><h2>Dependencies</h2>\n");
    if data.dependencies.is_empty() {
        o.push_str("<p class=\"empty\">No target has depends_on.</p>\n");
    } else {
        dependency_tree(o, data);
    }
    o.push_str("</section>\n");
}

/// Each heartbeat's state, last push and allowed silence.
fn heartbeats_html(o: &mut String, data: &StatusData, now: SystemTime) {
    o.push_str("<section id=\"heartbeats\"><h2>Heartbeats</h2>\n");
    if data.heartbeats.is_empty() {
        o.push_str("<p class=\"empty\">No heartbeat is configured.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>State</th><th>Heartbeat</th><th>Last push</th><th>Max silence</th></tr></thead><tbody>\n");
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        for h in &data.heartbeats {
            let (cls, text) = if h.up {
                ("up", "up")
            } else {
                ("down", "silent")
            };
            let seen = match h.last_seen {
                Some(t) => format!(
                    "{} ago",
                    human_duration(Duration::from_secs_f64((now_s - t).max(0.0)))
                ),
                None => "never".to_string(),
            };
            let silence = h
                .max_silence
                .map(|m| human_duration(Duration::from_secs_f64(m.max(0.0))))
                .unwrap_or_else(|| "–".to_string());
            let _ = write!(
                o,
                r#"<tr class="{}"><td data-label="State"><span class="badge {cls}">{text}</span></td><td data-label="Heartbeat"><b>{}</b></td><td data-label="Last push" class="num">{}</td><td data-label="Max silence" class="num">{}</td></tr>"#,
                if h.up { "" } else { "down" },
                escape_html(&h.name),
                escape_html(&seen),
                escape_html(&silence),
            );
            o.push('\n');
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</section>\n");
}

/// DNS resolvers that disagree (nothing when they agree).
fn dns_html(o: &mut String, data: &StatusData) {
    if !data.dns_disagreements.is_empty() {
        o.push_str("<section id=\"dns\" class=\"wide\"><h2>DNS resolvers disagree</h2>\n");
        for d in &data.dns_disagreements {
            let _ = write!(
                o,
                r#"<div class="outage"><div class="root">{}</div><table><thead><tr><th>Resolver</th><th>Target</th><th>Answers</th></tr></thead><tbody>"#,
                escape_html(&d.domain)
            );
            for (ns, instance, answers) in &d.answers {
                let _ = write!(
                    o,
                    r#"<tr><td data-label="Resolver"><b>{}</b></td><td data-label="Target">{}</td><td data-label="Answers">"#,
                    escape_html(ns),
                    escape_html(instance),
                );
                for a in answers {
                    let _ = write!(o, r#"<span class="lbl">{}</span>"#, escape_html(a));
                }
                o.push_str("</td></tr>");
            }
            o.push_str("</tbody></table></div>\n");
        }
        o.push_str("</section>\n");
    }
}

/// Every target's state, latency, uptime and response-time chart.
fn targets_html(o: &mut String, data: &StatusData) {
    o.push_str("<section id=\"targets\" class=\"wide\"><h2>Targets</h2>\n");
    if data.targets.is_empty() {
        o.push_str("<p class=\"empty\">No target has reported yet.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>State</th><th>Target</th><th>Job</th><th>Latency</th><th>Uptime 24h · 7d</th><th>Response time (1h)</th><th>Details</th></tr></thead><tbody>\n");
        for t in &data.targets {
            let (cls, text) = match t.state {
                TargetState::Up => ("up", "up"),
                TargetState::Down => ("down", "down"),
            };
            let _ = write!(
                o,
                r#"<tr class="{cls}"><td data-label="State"><span class="badge {cls}">{text}</span></td><td data-label="Target"><b>{}</b></td><td data-label="Job">{}</td><td data-label="Latency" class="num">{}</td><td data-label="Uptime" class="num">{} · {}</td><td data-label="Response time">{}</td><td data-label="Details">"#,
                escape_html(&t.instance),
                escape_html(&t.job),
                escape_html(&t.latency.map(human_latency).unwrap_or_else(|| "–".into())),
                percent(t.uptime_24h),
                percent(t.uptime_7d),
                super::chart::sparkline(
                    &t.response,
                    data.chart_window.0,
                    data.chart_window.1,
                    data.chart_window.2
                ),
            );
            if let Some(r) = &t.reason {
                let status = match t.http_status {
                    Some(code) => format!(" (HTTP {code})"),
                    None => String::new(),
                };
                let _ = write!(o, r#"<div class="reason">{}{status}</div>"#, escape_html(r));
            }
            labels_html(o, &t.labels);
            o.push_str("</td></tr>\n");
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</section>\n");
}

/// Rule groups: evaluation times and health.
fn groups_html(o: &mut String, data: &StatusData, now: SystemTime) {
    o.push_str("<section id=\"rules\" class=\"wide\"><h2>Rule groups</h2>\n");
    if data.groups.is_empty() {
        o.push_str("<p class=\"empty\">No rule group is loaded.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>Group</th><th>Rules</th><th>Interval</th><th>Last evaluation</th><th>Duration</th><th>Health</th></tr></thead><tbody>\n");
        for g in &data.groups {
            let _ = write!(
                o,
                r#"<tr><td data-label="Group"><b>{}</b><div class="muted" title="{}">{}</div></td><td data-label="Rules" class="num">{}</td><td data-label="Interval" class="num">{}</td><td data-label="Last evaluation" class="num">{}</td><td data-label="Duration" class="num">{}</td><td data-label="Health">"#,
                escape_html(&g.name),
                escape_html(&g.file),
                escape_html(
                    std::path::Path::new(&g.file)
                        .file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                        .as_ref()
                ),
                g.rules,
                escape_html(&human_duration(g.interval)),
                escape_html(
                    &g.last_evaluation
                        .map(|t| ago(now, t))
                        .unwrap_or_else(|| "not yet".into())
                ),
                escape_html(&human_latency(g.duration.as_secs_f64())),
            );
            if g.errors.is_empty() {
                o.push_str(r#"<span class="badge ok">ok</span>"#);
            } else {
                o.push_str(r#"<span class="badge err">error</span>"#);
                for e in &g.errors {
                    let _ = write!(o, r#"<div class="err">{}</div>"#, escape_html(e));
                }
            }
            o.push_str("</td></tr>\n");
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_html_neutralises_markup() {
        assert_eq!(
            escape_html(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape_html("plain text, ümlauts"), "plain text, ümlauts");
    }

    fn hostile() -> String {
        r#"<script>alert(1)</script>"onmouseover="x"#.to_string()
    }

    #[test]
    fn every_value_is_escaped() {
        let h = hostile();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let data = StatusData {
            mode: "embedded",
            targets: vec![TargetRow {
                job: h.clone(),
                instance: h.clone(),
                state: TargetState::Down,
                latency: Some(0.042),
                reason: Some(h.clone()),
                labels: vec![("team".into(), h.clone())],
                http_status: Some(503),
                uptime_24h: Some(0.99999),
                uptime_7d: None,
                response: vec![(0, 0.1)],
            }],
            alerts: vec![AlertRow {
                name: h.clone(),
                state: AlertState::Firing,
                labels: vec![("instance".into(), h.clone())],
                annotations: BTreeMap::from([
                    ("summary".to_string(), h.clone()),
                    ("description".to_string(), h.clone()),
                    (h.clone(), h.clone()),
                ]),
                active_at: now - Duration::from_secs(125),
                value: 0.0,
                histogram: None,
            }],
            groups: vec![GroupRow {
                name: h.clone(),
                file: h.clone(),
                interval: Duration::from_secs(15),
                rules: 1,
                last_evaluation: Some(now),
                duration: Duration::from_millis(3),
                errors: vec![h.clone()],
            }],
            outages: vec![Outage {
                root: h.clone(),
                blocked: vec![(h.clone(), h.clone())],
            }],
            problems: vec![h.clone()],
            dependencies: vec![(h.clone(), h.clone() + "dep")],
            heartbeats: vec![HeartbeatRow {
                name: h.clone(),
                up: false,
                last_seen: None,
                max_silence: Some(60.0),
            }],
            dns_disagreements: vec![DnsDisagreement {
                domain: h.clone(),
                answers: vec![(h.clone(), h.clone(), vec![h.clone()])],
            }],
            ..StatusData::default()
        };
        let html = render(&data, now);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("\"onmouseover"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover"));
        assert!(html.contains("active for 2m 5s"));
        assert!(html.contains("42 ms"));
        assert!(html.contains(r#"<meta http-equiv="refresh" content="15">"#));
        assert!(html.contains("width=device-width"));
    }

    fn row(instance: &str, state: TargetState) -> TargetRow {
        TargetRow {
            job: "shop".into(),
            instance: instance.into(),
            state,
            latency: None,
            reason: None,
            labels: vec![],
            http_status: None,
            uptime_24h: None,
            uptime_7d: None,
            response: vec![],
        }
    }

    fn alert(name: &str, instance: &str, severity: &str, state: AlertState) -> AlertRow {
        AlertRow {
            name: name.into(),
            state,
            labels: vec![
                ("instance".into(), instance.into()),
                ("severity".into(), severity.into()),
            ],
            annotations: BTreeMap::new(),
            active_at: UNIX_EPOCH,
            value: 0.0,
            histogram: None,
        }
    }

    #[test]
    fn a_histogram_alert_shows_its_count_and_sum() {
        let mut a = alert("Slow", "x", "warning", AlertState::Firing);
        a.histogram = Some(Arc::new(FloatHistogram {
            count: 12.0,
            sum: 3.5,
            ..FloatHistogram::default()
        }));
        let data = StatusData {
            alerts: vec![a, alert("Plain", "y", "warning", AlertState::Firing)],
            ..StatusData::default()
        };
        let html = render(&data, UNIX_EPOCH);
        assert!(
            html.contains("value histogram: count 12, sum 3.5<"),
            "{html}"
        );
        assert!(html.contains("value 0<"), "{html}");
    }

    #[test]
    fn critical_and_root_cause_alerts_come_first() {
        let mut rows = vec![
            alert("Info", "x", "info", AlertState::Firing),
            alert("Other", "x", "", AlertState::Firing),
            alert("BlockedCritical", "app", "critical", AlertState::Firing),
            alert("Warn", "x", "warning", AlertState::Firing),
            alert("PendingRoot", "lb", "critical", AlertState::Pending),
            alert("RootCritical", "lb", "critical", AlertState::Firing),
        ];
        sort_alerts(&mut rows, &BTreeSet::from(["app".to_string()]));
        let names: Vec<&str> = rows.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "RootCritical",
                "PendingRoot",
                "BlockedCritical",
                "Warn",
                "Info",
                "Other"
            ]
        );
    }

    #[test]
    fn the_dependency_tree_is_drawn_while_everything_is_up() {
        let data = StatusData {
            targets: vec![
                row("dns", TargetState::Up),
                row("lb", TargetState::Up),
                row("app", TargetState::Up),
            ],
            dependencies: vec![("app".into(), "lb".into()), ("lb".into(), "dns".into())],
            ..StatusData::default()
        };
        let html = render(&data, UNIX_EPOCH);
        let tree = html
            .split_once("<ul class=\"tree\">")
            .map(|(_, t)| t)
            .expect("tree");
        // dns at the root, lb under it, app under lb.
        let dns = tree.find("<b>dns</b>").expect("dns");
        let lb = tree.find("<b>lb</b>").expect("lb");
        let app = tree.find("<b>app</b>").expect("app");
        assert!(dns < lb && lb < app, "{tree}");
        assert_eq!(tree[..app].matches("<ul>").count(), 2, "{tree}");
        assert!(!tree.contains("blocked"), "{tree}");
    }

    #[test]
    fn heartbeats_show_last_push_and_max_silence() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let data = StatusData {
            heartbeats: vec![
                HeartbeatRow {
                    name: "backup".into(),
                    up: false,
                    last_seen: Some(1_000_000.0 - 7_500.0),
                    max_silence: Some(3_600.0),
                },
                HeartbeatRow {
                    name: "cron".into(),
                    up: false,
                    last_seen: None,
                    max_silence: Some(60.0),
                },
            ],
            ..StatusData::default()
        };
        let html = render(&data, now);
        assert!(html.contains(r#"<span class="badge down">silent</span></td><td data-label="Heartbeat"><b>backup</b></td><td data-label="Last push" class="num">2h 5m ago</td><td data-label="Max silence" class="num">1h 0m</td>"#), "{html}");
        assert!(html.contains(">never<"), "{html}");
    }

    #[test]
    fn the_http_status_uptime_and_response_time_are_beside_the_target() {
        let mut t = row("app", TargetState::Down);
        t.reason = Some("invalid_status_code".into());
        t.http_status = Some(503);
        t.uptime_24h = Some(0.99996);
        t.uptime_7d = Some(1.0);
        t.response = vec![(0, 0.2), (60_000, 0.1)];
        let data = StatusData {
            targets: vec![t],
            chart_window: (0, 60_000, 60_000),
            ..StatusData::default()
        };
        let html = render(&data, UNIX_EPOCH);
        assert!(html.contains("invalid_status_code (HTTP 503)"), "{html}");
        assert!(html.contains("99.99% · 100%"), "{html}");
        assert!(html.contains("<svg class=\"spark\""), "{html}");
    }

    #[test]
    fn dns_resolvers_that_disagree_are_listed() {
        let answer = |ns: &str, domain: &str, a: &str| QuerySample {
            labels: Labels::new([
                ("__name__", "dns_answer_info"),
                ("instance", ns),
                ("nameserver", ns),
                ("domain", domain),
                ("answer", a),
            ]),
            value: 1.0,
            histogram: None,
        };
        let samples = vec![
            answer("ns1", "shop.example.", "192.0.2.1"),
            answer("ns2", "shop.example.", "192.0.2.1"),
            answer("ns3", "shop.example.", "198.51.100.7"),
            answer("ns1", "same.example.", "192.0.2.9"),
            answer("ns2", "same.example.", "192.0.2.9"),
        ];
        let got = dns_disagreements(&samples);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].domain, "shop.example.");
        assert_eq!(
            got[0].answers[2],
            ("ns3".into(), "ns3".into(), vec!["198.51.100.7".to_string()])
        );
        let html = render(
            &StatusData {
                dns_disagreements: got,
                ..StatusData::default()
            },
            UNIX_EPOCH,
        );
        assert!(html.contains("DNS resolvers disagree"), "{html}");
    }

    #[test]
    fn failed_notifications_become_a_banner() {
        let text = "# TYPE prometheus_notifications_errors counter\n\
            prometheus_notifications_errors_total{alertmanager=\"http://am:9093/api/v2/alerts\"} 3\n\
            prometheus_notifications_errors_total{alertmanager=\"http://ok/\"} 0\n\
            prometheus_notifications_dropped_total 2\n# EOF\n";
        let got = notification_failures(text);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].contains("3 to http://am:9093/api/v2/alerts"),
            "{got:?}"
        );
        assert!(!got[0].contains("http://ok/"), "{got:?}");
        assert!(got[1].contains("2 alerts were dropped"), "{got:?}");
        assert!(notification_failures("prometheus_notifications_dropped_total 0\n").is_empty());
    }

    #[test]
    fn outages_name_root_causes_and_their_dependants() {
        let down: Vec<String> = ["dns", "lb", "app", "solo"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let edges = vec![
            ("lb".to_string(), "dns".to_string()),
            ("app".to_string(), "lb".to_string()),
        ];
        let got = outages(&down, &edges);
        assert_eq!(
            got,
            vec![
                Outage {
                    root: "dns".into(),
                    blocked: vec![("lb".into(), "dns".into()), ("app".into(), "lb".into())],
                },
                Outage {
                    root: "solo".into(),
                    blocked: vec![],
                },
            ]
        );
    }

    #[test]
    fn outages_with_a_dependency_cycle_are_still_shown() {
        let down = vec!["a".to_string(), "b".to_string()];
        let edges = vec![
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "a".to_string()),
        ];
        let got = outages(&down, &edges);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].root, "a");
        assert_eq!(got[0].blocked, vec![("b".to_string(), "a".to_string())]);
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 120)), "3h 2m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 3600)),
            "2d 1h"
        );
        assert_eq!(human_latency(1.5), "1.50 s");
        assert_eq!(human_latency(0.0004), "400 µs");
    }
}
