//! Probers: one file per protocol, one signature.
//!
//! Every prober is `async fn(&ProbeRequest<'_>, &mut Recorder) -> Result<(), Failure>`: it
//! records blackbox_exporter's metrics into the [`Recorder`] as it goes, so that a probe cut
//! off at its deadline still reports what it measured. [`run`] enforces the deadline and adds
//! `probe_success`, `probe_duration_seconds` and the failure-reason info metric.

use std::time::Duration;

use crate::config::Module;

/// What to probe and how.
#[derive(Debug, Clone)]
pub struct ProbeRequest<'a> {
    /// The target as given in `?target=` or the target's config.
    pub target: &'a str,
    /// The module to probe with.
    pub module: &'a Module,
    /// `?hostname=`: the Host header / TLS server name to use instead of the target's.
    pub hostname: Option<&'a str>,
    /// Time the probe may take in all.
    pub timeout: Duration,
}

/// One gauge sample of a probe, in blackbox_exporter's naming.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeMetric {
    /// Metric name, e.g. `probe_http_status_code`.
    pub name: String,
    /// HELP text.
    pub help: String,
    /// Labels, in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// What an HTTP probe observed, for the continuous targets' histograms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpObservation {
    /// Sum of all phases over all redirects.
    pub duration: Duration,
    /// Final status code (0 when no response).
    pub status: u16,
}

/// What a DNS probe observed, for the per-nameserver series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsObservation {
    /// The nameserver queried (the probe target).
    pub nameserver: String,
    /// The queried name.
    pub query_name: String,
    /// Time from sending the query to the answer.
    pub duration: Duration,
    /// Answer records' data, as text (e.g. `192.0.2.1`).
    pub answers: Vec<String>,
    /// Response code name (`NOERROR`, `NXDOMAIN`, …), empty when there was no answer.
    pub rcode: String,
}

/// Everything one probe recorded.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Gauges in the order they were recorded.
    pub metrics: Vec<ProbeMetric>,
    /// Human-readable log lines, shown by `/probe?debug=true`.
    pub log: Vec<String>,
    /// Set by the HTTP prober.
    pub http: Option<HttpObservation>,
    /// Set by the DNS prober.
    pub dns: Option<DnsObservation>,
    /// Earliest certificate expiry (Unix seconds) seen over TLS, if any.
    pub cert_expiry: Option<f64>,
}

/// Why a probe failed: a stable reason (a label value) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable, label-safe reason, e.g. `timeout`, `connection_refused`, `nxdomain`.
    pub reason: String,
    /// What happened, for the debug log.
    pub message: String,
}

/// The result of [`run`].
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// Whether the probe succeeded.
    pub success: bool,
    /// Why it failed, when it did.
    pub failure: Option<Failure>,
    /// Wall time of the whole probe.
    pub duration: Duration,
    /// What the prober recorded (including `probe_success` and `probe_duration_seconds`).
    pub recorder: Recorder,
}

/// Runs one probe with the module's prober under `req.timeout`, and adds `probe_success`,
/// `probe_duration_seconds` and the failure-reason info metric to what the prober recorded.
pub async fn run(req: &ProbeRequest<'_>) -> ProbeReport {
    let _ = req;
    ProbeReport {
        failure: Some(Failure {
            reason: "not_built".into(),
            message: "the probers are being built".into(),
        }),
        ..ProbeReport::default()
    }
}
