//! The evaluator's configuration file, in Prometheus's schema: `global` (scrape and
//! evaluation intervals, external labels), `rule_files` (globs, relative to the file),
//! `scrape_configs` (embedded mode) and `alerting`. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_promql::Labels;
use serde::Deserialize;

use crate::notifier::AlertingConfig;
use crate::rules::file::{PromDuration, is_valid_label_name};
use crate::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_web::yaml_locate::{self, Seg};

/// Appended to a refused duration: what a valid one looks like.
const DURATION_HINT: &str = " (a duration is a number and a unit, combined from the largest unit down: 1m30s, 500ms, 2h; units ms, s, m, h, d, w, y)";

/// One step of a path to a key of the file (owned, for errors found after decoding).
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(&'static str),
    Index(usize),
}

/// Checks the `alerting` section as far as it can be checked without connecting:
/// authentication settings, schemes, timeouts, static Alertmanager addresses (`host:port`,
/// unless `relabel_configs` may rewrite them) and webhook URLs. Errors come with the path to
/// the offending key.
fn check_alerting(cfg: &AlertingConfig) -> Result<(), (Vec<Step>, String)> {
    use Step::{Index, Key};
    for (i, am) in cfg.alertmanagers.iter().enumerate() {
        let here = |key: &'static str| vec![Key("alertmanagers"), Index(i), Key(key)];
        let http = crate::scrape_config::HttpClientConfig {
            basic_auth: am.basic_auth.clone(),
            authorization: am.authorization.clone(),
            bearer_token: am.bearer_token.clone(),
            bearer_token_file: am.bearer_token_file.clone(),
            follow_redirects: None,
        };
        http.validate()
            .map_err(|m| (vec![Key("alertmanagers"), Index(i)], m))?;
        if let Some(scheme) = am.scheme.as_deref()
            && scheme != "http"
            && scheme != "https"
        {
            return Err((
                here("scheme"),
                format!("unsupported scheme {scheme:?} for an Alertmanager (use http or https)"),
            ));
        }
        if am.timeout.is_some_and(|d| d.0.is_zero()) {
            return Err((here("timeout"), "timeout must be greater than 0".into()));
        }
        if let Some(prefix) = am.path_prefix.as_deref()
            && !prefix.is_empty()
            && !prefix.starts_with('/')
        {
            return Err((
                here("path_prefix"),
                format!("path_prefix {prefix:?} must start with '/'"),
            ));
        }
        if !am.relabel_configs.is_empty() {
            continue;
        }
        for (j, sc) in am.static_configs.iter().enumerate() {
            for (k, address) in sc.targets.iter().enumerate() {
                if let Err(why) = check_host_port(address) {
                    return Err((
                        vec![
                            Key("alertmanagers"),
                            Index(i),
                            Key("static_configs"),
                            Index(j),
                            Key("targets"),
                            Index(k),
                        ],
                        format!("invalid Alertmanager address {address:?}: {why}"),
                    ));
                }
            }
        }
    }
    for (i, wh) in cfg.webhooks.iter().enumerate() {
        if let Err(why) = check_webhook_url(&wh.url) {
            return Err((
                vec![Key("webhooks"), Index(i), Key("url")],
                format!("invalid webhook url {:?}: {why}", wh.url),
            ));
        }
        if wh.timeout.is_some_and(|d| d.0.is_zero()) {
            return Err((
                vec![Key("webhooks"), Index(i), Key("timeout")],
                "timeout must be greater than 0".into(),
            ));
        }
    }
    Ok(())
}

/// Why `address` is not a `host:port` (or `host`) an Alertmanager can be reached at.
fn check_host_port(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("it is empty; write host:port, e.g. alertmanager:9093".into());
    }
    if let Some((scheme, _)) = address.split_once("://") {
        return Err(format!(
            "write host:port without the scheme; set `scheme: {scheme}` on the Alertmanager entry instead"
        ));
    }
    if address.contains('/') {
        return Err(
            "write host:port without a path; set `path_prefix` on the Alertmanager entry instead"
                .into(),
        );
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        // [IPv6]:port
        let Some((ip, after)) = rest.split_once(']') else {
            return Err("unclosed '[' around an IPv6 address".into());
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} is not an IPv6 address"));
        }
        match after {
            "" => (ip, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (ip, Some(port)),
                None => return Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 address must be written in brackets: [::1]:9093".into());
            }
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')))
    {
        return Err(format!("the host contains {c:?}"));
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            Ok(_) => return Err(format!("port {port} is out of range (1 to 65535)")),
            Err(_) => return Err(format!("port {port:?} is not a number")),
        }
    }
    Ok(())
}

