//! Alerts as the rule engine hands them to notifiers (Prometheus's `notifier.Alert`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use lookout_promql::Labels;

/// The state of an alert instance, as in Prometheus's `rules.AlertState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertState {
    /// Not active (or resolved and kept for re-sending).
    Inactive,
    /// Active, waiting for the `for` duration.
    Pending,
    /// Active for at least `for`.
    Firing,
}

impl AlertState {
    /// Prometheus's spelling: `inactive`, `pending`, `firing`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert sent to Alertmanager or a webhook. External labels are not included: the
/// notifier adds them (as Prometheus's notifier manager does), without overriding labels
/// the alert already has.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The alert's identity: `alertname`, the rule's labels and the series' labels.
    pub labels: Labels,
    /// Expanded annotations (empty values kept, as Prometheus sends them).
    pub annotations: BTreeMap<String, String>,
    /// When the alert became active (`ActiveAt`), or when it was first sent firing.
    pub starts_at: SystemTime,
    /// When the alert resolved, or for a firing alert the time after which Alertmanager may
    /// consider it resolved if not re-sent (`ValidUntil`). `None` is Go's zero time.
    pub ends_at: Option<SystemTime>,
    /// A link to the expression on the evaluator's web UI (`<external_url>/graph?g0.expr=...`).
    pub generator_url: String,
}

/// Something that delivers alerts (Alertmanager v2 clients, webhooks). `send` enqueues and
/// returns at once; queueing, batching, retries and drop counting are the notifier's job.
pub trait Notify: Send + Sync {
    /// Enqueues `alerts` for delivery.
    fn send(&self, alerts: Vec<Alert>);
}
