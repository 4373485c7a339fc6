//! Native histograms in remote mode, with Debian's real `prometheus` (2.42) as the oracle.
//! Prometheus (`--enable-feature=native-histograms --web.enable-remote-write-receiver`)
//! scrapes a loopback target serving two native histograms in the protobuf exposition
//! (schema 3 with a zero bucket and negative buckets, schema 0 with a wide zero bucket,
//! schema -2 without observations).
//! A rule group evaluated on the remote datasource records `rate(...)` and
//! `sum(rate(...))` (histogram results), alerts on `histogram_count(...)` and writes
//! everything back with remote write. Then, at every evaluation time, the recorded series
//! read from Prometheus must be exactly what Prometheus itself answers for the expression
//! at that time: the same JSON (count, sum, every bucket's boundaries and count).

#[path = "../../lookout-promql/tests/common/nh_exposition.rs"]
mod nh_exposition;
mod scrape_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::remote::{RemoteConfig, RemoteDatasource};
use lookout_evaluator::remote_write::{RemoteWriteConfig, RemoteWriter};
use lookout_evaluator::rules::group::{Group, GroupContext};
use lookout_evaluator::rules::metrics::RuleMetrics;
use lookout_evaluator::rules::status::RuleHealth;
use lookout_evaluator::rules::{AlertingRule, RecordingRule, Rule};
use nh_exposition::{PROTOBUF, SCHEMA0, SCHEMA3, Shape};
use prometheus_client::registry::Registry;
use scrape_support::{eventually, serve_scrapes, start_prometheus_with};
use serde_json::Value;

const SHAPES: [Shape; 3] = [
    SCHEMA3,
    Shape {
        positive: &[-3, 1, 2, 4],
        ..SCHEMA0
    },
    // Its rate has no buckets and a count of 0: the JSON does not show its schema, and
    // Prometheus 2.42's receiver takes a float histogram with a count of 0 for an integer
    // one. Its schema makes `sum` coarser.
    Shape {
        path: "c",
        idle: true,
        schema: -2,
        zero_threshold: 0.0,
        negative: &[],
        positive: &[0, 1],
        reset_every: None,
        appears: None,
    },
];

/// The delimited protobuf exposition after `n` scrapes.
fn exposition(n: u64) -> Vec<u8> {
    nh_exposition::exposition(
        "lookout_nh_seconds",
        "Native histograms for the remote-mode test.",
        &SHAPES,
        n,
    )
}

#[derive(Default)]
struct Alerts(std::sync::Mutex<Vec<Alert>>);

impl Notify for Alerts {
    fn send(&self, alerts: Vec<Alert>) {
        self.0.lock().expect("lock").extend(alerts);
    }
}

/// `at` as Prometheus's `time` parameter.
fn unix(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).expect("after 1970");
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The result vector of an instant query of `expr` at `at`, each element keyed by its
/// labels without `__name__`.
async fn query(base: &str, expr: &str, at: SystemTime) -> BTreeMap<String, Value> {
    scrape_support::instant_query(base, expr, at).await
}

fn rules(cutoff: SystemTime) -> Vec<Rule> {
    let cutoff = unix(cutoff);
    let record =
        |name: &str, expr: &str| Rule::Recording(RecordingRule::new(name, expr, BTreeMap::new()));
    vec![
        record("lookout:nh:rate1m", "rate(lookout_nh_seconds[1m])"),
        record("lookout:nh:sum_rate1m", "sum(rate(lookout_nh_seconds[1m]))"),
        // Ends between the second and the third evaluation: a staleness marker follows
        // the histograms in one remote-write batch.
        record(
            "lookout:nh:b_until",
            &format!(
                "rate(lookout_nh_seconds{{path=\"b\"}}[1m]) and on() (vector(time()) < {cutoff})"
            ),
        ),
        Rule::Alerting(AlertingRule::new(
            "NativeHistogramBusy",
            "histogram_count(rate(lookout_nh_seconds[1m])) > 0",
            Duration::ZERO,
            Duration::ZERO,
            BTreeMap::new(),
            BTreeMap::from([("value".to_string(), "{{ $value }}".to_string())]),
            lookout_promql::Labels::default(),
            "http://lookout:9090",
            true,
        )),
    ]
}

