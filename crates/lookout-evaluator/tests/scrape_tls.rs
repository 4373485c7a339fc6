//! `tls_config` in scrape configs against loopback HTTPS targets (certificates from a test
//! CA made with rcgen, served by `lookout_web`): a CA-verified scrape, an untrusted one, a
//! name mismatch, `insecure_skip_verify`, `server_name`, and a target that demands a
//! client certificate, with and without one. Debian's `prometheus` scrapes the same
//! targets with the same `scrape_configs` and must agree on every job's `up`.

mod scrape_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lookout_evaluator::scrape::{Health, ScrapeManager};
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::registry::Registry;
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use scrape_support::{eventually, spawn, wait_ready};

/// The test CA and the files signed by it, written into a directory.
struct Pki {
    ca: Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Lookout test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
        Pki { ca, ca_key }
    }

    /// Writes `<name>.pem` and `<name>.key`, a certificate for `sans` signed by the CA.
    fn issue(&self, dir: &Path, name: &str, sans: &[&str]) {
        let key = KeyPair::generate().expect("key");
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .expect("params")
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("certificate");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
    }
}

/// An HTTPS target on loopback serving `/metrics` with the web configuration `web_yml`.
async fn https_target(dir: &Path, file: &str, web_yml: &str) -> u16 {
    let web_file = dir.join(file);
    std::fs::write(&web_file, web_yml).expect("write web config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let options = lookout_web::ServeOptions {
        web_config_file: Some(web_file),
        enable_lifecycle: false,
        ..lookout_web::ServeOptions::default()
    };
    let server = lookout_web::WebServer::new(&options).expect("web configuration");
    let app = Router::new().route("/metrics", get(|| async { "tls_target_up 1\n" }));
    tokio::spawn(server.serve(listener, app, std::future::pending()));
    port
}

/// Each job and the `up` it must end with.
fn jobs(dir: &Path, plain: u16, mtls: u16) -> (String, BTreeMap<&'static str, f64>) {
    let d = dir.display();
    let job = |name: &str, target: String, tls: String| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    tls_config: {{{tls}}}\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
    };
    let ca = format!("ca_file: {d}/ca.pem");
    let text = [
        job("verified", format!("localhost:{plain}"), ca.clone()),
        job("untrusted", format!("localhost:{plain}"), String::new()),
        job("wrong-name", format!("127.0.0.1:{plain}"), ca.clone()),
        job(
            "insecure",
            format!("127.0.0.1:{plain}"),
            "insecure_skip_verify: true".into(),
        ),
        job(
            "server-name",
            format!("127.0.0.1:{plain}"),
            format!("{ca}, server_name: target.lookout.test"),
        ),
        job(
            "client-cert",
            format!("localhost:{mtls}"),
            format!(
                "{ca}, cert_file: {d}/client.pem, key_file: {d}/client.key, min_version: TLS12"
            ),
        ),
        job("no-client-cert", format!("localhost:{mtls}"), ca),
    ]
    .concat();
    let want = BTreeMap::from([
        ("verified", 1.0),
        ("untrusted", 0.0),
        ("wrong-name", 0.0),
        ("insecure", 1.0),
        ("server-name", 1.0),
        ("client-cert", 1.0),
        ("no-client-cert", 0.0),
    ]);
    (text, want)
}

/// `up` by job from Prometheus's API.
async fn prometheus_up(base: &str) -> Option<BTreeMap<String, f64>> {
    let body = reqwest::get(format!("{base}/api/v1/query?query=up"))
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|s| {
            let job = s["metric"]["job"].as_str()?.to_string();
            let up = s["value"][1].as_str()?.parse().ok()?;
            Some((job, up))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_config_verifies_names_and_presents_client_certificates_as_prometheus_does() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let pki = Pki::new(dir);
    pki.issue(dir, "server", &["localhost", "target.lookout.test"]);
    pki.issue(dir, "client", &["scraper.lookout.test"]);
    let d = dir.display();
    let plain = https_target(
        dir,
        "web.yml",
        &format!("tls_server_config: {{cert_file: {d}/server.pem, key_file: {d}/server.key}}\n"),
    )
    .await;
    let mtls = https_target(
        dir,
        "web-mtls.yml",
        &format!(
            "tls_server_config: {{cert_file: {d}/server.pem, key_file: {d}/server.key, \
             client_auth_type: RequireAndVerifyClientCert, client_ca_file: {d}/ca.pem}}\n"
        ),
    )
    .await;
    let (text, want) = jobs(dir, plain, mtls);

    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage, &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&text).expect("scrape configs");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");

    let port = scrape_support::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("scrape_configs:\n{text}"),
    )
    .expect("write prometheus config");
    let args = vec![
        "--config.file=prometheus.yml".to_string(),
        "--storage.tsdb.path=prom-data".to_string(),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    let _prom = spawn("prometheus", &args, dir);
    let theirs = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{theirs}/-/ready")).await;

    // Two rounds of scrapes, so that each target has settled.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours = manager.targets().await;
    let mut seen = BTreeMap::new();
    for t in &ours {
        let up = if t.health == Health::Up { 1.0 } else { 0.0 };
        seen.insert(t.target.job.as_str(), up);
        if t.health != Health::Up {
            assert!(
                !t.last_error.is_empty(),
                "{}: down without an error",
                t.target.job
            );
        }
        eprintln!("{} {:?}: {}", t.target.job, t.health, t.last_error);
    }
    assert_eq!(seen, want);
    let error = |job: &str| {
        ours.iter()
            .find(|t| t.target.job == job)
            .map(|t| t.last_error.clone())
            .unwrap_or_default()
    };
    assert!(
        error("untrusted").contains("UnknownIssuer"),
        "{}",
        error("untrusted")
    );
    assert!(
        error("wrong-name").contains("not valid for name"),
        "{}",
        error("wrong-name")
    );

    let jobs = want.len();
    let prometheus = eventually(Duration::from_secs(30), || {
        let base = theirs.clone();
        async move { prometheus_up(&base).await.filter(|m| m.len() == jobs) }
    })
    .await
    .expect("Prometheus scraped every job");
    let prometheus: BTreeMap<&str, f64> =
        prometheus.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(prometheus, want, "Prometheus 2.42 disagrees");
    manager.stop().await;
}

/// A `tls_config` that names a missing file, holds no certificate, or pairs a certificate
/// with no key is refused when the configuration is applied, naming the job, the setting
/// and the file; the running jobs are kept.
#[tokio::test]
async fn broken_tls_files_are_refused_at_apply_with_the_job_setting_and_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path().display();
    std::fs::write(tmp.path().join("empty.pem"), "").expect("write");
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage, &mut registry, 0);
    for (tls, expected) in [
        (format!("ca_file: {d}/nope.pem"), "cannot read ca_file "),
        (
            format!("ca_file: {d}/empty.pem"),
            "empty.pem holds no PEM certificate",
        ),
        (
            format!("cert_file: {d}/empty.pem"),
            "key (key_file) is missing",
        ),
    ] {
        let text = format!(
            "- job_name: broken\n  scheme: https\n  tls_config: {{{tls}}}\n  static_configs: [{{targets: ['localhost:1']}}]\n"
        );
        let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&text).expect("decodes");
        let e = manager
            .apply(&cfgs, &ScrapeDefaults::default())
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            e.starts_with("scrape config for job \"broken\": ") && e.contains(expected),
            "{e}"
        );
    }
    assert!(manager.targets().await.is_empty());
}
