//! The HTTP prober.
//!
//! It owns the connection so that blackbox_exporter's phases are measured exactly:
//! `resolve` (timed lookup; literal addresses skip it), `connect` (TCP), `tls` (rustls
//! handshake), `processing` (connection ready → first byte of the response, seen by a
//! wrapper around the socket) and `transfer` (first response byte → end of body).
//! Redirects (301, 302, 303, 307, 308) are followed by hand, at most `--probe.max-redirects`
//! (10), each on a new connection, and every phase is summed over them. As Go's client in
//! blackbox_exporter, the redirect not followed (`follow_redirects: false`, or one past the
//! limit) counts in `probe_http_redirects` and is the response judged, its body unread.
//! The response head is bounded by `--probe.max-response-header-bytes` (64 KiB; the header
//! list size over HTTP/2) and `--probe.max-response-header-fields` (100, HTTP/1); see
//! [`crate::limits`]. HTTP/2 is used when TLS ALPN negotiates it (and `enable_http2` is not
//! false); cleartext is HTTP/1.1, sent as Go's client sends it: `Connection: close` (keep-alive
//! is off in blackbox_exporter) and header names in canonical `Title-Case`.
//!
//! The body is counted and discarded as it arrives, decoded per `compression` (which sends
//! no `Accept-Encoding` of its own, as blackbox_exporter); it is kept only for the
//! `fail_if_body_*` regexps and CEL expressions ([`cel`]). See [`body`] for `body_size_limit`
//! (unlimited unless set, as in blackbox_exporter) and the bound on a body they need.

mod body;
mod cel;
mod dial;
mod headers;
mod oauth2;
mod proxy;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Failure, HttpObservation, ProbeRequest, Recorder, reason, tls};
use crate::config::HttpProbe;

const PHASES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];
const USER_AGENT: &str = concat!("Lookout/", env!("CARGO_PKG_VERSION"));

const H_DURATION: &str = "Duration of http request by phase, summed over all redirects";
const H_CONTENT_LENGTH: &str = "Length of http content response";
const H_UNCOMPRESSED: &str = "Length of uncompressed response body";
const H_REDIRECTS: &str = "The number of redirects";
const H_SSL: &str = "Indicates if SSL was used for the final redirect";
const H_STATUS: &str = "Response HTTP status code";
const H_VERSION: &str = "Returns the version of HTTP of the probe response";
const H_REGEX: &str = "Indicates if probe failed due to regex";
const H_LAST_MODIFIED: &str = "Returns the Last-Modified HTTP response header in unixtime";

/// Phase times summed over redirects.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    /// Whether the target was resolved: blackbox_exporter publishes the phases other than
    /// `resolve` only from then on.
    resolved: bool,
    /// With `skip_resolve_phase_with_proxy` blackbox_exporter has no `resolve` phase until
    /// a redirect (whose lookup it adds).
    hide_resolve: bool,
    resolve: Duration,
    connect: Duration,
    tls: Duration,
    processing: Duration,
    transfer: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.resolve + self.connect + self.tls + self.processing + self.transfer
    }

    fn publish(&self, rec: &mut Recorder) {
        let shown = if self.resolved { PHASES.len() } else { 1 };
        let hidden = usize::from(self.hide_resolve);
        for (phase, d) in PHASES
            .iter()
            .take(shown)
            .zip([
                self.resolve,
                self.connect,
                self.tls,
                self.processing,
                self.transfer,
            ])
            .skip(hidden)
        {
            rec.set_labeled(
                "probe_http_duration_seconds",
                H_DURATION,
                &[("phase", phase)],
                d.as_secs_f64(),
            );
        }
        let status = rec.http.as_ref().map_or(0, |h| h.status);
        rec.http = Some(HttpObservation {
            duration: self.total(),
            status,
        });
    }
}

/// One response with what the probe needs to judge it.
struct Hop {
    response: Response<Incoming>,
    /// The method of the request it answers.
    method: Method,
    tls: bool,
    /// When the first byte of the response arrived (the end of `processing`).
    first_byte: Instant,
}