/// Why `url` is not an absolute http(s) URL a webhook can be posted to.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let Some((scheme, _)) = url.split_once("://") else {
        return Err("missing scheme; write http://host[:port]/path or https://…".into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("unsupported scheme {scheme:?} (use http or https)"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the host is empty".into());
    }
    Ok(())
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorConfig {
    /// Defaults and external labels.
    #[serde(default)]
    pub global: GlobalConfig,
    /// Rule file globs (relative ones are resolved from the configuration file's directory).
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Targets scraped in embedded mode.
    #[serde(default)]
    pub scrape_configs: Vec<ScrapeConfig>,
    /// Where alerts go.
    #[serde(default)]
    pub alerting: AlertingConfig,
}

/// The `global` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Default scrape interval (1m).
    #[serde(default)]
    pub scrape_interval: Option<PromDuration>,
    /// Default scrape timeout (10s).
    #[serde(default)]
    pub scrape_timeout: Option<PromDuration>,
    /// Default rule group interval (1m).
    #[serde(default)]
    pub evaluation_interval: Option<PromDuration>,
    /// Default `query_offset` of rule groups (0).
    #[serde(default)]
    pub rule_query_offset: Option<PromDuration>,
    /// Labels added to alerts sent out and available as `$externalLabels`.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Default `scrape_native_histograms` of the scrape configs (false).
    #[serde(default)]
    pub scrape_native_histograms: Option<bool>,
    /// Default `always_scrape_classic_histograms` of the scrape configs (false).
    #[serde(default)]
    pub always_scrape_classic_histograms: Option<bool>,
    /// Default `convert_classic_histograms_to_nhcb` (false).
    #[serde(default)]
    pub convert_classic_histograms_to_nhcb: Option<bool>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax error, unknown key, wrong type: `file:line:col: message` (serde's position).
    #[error("{message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong, led by the file and the position.
        message: String,
    },
    /// A value is out of range: `file:line:col: message` (the offending key's position).
    #[error("{message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, led by the file and the position.
        message: String,
    },
}

impl EvaluatorConfig {
    /// Reads and checks a configuration file of at most the default 1 MiB; relative
    /// `rule_files` become relative to its directory.
    pub fn load(path: &Path) -> Result<EvaluatorConfig, ConfigError> {
        EvaluatorConfig::load_with_limit(path, crate::limits::MAX_CONFIG_FILE_BYTES)
    }

    /// [`EvaluatorConfig::load`] with a file size limit of `max_bytes`
    /// (`--config.max-file-size`): a larger file is refused unread, with an error naming
    /// the limit.
    pub fn load_with_limit(path: &Path, max_bytes: u64) -> Result<EvaluatorConfig, ConfigError> {
        let text =
            crate::limits::read_capped(path, crate::limits::FileLimit::config_file(max_bytes))
                .map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
        let mut cfg = EvaluatorConfig::parse(path, &text)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        cfg.rule_files = cfg
            .rule_files
            .iter()
            .map(|f| {
                if Path::new(f).is_absolute() || dir.as_os_str().is_empty() {
                    f.clone()
                } else {
                    dir.join(f).display().to_string()
                }
            })
            .collect();
        for tls in cfg
            .scrape_configs
            .iter_mut()
            .filter_map(|c| c.tls_config.as_mut())
        {
            tls.resolve_paths(dir);
        }
        for f in cfg
            .scrape_configs
            .iter_mut()
            .flat_map(|c| c.file_sd_configs.iter_mut())
        {
            f.set_directory(dir);
        }
        Ok(cfg)
    }

