//! Probers: one file per protocol, one signature.
//!
//! Every prober is `async fn(&ProbeRequest<'_>, &mut Recorder) -> Result<(), Failure>`: it
//! records blackbox_exporter's metrics into the [`Recorder`] as it goes, so that a probe cut
//! off at its deadline still reports what it measured. [`run`] enforces the deadline and adds
//! `probe_success`, `probe_duration_seconds` and the failure-reason info metric
//! `probe_failure_info{reason="…"} 1`.
//!
//! # Failure reasons
//!
//! A failed probe carries one stable, label-safe reason (see [`reason`]):
//!
//! | reason | meaning |
//! |---|---|
//! | `timeout` | the probe's deadline passed |
//! | `invalid_target` | the target cannot be parsed (URL, host:port) |
//! | `dns_resolution` | the target's host name could not be resolved (for the preferred protocol and, if allowed, the other) |
//! | `connection_refused` | TCP (or unix socket) connection refused |
//! | `connection_failed` | any other connect error (unreachable, reset, bind failed; for a unix socket: no such file, permission denied) |
//! | `tls_config` | `tls_config` files could not be read or used |
//! | `tls_handshake` | the TLS handshake failed (includes certificate verification) |
//! | `http_request` | HTTP protocol error, connection closed mid-request, bad redirect, an `http_headers` file that cannot be read |
//! | `proxy` | the HTTP proxy refused the `CONNECT` tunnel (not `200`), answered it malformed or with a head over `--probe.max-response-header-bytes`, or `proxy_from_environment` found an unusable proxy URL (refused or failed connections to the proxy are `connection_refused`/`connection_failed`) |
//! | `oauth2` | no OAuth 2.0 token: the token endpoint failed (for both ways of sending the client credentials), answered non-2xx, without `access_token` or with a body over 1 MiB, or `client_secret_file` could not be read |
//! | `too_many_redirects` | more redirects than `--probe.max-redirects` (10) |
//! | `headers_too_large` | response head over `--probe.max-response-header-bytes` (64 KiB) or `--probe.max-response-header-fields` (100) |
//! | `invalid_status_code` | status not in `valid_status_codes` (2xx by default); WebSocket: the upgrade was answered with another status than 101 |
//! | `invalid_http_version` | version not in `valid_http_versions` |
//! | `body_too_large` | the body exceeded `body_size_limit` |
//! | `decompression` | the body could not be decompressed as `compression` asks |
//! | `body_regex` | `fail_if_body_matches_regexp` / `fail_if_body_not_matches_regexp` |
//! | `body_cel` | `fail_if_body_json_matches_cel` matched / `fail_if_body_json_not_matches_cel` did not, the body is not JSON (or nested more than 128 deep), or the expression failed or gave no boolean |
//! | `header_regex` | `fail_if_header_matches` / `fail_if_header_not_matches` |
//! | `ssl_forbidden` | `fail_if_ssl` and the response came over TLS |
//! | `ssl_required` | `fail_if_not_ssl` and it did not |
//! | `expect_mismatch` | TCP, unix: the connection ended before a line matched `expect`, or `expect_bytes` read other bytes or too few; WebSocket: the message read for `expect` did not match, or the connection closed first |
//! | `message_too_large` | WebSocket: a message or frame over `--probe.max-regexp-body-bytes` |
//! | `network_error` | TCP/UDP/unix/WebSocket read or write failed (e.g. ICMP port unreachable for DNS over UDP) |
//! | `nxdomain`, `servfail`, `refused`, `rcode_<name>` | DNS: response code not in `valid_rcodes` |
//! | `answer_validation`, `authority_validation`, `additional_validation` | DNS: a `validate_*_rrs` check failed |
//! | `grpc_status` | gRPC: the call ended with a status other than OK (the server's `grpc-status`, e.g. `NOT_FOUND` for an unknown service, `UNIMPLEMENTED` without a health service; or an answer that is not gRPC, by its HTTP status); `probe_grpc_status_code` has the code |
//! | `grpc_not_serving` | gRPC: the health service answered a status other than `SERVING` |
//! | `grpc_response` | gRPC: a malformed answer (no message or `grpc-status`, a message that does not decode, compressed or over 64 KiB) |
//! | `icmp_permission` | no raw or unprivileged ICMP socket may be opened; the message says what to grant |
//! | `icmp_error` | an ICMP socket error other than permission |
//! | `not_allowed` | `/probe` only: an address the probe would connect to (a resolved target, a redirect's host) is outside `probe_policy.allowed_targets` (through an HTTP proxy the target is checked, not the proxy; with `skip_resolve_phase_with_proxy` a target name must match a host pattern); `/probe` answers 403 |

mod dns;
mod grpc;
mod http;
mod icmp;
mod query_response;
mod resolve;
mod tcp;
mod tls;
mod tls_verify;
mod unix;
mod websocket;

