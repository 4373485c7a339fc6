//! The remote datasource: evaluates rule expressions on any server that speaks the Prometheus
//! HTTP API (`/api/v1/query`): Prometheus, Thanos, Mimir, VictoriaMetrics.
//!
//! Queries are sent as form-encoded POSTs (GET when configured; some proxies only allow GET)
//! with `query`, `time` and `timeout`. Vector and scalar results are accepted, native
//! histogram samples included ([`crate::remote_histogram`]); a string or a matrix is
//! [`DatasourceError::UnexpectedResult`]. The server's `error` and `errorType` are
//! kept: `bad_data` and `execution` (VictoriaMetrics: `422`, `400`) become
//! [`DatasourceError::Query`], the rest [`DatasourceError::Unavailable`]. Rule outputs are
//! dropped unless a [`RemoteWriter`] is attached ([`RemoteDatasource::with_remote_write`]):
//! then `append` queues them for Prometheus remote write to the server (or any other
//! receiver). VictoriaMetrics answers a range selector with raw samples (as Prometheus) but
//! shows a staleness marker as a plain `NaN`; see [`crate::state::restored_active_at`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::storage::STALE_NAN;
use serde::Deserialize;

use crate::datasource::{Datasource, DatasourceError, DatasourceFuture, QuerySample, TimedSample};
use crate::remote_histogram::histogram_from_json;
use crate::remote_write::RemoteWriter;
use crate::scrape_config::HttpClientConfig;

/// Largest response accepted (bytes).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// HTTP method for queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueryMethod {
    /// Form-encoded POST (default: long expressions do not hit URL limits).
    #[default]
    Post,
    /// Query string GET.
    Get,
}

/// How to reach the server (`--datasource.url` and friends).
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Base URL, e.g. `http://127.0.0.1:9090` or `https://mimir/prometheus`;
    /// `/api/v1/query` is appended.
    pub url: String,
    /// Basic auth or bearer token.
    pub http: HttpClientConfig,
    /// Per-query time limit (also sent as the `timeout` parameter).
    pub timeout: Duration,
    /// GET or POST.
    pub method: QueryMethod,
    /// Whether rule outputs reach the server by other means (e.g. a remote-write pipeline),
    /// so `for` state can be restored from `ALERTS_FOR_STATE` there.
    pub persists_rule_outputs: bool,
}

impl RemoteConfig {
    /// A configuration for `url` with a 30 s timeout, POST, no authentication.
    pub fn new(url: impl Into<String>) -> RemoteConfig {
        RemoteConfig {
            url: url.into(),
            http: HttpClientConfig::default(),
            timeout: Duration::from_secs(30),
            method: QueryMethod::Post,
            persists_rule_outputs: false,
        }
    }
}

/// A [`Datasource`] backed by a Prometheus-API server.
pub struct RemoteDatasource {
    cfg: RemoteConfig,
    query_url: String,
    client: reqwest::Client,
    writer: Option<RemoteWriter>,
}

/// Why a remote datasource could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    /// The URL is not http(s).
    #[error("--datasource.url {0:?} must start with http:// or https://")]
    Url(String),
    /// Authentication settings conflict.
    #[error("--datasource.url authentication: {0}")]
    Auth(String),
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// An element of a vector result: a float sample (`value`) or a native-histogram sample
/// (`histogram`, see [`crate::remote_histogram`]).
#[derive(Deserialize)]
struct VectorElem {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    histogram: Option<(f64, serde_json::Value)>,
}

impl VectorElem {
    fn into_sample(self) -> Result<QuerySample, String> {
        let labels = Labels::new(self.metric);
        match (self.value, self.histogram) {
            (Some((_, v)), None) => Ok(QuerySample {
                labels,
                value: parse_value(&v)?,
                histogram: None,
            }),
            (None, Some((_, h))) => {
                let h = histogram_from_json(&h).map_err(|e| format!("{labels}: {e}"))?;
                Ok(QuerySample {
                    labels,
                    value: 0.0,
                    histogram: Some(Arc::new(h)),
                })
            }
            (Some(_), Some(_)) => Err(format!("{labels}: both a value and a histogram")),
            (None, None) => Err(format!("{labels}: neither a value nor a histogram")),
        }
    }
}

