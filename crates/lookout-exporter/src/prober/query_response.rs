//! The `query_response` dialogue the TCP and unix socket probers share, as blackbox_exporter's
//! `probeQueryResponses` walks it. For each step, in order:
//!
//! 1. `expect`: read lines until one matches (its capture groups may be used in `send` and
//!    in `labels` as `${1}`); the stream ending first fails the probe with
//!    `probe_failed_due_to_regex 1` (reason `expect_mismatch`).
//! 2. `expect_bytes`: read exactly that many bytes and fail unless they are equal
//!    (`probe_failed_due_to_bytes 1`, reason `expect_mismatch`). Lookout waits for all the
//!    bytes (bounded by the probe's deadline); blackbox_exporter takes what one read returns
//!    and fails on a short read. A stream that ends first fails with `expect_mismatch` and
//!    `probe_failed_due_to_bytes 0`, as blackbox_exporter leaves it on a short read.
//! 3. `send`: write the text and a newline; a `!!binary` send is written as it is, with no
//!    newline and no `${1}` expansion.
//! 4. `starttls`: upgrade the connection to TLS and record the certificate metrics.
//!
//! A line is at most 64 KiB, as Go's `bufio.Scanner` allows (longer: `network_error`).

use std::borrow::Cow;
use std::net::Ipv4Addr;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

use super::{Failure, Recorder, reason, tls};
use crate::config::{QueryResponse, TlsConfig};

const H_REGEX: &str = "Indicates if probe failed due to regex";
const H_BYTES: &str = "Indicates if probe failed due to bytes";
/// Longest line read while waiting for `expect`.
const MAX_LINE: usize = 64 * 1024;

/// The connection, before or after TLS.
pub(crate) enum Conn<S> {
    /// Plain stream.
    Plain(S),
    /// After a TLS handshake.
    Tls(Box<TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
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

/// How the dialogue starts TLS: the settings and the host the target named (`None` for a
/// unix socket, which has no name to present or verify).
pub(crate) struct TlsTarget<'a> {
    /// `tls_config`.
    pub config: &'a TlsConfig,
    /// The target's host (or `?hostname=`); `tls_config.server_name` takes precedence.
    pub host: Option<&'a str>,
}

impl TlsTarget<'_> {
    /// The name to present and verify. Without a host or `server_name` there is nothing to
    /// verify against: that needs `insecure_skip_verify` (then no SNI is sent), as Go's
    /// `crypto/tls` asks for one or the other.
    fn server_name(&self) -> Result<ServerName<'static>, Failure> {
        match (self.host, &self.config.server_name) {
            (Some(host), _) => tls::server_name(self.config, host),
            (None, Some(name)) => tls::server_name(self.config, name),
            (None, None) if self.config.insecure_skip_verify => {
                Ok(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()))
            }
            (None, None) => Err(Failure::new(
                reason::TLS_CONFIG,
                "TLS to a unix socket needs tls_config.server_name (the name its certificate \
                 is verified against) or insecure_skip_verify",
            )),
        }
    }

    /// Runs the TLS handshake over `stream` and records the connection's metrics.
    pub(crate) async fn start<S>(&self, rec: &mut Recorder, stream: S) -> Result<Conn<S>, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = tls::client_config(self.config, &[])?;
        let stream = tls::handshake(stream, config, self.server_name()?).await?;
        tls::record_connection_state(rec, stream.get_ref().1, !self.config.insecure_skip_verify);
        rec.log("TLS handshake done");
        Ok(Conn::Tls(Box::new(stream)))
    }
}

/// Publishes `probe_failed_due_to_regex` and `probe_failed_due_to_bytes` as 0, before the
/// connection is made.
pub(crate) fn record_defaults(rec: &mut Recorder) {
    rec.set("probe_failed_due_to_regex", H_REGEX, 0.0);
    rec.set("probe_failed_due_to_bytes", H_BYTES, 0.0);
}

