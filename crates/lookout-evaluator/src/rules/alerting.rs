//! Alerting rules and the alert state machine, as Prometheus's `rules/alerting.go`:
//!
//! * a series in the result creates a *pending* alert (`active_at` = evaluation time);
//! * a pending alert becomes *firing* once `ts - active_at >= for`;
//! * when the series disappears a pending alert is dropped, a firing one becomes *inactive*
//!   (resolved) — unless `keep_firing_for` holds it firing for that long after it vanished;
//! * resolved alerts are kept (and re-sent as resolved) for 15 minutes;
//! * pending alerts are never sent; firing ones are re-sent every `resend_delay` with
//!   `ends_at = ts + 4 * max(interval, resend_delay)`;
//! * `ALERTS{alertstate=...}` and `ALERTS_FOR_STATE` (value: `active_at` in Unix seconds)
//!   are produced for every pending/firing alert once `for` state has been restored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::histogram::FloatHistogram;
use lookout_promql::labels::METRIC_NAME;

use crate::alert::{Alert, AlertState};
use crate::datasource::{Datasource, QuerySample};
use crate::rules::restore::PendingRestore;
use crate::rules::restore::{sub, unix_secs};
use crate::rules::status::{AlertSnapshot, AlertingRuleSnapshot, RuleCommon, RuleHealth};
use crate::rules::{RuleEvalError, RuleInfo};
use crate::template::{self, Bounds, CompiledTemplate, QueryFn, TemplateData};

/// The expanded labels and annotations of one alert.
type Expanded = (BTreeMap<String, String>, BTreeMap<String, String>);

/// How long a resolved alert is kept and re-sent (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The label that carries the alert name.
pub const ALERT_NAME_LABEL: &str = "alertname";
/// The label of `ALERTS` that carries the state.
pub const ALERT_STATE_LABEL: &str = "alertstate";
/// The series of active alerts.
pub const ALERTS_METRIC: &str = "ALERTS";
/// The series that records when each active alert became active.
pub const ALERTS_FOR_STATE_METRIC: &str = "ALERTS_FOR_STATE";

/// One instance of an alerting rule (Prometheus's `rules.Alert`).
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveAlert {
    /// Pending, firing, or inactive (resolved, kept for re-sending).
    pub state: AlertState,
    /// Identity: series labels without `__name__`, plus rule labels and `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Value of the last evaluation that returned it (0 for a native-histogram sample, as
    /// Prometheus's `Alert.Value`).
    pub value: f64,
    /// The native histogram of the last evaluation, when the expression returned one (shown
    /// on the status page; the rules and alerts APIs give `value` only, as Prometheus's).
    pub histogram: Option<Arc<FloatHistogram>>,
    /// When the expression first returned it (moved by `for` state restoration).
    pub active_at: SystemTime,
    /// When it started firing.
    pub fired_at: Option<SystemTime>,
    /// When it resolved.
    pub resolved_at: Option<SystemTime>,
    /// When it was last sent.
    pub last_sent_at: Option<SystemTime>,
    /// `ends_at` of the last send while firing.
    pub valid_until: Option<SystemTime>,
    /// Since when `keep_firing_for` has been holding it.
    pub keep_firing_since: Option<SystemTime>,
}

impl ActiveAlert {
    fn needs_sending(&self, ts: SystemTime, resend_delay: Duration) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        // Resolved since the last send: send again.
        if let Some(resolved) = self.resolved_at
            && self.last_sent_at.is_none_or(|sent| resolved > sent)
        {
            return true;
        }
        match self.last_sent_at {
            None => true,
            Some(sent) => sent + resend_delay < ts,
        }
    }
}

/// What is mutable in an alerting rule.
#[derive(Debug)]
struct AlertingState {
    active: HashMap<Labels, ActiveAlert>,
    restored: bool,
    /// Saved `for` state waiting for its alert to appear (embedded mode after a restart).
    pending_restore: Option<Box<PendingRestore>>,
    health: RuleHealth,
    last_error: Option<String>,
    evaluation_duration: Duration,
    last_evaluation: Option<SystemTime>,
}

