//! The rule manager's own metrics, named as Prometheus names them
//! (`prometheus_rule_evaluations_total{rule_group="file;name"}`, ...), so dashboards and
//! alerts written for Prometheus's rule manager work unchanged.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label set of per-group metrics.
pub type GroupLabel = Vec<(String, String)>;

/// Metrics of rule evaluation.
#[derive(Clone, Debug, Default)]
pub struct RuleMetrics {
    /// Rule evaluations.
    pub evaluations: Family<GroupLabel, Counter>,
    /// Failed rule evaluations.
    pub evaluation_failures: Family<GroupLabel, Counter>,
    /// Scheduled group iterations (including missed ones).
    pub iterations_scheduled: Family<GroupLabel, Counter>,
    /// Missed group iterations (evaluation slower than the interval).
    pub iterations_missed: Family<GroupLabel, Counter>,
    /// Duration of the last group evaluation.
    pub last_duration: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Time of the last group evaluation (Unix seconds).
    pub last_evaluation: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Number of rules per group.
    pub rules: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Group interval in seconds.
    pub interval: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Duration of the last `for` state restoration.
    pub last_restore_duration: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Number of samples the group's last evaluation produced.
    pub last_samples: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Failed rule-configuration reloads make this 0.
    pub config_last_reload_successful: Gauge<f64, AtomicU64>,
}

impl RuleMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> RuleMetrics {
        let m = RuleMetrics::default();
        registry.register(
            "prometheus_rule_evaluations",
            "The total number of rule evaluations",
            m.evaluations.clone(),
        );
        registry.register(
            "prometheus_rule_evaluation_failures",
            "The total number of rule evaluation failures",
            m.evaluation_failures.clone(),
        );
        registry.register(
            "prometheus_rule_group_iterations",
            "The total number of scheduled rule group evaluations, whether executed or missed",
            m.iterations_scheduled.clone(),
        );
        registry.register(
            "prometheus_rule_group_iterations_missed",
            "The total number of rule group evaluations missed due to slow rule group evaluation",
            m.iterations_missed.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_duration_seconds",
            "The duration of the last rule group evaluation",
            m.last_duration.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_evaluation_timestamp_seconds",
            "The timestamp of the last rule group evaluation in seconds",
            m.last_evaluation.clone(),
        );
        registry.register(
            "prometheus_rule_group_rules",
            "The number of rules",
            m.rules.clone(),
        );
        registry.register(
            "prometheus_rule_group_interval_seconds",
            "The interval of a rule group",
            m.interval.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_restore_duration_seconds",
            "The duration of the last alert rules alerts restoration using the `ALERTS_FOR_STATE` series",
            m.last_restore_duration.clone(),
        );
        registry.register(
            "prometheus_rule_group_last_evaluation_samples",
            "The number of samples returned during the last rule group evaluation",
            m.last_samples.clone(),
        );
        registry.register(
            "prometheus_rule_config_last_reload_successful",
            "Whether the last rule configuration reload attempt was successful",
            m.config_last_reload_successful.clone(),
        );
        m
    }

    /// The label set for a group: `rule_group="<file>;<name>"`.
    pub fn group_label(file: &str, name: &str) -> GroupLabel {
        vec![("rule_group".to_string(), format!("{file};{name}"))]
    }
}