/// Probes an HTTP(S) URL (`http://` is assumed when the target has no scheme).
///
/// The metrics are those of blackbox_exporter's `ProbeHTTP`: the duration phases other than
/// `resolve` appear once the target is resolved, and a request that ends without a response
/// (refused, TLS error, timeout; also after redirects) reports status code 0.
pub async fn probe_http(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.http;
    rec.http = Some(HttpObservation::default());
    for (name, help) in [
        ("probe_http_content_length", H_CONTENT_LENGTH),
        ("probe_http_uncompressed_body_length", H_UNCOMPRESSED),
        ("probe_http_redirects", H_REDIRECTS),
        ("probe_http_ssl", H_SSL),
        ("probe_http_status_code", H_STATUS),
        ("probe_http_version", H_VERSION),
        ("probe_failed_due_to_regex", H_REGEX),
    ] {
        rec.set(name, help, 0.0);
    }
    if cel::configured(cfg) {
        rec.set(cel::METRIC, cel::HELP, 0.0);
    }
    let deadline = Instant::now() + req.timeout;

    let uri: Uri = crate::target::http_url(req.target)?;
    let body = match &cfg.body_file {
        Some(path) => read_body_file(path).await?,
        None => Bytes::from(cfg.body.clone()),
    };
    let method = Method::from_bytes(cfg.method.as_bytes()).map_err(|e| {
        Failure::new(
            reason::HTTP_REQUEST,
            format!("invalid method {:?}: {e}", cfg.method),
        )
    })?;
    let out = Outgoing {
        method,
        body,
        cookies: Vec::new(),
        referer: None,
    };
    let mut phases = Phases::default();
    let (hop, unfollowed) = follow_redirects(req, rec, uri, out, &mut phases).await?;
    judge(req, rec, hop, unfollowed, &mut phases, deadline).await
}

/// Why the last response of a chain is a redirect that was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unfollowed {
    /// `follow_redirects: false`.
    Disabled,
    /// One more than `--probe.max-redirects`.
    Limit(u32),
}

/// Sends the request and follows redirects as Go's client in blackbox_exporter does: every
/// redirect response counts in `probe_http_redirects`, the one it does not follow too (so
/// `follow_redirects: false` on a 302 reports 1, and a loop reports the limit + 1 with the
/// last redirect as the response).
async fn follow_redirects(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    mut uri: Uri,
    mut out: Outgoing,
    phases: &mut Phases,
) -> Result<(Hop, Option<Unfollowed>), Failure> {
    let cfg = &req.module.http;
    let mut redirects = 0u32;
    let mut first = true;
    loop {
        let hop = one_hop(req, rec, &uri, &out, first, phases).await?;
        first = false;
        let status = hop.response.status();
        let host = crate::target::url_host(&uri).to_string();
        remember_cookies(&mut out.cookies, &host, hop.response.headers());
        let location = hop
            .response
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| is_redirect) else {
            return Ok((hop, None));
        };
        redirects = redirects.saturating_add(1);
        rec.set("probe_http_redirects", H_REDIRECTS, f64::from(redirects));
        rec.log(format!("Received redirect: location={location}"));
        if !cfg.follow_redirects {
            rec.log("Not following redirect: follow_redirects is false");
            return Ok((hop, Some(Unfollowed::Disabled)));
        }
        let max = req.limits.max_redirects;
        if redirects > max {
            rec.log(format!(
                "Not following redirect: the limit of {max} redirects (--probe.max-redirects) was reached"
            ));
            return Ok((hop, Some(Unfollowed::Limit(max))));
        }
        let next = join_location(&uri, &location).map_err(|e| {
            Failure::new(
                reason::HTTP_REQUEST,
                format!("bad redirect Location {location:?}: {e}"),
            )
        })?;
        // As Go's client: 303, and 301/302 of anything but GET/HEAD, become GET.
        if status == StatusCode::SEE_OTHER
            || (matches!(status.as_u16(), 301 | 302)
                && out.method != Method::GET
                && out.method != Method::HEAD)
        {
            out.method = Method::GET;
            out.body = Bytes::new();
        }
        // As Go's client: the URL redirected from is the Referer, unless HTTPS → HTTP.
        out.referer = (uri.scheme_str() != Some("https") || next.scheme_str() != Some("http"))
            .then(|| uri.to_string());
        uri = next;
    }
}

