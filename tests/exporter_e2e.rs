//! End to end: the real `lookout exporter` binary against loopback HTTP targets.
//!
//! A load balancer and an app behind it are served by one loopback server; stopping it takes
//! both down, and the exporter must show `up 0` for both and mark the app as blocked by the
//! load balancer. A broken reload must keep the old configuration; a heartbeat must go down
//! after its silence; SIGTERM must stop the process cleanly. A real Prometheus (Debian's
//! `prometheus` package) scrapes it with `honor_labels: true` and through `/probe`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_lookout");

/// The exporter process; killed if the test fails before stopping it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Status and body of one HTTP/1.0 request, or `None` when the connection fails.
async fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `/metrics` every 100 ms (at most `tries` times) until `check` accepts it.
async fn metrics_until(
    addr: SocketAddr,
    what: &str,
    tries: usize,
    check: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..tries {
        if let Some((200, body)) = http(addr, "GET", "/metrics").await {
            if check(&body) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}; last /metrics:\n{last}");
}

async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

fn start(config: &Path, addr: SocketAddr) -> Process {
    let child = Command::new(BIN)
        .args(["exporter", "--config.file"])
        .arg(config)
        .args(["--web.listen-address", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout exporter");
    Process(child)
}

fn signal(process: &Process, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &process.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn config(lb: SocketAddr) -> String {
    format!(
        "modules:
  http_quick:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
targets:
  - name: lb
    module: http_quick
    target: http://{lb}/
    interval: 200ms
  - name: app
    module: http_quick
    target: http://{lb}/app
    interval: 200ms
    labels:
      job: shop
      tier: web
    depends_on: [lb]
heartbeats:
  - name: backup
    max_silence: 1s
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_sees_an_outage_and_its_cascade() {
    // The load balancer and the app behind it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let lb = listener.local_addr().expect("target address");
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "lb ok" }))
        .route("/app", axum::routing::get(|| async { "app ok" }));
    let target = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("exporter.yml");
    std::fs::write(&path, config(lb)).expect("write config");
    let addr = free_port().await;
    let mut process = start(&path, addr);

    let up = |instance: &'static str, value: f64| {
        move |m: &str| sample(m, "up", &[("instance", instance)]) == Some(value)
    };
    let metrics = metrics_until(addr, "lb and app up", 150, |m| {
        up("lb", 1.0)(m) && up("app", 1.0)(m)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "up",
            &[("job", "shop"), ("instance", "app"), ("tier", "web")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "up", &[("job", "http_quick"), ("instance", "lb")]),
        Some(1.0)
    );

    // A blackbox-style probe through the binary.
    let (status, body) = http(
        addr,
        "GET",
        &format!("/probe?module=http_quick&target=http://{lb}/"),
    )
    .await
    .expect("probe");
    assert_eq!(status, 200);
    assert_eq!(sample(&body, "probe_success", &[]), Some(1.0), "{body}");

    // Heartbeat: a push shows up, then its silence takes it down.
    assert_eq!(
        http(addr, "POST", "/heartbeat/backup").await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http(addr, "POST", "/heartbeat/unknown").await.map(|r| r.0),
        Some(404)
    );
    let metrics = metrics_until(addr, "heartbeat pushed", 20, |m| {
        sample(
            m,
            "lookout_heartbeat_last_seen_timestamp_seconds",
            &[("name", "backup")],
        )
        .is_some()
    })
    .await;
    assert!(
        metrics.contains("up{job=\"heartbeat\",instance=\"backup\"}"),
        "{metrics}"
    );
    metrics_until(addr, "silent heartbeat down", 100, |m| {
        sample(m, "up", &[("job", "heartbeat"), ("instance", "backup")]) == Some(0.0)
    })
    .await;

    // The outage: both down, the app blocked by the load balancer.
    target.abort();
    let metrics = metrics_until(addr, "app blocked by lb", 150, |m| {
        sample(
            m,
            "lookout_target_blocked",
            &[("instance", "app"), ("blocked_by", "lb")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(&metrics, "up", &[("instance", "lb")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "up", &[("instance", "app")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "lookout_target_blocked", &[("instance", "lb")]),
        None,
        "the root cause is not blocked: {metrics}"
    );

    // A broken configuration is refused and the old one keeps running.
    std::fs::write(
        &path,
        "modules:\n  http_quick:\n    prober: http\n    timeout: soon\n",
    )
    .expect("write broken config");
    let (status, body) = http(addr, "POST", "/-/reload").await.expect("reload");
    assert_eq!(status, 500);
    assert!(body.contains("exporter.yml:4:"), "{body}");
    let metrics = metrics_until(addr, "reload failure published", 50, |m| {
        sample(m, "lookout_exporter_config_last_reload_successful", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(&metrics, "up", &[("instance", "app")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "lookout_exporter_targets", &[]),
        Some(2.0),
        "{metrics}"
    );

    // SIGHUP reloads a fixed file: one more target.
    let extra = format!(
        "{}  - name: extra\n    module: http_quick\n    target: http://{lb}/extra\n    interval: 200ms\n",
        config(lb).replace("heartbeats:\n  - name: backup\n    max_silence: 1s\n", "")
    );
    std::fs::write(&path, extra).expect("write fixed config");
    signal(&process, "HUP");
    metrics_until(addr, "SIGHUP reload with three targets", 50, |m| {
        sample(m, "lookout_exporter_config_last_reload_successful", &[]) == Some(1.0)
            && sample(m, "lookout_exporter_targets", &[]) == Some(3.0)
    })
    .await;

    // SIGTERM stops it cleanly.
    signal(&process, "TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Ok(Some(status)) = process.0.try_wait() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("exporter exits after SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn config_check_validates_and_names_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yml");
    std::fs::write(
        &good,
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 1s\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["exporter", "--config.check", "--config.file"])
        .arg(&good)
        .output()
        .expect("run lookout");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{out:?}"
    );

    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "modules:\n  tcp_connect:\n    prober: tcp\n    timeuot: 1s\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["exporter", "--config.check", "--config.file"])
        .arg(&bad)
        .output()
        .expect("run lookout");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yml:4:"), "{stderr}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exporter.yml");
    let out = Command::new(BIN)
        .args(["exporter", "--config.check", "--config.file"])
        .arg(&example)
        .output()
        .expect("run lookout");
    assert!(out.status.success(), "{out:?}");
}

/// Queries Prometheus' HTTP API (instant query) and returns the raw JSON.
async fn prometheus_query(prometheus: SocketAddr, encoded_query: &str) -> Option<String> {
    let (status, body) = http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={encoded_query}"),
    )
    .await?;
    (status == 200).then_some(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_targets_with_honor_labels_and_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let app_addr = listener.local_addr().expect("target address");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let exporter_config = dir.path().join("exporter.yml");
    std::fs::write(
        &exporter_config,
        format!(
            "modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
targets:
  - name: app
    module: http_2xx
    target: http://{app_addr}/
    interval: 200ms
    labels:
      job: shop
"
        ),
    )
    .expect("write exporter config");
    let exporter = free_port().await;
    let _exporter = start(&exporter_config, exporter);

    let prometheus = free_port().await;
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: lookout
    honor_labels: true
    static_configs:
      - targets: ['{exporter}']
  - job_name: blackbox
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: ['http://{app_addr}/']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: '{exporter}'
"
        ),
    )
    .expect("write prometheus config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", prometheus_config.display()))
        .arg(format!("--web.listen-address={prometheus}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's prometheus is installed (apt-get install prometheus)");
    let _prometheus = Process(child);

    // The exporter's own job/instance labels survive the scrape (honor_labels).
    let mut last = String::new();
    let mut seen_up = false;
    for _ in 0..300 {
        if let Some(body) = prometheus_query(
            prometheus,
            "up%7Bjob%3D%22shop%22%2Cinstance%3D%22app%22%7D%20%3D%3D%201",
        )
        .await
        {
            if body.contains("\"instance\":\"app\"") {
                seen_up = true;
                break;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen_up,
        "Prometheus never saw up{{job=\"shop\",instance=\"app\"}} 1: {last}"
    );

    // The blackbox-style /probe job works unchanged.
    let mut seen_probe = false;
    for _ in 0..100 {
        if let Some(body) = prometheus_query(
            prometheus,
            "probe_success%7Bjob%3D%22blackbox%22%7D%20%3D%3D%201",
        )
        .await
        {
            if body.contains("\"job\":\"blackbox\"") {
                seen_probe = true;
                break;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_probe, "Prometheus never saw probe_success 1: {last}");
}
