//! The TCP prober against loopback banner and dialogue servers, with TLS and STARTTLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

async fn ssh_like() -> SocketAddr {
    server(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2 Lookout-test\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test]
async fn plain_connect() {
    let addr = ssh_like().await;
    let r = probe(&addr.to_string(), &module("prober: tcp")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
    assert!(value(&r, "probe_dns_lookup_time_seconds").is_some());
    assert!(value(&r, "probe_ssl_earliest_cert_expiry").is_none());
}

#[tokio::test]
async fn banner_expectations() {
    let addr = ssh_like().await;
    let ok = module(
        "prober: tcp\ntcp:\n  query_response:\n    - expect: '^SSH-2.0-([^ ]+)'\n      labels: [{name: ssh_version, value: '${1}'}]",
    );
    let r = probe(&addr.to_string(), &ok).await;
    assert_success(&r);
    assert_eq!(
        labeled(&r, "probe_expect_info", &[("ssh_version", "OpenSSH_9.2")]),
        Some(1.0)
    );

    // The server closes after its greeting: no line matches.
    let closing = server(|mut s| async move {
        let _ = s.write_all(b"220 smtp.example ESMTP\r\n").await;
    })
    .await;
    let ssh = module("prober: tcp\ntcp:\n  query_response:\n    - expect: '^SSH-2.0-'");
    let r = probe(&closing.to_string(), &ssh).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));

    // A server that never speaks runs into the deadline.
    let silent = server(|s| async move {
        let _open = s;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let r = probe_with(&silent.to_string(), &ssh, None, Duration::from_millis(300)).await;
    assert_failure(&r, "timeout");
}

#[tokio::test]
async fn irc_dialogue_with_capture_substitution() {
    let addr = server(|s| async move {
        let (read, mut write) = s.into_split();
        let mut lines = BufReader::new(read).lines();
        let nick = lines.next_line().await.ok().flatten().unwrap_or_default();
        let user = lines.next_line().await.ok().flatten().unwrap_or_default();
        if nick != "NICK prober" || !user.starts_with("USER prober") {
            return;
        }
        let _ = write
            .write_all(b":irc.example NOTICE * :hello\r\nPING :token-42\r\n")
            .await;
        if lines.next_line().await.ok().flatten().as_deref() == Some("PONG token-42") {
            let _ = write
                .write_all(b":irc.example 001 prober :Welcome\r\n")
                .await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    // The irc_banner module of Debian's blackbox.yml.
    let irc = module(
        "prober: tcp\ntcp:\n  query_response:\n  - send: \"NICK prober\"\n  - send: \"USER prober prober prober :prober\"\n  - expect: \"PING :([^ ]+)\"\n    send: \"PONG ${1}\"\n  - expect: \"^:[^ ]+ 001\"",
    );
    let r = probe_with(&addr.to_string(), &irc, None, Duration::from_secs(3)).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
}

#[tokio::test]
async fn connection_refused_and_bad_target() {
    let closed = closed_port().await;
    let r = probe(&closed.to_string(), &module("prober: tcp")).await;
    assert_failure(&r, "connection_refused");
    let r = probe("127.0.0.1", &module("prober: tcp")).await;
    assert_failure(&r, "invalid_target");
}

#[tokio::test]
async fn source_ip_address_is_used() {
    let addr = server(|mut s| async move {
        let peer = s
            .peer_addr()
            .map(|p| p.ip().to_string())
            .unwrap_or_default();
        let _ = s.write_all(format!("from {peer}\n").as_bytes()).await;
    })
    .await;
    let m = module(
        "prober: tcp\ntcp:\n  source_ip_address: 127.0.0.2\n  query_response:\n    - expect: '^from 127\\.0\\.0\\.2$'",
    );
    assert_success(&probe(&addr.to_string(), &m).await);
}

#[tokio::test]
async fn tls_and_certificate_expiry() {
    let pki = pki(&[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    let addr = server(move |s| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(s).await {
                let _ = tls.write_all(b"+OK POP3 ready\r\n").await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    })
    .await;
    let ca = pki.ca_file.display().to_string();
    // Like Debian's pop3s_banner module, with the test CA and IPv4 (the server is on
    // 127.0.0.1). Debian's `^+OK` is `^` repeated then `OK` in RE2 and Rust alike, so it
    // cannot match "+OK"; the escaped form does.
    let pop3s = module(&format!(
        "prober: tcp\ntcp:\n  preferred_ip_protocol: ip4\n  query_response:\n  - expect: '^\\+OK'\n  tls: true\n  tls_config:\n    insecure_skip_verify: false\n    ca_file: '{ca}'"
    ));
    let target = format!("localhost:{}", addr.port());
    let r = probe_with(&target, &pop3s, None, Duration::from_secs(3)).await;
    assert_success(&r);
    let expiry = pki.leaf_not_after as f64;
    assert_eq!(value(&r, "probe_ssl_earliest_cert_expiry"), Some(expiry));
    assert_eq!(r.recorder.cert_expiry, Some(expiry));

    let untrusted = module("prober: tcp\ntcp:\n  preferred_ip_protocol: ip4\n  tls: true");
    let r = probe(&target, &untrusted).await;
    assert_failure(&r, "tls_handshake");
}

#[tokio::test]
async fn starttls_upgrade() {
    let pki = pki(&[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    let addr = server(move |s| {
        let acceptor = acceptor.clone();
        async move {
            let mut s = BufReader::new(s);
            let _ = s.get_mut().write_all(b"220 mail.example ESMTP\r\n").await;
            let mut line = String::new();
            if s.read_line(&mut line).await.is_err() || line.trim_end() != "STARTTLS" {
                return;
            }
            let _ = s
                .get_mut()
                .write_all(b"220 2.0.0 Ready to start TLS\r\n")
                .await;
            if let Ok(mut tls) = acceptor.accept(s.into_inner()).await {
                let _ = tls.write_all(b"250 secured\r\n").await;
                let _ = tls.flush().await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    })
    .await;
    let ca = pki.ca_file.display().to_string();
    let smtp = module(&format!(
        "prober: tcp\ntcp:\n  query_response:\n  - expect: \"^220 \"\n  - send: STARTTLS\n  - expect: \"^220 \"\n    starttls: true\n  - expect: \"^250 secured\"\n  tls_config:\n    ca_file: '{ca}'\n    server_name: localhost"
    ));
    let r = probe_with(&addr.to_string(), &smtp, None, Duration::from_secs(3)).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_ssl_earliest_cert_expiry"),
        Some(pki.leaf_not_after as f64)
    );
    assert_eq!(
        labeled(&r, "probe_tls_version_info", &[("version", "TLS 1.3")]),
        Some(1.0)
    );
}

/// PostgreSQL's SSLRequest, as the `postgresql` module of blackbox_exporter's example.yml
/// sends it with `!!binary AAAACATSFi8=`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f];

const POSTGRESQL: &str = "prober: tcp\ntcp:\n  query_response:\n  - send: !!binary AAAACATSFi8=\n  - expect_bytes: S\n  - starttls: true\n  tls_config:\n    insecure_skip_verify: true";

/// A PostgreSQL-like server: reads the 8-byte SSLRequest, answers `reply`, and starts TLS
/// when it said 'S'. As PostgreSQL does, any byte after the request and before the TLS
/// ClientHello (blackbox_exporter's newline) breaks the handshake.
async fn postgres_like(reply: &'static [u8]) -> SocketAddr {
    let pki = pki(&[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    server(move |mut s| {
        let acceptor = acceptor.clone();
        async move {
            let mut request = [0u8; 8];
            if s.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                return;
            }
            let _ = s.write_all(reply).await;
            if reply == b"S" {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.flush().await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn postgresql_ssl_request_then_tls() {
    let addr = postgres_like(b"S").await;
    let r = probe_with(
        &addr.to_string(),
        &module(POSTGRESQL),
        None,
        Duration::from_secs(3),
    )
    .await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(0.0));
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
    assert!(value(&r, "probe_ssl_earliest_cert_expiry").is_some());

    // 'N': the server does not do TLS.
    let addr = postgres_like(b"N").await;
    let r = probe(&addr.to_string(), &module(POSTGRESQL)).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(1.0));
}

#[tokio::test]
async fn expect_bytes_waits_for_all_and_fails_on_a_short_stream() {
    let m = module("prober: tcp\ntcp:\n  query_response:\n  - expect_bytes: not-a-line");
    // The bytes come in two pieces: Lookout waits for the rest.
    let split = server(|mut s| async move {
        let _ = s.write_all(b"not-").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = s.write_all(b"a-line").await;
    })
    .await;
    let r = probe(&split.to_string(), &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(0.0));

    // Other bytes: failed due to bytes.
    let other = server(|mut s| async move {
        let _ = s.write_all(b"something-else").await;
    })
    .await;
    let r = probe(&other.to_string(), &m).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(1.0));

    // Closed after 3 of 10 bytes: a mismatch, but not "due to bytes" (as blackbox's short read).
    let short = server(|mut s| async move {
        let _ = s.write_all(b"not").await;
    })
    .await;
    let r = probe(&short.to_string(), &m).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_failed_due_to_bytes"), Some(0.0));

    // Bytes after a line read for `expect` are not lost.
    let both = server(|mut s| async move {
        let _ = s.write_all(b"220 ready\r\n\x00\x01rest").await;
    })
    .await;
    let m = module(
        "prober: tcp\ntcp:\n  query_response:\n  - expect: '^220'\n  - expect_bytes: !!binary AAE=",
    );
    assert_success(&probe(&both.to_string(), &m).await);
}
