//! The embedded datasource's scraper: one loop per target at its interval (spread over the
//! interval with Prometheus's offset), samples stored in `lookout_promql::storage::Storage`,
//! staleness markers for series that vanish and for targets that go away.
//!
//! [`ScrapeManager::apply`] takes the whole `scrape_configs` list on start and on every reload:
//! unchanged targets keep running, changed ones are restarted without stale markers (their
//! series carry over), removed ones are stopped and their series marked stale.

pub use lookout_discovery::relabel;
mod cache;
mod nhcb;
pub mod protobuf;
pub mod target;
pub mod textparse;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lookout_promql::Labels;
use lookout_promql::storage::Storage;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Mutex as AsyncMutex;

use crate::scrape_config::{
    ScrapeConfig, ScrapeConfigError, ScrapeDefaults, validate_scrape_configs,
};
pub use target::{Health, Target, TargetError, TargetStatus};
use target::{LoopContext, LoopOptions, ScrapeLoop};

type JobLabels = Vec<(String, String)>;

/// Scrape metrics registered in the shared registry.
#[derive(Clone, Default)]
pub(crate) struct ScrapeMetrics {
    pub(crate) scrapes: Family<JobLabels, Counter>,
    pub(crate) scrape_failures: Family<JobLabels, Counter>,
    pub(crate) exceeded_sample_limit: Counter,
    pub(crate) exceeded_body_size_limit: Counter,
    pub(crate) exceeded_label_limits: Counter,
    pub(crate) exceeded_bucket_limit: Counter,
    pub(crate) out_of_order: Counter,
    pub(crate) pool_targets: Family<JobLabels, Gauge>,
    pub(crate) target_up: Family<JobLabels, Gauge>,
}

impl ScrapeMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "lookout_scrapes",
            "Scrapes performed, by job.",
            self.scrapes.clone(),
        );
        registry.register(
            "lookout_scrape_failures",
            "Scrapes that failed (target down, parse error, limits), by job.",
            self.scrape_failures.clone(),
        );
        registry.register(
            "prometheus_target_scrapes_exceeded_sample_limit",
            "Scrapes that hit the sample limit and were rejected.",
            self.exceeded_sample_limit.clone(),
        );
        registry.register(
            "prometheus_target_scrapes_exceeded_body_size_limit",
            "Scrapes that hit the body size limit and were rejected.",
            self.exceeded_body_size_limit.clone(),
        );
        registry.register(
            "prometheus_target_scrape_pool_exceeded_label_limits",
            "Scrapes that hit the label limits (label_limit, label_name_length_limit, label_value_length_limit) and were rejected.",
            self.exceeded_label_limits.clone(),
        );
        registry.register(
            "prometheus_target_scrapes_exceeded_native_histogram_bucket_limit",
            "Scrapes that hit the native histogram bucket limit and were rejected.",
            self.exceeded_bucket_limit.clone(),
        );
        registry.register(
            "prometheus_target_scrapes_sample_out_of_order",
            "Samples rejected because they were out of order or duplicated.",
            self.out_of_order.clone(),
        );
        registry.register(
            "prometheus_target_scrape_pool_targets",
            "Current number of targets in each scrape pool.",
            self.pool_targets.clone(),
        );
        registry.register(
            "lookout_scrape_target_up",
            "Whether the last scrape of each target succeeded (1), failed (0).",
            self.target_up.clone(),
        );
    }
}

struct Running {
    loops: HashMap<(String, Labels, String), (ScrapeLoop, LoopFingerprint)>,
}

/// The job's configuration as text, to tell whether a running loop's job changed: one per
/// job, shared by its targets' loops (10,000 targets held 10,000 copies).
#[derive(Clone, PartialEq)]
struct LoopFingerprint(Arc<str>);

/// The offset seed for [`ScrapeManager::new`] from the external labels, as Prometheus seeds
/// its scrape offsets, so that evaluators with different external labels scrape the same
/// target at different phases.
pub fn offset_seed(external_labels: &Labels) -> u64 {
    let mut h = target::Fnv::new();
    for (k, v) in external_labels.iter() {
        h.write(k.as_bytes());
        h.write(&[0xff]);
        h.write(v.as_bytes());
        h.write(&[0xff]);
    }
    h.0
}

