//! `--config.check`: validates an evaluator configuration file and every rule file it names,
//! without starting anything. Shared by `lookout evaluator --config.check` and
//! `lookout up --config.check`.

use std::fmt;
use std::path::Path;

use crate::config::EvaluatorConfig;
use crate::rules::manager::RuleManager;

/// What a valid configuration holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSummary {
    /// Rule files found through `rule_files` (and the extra globs).
    pub rule_files: usize,
    /// Rule groups in them.
    pub groups: usize,
    /// Rules in them.
    pub rules: usize,
    /// Scrape jobs (embedded mode).
    pub scrape_configs: usize,
    /// Static Alertmanager targets.
    pub alertmanagers: usize,
    /// Webhooks.
    pub webhooks: usize,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for ConfigSummary {
    /// `OK (2 rule files, 3 groups, 7 rules, 1 scrape config, 1 Alertmanager, 0 webhooks)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OK ({}, {}, {}, {}, {}, {})",
            plural(self.rule_files, "rule file", "rule files"),
            plural(self.groups, "group", "groups"),
            plural(self.rules, "rule", "rules"),
            plural(self.scrape_configs, "scrape config", "scrape configs"),
            plural(self.alertmanagers, "Alertmanager", "Alertmanagers"),
            plural(self.webhooks, "webhook", "webhooks"),
        )
    }
}

/// Reads and checks the configuration at `path` (at most `max_config_bytes`) and the rule
/// files its `rule_files` and `extra_rule_files` name (each at most `max_rule_bytes`), as
/// the evaluator does at start-up. Returns what it holds, or every error found: the
/// configuration's (one, `file:line:col: message`), else one per invalid rule file.
pub fn check_config(
    path: &Path,
    extra_rule_files: &[String],
    max_config_bytes: u64,
    max_rule_bytes: u64,
) -> Result<ConfigSummary, Vec<String>> {
    let cfg = EvaluatorConfig::load_with_limit(path, max_config_bytes)
        .map_err(|e| vec![e.to_string()])?;
    let patterns: Vec<String> = cfg
        .rule_files
        .iter()
        .chain(extra_rule_files)
        .cloned()
        .collect();
    let files = RuleManager::load_files_with_limit(&patterns, max_rule_bytes).map_err(|e| {
        let crate::rules::manager::ReloadError::RuleFiles(errors) = e;
        errors.iter().map(ToString::to_string).collect::<Vec<_>>()
    })?;
    Ok(ConfigSummary {
        rule_files: files.len(),
        groups: files.iter().map(|f| f.def.groups.len()).sum(),
        rules: files.iter().map(|f| f.rule_count()).sum(),
        scrape_configs: cfg.scrape_configs.len(),
        alertmanagers: cfg
            .alerting
            .alertmanagers
            .iter()
            .flat_map(|a| &a.static_configs)
            .map(|s| s.targets.len())
            .sum(),
        webhooks: cfg.alerting.webhooks.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn a_valid_configuration_is_summed_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(
            dir.path().join("rules/a.yml"),
            "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n      - alert: A\n        expr: up == 0\n",
        )
        .unwrap();
        let path = dir.path().join("e.yml");
        std::fs::write(
            &path,
            "rule_files: ['rules/*.yml']\nalerting:\n  alertmanagers:\n    - static_configs: [{targets: ['a:9093', 'b:9093']}]\n  webhooks:\n    - url: http://h/x\n",
        )
        .unwrap();
        let summary = check_config(&path, &[], MB, MB).unwrap();
        assert_eq!(
            summary.to_string(),
            "OK (1 rule file, 1 group, 2 rules, 0 scrape configs, 2 Alertmanagers, 1 webhook)"
        );
    }

    #[test]
    fn configuration_and_rule_file_errors_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.yml");
        std::fs::write(&path, "global:\n  evaluation_interval: 0s\n").unwrap();
        let errors = check_config(&path, &[], MB, MB).unwrap_err();
        assert_eq!(
            errors,
            vec![format!(
                "{}:2:3: global.evaluation_interval must be greater than 0",
                path.display()
            )]
        );
        for name in ["a.yml", "b.yml"] {
            std::fs::write(
                dir.path().join(name),
                "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: sum(\n",
            )
            .unwrap();
        }
        std::fs::write(&path, "rule_files: ['*.yml']\n").unwrap();
        // e.yml itself matches the glob and is no rule file either.
        let errors = check_config(&path, &[], MB, MB).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].contains("a.yml: 5:15: group \"g\", rule 1"),
            "{errors:?}"
        );
    }
}
