//! The gRPC prober: one call of the gRPC health-checking protocol
//! (`/grpc.health.v1.Health/Check`) over HTTP/2, as blackbox_exporter's `prober/grpc.go`
//! makes it: h2c with prior knowledge, or TLS with ALPN `h2` when `tls: true`.
//!
//! The target is `host[:port]` or a URL (`http://` is assumed; scheme and path are ignored,
//! as by blackbox_exporter); without a port, 80 or 443 with `tls`. The prober connects to the
//! address [`resolve_target`] chose (so the `/probe` policy applies at connect time);
//! blackbox_exporter's gRPC client resolves the name a second time itself.
//!
//! Published, as blackbox_exporter does: `probe_grpc_duration_seconds{phase="resolve"|"check"}`
//! (`check` is connect, TLS and the call), `probe_grpc_ssl`, `probe_grpc_status_code` (the
//! call's gRPC status code), `probe_grpc_healthcheck_response{serving_status}` (1 for the
//! status answered, 0 for each other status of the protocol: `UNKNOWN`, `SERVING`,
//! `NOT_SERVING`, `SERVICE_UNKNOWN`; a number the protocol does not name is its own label),
//! the resolver's `probe_ip_protocol`, `probe_ip_addr_hash`, `probe_dns_lookup_time_seconds`,
//! and over TLS `probe_ssl_earliest_cert_expiry`, `probe_tls_version_info` and
//! `probe_ssl_last_chain_info`. The probe succeeds only on status OK with `SERVING`.
//!
//! The status code of a failed call is the one a gRPC client reports: the server's
//! `grpc-status` (trailers, or the headers of a trailers-only answer, e.g. 5 `NOT_FOUND` for
//! an unknown service, 12 `UNIMPLEMENTED` without a health service); 14 `UNAVAILABLE` when
//! no HTTP/2 connection could be made (refused, TLS handshake, not HTTP/2) or it broke; for
//! an answer that is not gRPC, the code gRPC maps its HTTP status to (404 → 12, 503 → 14,
//! …); 13 `INTERNAL` for a malformed answer; 8 `RESOURCE_EXHAUSTED` for a message over
//! [`MAX_MESSAGE_BYTES`]; 4 `DEADLINE_EXCEEDED` when the probe's timeout ends the call.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::resolve::resolve_target;
use super::{Failure, ProbeRequest, Recorder, reason, tcp, tls};
use crate::config::GrpcProbe;

/// Largest response message read (64 KiB; a health answer is 2 bytes). A larger one fails
/// the probe with status 8, as gRPC clients fail messages over their receive limit.
pub const MAX_MESSAGE_BYTES: usize = 64 << 10;

const PATH: &str = "/grpc.health.v1.Health/Check";
const USER_AGENT: &str = concat!("grpc-rust-lookout/", env!("CARGO_PKG_VERSION"));

const DURATION: &str = "probe_grpc_duration_seconds";
const H_DURATION: &str = "Duration of gRPC request by phase";
const SSL: &str = "probe_grpc_ssl";
const H_SSL: &str = "Indicates if SSL was used for the connection";
const STATUS_CODE: &str = "probe_grpc_status_code";
const H_STATUS_CODE: &str = "Response gRPC status code";
const HEALTH: &str = "probe_grpc_healthcheck_response";
const H_HEALTH: &str = "Response HealthCheck response";

/// The serving statuses of `grpc.health.v1.HealthCheckResponse`, by number.
const SERVING_STATUSES: [&str; 4] = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];
const SERVING: i32 = 1;

/// gRPC status codes used here.
mod code {
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// A call that did not answer OK: its gRPC status code and why the probe failed.
struct CallError {
    code: u32,
    failure: Failure,
}

impl CallError {
    fn new(code: u32, reason: &str, message: impl Into<String>) -> CallError {
        CallError {
            code,
            failure: Failure::new(reason, message),
        }
    }

