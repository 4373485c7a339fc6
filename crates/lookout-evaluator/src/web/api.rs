//! `/api/v1/*` handlers in Prometheus's JSON shapes (`web/api/v1/api.go`): every answer is
//! `{"status":"success","data":...}` or `{"status":"error","errorType":...,"error":...}`
//! with Prometheus's HTTP status per error type (400 `bad_data`, 422 `execution`,
//! 503 `timeout`/`unavailable`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lookout_promql::Labels;
use lookout_promql::engine::{QueryControl, QueryError, Value};
use lookout_promql::storage::{Queryable, Storage};
use promql_parser::label::{MatchOp, Matcher};
use serde_json::{Value as Json, json};

use super::WebState;
use super::rules_json::{RuleFilter, alerts_body, rules_body, time_json};
use crate::rules::status::GroupSnapshot;
use crate::scrape_config::PromDuration;

/// Prometheus's limit on points per series of a range query.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Form or query-string parameters, in order (repeated names such as `match[]` kept).
pub type Params = Vec<(String, String)>;

/// An API error with Prometheus's error type.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    /// The error's message, as the API's `error` field says it.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
    fn execution(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "execution",
            message: message.into(),
        }
    }
    fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: message.into(),
        }
    }
    fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "timeout",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// An answer already encoded as JSON (see [`super::json`]).
fn json_response(body: Vec<u8>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn params_all<'a>(p: &'a Params, name: &str) -> Vec<&'a str> {
    p.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Prometheus's `parseTime`: Unix seconds (float) or RFC 3339; milliseconds out.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let ms = (f * 1000.0).round();
        if ms.abs() < 9.2e18 {
            return Ok(ms as i64);
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    Err(format!("cannot parse {s:?} to a valid timestamp"))
}

/// Prometheus's `parseDuration`: seconds (float) or a duration such as `15s`; milliseconds
/// out.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let ms = (f * 1000.0).round();
        if ms.abs() < 9.2e18 {
            return Ok(ms as i64);
        }
        return Err(format!(
            "cannot parse {s:?} to a valid duration. It overflows int64"
        ));
    }
    lookout_promql::duration::parse_duration_ms(s)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

fn now_ms() -> i64 {
    crate::scrape::target::to_ms(SystemTime::now())
}

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match param(p, name) {
        None | Some("") => Ok(default),
        Some(s) => parse_time(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter {name:?}: {e}"))),
    }
}

fn labels_json(l: &Labels) -> Json {
    Json::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
            .collect(),
    )
}

fn storage(st: &WebState) -> Result<Arc<Storage>, ApiError> {
    st.storage.clone().ok_or_else(|| {
        ApiError::unavailable(
            "queries are served in embedded mode only; query the remote datasource directly",
        )
    })
}

fn engine_error(e: QueryError) -> ApiError {
    crate::limits::count_query_error(&e);
    match e {
        QueryError::Parse { .. } => ApiError::bad_data(e.to_string()),
        // The evaluation reached the query's deadline before the waiter did: the same 503.
        QueryError::Eval { ref message, .. } if message.contains("query timed out") => {
            ApiError::timeout(e.to_string())
        }
        other => ApiError::execution(other.to_string()),
    }
}

