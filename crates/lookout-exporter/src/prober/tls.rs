//! TLS for the probers: a rustls client (ring provider) built from a module's `tls_config`,
//! and blackbox_exporter's certificate metrics read from the peer's chain with x509-parser.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Failure, Recorder, reason};
use crate::config::{TlsConfig, TlsVersion};

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trusted roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("reading system CA certificates: {e}");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!("loaded {added} system CA certificates ({ignored} ignored)");
            Arc::new(store)
        })
        .clone()
}

fn config_error(message: String) -> Failure {
    Failure::new(reason::TLS_CONFIG, message)
}

/// Largest `ca_file`, `cert_file` or `key_file` read (1 MiB): a PEM bundle of every public
/// CA is about 200 KiB, so a larger file is a wrong path (a log file, a device).
pub(super) const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// Reads the file that the configuration setting `setting` names, at most `limit` bytes.
///
/// Only regular files are read (a FIFO would block the probe, a device could be endless),
/// and a file larger than `limit` is refused without being read into memory. The message
/// names the setting, the file and the limit; the caller wraps it in its failure reason.
pub(super) fn read_setting_file(
    path: &std::path::Path,
    setting: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let cannot = |why: String| format!("cannot read {setting} {}: {why}", path.display());
    let too_large = || {
        cannot(format!(
            "the file is larger than the {limit}-byte limit on {setting}; check that \
             {setting} names the right file"
        ))
    };
    // Never blocks: a FIFO or a device is refused before and after opening.
    let (file, len) = lookout_web::files::open_regular(path).map_err(|e| cannot(e.to_string()))?;
    if len > limit {
        return Err(too_large());
    }
    // The file may have grown since: the read stops one byte past the limit either way.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn read_pem(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    what: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    if let Some(text) = inline {
        return Ok(Some(text.clone().into_bytes()));
    }
    match file {
        Some(path) => read_setting_file(path, what, MAX_TLS_FILE_BYTES)
            .map(Some)
            .map_err(config_error),
        None => Ok(None),
    }
}

