//! End to end: the evaluator's status page, read in a real headless browser (Debian's
//! `chromium`, which CI installs; the test fails without it).
//!
//! `lookout up --config.dir` runs exporter and evaluator with a loopback HTTP server as the
//! target `lb` and an app behind it (`app`, `depends_on: [lb]`), and the shipped rules.
//! The server is stopped; once ServerDown is active for `lb`, Chromium loads `/` and the test
//! asserts what a person reads there: the target down, the alert and its summary, and `lb`
//! as the root cause with `app` blocked by it; a blackbox-style `/probe` job of the same
//! target shows down although its scrape succeeds. A label value that is an HTML injection must
//! show as text. A second evaluator in remote mode, querying the first one's Prometheus API,
//! must show the same outage on its own page.
//!
//! Before the outage the page draws the dependency tree (`lb` with `app` under it), the
//! uptime and a response-time sparkline of each target. During it, besides the cascade:
//! critical alerts of root causes before the warning of the blocked `app`; `checkout`
//! answering 503 shows `invalid_status_code (HTTP 503)`; the heartbeat that stopped pushing
//! is silent, with its last push and max_silence; two resolvers answering `shop.example.`
//! differently (a fixture's `dns_answer_info`, the exporter's series) are listed side by
//! side; alerts that cannot reach the (closed) alertmanager and a rule file broken before a
//! SIGHUP become banners. `/graph` plots `up` as an inline SVG with its instant table, and
//! shows a parse error with its column.
//!
//! `docs/status-page.png` is made by `tests/browser/screenshot.sh` (a demo outage with
//! realistic names), with the same browser flags. With `LOOKOUT_SCREENSHOTS=<dir>` this
//! test also keeps its screenshots there: `status-all-up.png`, `status-outage.png`,
//! `graph.png`.

mod common;

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    ChildGuard as Process, LOOKOUT as BIN, free_addr, get_until, stdout_lines, wait_for_line,
};
use tokio::net::TcpListener;

const HOSTILE: &str = "<script>alert(1)</script>";

struct Addrs {
    target: SocketAddr,
    fixture: SocketAddr,
    exporter: SocketAddr,
    evaluator: SocketAddr,
    alertmanager: SocketAddr,
}

const EXTRA_RULES: &str = "groups:\n  - name: extra\n    rules: []\n";

