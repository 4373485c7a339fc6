//! Exporter configuration: blackbox_exporter's `modules:` schema plus Lookout's continuously
//! probed `targets:` and push `heartbeats:`.
//!
//! Decoding is strict, like blackbox_exporter's `yaml.UnmarshalStrict`: unknown keys, bad
//! durations, bad regular expressions (compiled here, once), unknown modules, duplicate names
//! and dependency cycles are errors that name the file, line and column.
//!
//! Field names and defaults are blackbox_exporter's (`config/config.go`), with these Lookout
//! choices:
//!
//! * `http.body_size_limit` unset or `0` means "no limit", as in blackbox_exporter: the
//!   prober counts such a body without keeping it, unless a `fail_if_body_*` regexp needs
//!   it (then `--probe.max-regexp-body-bytes` bounds it; see [`crate::limits`]).
//! * `fail_if_body_json_matches_cel` / `fail_if_body_json_not_matches_cel` are compiled
//!   here, with bounds on their length and nesting (see [`cel`]); the body they need is
//!   bounded as a regexp's is.
//! * A target's `interval` defaults to [`DEFAULT_TARGET_INTERVAL`] (15 s).
//! * `grpc:` takes all of blackbox_exporter's settings, `metadata` included (see
//!   [`GrpcProbe`]); metadata gRPC would refuse on every probe is an error at load time.
//! * `unix` and `websocket` (blackbox_exporter 0.28 and later) are decoded strictly like the
//!   others. In a `tcp` or `unix` `query_response` step, `send` and `expect_bytes` may be
//!   `!!binary <base64>` (see `config/binary.rs`); a binary `send` goes out as it is, with no
//!   newline added (blackbox_exporter adds one, which breaks its own PostgreSQL example:
//!   prometheus/blackbox_exporter#1657). `expect` and `expect_bytes` exclude each other. A
//!   websocket step takes `expect` and `send` only (blackbox_exporter ignores the others
//!   there; Lookout refuses them). The websocket `http_config` takes `basic_auth`,
//!   `authorization` and `tls_config`, the settings blackbox_exporter's websocket prober
//!   uses; its `headers` take a value or `values`/`secrets`/`files` per header.
//! * Settings of blackbox's HTTP client that Lookout does not implement are errors at their
//!   line, never silently ignored: `enable_http3: true` (HTTP/3 over QUIC; `false` is
//!   accepted), `https://` and `socks5://` proxies, the `oauth2` JWT bearer grant and the
//!   secret-manager `*_ref` settings. Proxies (`proxy_url`, `no_proxy`,
//!   `proxy_from_environment`, `proxy_connect_header`), `oauth2` (client credentials) and
//!   `http_headers` are supported; see [`http_client`].
//! * `tls_config.min_version` `TLS10`/`TLS11` are accepted but mean TLS 1.2: rustls does not
//!   speak older versions.

mod binary;
pub(crate) mod cel;
mod duration;
mod grpc;
mod http_client;
mod render;
mod websocket;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer};

pub use cel::CelProgram;
pub use duration::parse_duration;
pub use grpc::GrpcProbe;
pub(crate) use http_client::unescape;
pub use http_client::{HeaderValues, OAuth2, ProxySettings, ProxyUrl};
use lookout_web::yaml_locate::{Seg, locate};
pub use websocket::{HeaderSource, WebsocketProbe};

/// Interval of a target that does not set `interval`.
pub const DEFAULT_TARGET_INTERVAL: Duration = Duration::from_secs(15);

/// A whole exporter configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Probe modules by name, as in blackbox.yml.
    pub modules: BTreeMap<String, Module>,
    /// Continuously probed targets.
    pub targets: Vec<Target>,
    /// Continuously probed targets found by service discovery (see [`crate::discovered`]).
    pub target_groups: Vec<crate::discovered::TargetGroupConfig>,
    /// Push monitors.
    pub heartbeats: Vec<Heartbeat>,
    /// Which targets `/probe` may be asked to probe (see [`crate::probe_guard`]).
    pub probe_policy: crate::probe_guard::ProbePolicy,
}

/// Which prober a module uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProberKind {
    /// HTTP(S) request.
    #[default]
    Http,
    /// TCP connect, optional dialogue and TLS.
    Tcp,
    /// DNS query against one nameserver.
    Dns,
    /// ICMP echo.
    Icmp,
    /// gRPC health check (`grpc.health.v1.Health/Check`) over HTTP/2.
    Grpc,
    /// Unix domain socket connect, optional dialogue and TLS.
    Unix,
    /// WebSocket upgrade and message dialogue.
    Websocket,
}

impl ProberKind {
    /// The name used in configuration files (`http`, `tcp`, `dns`, `icmp`, `grpc`, `unix`,
    /// `websocket`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProberKind::Http => "http",
            ProberKind::Tcp => "tcp",
            ProberKind::Dns => "dns",
            ProberKind::Icmp => "icmp",
            ProberKind::Grpc => "grpc",
            ProberKind::Unix => "unix",
            ProberKind::Websocket => "websocket",
        }
    }
}

impl<'de> Deserialize<'de> for ProberKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a prober name", parse_prober)
    }
}

fn parse_prober(s: &str) -> Result<ProberKind, String> {
    {
        match s {
            "http" => Ok(ProberKind::Http),
            "tcp" => Ok(ProberKind::Tcp),
            "dns" => Ok(ProberKind::Dns),
            "icmp" => Ok(ProberKind::Icmp),
            "grpc" => Ok(ProberKind::Grpc),
            "unix" => Ok(ProberKind::Unix),
            "websocket" => Ok(ProberKind::Websocket),
            _ => Err(format!(
                "unknown prober {s:?} (supported: http, tcp, dns, icmp, grpc, unix, websocket)"
            )),
        }
    }
}

/// IP protocol preference (`preferred_ip_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpProtocol {
    /// IPv4 (`ip4`).
    Ip4,
    /// IPv6 (`ip6`), blackbox_exporter's default.
    #[default]
    Ip6,
}

impl<'de> Deserialize<'de> for IpProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "ip4 or ip6", parse_ip_protocol)
    }
}

fn parse_ip_protocol(s: &str) -> Result<IpProtocol, String> {
    {
        match s {
            // blackbox_exporter takes "ip6" and "" as IPv6 and anything else, even "ipv6", as
            // IPv4: rather than probe differently without a word, other values are refused.
            "ip4" => Ok(IpProtocol::Ip4),
            "ip6" | "" => Ok(IpProtocol::Ip6),
            _ => Err(format!(
                "invalid preferred_ip_protocol {s:?}: use ip4 or ip6 (blackbox_exporter would take it as ip4)"
            )),
        }
    }
}

