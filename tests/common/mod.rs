//! Helpers shared by the end-to-end tests of the `lookout` package: free loopback ports, the
//! real `lookout` binary and Debian's `prometheus` / `prometheus-alertmanager` as child
//! processes that are killed when dropped (their logs are printed when a test fails),
//! bounded polling, and a loopback HTTP target that can be stopped and started again on the
//! same port.
#![allow(dead_code)]

pub mod crash;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `lookout` binary cargo built for these tests.
pub const LOOKOUT: &str = env!("CARGO_BIN_EXE_lookout");

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it; it is released at once,
/// so the process under test can bind it).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A child process, killed (SIGKILL) and reaped when dropped. Its stdout and stderr go to a
/// log file, whose tail is printed when the test is failing.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, logging to `<log_dir>/<name>.log` (appended, so a
    /// restarted process keeps the earlier log).
    pub fn spawn(name: &str, program: &str, args: &[String], log_dir: &Path) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log file");
        let err = file.try_clone().expect("clone the log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} ({name}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// Starts `lookout <args>`.
    pub fn lookout(name: &str, args: &[String], log_dir: &Path) -> Process {
        Process::spawn(name, LOOKOUT, args, log_dir)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 30 s for the process to exit; `None` if it did not.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        terminate(&mut self.child).await
    }

    /// The whole log of the process (and of earlier processes with the same name and
    /// directory).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last few kilobytes of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(6000);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {}'s log ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

/// Arguments of `lookout evaluator` with `dir/evaluator.yml` and the state file
/// `dir/state.json`, listening on 127.0.0.1:`port`, with data directory `storage` (empty:
/// memory only, never the default `data/` of the working directory, which two tests
/// running at once would fight over).
pub fn evaluator_args(dir: &Path, port: u16, storage: &str) -> Vec<String> {
    vec![
        "evaluator".to_string(),
        "--config.file".to_string(),
        dir.join("evaluator.yml").display().to_string(),
        "--web.listen-address".to_string(),
        format!("127.0.0.1:{port}"),
        "--rules.state-file".to_string(),
        dir.join("state.json").display().to_string(),
        format!("--storage.tsdb.path={storage}"),
    ]
}

/// `lookout up` on these addresses, memory only (not the per-user data directory of the
/// default `--storage.tsdb.path=auto`).
pub fn up_command(exporter: SocketAddr, evaluator: SocketAddr) -> Command {
    let mut cmd = Command::new(LOOKOUT);
    cmd.args([
        "up",
        "--storage.tsdb.path=",
        "--web.listen-address.exporter",
    ])
    .arg(exporter.to_string())
    .arg("--web.listen-address.evaluator")
    .arg(evaluator.to_string());
    cmd
}

/// An HTTP client with a per-request timeout, so a hung server cannot hang a test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("HTTP client")
}

/// GETs `url` and decodes JSON; `None` on any failure (connection refused while starting, …).
pub async fn get_json(url: &str) -> Option<Value> {
    let response = client().get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// GETs `url` with query parameters and decodes JSON, whatever the status (Prometheus API
/// errors come with a JSON body).
pub async fn get_json_with(url: &str, query: &[(&str, String)]) -> Result<Value, String> {
    json_of(client().get(url).query(query)).await
}

/// POSTs the parameters form-encoded (as Grafana's `httpMethod: POST` data sources query the
/// Prometheus API) and decodes JSON, whatever the status.
pub async fn post_json_with(url: &str, form: &[(&str, String)]) -> Result<Value, String> {
    json_of(client().post(url).form(form)).await
}

async fn json_of(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{status}: {e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )
    })
}

/// Status of a request with an empty body (`method` is `GET` or `POST`).
pub async fn status_of(method: &str, url: &str) -> Option<u16> {
    let request = match method {
        "POST" => client().post(url).body(""),
        _ => client().get(url),
    };
    Some(request.send().await.ok()?.status().as_u16())
}

/// Calls `check` every `every` until it returns `Some`, at most `tries` times; panics naming
/// `what` otherwise (with the `describe` of the last state, when given).
pub async fn eventually<T, F, Fut>(what: &str, tries: usize, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(every).await;
    }
    panic!(
        "gave up waiting for {what} ({tries} tries, every {} ms)",
        every.as_millis()
    );
}