    fn unavailable(failure: Failure) -> CallError {
        CallError {
            code: code::UNAVAILABLE,
            failure,
        }
    }
}

/// Probes a gRPC server's health service.
pub async fn probe_grpc(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.grpc;
    rec.set_labeled(DURATION, H_DURATION, &[("phase", "resolve")], 0.0);
    rec.set(SSL, H_SSL, 0.0);
    rec.set(STATUS_CODE, H_STATUS_CODE, 0.0);
    let (host, port) = host_port(req.target, cfg.tls)?;
    let tls_config = if cfg.tls {
        Some(tls::client_config(&cfg.tls_config, &[b"h2"])?)
    } else {
        None
    };
    let (preferred, fallback) = (cfg.preferred_ip_protocol, cfg.ip_protocol_fallback);
    let (ip, lookup) = resolve_target(rec, &host, preferred, fallback, req.policy).await?;
    rec.add_labeled(
        DURATION,
        H_DURATION,
        &[("phase", "resolve")],
        lookup.as_secs_f64(),
    );
    for name in SERVING_STATUSES {
        rec.set_labeled(HEALTH, H_HEALTH, &[("serving_status", name)], 0.0);
    }
    // What a gRPC client reports when its deadline ends the call: kept if the probe's
    // timeout cuts this one off.
    rec.set(
        STATUS_CODE,
        H_STATUS_CODE,
        f64::from(code::DEADLINE_EXCEEDED),
    );
    let start = Instant::now();
    let outcome = check(req, rec, &host, SocketAddr::new(ip, port), tls_config).await;
    rec.add_labeled(
        DURATION,
        H_DURATION,
        &[("phase", "check")],
        start.elapsed().as_secs_f64(),
    );
    match outcome {
        Ok(status) => {
            rec.set(STATUS_CODE, H_STATUS_CODE, 0.0);
            let name = serving_status_name(status);
            rec.set_labeled(HEALTH, H_HEALTH, &[("serving_status", &name)], 1.0);
            rec.log(format!("Health check answered: serving_status={name}"));
            if status == SERVING {
                Ok(())
            } else {
                Err(Failure::new(
                    reason::GRPC_NOT_SERVING,
                    format!("the health service answered {name}, not SERVING"),
                ))
            }
        }
        Err(e) => {
            rec.set(STATUS_CODE, H_STATUS_CODE, f64::from(e.code));
            Err(e.failure)
        }
    }
}

/// The host and port to connect to, as blackbox_exporter reads a gRPC target.
fn host_port(target: &str, tls: bool) -> Result<(String, u16), Failure> {
    let uri = crate::target::http_url(target)?;
    let host = crate::target::url_host(&uri).to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port))
}

fn serving_status_name(status: i32) -> String {
    usize::try_from(status)
        .ok()
        .and_then(|i| SERVING_STATUSES.get(i))
        .map_or_else(|| status.to_string(), |s| (*s).to_string())
}

