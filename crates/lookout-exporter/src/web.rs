//! The HTTP endpoints (axum). Handlers are thin: they read the shared [`Exporter`] and call
//! the prober, the metrics or the reload logic.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET`/`POST /probe?target=&module=[&hostname=][&debug=true]` | one probe, blackbox_exporter style (403 when `probe_policy` refuses the target); `debug=true` prints the probe's log, its metrics and the module as YAML |
//! | `GET /metrics` | own metrics and the continuous targets' latest results: OpenMetrics text, or delimited protobuf (native histograms included) when `Accept` prefers it ([`wants_protobuf`]) |
//! | `POST`/`GET`/`HEAD /heartbeat/{name}` | records a push (404 unknown name, 405 other methods); any method is a write for `basic_auth_scope: write` |
//! | `GET /health` | JSON: status, uptime, time, version |
//! | `GET /-/healthy`, `GET /-/ready` | liveness and readiness |
//! | `POST /-/reload` | re-reads the configuration (500 with the error when it is broken) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::{Module, ProberKind};
use crate::probe_guard::Refusal;
use crate::prober::{self, ProbeRequest};
use crate::reload::Exporter;
use crate::scheduler::prober_name;
use crate::{DEFAULT_SCRAPE_TIMEOUT, exposition, metrics, protobuf};

/// The module `/probe` uses when the request names none (as blackbox_exporter does).
pub const DEFAULT_MODULE: &str = "http_2xx";

/// Builds the router over a shared exporter.
pub fn router(exporter: Arc<Exporter>) -> Router {
    Router::new()
        .route("/", get(index))
        // Any method, as blackbox_exporter (parameters come from the query string only).
        .route("/probe", get(probe).post(probe))
        .route("/metrics", get(metrics_page))
        // GET and HEAD too: a cron job's `curl URL` (or `wget -q URL`) pushes with a GET.
        .route("/heartbeat/{name}", get(heartbeat).post(heartbeat))
        .route("/health", get(health))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload).put(reload))
        .with_state(exporter)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>Lookout exporter</title></head><body>\
         <h1>Lookout exporter</h1>\
         <p><a href=\"probe?target=http://127.0.0.1:9115/-/healthy&amp;module=http_2xx&amp;debug=true\">Debug probe</a></p>\
         <p><a href=\"metrics\">Metrics</a></p>\
         <p><a href=\"health\">Health</a></p>\
         </body></html>",
    )
        .into_response()
}

/// blackbox_exporter's `getTimeout`: the scrape timeout from Prometheus' header (120 s when
/// absent or 0) minus the offset, or the module's timeout when that is set and smaller, or
/// when the offset leaves less than nothing. A header equal to the offset, or smaller with no
/// module timeout, gives zero: the probe fails at once, as blackbox's does.
pub fn probe_timeout(
    header: Option<&str>,
    module: &Module,
    offset: f64,
) -> Result<Duration, String> {
    let mut scrape = match header {
        Some(value) => value
            .trim()
            .parse::<f64>()
            .map_err(|err| format!("Failed to parse timeout from Prometheus header: {err}"))?,
        None => 0.0,
    };
    if scrape == 0.0 || !scrape.is_finite() {
        scrape = DEFAULT_SCRAPE_TIMEOUT.as_secs_f64();
    }
    let max = scrape - offset;
    let module_timeout = module.timeout.as_secs_f64();
    let chosen = if (module_timeout < max && module_timeout > 0.0) || max < 0.0 {
        module_timeout
    } else {
        max
    };
    // A header too large for a Duration waits as long as one can.
    Ok(Duration::try_from_secs_f64(chosen.max(0.0)).unwrap_or(Duration::MAX))
}

/// blackbox_exporter's `setHTTPHost`: `?hostname=` may not contradict a `Host` header the
/// module sets.
fn hostname_conflict(module: &Module, hostname: &str) -> Option<String> {
    module
        .http
        .headers
        .iter()
        .find(|(name, value)| name.eq_ignore_ascii_case("host") && value.as_str() != hostname)
        .map(|(_, value)| {
            format!(
                "host header defined both in module configuration ({value}) and with \
                 URL-parameter 'hostname' ({hostname})"
            )
        })
}

