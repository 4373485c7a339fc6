//! `lookout_web::serve` on loopback with real TLS clients (tokio-rustls): ALPN follows
//! `http2`, `RequireAnyClientCert` takes a certificate from no known CA but not none, the
//! lifecycle switch, and a web configuration that turns TLS on without a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use rcgen::{CertificateParams, KeyPair};
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Trusts any server certificate: these tests are about the server's side.
#[derive(Debug)]
struct TrustAll(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for TrustAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn self_signed(name: &str) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

fn client(alpn: &[&[u8]], identity: Option<&(String, String)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAll(provider)));
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/-/reload", post(|| async { "reloaded" }))
}

async fn start(web_file: &Path, enable_lifecycle: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let options = lookout_web::ServeOptions {
        web_config_file: Some(web_file.to_path_buf()),
        enable_lifecycle,
        ..Default::default()
    };
    let server = lookout_web::WebServer::new(&options).expect("web configuration");
    tokio::spawn(server.serve(listener, router(), std::future::pending()));
    addr
}

/// Sends one HTTP/1.1 request over TLS; `Err` when the handshake or the exchange fails.
async fn https_get(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    request: &str,
) -> Result<(Option<Vec<u8>>, String), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() == Some(b"h2".as_slice()) {
        return Ok((alpn, String::new()));
    }
    tls.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await?;
    Ok((alpn, String::from_utf8_lossy(&out).into_owned()))
}

const GET: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn alpn_follows_http2_and_any_client_certificate_is_required() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed("localhost");
    std::fs::write(dir.path().join("s.crt"), &cert).expect("write");
    std::fs::write(dir.path().join("s.key"), &key).expect("write");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n  client_auth_type: RequireAnyClientCert\n",
    )
    .expect("write");
    let addr = start(&web, false).await;
    let identity = self_signed("some-client");

    // Any certificate will do, none will not.
    let with = client(&[b"h2", b"http/1.1"], Some(&identity));
    let (alpn, _) = https_get(addr, &with, GET).await.expect("handshake");
    assert_eq!(alpn.as_deref(), Some(b"h2".as_slice()));
    let http1 = client(&[b"http/1.1"], Some(&identity));
    let (_, answer) = https_get(addr, &http1, GET).await.expect("request");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
        "{answer}"
    );
    let without = client(&[b"http/1.1"], None);
    assert!(https_get(addr, &without, GET).await.is_err());

    // Lifecycle endpoints off: 403.
    let reload = "POST /-/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let (_, answer) = https_get(addr, &http1, reload).await.expect("request");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.ends_with("Lifecycle API is not enabled.\n"),
        "{answer}"
    );

    // http2: false is picked up by the next connection: no h2 offered any more.
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: s.crt\n  key_file: s.key\n  client_auth_type: RequireAnyClientCert\nhttp_server_config:\n  http2: false\n",
    )
    .expect("write");
    let (alpn, answer) = https_get(addr, &with, GET).await.expect("request");
    assert_eq!(alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert!(answer.ends_with("hello"), "{answer}");
}

#[tokio::test]
async fn tls_can_be_turned_on_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "").expect("write");
    let addr = start(&web, true).await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(GET.as_bytes()).await.expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("hello"),
        "{out}"
    );

    let (cert, key) = self_signed("localhost");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}",
            indent(&cert),
            indent(&key)
        ),
    )
    .expect("write");
    let (_, answer) = https_get(addr, &client(&[], None), GET)
        .await
        .expect("TLS after the change");
    assert!(answer.ends_with("hello"), "{answer}");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(GET.as_bytes()).await.expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.0 400 Bad Request"), "{out}");
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}
