//! The evaluator: loads Prometheus rule files, evaluates them and sends alerts.
#![warn(missing_docs)]

pub mod alert;
pub mod check;
pub mod config;
pub mod datasource;
pub mod embedded;
pub mod limits;
pub mod notifier;
pub mod remote;
pub mod remote_histogram;
pub mod remote_write;
pub mod rules;
pub mod scrape;
pub mod scrape_config;
pub mod scrape_tls;
pub mod state;
pub mod template;
pub mod unittest;
pub mod web;
pub mod yaml;

pub use alert::{Alert, AlertState, Notify};
pub use datasource::{Datasource, DatasourceError, QuerySample, TimedSample};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::EvaluatorConfig;
use crate::rules::manager::{ManagerOptions, RuleManager};
use crate::rules::metrics::RuleMetrics;
use crate::scrape_config::ScrapeDefaults;

/// Settings of `lookout evaluator` that come from flags rather than the configuration file.
#[derive(Clone, Debug)]
pub struct EvaluatorOptions {
    /// `--config.file`.
    pub config_file: PathBuf,
    /// `--web.listen-address`.
    pub listen_address: String,
    /// `--rules.file` globs, added to the configuration's `rule_files`.
    pub extra_rule_files: Vec<String>,
    /// `--web.external-url` (default `http://<hostname>:<port>`).
    pub external_url: Option<String>,
    /// `--datasource.url` and friends: remote mode. `None` is embedded mode.
    pub datasource: Option<remote::RemoteConfig>,
    /// `--remote-write.url`: rule outputs written to a remote server (remote mode).
    pub remote_write: Option<remote_write::RemoteWriteConfig>,
    /// `--rules.state-file`: `for` state kept across restarts when the datasource does not
    /// store `ALERTS_FOR_STATE`.
    pub state_file: Option<PathBuf>,
    /// `--rules.alert.resend-delay` (1m).
    pub resend_delay: Duration,
    /// `--rules.alert.for-outage-tolerance` (1h).
    pub outage_tolerance: Duration,
    /// `--rules.alert.for-grace-period` (10m).
    pub for_grace_period: Duration,
    /// `--alertmanager.notification-queue-capacity` (10000).
    pub notification_queue_capacity: usize,
    /// `--storage.tsdb.retention.time`: how long the embedded storage keeps samples (1d).
    pub storage_retention: Duration,
    /// `--storage.tsdb.retention.size`: most bytes of blocks plus WAL in the data
    /// directory, the oldest blocks deleted past it; 0 (the default) is unlimited.
    pub storage_retention_size: u64,
    /// `--storage.tsdb.min-block-duration`: range of the head's blocks; zero is 2h.
    pub storage_min_block_duration: Duration,
    /// `--storage.tsdb.max-block-duration`: widest compacted block; zero is 10% of the
    /// retention time, at most 31d.
    pub storage_max_block_duration: Duration,
    /// `--storage.tsdb.path`: data directory of the embedded storage, whose write-ahead
    /// log keeps its history across restarts; `None` (the default here; the command
    /// line's is `data/`) keeps it in memory only.
    pub storage_path: Option<PathBuf>,
    /// `--query.max-samples`: most samples one query may hold in memory (50,000,000).
    pub query_max_samples: usize,
    /// `--query.timeout`: longest run of one query, rule or API (2m).
    pub query_timeout: Duration,
    /// `--query.max-concurrency`: API queries evaluated at once (20, at least 1).
    pub query_max_concurrency: usize,
    /// `--query.max-depth`: deepest expression tree a query may parse to (256, also the
    /// most accepted; see `lookout_promql::engine::depth`).
    pub query_max_depth: usize,
    /// `--query.prometheus2-windows`: Prometheus 2's left-closed windows instead of
    /// Prometheus 3's left-open ones (embedded mode and the query API; off).
    pub query_windows: lookout_promql::engine::WindowSemantics,
    /// `--storage.max-series`: most series the embedded storage holds (1,000,000; 0 is
    /// unlimited).
    pub storage_max_series: usize,
    /// `--config.max-file-size`: largest configuration file read (1 MiB).
    pub config_max_file_bytes: u64,
    /// `--rules.max-file-size`: largest rule file read (10 MiB).
    pub rules_max_file_bytes: u64,
    /// `--rules.template.max-output-bytes`: longest expansion of one alert label or
    /// annotation template (64 KiB).
    pub template_max_output_bytes: usize,
    /// `--rules.template.timeout`: time the label and annotation templates of one rule
    /// evaluation may take together (10s).
    pub template_timeout: std::time::Duration,
    /// `--web.config.file` (TLS, basic auth) and `--web.enable-lifecycle` (`/-/reload`).
    pub web: lookout_web::ServeOptions,
    /// `--enable-feature=native-histograms` (Prometheus 2.x's switch): scrape configs that
    /// do not set `scrape_native_histograms`, under a `global` that does not either, ask
    /// for protobuf and store native histograms.
    pub native_histograms: bool,
}