async fn probe(
    State(exporter): State<Arc<Exporter>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // blackbox_exporter's order of checks: module, timeout header, target, hostname.
    let module_name = params
        .get("module")
        .filter(|m| !m.is_empty())
        .map(String::as_str)
        .unwrap_or(DEFAULT_MODULE);
    let config = exporter.config();
    let Some(module) = config.modules.get(module_name) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Unknown module {module_name:?}"),
        );
    };
    let header = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok());
    let timeout = match probe_timeout(header, module, exporter.timeout_offset) {
        Ok(timeout) => timeout,
        Err(message) => return text(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    let Some(target) = params.get("target").filter(|t| !t.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Target parameter is missing");
    };
    let hostname = params
        .get("hostname")
        .map(String::as_str)
        .filter(|h| !h.is_empty());
    if let Some(conflict) = hostname
        .filter(|_| module.prober == ProberKind::Http)
        .and_then(|h| hostname_conflict(module, h))
    {
        return text(StatusCode::BAD_REQUEST, conflict);
    }
    let configured = config.targets.iter().any(|t| t.target == *target);
    if let Err(refusal) = config
        .probe_policy
        .check(target, module.prober, configured)
        .await
    {
        return refuse(&exporter, &refusal, target);
    }
    let Ok(_permit) = exporter.probe_permits.clone().try_acquire_owned() else {
        exporter.metrics.probe_requests_rejected.inc();
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many concurrent probes; retry later or raise --web.max-concurrent-probes",
        );
    };
    let request = ProbeRequest {
        target,
        module,
        hostname,
        timeout,
        limits: exporter.limits,
        // Checked at every connect, redirects included; configured targets are exempt.
        policy: (config.probe_policy.is_active() && !configured).then_some(&config.probe_policy),
    };
    let report = prober::run(&request).await;
    exporter
        .metrics
        .observe_probe(prober_name(module.prober), &report);
    if let Some(failure) = report
        .failure
        .as_ref()
        .filter(|f| f.reason == prober::reason::NOT_ALLOWED)
    {
        return refuse(
            &exporter,
            &Refusal::NotAllowed(failure.message.clone()),
            target,
        );
    }
    let body = exposition::render(&report.recorder.metrics);
    let debug = params.get("debug").is_some_and(|d| d == "true");
    if debug {
        let mut out = String::from("Logs for the probe:\n");
        for line in &report.recorder.log {
            out.push_str(line);
            out.push('\n');
        }
        if let Some(failure) = &report.failure {
            out.push_str(&format!(
                "Probe failed: {} ({})\n",
                failure.message, failure.reason
            ));
        } else {
            out.push_str("Probe succeeded\n");
        }
        out.push_str("\n\n\nMetrics that would have been returned:\n");
        out.push_str(&body);
        // As blackbox_exporter: the module as YAML, in the schema of the file it came from.
        out.push_str("\n\n\nModule configuration:\n");
        out.push_str(&module.to_yaml());
        return text(StatusCode::OK, out);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// Answers 403 for a refused target and counts the refusal by reason.
fn refuse(exporter: &Exporter, refusal: &Refusal, target: &str) -> Response {
    exporter
        .metrics
        .probe_requests_refused
        .get_or_create(&[("reason", refusal.reason())])
        .inc();
    text(StatusCode::FORBIDDEN, refusal.message(target))
}

/// Whether an `Accept` header prefers the protobuf exposition (delimited
/// `io.prometheus.client.MetricFamily`, what Prometheus asks for first when native histograms
/// are on) to the text. The entry with the highest q-value (1 when absent) among those
/// `/metrics` can answer wins, the first listed among equals; anything else (no header, no
/// entry we can answer, `*/*`, any text type, protobuf with other parameters) keeps the
/// OpenMetrics text.
pub fn wants_protobuf(accept: Option<&str>) -> bool {
    let mut best: Option<(f64, bool)> = None;
    for entry in accept.unwrap_or_default().split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default().to_ascii_lowercase();
        let (mut q, mut proto, mut encoding) = (1.0, None, None);
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => {
                    q = value
                        .parse::<f64>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0)
                }
                "proto" => proto = Some(value),
                "encoding" => encoding = Some(value),
                _ => {}
            }
        }
        let protobuf = match media_type.as_str() {
            "application/vnd.google.protobuf" => {
                if proto != Some("io.prometheus.client.MetricFamily")
                    || encoding != Some("delimited")
                {
                    continue;
                }
                true
            }
            "application/openmetrics-text" | "text/plain" | "text/*" | "*/*" => false,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, protobuf));
        }
    }
    best.is_some_and(|(_, protobuf)| protobuf)
}

