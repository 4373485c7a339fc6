//! High availability, with real processes on loopback: two `lookout evaluator`s with the same
//! rules, in remote mode against one Prometheus that scrapes a gauge target, both notifying
//! one Alertmanager that posts to a webhook.
//!
//! The evaluators differ in one external label, `replica`, which each drops from its alerts
//! with `alert_relabel_configs` (Prometheus's convention for HA pairs): the alerts they send
//! are identical, so Alertmanager deduplicates them and the webhook gets each notification
//! once. One evaluator is then SIGKILLed: an alert that starts afterwards still arrives, and
//! so do the resolutions. Neither evaluator remote-writes (both would write the same
//! `ALERTS` series); each keeps its `for` state in its own state file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Evaluator, GaugeTarget, WebhookReceiver, alertmanager_alerts, evaluator_alerts, eventually,
    free_port, has_labels, instant_query, start_alertmanager_webhook, start_evaluator,
    start_prometheus, write_file,
};

const POLL: Duration = Duration::from_millis(200);
const TRIES: usize = 300;
const A: &str = r#"lookout_ha_up{name="a"}"#;
const B: &str = r#"lookout_ha_up{name="b"}"#;
const DOWN_A: [(&str, &str); 2] = [("alertname", "HaDown"), ("name", "a")];
const DOWN_B: [(&str, &str); 2] = [("alertname", "HaDown"), ("name", "b")];

const RULES: &str = r#"groups:
  - name: ha
    interval: 1s
    rules:
      - alert: HaDown
        expr: lookout_ha_up == 0
        for: 1s
        labels:
          severity: page
"#;

/// The configuration of replica `replica`: the shared external label `cluster`, its own
/// `replica`, dropped from alerts before they are sent.
fn evaluator_config(replica: &str, alertmanager_port: u16) -> String {
    format!(
        "global:
  evaluation_interval: 1s
  external_labels:
    cluster: ha
    replica: {replica}
rule_files: [rules.yml]
alerting:
  alert_relabel_configs:
    - action: labeldrop
      regex: replica
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{alertmanager_port}']
"
    )
}

/// Starts replica `replica` in its own directory under `dir`, querying `engine`, resending
/// firing alerts every second (so Alertmanager gets each alert from both, often).
async fn start_replica(dir: &Path, replica: &str, engine: &str, am_port: u16) -> Evaluator {
    let dir = dir.join(replica);
    std::fs::create_dir_all(&dir).expect("replica directory");
    write_file(&dir, "rules.yml", RULES);
    write_file(&dir, "evaluator.yml", &evaluator_config(replica, am_port));
    let flags = [
        "--datasource.url",
        engine,
        "--rules.alert.resend-delay",
        "1s",
    ]
    .map(str::to_string);
    start_evaluator(&dir, free_port(), &flags).await
}

/// Waits until `evaluator` has the alert with `labels` firing.
async fn wait_firing(evaluator: &Evaluator, labels: &[(&str, &str)]) {
    eventually(
        &format!("{labels:?} firing in {}", evaluator.base),
        TRIES,
        POLL,
        || async {
            let alerts = evaluator_alerts(&evaluator.base).await?;
            alerts
                .iter()
                .any(|a| has_labels(a, labels) && a["state"] == "firing")
                .then_some(())
        },
    )
    .await;
}

/// Exactly one notification of `status` for `labels` reached the webhook.
fn assert_once(webhook: &WebhookReceiver, status: &str, labels: &[(&str, &str)]) {
    let got = webhook.alerts(status, labels);
    assert_eq!(got.len(), 1, "{status} {labels:?} notified once: {got:?}");
    assert_eq!(got[0]["labels"]["cluster"], "ha", "{}", got[0]);
    assert!(got[0]["labels"].get("replica").is_none(), "{}", got[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_notifies_once_and_survives_a_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let target = GaugeTarget::start(&[A, B], 1.0).await;
    let (_prometheus, port) = start_prometheus(
        dir,
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ha\n    static_configs: [{{targets: ['{}']}}]\n",
            target.addr
        ),
    )
    .await;
    let engine = format!("http://127.0.0.1:{port}");
    let webhook = WebhookReceiver::start().await;
    let (_alertmanager, am_port) = start_alertmanager_webhook(dir, &webhook.url).await;
    let mut first = start_replica(dir, "r1", &engine, am_port).await;
    let second = start_replica(dir, "r2", &engine, am_port).await;
    eventually("both gauges in Prometheus", TRIES, POLL, || async {
        let result = instant_query(&engine, "lookout_ha_up == 1").await.ok()?;
        (result.len() == 2).then_some(())
    })
    .await;

    // Both replicas fire and keep resending `a`; it is notified once, held once.
    target.set(A, 0.0);
    webhook.wait_for("firing", &DOWN_A).await;
    wait_firing(&first, &DOWN_A).await;
    wait_firing(&second, &DOWN_A).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_once(&webhook, "firing", &DOWN_A);
    let held = alertmanager_alerts(am_port)
        .await
        .expect("Alertmanager's alerts");
    assert_eq!(
        held.iter().filter(|a| has_labels(a, &DOWN_A)).count(),
        1,
        "{held:?}"
    );

    // One replica dies; the other notifies a new alert and both resolutions.
    first.process.kill();
    target.set(B, 0.0);
    webhook.wait_for("firing", &DOWN_B).await;
    target.set(A, 1.0);
    target.set(B, 1.0);
    webhook.wait_for("resolved", &DOWN_A).await;
    webhook.wait_for("resolved", &DOWN_B).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (status, labels) in [
        ("firing", DOWN_A),
        ("firing", DOWN_B),
        ("resolved", DOWN_A),
        ("resolved", DOWN_B),
    ] {
        assert_once(&webhook, status, &labels);
    }
    drop(second);
}