impl EvaluatorOptions {
    /// Defaults for `config_file`: embedded mode, `0.0.0.0:9095`, Prometheus's timings,
    /// state in `data/alerts-state.json`.
    pub fn new(config_file: impl Into<PathBuf>) -> EvaluatorOptions {
        EvaluatorOptions {
            config_file: config_file.into(),
            listen_address: "0.0.0.0:9095".to_string(),
            extra_rule_files: Vec::new(),
            external_url: None,
            datasource: None,
            remote_write: None,
            state_file: Some(PathBuf::from("data/alerts-state.json")),
            resend_delay: Duration::from_secs(60),
            outage_tolerance: state::DEFAULT_OUTAGE_TOLERANCE,
            for_grace_period: state::DEFAULT_FOR_GRACE_PERIOD,
            notification_queue_capacity: 10_000,
            storage_retention: Duration::from_secs(24 * 3600),
            storage_retention_size: 0,
            storage_min_block_duration: Duration::ZERO,
            storage_max_block_duration: Duration::ZERO,
            storage_path: None,
            query_max_samples: 50_000_000,
            query_timeout: Duration::from_secs(120),
            query_max_concurrency: limits::DEFAULT_QUERY_MAX_CONCURRENCY,
            query_max_depth: lookout_promql::engine::depth::DEFAULT_MAX_DEPTH,
            query_windows: lookout_promql::engine::WindowSemantics::Prometheus3,
            storage_max_series: limits::DEFAULT_STORAGE_MAX_SERIES,
            config_max_file_bytes: limits::MAX_CONFIG_FILE_BYTES,
            rules_max_file_bytes: limits::MAX_RULE_FILE_BYTES,
            template_max_output_bytes: limits::MAX_TEMPLATE_OUTPUT_BYTES,
            template_timeout: limits::DEFAULT_TEMPLATE_TIMEOUT,
            web: lookout_web::ServeOptions::default(),
            native_histograms: false,
        }
    }
}

/// The scrape defaults of `cfg`'s `global`, with `--enable-feature=native-histograms`.
fn scrape_defaults(cfg: &EvaluatorConfig, opts: &EvaluatorOptions) -> ScrapeDefaults {
    let mut d = cfg.scrape_defaults();
    if opts.native_histograms && cfg.global.scrape_native_histograms.is_none() {
        d.scrape_native_histograms = true;
    }
    d
}

