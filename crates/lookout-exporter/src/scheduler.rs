//! Continuous probing: every configured target is probed every `interval` on its own
//! schedule.
//!
//! * Each target has one ticking task. Its first tick is offset by a hash of its name within
//!   one interval, so 10,000 targets with the same interval spread over it instead of firing
//!   at once.
//! * On each tick the probe runs in its own task; a global semaphore
//!   (`--probe.concurrency`) bounds how many probes run at once. Ticks never wait for a probe,
//!   so a slow target never delays another target's schedule.
//! * If the previous probe of a target is still running (or still waiting for a permit) when
//!   its next tick comes, the tick is skipped and counted in
//!   `lookout_exporter_probes_skipped_total`.
//! * A probe's timeout is the module's `timeout` (or 9.5 s, blackbox_exporter's effective
//!   default, when the module sets none), never more than the target's interval.
//! * On reload, targets whose definition (or module) did not change keep running with their
//!   state; changed targets restart; removed targets stop and their series disappear.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{Config, Module, ProberKind, Target};
use crate::heartbeat::unix_now;
use crate::limits::Limits;
use crate::metrics::{ExporterMetrics, Histogram};
use crate::prober::{self, ProbeReport, ProbeRequest};

/// Timeout of a continuous probe whose module sets none: blackbox_exporter's default scrape
/// timeout (10 s) minus its default offset (0.5 s).
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_millis(9500);

/// Shortest interval honoured; shorter ones are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What the last probe of a target found.
#[derive(Debug, Clone, Default)]
pub struct LastProbe {
    /// Whether it succeeded.
    pub success: bool,
    /// Its wall time in seconds.
    pub duration_seconds: f64,
    /// Unix time at which it finished.
    pub timestamp: f64,
    /// The failure reason, when it failed.
    pub failure_reason: Option<String>,
    /// Final HTTP status (HTTP probes that got a response).
    pub http_status: Option<u16>,
    /// Earliest certificate expiry seen (Unix seconds).
    pub cert_expiry: Option<f64>,
    /// DNS answer: nameserver, queried name and answers (DNS probes).
    pub dns: Option<(String, String, Vec<String>)>,
}

/// Everything `/metrics` shows for one target.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    /// The last completed probe, if any.
    pub last: Option<LastProbe>,
    /// HTTP request durations of all probes (HTTP modules).
    pub http_durations: Option<Histogram>,
    /// DNS resolution durations by nameserver (DNS modules).
    pub dns_durations: BTreeMap<String, Histogram>,
}

/// One configured target with its latest results.
#[derive(Debug)]
pub struct TargetSlot {
    /// The target's configuration.
    pub target: Target,
    /// The module it is probed with.
    pub module: Arc<Module>,
    /// The `job` label: the target's `job` label if it has one, else its module's name.
    pub job: String,
    /// Labels of every per-target series: `job`, `instance`, then the target's other labels.
    pub labels: Vec<(String, String)>,
    running: AtomicBool,
    state: Mutex<TargetState>,
}

impl TargetSlot {
    /// A slot with no results yet.
    pub fn new(target: Target, module: Arc<Module>) -> TargetSlot {
        let job = target
            .labels
            .get("job")
            .cloned()
            .unwrap_or_else(|| target.module.clone());
        let mut labels = vec![
            ("job".to_string(), job.clone()),
            ("instance".to_string(), target.name.clone()),
        ];
        labels.extend(
            target
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "job" && k.as_str() != "instance")
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        TargetSlot {
            target,
            module,
            job,
            labels,
            running: AtomicBool::new(false),
            state: Mutex::new(TargetState::default()),
        }
    }

    /// A copy of the current state.
    pub fn state(&self) -> TargetState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the last probe failed (`false` before the first probe).
    pub fn is_down(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        matches!(&state.last, Some(last) if !last.success)
    }