/// One probe module.
#[derive(Debug, Clone, Default)]
pub struct Module {
    /// The prober this module uses.
    pub prober: ProberKind,
    /// The module's timeout; zero means "not set" (the scrape timeout decides).
    pub timeout: Duration,
    /// Settings of the HTTP prober.
    pub http: HttpProbe,
    /// Settings of the TCP prober.
    pub tcp: TcpProbe,
    /// Settings of the DNS prober.
    pub dns: DnsProbe,
    /// Settings of the ICMP prober.
    pub icmp: IcmpProbe,
    /// Settings of the gRPC prober.
    pub grpc: GrpcProbe,
    /// Settings of the unix socket prober.
    pub unix: UnixProbe,
    /// Settings of the WebSocket prober.
    pub websocket: WebsocketProbe,
}

/// `tls_config`, as in Prometheus' common HTTP client configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA certificates (inline).
    pub ca: Option<String>,
    /// File of PEM CA certificates that verify the server; the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (inline).
    pub cert: Option<String>,
    /// File of the PEM client certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM client key (inline).
    pub key: Option<String>,
    /// File of the PEM client key.
    pub key_file: Option<PathBuf>,
    /// Server name for SNI and verification instead of the target's host.
    pub server_name: Option<String>,
    /// Skip certificate verification (expiry metrics are still recorded).
    pub insecure_skip_verify: bool,
    /// Oldest TLS version allowed.
    pub min_version: Option<TlsVersion>,
    /// Newest TLS version allowed.
    pub max_version: Option<TlsVersion>,
}

/// A TLS protocol version as written in `min_version`/`max_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS10`.
    Tls10,
    /// `TLS11`.
    Tls11,
    /// `TLS12`.
    Tls12,
    /// `TLS13`.
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a TLS version", parse_tls_version)
    }
}

fn parse_tls_version(s: &str) -> Result<TlsVersion, String> {
    {
        match s {
            "TLS10" => Ok(TlsVersion::Tls10),
            "TLS11" => Ok(TlsVersion::Tls11),
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "unknown TLS version {s:?} (use TLS10, TLS11, TLS12 or TLS13)"
            )),
        }
    }
}

/// `basic_auth`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// File holding the user name.
    pub username_file: Option<PathBuf>,
    /// Password.
    pub password: String,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
}

/// `authorization`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    /// Scheme (`Bearer` by default).
    #[serde(rename = "type")]
    pub kind: String,
    /// Credentials.
    pub credentials: String,
    /// File holding the credentials.
    pub credentials_file: Option<PathBuf>,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            kind: "Bearer".into(),
            credentials: String::new(),
            credentials_file: None,
        }
    }
}

/// `fail_if_header_matches` / `fail_if_header_not_matches` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// Header name.
    pub header: String,
    /// Pattern matched against each of the header's values.
    #[serde(deserialize_with = "de_regex")]
    pub regexp: Regex,
    /// Whether a missing header counts as passing.
    #[serde(default)]
    pub allow_missing: bool,
}

/// Response compression the HTTP prober asks for and decodes (`compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// None requested.
    #[default]
    None,
    /// `gzip`.
    Gzip,
    /// `br`.
    Br,
    /// `deflate`.
    Deflate,
    /// `identity`.
    Identity,
}

impl Compression {
    /// The content-coding token (`gzip`, …; empty for none).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "gzip",
            Compression::Br => "br",
            Compression::Deflate => "deflate",
            Compression::Identity => "identity",
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a compression", parse_compression)
    }
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    {
        match s.to_ascii_lowercase().as_str() {
            "" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "br" => Ok(Compression::Br),
            "deflate" => Ok(Compression::Deflate),
            "identity" => Ok(Compression::Identity),
            _ => Err(format!(
                "invalid compression {s:?} (use gzip, br, deflate or identity)"
            )),
        }
    }
}

/// Settings of the HTTP prober (`http:`).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// Accepted status codes; empty means any 2xx.
    pub valid_status_codes: Vec<u16>,
    /// Accepted versions (`HTTP/1.1`, `HTTP/2.0`); empty means any.
    pub valid_http_versions: Vec<String>,
    /// Preferred IP protocol for resolution.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol.
    pub ip_protocol_fallback: bool,
    /// With a proxy, do not resolve the target (the proxy does): no resolve phase and no
    /// `probe_ip_*` metrics, as blackbox_exporter.
    pub skip_resolve_phase_with_proxy: bool,
    /// Follow redirects (up to `--probe.max-redirects`, 10 by default).
    pub follow_redirects: bool,
    /// Allow HTTP/2 through ALPN on TLS connections.
    pub enable_http2: bool,
    /// Fail when the final response came over TLS.
    pub fail_if_ssl: bool,
    /// Fail when the final response did not come over TLS.
    pub fail_if_not_ssl: bool,
    /// Request method.
    pub method: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Fail when the body matches any of these.
    pub fail_if_body_matches_regexp: Vec<Regex>,
    /// Fail when the body does not match each of these.
    pub fail_if_body_not_matches_regexp: Vec<Regex>,
    /// Fail when this CEL expression, given the body parsed as JSON as `body`, is true.
    pub fail_if_body_json_matches_cel: Option<CelProgram>,
    /// Fail when this CEL expression, given the body parsed as JSON as `body`, is false.
    pub fail_if_body_json_not_matches_cel: Option<CelProgram>,
    /// Fail when a header matches.
    pub fail_if_header_matches: Vec<HeaderMatch>,
    /// Fail when a header does not match.
    pub fail_if_header_not_matches: Vec<HeaderMatch>,
    /// Request body.
    pub body: String,
    /// File whose content is the request body.
    pub body_file: Option<PathBuf>,
    /// Compression to decode the body with (no `Accept-Encoding` is added for it).
    pub compression: Compression,
    /// Largest (uncompressed) body read; `None` means unlimited.
    pub body_size_limit: Option<u64>,
    /// TLS settings.
    pub tls_config: TlsConfig,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token.
    pub bearer_token: Option<String>,
    /// File holding the bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// `Authorization` header settings.
    pub authorization: Option<Authorization>,
    /// OAuth 2.0 client credentials: the token is sent as the `Authorization`.
    pub oauth2: Option<OAuth2>,
    /// Proxy settings.
    pub proxy: ProxySettings,
    /// `http_headers`: more request headers, with secret and file values.
    pub http_headers: BTreeMap<String, HeaderValues>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            valid_status_codes: Vec::new(),
            valid_http_versions: Vec::new(),
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            skip_resolve_phase_with_proxy: false,
            follow_redirects: true,
            enable_http2: true,
            fail_if_ssl: false,
            fail_if_not_ssl: false,
            method: "GET".into(),
            headers: BTreeMap::new(),
            fail_if_body_matches_regexp: Vec::new(),
            fail_if_body_not_matches_regexp: Vec::new(),
            fail_if_body_json_matches_cel: None,
            fail_if_body_json_not_matches_cel: None,
            fail_if_header_matches: Vec::new(),
            fail_if_header_not_matches: Vec::new(),
            body: String::new(),
            body_file: None,
            compression: Compression::None,
            body_size_limit: None,
            tls_config: TlsConfig::default(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            authorization: None,
            oauth2: None,
            proxy: ProxySettings::default(),
            http_headers: BTreeMap::new(),
        }
    }
}

