//! Helpers shared by the server tests: a minimal HTTP/1.0 client, an in-process exporter on
//! loopback, loopback HTTP targets, and bounded polling.

#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use lookout_exporter::{RunOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A response: status, headers (lower-cased names) and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.0 request (so the body ends at connection close) and reads the reply.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    try_request(addr, method, path, headers)
        .await
        .expect("a reply from the exporter")
}

/// [`request`], or `None` when connecting or reading fails (a server still starting).
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_string(),
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

pub async fn post(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "POST", path, &[]).await
}

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.parse().ok())
}

/// Polls `check` every 100 ms, at most `tries` times, until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, tries: usize, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for: {what}");
}

/// An exporter running in this process on a loopback port.
pub struct Exporter {
    pub addr: SocketAddr,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), lookout_exporter::Error>>,
}

impl Exporter {
    pub async fn start(config: &str) -> Exporter {
        Exporter::start_with(config, |_| {}).await
    }

    pub async fn start_with(config: &str, tweak: impl FnOnce(&mut RunOptions)) -> Exporter {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("exporter.yml");
        std::fs::write(&path, config).expect("write config");
        let mut options = RunOptions::new(&path);
        options.listen_address = "127.0.0.1:0".into();
        tweak(&mut options);
        let server = Server::bind(options).await.expect("exporter starts");
        let addr = server.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Exporter {
            addr,
            config: path,
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, config).expect("rewrite config");
    }

    pub async fn metrics(&self) -> String {
        let reply = get(self.addr, "/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task).await.expect("server task");
        assert!(result.is_ok(), "{result:?}");
    }
}

/// A loopback HTTP target that answers 200 "ok" on `/` and counts requests; `/slow` counts
/// its requests apart and sleeps for `slow` first; `/fail` answers 500.
pub struct Target {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    slow_hits: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Target {
    pub async fn start(slow: Duration) -> Target {
        use axum::Router;
        use axum::http::StatusCode;
        use axum::routing::get;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let addr = listener.local_addr().expect("target address");
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let slow_hits = Arc::new(AtomicU64::new(0));
        let slow_counter = slow_hits.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            )
            .route(
                "/slow",
                get(move || {
                    let counter = slow_counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(slow).await;
                        "slow"
                    }
                }),
            )
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Target {
            addr,
            hits,
            slow_hits,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests that reached `/slow` so far (counted before the sleep).
    pub fn slow_hits(&self) -> u64 {
        self.slow_hits.load(Ordering::SeqCst)
    }

    /// Stops accepting connections (connections already accepted may finish).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// A loopback UDP nameserver answering every question with one A record for `answer`.
pub async fn nameserver(answer: Ipv4Addr) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind dns");
    let addr = socket.local_addr().expect("dns address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::new();
            reply
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_response_code(ResponseCode::NoError);
            reply.add_queries(query.queries().to_vec());
            for question in query.queries() {
                reply.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(answer)),
                ));
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// Modules used by the tests, in blackbox_exporter's schema.
pub const MODULES: &str = "modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
  http_quick:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
  tcp_connect:
    prober: tcp
    timeout: 2s
    tcp:
      preferred_ip_protocol: ip4
  dns_shop:
    prober: dns
    timeout: 2s
    dns:
      query_name: shop.example.test
      query_type: A
      transport_protocol: udp
      preferred_ip_protocol: ip4
";