/// An alerting rule.
#[derive(Debug)]
pub struct AlertingRule {
    name: String,
    expr: String,
    hold: Duration,
    keep_firing_for: Duration,
    /// Rule labels (group labels merged in), unexpanded.
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    external_labels: Labels,
    external_url: String,
    /// Parsed label and annotation templates, shared with template-expansion threads.
    templates: Arc<Templates>,
    /// Longest expansion of one template (`--rules.template.max-output-bytes`).
    template_max_output_bytes: usize,
    /// Time the templates of one evaluation may take (`--rules.template.timeout`).
    template_timeout: Duration,
    /// Set when the evaluator stops: running expansions end at once (SIGTERM must not
    /// wait for a template to use up its time).
    cancel: Arc<AtomicBool>,
    state: Mutex<AlertingState>,
}

#[derive(Debug)]
struct Templates {
    labels: Vec<(String, CompiledTemplate)>,
    annotations: Vec<(String, CompiledTemplate)>,
    uses_query: bool,
}

impl Templates {
    fn expand(
        &self,
        data: &TemplateData,
        query: Option<QueryFn>,
        bounds: &Bounds<'_>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let run = |v: &[(String, CompiledTemplate)]| {
            v.iter()
                .map(|(k, t)| {
                    let text = t.render_or_error_bounded(data, query.clone(), bounds);
                    (k.clone(), text)
                })
                .collect()
        };
        (run(&self.labels), run(&self.annotations))
    }
}

/// Sets the rule's cancel flag if dropped while armed: expansions running on a blocking
/// thread stop soon after the evaluation that started them is dropped.
struct CancelIfDropped {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelIfDropped {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

impl AlertingRule {
    /// Creates a rule. `restored` is false when `for` state must be restored before
    /// `ALERTS`/`ALERTS_FOR_STATE` are written (the first load after start-up).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        expr: &str,
        hold: Duration,
        keep_firing_for: Duration,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        external_labels: Labels,
        external_url: &str,
        restored: bool,
    ) -> AlertingRule {
        let tmpl_name = format!("__alert_{name}");
        let compile = |m: &BTreeMap<String, String>| -> Vec<(String, CompiledTemplate)> {
            m.iter()
                .map(|(k, v)| (k.clone(), CompiledTemplate::new(&tmpl_name, v)))
                .collect()
        };
        let (label_templates, annotation_templates) = (compile(&labels), compile(&annotations));
        let uses_query = label_templates
            .iter()
            .chain(&annotation_templates)
            .any(|(_, t)| t.uses_query());
        AlertingRule {
            name: name.to_string(),
            expr: expr.to_string(),
            hold,
            keep_firing_for,
            labels,
            annotations,
            external_labels,
            external_url: external_url.to_string(),
            templates: Arc::new(Templates {
                labels: label_templates,
                annotations: annotation_templates,
                uses_query,
            }),
            template_max_output_bytes: crate::limits::MAX_TEMPLATE_OUTPUT_BYTES,
            template_timeout: crate::limits::DEFAULT_TEMPLATE_TIMEOUT,
            cancel: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(AlertingState {
                active: HashMap::new(),
                restored,
                pending_restore: None,
                health: RuleHealth::Unknown,
                last_error: None,
                evaluation_duration: Duration::ZERO,
                last_evaluation: None,
            }),
        }
    }

    /// Sets the time the templates of one evaluation may take together to `timeout`
    /// (`--rules.template.timeout`; the default is
    /// [`crate::limits::DEFAULT_TEMPLATE_TIMEOUT`]).
    pub fn with_template_timeout(mut self, timeout: Duration) -> AlertingRule {
        self.template_timeout = timeout;
        self
    }

