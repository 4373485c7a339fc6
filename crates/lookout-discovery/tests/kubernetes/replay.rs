//! A loopback stand-in for the Kubernetes API server that replays LIST answers (the JSON
//! fixtures of this directory) and scripted WATCH streams, and records every request.
//! It speaks HTTP/1.1 by hand so that watch streams can be held open, cut, or fed lines
//! while the test runs, as a real API server's chunked watch responses are.
//! Shared by the discovery tests and the evaluator's side-by-side test with Prometheus.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// What a WATCH request is answered with.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status and body, then the connection closes.
    Status(u16, String),
    /// These event lines, then the stream ends (the server closed the watch).
    Close(Vec<String>),
    /// These event lines, then the stream stays open and carries [`Replay::push`]ed lines.
    Hold(Vec<String>),
    /// This status and a body that never comes: the connection stays open, silent.
    Stall(u16),
}

#[derive(Default)]
struct Inner {
    lists: Mutex<HashMap<String, Value>>,
    list_scripts: Mutex<HashMap<String, VecDeque<Value>>>,
    list_failure: Mutex<HashMap<String, (u16, String)>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    log: Mutex<Vec<String>>,
    auth: Mutex<Vec<String>>,
}

/// The replay server.
#[derive(Clone)]
pub struct Replay {
    inner: Arc<Inner>,
    live: broadcast::Sender<(String, String)>,
    pub addr: SocketAddr,
}

/// The directory of the fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("lookout-discovery")
        .join("tests")
        .join("kubernetes")
}

/// A fixture file, parsed.
pub fn fixture(name: &str) -> Value {
    let p = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A watch event line.
pub fn event(kind: &str, object: &Value) -> String {
    serde_json::json!({"type": kind, "object": object}).to_string()
}

/// The `Status` a 410 carries.
pub fn gone_status() -> Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version: 1 (2000)",
        "reason": "Expired", "code": 410})
}

