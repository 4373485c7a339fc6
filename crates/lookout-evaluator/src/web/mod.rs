//! The evaluator's HTTP server: Prometheus's API shapes so Grafana and other Prometheus
//! clients can read it (`/api/v1/query`, `/api/v1/query_range`, `/api/v1/series`,
//! `/api/v1/labels`, `/api/v1/label/<name>/values`, `/api/v1/rules`, `/api/v1/alerts`,
//! `/api/v1/targets`, `/api/v1/status/buildinfo`, and empty `/api/v1/metadata` and
//! `/api/v1/query_exemplars` answers that Grafana asks for), `/metrics`, and the lifecycle endpoints
//! `/-/reload`, `/-/healthy`, `/-/ready`, the status page at `/` ([`status`]) and the
//! expression page at `/graph` ([`graph`]).
//!
//! Handlers are thin: the state is explicit in [`WebState`], built by the `lookout evaluator`
//! entry point from the parts it started.

pub mod api;
pub mod chart;
pub mod compress;
pub mod graph;
pub mod json;
mod rules_json;
pub mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lookout_promql::Engine;
use lookout_promql::storage::Storage;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::rules::status::RulesStatus;
use crate::scrape::ScrapeManager;

/// The metrics registry every component registers into and `/metrics` encodes. Build a
/// `Registry`, hand `&mut` to `ScrapeManager::new`, `NotifierManager::new` and the rule
/// manager's metrics, then wrap it with [`shared_registry`].
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Wraps a registry for sharing with the web server.
pub fn shared_registry(registry: Registry) -> SharedRegistry {
    Arc::new(RwLock::new(registry))
}

/// What `/-/reload` calls: reloads configuration and rules, `Err(message)` when the new
/// configuration is rejected (the old one stays in force).
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Keeps a query counted in `prometheus_engine_queries` while alive.
pub(crate) struct QueryInFlight(Gauge);

impl Drop for QueryInFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Everything the handlers read.
#[derive(Clone)]
pub struct WebState {
    /// The embedded storage; `None` in remote mode (query endpoints then answer
    /// `unavailable`).
    pub storage: Option<Arc<Storage>>,
    /// The PromQL engine for the query endpoints.
    pub engine: Engine,
    /// Where the status page queries targets (the rule manager's datasource); `None` falls
    /// back to the embedded storage.
    pub datasource: Option<Arc<dyn crate::datasource::Datasource>>,
    /// The rule manager's view of groups and alerts.
    pub rules: Option<Arc<dyn RulesStatus>>,
    /// The scrape manager, for `/api/v1/targets`.
    pub scrape: Option<Arc<ScrapeManager>>,
    /// Metrics.
    pub registry: SharedRegistry,
    /// Reload hook.
    pub reload: Option<ReloadFn>,
    /// Set once rules and config are loaded; `/-/ready` answers 503 before.
    pub ready: Arc<AtomicBool>,
    /// Upper bound for one query's evaluation (Prometheus's `--query.timeout`, 2m).
    pub query_timeout: Duration,
    /// Limits concurrent queries (Prometheus's `--query.max-concurrency`).
    pub query_gate: QueryGate,
}

/// Admission of API queries: at most `max` evaluate at once (`--query.max-concurrency`);
/// the others wait for a slot, and the wait counts against their timeout as in Prometheus
/// ("query timed out in query queue"). Exposes Prometheus's `prometheus_engine_queries`
/// (evaluating or waiting) and `prometheus_engine_queries_concurrent_max`; a query that
/// has to wait counts one hit of `lookout_evaluator_limit_hits_total{limit="query_max_concurrency"}`.
#[derive(Clone)]
pub struct QueryGate {
    slots: Arc<tokio::sync::Semaphore>,
    /// Set when the server shuts down: queries still evaluating are cancelled.
    closed: Arc<tokio::sync::watch::Sender<bool>>,
    max: usize,
    queries: Gauge,
    concurrent_max: Gauge,
}

impl QueryGate {
    /// A gate letting `max` queries (at least 1) evaluate at once.
    pub fn new(max: usize) -> QueryGate {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let concurrent_max = Gauge::default();
        concurrent_max.set(i64::try_from(max).unwrap_or(i64::MAX));
        QueryGate {
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            closed: Arc::new(tokio::sync::watch::Sender::new(false)),
            max,
            queries: Gauge::default(),
            concurrent_max,
        }
    }

