//! The rule manager: loads rule files into groups, runs each group on its own schedule,
//! swaps groups atomically on reload (a broken file keeps the old rules), carries alert
//! state over reloads, and restores `for` state after start-up (Prometheus's
//! `rules/manager.go`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alert::Notify;
use crate::datasource::{Datasource, QuerySample};
use crate::rules::file::{self, RuleFile, RuleFileError};
use crate::rules::group::{Group, GroupContext, RestoreFuture};
use crate::rules::metrics::RuleMetrics;
use crate::rules::status::{GroupSnapshot, RulesStatus};
use crate::rules::{AlertingRule, RecordingRule, Rule};
use crate::state::{self, ForState, RestoreSource};
use lookout_promql::storage::STALE_NAN;

/// How the manager is set up.
#[derive(Clone)]
pub struct ManagerOptions {
    /// Where queries go and rule outputs are stored.
    pub datasource: Arc<dyn Datasource>,
    /// Where alerts are sent.
    pub notifier: Arc<dyn Notify>,
    /// Labels for `$externalLabels` (the notifier adds them to alerts).
    pub external_labels: Labels,
    /// Base of `generatorURL` and `$externalURL`.
    pub external_url: String,
    /// Interval of groups that do not set one (`global.evaluation_interval`).
    pub default_interval: Duration,
    /// Minimum time between two sends of the same firing alert.
    pub resend_delay: Duration,
    /// Only `ALERTS_FOR_STATE` this recent is used for restoring.
    pub outage_tolerance: Duration,
    /// `for` durations shorter than this are not restored; shorter remaining times grow to it.
    pub for_grace_period: Duration,
    /// Where `for` state is kept when the datasource does not persist `ALERTS_FOR_STATE`.
    pub state_file: Option<PathBuf>,
    /// Evaluation metrics.
    pub metrics: RuleMetrics,
    /// Largest rule file read (`--rules.max-file-size`; default
    /// [`crate::limits::MAX_RULE_FILE_BYTES`]).
    pub max_rule_file_bytes: u64,
    /// Longest expansion of one alert label or annotation template
    /// (`--rules.template.max-output-bytes`; default
    /// [`crate::limits::MAX_TEMPLATE_OUTPUT_BYTES`]).
    pub template_max_output_bytes: usize,
    /// Time the templates of one rule evaluation may take together
    /// (`--rules.template.timeout`).
    pub template_timeout: std::time::Duration,
}

struct Running {
    group: Arc<Group>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Inner {
    /// Keyed by (file, name), in file then name order.
    groups: BTreeMap<(String, String), Running>,
    /// Whether the first load happened (later loads do not restore).
    loaded_once: bool,
    /// The last failed reload, cleared by a successful one.
    reload_error: Option<(SystemTime, String)>,
    /// Patterns of the last successful load that matched no file.
    unmatched: Vec<String>,
}

/// Runs rule groups.
pub struct RuleManager {
    opts: ManagerOptions,
    ctx: Arc<GroupContext>,
    inner: Mutex<Inner>,
    restore_source: RestoreSource,
    /// State read at start-up, kept for rules that are not restored yet.
    saved: Arc<HashMap<Labels, ForState>>,
    state_dirty: Arc<tokio::sync::Notify>,
    /// External labels, default interval and default query offset (0 until
    /// [`set_defaults`](Self::set_defaults)), replaceable on reload.
    defaults: Mutex<(Labels, Duration, Duration)>,
}

/// Why a reload failed (the previous rules stay in place).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// One or more rule files are invalid.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    RuleFiles(Vec<RuleFileError>),
}