/// An element of a matrix result; its native-histogram samples (`histograms`) are not read:
/// range results only serve to restore `for` state from `ALERTS_FOR_STATE`.
#[derive(Deserialize)]
struct MatrixElem {
    metric: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

fn parse_value(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("invalid sample value {s:?}"))
}

/// Whether an API `errorType` blames the expression rather than the server: Prometheus's
/// `bad_data` and `execution`, and VictoriaMetrics's HTTP status as text (`"422"` for a
/// parse or execution error, `"400"` for a bad parameter).
fn is_query_error(error_type: &str) -> bool {
    matches!(error_type, "bad_data" | "execution" | "422" | "400")
}

fn unix_seconds(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => format!("{}.{:03}", d.as_secs(), d.subsec_millis()),
        Err(e) => format!("-{:.3}", e.duration().as_secs_f64()),
    }
}

enum Result2 {
    Instant(Vec<QuerySample>),
    /// The last sample of each series and the time between its last two samples.
    Matrix(Vec<(TimedSample, Option<Duration>)>),
}

fn from_unix_seconds(t: f64) -> SystemTime {
    if t >= 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(t)
    } else {
        UNIX_EPOCH
    }
}

/// The last sample of a series of a range result, and how long before it the one before
/// was written (its evaluation interval, for a rule output).
fn last_of(e: MatrixElem) -> Result<Option<(TimedSample, Option<Duration>)>, String> {
    let n = e.values.len();
    let Some((t, v)) = e.values.last() else {
        return Ok(None);
    };
    let spacing = (n >= 2)
        .then(|| from_unix_seconds(*t).duration_since(from_unix_seconds(e.values[n - 2].0)))
        .and_then(Result::ok);
    let sample = TimedSample {
        labels: Labels::new(e.metric),
        timestamp: from_unix_seconds(*t),
        value: parse_value(v)?,
    };
    Ok(Some((sample, spacing)))
}

impl RemoteDatasource {
    /// Checks `cfg` and builds the client.
    pub fn new(cfg: RemoteConfig) -> Result<RemoteDatasource, RemoteConfigError> {
        if !(cfg.url.starts_with("http://") || cfg.url.starts_with("https://")) {
            return Err(RemoteConfigError::Url(cfg.url));
        }
        cfg.http.validate().map_err(RemoteConfigError::Auth)?;
        let query_url = format!("{}/api/v1/query", cfg.url.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Ok(RemoteDatasource {
            cfg,
            query_url,
            client,
            writer: None,
        })
    }

    /// Sends rule outputs given to [`Datasource::append`] through `writer`; `for` state is
    /// then restored from `ALERTS_FOR_STATE` on the server.
    pub fn with_remote_write(mut self, writer: RemoteWriter) -> RemoteDatasource {
        self.writer = Some(writer);
        self
    }

    /// Sends queued rule outputs now (on shutdown); `Ok` without remote write.
    pub async fn flush_writes(&self) -> Result<(), String> {
        match &self.writer {
            Some(w) => w.flush().await,
            None => Ok(()),
        }
    }

    /// Reads an API answer (at most [`MAX_RESPONSE_BYTES`]) and its `data`, or the error it
    /// reports, as a query error, a timeout or the datasource being unavailable.
    async fn api_data(
        &self,
        expr: &str,
        mut resp: reqwest::Response,
    ) -> Result<ApiData, DatasourceError> {
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.transport_error(expr, &e))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(DatasourceError::Unavailable(format!(
                    "{}: response larger than {MAX_RESPONSE_BYTES} bytes",
                    self.query_url
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let parsed: ApiResponse = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                return Err(DatasourceError::Unavailable(format!(
                    "{}: HTTP {status}: cannot decode response ({e}): {snippet}",
                    self.query_url
                )));
            }
        };
        if parsed.status != "success" {
            let message = parsed.error.unwrap_or_else(|| format!("HTTP {status}"));
            let kind = parsed.error_type.unwrap_or_default();
            return Err(match kind.as_str() {
                k if is_query_error(k) => DatasourceError::Query {
                    expr: expr.to_string(),
                    message,
                },
                "timeout" => DatasourceError::Timeout {
                    expr: expr.to_string(),
                    timeout: self.cfg.timeout,
                },
                _ => DatasourceError::Unavailable(format!("{}: {kind}: {message}", self.query_url)),
            });
        }
        parsed.data.ok_or_else(|| {
            DatasourceError::Unavailable(format!(
                "{}: success response without data",
                self.query_url
            ))
        })
    }

    async fn call(
        &self,
        expr: &str,
        at: SystemTime,
        want_matrix: bool,
    ) -> Result<Result2, DatasourceError> {
        let timeout_param = format!("{}ms", self.cfg.timeout.as_millis().max(1));
        let params = [
            ("query", expr.to_string()),
            ("time", unix_seconds(at)),
            ("timeout", timeout_param),
        ];
        let req = match self.cfg.method {
            QueryMethod::Post => self.client.post(&self.query_url).form(&params),
            QueryMethod::Get => self.client.get(&self.query_url).query(&params),
        }
        .timeout(self.cfg.timeout);
        let req = self
            .cfg
            .http
            .apply(req)
            .map_err(|e| DatasourceError::Unavailable(e.to_string()))?;
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(expr, &e))?;
        let data = self.api_data(expr, resp).await?;
        let malformed = |e: String| {
            DatasourceError::Unavailable(format!("{}: malformed result: {e}", self.query_url))
        };
        match (data.result_type.as_str(), want_matrix) {
            ("vector", false) => {
                let elems: Vec<VectorElem> =
                    serde_json::from_value(data.result).map_err(|e| malformed(e.to_string()))?;
                let out = elems
                    .into_iter()
                    .map(VectorElem::into_sample)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(malformed)?;
                Ok(Result2::Instant(out))
            }
            ("scalar", false) => {
                let (_, v): (f64, String) =
                    serde_json::from_value(data.result).map_err(|e| malformed(e.to_string()))?;
                Ok(Result2::Instant(vec![QuerySample {
                    labels: Labels::default(),
                    value: parse_value(&v).map_err(malformed)?,
                    histogram: None,
                }]))
            }
            ("matrix", true) => {
                let elems: Vec<MatrixElem> =
                    serde_json::from_value(data.result).map_err(|e| malformed(e.to_string()))?;
                let mut out = Vec::new();
                for e in elems {
                    if let Some(last) = last_of(e).map_err(malformed)? {
                        out.push(last);
                    }
                }
                Ok(Result2::Matrix(out))
            }
            (other, _) => Err(DatasourceError::UnexpectedResult {
                expr: expr.to_string(),
                kind: other.to_string(),
            }),
        }
    }

