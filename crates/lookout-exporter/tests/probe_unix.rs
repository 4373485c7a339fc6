//! The unix socket prober against loopback unix socket servers: the `unix_socket_ping`
//! module of blackbox_exporter's example.yml, failures, bounds and TLS.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lookout_exporter::limits::Limits;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// `unix_socket_ping` of blackbox_exporter's example.yml.
const PING: &str = "prober: unix\ntimeout: 5s\nunix:\n  query_response:\n    - send: \"PING\"\n    - expect: \"PONG\"";

/// Serves `handler` on a socket in a fresh directory; returns the directory (kept alive)
/// and the socket's path.
fn unix_server<F, Fut>(handler: F) -> (tempfile::TempDir, PathBuf)
where
    F: Fn(UnixStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("probe.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handler(stream));
        }
    });
    (dir, path)
}

/// Answers a first line `PING` with `reply`, then closes.
fn pong(reply: &'static str) -> (tempfile::TempDir, PathBuf) {
    unix_server(move |s| async move {
        let (read, mut write) = s.into_split();
        let mut lines = BufReader::new(read).lines();
        if let Ok(Some(line)) = lines.next_line().await {
            if line == "PING" {
                let _ = write.write_all(reply.as_bytes()).await;
            }
        }
    })
}

fn target(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn ping_pong() {
    let (_dir, path) = pong("PONG\n");
    let r = probe(&target(&path), &module(PING)).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(0.0));
    // No name to resolve.
    assert!(value(&r, "probe_ip_protocol").is_none());
    assert!(value(&r, "probe_dns_lookup_time_seconds").is_none());
}

#[tokio::test]
async fn wrong_answer_closed_and_missing_sockets() {
    let (_dir, path) = pong("PANG\n");
    let r = probe(&target(&path), &module(PING)).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));

    // A socket file nobody listens on any more.
    let dir = tempfile::tempdir().expect("tempdir");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    let r = probe(&target(&stale), &module(PING)).await;
    assert_failure(&r, "connection_refused");

    let r = probe(&target(&dir.path().join("absent.sock")), &module(PING)).await;
    assert_failure(&r, "connection_failed");
    let r = probe("", &module(PING)).await;
    assert_failure(&r, "invalid_target");
}

#[tokio::test]
async fn silence_times_out_and_endless_lines_are_cut() {
    let (_dir, path) = unix_server(|s| async move {
        let _open = s;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let r = probe_with(
        &target(&path),
        &module(PING),
        None,
        Duration::from_millis(300),
    )
    .await;
    assert_failure(&r, "timeout");

    // 1 MiB without a newline: cut at 64 KiB.
    let (_dir2, path) = unix_server(|mut s| async move {
        let _ = s.write_all(&vec![b'x'; 1 << 20]).await;
    });
    let r = probe_limited(&target(&path), &module(PING), Limits::default()).await;
    assert_failure(&r, "network_error");
}

#[tokio::test]
async fn tls_over_a_unix_socket() {
    let pki = pki(&[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    let (_dir, path) = unix_server(move |s| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(s).await {
                let _ = tls.write_all(b"+OK ready\n").await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    });
    let ca = pki.ca_file.display().to_string();
    let verified = module(&format!(
        "prober: unix\nunix:\n  tls: true\n  tls_config:\n    ca_file: '{ca}'\n    server_name: localhost\n  query_response:\n    - expect: '^\\+OK'"
    ));
    let r = probe(&target(&path), &verified).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_ssl_earliest_cert_expiry"),
        Some(pki.leaf_not_after as f64)
    );
    // A path is no name to verify a certificate against.
    let nameless = module(&format!(
        "prober: unix\nunix:\n  tls: true\n  tls_config:\n    ca_file: '{ca}'"
    ));
    let r = probe(&target(&path), &nameless).await;
    assert_failure(&r, "tls_config");
    let skip =
        module("prober: unix\nunix:\n  tls: true\n  tls_config:\n    insecure_skip_verify: true");
    assert_success(&probe(&target(&path), &skip).await);
}
