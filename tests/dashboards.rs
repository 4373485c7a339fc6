//! Every PromQL expression of the Grafana dashboards (`dashboards/**/*.json`) parses with
//! Lookout's own parser and, evaluated on data from a real run, returns a non-empty result
//! with at least one finite value — so no panel is empty or broken.
//!
//! The run, all on loopback: `lookout exporter` probing an HTTP target that is up, two that
//! are down (one depending on the other, so the cascade table has a row), two DNS
//! nameservers in the test that disagree, an HTTPS target with an rcgen certificate, a
//! heartbeat that is pushed and one that never is; `lookout evaluator` in embedded mode
//! scraping the exporter's `/metrics` (`honor_labels`) and its `/probe` (the blackbox
//! multi-target pattern, for the HTTP phases), with the shipped `rules/`, so that an alert
//! fires (HeartbeatMissing for the silent heartbeat). Each expression is then queried
//! through the evaluator's Prometheus API the way Grafana does with the embedded mode's
//! data source (`dashboards/provisioning/datasources/lookout-evaluator.yml`, form POSTs):
//! an instant query for `instant` targets, a range query otherwise.
//!
//! No panel is allowed to stay empty: each one shows data in this run. And `lookout up`
//! with its built-in configuration, at the address that data source names, answers every
//! panel's query without an error. The dashboards query whichever data source their
//! `datasource` variable picks, so both provisioned data sources serve them.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::{
    ChildGuard, HttpTarget, Process, free_addr, free_port, get_json_with, nameserver, now_secs,
    post_json_with, repo_root, start_exporter, status_of, wait_ready, write_file,
};

/// One query of one panel.
#[derive(Debug)]
struct PanelQuery {
    dashboard: String,
    panel: String,
    ref_id: String,
    expr: String,
    instant: bool,
}

impl PanelQuery {
    fn name(&self) -> String {
        format!("{} / {} [{}]", self.dashboard, self.panel, self.ref_id)
    }
}

/// The dashboards' JSON files.
fn dashboard_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("dashboards"), &mut files);
    files.sort();
    files
}

/// Every panel target with an `expr`, wherever the panel sits (rows nest panels).
fn panel_queries(file: &Path) -> Vec<PanelQuery> {
    fn walk(value: &Value, dashboard: &str, out: &mut Vec<PanelQuery>) {
        match value {
            Value::Object(object) => {
                if let Some(Value::Array(targets)) = object.get("targets") {
                    let panel = object
                        .get("title")
                        .and_then(Value::as_str)
                        .unwrap_or("(untitled)");
                    for target in targets {
                        if let Some(expr) = target.get("expr").and_then(Value::as_str) {
                            out.push(PanelQuery {
                                dashboard: dashboard.to_string(),
                                panel: panel.to_string(),
                                ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                                expr: expr.to_string(),
                                instant: target["instant"].as_bool().unwrap_or(false),
                            });
                        }
                    }
                }
                for (key, child) in object {
                    if key != "targets" {
                        walk(child, dashboard, out);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, dashboard, out);
                }
            }
            _ => {}
        }
    }
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    walk(&json, &name, &mut out);
    out
}

/// The expression as Grafana sends it: its built-in interval variables replaced. Any
/// other `$variable` is left alone, so the parser rejects it (dashboard variables would
/// need values in this test).
fn grafana_expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("${__interval}", "15s")
        .replace("$__range", "1h")
        .replace("${__range}", "1h")
}

/// An HTTPS server on loopback with a certificate for 127.0.0.1 signed by a test CA, whose
/// certificate is written to `dir/ca.pem`. Answers every request with 200.
async fn https_target(dir: &Path) -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Lookout dashboard test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("leaf params");
    let now = std::time::SystemTime::now();
    leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf_params.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf certificate");
    let ca_file = write_file(dir, "ca.pem", &ca.pem());

    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("TLS server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let addr = listener.local_addr().expect("https address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                // Read the request head, then answer and close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, ca_file)
}

