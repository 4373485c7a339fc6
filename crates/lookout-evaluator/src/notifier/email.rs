//! The email receiver: a small SMTP client (RFC 5321) with STARTTLS (RFC 3207), or TLS from
//! the first byte on port 465, and AUTH PLAIN / LOGIN (RFC 4954), sending one message per
//! notification with a plain-text and an HTML part listing the alerts. Every exchange is
//! bounded: a time limit on the whole session, and limits on reply lines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::DeliveryError;
use super::dispatch::{Integration, Notification};
use super::webhook::is_firing;
use crate::alert::Alert;
use crate::scrape_config::PromDuration;
use crate::scrape_tls::TlsConfig;

/// Longest reply line read from the server.
const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply.
const MAX_REPLY_LINES: usize = 128;

/// One `email_configs` entry (Alertmanager's field names).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipients, comma-separated.
    pub to: String,
    /// Sender address.
    pub from: String,
    /// `host:port` of the SMTP server.
    pub smarthost: String,
    /// Name sent in EHLO (default `localhost`).
    #[serde(default)]
    pub hello: Option<String>,
    /// User for AUTH.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Password for AUTH.
    #[serde(default)]
    pub auth_password: Option<String>,
    /// File holding the password for AUTH (read at each send).
    #[serde(default)]
    pub auth_password_file: Option<PathBuf>,
    /// Authorization identity for AUTH PLAIN (default empty).
    #[serde(default)]
    pub auth_identity: Option<String>,
    /// Refuse to send unless STARTTLS succeeded (default true).
    #[serde(default)]
    pub require_tls: Option<bool>,
    /// TLS settings (CA, server name, insecure_skip_verify).
    #[serde(default)]
    pub tls_config: Option<TlsConfig>,
    /// Extra or overriding headers (`Subject`, `To`, `From` included).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Also notify about resolved alerts (default false, as Alertmanager).
    #[serde(default)]
    pub send_resolved: bool,
    /// Time limit of one delivery (default 30s).
    #[serde(default)]
    pub timeout: Option<PromDuration>,
}

impl EmailConfig {
    /// Checks the fields that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        if self.to.trim().is_empty() {
            return Err("email_configs: to is required".into());
        }
        if self.from.trim().is_empty() {
            return Err("email_configs: from is required".into());
        }
        for a in self.to.split(',').chain([self.from.as_str()]) {
            address(a)?;
        }
        split_hostport(&self.smarthost)?;
        if self.auth_password.is_some() && self.auth_password_file.is_some() {
            return Err(
                "email_configs: at most one of auth_password and auth_password_file".into(),
            );
        }
        for (k, v) in &self.headers {
            if k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                || v.contains(['\r', '\n'])
            {
                return Err(format!("email_configs: invalid header {k:?}"));
            }
        }
        if let Some(t) = &self.tls_config {
            t.validate().map_err(|e| format!("email_configs: {e}"))?;
        }
        Ok(())
    }
}

/// The address inside `Name <addr>` or a bare address.
fn address(s: &str) -> Result<String, String> {
    let s = s.trim();
    let a = match (s.rfind('<'), s.rfind('>')) {
        (Some(i), Some(j)) if i < j => &s[i + 1..j],
        _ => s,
    };
    if a.is_empty()
        || !a.contains('@')
        || a.len() > 320
        || a.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(format!("email_configs: invalid address {s:?}"));
    }
    Ok(a.to_string())
}