    /// Marks as stale (with [`STALE_NAN`]) the last sample of each series that was followed
    /// by a staleness marker. Prometheus leaves markers out of range results, so a series
    /// that ended (an alert that resolved) looks like one whose writer stopped (an evaluator
    /// that was killed); restoring it would revive a finished `for`. An instant query tells
    /// them apart: shortly after the last sample (one and a half sample intervals, when the
    /// marker has been written; 60 s when there was only one sample) a series that ended
    /// is absent, one that merely stopped is still present within the look-back.
    /// VictoriaMetrics returns markers as `NaN` samples, which are left as they are.
    async fn mark_ended(
        &self,
        selector: &str,
        last: Vec<(TimedSample, Option<Duration>)>,
        at: SystemTime,
    ) -> Result<Vec<TimedSample>, DatasourceError> {
        let mut probes: std::collections::BTreeMap<SystemTime, Vec<usize>> = Default::default();
        for (i, (s, spacing)) in last.iter().enumerate() {
            let after = spacing.unwrap_or(Duration::from_secs(60)) * 3 / 2;
            let probe = (s.timestamp + after).min(at);
            if !s.value.is_nan() && probe > s.timestamp {
                probes.entry(probe).or_default().push(i);
            }
        }
        let mut out: Vec<TimedSample> = last.into_iter().map(|(s, _)| s).collect();
        for (probe, series) in probes {
            let present = self.query(selector, probe).await?;
            for i in series {
                if !present.iter().any(|p| p.labels == out[i].labels) {
                    out[i].value = STALE_NAN;
                }
            }
        }
        Ok(out)
    }

    fn transport_error(&self, expr: &str, e: &reqwest::Error) -> DatasourceError {
        if e.is_timeout() {
            DatasourceError::Timeout {
                expr: expr.to_string(),
                timeout: self.cfg.timeout,
            }
        } else {
            DatasourceError::Unavailable(format!(
                "{}: {}",
                self.query_url,
                crate::scrape::target::describe(e)
            ))
        }
    }
}

