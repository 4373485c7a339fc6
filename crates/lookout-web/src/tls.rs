//! Builds a rustls server configuration (ring provider) from `tls_server_config`.
//!
//! Go's client authentication policies map to rustls verifiers: the two `Verify…` policies
//! to rustls's webpki verifier over the client CA (optional or mandatory), `RequestClientCert`
//! and `RequireAnyClientCert` to [`AnyClientCert`], which takes any certificate without
//! checking its chain (the handshake signature is still checked, as Go does).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::{ClientAuth, TlsServerConfig, TlsVersion, WebConfig};

/// Reads the certificate, key or CA file that the setting `what` names, at most
/// [`MAX_TLS_FILE_BYTES`](crate::config::MAX_TLS_FILE_BYTES), regular files only.
fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    crate::config::read_capped(path, what, crate::config::MAX_TLS_FILE_BYTES)
        .map_err(|e| format!("failed to read {what} ({}): {e}", path.display()))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate found"));
    }
    Ok(certs)
}

/// The rustls configuration for `config`'s TLS settings (reads the certificate, key and CA
/// files). ALPN offers `h2` when `http_server_config.http2` is on.
pub fn server_config(config: &WebConfig) -> Result<Arc<ServerConfig>, String> {
    let t = &config.tls;
    let cert_pem = match (&t.cert, &t.cert_file) {
        (Some(inline), _) => inline.as_bytes().to_vec(),
        (None, Some(path)) => read(path, "cert_file")?,
        (None, None) => return Err("missing one of cert or cert_file".into()),
    };
    let key_pem = match (&t.key, &t.key_file) {
        (Some(inline), _) => inline.as_bytes().to_vec(),
        (None, Some(path)) => read(path, "key_file")?,
        (None, None) => return Err("missing one of key or key_file".into()),
    };
    let chain = certificates(&cert_pem, "cert")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key: {e}"))?;

    let provider = Arc::new(provider(t)?);

    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= t.min_version && *v <= t.max_version)
    .map(|(_, p)| p)
    .collect();

    let verifier = client_verifier(t, &provider)?;

    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    server.ignore_client_order = t.prefer_server_cipher_suites;
    server.alpn_protocols = if config.http.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(server))
}

/// The crypto provider with the configured TLS 1.2 cipher suites (TLS 1.3's are always
/// on, as in Go) and curves.
fn provider(t: &TlsServerConfig) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        for name in &t.cipher_suites {
            let found = provider
                .cipher_suites
                .iter()
                .find(|s| s.tls13().is_none() && format!("{:?}", s.suite()) == *name);
            match found {
                Some(s) => chosen.push(*s),
                None => {
                    let known: Vec<String> = provider
                        .cipher_suites
                        .iter()
                        .filter(|s| s.tls13().is_none())
                        .map(|s| format!("{:?}", s.suite()))
                        .collect();
                    return Err(format!(
                        "unknown cipher {name:?} (supported: {})",
                        known.join(", ")
                    ));
                }
            }
        }
        // TLS 1.3 suites are not configurable, as in Go.
        chosen.extend(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_some())
                .copied(),
        );
        provider.cipher_suites = chosen;
    }
    if !t.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for name in &t.curve_preferences {
            let wanted = match name.as_str() {
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "X25519" => rustls::NamedGroup::X25519,
                _ => {
                    return Err(format!(
                        "unknown or unsupported curve {name:?} (use CurveP256, CurveP384, X25519)"
                    ));
                }
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == wanted) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// How client certificates are asked for and checked (`client_auth_type`).
fn client_verifier(
    t: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = || -> Result<Arc<RootCertStore>, String> {
        let pem = match (&t.client_ca, &t.client_ca_file) {
            (Some(inline), _) => inline.as_bytes().to_vec(),
            (None, Some(path)) => read(path, "client_ca_file")?,
            (None, None) => return Err("client_auth_type needs client_ca_file".into()),
        };
        let mut store = RootCertStore::empty();
        for cert in certificates(&pem, "client CA")? {
            store.add(cert).map_err(|e| format!("client CA: {e}"))?;
        }
        Ok(Arc::new(store))
    };
    Ok(match t.client_auth {
        ClientAuth::NoClientCert => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert => Arc::new(AnyClientCert {
            provider: provider.clone(),
            mandatory: false,
        }),
        ClientAuth::RequireAnyClientCert => Arc::new(AnyClientCert {
            provider: provider.clone(),
            mandatory: true,
        }),
        ClientAuth::VerifyClientCertIfGiven => {
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA: {e}"))?
        }
        ClientAuth::RequireAndVerifyClientCert => {
            WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone())
                .build()
                .map_err(|e| format!("client CA: {e}"))?
        }
    })
}

/// Takes any client certificate without verifying its chain (Go's `RequestClientCert` and
/// `RequireAnyClientCert`); the handshake signature is still verified.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
