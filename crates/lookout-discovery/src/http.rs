//! `http_sd_configs`: target groups from an HTTP endpoint, as Prometheus's
//! `discovery/http`.
//!
//! Every `refresh_interval` (default 60s) a GET with `Accept: application/json` and
//! `X-Prometheus-Refresh-Interval-Seconds` (the interval, as Prometheus sends it); the answer
//! must be 200 with a JSON content type and a JSON list of `{targets, labels}` groups. The
//! request is bounded in time ([`DiscoveryOptions::http_timeout`], at most the interval) and
//! the body in size ([`DiscoveryOptions::max_http_bytes`]); a failure of any kind keeps the
//! last good groups and counts in `prometheus_sd_http_failures_total`. Each group gets
//! `__meta_url` and the source `url:index`. HTTP client settings (authentication, TLS, proxy)
//! are not supported yet: they are configuration errors, not silently ignored.

use std::time::Duration;

use serde::Deserialize;

use crate::{DiscoveryOptions, RawGroup, SdDuration, Sink, TargetGroup, into_groups};

/// Prometheus's default `refresh_interval` for HTTP SD.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// One `http_sd_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSdConfig {
    /// The endpoint (`http` or `https`).
    pub url: String,
    /// Refresh interval (default 60s).
    #[serde(default)]
    pub refresh_interval: Option<SdDuration>,
}

impl HttpSdConfig {
    /// The effective refresh interval.
    pub fn refresh(&self) -> Duration {
        self.refresh_interval
            .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0)
    }

    /// Checks the URL as Prometheus does.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("URL is missing".into());
        }
        let u = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("invalid url {:?}: {e}", self.url))?;
        if u.scheme() != "http" && u.scheme() != "https" {
            return Err("URL scheme must be 'http' or 'https'".into());
        }
        if u.host_str().unwrap_or("").is_empty() {
            return Err("host is missing in URL".into());
        }
        Ok(())
    }
}

/// `^(?i:application\/json(;\s*charset=("utf-8"|utf-8))?)$`.
fn json_content_type(ct: &str) -> bool {
    let ct = ct.trim().to_ascii_lowercase();
    let Some(rest) = ct.strip_prefix("application/json") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix(';') else {
        return false;
    };
    matches!(rest.trim_start(), "charset=utf-8" | "charset=\"utf-8\"")
}

/// One refresh: the groups, or why there are none.
pub async fn fetch(
    client: &reqwest::Client,
    cfg: &HttpSdConfig,
    options: &DiscoveryOptions,
) -> Result<Vec<TargetGroup>, String> {
    let refresh = cfg.refresh();
    let timeout = options.http_timeout.min(refresh);
    let work = async {
        let resp = client
            .get(&cfg.url)
            .header("Accept", "application/json")
            .header(
                "X-Prometheus-Refresh-Interval-Seconds",
                format!("{}", refresh.as_secs_f64()),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("server returned HTTP status {}", resp.status()));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !json_content_type(&ct) {
            return Err(format!("unsupported content type {ct:?}"));
        }
        crate::read_body(resp, options.max_http_bytes).await
    };
    let body = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no complete response within {timeout:?}"))??;
    let raw: Vec<Option<RawGroup>> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let raw: Vec<RawGroup> = raw
        .into_iter()
        .map(|g| g.ok_or_else(|| "nil target group item found".to_string()))
        .collect::<Result<_, _>>()?;
    into_groups(
        raw,
        ("__meta_url", &cfg.url),
        |i| format!("{}:{i}", cfg.url),
        options.max_targets_per_source,
    )
}

/// The HTTP client of HTTP SD.
pub fn client() -> reqwest::Client {
    crate::client_builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

pub(crate) async fn run(cfg: HttpSdConfig, options: DiscoveryOptions, sink: Sink) {
    let client = client();
    loop {
        match fetch(&client, &cfg, &options).await {
            Ok(groups) => sink.publish(groups),
            Err(e) => {
                sink.metrics.http_failures.inc();
                tracing::error!(url = %cfg.url, error = %e, "HTTP service discovery failed; keeping the last good targets");
            }
        }
        tokio::time::sleep(cfg.refresh()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(json_content_type("application/json"));
        assert!(json_content_type("Application/JSON; charset=utf-8"));
        assert!(json_content_type("application/json;charset=\"utf-8\""));
        assert!(!json_content_type("application/json; charset=latin1"));
        assert!(!json_content_type("text/plain"));
    }

    #[tokio::test]
    async fn fetches_bounds_and_header() {
        use axum::routing::get;
        let app = axum::Router::new()
            .route(
                "/sd",
                get(|h: axum::http::HeaderMap| async move {
                    let r = h
                        .get("x-prometheus-refresh-interval-seconds")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    (
                        [("content-type", "application/json")],
                        format!(r#"[{{"targets":["a:1"],"labels":{{"r":"{r}"}}}}]"#),
                    )
                }),
            )
            .route("/text", get(|| async { "[]" }))
            .route(
                "/big",
                get(|| async { ([("content-type", "application/json")], " ".repeat(4096)) }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        let c = client();
        let o = DiscoveryOptions {
            max_http_bytes: 1024,
            ..Default::default()
        };
        let cfg = |p: &str| HttpSdConfig {
            url: format!("http://{addr}{p}"),
            refresh_interval: Some(SdDuration(Duration::from_secs(15))),
        };
        let g = fetch(&c, &cfg("/sd"), &o).await.unwrap();
        assert_eq!(g[0].labels["r"], "15");
        assert_eq!(g[0].labels["__meta_url"], format!("http://{addr}/sd"));
        assert_eq!(g[0].source, format!("http://{addr}/sd:0"));
        let e = fetch(&c, &cfg("/text"), &o).await.unwrap_err();
        assert!(e.contains("content type"), "{e}");
        let e = fetch(&c, &cfg("/big"), &o).await.unwrap_err();
        assert!(e.contains("1024-byte"), "{e}");
        let e = fetch(&c, &cfg("/nope"), &o).await.unwrap_err();
        assert!(e.contains("404"), "{e}");
    }
}