fn split_hostport(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("email_configs: smarthost {s:?} must be host:port");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// An email receiver.
pub struct EmailIntegration {
    cfg: EmailConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    tls_error: Option<String>,
}

impl EmailIntegration {
    /// An integration for a validated `cfg`.
    pub fn new(cfg: EmailConfig) -> EmailIntegration {
        let (tls, tls_error) = match cfg
            .tls_config
            .clone()
            .unwrap_or_default()
            .rustls_client_config()
        {
            Ok(c) => (Some(Arc::new(c)), None),
            Err(e) => (None, Some(e)),
        };
        EmailIntegration {
            cfg,
            tls,
            tls_error,
        }
    }

    fn password(&self) -> Result<Option<String>, DeliveryError> {
        if let Some(p) = &self.cfg.auth_password {
            return Ok(Some(p.clone()));
        }
        if let Some(f) = &self.cfg.auth_password_file {
            let limit = crate::limits::FileLimit::secret_file("auth_password_file");
            return crate::limits::read_capped(f, limit)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    DeliveryError::Credentials(format!(
                        "cannot read auth_password_file {}: {e}",
                        f.display()
                    ))
                });
        }
        Ok(None)
    }

    async fn send(&self, message: &[u8]) -> Result<(), DeliveryError> {
        let (host, port) = split_hostport(&self.cfg.smarthost).map_err(DeliveryError::Http)?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| DeliveryError::Http(format!("connecting to {host}:{port}: {e}")))?;
        let server_name = self
            .cfg
            .tls_config
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| host.clone());
        if port == 465 {
            let tls = self.handshake(tcp, &server_name).await?;
            let mut s = Smtp::new(tls);
            s.expect(220).await?;
            return self.session(&mut s, true, message).await;
        }
        let mut s = Smtp::new(tcp);
        s.expect(220).await?;
        let ext = s.ehlo(self.hello()).await?;
        if has_ext(&ext, "STARTTLS") {
            s.command("STARTTLS", 220).await?;
            let tcp = s.into_inner();
            let tls = self.handshake(tcp, &server_name).await?;
            let mut s = Smtp::new(tls);
            return self.session(&mut s, true, message).await;
        }
        if self.cfg.require_tls.unwrap_or(true) {
            return Err(DeliveryError::Http(format!(
                "{host}:{port} does not offer STARTTLS and require_tls is true"
            )));
        }
        self.session_after_ehlo(&mut s, &ext, false, &host, message)
            .await
    }

    fn hello(&self) -> &str {
        self.cfg.hello.as_deref().unwrap_or("localhost")
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DeliveryError> {
        let Some(cfg) = &self.tls else {
            return Err(DeliveryError::Credentials(
                self.tls_error.clone().unwrap_or_default(),
            ));
        };
        let name = rustls_pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| DeliveryError::Http(format!("TLS server name {server_name:?}: {e}")))?;
        tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| DeliveryError::Http(format!("TLS handshake: {e}")))
    }

    async fn session<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut Smtp<S>,
        tls: bool,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        let ext = s.ehlo(self.hello()).await?;
        let (host, _) = split_hostport(&self.cfg.smarthost).map_err(DeliveryError::Http)?;
        self.session_after_ehlo(s, &ext, tls, &host, message).await
    }

    async fn session_after_ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut Smtp<S>,
        ext: &[String],
        tls: bool,
        host: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        if let Some(user) = &self.cfg.auth_username
            && let Some(mechs) = ext_value(ext, "AUTH")
        {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !tls && !loopback {
                return Err(DeliveryError::Credentials(
                    "refusing to send the SMTP password over an unencrypted connection".into(),
                ));
            }
            let password = self.password()?.unwrap_or_default();
            let mechs: Vec<String> = mechs
                .split_whitespace()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            if mechs.iter().any(|m| m == "PLAIN") {
                let identity = self.cfg.auth_identity.as_deref().unwrap_or("");
                let token = b64(&format!("{identity}\0{user}\0{password}"));
                s.command(&format!("AUTH PLAIN {token}"), 235).await?;
            } else if mechs.iter().any(|m| m == "LOGIN") {
                s.command("AUTH LOGIN", 334).await?;
                s.command(&b64(user), 334).await?;
                s.command(&b64(&password), 235).await?;
            } else {
                return Err(DeliveryError::Credentials(format!(
                    "the server offers no supported AUTH mechanism (PLAIN, LOGIN): {}",
                    mechs.join(" ")
                )));
            }
        }
        let from = address(&self.cfg.from).map_err(DeliveryError::Http)?;
        s.command(&format!("MAIL FROM:<{from}>"), 250).await?;
        for to in self.cfg.to.split(',') {
            let to = address(to).map_err(DeliveryError::Http)?;
            s.command(&format!("RCPT TO:<{to}>"), 250).await?;
        }
        s.command("DATA", 354).await?;
        s.data(message).await?;
        s.expect(250).await?;
        let _ = s.command("QUIT", 221).await;
        Ok(())
    }
}

fn has_ext(ext: &[String], name: &str) -> bool {
    ext.iter().any(|e| {
        e.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    })
}