/// Waits until `GET url` answers 200 (for `/-/ready`), for at most two minutes.
pub async fn wait_ready(what: &str, url: &str) {
    eventually(
        &format!("{what} to be ready at {url}"),
        480,
        Duration::from_millis(250),
        || async { (status_of("GET", url).await == Some(200)).then_some(()) },
    )
    .await;
}

/// Time as the Prometheus APIs print it (RFC 3339), as seconds since the epoch.
pub fn rfc3339_secs(value: &Value) -> f64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not an RFC 3339 time {text:?}: {e}"));
    time.timestamp() as f64 + f64::from(time.timestamp_subsec_nanos()) / 1e9
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path.display().to_string()
}

/// The repository root (where `rules/`, `dashboards/` and `deploy/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Debian's `prometheus` on 127.0.0.1 with temporary storage, the remote-write receiver
/// enabled, and `config` as its configuration. Returns when it is ready.
pub async fn start_prometheus(dir: &Path, config: &str) -> (Process, u16) {
    let port = free_port();
    let config_file = write_file(dir, "prometheus.yml", config);
    let process = Process::spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={config_file}"),
            format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver".to_string(),
            "--log.level=warn".to_string(),
        ],
        dir,
    );
    wait_ready("prometheus", &format!("http://127.0.0.1:{port}/-/ready")).await;
    (process, port)
}

/// Debian's `prometheus-alertmanager` on 127.0.0.1, without clustering, with temporary
/// storage and a route to a receiver that notifies nobody (alerts are read from its API).
/// Returns when it is ready.
pub async fn start_alertmanager(dir: &Path) -> (Process, u16) {
    start_alertmanager_to(dir, "- name: main\n").await
}

/// Debian's `prometheus-alertmanager` (see [`start_alertmanager`]) posting every
/// notification, resolved ones included, to the webhook `url`.
pub async fn start_alertmanager_webhook(dir: &Path, url: &str) -> (Process, u16) {
    let receiver = format!(
        "- name: main\n    webhook_configs:\n      - url: '{url}'\n        send_resolved: true\n"
    );
    start_alertmanager_to(dir, &receiver).await
}

