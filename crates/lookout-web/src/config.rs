//! The web configuration file (`--web.config.file`) in the format of Prometheus's
//! exporter-toolkit (`docs/web-configuration.md` there), decoded strictly: an unknown key, a
//! bad value or a missing file is an error naming the file, line and column.
//!
//! Lookout reads the same keys as exporter-toolkit, with these differences:
//!
//! * `client_allowed_sans`, `rate_limit` and `curve_preferences: [CurveP521]` are refused
//!   with an error that says so, never silently ignored.
//! * `client_auth_type` `VerifyClientCertIfGiven` and `RequireAndVerifyClientCert` need
//!   `client_ca_file` (or `client_ca`): the system roots are never trusted for clients.
//! * `min_version: TLS10`/`TLS11` are refused: rustls speaks TLS 1.2 and 1.3 only.
//! * Lookout extension: `basic_auth_scope: all | write` (default `all`). With `write`, only
//!   requests that change something (any method but `GET`, `HEAD` and `OPTIONS`:
//!   `POST /-/reload`, `POST /heartbeat/NAME`), and every method on the paths a server
//!   declares as writes (the exporter's `/heartbeat/NAME`, which takes GET and HEAD too),
//!   need a password; reads stay open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Response headers that may be configured, and the values allowed where the set is closed
/// (the list exporter-toolkit allows).
pub const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Largest web configuration file read (1 MiB); a larger one is refused unread.
pub const MAX_WEB_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Largest `cert_file`, `key_file` or `client_ca_file` read (1 MiB).
pub const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// Reads the file that `setting` names (`--web.config.file`, `cert_file`, ...), at most
/// `limit` bytes. Only regular files are read (a FIFO would block the start or a reload, a
/// device could be endless): anything else is an `InvalidInput` error "is not a regular
/// file". A larger file is not read past the limit and is an `InvalidData` error naming
/// the limit and the setting.
pub(crate) fn read_capped(path: &Path, setting: &str, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file is larger than the {limit}-byte limit on {setting}; check that it is the right file"
            ),
        )
    };
    // Never blocks: a FIFO or a device is refused before and after opening.
    let (file, len) = crate::files::open_regular(path)?;
    if len > limit {
        return Err(too_large());
    }
    // The file may have grown since: the read itself stops one byte past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A web configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid; the message names the file, line and column where known.
    #[error("{0}")]
    Invalid(String),
}

/// Which requests need a basic-auth password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthScope {
    /// Every request (exporter-toolkit's behaviour).
    #[default]
    All,
    /// Only requests whose method is not `GET`, `HEAD` or `OPTIONS`, and every request to
    /// a path the server declares a write (`WebServer::with_write_paths`).
    Write,
}

/// `client_auth_type`, Go's `tls.ClientAuthType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No certificate asked for.
    #[default]
    NoClientCert,
    /// A certificate is asked for, not required and not verified.
    RequestClientCert,
    /// A certificate is required but not verified against a CA.
    RequireAnyClientCert,
    /// A certificate is optional; when sent it must verify against the client CA.
    VerifyClientCertIfGiven,
    /// A certificate is required and must verify against the client CA.
    RequireAndVerifyClientCert,
}

/// A TLS protocol version (`min_version`, `max_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS12`.
    Tls12,
    /// `TLS13`.
    Tls13,
}

/// `tls_server_config`.
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    /// Inline PEM certificate chain (`cert`).
    pub cert: Option<String>,
    /// Inline PEM private key (`key`).
    pub key: Option<String>,
    /// Inline PEM client CA certificates (`client_ca`).
    pub client_ca: Option<String>,
    /// `cert_file`, relative paths resolved against the web configuration's directory.
    pub cert_file: Option<PathBuf>,
    /// `key_file`.
    pub key_file: Option<PathBuf>,
    /// `client_ca_file`.
    pub client_ca_file: Option<PathBuf>,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// `min_version` (TLS12 by default).
    pub min_version: TlsVersion,
    /// `max_version` (TLS13 by default).
    pub max_version: TlsVersion,
    /// `cipher_suites` (Go names, TLS 1.2 only; TLS 1.3 suites are always on).
    pub cipher_suites: Vec<String>,
    /// `curve_preferences` (`CurveP256`, `CurveP384`, `X25519`).
    pub curve_preferences: Vec<String>,
    /// `prefer_server_cipher_suites` (true by default).
    pub prefer_server_cipher_suites: bool,
}

