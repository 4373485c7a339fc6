//! Alertmanager down, then back on the same port: `lookout_evaluator::run` keeps resending
//! its active alerts every resend delay (as Prometheus does), so after the outage every alert
//! that fired before or during it reaches Debian's real `prometheus-alertmanager`, and the
//! notification queue stays within its capacity meanwhile.
//!
//! The outage lasts `LOOKOUT_FAULT_AM_OUTAGE_SECS` seconds (20 by default, to keep CI short);
//! `bench/faults/alertmanager-outage.sh` runs this test with a ten-minute outage.

mod scrape_support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_evaluator::{EvaluatorOptions, run};
use scrape_support::{ProcessGuard, eventually, free_port, spawn, wait_ready};

/// Starts Alertmanager on `port` with its data in `dir` (the same port after a restart).
async fn alertmanager(dir: &Path, port: u16) -> ProcessGuard {
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: blackhole\n  group_wait: 1h\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("am-data")).unwrap();
    let args = vec![
        "--config.file=alertmanager.yml".to_string(),
        "--storage.path=am-data".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let guard = spawn("prometheus-alertmanager", &args, dir);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
    guard
}

/// Names of the alerts Alertmanager holds.
async fn alertmanager_alerts(port: u16) -> Option<Vec<String>> {
    let body = reqwest::get(format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

/// A metric of the evaluator's `/metrics` (first series whose line starts with `prefix`).
async fn metric(base: &str, prefix: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn outage() -> Duration {
    let secs = std::env::var("LOOKOUT_FAULT_AM_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fired_during_an_alertmanager_outage_arrive_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let am_dir = dir.path().join("am");
    std::fs::create_dir_all(&am_dir).unwrap();
    let am_port = free_port();
    let am = alertmanager(&am_dir, am_port).await;

    let outage = outage();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Fires at start-up; fires half-way through the outage.
    let during = now + 10 + outage.as_secs() / 2;
    std::fs::write(
        dir.path().join("rules.yml"),
        format!(
            "groups:\n  - name: outage\n    rules:\n      - alert: FiredBefore\n        expr: vector(1)\n      - alert: FiredDuring\n        expr: vector(time()) > {during}\n"
        ),
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("evaluator.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n      timeout: 2s\n"
        ),
    )
    .unwrap();
    let mut opts = EvaluatorOptions::new(dir.path().join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.external_url = Some(format!("http://127.0.0.1:{port}"));
    opts.state_file = None;
    opts.resend_delay = Duration::from_secs(1);
    opts.notification_queue_capacity = 100;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = rx.await;
    }));
    let base = format!("http://127.0.0.1:{port}");

    // Before the outage: FiredBefore arrives.
    let before = eventually(Duration::from_secs(60), || async {
        alertmanager_alerts(am_port)
            .await
            .filter(|a| a.iter().any(|n| n == "FiredBefore"))
    })
    .await;
    assert!(before.is_some(), "FiredBefore never reached Alertmanager");

    // Outage: Alertmanager is stopped (it keeps no alerts across a restart).
    drop(am);
    let errors_at_start = metric(&base, "prometheus_notifications_errors_total")
        .await
        .unwrap_or(0.0);
    let end = tokio::time::Instant::now() + outage;
    let mut max_queue = 0.0f64;
    while tokio::time::Instant::now() < end {
        assert!(
            !task.is_finished(),
            "the evaluator stopped during the outage"
        );
        if let Some(q) = metric(&base, "prometheus_notifications_queue_length").await {
            max_queue = max_queue.max(q);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let errors = metric(&base, "prometheus_notifications_errors_total")
        .await
        .unwrap_or(0.0);
    assert!(errors > errors_at_start, "sends failed during the outage");
    assert!(max_queue <= 100.0, "queue over its capacity: {max_queue}");
    let firing_during = reqwest::get(format!("{base}/api/v1/alerts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        firing_during.contains("FiredDuring"),
        "FiredDuring fires during the outage: {firing_during}"
    );

    // Back on the same port: both alerts arrive.
    let _am = alertmanager(&am_dir, am_port).await;
    let after = eventually(Duration::from_secs(60), || async {
        alertmanager_alerts(am_port).await.filter(|a| {
            a.iter().any(|n| n == "FiredDuring") && a.iter().any(|n| n == "FiredBefore")
        })
    })
    .await;
    assert_eq!(
        after,
        Some(vec!["FiredBefore".to_string(), "FiredDuring".to_string()]),
        "every alert fired before and during the outage arrives after it"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
