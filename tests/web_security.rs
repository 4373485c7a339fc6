//! End to end: who may talk to the real `lookout` binary.
//!
//! * `--web.config.file` (exporter-toolkit format) on the exporter and the evaluator: TLS
//!   with a CA and certificates made here with rcgen, bcrypt users hashed here; a plain-HTTP
//!   request to the TLS port gets Go's 400; a wrong or missing password gets 401 with
//!   `WWW-Authenticate: Basic` and nothing else; a required client certificate that is
//!   missing fails the handshake; a changed web configuration is picked up without restart.
//! * `probe_policy` on `/probe`: targets outside the allow-list and ad-hoc targets get 403
//!   and count in `lookout_exporter_probe_requests_refused_total{reason}`.
//! * Write paths: `--web.enable-lifecycle=false` refuses `/-/reload`; `basic_auth_scope:
//!   write` leaves reads open and asks a password for `/-/reload` and heartbeats (with
//!   any method: GET and HEAD push too).
//!
//! Nothing leaves 127.0.0.1: refused targets are never contacted.

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{Process, eventually, free_port, write_file};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a server and client certificate it signed, written as PEM files in a directory.
struct Pki {
    ca: String,
    client_identity: Vec<u8>,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");

    let server_key = KeyPair::generate().expect("server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server certificate");

    let client_key = KeyPair::generate().expect("client key");
    let mut client_params =
        CertificateParams::new(vec!["client.test".to_string()]).expect("client params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client certificate");

    write_file(dir, "ca.crt", &ca.pem());
    write_file(dir, "server.crt", &server.pem());
    write_file(dir, "server.key", &server_key.serialize_pem());
    Pki {
        ca: ca.pem(),
        client_identity: format!("{}{}", client.pem(), client_key.serialize_pem()).into_bytes(),
    }
}

/// An HTTPS client trusting only the test CA, optionally presenting the client certificate.
fn https_client(pki: &Pki, with_identity: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes()).expect("CA"));
    if with_identity {
        builder =
            builder.identity(reqwest::Identity::from_pem(&pki.client_identity).expect("identity"));
    }
    builder.build().expect("HTTPS client")
}

fn hash(password: &str) -> String {
    // Cost 4 keeps the test fast; the server handles any cost.
    bcrypt::hash(password, 4).expect("bcrypt")
}

/// Starts `lookout exporter` with `config` and extra flags on a free port.
fn exporter(dir: &Path, config: &str, extra: &[&str]) -> (Process, u16) {
    let port = free_port();
    let config_file = write_file(dir, "exporter.yml", config);
    let mut args = vec![
        "exporter".to_string(),
        "--config.file".to_string(),
        config_file,
        "--web.listen-address".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (Process::lookout("exporter", &args, dir), port)
}

/// Waits until `request` gets any HTTP answer; returns its status.
async fn answered(what: &str, request: impl Fn() -> reqwest::RequestBuilder) -> u16 {
    eventually(what, 240, Duration::from_millis(250), || {
        let r = request();
        async move { r.send().await.ok().map(|resp| resp.status().as_u16()) }
    })
    .await
}

/// What a raw plain-HTTP request to `port` gets back.
async fn plain_http(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const EXPORTER_CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\nheartbeats:\n  - name: nightly\n    max_silence: 1h\n";

#[tokio::test]
async fn exporter_serves_tls_with_basic_auth_and_picks_up_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\nbasic_auth_users:\n  alice: '{}'\n",
        hash("wonderland")
    );
    let web_file = write_file(dir.path(), "web.yml", &web);
    let (process, port) = exporter(
        dir.path(),
        EXPORTER_CONFIG,
        &["--web.config.file", &web_file],
    );
    let client = https_client(&pki, false);
    let url = format!("https://127.0.0.1:{port}/metrics");

    // No password: 401, Basic challenge, configured headers, no content.
    let status = answered("the exporter to answer over TLS", || client.get(&url)).await;
    assert_eq!(status, 401, "{}", process.log_tail());
    let resp = client.get(&url).send().await.expect("request");
    assert_eq!(resp.headers()["www-authenticate"], "Basic");
    assert_eq!(resp.headers()["x-frame-options"], "deny");
    assert_eq!(resp.text().await.expect("body"), "Unauthorized\n");

    // Wrong password, unknown user: 401 and nothing else.
    for (user, password) in [("alice", "rabbit"), ("mallory", "wonderland")] {
        let resp = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(resp.text().await.expect("body"), "Unauthorized\n");
    }

    // Right password: the metrics, with the security headers.
    let resp = client
        .get(&url)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("lookout_exporter_build")
    );

    // Plain HTTP to the TLS port: Go's 400.
    let answer = plain_http(port).await;
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n")
            && answer.contains("Client sent an HTTP request to an HTTPS server."),
        "{answer:?}"
    );

    // A new user and a password change are picked up without a restart.
    let web = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: '{}'\n  bob: '{}'\n",
        hash("looking-glass"),
        hash("builder")
    );
    write_file(dir.path(), "web.yml", &web);
    eventually(
        "bob to be let in after the change",
        100,
        Duration::from_millis(100),
        || {
            let r = client.get(&url).basic_auth("bob", Some("builder"));
            async move { (r.send().await.ok()?.status().as_u16() == 200).then_some(()) }
        },
    )
    .await;
    let old = client
        .get(&url)
        .basic_auth("alice", Some("wonderland"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        old.status().as_u16(),
        401,
        "the old password must stop working"
    );

    // A broken change keeps the configuration in force.
    write_file(
        dir.path(),
        "web.yml",
        "basic_auth_users:\n  bob: not-a-hash\n",
    );
    let still = client
        .get(&url)
        .basic_auth("bob", Some("builder"))
        .send()
        .await
        .expect("request");
    assert_eq!(still.status().as_u16(), 200, "{}", process.log_tail());
    drop(process);
}

