//! Service discovery side by side with Debian's real `prometheus` (2.42): the same
//! `file_sd_configs` (globbed JSON and YAML files) and `http_sd_configs` with the same
//! relabelling; both `/api/v1/targets` must list the same targets with the same discovered
//! labels and the same labels after relabelling, after a file changes, and after a file
//! breaks and the HTTP endpoint fails (both keep the last good lists).

mod scrape_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::registry::Registry;
use serde_json::Value;

/// `(pool, discoveredLabels, labels)` of every active target, sorted.
async fn targets(client: &reqwest::Client, base: &str) -> Option<BTreeSet<String>> {
    let text = client
        .get(format!("{base}/api/v1/targets"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let active = v["data"]["activeTargets"].as_array()?;
    Some(
        active
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}",
                    t["scrapePool"], t["discoveredLabels"], t["labels"]
                )
            })
            .collect(),
    )
}

fn scrape_configs(dir: &str, http: &str) -> String {
    format!(
        r#"
  - job_name: files
    scrape_interval: 1m
    file_sd_configs:
      - files: ['{dir}/sd/*.json', '{dir}/sd/*.yml']
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: '.*/([^/]+)\.(json|yml)'
        target_label: source_file
      - source_labels: [__address__]
        regex: '([^:]+):(\d+)'
        target_label: port
        replacement: '$2'
      - source_labels: [env]
        regex: drop
        action: drop
  - job_name: http
    scrape_interval: 1m
    http_sd_configs:
      - url: http://{http}/sd
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_url]
        target_label: sd_url
      - source_labels: [__address__]
        target_label: __param_target
      - target_label: __address__
        replacement: 127.0.0.1:9
"#
    )
}

/// Waits until both lists are equal and have `n` targets (Prometheus applies discovery
/// updates at most every 5 s); returns ours.
async fn same(client: &reqwest::Client, ours: &str, theirs: &str, n: usize) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let a = targets(client, ours).await.unwrap_or_default();
        let b = targets(client, theirs).await.unwrap_or_default();
        if a == b && a.len() == n {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "\nours:       {a:#?}\nprometheus: {b:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_targets_match_prometheus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("sd")).expect("sd dir");
    std::fs::write(
        dir.path().join("sd/a.json"),
        r#"[{"targets":["127.0.0.1:1","127.0.0.1:2"],"labels":{"env":"prod","team":"web"}},
            {"targets":["127.0.0.1:3"],"labels":{"env":"drop"}}]"#,
    )
    .expect("write a.json");
    std::fs::write(
        dir.path().join("sd/b.yml"),
        "- targets: ['localhost:4']\n  labels: {env: dev}\n- targets: ['127.0.0.1:5']\n",
    )
    .expect("write b.yml");

    // The HTTP SD endpoint: its body is switched by the test; "" answers 500.
    let body = Arc::new(Mutex::new(
        r#"[{"targets":["db1:9100","db2:9100"],"labels":{"role":"db"}}]"#.to_string(),
    ));
    let app = Router::new()
        .route(
            "/sd",
            get(|State(b): State<Arc<Mutex<String>>>| async move {
                let b = b.lock().unwrap().clone();
                if b.is_empty() {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [("content-type", "text/plain")],
                        b,
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/json")],
                        b,
                    )
                }
            }),
        )
        .with_state(body.clone());
    let http = scrape_support::serve_loopback(app).await;
    let cfg_text = scrape_configs(&root, &http);

    // Prometheus.
    let (_prom, theirs) =
        scrape_support::start_prometheus_config(dir.path(), &format!("scrape_configs:{cfg_text}"))
            .await;

    // Lookout.
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
    // a.json: 2 kept (the env=drop group is dropped); b.yml: 2; HTTP: 2.
    let first = same(&client, &ours, &theirs, 6).await;
    assert!(
        first
            .iter()
            .any(|t| t.contains("__meta_filepath") && t.contains("source_file")),
        "{first:#?}"
    );

    // A file changes; the HTTP list changes.
    std::fs::write(
        dir.path().join("sd/b.yml"),
        "- targets: ['localhost:4', 'localhost:6']\n  labels: {env: dev}\n",
    )
    .expect("rewrite b.yml");
    *body.lock().unwrap() = r#"[{"targets":["db3:9100"]}]"#.to_string();
    same(&client, &ours, &theirs, 6).await;

    // A broken file and a failing endpoint: both keep the last good lists.
    std::fs::write(dir.path().join("sd/b.yml"), "- targets: [unclosed\n").expect("break b.yml");
    *body.lock().unwrap() = String::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    same(&client, &ours, &theirs, 6).await;
    let metrics = client
        .get(format!("{ours}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for name in [
        "prometheus_sd_file_read_errors_total",
        "prometheus_sd_http_failures_total",
    ] {
        let v: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
            .trim()
            .parse()
            .expect("number");
        assert!(v >= 1.0, "{name} = {v}");
    }
}
