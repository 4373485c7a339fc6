//! A loopback gRPC health server (`grpc.health.v1.Health/Check` over HTTP/2, h2c and TLS),
//! shared by the gRPC prober tests and `examples/grpc_health_server.rs` (which the
//! differential harness runs against blackbox_exporter). Written on hyper, with the
//! protobuf messages by hand, so no gRPC library is needed.
//!
//! The service asked for picks the answer:
//!
//! | service | answer |
//! |---|---|
//! | `""`, `service1` | `SERVING` |
//! | `down` | `NOT_SERVING` |
//! | `service-unknown` | `SERVICE_UNKNOWN` |
//! | `seven` | serving status 7, a number the protocol does not name |
//! | `auth` | `SERVING` when the metadata `authorization: Bearer sesame`, `x-tag: a`, `x-tag: b` and `blob-bin: é` (base64 `w6k`) came, else status 16 `UNAUTHENTICATED` |
//! | `huge` | `SERVING` padded with an unknown 5 MiB field (over every client's limit) |
//! | `garbage` | a message that is not protobuf |
//! | `compressed` | a message flagged as compressed |
//! | `no-trailers` | a message, then the end of the stream without `grpc-status` |
//! | `http-503` | HTTP 503, `text/plain` |
//! | `slow` | `SERVING` after 30 s |
//! | anything else | status 5 `NOT_FOUND` (trailers only), as gRPC's own health server |
//!
//! The `bare` listener has no health service: every call answers 12 `UNIMPLEMENTED`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{HeaderMap, Request, Response};
use tokio::net::TcpListener;

/// The listeners of one server.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// h2c on 127.0.0.1, with the health service.
    pub plain: SocketAddr,
    /// h2c on [::1], when the host has IPv6 loopback.
    pub plain6: Option<SocketAddr>,
    /// h2c on 127.0.0.1 without a health service.
    pub bare: SocketAddr,
    /// TLS on 127.0.0.1, when a server configuration was given.
    pub tls: Option<SocketAddr>,
}

/// Starts the listeners on loopback ports and serves them in the background.
pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Ports> {
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let bare = TcpListener::bind("127.0.0.1:0").await?;
    let plain6 = TcpListener::bind("[::1]:0").await.ok();
    let ports = Ports {
        plain: plain.local_addr()?,
        plain6: plain6.as_ref().and_then(|l| l.local_addr().ok()),
        bare: bare.local_addr()?,
        tls: None,
    };
    tokio::spawn(serve(plain, true, None));
    tokio::spawn(serve(bare, false, None));
    if let Some(l) = plain6 {
        tokio::spawn(serve(l, true, None));
    }
    let tls = match tls {
        Some(config) => {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let addr = l.local_addr()?;
            tokio::spawn(serve(
                l,
                true,
                Some(tokio_rustls::TlsAcceptor::from(config)),
            ));
            Some(addr)
        }
        None => None,
    };
    Ok(Ports { tls, ..ports })
}

async fn serve(listener: TcpListener, health: bool, tls: Option<tokio_rustls::TlsAcceptor>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, health));
            let builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = builder.serve_connection(io, service).await;
                    }
                }
                None => {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = builder.serve_connection(io, service).await;
                }
            }
        });
    }
}

/// Data frames, then trailers; an empty one ends with the headers (trailers-only).
pub struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn grpc_response(frames: Vec<Frame<Bytes>>, status: Option<(u32, &str)>) -> Response<Frames> {
    let mut response = Response::new(Frames(frames.into()));
    let headers = response.headers_mut();
    headers.insert("content-type", "application/grpc".parse().expect("static"));
    if let Some((code, message)) = status {
        headers.insert("grpc-status", code.to_string().parse().expect("digits"));
        headers.insert("grpc-message", encode_message(message));
    }
    response
}

fn encode_message(text: &str) -> hyper::header::HeaderValue {
    let encoded: String = text
        .bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    encoded.parse().expect("printable")
}

