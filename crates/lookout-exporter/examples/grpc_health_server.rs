//! A loopback gRPC health server for tests (see `tests/grpc_support/mod.rs` for what each
//! service answers), run by `scripts/differential/blackbox.py` so that blackbox_exporter's
//! gRPC prober and Lookout's probe the same server.
//!
//! ```text
//! grpc_health_server [--tls-cert CERT.pem --tls-key KEY.pem]
//! ```
//!
//! Prints one line, `plain=PORT plain6=PORT bare=PORT tls=PORT` (0 for a listener it has
//! not: no IPv6 loopback, no certificate), then serves until its standard input closes.

#[path = "../tests/grpc_support/mod.rs"]
mod grpc_support;

use std::io::Write as _;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn tls_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let tls = match (arg("--tls-cert"), arg("--tls-key")) {
        (Some(cert), Some(key)) => Some(tls_config(&cert, &key)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let ports = grpc_support::start(tls)
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let port = |a: Option<std::net::SocketAddr>| a.map_or(0, |a| a.port());
    let mut out = std::io::stdout();
    writeln!(
        out,
        "plain={} plain6={} bare={} tls={}",
        ports.plain.port(),
        port(ports.plain6),
        ports.bare.port(),
        port(ports.tls)
    )
    .and_then(|()| out.flush())
    .map_err(|e| e.to_string())?;
    // The harness holds the other end of standard input: its end (or the harness's) is ours.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    std::future::pending::<()>().await;
    Ok(())
}