    /// The number of queries evaluated at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Queries evaluating or waiting now (`prometheus_engine_queries`).
    pub fn queries(&self) -> i64 {
        self.queries.get()
    }

    /// Registers `prometheus_engine_queries` and `prometheus_engine_queries_concurrent_max`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "prometheus_engine_queries",
            "The current number of queries being executed or waiting.",
            self.queries.clone(),
        );
        registry.register(
            "prometheus_engine_queries_concurrent_max",
            "The max number of concurrent queries.",
            self.concurrent_max.clone(),
        );
    }

    /// Refuses new queries and cancels the running ones (at shutdown, so that the server's
    /// graceful stop does not wait for them).
    pub fn close(&self) {
        self.slots.close();
        self.closed.send_replace(true);
    }

    /// Completes once [`close`](Self::close) was called.
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Counts a query in `prometheus_engine_queries` until the guard is dropped.
    pub(crate) fn enter(&self) -> QueryInFlight {
        self.queries.inc();
        QueryInFlight(self.queries.clone())
    }

    /// Waits for a slot; a query that finds none free counts one limit hit.
    pub(crate) async fn acquire(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError> {
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => return Ok(p),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                crate::limits::hit("query_max_concurrency")
            }
            // Closed: the wait below fails at once.
            Err(tokio::sync::TryAcquireError::Closed) => {}
        }
        self.slots.clone().acquire_owned().await
    }
}

impl WebState {
    /// A state with the given registry and everything else empty: 2 minute query timeout,
    /// 20 concurrent queries (metrics of the gate not registered), not ready.
    pub fn new(registry: SharedRegistry) -> WebState {
        WebState {
            storage: None,
            engine: Engine::default(),
            datasource: None,
            rules: None,
            scrape: None,
            registry,
            reload: None,
            ready: Arc::new(AtomicBool::new(false)),
            query_timeout: Duration::from_secs(120),
            query_gate: QueryGate::new(crate::limits::DEFAULT_QUERY_MAX_CONCURRENCY),
        }
    }
}

/// The router with every endpoint.
pub fn router(state: WebState) -> Router {
    // The API answers are compressed when the client asks, as Prometheus compresses its
    // whole `/api/v1` tree.
    let api = Router::new()
        .route("/api/v1/query", get(api::query).post(api::query))
        .route(
            "/api/v1/query_range",
            get(api::query_range).post(api::query_range),
        )
        .route("/api/v1/series", get(api::series).post(api::series))
        .route("/api/v1/labels", get(api::labels).post(api::labels))
        .route("/api/v1/label/{name}/values", get(api::label_values))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/alerts", get(api::alerts))
        .route("/api/v1/targets", get(api::targets))
        .route("/api/v1/status/buildinfo", get(api::buildinfo))
        .route("/api/v1/metadata", get(api::metadata))
        .route(
            "/api/v1/query_exemplars",
            get(api::query_exemplars).post(api::query_exemplars),
        )
        .layer(axum::middleware::from_fn(compress::compress));
    Router::new()
        .route("/", get(status::page))
        .merge(api)
        .route("/graph", get(graph::page))
        .route("/metrics", get(metrics))
        .route("/-/reload", post(reload).put(reload))
        .route("/-/healthy", get(healthy).head(healthy))
        .route("/-/ready", get(ready).head(ready))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve_with(
        listener,
        router,
        &lookout_web::ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Serves `router` on `listener` until `shutdown` completes, with the TLS, authentication
/// and lifecycle settings of `options` (`--web.config.file`, `--web.enable-lifecycle`; see
/// `lookout_web`).
pub async fn serve_with<F>(
    listener: tokio::net::TcpListener,
    router: Router,
    options: &lookout_web::ServeOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    lookout_web::serve(listener, router, options, shutdown)
        .await
        .map_err(std::io::Error::other)
}

async fn metrics(State(st): State<WebState>) -> Response {
    let mut body = String::new();
    let encoded = match st.registry.read() {
        Ok(r) => prometheus_client::encoding::text::encode(&mut body, &r).is_ok(),
        Err(_) => false,
    };
    if !encoded {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn reload(State(st): State<WebState>) -> Response {
    let Some(f) = st.reload.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "reload is not available\n").into_response();
    };
    match f().await {
        Ok(()) => (StatusCode::OK, "").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthy() -> &'static str {
    "Lookout Evaluator is Healthy.\n"
}

async fn ready(State(st): State<WebState>) -> Response {
    if st.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "Lookout Evaluator is Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}
