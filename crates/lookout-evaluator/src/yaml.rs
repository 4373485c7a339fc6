//! YAML decoding as Prometheus's Go YAML libraries do it, where serde's differs.
//!
//! Merge keys (`<<: *base`, `<<: [*a, *b]`) are applied before the strict decoding: Go's
//! yaml.v2 and yaml.v3 apply them while decoding, so real rule files and promtool test files
//! use them to share annotations and labels between rules. serde_yaml_ng only applies them
//! to a [`serde_yaml_ng::Value`]; a text with merge keys is therefore read into a value,
//! merged, written back and decoded strictly from that. Keys written beside a merge win over
//! merged ones, and of several merged mappings the first wins, as in Go.

use serde::de::DeserializeOwned;

/// Decodes `text` strictly, after applying YAML merge keys; nesting deeper than
/// [`lookout_web::yaml_depth`] allows is refused before any parsing.
///
/// Texts without merge keys are decoded directly, so their error positions are those of the
/// file. A text with merge keys is decoded from its merged form; an error found only there
/// says so, since its position refers to the merged document.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    // Bounded before libyaml sees it: deep nesting costs its scanner O(depth²).
    lookout_web::yaml_depth::check(text).map_err(|e| e.to_string())?;
    if !text.contains("<<") {
        return serde_yaml_ng::from_str(text).map_err(|e| e.to_string());
    }
    let direct = serde_yaml_ng::from_str(text);
    let direct_err = match direct {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Some(merged) = merged_text(text)? else {
        return Err(direct_err.to_string());
    };
    serde_yaml_ng::from_str(&merged).map_err(|e| {
        let message = e.to_string();
        // Positions in the merged text do not match the file's: drop them.
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        format!("{message} (in the document after applying its YAML merge keys)")
    })
}

/// The text with its merge keys applied, or `None` when it has none.
fn merged_text(text: &str) -> Result<Option<String>, String> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if !has_merge_key(&value) {
        return Ok(None);
    }
    value
        .apply_merge()
        .map_err(|e| format!("YAML merge key: {e}"))?;
    serde_yaml_ng::to_string(&value)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Whether any mapping in `value` has a `<<` key (iteratively: values can be deep).
fn has_merge_key(value: &serde_yaml_ng::Value) -> bool {
    use serde_yaml_ng::Value;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Mapping(m) => {
                if m.contains_key("<<") {
                    return true;
                }
                stack.extend(m.values());
            }
            Value::Sequence(s) => stack.extend(s),
            Value::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    false
}

/// The schema of a document as Go's YAML decoder sees it, for naming unknown fields the way
/// it does (see [`unknown_fields`]).
#[derive(Debug)]
pub enum Shape {
    /// Anything: not looked into.
    Any,
    /// A sequence of one shape.
    List(&'static Shape),
    /// A struct: its Go type name (`rulefmt.RuleGroup`) and its YAML keys.
    Struct {
        /// The type name Go's decoder prints.
        go_type: &'static str,
        /// The keys and their shapes.
        fields: &'static [(&'static str, Shape)],
    },
}

/// Go's message for a document with unknown keys, every one of them in document order:
///
/// ```text
/// yaml: unmarshal errors:
///   line 3: field partial_response_strategy not found in type rulefmt.RuleGroup
///   line 7: field partial_response_strategy not found in type rulefmt.RuleNode
/// ```
///
/// serde stops at the first unknown key; Go's strict decoding lists them all, and tools that
/// read promtool's output expect its wording. `None` when `text` has no unknown key of
/// `shape` (the error is another one) or does not parse. Lines come from the block-style
/// scanner [`lookout_web::yaml_locate`]; the walk is iterative, so deep documents are fine.
pub fn unknown_fields(text: &str, shape: &'static Shape) -> Option<String> {
    use lookout_web::yaml_locate::{Seg, locate};
    use serde_yaml_ng::Value;
    let value: Value = serde_yaml_ng::from_str(text).ok()?;
    enum Step {
        Key(String),
        Index(usize),
    }
    let mut found: Vec<(usize, String)> = Vec::new();
    let mut stack: Vec<(Vec<usize>, &Value, &Shape)> = vec![(Vec::new(), &value, shape)];
    // Paths are kept as indexes into `steps` to avoid cloning strings per node.
    let mut steps: Vec<Step> = Vec::new();
    while let Some((path, v, shape)) = stack.pop() {
        let mut children = Vec::new();
        match (shape, v) {
            (Shape::List(item), Value::Sequence(seq)) => {
                for (i, child) in seq.iter().enumerate() {
                    steps.push(Step::Index(i));
                    let mut p = path.clone();
                    p.push(steps.len() - 1);
                    children.push((p, child, *item));
                }
            }
            (Shape::Struct { go_type, fields }, Value::Mapping(map)) => {
                for (k, child) in map {
                    // Merge keys are applied by Go's decoder, not fields.
                    let Some(key) = k.as_str().filter(|k| *k != "<<") else {
                        continue;
                    };
                    steps.push(Step::Key(key.to_string()));
                    let mut p = path.clone();
                    p.push(steps.len() - 1);
                    match fields.iter().find(|(name, _)| *name == key) {
                        Some((_, field)) => children.push((p, child, field)),
                        None => {
                            let segs: Vec<Seg<'_>> = p
                                .iter()
                                .map(|&i| match &steps[i] {
                                    Step::Key(k) => Seg::Key(k),
                                    Step::Index(i) => Seg::Index(*i),
                                })
                                .collect();
                            let line = locate(text, &segs).map_or(0, |(line, _)| line);
                            found.push((line, format!("field {key} not found in type {go_type}")));
                        }
                    }
                }
            }
            _ => {}
        }
        stack.extend(children.into_iter().rev());
    }
    if found.is_empty() {
        return None;
    }
    // Go reports while decoding, in document order.
    found.sort_by_key(|(line, _)| *line);
    let mut out = String::from("yaml: unmarshal errors:");
    for (line, message) in found {
        out.push_str(&format!("\n  line {line}: {message}"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        alert: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        expr: String,
    }

    #[test]
    fn merge_keys_apply_and_explicit_keys_win() {
        let text = "- &base\n  alert: A\n  expr: up\n  labels: {severity: warning}\n- <<: *base\n  labels: {severity: critical}\n";
        let rules: Vec<Rule> = from_str(text).unwrap();
        assert_eq!(rules[1].alert, "A");
        assert_eq!(rules[1].expr, "up");
        assert_eq!(rules[1].labels["severity"], "critical");
    }

    #[test]
    fn first_of_several_merged_mappings_wins() {
        let text = "a: &a {alert: A, expr: x}\nb: &b {alert: B, expr: y}\nc:\n  <<: [*a, *b]\n";
        let m: BTreeMap<String, Rule> = from_str(text).unwrap();
        assert_eq!(m["c"].alert, "A");
    }

    #[test]
    fn errors_without_merges_keep_positions() {
        let e = from_str::<Vec<Rule>>("- alert: A\n  bogus: 1\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = from_str::<Vec<Rule>>("- &b {alert: A}\n- <<: *b\n  bogus: 1\n").unwrap_err();
        assert!(e.contains("bogus") && e.contains("merge keys"), "{e}");
    }
}
