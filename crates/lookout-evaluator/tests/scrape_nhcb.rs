//! `convert_classic_histograms_to_nhcb` side by side with Debian's real `prometheus` (2.42).
//!
//! One loopback target serves, in Prometheus text, a classic histogram
//! `lookout_nhcb_seconds{path="a"}` whose counts grow on a 2-second grid of explicit
//! timestamps (so that both scrapers store the same samples at the same times), and a gauge.
//! Prometheus 2.42 (which has no conversion) scrapes it classically as job `nhcb`; Lookout
//! scrapes it as job `nhcb` with `convert_classic_histograms_to_nhcb: true`, and as job
//! `nhcb_classic` with `always_scrape_classic_histograms: true` too. At half-steps between
//! the samples the native functions over Lookout's custom-bucket histogram must answer what
//! the classic functions over Prometheus's bucket series answer: `histogram_quantile` of
//! the rates at several φ, `histogram_count`/`histogram_sum` against `_count`/`_sum`
//! (instant and rated), and `histogram_fraction` at bucket bounds against bucket ratios.
//! Job `nhcb` must store no classic series, job `nhcb_classic` the same ones as Prometheus.

#[path = "../../lookout-promql/tests/common/peer.rs"]
mod peer;
mod scrape_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use scrape_support::{instant_values, serve_loopback, start_prometheus_config, unix};

