//! `kubernetes_sd_configs` end to end through scrape configurations: the evaluator discovers
//! pods and services from a loopback replay of the Kubernetes API (the fixtures of
//! `lookout-discovery/tests/kubernetes/`), relabels them to a loopback metrics endpoint and
//! scrapes it; `/api/v1/targets` shows Prometheus's discovered labels and the relabelled
//! ones, and follows watch events.
//!
//! Not compared with Debian's `prometheus`: its 2.42 package is built without the
//! Kubernetes discovery (it refuses `kubernetes_sd_configs`), so there is no peer to run.

mod scrape_support;

#[path = "../../lookout-discovery/tests/kubernetes/replay.rs"]
mod replay;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::registry::Registry;
use replay::{Replay, event, fixture};
use serde_json::Value;

fn scrape_configs(api: &str, metrics: &str) -> String {
    let job = |role: &str| {
        format!(
            "
  - job_name: k8s-{role}
    scrape_interval: 1s
    kubernetes_sd_configs:
      - role: {role}
        api_server: http://{api}
        namespaces: {{names: [default]}}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: http
        action: drop
      - source_labels: [__address__]
        target_label: discovered_address
      - regex: __meta_kubernetes_(namespace|pod_name|pod_container_name|service_name)
        action: labelmap
        replacement: k8s_$1
      - target_label: __address__
        replacement: {metrics}"
        )
    };
    job("pod") + &job("service")
}

async fn active_targets(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let text = client
        .get(format!("{base}/api/v1/targets"))
        .send()
        .await
        .expect("targets")
        .text()
        .await
        .expect("targets text");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls the active targets until `f` holds.
async fn until(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = active_targets(client, base).await;
        if f(&t) {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: targets now {t:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_address<'a>(t: &'a [Value], addr: &str) -> Option<&'a Value> {
    t.iter()
        .find(|t| t["discoveredLabels"]["__address__"] == addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_services_are_discovered_relabelled_and_scraped() {
    let api = Replay::start().await;
    let metrics = scrape_support::serve_loopback(
        Router::new().route("/metrics", get(|| async { "probe_value 1\n" })),
    )
    .await;
    let cfg_text = scrape_configs(&api.addr.to_string(), &metrics);
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = Arc::new(ScrapeManager::new(storage.clone(), &mut registry, 0));
    manager.watch_discovery();
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&cfg_text).expect("scrape configs");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");
    let mut state = WebState::new(shared_registry(registry));
    state.storage = Some(storage);
    state.scrape = Some(manager.clone());
    let ours = scrape_support::serve_api(state).await;
    let client = reqwest::Client::new();

    // default: the web pod's 3 targets left after dropping the `http` port, and the web
    // service's 2 ports (namespace `jobs` is not watched).
    let t = until(&client, &ours, "5 targets, scraped", |t| {
        t.len() == 5 && t.iter().all(|t| t["health"] == "up")
    })
    .await;
    let metrics_port = by_address(&t, "10.244.1.17:9113").expect("pod metrics port");
    let d = &metrics_port["discoveredLabels"];
    assert_eq!(d["__meta_kubernetes_pod_name"], "web-7d4b9c8f6-x2x9p");
    assert_eq!(d["__meta_kubernetes_pod_container_port_name"], "metrics");
    assert_eq!(d["__meta_kubernetes_pod_controller_kind"], "ReplicaSet");
    assert_eq!(
        d["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "web"
    );
    assert_eq!(d["job"], "k8s-pod");
    let l = &metrics_port["labels"];
    assert_eq!(l["k8s_namespace"], "default");
    assert_eq!(l["k8s_pod_container_name"], "web");
    assert_eq!(l["discovered_address"], "10.244.1.17:9113");
    assert_eq!(l["instance"], metrics.as_str());
    let svc = by_address(&t, "web.default.svc:9113").expect("service port");
    assert_eq!(
        svc["discoveredLabels"]["__meta_kubernetes_service_cluster_ip"],
        "10.96.12.34"
    );
    assert_eq!(svc["labels"]["k8s_service_name"], "web");
    assert_eq!(svc["scrapePool"], "k8s-service");

    // A new pod arrives by watch (once it is open), the old one goes.
    for _ in 0..200 {
        if !api.calls("pods").1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut added = fixture("pods.json")["items"][0].clone();
    added["metadata"]["name"] = "web-7d4b9c8f6-q8w2z".into();
    added["metadata"]["resourceVersion"] = "1001".into();
    added["status"]["podIP"] = "10.244.2.9".into();
    api.push("pods", event("ADDED", &added));
    until(&client, &ours, "the new pod", |t| {
        t.len() == 8 && by_address(t, "10.244.2.9:9113").is_some()
    })
    .await;
    let old = fixture("pods.json")["items"][0].clone();
    api.push("pods", event("DELETED", &old));
    let t = until(&client, &ours, "the old pod gone", |t| t.len() == 5).await;
    assert!(by_address(&t, "10.244.1.17:9113").is_none(), "{t:#?}");
    let (lists, _) = api.calls("pods");
    assert!(
        lists
            .iter()
            .all(|l| l.starts_with("/api/v1/namespaces/default/pods?")),
        "{lists:?}"
    );
}
