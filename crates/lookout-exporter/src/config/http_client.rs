//! The parts of Prometheus' common HTTP client configuration (`prometheus/common`
//! `config/http_config.go`, `config/headers.go`) beyond authentication and TLS: proxies,
//! `oauth2` and `http_headers`.
//!
//! Checks are common's `Validate`: `no_proxy` needs `proxy_url`; `proxy_from_environment`
//! excludes `proxy_url` and `no_proxy`; `proxy_connect_header` needs one of them; an
//! `oauth2` needs `client_id` and `token_url`; `http_headers` may not set the headers the
//! client owns (`Authorization`, `Host`, `User-Agent`, …). Lookout choices:
//!
//! * A proxy is an `http://` proxy. `https://` and `socks5://` proxies are refused at load
//!   with a clear error (Go's client speaks them; Lookout does not).
//! * `oauth2` is the client credentials grant; `grant_type:
//!   urn:ietf:params:oauth:grant-type:jwt-bearer` and its settings (`client_certificate_key*`,
//!   `signature_algorithm`, `iss`, `audience`, `claims`) and the secret-manager `*_ref`
//!   settings are refused at their line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::Deserializer;

use super::{ModuleError, TlsConfig, Unsupported, scalar, validate_tls};

/// An `http://` proxy as written in `proxy_url` (or read from `HTTP_PROXY`/`HTTPS_PROXY`).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when the URL has none, as Go's transport).
    pub port: u16,
    /// `Basic …` for `Proxy-Authorization`, from the URL's user information.
    pub authorization: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credentials.
        write!(f, "ProxyUrl({})", self.authority())
    }
}

impl ProxyUrl {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Parses a proxy URL as Go's `httpproxy` does for environment values: a value without
    /// a scheme is taken as `http://value`.
    pub fn parse_lenient(text: &str) -> Result<ProxyUrl, String> {
        let text = text.trim();
        if text.contains("://") {
            ProxyUrl::parse(text)
        } else {
            ProxyUrl::parse(&format!("http://{text}"))
        }
    }

    /// Parses `http://[user[:password]@]host[:port][/]`.
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("invalid proxy URL {text:?}: want http://host:port"))?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "proxy URL scheme {scheme:?} is not supported by Lookout (only http:// proxies; \
                 Go's client also speaks https:// and socks5://)"
            ));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)
            .ok_or_else(|| format!("invalid proxy URL {text:?}: bad host or port"))?;
        if host.is_empty() {
            return Err(format!("invalid proxy URL {text:?}: no host"));
        }
        let authorization = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)
                    .ok_or_else(|| "invalid proxy URL: bad escape in the user name".to_string())?;
                let password = percent_decode(password)
                    .ok_or_else(|| "invalid proxy URL: bad escape in the password".to_string())?;
                Some(format!(
                    "Basic {}",
                    crate::prober::base64(format!("{user}:{password}").as_bytes())
                ))
            }
        };
        Ok(ProxyUrl {
            host,
            port: port.unwrap_or(80),
            authorization,
        })
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), Some(p.parse().ok()?))),
        Some(_) => None,
        None => Some((text.to_string(), None)),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    unescape(text, false)
}

/// Undoes `%XX` escapes (and `+` as a space when `plus_is_space`, as in forms); `None` for
/// a bad escape or text that is not UTF-8.
pub(crate) fn unescape(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
                continue;
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

impl<'de> Deserialize<'de> for ProxyUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a proxy URL such as http://proxy:3128", ProxyUrl::parse)
    }
}

/// Where the requests of a client go: directly or through a proxy (common's `ProxyConfig`).
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// `proxy_url`.
    pub proxy_url: Option<ProxyUrl>,
    /// `no_proxy`: comma-separated hosts, domains and networks reached directly.
    pub no_proxy: String,
    /// `proxy_from_environment`: `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` decide.
    pub proxy_from_environment: bool,
    /// `proxy_connect_header`: headers sent on `CONNECT` to the proxy.
    pub proxy_connect_header: BTreeMap<String, Vec<String>>,
}

impl ProxySettings {
    /// Whether any proxy may be used.
    pub fn configured(&self) -> bool {
        self.proxy_url.is_some() || self.proxy_from_environment
    }
}

/// The proxy settings as written, before common's checks.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawProxy {
    pub no_proxy: String,
    pub proxy_from_environment: bool,
    pub proxy_connect_header: BTreeMap<String, Vec<String>>,
}

/// Builds [`ProxySettings`] with common's `ProxyConfig.Validate`; `section` prefixes the
/// key path of an error.
pub(super) fn proxy_settings(
    section: &[&'static str],
    proxy_url: Option<ProxyUrl>,
    raw: RawProxy,
) -> Result<ProxySettings, ModuleError> {
    let at = |key: &'static str| {
        let mut keys = section.to_vec();
        keys.push(key);
        keys
    };
    let has_url = proxy_url.is_some();
    if !raw.proxy_connect_header.is_empty() && !raw.proxy_from_environment && !has_url {
        return Err((
            at("proxy_connect_header"),
            "if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured".into(),
        ));
    }
    if raw.proxy_from_environment && has_url {
        return Err((
            at("proxy_from_environment"),
            "if proxy_from_environment is configured, proxy_url must not be configured".into(),
        ));
    }
    if raw.proxy_from_environment && !raw.no_proxy.is_empty() {
        return Err((
            at("proxy_from_environment"),
            "if proxy_from_environment is configured, no_proxy must not be configured".into(),
        ));
    }
    if !has_url && !raw.no_proxy.is_empty() {
        return Err((
            at("no_proxy"),
            "if no_proxy is configured, proxy_url must also be configured".into(),
        ));
    }
    for (name, values) in &raw.proxy_connect_header {
        check_header(name, values).map_err(|m| (at("proxy_connect_header"), m))?;
    }
    Ok(ProxySettings {
        proxy_url,
        no_proxy: raw.no_proxy,
        proxy_from_environment: raw.proxy_from_environment,
        proxy_connect_header: raw.proxy_connect_header,
    })
}