const STEP_MS: i64 = 2_000;
const STEPS: i64 = 10;
/// Finite `le` bounds of the histogram.
const BOUNDS: [&str; 3] = ["0.1", "0.5", "2.5"];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The body at the current grid step, steps counted from `start_ms` (the first step's
/// before it is set).
fn body(start_ms: i64) -> String {
    let now = now_ms();
    let ts = now - now.rem_euclid(STEP_MS);
    let k = (ts.saturating_sub(start_ms) / STEP_MS).max(0) as u64;
    // Cumulative counts for 0.1, 0.5, 2.5 and +Inf; each bucket grows at its own pace.
    let cumulative = [k + 1, 3 * k + 2, 5 * k + 4, 6 * k + 5];
    let mut out = String::from("# TYPE lookout_g gauge\nlookout_g 1\n");
    out +=
        "# HELP lookout_nhcb_seconds A classic histogram.\n# TYPE lookout_nhcb_seconds histogram\n";
    let les = BOUNDS.iter().copied().chain(["+Inf"]);
    for (le, c) in les.zip(cumulative) {
        out += &format!("lookout_nhcb_seconds_bucket{{path=\"a\",le=\"{le}\"}} {c} {ts}\n");
    }
    out += &format!(
        "lookout_nhcb_seconds_count{{path=\"a\"}} {} {ts}\n",
        cumulative[3]
    );
    out += &format!(
        "lookout_nhcb_seconds_sum{{path=\"a\"}} {} {ts}\n",
        0.7 * (k + 1) as f64
    );
    out
}

/// Asserts that Lookout's `ours` and Prometheus's `theirs` answer the same at `at`, up to
/// rounding; returns how many series.
async fn compare(base: (&str, &str), ours: &str, theirs: &str, at: SystemTime) -> usize {
    let a = instant_values(base.0, ours, at).await;
    let b = instant_values(base.1, theirs, at).await;
    let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "{ours} vs {theirs} at {}", unix(at));
    for (k, x) in &a {
        let y = b[k];
        let close = (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || x == &y;
        assert!(
            close,
            "{ours} vs {theirs}{k} at {}: ours {x}, Prometheus {y}",
            unix(at)
        );
    }
    a.len()
}

/// Pairs of (Lookout query over the custom-bucket histogram, Prometheus query over the
/// classic series) that must answer alike.
fn pairs() -> Vec<(String, String)> {
    let ours = "lookout_nhcb_seconds{job=\"nhcb\"}";
    let theirs = "lookout_nhcb_seconds";
    let rate = |s: &str| format!("rate({s}[7500ms])");
    let mut out = Vec::new();
    for phi in ["0.05", "0.25", "0.5", "0.75", "0.9", "0.99"] {
        out.push((
            format!("histogram_quantile({phi}, {})", rate(ours)),
            format!(
                "histogram_quantile({phi}, {})",
                rate(&format!("{theirs}_bucket"))
            ),
        ));
    }
    for (f, suffix) in [("histogram_count", "_count"), ("histogram_sum", "_sum")] {
        out.push((format!("{f}({ours})"), format!("{theirs}{suffix}")));
        out.push((
            format!("{f}({})", rate(ours)),
            rate(&format!("{theirs}{suffix}")),
        ));
    }
    // Fractions between bucket bounds are ratios of the classic buckets.
    let bucket = |le: &str| format!("sum without(le) ({theirs}_bucket{{le=\"{le}\"}})");
    out.push((
        format!("histogram_fraction(0, 0.5, {ours})"),
        format!("{} / {theirs}_count", bucket("0.5")),
    ));
    out.push((
        format!("histogram_fraction(0.1, 2.5, {ours})"),
        format!("({} - {}) / {theirs}_count", bucket("2.5"), bucket("0.1")),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_classic_histograms_answer_as_prometheus_classic_ones() {
    if !peer::have("prometheus") {
        eprintln!("SKIPPED: prometheus is not installed (Debian package prometheus)");
        return;
    }
    let start = Arc::new(AtomicI64::new(i64::MAX));
    let served = start.clone();
    let target = serve_loopback(Router::new().route(
        "/metrics",
        get(move || {
            let text = body(served.load(Ordering::SeqCst));
            async move { ([("content-type", "text/plain; version=0.0.4")], text) }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: nhcb\n    static_configs: [{{targets: ['{target}']}}]\n"
    );
    let (_prometheus, theirs) = start_prometheus_config(dir.path(), &config).await;

    let jobs = "
  - {job_name: nhcb, scrape_interval: 1s, scrape_timeout: 1s, convert_classic_histograms_to_nhcb: true, static_configs: [{targets: ['TARGET']}]}
  - {job_name: nhcb_classic, scrape_interval: 1s, scrape_timeout: 1s, convert_classic_histograms_to_nhcb: true, always_scrape_classic_histograms: true, static_configs: [{targets: ['TARGET']}]}
";
    let (manager, ours) =
        scrape_support::scrape_into_served_storage(&jobs.replace("TARGET", &target)).await;
    scrape_support::wait_for_answers(&[
        (&ours, "histogram_count(lookout_nhcb_seconds{job=\"nhcb\"})"),
        (&ours, "lookout_nhcb_seconds_count{job=\"nhcb_classic\"}"),
        (&theirs, "lookout_nhcb_seconds_count"),
    ])
    .await;
    let start_ms = now_ms() / STEP_MS * STEP_MS + 2 * STEP_MS;
    start.store(start_ms, Ordering::SeqCst);
    let end_ms = start_ms + STEPS * STEP_MS + 1_500;
    tokio::time::sleep(Duration::from_millis((end_ms - now_ms()).max(0) as u64)).await;

    let both = (ours.as_str(), theirs.as_str());
    let mut compared = 0;
    for k in 3..STEPS {
        let at = UNIX_EPOCH + Duration::from_millis((start_ms + k * STEP_MS + 1_000) as u64);
        for (a, b) in pairs() {
            compared += compare(both, &a, &b, at).await;
        }
        // Job nhcb stores no classic series; job nhcb_classic stores Prometheus's.
        for suffix in ["_bucket", "_count", "_sum"] {
            let q = format!("lookout_nhcb_seconds{suffix}{{job=\"nhcb\"}}");
            assert!(instant_values(&ours, &q, at).await.is_empty(), "{q}");
            let ours_q =
                format!("sum without(job) (lookout_nhcb_seconds{suffix}{{job=\"nhcb_classic\"}})");
            let theirs_q = format!("sum without(job) (lookout_nhcb_seconds{suffix})");
            compared += compare(both, &ours_q, &theirs_q, at).await;
        }
    }
    assert!(compared >= 7 * 18, "{compared} series compared");
    // A converted histogram is one scraped sample; its six classic series are not.
    let now = SystemTime::now();
    let q = "scrape_samples_scraped{job=\"nhcb\"}";
    let (a, b) = (
        instant_values(&ours, q, now).await,
        instant_values(&theirs, q, now).await,
    );
    assert_eq!(
        a.values().copied().collect::<Vec<_>>(),
        b.values().map(|v| v - 6.0 + 1.0).collect::<Vec<_>>(),
        "{q}"
    );
    manager.stop().await;
}
