//! `scrape_configs` for the embedded datasource: a subset of Prometheus's schema, decoded
//! strictly (unknown fields are errors) with Prometheus's defaults.
//!
//! The surrounding configuration file (with `global`, `rule_files`, `alerting`) is decoded
//! by the evaluator's config module; it embeds `Vec<ScrapeConfig>` and calls
//! [`validate_scrape_configs`] with the global defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use lookout_discovery::relabel::{RelabelConfig, is_valid_label_name};

/// A Prometheus duration (`15s`, `1m30s`, `2h`, `1d`, `500ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    /// Parses Prometheus's duration syntax (`model.ParseDuration`); `0` and `0s` are zero.
    pub fn parse(s: &str) -> Result<PromDuration, String> {
        lookout_promql::duration::parse_duration(s)
            .map(PromDuration)
            .map_err(|e| e.to_string())
    }
}

impl fmt::Display for PromDuration {
    /// Prometheus's notation (`1m30s`, `0s`), as `model.Duration.String()` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&lookout_promql::duration::format_duration(self.0))
    }
}

pub(crate) use lookout_discovery::deserialize_parsed;

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a duration such as 15s or 1m", PromDuration::parse)
    }
}

/// A byte size such as `10MB` or `512KiB` (Go's `units.Base2Bytes`: `KB` means 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `1024`, `10MB`, `512KiB`, ... (`KB` means 1024 as in Go's `units.Base2Bytes`).
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = t[..digits]
            .parse()
            .map_err(|_| format!("invalid size {s:?}"))?;
        let mult: u64 = match &t[digits..] {
            "" | "B" => 1,
            "KB" | "KiB" => 1 << 10,
            "MB" | "MiB" => 1 << 20,
            "GB" | "GiB" => 1 << 30,
            "TB" | "TiB" => 1 << 40,
            _ => return Err(format!("invalid size {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size out of range {s:?}"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_parsed(d, "a size such as 10MB", ByteSize::parse)
    }
}

/// HTTP basic authentication.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password given inline.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (read at request time; trailing newline removed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// The `Authorization` header (`type` defaults to `Bearer`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Scheme, `Bearer` by default.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The credentials given inline.
    #[serde(default)]
    pub credentials: Option<String>,
    /// File holding the credentials.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// The parts of Prometheus's `http_client_config` the evaluator supports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientConfig {
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Bearer token (older spelling of `authorization`).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Whether redirects are followed (default true).
    #[serde(default)]
    pub follow_redirects: Option<bool>,
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {setting} {path}: {source}")]
pub struct CredentialsError {
    /// The setting that names the file (`password_file`, `credentials_file`,
    /// `bearer_token_file`).
    pub setting: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The I/O error; a file larger than
    /// [`MAX_SECRET_FILE_BYTES`](crate::limits::MAX_SECRET_FILE_BYTES) or not a regular
    /// file is refused with a message saying so.
    pub source: std::io::Error,
}

/// Reads the secret file that `setting` names, bounded by
/// [`FileLimit::secret_file`](crate::limits::FileLimit::secret_file), without its
/// trailing line ends.
fn read_secret(path: &Path, setting: &'static str) -> Result<String, CredentialsError> {
    crate::limits::read_capped(path, crate::limits::FileLimit::secret_file(setting))
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| CredentialsError {
            setting,
            path: path.to_path_buf(),
            source,
        })
}

impl HttpClientConfig {
    /// Checks that at most one authentication method is set.
    pub fn validate(&self) -> Result<(), String> {
        let n = [
            self.basic_auth.is_some(),
            self.authorization.is_some(),
            self.bearer_token.is_some() || self.bearer_token_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err("at most one of basic_auth, authorization and bearer_token & bearer_token_file must be configured".into());
        }
        if let Some(b) = &self.basic_auth
            && b.password.is_some()
            && b.password_file.is_some()
        {
            return Err(
                "at most one of basic_auth password & password_file must be configured".into(),
            );
        }
        Ok(())
    }

    /// Adds the configured authentication to `req` (reading secret files now).
    pub fn apply(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, CredentialsError> {
        if let Some(b) = &self.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(f)) => Some(read_secret(f, "password_file")?),
                (None, None) => None,
            };
            req = req.basic_auth(&b.username, password);
        }
        if let Some(a) = &self.authorization {
            let creds = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(f)) => read_secret(f, "credentials_file")?,
                (None, None) => String::new(),
            };
            let kind = a.kind.as_deref().unwrap_or("Bearer");
            req = req.header(reqwest::header::AUTHORIZATION, format!("{kind} {creds}"));
        }
        if let Some(t) = &self.bearer_token {
            req = req.bearer_auth(t);
        } else if let Some(f) = &self.bearer_token_file {
            req = req.bearer_auth(read_secret(f, "bearer_token_file")?);
        }
        Ok(req)
    }
}

