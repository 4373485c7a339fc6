//! Relabelling as Prometheus's `model/relabel` does it: `relabel_configs` rewrite target
//! labels before a scrape, `metric_relabel_configs` rewrite scraped series before they are
//! stored.
//!
//! Regular expressions are anchored at both ends (`^(?s:REGEX)$`) and replacements use the
//! `$1` / `${1}` / `${name}` syntax, which Rust's `regex` crate expands the same way Go's
//! `Regexp.Expand` does.

use std::fmt;

use lookout_promql::Labels;
use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer};

/// What a relabelling step does (Prometheus's `relabel.Action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sets `target_label` to the expanded `replacement` when `regex` matches.
    #[default]
    Replace,
    /// Drops the target or series unless `regex` matches.
    Keep,
    /// Drops the target or series when `regex` matches.
    Drop,
    /// Drops the target or series unless the joined source value equals `target_label`'s value.
    KeepEqual,
    /// Drops the target or series when the joined source value equals `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to `md5(source) % modulus`.
    HashMod,
    /// Copies every label whose name matches `regex` to the expanded `replacement` name.
    LabelMap,
    /// Removes every label whose name matches `regex`.
    LabelDrop,
    /// Removes every label whose name does not match `regex`.
    LabelKeep,
    /// Sets `target_label` to the lower-cased joined source value.
    Lowercase,
    /// Sets `target_label` to the upper-cased joined source value.
    Uppercase,
}

/// An anchored regular expression as used in relabelling (`^(?s:REGEX)$`).
#[derive(Clone)]
pub struct RelabelRegex {
    source: String,
    regex: Regex,
}

impl RelabelRegex {
    /// Compiles `source` anchored at both ends.
    pub fn new(source: &str) -> Result<RelabelRegex, regex::Error> {
        let regex = lookout_promql::re2::compile_anchored(source)?;
        Ok(RelabelRegex {
            source: source.to_string(),
            regex,
        })
    }

    /// The expression as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

impl Default for RelabelRegex {
    fn default() -> Self {
        // "(.*)" always compiles.
        RelabelRegex {
            source: "(.*)".to_string(),
            regex: Regex::new("^(?s:(.*))$").expect("a constant expression compiles"),
        }
    }
}

impl fmt::Debug for RelabelRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for RelabelRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl<'de> Deserialize<'de> for RelabelRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::deserialize_parsed(d, "a regular expression", |s| {
            RelabelRegex::new(s).map_err(|e| format!("invalid regex {s:?}: {e}"))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default)]
    source_labels: Vec<String>,
    separator: Option<String>,
    #[serde(default)]
    regex: Option<RelabelRegex>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    #[serde(default)]
    action: Action,
}

/// One relabelling step, with Prometheus's defaults filled in (separator `;`, regex `(.*)`,
/// replacement `$1`, action `replace`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` to form the source value.
    pub source_labels: Vec<String>,
    /// Separator for the joined source value.
    pub separator: String,
    /// Anchored expression matched against the source value (or label names).
    pub regex: RelabelRegex,
    /// Modulus for `hashmod`.
    pub modulus: u64,
    /// Label written by `replace`, `hashmod`, `lowercase`, `uppercase` (may use `$1`).
    pub target_label: String,
    /// Replacement with `$1`-style references to `regex`'s groups.
    pub replacement: String,
    /// What to do.
    pub action: Action,
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(raw: RawRelabelConfig) -> Result<Self, String> {
        let cfg = RelabelConfig {
            source_labels: raw.source_labels,
            separator: raw.separator.unwrap_or_else(|| ";".to_string()),
            regex: raw.regex.unwrap_or_default(),
            modulus: raw.modulus.unwrap_or(0),
            target_label: raw.target_label.unwrap_or_default(),
            replacement: raw.replacement.unwrap_or_else(|| "$1".to_string()),
            action: raw.action,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RelabelConfig {
    /// Checks the combinations Prometheus rejects (missing `target_label`, `hashmod` without
    /// a modulus, label actions with other fields set, ...).
    pub fn validate(&self) -> Result<(), String> {
        use Action::*;
        let needs_target = matches!(
            self.action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {} action requires 'target_label' value",
                action_name(self.action)
            ));
        }
        if matches!(
            self.action,
            Lowercase | Uppercase | HashMod | KeepEqual | DropEqual
        ) && !is_valid_label_name(&self.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {} action",
                self.target_label,
                action_name(self.action)
            ));
        }
        if self.action == Replace
            && !self.target_label.contains('$')
            && !is_valid_label_name(&self.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for replace action",
                self.target_label
            ));
        }
        if self.action == HashMod && self.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(self.action, LabelDrop | LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != ";"
                || self.replacement != "$1")
        {
            return Err(format!(
                "{} action requires only 'regex', and no other fields",
                action_name(self.action)
            ));
        }
        Ok(())
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Replace => "replace",
        Action::Keep => "keep",
        Action::Drop => "drop",
        Action::KeepEqual => "keepequal",
        Action::DropEqual => "dropequal",
        Action::HashMod => "hashmod",
        Action::LabelMap => "labelmap",
        Action::LabelDrop => "labeldrop",
        Action::LabelKeep => "labelkeep",
        Action::Lowercase => "lowercase",
        Action::Uppercase => "uppercase",
    }
}

/// Applies `configs` in order. `None` means the target or series was dropped.
pub fn process(labels: &Labels, configs: &[RelabelConfig]) -> Option<Labels> {
    let mut lb = labels.clone();
    for cfg in configs {
        if !apply(&mut lb, cfg) {
            return None;
        }
    }
    Some(lb)
}