/// Alertmanager with one receiver, `main`, defined by `receiver` (a YAML list item), every
/// alert in a group of its own (so a notification is about one alert) with one-second
/// waits and no repeats within the hour.
async fn start_alertmanager_to(dir: &Path, receiver: &str) -> (Process, u16) {
    let port = free_port();
    let config_file = write_file(
        dir,
        "alertmanager.yml",
        &format!(
            "route:
  receiver: main
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  {receiver}"
        ),
    );
    let process = Process::spawn(
        "alertmanager",
        "prometheus-alertmanager",
        &[
            format!("--config.file={config_file}"),
            format!("--storage.path={}", dir.join("alertmanager-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_string(),
            "--log.level=warn".to_string(),
        ],
        dir,
    );
    wait_ready("alertmanager", &format!("http://127.0.0.1:{port}/-/ready")).await;
    (process, port)
}

/// A running `lookout evaluator` and its base URL.
pub struct Evaluator {
    pub process: Process,
    pub base: String,
    pub port: u16,
}

/// Starts `lookout evaluator` with `dir/evaluator.yml`, the state file `dir/state.json` and
/// `extra` flags, on `port`; returns when it is ready.
pub async fn start_evaluator(dir: &Path, port: u16, extra: &[String]) -> Evaluator {
    start_evaluator_on(dir, port, "", extra).await
}

/// As [`start_evaluator`], with `--storage.tsdb.path=storage` (empty: memory only).
pub async fn start_evaluator_on(
    dir: &Path,
    port: u16,
    storage: &str,
    extra: &[String],
) -> Evaluator {
    let base = format!("http://127.0.0.1:{port}");
    let mut args = evaluator_args(dir, port, storage);
    args.extend(["--web.external-url".to_string(), base.clone()]);
    args.extend_from_slice(extra);
    let process = Process::lookout("evaluator", &args, dir);
    wait_ready("lookout evaluator", &format!("{base}/-/ready")).await;
    Evaluator {
        process,
        base,
        port,
    }
}

/// Whether the evaluator's `/metrics` shows that rule group `group` has restored its `for`
/// state (Prometheus's `prometheus_rule_group_last_restore_duration_seconds`).
pub async fn restored(base: &str, group: &str) -> bool {
    let Ok(response) = client().get(format!("{base}/metrics")).send().await else {
        return false;
    };
    let Ok(text) = response.text().await else {
        return false;
    };
    text.lines().any(|l| {
        l.starts_with("prometheus_rule_group_last_restore_duration_seconds{") && l.contains(group)
    })
}

/// `lookout exporter` with `config` on 127.0.0.1. Returns when it is ready.
pub async fn start_exporter(dir: &Path, config: &str) -> (Process, u16) {
    let port = free_port();
    let config_file = write_file(dir, "exporter.yml", config);
    let process = Process::lookout(
        "exporter",
        &[
            "exporter".to_string(),
            "--config.file".to_string(),
            config_file,
            "--web.listen-address".to_string(),
            format!("127.0.0.1:{port}"),
        ],
        dir,
    );
    wait_ready(
        "lookout exporter",
        &format!("http://127.0.0.1:{port}/-/ready"),
    )
    .await;
    (process, port)
}

/// The alerts of `GET {base}/api/v1/alerts` (the evaluator's, in Prometheus's shape).
pub async fn evaluator_alerts(base: &str) -> Option<Vec<Value>> {
    let body = get_json(&format!("{base}/api/v1/alerts")).await?;
    body["data"]["alerts"].as_array().cloned()
}

/// The alerts of Alertmanager's `GET /api/v2/alerts`.
pub async fn alertmanager_alerts(port: u16) -> Option<Vec<Value>> {
    get_json(&format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .await?
        .as_array()
        .cloned()
}

/// Whether `alert["labels"]` contains every pair of `labels`.
pub fn has_labels(alert: &Value, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| alert["labels"][*k].as_str() == Some(*v))
}

/// An instant query against a Prometheus-API server: the result vector, or the error.
pub async fn instant_query(base: &str, expr: &str) -> Result<Vec<Value>, String> {
    let body = get_json_with(
        &format!("{base}/api/v1/query"),
        &[("query", expr.to_string())],
    )
    .await?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// A loopback HTTP target (axum, `GET /` answers 200) that can be stopped — the port then
/// refuses connections — and started again on the same port.
pub struct HttpTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl HttpTarget {
    /// Starts a target on a free port.
    pub async fn start() -> HttpTarget {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target");
        let addr = listener.local_addr().expect("target address");
        let mut target = HttpTarget {
            addr,
            running: None,
        };
        target.serve(listener);
        target
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.running = Some((stop, task));
    }

    /// Stops serving: the listener is closed and open connections are shut down.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Serves again on the same port (retrying while the port is still being released).
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot serve the target on {} again: {e}", self.addr),
            }
        }
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

/// A child process started with its own `Command` (stdout piped, say); killed (SIGKILL) and
/// reaped when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Sends SIGTERM and waits up to 30 s for the process to exit; `None` if it did not.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        terminate(&mut self.0).await
    }
}

