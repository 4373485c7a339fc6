//! `lookout rules check`: validates rule files like `promtool check rules`, with the same
//! output lines (`Checking FILE`, `  SUCCESS: N rules found`, `  FAILED:`) and exit status.

use std::io::Write;
use std::path::Path;

use lookout_promql::Labels;

use super::file::{self, RuleFileDef, RuleFileError};

/// A rule that shares its name and labels with another (promtool's duplicate-rules lint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// Alert or record name.
    pub metric: String,
    /// The rule's labels.
    pub labels: Labels,
}

/// Rules whose (name, labels) appear more than once, each reported once, sorted.
pub fn find_duplicates(def: &RuleFileDef) -> Vec<Duplicate> {
    let mut rules: Vec<(String, Labels)> = def
        .groups
        .iter()
        .flat_map(|g| g.rules.iter())
        .map(|r| {
            (
                r.name().to_string(),
                Labels::new(r.labels.iter().map(|(k, v)| (k.as_str(), v.0.as_str()))),
            )
        })
        .collect();
    rules.sort();
    let mut out: Vec<Duplicate> = Vec::new();
    for w in rules.windows(2) {
        if w[0] == w[1]
            && out
                .last()
                .is_none_or(|d| d.metric != w[1].0 || d.labels != w[1].1)
        {
            out.push(Duplicate {
                metric: w[1].0.clone(),
                labels: w[1].1.clone(),
            });
        }
    }
    out
}

/// promtool's lint message for duplicates.
fn duplicates_message(d: &[Duplicate]) -> String {
    let mut msg = format!("lint error {} duplicate rule(s) found.\n", d.len());
    for dup in d {
        msg.push_str(&format!("Metric: {}\nLabel(s):\n", dup.metric));
        for (k, v) in dup.labels.iter() {
            msg.push_str(&format!("\t{k}: {v}\n"));
        }
    }
    msg.push_str("Might cause inconsistency while recording expressions");
    msg
}

/// Checks each file, writing promtool's report to `out` (progress, success) and `err`
/// (failures). Files over `max_file_bytes` are refused (`--rules.max-file-size`). Returns
/// whether every file is valid (duplicate rules are a warning only, as promtool's default
/// lint).
pub fn check_files(
    paths: &[String],
    max_file_bytes: u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> bool {
    let mut ok = true;
    for p in paths {
        let _ = writeln!(out, "Checking {p}");
        match file::load_file_with_limit(Path::new(p), max_file_bytes) {
            Ok(f) => {
                let dups = find_duplicates(&f.def);
                if dups.is_empty() {
                    let _ = writeln!(out, "  SUCCESS: {} rules found", f.rule_count());
                } else {
                    let _ = writeln!(err, "  FAILED:");
                    let _ = writeln!(err, "{}", duplicates_message(&dups));
                }
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(err, "  FAILED:");
                match e {
                    RuleFileError::Invalid { path, errors } => {
                        for e in errors {
                            let _ = writeln!(err, "{}: {e}", path.display());
                        }
                    }
                    other => {
                        let _ = writeln!(err, "{other}");
                    }
                }
            }
        }
        let _ = writeln!(out);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_once() {
        let def: RuleFileDef = serde_yaml_ng::from_str(
            "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n  - record: x\n    expr: up\n  - record: x\n    expr: up\n  - alert: x\n    expr: up\n    labels: {a: b}\n",
        )
        .unwrap();
        let d = find_duplicates(&def);
        assert_eq!(d.len(), 1);
        assert_eq!(
            duplicates_message(&d),
            "lint error 1 duplicate rule(s) found.\nMetric: x\nLabel(s):\nMight cause inconsistency while recording expressions"
        );
    }
}
