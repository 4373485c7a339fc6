//! Remote mode with remote write against Debian's real `prometheus` (remote-write receiver
//! on): rule outputs appended to the remote datasource come back through its query API, so
//! recorded series and `ALERTS_FOR_STATE` survive on the server.

mod scrape_support;

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use lookout_evaluator::datasource::{Datasource, QuerySample};
use lookout_evaluator::remote::{RemoteConfig, RemoteDatasource};
use lookout_evaluator::remote_write::{RemoteWriteConfig, RemoteWriter};
use lookout_promql::Labels;
use prometheus_client::registry::Registry;
use scrape_support::{eventually, start_prometheus_with};

fn metric(registry: &Registry, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_outputs_reach_prometheus_by_remote_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_prom, port) =
        start_prometheus_with(dir.path(), &[], &["--web.enable-remote-write-receiver"]).await;
    let mut registry = Registry::default();
    let writer = RemoteWriter::start(
        RemoteWriteConfig::new(format!("http://127.0.0.1:{port}/api/v1/write")),
        &mut registry,
    )
    .expect("remote writer");
    let ds = RemoteDatasource::new(RemoteConfig::new(format!("http://127.0.0.1:{port}")))
        .expect("datasource")
        .with_remote_write(writer);
    assert!(ds.persists_rule_outputs());

    let now = SystemTime::now();
    let recorded = Labels::new([("__name__", "job:lookout_rw:sum"), ("job", "api")]);
    let for_state = Labels::new([
        ("__name__", "ALERTS_FOR_STATE"),
        ("alertname", "ServerDown"),
        ("instance", "a:1"),
    ]);
    // A second alert, resolved: its last sample is a staleness marker.
    let resolved = Labels::new([
        ("__name__", "ALERTS_FOR_STATE"),
        ("alertname", "ServerDown"),
        ("instance", "b:1"),
    ]);
    for (i, back) in [30u64, 15].into_iter().enumerate() {
        ds.append(
            &[
                QuerySample {
                    labels: recorded.clone(),
                    value: 5.0 + i as f64,
                    histogram: None,
                },
                QuerySample {
                    labels: for_state.clone(),
                    value: 1_700_000_000.0,
                    histogram: None,
                },
                QuerySample {
                    labels: resolved.clone(),
                    value: 1_700_000_000.0,
                    histogram: None,
                },
            ],
            now - Duration::from_secs(back),
        )
        .expect("append");
    }
    let marker = QuerySample {
        labels: resolved.clone(),
        value: lookout_promql::storage::STALE_NAN,
        histogram: None,
    };
    ds.append(&[marker], now).expect("append the marker");
    ds.flush_writes().await.expect("flush");

    let got = eventually(Duration::from_secs(20), || {
        let ds = &ds;
        async move {
            let s = ds
                .query("job:lookout_rw:sum", SystemTime::now())
                .await
                .ok()?;
            (!s.is_empty()).then_some(s)
        }
    })
    .await
    .expect("recorded series visible in Prometheus");
    assert_eq!(got[0].labels, recorded);
    assert_eq!(got[0].value, 6.0);
    let last = ds
        .last_samples(
            "ALERTS_FOR_STATE{alertname=\"ServerDown\"}",
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .await
        .expect("last samples");
    assert_eq!(last.len(), 2, "{last:?}");
    let active = last.iter().find(|s| s.labels == for_state).expect("active");
    assert_eq!(active.value, 1_700_000_000.0);
    // Prometheus leaves the marker out of the range result; the remote datasource finds it
    // (the series is absent just after its last sample) and reports it.
    let ended = last
        .iter()
        .find(|s| s.labels == resolved)
        .expect("resolved");
    assert!(lookout_promql::storage::is_stale(ended.value), "{ended:?}");
    assert_eq!(
        metric(&registry, "prometheus_remote_storage_samples_total"),
        Some(7.0)
    );
}

#[tokio::test]
async fn rejected_batches_are_counted_not_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let app = Router::new().route(
        "/write",
        post(|| async { (StatusCode::BAD_REQUEST, "out of bounds") }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut registry = Registry::default();
    let writer = RemoteWriter::start(
        RemoteWriteConfig::new(format!("http://{addr}/write")),
        &mut registry,
    )
    .expect("writer");
    writer.enqueue(
        &[QuerySample {
            labels: Labels::new([("__name__", "x")]),
            value: 1.0,
            histogram: None,
        }],
        1_000,
    );
    let err = writer.flush().await.expect_err("400 is reported");
    assert!(err.contains("out of bounds"), "{err}");
    assert_eq!(
        metric(&registry, "prometheus_remote_storage_samples_failed_total"),
        Some(1.0)
    );
    assert!(RemoteWriter::start(RemoteWriteConfig::new("localhost:9090"), &mut registry).is_err());
}