impl Default for TlsServerConfig {
    fn default() -> Self {
        TlsServerConfig {
            cert: None,
            key: None,
            client_ca: None,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::NoClientCert,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            curve_preferences: Vec::new(),
            prefer_server_cipher_suites: true,
        }
    }
}

impl TlsServerConfig {
    /// Whether any TLS setting is present (exporter-toolkit's `IsEnabled`).
    pub fn is_enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth != ClientAuth::NoClientCert
    }

    /// The files this configuration reads (to notice when they change).
    pub fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// `http_server_config`.
#[derive(Debug, Clone)]
pub struct HttpServerConfig {
    /// Offer HTTP/2 over TLS (ALPN `h2`); true by default.
    pub http2: bool,
    /// Headers added to every response.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

/// A whole web configuration file.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    /// `tls_server_config`; TLS is served when [`TlsServerConfig::is_enabled`].
    pub tls: TlsServerConfig,
    /// `http_server_config`.
    pub http: HttpServerConfig,
    /// `basic_auth_users`: user name → bcrypt hash. Empty means no authentication.
    pub users: BTreeMap<String, String>,
    /// `basic_auth_scope` (Lookout extension).
    pub auth_scope: AuthScope,
}

impl WebConfig {
    /// Reads and validates a web configuration file of at most
    /// [`MAX_WEB_CONFIG_FILE_BYTES`], including that the certificate, key and CA files it
    /// names load.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let io_error = |source| WebConfigError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes =
            read_capped(path, "--web.config.file", MAX_WEB_CONFIG_FILE_BYTES).map_err(io_error)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            io_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the file is not UTF-8 text: {}", e.utf8_error()),
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let config = WebConfig::parse(&text, &path.display().to_string(), base)?;
        if config.tls.is_enabled() {
            crate::tls::server_config(&config).map_err(|e| {
                let message = format!("tls_server_config: {e}");
                WebConfigError::Invalid(at_key(
                    &text,
                    &path.display().to_string(),
                    "tls_server_config",
                    &message,
                ))
            })?;
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `origin` names it in errors and relative
    /// file names are resolved against `base`. Files are not read.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<WebConfig, WebConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            // Bounded before libyaml sees it: deep nesting costs its scanner O(depth²).
            crate::yaml_depth::check(text)
                .map_err(|e| WebConfigError::Invalid(format!("{origin}: {e}")))?;
            serde_yaml_ng::from_str(text).map_err(|e| yaml_error(text, origin, &e))?
        };
        let invalid = |key: &str, message: String| {
            WebConfigError::Invalid(at_key(text, origin, key, &message))
        };

        let t = raw.tls_server_config.unwrap_or_default();
        let join = |p: Option<String>| -> Option<PathBuf> {
            p.filter(|s| !s.is_empty()).map(|s| {
                let p = PathBuf::from(s);
                if p.is_absolute() { p } else { base.join(p) }
            })
        };
        let empty_none = |s: Option<String>| s.filter(|v| !v.is_empty());
        if t.client_allowed_sans.is_some() {
            return Err(invalid(
                "client_allowed_sans",
                "client_allowed_sans is not supported by Lookout; issue client certificates from a dedicated client_ca_file instead".into(),
            ));
        }
        let tls = TlsServerConfig {
            cert: empty_none(t.cert),
            key: empty_none(t.key),
            client_ca: empty_none(t.client_ca),
            cert_file: join(t.cert_file),
            key_file: join(t.key_file),
            client_ca_file: join(t.client_ca_file),
            client_auth: t.client_auth_type.unwrap_or_default(),
            min_version: t.min_version.unwrap_or(TlsVersion::Tls12),
            max_version: t.max_version.unwrap_or(TlsVersion::Tls13),
            cipher_suites: t.cipher_suites.unwrap_or_default(),
            curve_preferences: t.curve_preferences.unwrap_or_default(),
            prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
        };
        validate_tls(&tls, &invalid)?;