/// Walks `steps` over `conn` (see the module documentation).
pub(crate) async fn run<S>(
    rec: &mut Recorder,
    steps: &[QueryResponse],
    mut conn: Conn<S>,
    tls_target: &TlsTarget<'_>,
) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer: Vec<u8> = Vec::new();
    for (step, qr) in steps.iter().enumerate() {
        let mut send = qr.send.clone().unwrap_or_default();
        if let Some(re) = &qr.expect {
            rec.log(format!(
                "Processing query response entry {step}: expecting {:?}",
                re.as_str()
            ));
            send = expect_line(rec, &mut conn, &mut buffer, qr, re, step, &send).await?;
        }
        if let Some(expected) = &qr.expect_bytes {
            expect_bytes(rec, &mut conn, &mut buffer, expected, step).await?;
        }
        let out: Option<Cow<'_, [u8]>> = match &qr.send_bytes {
            Some(bytes) => Some(Cow::Borrowed(bytes)),
            None if !send.is_empty() => Some(Cow::Owned(format!("{send}\n").into_bytes())),
            None => None,
        };
        if let Some(out) = out.filter(|o| !o.is_empty()) {
            rec.log(format!("Sending: {:?}", String::from_utf8_lossy(&out)));
            conn.write_all(&out)
                .await
                .map_err(|e| Failure::new(reason::NETWORK_ERROR, format!("failed to send: {e}")))?;
        }
        if qr.starttls {
            let Conn::Plain(stream) = conn else {
                return Err(Failure::new(
                    reason::TLS_HANDSHAKE,
                    "starttls on a connection that is already TLS",
                ));
            };
            buffer.clear();
            conn = tls_target.start(rec, stream).await?;
        }
    }
    Ok(())
}

/// Reads lines until one matches `re`; returns `send` with the match's groups expanded and
/// publishes `probe_expect_info` when the step has labels.
async fn expect_line<S: AsyncRead + AsyncWrite + Unpin>(
    rec: &mut Recorder,
    conn: &mut Conn<S>,
    buffer: &mut Vec<u8>,
    qr: &QueryResponse,
    re: &regex::Regex,
    step: usize,
    send: &str,
) -> Result<String, Failure> {
    loop {
        let line = match next_line(conn, buffer).await {
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
        let Some(caps) = re.captures(&line) else {
            continue;
        };
        let mut expanded = String::new();
        caps.expand(send, &mut expanded);
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
        return Ok(expanded);
    }
}

/// Reads `expected.len()` bytes (what earlier line reads left over first) and compares.
async fn expect_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    rec: &mut Recorder,
    conn: &mut Conn<S>,
    buffer: &mut Vec<u8>,
    expected: &[u8],
    step: usize,
) -> Result<(), Failure> {
    rec.log(format!(
        "Processing query response entry {step}: expecting bytes {expected:?}"
    ));
    while buffer.len() < expected.len() {
        let mut chunk = [0u8; 4096];
        let want = (expected.len() - buffer.len()).min(chunk.len());
        let n = conn.read(&mut chunk[..want]).await.map_err(|e| {
            Failure::new(
                reason::NETWORK_ERROR,
                format!("error reading from connection: {e}"),
            )
        })?;
        if n == 0 {
            return Err(Failure::new(
                reason::EXPECT_MISMATCH,
                format!(
                    "connection closed after {} of the {} expected bytes (step {step})",
                    buffer.len(),
                    expected.len()
                ),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let got: Vec<u8> = buffer.drain(..expected.len()).collect();
    rec.log(format!("Read bytes: {got:?}"));
    if got != expected {
        rec.set("probe_failed_due_to_bytes", H_BYTES, 1.0);
        return Err(Failure::new(
            reason::EXPECT_MISMATCH,
            format!("read bytes {got:?}, expected {expected:?} (step {step})"),
        ));
    }
    Ok(())
}

/// Reads the next line (without `\n` or `\r\n`); `None` at end of stream.
async fn next_line<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
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