    /// Stores the result of a probe; returns whether the previous probe succeeded (`None`
    /// before the first probe).
    pub fn record(&self, report: &ProbeReport) -> Option<bool> {
        let rec = &report.recorder;
        let last = LastProbe {
            success: report.success,
            duration_seconds: report.duration.as_secs_f64(),
            timestamp: unix_now(),
            failure_reason: report.failure.as_ref().map(|f| f.reason.clone()),
            http_status: rec.http.as_ref().map(|h| h.status).filter(|s| *s != 0),
            cert_expiry: rec.cert_expiry,
            dns: rec.dns.as_ref().map(|d| {
                (
                    d.nameserver.clone(),
                    d.query_name.clone(),
                    d.answers.clone(),
                )
            }),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(http) = &rec.http {
            // A probe that never got a response measured no request duration.
            if http.status != 0 {
                state
                    .http_durations
                    .get_or_insert_with(Histogram::default)
                    .observe(http.duration.as_secs_f64());
            }
        }
        if let Some(dns) = &rec.dns
            && !dns.rcode.is_empty()
        {
            state
                .dns_durations
                .entry(dns.nameserver.clone())
                .or_default()
                .observe(dns.duration.as_secs_f64());
        }
        state.last.replace(last).map(|previous| previous.success)
    }

    /// The timeout of one probe of this target.
    pub fn timeout(&self) -> Duration {
        let configured = if self.module.timeout.is_zero() {
            DEFAULT_TARGET_TIMEOUT
        } else {
            self.module.timeout
        };
        configured.min(self.interval())
    }

    fn interval(&self) -> Duration {
        self.target.interval.max(MIN_INTERVAL)
    }
}

/// The configured targets by name, shared with the `/metrics` collector.
pub type SlotMap = BTreeMap<String, Arc<TargetSlot>>;

/// Runs the continuous probes and reconciles them with each new configuration.
#[derive(Debug)]
pub struct Scheduler {
    slots: Arc<RwLock<Arc<SlotMap>>>,
    tasks: Mutex<HashMap<String, (u64, AbortHandle)>>,
    permits: Arc<Semaphore>,
    limits: Limits,
    metrics: Arc<ExporterMetrics>,
}

impl Scheduler {
    /// A scheduler running at most `concurrency` probes at once, each under `limits`.
    pub fn new(concurrency: usize, limits: Limits, metrics: Arc<ExporterMetrics>) -> Scheduler {
        Scheduler {
            slots: Arc::default(),
            tasks: Mutex::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            limits,
            metrics,
        }
    }

    /// Starts probing one target on its schedule.
    fn spawn_tick(&self, slot: Arc<TargetSlot>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(tick(
            slot,
            self.permits.clone(),
            self.limits,
            self.metrics.clone(),
        ))
    }

    /// The shared table of targets, for the `/metrics` collector.
    pub fn slots(&self) -> Arc<RwLock<Arc<SlotMap>>> {
        self.slots.clone()
    }

    /// The current targets.
    pub fn snapshot(&self) -> Arc<SlotMap> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes the running probes match `config`: unchanged targets keep running and keep their
    /// state, changed ones restart, removed ones stop. With `start` false only the table is
    /// updated (before the runtime serves).
    pub fn apply(&self, config: &Config, start: bool) {
        let old = self.snapshot();
        let mut next = SlotMap::new();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut stale: HashMap<String, (u64, AbortHandle)> = std::mem::take(&mut *tasks);
        // One shared copy of each module for all the targets that use it.
        let mut modules: HashMap<&str, (Arc<Module>, u64)> = HashMap::new();
        for target in &config.targets {
            let Some(module) = config.modules.get(&target.module) else {
                tracing::warn!(target = %target.name, module = %target.module, "unknown module; target not probed");
                continue;
            };
            let (module, module_print) = modules
                .entry(target.module.as_str())
                .or_insert_with(|| (Arc::new(module.clone()), fingerprint(module)))
                .clone();
            let fingerprint = fingerprint(target) ^ module_print.rotate_left(1);
            if let Some(slot) = old.get(&target.name)
                && stale
                    .get(&target.name)
                    .is_some_and(|(print, _)| *print == fingerprint)
                && let Some(task) = stale.remove(&target.name)
            {
                next.insert(target.name.clone(), slot.clone());
                tasks.insert(target.name.clone(), task);
                continue;
            }
            let slot = Arc::new(TargetSlot::new(target.clone(), module));
            next.insert(target.name.clone(), slot.clone());
            if start {
                let handle = self.spawn_tick(slot);
                tasks.insert(target.name.clone(), (fingerprint, handle.abort_handle()));
            }
        }
        for (_, (_, handle)) in stale {
            handle.abort();
        }
        self.metrics.targets.set(next.len() as i64);
        *self.slots.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }

    /// Starts the tick tasks of all targets in the table that have none.
    pub fn start(&self) {
        let slots = self.snapshot();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (name, slot) in slots.iter() {
            if tasks.contains_key(name) {
                continue;
            }
            let fingerprint = fingerprint(&slot.target) ^ fingerprint(&*slot.module).rotate_left(1);
            let handle = self.spawn_tick(slot.clone());
            tasks.insert(name.clone(), (fingerprint, handle.abort_handle()));
        }
    }

    /// Stops every tick task (in-flight probes end with the runtime or their timeout).
    pub fn stop(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, (_, handle)) in tasks.drain() {
            handle.abort();
        }
    }
}