        let http = http_server_config(raw.http_server_config.unwrap_or_default(), &invalid)?;

        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if let Err(e) = bcrypt_cost(hash) {
                return Err(invalid(
                    user,
                    format!("basic_auth_users: user {user:?}: {e}"),
                ));
            }
        }
        Ok(WebConfig {
            tls,
            http,
            users,
            auth_scope: raw.basic_auth_scope.unwrap_or_default(),
        })
    }
}

/// Makes the error for a setting: its key (located in the text) and the message.
type Invalid<'a> = dyn Fn(&str, String) -> WebConfigError + 'a;

/// The TLS settings that cannot go together, when TLS is on: a certificate and key each
/// given once, client authentication with a CA to verify against, versions in order.
fn validate_tls(tls: &TlsServerConfig, invalid: &Invalid<'_>) -> Result<(), WebConfigError> {
    if !tls.is_enabled() {
        return Ok(());
    }
    if tls.cert.is_none() && tls.cert_file.is_none() {
        return Err(invalid(
            "tls_server_config",
            "missing one of cert or cert_file".into(),
        ));
    }
    if tls.key.is_none() && tls.key_file.is_none() {
        return Err(invalid(
            "tls_server_config",
            "missing one of key or key_file".into(),
        ));
    }
    if tls.cert.is_some() && tls.cert_file.is_some() {
        return Err(invalid(
            "cert_file",
            "set cert or cert_file, not both".into(),
        ));
    }
    if tls.key.is_some() && tls.key_file.is_some() {
        return Err(invalid("key_file", "set key or key_file, not both".into()));
    }
    if tls.client_ca.is_some() && tls.client_ca_file.is_some() {
        return Err(invalid(
            "client_ca_file",
            "set client_ca or client_ca_file, not both".into(),
        ));
    }
    let has_ca = tls.client_ca.is_some() || tls.client_ca_file.is_some();
    match tls.client_auth {
        ClientAuth::NoClientCert if has_ca => {
            return Err(invalid(
                "client_ca_file",
                "client CA's have been configured without a client_auth_type (use RequireAndVerifyClientCert)".into(),
            ));
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert if !has_ca => {
            return Err(invalid(
                "client_auth_type",
                format!(
                    "client_auth_type {:?} needs client_ca_file (or client_ca) to verify client certificates against",
                    tls.client_auth
                ),
            ));
        }
        _ => {}
    }
    if tls.min_version > tls.max_version {
        return Err(invalid(
            "min_version",
            "min_version is newer than max_version".into(),
        ));
    }
    Ok(())
}

/// `http_server_config`: only the headers Prometheus's exporter-toolkit allows, with its
/// allowed values.
fn http_server_config(
    h: RawHttp,
    invalid: &Invalid<'_>,
) -> Result<HttpServerConfig, WebConfigError> {
    let headers = h.headers.unwrap_or_default();
    for (name, value) in &headers {
        let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(invalid(
                name,
                format!(
                    "HTTP header {name:?} can not be configured (allowed: {})",
                    names.join(", ")
                ),
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(invalid(
                name,
                format!("invalid value for {name}: expected one of {allowed:?}, got {value:?}"),
            ));
        }
    }
    Ok(HttpServerConfig {
        http2: h.http2.unwrap_or(true),
        headers,
    })
}

/// The cost of a bcrypt hash, or why it is not one (what Go's `bcrypt.Cost` checks).
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    let bad = || {
        "the password must be a bcrypt hash ($2y$10$…), e.g. from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`".to_string()
    };
    let parts: Vec<&str> = hash.split('$').collect();
    if parts.len() != 4 || !parts[0].is_empty() || !matches!(parts[1], "2a" | "2b" | "2y" | "2x") {
        return Err(bad());
    }
    let cost: u32 = parts[2].parse().map_err(|_| bad())?;
    if !(4..=31).contains(&cost) || parts[3].len() != 53 {
        return Err(bad());
    }
    Ok(cost)
}

/// `origin:line:col: message`, the position of the first line holding `key:`.
fn at_key(text: &str, origin: &str, key: &str, message: &str) -> String {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let trimmed = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
            if let Some(rest) = trimmed.strip_prefix(quoted.as_str()) {
                if rest.trim_start().starts_with(':') {
                    let col = line.len() - line.trim_start().len() + 1;
                    return format!("{origin}:{}:{col}: {message}", i + 1);
                }
            }
        }
    }
    format!("{origin}: {message}")
}

