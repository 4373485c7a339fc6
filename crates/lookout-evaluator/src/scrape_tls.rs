//! `tls_config` of a scrape job, in the schema of Prometheus's HTTP client configuration:
//! `ca`/`ca_file`, `cert`/`cert_file`, `key`/`key_file`, `server_name`,
//! `insecure_skip_verify` and `min_version`.
//!
//! Files are read through [`crate::limits::read_capped_bytes`] (regular files only, at most
//! [`MAX_TLS_FILE_BYTES`]) when the configuration is loaded, so that a wrong path fails the
//! start or the reload with the job, the setting and the file named, and again before each
//! scrape, as Prometheus does, so that rotated certificates are used without a reload: the
//! job's HTTP client is rebuilt only when what the files hold has changed. A file that
//! becomes unreadable later fails the scrape (`up` 0) with the same message.
//!
//! `server_name` is the name the target's certificate is verified against. Unlike Go, the
//! SNI sent is still the target's host (none for an IP address): the HTTP client takes it
//! from the URL.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Deserializer};

/// Largest `ca_file`, `cert_file` or `key_file` read (1 MiB, as the exporter's): a PEM
/// bundle of every public CA is about 200 KiB, so a larger file is a wrong path.
pub const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// A PEM text given inline (`ca`, `cert`, `key`). Its `Debug` shows a hash, never the text.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Pem(pub String);

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = xxhash_rust::xxh64::xxh64(self.0.as_bytes(), 0);
        write!(f, "<inline PEM {h:016x}>")
    }
}

/// A TLS version as Prometheus spells it (`TLS10` … `TLS13`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS10`: rustls speaks 1.2 and 1.3 only, so this means TLS 1.2.
    Tls10,
    /// `TLS11`: likewise.
    Tls11,
    /// `TLS12` (Prometheus's default).
    Tls12,
    /// `TLS13`.
    Tls13,
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::scrape_config::deserialize_parsed(d, "a TLS version", |s| match s {
            "TLS10" => Ok(TlsVersion::Tls10),
            "TLS11" => Ok(TlsVersion::Tls11),
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "unknown TLS version: {s} (use TLS10, TLS11, TLS12 or TLS13)"
            )),
        })
    }
}

/// A job's `tls_config`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificates (PEM) to verify the target with, inline.
    #[serde(default)]
    pub ca: Option<Pem>,
    /// File of CA certificates (PEM); without `ca`/`ca_file`, the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), inline.
    #[serde(default)]
    pub cert: Option<Pem>,
    /// File of the client certificate chain (PEM).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), inline.
    #[serde(default)]
    pub key: Option<Pem>,
    /// File of the client private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name the target's certificate must be valid for, instead of the target's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any certificate (the connection is still encrypted).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Oldest TLS version accepted (TLS 1.2 unless set).
    #[serde(default)]
    pub min_version: Option<TlsVersion>,
}

/// What the CA, certificate and key settings hold, read from the configuration or files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Material {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

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
            store.add_parsable_certificates(found.certs);
            Arc::new(store)
        })
        .clone()
}

/// Reads `file` for `setting`, or takes the inline text.
fn read(
    inline: &Option<Pem>,
    file: &Option<PathBuf>,
    setting: &'static str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(Pem(text)) = inline {
        return Ok(Some(text.clone().into_bytes()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let limit = crate::limits::FileLimit {
        bytes: MAX_TLS_FILE_BYTES,
        what: setting,
        flag: None,
        counter: None,
    };
    crate::limits::read_capped_bytes(path, limit)
        .map(Some)
        .map_err(|e| format!("cannot read {setting} {}: {e}", path.display()))
}

/// `setting` and, when it is a file, the file, for messages.
fn source(setting: &str, file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!("{setting} {}", p.display()),
        None => setting.trim_end_matches("_file").to_string(),
    }
}

impl TlsConfig {
    /// Checks the combinations Prometheus refuses (both inline and file, a certificate
    /// without its key); files are not read here.
    pub fn validate(&self) -> Result<(), String> {
        let pairs = [
            ("ca", self.ca.is_some(), self.ca_file.is_some()),
            ("cert", self.cert.is_some(), self.cert_file.is_some()),
            ("key", self.key.is_some(), self.key_file.is_some()),
        ];
        for (name, inline, file) in pairs {
            if inline && file {
                return Err(format!(
                    "tls_config: at most one of {name} and {name}_file must be configured"
                ));
            }
        }
        let has_cert = self.cert.is_some() || self.cert_file.is_some();
        let has_key = self.key.is_some() || self.key_file.is_some();
        if has_cert != has_key {
            return Err(format!(
                "tls_config: a client certificate needs both a certificate and a key; {} is missing",
                if has_cert {
                    "key (key_file)"
                } else {
                    "cert (cert_file)"
                }
            ));
        }
        if let Some(name) = &self.server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            return Err(format!(
                "tls_config: server_name {name:?} is not a valid host name"
            ));
        }
        Ok(())
    }

    /// Makes relative file paths relative to `dir` (the configuration file's directory,
    /// as Prometheus does).
    pub fn resolve_paths(&mut self, dir: &Path) {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() && !dir.as_os_str().is_empty() {
                *p = dir.join(&*p);
            }
        }
    }

    fn material(&self) -> Result<Material, String> {
        Ok(Material {
            ca: read(&self.ca, &self.ca_file, "ca_file")?,
            cert: read(&self.cert, &self.cert_file, "cert_file")?,
            key: read(&self.key, &self.key_file, "key_file")?,
        })
    }

    /// Reads the files and builds a rustls client configuration (for non-HTTP clients such
    /// as the SMTP one of email receivers).
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, String> {
        self.validate()?;
        self.client_config(&self.material()?)
    }

    /// Reads the files and builds the rustls configuration once, for the errors only (at
    /// load and reload).
    pub fn check(&self) -> Result<(), String> {
        self.validate()?;
        self.client_config(&self.material()?).map(|_| ())
    }

    fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        match self.min_version {
            Some(TlsVersion::Tls13) => vec![&rustls::version::TLS13],
            _ => vec![&rustls::version::TLS12, &rustls::version::TLS13],
        }
    }

    fn roots(&self, m: &Material) -> Result<Arc<RootCertStore>, String> {
        let Some(pem) = &m.ca else {
            return Ok(system_roots());
        };
        let what = source("ca_file", &self.ca_file);
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("tls_config: {what}: bad PEM: {e}"))?;
            store
                .add(cert)
                .map_err(|e| format!("tls_config: {what}: bad CA certificate: {e}"))?;
        }
        if store.is_empty() {
            return Err(format!("tls_config: {what} holds no PEM certificate"));
        }
        Ok(Arc::new(store))
    }

    fn client_config(&self, m: &Material) -> Result<rustls::ClientConfig, String> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions())
            .map_err(|e| format!("tls_config: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(NoVerify(provider()))
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(self.roots(m)?, provider())
                .build()
                .map_err(|e| format!("tls_config: {e}"))?;
            match &self.server_name {
                Some(name) => Arc::new(NamedVerifier {
                    inner,
                    name: ServerName::try_from(name.clone())
                        .map_err(|e| format!("tls_config: server_name {name:?}: {e}"))?,
                }),
                None => inner,
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let (Some(cert), Some(key)) = (&m.cert, &m.key) else {
            return Ok(builder.with_no_client_auth());
        };
        let cert_what = source("cert_file", &self.cert_file);
        let key_what = source("key_file", &self.key_file);
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls_config: {cert_what}: bad PEM: {e}"))?;
        if chain.is_empty() {
            return Err(format!("tls_config: {cert_what} holds no PEM certificate"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| format!("tls_config: {key_what}: no usable private key: {e}"))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| {
            format!("tls_config: {cert_what} and {key_what} do not make a client certificate: {e}")
        })
    }
}

/// A job's HTTP client for its `tls_config`, rebuilt when what the files hold changes.
pub struct ScrapeTls {
    config: TlsConfig,
    built: Mutex<Option<(Material, reqwest::Client)>>,
}

impl fmt::Debug for ScrapeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeTls")
            .field("config", &self.config)
            .finish()
    }
}

