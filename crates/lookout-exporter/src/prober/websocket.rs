//! The WebSocket prober (blackbox_exporter's `prober/websocket.go`, after 0.28): resolve the
//! `ws://` or `wss://` target's host, connect, run the HTTP upgrade (with `http_config`'s
//! `basic_auth` or `authorization`, its `tls_config` for `wss://`, and `headers`), then walk
//! `query_response` over messages: each `expect` reads one message and fails unless it
//! matches (`${1}` of the match may be used in `send`); each `send` writes a text message.
//!
//! Metrics, as blackbox_exporter publishes them: `probe_websocket_status_code` (the
//! upgrade's HTTP status, 0 without a response), `probe_websocket_connection_upgraded`,
//! `probe_websocket_failed_due_to_regex` (1 when any dialogue step failed) and
//! `probe_websocket_duration_seconds{phase}` for `resolve`, `connect`, `processing` (the
//! TLS and upgrade handshakes) and `transfer` (the dialogue, when there is one), plus the
//! resolver's `probe_dns_lookup_time_seconds`, `probe_ip_protocol`, `probe_ip_addr_hash`.
//! Like blackbox_exporter it publishes no TLS certificate metrics.
//!
//! Bounds: the upgrade response head is at most 64 KiB (tungstenite refuses more:
//! `headers_too_large`); a message or frame is at most `--probe.max-regexp-body-bytes`
//! (10 MiB by default: `message_too_large`); the probe's deadline bounds the rest.

use std::net::SocketAddr;
use std::time::Instant;

use futures_util::{SinkExt as _, StreamExt as _};
use http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::resolve::resolve_target;
use super::{Failure, ProbeRequest, Recorder, reason, tls};
use crate::config::{HeaderSource, QueryResponse, WebsocketProbe};

const H_STATUS: &str = "Response HTTP status code";
const H_UPGRADED: &str = "Indicates if the websocket connection was successfully upgraded";
const H_REGEX: &str = "Indicates if probe failed due to regex";
const H_DURATION: &str = "Duration of websocket request by phase";
/// Largest header file read (64 KiB), as for the HTTP prober's secret files.
const MAX_HEADER_FILE_BYTES: usize = 64 << 10;

fn phase(rec: &mut Recorder, name: &str, seconds: f64) {
    rec.add_labeled(
        "probe_websocket_duration_seconds",
        H_DURATION,
        &[("phase", name)],
        seconds,
    );
}

/// A plain or TLS stream for the upgrade.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Probes a `ws://` or `wss://` URL.
pub async fn probe_websocket(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.websocket;
    rec.set("probe_websocket_connection_upgraded", H_UPGRADED, 0.0);
    rec.set("probe_websocket_status_code", H_STATUS, 0.0);
    rec.set("probe_websocket_failed_due_to_regex", H_REGEX, 0.0);
    let uri = crate::target::websocket_url(req.target)?;
    let host = crate::target::url_host(&uri).to_string();
    let secure = uri.scheme_str() == Some("wss");
    let (ip, lookup) = resolve_target(
        rec,
        &host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await?;
    phase(rec, "resolve", lookup.as_secs_f64());
    let request = upgrade_request(cfg, &uri)?;
    let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(if secure { 443 } else { 80 }));

    let dial_start = Instant::now();
    let mut connected = 0.0;
    let dialed = async {
        let tcp = super::tcp::connect(addr, None).await?;
        connected = dial_start.elapsed().as_secs_f64();
        rec.log(format!("Successfully dialed: address={addr}"));
        let stream: Box<dyn Io> = if secure {
            let config = tls::client_config(&cfg.tls_config, &[b"http/1.1"])?;
            let name = tls::server_name(&cfg.tls_config, &host)?;
            Box::new(tls::handshake(tcp, config, name).await?)
        } else {
            Box::new(tcp)
        };
        let limit = usize::try_from(req.limits.max_regexp_body_bytes).unwrap_or(usize::MAX);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
            .await
            .map_err(|e| upgrade_failure(rec, e))
    }
    .await;
    if connected > 0.0 {
        phase(rec, "connect", connected);
    }
    let processing = (dial_start.elapsed().as_secs_f64() - connected).max(0.0);
    phase(rec, "processing", processing);
    let (mut ws, response) = dialed?;
    rec.set(
        "probe_websocket_status_code",
        H_STATUS,
        f64::from(response.status().as_u16()),
    );
    rec.set("probe_websocket_connection_upgraded", H_UPGRADED, 1.0);
    rec.log("Connection upgraded");

    if cfg.query_response.is_empty() {
        return Ok(());
    }
    let transfer_start = Instant::now();
    let mut result = Ok(());
    for (step, qr) in cfg.query_response.iter().enumerate() {
        result = dialogue_step(rec, &mut ws, qr, step).await;
        if result.is_err() {
            rec.set("probe_websocket_failed_due_to_regex", H_REGEX, 1.0);
            break;
        }
    }
    phase(rec, "transfer", transfer_start.elapsed().as_secs_f64());
    result
}

