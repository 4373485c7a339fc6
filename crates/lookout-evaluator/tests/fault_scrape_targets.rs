//! Hostile scrape targets against the embedded scraper on loopback: garbage, duplicate
//! series, a series with a thousand labels, a body over `body_size_limit` and one announced
//! larger than the machine's memory. Each scrape
//! fails or drops what it must (`up` 0, the error kept for `/api/v1/targets`), the matching
//! counter goes up, nothing crashes, and the target recovers when it answers sensibly again.

mod scrape_support;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_promql::storage::{Queryable, Storage, StorageOptions};
use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use scrape_support::eventually;

type Body = Arc<Mutex<Vec<u8>>>;

async fn start_target(body: Body) -> String {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(b): State<Body>| async move { b.lock().unwrap().clone() }),
        )
        .with_state(body);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

fn last(storage: &Storage, name: &str) -> Option<f64> {
    storage
        .select(
            &[Matcher::new(MatchOp::Equal, "__name__", name)],
            0,
            i64::MAX,
        )
        .first()
        .and_then(|s| s.samples.last())
        .map(|s| s.v)
}

fn counter(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until the last scrape's `up` is `want`.
async fn wait_up(storage: &Storage, want: f64) {
    let got = eventually(Duration::from_secs(20), || {
        let v = last(storage, "up");
        async move { v.filter(|v| *v == want) }
    })
    .await;
    assert_eq!(got, Some(want), "up never became {want}");
}

/// A scrape manager over a memory-only storage, running one job that scrapes `addr` every
/// 200 ms with the job settings `extra` (YAML lines at the job's indentation).
async fn scrape_job(addr: &str, job: &str, extra: &str) -> (Arc<Storage>, Registry, ScrapeManager) {
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&format!(
        "- job_name: {job}\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n  {extra}\n  static_configs: [{{targets: ['{addr}']}}]\n"
    ))
    .unwrap();
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .unwrap();
    (storage, registry, manager)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_duplicates_label_floods_and_huge_bodies_are_bounded_and_counted() {
    let body: Body = Arc::new(Mutex::new(b"ok 1\n".to_vec()));
    let addr = start_target(body.clone()).await;
    let (storage, registry, manager) =
        scrape_job(&addr, "hostile", "label_limit: 30\n  body_size_limit: 1MB").await;
    wait_up(&storage, 1.0).await;
    let set = |b: Vec<u8>| *body.lock().unwrap() = b;

    // Garbage: binary noise is a parse error, not a crash.
    set(b"\x00\xff\xfe{{{ not metrics \x7f\n\x01".to_vec());
    wait_up(&storage, 0.0).await;
    let targets = manager.targets().await;
    assert!(
        !targets[0].last_error.is_empty(),
        "the scrape error is kept for /api/v1/targets"
    );
    set(b"ok 1\n".to_vec());
    wait_up(&storage, 1.0).await;

    // Duplicate series in one scrape: the first sample is kept, the others are counted.
    let dup_before = counter(
        &registry,
        "prometheus_target_scrapes_sample_out_of_order_total",
    );
    set(b"dup 1\ndup 2\ndup 3\nok 1\n".to_vec());
    let dup = eventually(Duration::from_secs(20), || {
        let n = counter(
            &registry,
            "prometheus_target_scrapes_sample_out_of_order_total",
        );
        async move { (n > dup_before).then_some(n) }
    })
    .await;
    assert!(dup.is_some(), "duplicate samples are counted");
    assert!(last(&storage, "dup").is_some());

    // A thousand labels on one series: over label_limit, the scrape is refused and counted.
    let mut flood = String::from("flood{");
    for i in 0..1000 {
        let _ = write!(flood, "l{i}=\"v\",");
    }
    flood.push_str("} 1\n");
    set(flood.into_bytes());
    wait_up(&storage, 0.0).await;
    assert!(
        counter(
            &registry,
            "prometheus_target_scrape_pool_exceeded_label_limits_total"
        ) >= 1.0
    );
    assert!(last(&storage, "flood").is_none());
    assert!(
        manager.targets().await[0]
            .last_error
            .contains("label_limit"),
        "the error names the limit"
    );

    // A 4 MB body: over body_size_limit (1 MB), refused and counted.
    let mut big = String::with_capacity(4 << 20);
    let mut i = 0u64;
    while big.len() < 4 << 20 {
        let _ = writeln!(big, "big_{i} {i}");
        i += 1;
    }
    set(big.into_bytes());
    let hit = eventually(Duration::from_secs(20), || {
        let n = counter(
            &registry,
            "prometheus_target_scrapes_exceeded_body_size_limit_total",
        );
        async move { (n >= 1.0).then_some(n) }
    })
    .await;
    assert!(hit.is_some(), "the body size limit hit is counted");
    assert_eq!(last(&storage, "up"), Some(0.0));
    assert!(last(&storage, "big_0").is_none());
    assert!(
        manager.targets().await[0]
            .last_error
            .contains("body size limit")
    );

    // And it recovers.
    set(b"ok 1\n".to_vec());
    wait_up(&storage, 1.0).await;
    manager.stop().await;
}

/// A target that announces a body of 2⁶¹ bytes (under a job's limit set as high as it goes)
/// and sends five: the scraper's up-front allocation for the announced size is refused by
/// the allocator, which must not abort the process; the scrape fails on the short body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_body_larger_than_memory_is_no_crash() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                            Content-Length: 2305843009213693952\r\n\r\nok 1\n";
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    let (storage, _registry, manager) =
        scrape_job(&addr.to_string(), "huge", "body_size_limit: 4000000TB").await;
    wait_up(&storage, 0.0).await;
    let error = eventually(Duration::from_secs(20), || {
        let m = &manager;
        async move {
            let e = m.targets().await[0].last_error.clone();
            (!e.is_empty()).then_some(e)
        }
    })
    .await;
    assert!(error.is_some(), "the short body is the scrape's error");
    assert!(last(&storage, "ok").is_none());
    manager.stop().await;
}