impl ScrapeTls {
    /// A client source for `config` (already checked).
    pub fn new(config: TlsConfig) -> ScrapeTls {
        ScrapeTls {
            config,
            built: Mutex::new(None),
        }
    }

    /// The client to scrape with now: the files are read again, and the client is rebuilt
    /// when they changed.
    pub fn client(
        &self,
        base: impl FnOnce() -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, String> {
        let material = self.config.material()?;
        let mut built = self
            .built
            .lock()
            .map_err(|_| "tls_config: lock poisoned".to_string())?;
        if let Some((m, client)) = built.as_ref()
            && *m == material
        {
            return Ok(client.clone());
        }
        let tls = self.config.client_config(&material)?;
        let client = base()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| format!("tls_config: cannot build the HTTP client: {e}"))?;
        *built = Some((material, client.clone()));
        Ok(client)
    }
}

/// Verifies the target's certificate against `server_name` instead of the URL's host.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: any certificate, signatures still checked.
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
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<TlsConfig, String> {
        serde_yaml_ng::from_str::<TlsConfig>(y).map_err(|e| e.to_string())
    }

    #[test]
    fn combinations_prometheus_refuses_are_refused() {
        let e = parse("{ca: x, ca_file: y}")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.contains("at most one of ca and ca_file"), "{e}");
        let e = parse("{cert_file: c}").unwrap().validate().unwrap_err();
        assert!(e.contains("key (key_file) is missing"), "{e}");
        let e = parse("{min_version: TLS14}").unwrap_err();
        assert!(e.contains("unknown TLS version: TLS14"), "{e}");
        let e = parse("{ca_fil: x}").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        assert!(format!("{:?}", parse("{key: secret}").unwrap()).contains("<inline PEM"));
    }

    #[test]
    fn file_errors_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TlsConfig {
            ca_file: Some(dir.path().join("missing.pem")),
            ..TlsConfig::default()
        };
        let e = cfg.check().unwrap_err();
        assert!(
            e.starts_with("cannot read ca_file ") && e.contains("missing.pem"),
            "{e}"
        );
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_TLS_FILE_BYTES + 1))
            .unwrap();
        let cfg = TlsConfig {
            ca_file: Some(big),
            ..TlsConfig::default()
        };
        let e = cfg.check().unwrap_err();
        assert!(e.contains("1048576-byte ca_file size limit"), "{e}");
        let text = dir.path().join("ca.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let cfg = TlsConfig {
            ca_file: Some(text),
            ..TlsConfig::default()
        };
        let e = cfg.check().unwrap_err();
        assert!(e.contains("ca.pem holds no PEM certificate"), "{e}");
        let mut cfg = TlsConfig {
            cert_file: Some("c.pem".into()),
            key_file: Some("/abs/k.pem".into()),
            ..TlsConfig::default()
        };
        cfg.resolve_paths(Path::new("/etc/lookout"));
        assert_eq!(cfg.cert_file, Some(PathBuf::from("/etc/lookout/c.pem")));
        assert_eq!(cfg.key_file, Some(PathBuf::from("/abs/k.pem")));
    }
}
