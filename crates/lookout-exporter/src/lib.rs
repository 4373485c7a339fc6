//! The exporter: probes targets the way `blackbox_exporter` does and serves the results as
//! Prometheus metrics.
//!
//! * [`config`] — the YAML configuration (`modules:` in blackbox_exporter's schema, plus
//!   Lookout's `targets:` and `heartbeats:`), decoded strictly.
//! * [`prober`] — one file per protocol, all with the same signature.
//! * [`exposition`] — renders one probe's samples in the Prometheus text format (`/probe`).
//! * [`metrics`] — the exporter's own metrics and the continuous targets' latest results
//!   (`/metrics`).
//! * [`native_histogram`] — the sparse exponential buckets kept beside the per-target
//!   histograms' classic ones.
//! * [`protobuf`] — `/metrics` as delimited `MetricFamily` messages, for scrapers that ask
//!   for protobuf (the only format that carries native histograms).
//! * [`scheduler`] — probes every configured target on its own schedule, bounded.
//! * [`heartbeat`] — push monitors (`POST`, `GET` or `HEAD /heartbeat/{name}`).
//! * [`cascade`] — which down targets are explained by a down dependency.
//! * [`probe_guard`] — which targets `/probe` may probe (`probe_policy:`).
//! * [`target`] — the one parser of probe targets, shared by the policy and the probers.
//! * [`limits`] — the exporter-wide limits set by flags (redirects, response head size,
//!   configuration file size).
//! * [`reload`] — loads the configuration and swaps it in atomically (`/-/reload`, SIGHUP).
//! * [`web`] — the HTTP endpoints.
//!
//! The entry point is [`run`]: it loads the configuration, binds the listen address, probes
//! continuously and serves until the shutdown future completes. [`Server`] splits binding
//! from serving, for callers (tests) that need the bound address first.
#![warn(missing_docs)]

pub mod cascade;
pub mod config;
pub mod discovered;
pub mod exposition;
pub mod heartbeat;
pub mod limits;
pub mod metrics;
pub mod native_histogram;
pub mod probe_guard;
pub mod prober;
pub mod protobuf;
pub mod reload;
pub mod scheduler;
pub mod target;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigError;
use crate::limits::{LimitError, Limits};
use crate::reload::Exporter;

/// The address the exporter listens on when none is given (blackbox_exporter's port, loopback
/// only so that a quick start exposes nothing to the network).
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:9115";

/// Settings of one exporter process (the command-line flags).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The configuration file (`--config.file`); re-read on reload.
    pub config_file: PathBuf,
    /// `host:port` to listen on (`--web.listen-address`); `:port` means all IPv4 interfaces.
    pub listen_address: String,
    /// Seconds subtracted from Prometheus' scrape timeout to get a `/probe` timeout
    /// (`--timeout-offset`, as in blackbox_exporter).
    pub timeout_offset: f64,
    /// Most `/probe` requests probing at once (`--web.max-concurrent-probes`); more get 503.
    pub max_concurrent_probe_requests: usize,
    /// Most continuous-target probes running at once (`--probe.concurrency`).
    pub target_probe_concurrency: usize,
    /// The share of the targets this exporter probes (`--targets.shard=i/N`); all when
    /// `None`.
    pub shard: Option<discovered::Shard>,
    /// Bounds and settings of service discovery (`target_groups:`).
    pub discovery: lookout_discovery::DiscoveryOptions,
    /// Bounds on redirects, response heads and the configuration file
    /// (`--probe.max-redirects`, `--probe.max-response-header-bytes`,
    /// `--probe.max-response-header-fields`, `--config.max-file-size`); checked by
    /// [`Server::bind`].
    pub limits: Limits,
    /// TLS, authentication and lifecycle endpoints (`--web.config.file`,
    /// `--web.enable-lifecycle`).
    pub web: lookout_web::ServeOptions,
}

impl RunOptions {
    /// Options with the defaults of every flag, for the given configuration file.
    pub fn new(config_file: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            config_file: config_file.into(),
            listen_address: DEFAULT_LISTEN_ADDRESS.to_string(),
            timeout_offset: 0.5,
            max_concurrent_probe_requests: 1000,
            target_probe_concurrency: 256,
            shard: None,
            discovery: lookout_discovery::DiscoveryOptions::default(),
            limits: Limits::default(),
            web: lookout_web::ServeOptions::default(),
        }
    }
}

/// Why the exporter could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be loaded at start-up.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source} (choose another --web.listen-address)")]
    Bind {
        /// The address as given.
        address: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The web configuration (`--web.config.file`) is invalid.
    #[error(transparent)]
    Web(#[from] lookout_web::WebConfigError),
    /// A limit flag has a value the exporter cannot work with.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// An exporter whose configuration is loaded and whose socket is bound, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
    web: lookout_web::WebServer,
}

impl Server {
    /// Checks the limits, loads the configuration and binds the listen address. Nothing is
    /// probed yet.
    pub async fn bind(options: RunOptions) -> Result<Server, Error> {
        options.limits.validate()?;
        // Heartbeats are pushed with GET and HEAD too (`curl URL`): still writes.
        let web = lookout_web::WebServer::new(&options.web)?.with_write_paths(&["/heartbeat/"]);
        let exporter = Exporter::load(&options)?;
        let address = listen_address(&options.listen_address);
        let listener = tokio::net::TcpListener::bind(address.as_str())
            .await
            .map_err(|source| Error::Bind {
                address: options.listen_address.clone(),
                source,
            })?;
        Ok(Server {
            listener,
            exporter: Arc::new(exporter),
            web,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    /// Starts the continuous probes and serves HTTP until `shutdown` completes; then stops
    /// probing at once (so no target is reported down while the process winds down) and
    /// waits for in-flight requests to finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let exporter = self.exporter;
        exporter.start();
        let hangup = reload::spawn_sighup_handler(exporter.clone());
        let discovery = reload::spawn_discovery_watcher(exporter.clone());
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, "exporter listening");
        }
        let app = web::router(exporter.clone());
        let stopping = exporter.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.stop();
        };
        let served = self.web.serve(self.listener, app, shutdown).await;
        if let Some(task) = hangup {
            task.abort();
        }
        discovery.abort();
        exporter.stop();
        tracing::info!("exporter stopped");
        served.map_err(Error::Serve)
    }
}

/// Loads the configuration, binds `options.listen_address`, probes the configured targets and
/// serves the endpoints until `shutdown` completes.
pub async fn run(
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    Server::bind(options).await?.serve(shutdown).await
}

/// Turns Prometheus-style `:9115` into a bindable `0.0.0.0:9115`.
fn listen_address(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

/// blackbox_exporter's default scrape timeout when Prometheus sends none.
pub(crate) const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_only_listens_on_all_interfaces() {
        assert_eq!(listen_address(":9115"), "0.0.0.0:9115");
        assert_eq!(listen_address("127.0.0.1:1"), "127.0.0.1:1");
    }
}