/// The exporter's targets: one of each kind the dashboard shows.
fn exporter_config(
    web: SocketAddr,
    closed: [u16; 2],
    nameservers: [SocketAddr; 2],
    https: SocketAddr,
    ca_file: &str,
) -> String {
    format!(
        "modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
  https_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      fail_if_not_ssl: true
      tls_config:
        ca_file: {ca_file}
  dns_shop:
    prober: dns
    timeout: 1s
    dns:
      query_name: shop.example.test
      query_type: A
      transport_protocol: udp
      preferred_ip_protocol: ip4
targets:
  - name: web
    module: http_2xx
    target: http://{web}/
    interval: 500ms
    labels:
      job: web
  - name: db
    module: http_2xx
    target: http://127.0.0.1:{db}/
    interval: 500ms
    labels:
      job: db
  - name: api
    module: http_2xx
    target: http://127.0.0.1:{api}/
    interval: 500ms
    labels:
      job: shop
    depends_on: [db]
  - name: secure
    module: https_2xx
    target: https://{https}/
    interval: 500ms
    labels:
      job: web
  - name: resolver-a
    module: dns_shop
    target: {ns_a}
    interval: 500ms
    labels:
      job: dns
  - name: resolver-b
    module: dns_shop
    target: {ns_b}
    interval: 500ms
    labels:
      job: dns
heartbeats:
  - name: backup
    max_silence: 1h
  - name: cron
    max_silence: 1s
",
        db = closed[0],
        api = closed[1],
        ns_a = nameservers[0],
        ns_b = nameservers[1],
    )
}

/// The evaluator: scrapes the exporter's `/metrics` and `/probe` every second and runs the
/// shipped rules.
fn evaluator_config(exporter_port: u16, web: SocketAddr) -> String {
    format!(
        "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}/*.rules.yml
scrape_configs:
  - job_name: lookout-exporter
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{exporter_port}']
  - job_name: blackbox-http
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets: ['http://{web}/']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{exporter_port}
",
        rules = repo_root().join("rules").display(),
    )
}

/// The expression, and for a stat panel's `X or vector(0)` also `X` alone: the fallback
/// shows 0 whatever happens, so the test also wants `X` itself to have data.
fn with_fallback_removed(expr: &str) -> Vec<String> {
    let mut exprs = vec![expr.to_string()];
    let trimmed = expr.trim_end();
    if let Some(inner) = trimmed.strip_suffix("or vector(0)") {
        exprs.push(inner.trim_end().to_string());
    }
    exprs
}

/// The outcome of one query: `Ok(true)` when it has a finite value, `Ok(false)` when it is
/// empty (or only NaN so far), `Err` when the query failed.
async fn evaluate(base: &str, expr: &str, instant: bool) -> Result<bool, String> {
    let expr = grafana_expand(expr);
    let now = now_secs();
    let (path, params) = if instant {
        ("query", vec![("query", expr)])
    } else {
        (
            "query_range",
            vec![
                ("query", expr),
                ("start", format!("{:.3}", now - 60.0)),
                ("end", format!("{now:.3}")),
                ("step", "1".to_string()),
            ],
        )
    };
    let url = format!("{base}/api/v1/{path}");
    let body = match embedded_data_source()["jsonData"]["httpMethod"].as_str() {
        Some("POST") => post_json_with(&url, &params).await?,
        _ => get_json_with(&url, &params).await?,
    };
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    let finite = |v: &Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    let data = &body["data"];
    let result = data["result"].as_array().cloned().unwrap_or_default();
    Ok(match data["resultType"].as_str() {
        Some("vector") => result.iter().any(|s| finite(&s["value"])),
        Some("matrix") => result.iter().any(|s| {
            s["values"]
                .as_array()
                .is_some_and(|values| values.iter().any(finite))
        }),
        Some("scalar") => finite(&data["result"]),
        other => return Err(format!("unexpected result type {other:?}: {body}")),
    })
}

/// Every panel query of every dashboard.
fn all_queries() -> Vec<PanelQuery> {
    dashboard_files()
        .iter()
        .flat_map(|f| panel_queries(f))
        .collect()
}