/// Records the final response and judges it in blackbox_exporter's order: status code,
/// header regexps, body regexps, body CEL expressions, body read errors, HTTP version, SSL.
async fn judge(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    hop: Hop,
    unfollowed: Option<Unfollowed>,
    phases: &mut Phases,
    deadline: Instant,
) -> Result<(), Failure> {
    let cfg = &req.module.http;
    let status = hop.response.status();
    let version = hop.response.version();
    let headers = hop.response.headers().clone();
    record_response(rec, &hop);

    // A redirect that is not followed ends Go's request with an error: blackbox_exporter
    // does not read its body (length 0), and a body regexp cannot match it.
    let has_regexps = !cfg.fail_if_body_matches_regexp.is_empty()
        || !cfg.fail_if_body_not_matches_regexp.is_empty();
    let needs_body = has_regexps || cel::configured(cfg);
    let mut body = if unfollowed.is_some() {
        drop(hop.response);
        body::Body {
            error: Some(Failure::new(
                reason::BODY_REGEX,
                "the body of a redirect that is not followed is not read",
            )),
            ..body::Body::default()
        }
    } else {
        let body = body::read(
            hop.response.into_body(),
            cfg,
            needs_body,
            req.limits.max_regexp_body_bytes,
        )
        .await;
        phases.transfer += hop.first_byte.elapsed();
        body
    };
    phases.publish(rec);
    rec.set(
        "probe_http_uncompressed_body_length",
        H_UNCOMPRESSED,
        body.len as f64,
    );

    if !status_ok(cfg, status) {
        return Err(match unfollowed {
            Some(Unfollowed::Limit(max)) => Failure::new(
                reason::TOO_MANY_REDIRECTS,
                format!(
                    "stopped after {max} redirects: the limit of {max} redirects \
                     (--probe.max-redirects) was reached"
                ),
            ),
            _ => invalid_status(status),
        });
    }
    check_headers(cfg, &headers, rec)?;
    // blackbox_exporter fails before its body regexps when the decoder cannot start (a bad
    // gzip header: nothing decoded); a body that breaks later fails the regexp check.
    let undecodable = body
        .error
        .as_ref()
        .is_some_and(|f| f.reason == reason::DECOMPRESSION && body.len == 0);
    if needs_body && !undecodable {
        match body.text.take() {
            Some(text) if body.error.is_none() => {
                check_body(cfg, &text, rec)?;
                cel::check(cfg, text, deadline, rec).await?;
            }
            // blackbox_exporter reads the body for its regexps first: a read error fails
            // them, and the CEL expressions are then not evaluated.
            _ if has_regexps => rec.set("probe_failed_due_to_regex", H_REGEX, 1.0),
            _ => rec.set(cel::METRIC, cel::HELP, 1.0),
        }
    }
    if let Some(failure) = body.error.filter(|_| unfollowed.is_none() || needs_body) {
        return Err(failure);
    }
    check_version(cfg, version)?;
    if hop.tls && cfg.fail_if_ssl {
        return Err(Failure::new(
            reason::SSL_FORBIDDEN,
            "final request was over SSL",
        ));
    }
    if !hop.tls && cfg.fail_if_not_ssl {
        return Err(Failure::new(
            reason::SSL_REQUIRED,
            "final request was not over SSL",
        ));
    }
    Ok(())
}

/// Records what the final response says of itself: status code, content length, SSL,
/// Last-Modified and HTTP version.
fn record_response(rec: &mut Recorder, hop: &Hop) {
    let status = hop.response.status();
    let headers = hop.response.headers();
    if let Some(h) = rec.http.as_mut() {
        h.status = status.as_u16();
    }
    rec.set(
        "probe_http_status_code",
        H_STATUS,
        f64::from(status.as_u16()),
    );
    rec.log(format!(
        "Received HTTP response: status_code={}",
        status.as_u16()
    ));
    rec.set(
        "probe_http_content_length",
        H_CONTENT_LENGTH,
        content_length(&hop.method, status, hop.response.version(), headers),
    );
    rec.set("probe_http_ssl", H_SSL, if hop.tls { 1.0 } else { 0.0 });
    if let Some(ts) = headers
        .get(http::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    {
        rec.set(
            "probe_http_last_modified_timestamp_seconds",
            H_LAST_MODIFIED,
            ts as f64,
        );
    }
    let version_number = match hop.response.version() {
        Version::HTTP_09 => 0.9,
        Version::HTTP_10 => 1.0,
        Version::HTTP_11 => 1.1,
        Version::HTTP_2 => 2.0,
        Version::HTTP_3 => 3.0,
        _ => 0.0,
    };
    rec.set("probe_http_version", H_VERSION, version_number);
}

/// `probe_http_content_length` as Go's client sets `Response.ContentLength`: the
/// Content-Length of a HEAD response (-1 without one); 0 for an HTTP/1 status that has no
/// body (1xx, 204, 304); -1 for a chunked or unsized body.
fn content_length(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> f64 {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(-1.0, |n| n as f64);
    if *method == Method::HEAD || version == Version::HTTP_2 {
        return declared;
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return 0.0;
    }
    if version != Version::HTTP_10 && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return -1.0;
    }
    declared
}

fn check_version(cfg: &HttpProbe, version: Version) -> Result<(), Failure> {
    if cfg.valid_http_versions.is_empty() {
        return Ok(());
    }
    let proto = match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/0.9",
    };
    let ok = cfg
        .valid_http_versions
        .iter()
        .any(|v| v == proto || format!("{v}.0") == proto);
    if ok {
        Ok(())
    } else {
        Err(Failure::new(
            reason::INVALID_HTTP_VERSION,
            format!("invalid HTTP version number: {proto}"),
        ))
    }
}

