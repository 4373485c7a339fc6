//! The HTTP prober against real loopback servers: success, every failure reason, redirects,
//! regexes, size limits, compression and TLS with a certificate made here.

mod common;

use std::io::Write;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get};
use common::*;
use lookout_exporter::limits::Limits;

const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

async fn app() -> std::net::SocketAddr {
    let router = Router::new()
        .route("/ok", get(|| async { "hello, lookout" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route(
            "/r/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    if n == 0 {
                        Redirect::to("/ok").into_response()
                    } else {
                        Redirect::temporary(&format!("{}", n - 1)).into_response()
                    }
                },
            ),
        )
        .route("/loop", get(|| async { Redirect::to("/loop") }))
        .route("/nocontent", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/login",
            get(|| async {
                (
                    [(header::SET_COOKIE, "session=s3cret; Path=/; HttpOnly")],
                    Redirect::to("/private"),
                )
            }),
        )
        .route(
            "/private",
            get(|headers: HeaderMap| async move {
                match headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
                    Some("session=s3cret") => (StatusCode::OK, "welcome"),
                    _ => (StatusCode::FORBIDDEN, "no session"),
                }
            }),
        )
        .route(
            "/headers",
            get(|| async {
                (
                    [
                        ("x-version", "v2-beta"),
                        (
                            header::LAST_MODIFIED.as_str(),
                            "Sun, 06 Nov 1994 08:49:37 GMT",
                        ),
                    ],
                    "headers here",
                )
            }),
        )
        .route("/big", get(|| async { "x".repeat(64 * 1024) }))
        .route(
            "/gzip",
            get(|| async {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all("compressible ".repeat(100).as_bytes())
                    .expect("gzip");
                (
                    [(header::CONTENT_ENCODING, "gzip")],
                    enc.finish().expect("gzip"),
                )
            }),
        )
        .route(
            "/echo",
            any(
                |method: axum::http::Method, headers: HeaderMap, body: String| async move {
                    let host = headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let custom = headers
                        .get("x-custom")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    format!("method={method} host={host} auth={auth} custom={custom} body={body}")
                },
            ),
        );
    serve(router).await
}

