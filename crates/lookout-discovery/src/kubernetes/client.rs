//! The HTTP client settings of `kubernetes_sd_configs` (Prometheus's `HTTPClientConfig`
//! subset: `basic_auth`, `bearer_token`, `bearer_token_file`, `tls_config`) and the
//! in-cluster configuration used without `api_server`.
//!
//! Secret files (`bearer_token_file`, `password_file`, the service-account token) are read
//! again before each request, as Prometheus does, so that rotated tokens are picked up;
//! certificate files are read when the client is built (at the provider's start and after
//! each failure). Each is read only if it is a regular file (a FIFO or a device is
//! refused, never waited on), and at most 64 KiB (secrets) or 1 MiB (certificates).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the in-cluster service-account files are.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Largest secret or certificate file read (64 KiB for secrets, 1 MiB for certificates).
const MAX_SECRET_BYTES: u64 = 64 << 10;
const MAX_CERT_BYTES: u64 = 1 << 20;

/// A secret from the configuration; its `Debug` shows a hash, never the text.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut h);
        write!(f, "<secret {:016x}>", h.finish())
    }
}

/// `basic_auth`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `tls_config`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca: Option<Secret>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<Secret>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refused: the HTTP client verifies the name in the URL.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// `TLS12` or `TLS13` (`TLS10`/`TLS11` mean TLS 1.2: the TLS library has nothing older).
    #[serde(default)]
    pub min_version: Option<String>,
}

impl TlsConfig {
    /// Checks the settings as Prometheus does (and refuses what is not supported).
    pub fn validate(&self) -> Result<(), String> {
        let pairs = [
            ("ca", self.ca.is_some(), "ca_file", self.ca_file.is_some()),
            (
                "cert",
                self.cert.is_some(),
                "cert_file",
                self.cert_file.is_some(),
            ),
            (
                "key",
                self.key.is_some(),
                "key_file",
                self.key_file.is_some(),
            ),
        ];
        for (a, has_a, b, has_b) in pairs {
            if has_a && has_b {
                return Err(format!("at most one of {a} and {b} must be configured"));
            }
        }
        let cert = self.cert.is_some() || self.cert_file.is_some();
        let key = self.key.is_some() || self.key_file.is_some();
        if cert != key {
            return Err(
                "exactly one of key or key_file must be configured when a client certificate is configured".into(),
            );
        }
        if self.server_name.is_some() {
            return Err("tls_config: server_name is not supported for kubernetes_sd_configs; use the name in api_server".into());
        }
        match self.min_version.as_deref() {
            None | Some("TLS10" | "TLS11" | "TLS12" | "TLS13") => Ok(()),
            Some(v) => Err(format!("unknown TLS version: {v}")),
        }
    }
}

/// The client settings of one provider, resolved: the API server, how to authenticate.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<Secret>,
    pub bearer_token_file: Option<PathBuf>,
    pub tls: TlsConfig,
}

/// A secret or certificate file, at most `max` bytes; a FIFO or device is refused rather
/// than blocked on.
fn read_capped(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    crate::read_capped(path, max)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?
        .ok_or_else(|| format!("{what} {} is larger than {max} bytes", path.display()))
}

fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    let b = read_capped(path, MAX_SECRET_BYTES, what)?;
    Ok(String::from_utf8_lossy(&b).trim().to_string())
}

fn pem(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    if let Some(s) = inline {
        return Ok(Some(s.0.as_bytes().to_vec()));
    }
    match file {
        Some(p) => read_capped(p, MAX_CERT_BYTES, what).map(Some),
        None => Ok(None),
    }
}

impl Settings {
    /// Builds the HTTP client (TLS roots, client certificate).
    pub fn client(&self, connect_timeout: std::time::Duration) -> Result<reqwest::Client, String> {
        let mut b = crate::client_builder().connect_timeout(connect_timeout);
        let t = &self.tls;
        if let Some(ca) = pem(&t.ca, &t.ca_file, "ca_file")? {
            let certs = reqwest::Certificate::from_pem_bundle(&ca)
                .map_err(|e| format!("unable to use the CA certificate: {e}"))?;
            if certs.is_empty() {
                return Err("unable to use the CA certificate: no certificate found".into());
            }
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(mut cert) = pem(&t.cert, &t.cert_file, "cert_file")? {
            let key = pem(&t.key, &t.key_file, "key_file")?.unwrap_or_default();
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            let id = reqwest::Identity::from_pem(&cert)
                .map_err(|e| format!("unable to use the client certificate: {e}"))?;
            b = b.identity(id);
        }
        if t.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        if t.min_version.as_deref() == Some("TLS13") {
            b = b.min_tls_version(reqwest::tls::Version::TLS_1_3);
        }
        b.build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }

    /// Adds the credentials to a request (files read now).
    pub fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        if let Some(b) = &self.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => p.0.clone(),
                (None, Some(f)) => read_secret(f, "password_file")?,
                (None, None) => String::new(),
            };
            return Ok(req.basic_auth(&b.username, Some(password)));
        }
        if let Some(t) = &self.bearer_token {
            return Ok(req.bearer_auth(&t.0));
        }
        if let Some(f) = &self.bearer_token_file {
            return Ok(req.bearer_auth(read_secret(f, "bearer_token_file")?));
        }
        Ok(req)
    }
}

