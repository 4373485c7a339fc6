//! End to end: examples/outage/ run as shipped (addresses, intervals and waits rewritten to
//! free loopback ports and seconds) with the shipped rules. The service chain
//! shop -> lb -> api is served by loopback HTTP targets and the two resolvers by loopback
//! nameservers. When the API goes down (taking lb and shop with it), the root cause's page
//! reaches the critical receiver and lb and shop page nobody — through Lookout's own routing
//! and, side by side, through Debian's Alertmanager running examples/outage/alertmanager.yml
//! — and the page resolves when the API is back.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use common::{HttpTarget, Process, free_port, nameserver, repo_root, wait_ready, write_file};

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Records every webhook POST to `/{source}/{receiver}`.
async fn webhook_receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    async fn hook(
        State(r): State<Received>,
        axum::extract::Path((source, receiver)): axum::extract::Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        r.lock()
            .expect("lock")
            .push((format!("{source}/{receiver}"), v));
        StatusCode::OK
    }
    let app = axum::Router::new()
        .route("/{source}/{receiver}", axum::routing::post(hook))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

/// Replaces every `(from, to)` in `text`, each of which must occur.
fn rewrite(name: &str, mut text: String, pairs: &[(&str, String)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from), "{name} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// The alerts of every notification `source` sent to `receiver`: (status, alertname, instance).
fn notified(received: &Received, path: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (p, v) in received.lock().expect("lock").iter() {
        if p != path {
            continue;
        }
        for a in v["alerts"].as_array().into_iter().flatten() {
            out.push((
                a["status"].as_str().unwrap_or("").to_string(),
                a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                a["labels"]["instance"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out
}

fn instances_notified(received: &Received) -> Vec<String> {
    let paths: Vec<String> = received
        .lock()
        .expect("lock")
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    let mut out: Vec<String> = paths
        .iter()
        .flat_map(|p| notified(received, p))
        .map(|(_, _, i)| i)
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn wait_for<F: Fn() -> bool>(what: &str, limit: Duration, f: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until both Lookout's and Alertmanager's pager receivers were told that api's
/// ServerDown is `status`.
async fn api_paged_on_both_paths(received: &Received, status: &str) {
    for source in ["lookout", "am"] {
        let path = format!("{source}/pager");
        wait_for(
            &format!("{path}: api {status}"),
            Duration::from_secs(60),
            || {
                notified(received, &path)
                    .iter()
                    .any(|(s, a, i)| s == status && a == "ServerDown" && i == "api")
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_pages_the_root_cause_only_and_resolves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = repo_root().join("examples/outage");
    let read = |f: &str| std::fs::read_to_string(example.join(f)).expect("example file");

    let mut api = HttpTarget::start().await;
    let mut lb = HttpTarget::start().await;
    let mut shop = HttpTarget::start().await;
    let answer = Ipv4Addr::new(192, 0, 2, 10);
    let (dns_a, dns_b) = (nameserver(answer).await, nameserver(answer).await);
    let (hooks, received) = webhook_receiver().await;
    let (exporter_port, evaluator_port, am_port) = (free_port(), free_port(), free_port());

    // The shipped rules, with `for: 1m` shortened so the test takes seconds.
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    for entry in std::fs::read_dir(repo_root().join("rules")).expect("rules") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if name.ends_with(".rules.yml") {
            let text = std::fs::read_to_string(&path).expect("rule file");
            std::fs::write(rules_dir.join(&name), text.replace("for: 1m", "for: 8s"))
                .expect("write rules");
        }
    }

    let exporter = rewrite(
        "exporter.yml",
        read("exporter.yml"),
        &[
            ("http://127.0.0.1:8081/", format!("http://{}/", api.addr)),
            ("http://127.0.0.1:8082/", format!("http://{}/", lb.addr)),
            ("http://127.0.0.1:8080/", format!("http://{}/", shop.addr)),
            ("127.0.0.53:53", dns_a.to_string()),
            ("127.0.0.54:53", dns_b.to_string()),
            ("interval: 15s", "interval: 1s".to_string()),
        ],
    );
    let webhook_base = format!("http://{hooks}");
    let evaluator = rewrite(
        "evaluator.yml",
        read("evaluator.yml"),
        &[
            ("127.0.0.1:9115", format!("127.0.0.1:{exporter_port}")),
            ("http://127.0.0.1:9099/", format!("{webhook_base}/lookout/")),
            ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
            (
                "evaluation_interval: 15s",
                "evaluation_interval: 1s".to_string(),
            ),
            ("group_wait: 30s", "group_wait: 3s".to_string()),
            ("group_interval: 5m", "group_interval: 2s".to_string()),
            (
                "../../rules/*.rules.yml",
                format!("{}/*.rules.yml", rules_dir.display()),
            ),
            // Side by side: the same alerts also go to an Alertmanager.
            (
                "alerting:\n",
                format!(
                    "alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n"
                ),
            ),
        ],
    );
    let alertmanager = rewrite(
        "alertmanager.yml",
        read("alertmanager.yml"),
        &[
            ("http://127.0.0.1:9099/", format!("{webhook_base}/am/")),
            ("group_wait: 30s", "group_wait: 3s".to_string()),
            ("group_interval: 5m", "group_interval: 2s".to_string()),
        ],
    );
    let exporter_file = write_file(dir.path(), "exporter.yml", &exporter);
    let evaluator_file = write_file(dir.path(), "evaluator.yml", &evaluator);
    let am_file = write_file(dir.path(), "alertmanager.yml", &alertmanager);

    // The example's Alertmanager configuration is valid for Alertmanager itself.
    let check = std::process::Command::new("amtool")
        .args(["check-config", &am_file])
        .output()
        .expect("amtool");
    assert!(check.status.success(), "{check:?}");

    let _am = Process::spawn(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={am_file}"),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_string(),
        ],
        dir.path(),
    );
    let _exporter = Process::lookout(
        "exporter",
        &[
            "exporter".into(),
            "--config.file".into(),
            exporter_file,
            "--web.listen-address".into(),
            format!("127.0.0.1:{exporter_port}"),
        ],
        dir.path(),
    );
    let _evaluator = Process::lookout(
        "evaluator",
        &[
            "evaluator".into(),
            "--config.file".into(),
            evaluator_file,
            "--web.listen-address".into(),
            format!("127.0.0.1:{evaluator_port}"),
            // Not the default data/ of the working directory.
            "--rules.state-file".into(),
            dir.path().join("alerts-state.json").display().to_string(),
            "--storage.tsdb.path=".into(),
        ],
        dir.path(),
    );
    wait_ready(
        "alertmanager",
        &format!("http://127.0.0.1:{am_port}/-/ready"),
    )
    .await;
    wait_ready(
        "exporter",
        &format!("http://127.0.0.1:{exporter_port}/-/ready"),
    )
    .await;
    wait_ready(
        "evaluator",
        &format!("http://127.0.0.1:{evaluator_port}/-/ready"),
    )
    .await;

    // Healthy for a while: no notification at all (the DNS targets resolve, the heartbeat
    // is within its max_silence).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        received.lock().expect("lock").is_empty(),
        "{:?}",
        received.lock().expect("lock")
    );

    // The API goes down, and with it lb and shop.
    api.stop().await;
    lb.stop().await;
    shop.stop().await;
    api_paged_on_both_paths(&received, "firing").await;
    // The dependants were blocked and muted: a few more group intervals, still nothing
    // about lb or shop anywhere.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let evaluator_alerts = common::evaluator_alerts(&format!("http://127.0.0.1:{evaluator_port}"))
        .await
        .unwrap_or_default();
    assert!(
        evaluator_alerts.iter().any(|a| common::has_labels(
            a,
            &[
                ("alertname", "ServerBlocked"),
                ("instance", "shop"),
                ("blocked_by", "lb")
            ]
        ) && a["state"] == "firing"),
        "the rules see shop blocked by lb: {evaluator_alerts:?}"
    );
    assert_eq!(
        instances_notified(&received),
        ["api"],
        "{:?}",
        received.lock().expect("lock")
    );

    // The API is back, then the load balancer, then the shop, each a couple of seconds
    // after the other (shorter than `for`): while lb is still down but no longer blocked,
    // shop is still blocked by lb and nothing about lb fires yet.
    api.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    lb.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shop.restart().await;
    api_paged_on_both_paths(&received, "resolved").await;
    // Lookout's dependency inhibition holds through the recovery. (Alertmanager's inhibit
    // rule cannot: in that gap no ServerDown fires, so it may tell team-chat about shop.)
    let lookout_only: Received = Arc::new(Mutex::new(
        received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p.starts_with("lookout/"))
            .cloned()
            .collect(),
    ));
    assert_eq!(
        instances_notified(&lookout_only),
        ["api"],
        "{:#?}",
        received.lock().expect("lock")
    );
    let lookout_pages = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _)| p == "lookout/pager")
        .count();
    assert_eq!(lookout_pages, 2, "one page, one resolution");
    assert!(Path::new(&dir.path().join("evaluator.yml")).exists());
}
