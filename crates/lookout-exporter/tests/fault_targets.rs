//! Hostile HTTP targets on loopback, served by hand-written TCP servers: one that accepts and
//! never answers, one that answers a byte a second, one with a huge response head, one with
//! too many header fields, and a gzip bomb. Each probe ends by its deadline (or at a limit)
//! with a classified failure reason, never hangs and never buffers without bound.
//!
//! Endless redirects are in `probe_http.rs` (`redirects_are_followed_and_counted`, reason
//! `too_many_redirects`); a slow target not delaying the others' schedule is in
//! `server_targets.rs` (`a_slow_target_does_not_delay_the_others`).

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
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

#[tokio::test]
async fn a_gzip_bomb_stops_at_the_body_size_limit() {
    // 64 MiB of zeros compress to about 64 KiB; decoded, they exceed the 10 MiB default.
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
    let r = probe(&url, &module("prober: http\nhttp:\n  compression: gzip")).await;
    assert_failure(&r, "body_too_large");
    // A smaller explicit limit is honoured the same way.
    let r = probe(
        &url,
        &module("prober: http\nhttp:\n  compression: gzip\n  body_size_limit: 1MB"),
    )
    .await;
    assert_failure(&r, "body_too_large");
    // With the limit off (0 = unlimited, as in blackbox_exporter) it decodes in full.
    let r = probe_with(
        &url,
        &module("prober: http\nhttp:\n  compression: gzip\n  body_size_limit: 0"),
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
