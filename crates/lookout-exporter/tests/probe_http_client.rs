//! The HTTP client settings newer than Debian's blackbox_exporter 0.23 (which the
//! differential harness cannot judge), against loopback peers: a forward/CONNECT proxy that
//! records what it is asked, and a token endpoint that counts its requests.
//! `proxy_connect_header`, `no_proxy`, `proxy_from_environment`, `http_headers`, the probe
//! policy through a proxy, CONNECT failures and the OAuth 2.0 token cache.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use common::*;
use lookout_exporter::config::Config;
use lookout_exporter::limits::Limits;
use lookout_exporter::prober::{ProbeRequest, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that echoes the request headers, one `name: value` line each.
async fn echo() -> SocketAddr {
    serve(Router::new().route(
        "/headers",
        get(|h: HeaderMap| async move {
            h.iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect::<String>()
        }),
    ))
    .await
}

/// What the proxy answers a CONNECT with: `None` tunnels.
type Answer = Option<&'static [u8]>;

/// A proxy: records every request head; tunnels CONNECT (or answers `connect_answer`),
/// forwards absolute-form requests. `*.test` hosts are 127.0.0.1.
async fn proxy(connect_answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                seen.lock().expect("lock").push(text.clone());
                let target = text.split(' ').nth(1).unwrap_or("").to_string();
                let authority = target
                    .strip_prefix("http://")
                    .map_or(target.as_str(), |r| r.split('/').next().unwrap_or(""))
                    .to_string();
                let (host, port) = authority.rsplit_once(':').unwrap_or((&authority, "80"));
                let host = if host.ends_with(".test") {
                    "127.0.0.1"
                } else {
                    host
                };
                let connect = text.starts_with("CONNECT ");
                if connect {
                    if let Some(answer) = connect_answer {
                        let _ = conn.write_all(answer).await;
                        return;
                    }
                }
                let Ok(mut up) = TcpStream::connect(format!("{host}:{port}")).await else {
                    return;
                };
                if connect {
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                } else {
                    let _ = up.write_all(&head).await;
                }
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            });
        }
    });
    (addr, heads)
}

fn heads(h: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    h.lock().expect("lock").clone()
}

#[tokio::test]
async fn connect_carries_proxy_connect_header_and_url_credentials() {
    let pki = pki(&[b"http/1.1"]);
    let backend = serve_https(pki.server_config.clone()).await;
    let (p, seen) = proxy(None).await;
    let m = module(&format!(
        "prober: http\nhttp:\n  proxy_url: http://user:pass@{p}\n  proxy_connect_header:\n    X-Tenant: [blue, green]\n    Proxy-Authorization: [Bearer ignored]\n  tls_config:\n    ca_file: {}\n",
        pki.ca_file.display()
    ));
    let report = probe(&format!("https://localhost:{}/", backend.port()), &m).await;
    assert_success(&report);
    let h = heads(&seen);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(
        h[0].starts_with("CONNECT 127.0.0.1:"),
        "the resolved address, as blackbox: {h:?}"
    );
    assert!(
        h[0].contains("X-Tenant: blue\r\nX-Tenant: green\r\n"),
        "{h:?}"
    );
    // Go's transport lets the URL's credentials win over proxy_connect_header's.
    assert!(
        h[0].contains("Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"),
        "{h:?}"
    );
    assert!(!h[0].contains("ignored"), "{h:?}");
}

#[tokio::test]
async fn connect_failures_are_reason_proxy() {
    let (p, _) = proxy(Some(b"HTTP/1.1 403 Forbidden\r\n\r\n")).await;
    let m = module(&format!("prober: http\nhttp:\n  proxy_url: http://{p}\n"));
    let report = probe("https://127.0.0.1:1/", &m).await;
    assert_failure(&report, "proxy");
    assert_eq!(value(&report, "probe_http_status_code"), Some(0.0));

    static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let huge: &'static [u8] = HUGE.get_or_init(|| {
        let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'x', 100_000));
        v
    });
    let (p, _) = proxy(Some(huge)).await;
    let m = module(&format!("prober: http\nhttp:\n  proxy_url: http://{p}\n"));
    let report = probe("https://127.0.0.1:1/", &m).await;
    assert_failure(&report, "proxy");
}

#[tokio::test]
async fn no_proxy_and_loopback_go_direct_others_through_the_proxy() {
    let backend = echo().await;
    let (p, seen) = proxy(None).await;
    // With no_proxy, Go's httpproxy rules apply: loopback is never proxied.
    let m = module(&format!(
        "prober: http\nhttp:\n  proxy_url: http://{p}\n  no_proxy: other.test\n"
    ));
    let report = probe(&format!("http://127.0.0.1:{}/headers", backend.port()), &m).await;
    assert_success(&report);
    assert!(heads(&seen).is_empty());

    let m = module(&format!(
        "prober: http\nhttp:\n  proxy_url: http://{p}\n  no_proxy: other.test\n  skip_resolve_phase_with_proxy: true\n"
    ));
    let report = probe(
        &format!("http://service.test:{}/headers", backend.port()),
        &m,
    )
    .await;
    assert_success(&report);
    let h = heads(&seen);
    assert!(
        h.len() == 1
            && h[0].starts_with(&format!(
                "GET http://service.test:{}/headers HTTP/1.1",
                backend.port()
            )),
        "{h:?}"
    );
    // Skipped resolution: no resolve phase and no probe_ip_* metrics, as blackbox.
    assert_eq!(value(&report, "probe_ip_protocol"), None);
    assert_eq!(
        labeled(
            &report,
            "probe_http_duration_seconds",
            &[("phase", "resolve")]
        ),
        None
    );

    let report = probe(
        &format!("http://x.other.test:{}/headers", backend.port()),
        &m,
    )
    .await;
    assert_failure(&report, "dns_resolution");
    assert_eq!(
        heads(&seen).len(),
        1,
        "no_proxy matched: direct, so resolved here"
    );
}