/// Runs `f` on the blocking pool within the query timeout and concurrency limit. `f` gets
/// the query's [`QueryControl`]: its deadline is the query's own (`timeout=`, the wait for
/// a slot included), and it is cancelled as soon as this future ends without the result —
/// at the timeout, or when the client goes away and the server drops the request — so the
/// evaluation stops and frees its slot instead of running on unseen.
pub(crate) async fn run_query<T, F>(
    st: &WebState,
    timeout_param: Option<&str>,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&QueryControl) -> Result<T, QueryError> + Send + 'static,
{
    let mut limit = st.query_timeout;
    if let Some(t) = timeout_param.filter(|t| !t.is_empty()) {
        let ms = parse_duration(t)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        if ms > 0 {
            limit = limit.min(Duration::from_millis(ms as u64));
        }
    }
    // Waiting for a slot counts against the timeout, as in Prometheus; the slot is held
    // until the evaluation itself ends, which the cancellation below makes prompt.
    let _in_flight = st.query_gate.enter();
    let now = tokio::time::Instant::now();
    // A timeout too long for the clock: about 30 years, as tokio's own `timeout` does.
    let deadline = now
        .checked_add(limit)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
    let permit = match tokio::time::timeout_at(deadline, st.query_gate.acquire()).await {
        Err(_) => {
            crate::limits::hit("query_timeout");
            return Err(ApiError::timeout("query timed out in query queue"));
        }
        Ok(Err(_)) => return Err(ApiError::unavailable("query engine is shutting down")),
        Ok(Ok(p)) => p,
    };
    let control = QueryControl::with_deadline(deadline.into_std());
    let _cancel = control.cancel_on_drop();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(&control)
    });
    let finished = tokio::select! {
        finished = tokio::time::timeout_at(deadline, task) => finished,
        () = st.query_gate.closed() => {
            return Err(ApiError::unavailable("query engine is shutting down"));
        }
    };
    match finished {
        Err(_) => Err({
            crate::limits::hit("query_timeout");
            ApiError::timeout("query timed out in expression evaluation")
        }),
        Ok(Err(e)) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: format!("query task failed: {e}"),
        }),
        Ok(Ok(r)) => r.map_err(engine_error),
    }
}

/// `GET|POST /api/v1/query?query=&time=&timeout=`
pub async fn query(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    match query_inner(&st, &p).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn query_inner(st: &WebState, p: &Params) -> Result<Response, ApiError> {
    let storage = storage(st)?;
    let q = param(p, "query").unwrap_or("").to_string();
    let t = time_param(p, "time", now_ms())?;
    let engine = st.engine.clone();
    // Encoded on the blocking pool with the evaluation: a large answer takes a while.
    let body = run_query(st, param(p, "timeout"), move |control| {
        let value =
            engine.instant_query_controlled(storage.as_ref() as &dyn Queryable, &q, t, control)?;
        // Every sample of an instant query carries the evaluation time, as in Prometheus's
        // API (the engine leaves the time of aggregated samples unset).
        let value = match value {
            Value::Vector(mut v) => {
                for s in &mut v {
                    s.t = t;
                }
                Value::Vector(v)
            }
            other => other,
        };
        Ok(super::json::success_value(&value))
    })
    .await?;
    Ok(json_response(body))
}

/// `GET|POST /api/v1/query_range?query=&start=&end=&step=&timeout=`
pub async fn query_range(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    match query_range_inner(&st, &p).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn query_range_inner(st: &WebState, p: &Params) -> Result<Response, ApiError> {
    let storage = storage(st)?;
    let required = |name: &str| -> Result<&str, ApiError> {
        param(p, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::bad_data(format!("invalid parameter {name:?}: missing")))
    };
    let start = parse_time(required("start")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"start\": {e}")))?;
    let end = parse_time(required("end")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"end\": {e}")))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(required("step")?)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let q = param(p, "query").unwrap_or("").to_string();
    let engine = st.engine.clone();
    let body = run_query(st, param(p, "timeout"), move |control| {
        let storage = storage.as_ref() as &dyn Queryable;
        let matrix = engine.range_query_controlled(storage, &q, (start, end, step), control)?;
        Ok(super::json::success_value(&Value::Matrix(matrix)))
    })
    .await?;
    Ok(json_response(body))
}