#[tokio::test]
async fn exporter_requires_a_client_certificate_when_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(dir.path());
    let web_file = write_file(
        dir.path(),
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n",
    );
    let (process, port) = exporter(
        dir.path(),
        EXPORTER_CONFIG,
        &["--web.config.file", &web_file],
    );
    let url = format!("https://127.0.0.1:{port}/-/healthy");
    let with_cert = https_client(&pki, true);
    let status = answered("the exporter to answer with a client certificate", || {
        with_cert.get(&url)
    })
    .await;
    assert_eq!(status, 200, "{}", process.log_tail());
    let without = https_client(&pki, false).get(&url).send().await;
    assert!(
        without.is_err(),
        "a client without a certificate got {without:?}"
    );
}

#[tokio::test]
async fn evaluator_serves_tls_with_basic_auth() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(dir.path());
    let web_file = write_file(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  grafana: '{}'\n",
            hash("dashboards")
        ),
    );
    let config = write_file(
        dir.path(),
        "evaluator.yml",
        "global:\n  evaluation_interval: 1s\n",
    );
    let port = free_port();
    let process = Process::lookout(
        "evaluator",
        &[
            "evaluator".to_string(),
            "--config.file".to_string(),
            config,
            "--web.listen-address".to_string(),
            format!("127.0.0.1:{port}"),
            "--rules.state-file".to_string(),
            dir.path().join("state.json").display().to_string(),
            // Memory only: not the default data/ of the working directory.
            "--storage.tsdb.path=".to_string(),
            "--web.config.file".to_string(),
            web_file,
        ],
        dir.path(),
    );
    let client = https_client(&pki, false);
    let url = format!("https://127.0.0.1:{port}/api/v1/rules");
    let status = answered("the evaluator to answer over TLS", || client.get(&url)).await;
    assert_eq!(status, 401, "{}", process.log_tail());
    let wrong = client
        .get(&url)
        .basic_auth("grafana", Some("nope"))
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Basic");
    let right = client
        .get(&url)
        .basic_auth("grafana", Some("dashboards"))
        .send()
        .await
        .expect("request");
    assert_eq!(right.status().as_u16(), 200);
    let answer = plain_http(port).await;
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
        "{answer:?}"
    );
}

