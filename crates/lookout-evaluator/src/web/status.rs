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

use super::WebState;
use crate::alert::AlertState;
use crate::datasource::{Datasource, QuerySample};
use crate::embedded::EmbeddedDatasource;
use crate::rules::status::{GroupSnapshot, RuleHealth, RuleSnapshot, RulesStatus};

/// Seconds between two automatic reloads of the page.
pub const REFRESH_SECONDS: u32 = 15;

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
}

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

fn datasource_of(st: &WebState) -> Option<Arc<dyn Datasource>> {
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
        let problems = &mut data.problems;
        let up = query(ds.as_ref(), "up", now, problems).await;
        let probe_latency = query(
            ds.as_ref(),
            "lookout_target_probe_duration_seconds",
            now,
            problems,
        )
        .await;
        let scrape_latency = query(ds.as_ref(), "scrape_duration_seconds", now, problems).await;
        let failures = query(
            ds.as_ref(),
            "lookout_target_probe_failure_info",
            now,
            problems,
        )
        .await;
        let blocked = query(ds.as_ref(), "lookout_target_blocked == 1", now, problems).await;
        // blackbox_exporter's pattern (a job scraping /probe?target=...): `up` only says the
        // exporter answered; probe_success says whether the target did.
        let probe_success = query(ds.as_ref(), "probe_success", now, problems).await;
        let blackbox_latency = query(ds.as_ref(), "probe_duration_seconds", now, problems).await;
        let failed_probes: BTreeSet<(String, String)> = probe_success
            .iter()
            .filter(|s| s.value == 0.0)
            .map(|s| key(&s.labels))
            .collect();

        let mut latency: HashMap<(String, String), f64> = HashMap::new();
        for s in scrape_latency
            .iter()
            .chain(&blackbox_latency)
            .chain(&probe_latency)
        {
            if s.value.is_finite() {
                latency.insert(key(&s.labels), s.value);
            }
        }
        let mut reasons: HashMap<(String, String), String> = HashMap::new();
        for s in &failures {
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
        for s in &up {
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
            data.targets.push(TargetRow {
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
        data.targets
            .sort_by(|a, b| (a.state, &a.job, &a.instance).cmp(&(b.state, &b.job, &b.instance)));
        for s in &blocked {
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

    if let Some(rules) = &st.rules {
        let groups = rules.groups();
        data.alerts = alert_rows(&groups);
        data.groups = groups.iter().map(group_row).collect();
        data.problems.extend(rule_problems(rules.as_ref()));
    }
    data
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

    // Outages: the cascade view.
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

    // Alerts.
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
            escape_html(&lookout_promql::engine::value::format_float(a.value)),
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
        labels_html(&mut o, &a.labels);
        o.push_str("</div></div>\n");
    }
    o.push_str("</section>\n");

    // Targets.
    o.push_str("<section id=\"targets\" class=\"wide\"><h2>Targets</h2>\n");
    if data.targets.is_empty() {
        o.push_str("<p class=\"empty\">No target has reported yet.</p>\n");
    } else {
        o.push_str("<table><thead><tr><th>State</th><th>Target</th><th>Job</th><th>Latency</th><th>Details</th></tr></thead><tbody>\n");
        for t in &data.targets {
            let (cls, text) = match t.state {
                TargetState::Up => ("up", "up"),
                TargetState::Down => ("down", "down"),
            };
            let _ = write!(
                o,
                r#"<tr class="{cls}"><td data-label="State"><span class="badge {cls}">{text}</span></td><td data-label="Target"><b>{}</b></td><td data-label="Job">{}</td><td data-label="Latency" class="num">{}</td><td data-label="Details">"#,
                escape_html(&t.instance),
                escape_html(&t.job),
                escape_html(&t.latency.map(human_latency).unwrap_or_else(|| "–".into())),
            );
            if let Some(r) = &t.reason {
                let _ = write!(o, r#"<div class="reason">{}</div>"#, escape_html(r));
            }
            labels_html(&mut o, &t.labels);
            o.push_str("</td></tr>\n");
        }
        o.push_str("</tbody></table>\n");
    }
    o.push_str("</section>\n");

    // Rule groups.
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
    o.push_str("</section>\n</main>\n");
    o.push_str(
        r#"<footer>Lookout · <a href="/api/v1/alerts">alerts API</a> · <a href="/api/v1/rules">rules API</a> · <a href="/api/v1/targets">targets API</a> · <a href="/metrics">metrics</a></footer>
</body>
</html>
"#,
    );
    o
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