    /// Stops the rule's running template expansions and every later one (the rule is
    /// going away: the evaluator stops).
    pub fn cancel_expansions(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Sets the longest expansion of one label or annotation template to `max_bytes`
    /// (`--rules.template.max-output-bytes`; the default is
    /// [`crate::limits::MAX_TEMPLATE_OUTPUT_BYTES`]).
    pub fn with_template_output_limit(mut self, max_bytes: usize) -> AlertingRule {
        self.template_max_output_bytes = max_bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlertingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The alert name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// `for`.
    pub fn hold_duration(&self) -> Duration {
        self.hold
    }

    /// `keep_firing_for`.
    pub fn keep_firing_for(&self) -> Duration {
        self.keep_firing_for
    }

    /// The rule's labels (unexpanded).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The rule's annotations (unexpanded).
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
    }

    /// Whether `for` state has been restored (or needed no restoring).
    pub fn restored(&self) -> bool {
        self.lock().restored
    }

    /// Marks `for` state as restored: from now on `ALERTS`/`ALERTS_FOR_STATE` are written.
    pub fn set_restored(&self, restored: bool) {
        self.lock().restored = restored;
    }

    /// Saved `for` state not applied yet: applied to each alert when it first appears.
    pub fn pending_restore(&self) -> Option<PendingRestore> {
        self.lock().pending_restore.as_deref().cloned()
    }

    /// Sets the saved `for` state to apply to alerts when they first appear (state
    /// restoration in embedded mode; carried over a reload).
    pub fn set_pending_restore(&self, pending: Option<PendingRestore>) {
        self.lock().pending_restore = pending.filter(|p| !p.entries.is_empty()).map(Box::new);
    }

    /// A copy of every alert instance, resolved ones included.
    pub fn current_alerts(&self) -> Vec<ActiveAlert> {
        let mut v: Vec<ActiveAlert> = self.lock().active.values().cloned().collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// Pending and firing alerts (not the resolved ones kept for re-sending).
    pub fn active_alerts(&self) -> Vec<ActiveAlert> {
        self.current_alerts()
            .into_iter()
            .filter(|a| a.resolved_at.is_none())
            .collect()
    }

    /// The highest state of its alerts.
    pub fn state(&self) -> AlertState {
        self.lock()
            .active
            .values()
            .map(|a| a.state)
            .max()
            .unwrap_or(AlertState::Inactive)
    }

    /// Runs `f` on every alert instance (used by state restoration).
    pub fn for_each_alert_mut(&self, mut f: impl FnMut(&mut ActiveAlert)) {
        for a in self.lock().active.values_mut() {
            f(a);
        }
    }

    /// Replaces the alert instances (state carried over a reload).
    pub fn set_alerts(&self, alerts: Vec<ActiveAlert>) {
        self.lock().active = alerts.into_iter().map(|a| (a.labels.clone(), a)).collect();
    }

    /// The labels of the `ALERTS_FOR_STATE` selector for this rule: `__name__`,
    /// `alertname` and the rule labels that are not templates.
    pub fn for_state_selector(&self) -> String {
        let mut l = Labels::new(
            self.labels
                .iter()
                .filter(|(_, v)| !v.contains("{{"))
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        l.set(METRIC_NAME, ALERTS_FOR_STATE_METRIC);
        l.set(ALERT_NAME_LABEL, &self.name);
        selector_string(&l)
    }

    fn sample(&self, alert: &ActiveAlert) -> QuerySample {
        let mut l = self.base_labels(alert);
        l.set(METRIC_NAME, ALERTS_METRIC);
        l.set(ALERT_STATE_LABEL, alert.state.as_str());
        QuerySample {
            labels: l,
            value: 1.0,
            histogram: None,
        }
    }

    fn for_state_sample(&self, alert: &ActiveAlert) -> QuerySample {
        let mut l = self.base_labels(alert);
        l.set(METRIC_NAME, ALERTS_FOR_STATE_METRIC);
        QuerySample {
            labels: l,
            value: unix_secs(alert.active_at) as f64,
            histogram: None,
        }
    }

    fn base_labels(&self, alert: &ActiveAlert) -> Labels {
        let mut l = Labels::new(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in alert.labels.iter() {
            l.set(k, v);
        }
        l.set(ALERT_NAME_LABEL, &self.name);
        l
    }

    /// Evaluates the rule at `ts` (queries at `ts - query_offset`) and advances the state
    /// machine. Returns the `ALERTS`/`ALERTS_FOR_STATE` samples to store.
    pub async fn eval(
        &self,
        ts: SystemTime,
        query_offset: Duration,
        datasource: &Arc<dyn Datasource>,
        limit: usize,
    ) -> Result<Vec<QuerySample>, RuleEvalError> {
        let at = ts - query_offset;
        let res = datasource
            .query(&self.expr, at)
            .await
            .map_err(RuleEvalError::Query)?;

        let expanded = self.expand_all(&res, at, datasource).await?;
        let alerts = self.result_alerts(&res, expanded, ts)?;

        let mut st = self.lock();
        let st = &mut *st;
        let result_keys: HashSet<Labels> = alerts.keys().cloned().collect();
        self.merge_results(st, alerts, ts);
        let (vec, num_active_pending) = self.advance(st, &result_keys, ts);
        if limit > 0 && num_active_pending > limit {
            st.active.clear();
            return Err(RuleEvalError::Limit(format!(
                "exceeded limit of {limit} with {num_active_pending} alerts"
            )));
        }
        Ok(vec)
    }

    /// One pending alert per sample of the query's result, labelled with the sample's
    /// labels (without the name), the rule's expanded labels and `alertname`; two samples
    /// giving the same labels are an error, as in Prometheus.
    fn result_alerts(
        &self,
        res: &[QuerySample],
        expanded: Vec<Expanded>,
        ts: SystemTime,
    ) -> Result<HashMap<Labels, ActiveAlert>, RuleEvalError> {
        let mut alerts: HashMap<Labels, ActiveAlert> = HashMap::with_capacity(res.len());
        for (smpl, (labels, annotations)) in res.iter().zip(expanded) {
            let mut l = smpl.labels.clone();
            l.remove(METRIC_NAME);
            for (k, v) in &labels {
                l.set(k, v);
            }
            l.set(ALERT_NAME_LABEL, &self.name);
            if alerts.contains_key(&l) {
                return Err(RuleEvalError::DuplicateAlertLabelSet);
            }
            alerts.insert(
                l.clone(),
                ActiveAlert {
                    state: AlertState::Pending,
                    labels: l,
                    annotations,
                    value: smpl.value,
                    histogram: smpl.histogram.clone(),
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: None,
                    keep_firing_since: None,
                },
            );
        }
        Ok(alerts)
    }

    /// Takes this evaluation's alerts in: an active one keeps its state and takes the new
    /// value and annotations; a new one starts pending, from the saved time when its
    /// state was restored as pending after a restart.
    fn merge_results(
        &self,
        st: &mut AlertingState,
        alerts: HashMap<Labels, ActiveAlert>,
        ts: SystemTime,
    ) {
        if let Some(p) = st.pending_restore.as_mut() {
            p.expire(ts);
        }
        for (h, mut a) in alerts {
            if let Some(existing) = st.active.get_mut(&h)
                && existing.state != AlertState::Inactive
            {
                existing.value = a.value;
                existing.histogram = a.histogram;
                existing.annotations = a.annotations;
                continue;
            }
            // First appearance since a restart of an alert whose saved state was pending.
            if let Some(p) = st.pending_restore.as_mut()
                && let Some(at) = p.take(&h, self.hold, ts)
            {
                a.active_at = at;
            }
            st.active.insert(h, a);
        }
        if st
            .pending_restore
            .as_ref()
            .is_some_and(|p| p.entries.is_empty())
        {
            st.pending_restore = None;
        }
    }

    /// Advances every alert's state at `ts` (Prometheus's `for` and `keep_firing_for`
    /// semantics): alerts missing from the result resolve or keep firing, pending ones
    /// that have waited `for` fire, and old resolved ones are forgotten. Returns the
    /// `ALERTS`/`ALERTS_FOR_STATE` samples (once the state is restored) and how many
    /// alerts are pending or firing.
    fn advance(
        &self,
        st: &mut AlertingState,
        result_keys: &HashSet<Labels>,
        ts: SystemTime,
    ) -> (Vec<QuerySample>, usize) {
        let mut vec = Vec::new();
        let mut num_active_pending = 0usize;
        let mut to_delete = Vec::new();
        let mut keys: Vec<Labels> = st.active.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let Some(a) = st.active.get_mut(&key) else {
                continue;
            };
            if !result_keys.contains(&key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && !self.keep_firing_for.is_zero() {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    if sub(ts, since) < self.keep_firing_for.as_nanos() as i128 {
                        keep_firing = true;
                    }
                }
                if a.state == AlertState::Pending
                    || a.resolved_at
                        .is_some_and(|r| sub(ts, r) > RESOLVED_RETENTION.as_nanos() as i128)
                {
                    to_delete.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            num_active_pending += 1;
            if a.state == AlertState::Pending
                && sub(ts, a.active_at) >= self.hold.as_nanos() as i128
            {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            if st.restored {
                let a = a.clone();
                vec.push(self.sample(&a));
                vec.push(self.for_state_sample(&a));
            }
        }
        for k in to_delete {
            st.active.remove(&k);
        }
        (vec, num_active_pending)
    }

    /// Expands the templates for every sample on a blocking thread (a template may run up
    /// to `--rules.template.timeout`, and `query` waits for the datasource), all of them
    /// within one deadline; dropping the returned future stops them.
    async fn expand_all(
        &self,
        res: &[QuerySample],
        at: SystemTime,
        datasource: &Arc<dyn Datasource>,
    ) -> Result<Vec<Expanded>, RuleEvalError> {
        let data = self.template_data_list(res);
        let query: Option<QueryFn> = self.templates.uses_query.then(|| {
            let ds = datasource.clone();
            let handle = tokio::runtime::Handle::current();
            let query: QueryFn = Arc::new(move |q: &str| {
                handle.block_on(ds.query(q, at)).map_err(|e| e.to_string())
            });
            query
        });
        let templates = self.templates.clone();
        let (max_bytes, timeout) = (self.template_max_output_bytes, self.template_timeout);
        let mut guard = CancelIfDropped {
            flag: self.cancel.clone(),
            armed: true,
        };
        let flag = self.cancel.clone();
        let expanded = tokio::task::spawn_blocking(move || {
            let bounds = Bounds {
                max_bytes,
                deadline: (!timeout.is_zero())
                    .then(|| Instant::now().checked_add(timeout))
                    .flatten(),
                timeout,
                stop: Some(&flag),
            };
            data.iter()
                .map(|d| templates.expand(d, query.clone(), &bounds))
                .collect()
        })
        .await
        .map_err(|e| RuleEvalError::Template(e.to_string()));
        guard.armed = false;
        expanded
    }

    fn template_data_list(&self, res: &[QuerySample]) -> Vec<TemplateData> {
        res.iter()
            .map(|s| TemplateData {
                labels: s.labels.clone(),
                external_labels: self.external_labels.clone(),
                external_url: self.external_url.clone(),
                value: s.value,
                histogram: s
                    .histogram
                    .as_deref()
                    .map(lookout_promql::histogram::go_string),
            })
            .collect()
    }

    /// Alerts due for (re-)sending at `ts`, marked as sent, converted as Prometheus's
    /// `SendAlerts` does (`starts_at` = fired-at, `ends_at` = resolved-at or valid-until).
    pub fn alerts_to_send(
        &self,
        ts: SystemTime,
        resend_delay: Duration,
        interval: Duration,
    ) -> Vec<Alert> {
        let generator_url = format!("{}{}", self.external_url, template::table_link(&self.expr));
        let mut out = Vec::new();
        let mut st = self.lock();
        let mut keys: Vec<Labels> = st.active.keys().cloned().collect();
        keys.sort();
        for k in keys {
            let Some(a) = st.active.get_mut(&k) else {
                continue;
            };
            if !a.needs_sending(ts, resend_delay) {
                continue;
            }
            a.last_sent_at = Some(ts);
            let delta = interval.max(resend_delay);
            a.valid_until = Some(ts + 4 * delta);
            out.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.fired_at.unwrap_or(UNIX_EPOCH),
                ends_at: a.resolved_at.or(a.valid_until),
                generator_url: generator_url.clone(),
            });
        }
        out
    }

    /// A read-only view for the API.
    pub fn snapshot(&self) -> AlertingRuleSnapshot {
        let st = self.lock();
        let mut alerts: Vec<AlertSnapshot> = st
            .active
            .values()
            .filter(|a| a.resolved_at.is_none())
            .map(|a| AlertSnapshot {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                state: a.state,
                active_at: a.active_at,
                keep_firing_since: a.keep_firing_since,
                value: a.value,
                histogram: a.histogram.clone(),
            })
            .collect();
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        AlertingRuleSnapshot {
            common: RuleCommon {
                name: self.name.clone(),
                query: self.expr.clone(),
                labels: Labels::new(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                health: st.health,
                last_error: st.last_error.clone(),
                evaluation_duration: st.evaluation_duration,
                last_evaluation: st.last_evaluation,
            },
            hold_duration: self.hold,
            keep_firing_for: self.keep_firing_for,
            annotations: self.annotations.clone(),
            state: st
                .active
                .values()
                .map(|a| a.state)
                .max()
                .unwrap_or(AlertState::Inactive),
            alerts,
        }
    }
}

impl RuleInfo for AlertingRule {
    fn set_health(&self, health: RuleHealth, error: Option<String>) {
        let mut st = self.lock();
        st.health = health;
        st.last_error = error;
    }

    fn set_evaluation(&self, started: SystemTime, took: Duration) {
        let mut st = self.lock();
        st.last_evaluation = Some(started);
        st.evaluation_duration = took;
    }
}

/// `name{a="b", ...}` as a PromQL vector selector.
pub(crate) fn selector_string(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(k);
        s.push('=');
        s.push('"');
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}
