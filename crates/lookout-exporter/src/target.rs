//! Probe targets: the one parser that both the probe policy ([`crate::probe_guard`]) and
//! the probers use, so that the host the policy looks at is the host a prober connects to.
//!
//! | prober | target | host |
//! |---|---|---|
//! | `http` | a URL; `http://` is assumed when there is no scheme | the URL's host (after any userinfo) |
//! | `tcp` | `host:port`, `[v6]:port` | `host` |
//! | `dns` | `host[:port]`, `[v6][:port]`, a bare IPv6 address (port 53, or 853 over TLS) | `host` |
//! | `icmp` | a host name or address, `[v6]` | the host |
//! | `grpc` | `host[:port]` or a URL as for `http` (scheme and path ignored; port 80, or 443 with `tls`) | the URL's host |
//! | `websocket` | a `ws://` or `wss://` URL | the URL's host |
//! | `unix` | the path of a unix socket | none: the policy has its own rule for paths |
//!
//! Userinfo with `[` or `]` in a URL is refused, as Go's `net/url` does
//! (`[127.0.0.1]@127.0.0.2` is the host 127.0.0.2, a trap for anyone reading the text).
//! The policy still checks every address at connect time; this parser only makes the
//! early check and the probe agree.

use http::Uri;

use crate::config::ProberKind;

/// Why a target cannot be parsed; the probers report it as `invalid_target`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {target:?} {why}")]
pub struct TargetError {
    /// The target as written.
    pub target: String,
    /// What is wrong with it.
    pub why: String,
}

fn bad(target: &str, why: impl Into<String>) -> TargetError {
    TargetError {
        target: target.to_string(),
        why: why.into(),
    }
}

/// The URL an HTTP probe requests (`http://` is assumed when the target has no scheme).
pub fn http_url(target: &str) -> Result<Uri, TargetError> {
    let text = if target.contains("://") {
        target.to_string()
    } else {
        format!("http://{target}")
    };
    let uri: Uri = text
        .parse()
        .map_err(|e| bad(target, format!("is not a URL: {e}")))?;
    let authority = uri
        .authority()
        .ok_or_else(|| bad(target, "has no host"))?
        .as_str();
    let userinfo = authority.rsplit_once('@').map_or("", |(u, _)| u);
    if userinfo.contains(['[', ']']) {
        return Err(bad(target, "has '[' or ']' in its userinfo (before '@')"));
    }
    let raw = uri.host().unwrap_or("");
    let host = url_host(&uri);
    if host.is_empty() {
        return Err(bad(target, "has no host"));
    }
    // Brackets only around a whole IPv6 literal (with an optional zone): the URL parser
    // takes `a...[::1]80` as the host `a...[`.
    let bracketed = raw.starts_with('[') && raw.ends_with(']');
    let v6 = host.split('%').next().unwrap_or("");
    if host.contains(['[', ']'])
        || (raw.contains(['[', ']']) && !bracketed)
        || (bracketed && v6.parse::<std::net::Ipv6Addr>().is_err())
    {
        return Err(bad(
            target,
            "has a host with '[' or ']' that is not an [IPv6 address]",
        ));
    }
    Ok(uri)
}

/// A URL's host without the brackets of an IPv6 literal.
pub fn url_host(uri: &Uri) -> &str {
    uri.host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Splits `host:port` (with `[v6]:port`), using `default_port` when there is no port.
pub fn host_port(target: &str, default_port: Option<u16>) -> Result<(String, u16), TargetError> {
    let bad = |why: &str| bad(target, format!("is not host:port ({why})"));
    if target.contains(['@', '/', '?', '#']) || target.chars().any(char::is_whitespace) {
        return Err(bad("'@', '/', '?', '#' or white space in it"));
    }
    if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if host.is_empty() || host.contains(['[', ']']) {
            return Err(bad("bad address in brackets"));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => default_port.ok_or_else(|| bad("missing port"))?,
            None => return Err(bad("junk after ']'")),
        };
        return Ok((host.to_string(), port));
    }
    if target.contains(['[', ']']) {
        return Err(bad("'[' or ']' outside an [address]"));
    }
    match target.rsplit_once(':') {
        // A bare IPv6 address (several colons) without brackets has no port.
        Some((host, _)) if host.contains(':') => match default_port {
            Some(p) if target.parse::<std::net::Ipv6Addr>().is_ok() => Ok((target.to_string(), p)),
            _ => Err(bad("write IPv6 addresses as [addr]:port")),
        },
        Some((host, port)) => {
            if host.is_empty() {
                return Err(bad("missing host"));
            }
            Ok((host.to_string(), port.parse().map_err(|_| bad("bad port"))?))
        }
        None if target.is_empty() => Err(bad("empty")),
        None => Ok((
            target.to_string(),
            default_port.ok_or_else(|| bad("missing port"))?,
        )),
    }
}