/// One `static_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses (or anything relabelling turns into one).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels added to every target of the group.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `scrape_configs` entry. Optional durations fall back to the global defaults in
/// [`validate_scrape_configs`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of the targets.
    pub job_name: String,
    /// How often to scrape (global default when absent).
    #[serde(default)]
    pub scrape_interval: Option<PromDuration>,
    /// Per-scrape time limit (global default when absent, capped at the interval).
    #[serde(default)]
    pub scrape_timeout: Option<PromDuration>,
    /// HTTP path, `/metrics` by default.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` (default) or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// URL query parameters (overridden by `__param_<name>` target labels).
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// Whether scraped labels win over target labels (default false: scraped ones are
    /// renamed `exported_<name>`).
    #[serde(default)]
    pub honor_labels: bool,
    /// Whether timestamps in the scraped body are kept (default true).
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    /// Targets.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Targets from files (JSON or YAML, globbed), re-read on change.
    #[serde(default)]
    pub file_sd_configs: Vec<lookout_discovery::FileSdConfig>,
    /// Targets from an HTTP endpoint.
    #[serde(default)]
    pub http_sd_configs: Vec<lookout_discovery::HttpSdConfig>,
    /// Targets from DNS SRV, A or AAAA records.
    #[serde(default)]
    pub dns_sd_configs: Vec<lookout_discovery::DnsSdConfig>,
    /// Targets from the Kubernetes API.
    #[serde(default)]
    pub kubernetes_sd_configs: Vec<lookout_discovery::KubernetesSdConfig>,
    /// Target relabelling, applied before scraping.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Series relabelling, applied to scraped samples before they are stored.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Maximum number of samples per scrape after relabelling (0: no limit); more fails the
    /// scrape.
    #[serde(default)]
    pub sample_limit: usize,
    /// Maximum number of labels per series (0: no limit).
    #[serde(default)]
    pub label_limit: usize,
    /// Maximum length of a label name (0: no limit).
    #[serde(default)]
    pub label_name_length_limit: usize,
    /// Maximum length of a label value (0: no limit).
    #[serde(default)]
    pub label_value_length_limit: usize,
    /// Maximum uncompressed body size (0: the evaluator's built-in cap).
    #[serde(default)]
    pub body_size_limit: ByteSize,
    /// Basic authentication for the scrape requests.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Authorization header for the scrape requests.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// Bearer token for the scrape requests.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// File holding the bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings for `https` scrapes (CA, client certificate, server name).
    #[serde(default)]
    pub tls_config: Option<crate::scrape_tls::TlsConfig>,
    /// Ask for the protobuf exposition first and store native histograms (global default,
    /// which is false unless the evaluator runs with `--enable-feature=native-histograms`).
    #[serde(default)]
    pub scrape_native_histograms: Option<bool>,
    /// Also store the classic `_bucket`/`_count`/`_sum` series of a histogram that has
    /// native buckets (global default, false).
    #[serde(default)]
    pub always_scrape_classic_histograms: Option<bool>,
    /// Prometheus 3's conversion of classic histograms to native histograms with custom
    /// buckets, stored under the family name (global default, false).
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
    /// Most buckets of a native histogram (0: no limit): the resolution is halved until it
    /// fits, and a histogram that cannot fit fails the scrape.
    #[serde(default)]
    pub native_histogram_bucket_limit: usize,
    /// Least growth factor from one native bucket to the next (0: any): a finer histogram
    /// is stored at the schema that meets it.
    #[serde(default)]
    pub native_histogram_min_bucket_factor: f64,
}

fn default_metrics_path() -> String {
    "/metrics".to_string()
}
fn default_scheme() -> String {
    "http".to_string()
}
fn default_true() -> bool {
    true
}

