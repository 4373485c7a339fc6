//! Where rule expressions are evaluated and where rule outputs go.
//!
//! The rule manager knows nothing about scraping or HTTP: it asks a [`Datasource`] for the
//! result of an instant query and hands it the samples the rules produce (recording-rule
//! results, `ALERTS`, `ALERTS_FOR_STATE` and their stale markers). The embedded datasource
//! evaluates on the in-process storage and stores those samples; the remote one sends queries
//! to a Prometheus-API server and drops them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lookout_promql::Labels;
use lookout_promql::histogram::FloatHistogram;

/// One element of an instant-query result. A scalar result is returned as a single sample
/// with empty labels, as Prometheus's rule engine does.
#[derive(Clone, Debug, PartialEq)]
pub struct QuerySample {
    /// The series' labels (including `__name__` when the expression keeps it).
    pub labels: Labels,
    /// The sample value (0 for a native-histogram sample, as Prometheus's `Sample.F`).
    pub value: f64,
    /// The native histogram of a histogram sample.
    pub histogram: Option<Arc<FloatHistogram>>,
}

/// The last sample of one series inside a look-back window (used to restore `for` state).
#[derive(Clone, Debug, PartialEq)]
pub struct TimedSample {
    /// The series' labels.
    pub labels: Labels,
    /// When the sample was written.
    pub timestamp: SystemTime,
    /// The value (may be a staleness marker, see [`lookout_promql::storage::is_stale`]).
    pub value: f64,
}

/// A boxed future, as returned by the [`Datasource`] methods.
pub type DatasourceFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, DatasourceError>> + Send + 'a>>;

/// Why a query or an append failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    /// The expression does not parse or cannot be evaluated (Prometheus's `bad_data` and
    /// `execution` errors).
    #[error("query {expr:?}: {message}")]
    Query {
        /// The expression.
        expr: String,
        /// What went wrong.
        message: String,
    },
    /// The query returned a string or a range vector where an instant vector or scalar was
    /// needed.
    #[error("query {expr:?} returned a {kind}, not an instant vector or a scalar")]
    UnexpectedResult {
        /// The expression.
        expr: String,
        /// The result type that came back (`string`, `matrix`, ...).
        kind: String,
    },
    /// The query did not finish in time.
    #[error("query {expr:?} timed out after {timeout:?}")]
    Timeout {
        /// The expression.
        expr: String,
        /// The time limit.
        timeout: Duration,
    },
    /// The datasource could not be reached or answered with an error that is not about the
    /// expression (connection refused, HTTP 5xx, malformed response, ...).
    #[error("datasource unavailable: {0}")]
    Unavailable(String),
    /// Samples could not be stored (out of order, storage closed, ...).
    #[error("cannot store samples: {0}")]
    Append(String),
}

/// A place to evaluate PromQL at a given time and to store rule outputs.
pub trait Datasource: Send + Sync {
    /// Evaluates `expr` as an instant query at `at`. Scalars come back as one sample with
    /// empty labels; a string result is [`DatasourceError::UnexpectedResult`].
    fn query<'a>(&'a self, expr: &'a str, at: SystemTime)
    -> DatasourceFuture<'a, Vec<QuerySample>>;

    /// Stores rule outputs (recording-rule results, `ALERTS`, `ALERTS_FOR_STATE`, staleness
    /// markers as [`lookout_promql::storage::STALE_NAN`]) with timestamp `at`, so later
    /// rules and queries see them.
    /// A remote datasource that cannot store does nothing and returns `Ok`.
    fn append(&self, samples: &[QuerySample], at: SystemTime) -> Result<(), DatasourceError>;

    /// For every series matching the vector selector `selector` (e.g.
    /// `ALERTS_FOR_STATE{alertname="X"}`), its last sample in `(at - lookback, at]`,
    /// staleness markers included where the datasource can see them. Used to restore
    /// `for` timers after a restart from `ALERTS_FOR_STATE`.
    fn last_samples<'a>(
        &'a self,
        selector: &'a str,
        lookback: Duration,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<TimedSample>>;

    /// Whether rule outputs appended here outlive the process (a remote server that another
    /// evaluator or a remote write fills). When false, the rule manager keeps `for` state in
    /// its own state file instead of relying on `ALERTS_FOR_STATE`.
    fn persists_rule_outputs(&self) -> bool;
}