/// Sends SIGTERM to `child` and waits up to 30 s for it to exit; `None` if it did not.
async fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed: {status:?}");
    for _ in 0..300 {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A loopback address whose port was free a moment ago (see [`free_port`]).
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Status and body of one HTTP/1.0 GET, or `None` when the connection fails.
pub async fn raw_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `path` every 250 ms (at most `tries` times) until it answers 200 with a body that
/// `check` accepts; panics with the last answer otherwise.
pub async fn get_until(
    addr: SocketAddr,
    path: &str,
    tries: usize,
    check: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..tries {
        if let Some((200, body)) = raw_get(addr, path).await {
            if check(&body) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("gave up waiting on {path}; last answer:\n{last}");
}

/// The lines a child prints on its (piped) stdout, read on a thread.
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most 60 s between lines) until a line containing `marker` is printed; returns
/// every line read, that one included.
pub fn wait_for_line(rx: &std::sync::mpsc::Receiver<String>, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("never printed {marker:?}; got {seen:?}"));
        let done = line.contains(marker);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// The value of the first sample of `name` whose labels include all of `labels`, in a
/// Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// A loopback UDP nameserver answering every question with one A record for `answer`.
pub async fn nameserver(answer: std::net::Ipv4Addr) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind dns");
    let addr = socket.local_addr().expect("dns address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = hickory_proto::op::Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = hickory_proto::op::Message::new();
            reply
                .set_id(query.id())
                .set_message_type(hickory_proto::op::MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_response_code(hickory_proto::op::ResponseCode::NoError);
            reply.add_queries(query.queries().to_vec());
            for question in query.queries() {
                reply.add_answer(hickory_proto::rr::Record::from_rdata(
                    question.name().clone(),
                    60,
                    hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(answer)),
                ));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// A loopback `/metrics` target exposing gauges whose values the test sets.
pub struct GaugeTarget {
    /// `host:port` it listens on.
    pub addr: String,
    series: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, f64>>>,
}

impl GaugeTarget {
    /// Serves `series` (e.g. `up_gauge{name="a"}`) with `value` each.
    pub async fn start(series: &[&str], value: f64) -> GaugeTarget {
        let map: std::collections::BTreeMap<String, f64> =
            series.iter().map(|s| (s.to_string(), value)).collect();
        let series = std::sync::Arc::new(std::sync::Mutex::new(map));
        let shown = series.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let shown = shown.clone();
                async move {
                    let map = shown.lock().expect("gauges").clone();
                    map.iter()
                        .map(|(s, v)| format!("{s} {v}\n"))
                        .collect::<String>()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gauge target");
        let addr = listener.local_addr().expect("target address").to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GaugeTarget { addr, series }
    }

    /// Sets the value of one series.
    pub fn set(&self, series: &str, value: f64) {
        self.series
            .lock()
            .expect("gauges")
            .insert(series.to_string(), value);
    }
}

/// A loopback receiver of Alertmanager's webhook notifications (`POST /hook`).
pub struct WebhookReceiver {
    /// The URL to configure in Alertmanager.
    pub url: String,
    payloads: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free port.
    pub async fn start() -> WebhookReceiver {
        let payloads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = payloads.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let kept = kept.clone();
                async move { kept.lock().expect("payloads").push(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { url, payloads }
    }

    /// The alerts of every notification so far whose `status` is `status` (`firing` or
    /// `resolved`) and whose labels include `labels`, in the order received.
    pub fn alerts(&self, status: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        let payloads = self.payloads.lock().expect("payloads");
        payloads
            .iter()
            .flat_map(|p| p["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == status && has_labels(a, labels))
            .collect()
    }

    /// Waits (two minutes at most) until a notification of `status` for `labels` arrived.
    pub async fn wait_for(&self, status: &str, labels: &[(&str, &str)]) -> Value {
        eventually(
            &format!("a {status} notification for {labels:?} at the webhook"),
            600,
            Duration::from_millis(200),
            || async { self.alerts(status, labels).into_iter().next() },
        )
        .await
    }
}

/// Whether `program` is an executable file in a directory of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Debian's `victoria-metrics` (single node) on 127.0.0.1 with temporary storage, scraping
/// as `scrape_config` (Prometheus's schema) says and accepting remote write on
/// `/api/v1/write`. Returns when it is healthy. Flags that differ from its defaults:
///
/// * `-search.latencyOffset=0s`: by default an instant query at "now" is answered as of 30 s
///   ago (data younger than that is taken as incomplete), so a rule would see a flipped
///   gauge, its own recorded series and `ALERTS_FOR_STATE` half a minute late.
/// * `-retentionPeriod=1d`: the shortest retention; the data is thrown away with the test.
///
/// Not settable in 1.79: a new series becomes searchable 5-10 s after it is written (the
/// index is flushed that often); new samples of a known series within a second.
///
/// Left at their defaults: deduplication (off on a single node: every remote-written sample
/// is kept), the look-back of a selector (derived from the series' sample interval instead of
/// Prometheus's fixed 5 minutes) and staleness markers (stored, but a range selector returns
/// them as a plain `NaN`).
pub async fn start_victoria_metrics(dir: &Path, scrape_config: &str) -> (Process, u16) {
    let port = free_port();
    let config_file = write_file(dir, "victoria-metrics.yml", scrape_config);
    let process = Process::spawn(
        "victoria-metrics",
        "victoria-metrics",
        &[
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-storageDataPath={}", dir.join("vm-data").display()),
            "-retentionPeriod=1d".to_string(),
            "-search.latencyOffset=0s".to_string(),
            format!("-promscrape.config={config_file}"),
            "-loggerLevel=WARN".to_string(),
        ],
        dir,
    );
    wait_ready(
        "victoria-metrics",
        &format!("http://127.0.0.1:{port}/health"),
    )
    .await;
    (process, port)
}
