//! The scrape manager against an axum target on loopback: samples with target labels,
//! report series, staleness markers when a series vanishes and when the target is removed,
//! `up == 0` when the target fails, sample limits.

mod scrape_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_promql::storage::{Queryable, SeriesData, Storage, StorageOptions, is_stale};
use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use scrape_support::eventually;

#[derive(Default)]
struct TargetState {
    status: u16,
    content_type: String,
    body: String,
    last_headers: Option<HeaderMap>,
}

type Shared = Arc<Mutex<TargetState>>;

async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> (StatusCode, HeaderMap, String) {
    let mut st = s.lock().expect("lock");
    st.last_headers = Some(headers);
    let mut h = HeaderMap::new();
    if let Ok(v) = st.content_type.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    (
        StatusCode::from_u16(st.status).unwrap_or(StatusCode::OK),
        h,
        st.body.clone(),
    )
}

async fn start_target(body: &str) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(TargetState {
        status: 200,
        content_type: "text/plain; version=0.0.4".into(),
        body: body.into(),
        last_headers: None,
    }));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    (scrape_support::serve_loopback(app).await, state)
}

fn select(storage: &Storage, name: &str) -> Vec<SeriesData> {
    storage.select(
        &[Matcher::new(MatchOp::Equal, "__name__", name)],
        0,
        i64::MAX,
    )
}

fn last(storage: &Storage, name: &str) -> Option<f64> {
    select(storage, name)
        .first()
        .and_then(|s| s.samples.last())
        .map(|s| s.v)
}

fn config(yaml: &str) -> Vec<ScrapeConfig> {
    serde_yaml_ng::from_str(yaml).expect("scrape config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_store_samples_and_mark_staleness() {
    let (addr, target) = start_target(
        "# TYPE requests_total counter\nrequests_total{path=\"/\",job=\"app\"} 7\ntemperature 21.5\n",
    )
    .await;
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs = config(&format!(
        "- job_name: app\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n  static_configs: [{{targets: ['{addr}'], labels: {{env: test}}}}]\n"
    ));
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");

    let series = eventually(Duration::from_secs(20), || {
        let s = select(&storage, "requests_total");
        async move { (!s.is_empty()).then_some(s) }
    })
    .await
    .expect("requests_total scraped");
    let l = &series[0].labels;
    assert_eq!(l.get("job"), Some("app"));
    assert_eq!(
        l.get("exported_job"),
        Some("app"),
        "honor_labels false renames"
    );
    assert_eq!(l.get("instance"), Some(addr.as_str()));
    assert_eq!(l.get("env"), Some("test"));
    assert_eq!(series[0].samples[0].v, 7.0);
    let up = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "up");
        async move { v }
    })
    .await;
    assert_eq!(up, Some(1.0));
    assert_eq!(last(&storage, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(
        last(&storage, "scrape_samples_post_metric_relabeling"),
        Some(2.0)
    );
    let up_series = select(&storage, "up");
    assert_eq!(up_series[0].labels.get("env"), Some("test"));
    {
        let st = target.lock().expect("lock");
        let h = st.last_headers.as_ref().expect("scraped");
        assert_eq!(h["x-prometheus-scrape-timeout-seconds"], "0.15");
        assert!(
            h[header::ACCEPT]
                .to_str()
                .unwrap_or("")
                .contains("application/openmetrics-text")
        );
    }

    // temperature disappears: its last sample becomes a staleness marker.
    target.lock().expect("lock").body = "requests_total{path=\"/\"} 9\n".into();
    let stale = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "temperature");
        async move { v.filter(|v| is_stale(*v)) }
    })
    .await;
    assert!(stale.is_some(), "temperature marked stale");

    // The target fails: up 0 and its series stale.
    target.lock().expect("lock").status = 500;
    let down = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "up");
        async move { v.filter(|v| *v == 0.0) }
    })
    .await;
    assert_eq!(down, Some(0.0));
    let t = manager.targets().await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].health.as_str(), "down");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(&format!(
            "lookout_scrape_target_up{{scrape_job=\"app\",instance=\"{addr}\"}} 0"
        )),
        "{text}"
    );
    assert!(t[0].last_error.contains("500"), "{}", t[0].last_error);
    let req = select(&storage, "requests_total");
    let req_last = req
        .iter()
        .find(|s| s.labels.get("exported_job").is_none())
        .and_then(|s| s.samples.last())
        .map(|s| s.v);
    assert!(
        req_last.is_some_and(is_stale),
        "failed scrape marks series stale"
    );

    // The target comes back in OpenMetrics, then is removed from the config: everything of
    // it, report series included, ends with a staleness marker.
    {
        let mut st = target.lock().expect("lock");
        st.status = 200;
        st.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8".into();
        st.body = "# TYPE om gauge\nom 3\n# EOF\n".into();
    }
    let om = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "om");
        async move { v }
    })
    .await;
    assert_eq!(om, Some(3.0));
    manager
        .apply(&[], &ScrapeDefaults::default())
        .await
        .expect("apply empty");
    for name in ["om", "up", "scrape_duration_seconds", "scrape_series_added"] {
        let v = last(&storage, name);
        assert!(
            v.is_some_and(is_stale),
            "{name} stale after target removal: {v:?}"
        );
    }
    assert!(manager.targets().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_parse_errors_and_metric_relabelling() {
    let (addr, target) = start_target("a 1\nb 2\nc 3\n").await;
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs = config(&format!(
        "- job_name: lim\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n  sample_limit: 2\n  metric_relabel_configs: [{{source_labels: [__name__], regex: c, action: drop}}]\n  static_configs: [{{targets: ['{addr}']}}]\n"
    ));
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");
    let up = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "up");
        async move { v }
    })
    .await;
    assert_eq!(
        up,
        Some(1.0),
        "c dropped by relabelling keeps the scrape under the limit"
    );
    assert_eq!(last(&storage, "scrape_samples_scraped"), Some(3.0));
    assert_eq!(
        last(&storage, "scrape_samples_post_metric_relabeling"),
        Some(2.0)
    );
    assert!(select(&storage, "c").is_empty());

    target.lock().expect("lock").body = "a 1\nb 2\nd 4\n".into();
    let failed = eventually(Duration::from_secs(20), || {
        let v = last(&storage, "up");
        async move { v.filter(|v| *v == 0.0) }
    })
    .await;
    assert_eq!(failed, Some(0.0), "sample limit exceeded fails the scrape");
    assert!(select(&storage, "d").is_empty());

    target.lock().expect("lock").body = "a 1\nb{x=\"unterminated} 2\n".into();
    let err = eventually(Duration::from_secs(20), || {
        let m = &manager;
        async move {
            let t = m.targets().await;
            t.first()
                .map(|t| t.last_error.clone())
                .filter(|e| e.contains("parse error"))
        }
    })
    .await
    .expect("parse error reported");
    assert!(err.contains("line 2"), "{err}");
    manager.stop().await;

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("prometheus_target_scrapes_exceeded_sample_limit_total"),
        "{text}"
    );
    assert!(
        text.contains("lookout_scrape_failures_total{scrape_job=\"lim\"}"),
        "{text}"
    ); // Stopped targets leave no health gauge behind.
    assert!(!text.contains("lookout_scrape_target_up{"), "{text}");
}