#[tokio::test]
async fn proxy_from_environment_reads_http_proxy() {
    let backend = echo().await;
    let (p, seen) = proxy(None).await;
    // The only test of this binary that touches the environment.
    unsafe {
        std::env::set_var("HTTP_PROXY", format!("{p}"));
        std::env::set_var("NO_PROXY", "skipped.test");
    }
    let m = module(
        "prober: http\nhttp:\n  proxy_from_environment: true\n  skip_resolve_phase_with_proxy: true\n",
    );
    let report = probe(
        &format!("http://service.test:{}/headers", backend.port()),
        &m,
    )
    .await;
    assert_success(&report);
    assert_eq!(heads(&seen).len(), 1);
    let report = probe(
        &format!("http://skipped.test:{}/headers", backend.port()),
        &m,
    )
    .await;
    assert_failure(&report, "dns_resolution");
    assert_eq!(heads(&seen).len(), 1);
}

#[tokio::test]
async fn http_headers_values_secrets_and_files_are_all_sent() {
    let backend = echo().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("key");
    std::fs::write(&file, "from-file\n").expect("write");
    let m = module(&format!(
        "prober: http\nhttp:\n  headers: {{X-Api-Key: plain}}\n  http_headers:\n    X-Api-Key:\n      values: [v1]\n      secrets: [s1]\n      files: [{}]\n  fail_if_body_not_matches_regexp:\n    - \"x-api-key: plain\\nx-api-key: v1\\nx-api-key: s1\\nx-api-key: from-file\\n\"\n",
        file.display()
    ));
    let report = probe(&format!("http://127.0.0.1:{}/headers", backend.port()), &m).await;
    assert_success(&report);

    std::fs::remove_file(&file).expect("remove");
    let report = probe(&format!("http://127.0.0.1:{}/headers", backend.port()), &m).await;
    assert_failure(&report, "http_request");
}

#[tokio::test]
async fn probe_policy_checks_the_target_not_the_proxy() {
    let backend = echo().await;
    let (p, seen) = proxy(None).await;
    let config = Config::parse(
        &format!(
            "probe_policy:\n  allowed_targets: [127.0.0.0/8, \"*.allowed.test\"]\nmodules:\n  skip:\n    prober: http\n    http:\n      proxy_url: http://{p}\n      skip_resolve_phase_with_proxy: true\n"
        ),
        "t.yml",
    )
    .expect("config");
    let probe_policed = |target: String| {
        let config = &config;
        async move {
            run(&ProbeRequest {
                target: &target,
                module: &config.modules["skip"],
                hostname: None,
                timeout: Duration::from_secs(5),
                limits: Limits::default(),
                policy: Some(&config.probe_policy),
            })
            .await
        }
    };
    // A name not resolved here can only be allowed by a host pattern.
    let report = probe_policed(format!("http://service.test:{}/headers", backend.port())).await;
    assert_failure(&report, "not_allowed");
    let report = probe_policed(format!("http://a.allowed.test:{}/headers", backend.port())).await;
    assert_success(&report);
    let report = probe_policed(format!("http://127.0.0.1:{}/headers", backend.port())).await;
    assert_success(&report);
    let report = probe_policed("http://10.1.2.3/".into()).await;
    assert_failure(&report, "not_allowed");
    assert_eq!(
        heads(&seen).len(),
        2,
        "refused targets never reach the proxy"
    );
}

#[tokio::test]
async fn oauth2_tokens_are_cached_and_failures_are_reason_oauth2() {
    let fetched = Arc::new(AtomicUsize::new(0));
    let count = fetched.clone();
    let token = serve(
        Router::new()
            .route(
                "/token",
                post(move || {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        (
                            [("content-type", "application/json")],
                            format!(r#"{{"access_token":"t{n}","token_type":"bearer","expires_in":600}}"#),
                        )
                    }
                }),
            )
            .route(
                "/huge",
                post(|| async { "x".repeat(2 << 20) }),
            ),
    )
    .await;
    let backend = echo().await;
    let m = module(&format!(
        "prober: http\nhttp:\n  oauth2:\n    client_id: cache\n    client_secret: s\n    token_url: http://{token}/token\n  fail_if_body_not_matches_regexp: [\"authorization: Bearer t0\"]\n"
    ));
    let target = format!("http://127.0.0.1:{}/headers", backend.port());
    assert_success(&probe(&target, &m).await);
    assert_success(&probe(&target, &m).await);
    assert_eq!(
        fetched.load(Ordering::SeqCst),
        1,
        "the second probe reuses the token"
    );

    let m = module(&format!(
        "prober: http\nhttp:\n  oauth2:\n    client_id: big\n    token_url: http://{token}/huge\n"
    ));
    let report = probe(&target, &m).await;
    assert_failure(&report, "oauth2");
    let closed = closed_port().await;
    let m = module(&format!(
        "prober: http\nhttp:\n  oauth2:\n    client_id: down\n    token_url: http://{closed}/token\n"
    ));
    assert_failure(&probe(&target, &m).await, "oauth2");
}
