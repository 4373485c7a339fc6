//! Recording rules, as Prometheus's `rules/recording.go`: the result of the expression is
//! stored under the rule's metric name with the rule's labels.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use lookout_promql::labels::METRIC_NAME;

use crate::datasource::{Datasource, QuerySample};
use crate::rules::status::{RuleCommon, RuleHealth};
use crate::rules::{RuleEvalError, RuleInfo};

#[derive(Debug)]
struct RecordingState {
    health: RuleHealth,
    last_error: Option<String>,
    evaluation_duration: Duration,
    last_evaluation: Option<SystemTime>,
}

/// A recording rule.
#[derive(Debug)]
pub struct RecordingRule {
    name: String,
    expr: String,
    labels: BTreeMap<String, String>,
    state: Mutex<RecordingState>,
}

impl RecordingRule {
    /// Creates a rule recording `expr` as `name` with `labels` (group labels merged in).
    pub fn new(name: &str, expr: &str, labels: BTreeMap<String, String>) -> RecordingRule {
        RecordingRule {
            name: name.to_string(),
            expr: expr.to_string(),
            labels,
            state: Mutex::new(RecordingState {
                health: RuleHealth::Unknown,
                last_error: None,
                evaluation_duration: Duration::ZERO,
                last_evaluation: None,
            }),
        }
    }

    /// The recorded metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The rule's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Evaluates at `ts - query_offset` and renames/relabels the result.
    pub async fn eval(
        &self,
        ts: SystemTime,
        query_offset: Duration,
        datasource: &Arc<dyn Datasource>,
        limit: usize,
    ) -> Result<Vec<QuerySample>, RuleEvalError> {
        let mut vector = datasource
            .query(&self.expr, ts - query_offset)
            .await
            .map_err(RuleEvalError::Query)?;
        let mut seen = HashSet::with_capacity(vector.len());
        for s in &mut vector {
            s.labels.set(METRIC_NAME, &self.name);
            for (k, v) in &self.labels {
                s.labels.set(k, v);
            }
            if !seen.insert(s.labels.clone()) {
                return Err(RuleEvalError::DuplicateRuleLabelSet);
            }
        }
        if limit > 0 && vector.len() > limit {
            return Err(RuleEvalError::Limit(format!(
                "exceeded limit of {limit} with {} series",
                vector.len()
            )));
        }
        Ok(vector)
    }

    /// A read-only view for the API.
    pub fn snapshot(&self) -> RuleCommon {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        RuleCommon {
            name: self.name.clone(),
            query: self.expr.clone(),
            labels: Labels::new(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            health: st.health,
            last_error: st.last_error.clone(),
            evaluation_duration: st.evaluation_duration,
            last_evaluation: st.last_evaluation,
        }
    }
}

impl RuleInfo for RecordingRule {
    fn set_health(&self, health: RuleHealth, error: Option<String>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.health = health;
        st.last_error = error;
    }

    fn set_evaluation(&self, started: SystemTime, took: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.last_evaluation = Some(started);
        st.evaluation_duration = took;
    }
}