/// Connects (TLS when configured) and makes the call; the serving status on status OK.
async fn check(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    host: &str,
    addr: SocketAddr,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<i32, CallError> {
    let cfg = &req.module.grpc;
    let tcp = tcp::connect(addr, None)
        .await
        .map_err(CallError::unavailable)?;
    rec.log(format!("Successfully dialed: address={addr}"));
    let authority = match addr.ip() {
        IpAddr::V6(_) if host.contains(':') => format!("[{host}]:{}", addr.port()),
        _ => format!("{host}:{}", addr.port()),
    };
    let Some(config) = tls_config else {
        return call(tcp, req, rec, "http", &authority).await;
    };
    let name = tls::server_name(&cfg.tls_config, host).map_err(CallError::unavailable)?;
    let stream = tls::handshake(tcp, config, name)
        .await
        .map_err(CallError::unavailable)?;
    let conn = stream.get_ref().1;
    tls::record_connection_state(rec, conn, !cfg.tls_config.insecure_skip_verify);
    // blackbox_exporter's gRPC prober publishes neither of these.
    rec.metrics.retain(|m| {
        m.name != "probe_ssl_last_chain_expiry_timestamp_seconds"
            && m.name != "probe_tls_cipher_info"
    });
    rec.set(SSL, H_SSL, 1.0);
    if conn.alpn_protocol() != Some(b"h2") {
        rec.log("The server did not choose h2 in ALPN; speaking HTTP/2 anyway");
    }
    rec.log("TLS handshake done");
    call(stream, req, rec, "https", &authority).await
}

/// One unary call of `Health/Check` over a new HTTP/2 connection on `io`.
async fn call<IO>(
    io: IO,
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    scheme: &str,
    authority: &str,
) -> Result<i32, CallError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_header_bytes = req.limits.max_response_header_bytes;
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| {
            CallError::new(
                code::UNAVAILABLE,
                reason::HTTP_REQUEST,
                format!("HTTP/2 connection failed: {}", error_chain(&e)),
            )
        })?;
    let deadline = req.timeout;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(deadline, conn).await;
    });
    let request = build_request(&req.module.grpc, scheme, authority)?;
    rec.log(format!(
        "Calling {PATH} on {scheme}://{authority} for service {:?}",
        req.module.grpc.service
    ));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| stream_error(&e, max_header_bytes))?;
    let (parts, body) = response.into_parts();
    check_response_head(parts.status, &parts.headers)?;
    // A trailers-only answer carries the status in its headers.
    if parts.headers.contains_key("grpc-status") {
        status_error(&parts.headers)?;
        return Err(no_message());
    }
    let (data, trailers) = read_body(body).await?;
    let message = single_message(&data);
    match trailers {
        Some(trailers) if trailers.contains_key("grpc-status") => status_error(&trailers)?,
        _ => {
            message?;
            return Err(CallError::new(
                code::INTERNAL,
                reason::GRPC_RESPONSE,
                "the server closed the stream without sending a grpc-status trailer",
            ));
        }
    }
    let message = message?.ok_or_else(no_message)?;
    decode_response(message).map_err(|why| {
        CallError::new(
            code::INTERNAL,
            reason::GRPC_RESPONSE,
            format!("cannot decode the HealthCheckResponse: {why}"),
        )
    })
}

fn no_message() -> CallError {
    CallError::new(
        code::INTERNAL,
        reason::GRPC_RESPONSE,
        "the server answered status OK without a message",
    )
}

fn build_request(
    cfg: &GrpcProbe,
    scheme: &str,
    authority: &str,
) -> Result<Request<Full<Bytes>>, CallError> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{scheme}://{authority}{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Full::new(frame(&encode_request(&cfg.service))))
        .map_err(|e| {
            CallError::new(
                code::INTERNAL,
                reason::INVALID_TARGET,
                format!("cannot build the request for {authority}: {e}"),
            )
        })?;
    let headers = request.headers_mut();
    for (key, values) in &cfg.metadata {
        // The configuration loader checked keys and values; a value it let through that
        // HTTP refuses is reported, not sent half.
        let bad = |what: String| CallError::new(code::INTERNAL, reason::HTTP_REQUEST, what);
        let name = HeaderName::from_bytes(key.as_bytes())
            .map_err(|e| bad(format!("metadata key {key:?}: {e}")))?;
        for value in values {
            let text = if key.ends_with("-bin") {
                base64_unpadded(value.as_bytes())
            } else {
                value.clone()
            };
            let value = HeaderValue::from_str(&text)
                .map_err(|e| bad(format!("metadata {key:?} value {value:?}: {e}")))?;
            headers.append(name.clone(), value);
        }
    }
    Ok(request)
}

/// `HealthCheckRequest { string service = 1; }` in protobuf's wire format.
fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a); // field 1, length-delimited
        let mut len = service.len() as u64;
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out.freeze()
}

/// The gRPC status of an answer that is not gRPC (an HTTP status other than 200, or
/// another content type), as gRPC clients map it.
fn check_response_head(status: StatusCode, headers: &HeaderMap) -> Result<(), CallError> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let grpc = content_type
        .strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']));
    if status == StatusCode::OK && grpc {
        return Ok(());
    }
    let code = match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    };
    Err(CallError::new(
        code,
        reason::GRPC_STATUS,
        format!("not a gRPC answer: HTTP status {status}, content type {content_type:?}"),
    ))
}

