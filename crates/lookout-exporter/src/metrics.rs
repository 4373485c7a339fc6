//! `/metrics`: the exporter's own metrics and the continuous targets' latest results, through
//! `prometheus-client` (OpenMetrics text), or as protobuf `MetricFamily` messages for a scraper
//! that prefers them ([`ProtobufSource`], [`crate::protobuf`]): the same series, and the
//! per-target histograms with their native buckets besides.
//!
//! Per-target series are produced at scrape time by a [`Collector`] that reads the
//! scheduler's table, so the series of a removed target disappear with it on reload.
//!
//! | series | labels |
//! |---|---|
//! | `up` | `job`, `instance`, target labels (targets); `job="heartbeat"`, `instance` (heartbeats) |
//! | `lookout_target_probe_duration_seconds`, `lookout_target_last_probe_timestamp_seconds`, `lookout_target_http_status_code`, `probe_ssl_earliest_cert_expiry` | `job`, `instance`, target labels |
//! | `lookout_target_probe_failure_info` | the same plus `reason` |
//! | `http_request_duration_seconds` (histogram) | `job`, `instance`, target labels |
//! | `dns_resolution_duration_seconds` (histogram) | `job`, `instance`, target labels, `nameserver` |
//! | `dns_answer_info` | `job`, `instance`, target labels, `domain`, `nameserver`, `answer` |
//! | `lookout_heartbeat_last_seen_timestamp_seconds`, `lookout_heartbeat_max_silence_seconds` | `name` |
//! | `lookout_target_blocked` | `instance`, `blocked_by` (see [`crate::cascade`]) |
//! | `lookout_target_dependency_info` | `instance`, `depends_on`: one per `depends_on` entry, up or down |
//!
//! `job` is the target's `job` label when it has one, else its module's name; `instance` is
//! the target's name. A Prometheus job scraping `/metrics` needs `honor_labels: true` so these
//! `job`/`instance` labels win over the scrape's own.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram as ClientHistogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::cascade::{self, Node};
use crate::heartbeat::{HeartbeatStatus, Heartbeats};
use crate::native_histogram::NativeHistogram;
use crate::prober::ProbeReport;
use crate::protobuf::{self, Exposition, Kind};
use crate::scheduler::{LastProbe, SlotMap, TargetState};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prometheus' default histogram buckets (seconds).
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A plain (not shared) histogram over [`DEFAULT_BUCKETS`], kept per target, with the same
/// observations in sparse exponential buckets beside them (a native histogram, published
/// only in the protobuf exposition).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    counts: [u64; DEFAULT_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    native: NativeHistogram,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, value: f64) {
        let index = DEFAULT_BUCKETS
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(DEFAULT_BUCKETS.len());
        self.counts[index] += 1;
        self.sum += value;
        self.count += 1;
        self.native.observe(value);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The native histogram of the same observations.
    pub fn native(&self) -> &NativeHistogram {
        &self.native
    }

    /// `(upper bound, non-cumulative count)` pairs, `+Inf` as `f64::MAX` (the form
    /// `prometheus-client` encodes).
    fn buckets(&self) -> Vec<(f64, u64)> {
        DEFAULT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().copied())
            .collect()
    }

    /// `(upper bound, cumulative count)` pairs, the last one `+Inf`.
    pub(crate) fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        DEFAULT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter())
            .map(|(bound, count)| {
                total += count;
                (bound, total)
            })
            .collect()
    }
}

type ResultLabels = [(&'static str, &'static str); 1];

fn duration_histogram() -> ClientHistogram {
    ClientHistogram::new(DEFAULT_BUCKETS)
}

