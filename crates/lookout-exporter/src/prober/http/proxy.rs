//! HTTP proxies, as Go's transport uses them in blackbox_exporter.
//!
//! Which proxy a request takes: with `proxy_url` alone, every request goes through it
//! (Go's `http.ProxyURL`, loopback targets included). With `no_proxy`, or with
//! `proxy_from_environment` (`HTTP_PROXY`/`http_proxy` for `http://` URLs,
//! `HTTPS_PROXY`/`https_proxy` for `https://`, `NO_PROXY`/`no_proxy`, read at every probe),
//! the rules are those of Go's `x/net/http/httpproxy`: `localhost` and loopback addresses are
//! never proxied; `*` matches everything; an entry is an IP or CIDR (matching literal IP
//! targets), or a domain (`example.com` and `.example.com` both match the domain's
//! subdomains, and the first also the name itself), optionally with `:port`.
//!
//! How: an `http://` target is asked of the proxy in absolute form
//! (`GET http://host/path HTTP/1.1`), with `Proxy-Authorization` from the proxy URL's user
//! information; an `https://` target is reached through a `CONNECT host:port` tunnel
//! (`Proxy-Authorization` from the URL, then `proxy_connect_header`), and TLS to the target
//! runs inside it. The proxy's `CONNECT` answer must be `200` (as Go) and its head is bounded
//! by `--probe.max-response-header-bytes`; the time is the probe's deadline. Connecting to the
//! proxy and the `CONNECT` exchange count in the `connect` phase.

use std::collections::BTreeMap;

use http::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::{Failure, reason};
use crate::config::{ProxySettings, ProxyUrl};

/// The proxy that a request to `scheme://host:port` takes, if any.
pub(crate) fn proxy_for(
    settings: &ProxySettings,
    https: bool,
    host: &str,
    port: u16,
) -> Result<Option<ProxyUrl>, Failure> {
    if settings.proxy_from_environment {
        let var = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        let value = if https {
            var(["HTTPS_PROXY", "https_proxy"])
        } else {
            if var(["REQUEST_METHOD", "REQUEST_METHOD"]).is_some() {
                return Err(Failure::new(
                    reason::PROXY,
                    "refusing to use HTTP_PROXY value in CGI environment (REQUEST_METHOD is set), as Go does",
                ));
            }
            var(["HTTP_PROXY", "http_proxy"])
        };
        let Some(value) = value else { return Ok(None) };
        let proxy = ProxyUrl::parse_lenient(&value).map_err(|e| {
            Failure::new(
                reason::PROXY,
                format!("invalid proxy from the environment: {e}"),
            )
        })?;
        let no_proxy = var(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        return Ok(use_proxy(&no_proxy, host, port).then_some(proxy));
    }
    let Some(proxy) = &settings.proxy_url else {
        return Ok(None);
    };
    if settings.no_proxy.is_empty() {
        return Ok(Some(proxy.clone()));
    }
    Ok(use_proxy(&settings.no_proxy, host, port).then(|| proxy.clone()))
}

/// Go's `httpproxy` `useProxy`: whether `host:port` is to be proxied under `no_proxy`.
fn use_proxy(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "localhost" {
        return false;
    }
    let ip = host.parse::<std::net::IpAddr>().ok();
    if ip.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    let port = port.to_string();
    for entry in no_proxy.split(',') {
        let entry = entry.trim().to_ascii_lowercase();
        if entry.is_empty() {
            continue;
        }
        if entry == "*" {
            return false;
        }
        if entry.contains('/') {
            if let (Some(ip), Ok(net)) = (ip, crate::probe_guard::Cidr::parse(&entry)) {
                if net.contains(ip) {
                    return false;
                }
            }
            continue;
        }
        let (phost, pport) = split_entry(&entry);
        let port_ok = pport.is_empty() || pport == port;
        if let Ok(entry_ip) = phost.parse::<std::net::IpAddr>() {
            if ip == Some(entry_ip) && port_ok {
                return false;
            }
            continue;
        }
        if phost.is_empty() {
            continue;
        }
        let phost = phost.strip_prefix('*').unwrap_or(phost);
        let (suffix, match_host) = match phost.strip_prefix('.') {
            Some(_) => (phost.to_string(), false),
            None => (format!(".{phost}"), true),
        };
        if (host.ends_with(&suffix) || (match_host && host == suffix[1..])) && port_ok {
            return false;
        }
    }
    true
}

/// `host[:port]` or `[v6][:port]` of a `no_proxy` entry.
fn split_entry(entry: &str) -> (&str, &str) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':').unwrap_or(""));
        }
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => (h, p),
        _ => (entry, ""),
    }
}

