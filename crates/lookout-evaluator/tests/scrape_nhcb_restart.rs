//! `convert_classic_histograms_to_nhcb` with a data directory: `lookout_evaluator::run`
//! scrapes a classic histogram on loopback into custom-bucket histograms, is stopped, and
//! started again on the same directory; the stored samples (bounds and counts) and what
//! functions over them answer must be the same before and after the restart, through the
//! WAL (Prometheus 3's custom-bucket record type) and the head's chunks. Then, when
//! Debian's `prometheus` (2.42) is installed, it is started on a copy of the directory:
//! it starts, and skips the record type it does not know, so the histograms are missing
//! from its answers (what the README documents).

#[path = "../../lookout-promql/tests/common/peer.rs"]
mod peer;
mod scrape_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use lookout_evaluator::{EvaluatorOptions, run};
use scrape_support::{
    eventually, free_port, instant_query, serve_loopback, start_prometheus_config_with, unix,
};

/// The classic histogram at the `n`th scrape: bounds 0.1, 0.5 and 2.5, counts growing,
/// a counter reset at the 12th scrape.
fn body(n: u64) -> String {
    let k = n % 12;
    let cumulative = [k + 1, 3 * k + 2, 5 * k + 4, 6 * k + 5];
    let mut out = String::from("# TYPE lookout_nhcb_seconds histogram\n");
    for (le, c) in ["0.1", "0.5", "2.5", "+Inf"].iter().zip(cumulative) {
        out += &format!("lookout_nhcb_seconds_bucket{{le=\"{le}\"}} {c}\n");
    }
    out += &format!("lookout_nhcb_seconds_count {}\n", cumulative[3]);
    out += &format!("lookout_nhcb_seconds_sum {}\n", 0.7 * (k + 1) as f64);
    out
}

/// Starts the evaluator on `dir` (configuration `evaluator.yml`, data in `data`) on `port`;
/// returns the sender that stops it and its task.
fn start(
    dir: &std::path::Path,
    port: u16,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), lookout_evaluator::RunError>>,
) {
    let mut opts = EvaluatorOptions::new(dir.join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.state_file = None;
    opts.storage_path = Some(dir.join("data"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = rx.await;
    }));
    (stop, task)
}

/// The raw JSON answer of `path` (a query API request) once the API answers with success.
async fn answer(base: &str, path: &str) -> String {
    let url = format!("{base}{path}");
    eventually(Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("\"status\":\"success\"").then_some(text)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{base} did not answer {path}"))
}

/// `q` percent-encoded for a URL's query string.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_histograms_in_a_data_directory_survive_a_restart() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let served = scrapes.clone();
    let target = serve_loopback(Router::new().route(
        "/metrics",
        get(move || {
            let text = body(served.fetch_add(1, Ordering::SeqCst));
            async move { ([("content-type", "text/plain; version=0.0.4")], text) }
        }),
    ))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "global: {{scrape_interval: 250ms, scrape_timeout: 250ms}}\nscrape_configs:\n  - {{job_name: nhcb, convert_classic_histograms_to_nhcb: true, static_configs: [{{targets: ['{target}']}}]}}\n"
    );
    std::fs::write(dir.path().join("evaluator.yml"), config).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (stop, task) = start(dir.path(), port);

    // A counter reset and both sides of it stored.
    let enough = eventually(Duration::from_secs(60), || {
        let n = scrapes.load(Ordering::SeqCst);
        async move { (n >= 20).then_some(()) }
    })
    .await;
    assert!(enough.is_some(), "the target was not scraped");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let at = UNIX_EPOCH + Duration::from_millis(now as u64 - 500);
    let from = UNIX_EPOCH + Duration::from_millis(now as u64 - 4_500);
    let queries = [
        "lookout_nhcb_seconds[10s]",
        "histogram_quantile(0.7, rate(lookout_nhcb_seconds[2s]))",
        "histogram_count(increase(lookout_nhcb_seconds[3s]))",
        "histogram_fraction(0, 0.5, lookout_nhcb_seconds)",
    ];
    let mut paths: Vec<String> = queries
        .iter()
        .map(|q| format!("/api/v1/query?query={}&time={}", encode(q), unix(at)))
        .collect();
    paths.push(format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=0.3",
        encode(queries[3]),
        unix(from),
        unix(at)
    ));
    let mut before = Vec::new();
    for p in &paths {
        before.push(answer(&base, p).await);
    }
    // The raw samples are custom-bucket histograms with their bounds.
    assert!(
        before[0].contains("\"histograms\"") && before[0].contains("\"2.5\""),
        "{}",
        before[0]
    );
    stop.send(()).unwrap();
    task.await.unwrap().expect("the evaluator stops cleanly");

    let (stop, task) = start(dir.path(), port);
    for (p, want) in paths.iter().zip(&before) {
        assert_eq!(&answer(&base, p).await, want, "{p} after the restart");
    }
    stop.send(()).unwrap();
    task.await.unwrap().expect("the evaluator stops cleanly");

    if !peer::have("prometheus") {
        eprintln!("SKIPPED (Prometheus 2.42 part): prometheus is not installed");
        return;
    }
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.path().join("data"))
        .arg(dir.path().join("prom-data"))
        .status()
        .expect("cp runs");
    assert!(status.success());
    let (_prometheus, theirs) = start_prometheus_config_with(
        dir.path(),
        "global: {scrape_interval: 1h}\n",
        &["--enable-feature=native-histograms"],
    )
    .await;
    // The series are known (their records are 2.42's), their custom-bucket samples not.
    let got = instant_query(&theirs, "lookout_nhcb_seconds[1h]", SystemTime::now()).await;
    assert!(got.is_empty(), "Prometheus 2.42 answered {got:?}");
    let up = instant_query(&theirs, "up{job=\"nhcb\"}[1h]", SystemTime::now()).await;
    assert_eq!(
        up.len(),
        1,
        "Prometheus 2.42 did not replay the float samples"
    );
}