/// Applies one step to `lb`; false means drop.
fn apply(lb: &mut Labels, cfg: &RelabelConfig) -> bool {
    let val = cfg
        .source_labels
        .iter()
        .map(|n| lb.get(n).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(&cfg.separator);
    match cfg.action {
        Action::Drop => {
            if cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::Keep => {
            if !cfg.regex.is_match(&val) {
                return false;
            }
        }
        Action::DropEqual => {
            if lb.get(&cfg.target_label).unwrap_or("") == val {
                return false;
            }
        }
        Action::KeepEqual => {
            if lb.get(&cfg.target_label).unwrap_or("") != val {
                return false;
            }
        }
        Action::Replace => {
            let Some(caps) = cfg.regex.regex.captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&cfg.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&cfg.replacement, &mut res);
            // Labels::set removes the label for an empty value, as Prometheus does.
            lb.set(&target, &res);
        }
        Action::Lowercase => lb.set(&cfg.target_label, &val.to_lowercase()),
        Action::Uppercase => lb.set(&cfg.target_label, &val.to_uppercase()),
        Action::HashMod => {
            let digest = Md5::digest(val.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..16]);
            let m = u64::from_be_bytes(tail) % cfg.modulus;
            lb.set(&cfg.target_label, &m.to_string());
        }
        Action::LabelMap => {
            let pairs: Vec<(String, String)> = lb
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (name, value) in pairs {
                if let Some(caps) = cfg.regex.regex.captures(&name) {
                    let mut res = String::new();
                    caps.expand(&cfg.replacement, &mut res);
                    lb.set(&res, &value);
                }
            }
        }
        Action::LabelDrop | Action::LabelKeep => {
            let keep_matching = cfg.action == Action::LabelKeep;
            let names: Vec<String> = lb.iter().map(|(k, _)| k.to_string()).collect();
            for name in names {
                if cfg.regex.is_match(&name) != keep_matching {
                    lb.remove(&name);
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfgs(yaml: &str) -> Vec<RelabelConfig> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn blackbox_multi_target_pattern() {
        let c = cfgs(
            r#"
- source_labels: [__address__]
  target_label: __param_target
- source_labels: [__param_target]
  target_label: instance
- target_label: __address__
  replacement: 127.0.0.1:9115
"#,
        );
        let l = Labels::new([("__address__", "https://example.org"), ("job", "bb")]);
        let out = process(&l, &c).unwrap();
        assert_eq!(out.get("__param_target"), Some("https://example.org"));
        assert_eq!(out.get("instance"), Some("https://example.org"));
        assert_eq!(out.get("__address__"), Some("127.0.0.1:9115"));
    }

    #[test]
    fn regex_is_anchored_and_groups_expand() {
        let c = cfgs(
            r#"
- source_labels: [a, b]
  regex: "x;(.*)"
  target_label: "c_${1}"
  replacement: "v=$1"
"#,
        );
        let out = process(&Labels::new([("a", "x"), ("b", "y")]), &c).unwrap();
        assert_eq!(out.get("c_y"), Some("v=y"));
        // "zx;y" does not match the anchored expression.
        let out = process(&Labels::new([("a", "zx"), ("b", "y")]), &c).unwrap();
        assert_eq!(out.get("c_y"), None);
    }

    #[test]
    fn keep_drop_and_label_actions() {
        let keep = cfgs("- {source_labels: [job], regex: 'a|b', action: keep}");
        assert!(process(&Labels::new([("job", "a")]), &keep).is_some());
        assert!(process(&Labels::new([("job", "ab")]), &keep).is_none());
        let drop = cfgs("- {source_labels: [job], regex: a, action: drop}");
        assert!(process(&Labels::new([("job", "a")]), &drop).is_none());
        let map = cfgs("- {regex: '__meta_(.+)', action: labelmap}");
        let out = process(&Labels::new([("__meta_zone", "eu")]), &map).unwrap();
        assert_eq!(out.get("zone"), Some("eu"));
        let ld = cfgs("- {regex: 'tmp_.*', action: labeldrop}");
        let out = process(&Labels::new([("tmp_x", "1"), ("y", "2")]), &ld).unwrap();
        assert_eq!(out.iter().count(), 1);
        let lk = cfgs("- {regex: 'y', action: labelkeep}");
        let out = process(&Labels::new([("tmp_x", "1"), ("y", "2")]), &lk).unwrap();
        assert_eq!(out.get("y"), Some("2"));
        assert_eq!(out.len(), 1);
        let up = cfgs("- {source_labels: [a], target_label: b, action: uppercase}");
        let out = process(&Labels::new([("a", "xY")]), &up).unwrap();
        assert_eq!(out.get("b"), Some("XY"));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Prometheus: sum64(md5("foo")) % 1000 == 72 ... computed from the md5 tail bytes.
        let c = cfgs("- {source_labels: [a], target_label: h, modulus: 1000, action: hashmod}");
        let out = process(&Labels::new([("a", "foo")]), &c).unwrap();
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; tail edef654fccc4a4d8.
        let expect = 0xedef654fccc4a4d8u64 % 1000;
        assert_eq!(out.get("h"), Some(expect.to_string().as_str()));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        assert!(
            serde_yaml_ng::from_str::<Vec<RelabelConfig>>("- {action: hashmod, target_label: x}")
                .is_err()
        );
        assert!(serde_yaml_ng::from_str::<Vec<RelabelConfig>>("- {action: replace}").is_err());
        assert!(serde_yaml_ng::from_str::<Vec<RelabelConfig>>("- {regex: '('}").is_err());
        assert!(serde_yaml_ng::from_str::<Vec<RelabelConfig>>("- {bogus: 1}").is_err());
        assert!(
            serde_yaml_ng::from_str::<Vec<RelabelConfig>>(
                "- {action: labeldrop, target_label: x, regex: a}"
            )
            .is_err()
        );
    }
}
