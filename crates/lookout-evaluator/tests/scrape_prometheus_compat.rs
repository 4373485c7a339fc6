//! The scraper side by side with Debian's real `prometheus`: both scrape the same loopback
//! target with the same `scrape_configs` (the blackbox multi-target relabelling, params,
//! metric relabelling, conflicting labels), and must store the same series (label sets)
//! with the same values and report series.

mod scrape_support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::RawQuery;
use axum::http::header;
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::registry::Registry;
use scrape_support::eventually;
use serde_json::Value;

const TEXT_BODY: &str = "# HELP probe_success Whether the probe worked.\n\
# TYPE probe_success gauge\n\
probe_success 1\n\
probe_duration_seconds{phase=\"connect\"} 0.002\n\
probe_duration_seconds{phase=\"tls\"} 0.01\n\
conflicting{job=\"inner\",instance=\"inner:1\",exported_job=\"x\"} 3\n\
dropped_by_relabelling{tmp=\"1\"} 9\n";

const OM_BODY: &str = "# TYPE requests counter\n\
# HELP requests Requests.\n\
requests_total{path=\"/a\"} 10 # {trace_id=\"abc\"} 1.0\n\
requests_created{path=\"/a\"} 1700000000.5\n\
# TYPE build info\n\
build_info{version=\"1.2\"} 1\n\
# TYPE temp_celsius gauge\n\
# UNIT temp_celsius celsius\n\
temp_celsius 21.5\n\
# EOF\n";

async fn target() -> String {
    let app = Router::new()
        .route(
            "/probe",
            get(|RawQuery(q): RawQuery| async move {
                // Echo the parameters so a wrong URL shows up as different series.
                let q = q.unwrap_or_default();
                // An explicit timestamp a few seconds old (Prometheus rejects old ones).
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64 - 3_000)
                    .unwrap_or(0);
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    format!("{TEXT_BODY}params{{query={q:?}}} 1\nwith_ts 5 {ts}\n"),
                )
            }),
        )
        .route(
            "/om",
            get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    OM_BODY,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn scrape_configs(addr: &str) -> String {
    format!(
        r#"
  - job_name: blackbox
    scrape_interval: 1s
    scrape_timeout: 900ms
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: ["https://example.org/health?x=1", "tcp://db:5432"]
        labels: {{team: web}}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: "{addr}"
      - source_labels: [__param_target]
        regex: "(https?)://.*"
        target_label: scheme
        replacement: "${{1}}"
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: dropped_by_.*
        action: drop
      - regex: exported_job
        action: labeldrop
  - job_name: om
    scrape_interval: 1s
    scrape_timeout: 900ms
    honor_labels: true
    metrics_path: /om
    static_configs:
      - targets: ["{addr}"]
"#
    )
}

async fn series(client: &reqwest::Client, base: &str) -> Option<Vec<Value>> {
    let r = client
        .get(format!(
            "{base}/api/v1/series?match[]=%7Bjob%3D~%22blackbox%7Com%22%7D"
        ))
        .send()
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    let mut list = v["data"].as_array()?.clone();
    list.sort_by_key(|x| x.to_string());
    Some(list)
}

async fn instant(client: &reqwest::Client, base: &str, q: &str) -> Option<Vec<Value>> {
    let r = client
        .post(format!("{base}/api/v1/query"))
        .form(&[("query", q)])
        .send()
        .await
        .ok()?;
    let v: Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    let mut list: Vec<Value> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| serde_json::json!([s["metric"], s["value"][1]]))
        .collect();
    list.sort_by_key(|x| x.to_string());
    Some(list)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraper_stores_what_prometheus_stores() {
    let addr = target().await;
    let cfg_text = scrape_configs(&addr);

    // Prometheus.
    let dir = tempfile::tempdir().expect("temp dir");
    let (_prom, theirs) =
        scrape_support::start_prometheus_config(dir.path(), &format!("scrape_configs:{cfg_text}"))
            .await;

    // Lookout.
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&cfg_text).expect("scrape configs");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");
    let mut state = WebState::new(shared_registry(registry));
    state.storage = Some(storage);
    let ours = scrape_support::serve_api(state).await;

    // Both have scraped every target at least twice.
    let client = reqwest::Client::new();
    for base in [&ours, &theirs] {
        let ok = eventually(Duration::from_secs(30), || {
            let client = client.clone();
            let base = base.clone();
            async move {
                let v = instant(&client, &base, "count_over_time(up[1m]) >= 2").await?;
                (v.len() == 3).then_some(())
            }
        })
        .await;
        assert!(ok.is_some(), "{base} scraped all targets twice");
    }

    let a = series(&client, &ours).await.expect("our series");
    let b = series(&client, &theirs).await.expect("Prometheus's series");
    let names = |l: &[Value]| -> Vec<String> { l.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        names(&a),
        names(&b),
        "\nours:       {a:#?}\nprometheus: {b:#?}"
    );
    assert!(a.len() > 20, "{a:#?}");

    for q in [
        "up",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "{job=~\"blackbox|om\", __name__!~\"up|scrape_.*|with_ts\"}",
    ] {
        let x = instant(&client, &ours, q).await.expect("ours");
        let y = instant(&client, &theirs, q).await.expect("theirs");
        assert_eq!(x, y, "{q}");
    }
    manager.stop().await;
}
