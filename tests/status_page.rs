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
//! `docs/status-page.png` is made by `tests/browser/screenshot.sh` (a demo outage with
//! realistic names), with the same browser flags.

mod common;

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ChildGuard as Process, LOOKOUT as BIN, free_addr, get_until, stdout_lines, wait_for_line,
};
use tokio::net::TcpListener;

const HOSTILE: &str = "<script>alert(1)</script>";

fn write_configs(dir: &Path, target: SocketAddr, exporter: SocketAddr, evaluator: SocketAddr) {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/*.rules.yml");
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
scrape_configs:
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

    let exporter = free_addr();
    let evaluator = free_addr();
    write_configs(tmp.path(), target, exporter, evaluator);
    let mut child = Command::new(BIN)
        .args(["up", "--config.dir"])
        .arg(tmp.path())
        .arg("--web.listen-address.exporter")
        .arg(exporter.to_string())
        .arg("--web.listen-address.evaluator")
        .arg(evaluator.to_string())
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout up");
    let lines = stdout_lines(&mut child);
    let mut up = Process(child);
    wait_for_line(&lines, "status page");

    // Healthy first: the page says so.
    let query_up = "/api/v1/query?query=up%7Binstance%3D~%22lb%7Capp%22%7D%20%3D%3D%201";
    get_until(evaluator, query_up, 200, |b| {
        b.contains(r#""instance":"lb""#) && b.contains(r#""instance":"app""#)
    })
    .await;

    // The outage: the server behind lb and app stops.
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

    // What a person reads in the browser.
    let url = format!("http://{evaluator}/");
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

    // A screenshot of the same page.
    let shot = tmp.path().join("status.png");
    chromium(
        &tmp.path().join("profile-shot"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,1200".to_string(),
            url.clone(),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");

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
