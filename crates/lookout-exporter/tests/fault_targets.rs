//! Hostile HTTP targets on loopback, served by hand-written TCP servers: one that accepts and
//! never answers, one that answers a byte a second, one with a huge response head, one with
//! too many header fields, an HTTP/2 header list over the limit, and a gzip bomb. Each probe
//! ends by its deadline (or at a limit) with a classified failure reason, never hangs and
//! never buffers without bound. The head limits follow their flags
//! (`--probe.max-response-header-bytes`, `--probe.max-response-header-fields`) both ways.
//!
//! Endless redirects are in `probe_http.rs` (`redirects_are_followed_and_counted`, reason
//! `too_many_redirects`); a slow target not delaying the others' schedule is in
//! `server_targets.rs` (`a_slow_target_does_not_delay_the_others`).

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use lookout_exporter::limits::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves each connection with `handler` after reading the request head.
async fn raw_server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                handler(conn).await;
            });
        }
    });
    addr
}

const DEADLINE: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_target_that_accepts_and_never_answers_times_out() {
    let addr = raw_server(|conn| async move {
        // Hold the connection open, say nothing.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(conn);
    })
    .await;
    let r = probe_with(
        &format!("http://{addr}/"),
        &module("prober: http"),
        None,
        DEADLINE,
    )
    .await;
    assert_failure(&r, "timeout");
}

