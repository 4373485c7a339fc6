//! Rule files, rule evaluation and the alert state machine (Prometheus's `rules` package).

pub mod alerting;
pub mod check;
pub mod file;
pub mod group;
pub mod manager;
pub mod metrics;
pub mod recording;
pub mod restore;
pub mod status;

use std::time::{Duration, SystemTime};

use crate::datasource::DatasourceError;
use status::RuleHealth;

pub use alerting::AlertingRule;
pub use group::Group;
pub use manager::{ManagerOptions, RuleManager};
pub use recording::RecordingRule;

/// Why one evaluation of one rule failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleEvalError {
    /// The query failed.
    #[error(transparent)]
    Query(DatasourceError),
    /// Two alerts got the same labels.
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateAlertLabelSet,
    /// Two recorded series got the same labels.
    #[error("vector contains metrics with the same labelset after applying rule labels")]
    DuplicateRuleLabelSet,
    /// The group's `limit` was exceeded.
    #[error("{0}")]
    Limit(String),
    /// Template expansion could not run.
    #[error("template expansion: {0}")]
    Template(String),
    /// Storing the results failed.
    #[error(transparent)]
    Append(DatasourceError),
}

/// Bookkeeping every rule kind has.
pub trait RuleInfo {
    /// Records the health and error of the last evaluation.
    fn set_health(&self, health: RuleHealth, error: Option<String>);
    /// Records when the last evaluation started and how long it took.
    fn set_evaluation(&self, started: SystemTime, took: Duration);
}

/// A rule of either kind.
#[derive(Debug)]
pub enum Rule {
    /// An alerting rule.
    Alerting(AlertingRule),
    /// A recording rule.
    Recording(RecordingRule),
}

impl Rule {
    /// Alert or record name.
    pub fn name(&self) -> &str {
        match self {
            Rule::Alerting(r) => r.name(),
            Rule::Recording(r) => r.name(),
        }
    }

    /// Name plus labels: how rules are matched across a reload (Prometheus's
    /// `nameAndLabels`).
    pub fn identity(&self) -> String {
        let labels = match self {
            Rule::Alerting(r) => r.labels(),
            Rule::Recording(r) => r.labels(),
        };
        format!("{}{:?}", self.name(), labels)
    }

    fn info(&self) -> &dyn RuleInfo {
        match self {
            Rule::Alerting(r) => r,
            Rule::Recording(r) => r,
        }
    }
}