impl Datasource for RemoteDatasource {
    fn query<'a>(
        &'a self,
        expr: &'a str,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<QuerySample>> {
        Box::pin(async move {
            match self.call(expr, at, false).await? {
                Result2::Instant(v) => Ok(v),
                Result2::Matrix(_) => Err(DatasourceError::UnexpectedResult {
                    expr: expr.to_string(),
                    kind: "matrix".into(),
                }),
            }
        })
    }

    fn append(&self, samples: &[QuerySample], at: SystemTime) -> Result<(), DatasourceError> {
        if let Some(w) = &self.writer {
            w.enqueue(samples, crate::scrape::target::to_ms(at));
        }
        Ok(())
    }

    fn last_samples<'a>(
        &'a self,
        selector: &'a str,
        lookback: Duration,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<TimedSample>> {
        Box::pin(async move {
            let ms = lookback.as_millis().max(1);
            let expr = format!("{selector}[{ms}ms]");
            match self.call(&expr, at, true).await {
                Ok(Result2::Matrix(v)) => self.mark_ended(selector, v, at).await,
                Ok(Result2::Instant(_)) => Err(DatasourceError::UnexpectedResult {
                    expr,
                    kind: "vector".into(),
                }),
                Err(e) => Err(e),
            }
        })
    }

    fn persists_rule_outputs(&self) -> bool {
        self.cfg.persists_rule_outputs || self.writer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_values() {
        assert_eq!(
            unix_seconds(UNIX_EPOCH + Duration::from_millis(1_500)),
            "1.500"
        );
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert!(parse_value("NaN").unwrap().is_nan());
        assert!(parse_value("x").is_err());
        assert!(RemoteDatasource::new(RemoteConfig::new("ftp://x")).is_err());
    }

    #[test]
    fn victoriametrics_error_types_blame_the_expression() {
        for kind in ["bad_data", "execution", "422", "400"] {
            assert!(is_query_error(kind), "{kind}");
        }
        for kind in ["unavailable", "internal", "503", "timeout", ""] {
            assert!(!is_query_error(kind), "{kind}");
        }
    }

    #[test]
    fn vector_elements_carry_a_value_or_a_histogram() {
        let parse = |v: serde_json::Value| {
            serde_json::from_value::<VectorElem>(v)
                .map_err(|e| e.to_string())
                .and_then(VectorElem::into_sample)
        };
        let h = parse(
            serde_json::json!({"metric": {"__name__": "h"}, "histogram": [1.5,
            {"count": "2", "sum": "3", "buckets": [[0, "1", "2", "2"]]}]}),
        )
        .unwrap();
        let hist = h.histogram.expect("a histogram");
        assert_eq!((hist.count, hist.sum, hist.schema), (2.0, 3.0, 0));
        assert_eq!(h.value, 0.0);
        let f = parse(serde_json::json!({"metric": {}, "value": [1.5, "4"]})).unwrap();
        assert_eq!((f.value, f.histogram), (4.0, None));
        let both = serde_json::json!({"metric": {"a": "b"}, "value": [1, "1"],
            "histogram": [1, {"count": "0", "sum": "0"}]});
        assert!(
            parse(both)
                .unwrap_err()
                .contains("both a value and a histogram")
        );
        let neither = parse(serde_json::json!({"metric": {"a": "b"}})).unwrap_err();
        assert_eq!(neither, "{a=\"b\"}: neither a value nor a histogram");
        let bad = serde_json::json!({"metric": {"a": "b"}, "histogram": [1, {"count": "x"}]});
        assert!(
            parse(bad)
                .unwrap_err()
                .starts_with("{a=\"b\"}: histogram count \"x\"")
        );
    }

    #[test]
    fn range_results_skip_histogram_samples() {
        let e: MatrixElem = serde_json::from_value(serde_json::json!({"metric": {"a": "b"},
            "histograms": [[1, {"count": "1", "sum": "1"}]]}))
        .unwrap();
        assert!(last_of(e).unwrap().is_none());
        let e: MatrixElem = serde_json::from_value(serde_json::json!({"metric": {},
            "values": [[1, "1"], [3, "2"]], "histograms": [[2, {"count": "1", "sum": "1"}]]}))
        .unwrap();
        let (last, spacing) = last_of(e).unwrap().unwrap();
        assert_eq!((last.value, spacing), (2.0, Some(Duration::from_secs(2))));
    }
}