fn ext_value<'a>(ext: &'a [String], name: &str) -> Option<&'a str> {
    ext.iter().find_map(|e| {
        let mut it = e.splitn(2, [' ', '=']);
        let w = it.next()?;
        w.eq_ignore_ascii_case(name)
            .then(|| it.next().unwrap_or(""))
    })
}

struct Smtp<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Smtp<S> {
    fn new(s: S) -> Smtp<S> {
        Smtp {
            io: BufReader::new(s),
        }
    }

    fn into_inner(self) -> S {
        self.io.into_inner()
    }

    /// Reads one reply: its code and its lines' texts.
    async fn reply(&mut self) -> Result<(u16, Vec<String>), DeliveryError> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| DeliveryError::Http(format!("SMTP read: {e}")))?;
            if n == 0 {
                return Err(DeliveryError::Http(
                    "SMTP server closed the connection".into(),
                ));
            }
            if !buf.ends_with(b"\n") {
                return Err(DeliveryError::Http("SMTP reply line too long".into()));
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| DeliveryError::Http(format!("bad SMTP reply {line:?}")))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok((code, lines));
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(DeliveryError::Http("SMTP reply has too many lines".into()));
            }
            let _ = code;
        }
    }

    async fn expect(&mut self, want: u16) -> Result<Vec<String>, DeliveryError> {
        let (code, lines) = self.reply().await?;
        if code != want && !(want == 250 && code == 251) {
            return Err(DeliveryError::Status {
                status: code,
                body: lines.join(" ").chars().take(512).collect(),
            });
        }
        Ok(lines)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), DeliveryError> {
        let w = self.io.get_mut();
        w.write_all(bytes)
            .await
            .map_err(|e| DeliveryError::Http(format!("SMTP write: {e}")))?;
        w.flush()
            .await
            .map_err(|e| DeliveryError::Http(format!("SMTP write: {e}")))
    }

    async fn command(&mut self, cmd: &str, want: u16) -> Result<Vec<String>, DeliveryError> {
        self.write(format!("{cmd}\r\n").as_bytes()).await?;
        self.expect(want).await
    }

    async fn ehlo(&mut self, hello: &str) -> Result<Vec<String>, DeliveryError> {
        let mut lines = self.command(&format!("EHLO {hello}"), 250).await?;
        if !lines.is_empty() {
            lines.remove(0);
        }
        Ok(lines)
    }

    /// Sends the message with dot-stuffing and the final `.` line.
    async fn data(&mut self, message: &[u8]) -> Result<(), DeliveryError> {
        let mut out = Vec::with_capacity(message.len() + 64);
        for line in message.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.write(&out).await
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Alertmanager's default subject (its `__subject` template): `[FIRING:2] <group label
/// values> (<values of the other labels all alerts share>)`, or `[RESOLVED] …`; values in
/// label-name order.
pub fn subject(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| is_firing(a, n.now)).count();
    let mut s = if firing > 0 {
        format!("[FIRING:{firing}] ")
    } else {
        "[RESOLVED] ".to_string()
    };
    let group: Vec<&str> = n.group_labels.iter().map(|(_, v)| v).collect();
    s.push_str(&group.join(" "));
    s.push(' ');
    let mut common: Option<BTreeMap<&str, &str>> = None;
    for a in &n.alerts {
        let l: BTreeMap<&str, &str> = a.labels.iter().collect();
        common = Some(match common {
            None => l,
            Some(mut c) => {
                c.retain(|k, v| l.get(k) == Some(v));
                c
            }
        });
    }
    let common = common.unwrap_or_default();
    if common.len() > group.len() {
        let rest: Vec<&str> = common
            .iter()
            .filter(|(k, _)| n.group_labels.get(k).is_none())
            .map(|(_, v)| *v)
            .collect();
        s.push_str(&format!("({})", rest.join(" ")));
    }
    s
}

