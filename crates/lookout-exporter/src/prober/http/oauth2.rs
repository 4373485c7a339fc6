//! `oauth2`: the client credentials grant as `golang.org/x/oauth2/clientcredentials` does it
//! in Prometheus common's client.
//!
//! The token request is a `POST` of `application/x-www-form-urlencoded` `grant_type=
//! client_credentials`, `scope` (the scopes space-separated, when any) and `endpoint_params`
//! (which may override `grant_type` but no other parameter). The client credentials go as
//! x/oauth2's auto-detection sends them: first as HTTP basic authentication (id and secret
//! URL-escaped), and if that request fails in any way, again as `client_id` and
//! `client_secret` form parameters; the way that worked is remembered per `token_url`. The
//! answer is JSON, or a form when its type is `application/x-www-form-urlencoded` or
//! `text/plain`; its `token_type` (`Bearer` by default) and `access_token` make the
//! `Authorization` header of every request of the probe, redirects included.
//!
//! The token request uses the `oauth2` section's own `tls_config` and proxy settings, never the
//! probe's, and is not subject to the `/probe` policy (the operator configured `token_url`).
//! Bounds: the response head as `--probe.max-response-header-bytes`/`-fields`, the body
//! 1 MiB (x/oauth2's limit), the time the probe's deadline.
//!
//! Tokens are cached per token URL, client and secret until 10 s before `expires_in` runs out
//! (x/oauth2's margin); a token without `expires_in` is reused for at most 5 minutes.
//! blackbox_exporter builds a new client for every probe and so fetches a token every probe;
//! the cache spares the token endpoint and changes no metric. A failure is reason `oauth2`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::super::{Failure, reason, tls};
use super::proxy;
use crate::config::OAuth2;
use crate::limits::Limits;

/// Largest token response body read (x/oauth2's limit).
const MAX_TOKEN_BODY_BYTES: usize = 1 << 20;
/// x/oauth2's `expiryDelta`: a token this close to expiry is renewed.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How long a token without `expires_in` is reused.
const NO_EXPIRY_REUSE: Duration = Duration::from_secs(300);
/// Cache entries kept at most (rotated secrets make new keys).
const MAX_CACHED: usize = 1024;

/// A token: the `Authorization` value and until when it may be used.
#[derive(Clone)]
struct Token {
    header: String,
    good_until: Instant,
}

fn tokens() -> &'static Mutex<HashMap<String, Token>> {
    static TOKENS: OnceLock<Mutex<HashMap<String, Token>>> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// Per token URL: whether the credentials go in the form (x/oauth2's remembered auth style).
fn styles() -> &'static Mutex<HashMap<String, bool>> {
    static STYLES: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    STYLES.get_or_init(Default::default)
}