use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::config::{Module, ProberKind};
use crate::limits::Limits;

pub use dns::probe_dns;
pub use grpc::{MAX_MESSAGE_BYTES as GRPC_MAX_MESSAGE_BYTES, probe_grpc};
pub(crate) use http::base64;
pub use http::probe_http;
pub use icmp::probe_icmp;
pub use tcp::probe_tcp;
pub use unix::probe_unix;
pub use websocket::probe_websocket;

/// The stable failure reasons, as constants (see the module documentation).
pub mod reason {
    /// The probe's deadline passed.
    pub const TIMEOUT: &str = "timeout";
    /// The target cannot be parsed.
    pub const INVALID_TARGET: &str = "invalid_target";
    /// The target's host could not be resolved.
    pub const DNS_RESOLUTION: &str = "dns_resolution";
    /// TCP connection refused.
    pub const CONNECTION_REFUSED: &str = "connection_refused";
    /// Other connect errors.
    pub const CONNECTION_FAILED: &str = "connection_failed";
    /// TLS settings unusable.
    pub const TLS_CONFIG: &str = "tls_config";
    /// TLS handshake failed.
    pub const TLS_HANDSHAKE: &str = "tls_handshake";
    /// HTTP protocol error.
    pub const HTTP_REQUEST: &str = "http_request";
    /// The HTTP proxy refused or broke the `CONNECT` tunnel.
    pub const PROXY: &str = "proxy";
    /// No OAuth 2.0 token could be had.
    pub const OAUTH2: &str = "oauth2";
    /// More redirects than `--probe.max-redirects`.
    pub const TOO_MANY_REDIRECTS: &str = "too_many_redirects";
    /// Response head over `--probe.max-response-header-bytes` or
    /// `--probe.max-response-header-fields`.
    pub const HEADERS_TOO_LARGE: &str = "headers_too_large";
    /// Status code not accepted.
    pub const INVALID_STATUS_CODE: &str = "invalid_status_code";
    /// HTTP version not accepted.
    pub const INVALID_HTTP_VERSION: &str = "invalid_http_version";
    /// Body larger than `body_size_limit`.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// Body could not be decompressed.
    pub const DECOMPRESSION: &str = "decompression";
    /// A body regular expression failed the probe.
    pub const BODY_REGEX: &str = "body_regex";
    /// A CEL expression on the JSON body failed the probe.
    pub const BODY_CEL: &str = "body_cel";
    /// A header regular expression failed the probe.
    pub const HEADER_REGEX: &str = "header_regex";
    /// TLS seen with `fail_if_ssl`.
    pub const SSL_FORBIDDEN: &str = "ssl_forbidden";
    /// No TLS with `fail_if_not_ssl`.
    pub const SSL_REQUIRED: &str = "ssl_required";
    /// Dialogue: no line (message) matched `expect`, or `expect_bytes` did not come.
    pub const EXPECT_MISMATCH: &str = "expect_mismatch";
    /// A WebSocket message over `--probe.max-regexp-body-bytes`.
    pub const MESSAGE_TOO_LARGE: &str = "message_too_large";
    /// Read or write failed.
    pub const NETWORK_ERROR: &str = "network_error";
    /// DNS answer section validation failed.
    pub const ANSWER_VALIDATION: &str = "answer_validation";
    /// DNS authority section validation failed.
    pub const AUTHORITY_VALIDATION: &str = "authority_validation";
    /// DNS additional section validation failed.
    pub const ADDITIONAL_VALIDATION: &str = "additional_validation";
    /// gRPC: the call's status was not OK.
    pub const GRPC_STATUS: &str = "grpc_status";
    /// gRPC: the health service did not answer `SERVING`.
    pub const GRPC_NOT_SERVING: &str = "grpc_not_serving";
    /// gRPC: a malformed or oversized answer.
    pub const GRPC_RESPONSE: &str = "grpc_response";
    /// No permission for ICMP sockets.
    pub const ICMP_PERMISSION: &str = "icmp_permission";
    /// Other ICMP socket errors.
    pub const ICMP_ERROR: &str = "icmp_error";
    /// An address outside `probe_policy.allowed_targets` (checked at connect time).
    pub const NOT_ALLOWED: &str = "not_allowed";
}

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
    /// The exporter's limits on what a target may send (redirects, response head size).
    pub limits: Limits,
    /// The `/probe` allow-list, checked against every address the probe connects to;
    /// `None` for configured targets (the operator named them).
    pub policy: Option<&'a crate::probe_guard::ProbePolicy>,
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

impl Recorder {
    /// Sets an unlabelled gauge, replacing an earlier value of the same series.
    pub fn set(&mut self, name: &str, help: &str, value: f64) {
        self.set_labeled(name, help, &[], value);
    }