/// `Ok` for `grpc-status: 0`, else the call's error with its `grpc-message`.
fn status_error(headers: &HeaderMap) -> Result<(), CallError> {
    let raw = headers
        .get("grpc-status")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let Ok(status) = raw.parse::<u32>() else {
        return Err(CallError::new(
            code::INTERNAL,
            reason::GRPC_RESPONSE,
            format!("malformed grpc-status {raw:?}"),
        ));
    };
    if status == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Err(CallError::new(
        status,
        reason::GRPC_STATUS,
        format!("the call ended with gRPC status {status}: {message:?}"),
    ))
}

/// Reads the response body (at most one message's worth) and its trailers.
async fn read_body(
    mut body: hyper::body::Incoming,
) -> Result<(BytesMut, Option<HeaderMap>), CallError> {
    let mut data = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| stream_error(&e, 0))?;
        match frame.into_data() {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > MAX_MESSAGE_BYTES + 5 {
                    return Err(too_large(data.len() - 5));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return Ok((data, Some(trailers)));
                }
            }
        }
    }
    Ok((data, None))
}

fn too_large(len: usize) -> CallError {
    CallError::new(
        code::RESOURCE_EXHAUSTED,
        reason::GRPC_RESPONSE,
        format!(
            "the response message has at least {len} bytes, over the limit of {MAX_MESSAGE_BYTES}"
        ),
    )
}

/// The one message of a unary answer (`None` when there is none).
fn single_message(data: &[u8]) -> Result<Option<&[u8]>, CallError> {
    let internal = |what: &str| CallError::new(code::INTERNAL, reason::GRPC_RESPONSE, what);
    if data.is_empty() {
        return Ok(None);
    }
    let Some((head, rest)) = data.split_first_chunk::<5>() else {
        return Err(internal("the response ends inside a message header"));
    };
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(too_large(len));
    }
    match head[0] {
        0 => {}
        1 => {
            return Err(internal(
                "the response message is compressed, which was not asked for",
            ));
        }
        _ => {
            return Err(internal(
                "the response message has an unknown payload format",
            ));
        }
    }
    if rest.len() < len {
        return Err(internal("the response ends inside a message"));
    }
    if rest.len() > len {
        return Err(internal(
            "the server sent more than one message for a unary call",
        ));
    }
    Ok(Some(rest))
}

/// `HealthCheckResponse { ServingStatus status = 1; }`: the last `status`, unknown fields
/// skipped, as protobuf decoders do.
fn decode_response(mut msg: &[u8]) -> Result<i32, String> {
    let mut status = 0i32;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let field = key >> 3;
        match key & 7 {
            0 => {
                let v = varint(&mut msg)?;
                if field == 1 {
                    // An enum is an int32: Go truncates the varint the same way.
                    status = v as i32;
                }
            }
            1 => msg = msg.get(8..).ok_or("truncated 64-bit field")?,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).map_err(|_| "field too long")?;
                msg = msg.get(len..).ok_or("truncated length-delimited field")?;
            }
            5 => msg = msg.get(4..).ok_or("truncated 32-bit field")?,
            t => return Err(format!("wire type {t} of field {field} is not allowed")),
        }
        if field == 0 {
            return Err("field number 0".into());
        }
    }
    Ok(status)
}