/// The exporter's own metrics.
#[derive(Debug)]
pub struct ExporterMetrics {
    /// `lookout_exporter_probes_total{result}`.
    pub probes: Family<ResultLabels, Counter>,
    /// `lookout_exporter_probe_duration_seconds{prober}`.
    pub probe_duration: Family<ResultLabels, ClientHistogram, fn() -> ClientHistogram>,
    /// `lookout_exporter_probe_failures_total{reason}`: failed probes by failure reason
    /// (`timeout`, `body_too_large`, `headers_too_large`, `too_many_redirects`, ...), so a
    /// limit being hit shows as a rate.
    pub probe_failures: Family<Vec<(&'static str, String)>, Counter>,
    /// `lookout_exporter_probes_skipped_total`: ticks skipped because the previous probe of
    /// the target still ran.
    pub probes_skipped: Counter,
    /// `lookout_exporter_probe_requests_rejected_total`: `/probe` requests answered 503.
    pub probe_requests_rejected: Counter,
    /// `lookout_exporter_probe_requests_refused_total{reason}`: `/probe` requests answered
    /// 403 by `probe_policy` (`unconfigured`, `not_allowed`, `unix_socket`).
    pub probe_requests_refused: Family<[(&'static str, &'static str); 1], Counter>,
    /// `lookout_exporter_limit_hits_total{limit}`: inputs refused because they exceeded an
    /// exporter limit other than the probes' own (those are counted by failure reason in
    /// `probe_failures`); the labels are [`crate::limits::LIMIT_NAMES`], present from the
    /// start at 0.
    pub limit_hits: Family<[(&'static str, &'static str); 1], Counter>,
    /// `lookout_exporter_config_last_reload_successful`.
    pub reload_successful: Gauge,
    /// `lookout_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_timestamp: Gauge<f64, AtomicU64>,
    /// `lookout_exporter_targets`: configured continuous targets.
    pub targets: Gauge,
}

impl Default for ExporterMetrics {
    fn default() -> Self {
        let limit_hits = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // Present from the start so a rate() over them is defined before the first hit.
        for limit in crate::limits::LIMIT_NAMES {
            let _ = limit_hits.get_or_create(&[("limit", limit)]);
        }
        ExporterMetrics {
            limit_hits,
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(duration_histogram),
            probe_failures: Family::default(),
            probes_skipped: Counter::default(),
            probe_requests_rejected: Counter::default(),
            probe_requests_refused: Family::default(),
            reload_successful: Gauge::default(),
            reload_success_timestamp: Gauge::default(),
            targets: Gauge::default(),
        }
    }
}

impl ExporterMetrics {
    /// Counts one finished probe (from `/probe` or a continuous target).
    pub fn observe_probe(&self, prober: &'static str, report: &ProbeReport) {
        let result = if report.success { "success" } else { "failure" };
        self.probes.get_or_create(&[("result", result)]).inc();
        if let Some(f) = &report.failure {
            self.probe_failures
                .get_or_create(&vec![("reason", f.reason.clone())])
                .inc();
        }
        self.probe_duration
            .get_or_create(&[("prober", prober)])
            .observe(report.duration.as_secs_f64());
    }

    /// Builds the registry served on `/metrics`: [`Self::own_registry`] and the targets'
    /// series.
    pub fn registry(&self, collector: TargetsCollector) -> Registry {
        let mut registry = self.own_registry();
        registry.register_collector(Box::new(collector));
        registry
    }