fn yaml_error(text: &str, origin: &str, e: &serde_yaml_ng::Error) -> WebConfigError {
    match crate::yaml_locate::decode_error_parts(e) {
        (Some(at), message) => {
            // A value refused by one of the parsers below is reported by serde at its
            // mapping; point at the value itself when it can be found after that position.
            let (line, column) = quoted_value(&message)
                .and_then(|v| find_value(text, at.0, v))
                .unwrap_or(at);
            WebConfigError::Invalid(format!("{origin}:{line}:{column}: {message}"))
        }
        (None, message) => WebConfigError::Invalid(format!("{origin}: {message}")),
    }
}

/// The first `"…"` in an error message (the refused value).
fn quoted_value(message: &str) -> Option<&str> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    Some(&message[start..start + len])
}

/// 1-based line and column of `value` written as a mapping value (`key: value`, quoted or
/// not), searching from line `from`.
fn find_value(text: &str, from: usize, value: &str) -> Option<(usize, usize)> {
    if value.is_empty() {
        return None;
    }
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, line)| {
            let (_, after) = line.split_once(':')?;
            let unquoted = after.trim().trim_matches(|c| c == '"' || c == '\'');
            (unquoted == value).then(|| {
                let leading = after.len() - after.trim_start().len();
                (i + 1, line.len() - after.len() + leading + 1)
            })
        })
}

// ---------------------------------------------------------------------------------------
// Raw, strictly decoded shapes.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    basic_auth_scope: Option<AuthScope>,
    #[serde(default, deserialize_with = "unsupported_rate_limit")]
    #[allow(dead_code)] // Refused while decoding.
    rate_limit: Option<()>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<ClientAuth>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

fn unsupported_rate_limit<'de, D: Deserializer<'de>>(_: D) -> Result<Option<()>, D::Error> {
    Err(de::Error::custom(
        "rate_limit is not supported by Lookout; rate-limit in a reverse proxy",
    ))
}

fn scalar<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for ClientAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, |s| match s {
            "" | "NoClientCert" => Ok(ClientAuth::NoClientCert),
            "RequestClientCert" => Ok(ClientAuth::RequestClientCert),
            "RequireAnyClientCert" | "RequireClientCert" => Ok(ClientAuth::RequireAnyClientCert),
            "VerifyClientCertIfGiven" => Ok(ClientAuth::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(ClientAuth::RequireAndVerifyClientCert),
            _ => Err(format!(
                "invalid client_auth_type {s:?} (use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            )),
        })
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, |s| match s {
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            "TLS10" | "TLS11" => Err(format!(
                "{s} is not supported by Lookout (rustls speaks TLS12 and TLS13)"
            )),
            _ => Err(format!("unknown TLS version {s:?} (use TLS12 or TLS13)")),
        })
    }
}