/// The `Authorization` header value for a request under `cfg`, fetching a token if no cached
/// one is good.
pub(super) async fn authorization(
    cfg: &OAuth2,
    deadline: Duration,
    limits: Limits,
) -> Result<String, Failure> {
    let fail = |m: String| Failure::new(reason::OAUTH2, m);
    let secret = match &cfg.client_secret_file {
        Some(path) => super::read_secret(path, "client_secret_file")
            .map_err(|f| fail(format!("oauth2: {}", f.message)))?,
        None => cfg.client_secret.clone(),
    };
    let key = cache_key(cfg, &secret);
    let now = Instant::now();
    if let Some(t) = lock(tokens()).get(&key).filter(|t| t.good_until > now) {
        return Ok(t.header.clone());
    }
    let url = cfg.token_url.to_string();
    let remembered = lock(styles()).get(&url).copied();
    let (token, in_params) = match remembered {
        Some(in_params) => (
            fetch(cfg, &secret, in_params, deadline, limits).await,
            in_params,
        ),
        None => match fetch(cfg, &secret, false, deadline, limits).await {
            Ok(t) => (Ok(t), false),
            Err(first) => match fetch(cfg, &secret, true, deadline, limits).await {
                Ok(t) => (Ok(t), true),
                Err(second) => (
                    Err(format!(
                        "{second} (with the client credentials as basic authentication: {first})"
                    )),
                    true,
                ),
            },
        },
    };
    let token = token.map_err(|m| fail(format!("oauth2: cannot fetch token from {url}: {m}")))?;
    let mut styles = lock(styles());
    if styles.len() >= MAX_CACHED {
        styles.clear();
    }
    styles.insert(url, in_params);
    drop(styles);
    let mut cache = lock(tokens());
    cache.retain(|_, t| t.good_until > now);
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(key, token.clone());
    Ok(token.header)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A digest of what identifies a token (the secret is not kept in the key).
fn cache_key(cfg: &OAuth2, secret: &str) -> String {
    let text = format!(
        "{}\0{}\0{}\0{}\0{:?}",
        cfg.token_url,
        cfg.client_id,
        secret,
        cfg.scopes.join(" "),
        cfg.endpoint_params
    );
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The form of the token request.
fn form(cfg: &OAuth2, secret: &str, in_params: bool) -> Result<String, String> {
    let mut v: BTreeMap<String, String> = BTreeMap::new();
    v.insert("grant_type".into(), "client_credentials".into());
    if !cfg.scopes.is_empty() {
        v.insert("scope".into(), cfg.scopes.join(" "));
    }
    for (k, p) in &cfg.endpoint_params {
        if v.contains_key(k) && k != "grant_type" {
            return Err(format!("oauth2: cannot overwrite parameter {k:?}"));
        }
        v.insert(k.clone(), p.clone());
    }
    if in_params {
        v.insert("client_id".into(), cfg.client_id.clone());
        if !secret.is_empty() {
            v.insert("client_secret".into(), secret.to_string());
        }
    }
    Ok(v.iter()
        .map(|(k, p)| format!("{}={}", query_escape(k), query_escape(p)))
        .collect::<Vec<_>>()
        .join("&"))
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to the token endpoint, through the `oauth2` section's proxy if any, and TLS.
async fn open(cfg: &OAuth2, limits: Limits) -> Result<(Box<dyn Io>, bool), String> {
    let uri = &cfg.token_url;
    let https = uri.scheme_str() == Some("https");
    let host = crate::target::url_host(uri).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let chosen = proxy::proxy_for(&cfg.proxy, https, &host, port).map_err(|f| f.message)?;
    let (tcp, forward) = match &chosen {
        Some(p) => {
            let mut tcp = proxy::connect(p).await.map_err(|f| f.message)?;
            if https {
                let authority = uri.authority().map_or("", |a| a.as_str());
                let authority = if uri.port_u16().is_some() {
                    authority.to_string()
                } else {
                    format!("{authority}:{port}")
                };
                proxy::tunnel(
                    &mut tcp,
                    &authority,
                    p,
                    &cfg.proxy.proxy_connect_header,
                    limits.max_response_header_bytes,
                )
                .await
                .map_err(|f| f.message)?;
            }
            (tcp, !https)
        }
        None => {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("error dialing {host}:{port}: {e}"))?;
            (tcp, false)
        }
    };
    if !https {
        return Ok((Box::new(tcp), forward));
    }
    let config = tls::client_config(&cfg.tls_config, &[b"http/1.1"]).map_err(|f| f.message)?;
    let name = tls::server_name(&cfg.tls_config, &host).map_err(|f| f.message)?;
    let stream = tls::handshake(tcp, config, name)
        .await
        .map_err(|f| f.message)?;
    Ok((Box::new(stream), false))
}

/// One token request; `in_params` puts the client credentials in the form.
async fn fetch(
    cfg: &OAuth2,
    secret: &str,
    in_params: bool,
    deadline: Duration,
    limits: Limits,
) -> Result<Token, String> {
    let body = form(cfg, secret, in_params)?;
    let (io, absolute) = open(cfg, limits).await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_headers(limits.max_response_header_fields)
        .max_buf_size(
            limits
                .max_response_header_bytes
                .max(crate::limits::MIN_RESPONSE_HEADER_BYTES),
        )
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(deadline, conn).await;
    });
    let request = request(cfg, secret, in_params, absolute, body)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = Limited::new(response.into_body(), MAX_TOKEN_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            format!("reading the token response (at most {MAX_TOKEN_BODY_BYTES} bytes): {e}")
        })?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        return Err(format!("{status}: {}", text.trim()));
    }
    parse_token(&content_type, &body)
}