    /// A registry of the exporter's own metrics, without the targets' series.
    pub fn own_registry(&self) -> Registry {
        let mut registry = Registry::default();
        lookout_web::metrics::register(&mut registry);
        registry.register(
            "lookout_exporter_probes",
            "Probes run, by result",
            self.probes.clone(),
        );
        registry.register(
            "lookout_exporter_probe_duration_seconds",
            "Wall time of probes, by prober",
            self.probe_duration.clone(),
        );
        registry.register(
            "lookout_exporter_probe_failures",
            "Failed probes, by failure reason (limits hit included: body_too_large, headers_too_large, too_many_redirects, timeout)",
            self.probe_failures.clone(),
        );
        registry.register(
            "lookout_exporter_probes_skipped",
            "Scheduled probes skipped because the previous probe of the target was still running",
            self.probes_skipped.clone(),
        );
        registry.register(
            "lookout_exporter_probe_requests_rejected",
            "/probe requests answered 503 because --web.max-concurrent-probes probes were running",
            self.probe_requests_rejected.clone(),
        );
        registry.register(
            "lookout_exporter_probe_requests_refused",
            "/probe requests answered 403 because probe_policy refused the target, by reason",
            self.probe_requests_refused.clone(),
        );
        registry.register(
            "lookout_exporter_limit_hits",
            "Inputs refused because they exceeded a limit, by limit (probe limits are counted in lookout_exporter_probe_failures_total by reason)",
            self.limit_hits.clone(),
        );
        registry.register(
            "lookout_exporter_config_last_reload_successful",
            "Whether the last configuration reload succeeded",
            self.reload_successful.clone(),
        );
        registry.register(
            "lookout_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload",
            self.reload_success_timestamp.clone(),
        );
        registry.register(
            "lookout_exporter_targets",
            "Continuously probed targets configured",
            self.targets.clone(),
        );
        registry.register(
            "lookout_exporter_build",
            "Build information",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry
    }
}

/// Renders a registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        // Writing to a String cannot fail; keep the partial output if it ever does.
        tracing::error!("encoding /metrics failed");
    }
    out
}

/// What the protobuf exposition of `/metrics` is rendered from: a registry of the same own
/// metrics as the text's, without the targets' collector, and that collector, which writes
/// its families (the native histograms among them) straight into the protobuf messages.
#[derive(Debug)]
pub struct ProtobufSource {
    own: Registry,
    targets: TargetsCollector,
}

impl ProtobufSource {
    /// `own` must hold the same metrics as the text registry, less `targets`.
    pub fn new(own: Registry, targets: TargetsCollector) -> Self {
        ProtobufSource { own, targets }
    }

    /// Renders every family as length-delimited `MetricFamily` messages.
    pub fn render(&self) -> Vec<u8> {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut text, &self.own).is_err() {
            tracing::error!("encoding /metrics failed");
        }
        let mut out = Exposition::default();
        let skipped = protobuf::convert_openmetrics(&text, &mut out);
        if skipped > 0 {
            tracing::error!(skipped, "samples left out of the protobuf /metrics");
        }
        if self.targets.write(&mut out).is_err() {
            tracing::error!("encoding /metrics failed");
        }
        out.finish()
    }
}

/// A label value escaped for the text formats (`prometheus-client` 0.24 writes values as
/// they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Value<'a>(&'a str);

impl EncodeLabelValue for Value<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels<'a> = Vec<(&'a str, Value<'a>)>;

/// One target at scrape time: its series labels, its name and a copy of its state.
type Row<'a> = (&'a [(String, String)], &'a str, TargetState);

fn labels<'a>(pairs: &'a [(String, String)]) -> Labels<'a> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), Value(v.as_str())))
        .collect()
}

fn with<'a>(mut base: Labels<'a>, key: &'a str, value: &'a str) -> Labels<'a> {
    base.push((key, Value(value)));
    base
}

/// A target's labels (`job`, `instance`, its own) followed by a series' own `extra` labels,
/// which win over a target label of the same name (a series never repeats a label).
fn target_and<'a>(pairs: &'a [(String, String)], extra: Labels<'a>) -> Labels<'a> {
    let mut out: Labels<'a> = pairs
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| *e == k.as_str()))
        .map(|(k, v)| (k.as_str(), Value(v.as_str())))
        .collect();
    out.extend(extra);
    out
}

/// Produces the continuous targets' and heartbeats' series at scrape time.
#[derive(Debug)]
pub struct TargetsCollector {
    slots: Arc<RwLock<Arc<SlotMap>>>,
    heartbeats: Arc<Heartbeats>,
}

impl TargetsCollector {
    /// A collector over the scheduler's table and the heartbeats.
    pub fn new(slots: Arc<RwLock<Arc<SlotMap>>>, heartbeats: Arc<Heartbeats>) -> Self {
        TargetsCollector { slots, heartbeats }
    }
}