/// The global defaults a [`ScrapeConfig`] falls back to (Prometheus: 1m and 10s, native
/// histograms off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScrapeDefaults {
    /// Default `scrape_interval`.
    pub scrape_interval: Duration,
    /// Default `scrape_timeout`.
    pub scrape_timeout: Duration,
    /// Default `scrape_native_histograms`.
    pub scrape_native_histograms: bool,
    /// Default `always_scrape_classic_histograms`.
    pub always_scrape_classic_histograms: bool,
    /// Default `convert_classic_histograms_to_nhcb`.
    pub convert_classic_histograms_to_nhcb: bool,
}

impl Default for ScrapeDefaults {
    fn default() -> Self {
        ScrapeDefaults {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            scrape_native_histograms: false,
            always_scrape_classic_histograms: false,
            convert_classic_histograms_to_nhcb: false,
        }
    }
}

/// Why a scrape configuration is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeConfigError {
    /// A semantic error in one job.
    #[error("scrape config for job {job:?}: {message}")]
    Invalid {
        /// The job name.
        job: String,
        /// What is wrong.
        message: String,
        /// Index of the job in `scrape_configs`.
        index: usize,
        /// The key of the job the error is about (`""`: the job itself).
        key: &'static str,
    },
    /// Two jobs share a name.
    #[error("found multiple scrape configs with job name {0:?}")]
    DuplicateJob(String, usize),
}

impl ScrapeConfigError {
    /// Where in the configuration file the error is: the job's index in `scrape_configs`
    /// and the key it is about (`""`: the job itself).
    pub fn place(&self) -> (usize, &'static str) {
        match self {
            ScrapeConfigError::Invalid { index, key, .. } => (*index, key),
            ScrapeConfigError::DuplicateJob(_, index) => (*index, "job_name"),
        }
    }
}

impl ScrapeConfig {
    /// The job's service discovery settings.
    pub fn sd_configs(&self) -> lookout_discovery::SdConfigs {
        lookout_discovery::SdConfigs {
            file: self.file_sd_configs.clone(),
            http: self.http_sd_configs.clone(),
            dns: self.dns_sd_configs.clone(),
            kubernetes: self.kubernetes_sd_configs.clone(),
        }
    }

    /// The authentication settings as an [`HttpClientConfig`].
    pub fn http(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_token_file: self.bearer_token_file.clone(),
            follow_redirects: None,
        }
    }

    /// The effective interval.
    pub fn interval(&self, d: &ScrapeDefaults) -> Duration {
        self.scrape_interval
            .map(|p| p.0)
            .unwrap_or(d.scrape_interval)
    }

    /// Whether the job asks for protobuf and stores native histograms.
    pub fn native_histograms(&self, d: &ScrapeDefaults) -> bool {
        self.scrape_native_histograms
            .unwrap_or(d.scrape_native_histograms)
    }

    /// Whether the job keeps the classic series of histograms with native buckets.
    pub fn always_classic(&self, d: &ScrapeDefaults) -> bool {
        self.always_scrape_classic_histograms
            .unwrap_or(d.always_scrape_classic_histograms)
    }

    /// Whether the job converts classic histograms to custom-bucket native histograms.
    pub fn nhcb(&self, d: &ScrapeDefaults) -> bool {
        self.convert_classic_histograms_to_nhcb
            .unwrap_or(d.convert_classic_histograms_to_nhcb)
    }

    /// The highest schema `native_histogram_min_bucket_factor` allows (Prometheus's
    /// `pickSchema`: a factor of 1 or less allows every schema).
    pub fn max_schema(&self) -> i32 {
        let factor = self.native_histogram_min_bucket_factor;
        let factor = if factor <= 1.0 { 1.00271 } else { factor };
        let floor = (-factor.log2().log2()).floor();
        floor.clamp(-4.0, 8.0) as i32
    }

    /// The effective timeout: the configured one, else the global one capped at the interval.
    pub fn timeout(&self, d: &ScrapeDefaults) -> Duration {
        match self.scrape_timeout {
            Some(t) => t.0,
            None => d.scrape_timeout.min(self.interval(d)),
        }
    }
}

