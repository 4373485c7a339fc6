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