/// A hash of a value's full `Debug` form: changes whenever any setting changes (the config
/// types have no `PartialEq`; compiled regexes show their source).
fn fingerprint(value: &impl std::fmt::Debug) -> u64 {
    struct HashWriter<H: Hasher>(H);
    impl<H: Hasher> std::fmt::Write for HashWriter<H> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.write(s.as_bytes());
            Ok(())
        }
    }
    let mut writer = HashWriter(std::collections::hash_map::DefaultHasher::new());
    let _ = std::fmt::write(&mut writer, format_args!("{value:?}"));
    writer.0.finish()
}

/// Where in its interval a target's first probe falls: a hash of its name.
pub fn start_offset(name: &str, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hasher.finish()) % nanos) as u64)
}

/// Clears a slot's `running` flag however the probe task ends.
struct Running(Arc<TargetSlot>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

async fn tick(
    slot: Arc<TargetSlot>,
    permits: Arc<Semaphore>,
    limits: Limits,
    metrics: Arc<ExporterMetrics>,
) {
    let interval = slot.interval();
    let first = Instant::now() + start_offset(&slot.target.name, interval);
    let mut ticker = tokio::time::interval_at(first, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if slot.running.swap(true, Ordering::AcqRel) {
            metrics.probes_skipped.inc();
            tracing::debug!(target = %slot.target.name, "previous probe still running; skipped");
            continue;
        }
        let running = Running(slot.clone());
        let permits = permits.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let slot = &running.0;
            let request = ProbeRequest {
                target: &slot.target.target,
                module: &slot.module,
                hostname: None,
                timeout: slot.timeout(),
                limits,
                policy: None,
            };
            let report = prober::run(&request).await;
            metrics.observe_probe(prober_name(slot.module.prober), &report);
            let previous = slot.record(&report);
            let name = &slot.target.name;
            match (previous, report.success) {
                (Some(true) | None, false) => {
                    let (reason, message) = report
                        .failure
                        .as_ref()
                        .map(|f| (f.reason.as_str(), f.message.as_str()))
                        .unwrap_or(("", ""));
                    tracing::warn!(target = %name, reason, message, "target down");
                }
                (Some(false), true) => tracing::info!(target = %name, "target up again"),
                _ => {}
            }
        });
    }
}

/// The prober's name as used in labels.
pub fn prober_name(kind: ProberKind) -> &'static str {
    match kind {
        ProberKind::Http => "http",
        ProberKind::Tcp => "tcp",
        ProberKind::Dns => "dns",
        ProberKind::Icmp => "icmp",
        ProberKind::Grpc => "grpc",
        ProberKind::Unix => "unix",
        ProberKind::Websocket => "websocket",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_fall_within_the_interval_and_spread() {
        let interval = Duration::from_secs(15);
        let offsets: Vec<Duration> = (0..1000)
            .map(|i| start_offset(&format!("target-{i}"), interval))
            .collect();
        assert!(offsets.iter().all(|o| *o < interval));
        let first_second = offsets
            .iter()
            .filter(|o| **o < Duration::from_secs(1))
            .count();
        assert!(
            first_second < 200,
            "{first_second} of 1000 in the first second"
        );
    }

    fn target(labels: &[(&str, &str)]) -> Target {
        Target {
            name: "web".into(),
            module: "http_2xx".into(),
            target: "http://127.0.0.1:1/".into(),
            interval: Duration::from_secs(30),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            depends_on: vec![],
        }
    }

    #[test]
    fn job_is_the_module_unless_a_job_label_is_given() {
        let slot = TargetSlot::new(target(&[("team", "ops")]), Arc::default());
        assert_eq!(slot.job, "http_2xx");
        assert_eq!(
            slot.labels,
            vec![
                ("job".to_string(), "http_2xx".to_string()),
                ("instance".to_string(), "web".to_string()),
                ("team".to_string(), "ops".to_string()),
            ]
        );
        let slot = TargetSlot::new(
            target(&[("job", "shop"), ("instance", "x")]),
            Arc::default(),
        );
        assert_eq!(slot.job, "shop");
        assert_eq!(slot.labels.len(), 2);
    }

    #[test]
    fn timeout_is_capped_by_the_interval() {
        let mut t = target(&[]);
        t.interval = Duration::from_secs(2);
        let slot = TargetSlot::new(t, Arc::default());
        assert_eq!(slot.timeout(), Duration::from_secs(2));
        let slot = TargetSlot::new(target(&[]), Arc::default());
        assert_eq!(slot.timeout(), DEFAULT_TARGET_TIMEOUT);
    }
}
