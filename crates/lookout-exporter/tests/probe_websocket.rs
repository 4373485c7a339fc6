//! The WebSocket prober against a loopback tokio-tungstenite server that checks basic and
//! bearer authorization and a custom header, then speaks the Hello/Welcome dialogue of the
//! `websocket_example_*` modules in blackbox_exporter's example.yml; over ws:// and wss://.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use lookout_exporter::limits::Limits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

const BASIC: &str = "prober: websocket\nwebsocket:\n  http_config:\n    basic_auth:\n      username: \"user\"\n      password: \"password\"\n    tls_config:\n      insecure_skip_verify: true\n  headers:\n    X-Some-Header: \"my_header\"\n  query_response:\n    - expect: ^Hello,\\s(.+)\"\n      send: \"Hello server, i'am ${1}\"\n    - expect: ^Welcome";

const BEARER: &str = "prober: websocket\nwebsocket:\n  http_config:\n    authorization:\n      credentials: \"secret_token\"\n    tls_config:\n      insecure_skip_verify: true\n  headers:\n    X-Some-Header: \"my_header\"\n  query_response:\n    - expect: ^Hello,\\s(.+)\"\n      send: \"Hello server, i'am ${1}\"\n    - expect: ^Welcome";

/// `user:password` in base64.
const USER_PASSWORD: &str = "Basic dXNlcjpwYXNzd29yZA==";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the server does after the upgrade.
#[derive(Clone, Copy)]
enum Talk {
    /// `Hello, "lookout"` … expects the reply, then `Welcome`.
    Dialogue,
    /// Sends `size` bytes in one message.
    Big(usize),
    /// Closes at once.
    Close,
    /// Never speaks.
    Silent,
}

async fn talk(mut ws: WebSocketStream<Box<dyn Io>>, how: Talk) {
    match how {
        Talk::Dialogue => {
            let _ = ws.send(Message::text("Hello, \"lookout\"")).await;
            if let Some(Ok(Message::Text(reply))) = ws.next().await {
                if reply.as_str() == "Hello server, i'am \"lookout" {
                    let _ = ws.send(Message::text("Welcome, lookout")).await;
                } else {
                    let _ = ws.send(Message::text(format!("Unexpected: {reply}"))).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Talk::Big(size) => {
            let _ = ws.send(Message::text("x".repeat(size))).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Talk::Close => {
            let _ = ws.close(None).await;
        }
        Talk::Silent => tokio::time::sleep(Duration::from_secs(5)).await,
    }
}

/// A WebSocket server accepting `auth` as the Authorization header and `X-Some-Header:
/// my_header` (401 otherwise), over TLS when `tls` is set.
async fn ws_server(
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: &'static str,
    how: Talk,
) -> SocketAddr {
    server(move |tcp| {
        let tls = tls.clone();
        async move {
            let stream: Box<dyn Io> = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => Box::new(s),
                    Err(_) => return,
                },
                None => Box::new(tcp),
            };
            // tungstenite's callback signature: the error is the HTTP answer itself.
            #[allow(clippy::result_large_err)]
            let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
                if header("authorization") == Some(auth)
                    && header("x-some-header") == Some("my_header")
                {
                    Ok(resp)
                } else {
                    let mut refused = ErrorResponse::new(Some("who are you?".into()));
                    *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
                    Err(refused)
                }
            };
            if let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await {
                talk(ws, how).await;
            }
        }
    })
    .await
}

fn ws(addr: SocketAddr) -> String {
    format!("ws://127.0.0.1:{}/chat", addr.port())
}

fn phase(r: &lookout_exporter::prober::ProbeReport, name: &str) -> Option<f64> {
    labeled(r, "probe_websocket_duration_seconds", &[("phase", name)])
}

#[tokio::test]
async fn basic_auth_dialogue_over_ws() {
    let addr = ws_server(None, USER_PASSWORD, Talk::Dialogue).await;
    let r = probe(&ws(addr), &module(BASIC)).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_websocket_status_code"), Some(101.0));
    assert_eq!(value(&r, "probe_websocket_connection_upgraded"), Some(1.0));
    assert_eq!(value(&r, "probe_websocket_failed_due_to_regex"), Some(0.0));
    for p in ["resolve", "connect", "processing", "transfer"] {
        assert!(phase(&r, p).is_some_and(|s| s >= 0.0), "phase {p}");
    }
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
}

#[tokio::test]
async fn bearer_dialogue_over_wss() {
    let pki = pki(&[]);
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config.clone());
    let addr = ws_server(Some(acceptor), "Bearer secret_token", Talk::Dialogue).await;
    let target = format!("wss://localhost:{}/chat", addr.port());
    let bearer = module(&BEARER.replace("  headers:", "  preferred_ip_protocol: ip4\n  headers:"));
    let r = probe(&target, &bearer).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_websocket_status_code"), Some(101.0));
    // Like blackbox_exporter, no certificate metrics.
    assert!(value(&r, "probe_ssl_earliest_cert_expiry").is_none());

    // Verified against the test CA, by name.
    let ca = pki.ca_file.display().to_string();
    let verified = module(&bearer_with_ca(&ca));
    assert_success(&probe(&target, &verified).await);
    // Not trusted without it.
    let untrusted =
        module(&BEARER.replace("insecure_skip_verify: true", "insecure_skip_verify: false"));
    let r = probe(&target, &untrusted).await;
    assert_failure(&r, "tls_handshake");
    assert_eq!(value(&r, "probe_websocket_status_code"), Some(0.0));
}