/// The provisioned Grafana data sources (`dashboards/provisioning/datasources/*.yml`).
fn data_sources() -> Vec<Value> {
    let dir = repo_root().join("dashboards/provisioning/datasources");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("datasources/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            let doc: Value =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            doc["datasources"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

/// The data source for embedded mode: the evaluator's own API.
fn embedded_data_source() -> Value {
    data_sources()
        .into_iter()
        .find(|d| d["uid"] == "lookout-evaluator")
        .expect("a data source with uid lookout-evaluator")
}

#[test]
fn the_dashboards_query_the_data_source_their_variable_picks() {
    let sources = data_sources();
    let mut uids: Vec<&str> = sources.iter().filter_map(|d| d["uid"].as_str()).collect();
    uids.sort_unstable();
    assert_eq!(uids, ["lookout-evaluator", "prometheus"]);
    for d in &sources {
        assert_eq!(d["type"], "prometheus", "{d}");
    }
    // Embedded mode: the evaluator at the address `lookout up` listens on by default.
    assert_eq!(
        embedded_data_source()["url"],
        "http://127.0.0.1:9095",
        "lookout up's --web.listen-address.evaluator default"
    );
    for file in dashboard_files() {
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let variables = doc["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{}: no datasource variable of type prometheus",
            file.display()
        );
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            !text.contains("\"uid\": \"prometheus\""),
            "{}: a panel names a data source instead of ${{datasource}}",
            file.display()
        );
    }
}

#[test]
fn every_dashboard_expression_parses() {
    let queries = all_queries();
    assert!(
        !queries.is_empty(),
        "no PromQL expression found in dashboards/"
    );
    let broken: Vec<String> = queries
        .iter()
        .filter_map(|q| {
            lookout_promql::engine::parse(&grafana_expand(&q.expr))
                .err()
                .map(|e| format!("{}: {e}", q.name()))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "expressions that do not parse:\n{}",
        broken.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_from_a_real_run() {
    let queries = all_queries();
    assert!(
        !queries.is_empty(),
        "no PromQL expression found in dashboards/"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let web = HttpTarget::start().await;
    let nameservers = [
        nameserver(Ipv4Addr::new(192, 0, 2, 1)).await,
        nameserver(Ipv4Addr::new(192, 0, 2, 2)).await,
    ];
    let (https, ca_file) = https_target(dir).await;
    // Nothing listens on these: `db` and `api` are down, and `api` depends on `db`.
    let closed = [free_port(), free_port()];
    let (_exporter, exporter_port) = start_exporter(
        dir,
        &exporter_config(web.addr, closed, nameservers, https, &ca_file),
    )
    .await;
    assert_eq!(
        status_of(
            "POST",
            &format!("http://127.0.0.1:{exporter_port}/heartbeat/backup")
        )
        .await,
        Some(200),
        "heartbeat push"
    );

    write_file(
        dir,
        "evaluator.yml",
        &evaluator_config(exporter_port, web.addr),
    );
    let evaluator_port = free_port();
    let base = format!("http://127.0.0.1:{evaluator_port}");
    let _evaluator = Process::lookout(
        "evaluator",
        &common::evaluator_args(dir, evaluator_port, ""),
        dir,
    );
    wait_ready("lookout evaluator", &format!("{base}/-/ready")).await;

    // Every query runs without error from the start; all show data once a few scrapes and
    // evaluations have happened (rates need two samples, the silent heartbeat's alert needs
    // its silence). At most two minutes.
    let mut missing = Vec::new();
    for _ in 0..240 {
        missing.clear();
        for query in &queries {
            for expr in with_fallback_removed(&query.expr) {
                match evaluate(&base, &expr, query.instant).await {
                    Ok(true) => {}
                    Ok(false) => missing.push(format!("{}: {expr}", query.name())),
                    Err(e) => panic!("{} failed: {e}\nexpression: {expr}", query.name()),
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "panels without data after two minutes:\n{}",
        missing.join("\n")
    );
}

/// `lookout up` (embedded mode, built-in configuration) answers every panel's query, sent
/// as the embedded mode's data source sends it, without an error; the panels on Lookout's
/// own targets show data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_lookout_up() {
    let queries = all_queries();
    let exporter = free_addr();
    let evaluator = free_addr();
    let cwd = tempfile::tempdir().expect("tempdir");
    let _up = ChildGuard(
        common::up_command(exporter, evaluator)
            .current_dir(cwd.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start lookout up"),
    );
    let base = format!("http://{evaluator}");
    wait_ready("lookout up", &format!("{base}/-/ready")).await;
    // The first scrapes of the exporter land within a scrape interval (15s).
    let targets_up = r#"count(up{job!="heartbeat"} == 1)"#;
    let mut shown = false;
    for _ in 0..120 {
        if evaluate(&base, targets_up, true).await == Ok(true) {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(shown, "no target up in lookout up after a minute");
    for query in &queries {
        for expr in with_fallback_removed(&query.expr) {
            if let Err(e) = evaluate(&base, &expr, query.instant).await {
                panic!(
                    "{} failed on lookout up: {e}\nexpression: {expr}",
                    query.name()
                );
            }
        }
    }
}