impl RuleManager {
    /// Creates a manager; reads the state file when the datasource does not persist
    /// `ALERTS_FOR_STATE` (an unreadable state file is logged and ignored).
    pub fn new(opts: ManagerOptions) -> Arc<RuleManager> {
        let state_dirty = Arc::new(tokio::sync::Notify::new());
        let ctx = Arc::new(GroupContext {
            datasource: opts.datasource.clone(),
            notifier: opts.notifier.clone(),
            resend_delay: opts.resend_delay,
            metrics: opts.metrics.clone(),
            evaluated: Some(state_dirty.clone()),
        });
        let saved = match (&opts.state_file, opts.datasource.persists_rule_outputs()) {
            (Some(path), true) => {
                tracing::warn!(
                    file = %path.display(),
                    "The alert state file is not used: `for` state is restored from ALERTS_FOR_STATE in the storage, as Prometheus does"
                );
                HashMap::new()
            }
            (Some(path), false) => match state::read_state_file(path) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(err = %e, "Ignoring unreadable alert state file");
                    HashMap::new()
                }
            },
            _ => HashMap::new(),
        };
        let saved = Arc::new(saved);
        let restore_source = if opts.datasource.persists_rule_outputs() {
            RestoreSource::Datasource(opts.datasource.clone())
        } else {
            RestoreSource::Saved(saved.clone())
        };
        Arc::new(RuleManager {
            ctx,
            inner: Mutex::new(Inner {
                groups: BTreeMap::new(),
                loaded_once: false,
                reload_error: None,
                unmatched: Vec::new(),
            }),
            restore_source,
            saved,
            state_dirty,
            defaults: Mutex::new((
                opts.external_labels.clone(),
                opts.default_interval,
                Duration::ZERO,
            )),
            opts,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads and validates every file matching `patterns`, each of at most the default
    /// 10 MiB. Nothing changes on error.
    pub fn load_files(patterns: &[String]) -> Result<Vec<RuleFile>, ReloadError> {
        Self::load_files_with_limit(patterns, crate::limits::MAX_RULE_FILE_BYTES)
    }

    /// [`RuleManager::load_files`] with a file size limit of `max_bytes`
    /// (`--rules.max-file-size`).
    pub fn load_files_with_limit(
        patterns: &[String],
        max_bytes: u64,
    ) -> Result<Vec<RuleFile>, ReloadError> {
        let paths = file::expand_globs(patterns).map_err(|e| ReloadError::RuleFiles(vec![e]))?;
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match file::load_file_with_limit(&p, max_bytes) {
                Ok(f) => files.push(f),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(files)
        } else {
            Err(ReloadError::RuleFiles(errors))
        }
    }

    /// Builds groups from decoded files. `restored` is false on the first load, so alerting
    /// rules wait for state restoration before writing `ALERTS_FOR_STATE`.
    pub fn build_groups(&self, files: &[RuleFile], restored: bool) -> Vec<Group> {
        let (external_labels, default_interval, default_query_offset) = self
            .defaults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut out = Vec::new();
        for f in files {
            let file_name = f.path.display().to_string();
            for g in &f.def.groups {
                let interval = g
                    .interval
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero())
                    .unwrap_or(default_interval);
                let query_offset = g.query_offset.map(|d| d.0).unwrap_or(default_query_offset);
                let mut rules = Vec::new();
                for r in &g.rules {
                    let mut labels: BTreeMap<String, String> = g
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect();
                    for (k, v) in &r.labels {
                        labels.insert(k.clone(), v.0.clone());
                    }
                    let expr = r.expr.as_ref().map(|e| e.0.clone()).unwrap_or_default();
                    if r.is_alert() {
                        rules.push(Rule::Alerting(
                            AlertingRule::new(
                                r.name(),
                                &expr,
                                r.for_.map(|d| d.0).unwrap_or_default(),
                                r.keep_firing_for.map(|d| d.0).unwrap_or_default(),
                                labels,
                                r.annotations
                                    .iter()
                                    .map(|(k, v)| (k.clone(), v.0.clone()))
                                    .collect(),
                                external_labels.clone(),
                                &self.opts.external_url,
                                restored,
                            )
                            .with_template_output_limit(self.opts.template_max_output_bytes)
                            .with_template_timeout(self.opts.template_timeout),
                        ));
                    } else {
                        rules.push(Rule::Recording(RecordingRule::new(r.name(), &expr, labels)));
                    }
                }
                let fingerprint = format!(
                    "{interval:?}|{query_offset:?}|{}|{:?}|{:?}|{external_labels}",
                    g.limit, g.labels, g.rules
                );
                out.push(Group::new(
                    &g.name,
                    &file_name,
                    interval,
                    query_offset,
                    g.limit,
                    rules,
                    fingerprint,
                    self.ctx.clone(),
                ));
            }
        }
        out
    }

    /// Records a failed reload (of the configuration or the rules): the metric
    /// `prometheus_rule_config_last_reload_successful` drops to 0 and the status page shows
    /// `message` until a reload succeeds. The running configuration stays.
    pub fn reload_failed(&self, message: &str) {
        self.opts.metrics.config_last_reload_successful.set(0.0);
        self.lock().reload_error = Some((SystemTime::now(), message.to_string()));
    }

    /// Loads the rule files and swaps in the new groups: unchanged groups keep running,
    /// changed ones take over the old alert state, removed ones stop and their series are
    /// marked stale. On error the running rules stay as they are.
    pub fn update(self: &Arc<Self>, patterns: &[String]) -> Result<usize, ReloadError> {
        let files = match Self::load_files_with_limit(patterns, self.opts.max_rule_file_bytes) {
            Ok(f) => f,
            Err(e) => {
                self.reload_failed(&e.to_string());
                return Err(e);
            }
        };
        let unmatched = file::unmatched_patterns(patterns);
        for pattern in &unmatched {
            tracing::warn!(pattern = %pattern, "rule_files pattern matches no file");
        }
        let mut inner = self.lock();
        inner.unmatched = unmatched;
        inner.reload_error = None;
        let first_load = !inner.loaded_once;
        let new_groups = self.build_groups(&files, !first_load);
        let mut old = std::mem::take(&mut inner.groups);
        let mut next = BTreeMap::new();
        let mut count = 0;
        for g in new_groups {
            count += g.rules().len();
            let key = (g.file().to_string(), g.name().to_string());
            if let Some(running) = old.remove(&key) {
                if running.group.fingerprint() == g.fingerprint() {
                    next.insert(key, running);
                    continue;
                }
                let _ = running.stop.send(true);
                running.task.abort();
                g.copy_state(&running.group);
                let g = Arc::new(g);
                next.insert(key, self.start(g, false));
                continue;
            }
            let g = Arc::new(g);
            next.insert(key, self.start(g, first_load));
        }
        // Groups that went away: stop them and mark what they wrote as stale.
        for (_, running) in old {
            let _ = running.stop.send(true);
            running.task.abort();
            let series = running.group.last_series();
            if !series.is_empty() {
                let samples: Vec<QuerySample> = series
                    .into_iter()
                    .map(|labels| QuerySample {
                        labels,
                        value: STALE_NAN,
                        histogram: None,
                    })
                    .collect();
                if let Err(e) = self.opts.datasource.append(&samples, SystemTime::now()) {
                    tracing::warn!(group = running.group.name(), err = %e, "Marking series of a removed group stale failed");
                }
            }
        }
        inner.groups = next;
        inner.loaded_once = true;
        self.opts.metrics.config_last_reload_successful.set(1.0);
        Ok(count)
    }

    fn start(&self, group: Arc<Group>, restore: bool) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let restore_fn: Option<Box<dyn FnOnce(Arc<Group>) -> RestoreFuture + Send>> = if restore {
            let source = self.restore_source.clone();
            let tol = self.opts.outage_tolerance;
            let grace = self.opts.for_grace_period;
            Some(Box::new(move |g: Arc<Group>| -> RestoreFuture {
                Box::pin(async move {
                    state::restore_for_state(&g, &source, SystemTime::now(), tol, grace).await;
                })
            }))
        } else {
            None
        };
        let task = tokio::spawn(group.clone().run(stop_rx, restore_fn));
        Running { group, stop, task }
    }

    /// Replaces the external labels, default interval and default query offset used by the
    /// next [`update`](Self::update) (configuration reload).
    pub fn set_defaults(
        &self,
        external_labels: Labels,
        default_interval: Duration,
        default_query_offset: Duration,
    ) {
        *self.defaults.lock().unwrap_or_else(|e| e.into_inner()) =
            (external_labels, default_interval, default_query_offset);
    }

    /// The running groups, in file then name order.
    pub fn group_list(&self) -> Vec<Arc<Group>> {
        self.lock()
            .groups
            .values()
            .map(|r| r.group.clone())
            .collect()
    }

    /// The state the state file should hold now: restored rules' active alerts, plus the
    /// saved entries of alerts whose rules have not been restored yet.
    pub fn for_state(&self) -> HashMap<Labels, ForState> {
        self.for_state_of(&self.group_list())
    }

    fn for_state_of(&self, groups: &[Arc<Group>]) -> HashMap<Labels, ForState> {
        let mut state = state::collect_for_state(groups);
        let mut unrestored = std::collections::HashSet::new();
        for g in groups {
            for r in g.rules() {
                if let Rule::Alerting(a) = r
                    && !a.restored()
                {
                    unrestored.insert(a.name().to_string());
                }
            }
        }
        for (l, s) in self.saved.iter() {
            if l.get("alertname").is_some_and(|n| unrestored.contains(n)) {
                state.entry(l.clone()).or_insert(*s);
            }
        }
        state
    }

    /// Writes the state file now (no-op without one or when the datasource persists
    /// `ALERTS_FOR_STATE`).
    pub fn save_state(&self) -> Result<(), state::StateError> {
        self.save_state_of(&self.group_list())
    }

    fn save_state_of(&self, groups: &[Arc<Group>]) -> Result<(), state::StateError> {
        match &self.opts.state_file {
            Some(path) if !self.opts.datasource.persists_rule_outputs() => {
                state::write_state_file(path, &self.for_state_of(groups))
            }
            _ => Ok(()),
        }
    }

    /// Keeps the state file current: writes it after evaluations, at most once a second,
    /// until `stop` fires ([`RuleManager::stop`] writes the final state).
    pub async fn run_state_writer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.state_dirty.notified() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.save_state() {
                tracing::warn!(err = %e, "Writing the alert state file failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => break,
            }
        }
    }

    /// Stops every group (a running evaluation is dropped, cancelling its query) and writes the state
    /// file one last time.
    pub async fn stop(&self) {
        let groups = std::mem::take(&mut self.lock().groups);
        for r in groups.values() {
            let _ = r.stop.send(true);
            r.group.cancel_expansions();
        }
        let mut list = Vec::new();
        for (_, r) in groups {
            let _ = r.task.await;
            list.push(r.group);
        }
        if let Err(e) = self.save_state_of(&list) {
            tracing::warn!(err = %e, "Writing the alert state file failed");
        }
    }
}

impl RulesStatus for RuleManager {
    fn groups(&self) -> Vec<GroupSnapshot> {
        self.group_list().iter().map(|g| g.snapshot()).collect()
    }

    fn last_reload_error(&self) -> Option<(SystemTime, String)> {
        self.lock().reload_error.clone()
    }

    fn unmatched_patterns(&self) -> Vec<String> {
        self.lock().unmatched.clone()
    }
}
