//! Helpers shared by the scrape, notifier, remote and web tests: free loopback ports, real
//! Prometheus/Alertmanager processes killed on drop, polling with a deadline.
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `at` as Prometheus's `time` parameter.
pub fn unix(at: SystemTime) -> String {
    let d = at.duration_since(UNIX_EPOCH).expect("after 1970");
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// The result vector of an instant query of `expr` at `at` over `base`'s API, each
/// element keyed by its labels without `__name__`.
pub async fn instant_query(
    base: &str,
    expr: &str,
    at: SystemTime,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let body = reqwest::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr), ("time", &unix(at))])
        .send()
        .await
        .expect("query")
        .bytes()
        .await
        .expect("answer");
    let reply: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(reply["status"], "success", "{base}: {expr}: {reply}");
    let mut out = std::collections::BTreeMap::new();
    for mut e in reply["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let Some(m) = e["metric"].as_object_mut() {
            m.remove("__name__");
        }
        out.insert(e["metric"].to_string(), e);
    }
    out
}

/// An instant query's float result: each element's labels (without `__name__`) → its value.
pub async fn instant_values(
    base: &str,
    expr: &str,
    at: SystemTime,
) -> std::collections::BTreeMap<String, f64> {
    let result = instant_query(base, expr, at).await;
    result
        .into_iter()
        .map(|(k, e)| {
            let v = e["value"][1].as_str().expect("a float sample");
            (k, v.parse().expect("a number"))
        })
        .collect()
}

/// Scrapes `jobs` (a YAML list of scrape configs) into an in-memory storage whose query API
/// it serves; returns the manager and the API's base URL.
pub async fn scrape_into_served_storage(
    jobs: &str,
) -> (lookout_evaluator::scrape::ScrapeManager, String) {
    use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
    use lookout_promql::storage::{Storage, StorageOptions};
    let storage = std::sync::Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = prometheus_client::registry::Registry::default();
    let manager = lookout_evaluator::scrape::ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(jobs).expect("scrape configs");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");
    let mut state =
        lookout_evaluator::web::WebState::new(lookout_evaluator::web::shared_registry(registry));
    state.storage = Some(storage);
    (manager, serve_api(state).await)
}

/// Waits up to 30 s for each (base URL, query) to answer something now.
pub async fn wait_for_answers(queries: &[(&str, &str)]) {
    for &(base, q) in queries {
        let stored = eventually(Duration::from_secs(30), || async {
            let got = instant_query(base, q, SystemTime::now()).await;
            (!got.is_empty()).then_some(())
        })
        .await;
        assert!(stored.is_some(), "{base} answered nothing to {q}");
    }
}

/// Serves `app` on a fresh loopback port in the background; returns `host:port`.
pub async fn serve_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr.to_string()
}

/// Serves `body(n)` with `content_type` at `/metrics` for the `n`th request (from 1) on a
/// fresh loopback port; returns `host:port` and the count of requests.
pub async fn serve_scrapes(
    content_type: &'static str,
    body: impl Fn(u64) -> Vec<u8> + Clone + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let scrapes = std::sync::Arc::new(AtomicU64::new(0));
    let counter = scrapes.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let body = body(n);
            async move { ([("content-type", content_type)], body) }
        }),
    );
    (serve_loopback(app).await, scrapes)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local address").port()
}

/// A child process killed when dropped.
pub struct ProcessGuard(pub Child);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` with `args`, stdout/stderr to `log` in `dir`.
pub fn spawn(program: &str, args: &[String], dir: &Path) -> ProcessGuard {
    let log = std::fs::File::create(dir.join(format!("{program}.log"))).expect("create log file");
    let log2 = log.try_clone().expect("clone log handle");
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (Debian package): {e}"));
    ProcessGuard(child)
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `url` answers 200.
pub async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let ok = eventually(Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        }
    })
    .await;
    assert!(ok.is_some(), "{url} did not become ready");
}

/// Starts Debian's `prometheus-alertmanager` on a loopback port with clustering off.
pub async fn start_alertmanager(dir: &Path) -> (ProcessGuard, u16) {
    start_alertmanager_with(
        dir,
        "route:\n  receiver: blackhole\n  group_wait: 1h\nreceivers:\n  - name: blackhole\n",
    )
    .await
}

/// Starts Debian's Alertmanager in `dir` with `config` (written to `dir/alertmanager.yml`)
/// on a free loopback port, without clustering; returns when it is ready.
pub async fn start_alertmanager_with(dir: &Path, config: &str) -> (ProcessGuard, u16) {
    let port = free_port();
    std::fs::write(dir.join("alertmanager.yml"), config).expect("write alertmanager config");
    std::fs::create_dir_all(dir.join("am-data")).expect("create storage dir");
    let args = vec![
        "--config.file=alertmanager.yml".to_string(),
        "--storage.path=am-data".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let guard = spawn("prometheus-alertmanager", &args, dir);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
    (guard, port)
}

/// Runs `notifier` in the background until the returned sender is used (or dropped).
pub fn run_notifier(
    notifier: &lookout_evaluator::notifier::NotifierManager,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let n = notifier.clone();
    let task = tokio::spawn(async move {
        n.run(async {
            let _ = rx.await;
        })
        .await
    });
    (tx, task)
}

/// Starts Debian's `prometheus` on a loopback port scraping `targets` every second.
pub async fn start_prometheus(dir: &Path, targets: &[String]) -> (ProcessGuard, u16) {
    start_prometheus_with(dir, targets, &[]).await
}

/// [`start_prometheus`] with extra flags (e.g. `--web.enable-remote-write-receiver`).
pub async fn start_prometheus_with(
    dir: &Path,
    targets: &[String],
    extra: &[&str],
) -> (ProcessGuard, u16) {
    let port = free_port();
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: target\n    static_configs: [{{targets: [{list}]}}]\n"
        ),
    )
    .expect("write prometheus config");
    let args = vec![
        "--config.file=prometheus.yml".to_string(),
        "--storage.tsdb.path=prom-data".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
    let guard = spawn("prometheus", &args, dir);
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
    (guard, port)
}

/// Serves the evaluator's web API for `state` on a fresh loopback port; returns its base URL.
pub async fn serve_api(state: lookout_evaluator::web::WebState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let router = lookout_evaluator::web::router(state);
    tokio::spawn(async move {
        let _ = lookout_evaluator::web::serve(listener, router, std::future::pending()).await;
    });
    base
}

/// Starts Debian's `prometheus` with `config` as its configuration file in `dir`; returns it
/// and its base URL once ready.
pub async fn start_prometheus_config(dir: &Path, config: &str) -> (ProcessGuard, String) {
    start_prometheus_config_with(dir, config, &[]).await
}

/// [`start_prometheus_config`] with extra flags (e.g. `--enable-feature=native-histograms`).
pub async fn start_prometheus_config_with(
    dir: &Path,
    config: &str,
    extra: &[&str],
) -> (ProcessGuard, String) {
    let port = free_port();
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    let mut args = vec![
        "--config.file=prometheus.yml".to_string(),
        "--storage.tsdb.path=prom-data".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let guard = spawn("prometheus", &args, dir);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/-/ready")).await;
    (guard, base)
}