    /// Sets a labelled gauge, replacing an earlier value of the same series.
    pub fn set_labeled(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let existing = self.metrics.iter_mut().find(|m| {
            m.name == name
                && m.labels.len() == labels.len()
                && m.labels
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2)
        });
        match existing {
            Some(m) => m.value = value,
            None => self.metrics.push(ProbeMetric {
                name: name.to_string(),
                help: help.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value,
            }),
        }
    }

    /// Adds `delta` to a labelled gauge (creating it at zero).
    pub fn add_labeled(&mut self, name: &str, help: &str, labels: &[(&str, &str)], delta: f64) {
        let current = self.value_labeled(name, labels).unwrap_or(0.0);
        self.set_labeled(name, help, labels, current + delta);
    }

    /// The value of an unlabelled series, if recorded.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.value_labeled(name, &[])
    }

    /// The value of a labelled series, if recorded.
    pub fn value_labeled(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| {
                m.name == name
                    && m.labels.len() == labels.len()
                    && m.labels
                        .iter()
                        .zip(labels)
                        .all(|((k, v), (k2, v2))| k == k2 && v == v2)
            })
            .map(|m| m.value)
    }

    /// Appends a line to the probe's debug log (and traces it).
    pub fn log(&mut self, line: impl Into<String>) {
        let line = line.into();
        tracing::debug!(target: "lookout::probe", "{line}");
        self.log.push(line);
    }
}

/// Why a probe failed: a stable reason (a label value) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable, label-safe reason, e.g. `timeout`, `connection_refused`, `nxdomain`.
    pub reason: String,
    /// What happened, for the debug log.
    pub message: String,
}

impl Failure {
    /// A failure with the given reason and message.
    pub fn new(reason: &str, message: impl Into<String>) -> Failure {
        Failure {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
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
///
/// A zero `req.timeout` is a deadline already passed (blackbox_exporter's answer to a scrape
/// timeout that the offset eats): the prober runs until it first waits, then times out.
pub async fn run(req: &ProbeRequest<'_>) -> ProbeReport {
    let timeout = req.timeout;
    let mut rec = Recorder::default();
    rec.log(format!(
        "Beginning probe: prober={} target={} timeout={:.3}s",
        req.module.prober.as_str(),
        req.target,
        timeout.as_secs_f64()
    ));
    let start = Instant::now();
    let outcome = {
        let probe = async {
            match req.module.prober {
                ProberKind::Http => probe_http(req, &mut rec).await,
                ProberKind::Tcp => probe_tcp(req, &mut rec).await,
                ProberKind::Dns => probe_dns(req, &mut rec).await,
                ProberKind::Icmp => probe_icmp(req, &mut rec).await,
                ProberKind::Grpc => probe_grpc(req, &mut rec).await,
                ProberKind::Unix => probe_unix(req, &mut rec).await,
                ProberKind::Websocket => probe_websocket(req, &mut rec).await,
            }
        };
        let finished = if timeout.is_zero() {
            // Polled once, so what needs no waiting (a literal address) is still recorded,
            // then cut off: a zero-length timer would let a fast target answer first.
            let mut probe = std::pin::pin!(probe);
            match std::future::poll_fn(|cx| Poll::Ready(probe.as_mut().poll(cx))).await {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            }
        } else {
            tokio::time::timeout(timeout, probe).await.ok()
        };
        match finished {
            Some(result) => result,
            None => Err(Failure::new(
                reason::TIMEOUT,
                format!(
                    "probe did not finish within its timeout of {:.3}s",
                    timeout.as_secs_f64()
                ),
            )),
        }
    };
    let duration = start.elapsed();
    rec.set(
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
        duration.as_secs_f64(),
    );
    let success = outcome.is_ok();
    rec.set(
        "probe_success",
        "Displays whether or not the probe was a success",
        if success { 1.0 } else { 0.0 },
    );
    let failure = outcome.err();
    match &failure {
        Some(f) => {
            rec.set_labeled(
                "probe_failure_info",
                "Why the probe failed, as a stable reason label (1 when it failed)",
                &[("reason", &f.reason)],
                1.0,
            );
            rec.log(format!(
                "Probe failed: reason={} message={:?} duration_seconds={:.6}",
                f.reason,
                f.message,
                duration.as_secs_f64()
            ));
        }
        None => rec.log(format!(
            "Probe succeeded: duration_seconds={:.6}",
            duration.as_secs_f64()
        )),
    }
    ProbeReport {
        success,
        failure,
        duration,
        recorder: rec,
    }
}

impl From<crate::target::TargetError> for Failure {
    fn from(e: crate::target::TargetError) -> Failure {
        Failure::new(reason::INVALID_TARGET, e.to_string())
    }
}

/// Classifies a connect error.
pub(crate) fn connect_failure(addr: std::net::SocketAddr, e: &std::io::Error) -> Failure {
    let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
        reason::CONNECTION_REFUSED
    } else {
        reason::CONNECTION_FAILED
    };
    Failure::new(reason, format!("error dialing {addr}: {e}"))
}