impl Replay {
    /// Starts the server with every fixture list (`pods`, `services`, `endpoints`,
    /// `endpointslices`, `ingresses`, `nodes`).
    pub async fn start() -> Replay {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = l.local_addr().expect("address");
        let r = Replay {
            inner: Arc::default(),
            live: broadcast::channel(1024).0,
            addr,
        };
        for res in [
            "pods",
            "services",
            "endpoints",
            "endpointslices",
            "ingresses",
            "nodes",
        ] {
            r.set_list(res, fixture(&format!("{res}.json")));
        }
        let r2 = r.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                let r = r2.clone();
                tokio::spawn(async move { r.serve(sock).await });
            }
        });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The LIST answer of `resource` from now on.
    pub fn set_list(&self, resource: &str, list: Value) {
        self.inner
            .lists
            .lock()
            .unwrap()
            .insert(resource.into(), list);
    }

    /// Queues the answer of the next LIST of `resource` (before the [`Replay::set_list`] one).
    pub fn script_list(&self, resource: &str, list: Value) {
        let mut m = self.inner.list_scripts.lock().unwrap();
        m.entry(resource.into()).or_default().push_back(list);
    }

    /// Makes LISTs of `resource` fail with this status and body (`None`: answer again).
    pub fn fail_list(&self, resource: &str, failure: Option<(u16, &str)>) {
        let mut m = self.inner.list_failure.lock().unwrap();
        match failure {
            Some((c, b)) => m.insert(resource.into(), (c, b.into())),
            None => m.remove(resource),
        };
    }

    /// Queues the answer of the next WATCH of `resource` not answered yet (without a queued
    /// answer, a watch is held open with no events).
    pub fn script(&self, resource: &str, reply: Reply) {
        let mut m = self.inner.scripts.lock().unwrap();
        m.entry(resource.into()).or_default().push_back(reply);
    }

    /// Sends `line` on every open watch of `resource`.
    pub fn push(&self, resource: &str, line: String) {
        let _ = self.live.send((resource.into(), line));
    }

    /// Every request target (`/path?query`) so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Every `Authorization` header so far.
    pub fn authorizations(&self) -> Vec<String> {
        self.inner.auth.lock().unwrap().clone()
    }

    /// The request targets for `resource`, split into LISTs and WATCHes.
    pub fn calls(&self, resource: &str) -> (Vec<String>, Vec<String>) {
        let all: Vec<String> = self
            .requests()
            .into_iter()
            .filter(|t| {
                t.split('?')
                    .next()
                    .unwrap_or("")
                    .ends_with(&format!("/{resource}"))
            })
            .collect();
        all.into_iter().partition(|t| !is_watch(t))
    }

    async fn serve(&self, mut sock: TcpStream) {
        let Some((target, auth)) = read_request(&mut sock).await else {
            return;
        };
        // Subscribed before the request is logged: a test that sees the watch in the log
        // and pushes a line cannot lose it.
        let live = self.live.subscribe();
        self.inner.log.lock().unwrap().push(target.clone());
        if let Some(a) = auth {
            self.inner.auth.lock().unwrap().push(a);
        }
        let path = target.split('?').next().unwrap_or("").to_string();
        if path == "/version" {
            let v = r#"{"major":"1","minor":"29","gitVersion":"v1.29.2","platform":"linux/amd64"}"#;
            return respond(&mut sock, 200, v).await;
        }
        let segs: Vec<&str> = path.split('/').collect();
        let resource = segs.last().copied().unwrap_or("").to_string();
        let namespace = segs
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| segs.get(i + 1))
            .map(|s| s.to_string());
        if is_watch(&target) {
            let reply = self
                .inner
                .scripts
                .lock()
                .unwrap()
                .get_mut(&resource)
                .and_then(|q| q.pop_front());
            self.watch(sock, live, &resource, reply.unwrap_or(Reply::Hold(vec![])))
                .await;
        } else {
            let failure = self
                .inner
                .list_failure
                .lock()
                .unwrap()
                .get(&resource)
                .cloned();
            if let Some((code, body)) = failure {
                return respond(&mut sock, code, &body).await;
            }
            let scripted = self
                .inner
                .list_scripts
                .lock()
                .unwrap()
                .get_mut(&resource)
                .and_then(|q| q.pop_front());
            let list =
                scripted.or_else(|| self.inner.lists.lock().unwrap().get(&resource).cloned());
            let Some(mut list) = list else {
                return respond(&mut sock, 404, r#"{"kind":"Status","code":404}"#).await;
            };
            if let (Some(ns), Some(items)) = (namespace, list["items"].as_array_mut()) {
                items.retain(|i| i["metadata"]["namespace"] == ns.as_str());
            }
            respond(&mut sock, 200, &list.to_string()).await;
        }
    }

    async fn watch(
        &self,
        mut sock: TcpStream,
        mut live: broadcast::Receiver<(String, String)>,
        resource: &str,
        reply: Reply,
    ) {
        let (lines, hold) = match reply {
            Reply::Status(code, body) => return respond(&mut sock, code, &body).await,
            Reply::Stall(code) => return stall(&mut sock, code).await,
            Reply::Close(l) => (l, false),
            Reply::Hold(l) => (l, true),
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for l in lines {
            if write_chunk(&mut sock, &l).await.is_err() {
                return;
            }
        }
        if !hold {
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return;
        }
        while let Ok((res, line)) = live.recv().await {
            if res == resource && write_chunk(&mut sock, &line).await.is_err() {
                return;
            }
        }
    }
}

fn is_watch(target: &str) -> bool {
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('&').any(|p| p == "watch=1" || p == "watch=true")
}

async fn write_chunk(sock: &mut TcpStream, line: &str) -> std::io::Result<()> {
    let data = format!("{line}\n");
    sock.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    sock.flush().await
}

async fn respond(sock: &mut TcpStream, code: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Answers `code` with a 1000-byte body announced, sends none of it and holds the
/// connection for an hour.
async fn stall(sock: &mut TcpStream, code: u16) {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    if sock.write_all(head.as_bytes()).await.is_ok() {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// The request target and `Authorization` header of one request.
async fn read_request(sock: &mut TcpStream) -> Option<(String, Option<String>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.lines();
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    Some((target, auth))
}