fn status_ok(cfg: &HttpProbe, status: StatusCode) -> bool {
    if cfg.valid_status_codes.is_empty() {
        status.is_success()
    } else {
        cfg.valid_status_codes.contains(&status.as_u16())
    }
}

fn invalid_status(status: StatusCode) -> Failure {
    Failure::new(
        reason::INVALID_STATUS_CODE,
        format!("invalid HTTP response status code {}", status.as_u16()),
    )
}

fn check_body(cfg: &HttpProbe, body: &[u8], rec: &mut Recorder) -> Result<(), Failure> {
    if cfg.fail_if_body_matches_regexp.is_empty() && cfg.fail_if_body_not_matches_regexp.is_empty()
    {
        return Ok(());
    }
    let text = String::from_utf8_lossy(body);
    for re in &cfg.fail_if_body_matches_regexp {
        if re.is_match(&text) {
            rec.set("probe_failed_due_to_regex", H_REGEX, 1.0);
            return Err(Failure::new(
                reason::BODY_REGEX,
                format!("body matched regular expression {:?}", re.as_str()),
            ));
        }
    }
    for re in &cfg.fail_if_body_not_matches_regexp {
        if !re.is_match(&text) {
            rec.set("probe_failed_due_to_regex", H_REGEX, 1.0);
            return Err(Failure::new(
                reason::BODY_REGEX,
                format!("body did not match regular expression {:?}", re.as_str()),
            ));
        }
    }
    Ok(())
}