/// The host an ICMP probe pings: a name or an address, brackets allowed around IPv6.
pub fn icmp_host(target: &str) -> Result<String, TargetError> {
    let host = match target.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| bad(target, "has an unclosed '['"))?,
        None => target,
    };
    if host.is_empty()
        || host.contains(['[', ']', '@', '/', '?', '#'])
        || host.chars().any(char::is_whitespace)
        || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
    {
        return Err(bad(target, "is not a host name or IP address"));
    }
    Ok(host.to_string())
}

/// The URL a WebSocket probe opens: `ws://` or `wss://`, with a host as [`http_url`] reads
/// it.
pub fn websocket_url(target: &str) -> Result<Uri, TargetError> {
    if !(target.starts_with("ws://") || target.starts_with("wss://")) {
        return Err(bad(target, "is not a ws:// or wss:// URL"));
    }
    http_url(target)
}

/// The socket path a unix probe connects to: not empty, no NUL byte, at most 107 bytes (the
/// room in `sockaddr_un`).
pub fn unix_path(target: &str) -> Result<&str, TargetError> {
    if target.is_empty() || target.contains('\0') {
        return Err(bad(target, "is not a unix socket path"));
    }
    if target.len() > 107 {
        return Err(bad(
            target,
            "is longer than a unix socket path may be (107 bytes)",
        ));
    }
    Ok(target)
}

/// The host the prober of `kind` connects to first (for the DNS prober, its default port
/// is irrelevant here). A unix socket has none.
pub fn host(kind: ProberKind, target: &str) -> Result<String, TargetError> {
    match kind {
        ProberKind::Http | ProberKind::Grpc => http_url(target).map(|u| url_host(&u).to_string()),
        ProberKind::Tcp => host_port(target, None).map(|(h, _)| h),
        ProberKind::Dns => host_port(target, Some(53)).map(|(h, _)| h),
        ProberKind::Icmp => icmp_host(target),
        ProberKind::Websocket => websocket_url(target).map(|u| url_host(&u).to_string()),
        ProberKind::Unix => Err(bad(target, "is a unix socket path, which has no host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("a:1", None), Ok(("a".into(), 1)));
        assert_eq!(host_port("[::1]:53", None), Ok(("::1".into(), 53)));
        assert_eq!(host_port("::1", Some(53)), Ok(("::1".into(), 53)));
        assert_eq!(host_port("[::1]", Some(53)), Ok(("::1".into(), 53)));
        assert_eq!(host_port("ns", Some(53)), Ok(("ns".into(), 53)));
        assert!(host_port("ns", None).is_err());
        assert!(host_port("a:b", None).is_err());
        assert!(host_port(":80", None).is_err());
        assert!(host_port("[127.0.0.1]@127.0.0.2:18999", None).is_err());
        assert!(host_port("a]:1", None).is_err());
    }

    #[test]
    fn the_host_of_a_url_is_the_one_connected_to() {
        let host = |t| host(ProberKind::Http, t);
        assert_eq!(
            host("http://user:pw@Web.example.com:8080/x?y#z").as_deref(),
            Ok("Web.example.com")
        );
        assert_eq!(host("https://[::1]:443/").as_deref(), Ok("::1"));
        assert_eq!(host("127.0.0.1:80/x").as_deref(), Ok("127.0.0.1"));
        assert_eq!(host("u@127.0.0.2:1").as_deref(), Ok("127.0.0.2"));
        assert!(host("[127.0.0.1]@127.0.0.2:18999").is_err());
        assert!(host("http://[evil.allowed.test]@127.0.0.2:18999/").is_err());
        assert!(host("http:///x").is_err());
        // Found by fuzzing: the URL parser's host was `6553665536...[`.
        assert!(host("6553665536...[::ffff:127.0.0.1]80-180").is_err());
        assert!(host("http://[not-v6]/").is_err());
    }

    #[test]
    fn websocket_urls_and_unix_paths() {
        let host = |t| host(ProberKind::Websocket, t);
        assert_eq!(
            host("wss://Ws.example:8443/chat").as_deref(),
            Ok("Ws.example")
        );
        assert_eq!(host("ws://[::1]/").as_deref(), Ok("::1"));
        assert!(host("http://example/").is_err());
        assert!(host("example:80").is_err());
        assert!(host("ws://[a]@127.0.0.2/").is_err());
        assert_eq!(unix_path("/run/app.sock"), Ok("/run/app.sock"));
        assert!(unix_path("").is_err());
        assert!(unix_path("/a\0b").is_err());
        assert!(unix_path(&"x".repeat(108)).is_err());
    }

    #[test]
    fn icmp_hosts() {
        assert_eq!(icmp_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(icmp_host("db.internal").as_deref(), Ok("db.internal"));
        assert!(icmp_host("[127.0.0.1]@127.0.0.2").is_err());
        assert!(icmp_host("a:b").is_err());
    }
}