#[tokio::test]
async fn ok_records_blackbox_metrics() {
    let addr = app().await;
    let m = module("prober: http\nhttp:\n  preferred_ip_protocol: ip4");
    let r = probe(&format!("http://{addr}/ok"), &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_status_code"), Some(200.0));
    assert_eq!(value(&r, "probe_http_version"), Some(1.1));
    assert_eq!(value(&r, "probe_http_content_length"), Some(14.0));
    assert_eq!(value(&r, "probe_http_uncompressed_body_length"), Some(14.0));
    assert_eq!(value(&r, "probe_http_redirects"), Some(0.0));
    assert_eq!(value(&r, "probe_http_ssl"), Some(0.0));
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
    assert!(value(&r, "probe_ip_addr_hash").is_some());
    assert!(value(&r, "probe_dns_lookup_time_seconds").is_some());
    for phase in PHASES {
        assert!(
            labeled(&r, "probe_http_duration_seconds", &[("phase", phase)]).is_some(),
            "phase {phase}"
        );
    }
    assert_eq!(
        labeled(&r, "probe_http_duration_seconds", &[("phase", "tls")]),
        Some(0.0)
    );
    let obs = r.recorder.http.as_ref().expect("http observation");
    assert_eq!(obs.status, 200);
    assert!(r.recorder.cert_expiry.is_none());
    assert!(value(&r, "probe_http_last_modified_timestamp_seconds").is_none());
}

#[tokio::test]
async fn target_without_scheme_and_hostname_via_hosts_file() {
    let addr = app().await;
    let m =
        module("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  ip_protocol_fallback: false");
    let r = probe(&format!("localhost:{}/ok", addr.port()), &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
}

#[tokio::test]
async fn status_codes() {
    let addr = app().await;
    let r = probe(&format!("http://{addr}/fail"), &module("prober: http")).await;
    assert_failure(&r, "invalid_status_code");
    assert_eq!(value(&r, "probe_http_status_code"), Some(500.0));
    assert_eq!(r.recorder.http.as_ref().map(|h| h.status), Some(500));

    let accepts_500 = module("prober: http\nhttp:\n  valid_status_codes: [500]");
    assert_success(&probe(&format!("http://{addr}/fail"), &accepts_500).await);
    let r = probe(&format!("http://{addr}/ok"), &accepts_500).await;
    assert_failure(&r, "invalid_status_code");
}

#[tokio::test]
async fn slow_server_times_out_with_partial_metrics() {
    let addr = app().await;
    let m = module("prober: http");
    let r = probe_with(
        &format!("http://{addr}/slow"),
        &m,
        None,
        Duration::from_millis(300),
    )
    .await;
    assert_failure(&r, "timeout");
    // What was measured before the deadline is still there.
    assert!(labeled(&r, "probe_http_duration_seconds", &[("phase", "connect")]).is_some());
    assert_eq!(value(&r, "probe_http_status_code"), Some(0.0));
}

#[tokio::test]
async fn redirects_are_followed_and_counted() {
    let addr = app().await;
    let r = probe(&format!("http://{addr}/r/3"), &module("prober: http")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_redirects"), Some(4.0));
    assert_eq!(value(&r, "probe_http_status_code"), Some(200.0));
    assert_eq!(value(&r, "probe_http_content_length"), Some(14.0));

    // As blackbox_exporter (Go's client): the redirect not followed counts, its body unread.
    let no_follow = module("prober: http\nhttp:\n  follow_redirects: false");
    let r = probe(&format!("http://{addr}/r/3"), &no_follow).await;
    assert_failure(&r, "invalid_status_code");
    assert_eq!(value(&r, "probe_http_status_code"), Some(307.0));
    assert_eq!(value(&r, "probe_http_redirects"), Some(1.0));
    assert_eq!(value(&r, "probe_http_uncompressed_body_length"), Some(0.0));
    let accept =
        module("prober: http\nhttp:\n  follow_redirects: false\n  valid_status_codes: [307]");
    assert_success(&probe(&format!("http://{addr}/r/3"), &accept).await);
    // A body regexp cannot match the unread body of a redirect not followed.
    let accept_regexp = module(
        "prober: http\nhttp:\n  follow_redirects: false\n  valid_status_codes: [307]\n  fail_if_body_matches_regexp: [nothing]",
    );
    let r = probe(&format!("http://{addr}/r/3"), &accept_regexp).await;
    assert_failure(&r, "body_regex");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));

    // A cookie set on a redirect goes back with the next request, as with Go's jar.
    let r = probe(&format!("http://{addr}/login"), &module("prober: http")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_redirects"), Some(1.0));

    // A loop: Go's client stops at the 11th redirect and that response is the answer.
    let r = probe(&format!("http://{addr}/loop"), &module("prober: http")).await;
    assert_failure(&r, "too_many_redirects");
    assert_eq!(value(&r, "probe_http_redirects"), Some(11.0));
    assert_eq!(value(&r, "probe_http_status_code"), Some(303.0));
    assert_eq!(value(&r, "probe_http_version"), Some(1.1));
}

#[tokio::test]
async fn the_redirect_limit_follows_the_flag() {
    let addr = app().await;
    let m = module("prober: http");
    let three = Limits {
        max_redirects: 3,
        ..Limits::default()
    };
    // /r/2 takes three redirects: within the limit.
    let r = probe_limited(&format!("http://{addr}/r/2"), &m, three).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_redirects"), Some(3.0));
    // /r/3 takes four: one more than the limit.
    let r = probe_limited(&format!("http://{addr}/r/3"), &m, three).await;
    assert_failure(&r, "too_many_redirects");
    assert_eq!(value(&r, "probe_http_redirects"), Some(4.0));
    let message = &r.failure.as_ref().expect("failure").message;
    assert!(
        message.contains("limit of 3 redirects (--probe.max-redirects)"),
        "{message}"
    );

    // 0 fails on the first redirect and still probes what needs none.
    let zero = Limits {
        max_redirects: 0,
        ..Limits::default()
    };
    let r = probe_limited(&format!("http://{addr}/r/0"), &m, zero).await;
    assert_failure(&r, "too_many_redirects");
    assert_eq!(value(&r, "probe_http_redirects"), Some(1.0));
    assert_success(&probe_limited(&format!("http://{addr}/ok"), &m, zero).await);

    // follow_redirects: false follows none whatever the limit: the redirect is the answer.
    let no_follow = module("prober: http\nhttp:\n  follow_redirects: false");
    let r = probe_limited(&format!("http://{addr}/r/2"), &no_follow, three).await;
    assert_failure(&r, "invalid_status_code");
    assert_eq!(value(&r, "probe_http_status_code"), Some(307.0));
}

#[tokio::test]
async fn body_regexes() {
    let addr = app().await;
    let url = format!("http://{addr}/ok");
    let matches = module("prober: http\nhttp:\n  fail_if_body_matches_regexp: ['hel+o']");
    let r = probe(&url, &matches).await;
    assert_failure(&r, "body_regex");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));

    let not_matches =
        module("prober: http\nhttp:\n  fail_if_body_not_matches_regexp: ['lookout', 'absent']");
    let r = probe(&url, &not_matches).await;
    assert_failure(&r, "body_regex");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));

    let fine = module(
        "prober: http\nhttp:\n  fail_if_body_matches_regexp: ['error']\n  fail_if_body_not_matches_regexp: ['lookout$']",
    );
    let r = probe(&url, &fine).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
}