fn check_header(name: &str, values: &[String]) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("invalid header name {name:?}"));
    }
    if let Some(v) = values
        .iter()
        .find(|v| http::HeaderValue::from_str(v).is_err())
    {
        return Err(format!("invalid value for header {name:?}: {v:?}"));
    }
    Ok(())
}

/// `oauth2`: the client credentials grant (golang.org/x/oauth2/clientcredentials).
#[derive(Debug, Clone)]
pub struct OAuth2 {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// `client_secret_file`, read when a token is fetched.
    pub client_secret_file: Option<PathBuf>,
    /// `scopes`, sent space-separated as `scope`.
    pub scopes: Vec<String>,
    /// `token_url`.
    pub token_url: http::Uri,
    /// `endpoint_params`: more form parameters of the token request.
    pub endpoint_params: BTreeMap<String, String>,
    /// `tls_config` of the token request.
    pub tls_config: TlsConfig,
    /// Proxy settings of the token request.
    pub proxy: ProxySettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    client_id: String,
    client_secret: String,
    client_secret_file: Option<PathBuf>,
    scopes: Vec<String>,
    token_url: String,
    endpoint_params: BTreeMap<String, String>,
    tls_config: TlsConfig,
    grant_type: Option<String>,
    proxy_url: Option<ProxyUrl>,
    no_proxy: String,
    proxy_from_environment: bool,
    proxy_connect_header: BTreeMap<String, Vec<String>>,
    // Settings of the JWT bearer grant and of Prometheus' secret manager.
    client_secret_ref: Option<Unsupported>,
    client_certificate_key_id: Option<Unsupported>,
    client_certificate_key: Option<Unsupported>,
    client_certificate_key_file: Option<Unsupported>,
    client_certificate_key_ref: Option<Unsupported>,
    signature_algorithm: Option<Unsupported>,
    iss: Option<Unsupported>,
    audience: Option<Unsupported>,
    claims: Option<Unsupported>,
}

impl RawOAuth2 {
    pub(super) fn into_oauth2(self) -> Result<OAuth2, ModuleError> {
        let at = |key: &'static str| vec!["http", "oauth2", key];
        let _ = (
            self.client_secret_ref,
            self.client_certificate_key_id,
            self.client_certificate_key,
            self.client_certificate_key_file,
            self.client_certificate_key_ref,
            self.signature_algorithm,
            self.iss,
            self.audience,
            self.claims,
        );
        match self.grant_type.as_deref() {
            None | Some("") | Some("client_credentials") => {}
            Some(other) => {
                return Err((
                    at("grant_type"),
                    format!(
                        "oauth2 grant_type {other:?} is not supported by Lookout (only client_credentials)"
                    ),
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err((
                vec!["http", "oauth2"],
                "oauth2 client_id must be configured".into(),
            ));
        }
        if self.token_url.is_empty() {
            return Err((
                vec!["http", "oauth2"],
                "oauth2 token_url must be configured".into(),
            ));
        }
        if !self.client_secret.is_empty() && self.client_secret_file.is_some() {
            return Err((
                vec!["http", "oauth2"],
                "at most one of oauth2 client_secret, client_secret_file & client_secret_ref must be configured using grant-type=client_credentials".into(),
            ));
        }
        let token_url: http::Uri = self
            .token_url
            .parse()
            .ok()
            .filter(|u: &http::Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            })
            .ok_or_else(|| {
                (
                    at("token_url"),
                    format!(
                        "invalid oauth2 token_url {:?}: want an http(s) URL",
                        self.token_url
                    ),
                )
            })?;
        validate_tls(&self.tls_config)
            .map_err(|(k, m)| ([vec!["http", "oauth2"], k].concat(), m))?;
        let proxy = proxy_settings(
            &["http", "oauth2"],
            self.proxy_url,
            RawProxy {
                no_proxy: self.no_proxy,
                proxy_from_environment: self.proxy_from_environment,
                proxy_connect_header: self.proxy_connect_header,
            },
        )?;
        Ok(OAuth2 {
            client_id: self.client_id,
            client_secret: self.client_secret,
            client_secret_file: self.client_secret_file,
            scopes: self.scopes,
            token_url,
            endpoint_params: self.endpoint_params,
            tls_config: self.tls_config,
            proxy,
        })
    }
}

/// One header of `http_headers`: every value is sent (in this order: values, secrets,
/// files).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderValues {
    /// Plain values.
    pub values: Vec<String>,
    /// Secret values (the same on the wire; kept apart as in common).
    pub secrets: Vec<String>,
    /// Files whose trimmed content is a value, read at every request (as common does).
    pub files: Vec<PathBuf>,
}

/// Headers common's client refuses to let `http_headers` set (`ReservedHeaders`).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-prometheus-scrape-timeout-seconds",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// `x-api-key` → `X-Api-Key`, as Go's `http.CanonicalHeaderKey`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Checks `http_headers` as common's `Headers.Validate`, and that names and literal values
/// are valid HTTP.
pub(super) fn check_http_headers(
    headers: &BTreeMap<String, HeaderValues>,
) -> Result<(), ModuleError> {
    for (name, h) in headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err((
                vec!["http", "http_headers"],
                format!("setting header {:?} is not allowed", canonical(name)),
            ));
        }
        let literal: Vec<String> = h.values.iter().chain(&h.secrets).cloned().collect();
        check_header(name, &literal).map_err(|m| (vec!["http", "http_headers"], m))?;
    }
    Ok(())
}
