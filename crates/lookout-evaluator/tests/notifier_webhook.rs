//! Webhooks against an axum receiver on loopback: Alertmanager-shaped payloads, Slack bodies,
//! and no repeated posts for alerts the rule manager merely re-sends.

mod scrape_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::notifier::{AlertingConfig, NotifierManager, NotifierOptions};
use lookout_promql::Labels;
use prometheus_client::registry::Registry;

type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    async fn hook(
        State(r): State<Received>,
        axum::extract::Path(name): axum::extract::Path<String>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        if name == "broken" {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        r.lock().expect("lock").push((name, v));
        StatusCode::OK
    }
    let app = Router::new()
        .route("/{name}", post(hook))
        .with_state(received.clone());
    let addr = scrape_support::serve_loopback(app).await;
    (format!("http://{addr}"), received)
}

fn alert(ends_in: i64) -> Alert {
    let now = SystemTime::now();
    let ends = if ends_in >= 0 {
        now + Duration::from_secs(ends_in as u64)
    } else {
        now - Duration::from_secs((-ends_in) as u64)
    };
    Alert {
        labels: Labels::new([("alertname", "HighLatency"), ("instance", "web-1")]),
        annotations: BTreeMap::from([("summary".to_string(), "slow responses".to_string())]),
        starts_at: now - Duration::from_secs(300),
        ends_at: Some(ends),
        generator_url: "http://lookout/graph".into(),
    }
}

#[tokio::test]
async fn webhook_payloads_and_deduplication() {
    let (base, received) = receiver().await;
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(
        NotifierOptions {
            external_url: "http://lookout.example:9099".into(),
            ..Default::default()
        },
        &mut registry,
    );
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
        "webhooks:\n  - {{url: '{base}/am', name: ops}}\n  - {{url: '{base}/slack', format: slack}}\n  - {{url: '{base}/broken'}}\n"
    ))
    .expect("config");
    notifier
        .apply_config(&cfg, &Labels::new([("region", "eu")]))
        .expect("apply");

    notifier.send(vec![alert(600)]);
    notifier.flush().await;
    // The rule manager re-sends the same firing alert a minute later: nothing new is posted.
    notifier.send(vec![alert(600)]);
    notifier.flush().await;
    // Then it resolves.
    notifier.send(vec![alert(-1)]);
    notifier.flush().await;

    let got = received.lock().expect("lock").clone();
    let am: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(n, _)| n == "am")
        .map(|(_, v)| v)
        .collect();
    let slack: Vec<&serde_json::Value> = got
        .iter()
        .filter(|(n, _)| n == "slack")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(am.len(), 2, "{got:?}");
    assert_eq!(am[0]["version"], "4");
    assert_eq!(am[0]["status"], "firing");
    assert_eq!(am[0]["receiver"], "ops");
    assert_eq!(am[0]["externalURL"], "http://lookout.example:9099");
    assert_eq!(am[0]["alerts"][0]["labels"]["region"], "eu");
    assert_eq!(
        am[0]["alerts"][0]["annotations"]["summary"],
        "slow responses"
    );
    assert_eq!(am[0]["commonLabels"]["alertname"], "HighLatency");
    assert_eq!(am[1]["status"], "resolved");
    assert_eq!(am[1]["alerts"][0]["status"], "resolved");
    assert_eq!(slack.len(), 2);
    let text = slack[0]["text"].as_str().expect("text");
    assert!(text.starts_with("[FIRING:1] HighLatency"), "{text}");
    assert!(text.contains("slow responses"), "{text}");
    assert!(
        slack[1]["text"]
            .as_str()
            .expect("text")
            .starts_with("[RESOLVED:1]")
    );

    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).expect("encode");
    assert!(
        metrics.contains(&format!(
            "prometheus_notifications_errors_total{{alertmanager=\"{base}/broken\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("prometheus_notifications_sent_total{alertmanager=\"ops\"} 2"),
        "{metrics}"
    );
}
