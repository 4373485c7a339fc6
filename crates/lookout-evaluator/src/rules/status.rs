//! Read-only snapshots of rule groups for the web API (`/api/v1/rules`, `/api/v1/alerts`)
//! and the status page. Field names follow Prometheus's API JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use lookout_promql::histogram::FloatHistogram;

use crate::alert::AlertState;

/// Whether a rule's last evaluation worked (Prometheus's `health`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleHealth {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed (see `last_error`).
    Err,
}

impl RuleHealth {
    /// Prometheus's spelling: `unknown`, `ok`, `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleHealth::Unknown => "unknown",
            RuleHealth::Ok => "ok",
            RuleHealth::Err => "err",
        }
    }
}

/// One rule group at the time of the snapshot.
#[derive(Clone, Debug)]
pub struct GroupSnapshot {
    /// The group's name.
    pub name: String,
    /// The rule file it came from.
    pub file: String,
    /// Evaluation interval.
    pub interval: Duration,
    /// Query offset applied to every evaluation timestamp.
    pub query_offset: Duration,
    /// Maximum number of series / alerts per rule (0: no limit).
    pub limit: usize,
    /// The rules, in file order.
    pub rules: Vec<RuleSnapshot>,
    /// How long the last evaluation of the whole group took.
    pub evaluation_duration: Duration,
    /// When the last evaluation started (wall clock), if any.
    pub last_evaluation: Option<SystemTime>,
}

/// What all rules share.
#[derive(Clone, Debug)]
pub struct RuleCommon {
    /// The alert name or the recorded metric name.
    pub name: String,
    /// The PromQL expression as written.
    pub query: String,
    /// Labels added by the rule (unexpanded templates).
    pub labels: Labels,
    /// Health of the last evaluation.
    pub health: RuleHealth,
    /// The last evaluation's error, if it failed.
    pub last_error: Option<String>,
    /// How long the last evaluation took.
    pub evaluation_duration: Duration,
    /// When the last evaluation started, if any.
    pub last_evaluation: Option<SystemTime>,
}

/// One rule.
#[derive(Clone, Debug)]
pub enum RuleSnapshot {
    /// An alerting rule and its active alerts.
    Alerting(AlertingRuleSnapshot),
    /// A recording rule.
    Recording(RuleCommon),
}

/// An alerting rule.
#[derive(Clone, Debug)]
pub struct AlertingRuleSnapshot {
    /// Name, query, labels, health, ...
    pub common: RuleCommon,
    /// `for`.
    pub hold_duration: Duration,
    /// `keep_firing_for`.
    pub keep_firing_for: Duration,
    /// Annotations (unexpanded templates).
    pub annotations: BTreeMap<String, String>,
    /// The highest state among its alerts (`inactive` when none).
    pub state: AlertState,
    /// Active (pending or firing) alerts; resolved ones kept for re-sending are not listed,
    /// as in Prometheus.
    pub alerts: Vec<AlertSnapshot>,
}

/// One active alert.
#[derive(Clone, Debug)]
pub struct AlertSnapshot {
    /// Labels (without external labels).
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pending or firing.
    pub state: AlertState,
    /// When it became active.
    pub active_at: SystemTime,
    /// When `keep_firing_for` started holding it firing, if it is.
    pub keep_firing_since: Option<SystemTime>,
    /// The sample value of the last evaluation that had it (0 for a native histogram).
    pub value: f64,
    /// The native histogram of the last evaluation, when the expression returned one.
    pub histogram: Option<Arc<FloatHistogram>>,
}

/// Something that can list the current rule groups (the rule manager).
pub trait RulesStatus: Send + Sync {
    /// All groups, sorted by file then name as Prometheus lists them.
    fn groups(&self) -> Vec<GroupSnapshot>;
    /// When the last reload failed and why, until a reload succeeds (the previous
    /// configuration keeps running meanwhile).
    fn last_reload_error(&self) -> Option<(SystemTime, String)> {
        None
    }
    /// `rule_files` patterns that matched no file at the last successful load.
    fn unmatched_patterns(&self) -> Vec<String> {
        Vec::new()
    }
}