impl<'de> Deserialize<'de> for AuthScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, |s| match s {
            "all" => Ok(AuthScope::All),
            "write" => Ok(AuthScope::Write),
            _ => Err(format!("invalid basic_auth_scope {s:?} (use all or write)")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$abcdefghijklmnopqrstuuQx8mYbTtVpKg8jrd0fCDnEJxXdbOd7K";

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, "web.yml", Path::new("/etc/lookout"))
    }

    /// A file of `len` bytes that takes no disk space (its content is never read).
    fn sparse_file(path: &Path, len: u64) {
        std::fs::File::create(path)
            .and_then(|f| f.set_len(len))
            .unwrap();
    }

    #[test]
    fn a_config_file_over_1_mib_is_refused_naming_file_flag_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        sparse_file(&path, MAX_WEB_CONFIG_FILE_BYTES + 1);
        let e = WebConfig::load(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: the file is larger than the 1048576-byte limit on --web.config.file; check that it is the right file",
                path.display()
            )
        );
        let e = WebConfig::load(dir.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("{}: is not a regular file", dir.path().display())
        );
        std::fs::write(&path, "basic_auth_scope: write\n").unwrap();
        assert_eq!(WebConfig::load(&path).unwrap().auth_scope, AuthScope::Write);
    }

    #[test]
    fn tls_files_over_1_mib_are_refused_naming_file_setting_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        sparse_file(&big, MAX_TLS_FILE_BYTES + 1);
        for setting in ["cert_file", "key_file", "client_ca_file"] {
            let mut yaml = String::from("tls_server_config:\n");
            for key in ["cert_file", "key_file", "client_ca_file"] {
                let file = if key == setting { "big.pem" } else { "ok.pem" };
                yaml.push_str(&format!("  {key}: {file}\n"));
            }
            yaml.push_str("  client_auth_type: RequireAndVerifyClientCert\n");
            let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            std::fs::write(
                dir.path().join("ok.pem"),
                format!("{}{}", cert.cert.pem(), cert.key_pair.serialize_pem()),
            )
            .unwrap();
            let path = dir.path().join("web.yml");
            std::fs::write(&path, &yaml).unwrap();
            let e = WebConfig::load(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "failed to read {setting} ({}): the file is larger than the 1048576-byte limit on {setting}",
                    big.display()
                )),
                "{setting}: {e}"
            );
            // The same file within the limit loads.
            std::fs::write(&path, yaml.replace("big.pem", "ok.pem")).unwrap();
            assert!(WebConfig::load(&path).is_ok(), "{setting}");
        }
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let c = parse("").unwrap();
        assert!(!c.tls.is_enabled());
        assert!(c.users.is_empty());
        assert!(c.http.http2);
    }

    #[test]
    fn full_file_decodes_with_relative_paths_joined() {
        let c = parse(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  alice: '{HASH}'\nbasic_auth_scope: write\n"
        ))
        .unwrap();
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(Path::new("/etc/lookout/server.crt"))
        );
        assert_eq!(
            c.tls.key_file.as_deref(),
            Some(Path::new("/abs/server.key"))
        );
        assert_eq!(c.tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(c.tls.min_version, TlsVersion::Tls13);
        assert!(!c.http.http2);
        assert_eq!(c.auth_scope, AuthScope::Write);
        assert_eq!(c.users.len(), 1);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("tls_server_config:\n  cert_file: a\n  bogus: 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("web.yml:3:3: "), "{e}");
        let e = parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "web.yml:4:21: tls_server_config: invalid client_auth_type \"Sometimes\""
            ),
            "{e}"
        );
        let e = parse("basic_auth_users:\n  bob: secret\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("web.yml:2:3: basic_auth_users: user \"bob\""),
            "{e}"
        );
        let e = parse("http_server_config:\n  headers:\n    X-Frame-Options: allow\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("web.yml:3:5: invalid value for X-Frame-Options"),
            "{e}"
        );
        let e = parse("http_server_config:\n  headers:\n    Server: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("can not be configured"), "{e}");
        let e = parse("tls_server_config:\n  key_file: b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing one of cert or cert_file"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("web.yml:4:3: client CA"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs client_ca_file"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = parse("rate_limit:\n  burst: 1\n").unwrap_err().to_string();
        assert!(e.contains("rate_limit is not supported"), "{e}");
        let e = parse("basic_auth_scope: some\n").unwrap_err().to_string();
        assert!(e.starts_with("web.yml:1:"), "{e}");
    }

    #[test]
    fn missing_certificate_file_is_reported_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yml");
        std::fs::write(
            &path,
            "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
        )
        .unwrap();
        let e = WebConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("web.yml:1:1: tls_server_config:") && e.contains("nope.crt"),
            "{e}"
        );
    }
}
