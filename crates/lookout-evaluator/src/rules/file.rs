//! Rule files: strict decoding of Prometheus's rule-file schema and the validation
//! `promtool check rules` does (Prometheus's `model/rulefmt`).
//!
//! YAML is decoded with `serde_yaml_ng` (unknown keys are errors). `serde` does not keep the
//! positions of values, so [`locate`] scans the block-style text for the lines and columns of
//! each group and of each rule's `record`, `alert` and `expr` values; errors then name
//! `file:line:col` like promtool does. Files in flow style still load, their semantic errors
//! just come without a position.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::template;
use crate::yaml::Shape;

/// A rule file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileDef {
    /// The rule groups.
    #[serde(default)]
    pub groups: Vec<GroupDef>,
}

/// The keys of a rule file as Go's decoder names them in errors (promtool 2.42's
/// `rulefmt` types; `query_offset` and group `labels` are Prometheus 3's).
static RULE_GROUPS: Shape = Shape::Struct {
    go_type: "rulefmt.RuleGroups",
    fields: &[("groups", Shape::List(&RULE_GROUP))],
};
static RULE_GROUP: Shape = Shape::Struct {
    go_type: "rulefmt.RuleGroup",
    fields: &[
        ("name", Shape::Any),
        ("interval", Shape::Any),
        ("query_offset", Shape::Any),
        ("limit", Shape::Any),
        ("labels", Shape::Any),
        ("rules", Shape::List(&RULE_NODE)),
    ],
};
static RULE_NODE: Shape = Shape::Struct {
    go_type: "rulefmt.RuleNode",
    fields: &[
        ("record", Shape::Any),
        ("alert", Shape::Any),
        ("expr", Shape::Any),
        ("for", Shape::Any),
        ("keep_firing_for", Shape::Any),
        ("labels", Shape::Any),
        ("annotations", Shape::Any),
    ],
};

/// One `groups:` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    /// The group's name, unique within the file.
    #[serde(default)]
    pub name: String,
    /// Evaluation interval (the global `evaluation_interval` when absent).
    #[serde(default)]
    pub interval: Option<PromDuration>,
    /// How far in the past every query of the group is evaluated.
    #[serde(default)]
    pub query_offset: Option<PromDuration>,
    /// Maximum number of alerts / series a rule may produce (0: no limit).
    #[serde(default)]
    pub limit: usize,
    /// Labels added to every rule of the group (rule labels win).
    #[serde(default)]
    pub labels: BTreeMap<String, Scalar>,
    /// The rules, evaluated in this order.
    #[serde(default)]
    pub rules: Vec<RuleDef>,
}

/// One rule: recording (`record`) or alerting (`alert`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// Name of the recorded metric.
    #[serde(default)]
    pub record: Option<Scalar>,
    /// Name of the alert.
    #[serde(default)]
    pub alert: Option<Scalar>,
    /// The PromQL expression.
    #[serde(default)]
    pub expr: Option<Scalar>,
    /// How long the expression must hold before the alert fires.
    #[serde(default, rename = "for")]
    pub for_: Option<PromDuration>,
    /// How long the alert keeps firing after the expression stops returning it.
    #[serde(default)]
    pub keep_firing_for: Option<PromDuration>,
    /// Labels added to the result (templates for alerting rules).
    #[serde(default)]
    pub labels: BTreeMap<String, Scalar>,
    /// Annotations of the alert (templates).
    #[serde(default)]
    pub annotations: BTreeMap<String, Scalar>,
}

impl RuleDef {
    /// The alert or record name (alert first, as Prometheus reports it).
    pub fn name(&self) -> &str {
        match (&self.alert, &self.record) {
            (Some(a), _) if !a.0.is_empty() => &a.0,
            (_, Some(r)) => &r.0,
            _ => "",
        }
    }

    /// Whether this is an alerting rule.
    pub fn is_alert(&self) -> bool {
        self.alert.as_ref().is_some_and(|a| !a.0.is_empty())
    }
}

/// A YAML scalar read as its source text, as Go's YAML decoders do for `string` fields:
/// `expr: 1` is the expression `1`, `bucket: 1.0` the label value `1.0` (not `1`),
/// `enabled: yes` the text `yes`, and a null (`~`, `null`, nothing) the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                // The YAML deserializer hands the source text of any scalar to a string
                // visitor; the null forms read as the empty string, as in Go.
                match v {
                    "~" | "null" | "Null" | "NULL" => Ok(Scalar(String::new())),
                    _ => Ok(Scalar(v.to_string())),
                }
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        // `deserialize_str` keeps a scalar's text (`1.0`, `0x10`, `yes`); the other
        // visits serve deserializers that only have typed values.
        d.deserialize_str(V)
    }
}