/// The in-cluster API server URL and settings: `KUBERNETES_SERVICE_HOST`/`_PORT`, the
/// service account's token and CA files under `dir`.
pub fn in_cluster(dir: &Path) -> Result<(String, Settings), String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    in_cluster_at(&host, &port, dir)
}

/// [`in_cluster`] with the service's host and port given.
fn in_cluster_at(host: &str, port: &str, dir: &Path) -> Result<(String, Settings), String> {
    if host.is_empty() || port.is_empty() {
        return Err("unable to load in-cluster configuration, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (or set api_server)".into());
    }
    let token = dir.join("token");
    // The token is read now to fail early, and again before each request.
    read_secret(&token, "service account token")?;
    let settings = Settings {
        bearer_token_file: Some(token),
        tls: TlsConfig {
            ca_file: Some(dir.join("ca.crt")),
            ..Default::default()
        },
        ..Default::default()
    };
    let url = format!("https://{}", crate::join_host_port(host, port));
    Ok((url, settings))
}

/// The namespace of the pod Lookout runs in (`own_namespace`).
pub fn own_namespace(dir: &Path) -> Result<String, String> {
    read_secret(&dir.join("namespace"), "namespace file")
        .map_err(|e| format!("could not determine the pod's namespace: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let e = in_cluster_at("", "443", dir.path()).unwrap_err();
        assert!(e.contains("KUBERNETES_SERVICE_HOST"), "{e}");
        let e = in_cluster_at("10.96.0.1", "443", dir.path()).unwrap_err();
        assert!(e.contains("service account token"), "{e}");
        std::fs::write(dir.path().join("token"), "tok\n").unwrap();
        std::fs::write(dir.path().join("namespace"), "monitoring").unwrap();
        let (url, s) = in_cluster_at("fd00::1", "6443", dir.path()).unwrap();
        assert_eq!(url, "https://[fd00::1]:6443");
        assert_eq!(s.bearer_token_file, Some(dir.path().join("token")));
        assert_eq!(s.tls.ca_file, Some(dir.path().join("ca.crt")));
        assert_eq!(own_namespace(dir.path()).unwrap(), "monitoring");
        let req = s
            .authorize(reqwest::Client::new().get("http://x/"))
            .unwrap();
        let req = req.build().unwrap();
        assert_eq!(req.headers()["authorization"], "Bearer tok");
        // The CA file is missing: building the client says so.
        let e = s.client(std::time::Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("ca_file"), "{e}");
    }

    /// A FIFO as `bearer_token_file`, `password_file` or `ca_file` is refused at once.
    #[cfg(unix)]
    #[test]
    fn a_fifo_is_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: no mkfifo");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let token = Settings {
                bearer_token_file: Some(fifo.clone()),
                ..Default::default()
            };
            let req = reqwest::Client::new().get("http://x/");
            let token = token.authorize(req).map(|_| ()).unwrap_err();
            let password = Settings {
                basic_auth: Some(BasicAuth {
                    username: "u".into(),
                    password: None,
                    password_file: Some(fifo.clone()),
                }),
                ..Default::default()
            };
            let req = reqwest::Client::new().get("http://x/");
            let password = password.authorize(req).map(|_| ()).unwrap_err();
            let ca = Settings {
                tls: TlsConfig {
                    ca_file: Some(fifo),
                    ..Default::default()
                },
                ..Default::default()
            };
            let ca = ca.client(std::time::Duration::from_secs(1)).unwrap_err();
            let _ = tx.send([token, password, ca]);
        });
        let errors = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO blocked");
        for e in errors {
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn secrets_are_not_shown() {
        let s = format!("{:?}", Secret("hunter2".into()));
        assert!(!s.contains("hunter2"), "{s}");
    }
}