/// One step of a TCP or unix socket dialogue, or of a WebSocket one (`query_response`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryResponse {
    /// Wait for a line (a message, over WebSocket) matching this; its capture groups may be
    /// used in `send` (`${1}`).
    #[serde(deserialize_with = "de_opt_regex")]
    pub expect: Option<Regex>,
    /// Read exactly these bytes next and fail unless they are equal (`expect_bytes`; text,
    /// or `!!binary` base64). Excludes `expect`.
    #[serde(deserialize_with = "de_opt_bytes")]
    pub expect_bytes: Option<Vec<u8>>,
    /// Labels of a `probe_expect_info` series published when `expect` matches; values may
    /// use the capture groups (`${1}`).
    pub labels: Vec<ExpectLabel>,
    /// Line to send (a newline is appended; a WebSocket message as it is).
    pub send: Option<String>,
    /// `send: !!binary <base64>`: bytes sent as they are, with no newline added.
    #[serde(skip)]
    pub send_bytes: Option<Vec<u8>>,
    /// Upgrade the connection to TLS after this step.
    pub starttls: bool,
}

/// One label of `probe_expect_info` (`query_response[].labels`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectLabel {
    /// Label name.
    pub name: String,
    /// Label value, with capture-group references expanded.
    pub value: String,
}

/// Settings of the TCP prober (`tcp:`).
#[derive(Debug, Clone)]
pub struct TcpProbe {
    /// Preferred IP protocol for resolution.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol.
    pub ip_protocol_fallback: bool,
    /// Local address to connect from.
    pub source_ip_address: Option<IpAddr>,
    /// Dialogue after connecting.
    pub query_response: Vec<QueryResponse>,
    /// Start TLS right after connecting.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: TlsConfig,
}

impl Default for TcpProbe {
    fn default() -> Self {
        TcpProbe {
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            source_ip_address: None,
            query_response: Vec::new(),
            tls: false,
            tls_config: TlsConfig::default(),
        }
    }
}

/// Settings of the unix socket prober (`unix:`): the target is the socket's path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "unix")]
pub struct UnixProbe {
    /// Dialogue after connecting, as for TCP.
    pub query_response: Vec<QueryResponse>,
    /// Start TLS right after connecting.
    pub tls: bool,
    /// TLS settings; `server_name` is needed to verify the certificate (a path is no name).
    pub tls_config: TlsConfig,
}

/// Checks on one section of a DNS response (`validate_answer_rrs`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RrValidator {
    /// Fail if any record matches any of these.
    #[serde(deserialize_with = "de_regexes")]
    pub fail_if_matches_regexp: Vec<Regex>,
    /// blackbox_exporter's code (despite the name): fail if some record does not match
    /// one of these; no records pass.
    #[serde(deserialize_with = "de_regexes")]
    pub fail_if_all_match_regexp: Vec<Regex>,
    /// Fail if any record does not match one of these.
    #[serde(deserialize_with = "de_regexes")]
    pub fail_if_not_matches_regexp: Vec<Regex>,
    /// Fail if no record matches one of these.
    #[serde(deserialize_with = "de_regexes")]
    pub fail_if_none_matches_regexp: Vec<Regex>,
}

/// DNS transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsTransport {
    /// UDP (default).
    #[default]
    Udp,
    /// TCP.
    Tcp,
}

impl<'de> Deserialize<'de> for DnsTransport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "udp or tcp", parse_transport)
    }
}

fn parse_transport(s: &str) -> Result<DnsTransport, String> {
    {
        match s {
            "" | "udp" => Ok(DnsTransport::Udp),
            "tcp" => Ok(DnsTransport::Tcp),
            _ => Err(format!("invalid transport_protocol {s:?} (use udp or tcp)")),
        }
    }
}

/// Settings of the DNS prober (`dns:`).
#[derive(Debug, Clone)]
pub struct DnsProbe {
    /// Preferred IP protocol to reach the nameserver.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol.
    pub ip_protocol_fallback: bool,
    /// Query over TLS (DNS over TLS, TCP only).
    pub dns_over_tls: bool,
    /// TLS settings for `dns_over_tls`.
    pub tls_config: TlsConfig,
    /// Local address to query from.
    pub source_ip_address: Option<IpAddr>,
    /// UDP or TCP.
    pub transport_protocol: DnsTransport,
    /// Query class (`IN`).
    pub query_class: hickory_proto::rr::DNSClass,
    /// Name to query.
    pub query_name: String,
    /// Query type (`ANY` by default, as in blackbox_exporter).
    pub query_type: hickory_proto::rr::RecordType,
    /// Set the RD bit.
    pub recursion_desired: bool,
    /// Accepted response codes (numeric); `NOERROR` by default.
    pub valid_rcodes: Vec<u16>,
    /// Checks on the answer section.
    pub validate_answer_rrs: RrValidator,
    /// Checks on the authority section.
    pub validate_authority_rrs: RrValidator,
    /// Checks on the additional section.
    pub validate_additional_rrs: RrValidator,
}

impl Default for DnsProbe {
    fn default() -> Self {
        DnsProbe {
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            dns_over_tls: false,
            tls_config: TlsConfig::default(),
            source_ip_address: None,
            transport_protocol: DnsTransport::Udp,
            query_class: hickory_proto::rr::DNSClass::IN,
            query_name: String::new(),
            query_type: hickory_proto::rr::RecordType::ANY,
            recursion_desired: true,
            valid_rcodes: vec![0],
            validate_answer_rrs: RrValidator::default(),
            validate_authority_rrs: RrValidator::default(),
            validate_additional_rrs: RrValidator::default(),
        }
    }
}

/// Settings of the ICMP prober (`icmp:`).
#[derive(Debug, Clone)]
pub struct IcmpProbe {
    /// Preferred IP protocol.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol.
    pub ip_protocol_fallback: bool,
    /// Local address to send from.
    pub source_ip_address: Option<IpAddr>,
    /// Bytes of payload in the echo request (blackbox's default payload when 0).
    pub payload_size: usize,
    /// Set the don't-fragment bit (IPv4 only).
    pub dont_fragment: bool,
    /// IP TTL / hop limit; 0 means the system default.
    pub ttl: u8,
}

impl Default for IcmpProbe {
    fn default() -> Self {
        IcmpProbe {
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: true,
            source_ip_address: None,
            payload_size: 0,
            dont_fragment: false,
            ttl: 0,
        }
    }
}

/// A target that the exporter probes on its own schedule.
#[derive(Debug, Clone)]
pub struct Target {
    /// Unique name; used as the `instance` label and in `depends_on`.
    pub name: String,
    /// Name of the module in `modules:`.
    pub module: String,
    /// What to probe (URL, host:port, nameserver, host).
    pub target: String,
    /// How often to probe it.
    pub interval: Duration,
    /// Extra labels on every series for this target.
    pub labels: BTreeMap<String, String>,
    /// Names of targets this one needs.
    pub depends_on: Vec<String>,
}

