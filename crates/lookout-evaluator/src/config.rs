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
    /// Syntax error, unknown key, wrong type (serde names line and column).
    #[error("{path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
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
        Ok(cfg)
    }

    /// Decodes and checks configuration text (`path` is for messages only).
    pub fn parse(path: &Path, text: &str) -> Result<EvaluatorConfig, ConfigError> {
        let cfg: EvaluatorConfig = if text.trim().is_empty() {
            EvaluatorConfig::default()
        } else {
            // Bounded before libyaml sees it: deep nesting costs its scanner O(depth²).
            lookout_web::yaml_depth::check(text).map_err(|e| ConfigError::Decode {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Decode {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        for k in cfg.global.external_labels.keys() {
            if !is_valid_label_name(k) {
                return Err(invalid(format!(
                    "global.external_labels: {k:?} is not a valid label name"
                )));
            }
        }
        if cfg
            .global
            .evaluation_interval
            .is_some_and(|d| d.0.is_zero())
        {
            return Err(invalid(
                "global.evaluation_interval must be greater than 0".to_string(),
            ));
        }
        if cfg.global.scrape_interval.is_some_and(|d| d.0.is_zero()) {
            return Err(invalid(
                "global.scrape_interval must be greater than 0".to_string(),
            ));
        }
        crate::notifier::check_alerting(&cfg.alerting, text).map_err(invalid)?;
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
        assert!(e.starts_with("e.yml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = EvaluatorConfig::parse(
            Path::new("e.yml"),
            "global:\n  external_labels:\n    bad-name: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad-name"), "{e}");
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