/// The scrape HTTP client's settings, shared by the default client and the clients of
/// jobs with a `tls_config`.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(concat!("Lookout/", env!("CARGO_PKG_VERSION")))
}

/// Starts, reloads and stops the scrape loops of all jobs.
pub struct ScrapeManager {
    ctx: Arc<LoopContext>,
    running: AsyncMutex<Running>,
    invalid: std::sync::Mutex<Vec<(String, Labels, TargetError)>>,
    /// The jobs' `file_sd_configs`, `http_sd_configs`, `dns_sd_configs` and
    /// `kubernetes_sd_configs`.
    discovery: lookout_discovery::Discovery,
    /// The configuration last applied, re-used when discovery changes the targets.
    applied: AsyncMutex<Option<(Vec<ScrapeConfig>, ScrapeDefaults)>>,
}

/// A target's identity among the running loops: job, labels, URL.
type TargetKey = (String, Labels, String);
/// A loop `sync` wants running: its target, its job's shared options and their fingerprint.
type WantedLoop = (Target, Arc<LoopOptions>, LoopFingerprint);

impl ScrapeManager {
    /// A manager writing to `storage`, with its metrics in `registry`. `offset_seed` spreads
    /// the targets of different evaluators differently (Prometheus hashes its external
    /// labels); use 0 for one evaluator.
    pub fn new(storage: Arc<Storage>, registry: &mut Registry, offset_seed: u64) -> ScrapeManager {
        let metrics = ScrapeMetrics::default();
        metrics.register(registry);
        let sd_metrics = lookout_discovery::DiscoveryMetrics::default();
        sd_metrics.register(registry);
        let client = client_builder()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ScrapeManager {
            ctx: Arc::new(LoopContext {
                storage,
                client,
                metrics,
                offset_seed,
            }),
            running: AsyncMutex::new(Running {
                loops: HashMap::new(),
            }),
            invalid: std::sync::Mutex::new(Vec::new()),
            discovery: lookout_discovery::Discovery::new(
                lookout_discovery::DiscoveryOptions::default(),
                sd_metrics,
                "scrape",
            ),
            applied: AsyncMutex::new(None),
        }
    }