/// An answer with status `code` in the headers only.
fn trailers_only(code: u32, message: &str) -> Response<Frames> {
    grpc_response(Vec::new(), Some((code, message)))
}

/// A message (flag byte `flag`), then `grpc-status: 0` in trailers.
fn message_then_ok(flag: u8, message: &[u8]) -> Response<Frames> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("static"));
    grpc_response(
        vec![
            Frame::data(framed(flag, message)),
            Frame::trailers(trailers),
        ],
        None,
    )
}

fn framed(flag: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.extend_from_slice(&[flag]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// `HealthCheckResponse { status }`.
fn status_message(status: u8) -> Vec<u8> {
    vec![0x08, status]
}

async fn handle(req: Request<Incoming>, health: bool) -> Result<Response<Frames>, Infallible> {
    if !health {
        return Ok(trailers_only(12, "unknown service grpc.health.v1.Health"));
    }
    if req.uri().path() != "/grpc.health.v1.Health/Check" {
        return Ok(trailers_only(12, "unknown method"));
    }
    let headers = req.headers().clone();
    let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(trailers_only(8, "request too large")),
    };
    let Some(service) = request_service(&body) else {
        return Ok(trailers_only(13, "grpc: error unmarshalling request"));
    };
    Ok(answer(&service, &headers).await)
}

async fn answer(service: &str, headers: &HeaderMap) -> Response<Frames> {
    match service {
        "" | "service1" => message_then_ok(0, &status_message(1)),
        "down" => message_then_ok(0, &status_message(2)),
        "service-unknown" => message_then_ok(0, &status_message(3)),
        "seven" => message_then_ok(0, &status_message(7)),
        "auth" if authorized(headers) => message_then_ok(0, &status_message(1)),
        "auth" => trailers_only(16, "missing metadata"),
        "huge" => {
            let pad = 5 << 20;
            let mut message = status_message(1);
            message.push(0x12); // field 2, length-delimited
            let mut len = pad as u64;
            while len >= 0x80 {
                message.push((len as u8) | 0x80);
                len >>= 7;
            }
            message.push(len as u8);
            message.resize(message.len() + pad, b'x');
            message_then_ok(0, &message)
        }
        "garbage" => message_then_ok(0, b"\x08"),
        "compressed" => message_then_ok(1, &status_message(1)),
        "no-trailers" => grpc_response(vec![Frame::data(framed(0, &status_message(1)))], None),
        "http-503" => {
            let mut r = Response::new(Frames(vec![Frame::data(Bytes::from("busy"))].into()));
            *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert("content-type", "text/plain".parse().expect("static"));
            r
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            message_then_ok(0, &status_message(1))
        }
        _ => trailers_only(5, "unknown service"),
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    let values =
        |k: &str| -> Vec<&[u8]> { headers.get_all(k).iter().map(|v| v.as_bytes()).collect() };
    values("authorization") == [b"Bearer sesame".as_slice()]
        && values("x-tag") == [b"a".as_slice(), b"b".as_slice()]
        && values("blob-bin") == [b"w6k".as_slice()]
}

/// The `service` of a framed `HealthCheckRequest` (only field 1 is expected).
fn request_service(body: &[u8]) -> Option<String> {
    let (head, message) = body.split_first_chunk::<5>()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] != 0 || message.len() != len {
        return None;
    }
    if message.is_empty() {
        return Some(String::new());
    }
    let (&key, mut rest) = message.split_first()?;
    if key != 0x0a {
        return None;
    }
    let mut n = 0usize;
    for shift in 0..5 {
        let (&b, r) = rest.split_first()?;
        rest = r;
        n |= usize::from(b & 0x7f) << (7 * shift);
        if b < 0x80 {
            break;
        }
    }
    (rest.len() == n).then(|| String::from_utf8_lossy(rest).into_owned())
}