fn check_headers(cfg: &HttpProbe, headers: &HeaderMap, rec: &mut Recorder) -> Result<(), Failure> {
    let mut fail = |message: String| {
        rec.set("probe_failed_due_to_regex", H_REGEX, 1.0);
        Err(Failure::new(reason::HEADER_REGEX, message))
    };
    for m in &cfg.fail_if_header_matches {
        let values: Vec<String> = headers
            .get_all(m.header.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if values.is_empty() {
            if m.allow_missing {
                continue;
            }
            return fail(format!("missing required header {:?}", m.header));
        }
        if let Some(v) = values.iter().find(|v| m.regexp.is_match(v)) {
            return fail(format!(
                "header {:?} value {v:?} matched regular expression {:?}",
                m.header,
                m.regexp.as_str()
            ));
        }
    }
    for m in &cfg.fail_if_header_not_matches {
        let values: Vec<String> = headers
            .get_all(m.header.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if values.is_empty() {
            if m.allow_missing {
                continue;
            }
            return fail(format!("missing required header {:?}", m.header));
        }
        if !values.iter().any(|v| m.regexp.is_match(v)) {
            return fail(format!(
                "header {:?} did not match regular expression {:?}",
                m.header,
                m.regexp.as_str()
            ));
        }
    }
    Ok(())
}

/// What each request of a redirect chain sends.
struct Outgoing {
    method: Method,
    body: Bytes,
    /// Cookies set along the redirect chain: (host, name, value). Like Go's cookie jar in
    /// blackbox_exporter, they go back to the host that set them (path, expiry and domain
    /// attributes are not interpreted).
    cookies: Vec<(String, String, String)>,
    /// The URL of the redirect followed to this request.
    referer: Option<String>,
}

/// Keeps the `Set-Cookie` name=value pairs of a response from `host`.
fn remember_cookies(jar: &mut Vec<(String, String, String)>, host: &str, headers: &HeaderMap) {
    for value in headers.get_all(http::header::SET_COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        let pair = value.split(';').next().unwrap_or("");
        let Some((name, val)) = pair.split_once('=') else {
            continue;
        };
        let name = name.trim().to_string();
        jar.retain(|(h, n, _)| !(h == host && *n == name));
        jar.push((host.to_string(), name, val.trim().to_string()));
    }
}

/// Connects, sends one request and waits for the response head, adding to the phases.
async fn one_hop(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    uri: &Uri,
    out: &Outgoing,
    first: bool,
    phases: &mut Phases,
) -> Result<Hop, Failure> {
    let cfg = &req.module.http;
    let (https, host, port) = hop_target(uri)?;

    let dialed = dial::dial(req, rec, uri, https, &host, port, first, phases).await?;
    let tcp = dialed.tcp;
    let auth = match &cfg.oauth2 {
        Some(o) => Some(oauth2::authorization(o, req.timeout, req.limits).await?),
        None => authorization(cfg)?,
    };

    // Host header: ?hostname= (first hop), a configured Host header, or the URL's authority.
    let configured_host = cfg
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let host_header = match (first.then_some(req.hostname).flatten(), &configured_host) {
        (Some(h), _) => h.to_string(),
        (None, Some(h)) => h.clone(),
        (None, None) => uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_string()),
    };

    let mut request = build_request(cfg, uri, out, &host, &host_header, auth, rec)?;
    headers::add_http_headers(cfg, request.headers_mut())?;
    if https {
        // TLS server name: server_name, else the Host header (without port), else the host.
        let sni_default = if configured_host.is_some() || (first && req.hostname.is_some()) {
            strip_port(&host_header)
        } else {
            host.clone()
        };
        let alpn: &[&[u8]] = if cfg.enable_http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        let config = tls::client_config(&cfg.tls_config, alpn)?;
        let name = tls::server_name(&cfg.tls_config, &sni_default)?;
        let start = Instant::now();
        let stream = tls::handshake(tcp, config, name).await;
        phases.tls += start.elapsed();
        phases.publish(rec);
        let stream = stream?;
        let (_, conn) = stream.get_ref();
        tls::record_connection_state(rec, conn, !cfg.tls_config.insecure_skip_verify);
        let h2 = conn.alpn_protocol() == Some(b"h2");
        let (response, first_byte) = send(stream, h2, false, request, req, phases, rec).await?;
        Ok(Hop {
            response,
            method: out.method.clone(),
            tls: true,
            first_byte,
        })
    } else {
        let absolute = dialed.forward.is_some();
        if let Some((wire, proxy_auth)) = dialed.forward {
            // Through a proxy: the request line carries the absolute URL.
            *request.uri_mut() = wire;
            if let Some(a) = proxy_auth {
                let value = HeaderValue::from_str(&a).map_err(|e| {
                    Failure::new(reason::PROXY, format!("invalid proxy credentials: {e}"))
                })?;
                request
                    .headers_mut()
                    .insert(http::header::PROXY_AUTHORIZATION, value);
            }
        }
        let (response, first_byte) = send(tcp, false, absolute, request, req, phases, rec).await?;
        Ok(Hop {
            response,
            method: out.method.clone(),
            tls: false,
            first_byte,
        })
    }
}

/// Whether `uri` is HTTPS, its host and its port (the scheme's default if it has none).
fn hop_target(uri: &Uri) -> Result<(bool, String, u16), Failure> {
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            return Err(Failure::new(
                reason::INVALID_TARGET,
                format!("unsupported URL scheme {:?} in {uri}", other.unwrap_or("")),
            ));
        }
    };
    let host = crate::target::url_host(uri).to_string();
    if host.is_empty() {
        return Err(Failure::new(
            reason::INVALID_TARGET,
            format!("URL {uri} has no host"),
        ));
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((https, host, port))
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

fn build_request(
    cfg: &HttpProbe,
    uri: &Uri,
    out: &Outgoing,
    host: &str,
    host_header: &str,
    auth: Option<String>,
    rec: &mut Recorder,
) -> Result<Request<Full<Bytes>>, Failure> {
    let (method, body) = (&out.method, &out.body);
    let bad = |e: String| Failure::new(reason::HTTP_REQUEST, e);
    let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
    let headers = builder
        .headers_mut()
        .ok_or_else(|| bad(format!("invalid request for {uri}")))?;
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(host_header)
            .map_err(|e| bad(format!("invalid Host {host_header:?}: {e}")))?,
    );
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(USER_AGENT),
    );
    let cookies: Vec<String> = out
        .cookies
        .iter()
        .filter(|(h, _, _)| h == host)
        .map(|(_, n, v)| format!("{n}={v}"))
        .collect();
    if !cookies.is_empty() {
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&cookies.join("; "))
                .map_err(|e| bad(format!("invalid cookie: {e}")))?,
        );
    }
    if let Some(referer) = out
        .referer
        .as_deref()
        .and_then(|r| HeaderValue::from_str(r).ok())
    {
        headers.insert(http::header::REFERER, referer);
    }
    if let Some(auth) = auth {
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&auth).map_err(|e| bad(format!("invalid credentials: {e}")))?,
        );
    }
    for (name, value) in &cfg.headers {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| bad(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| bad(format!("invalid header value {value:?}: {e}")))?;
        headers.insert(name, value);
    }
    // blackbox_exporter's client disables keep-alive, so Go sends this on HTTP/1 (it is
    // dropped for HTTP/2, which has no such header).
    headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    rec.log(format!(
        "Making HTTP request: method={method} url={uri} host={host_header}"
    ));
    builder
        .body(Full::new(body.clone()))
        .map_err(|e| bad(format!("invalid request: {e}")))
}