/// One sample of a targets' family.
enum Sample<'a> {
    Gauge(f64),
    /// An info metric's: a `name_info` series of value 1.
    Info,
    Histogram(&'a Histogram),
}

/// A family's name, help and type.
struct Descriptor<'s> {
    name: &'s str,
    help: &'s str,
    kind: MetricType,
}

type Sampled<'a> = (Labels<'a>, Sample<'a>);

/// Where the targets' families are written: the OpenMetrics text of `prometheus-client`
/// ([`DescriptorEncoder`]) or the protobuf exposition ([`Exposition`]). A family with no
/// samples is left out of both.
trait Families {
    /// Writes one family (a gauge, info or histogram).
    fn family<'a>(
        &mut self,
        d: Descriptor<'_>,
        samples: impl Iterator<Item = Sampled<'a>>,
    ) -> std::fmt::Result;

    /// Writes one family of the type its samples tell (gauge values, info or histograms).
    fn write<'a, S: IntoSample<'a>>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels<'a>, S)>,
    ) -> std::fmt::Result {
        let kind = S::KIND;
        let samples = samples.map(|(labels, sample)| (labels, sample.into_sample()));
        self.family(Descriptor { name, help, kind }, samples)
    }
}

/// What a family's samples are, and the family type they make.
trait IntoSample<'a> {
    const KIND: MetricType;
    fn into_sample(self) -> Sample<'a>;
}

impl<'a> IntoSample<'a> for f64 {
    const KIND: MetricType = MetricType::Gauge;
    fn into_sample(self) -> Sample<'a> {
        Sample::Gauge(self)
    }
}

impl<'a> IntoSample<'a> for &'a Histogram {
    const KIND: MetricType = MetricType::Histogram;
    fn into_sample(self) -> Sample<'a> {
        Sample::Histogram(self)
    }
}

/// The sample of an info series (its value is always 1).
struct Present;

impl<'a> IntoSample<'a> for Present {
    const KIND: MetricType = MetricType::Info;
    fn into_sample(self) -> Sample<'a> {
        Sample::Info
    }
}

/// An info family's series.
fn present(labels: Labels<'_>) -> (Labels<'_>, Present) {
    (labels, Present)
}

impl Families for DescriptorEncoder<'_> {
    fn family<'a>(
        &mut self,
        d: Descriptor<'_>,
        samples: impl Iterator<Item = Sampled<'a>>,
    ) -> std::fmt::Result {
        let mut samples = samples.peekable();
        if samples.peek().is_none() {
            return Ok(());
        }
        let mut metric = self.encode_descriptor(d.name, d.help, None, d.kind)?;
        for (labels, sample) in samples {
            match sample {
                Sample::Gauge(value) => metric.encode_family(&labels)?.encode_gauge(&value)?,
                Sample::Info => metric.encode_info(&labels)?,
                Sample::Histogram(h) => metric
                    .encode_family(&labels)?
                    .encode_histogram::<Labels<'_>>(h.sum(), h.count(), &h.buckets(), None)?,
            }
        }
        Ok(())
    }
}

impl Families for Exposition {
    fn family<'a>(
        &mut self,
        d: Descriptor<'_>,
        samples: impl Iterator<Item = Sampled<'a>>,
    ) -> std::fmt::Result {
        match d.kind {
            // No info type in this format: a gauge named as the text's series are.
            MetricType::Info => self.begin(&format!("{}_info", d.name), d.help, Kind::Gauge),
            MetricType::Histogram => self.begin(d.name, d.help, Kind::Histogram),
            _ => self.begin(d.name, d.help, Kind::Gauge),
        }
        for (labels, sample) in samples {
            let pairs = labels.iter().map(|(k, v)| (*k, v.0));
            match sample {
                Sample::Gauge(value) => self.sample(pairs, value),
                Sample::Info => self.sample(pairs, 1.0),
                Sample::Histogram(h) => h.write_protobuf(self, pairs),
            }
        }
        self.end();
        Ok(())
    }
}

impl Collector for TargetsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.write(&mut encoder)
    }
}