/// Opens a TCP connection to the proxy (its name resolved by the system resolver: the
/// operator configured it).
pub(crate) async fn connect(proxy: &ProxyUrl) -> Result<TcpStream, Failure> {
    let authority = proxy.authority();
    let tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                reason::CONNECTION_REFUSED
            } else {
                reason::CONNECTION_FAILED
            };
            Failure::new(why, format!("error dialing proxy {authority}: {e}"))
        })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Asks the proxy on `tcp` for a tunnel to `authority` (`host:port`) and reads its answer,
/// at most `max_head` bytes of head. Go's transport sends `Proxy-Authorization` from the
/// proxy URL over one in `proxy_connect_header`.
pub(crate) async fn tunnel(
    tcp: &mut TcpStream,
    authority: &str,
    proxy: &ProxyUrl,
    headers: &BTreeMap<String, Vec<String>>,
    max_head: usize,
) -> Result<(), Failure> {
    let fail = |m: String| Failure::new(reason::PROXY, m);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, values) in headers {
        if proxy.authorization.is_some() && name.eq_ignore_ascii_case("proxy-authorization") {
            continue;
        }
        for v in values {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    if let Some(auth) = &proxy.authorization {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.map_err(|e| {
        fail(format!(
            "proxy {}: cannot send CONNECT: {e}",
            proxy.authority()
        ))
    })?;
    // Byte by byte, so that nothing of the tunnel (the target's bytes) is read with the head.
    let mut answer = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= max_head {
            return Err(fail(format!(
                "proxy {}: the CONNECT response head exceeds the limit of {max_head} bytes \
                 (--probe.max-response-header-bytes)",
                proxy.authority()
            )));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => {
                return Err(fail(format!(
                    "proxy {}: connection closed before the CONNECT response ended",
                    proxy.authority()
                )));
            }
            Ok(_) => answer.push(byte[0]),
            Err(e) => {
                return Err(fail(format!(
                    "proxy {}: reading the CONNECT response: {e}",
                    proxy.authority()
                )));
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(fail(format!(
            "proxy {}: malformed CONNECT response {status_line:?}",
            proxy.authority()
        )));
    }
    if code != "200" {
        return Err(fail(format!(
            "proxy {} refused CONNECT {authority}: {}",
            proxy.authority(),
            status_line.split_once(' ').map_or("", |(_, s)| s)
        )));
    }
    Ok(())
}

/// `uri` with its host replaced by `ip` (kept port), as blackbox_exporter sends the
/// resolved target to a proxy.
pub(crate) fn with_ip(uri: &Uri, ip: std::net::IpAddr) -> Result<Uri, Failure> {
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(
        authority
            .parse()
            .map_err(|e| Failure::new(reason::INVALID_TARGET, format!("bad address {ip}: {e}")))?,
    );
    Uri::from_parts(parts)
        .map_err(|e| Failure::new(reason::INVALID_TARGET, format!("bad URL {uri}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_as_go_httpproxy() {
        let np = "example.com, .internal, 10.0.0.0/8, 192.0.2.7, only.port:8080";
        assert!(!use_proxy(np, "localhost", 80));
        assert!(!use_proxy(np, "127.0.0.1", 80));
        assert!(!use_proxy(np, "[::1]", 80));
        assert!(!use_proxy(np, "example.com", 80));
        assert!(!use_proxy(np, "www.example.com", 80));
        assert!(use_proxy(np, "notexample.com", 80));
        assert!(!use_proxy(np, "a.internal", 80));
        assert!(use_proxy(np, "internal", 80));
        assert!(!use_proxy(np, "10.1.2.3", 80));
        assert!(!use_proxy(np, "192.0.2.7", 443));
        assert!(use_proxy(np, "192.0.2.8", 443));
        assert!(!use_proxy(np, "only.port", 8080));
        assert!(use_proxy(np, "only.port", 80));
        assert!(!use_proxy("*", "anything", 1));
        assert!(use_proxy("", "target.test", 80));
    }

    #[test]
    fn proxy_urls_parse_with_credentials_and_default_port() {
        let p = ProxyUrl::parse("http://us%40er:p%3Ass@proxy.test").expect("parses");
        assert_eq!(p.authority(), "proxy.test:80");
        assert_eq!(
            p.authorization.as_deref(),
            Some(format!("Basic {}", super::super::base64(b"us@er:p:ss")).as_str())
        );
        assert_eq!(
            ProxyUrl::parse("http://[::1]:3128/")
                .expect("v6")
                .authority(),
            "[::1]:3128"
        );
        assert!(ProxyUrl::parse("socks5://p:1080").is_err());
        assert!(ProxyUrl::parse("http://:3128").is_err());
        assert_eq!(
            ProxyUrl::parse_lenient("proxy:3128")
                .expect("lenient")
                .authority(),
            "proxy:3128"
        );
        assert!(!format!("{p:?}").contains("p%3Ass"));
    }
}