/// Checks job names, intervals, timeouts, schemes and labels like Prometheus's config loader.
pub fn validate_scrape_configs(
    configs: &[ScrapeConfig],
    defaults: &ScrapeDefaults,
) -> Result<(), ScrapeConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (index, c) in configs.iter().enumerate() {
        let at = |key: &'static str, message: String| ScrapeConfigError::Invalid {
            job: c.job_name.clone(),
            message,
            index,
            key,
        };
        let invalid = |message: String| at("", message);
        if c.job_name.is_empty() {
            return Err(at("job_name", "job_name is empty".into()));
        }
        if !seen.insert(c.job_name.as_str()) {
            return Err(ScrapeConfigError::DuplicateJob(c.job_name.clone(), index));
        }
        let (interval, timeout) = (c.interval(defaults), c.timeout(defaults));
        if interval.is_zero() {
            return Err(at(
                "scrape_interval",
                "scrape_interval must be greater than 0".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(at(
                "scrape_timeout",
                "scrape_timeout must be greater than 0".into(),
            ));
        }
        if timeout > interval {
            return Err(at(
                "scrape_timeout",
                format!(
                    "scrape timeout greater than scrape interval ({} > {})",
                    PromDuration(timeout),
                    PromDuration(interval)
                ),
            ));
        }
        if c.scheme != "http" && c.scheme != "https" {
            return Err(at(
                "scheme",
                format!("unsupported scheme {:?} (use http or https)", c.scheme),
            ));
        }
        if !c.metrics_path.starts_with('/') {
            return Err(at(
                "metrics_path",
                format!("metrics_path {:?} must start with '/'", c.metrics_path),
            ));
        }
        c.http().validate().map_err(invalid)?;
        check_histogram_settings(c).map_err(|(key, m)| at(key, m))?;
        for f in &c.file_sd_configs {
            f.validate().map_err(|m| at("file_sd_configs", m))?;
        }
        for h in &c.http_sd_configs {
            h.validate().map_err(|m| at("http_sd_configs", m))?;
        }
        for d in &c.dns_sd_configs {
            d.validate().map_err(|m| at("dns_sd_configs", m))?;
        }
        for k in &c.kubernetes_sd_configs {
            k.validate().map_err(|m| at("kubernetes_sd_configs", m))?;
        }
        if let Some(tls) = &c.tls_config {
            tls.check().map_err(|m| at("tls_config", m))?;
        }
        for sc in &c.static_configs {
            for name in sc.labels.keys() {
                if !is_valid_label_name(name) {
                    return Err(at(
                        "static_configs",
                        format!("{name:?} is not a valid label name"),
                    ));
                }
            }
            for t in &sc.targets {
                if t.contains('/') && c.relabel_configs.is_empty() {
                    return Err(at(
                        "static_configs",
                        format!(
                            "{t:?} is not a valid hostname (add relabel_configs to turn it into __param_target)"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Refuses what Lookout does not do with scraped histograms: a bucket factor that is
/// not a number.
fn check_histogram_settings(c: &ScrapeConfig) -> Result<(), (&'static str, String)> {
    let factor = c.native_histogram_min_bucket_factor;
    if !factor.is_finite() || factor < 0.0 {
        return Err((
            "native_histogram_min_bucket_factor",
            format!(
                "native_histogram_min_bucket_factor must be a number of at least 0 (such as 1.1), got {factor}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_histogram_settings() {
        let d = ScrapeDefaults::default();
        let c: Vec<ScrapeConfig> = serde_yaml_ng::from_str(
            "- {job_name: a, scrape_native_histograms: true, always_scrape_classic_histograms: true, native_histogram_bucket_limit: 10, native_histogram_min_bucket_factor: 1.1}\n- {job_name: b}",
        )
        .unwrap();
        validate_scrape_configs(&c, &d).unwrap();
        assert!(c[0].native_histograms(&d) && c[0].always_classic(&d));
        assert!(!c[1].native_histograms(&d) && !c[1].always_classic(&d));
        let on = ScrapeDefaults {
            scrape_native_histograms: true,
            ..d
        };
        assert!(c[1].native_histograms(&on));
        // Prometheus's pickSchema: 1.1 → 2 (factor 2^(2^-2) ≈ 1.19), 0 → 8, 2 → 0, 1e6 → -4.
        assert_eq!(c[0].max_schema(), 2);
        assert_eq!(c[1].max_schema(), 8);
        for (factor, schema) in [(2.0, 0), (1e6, -4), (1.00271, 8), (1.003, 7)] {
            let mut job = c[1].clone();
            job.native_histogram_min_bucket_factor = factor;
            assert_eq!(job.max_schema(), schema, "{factor}");
        }
        let c: Vec<ScrapeConfig> =
            serde_yaml_ng::from_str("- {job_name: a, convert_classic_histograms_to_nhcb: true}")
                .unwrap();
        validate_scrape_configs(&c, &d).unwrap();
        assert!(c[0].nhcb(&d));
        let c: Vec<ScrapeConfig> =
            serde_yaml_ng::from_str("- {job_name: a, convert_classic_histograms_to_nhcb: false}")
                .unwrap();
        assert!(!c[0].nhcb(&d));
        let global = ScrapeDefaults {
            convert_classic_histograms_to_nhcb: true,
            ..d
        };
        let c: Vec<ScrapeConfig> = serde_yaml_ng::from_str("- {job_name: a}").unwrap();
        assert!(c[0].nhcb(&global));
    }

    #[test]
    fn secret_files_over_64_kib_fail_the_request_naming_setting_file_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("app.log");
        // Sparse: never read, only its length is looked at.
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(crate::limits::MAX_SECRET_FILE_BYTES + 1))
            .unwrap();
        let client = reqwest::Client::new();
        let cfg = HttpClientConfig {
            bearer_token_file: Some(big.clone()),
            ..Default::default()
        };
        let err = cfg
            .apply(client.get("http://127.0.0.1:9/metrics"))
            .unwrap_err();
        assert_eq!(err.setting, "bearer_token_file");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read bearer_token_file {}: the file is larger than the 65536-byte \
                 bearer_token_file size limit; check that it is the right file",
                big.display()
            )
        );
        let err = read_secret(&big, "password_file").unwrap_err().to_string();
        assert!(
            err.contains("cannot read password_file")
                && err.contains("65536-byte password_file size limit"),
            "{err}"
        );

        // A secret of exactly the limit is read, without its line end.
        let token = dir.path().join("token");
        let mut text = "t".repeat(crate::limits::MAX_SECRET_FILE_BYTES as usize - 1);
        text.push('\n');
        std::fs::write(&token, &text).unwrap();
        let cfg = HttpClientConfig {
            bearer_token_file: Some(token),
            ..Default::default()
        };
        let req = cfg
            .apply(client.get("http://127.0.0.1:9/metrics"))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            req.headers()[reqwest::header::AUTHORIZATION],
            format!("Bearer {}", text.trim_end())
        );
    }

    #[test]
    fn durations() {
        assert_eq!(
            PromDuration::parse("1m30s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            PromDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(PromDuration::parse("0").unwrap().0, Duration::ZERO);
        assert!(PromDuration::parse("5").is_err());
        assert!(PromDuration::parse("1x").is_err());
        assert!(PromDuration::parse("").is_err());
        assert_eq!(PromDuration(Duration::from_secs(90)).to_string(), "1m30s");
    }

    #[test]
    fn strict_decoding_and_defaults() {
        let y = "- job_name: a\n  static_configs: [{targets: ['127.0.0.1:1']}]\n  basic_auth: {username: u, password: p}\n";
        let c: Vec<ScrapeConfig> = serde_yaml_ng::from_str(y).unwrap();
        assert_eq!(c[0].metrics_path, "/metrics");
        assert!(c[0].honor_timestamps);
        let d = ScrapeDefaults::default();
        assert_eq!(c[0].timeout(&d), Duration::from_secs(10));
        validate_scrape_configs(&c, &d).unwrap();
        let bad = "- job_name: a\n  scrape_intervall: 1s\n";
        let e = serde_yaml_ng::from_str::<Vec<ScrapeConfig>>(bad).unwrap_err();
        assert!(e.location().is_some(), "{e}");
        let e =
            serde_yaml_ng::from_str::<Vec<ScrapeConfig>>("- job_name: a\n  scrape_interval: 1q\n")
                .unwrap_err();
        assert_eq!(e.location().map(|l| l.line()), Some(2), "{e}");
    }

    #[test]
    fn semantic_errors() {
        let d = ScrapeDefaults::default();
        let c: Vec<ScrapeConfig> =
            serde_yaml_ng::from_str("- {job_name: a, scrape_interval: 5s, scrape_timeout: 10s}")
                .unwrap();
        assert!(validate_scrape_configs(&c, &d).is_err());
        let c: Vec<ScrapeConfig> =
            serde_yaml_ng::from_str("- {job_name: a}\n- {job_name: a}").unwrap();
        assert!(matches!(
            validate_scrape_configs(&c, &d),
            Err(ScrapeConfigError::DuplicateJob(..))
        ));
        let c: Vec<ScrapeConfig> =
            serde_yaml_ng::from_str("- {job_name: a, scrape_interval: 5s}").unwrap();
        assert_eq!(c[0].timeout(&d), Duration::from_secs(5));
    }
}