/// A Prometheus duration (`1h30m`, `5m`, `90s`, `100ms`, `0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Scalar::deserialize(d)?;
        lookout_promql::duration::parse_duration(&s.0)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// A position in a rule file (1-based line and column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Where a group and its rules' key values are in the file.
#[derive(Clone, Debug, Default)]
pub struct GroupPos {
    /// The group's mapping (its first key).
    pub pos: Option<Pos>,
    /// Per rule, in order.
    pub rules: Vec<RulePos>,
}

/// Where a rule's `record`, `alert` and `expr` values are.
#[derive(Clone, Debug, Default)]
pub struct RulePos {
    /// The `record:` value.
    pub record: Option<Pos>,
    /// The `alert:` value.
    pub alert: Option<Pos>,
    /// The `expr:` value.
    pub expr: Option<Pos>,
}

/// One error in a rule file, formatted like promtool's (`5:15: group "g", rule 1, "x": ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Positions of the offending value(s) (two for "only one of record and alert").
    pub positions: Vec<Pos>,
    /// `group "g", rule N, "name": ` context (empty for file/group-level errors).
    pub context: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.positions {
            write!(f, "{p}: ")?;
        }
        write!(f, "{}{}", self.context, self.message)
    }
}

/// A rule file that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum RuleFileError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not decode into the schema (syntax error, unknown key, wrong type).
    #[error("{path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// serde's message, with line and column.
        message: String,
    },
    /// The file decodes but some groups or rules are invalid.
    #[error("{}", .errors.iter().map(|e| format!("{}: {e}", .path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: Vec<RuleError>,
    },
    /// A glob pattern is malformed.
    #[error("bad rule file pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A decoded and validated rule file.
#[derive(Clone, Debug)]
pub struct RuleFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its content.
    pub def: RuleFileDef,
}

impl RuleFile {
    /// Number of rules in all groups.
    pub fn rule_count(&self) -> usize {
        self.def.groups.iter().map(|g| g.rules.len()).sum()
    }
}

/// Reads, decodes and validates one rule file of at most the default 10 MiB (what
/// `lookout rules check` and `lookout rules test` read through).
pub fn load_file(path: &Path) -> Result<RuleFile, RuleFileError> {
    load_file_with_limit(path, crate::limits::MAX_RULE_FILE_BYTES)
}