/// The plain-text and HTML bodies.
pub fn bodies(n: &Notification) -> (String, String) {
    let mut text = String::new();
    let mut html = String::from("<!DOCTYPE html>\n<html><body>\n");
    for (title, firing) in [("Firing", true), ("Resolved", false)] {
        let alerts: Vec<&Alert> = n
            .alerts
            .iter()
            .filter(|a| is_firing(a, n.now) == firing)
            .collect();
        if alerts.is_empty() {
            continue;
        }
        text.push_str(&format!("{title} alerts ({}):\n\n", alerts.len()));
        html.push_str(&format!(
            "<h2>{title} alerts ({})</h2>\n<ul>\n",
            alerts.len()
        ));
        for a in alerts {
            let name = a.labels.get("alertname").unwrap_or("");
            let labels: Vec<String> = a
                .labels
                .iter()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            text.push_str(&format!("- {name} {}\n", labels.join(" ")));
            html.push_str(&format!(
                "<li><b>{}</b> {}",
                html_escape(name),
                html_escape(&labels.join(" "))
            ));
            for (k, v) in &a.annotations {
                if v.is_empty() {
                    continue;
                }
                text.push_str(&format!("    {k}: {v}\n"));
                html.push_str(&format!("<br>{}: {}", html_escape(k), html_escape(v)));
            }
            if !a.generator_url.is_empty() {
                text.push_str(&format!("    source: {}\n", a.generator_url));
                html.push_str(&format!(
                    "<br><a href=\"{0}\">source</a>",
                    html_escape(&a.generator_url)
                ));
            }
            html.push_str("</li>\n");
        }
        text.push('\n');
        html.push_str("</ul>\n");
    }
    if !n.external_url.is_empty() {
        text.push_str(&format!("Sent by Lookout {}\n", n.external_url));
        html.push_str(&format!(
            "<p>Sent by <a href=\"{0}\">Lookout</a></p>\n",
            html_escape(&n.external_url)
        ));
    }
    html.push_str("</body></html>\n");
    (text, html)
}

fn encode_header(v: &str) -> String {
    let v: String = v
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if v.is_ascii() {
        v
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
        )
    }
}

fn base64_lines(s: &str) -> String {
    let enc = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let mut out = String::with_capacity(enc.len() + enc.len() / 76 * 2 + 2);
    for chunk in enc.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push_str("\r\n");
    }
    out
}

/// The whole RFC 5322 message for `n`.
pub fn message(cfg: &EmailConfig, n: &Notification) -> String {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    headers.insert("From".into(), cfg.from.clone());
    headers.insert("To".into(), cfg.to.clone());
    headers.insert("Subject".into(), subject(n));
    for (k, v) in &cfg.headers {
        // Header names are case-insensitive: a configured `subject` replaces `Subject`.
        let existing = headers.keys().find(|h| h.eq_ignore_ascii_case(k)).cloned();
        if let Some(e) = existing {
            headers.remove(&e);
        }
        headers.insert(k.clone(), v.clone());
    }
    let date = chrono::DateTime::<chrono::Utc>::from(n.now).to_rfc2822();
    let nanos = n
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let domain = address(&cfg.from)
        .ok()
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_string()))
        .unwrap_or_else(|| "localhost".into());
    let boundary = format!("lookout-{nanos:x}");
    let mut m = String::new();
    for (k, v) in &headers {
        m.push_str(&format!("{k}: {}\r\n", encode_header(v)));
    }
    if !headers.keys().any(|k| k.eq_ignore_ascii_case("Date")) {
        m.push_str(&format!("Date: {date}\r\n"));
    }
    if !headers.keys().any(|k| k.eq_ignore_ascii_case("Message-Id")) {
        m.push_str(&format!(
            "Message-Id: <{nanos}.{}@{domain}>\r\n",
            std::process::id()
        ));
    }
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
    ));
    let (text, html) = bodies(n);
    for (ct, body) in [("text/plain", text), ("text/html", html)] {
        m.push_str(&format!(
            "--{boundary}\r\nContent-Type: {ct}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ));
        m.push_str(&base64_lines(&body));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m
}

impl Integration for EmailIntegration {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send_resolved(&self) -> bool {
        self.cfg.send_resolved
    }

    fn notify<'a>(
        &'a self,
        n: &'a Notification,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let msg = message(&self.cfg, n);
            let limit = self
                .cfg
                .timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30));
            tokio::time::timeout(limit, self.send(msg.as_bytes()))
                .await
                .map_err(|_| {
                    DeliveryError::Http(format!("SMTP session timed out after {limit:?}"))
                })?
        })
    }
}