fn bearer_with_ca(ca: &str) -> String {
    BEARER
        .replace("insecure_skip_verify: true", &format!("ca_file: '{ca}'"))
        .replace("  headers:", "  preferred_ip_protocol: ip4\n  headers:")
}

#[tokio::test]
async fn wrong_credentials_and_plain_http_are_not_upgraded() {
    let addr = ws_server(None, USER_PASSWORD, Talk::Dialogue).await;
    let r = probe(&ws(addr), &module(BEARER)).await;
    assert_failure(&r, "invalid_status_code");
    assert_eq!(value(&r, "probe_websocket_status_code"), Some(401.0));
    assert_eq!(value(&r, "probe_websocket_connection_upgraded"), Some(0.0));
    assert!(phase(&r, "transfer").is_none());

    let plain =
        serve(axum::Router::new().route("/chat", axum::routing::get(|| async { "hi" }))).await;
    let r = probe(&ws(plain), &module(BASIC)).await;
    assert_failure(&r, "invalid_status_code");
    assert_eq!(value(&r, "probe_websocket_status_code"), Some(200.0));

    let r = probe(&ws(closed_port().await), &module(BASIC)).await;
    assert_failure(&r, "connection_refused");
    let r = probe("http://127.0.0.1/", &module(BASIC)).await;
    assert_failure(&r, "invalid_target");
}

#[tokio::test]
async fn mismatch_close_oversize_and_silence_fail_the_dialogue() {
    // The server's first message does not match ^Hello.
    let addr = ws_server(None, USER_PASSWORD, Talk::Big(10)).await;
    let r = probe(&ws(addr), &module(BASIC)).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_websocket_failed_due_to_regex"), Some(1.0));
    assert!(phase(&r, "transfer").is_some());

    let addr = ws_server(None, USER_PASSWORD, Talk::Close).await;
    let r = probe(&ws(addr), &module(BASIC)).await;
    assert_failure(&r, "expect_mismatch");
    assert_eq!(value(&r, "probe_websocket_connection_upgraded"), Some(1.0));

    // A message over --probe.max-regexp-body-bytes.
    let addr = ws_server(None, USER_PASSWORD, Talk::Big(64 << 10)).await;
    let limits = Limits {
        max_regexp_body_bytes: 16 << 10,
        ..Limits::default()
    };
    let r = probe_limited(&ws(addr), &module(BASIC), limits).await;
    assert_failure(&r, "message_too_large");
    assert_eq!(value(&r, "probe_websocket_failed_due_to_regex"), Some(1.0));

    let addr = ws_server(None, USER_PASSWORD, Talk::Silent).await;
    let r = probe_with(&ws(addr), &module(BASIC), None, Duration::from_millis(300)).await;
    assert_failure(&r, "timeout");
    assert_eq!(value(&r, "probe_websocket_connection_upgraded"), Some(1.0));
}
