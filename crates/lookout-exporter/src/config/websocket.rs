//! The `websocket:` section (blackbox_exporter's `WebsocketProbe`): `http_config`, `headers`,
//! `query_response`, `preferred_ip_protocol`, `ip_protocol_fallback`.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::{
    Authorization, BasicAuth, IpProtocol, ModuleError, QueryResponse, TlsConfig, Unsupported,
    validate_auth, validate_tls,
};

/// Headers the upgrade sets itself (gorilla/websocket refuses them too).
const HANDSHAKE_HEADERS: [&str; 5] = [
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
];

/// Where one value of a WebSocket request header comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// Written in the configuration (`X-Header: value`, or under `values:`).
    Value(String),
    /// Written in the configuration under `secrets:` (shown as `<secret>`).
    Secret(String),
    /// Read from a file at each probe, without surrounding white space (`files:`).
    File(PathBuf),
}

/// Settings of the WebSocket prober (`websocket:`).
#[derive(Debug, Clone)]
pub struct WebsocketProbe {
    /// Preferred IP protocol for resolution.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol.
    pub ip_protocol_fallback: bool,
    /// Request headers of the upgrade, in order; a name may come more than once.
    pub headers: Vec<(String, HeaderSource)>,
    /// Dialogue after the upgrade, over text messages (`expect` and `send` only).
    pub query_response: Vec<QueryResponse>,
    /// `http_config.basic_auth`.
    pub basic_auth: Option<BasicAuth>,
    /// `http_config.authorization`.
    pub authorization: Option<Authorization>,
    /// `http_config.tls_config`, for `wss://`.
    pub tls_config: TlsConfig,
}

impl Default for WebsocketProbe {
    fn default() -> Self {
        WebsocketProbe {
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            headers: Vec::new(),
            query_response: Vec::new(),
            basic_auth: None,
            authorization: None,
            tls_config: TlsConfig::default(),
        }
    }
}

/// `headers:` values: a string, or `values`/`secrets`/`files` lists.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "header")]
struct RawHeader {
    values: Vec<String>,
    secrets: Vec<String>,
    files: Vec<PathBuf>,
}

struct HeaderEntry(RawHeader);

impl<'de> Deserialize<'de> for HeaderEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = HeaderEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a header value, or values/secrets/files lists")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderEntry, E> {
                Ok(HeaderEntry(RawHeader {
                    values: vec![v.to_string()],
                    ..RawHeader::default()
                }))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<HeaderEntry, A::Error> {
                RawHeader::deserialize(de::value::MapAccessDeserializer::new(map)).map(HeaderEntry)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "http_config")]
struct RawHttpConfig {
    basic_auth: Option<BasicAuth>,
    authorization: Option<Authorization>,
    tls_config: TlsConfig,
    // Prometheus common HTTP client settings blackbox_exporter's websocket prober does not
    // use: an error rather than silently nothing.
    bearer_token: Option<Unsupported>,
    bearer_token_file: Option<Unsupported>,
    oauth2: Option<Unsupported>,
    proxy_url: Option<Unsupported>,
    no_proxy: Option<Unsupported>,
    proxy_from_environment: Option<Unsupported>,
    proxy_connect_header: Option<Unsupported>,
    follow_redirects: Option<Unsupported>,
    enable_http2: Option<Unsupported>,
    http_headers: Option<Unsupported>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "websocket")]
pub(super) struct RawWebsocket {
    http_config: RawHttpConfig,
    headers: std::collections::BTreeMap<String, HeaderEntry>,
    query_response: Vec<QueryResponse>,
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
}

impl std::fmt::Debug for HeaderEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl RawWebsocket {
    pub(super) fn into_probe(self) -> Result<WebsocketProbe, ModuleError> {
        let c = self.http_config;
        let _ = (
            c.bearer_token,
            c.bearer_token_file,
            c.oauth2,
            c.proxy_url,
            c.no_proxy,
            c.proxy_from_environment,
            c.proxy_connect_header,
            c.follow_redirects,
            c.enable_http2,
            c.http_headers,
        );
        let section = ["websocket", "http_config"];
        validate_tls(&c.tls_config).map_err(|(k, msg)| ([&section[..], &k].concat(), msg))?;
        if c.basic_auth.is_some() && c.authorization.is_some() {
            return Err((
                section.to_vec(),
                "at most one of basic_auth & authorization must be configured".into(),
            ));
        }
        validate_auth(&section, c.basic_auth.as_ref(), c.authorization.as_ref())?;
        let mut headers = Vec::new();
        for (name, HeaderEntry(h)) in self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((
                    vec!["websocket", "headers"],
                    format!("invalid header name {name:?}"),
                ));
            }
            if HANDSHAKE_HEADERS
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
            {
                return Err((
                    vec!["websocket", "headers"],
                    format!("header {name:?} is set by the WebSocket handshake; remove it"),
                ));
            }
            let bad_value = h
                .values
                .iter()
                .chain(&h.secrets)
                .any(|v| http::HeaderValue::from_str(v).is_err());
            if bad_value {
                return Err((
                    vec!["websocket", "headers"],
                    format!("invalid value of header {name:?}"),
                ));
            }
            let sources = (h.values.into_iter().map(HeaderSource::Value))
                .chain(h.secrets.into_iter().map(HeaderSource::Secret))
                .chain(h.files.into_iter().map(HeaderSource::File));
            headers.extend(sources.map(|s| (name.clone(), s)));
        }
        for (i, step) in self.query_response.iter().enumerate() {
            let unused = [
                ("expect_bytes", step.expect_bytes.is_some()),
                ("labels", !step.labels.is_empty()),
                ("starttls", step.starttls),
            ];
            if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
                return Err((
                    vec!["websocket", "query_response"],
                    format!(
                        "step {i}: {key} is not used by the websocket prober (blackbox_exporter \
                         ignores it there); remove it"
                    ),
                ));
            }
        }
        Ok(WebsocketProbe {
            preferred_ip_protocol: self.preferred_ip_protocol.unwrap_or_default(),
            ip_protocol_fallback: self.ip_protocol_fallback.unwrap_or(true),
            headers,
            query_response: self.query_response,
            basic_auth: c.basic_auth,
            authorization: c.authorization,
            tls_config: c.tls_config,
        })
    }
}
