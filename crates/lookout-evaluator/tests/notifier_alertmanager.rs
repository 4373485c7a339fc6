//! The notifier against Debian's real `prometheus-alertmanager`: alerts posted through API v2
//! in batches are read back through its API, with external labels and annotations.

mod scrape_support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::notifier::{AlertingConfig, NotifierManager, NotifierOptions};
use lookout_promql::Labels;
use prometheus_client::registry::Registry;
use scrape_support::{eventually, start_alertmanager};

fn alert(i: usize) -> Alert {
    let now = SystemTime::now();
    Alert {
        labels: Labels::new([
            ("alertname", "ServerDown".to_string()),
            ("instance", format!("host-{i}:9100")),
            ("severity", "critical".to_string()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), format!("host-{i} is down"))]),
        starts_at: now - Duration::from_secs(60),
        ends_at: Some(now + Duration::from_secs(600)),
        generator_url: "http://127.0.0.1:9099/graph?g0.expr=up+%3D%3D+0".to_string(),
    }
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager_in_batches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_am, port) = start_alertmanager(dir.path()).await;
    let dead_port = scrape_support::free_port();

    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
        "alertmanagers:\n  - static_configs: [{{targets: ['127.0.0.1:{port}', '127.0.0.1:{dead_port}']}}]\n    timeout: 5s\n    api_version: v2\n"
    ))
    .expect("alerting config");
    notifier
        .apply_config(
            &cfg,
            &Labels::new([("cluster", "lab"), ("severity", "ignored")]),
        )
        .expect("apply config");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = notifier.clone();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });

    // 300 alerts: more than one batch of 256.
    notifier.send((0..300).map(alert).collect());

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let alerts = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let url = url.clone();
        async move {
            let body = client.get(&url).send().await.ok()?.bytes().await.ok()?;
            let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
            let arr = v.as_array()?.clone();
            (arr.len() == 300).then_some(arr)
        }
    })
    .await
    .expect("Alertmanager lists all 300 alerts");

    let one = alerts
        .iter()
        .find(|a| a["labels"]["instance"] == "host-7:9100")
        .expect("alert for host-7");
    assert_eq!(one["labels"]["cluster"], "lab", "external label added");
    assert_eq!(
        one["labels"]["severity"], "critical",
        "alert label not overridden"
    );
    assert_eq!(one["annotations"]["summary"], "host-7 is down");
    assert_eq!(
        one["generatorURL"],
        "http://127.0.0.1:9099/graph?g0.expr=up+%3D%3D+0"
    );
    assert_eq!(one["status"]["state"], "active");

    let _ = stop_tx.send(());
    task.await.expect("notifier task");

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    let sent = metric_value(
        &text,
        &format!(
            "prometheus_notifications_sent_total{{alertmanager=\"http://127.0.0.1:{port}/api/v2/alerts\"}}"
        ),
    );
    assert_eq!(sent, Some(300.0), "{text}");
    let errors = metric_value(
        &text,
        &format!(
            "prometheus_notifications_errors_total{{alertmanager=\"http://127.0.0.1:{dead_port}/api/v2/alerts\"}}"
        ),
    );
    assert_eq!(errors, Some(300.0), "{text}");
    assert_eq!(
        metric_value(&text, "prometheus_notifications_dropped_total"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&text, "prometheus_notifications_alertmanagers_discovered"),
        Some(2.0)
    );
}

#[tokio::test]
async fn full_queue_drops_oldest_and_counts() {
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(
        NotifierOptions {
            queue_capacity: 10,
            ..Default::default()
        },
        &mut registry,
    );
    notifier.send((0..25).map(alert).collect());
    assert_eq!(notifier.queue_len(), 10);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode metrics");
    assert_eq!(
        metric_value(&text, "prometheus_notifications_dropped_total"),
        Some(15.0)
    );
    assert_eq!(
        metric_value(&text, "prometheus_notifications_queue_length"),
        Some(10.0)
    );
}

#[test]
fn alerting_config_is_strict() {
    let err = serde_yaml_ng::from_str::<AlertingConfig>(
        "alertmanagers:\n  - static_configs: [{targets: [a]}]\n    api_version: v1\n",
    )
    .expect_err("v1 is gone");
    assert!(err.location().is_some(), "{err}");
    assert!(serde_yaml_ng::from_str::<AlertingConfig>("alertmanagerz: []\n").is_err());
}
