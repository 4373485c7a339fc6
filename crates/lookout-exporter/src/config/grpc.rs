//! The `grpc:` section of a module: blackbox_exporter's `GRPCProbe` (`service`, `tls`,
//! `tls_config`, `preferred_ip_protocol`, `ip_protocol_fallback`, and `metadata` of later
//! releases), decoded strictly.
//!
//! As in blackbox_exporter, `ip_protocol_fallback` defaults to true only when the module has
//! a `grpc:` section: its defaults are applied when the section is decoded, and its module
//! defaults have none for gRPC, so a bare `prober: grpc` module does not fall back from IPv6
//! to IPv4 (a name with only IPv4 addresses then fails to resolve, as in blackbox_exporter).
//!
//! `metadata` is a map from key to a list of values, sent as request headers. gRPC accepts
//! only keys of lowercase letters, digits, `-`, `_` and `.`, and values of printable ASCII
//! unless the key ends in `-bin` (then any text, sent base64-encoded); keys that the
//! protocol itself sets (`content-type`, `te`, `user-agent`, `grpc-*`) are refused. Such
//! metadata is an error at load time rather than a probe that fails on every run.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{IpProtocol, ModuleError, TlsConfig, validate_tls};

/// Settings of the gRPC prober (`grpc:`).
#[derive(Debug, Clone)]
pub struct GrpcProbe {
    /// The service whose health is asked (`""`: the server as a whole).
    pub service: String,
    /// Connect with TLS (ALPN `h2`); otherwise HTTP/2 over plain TCP (h2c, prior knowledge).
    pub tls: bool,
    /// TLS settings.
    pub tls_config: TlsConfig,
    /// Preferred IP protocol for resolution.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether to fall back to the other protocol (true unless set, when the module has a
    /// `grpc:` section; false without one).
    pub ip_protocol_fallback: bool,
    /// Request metadata: key → values, each value sent as one header.
    pub metadata: BTreeMap<String, Vec<String>>,
}

/// A module without a `grpc:` section: no fallback to IPv4, as in blackbox_exporter.
impl Default for GrpcProbe {
    fn default() -> Self {
        GrpcProbe {
            service: String::new(),
            tls: false,
            tls_config: TlsConfig::default(),
            preferred_ip_protocol: IpProtocol::Ip6,
            ip_protocol_fallback: false,
            metadata: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename = "grpc")]
pub(super) struct RawGrpc {
    service: String,
    tls: bool,
    tls_config: TlsConfig,
    preferred_ip_protocol: Option<IpProtocol>,
    ip_protocol_fallback: Option<bool>,
    metadata: BTreeMap<String, Vec<String>>,
}

impl RawGrpc {
    pub(super) fn into_probe(self) -> Result<GrpcProbe, ModuleError> {
        validate_tls(&self.tls_config).map_err(|(mut k, msg)| {
            k.insert(0, "grpc");
            (k, msg)
        })?;
        for (key, values) in &self.metadata {
            validate_metadata(key, values).map_err(|msg| (vec!["grpc", "metadata"], msg))?;
        }
        Ok(GrpcProbe {
            service: self.service,
            tls: self.tls,
            tls_config: self.tls_config,
            preferred_ip_protocol: self.preferred_ip_protocol.unwrap_or_default(),
            ip_protocol_fallback: self.ip_protocol_fallback.unwrap_or(true),
            metadata: self.metadata,
        })
    }
}

/// Keys gRPC itself sends; grpc-go drops them from metadata silently.
fn reserved(key: &str) -> bool {
    matches!(key, "content-type" | "te" | "user-agent") || key.starts_with("grpc-")
}

/// gRPC's rules for metadata (grpc-go's `metadata.Validate`), checked at load time.
fn validate_metadata(key: &str, values: &[String]) -> Result<(), String> {
    if key.is_empty() {
        return Err("a metadata key is empty".into());
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    {
        return Err(format!(
            "metadata key {key:?} may hold only lowercase letters, digits, '-', '_' and '.' \
             (gRPC refuses other keys)"
        ));
    }
    if reserved(key) {
        return Err(format!(
            "metadata key {key:?} is set by the gRPC protocol itself; remove it"
        ));
    }
    if key.ends_with("-bin") {
        return Ok(());
    }
    match values
        .iter()
        .find(|v| !v.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        Some(v) => Err(format!(
            "metadata {key:?} has the value {v:?}, which is not printable ASCII \
             (binary values need a key ending in \"-bin\")"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_rules() {
        let ok = |k: &str, v: &[&str]| {
            validate_metadata(k, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(ok("authorization", &["Bearer x"]).is_ok());
        assert!(ok("x.trace_id-1", &[]).is_ok());
        assert!(ok("blob-bin", &["\u{1}é"]).is_ok());
        assert!(ok("X-Upper", &["v"]).unwrap_err().contains("lowercase"));
        assert!(
            ok("grpc-timeout", &["1S"])
                .unwrap_err()
                .contains("protocol")
        );
        assert!(ok("te", &["trailers"]).is_err());
        assert!(ok("", &["v"]).is_err());
        assert!(ok("k", &["line\nbreak"]).unwrap_err().contains("-bin"));
    }
}