impl TargetsCollector {
    /// Writes the targets' and heartbeats' families.
    fn write(&self, encoder: &mut impl Families) -> Result<(), std::fmt::Error> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner()).clone();
        let states: Vec<Row<'_>> = slots
            .values()
            .map(|slot| {
                (
                    slot.labels.as_slice(),
                    slot.target.name.as_str(),
                    slot.state(),
                )
            })
            .collect();
        let heartbeats = self.heartbeats.statuses();
        let target_up =
            probed(&states).map(|(l, _, last)| (labels(l), f64::from(u8::from(last.success))));
        let heartbeat_up = heartbeats.iter().map(|h| {
            (
                vec![("job", Value("heartbeat")), ("instance", Value(&h.name))],
                f64::from(u8::from(h.up)),
            )
        });
        encoder.write(
            "up",
            "1 when the target's last probe succeeded (or the heartbeat was pushed within max_silence)",
            target_up.chain(heartbeat_up),
        )?;
        write_last_probe(encoder, &states)?;
        write_durations_and_dns(encoder, &states)?;
        write_heartbeats(encoder, &heartbeats)?;
        write_dependencies(encoder, &slots, &states)
    }
}

/// The targets that have been probed: their labels, name and last probe.
fn probed<'a>(
    states: &'a [Row<'a>],
) -> impl Iterator<Item = (&'a [(String, String)], &'a str, &'a LastProbe)> + 'a {
    states
        .iter()
        .filter_map(|(l, name, s)| s.last.as_ref().map(|last| (*l, *name, last)))
}

/// What each target's last probe found: its duration, time, failure reason and HTTP
/// status.
fn write_last_probe(encoder: &mut impl Families, states: &[Row<'_>]) -> std::fmt::Result {
    encoder.write(
        "lookout_target_probe_duration_seconds",
        "Wall time of the target's last probe",
        probed(states).map(|(l, _, last)| (labels(l), last.duration_seconds)),
    )?;
    encoder.write(
        "lookout_target_last_probe_timestamp_seconds",
        "Unix time at which the target's last probe finished",
        probed(states).map(|(l, _, last)| (labels(l), last.timestamp)),
    )?;
    encoder.write(
        "lookout_target_probe_failure",
        "Why the target's last probe failed",
        probed(states)
            .filter_map(|(l, _, last)| {
                last.failure_reason
                    .as_deref()
                    .map(|reason| with(labels(l), "reason", reason))
            })
            .map(present),
    )?;
    encoder.write(
        "lookout_target_http_status_code",
        "HTTP status of the target's last probe",
        probed(states).filter_map(|(l, _, last)| {
            last.http_status
                .map(|status| (labels(l), f64::from(status)))
        }),
    )?;
    Ok(())
}

/// The request and resolution duration histograms, the DNS answers and the certificate
/// expiry.
fn write_durations_and_dns(encoder: &mut impl Families, states: &[Row<'_>]) -> std::fmt::Result {
    encoder.write(
        "http_request_duration_seconds",
        "Duration of the HTTP targets' requests (all phases, redirects included)",
        states
            .iter()
            .filter_map(|(l, _, s)| s.http_durations.as_ref().map(|h| (labels(l), h))),
    )?;
    encoder.write(
        "dns_resolution_duration_seconds",
        "Time from query to answer, by nameserver",
        states.iter().flat_map(|(l, _, s)| {
            s.dns_durations.iter().map(move |(nameserver, h)| {
                (target_and(l, vec![("nameserver", Value(nameserver))]), h)
            })
        }),
    )?;
    encoder.write(
        "dns_answer",
        "Answers of the DNS targets' last probe, one series per answer record",
        probed(states)
            .flat_map(|(l, _, last)| {
                last.dns
                    .iter()
                    .flat_map(move |(nameserver, domain, answers)| {
                        answers.iter().map(move |answer| {
                            target_and(
                                l,
                                vec![
                                    ("domain", Value(domain)),
                                    ("nameserver", Value(nameserver)),
                                    ("answer", Value(answer)),
                                ],
                            )
                        })
                    })
            })
            .map(present),
    )?;
    encoder.write(
        "probe_ssl_earliest_cert_expiry",
        "Unix time at which the earliest certificate the target presented expires",
        probed(states).filter_map(|(l, _, last)| last.cert_expiry.map(|t| (labels(l), t))),
    )?;
    Ok(())
}

/// The heartbeats' last push and allowed silence.
fn write_heartbeats(
    encoder: &mut impl Families,
    heartbeats: &[HeartbeatStatus],
) -> std::fmt::Result {
    encoder.write(
        "lookout_heartbeat_last_seen_timestamp_seconds",
        "Unix time of the heartbeat's last push",
        heartbeats
            .iter()
            .filter_map(|h| h.last_seen.map(|t| (vec![("name", Value(&h.name))], t))),
    )?;
    encoder.write(
        "lookout_heartbeat_max_silence_seconds",
        "The heartbeat's max_silence: up turns 0 when it is silent longer",
        heartbeats
            .iter()
            .map(|h| (vec![("name", Value(&h.name))], h.max_silence.as_secs_f64())),
    )?;
    Ok(())
}

/// The dependency graph, and which down targets are blocked by a down dependency.
fn write_dependencies(
    encoder: &mut impl Families,
    slots: &SlotMap,
    states: &[Row<'_>],
) -> std::fmt::Result {
    // The dependency graph itself, so a status page can draw it while everything is up
    // (`lookout_target_blocked` only exists during an outage).
    encoder.write(
        "lookout_target_dependency",
        "One series per entry of a target's depends_on",
        slots
            .values()
            .zip(states.iter())
            .flat_map(|(slot, (_, name, _))| {
                slot.target
                    .depends_on
                    .iter()
                    .map(move |dep| vec![("instance", Value(name)), ("depends_on", Value(dep))])
            })
            .map(present),
    )?;
    let nodes: Vec<Node<'_>> = slots
        .values()
        .zip(states.iter())
        .map(|(slot, (_, name, state))| Node {
            name,
            depends_on: &slot.target.depends_on,
            down: matches!(&state.last, Some(last) if !last.success),
        })
        .collect();
    let blocked = cascade::blocked(&nodes);
    encoder.write(
        "lookout_target_blocked",
        "1 when the target is down and a target in its depends_on is down too",
        blocked.iter().map(|b| {
            (
                vec![
                    ("instance", Value(&b.instance)),
                    ("blocked_by", Value(&b.blocked_by)),
                ],
                1.0,
            )
        }),
    )?;
    Ok(())
}

// `EncodeLabelSet` is implemented for `Vec<(K, V)>`; this keeps the bound checked at compile
// time where the alias is defined.
const _: fn() = || {
    fn assert_label_set<T: EncodeLabelSet>() {}
    assert_label_set::<Labels<'static>>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_probes_are_counted_by_reason() {
        let m = ExporterMetrics::default();
        let failed = |reason: &str| ProbeReport {
            success: false,
            failure: Some(crate::prober::Failure::new(reason, "test")),
            duration: std::time::Duration::from_millis(1),
            recorder: crate::prober::Recorder::default(),
        };
        m.observe_probe("http", &failed("headers_too_large"));
        m.observe_probe("http", &failed("headers_too_large"));
        m.observe_probe("http", &failed("timeout"));
        let count = |r: &str| {
            m.probe_failures
                .get_or_create(&vec![("reason", r.to_string())])
                .get()
        };
        assert_eq!(count("headers_too_large"), 2);
        assert_eq!(count("timeout"), 1);
    }

    #[test]
    fn histogram_buckets_are_per_bucket_counts() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(0.2);
        h.observe(60.0);
        let buckets = h.buckets();
        assert_eq!(buckets[0], (0.005, 1));
        assert_eq!(buckets[5], (0.25, 1));
        assert_eq!(buckets[11], (f64::MAX, 1));
        assert_eq!(h.count(), 3);
        assert!((h.sum() - 60.203).abs() < 1e-9);
        // The same observations in the native buckets, at schema 3.
        let index = crate::native_histogram::schema3_index;
        assert_eq!(
            h.native().positive(),
            &[(index(0.003), 1), (index(0.2), 1), (index(60.0), 1)]
        );
    }

    type Series = (String, Vec<(String, String)>, u64);

    /// A series as Prometheus stores it, `le` normalised (text writes `1.0`, floats `1`).
    fn series(name: &str, mut labels: Vec<(String, String)>, value: f64) -> Series {
        for (k, v) in &mut labels {
            if k == "le" {
                *v = format!("{:?}", v.parse::<f64>().unwrap());
            }
        }
        labels.sort();
        (name.to_string(), labels, value.to_bits())
    }

    /// The series a decoded protobuf exposition gives, classic buckets expanded.
    fn protobuf_series(body: &[u8]) -> Vec<Series> {
        let mut out = Vec::new();
        for family in crate::protobuf::decode::exposition(body) {
            for metric in family.metrics {
                let labels = metric.labels.clone();
                match (metric.value, metric.histogram) {
                    (Some((_, v)), None) => out.push(series(&family.name, labels, v)),
                    (None, Some(h)) => {
                        let name = &family.name;
                        out.push(series(
                            &format!("{name}_count"),
                            labels.clone(),
                            h.count as f64,
                        ));
                        out.push(series(&format!("{name}_sum"), labels.clone(), h.sum));
                        let inf = (f64::INFINITY, h.count);
                        for (le, count) in h.buckets.iter().chain([&inf]) {
                            let mut labels = labels.clone();
                            labels.push(("le".into(), le.to_string()));
                            out.push(series(&format!("{name}_bucket"), labels, *count as f64));
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        out.sort();
        out
    }

    /// A collector over two HTTP targets (one failing, depending on the other) and a DNS
    /// target, each probed twice, and a heartbeat.
    fn probed_targets() -> (Arc<RwLock<Arc<SlotMap>>>, Arc<Heartbeats>) {
        use crate::config::Target;
        use crate::prober::{DnsObservation, Failure, HttpObservation, Recorder};
        use crate::scheduler::TargetSlot;
        let target = |name: &str, depends_on: Vec<String>| Target {
            name: name.into(),
            module: "m".into(),
            target: "http://127.0.0.1:1/".into(),
            interval: std::time::Duration::from_secs(30),
            labels: [("team".to_string(), "a\"b".to_string())].into(),
            depends_on,
        };
        let report = |ok: bool, ms: u64, dns: bool| ProbeReport {
            success: ok,
            failure: (!ok).then(|| Failure::new("timeout", "slow")),
            duration: std::time::Duration::from_millis(ms + 1),
            recorder: Recorder {
                http: (!dns).then_some(HttpObservation {
                    duration: std::time::Duration::from_millis(ms),
                    status: 503,
                }),
                dns: dns.then(|| DnsObservation {
                    nameserver: "127.0.0.1:53".into(),
                    query_name: "example.com".into(),
                    duration: std::time::Duration::from_micros(ms * 100),
                    answers: vec!["192.0.2.1".into()],
                    rcode: "NOERROR".into(),
                }),
                ..Recorder::default()
            },
        };
        let mut slots = SlotMap::new();
        for (name, ok, dns, deps) in [
            ("db", false, false, vec![]),
            ("web", false, false, vec!["db".to_string()]),
            ("ns", true, true, vec![]),
        ] {
            let slot = TargetSlot::new(target(name, deps), Arc::default());
            slot.record(&report(ok, 7, dns));
            slot.record(&report(ok, 1200, dns));
            slots.insert(name.to_string(), Arc::new(slot));
        }
        let heartbeats = Heartbeats::default();
        heartbeats.apply(&[crate::config::Heartbeat {
            name: "cron".into(),
            max_silence: std::time::Duration::from_secs(60),
        }]);
        (Arc::new(RwLock::new(Arc::new(slots))), Arc::new(heartbeats))
    }

    /// The text of [`probed_targets`] with the probe timestamps (the only values that
    /// change from run to run) written as `T`, and the version as `VERSION`.
    fn steady_text() -> String {
        let (slots, heartbeats) = probed_targets();
        let text =
            render(&ExporterMetrics::default().registry(TargetsCollector::new(slots, heartbeats)));
        text.lines()
            .map(|line| match line.rsplit_once(' ') {
                Some((series, _))
                    if series.starts_with("lookout_target_last_probe_timestamp_seconds{") =>
                {
                    format!("{series} T\n")
                }
                _ => format!("{line}\n").replace(env!("CARGO_PKG_VERSION"), "VERSION"),
            })
            .collect()
    }

    #[test]
    fn text_is_the_same_bytes_as_before_native_histograms() {
        // Written by the code before native histograms and the protobuf exposition.
        assert_eq!(
            steady_text(),
            include_str!("../tests/data/metrics_text.golden")
        );
    }

    #[test]
    fn protobuf_carries_every_series_of_the_text() {
        let (slots, heartbeats) = probed_targets();
        let collector = || TargetsCollector::new(slots.clone(), heartbeats.clone());
        let m = ExporterMetrics::default();
        m.observe_probe(
            "http",
            &ProbeReport {
                success: true,
                failure: None,
                duration: std::time::Duration::from_millis(3),
                recorder: crate::prober::Recorder::default(),
            },
        );
        let text = render(&m.registry(collector()));
        let body = ProtobufSource::new(m.own_registry(), collector()).render();

        let mut from_text: Vec<Series> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (name, labels, value) = crate::protobuf::parse_sample(line).unwrap();
                series(name, labels, value)
            })
            .collect();
        from_text.sort();
        assert_eq!(protobuf_series(&body), from_text);
        for name in [
            "lookout_exporter_probes_total",
            "lookout_exporter_build_info",
            "lookout_target_blocked",
            "lookout_target_dependency_info",
            "dns_answer_info",
            "http_request_duration_seconds_bucket",
            "dns_resolution_duration_seconds_sum",
        ] {
            assert!(from_text.iter().any(|s| s.0 == name), "{name} missing");
        }

        // The per-target histograms, and only those, carry native buckets.
        let families = crate::protobuf::decode::exposition(&body);
        for family in families.iter().filter(|f| f.kind == 4) {
            let native = family.name == "http_request_duration_seconds"
                || family.name == "dns_resolution_duration_seconds";
            for metric in &family.metrics {
                let h = metric.histogram.as_ref().unwrap();
                assert_eq!(h.schema.is_some(), native, "{}", family.name);
                if native {
                    assert_eq!(h.count, 2);
                    let total: i64 = h
                        .positive_deltas
                        .iter()
                        .scan(0, |count, d| {
                            *count += d;
                            Some(*count)
                        })
                        .sum();
                    assert_eq!(total as u64 + h.zero_count, h.count, "{}", family.name);
                }
            }
        }
        assert_eq!(families.iter().filter(|f| f.kind == 4).count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        let collector = TargetsCollector::new(Arc::default(), Arc::new(Heartbeats::default()));
        let beats = Heartbeats::default();
        beats.apply(&[crate::config::Heartbeat {
            name: "a\"b".into(),
            max_silence: std::time::Duration::from_secs(60),
        }]);
        let collector = TargetsCollector {
            heartbeats: Arc::new(beats),
            ..collector
        };
        let metrics = ExporterMetrics::default();
        let text = render(&metrics.registry(collector));
        assert!(
            text.contains("up{job=\"heartbeat\",instance=\"a\\\"b\"} 1"),
            "{text}"
        );
        // The status page compares the last push with max_silence.
        assert!(
            text.contains("lookout_heartbeat_max_silence_seconds{name=\"a\\\"b\"} 60"),
            "{text}"
        );
        assert!(
            text.contains("lookout_exporter_build_info{version=\""),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