fn write_configs(dir: &Path, a: &Addrs) {
    let Addrs {
        target,
        fixture,
        exporter,
        evaluator,
        alertmanager,
    } = a;
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/*.rules.yml");
    std::fs::create_dir_all(dir.join("extra")).expect("extra rules dir");
    std::fs::write(dir.join("extra/extra.rules.yml"), EXTRA_RULES).expect("extra rules");
    std::fs::write(
        dir.join("exporter.yml"),
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
    target: http://{target}/
    interval: 500ms
    labels:
      job: shop
      team: '{HOSTILE}'
  - name: app
    module: http_quick
    target: http://{target}/app
    interval: 500ms
    labels:
      job: shop
    depends_on: [lb]
  - name: evaluator-health
    module: http_quick
    target: http://{evaluator}/-/healthy
    interval: 500ms
    labels:
      job: lookout-evaluator
  - name: checkout
    module: http_quick
    target: http://{fixture}/checkout
    interval: 500ms
    labels:
      job: shop
heartbeats:
  - name: nightly-backup
    max_silence: 30s
"
        ),
    )
    .expect("write exporter.yml");
    std::fs::write(
        dir.join("evaluator.yml"),
        format!(
            "global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
rule_files:
  - '{}'
  - extra/*.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{alertmanager}']
scrape_configs:
  - job_name: dns-fixture
    honor_labels: true
    static_configs:
      - targets: ['{fixture}']
  - job_name: lookout-exporter-metrics
    honor_labels: true
    static_configs:
      - targets: ['{exporter}']
  - job_name: blackbox-probe
    metrics_path: /probe
    params:
      module: [http_quick]
      target: ['http://{target}/']
    static_configs:
      - targets: ['{exporter}']
",
            rules.display()
        ),
    )
    .expect("write evaluator.yml");
}

/// Runs `chromium` with `args` (headless, no network features, its own profile), failing
/// the test when it is missing or does not finish within two minutes.
fn chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): install Debian's `chromium` package")
        });
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut out);
        out
    });
    let mut process = Process(child);
    let mut status = None;
    for _ in 0..1200 {
        if let Some(s) = process.0.try_wait().expect("wait for chromium") {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.expect("chromium did not finish within 2 minutes");
    assert!(status.success(), "chromium failed: {status:?}");
    reader.join().expect("chromium output")
}

/// The text a person reads: tags dropped, character references decoded, whitespace
/// collapsed. Text inside `<style>` and `<head>` is not shown and is dropped too.
fn visible_text(html: &str) -> String {
    let body = html.split_once("<body").map(|(_, b)| b).unwrap_or(html);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Always up: `/checkout` answers 200 until `broken` is set, then 503; `/metrics` has the
/// exporter's `dns_answer_info` series of two resolvers that disagree.
async fn serve_fixture(listener: TcpListener, broken: Arc<AtomicBool>) {
    let app = axum::Router::new()
        .route(
            "/checkout",
            axum::routing::get(move || {
                let broken = broken.clone();
                async move {
                    if broken.load(Ordering::SeqCst) {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "maintenance")
                    } else {
                        (axum::http::StatusCode::OK, "checkout")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|| async {
                "# TYPE dns_answer_info gauge
dns_answer_info{instance=\"resolver-a\",domain=\"shop.example.\",nameserver=\"192.0.2.53\",answer=\"192.0.2.10\"} 1
dns_answer_info{instance=\"resolver-b\",domain=\"shop.example.\",nameserver=\"198.51.100.53\",answer=\"203.0.113.99\"} 1
"
            }),
        );
    let _ = axum::serve(listener, app).await;
}

/// A full-page screenshot of `url`, kept in `$LOOKOUT_SCREENSHOTS/<name>` when set.
fn screenshot(tmp: &Path, url: &str, name: &str, height: u32) {
    let shot = tmp.join(name);
    chromium(
        &tmp.join(format!("profile-{name}")),
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size=1280,{height}"),
            url.to_string(),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    if let Some(dir) = std::env::var_os("LOOKOUT_SCREENSHOTS") {
        std::fs::copy(&shot, Path::new(&dir).join(name)).expect("keep screenshot");
    }
}

/// The part of `text` from `from` to `to` (exclusive), or all of it from `from`.
fn between<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} in {text}"));
    let rest = &text[start..];
    rest.find(to).map(|end| &rest[..end]).unwrap_or(rest)
}

async fn serve_target(listener: TcpListener, stop: tokio::sync::oneshot::Receiver<()>) {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "load balancer" }))
        .route("/app", axum::routing::get(|| async { "app" }));
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_an_outage_to_a_person_in_a_browser() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let target_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = target_listener.local_addr().expect("address");
    let (stop_target, stopped) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_target(target_listener, stopped));

    let fixture_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fixture = fixture_listener.local_addr().expect("address");
    let broken = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve_fixture(fixture_listener, broken.clone()));

    let exporter = free_addr();
    let evaluator = free_addr();
    // Nothing listens there: every notification fails.
    let alertmanager = free_addr();
    write_configs(
        tmp.path(),
        &Addrs {
            target,
            fixture,
            exporter,
            evaluator,
            alertmanager,
        },
    );
    let mut child = common::up_command(exporter, evaluator)
        .arg("--config.dir")
        .arg(tmp.path())
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout up");
    let lines = stdout_lines(&mut child);
    let mut up = Process(child);
    wait_for_line(&lines, "status page");

    let pushed = common::client()
        .post(format!("http://{exporter}/heartbeat/nightly-backup"))
        .send()
        .await
        .expect("push the heartbeat");
    assert!(pushed.status().is_success(), "{pushed:?}");

    // Healthy first: the page says so, and draws the dependency tree and the pictures.
    let query_up = "/api/v1/query?query=up%7Binstance%3D~%22lb%7Capp%7Ccheckout%22%7D%20%3D%3D%201";
    get_until(evaluator, query_up, 200, |b| {
        b.contains(r#""instance":"lb""#)
            && b.contains(r#""instance":"app""#)
            && b.contains(r#""instance":"checkout""#)
    })
    .await;
    get_until(evaluator, "/", 200, |b| {
        b.contains("<svg class=\"spark\"") && b.contains("<ul class=\"tree\">")
    })
    .await;
    let url = format!("http://{evaluator}/");
    let dom = chromium(
        &tmp.path().join("profile-up"),
        &["--dump-dom".to_string(), url.clone()],
    );
    let text = visible_text(&dom);
    let tree = between(&text, "Dependencies", "Heartbeats");
    assert!(tree.contains("up lb up app"), "dependency tree: {tree}");
    // (The blackbox-style /probe job fails from the start: the exporter refuses loopback
    // targets on /probe.)
    assert!(!text.contains("Root cause: lb"), "{text}");
    assert!(text.contains("up lb shop"), "{text}");
    assert!(text.contains("100% · 100%"), "uptime: {text}");
    assert!(dom.contains("<svg class=\"spark\""), "sparkline: {dom}");
    assert!(text.contains("up nightly-backup"), "heartbeat: {text}");
    screenshot(tmp.path(), &url, "status-all-up.png", 1500);

    // The outage: the server behind lb and app stops, checkout answers 503, the heartbeat
    // is not pushed again, and a rule file breaks before a reload.
    broken.store(true, Ordering::SeqCst);
    std::fs::write(
        tmp.path().join("extra/extra.rules.yml"),
        "groups:\n  - name: extra\n    rules:\n      - alert: Broken\n        expr: up ==\n",
    )
    .expect("break the extra rules");
    let hup = Command::new("kill")
        .args(["-HUP", &up.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success());
    let _ = stop_target.send(());
    server.await.expect("target server");
    get_until(evaluator, "/api/v1/alerts", 240, |b| {
        b.contains(r#""alertname":"ServerDown""#)
            && b.contains(r#""instance":"lb""#)
            && b.contains(r#""alertname":"ServerBlocked""#)
    })
    .await;

    get_until(
        evaluator,
        "/api/v1/query?query=probe_success%20%3D%3D%200",
        240,
        |b| b.contains(r#""job":"blackbox-probe""#),
    )
    .await;

    get_until(evaluator, "/", 240, |b| {
        b.contains("Notifications failed")
            && b.contains("Reloading the configuration failed")
            && b.contains("invalid_status_code (HTTP 503)")
            && b.contains("silent")
    })
    .await;

    // What a person reads in the browser.
    let dom = chromium(
        &tmp.path().join("profile-dom"),
        &["--dump-dom".to_string(), url.clone()],
    );
    assert!(dom.contains("Lookout status"), "{dom}");
    let text = visible_text(&dom);
    assert!(text.contains("Root cause: lb"), "{text}");
    assert!(text.contains("1 blocked by it: app"), "{text}");
    assert!(text.contains("down lb shop"), "target row: {text}");
    assert!(text.contains("ServerDown"), "{text}");
    assert!(
        text.contains("Server lb is down"),
        "summary annotation: {text}"
    );
    assert!(
        text.contains("Server app is down because lb is down"),
        "{text}"
    );
    assert!(text.contains("active for"), "{text}");
    assert!(text.contains("lookout-availability"), "rule group: {text}");
    // A blackbox-style /probe job: the exporter answers (up 1) but the probe fails.
    assert!(
        text.contains(&format!("down {exporter} blackbox-probe")),
        "{text}"
    );
    assert!(text.contains("probe failed (probe_success 0)"), "{text}");
    // The hostile label value is shown as text, never parsed as markup.
    assert!(text.contains(&format!("team=\"{HOSTILE}\"")), "{text}");
    assert!(!dom.contains(HOSTILE), "label value became markup: {dom}");

    // Critical alerts of root causes first, the warning of the blocked app after them.
    let alerts = between(&text, "Alerts", "Dependencies");
    let blocked_at = alerts.find("ServerBlocked").expect("ServerBlocked listed");
    assert!(
        alerts.rfind("ServerDown").expect("ServerDown listed") < blocked_at,
        "{alerts}"
    );
    let tree = between(&text, "Dependencies", "Heartbeats");
    assert!(tree.contains("down lb blocked app"), "{tree}");
    assert!(text.contains("invalid_status_code (HTTP 503)"), "{text}");
    let beats = between(&text, "Heartbeats", "Targets");
    assert!(beats.contains("silent nightly-backup"), "{beats}");
    assert!(
        beats.contains("ago 30s"),
        "last push, then max_silence: {beats}"
    );
    let dns = between(&text, "DNS resolvers disagree", "Targets");
    assert!(
        dns.contains("shop.example. Resolver Target Answers 192.0.2.53 resolver-a 192.0.2.10 198.51.100.53 resolver-b 203.0.113.99"),
        "{dns}"
    );
    assert!(
        text.contains("Notifications failed: alerts could not be delivered ("),
        "{text}"
    );
    assert!(text.contains(&alertmanager.to_string()), "{text}");
    assert!(
        text.contains("Reloading the configuration failed"),
        "{text}"
    );
    screenshot(tmp.path(), &url, "status-outage.png", 2400);

    // /graph: a plotted expression, its instant result, and a parse error's position.
    let graph = format!("http://{evaluator}/graph?g0.expr=up&g0.range_input=5m");
    let dom = chromium(
        &tmp.path().join("profile-graph"),
        &["--dump-dom".to_string(), graph.clone()],
    );
    assert!(dom.contains("<svg class=\"chart\""), "{dom}");
    assert!(dom.contains("<path d=\"M"), "a plotted line: {dom}");
    let text = visible_text(&dom);
    assert!(text.contains("Instant result"), "{text}");
    assert!(text.contains("up{instance=\"lb\", job=\"shop\""), "{text}");
    screenshot(tmp.path(), &graph, "graph.png", 1100);
    let dom = chromium(
        &tmp.path().join("profile-graph-error"),
        &[
            "--dump-dom".to_string(),
            format!("http://{evaluator}/graph?g0.expr=sum(up%20%2B)"),
        ],
    );
    let text = visible_text(&dom);
    assert!(text.contains("Parse error at line 1, column"), "{text}");

    // Remote mode: a second evaluator queries the first one's Prometheus API and shows the
    // same outage from those queries.
    let remote = free_addr();
    let remote_cfg = tmp.path().join("remote.yml");
    std::fs::write(
        &remote_cfg,
        format!(
            "global:\n  evaluation_interval: 500ms\nrule_files:\n  - '{}'\n",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("rules/*.rules.yml")
                .display()
        ),
    )
    .expect("write remote.yml");
    let remote_child = Command::new(BIN)
        .args(["evaluator", "--config.file"])
        .arg(&remote_cfg)
        .args(["--web.listen-address", &remote.to_string()])
        .args(["--datasource.url", &format!("http://{evaluator}")])
        .arg("--rules.state-file")
        .arg(tmp.path().join("remote-state.json"))
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout evaluator (remote)");
    let _remote = Process(remote_child);
    let page = get_until(remote, "/", 200, |b| {
        b.contains("Root cause: lb") && b.contains("ServerDown")
    })
    .await;
    let text = visible_text(&page);
    assert!(text.contains("remote mode"), "{text}");
    assert!(text.contains("down lb shop"), "{text}");
    assert!(!page.contains(HOSTILE), "{page}");

    // SIGTERM: clean exit.
    let exit = up.terminate().await;
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "{exit:?}");
}