fn varint(msg: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = msg.split_first() else {
            return Err("truncated varint".into());
        };
        *msg = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// An HTTP/2 failure after the request went out: a stream the server reset is INTERNAL
/// (UNAVAILABLE when refused), a connection that broke is UNAVAILABLE, as gRPC maps them.
fn stream_error(e: &hyper::Error, max_header_bytes: usize) -> CallError {
    let text = error_chain(e);
    let code = if text.contains("refused") {
        code::UNAVAILABLE
    } else if text.contains("stream error") || e.is_parse() {
        code::INTERNAL
    } else {
        code::UNAVAILABLE
    };
    let mut message = format!("HTTP/2 call failed: {text}");
    if max_header_bytes > 0 && text.contains("protocol error") {
        message.push_str(&format!(
            " (a response header list over the limit of {max_header_bytes} bytes \
             (--probe.max-response-header-bytes) also ends this way)"
        ));
    }
    CallError::new(code, reason::HTTP_REQUEST, message)
}

/// hyper's text for HTTP/2 is just "http2 error"; the cause is in its sources.
fn error_chain(e: &hyper::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// `grpc-message` is percent-encoded.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied(), raw.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 without padding, as gRPC sends `-bin` metadata.
fn base64_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        assert_eq!(encode_request(""), b"");
        assert_eq!(encode_request("service1"), b"\x0a\x08service1");
        let long = "s".repeat(200);
        assert_eq!(&encode_request(&long)[..3], b"\x0a\xc8\x01");
        assert_eq!(&frame(b"ab")[..], b"\x00\x00\x00\x00\x02ab");
    }

    #[test]
    fn response_decoding() {
        assert_eq!(decode_response(b""), Ok(0));
        assert_eq!(decode_response(b"\x08\x01"), Ok(1));
        assert_eq!(decode_response(b"\x08\x01\x08\x02"), Ok(2));
        // Unknown fields of every wire type are skipped.
        assert_eq!(
            decode_response(b"\x12\x02hi\x19\x01\x02\x03\x04\x05\x06\x07\x08\x25\x01\x02\x03\x04\x18\x05\x08\x03"),
            Ok(3)
        );
        assert_eq!(decode_response(b"\x08\x07"), Ok(7));
        assert_eq!(
            decode_response(b"\x08\xff\xff\xff\xff\x0f"),
            Ok(-1),
            "an int32 enum"
        );
        assert!(decode_response(b"\x08").is_err());
        assert!(decode_response(b"\x12\x05hi").is_err());
        assert!(decode_response(b"\x0b").is_err(), "groups");
        assert!(
            decode_response(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        assert_eq!(serving_status_name(2), "NOT_SERVING");
        assert_eq!(serving_status_name(7), "7");
        assert_eq!(serving_status_name(-1), "-1");
    }

    #[test]
    fn unary_message_framing() {
        assert!(matches!(single_message(b""), Ok(None)));
        assert!(matches!(
            single_message(b"\0\0\0\0\x02\x08\x01"),
            Ok(Some(b"\x08\x01"))
        ));
        let err = |d: &[u8]| single_message(d).err().map(|e| e.code);
        assert_eq!(err(b"\0\0\0"), Some(code::INTERNAL));
        assert_eq!(err(b"\x01\0\0\0\x02\x08\x01"), Some(code::INTERNAL));
        assert_eq!(err(b"\0\0\0\0\x03\x08\x01"), Some(code::INTERNAL));
        assert_eq!(err(b"\0\0\0\0\x01\x08\x01"), Some(code::INTERNAL));
        assert_eq!(err(b"\0\x7f\0\0\0"), Some(code::RESOURCE_EXHAUSTED));
    }

    #[test]
    fn grpc_message_and_binary_metadata_encodings() {
        assert_eq!(
            percent_decode(b"unknown%20service%zz%"),
            "unknown service%zz%"
        );
        assert_eq!(base64_unpadded(b""), "");
        assert_eq!(base64_unpadded(b"f"), "Zg");
        assert_eq!(base64_unpadded(b"fo"), "Zm8");
        assert_eq!(base64_unpadded(b"foo"), "Zm9v");
        assert_eq!(base64_unpadded(b"foobar\xff"), "Zm9vYmFy/w");
    }

    #[test]
    fn targets() {
        for (target, tls, host, port) in [
            ("127.0.0.1:9", false, "127.0.0.1", 9),
            ("example.com", false, "example.com", 80),
            ("example.com", true, "example.com", 443),
            ("https://[::1]:7/x", true, "::1", 7),
        ] {
            assert_eq!(
                host_port(target, tls).ok(),
                Some((host.into(), port)),
                "{target}"
            );
        }
        assert!(host_port("[127.0.0.1]@127.0.0.2:9", false).is_err());
    }
}