    /// Decodes and checks configuration text (`path` is for messages only). Errors name
    /// the file, line and column: serde's position for decoding errors, the offending key's
    /// for the checks made after decoding.
    pub fn parse(path: &Path, text: &str) -> Result<EvaluatorConfig, ConfigError> {
        let origin = path.display().to_string();
        let decode = |message: String| ConfigError::Decode {
            path: path.to_path_buf(),
            message,
        };
        let cfg: EvaluatorConfig = if text.trim().is_empty() {
            EvaluatorConfig::default()
        } else {
            // Bounded before libyaml sees it: deep nesting costs its scanner O(depth²).
            lookout_web::yaml_depth::check(text).map_err(|e| decode(format!("{origin}: {e}")))?;
            serde_yaml_ng::from_str(text).map_err(|e| {
                let mut message = yaml_locate::decode_error(&origin, &e);
                if message.contains("not a valid duration string") {
                    message.push_str(DURATION_HINT);
                }
                decode(message)
            })?
        };
        let invalid = |segs: &[Seg<'_>], message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: yaml_locate::at(text, &origin, segs, message),
        };
        for k in cfg.global.external_labels.keys() {
            if !is_valid_label_name(k) {
                return Err(invalid(
                    &[Seg::Key("global"), Seg::Key("external_labels"), Seg::Key(k)],
                    &format!(
                        "global.external_labels: {k:?} is not a valid label name (use [a-zA-Z_][a-zA-Z0-9_]*)"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("evaluation_interval", cfg.global.evaluation_interval),
            ("scrape_interval", cfg.global.scrape_interval),
        ] {
            if value.is_some_and(|d| d.0.is_zero()) {
                return Err(invalid(
                    &[Seg::Key("global"), Seg::Key(key)],
                    &format!("global.{key} must be greater than 0"),
                ));
            }
        }
        crate::scrape_config::validate_scrape_configs(&cfg.scrape_configs, &cfg.scrape_defaults())
            .map_err(|e| {
                let (index, key) = e.place();
                let mut segs = vec![Seg::Key("scrape_configs"), Seg::Index(index)];
                segs.extend((!key.is_empty()).then_some(Seg::Key(key)));
                invalid(&segs, &e.to_string())
            })?;
        check_alerting(&cfg.alerting).map_err(|(segs, message)| {
            let segs: Vec<Seg<'_>> = std::iter::once(&Step::Key("alerting"))
                .chain(&segs)
                .map(|s| match s {
                    Step::Key(k) => Seg::Key(k),
                    Step::Index(i) => Seg::Index(*i),
                })
                .collect();
            invalid(&segs, &format!("alerting: {message}"))
        })?;
        // Routes, receivers and inhibit rules: what decoding cannot check (an unknown
        // receiver, an invalid email address), placed at the offending entry.
        crate::notifier::check_routing(&cfg.alerting).map_err(|(steps, message)| {
            let segs: Vec<Seg<'_>> = std::iter::once(Seg::Key("alerting"))
                .chain(steps.iter().map(|s| match s {
                    crate::notifier::PathStep::Key(k) => Seg::Key(k),
                    crate::notifier::PathStep::Index(i) => Seg::Index(*i),
                }))
                .collect();
            invalid(&segs, &format!("alerting.{message}"))
        })?;
        Ok(cfg)
    }

    /// `global.evaluation_interval` or 1m.
    pub fn evaluation_interval(&self) -> Duration {
        self.global
            .evaluation_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(60))
    }

    /// `global.rule_query_offset` or 0.
    pub fn rule_query_offset(&self) -> Duration {
        self.global
            .rule_query_offset
            .map(|d| d.0)
            .unwrap_or_default()
    }

    /// External labels as a label set.
    pub fn external_labels(&self) -> Labels {
        Labels::new(
            self.global
                .external_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    /// Scrape defaults from `global`.
    pub fn scrape_defaults(&self) -> ScrapeDefaults {
        let d = ScrapeDefaults::default();
        ScrapeDefaults {
            scrape_interval: self
                .global
                .scrape_interval
                .map(|x| x.0)
                .unwrap_or(d.scrape_interval),
            scrape_timeout: self
                .global
                .scrape_timeout
                .map(|x| x.0)
                .unwrap_or(d.scrape_timeout),
            scrape_native_histograms: self.global.scrape_native_histograms.unwrap_or(false),
            always_scrape_classic_histograms: self
                .global
                .always_scrape_classic_histograms
                .unwrap_or(false),
            convert_classic_histograms_to_nhcb: self
                .global
                .convert_classic_histograms_to_nhcb
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_prometheus_style_config() {
        let cfg = EvaluatorConfig::parse(
            Path::new("e.yml"),
            "global:\n  evaluation_interval: 15s\n  external_labels:\n    monitor: lookout\nrule_files:\n  - rules/*.yml\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:9100']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:9093']\n",
        )
        .unwrap();
        assert_eq!(cfg.evaluation_interval(), Duration::from_secs(15));
        assert_eq!(cfg.external_labels().get("monitor"), Some("lookout"));
        assert_eq!(cfg.scrape_configs.len(), 1);
        assert_eq!(cfg.alerting.alertmanagers.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = EvaluatorConfig::parse(Path::new("e.yml"), "global:\n  evaluation_intervl: 15s\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("e.yml:2:3: global: unknown field"), "{e}");
        let e = EvaluatorConfig::parse(
            Path::new("e.yml"),
            "global:\n  external_labels:\n    bad-name: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad-name"), "{e}");
    }

    /// The message for `text`, which must be refused.
    fn error(text: &str) -> String {
        EvaluatorConfig::parse(Path::new("e.yml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_line_and_column() {
        for (text, expected) in [
            (
                "global:\n  evaluation_interval: 15x\n",
                "e.yml:2:3: global: not a valid duration string: \"15x\" (a duration is a number and a unit",
            ),
            (
                "global:\n  external_labels:\n    ok: a\n    bad-name: x\n",
                "e.yml:4:5: global.external_labels: \"bad-name\" is not a valid label name",
            ),
            (
                "global:\n  scrape_interval: 0s\n",
                "e.yml:2:3: global.scrape_interval must be greater than 0",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    static_configs: [{targets: ['x:1']}]\n  - job_name: b\n    scrape_interval: 10s\n    scrape_timeout: 20s\n",
                "e.yml:6:5: scrape config for job \"b\": scrape timeout greater than scrape interval (20s > 10s)",
            ),
            (
                "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
                "e.yml:3:5: found multiple scrape configs with job name \"a\"",
            ),
            (
                "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
                "e.yml:3:5: scrape config for job \"a\": unsupported scheme \"ftp\" (use http or https)",
            ),
            (
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets:\n            - am:9093\n            - http://am:9093\n",
                "e.yml:6:15: alerting: invalid Alertmanager address \"http://am:9093\": write host:port without the scheme; set `scheme: http`",
            ),
            (
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets:\n            - am:99999\n",
                "e.yml:5:15: alerting: invalid Alertmanager address \"am:99999\": port 99999 is out of range (1 to 65535)",
            ),
            (
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets:\n            - am:9093/alerts\n",
                "e.yml:5:15: alerting: invalid Alertmanager address \"am:9093/alerts\": write host:port without a path; set `path_prefix`",
            ),
            (
                "alerting:\n  alertmanagers:\n    - scheme: ftp\n",
                "e.yml:3:7: alerting: unsupported scheme \"ftp\" for an Alertmanager (use http or https)",
            ),
            (
                "alerting:\n  webhooks:\n    - url: https://ok.example/x\n    - url: hooks.example.com/x\n",
                "e.yml:4:7: alerting: invalid webhook url \"hooks.example.com/x\": missing scheme",
            ),
            (
                "alerting:\n  webhooks:\n    - url: http://h:99999/x\n",
                "e.yml:3:7: alerting: invalid webhook url \"http://h:99999/x\": invalid port number",
            ),
        ] {
            let e = error(text);
            assert!(
                e.starts_with(expected),
                "{text}\n got: {e}\nwant: {expected}"
            );
        }
    }

    #[test]
    fn addresses_and_urls_that_are_fine() {
        for a in [
            "am:9093",
            "am",
            "10.0.0.1:9093",
            "[::1]:9093",
            "[::1]",
            "a-b_c.d:1",
        ] {
            assert_eq!(check_host_port(a), Ok(()), "{a}");
        }
        for (a, why) in [
            ("::1:9093", "in brackets"),
            (":9093", "the host is empty"),
            ("am:x", "\"x\" is not a number"),
            ("am:0", "out of range"),
            ("a m:1", "contains ' '"),
            ("", "it is empty"),
        ] {
            let e = check_host_port(a).unwrap_err();
            assert!(e.contains(why), "{a}: {e}");
        }
        assert!(check_webhook_url("https://h/x").is_ok());
        assert!(
            check_webhook_url("ftp://h/x")
                .unwrap_err()
                .contains("unsupported scheme")
        );
    }

    #[test]
    fn rule_files_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yml");
        std::fs::write(&path, "rule_files: ['rules/*.yml', '/abs/x.yml']\n").unwrap();
        let cfg = EvaluatorConfig::load(&path).unwrap();
        assert_eq!(
            cfg.rule_files[0],
            dir.path().join("rules/*.yml").display().to_string()
        );
        assert_eq!(cfg.rule_files[1], "/abs/x.yml");
    }

    #[test]
    fn a_config_file_over_the_lowered_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yml");
        std::fs::write(&path, "rule_files: ['rules/*.yml']\n").unwrap();
        let before = crate::limits::hits("config_file_size");
        let e = EvaluatorConfig::load_with_limit(&path, 10)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(
            e.contains("10-byte configuration file size limit (--config.max-file-size)"),
            "{e}"
        );
        assert_eq!(crate::limits::hits("config_file_size"), before + 1);
        assert!(EvaluatorConfig::load_with_limit(&path, 1000).is_ok());
    }
}