/// Waits until Prometheus has scraped the target often enough for `rate` over a minute.
async fn wait_for_rates(base: &str, scrapes: &AtomicU64) {
    let ready = eventually(Duration::from_secs(60), || async {
        let rates = query(base, "sum(rate(lookout_nh_seconds[1m]))", SystemTime::now()).await;
        let counted = rates.values().any(|e| {
            e["histogram"][1]["count"]
                .as_str()
                .is_some_and(|c| c != "0")
        });
        (counted && scrapes.load(Ordering::SeqCst) >= 8).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "Prometheus did not scrape the native histograms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_histograms_equal_prometheus_own_results() {
    let (target, scrapes) = serve_scrapes(PROTOBUF, exposition).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = [
        "--enable-feature=native-histograms",
        "--web.enable-remote-write-receiver",
    ];
    let (_prom, port) = start_prometheus_with(dir.path(), &[target], &flags).await;
    let base = format!("http://127.0.0.1:{port}");
    wait_for_rates(&base, &scrapes).await;

    let mut registry = Registry::default();
    let writer = RemoteWriter::start(
        RemoteWriteConfig::new(format!("{base}/api/v1/write")),
        &mut registry,
    )
    .expect("remote writer");
    let ds = Arc::new(
        RemoteDatasource::new(RemoteConfig::new(base.clone()))
            .expect("datasource")
            .with_remote_write(writer),
    );
    // Three evaluations a second apart, in the past so that no scrape lands after them.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let times: Vec<SystemTime> = (0..3)
        .map(|k| UNIX_EPOCH + Duration::from_millis(now_ms - 4_000 + 1_000 * k))
        .collect();
    let notifier = Arc::new(Alerts::default());
    let ctx = Arc::new(GroupContext {
        datasource: ds.clone(),
        notifier: notifier.clone(),
        resend_delay: Duration::from_secs(60),
        metrics: RuleMetrics::default(),
        evaluated: None,
    });
    let cutoff = times[1] + Duration::from_millis(500);
    let group = Group::new(
        "nh",
        "nh.yml",
        Duration::from_secs(1),
        Duration::ZERO,
        0,
        rules(cutoff),
        String::new(),
        ctx,
    );
    for &t in &times {
        group.eval(t).await;
        for rule in group.rules() {
            let (health, error) = match rule {
                Rule::Recording(r) => (r.snapshot().health, r.snapshot().last_error),
                Rule::Alerting(r) => (r.snapshot().common.health, r.snapshot().common.last_error),
            };
            assert_eq!(health, RuleHealth::Ok, "{error:?}");
        }
    }
    ds.flush_writes().await.expect("remote write accepted");

    compare(&base, &times).await;
    check_alerts(&base, &times, &notifier).await;
    // rate: 3 series, sum: 1, b_until: 1, at three times, b_until's last one excepted.
    assert_eq!(
        metric_value(&registry, "prometheus_remote_storage_histograms_total"),
        Some(14.0)
    );
    assert_eq!(
        metric_value(
            &registry,
            "prometheus_remote_storage_histograms_failed_total"
        ),
        Some(0.0)
    );
}

fn metric_value(registry: &Registry, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// At every evaluation time, each recorded series equals Prometheus's own result for its
/// expression, in full.
async fn compare(base: &str, times: &[SystemTime]) {
    let cutoff = unix(times[1] + Duration::from_millis(500));
    let pairs = [
        (
            "lookout:nh:rate1m",
            "rate(lookout_nh_seconds[1m])".to_string(),
        ),
        (
            "lookout:nh:sum_rate1m",
            "sum(rate(lookout_nh_seconds[1m]))".to_string(),
        ),
        (
            "lookout:nh:b_until",
            format!(
                "rate(lookout_nh_seconds{{path=\"b\"}}[1m]) and on() (vector(time()) < {cutoff})"
            ),
        ),
    ];
    let (mut zero_buckets, mut negative_buckets, mut compared) = (0, 0, 0);
    for &t in times {
        for (name, expr) in &pairs {
            let recorded = query(base, name, t).await;
            let own = query(base, expr, t).await;
            assert_eq!(
                recorded.keys().collect::<Vec<_>>(),
                own.keys().collect::<Vec<_>>(),
                "{name} at {}",
                unix(t)
            );
            for (series, want) in &own {
                let got = &recorded[series]["histogram"];
                assert!(want["histogram"].is_array(), "{want}");
                assert_eq!(got, &want["histogram"], "{name}{series} at {}", unix(t));
                let empty = Vec::new();
                let buckets = want["histogram"][1]["buckets"].as_array().unwrap_or(&empty);
                zero_buckets += buckets.iter().filter(|b| b[0] == 3).count();
                negative_buckets += buckets.iter().filter(|b| b[0] == 1).count();
                compared += 1;
            }
        }
    }
    // rate: 3 series, sum: 1, b_until: 1 then none after the cutoff.
    assert_eq!(compared, 3 * 4 + 2, "series compared");
    assert!(zero_buckets > 0 && negative_buckets > 0);
}

/// The alert over `histogram_count` fired with Prometheus's values, and its `ALERTS`
/// series reached Prometheus.
async fn check_alerts(base: &str, times: &[SystemTime], notifier: &Alerts) {
    let own = query(
        base,
        "histogram_count(rate(lookout_nh_seconds[1m])) > 0",
        times[0],
    )
    .await;
    let sent = notifier.0.lock().expect("lock").clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for alert in &sent {
        let key: serde_json::Map<String, Value> = alert
            .labels
            .iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let want = &own[&Value::Object(key).to_string()]["value"][1];
        let want: f64 = want.as_str().expect("value").parse().expect("number");
        let got: f64 = alert.annotations["value"].parse().expect("number");
        assert_eq!(got, want, "{alert:?}");
    }
    for &t in times {
        let alerts = query(base, "ALERTS{alertname=\"NativeHistogramBusy\"}", t).await;
        assert_eq!(alerts.len(), 2, "ALERTS at {}", unix(t));
    }
}