fn request(
    cfg: &OAuth2,
    secret: &str,
    in_params: bool,
    absolute: bool,
    body: String,
) -> Result<Request<Full<Bytes>>, String> {
    let uri = &cfg.token_url;
    let target: Uri = if absolute {
        uri.clone()
    } else {
        uri.path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| format!("bad token_url path: {e}"))?
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(target)
        .header(
            http::header::HOST,
            uri.authority().map_or("", |a| a.as_str()),
        )
        .header(http::header::USER_AGENT, super::USER_AGENT)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::CONNECTION, "close");
    if !in_params {
        let basic = format!(
            "Basic {}",
            super::base64(
                format!("{}:{}", query_escape(&cfg.client_id), query_escape(secret)).as_bytes()
            )
        );
        let value = HeaderValue::from_str(&basic).map_err(|e| format!("bad credentials: {e}"))?;
        builder = builder.header(http::header::AUTHORIZATION, value);
    }
    if absolute {
        let proxy = proxy::proxy_for(
            &cfg.proxy,
            false,
            crate::target::url_host(uri),
            uri.port_u16().unwrap_or(80),
        )
        .ok()
        .flatten();
        if let Some(auth) = proxy.and_then(|p| p.authorization) {
            builder = builder.header(http::header::PROXY_AUTHORIZATION, auth);
        }
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad token request: {e}"))
}

/// Reads a token answer as x/oauth2 does.
fn parse_token(content_type: &str, body: &[u8]) -> Result<Token, String> {
    let (access, kind, expires_in) = match content_type {
        "application/x-www-form-urlencoded" | "text/plain" => {
            let text = String::from_utf8_lossy(body);
            let mut fields: HashMap<String, String> = HashMap::new();
            for pair in text.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                fields
                    .entry(form_unescape(k))
                    .or_insert_with(|| form_unescape(v));
            }
            let expires = fields
                .get("expires_in")
                .and_then(|e| e.parse::<i64>().ok())
                .unwrap_or(0);
            (
                fields.get("access_token").cloned().unwrap_or_default(),
                fields.get("token_type").cloned().unwrap_or_default(),
                expires,
            )
        }
        _ => {
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| format!("the token response is not JSON: {e}"))?;
            let text = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_string();
            let expires = match v.get("expires_in") {
                Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(0),
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                _ => 0,
            };
            (text("access_token"), text("token_type"), expires)
        }
    };
    if access.is_empty() {
        return Err("server response missing access_token".into());
    }
    let kind = match kind.to_ascii_lowercase().as_str() {
        "" | "bearer" => "Bearer".to_string(),
        "mac" => "MAC".to_string(),
        "basic" => "Basic".to_string(),
        _ => kind,
    };
    let good_for = if expires_in > 0 {
        Duration::from_secs(expires_in.unsigned_abs()).saturating_sub(EXPIRY_MARGIN)
    } else {
        NO_EXPIRY_REUSE
    };
    Ok(Token {
        header: format!("{kind} {access}"),
        good_until: Instant::now() + good_for,
    })
}

/// Undoes form encoding (`+` is a space); a bad escape leaves the text as written.
fn form_unescape(s: &str) -> String {
    crate::config::unescape(s, true).unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OAuth2 {
        OAuth2 {
            client_id: "my id".into(),
            client_secret: "s&c".into(),
            client_secret_file: None,
            scopes: vec!["read".into(), "write".into()],
            token_url: "http://127.0.0.1:1/token".parse().expect("uri"),
            endpoint_params: BTreeMap::from([("audience".into(), "api".into())]),
            tls_config: Default::default(),
            proxy: Default::default(),
        }
    }

    #[test]
    fn forms_as_x_oauth2() {
        assert_eq!(
            form(&cfg(), "s&c", false).expect("form"),
            "audience=api&grant_type=client_credentials&scope=read+write"
        );
        assert_eq!(
            form(&cfg(), "s&c", true).expect("form"),
            "audience=api&client_id=my+id&client_secret=s%26c&grant_type=client_credentials&scope=read+write"
        );
        let mut c = cfg();
        c.endpoint_params.insert("scope".into(), "x".into());
        assert!(form(&c, "", false).is_err());
        c.endpoint_params = BTreeMap::from([("grant_type".into(), "other".into())]);
        assert!(
            form(&c, "", false)
                .expect("form")
                .contains("grant_type=other")
        );
    }

    #[test]
    fn token_answers_parse() {
        let t = parse_token(
            "application/json",
            br#"{"access_token":"abc","token_type":"bearer","expires_in":3600}"#,
        )
        .expect("json");
        assert_eq!(t.header, "Bearer abc");
        assert!(t.good_until > Instant::now() + Duration::from_secs(3500));
        let t = parse_token("text/plain", b"access_token=a%20b&token_type=mac").expect("form");
        assert_eq!(t.header, "MAC a b");
        assert!(parse_token("application/json", br#"{"token_type":"bearer"}"#).is_err());
        assert!(parse_token("application/json", b"<html>").is_err());
    }
}