#[tokio::test]
async fn a_target_answering_one_byte_a_second_times_out() {
    let addr = raw_server(|mut conn| async move {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        let _ = conn.write_all(response).await;
        loop {
            if conn.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let r = probe_with(
        &format!("http://{addr}/"),
        &module("prober: http"),
        None,
        DEADLINE,
    )
    .await;
    assert_failure(&r, "timeout");
    // The head arrived before the deadline and was recorded.
    assert_eq!(value(&r, "probe_http_status_code"), Some(200.0));

    // Trickling the head itself (a byte a second) also ends at the deadline.
    let addr = raw_server(|mut conn| async move {
        for b in b"HTTP/1.1 200 OK\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if conn.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    let r = probe_with(
        &format!("http://{addr}/"),
        &module("prober: http"),
        None,
        DEADLINE,
    )
    .await;
    assert_failure(&r, "timeout");
}

#[tokio::test]
async fn a_huge_response_head_is_refused_as_headers_too_large() {
    // One 1 MiB header: over the 64 KiB head limit.
    let addr = raw_server(|mut conn| async move {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1 << 20));
        head.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        let _ = conn.write_all(&head).await;
    })
    .await;
    let r = probe_with(
        &format!("http://{addr}/"),
        &module("prober: http"),
        None,
        Duration::from_secs(10),
    )
    .await;
    assert_failure(&r, "headers_too_large");

    // 500 small header fields: over the 100-field limit.
    let addr = raw_server(|mut conn| async move {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..500 {
            head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        let _ = conn.write_all(&head).await;
    })
    .await;
    let r = probe_with(
        &format!("http://{addr}/"),
        &module("prober: http"),
        None,
        Duration::from_secs(10),
    )
    .await;
    assert_failure(&r, "headers_too_large");
}

/// A server answering 200 "ok" with `fields` extra header fields of `value_len` bytes each.
async fn head_server(fields: usize, value_len: usize) -> SocketAddr {
    raw_server(move |mut conn| async move {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..fields {
            head.extend_from_slice(format!("X-H{i}: ").as_bytes());
            head.extend(std::iter::repeat_n(b'a', value_len));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Length: 2\r\nConnection: close\r\n\r\nok");
        let _ = conn.write_all(&head).await;
    })
    .await
}

fn failure_message(r: &lookout_exporter::prober::ProbeReport) -> &str {
    r.failure.as_ref().map_or("", |f| f.message.as_str())
}

#[tokio::test]
async fn the_head_limits_follow_the_flags() {
    let m = module("prober: http");

    // One 12 KiB header: fine under the 64 KiB default, refused under an 8 KiB limit.
    let url = format!("http://{}/", head_server(1, 12 << 10).await);
    assert_success(&probe_limited(&url, &m, Limits::default()).await);
    let small = Limits {
        max_response_header_bytes: 8 << 10,
        ..Limits::default()
    };
    let r = probe_limited(&url, &m, small).await;
    assert_failure(&r, "headers_too_large");
    assert!(
        failure_message(&r).contains("limit of 8192 bytes (--probe.max-response-header-bytes)"),
        "{}",
        failure_message(&r)
    );

    // A 1 MiB header: refused by default, accepted with the limit raised past hyper's own
    // 400 KiB read buffer.
    let url = format!("http://{}/", head_server(1, 1 << 20).await);
    assert_failure(
        &probe_limited(&url, &m, Limits::default()).await,
        "headers_too_large",
    );
    let large = Limits {
        max_response_header_bytes: 2 << 20,
        ..Limits::default()
    };
    assert_success(&probe_limited(&url, &m, large).await);

    // 30 small fields (32 with Content-Length and Connection): fine by default, refused
    // under a 20-field limit.
    let url = format!("http://{}/", head_server(30, 1).await);
    assert_success(&probe_limited(&url, &m, Limits::default()).await);
    let few = Limits {
        max_response_header_fields: 20,
        ..Limits::default()
    };
    let r = probe_limited(&url, &m, few).await;
    assert_failure(&r, "headers_too_large");
    assert!(
        failure_message(&r).contains("20 header fields (--probe.max-response-header-fields)"),
        "{}",
        failure_message(&r)
    );

    // 150 fields: over the default 100, within a raised 200.
    let url = format!("http://{}/", head_server(150, 1).await);
    assert_failure(
        &probe_limited(&url, &m, Limits::default()).await,
        "headers_too_large",
    );
    let many = Limits {
        max_response_header_fields: 200,
        ..Limits::default()
    };
    assert_success(&probe_limited(&url, &m, many).await);
}

/// An HTTPS server speaking only HTTP/2 whose answer carries one `header_len`-byte header.
async fn h2_head_server(
    config: std::sync::Arc<rustls::ServerConfig>,
    header_len: usize,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut response = hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    ));
                    let value = "a".repeat(header_len);
                    if let Ok(value) = http::HeaderValue::from_str(&value) {
                        response.headers_mut().insert("x-huge", value);
                    }
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http2_header_list_over_the_byte_flag_is_refused() {
    let pki = pki(&[b"h2"]);
    let addr = h2_head_server(pki.server_config.clone(), 100_000).await;
    let url = format!("https://localhost:{}/", addr.port());
    let m = module(&format!(
        "prober: http\nhttp:\n  preferred_ip_protocol: ip4\n  tls_config:\n    ca_file: {}",
        pki.ca_file.display()
    ));
    // h2 refuses the list as a stream PROTOCOL_ERROR, which any malformed response also
    // causes, so the reason stays http_request; the message points at the flag.
    let r = probe_limited(&url, &m, Limits::default()).await;
    assert_failure(&r, "http_request");
    assert!(
        failure_message(&r).contains("limit of 65536 bytes (--probe.max-response-header-bytes)"),
        "{}",
        failure_message(&r)
    );
    let raised = Limits {
        max_response_header_bytes: 1 << 20,
        ..Limits::default()
    };
    let r = probe_limited(&url, &m, raised).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_http_version"), Some(2.0));
}

#[tokio::test]
async fn a_gzip_bomb_stops_at_the_body_size_limit() {
    // 64 MiB of zeros compress to about 64 KiB; decoded, they exceed the 10 MiB bound on a
    // body kept for a regexp.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = std::sync::Arc::new(enc.finish().unwrap());
    assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
    let addr = raw_server(move |mut conn| {
        let bomb = bomb.clone();
        async move {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                bomb.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&bomb).await;
        }
    })
    .await;
    let url = format!("http://{addr}/");
    // A body regexp needs the decoded body: it is kept up to --probe.max-regexp-body-bytes.
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  compression: gzip\n  fail_if_body_matches_regexp: [x]"),
    )
    .await;
    assert_failure(&r, "body_too_large");
    // An explicit limit is honoured the same way.
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  compression: gzip\n  body_size_limit: 1MB"),
    )
    .await;
    assert_failure(&r, "body_too_large");
    // With no limit (unset or 0, as in blackbox_exporter) it is decoded in full and
    // counted, never held in memory.
    for m in ["", "\n  body_size_limit: 0"] {
        let r = probe_with(
            &url,
            &module(&format!("prober: http\nhttp:\n  compression: gzip{m}")),
            None,
            Duration::from_secs(60),
        )
        .await;
        assert_success(&r);
        assert_eq!(
            value(&r, "probe_http_uncompressed_body_length"),
            Some(f64::from(64u32 << 20))
        );
    }
}
