//! Helpers shared by the prober tests: modules from YAML, running a probe, reading its
//! metrics, and loopback servers (axum, TLS with rcgen certificates).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use lookout_exporter::config::{Config, Module};
use lookout_exporter::limits::Limits;
use lookout_exporter::prober::{ProbeReport, ProbeRequest, run};
use tokio::net::TcpListener;

/// A module from the YAML of its body (`prober: http\nhttp: …`).
pub fn module(body: &str) -> Module {
    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!("modules:\n  m:\n{indented}");
    let mut config = Config::parse(&text, "test.yml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.modules.remove("m").expect("module m")
}

/// Probes `target` with `module` under a generous deadline.
pub async fn probe(target: &str, module: &Module) -> ProbeReport {
    probe_with(target, module, None, Duration::from_secs(5)).await
}

/// Probes with a hostname and deadline, under the default limits.
pub async fn probe_with(
    target: &str,
    module: &Module,
    hostname: Option<&str>,
    timeout: Duration,
) -> ProbeReport {
    run(&ProbeRequest {
        target,
        module,
        hostname,
        timeout,
        limits: Limits::default(),
        policy: None,
    })
    .await
}

/// Probes under the given exporter limits (the `--probe.*` flags) with a generous deadline.
pub async fn probe_limited(target: &str, module: &Module, limits: Limits) -> ProbeReport {
    run(&ProbeRequest {
        target,
        module,
        hostname: None,
        timeout: Duration::from_secs(5),
        limits,
        policy: None,
    })
    .await
}

/// The value of an unlabelled metric.
pub fn value(report: &ProbeReport, name: &str) -> Option<f64> {
    report.recorder.value(name)
}

/// The value of a labelled metric.
pub fn labeled(report: &ProbeReport, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    report.recorder.value_labeled(name, labels)
}

/// The failure reason, if the probe failed.
pub fn reason(report: &ProbeReport) -> Option<&str> {
    report.failure.as_ref().map(|f| f.reason.as_str())
}

/// Asserts success, showing the probe log otherwise.
pub fn assert_success(report: &ProbeReport) {
    assert!(
        report.success,
        "probe failed: {:?}\nlog:\n{}",
        report.failure,
        report.recorder.log.join("\n")
    );
    assert_eq!(value(report, "probe_success"), Some(1.0));
    assert!(value(report, "probe_duration_seconds").is_some());
    assert!(
        !report
            .recorder
            .metrics
            .iter()
            .any(|m| m.name == "probe_failure_info"),
        "no failure info on success"
    );
}

/// Asserts failure with `expected` reason, published as `probe_failure_info{reason}`.
pub fn assert_failure(report: &ProbeReport, expected: &str) {
    assert!(
        !report.success,
        "probe should fail with {expected}\nlog:\n{}",
        report.recorder.log.join("\n")
    );
    assert_eq!(
        reason(report),
        Some(expected),
        "failure: {:?}\nlog:\n{}",
        report.failure,
        report.recorder.log.join("\n")
    );
    assert_eq!(value(report, "probe_success"), Some(0.0));
    assert_eq!(
        labeled(report, "probe_failure_info", &[("reason", expected)]),
        Some(1.0)
    );
}

/// Serves an axum router on a loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Runs `handler` for every connection on a loopback TCP port.
pub async fn server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// A port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// A test CA and a leaf certificate for `localhost` and 127.0.0.1 signed by it.
pub struct TestPki {
    /// PEM of the CA certificate, written to `ca_file`.
    pub ca_file: PathBuf,
    /// The leaf's chain and key for servers.
    pub server_config: Arc<rustls::ServerConfig>,
    /// The leaf's notAfter (Unix seconds).
    pub leaf_not_after: i64,
    /// Keeps the temporary directory alive.
    _dir: tempfile::TempDir,
}

/// Makes a CA (valid to 2040) and a leaf (valid to 2031-01-02), offering `alpn`.
pub fn pki(alpn: &[&[u8]]) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Lookout Test CA");
    ca_params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let ca = ca_params.self_signed(&ca_key).expect("ca");

    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    leaf_params.not_after = rcgen::date_time_ymd(2031, 1, 2);
    let leaf_not_after = leaf_params.not_after.unix_timestamp();
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");

    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("server config");
    server_config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TestPki {
        ca_file,
        server_config: Arc::new(server_config),
        leaf_not_after,
        _dir: dir,
    }
}

/// Serves HTTPS (HTTP/2 when ALPN picks it, else HTTP/1.1) answering 200 "secure".
pub async fn serve_https(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(tls);
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"secure",
                    ))))
                });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    addr
}