    /// Re-computes the targets whenever service discovery finds a change, until the manager
    /// is dropped. Call once, after the first [`apply`](Self::apply).
    pub fn watch_discovery(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut rx = self.discovery.subscribe();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(sm) = weak.upgrade() else { return };
                let applied = sm.applied.lock().await.clone();
                if let Some((configs, defaults)) = applied {
                    sm.sync(&configs, &defaults).await;
                }
            }
        })
    }

    /// The current target groups service discovery found for `job`.
    pub fn discovered_groups(&self, job: &str) -> Vec<lookout_discovery::TargetGroup> {
        self.discovery.groups(job)
    }

    /// Validates `configs` and makes the running loops and discovery providers match them.
    /// On a validation error nothing changes. Unchanged discovery providers keep their
    /// targets; new ones add theirs when they first answer (see
    /// [`watch_discovery`](Self::watch_discovery)).
    pub async fn apply(
        &self,
        configs: &[ScrapeConfig],
        defaults: &ScrapeDefaults,
    ) -> Result<(), ScrapeConfigError> {
        validate_scrape_configs(configs, defaults)?;
        let mut applied = self.applied.lock().await;
        let sets: Vec<(String, lookout_discovery::SdConfigs)> = configs
            .iter()
            .map(|c| (c.job_name.clone(), c.sd_configs()))
            .collect();
        self.discovery.apply(&sets);
        *applied = Some((configs.to_vec(), *defaults));
        self.sync(configs, defaults).await;
        Ok(())
    }

    /// Makes the running loops match `configs` and the discovered groups.
    async fn sync(&self, configs: &[ScrapeConfig], defaults: &ScrapeDefaults) {
        let mut wanted: HashMap<TargetKey, WantedLoop> = HashMap::new();
        let mut invalid = Vec::new();
        for cfg in configs {
            // One copy of the job's options for all its loops, not one per target.
            let opts = Arc::new(LoopOptions::from_config(cfg, defaults));
            let fp = LoopFingerprint(format!("{cfg:?} {defaults:?}").into());
            let mut count = 0i64;
            let discovered = self.discovery.groups(&cfg.job_name);
            for t in target::targets_for(cfg, defaults, &discovered) {
                match t {
                    Ok(t) => {
                        let key = (t.job.clone(), t.labels.clone(), t.url.clone());
                        if wanted.contains_key(&key) {
                            continue; // duplicate target: scraped once, as Prometheus does
                        }
                        count += 1;
                        wanted.insert(key, (t, opts.clone(), fp.clone()));
                    }
                    Err((labels, e)) => {
                        tracing::warn!(job = %cfg.job_name, target = %labels, error = %e, "invalid target");
                        invalid.push((cfg.job_name.clone(), labels, e));
                    }
                }
            }
            self.ctx
                .metrics
                .pool_targets
                .get_or_create(&vec![("scrape_job".to_string(), cfg.job_name.clone())])
                .set(count);
        }
        if let Ok(mut inv) = self.invalid.lock() {
            *inv = invalid;
        }
        let jobs: HashSet<&str> = configs.iter().map(|c| c.job_name.as_str()).collect();
        let mut running = self.running.lock().await;
        let keys: Vec<_> = running.loops.keys().cloned().collect();
        let mut carried = HashMap::new();
        for key in keys {
            let keep = match wanted.get(&key) {
                Some((_, _, fp)) => running
                    .loops
                    .get(&key)
                    .map(|(_, f)| f == fp)
                    .unwrap_or(false),
                None => false,
            };
            if keep {
                wanted.remove(&key);
                continue;
            }
            if let Some((lp, _)) = running.loops.remove(&key) {
                let gone = !wanted.contains_key(&key);
                if gone {
                    self.ctx
                        .metrics
                        .target_up
                        .remove(&target::health_labels(&key.0, &key.1));
                }
                let state = lp.stop(&self.ctx.storage, gone).await;
                if !gone {
                    carried.insert(key.clone(), state);
                }
            }
            if !jobs.contains(key.0.as_str()) {
                self.ctx
                    .metrics
                    .pool_targets
                    .get_or_create(&vec![("scrape_job".to_string(), key.0.clone())])
                    .set(0);
            }
        }
        for (key, (t, opts, fp)) in wanted {
            let carry = carried.remove(&key);
            let lp = ScrapeLoop::start(t, opts, self.ctx.clone(), carry);
            running.loops.insert(key, (lp, fp));
        }
    }

    /// The status of every running target, sorted by job and labels.
    pub async fn targets(&self) -> Vec<TargetStatus> {
        let running = self.running.lock().await;
        let mut out: Vec<TargetStatus> = running
            .loops
            .values()
            .filter_map(|(lp, _)| lp.state.lock().ok().map(|s| s.status.clone()))
            .collect();
        out.sort_by(|a, b| {
            (a.target.job.as_str(), &a.target.labels)
                .cmp(&(b.target.job.as_str(), &b.target.labels))
        });
        out
    }

    /// Targets whose labels were invalid after relabelling at the last [`apply`](Self::apply).
    pub fn invalid_targets(&self) -> Vec<(String, Labels, TargetError)> {
        self.invalid.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops every loop and marks all their series stale (the evaluator is shutting down or
    /// scraping is switched off).
    pub async fn stop(&self) {
        self.discovery.stop();
        let mut running = self.running.lock().await;
        for ((job, labels, _), (lp, _)) in running.loops.drain() {
            self.ctx
                .metrics
                .target_up
                .remove(&target::health_labels(&job, &labels));
            lp.stop(&self.ctx.storage, true).await;
        }
    }
}