#[tokio::test]
async fn header_regexes_and_last_modified() {
    let addr = app().await;
    let url = format!("http://{addr}/headers");
    let r = probe(&url, &module("prober: http")).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_http_last_modified_timestamp_seconds"),
        Some(784_111_777.0)
    );

    let cases = [
        (
            "fail_if_header_matches: [{header: X-Version, regexp: 'beta'}]",
            false,
        ),
        (
            "fail_if_header_matches: [{header: x-version, regexp: '^v1'}]",
            true,
        ),
        (
            "fail_if_header_matches: [{header: X-Missing, regexp: 'x'}]",
            false,
        ),
        (
            "fail_if_header_matches: [{header: X-Missing, regexp: 'x', allow_missing: true}]",
            true,
        ),
        (
            "fail_if_header_not_matches: [{header: X-Version, regexp: '^v2'}]",
            true,
        ),
        (
            "fail_if_header_not_matches: [{header: X-Version, regexp: '^v3'}]",
            false,
        ),
        (
            "fail_if_header_not_matches: [{header: X-Missing, regexp: 'x'}]",
            false,
        ),
    ];
    for (rule, ok) in cases {
        let r = probe(&url, &module(&format!("prober: http\nhttp:\n  {rule}"))).await;
        if ok {
            assert_success(&r);
            assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0), "{rule}");
        } else {
            assert_failure(&r, "header_regex");
            assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0), "{rule}");
        }
    }
}

#[tokio::test]
async fn body_size_limit() {
    let addr = app().await;
    let url = format!("http://{addr}/big");
    let r = probe(&url, &module("prober: http\nhttp:\n  body_size_limit: 1KB")).await;
    assert_failure(&r, "body_too_large");
    // As Go's MaxBytesReader: the length read is the limit itself.
    assert_eq!(
        value(&r, "probe_http_uncompressed_body_length"),
        Some(1024.0)
    );
    // No limit by default, as blackbox_exporter.
    let r = probe(&url, &module("prober: http")).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_http_uncompressed_body_length"),
        Some(65_536.0)
    );
    // A body a regexp needs is kept up to --probe.max-regexp-body-bytes.
    let regexp = module("prober: http\nhttp:\n  fail_if_body_not_matches_regexp: ['^x+$']");
    assert_success(&probe(&url, &regexp).await);
    let small = Limits {
        max_regexp_body_bytes: 1000,
        ..Limits::default()
    };
    let r = probe_limited(&url, &regexp, small).await;
    assert_failure(&r, "body_too_large");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(1.0));
    let message = &r.failure.as_ref().expect("failure").message;
    assert!(
        message.contains("--probe.max-regexp-body-bytes"),
        "{message}"
    );
    // Without a regexp the same flag does not bound the body.
    assert_success(&probe_limited(&url, &module("prober: http"), small).await);
}

#[tokio::test]
async fn gzip_body_is_decoded() {
    let addr = app().await;
    let url = format!("http://{addr}/gzip");
    let m = module(
        "prober: http\nhttp:\n  compression: gzip\n  fail_if_body_not_matches_regexp: ['^(compressible )+$']",
    );
    let r = probe(&url, &m).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_http_uncompressed_body_length"),
        Some(1300.0)
    );
    assert!(value(&r, "probe_http_content_length").is_some_and(|l| l < 1300.0));

    let wrong = module("prober: http\nhttp:\n  compression: br");
    let r = probe(&url, &wrong).await;
    assert_failure(&r, "decompression");
}

#[tokio::test]
async fn method_body_headers_auth_and_hostname() {
    let addr = app().await;
    let url = format!("http://{addr}/echo");
    let m = module(
        "prober: http\nhttp:\n  method: PUT\n  body: payload\n  headers: {X-Custom: yes-please}\n  basic_auth: {username: user, password: pass}\n  fail_if_body_not_matches_regexp:\n    - 'method=PUT host=status.example auth=Basic dXNlcjpwYXNz custom=yes-please body=payload'",
    );
    let r = probe_with(&url, &m, Some("status.example"), Duration::from_secs(5)).await;
    assert_success(&r);

    let bearer = module(
        "prober: http\nhttp:\n  bearer_token: t0ken\n  fail_if_body_not_matches_regexp: ['method=GET host=127.0.0.1:[0-9]+ auth=Bearer t0ken ']",
    );
    assert_success(&probe(&url, &bearer).await);
}