/// Why the evaluator could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A rule file is invalid.
    #[error("{0}")]
    Rules(String),
    /// Scrape configuration rejected.
    #[error("{0}")]
    Scrape(String),
    /// `alerting` configuration rejected.
    #[error(transparent)]
    Notifier(#[from] notifier::NotifierConfigError),
    /// The remote datasource settings are invalid.
    #[error("remote datasource: {0}")]
    Remote(String),
    /// The storage's data directory could not be opened.
    #[error("storage: {0}")]
    Storage(#[from] lookout_promql::storage::wal::WalError),
    /// The web server could not listen or failed.
    #[error("web server on {address}: {source}")]
    Web {
        /// The listen address.
        address: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn default_external_url(listen: &str, tls: bool) -> String {
    let port = listen.rsplit(':').next().unwrap_or("9095");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}:{port}", hostname())
}

/// `POST /-/reload` and SIGHUP: configuration file, scrape targets, notifiers, rules, all
/// checked before any is applied. A failure keeps the running configuration and is made
/// visible: logged, `prometheus_rule_config_last_reload_successful` 0, a banner on the
/// status page (see [`RuleManager::reload_failed`]).
fn reload_fn(
    opts: &EvaluatorOptions,
    manager: &Arc<RuleManager>,
    notifier: &Arc<notifier::NotifierManager>,
    scrape: &Option<Arc<scrape::ScrapeManager>>,
) -> web::ReloadFn {
    let (opts, manager, notifier, scrape) = (
        opts.clone(),
        manager.clone(),
        notifier.clone(),
        scrape.clone(),
    );
    Arc::new(move || {
        let (opts, manager, notifier, scrape) = (
            opts.clone(),
            manager.clone(),
            notifier.clone(),
            scrape.clone(),
        );
        Box::pin(async move {
            let result = async {
                let cfg =
                    EvaluatorConfig::load_with_limit(&opts.config_file, opts.config_max_file_bytes)
                        .map_err(|e| e.to_string())?;
                let patterns = rule_patterns(&cfg, &opts.extra_rule_files);
                RuleManager::load_files_with_limit(&patterns, opts.rules_max_file_bytes)
                    .map_err(|e| e.to_string())?;
                if let Some(sm) = &scrape {
                    sm.apply(&cfg.scrape_configs, &scrape_defaults(&cfg, &opts))
                        .await
                        .map_err(|e| format!("{}: {e}", opts.config_file.display()))?;
                }
                notifier
                    .apply_config(&cfg.alerting, &cfg.external_labels())
                    .map_err(|e| e.to_string())?;
                manager.set_defaults(
                    cfg.external_labels(),
                    cfg.evaluation_interval(),
                    cfg.rule_query_offset(),
                );
                manager.update(&patterns).map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(n) => {
                    tracing::info!(rules = n, "Configuration reloaded");
                    Ok(())
                }
                Err(e) => {
                    manager.reload_failed(&e);
                    tracing::error!(err = %e, "Reloading the configuration failed; keeping the running one");
                    Err(e)
                }
            }
        })
    })
}

fn rule_patterns(cfg: &EvaluatorConfig, extra: &[String]) -> Vec<String> {
    cfg.rule_files.iter().chain(extra).cloned().collect()
}

/// Runs the evaluator until `shutdown` completes: loads the configuration and rules, starts
/// the datasource (embedded scraping and storage, or a remote Prometheus-API server), the
/// notifiers, the rule manager and the web server. SIGHUP and `POST /-/reload` reload the
/// configuration and rules; an invalid new configuration keeps the running one.
pub async fn run<F>(opts: EvaluatorOptions, shutdown: F) -> Result<(), RunError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let cfg = EvaluatorConfig::load_with_limit(&opts.config_file, opts.config_max_file_bytes)?;
    let web_server = lookout_web::WebServer::new(&opts.web).map_err(|e| RunError::Web {
        address: opts.listen_address.clone(),
        source: std::io::Error::other(e),
    })?;
    // Check the rules before starting anything.
    RuleManager::load_files_with_limit(
        &rule_patterns(&cfg, &opts.extra_rule_files),
        opts.rules_max_file_bytes,
    )
    .map_err(|e| RunError::Rules(e.to_string()))?;
    let external_url = opts
        .external_url
        .clone()
        .unwrap_or_else(|| default_external_url(&opts.listen_address, web_server.tls_enabled()));
    let external_url = external_url.trim_end_matches('/').to_string();

    let mut registry = prometheus_client::registry::Registry::default();
    let rule_metrics = RuleMetrics::register(&mut registry);
    limits::register(&mut registry);
    lookout_web::metrics::register(&mut registry);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let engine = query_engine(&opts);
    let data = start_datasource(&opts, &cfg, &engine, &mut registry).await?;
    let (notifier, notifier_task) =
        start_notifier(&opts, &cfg, &external_url, &mut registry, stop_rx.clone())?;
    let manager = start_rules(
        &opts,
        &cfg,
        &data.datasource,
        &notifier,
        &external_url,
        rule_metrics,
    )?;
    let state_writer = tokio::spawn(manager.clone().run_state_writer(stop_rx.clone()));

    // Reload: configuration file, scrape targets, notifiers, rules.
    let reload = reload_fn(&opts, &manager, &notifier, &data.scrape);
    #[cfg(unix)]
    reload_on_sighup(reload.clone(), stop_rx.clone());

    let query_gate = web::QueryGate::new(opts.query_max_concurrency);
    query_gate.register(&mut registry);
    let mut state = web::WebState::new(web::shared_registry(registry));
    state.query_gate = query_gate;
    state.storage = data.storage.clone();
    state.engine = engine;
    state.query_timeout = opts.query_timeout;
    state.datasource = Some(data.datasource.clone());
    state.rules = Some(manager.clone() as Arc<dyn rules::status::RulesStatus>);
    state.scrape = data.scrape.clone();
    state.reload = Some(reload);
    let web_result = serve_web(&opts, web_server, state, shutdown).await;

    // Shutdown: stop evaluating, persist state, drain notifications.
    let _ = stop_tx.send(true);
    manager.stop().await;
    let _ = state_writer.await;
    data.stop().await;
    let _ = notifier_task.await;
    web_result.map_err(|source| RunError::Web {
        address: opts.listen_address.clone(),
        source,
    })
}

/// The PromQL engine with the query flags' limits.
fn query_engine(opts: &EvaluatorOptions) -> lookout_promql::Engine {
    lookout_promql::Engine::new(lookout_promql::engine::EngineOptions {
        max_samples: opts.query_max_samples,
        timeout: Some(opts.query_timeout),
        max_depth: opts.query_max_depth,
        windows: opts.query_windows,
        ..lookout_promql::engine::EngineOptions::default()
    })
}

/// Where rules read from, and in embedded mode the storage and the scrapers filling it.
struct Data {
    datasource: Arc<dyn Datasource>,
    storage: Option<Arc<lookout_promql::storage::Storage>>,
    scrape: Option<Arc<scrape::ScrapeManager>>,
}

impl Data {
    /// Stops scraping, then writes everything appended to the disk, fsynced.
    async fn stop(&self) {
        if let Some(sm) = &self.scrape {
            sm.stop().await;
        }
        if let Some(st) = &self.storage {
            let st = st.clone();
            let _ = tokio::task::spawn_blocking(move || st.close_wal()).await;
        }
    }
}

/// The remote datasource (with remote write), or the embedded storage with its scrapers.
async fn start_datasource(
    opts: &EvaluatorOptions,
    cfg: &EvaluatorConfig,
    engine: &lookout_promql::Engine,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<Data, RunError> {
    if let Some(remote_cfg) = &opts.datasource {
        let mut ds = remote::RemoteDatasource::new(remote_cfg.clone())
            .map_err(|e| RunError::Remote(e.to_string()))?;
        if let Some(w) = &opts.remote_write {
            let writer = remote_write::RemoteWriter::start(w.clone(), registry)
                .map_err(|e| RunError::Remote(e.to_string()))?;
            ds = ds.with_remote_write(writer);
        }
        return Ok(Data {
            datasource: Arc::new(ds),
            storage: None,
            scrape: None,
        });
    }
    // Checked before the data directory is opened: an invalid scrape configuration
    // leaves it untouched.
    let scrape_error = |e: scrape_config::ScrapeConfigError| {
        RunError::Scrape(format!("{}: {e}", opts.config_file.display()))
    };
    scrape_config::validate_scrape_configs(&cfg.scrape_configs, &scrape_defaults(cfg, opts))
        .map_err(scrape_error)?;
    let st = Arc::new(open_storage(opts).await?);
    embedded::register_storage_metrics(&st, registry);
    let sm = Arc::new(scrape::ScrapeManager::new(st.clone(), registry, 0));
    sm.apply(&cfg.scrape_configs, &scrape_defaults(cfg, opts))
        .await
        .map_err(scrape_error)?;
    sm.watch_discovery();
    Ok(Data {
        datasource: Arc::new(embedded::EmbeddedDatasource::new(
            st.clone(),
            engine.clone(),
        )),
        storage: Some(st),
        scrape: Some(sm),
    })
}

/// The embedded storage: on the data directory (its WAL replayed) or in memory only.
async fn open_storage(
    opts: &EvaluatorOptions,
) -> Result<lookout_promql::storage::Storage, RunError> {
    let storage_opts = lookout_promql::storage::StorageOptions {
        retention: opts.storage_retention,
        max_series: opts.storage_max_series,
        retention_size: opts.storage_retention_size,
        min_block_duration: opts.storage_min_block_duration,
        max_block_duration: opts.storage_max_block_duration,
    };
    let Some(dir) = opts.storage_path.clone() else {
        return Ok(lookout_promql::storage::Storage::new(storage_opts));
    };
    // Replaying the WAL reads the whole directory: off the async workers.
    let opened = tokio::task::spawn_blocking(move || {
        lookout_promql::storage::Storage::open(
            storage_opts,
            &dir,
            lookout_promql::storage::wal::WalOptions::default(),
        )
    })
    .await
    .map_err(|e| RunError::Remote(format!("storage replay: {e}")))??;
    Ok(opened)
}

/// The notifiers of the configuration's `alerting:` section, and the task delivering their
/// queue until `stop` changes.
fn start_notifier(
    opts: &EvaluatorOptions,
    cfg: &EvaluatorConfig,
    external_url: &str,
    registry: &mut prometheus_client::registry::Registry,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Arc<notifier::NotifierManager>, tokio::task::JoinHandle<()>), RunError> {
    let notifier = Arc::new(notifier::NotifierManager::new(
        notifier::NotifierOptions {
            queue_capacity: opts.notification_queue_capacity,
            external_url: external_url.to_string(),
        },
        registry,
    ));
    notifier.apply_config(&cfg.alerting, &cfg.external_labels())?;
    let n = notifier.clone();
    let task = tokio::spawn(async move {
        n.run(async move {
            let _ = stop.changed().await;
        })
        .await
    });
    Ok((notifier, task))
}

/// The rule manager with the configuration's rule files loaded.
fn start_rules(
    opts: &EvaluatorOptions,
    cfg: &EvaluatorConfig,
    datasource: &Arc<dyn Datasource>,
    notifier: &Arc<notifier::NotifierManager>,
    external_url: &str,
    metrics: RuleMetrics,
) -> Result<Arc<RuleManager>, RunError> {
    let external_labels = cfg.external_labels();
    let manager = RuleManager::new(ManagerOptions {
        datasource: datasource.clone(),
        notifier: notifier.clone(),
        external_labels: external_labels.clone(),
        external_url: external_url.to_string(),
        default_interval: cfg.evaluation_interval(),
        resend_delay: opts.resend_delay,
        outage_tolerance: opts.outage_tolerance,
        for_grace_period: opts.for_grace_period,
        state_file: opts.state_file.clone(),
        metrics,
        max_rule_file_bytes: opts.rules_max_file_bytes,
        template_max_output_bytes: opts.template_max_output_bytes,
        template_timeout: opts.template_timeout,
    });
    manager.set_defaults(
        external_labels,
        cfg.evaluation_interval(),
        cfg.rule_query_offset(),
    );
    let n = manager
        .update(&rule_patterns(cfg, &opts.extra_rule_files))
        .map_err(|e| RunError::Rules(e.to_string()))?;
    let mode = if opts.datasource.is_some() {
        "remote"
    } else {
        "embedded"
    };
    tracing::info!(rules = n, groups = manager.group_list().len(), external_url = %external_url, mode, "Rules loaded");
    Ok(manager)
}

/// Reloads on every SIGHUP until `stop` changes.
#[cfg(unix)]
fn reload_on_sighup(reload: web::ReloadFn, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    // A failure is logged, counted and shown by the reload itself.
                    let _ = reload().await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}

/// Serves the web UI and API until `shutdown` completes; then cancels the API queries
/// still evaluating (the server's graceful stop waits for their requests).
async fn serve_web<F>(
    opts: &EvaluatorOptions,
    web_server: lookout_web::WebServer,
    state: web::WebState,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    state.ready.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind(&opts.listen_address).await?;
    tracing::info!(address = %opts.listen_address, "Listening");
    let gate = state.query_gate.clone();
    let shutdown = async move {
        shutdown.await;
        gate.close();
    };
    web_server
        .serve(listener, web::router(state), shutdown)
        .await
}
