//! The running exporter's state, and configuration reloads.
//!
//! The configuration lives behind an `RwLock<Arc<Config>>`: a request takes a snapshot (one
//! `Arc` clone) and keeps using it even if a reload swaps in a new one meanwhile. A reload
//! (`POST /-/reload` or SIGHUP) reads and validates the whole file first; a broken file
//! changes nothing but `lookout_exporter_config_last_reload_successful`, which drops to 0,
//! and the error is logged and returned (the endpoint answers 500 with it).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::RunOptions;
use crate::config::{Config, ConfigError};
use crate::heartbeat::{Heartbeats, unix_now};
use crate::limits::{self, Limits};
use crate::metrics::{ExporterMetrics, ProtobufSource, TargetsCollector};
use crate::scheduler::Scheduler;

/// Everything the endpoints and the scheduler share.
#[derive(Debug)]
pub struct Exporter {
    config: RwLock<Arc<Config>>,
    config_file: PathBuf,
    /// The exporter's own metrics.
    pub metrics: Arc<ExporterMetrics>,
    /// The `/metrics` registry.
    pub registry: Registry,
    /// The same metrics for `/metrics` in protobuf.
    pub protobuf: ProtobufSource,
    /// The continuous probes.
    pub scheduler: Scheduler,
    /// The push monitors.
    pub heartbeats: Arc<Heartbeats>,
    /// Permits for `/probe` requests.
    pub probe_permits: Arc<Semaphore>,
    /// `--timeout-offset` in seconds.
    pub timeout_offset: f64,
    /// The limits flags (`--probe.max-redirects`, `--config.max-file-size`, ...).
    pub limits: Limits,
    /// When the process started (for `/health`).
    pub started: Instant,
    /// Wall-clock start (for `/health`).
    pub started_at: SystemTime,
    reloading: tokio::sync::Mutex<()>,
    /// The `target_groups:` discovery providers.
    discovery: lookout_discovery::Discovery,
    /// `--targets.shard`.
    shard: Option<crate::discovered::Shard>,
}

impl Exporter {
    /// Loads the configuration file and prepares (but does not start) the probes.
    pub fn load(options: &RunOptions) -> Result<Exporter, ConfigError> {
        let metrics = Arc::new(ExporterMetrics::default());
        let config = load_config(&options.config_file, &options.limits, &metrics)?;
        let scheduler = Scheduler::new(
            options.target_probe_concurrency,
            options.limits,
            metrics.clone(),
        );
        let heartbeats = Arc::new(Heartbeats::default());
        let targets = || TargetsCollector::new(scheduler.slots(), heartbeats.clone());
        let mut registry = metrics.registry(targets());
        let mut own = metrics.own_registry();
        let sd_metrics = lookout_discovery::DiscoveryMetrics::default();
        sd_metrics.register(&mut registry);
        sd_metrics.register(&mut own);
        let protobuf = ProtobufSource::new(own, targets());
        let discovery =
            lookout_discovery::Discovery::new(options.discovery.clone(), sd_metrics, "exporter");
        scheduler.apply(&effective(&config, &discovery, options.shard), false);
        heartbeats.apply(&config.heartbeats);
        metrics.reload_successful.set(1);
        metrics.reload_success_timestamp.set(unix_now());
        tracing::info!(
            file = %options.config_file.display(),
            modules = config.modules.len(),
            targets = config.targets.len(),
            heartbeats = config.heartbeats.len(),
            "configuration loaded"
        );
        Ok(Exporter {
            config: RwLock::new(Arc::new(config)),
            config_file: options.config_file.clone(),
            metrics,
            registry,
            protobuf,
            scheduler,
            heartbeats,
            probe_permits: Arc::new(Semaphore::new(options.max_concurrent_probe_requests.max(1))),
            timeout_offset: options.timeout_offset,
            limits: options.limits,
            started: Instant::now(),
            started_at: SystemTime::now(),
            reloading: tokio::sync::Mutex::new(()),
            discovery,
            shard: options.shard,
        })
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts probing the configured targets (needs a Tokio runtime).
    pub fn start(&self) {
        self.scheduler.start();
        self.discovery.apply(&discovery_sets(&self.config()));
    }

    /// Stops probing.
    pub fn stop(&self) {
        self.discovery.stop();
        self.scheduler.stop();
    }

    /// Makes the probed targets match the configuration and what discovery found now:
    /// unchanged targets keep their schedules.
    pub fn sync_targets(&self) {
        let config = self.config();
        self.scheduler
            .apply(&effective(&config, &self.discovery, self.shard), true);
    }

    /// Re-reads the configuration file and swaps it in; on error the old one stays.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.config_file.clone();
        let limits = self.limits;
        let metrics = self.metrics.clone();
        let loaded = tokio::task::spawn_blocking(move || load_config(&path, &limits, &metrics))
            .await
            .unwrap_or_else(|join| {
                Err(ConfigError::Invalid(format!("reload task failed: {join}")))
            });
        match loaded {
            Ok(config) => {
                self.discovery.apply(&discovery_sets(&config));
                self.scheduler
                    .apply(&effective(&config, &self.discovery, self.shard), true);
                self.heartbeats.apply(&config.heartbeats);
                *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                self.metrics.reload_successful.set(1);
                self.metrics.reload_success_timestamp.set(unix_now());
                tracing::info!(file = %self.config_file.display(), "configuration reloaded");
                Ok(())
            }
            Err(err) => {
                self.metrics.reload_successful.set(0);
                tracing::error!(error = %err, "configuration reload failed; keeping the previous configuration");
                Err(err)
            }
        }
    }
}

/// The configuration with the targets this exporter probes: its own and the discovered
/// ones, in its shard.
fn effective(
    config: &Config,
    discovery: &lookout_discovery::Discovery,
    shard: Option<crate::discovered::Shard>,
) -> Config {
    let mut c = config.clone();
    c.targets = crate::discovered::effective_targets(config, |g| discovery.groups(g), shard);
    c
}

fn discovery_sets(config: &Config) -> Vec<(String, lookout_discovery::SdConfigs)> {
    config
        .target_groups
        .iter()
        .map(|g| (g.name.clone(), g.sd.clone()))
        .collect()
}

/// Re-applies the targets whenever discovery finds a change.
pub fn spawn_discovery_watcher(exporter: Arc<Exporter>) -> tokio::task::JoinHandle<()> {
    let mut rx = exporter.discovery.subscribe();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            exporter.sync_targets();
        }
    })
}

/// Loads the configuration file under `--config.max-file-size`, counting a file over it in
/// `lookout_exporter_limit_hits_total{limit="config_file_size"}`.
fn load_config(
    path: &std::path::Path,
    limits: &Limits,
    metrics: &ExporterMetrics,
) -> Result<Config, ConfigError> {
    let loaded = Config::load_limited(path, limits.max_config_file_bytes);
    if let Err(ConfigError::TooLarge { .. }) = &loaded {
        metrics
            .limit_hits
            .get_or_create(&[("limit", limits::CONFIG_FILE_SIZE)])
            .inc();
    }
    loaded
}

/// Reloads the configuration on every SIGHUP (Unix only).
pub fn spawn_sighup_handler(exporter: Arc<Exporter>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => Some(tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP received; reloading the configuration");
                    let _ = exporter.reload().await;
                }
            })),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; reload with POST /-/reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = exporter;
        None
    }
}