#[tokio::test]
async fn connection_refused_and_bad_targets() {
    let closed = closed_port().await;
    let r = probe(&format!("http://{closed}/"), &module("prober: http")).await;
    assert_failure(&r, "connection_refused");
    assert_eq!(value(&r, "probe_http_status_code"), Some(0.0));

    let r = probe("ftp://127.0.0.1/", &module("prober: http")).await;
    assert_failure(&r, "invalid_target");
    let r = probe("http://exa mple/", &module("prober: http")).await;
    assert_failure(&r, "invalid_target");
}

#[tokio::test]
async fn ssl_and_version_requirements_on_plain_http() {
    let addr = app().await;
    let url = format!("http://{addr}/ok");
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  fail_if_not_ssl: true"),
    )
    .await;
    assert_failure(&r, "ssl_required");
    let r = probe(&url, &module("prober: http\nhttp:\n  fail_if_ssl: true")).await;
    assert_success(&r);
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  valid_http_versions: ['HTTP/2.0']"),
    )
    .await;
    assert_failure(&r, "invalid_http_version");
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  valid_http_versions: ['HTTP/1.1']"),
    )
    .await;
    assert_success(&r);
}

#[tokio::test]
async fn tls_with_a_test_ca() {
    let pki = pki(&[b"h2", b"http/1.1"]);
    let addr = serve_https(pki.server_config.clone()).await;
    let ca = pki.ca_file.display().to_string();
    let url = format!("https://localhost:{}/", addr.port());
    let m = module(&format!(
        "prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  tls_config: {{ca_file: '{ca}'}}"
    ));
    let r = probe(&url, &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_ssl"), Some(1.0));
    assert_eq!(value(&r, "probe_http_version"), Some(2.0));
    let expiry = pki.leaf_not_after as f64;
    assert_eq!(value(&r, "probe_ssl_earliest_cert_expiry"), Some(expiry));
    assert_eq!(
        value(&r, "probe_ssl_last_chain_expiry_timestamp_seconds"),
        Some(expiry)
    );
    assert_eq!(r.recorder.cert_expiry, Some(expiry));
    assert_eq!(
        labeled(&r, "probe_tls_version_info", &[("version", "TLS 1.3")]),
        Some(1.0)
    );
    assert!(
        r.recorder
            .metrics
            .iter()
            .any(|m| m.name == "probe_tls_cipher_info" && m.labels[0].1.starts_with("TLS_"))
    );
    let info = r
        .recorder
        .metrics
        .iter()
        .find(|m| m.name == "probe_ssl_last_chain_info")
        .expect("chain info");
    assert!(
        info.labels
            .iter()
            .any(|(k, v)| k == "subjectalternative" && v == "localhost")
    );
    assert!(
        info.labels
            .iter()
            .any(|(k, v)| k == "fingerprint_sha256" && v.len() == 64)
    );
    assert!(labeled(&r, "probe_http_duration_seconds", &[("phase", "tls")]).is_some());

    // An IP target verifies against the certificate's IP SAN; HTTP/1.1 when h2 is off.
    let h1 = module(&format!(
        "prober: http\nhttp:\n  enable_http2: false\n  tls_config: {{ca_file: '{ca}'}}"
    ));
    let r = probe(&format!("https://{addr}/"), &h1).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_version"), Some(1.1));

    let r = probe(&url, &module(&format!("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  fail_if_ssl: true\n  tls_config: {{ca_file: '{ca}'}}"))).await;
    assert_failure(&r, "ssl_forbidden");

    // Without the CA the handshake fails; insecure_skip_verify still reports the expiry.
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  preferred_ip_protocol: ip4"),
    )
    .await;
    assert_failure(&r, "tls_handshake");
    let r = probe(&url, &module("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  tls_config: {insecure_skip_verify: true}")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ssl_earliest_cert_expiry"), Some(expiry));
    // Nothing was verified: blackbox_exporter publishes Go's zero time as the verified
    // chain's expiry, and so does Lookout.
    assert_eq!(
        value(&r, "probe_ssl_last_chain_expiry_timestamp_seconds"),
        Some(-62_135_596_800.0)
    );

    // A server name the certificate does not hold fails verification.
    let r = probe(
        &url,
        &module(&format!("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  tls_config: {{ca_file: '{ca}', server_name: other.example}}")),
    )
    .await;
    assert_failure(&r, "tls_handshake");

    let r = probe(&url, &module("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  tls_config: {ca_file: /nonexistent/ca.pem}")).await;
    assert_failure(&r, "tls_config");
}

#[tokio::test]
async fn ipv6_literal_and_preference() {
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind ::1");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let router = Router::new().route("/ok", get(|| async { "over ipv6" }));
        let _ = axum::serve(listener, router).await;
    });
    let r = probe(
        &format!("http://[::1]:{}/ok", addr.port()),
        &module("prober: http"),
    )
    .await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(6.0));

    // A literal of the other family is refused without fallback, as blackbox_exporter
    // does (Go's resolver finds no address of the asked family): the lookup fails and
    // the address metrics read 0. (Names follow the hosts file before DNS, as in Go;
    // scripts/differential/blackbox.py checks `localhost` against blackbox_exporter.)
    let ip4_only =
        module("prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  ip_protocol_fallback: false");
    let r = probe(&format!("http://[::1]:{}/ok", addr.port()), &ip4_only).await;
    assert_failure(&r, "dns_resolution");
    assert_eq!(value(&r, "probe_ip_protocol"), Some(0.0));
    assert_eq!(value(&r, "probe_ip_addr_hash"), Some(0.0));
    let ip4_fallback = module("prober: http\nhttp:\n  preferred_ip_protocol: ip4");
    let r = probe(&format!("http://[::1]:{}/ok", addr.port()), &ip4_fallback).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(6.0));
    // The hash is FNV-1a over the 16 address bytes, as blackbox_exporter computes it.
    assert_eq!(value(&r, "probe_ip_addr_hash"), Some(1_751_717_746.0));
}