/// Largest `body_file` read (16 MiB); it is read at every probe.
const MAX_BODY_FILE_BYTES: u64 = 16 << 20;
/// Largest `username_file`, `password_file`, `credentials_file` or `bearer_token_file`
/// read (64 KiB).
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Reads `body_file` (at most [`MAX_BODY_FILE_BYTES`]) on a blocking thread, so a slow
/// disk does not hold up the other probes on the runtime.
async fn read_body_file(path: &std::path::Path) -> Result<Bytes, Failure> {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || {
        tls::read_setting_file(&owned, "body_file", MAX_BODY_FILE_BYTES)
    })
    .await
    .map_err(|e| format!("cannot read body_file {}: {e}", path.display()))
    .and_then(|r| r);
    read.map(Bytes::from)
        .map_err(|message| Failure::new(reason::HTTP_REQUEST, message))
}

/// Reads a secret file that `setting` names (at most [`MAX_SECRET_FILE_BYTES`]), without
/// surrounding white space.
pub(super) fn read_secret(path: &std::path::Path, setting: &str) -> Result<String, Failure> {
    let fail = |message| Failure::new(reason::HTTP_REQUEST, message);
    let bytes = tls::read_setting_file(path, setting, MAX_SECRET_FILE_BYTES).map_err(fail)?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|e| {
            fail(format!(
                "cannot read {setting} {}: not UTF-8 text: {e}",
                path.display()
            ))
        })
}

fn authorization(cfg: &HttpProbe) -> Result<Option<String>, Failure> {
    if let Some(header) = client_authorization(cfg.basic_auth.as_ref(), cfg.authorization.as_ref())?
    {
        return Ok(Some(header));
    }
    if let Some(p) = &cfg.bearer_token_file {
        return Ok(Some(format!(
            "Bearer {}",
            read_secret(p, "bearer_token_file")?
        )));
    }
    Ok(cfg.bearer_token.as_ref().map(|t| format!("Bearer {t}")))
}

/// The `Authorization` header of `basic_auth` or `authorization` (secret files read now),
/// shared with the WebSocket prober's `http_config`.
pub(super) fn client_authorization(
    basic_auth: Option<&crate::config::BasicAuth>,
    authorization: Option<&crate::config::Authorization>,
) -> Result<Option<String>, Failure> {
    if let Some(b) = basic_auth {
        let user = match &b.username_file {
            Some(p) => read_secret(p, "username_file")?,
            None => b.username.clone(),
        };
        let password = match &b.password_file {
            Some(p) => read_secret(p, "password_file")?,
            None => b.password.clone(),
        };
        return Ok(Some(format!(
            "Basic {}",
            base64(format!("{user}:{password}").as_bytes())
        )));
    }
    if let Some(a) = authorization {
        let credentials = match &a.credentials_file {
            Some(p) => read_secret(p, "credentials_file")?,
            None => a.credentials.clone(),
        };
        return Ok(Some(format!("{} {credentials}", a.kind)));
    }
    Ok(None)
}