/// Builds a client configuration from `tls_config`, offering `alpn` protocols.
pub(crate) fn client_config(
    cfg: &TlsConfig,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let min = cfg.min_version.unwrap_or(TlsVersion::Tls12);
    let max = cfg.max_version.unwrap_or(TlsVersion::Tls13);
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= TlsVersion::Tls12 && max >= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if versions.is_empty() {
        return Err(config_error(
            "tls_config allows only TLS 1.0/1.1, which Lookout (rustls) does not speak".into(),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| config_error(format!("TLS versions: {e}")))?;

    let builder = if cfg.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else {
        let mut anchors = Vec::new();
        let roots = match read_pem(&cfg.ca, &cfg.ca_file, "ca_file")? {
            Some(pem) => {
                let mut store = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert =
                        cert.map_err(|e| config_error(format!("bad CA certificate PEM: {e}")))?;
                    store
                        .add(cert.clone())
                        .map_err(|e| config_error(format!("bad CA certificate: {e}")))?;
                    anchors.push(cert);
                }
                if anchors.is_empty() {
                    return Err(config_error("the CA file holds no PEM certificate".into()));
                }
                Arc::new(store)
            }
            None => system_roots(),
        };
        let verifier =
            super::tls_verify::GoVerifier::new(roots, anchors, provider()).map_err(config_error)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };

    let cert = read_pem(&cfg.cert, &cfg.cert_file, "cert_file")?;
    let key = read_pem(&cfg.key, &cfg.key_file, "key_file")?;
    let mut config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_error(format!("bad client certificate PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| config_error(format!("bad client key PEM: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(config_error(
                "tls_config needs both cert_file and key_file for a client certificate".into(),
            ));
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name to present (SNI) and verify: `server_name` if set, else `host`.
pub(crate) fn server_name(cfg: &TlsConfig, host: &str) -> Result<ServerName<'static>, Failure> {
    let name = cfg.server_name.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string())
        .map_err(|e| config_error(format!("invalid TLS server name {name:?}: {e}")))
}

/// Runs a TLS handshake over `io`.
pub(crate) async fn handshake<IO>(
    io: IO,
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<tokio_rustls::client::TlsStream<IO>, Failure>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsConnector::from(config)
        .connect(name.clone(), io)
        .await
        .map_err(|e| {
            Failure::new(
                reason::TLS_HANDSHAKE,
                format!("TLS handshake with {} failed: {e}", name.to_str()),
            )
        })
}

/// Records `probe_ssl_earliest_cert_expiry`, `probe_ssl_last_chain_expiry_timestamp_seconds`,
/// `probe_ssl_last_chain_info` and `probe_tls_version_info`, and sets `rec.cert_expiry`.
///
/// The last-chain expiry is that of the verified chain, or Go's zero time when nothing was
/// verified (`insecure_skip_verify`), as blackbox_exporter publishes it.
pub(crate) fn record_connection_state(
    rec: &mut Recorder,
    conn: &rustls::ClientConnection,
    verified: bool,
) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        _ => "unknown",
    };
    rec.set_labeled(
        "probe_tls_version_info",
        "Returns the TLS version used or NaN when unknown",
        &[("version", version)],
        1.0,
    );
    if let Some(suite) = conn.negotiated_cipher_suite() {
        // Go's names: TLS 1.3 suites are TLS_AES_…, rustls calls them TLS13_AES_….
        let name = format!("{:?}", suite.suite()).replacen("TLS13_", "TLS_", 1);
        rec.set_labeled(
            "probe_tls_cipher_info",
            "Returns the TLS cipher negotiated during handshake",
            &[("cipher", &name)],
            1.0,
        );
    }
    let Some(chain) = conn.peer_certificates() else {
        return;
    };
    let mut earliest: Option<i64> = None;
    for (i, der) in chain.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, cert)) => {
                let not_after = cert.validity().not_after.timestamp();
                earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
                if i == 0 {
                    let fingerprint = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
                    let fingerprint: String = fingerprint
                        .as_ref()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let sans: Vec<String> = cert
                        .subject_alternative_name()
                        .ok()
                        .flatten()
                        .map(|ext| {
                            ext.value
                                .general_names
                                .iter()
                                .filter_map(|n| match n {
                                    x509_parser::extensions::GeneralName::DNSName(d) => {
                                        Some(d.to_string())
                                    }
                                    _ => None,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    rec.set_labeled(
                        "probe_ssl_last_chain_info",
                        "Contains SSL leaf certificate information",
                        &[
                            ("fingerprint_sha256", &fingerprint),
                            ("subject", &go_name_string(cert.subject())),
                            ("issuer", &go_name_string(cert.issuer())),
                            ("subjectalternative", &sans.join(",")),
                        ],
                        1.0,
                    );
                }
            }
            Err(e) => rec.log(format!("cannot parse peer certificate {i}: {e}")),
        }
    }
    if let Some(expiry) = earliest {
        let expiry = expiry as f64;
        rec.set(
            "probe_ssl_earliest_cert_expiry",
            "Returns the earliest expiry of any peer certificate returned by the server as an unix timestamp. This can include certificates that are not validated by TLS clients. In rare server configurations this might return a time in the past, even for valid TLS certificate chains.",
            expiry,
        );
        // Without verification there is no verified chain: blackbox_exporter then
        // publishes the Unix time of Go's zero time (year 1), and so does Lookout, so that
        // side-by-side alerts read the same.
        rec.set(
            "probe_ssl_last_chain_expiry_timestamp_seconds",
            "Returns the earliest expiry of any validated TLS certificate as an unix timestamp. This indicates the time when connections will start to fail, unless a certificate is renewed.",
            if verified { expiry } else { GO_ZERO_TIME_UNIX },
        );
        rec.cert_expiry = Some(rec.cert_expiry.map_or(expiry, |e: f64| e.min(expiry)));
    }
}

/// `insecure_skip_verify`: accepts any certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `time.Time{}.Unix()` in Go: what blackbox_exporter publishes as the last verified
/// chain's expiry when nothing was verified (`insecure_skip_verify`).
const GO_ZERO_TIME_UNIX: f64 = -62_135_596_800.0;

/// The attributes Go's `pkix.Name` parses into named fields, in the order its
/// `ToRDNSequence` writes them (the printed form is reversed: `CN=…,O=…,C=…`).
const GO_NAME_FIELDS: [(&str, &str); 9] = [
    ("2.5.4.6", "C"),
    ("2.5.4.8", "ST"),
    ("2.5.4.7", "L"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.17", "POSTALCODE"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
];

/// A certificate name as Go's `pkix.Name.String()` prints it, which is what
/// blackbox_exporter puts in `probe_ssl_last_chain_info`'s `subject` and `issuer`: the
/// known attributes from the most specific (`CN`) to the least (`C`), several values of
/// one attribute joined by `+`, then any other attribute as `OID=#hex` of its DER value;
/// values escaped as RFC 2253 asks.
pub(crate) fn go_name_string(name: &x509_parser::x509::X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    // Attributes Go keeps only in `Names`: printed last, in reverse order of appearance.
    for atv in name.iter_attributes() {
        let oid = atv.attr_type().to_id_string();
        if !GO_NAME_FIELDS.iter().any(|(o, _)| *o == oid) {
            rdns.push(format!("{oid}=#{}", hex(&go_der_value(atv))));
        }
    }
    for (oid, short) in GO_NAME_FIELDS {
        let mut values: Vec<&str> = name
            .iter_attributes()
            .filter(|a| a.attr_type().to_id_string() == oid)
            .filter_map(|a| a.as_str().ok())
            .collect();
        // CN and SERIALNUMBER are single strings in Go: the last one read wins.
        if matches!(short, "CN" | "SERIALNUMBER") && values.len() > 1 {
            values = values.split_off(values.len() - 1);
        }
        if values.is_empty() {
            continue;
        }
        let joined: Vec<String> = values
            .iter()
            .map(|v| format!("{short}={}", rfc2253_escape(v)))
            .collect();
        rdns.push(joined.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn rfc2253_escape(value: &str) -> String {
    let count = value.chars().count();
    let mut out = String::with_capacity(value.len());
    for (k, c) in value.chars().enumerate() {
        let escape = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => k == 0 || k + 1 == count,
            '#' => k == 0,
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The DER Go writes for an attribute value it re-encodes: a string as PrintableString
/// when every character allows it, else UTF8String; anything else as it was read.
fn go_der_value(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Vec<u8> {
    let Ok(text) = atv.as_str() else {
        let any = atv.attr_value();
        let mut der = vec![any.tag().0 as u8];
        der_length(any.data.len(), &mut der);
        der.extend_from_slice(any.data);
        return der;
    };
    let printable = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?*".contains(&b));
    let mut der = vec![if printable { 0x13 } else { 0x0c }];
    der_length(text.len(), &mut der);
    der.extend_from_slice(text.as_bytes());
    der
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    out.push(0x80 | bytes.len() as u8);
    out.extend(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_over_1_mib_are_refused_naming_setting_file_and_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("syslog");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_TLS_FILE_BYTES + 1))
            .expect("sparse file");
        for (setting, cfg) in [
            (
                "ca_file",
                TlsConfig {
                    ca_file: Some(big.clone()),
                    ..Default::default()
                },
            ),
            (
                "cert_file",
                TlsConfig {
                    insecure_skip_verify: true,
                    cert_file: Some(big.clone()),
                    key: Some(String::new()),
                    ..Default::default()
                },
            ),
            (
                "key_file",
                TlsConfig {
                    insecure_skip_verify: true,
                    cert: Some(String::new()),
                    key_file: Some(big.clone()),
                    ..Default::default()
                },
            ),
        ] {
            let err = client_config(&cfg, &[]).expect_err("over the limit");
            assert_eq!(err.reason, reason::TLS_CONFIG);
            assert_eq!(
                err.message,
                format!(
                    "cannot read {setting} {}: the file is larger than the 1048576-byte limit \
                     on {setting}; check that {setting} names the right file",
                    big.display()
                )
            );
        }
    }

    #[test]
    fn a_tls_file_within_the_limit_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(&ca, cert.pem()).expect("write");
        let cfg = TlsConfig {
            ca_file: Some(ca),
            ..Default::default()
        };
        assert!(client_config(&cfg, &[]).is_ok());
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_setting_file(dir.path(), "ca_file", MAX_TLS_FILE_BYTES).expect_err("dir");
        assert_eq!(
            err,
            format!(
                "cannot read ca_file {}: is not a regular file",
                dir.path().display()
            )
        );
    }

    /// Files under /proc are regular but report a length of 0: the read itself stops past
    /// the limit.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_reported_length_is_still_bounded() {
        let path = std::path::Path::new("/proc/self/status");
        let err = read_setting_file(path, "key_file", 16).expect_err("over the limit");
        assert!(
            err.contains("larger than the 16-byte limit on key_file"),
            "{err}"
        );
    }
}