/// A server that answers every request with its own request head as the body.
async fn head_echo() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", head.len());
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.write_all(&head).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn request_head_is_what_go_sends() {
    let addr = head_echo().await;
    // Connection: close (blackbox disables keep-alive), canonical header names, and no
    // Accept-Encoding for `compression` (blackbox sends none, so a server answers plainly).
    let m = module(
        "prober: http\nhttp:\n  headers: {x-custom-thing: v}\n  fail_if_body_not_matches_regexp:\n    - '(?m)^Connection: close\\r$'\n    - '(?m)^X-Custom-Thing: v\\r$'\n    - '(?m)^Host: 127\\.0\\.0\\.1:[0-9]+\\r$'\n  fail_if_body_matches_regexp: ['(?i)accept-encoding']",
    );
    assert_success(&probe(&format!("http://{addr}/"), &m).await);
    let gzip = module(
        "prober: http\nhttp:\n  compression: gzip\n  fail_if_body_matches_regexp: ['(?i)accept-encoding']",
    );
    // The plain answer cannot be decoded as gzip: the probe fails as blackbox's does.
    let r = probe(&format!("http://{addr}/"), &gzip).await;
    assert_failure(&r, "decompression");
    assert_eq!(value(&r, "probe_failed_due_to_regex"), Some(0.0));
    assert_eq!(value(&r, "probe_http_uncompressed_body_length"), Some(0.0));
}

#[tokio::test]
async fn metrics_without_a_final_response_follow_blackbox() {
    let addr = app().await;
    // 204: Go's ContentLength is 0 for a status without a body.
    let r = probe(&format!("http://{addr}/nocontent"), &module("prober: http")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_content_length"), Some(0.0));

    // A redirect to a port that refuses: no response, so status 0, the redirect counted.
    let closed = closed_port().await;
    let router = Router::new().route(
        "/away",
        get(move || async move { Redirect::to(&format!("http://{closed}/")) }),
    );
    let away = serve(router).await;
    let r = probe(&format!("http://{away}/away"), &module("prober: http")).await;
    assert_failure(&r, "connection_refused");
    assert_eq!(value(&r, "probe_http_status_code"), Some(0.0));
    assert_eq!(value(&r, "probe_http_redirects"), Some(1.0));
    assert_eq!(r.recorder.http.as_ref().map(|h| h.status), Some(0));

    // A name that does not resolve: only the resolve phase is published.
    let r = probe("http://nonexistent.invalid/", &module("prober: http")).await;
    assert_failure(&r, "dns_resolution");
    assert!(labeled(&r, "probe_http_duration_seconds", &[("phase", "resolve")]).is_some());
    for phase in &PHASES[1..] {
        assert!(
            labeled(&r, "probe_http_duration_seconds", &[("phase", phase)]).is_none(),
            "phase {phase}"
        );
    }
}
