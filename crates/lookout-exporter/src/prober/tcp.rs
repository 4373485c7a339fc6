//! The TCP prober: connect to `host:port`, optionally start TLS, then walk the
//! `query_response` dialogue as blackbox_exporter does: for each step, read lines until one
//! matches `expect` (its capture groups may be used in `send` as `${1}`), write `send` plus a
//! newline, and upgrade to TLS when `starttls` is set.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use super::resolve::resolve_target;
use super::{Failure, ProbeRequest, Recorder, connect_failure, reason, tls};
use crate::config::TlsConfig;

const H_REGEX: &str = "Indicates if probe failed due to regex";

/// The connection, before or after TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(data).await,
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }
}

/// Connects to `addr`, from `source` when given.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, Failure> {
    let result = match source {
        None => TcpStream::connect(addr).await,
        Some(src) => {
            let socket = if addr.is_ipv6() {
                TcpSocket::new_v6()
            } else {
                TcpSocket::new_v4()
            };
            match socket.and_then(|s| s.bind(SocketAddr::new(src, 0)).map(|()| s)) {
                Ok(s) => s.connect(addr).await,
                Err(e) => {
                    return Err(Failure::new(
                        reason::CONNECTION_FAILED,
                        format!("cannot bind source address {src}: {e}"),
                    ));
                }
            }
        }
    };
    result.map_err(|e| connect_failure(addr, &e))
}

async fn start_tls(
    rec: &mut Recorder,
    tcp: TcpStream,
    cfg: &TlsConfig,
    host: &str,
) -> Result<Conn, Failure> {
    let config = tls::client_config(cfg, &[])?;
    let name = tls::server_name(cfg, host)?;
    let stream = tls::handshake(tcp, config, name).await?;
    tls::record_connection_state(rec, stream.get_ref().1, !cfg.insecure_skip_verify);
    rec.log("TLS handshake done");
    Ok(Conn::Tls(Box::new(stream)))
}

/// Probes a `host:port` over TCP.
pub async fn probe_tcp(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.tcp;
    rec.set("probe_failed_due_to_regex", H_REGEX, 0.0);
    let (host, port) = crate::target::host_port(req.target, None)?;
    let (ip, _) = resolve_target(
        rec,
        &host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await?;
    let addr = SocketAddr::new(ip, port);
    let tcp = connect(addr, cfg.source_ip_address).await?;
    rec.log(format!("Successfully dialed: address={addr}"));
    let tls_host = req.hostname.unwrap_or(&host).to_string();
    let mut conn = if cfg.tls {
        start_tls(rec, tcp, &cfg.tls_config, &tls_host).await?
    } else {
        Conn::Plain(tcp)
    };

    let mut buffer: Vec<u8> = Vec::new();
    for (step, qr) in cfg.query_response.iter().enumerate() {
        let mut send = qr.send.clone().unwrap_or_default();
        if let Some(re) = &qr.expect {
            rec.log(format!(
                "Processing query response entry {step}: expecting {:?}",
                re.as_str()
            ));
            loop {
                let line = match next_line(&mut conn, &mut buffer).await {
                    Ok(Some(line)) => line,
                    Ok(None) => {
                        rec.set("probe_failed_due_to_regex", H_REGEX, 1.0);
                        return Err(Failure::new(
                            reason::EXPECT_MISMATCH,
                            format!(
                                "connection closed before a line matched {:?} (step {step})",
                                re.as_str()
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(Failure::new(
                            reason::NETWORK_ERROR,
                            format!("error reading from connection: {e}"),
                        ));
                    }
                };
                rec.log(format!("Read line: {line:?}"));
                if let Some(caps) = re.captures(&line) {
                    let mut expanded = String::new();
                    caps.expand(&send, &mut expanded);
                    send = expanded;
                    if !qr.labels.is_empty() {
                        let values: Vec<(String, String)> = qr
                            .labels
                            .iter()
                            .map(|l| {
                                let mut v = String::new();
                                caps.expand(&l.value, &mut v);
                                (l.name.clone(), v)
                            })
                            .collect();
                        let labels: Vec<(&str, &str)> = values
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        rec.set_labeled(
                            "probe_expect_info",
                            "Explicit content matched",
                            &labels,
                            1.0,
                        );
                    }
                    break;
                }
            }
        }
        if !send.is_empty() {
            rec.log(format!("Sending line: {send:?}"));
            conn.write_all(format!("{send}\n").as_bytes())
                .await
                .map_err(|e| Failure::new(reason::NETWORK_ERROR, format!("failed to send: {e}")))?;
        }
        if qr.starttls {
            let Conn::Plain(tcp) = conn else {
                return Err(Failure::new(
                    reason::TLS_HANDSHAKE,
                    "starttls on a connection that is already TLS",
                ));
            };
            buffer.clear();
            conn = start_tls(rec, tcp, &cfg.tls_config, &tls_host).await?;
        }
    }
    Ok(())
}

/// Reads the next line (without `\n` or `\r\n`); `None` at end of stream.
async fn next_line(conn: &mut Conn, buffer: &mut Vec<u8>) -> std::io::Result<Option<String>> {
    const MAX_LINE: usize = 64 * 1024;
    loop {
        if let Some(pos) = buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buffer.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
        if buffer.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line longer than 64 KiB",
            ));
        }
        let mut chunk = [0u8; 4096];
        // A peer closing a TLS connection without close_notify ends the stream, as in Go's
        // crypto/tls that blackbox_exporter reads with (a server answering HTTP/1.0 does).
        let n = match conn.read(&mut chunk).await {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            r => r?,
        };
        if n == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            let line = String::from_utf8_lossy(buffer).into_owned();
            buffer.clear();
            return Ok(Some(line));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}