/// Series matching any `match[]` selector in `[start, end]` (all series with a name when
/// `match[]` is absent and `required` is false).
fn matching_series(storage: &Storage, p: &Params, required: bool) -> Result<Vec<Labels>, ApiError> {
    let start = time_param(p, "start", i64::MIN)?;
    let end = time_param(p, "end", i64::MAX)?;
    let selectors = params_all(p, "match[]");
    if selectors.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let mut sets: Vec<Vec<Matcher>> = Vec::new();
    for s in &selectors {
        let m = crate::embedded::selector_matchers(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        sets.push(m);
    }
    if sets.is_empty() {
        sets.push(vec![Matcher::new(MatchOp::NotEqual, "__name__", "")]);
    }
    let mut out = BTreeSet::new();
    for m in &sets {
        for s in storage.select(m, start, end) {
            out.insert(s.labels);
        }
    }
    Ok(out.into_iter().collect())
}

/// `GET|POST /api/v1/series?match[]=&start=&end=`
pub async fn series(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    let r = storage(&st).and_then(|s| matching_series(&s, &p, true));
    match r {
        Ok(list) => success(Json::Array(list.iter().map(labels_json).collect())),
        Err(e) => e.into_response(),
    }
}

/// `GET|POST /api/v1/labels?match[]=&start=&end=`
pub async fn labels(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    let r = storage(&st).and_then(|s| matching_series(&s, &p, false));
    match r {
        Ok(list) => {
            let names: BTreeSet<&str> =
                list.iter().flat_map(|l| l.iter().map(|(k, _)| k)).collect();
            success(json!(names))
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/label/<name>/values?match[]=&start=&end=`
pub async fn label_values(
    State(st): State<WebState>,
    Path(name): Path<String>,
    Form(p): Form<Params>,
) -> Response {
    if !crate::scrape::relabel::is_valid_label_name(&name) {
        return ApiError::bad_data(format!("invalid label name: {name:?}")).into_response();
    }
    let r = storage(&st).and_then(|s| matching_series(&s, &p, false));
    match r {
        Ok(list) => {
            let values: BTreeSet<&str> = list.iter().filter_map(|l| l.get(&name)).collect();
            success(json!(values))
        }
        Err(e) => e.into_response(),
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, which Prometheus uses for alert values.
pub fn format_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    let Some((mantissa, exp)) = s.split_once('e') else {
        return s;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

fn groups(st: &WebState) -> Vec<GroupSnapshot> {
    st.rules.as_ref().map(|r| r.groups()).unwrap_or_default()
}

/// `GET /api/v1/rules?type=alert|record&rule_name[]=&rule_group[]=&file[]=&exclude_alerts=`
pub async fn rules(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    let kind = param(&p, "type").unwrap_or("").to_ascii_lowercase();
    let (want_alert, want_record) = match kind.as_str() {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return ApiError::bad_data(format!("invalid query parameter type='{other}'"))
                .into_response();
        }
    };
    let exclude_alerts = match param(&p, "exclude_alerts").unwrap_or("false") {
        "true" | "1" => true,
        "false" | "0" | "" => false,
        other => {
            return ApiError::bad_data(format!(
                "parameter \"exclude_alerts\" must be a boolean, got {other:?}"
            ))
            .into_response();
        }
    };
    let names: BTreeSet<&str> = params_all(&p, "rule_name[]").into_iter().collect();
    let group_names: BTreeSet<&str> = params_all(&p, "rule_group[]").into_iter().collect();
    let files: BTreeSet<&str> = params_all(&p, "file[]").into_iter().collect();
    let filter = RuleFilter {
        want_alert,
        want_record,
        exclude_alerts,
        names: &names,
        group_names: &group_names,
        files: &files,
        typed: !kind.is_empty(),
    };
    json_response(rules_body(&groups(&st), &filter))
}

/// `GET /api/v1/alerts`: the active (pending and firing) alerts of every alerting rule.
pub async fn alerts(State(st): State<WebState>) -> Response {
    json_response(alerts_body(&groups(&st)))
}

/// `GET /api/v1/targets`: the embedded scraper's targets.
pub async fn targets(State(st): State<WebState>) -> Response {
    let Some(scrape) = st.scrape.clone() else {
        return success(json!({"activeTargets": [], "droppedTargets": []}));
    };
    let active: Vec<Json> = scrape
        .targets()
        .await
        .iter()
        .map(|t| {
            json!({
                "discoveredLabels": labels_json(&t.target.discovered),
                "labels": labels_json(&t.target.labels),
                "scrapePool": t.target.job,
                "scrapeUrl": t.target.url,
                "globalUrl": t.target.url,
                "lastError": t.last_error,
                "lastScrape": time_json(t.last_scrape),
                "lastScrapeDuration": t.last_duration.as_secs_f64(),
                "health": t.health.as_str(),
                "scrapeInterval": PromDuration(t.target.interval).to_string(),
                "scrapeTimeout": PromDuration(t.target.timeout).to_string(),
            })
        })
        .collect();
    let dropped: Vec<Json> = scrape
        .invalid_targets()
        .iter()
        .map(|(job, l, e)| json!({"discoveredLabels": labels_json(l), "scrapePool": job, "error": e.to_string()}))
        .collect();
    success(json!({"activeTargets": active, "droppedTargets": dropped}))
}

/// `GET /api/v1/status/buildinfo`, which Grafana reads to detect the server.
pub async fn buildinfo() -> Response {
    let mut info = BTreeMap::new();
    info.insert("version", env!("CARGO_PKG_VERSION"));
    info.insert("revision", "");
    info.insert("branch", "");
    info.insert("buildUser", "");
    info.insert("buildDate", "");
    info.insert("goVersion", "");
    success(json!(info))
}

/// `GET /api/v1/metadata`: the evaluator keeps no metric metadata; an empty map, which
/// Grafana's metric browser accepts.
pub async fn metadata() -> Response {
    success(json!({}))
}

/// `GET|POST /api/v1/query_exemplars`: no exemplars are stored; an empty list.
pub async fn query_exemplars() -> Response {
    success(json!([]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With one slot taken, a query waits in the queue, counts a concurrency hit, and ends
    /// at its timeout with Prometheus's "query timed out in query queue"; once the slot is
    /// free it runs. `prometheus_engine_queries` counts it while it waits.
    #[tokio::test]
    async fn queries_beyond_max_concurrency_wait_within_their_timeout() {
        let mut st = WebState::new(crate::web::shared_registry(
            prometheus_client::registry::Registry::default(),
        ));
        st.query_gate = crate::web::QueryGate::new(1);
        assert_eq!(st.query_gate.max(), 1);
        let held = st.query_gate.acquire().await.unwrap();
        let (waits, timeouts) = (
            crate::limits::hits("query_max_concurrency"),
            crate::limits::hits("query_timeout"),
        );
        let waiting = {
            let st = st.clone();
            tokio::spawn(async move { run_query(&st, Some("60s"), |_| Ok(1)).await })
        };
        // The waiting query shows in the gauge (it cannot finish while the slot is held).
        while st.query_gate.queries() < 1 {
            tokio::task::yield_now().await;
        }
        let e = run_query(&st, Some("20ms"), |_| Ok(2)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.message, "query timed out in query queue");
        assert!(crate::limits::hits("query_max_concurrency") >= waits + 2);
        assert!(crate::limits::hits("query_timeout") > timeouts);
        drop(held);
        assert_eq!(waiting.await.unwrap().ok(), Some(1));
        assert_eq!(run_query(&st, None, |_| Ok(3)).await.ok(), Some(3));
        assert_eq!(st.query_gate.queries(), 0);
        // At least one slot, whatever is asked.
        assert_eq!(crate::web::QueryGate::new(0).max(), 1);
    }

    #[test]
    fn times_durations_and_floats() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("15s").unwrap(), 15_000);
        assert_eq!(parse_duration("0.5").unwrap(), 500);
        assert!(parse_duration("x").is_err());
        assert_eq!(format_float_e(1.0), "1e+00");
        assert_eq!(format_float_e(123.4), "1.234e+02");
        assert_eq!(format_float_e(0.05), "5e-02");
        assert_eq!(format_float_e(f64::INFINITY), "+Inf");
    }
}