/// A push monitor: something must push `/heartbeat/{name}` (POST, GET or HEAD) at least
/// every `max_silence`.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Unique name, the path segment of `/heartbeat/{name}`.
    pub name: String,
    /// Longest silence before it counts as down.
    pub max_silence: Duration,
}

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is larger than `--config.max-file-size`; it was not read further.
    #[error(
        "{path}: the file is larger than the {limit}-byte configuration file size limit; \
         raise --config.max-file-size or split the file"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file is not valid; the message names the file, line and column where known.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a configuration file of at most
    /// [`DEFAULT_MAX_CONFIG_FILE_BYTES`](crate::limits::DEFAULT_MAX_CONFIG_FILE_BYTES).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_limited(path, crate::limits::DEFAULT_MAX_CONFIG_FILE_BYTES)
    }

    /// Reads and validates a configuration file of at most `max_bytes` bytes
    /// (`--config.max-file-size`); a larger file is refused with [`ConfigError::TooLarge`]
    /// without being read into memory.
    pub fn load_limited(path: &Path, max_bytes: u64) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let io_error = |source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        // Bytes first: a cut through a multi-byte character must still read as "too large".
        // Only a regular file, opened without blocking: a FIFO would hang start-up, a
        // reload and the shutdown behind it.
        let mut bytes = Vec::new();
        lookout_web::files::open_regular(path)
            .and_then(|(f, _)| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
            .map_err(io_error)?;
        if bytes.len() as u64 > max_bytes {
            return Err(ConfigError::TooLarge {
                path: path.display().to_string(),
                limit: max_bytes,
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        // Target files are relative to the configuration file, as in Prometheus.
        let dir = path.parent().unwrap_or(Path::new(""));
        for f in config
            .target_groups
            .iter_mut()
            .flat_map(|g| g.sd.file.iter_mut())
        {
            f.set_directory(dir);
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            // Bounded before libyaml sees it: deep nesting costs its scanner O(depth²).
            lookout_web::yaml_depth::check(text)
                .map_err(|e| ConfigError::Invalid(format!("{origin}: {e}")))?;
            serde_yaml_ng::from_str(text).map_err(|e| yaml_error(origin, &e))?
        };
        let at = |path: &[Seg<'_>], message: String| -> ConfigError {
            match locate(text, path) {
                Some((line, col)) => {
                    ConfigError::Invalid(format!("{origin}:{line}:{col}: {message}"))
                }
                None => ConfigError::Invalid(format!("{origin}: {message}")),
            }
        };

        let modules = parse_modules(raw.modules, text, origin, &at)?;
        let targets = parse_targets(raw.targets, &modules, text, &at)?;
        let target_groups = parse_target_groups(raw.target_groups, &modules, &at)?;
        let heartbeats = parse_heartbeats(raw.heartbeats, &at)?;
        Ok(Config {
            modules,
            targets,
            target_groups,
            heartbeats,
            probe_policy: raw.probe_policy.unwrap_or_default(),
        })
    }
}

/// The `modules` section: each module checked, its `!!binary` tags applied; a tag no
/// module used is an error.
fn parse_modules(
    raw: Option<BTreeMap<String, RawModule>>,
    text: &str,
    origin: &str,
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<BTreeMap<String, Module>, ConfigError> {
    let mut modules = BTreeMap::new();
    let mut binary_tags = Vec::new();
    for (name, raw_module) in raw.unwrap_or_default() {
        let mut module = raw_module.into_module().map_err(|(keys, msg)| {
            let mut path = vec![Seg::Key("modules"), Seg::Key(&name)];
            path.extend(keys.iter().map(|k| Seg::Key(k)));
            at(&path, format!("module {name:?}: {msg}"))
        })?;
        binary_tags.extend(binary::apply(text, &name, &mut module, at)?);
        modules.insert(name, module);
    }
    if let Some(&unused) = binary::tag_positions(text)
        .iter()
        .find(|p| !binary_tags.contains(p))
    {
        return Err(binary::unused_tag_error(origin, unused));
    }
    Ok(modules)
}

/// The `targets` section: unique non-empty names, known modules, valid labels, and
/// dependencies that exist and do not form a cycle.
fn parse_targets(
    raw: Option<Vec<RawTarget>>,
    modules: &BTreeMap<String, Module>,
    text: &str,
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<Vec<Target>, ConfigError> {
    let mut targets = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, t) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |k| [Seg::Key("targets"), Seg::Index(i), Seg::Key(k)];
        if t.name.is_empty() {
            return Err(at(&key("name"), "target needs a non-empty name".into()));
        }
        if let Some(first) = seen.insert(t.name.clone(), i) {
            let first_at = locate(text, &[Seg::Key("targets"), Seg::Index(first)])
                .map(|(l, _)| format!(" (first defined on line {l})"))
                .unwrap_or_default();
            return Err(at(
                &key("name"),
                format!("duplicate target name {:?}{first_at}", t.name),
            ));
        }
        if !modules.contains_key(&t.module) {
            let known: Vec<&str> = modules.keys().map(String::as_str).collect();
            return Err(at(
                &key("module"),
                format!(
                    "target {:?} uses unknown module {:?} (modules: {})",
                    t.name,
                    t.module,
                    if known.is_empty() {
                        "none defined".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
        if t.target.is_empty() {
            return Err(at(
                &key("target"),
                format!("target {:?} needs a non-empty target", t.name),
            ));
        }
        if t.interval.is_zero() {
            return Err(at(
                &key("interval"),
                format!("target {:?}: interval must be greater than 0", t.name),
            ));
        }
        for label in t.labels.keys() {
            if !valid_label_name(label) {
                return Err(at(
                    &key("labels"),
                    format!(
                        "target {:?}: invalid label name {label:?} (use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                        t.name
                    ),
                ));
            }
        }
        targets.push(Target {
            name: t.name,
            module: t.module,
            target: t.target,
            interval: t.interval,
            labels: t.labels,
            depends_on: t.depends_on,
        });
    }
    check_dependencies(&targets, at)?;
    Ok(targets)
}

/// The `target_groups` section: unique names, known modules, valid discovery configs.
fn parse_target_groups(
    raw: Option<Vec<RawTargetGroup>>,
    modules: &BTreeMap<String, Module>,
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<Vec<crate::discovered::TargetGroupConfig>, ConfigError> {
    let mut target_groups = Vec::new();
    let mut seen_groups = BTreeSet::new();
    for (i, g) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |k| [Seg::Key("target_groups"), Seg::Index(i), Seg::Key(k)];
        if g.name.is_empty() || !seen_groups.insert(g.name.clone()) {
            return Err(at(
                &key("name"),
                format!(
                    "target group needs a unique, non-empty name (got {:?})",
                    g.name
                ),
            ));
        }
        if let Some(m) = &g.module
            && !modules.contains_key(m)
        {
            return Err(at(
                &key("module"),
                format!("target group {:?} uses unknown module {m:?}", g.name),
            ));
        }
        if g.interval.is_zero() {
            return Err(at(
                &key("interval"),
                format!("target group {:?}: interval must be greater than 0", g.name),
            ));
        }
        let sd = lookout_discovery::SdConfigs {
            file: g.file_sd_configs,
            http: g.http_sd_configs,
            dns: g.dns_sd_configs,
            kubernetes: g.kubernetes_sd_configs,
        };
        sd.validate().map_err(|m| {
            at(
                &[Seg::Key("target_groups"), Seg::Index(i)],
                format!("target group {:?}: {m}", g.name),
            )
        })?;
        target_groups.push(crate::discovered::TargetGroupConfig {
            name: g.name,
            module: g.module,
            interval: g.interval,
            sd,
            relabel_configs: g.relabel_configs,
        });
    }
    Ok(target_groups)
}

/// The `heartbeats` section: unique names usable as a URL path segment.
fn parse_heartbeats(
    raw: Option<Vec<RawHeartbeat>>,
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<Vec<Heartbeat>, ConfigError> {
    let mut heartbeats = Vec::new();
    let mut seen_hb = BTreeSet::new();
    for (i, h) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = |k| [Seg::Key("heartbeats"), Seg::Index(i), Seg::Key(k)];
        if h.name.is_empty()
            || !h
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(at(
                &key("name"),
                format!(
                    "invalid heartbeat name {:?}: use letters, digits, '-', '_' and '.' (it is a URL path segment)",
                    h.name
                ),
            ));
        }
        if !seen_hb.insert(h.name.clone()) {
            return Err(at(
                &key("name"),
                format!("duplicate heartbeat name {:?}", h.name),
            ));
        }
        if h.max_silence.is_zero() {
            return Err(at(
                &key("max_silence"),
                format!("heartbeat {:?}: max_silence must be greater than 0", h.name),
            ));
        }
        heartbeats.push(Heartbeat {
            name: h.name,
            max_silence: h.max_silence,
        });
    }
    Ok(heartbeats)
}

fn yaml_error(origin: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let full = e.to_string();
    match e.location() {
        Some(loc) => {
            // The message ends with " at line L column C"; the location moves to the front.
            let message = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(m, _)| m)
                .to_string();
            ConfigError::Invalid(format!(
                "{origin}:{}:{}: {message}",
                loc.line(),
                loc.column()
            ))
        }
        None => ConfigError::Invalid(format!("{origin}: {full}")),
    }
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Every `depends_on` names a known target other than itself, and there is no cycle.
fn check_dependencies(
    targets: &[Target],
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<(), ConfigError> {
    let index: HashMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    for (i, t) in targets.iter().enumerate() {
        for dep in &t.depends_on {
            if dep == &t.name {
                return Err(at(
                    &[Seg::Key("targets"), Seg::Index(i), Seg::Key("depends_on")],
                    format!("target {:?} depends on itself", t.name),
                ));
            }
            if !index.contains_key(dep.as_str()) {
                return Err(at(
                    &[Seg::Key("targets"), Seg::Index(i), Seg::Key("depends_on")],
                    format!("target {:?} depends on unknown target {dep:?}", t.name),
                ));
            }
        }
    }
    // Depth-first search with colours; a grey node reached again closes a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour = vec![Colour::White; targets.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        n: usize,
        targets: &[Target],
        index: &HashMap<&str, usize>,
        colour: &mut [Colour],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        colour[n] = Colour::Grey;
        stack.push(n);
        for dep in &targets[n].depends_on {
            let Some(&m) = index.get(dep.as_str()) else {
                continue;
            };
            match colour[m] {
                Colour::Grey => {
                    let start = stack.iter().position(|&x| x == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m);
                    return Some(cycle);
                }
                Colour::White => {
                    if let Some(c) = visit(m, targets, index, colour, stack) {
                        return Some(c);
                    }
                }
                Colour::Black => {}
            }
        }
        stack.pop();
        colour[n] = Colour::Black;
        None
    }
    for n in 0..targets.len() {
        if colour[n] == Colour::White {
            if let Some(cycle) = visit(n, targets, &index, &mut colour, &mut stack) {
                let names: Vec<&str> = cycle.iter().map(|&i| targets[i].name.as_str()).collect();
                return Err(at(
                    &[
                        Seg::Key("targets"),
                        Seg::Index(cycle[0]),
                        Seg::Key("depends_on"),
                    ],
                    format!("depends_on forms a cycle: {}", names.join(" -> ")),
                ));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Raw, strictly decoded shapes.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename = "config")]
struct RawConfig {
    #[serde(default, deserialize_with = "de_unique_modules")]
    modules: Option<BTreeMap<String, RawModule>>,
    targets: Option<Vec<RawTarget>>,
    target_groups: Option<Vec<RawTargetGroup>>,
    heartbeats: Option<Vec<RawHeartbeat>>,
    probe_policy: Option<crate::probe_guard::ProbePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "target")]
struct RawTarget {
    name: String,
    module: String,
    target: String,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    interval: Duration,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "target group")]
struct RawTargetGroup {
    name: String,
    #[serde(default)]
    module: Option<String>,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    interval: Duration,
    #[serde(default)]
    file_sd_configs: Vec<lookout_discovery::FileSdConfig>,
    #[serde(default)]
    http_sd_configs: Vec<lookout_discovery::HttpSdConfig>,
    #[serde(default)]
    dns_sd_configs: Vec<lookout_discovery::DnsSdConfig>,
    #[serde(default)]
    kubernetes_sd_configs: Vec<lookout_discovery::KubernetesSdConfig>,
    #[serde(default)]
    relabel_configs: Vec<lookout_discovery::relabel::RelabelConfig>,
}

fn default_interval() -> Duration {
    DEFAULT_TARGET_INTERVAL
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "heartbeat")]
struct RawHeartbeat {
    name: String,
    #[serde(deserialize_with = "de_duration")]
    max_silence: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "module")]
struct RawModule {
    prober: ProberKind,
    #[serde(default, deserialize_with = "de_duration")]
    timeout: Duration,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    tcp: Option<RawTcp>,
    #[serde(default)]
    dns: Option<RawDns>,
    #[serde(default)]
    icmp: Option<RawIcmp>,
    #[serde(default)]
    grpc: Option<grpc::RawGrpc>,
    #[serde(default)]
    unix: Option<UnixProbe>,
    #[serde(default)]
    websocket: Option<websocket::RawWebsocket>,
}

/// A module-level problem: the key path inside the module, and the message.
type ModuleError = (Vec<&'static str>, String);

impl RawModule {
    fn into_module(self) -> Result<Module, ModuleError> {
        let mut m = Module {
            prober: self.prober,
            timeout: self.timeout,
            ..Module::default()
        };
        if let Some(h) = self.http {
            m.http = h.into_probe()?;
        }
        if let Some(t) = self.tcp {
            validate_tls(&t.tls_config).map_err(|(k, msg)| (prefix("tcp", k), msg))?;
            validate_steps("tcp", &t.query_response)?;
            m.tcp = TcpProbe {
                preferred_ip_protocol: t.preferred_ip_protocol.unwrap_or_default(),
                ip_protocol_fallback: t.ip_protocol_fallback.unwrap_or(true),
                source_ip_address: t.source_ip_address,
                query_response: t.query_response,
                tls: t.tls,
                tls_config: t.tls_config,
            };
        }
        if let Some(g) = self.grpc {
            m.grpc = g.into_probe()?;
        }
        if let Some(u) = self.unix {
            validate_tls(&u.tls_config).map_err(|(k, msg)| (prefix("unix", k), msg))?;
            validate_steps("unix", &u.query_response)?;
            m.unix = u;
        }
        if let Some(w) = self.websocket {
            m.websocket = w.into_probe()?;
        }
        if let Some(d) = self.dns {
            m.dns = d.into_probe()?;
        } else if m.prober == ProberKind::Dns {
            return Err((
                vec!["prober"],
                "query name must be set for DNS module (dns: query_name:)".into(),
            ));
        }
        if let Some(i) = self.icmp {
            if i.ttl < 0 || i.ttl > 255 {
                return Err((
                    vec!["icmp", "ttl"],
                    format!("\"ttl\" must be between 0 and 255, not {}", i.ttl),
                ));
            }
            let ttl = u8::try_from(i.ttl).unwrap_or(0);
            m.icmp = IcmpProbe {
                preferred_ip_protocol: i.preferred_ip_protocol.unwrap_or_default(),
                ip_protocol_fallback: i.ip_protocol_fallback.unwrap_or(true),
                source_ip_address: i.source_ip_address,
                payload_size: i.payload_size,
                dont_fragment: i.dont_fragment,
                ttl,
            };
        }
        Ok(m)
    }
}

/// Checks `basic_auth` and `authorization` of the HTTP client settings at `section`
/// (`http`, or `websocket`, `http_config`): each secret comes from the text or a file.
fn validate_auth(
    section: &[&'static str],
    basic: Option<&BasicAuth>,
    authorization: Option<&Authorization>,
) -> Result<(), ModuleError> {
    let at = |key: &'static str| [section, &[key]].concat();
    if let Some(b) = basic {
        if !b.username.is_empty() && b.username_file.is_some() {
            return Err((
                at("basic_auth"),
                "at most one of basic_auth username & username_file must be configured".into(),
            ));
        }
        if !b.password.is_empty() && b.password_file.is_some() {
            return Err((
                at("basic_auth"),
                "at most one of basic_auth password & password_file must be configured".into(),
            ));
        }
    }
    if let Some(a) = authorization {
        if a.kind.eq_ignore_ascii_case("basic") {
            return Err((
                at("authorization"),
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into(),
            ));
        }
        if !a.credentials.is_empty() && a.credentials_file.is_some() {
            return Err((
                at("authorization"),
                "at most one of authorization credentials & credentials_file must be configured"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Checks a `tcp` or `unix` dialogue: `expect` and `expect_bytes` exclude each other.
fn validate_steps(section: &'static str, steps: &[QueryResponse]) -> Result<(), ModuleError> {
    for (i, step) in steps.iter().enumerate() {
        if step.expect.is_some() && step.expect_bytes.is_some() {
            return Err((
                vec![section, "query_response"],
                format!("step {i}: expect and expect_bytes are mutually exclusive"),
            ));
        }
    }
    Ok(())
}

/// A setting Lookout knows from blackbox_exporter but does not implement.
#[derive(Debug)]
struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const MESSAGE: &str =
            "this setting of blackbox_exporter is not supported by Lookout; remove it";
        impl<'de> de::Visitor<'de> for V {
            type Value = Unsupported;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("nothing")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Unsupported, E> {
                Err(E::custom(MESSAGE))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Unsupported, E> {
                Err(E::custom(MESSAGE))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Unsupported, E> {
                Err(E::custom(MESSAGE))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Unsupported, E> {
                Err(E::custom(MESSAGE))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Unsupported, E> {
                Err(E::custom(MESSAGE))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Unsupported, A::Error> {
                Err(de::Error::custom(MESSAGE))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Unsupported, A::Error> {
                Err(de::Error::custom(MESSAGE))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "http")]
struct RawHttp {
    valid_status_codes: Vec<u16>,
    valid_http_versions: Vec<String>,
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
    skip_resolve_phase_with_proxy: bool,
    no_follow_redirects: Option<bool>,
    follow_redirects: Option<bool>,
    enable_http2: Option<bool>,
    fail_if_ssl: bool,
    fail_if_not_ssl: bool,
    method: Option<String>,
    headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "de_regexes")]
    fail_if_body_matches_regexp: Vec<Regex>,
    #[serde(deserialize_with = "de_regexes")]
    fail_if_body_not_matches_regexp: Vec<Regex>,
    fail_if_header_matches: Vec<HeaderMatch>,
    fail_if_header_not_matches: Vec<HeaderMatch>,
    body: String,
    body_file: Option<PathBuf>,
    compression: Compression,
    #[serde(deserialize_with = "de_opt_size")]
    body_size_limit: Option<u64>,
    tls_config: TlsConfig,
    basic_auth: Option<BasicAuth>,
    bearer_token: Option<String>,
    bearer_token_file: Option<PathBuf>,
    authorization: Option<Authorization>,
    oauth2: Option<http_client::RawOAuth2>,
    proxy_url: Option<ProxyUrl>,
    no_proxy: String,
    proxy_from_environment: bool,
    proxy_connect_header: BTreeMap<String, Vec<String>>,
    http_headers: BTreeMap<String, HeaderValues>,
    #[serde(deserialize_with = "de_no_http3")]
    enable_http3: bool,
    #[serde(deserialize_with = "de_opt_cel")]
    fail_if_body_json_matches_cel: Option<CelProgram>,
    #[serde(deserialize_with = "de_opt_cel")]
    fail_if_body_json_not_matches_cel: Option<CelProgram>,
}

impl RawHttp {
    /// The settings that cannot go together or are malformed: more than one kind of
    /// authentication, body with body_file, an `Accept-Encoding` header against
    /// `compression`, invalid headers, unknown HTTP versions.
    fn check(&self) -> Result<(), ModuleError> {
        let auth_count = [
            self.basic_auth.is_some(),
            self.oauth2.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if auth_count > 1 {
            return Err((
                vec!["http"],
                "at most one of basic_auth, oauth2, authorization, bearer_token & bearer_token_file must be configured".into(),
            ));
        }
        validate_auth(
            &["http"],
            self.basic_auth.as_ref(),
            self.authorization.as_ref(),
        )?;
        if !self.body.is_empty() && self.body_file.is_some() {
            return Err((
                vec!["http", "body_file"],
                "setting body and body_file both are not allowed".into(),
            ));
        }
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("accept-encoding")
                && !accept_encoding_allows(value, self.compression)
            {
                return Err((
                    vec!["http", "compression"],
                    format!(
                        "invalid configuration \"Accept-Encoding: {value}\", \"compression: {}\"",
                        self.compression.as_str()
                    ),
                ));
            }
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err((
                    vec!["http", "headers"],
                    format!("invalid header {name:?}: {value:?}"),
                ));
            }
        }
        if let Some(method) = &self.method
            && http::Method::from_bytes(method.as_bytes()).is_err()
        {
            return Err((vec!["http", "method"], format!("invalid method {method:?}")));
        }
        for v in &self.valid_http_versions {
            if !matches!(
                v.as_str(),
                "HTTP/1.0" | "HTTP/1.1" | "HTTP/2" | "HTTP/2.0" | "HTTP/3" | "HTTP/3.0"
            ) {
                return Err((
                    vec!["http", "valid_http_versions"],
                    format!("unknown HTTP version {v:?} (use HTTP/1.0, HTTP/1.1 or HTTP/2.0)"),
                ));
            }
        }
        Ok(())
    }

    fn into_probe(self) -> Result<HttpProbe, ModuleError> {
        let _ = (self.enable_http3,);
        validate_tls(&self.tls_config).map_err(|(k, msg)| (prefix("http", k), msg))?;
        self.check()?;
        let method = self.method.unwrap_or_else(|| "GET".into());
        http_client::check_http_headers(&self.http_headers)?;
        let proxy = http_client::proxy_settings(
            &["http"],
            self.proxy_url,
            http_client::RawProxy {
                no_proxy: self.no_proxy,
                proxy_from_environment: self.proxy_from_environment,
                proxy_connect_header: self.proxy_connect_header,
            },
        )?;
        let oauth2 = self.oauth2.map(|o| o.into_oauth2()).transpose()?;
        let follow_redirects = match (self.no_follow_redirects, self.follow_redirects) {
            (Some(no), _) => !no,
            (None, Some(f)) => f,
            (None, None) => true,
        };
        Ok(HttpProbe {
            valid_status_codes: self.valid_status_codes,
            valid_http_versions: self.valid_http_versions,
            preferred_ip_protocol: self.preferred_ip_protocol.unwrap_or_default(),
            ip_protocol_fallback: self.ip_protocol_fallback.unwrap_or(true),
            skip_resolve_phase_with_proxy: self.skip_resolve_phase_with_proxy,
            follow_redirects,
            enable_http2: self.enable_http2.unwrap_or(true),
            fail_if_ssl: self.fail_if_ssl,
            fail_if_not_ssl: self.fail_if_not_ssl,
            method,
            headers: self.headers,
            fail_if_body_matches_regexp: self.fail_if_body_matches_regexp,
            fail_if_body_not_matches_regexp: self.fail_if_body_not_matches_regexp,
            fail_if_body_json_matches_cel: self.fail_if_body_json_matches_cel,
            fail_if_body_json_not_matches_cel: self.fail_if_body_json_not_matches_cel,
            fail_if_header_matches: self.fail_if_header_matches,
            fail_if_header_not_matches: self.fail_if_header_not_matches,
            body: self.body,
            body_file: self.body_file,
            compression: self.compression,
            body_size_limit: self.body_size_limit.filter(|&n| n > 0),
            tls_config: self.tls_config,
            basic_auth: self.basic_auth,
            bearer_token: self.bearer_token,
            bearer_token_file: self.bearer_token_file,
            authorization: self.authorization,
            oauth2,
            proxy,
            http_headers: self.http_headers,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "tcp")]
struct RawTcp {
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
    source_ip_address: Option<IpAddr>,
    query_response: Vec<QueryResponse>,
    tls: bool,
    tls_config: TlsConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "dns")]
struct RawDns {
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
    dns_over_tls: bool,
    tls_config: TlsConfig,
    source_ip_address: Option<IpAddr>,
    transport_protocol: DnsTransport,
    query_class: Option<String>,
    query_name: String,
    query_type: Option<String>,
    recursion_desired: Option<bool>,
    valid_rcodes: Option<Vec<String>>,
    validate_answer_rrs: RrValidator,
    validate_authority_rrs: RrValidator,
    validate_additional_rrs: RrValidator,
}

impl RawDns {
    fn into_probe(self) -> Result<DnsProbe, ModuleError> {
        use std::str::FromStr;
        validate_tls(&self.tls_config).map_err(|(k, msg)| (prefix("dns", k), msg))?;
        if self.query_name.is_empty() {
            return Err((
                vec!["dns"],
                "query name must be set for DNS module (dns: query_name:)".into(),
            ));
        }
        if self.dns_over_tls && self.transport_protocol != DnsTransport::Tcp {
            return Err((
                vec!["dns", "dns_over_tls"],
                "dns_over_tls needs transport_protocol: tcp".into(),
            ));
        }
        // Names in upper case only, as blackbox_exporter (miekg/dns' tables) takes them.
        let class_text = self.query_class.unwrap_or_else(|| "IN".into());
        // (hickory's from_str also wants upper case: it asserts it.)
        let upper = |t: &str| !t.chars().any(|c| c.is_ascii_lowercase());
        let query_class = Some(&class_text)
            .filter(|t| upper(t))
            .ok_or(())
            .and_then(|t| hickory_proto::rr::DNSClass::from_str(t).map_err(drop))
            .map_err(|_| {
                (
                    vec!["dns", "query_class"],
                    format!("query class {class_text:?} is not valid"),
                )
            })?;
        let type_text = self.query_type.unwrap_or_else(|| "ANY".into());
        let query_type = Some(&type_text)
            .filter(|t| upper(t))
            .and_then(|t| hickory_proto::rr::RecordType::from_str(t).ok())
            .filter(|t| !matches!(t, hickory_proto::rr::RecordType::Unknown(_)))
            .ok_or_else(|| {
                (
                    vec!["dns", "query_type"],
                    format!("query type {type_text:?} is not valid"),
                )
            })?;
        let mut valid_rcodes = Vec::new();
        for name in self.valid_rcodes.unwrap_or_else(|| vec!["NOERROR".into()]) {
            let code = rcode_from_name(&name).ok_or_else(|| {
                (
                    vec!["dns", "valid_rcodes"],
                    format!("invalid rcode {name:?} (e.g. NOERROR, NXDOMAIN, SERVFAIL, REFUSED)"),
                )
            })?;
            valid_rcodes.push(code);
        }
        Ok(DnsProbe {
            preferred_ip_protocol: self.preferred_ip_protocol.unwrap_or_default(),
            ip_protocol_fallback: self.ip_protocol_fallback.unwrap_or(true),
            dns_over_tls: self.dns_over_tls,
            tls_config: self.tls_config,
            source_ip_address: self.source_ip_address,
            transport_protocol: self.transport_protocol,
            query_class,
            query_name: self.query_name,
            query_type,
            recursion_desired: self.recursion_desired.unwrap_or(true),
            valid_rcodes,
            validate_answer_rrs: self.validate_answer_rrs,
            validate_authority_rrs: self.validate_authority_rrs,
            validate_additional_rrs: self.validate_additional_rrs,
        })
    }
}

fn prefix(section: &'static str, mut keys: Vec<&'static str>) -> Vec<&'static str> {
    keys.insert(0, section);
    keys
}

/// Prometheus' `TLSConfig.Validate`: inline and file forms exclude each other, and a client
/// certificate needs its key.
fn validate_tls(t: &TlsConfig) -> Result<(), ModuleError> {
    let err = |msg: &str| Err((vec!["tls_config"], msg.to_string()));
    if t.ca.is_some() && t.ca_file.is_some() {
        return err("at most one of ca and ca_file must be configured");
    }
    if t.cert.is_some() && t.cert_file.is_some() {
        return err("at most one of cert and cert_file must be configured");
    }
    if t.key.is_some() && t.key_file.is_some() {
        return err("at most one of key and key_file must be configured");
    }
    let has_cert = t.cert.is_some() || t.cert_file.is_some();
    let has_key = t.key.is_some() || t.key_file.is_some();
    if has_cert && !has_key {
        return err(
            "exactly one of key or key_file must be configured when a client certificate is configured",
        );
    }
    if has_key && !has_cert {
        return err(
            "exactly one of cert or cert_file must be configured when a client key is configured",
        );
    }
    if let (Some(min), Some(max)) = (t.min_version, t.max_version) {
        if min > max {
            return err("max_version must be greater than or equal to min_version");
        }
    }
    Ok(())
}

/// Whether an `Accept-Encoding` header admits `compression` (blackbox_exporter's
/// `isCompressionAcceptEncodingValid`): the first entry, by quality, that names it or `*`
/// must have a quality above zero.
fn accept_encoding_allows(header: &str, compression: Compression) -> bool {
    if compression == Compression::None || header.trim().is_empty() {
        return true;
    }
    let mut entries: Vec<(String, f32)> = header
        .split(',')
        .map(|part| match part.rsplit_once(';') {
            None => (part.trim().to_ascii_lowercase(), 1.0),
            Some((coding, q)) => {
                let q = q.trim();
                let q = q.strip_prefix("q=").unwrap_or(q);
                (coding.trim().to_ascii_lowercase(), q.parse().unwrap_or(0.0))
            }
        })
        .collect();
    entries.sort_by(|a, b| b.1.total_cmp(&a.1));
    entries
        .iter()
        .find(|(coding, _)| coding == compression.as_str() || coding == "*")
        .is_some_and(|(_, q)| *q > 0.0)
}

/// DNS response code names and numbers (RFC 6895 registry, the names miekg/dns uses).
pub const RCODES: &[(&str, u16)] = &[
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
    ("BADSIG", 16),
    ("BADKEY", 17),
    ("BADTIME", 18),
    ("BADMODE", 19),
    ("BADNAME", 20),
    ("BADALG", 21),
    ("BADTRUNC", 22),
    ("BADCOOKIE", 23),
];

/// The number of a response code name (`NXDOMAIN` → 3). Upper case only: blackbox_exporter
/// (miekg/dns' table) knows no `nxdomain`.
pub fn rcode_from_name(name: &str) -> Option<u16> {
    RCODES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

/// The name of a response code (3 → `NXDOMAIN`), or `RCODE<n>` for unnamed ones.
pub fn rcode_name(code: u16) -> String {
    RCODES
        .iter()
        .find(|&&(_, c)| c == code)
        .map_or_else(|| format!("RCODE{code}"), |(n, _)| (*n).to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "icmp")]
struct RawIcmp {
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
    source_ip_address: Option<IpAddr>,
    payload_size: usize,
    dont_fragment: bool,
    ttl: i64,
}

// ---------------------------------------------------------------------------------------
// Field decoders: errors raised here carry serde_yaml_ng's line and column.

/// Decodes a scalar with `parse` inside the visitor, so that serde_yaml_ng puts the scalar's
/// own line and column on the error (an error raised after decoding would get the line of
/// the enclosing mapping).
fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<'de, T> de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, parse })
}

/// A regular expression, compiled while decoding.
struct Pattern(Regex);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a regular expression", compile).map(Pattern)
    }
}

/// `enable_http3`: `false` is accepted; `true` (HTTP/3 over QUIC) is refused at its line.
fn de_no_http3<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("false")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
            if v {
                Err(E::custom(
                    "enable_http3: true is not supported by Lookout (no HTTP/3 over QUIC); remove it or set it to false",
                ))
            } else {
                Ok(false)
            }
        }
    }
    d.deserialize_bool(V)
}

/// `modules:` where a name given twice is an error (as in blackbox_exporter's YAML decoder),
/// not a module silently replaced by the later one.
fn de_unique_modules<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, RawModule>>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<BTreeMap<String, RawModule>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a mapping of module names to modules")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(V)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut modules = BTreeMap::new();
            while let Some(name) = map.next_key::<String>()? {
                if modules.contains_key(&name) {
                    return Err(de::Error::custom(format!(
                        "module {name:?} is defined more than once"
                    )));
                }
                let module: RawModule = map.next_value()?;
                modules.insert(name, module);
            }
            Ok(Some(modules))
        }
    }
    d.deserialize_option(V)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(d, "a duration such as 15s", parse_duration)
}

fn compile(pattern: &str) -> Result<Regex, String> {
    lookout_promql::re2::compile(pattern)
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

fn de_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Regex, D::Error> {
    Pattern::deserialize(d).map(|p| p.0)
}

fn de_opt_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
    Ok(Option::<Pattern>::deserialize(d)?
        .map(|p| p.0)
        .filter(|r| !r.as_str().is_empty()))
}

/// Text read as its UTF-8 bytes; empty means unset (as blackbox_exporter's `!= ""`).
fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(String::into_bytes))
}

fn de_regexes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Regex>, D::Error> {
    Ok(Vec::<Pattern>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// A CEL expression, compiled (and bounded) while decoding.
fn de_opt_cel<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CelProgram>, D::Error> {
    struct Cel(CelProgram);
    impl<'de> Deserialize<'de> for Cel {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            scalar(d, "a CEL expression", CelProgram::compile).map(Cel)
        }
    }
    Ok(Option::<Cel>::deserialize(d)?.map(|c| c.0))
}

/// A size: a number of bytes, or a number with a base-2 unit (`512KB`, `1MiB`, `2GB`), as
/// blackbox_exporter's `units.Base2Bytes` reads it.
fn de_opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Number(n)) => Ok(Some(n)),
        Some(Size::Text(s)) => parse_size(&s).map(Some).map_err(de::Error::custom),
    }
}

/// Parses a byte size with an optional base-2 unit (`B`, `KB`/`KiB`, `MB`/`MiB`, …).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(s.len(), |(i, _)| i);
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: write e.g. 1024, 512KB or 10MiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        "T" | "TB" | "TiB" => 40,
        _ => return Err(format!("invalid size {text:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {text:?} is too large"))
}