/// The upgrade request: the URL, the authorization header, then `headers`.
fn upgrade_request(cfg: &WebsocketProbe, uri: &http::Uri) -> Result<http::Request<()>, Failure> {
    let bad = |message: String| Failure::new(reason::HTTP_REQUEST, message);
    let mut request = uri
        .clone()
        .into_client_request()
        .map_err(|e| bad(format!("invalid WebSocket URL {uri}: {e}")))?;
    let headers = request.headers_mut();
    if let Some(auth) =
        super::http::client_authorization(cfg.basic_auth.as_ref(), cfg.authorization.as_ref())?
    {
        let value = HeaderValue::from_str(&auth)
            .map_err(|_| bad("the authorization header is not a valid header value".into()))?;
        headers.append(http::header::AUTHORIZATION, value);
    }
    for (name, source) in &cfg.headers {
        let text =
            match source {
                HeaderSource::Value(v) | HeaderSource::Secret(v) => v.clone(),
                HeaderSource::File(path) => super::http::read_secret(path, "headers file")
                    .and_then(|v| match v.len() > MAX_HEADER_FILE_BYTES {
                        true => Err(bad(format!("header file {} is too large", path.display()))),
                        false => Ok(v),
                    })?,
            };
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(&text)
            .map_err(|_| bad(format!("invalid value of header {name}")))?;
        if name == http::header::HOST {
            headers.insert(name, value);
        } else {
            headers.append(name, value);
        }
    }
    Ok(request)
}

/// Classifies a failed upgrade; records the status of a non-101 answer.
fn upgrade_failure(rec: &mut Recorder, e: WsError) -> Failure {
    match e {
        WsError::Http(response) => {
            let status = response.status();
            rec.set(
                "probe_websocket_status_code",
                H_STATUS,
                f64::from(status.as_u16()),
            );
            Failure::new(
                reason::INVALID_STATUS_CODE,
                format!("the server answered the upgrade with {status}"),
            )
        }
        WsError::AttackAttempt => Failure::new(
            reason::HEADERS_TOO_LARGE,
            "the upgrade response head is over 64 KiB or in too many pieces",
        ),
        WsError::Io(e) => Failure::new(
            reason::NETWORK_ERROR,
            format!("WebSocket upgrade failed: {e}"),
        ),
        e => Failure::new(
            reason::HTTP_REQUEST,
            format!("WebSocket upgrade failed: {e}"),
        ),
    }
}

/// One `query_response` step: read one data message for `expect`, then `send`.
async fn dialogue_step<S: AsyncRead + AsyncWrite + Unpin>(
    rec: &mut Recorder,
    ws: &mut WebSocketStream<S>,
    qr: &QueryResponse,
    step: usize,
) -> Result<(), Failure> {
    let mut send = qr.send.clone().unwrap_or_default();
    if let Some(re) = &qr.expect {
        let message = next_message(ws).await?;
        rec.log(format!("Read message: {message:?}"));
        let Some(caps) = re.captures(&message) else {
            return Err(Failure::new(
                reason::EXPECT_MISMATCH,
                format!(
                    "message {message:?} does not match {:?} (step {step})",
                    re.as_str()
                ),
            ));
        };
        let mut expanded = String::new();
        caps.expand(&send, &mut expanded);
        send = expanded;
    }
    if !send.is_empty() {
        rec.log(format!("Sending message: {send:?}"));
        ws.send(Message::text(send)).await.map_err(|e| {
            Failure::new(reason::NETWORK_ERROR, format!("error sending message: {e}"))
        })?;
    }
    Ok(())
}

/// The next text or binary message, as text (invalid UTF-8 replaced); control frames are
/// skipped (tungstenite answers pings).
async fn next_message<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<String, Failure> {
    loop {
        let message = match ws.next().await {
            None | Some(Ok(Message::Close(_))) => {
                return Err(Failure::new(
                    reason::EXPECT_MISMATCH,
                    "the connection closed before a message came",
                ));
            }
            Some(Err(WsError::Capacity(e))) => {
                return Err(Failure::new(
                    reason::MESSAGE_TOO_LARGE,
                    format!("{e} (--probe.max-regexp-body-bytes)"),
                ));
            }
            Some(Err(e)) => {
                return Err(Failure::new(
                    reason::NETWORK_ERROR,
                    format!("error reading message: {e}"),
                ));
            }
            Some(Ok(m)) => m,
        };
        match message {
            Message::Text(text) => return Ok(text.as_str().to_string()),
            Message::Binary(bytes) => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
            _ => continue,
        }
    }
}