/// [`load_file`] with a file size limit of `max_bytes` (`--rules.max-file-size`): a larger
/// file is refused unread, with an error naming the limit.
pub fn load_file_with_limit(path: &Path, max_bytes: u64) -> Result<RuleFile, RuleFileError> {
    let text = crate::limits::read_capped(path, crate::limits::FileLimit::rule_file(max_bytes))
        .map_err(|source| RuleFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse_str(path, &text)
}

/// Decodes and validates rule-file text; `path` is only used in messages.
pub fn parse_str(path: &Path, text: &str) -> Result<RuleFile, RuleFileError> {
    let def: RuleFileDef = if text.trim().is_empty() {
        RuleFileDef::default()
    } else {
        crate::yaml::from_str(text).map_err(|message| RuleFileError::Decode {
            path: path.to_path_buf(),
            // Unknown keys as promtool lists them: every one, by line.
            message: match message.contains("unknown field") {
                true => crate::yaml::unknown_fields(text, &RULE_GROUPS).unwrap_or(message),
                false => message,
            },
        })?
    };
    let errors = validate(&def, &locate(text));
    if !errors.is_empty() {
        return Err(RuleFileError::Invalid {
            path: path.to_path_buf(),
            errors,
        });
    }
    Ok(RuleFile {
        path: path.to_path_buf(),
        def,
    })
}

/// The glob patterns of `patterns` that match no file (a pattern without glob characters
/// names one file, whose absence is an error of its own in [`expand_globs`]).
pub fn unmatched_patterns(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .filter(|p| p.contains(['*', '?', '[']))
        .filter(|p| match glob::glob(p) {
            Ok(mut paths) => !paths.any(|p| p.is_ok_and(|p| p.is_file())),
            Err(_) => false,
        })
        .cloned()
        .collect()
}

/// Expands glob patterns into a sorted, de-duplicated list of files. A pattern without glob
/// characters names one file, which must exist.
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, RuleFileError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let has_glob = pattern.contains(['*', '?', '[']);
        if !has_glob {
            out.push(PathBuf::from(pattern));
            continue;
        }
        let paths = glob::glob(pattern).map_err(|e| RuleFileError::Pattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        for p in paths {
            match p {
                Ok(p) if p.is_file() => out.push(p),
                Ok(_) => {}
                Err(e) => {
                    return Err(RuleFileError::Read {
                        path: e.path().to_path_buf(),
                        source: std::io::Error::new(e.error().kind(), e.error().to_string()),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
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

/// Checks groups and rules the way Prometheus's `rulefmt` does.
pub fn validate(def: &RuleFileDef, pos: &[GroupPos]) -> Vec<RuleError> {
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Positions are only trusted when the scan found the same structure serde decoded.
    let pos: &[GroupPos] = if pos.len() == def.groups.len() {
        pos
    } else {
        &[]
    };
    for (gi, g) in def.groups.iter().enumerate() {
        let gpos = pos.get(gi).filter(|p| p.rules.len() == g.rules.len());
        let at = |p: Option<Pos>| p.into_iter().collect::<Vec<_>>();
        if g.name.is_empty() {
            errors.push(RuleError {
                positions: at(gpos.and_then(|p| p.pos)),
                context: String::new(),
                message: "Groupname must not be empty".to_string(),
            });
        }
        if !seen.insert(g.name.as_str()) {
            errors.push(RuleError {
                positions: at(gpos.and_then(|p| p.pos)),
                context: String::new(),
                message: format!("groupname: {:?} is repeated in the same file", g.name),
            });
        }
        for (k, v) in &g.labels {
            if !is_valid_label_name(k) {
                errors.push(RuleError {
                    positions: vec![],
                    context: format!("group {:?}: ", g.name),
                    message: format!("invalid label name: {k}"),
                });
            }
            let _ = v;
        }
        for (ri, r) in g.rules.iter().enumerate() {
            let rpos = gpos
                .and_then(|p| p.rules.get(ri))
                .cloned()
                .unwrap_or_default();
            let context = format!("group {:?}, rule {}, {:?}: ", g.name, ri + 1, r.name());
            for (positions, message) in validate_rule(r, &rpos) {
                errors.push(RuleError {
                    positions,
                    context: context.clone(),
                    message,
                });
            }
        }
    }
    errors
}

/// promql-parser's verdict on a rule expression, after the depth check every query passes
/// (`--query.max-depth` at its default, which is also its highest value): a rule too deep
/// to evaluate never loads. Errors read like Prometheus's (`1:9: parse error: unexpected
/// end of input inside braces`).
fn checked_parse(expr: &str) -> Result<(), String> {
    let limit = lookout_promql::engine::depth::DEFAULT_MAX_DEPTH;
    if let Err(too_deep) = lookout_promql::engine::depth::check_depth(expr, limit) {
        return Err(too_deep.message());
    }
    lookout_promql::syntax::parse(expr)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn validate_rule(r: &RuleDef, pos: &RulePos) -> Vec<(Vec<Pos>, String)> {
    let mut out = Vec::new();
    let at = |p: Option<Pos>| p.into_iter().collect::<Vec<_>>();
    let record = r.record.as_ref().map(|s| s.0.as_str()).unwrap_or("");
    let alert = r.alert.as_ref().map(|s| s.0.as_str()).unwrap_or("");
    if !record.is_empty() && !alert.is_empty() {
        out.push((
            pos.record.into_iter().chain(pos.alert).collect(),
            "only one of 'record' and 'alert' must be set".to_string(),
        ));
    }
    if record.is_empty() && alert.is_empty() {
        out.push((
            vec![pos.record.unwrap_or(Pos { line: 0, col: 0 })],
            "one of 'record' or 'alert' must be set".to_string(),
        ));
    }
    let expr = r.expr.as_ref().map(|s| s.0.as_str()).unwrap_or("");
    if expr.is_empty() {
        out.push((
            vec![pos.expr.unwrap_or(Pos { line: 0, col: 0 })],
            "field 'expr' must be set in rule".to_string(),
        ));
    } else if let Err(e) = checked_parse(expr) {
        out.push((
            at(pos.expr),
            format!("could not parse expression: {}", e.trim_end()),
        ));
    }
    if !record.is_empty() {
        if !r.annotations.is_empty() {
            out.push((
                at(pos.record),
                "invalid field 'annotations' in recording rule".to_string(),
            ));
        }
        if r.for_.is_some_and(|d| !d.0.is_zero()) {
            out.push((
                at(pos.record),
                "invalid field 'for' in recording rule".to_string(),
            ));
        }
        if r.keep_firing_for.is_some_and(|d| !d.0.is_zero()) {
            out.push((
                at(pos.record),
                "invalid field 'keep_firing_for' in recording rule".to_string(),
            ));
        }
        if !is_valid_metric_name(record) {
            out.push((
                at(pos.record),
                format!("invalid recording rule name: {record}"),
            ));
        }
    }
    for k in r.labels.keys() {
        if !is_valid_label_name(k) || k == lookout_promql::labels::METRIC_NAME {
            out.push((vec![], format!("invalid label name: {k}")));
        }
    }
    for k in r.annotations.keys() {
        if !is_valid_label_name(k) {
            out.push((vec![], format!("invalid annotation name: {k}")));
        }
    }
    if !alert.is_empty() {
        let name = format!("__alert_{alert}");
        for (k, v) in &r.labels {
            if let Err(e) = template::check(&name, &v.0) {
                out.push((vec![], format!("label {k:?}: {e}")));
            }
        }
        for (k, v) in &r.annotations {
            if let Err(e) = template::check(&name, &v.0) {
                out.push((vec![], format!("annotation {k:?}: {e}")));
            }
        }
    }
    out
}

/// One mapping key found by the scanner.
struct KeyLine {
    line: usize,
    /// Column (1-based) of the key.
    key_col: usize,
    /// Whether a `- ` sequence marker precedes the key on this line.
    dashed: bool,
    key: String,
    /// Column (1-based) of the value on the same line, if any.
    value_col: Option<usize>,
}

/// Finds the positions of groups and of rules' `record`/`alert`/`expr` values in block-style
/// YAML. Returns what it can; callers match by index and treat missing entries as unknown.
pub fn locate(text: &str) -> Vec<GroupPos> {
    let keys = scan_keys(text);
    let mut groups = Vec::new();
    let Some(gi) = keys.iter().position(|k| k.key == "groups") else {
        return groups;
    };
    let groups_col = keys[gi].key_col;
    let mut group_col = None;
    let mut rules_col: Option<usize> = None;
    let mut in_rules = false;
    let mut current_rules_key_col = 0;
    for k in &keys[gi + 1..] {
        if k.key_col <= groups_col && !k.dashed {
            break;
        }
        let gcol = *group_col.get_or_insert(if k.dashed { k.key_col } else { usize::MAX });
        if gcol == usize::MAX {
            break;
        }
        if k.key_col == gcol {
            if k.dashed {
                groups.push(GroupPos {
                    pos: Some(Pos {
                        line: k.line,
                        col: k.key_col,
                    }),
                    rules: Vec::new(),
                });
            }
            in_rules = k.key == "rules";
            current_rules_key_col = k.key_col;
            rules_col = None;
            continue;
        }
        if !in_rules || k.key_col <= current_rules_key_col {
            continue;
        }
        let rcol = *rules_col.get_or_insert(k.key_col);
        if k.key_col != rcol {
            continue;
        }
        let Some(group) = groups.last_mut() else {
            continue;
        };
        if k.dashed || group.rules.is_empty() {
            group.rules.push(RulePos::default());
        }
        let Some(rule) = group.rules.last_mut() else {
            continue;
        };
        let vpos = k.value_col.map(|col| Pos { line: k.line, col });
        match k.key.as_str() {
            "record" => rule.record = vpos,
            "alert" => rule.alert = vpos,
            "expr" => rule.expr = vpos,
            _ => {}
        }
    }
    groups
}

fn scan_keys(text: &str) -> Vec<KeyLine> {
    let mut out = Vec::new();
    let mut block_indent: Option<usize> = None;
    // A `-` alone on its line starts an item whose first key is on the next line.
    let mut pending_dash = false;
    for (i, raw) in text.lines().enumerate() {
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let trimmed = raw.trim();
        if let Some(bi) = block_indent {
            if trimmed.is_empty() || indent > bi {
                continue;
            }
            block_indent = None;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "-" || trimmed.starts_with("- #") {
            pending_dash = true;
            continue;
        }
        // Skip sequence markers.
        let bytes = raw.as_bytes();
        let mut p = indent;
        let mut dashed = false;
        while p + 1 < bytes.len() && bytes[p] == b'-' && bytes[p + 1] == b' ' {
            dashed = true;
            p += 2;
            while p < bytes.len() && bytes[p] == b' ' {
                p += 1;
            }
        }
        let rest = &raw[p..];
        let (key, after) = if let Some(stripped) = rest.strip_prefix('"') {
            match stripped.find('"') {
                Some(end) => (&stripped[..end], &stripped[end + 1..]),
                None => continue,
            }
        } else {
            let end = rest
                .find(|c: char| c == ':' || c.is_whitespace())
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let Some(after_colon) = after.strip_prefix(':') else {
            continue;
        };
        if !(after_colon.is_empty() || after_colon.starts_with(' ')) {
            continue;
        }
        let value_off = after_colon.len() - after_colon.trim_start().len();
        let value = after_colon.trim();
        let value_col = if value.is_empty() || value.starts_with('#') {
            None
        } else {
            Some(raw.len() - after_colon.len() + value_off + 1)
        };
        if value.starts_with('|') || value.starts_with('>') {
            block_indent = Some(p);
        }
        let dashed = dashed || std::mem::take(&mut pending_dash);
        out.push(KeyLine {
            line: i + 1,
            key_col: p + 1,
            dashed,
            key: key.to_string(),
            value_col,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        use lookout_promql::duration::{format_duration, parse_duration};
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1w2d"), Ok(Duration::from_secs(9 * 86400)));
        assert!(parse_duration("1m1h").is_err());
        assert!(parse_duration("1.5m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn positions_of_rule_values() {
        let text = "groups:\n  - name: a\n    rules:\n      - record: x\n        expr: |\n          up\n      - alert: Y\n        expr: up == 0\n  - name: b\n    rules:\n    - alert: Z\n      expr: vector(1)\n";
        let pos = locate(text);
        assert_eq!(pos.len(), 2);
        assert_eq!(pos[0].pos, Some(Pos { line: 2, col: 5 }));
        assert_eq!(pos[0].rules.len(), 2);
        assert_eq!(pos[0].rules[0].record, Some(Pos { line: 4, col: 17 }));
        assert_eq!(pos[0].rules[0].expr, Some(Pos { line: 5, col: 15 }));
        assert_eq!(pos[0].rules[1].alert, Some(Pos { line: 7, col: 16 }));
        assert_eq!(pos[1].rules[0].expr, Some(Pos { line: 12, col: 13 }));
    }

    #[test]
    fn positions_with_dash_on_its_own_line() {
        let text = "groups:\n-\n  name: a\n  rules:\n  -\n    record: x\n    expr: up\n  -\n    alert: Y\n    expr: up == 0\n";
        let pos = locate(text);
        assert_eq!(pos.len(), 1);
        assert_eq!(pos[0].rules.len(), 2);
        assert_eq!(pos[0].rules[0].record, Some(Pos { line: 6, col: 13 }));
        assert_eq!(pos[0].rules[1].alert, Some(Pos { line: 9, col: 12 }));
        assert_eq!(pos[0].rules[1].expr, Some(Pos { line: 10, col: 11 }));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse_str(
            Path::new("f.yml"),
            "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n    foo: 1\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("line 6: field foo not found in type rulefmt.RuleNode"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_rules_name_positions() {
        let err = parse_str(
            Path::new("f.yml"),
            "groups:\n  - name: g\n    rules:\n      - record: x\n        alert: y\n        expr: sum(\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("f.yml: 4:17: 5:16: group \"g\", rule 1, \"y\": only one of 'record' and 'alert' must be set"),
            "{msg}"
        );
        assert!(
            msg.contains("f.yml: 6:15: group \"g\", rule 1, \"y\": could not parse expression"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_all_listed_by_line_as_go_does() {
        let text = "\
groups:
  - name: a
    rules:
      - alert: A
        expr: up
        severity: page
    partial_response_strategy: warn
  - name: b
    <<: {interval: 1m}
    bogus: 1
top: 1
";
        let err = parse_str(Path::new("f.yml"), text).unwrap_err().to_string();
        assert_eq!(
            err,
            "f.yml: yaml: unmarshal errors:\n  \
             line 6: field severity not found in type rulefmt.RuleNode\n  \
             line 7: field partial_response_strategy not found in type rulefmt.RuleGroup\n  \
             line 10: field bogus not found in type rulefmt.RuleGroup\n  \
             line 11: field top not found in type rulefmt.RuleGroups"
        );
    }
}