/// Standard base64 with padding (basic authentication).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs the HTTP exchange on `io` under the request's deadline and response head limits;
/// `absolute` keeps the absolute URL in the HTTP/1 request line (to a proxy).
/// `processing` runs from the connection being ready to the first byte of the response
/// (Go's `GotConn` → `GotFirstResponseByte`, as blackbox_exporter measures it); returns the
/// response and when that first byte came.
async fn send<IO>(
    io: IO,
    h2: bool,
    absolute: bool,
    mut request: Request<Full<Bytes>>,
    req: &ProbeRequest<'_>,
    phases: &mut Phases,
    rec: &mut Recorder,
) -> Result<(Response<Incoming>, Instant), Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = req.timeout;
    let max_bytes = req.limits.max_response_header_bytes;
    let max_fields = req.limits.max_response_header_fields;
    let protocol_error = |e: hyper::Error| protocol_failure(&e, h2, max_bytes, max_fields);
    let first_byte = Arc::new(FirstByte::default());
    let io = TokioIo::new(TimedIo {
        inner: io,
        first_byte: first_byte.clone(),
    });
    let start = Instant::now();
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Limits::validate keeps the limit within u32; saturate rather than wrap anyway.
            .max_header_list_size(u32::try_from(max_bytes).unwrap_or(u32::MAX))
            .handshake(io)
            .await
            .map_err(protocol_error)?;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(deadline, conn).await;
        });
        // HTTP/2 has no connection-specific headers.
        request.headers_mut().remove(http::header::CONNECTION);
        // HTTP/2 carries the authority in :authority, not Host.
        if let Some(host) = request.headers_mut().remove(http::header::HOST) {
            if request.uri().authority().is_none() {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        // Bytes of the HTTP/2 handshake are not the response.
        first_byte.arm();
        sender.send_request(request).await.map_err(protocol_error)
    } else {
        // The read buffer is capped at the head limit too, so a huge head is never buffered
        // past it. hyper panics on a buffer under 8 KiB: Limits::validate refuses such a
        // limit at start-up, and the `max` keeps this call safe for any caller.
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            // Go writes canonical header names (`X-Custom`); some servers care.
            .title_case_headers(true)
            .max_headers(max_fields)
            .max_header_size(max_bytes)
            .max_buf_size(max_bytes.max(crate::limits::MIN_RESPONSE_HEADER_BYTES))
            .handshake(io)
            .await
            .map_err(protocol_error)?;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(deadline, conn).await;
        });
        // HTTP/1.1 request line in origin form, but in absolute form to a proxy.
        if !absolute {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            *request.uri_mut() = path.parse().map_err(|e| {
                Failure::new(
                    reason::INVALID_TARGET,
                    format!("invalid request path {path:?}: {e}"),
                )
            })?;
        }
        first_byte.arm();
        sender.send_request(request).await.map_err(protocol_error)
    };
    let now = Instant::now();
    let first = first_byte.get().unwrap_or(now).min(now);
    phases.processing += first.saturating_duration_since(start);
    phases.publish(rec);
    response.map(|r| (r, first))
}

/// A failed HTTP exchange as a probe failure: a response head over the limits names their
/// flags; any other error carries hyper's chain of causes.
fn protocol_failure(e: &hyper::Error, h2: bool, max_bytes: usize, max_fields: usize) -> Failure {
    if e.is_parse_too_large() {
        return Failure::new(
            reason::HEADERS_TOO_LARGE,
            format!(
                "HTTP request failed: the response head exceeds the limit of {max_bytes} \
                 bytes (--probe.max-response-header-bytes) or {max_fields} header fields \
                 (--probe.max-response-header-fields) ({e})"
            ),
        );
    }
    // hyper's own text for HTTP/2 is just "http2 error"; the cause is in its source.
    let mut message = format!("HTTP request failed: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // h2 answers a header list over the limit with a stream PROTOCOL_ERROR that looks like
    // any other malformed response, so it cannot be told apart: say so.
    if h2 && message.contains("protocol error") {
        message.push_str(&format!(
            " (a response header list over the limit of {max_bytes} bytes \
             (--probe.max-response-header-bytes) also ends this way)"
        ));
    }
    Failure::new(reason::HTTP_REQUEST, message)
}

/// Records when the first byte arrives after [`FirstByte::arm`].
#[derive(Debug, Default)]
struct FirstByte {
    armed: AtomicBool,
    at: OnceLock<Instant>,
}

impl FirstByte {
    fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<Instant> {
        self.at.get().copied()
    }
}

/// A connection that notes the arrival of the response's first byte.
struct TimedIo<IO> {
    inner: IO,
    first_byte: Arc<FirstByte>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for TimedIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(())))
            && buf.filled().len() > before
            && self.first_byte.armed.load(Ordering::Acquire)
        {
            let _ = self.first_byte.at.set(Instant::now());
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for TimedIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Resolves a `Location` header against the URL it came from.
fn join_location(base: &Uri, location: &str) -> Result<Uri, String> {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let joined = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{scheme}://{authority}{dir}/{location}")
    };
    joined.parse::<Uri>().map_err(|e| e.to_string())
}