async fn metrics_page(State(exporter): State<Arc<Exporter>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if wants_protobuf(accept) {
        let body = exporter.protobuf.render();
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, protobuf::CONTENT_TYPE),
                (header::VARY, "Accept"),
            ],
            body,
        )
            .into_response();
    }
    let body = metrics::render(&exporter.registry);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::VARY, "Accept"),
        ],
        body,
    )
        .into_response()
}

async fn heartbeat(State(exporter): State<Arc<Exporter>>, Path(name): Path<String>) -> Response {
    if exporter.heartbeats.push(&name) {
        text(StatusCode::OK, "OK\n")
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("Unknown heartbeat {name:?}: add it under heartbeats: in the configuration\n"),
        )
    }
}

async fn health(State(exporter): State<Arc<Exporter>>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let body = serde_json::json!({
        "status": "ok",
        "uptime_seconds": exporter.started.elapsed().as_secs_f64(),
        "timestamp": now,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn healthy() -> Response {
    text(StatusCode::OK, "Healthy\n")
}

async fn ready() -> Response {
    text(StatusCode::OK, "Ready\n")
}

async fn reload(State(exporter): State<Arc<Exporter>>) -> Response {
    match exporter.reload().await {
        Ok(()) => text(StatusCode::OK, "OK\n"),
        Err(err) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {err}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(timeout: f64) -> Module {
        Module {
            timeout: Duration::from_secs_f64(timeout),
            ..Module::default()
        }
    }

    #[test]
    fn timeout_follows_blackbox() {
        // No header: 120 s minus the offset, unless the module's is smaller.
        assert_eq!(
            probe_timeout(None, &module(0.0), 0.5),
            Ok(Duration::from_secs_f64(119.5))
        );
        assert_eq!(
            probe_timeout(None, &module(5.0), 0.5),
            Ok(Duration::from_secs(5))
        );
        // Header smaller than the module's timeout.
        assert_eq!(
            probe_timeout(Some("3"), &module(5.0), 0.5),
            Ok(Duration::from_secs_f64(2.5))
        );
        // Header larger.
        assert_eq!(
            probe_timeout(Some("10"), &module(5.0), 0.5),
            Ok(Duration::from_secs(5))
        );
        assert!(probe_timeout(Some("soon"), &module(5.0), 0.5).is_err());
        // A header the offset eats: the module's timeout, or nothing (fail at once).
        assert_eq!(
            probe_timeout(Some("0.3"), &module(0.0), 0.5),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            probe_timeout(Some("0.3"), &module(5.0), 0.5),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            probe_timeout(Some("0.5"), &module(5.0), 0.5),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            probe_timeout(Some("1e300"), &module(0.0), 0.5),
            Ok(Duration::MAX)
        );
    }

    #[test]
    fn protobuf_is_chosen_by_q_value() {
        // Prometheus 2.42's header with native histograms on, and without.
        let with = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
                    encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,\
                    application/openmetrics-text;version=0.0.1;q=0.75,\
                    text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let without = "application/openmetrics-text;version=1.0.0,\
                       application/openmetrics-text;version=0.0.1;q=0.75,\
                       text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_protobuf(Some(with)));
        assert!(!wants_protobuf(Some(without)));
        assert!(!wants_protobuf(None));
        assert!(!wants_protobuf(Some("")));
        assert!(!wants_protobuf(Some("*/*")));
        // client_golang's spelling, with spaces.
        assert!(wants_protobuf(Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        )));
        // Text preferred by q, or listed first at the same q.
        assert!(!wants_protobuf(Some(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited;q=0.5,text/plain;q=0.6"
        )));
        assert!(!wants_protobuf(Some(
            "text/plain,application/vnd.google.protobuf;\
             proto=io.prometheus.client.MetricFamily;encoding=delimited"
        )));
        assert!(wants_protobuf(Some(
            "application/json,application/vnd.google.protobuf;\
             proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.2,text/plain;q=0.1"
        )));
        // Refused (q=0), other encodings or messages, or a broken q.
        for refused in [
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
            "application/vnd.google.protobuf",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=x",
        ] {
            assert!(!wants_protobuf(Some(refused)), "{refused}");
        }
    }

    #[test]
    fn hostname_may_not_contradict_the_modules_host_header() {
        let mut m = module(0.0);
        assert_eq!(hostname_conflict(&m, "a.example"), None);
        m.http.headers.insert("host".into(), "a.example".into());
        assert_eq!(hostname_conflict(&m, "a.example"), None);
        assert_eq!(
            hostname_conflict(&m, "b.example").as_deref(),
            Some(
                "host header defined both in module configuration (a.example) and with \
                 URL-parameter 'hostname' (b.example)"
            )
        );
    }
}