/// The value of the refusal counter for `reason` in `/metrics` text (0 when absent).
fn refused(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("lookout_exporter_probe_requests_refused_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn probe_policy_refuses_targets_and_counts_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let healthy = format!("http://127.0.0.1:{port}/-/healthy");
    let config = |refuse: bool| {
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\ntargets:\n  - name: self\n    module: http_2xx\n    target: {healthy}\n    interval: 1h\nprobe_policy:\n  allowed_targets: ['127.0.0.1/32', '*.example.internal']\n  refuse_unconfigured: {refuse}\n"
        )
    };
    let config_file = write_file(dir.path(), "exporter.yml", &config(false));
    let process = Process::lookout(
        "exporter",
        &[
            "exporter".to_string(),
            "--config.file".to_string(),
            config_file,
            "--web.listen-address".to_string(),
            format!("127.0.0.1:{port}"),
        ],
        dir.path(),
    );
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready("lookout exporter", &format!("{base}/-/ready")).await;
    let client = common::client();
    let probe = |target: &str| {
        client
            .get(format!("{base}/probe"))
            .query(&[("module", "http_2xx"), ("target", target)])
            .send()
    };

    // Inside the allow-list: probed.
    let ok = probe(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("probe");
    assert_eq!(ok.status().as_u16(), 200, "{}", process.log_tail());
    assert!(ok.text().await.expect("body").contains("probe_success 1"));
    // Outside: 403 with the reason, never contacted.
    let refused_resp = probe("http://169.254.169.254/latest/meta-data/")
        .await
        .expect("probe");
    assert_eq!(refused_resp.status().as_u16(), 403);
    let body = refused_resp.text().await.expect("body");
    assert!(
        body.contains("169.254.169.254 is in no allowed network"),
        "{body}"
    );
    let refused_resp = probe("http://intranet.example.com/").await.expect("probe");
    assert_eq!(refused_resp.status().as_u16(), 403);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert_eq!(refused(&metrics, "not_allowed"), 2.0, "{metrics}");

    // Refuse everything that is not configured, after a reload.
    write_file(dir.path(), "exporter.yml", &config(true));
    let reload = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status().as_u16(), 200);
    let adhoc = probe(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("probe");
    assert_eq!(adhoc.status().as_u16(), 403);
    assert!(
        adhoc
            .text()
            .await
            .expect("body")
            .contains("only configured targets")
    );
    let configured = probe(&healthy).await.expect("probe");
    assert_eq!(configured.status().as_u16(), 200);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert_eq!(refused(&metrics, "unconfigured"), 1.0, "{metrics}");
}

#[tokio::test]
async fn write_paths_can_be_restricted() {
    let dir = tempfile::tempdir().expect("temp dir");
    // basic_auth_scope: write — reads open, writes need the password; lifecycle off.
    let web_file = write_file(
        dir.path(),
        "web.yml",
        &format!(
            "basic_auth_users:\n  cron: '{}'\nbasic_auth_scope: write\n",
            hash("tick")
        ),
    );
    let (process, port) = exporter(
        dir.path(),
        EXPORTER_CONFIG,
        &[
            "--web.config.file",
            &web_file,
            "--web.enable-lifecycle=false",
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready("lookout exporter", &format!("{base}/-/ready")).await;
    let client = common::client();
    let status = |r: reqwest::RequestBuilder| async move {
        r.send().await.expect("request").status().as_u16()
    };
    assert_eq!(status(client.get(format!("{base}/metrics"))).await, 200);
    assert_eq!(
        status(client.post(format!("{base}/heartbeat/nightly"))).await,
        401
    );
    assert_eq!(
        status(
            client
                .post(format!("{base}/heartbeat/nightly"))
                .basic_auth("cron", Some("wrong"))
        )
        .await,
        401
    );
    assert_eq!(
        status(
            client
                .post(format!("{base}/heartbeat/nightly"))
                .basic_auth("cron", Some("tick"))
        )
        .await,
        200,
        "{}",
        process.log_tail()
    );
    // A heartbeat pushed with GET or HEAD (`curl URL`) is a write all the same.
    let url = format!("{base}/heartbeat/nightly");
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        for (password, expected) in [(None, 401), (Some("wrong"), 401), (Some("tick"), 200)] {
            let mut request = client.request(method.clone(), &url);
            if let Some(p) = password {
                request = request.basic_auth("cron", Some(p));
            }
            assert_eq!(status(request).await, expected, "{method} {password:?}");
        }
    }
    assert_eq!(status(client.post(format!("{base}/-/reload"))).await, 401);
    let reload = client
        .post(format!("{base}/-/reload"))
        .basic_auth("cron", Some("tick"))
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status().as_u16(), 403);
    assert_eq!(
        reload.text().await.expect("body"),
        "Lifecycle API is not enabled.\n"
    );
}