/// Parses an HTTP date (IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if *zone != "GMT" && *zone != "UTC" {
        return None;
    }
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn locations_join() {
        let base: Uri = "http://h:8080/a/b?x=1".parse().expect("uri");
        let j = |l| join_location(&base, l).expect("joins").to_string();
        assert_eq!(j("/c"), "http://h:8080/c");
        assert_eq!(j("c"), "http://h:8080/a/c");
        assert_eq!(j("https://o/p"), "https://o/p");
        assert_eq!(j("//o/p"), "http://o/p");
        assert_eq!(j("?y=2"), "http://h:8080/a/b?y=2");
    }

    /// A file of `len` bytes that takes no disk space (its content is never read).
    fn sparse_file(dir: &std::path::Path, name: &str, len: u64) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(len))
            .expect("sparse file");
        path
    }

    #[test]
    fn secret_files_over_64_kib_are_refused_naming_setting_file_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = sparse_file(dir.path(), "huge.log", MAX_SECRET_FILE_BYTES + 1);
        let cfg = HttpProbe {
            basic_auth: Some(crate::config::BasicAuth {
                username: "u".into(),
                password_file: Some(big.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = authorization(&cfg).expect_err("over the limit");
        assert_eq!(err.reason, reason::HTTP_REQUEST);
        assert!(
            err.message.contains(&format!(
                "cannot read password_file {}: the file is larger than the 65536-byte limit on password_file",
                big.display()
            )),
            "{err}"
        );

        let cfg = HttpProbe {
            bearer_token_file: Some(big.clone()),
            ..Default::default()
        };
        let err = authorization(&cfg).expect_err("over the limit");
        assert!(
            err.message.contains("bearer_token_file") && err.message.contains("65536-byte"),
            "{err}"
        );

        let cfg = HttpProbe {
            bearer_token_file: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = authorization(&cfg).expect_err("a directory");
        assert!(err.message.ends_with("is not a regular file"), "{err}");

        // A secret of exactly the limit is read, without its trailing newline.
        let token = dir.path().join("token");
        let mut text = "t".repeat(MAX_SECRET_FILE_BYTES as usize - 1);
        text.push('\n');
        std::fs::write(&token, &text).expect("write");
        let cfg = HttpProbe {
            authorization: Some(crate::config::Authorization {
                credentials_file: Some(token),
                ..Default::default()
            }),
            ..Default::default()
        };
        let header = authorization(&cfg).expect("read").expect("header");
        assert_eq!(header, format!("Bearer {}", text.trim_end()));
    }

    #[tokio::test]
    async fn body_files_over_16_mib_are_refused_and_smaller_ones_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = sparse_file(dir.path(), "huge.bin", MAX_BODY_FILE_BYTES + 1);
        let err = read_body_file(&big).await.expect_err("over the limit");
        assert_eq!(err.reason, reason::HTTP_REQUEST);
        assert!(
            err.message.contains(&format!(
                "cannot read body_file {}: the file is larger than the 16777216-byte limit on body_file",
                big.display()
            )),
            "{err}"
        );
        let small = dir.path().join("body.json");
        std::fs::write(&small, b"{\"ping\":1}").expect("write");
        assert_eq!(
            read_body_file(&small).await.expect("read"),
            Bytes::from_static(b"{\"ping\":1}")
        );
        let err = read_body_file(&dir.path().join("missing"))
            .await
            .expect_err("missing");
        assert!(err.message.starts_with("cannot read body_file "), "{err}");
    }
}
