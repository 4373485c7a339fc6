//! Finds where a key sits in block-style YAML text, for errors found after decoding.
//!
//! serde_yaml_ng puts a line and column on every error raised while decoding, but checks that
//! need the whole file (an unknown module named by a target, a dependency cycle) run after
//! decoding, when positions are gone. This light scanner walks the text by indentation along
//! a path of keys and list indexes. It understands block mappings and sequences (the way
//! every blackbox.yml is written); inside flow style (`{…}`, `[…]`) it stops at the deepest
//! key it could find, which still points the reader at the right place.

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
pub enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

/// A serde_yaml_ng error split into its 1-based (line, column), when it has one, and its
/// message without the trailing " at line L column C".
pub fn decode_error_parts(e: &serde_yaml_ng::Error) -> (Option<(usize, usize)>, String) {
    let full = e.to_string();
    match e.location() {
        Some(loc) => {
            let message = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(m, _)| m);
            (Some((loc.line(), loc.column())), message.to_string())
        }
        None => (None, full),
    }
}

/// A serde_yaml_ng error as `origin:line:col: message` (the position moved from the end of
/// serde's message to the front, the way compilers print it), or `origin: message` when
/// the error has no position.
pub fn decode_error(origin: &str, e: &serde_yaml_ng::Error) -> String {
    match decode_error_parts(e) {
        (Some((line, col)), message) => format!("{origin}:{line}:{col}: {message}"),
        (None, message) => format!("{origin}: {message}"),
    }
}

/// `origin:line:col: message` at the node of `path` (or the deepest part of it found), or
/// `origin: message` when not even its first key is found.
pub fn at(text: &str, origin: &str, path: &[Seg<'_>], message: &str) -> String {
    match locate(text, path) {
        Some((line, col)) => format!("{origin}:{line}:{col}: {message}"),
        None => format!("{origin}: {message}"),
    }
}

/// A node found so far: where its content starts and how far its children reach.
#[derive(Debug, Clone, Copy)]
struct Node {
    line: usize,
    /// Column of the key (or of the dash, for a sequence item).
    col: usize,
    /// For sequence items: column where the item's content starts on `line`.
    inline_col: Option<usize>,
}

/// Returns the 1-based (line, column) of the deepest node of `path` found in `text`.
pub fn locate(text: &str, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    walk(text, path, false)
}

/// Returns the 1-based (line, column) of the node of `path` only when every step of it was
/// found (block style); `None` otherwise.
pub fn locate_exact(text: &str, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    walk(text, path, true)
}

fn walk(text: &str, path: &[Seg<'_>], exact: bool) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut node: Option<Node> = None;
    for seg in path {
        let next = match *seg {
            Seg::Key(key) => find_key(&lines, node, key),
            Seg::Index(index) => find_item(&lines, node, index),
        };
        match next {
            Some(n) => node = Some(n),
            None if exact => return None,
            None => break,
        }
    }
    node.map(|n| (n.line + 1, n.inline_col.unwrap_or(n.col) + 1))
}

fn indent_of(line: &str) -> Option<usize> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
        None
    } else {
        Some(line.len() - trimmed.len())
    }
}

fn key_matches(content: &str, key: &str) -> bool {
    for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(rest) = content.strip_prefix(quoted.as_str()) {
            let rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(':') {
                if after.is_empty() || after.starts_with(' ') {
                    return true;
                }
            }
        }
    }
    false
}

fn find_key(lines: &[&str], parent: Option<Node>, key: &str) -> Option<Node> {
    // Candidates: the inline content of a sequence item, then following lines deeper than
    // the parent, at the first such indentation.
    let (start, parent_col) = match parent {
        None => (0, None),
        Some(p) => {
            if let Some(ic) = p.inline_col {
                if key_matches(&lines[p.line][ic..], key) {
                    return Some(Node {
                        line: p.line,
                        col: ic,
                        inline_col: None,
                    });
                }
                // Further keys of the item are at its content column.
                return scan_keys(lines, p.line + 1, Some(p.col), Some(ic), key);
            }
            (p.line + 1, Some(p.col))
        }
    };
    scan_keys(lines, start, parent_col, None, key)
}

fn scan_keys(
    lines: &[&str],
    start: usize,
    parent_col: Option<usize>,
    mut child_col: Option<usize>,
    key: &str,
) -> Option<Node> {
    for (idx, line) in lines.iter().enumerate().skip(start) {
        let Some(ind) = indent_of(line) else { continue };
        if parent_col.is_some_and(|pc| ind <= pc) {
            return None;
        }
        match child_col {
            None => child_col = Some(ind),
            Some(c) if c != ind => continue,
            Some(_) => {}
        }
        if key_matches(&line[ind..], key) {
            return Some(Node {
                line: idx,
                col: ind,
                inline_col: None,
            });
        }
    }
    None
}

fn find_item(lines: &[&str], parent: Option<Node>, index: usize) -> Option<Node> {
    let parent = parent?;
    let mut item_col = None;
    let mut seen = 0;
    for (idx, line) in lines.iter().enumerate().skip(parent.line + 1) {
        let Some(ind) = indent_of(line) else { continue };
        let content = &line[ind..];
        let is_item = content == "-" || content.starts_with("- ");
        if ind < parent.col || (ind == parent.col && !is_item) {
            return None;
        }
        match item_col {
            None if is_item => item_col = Some(ind),
            None => return None,
            Some(c) if c != ind || !is_item => continue,
            Some(_) => {}
        }
        if seen == index {
            let after_dash = &content[1..];
            let pad = after_dash.len() - after_dash.trim_start_matches(' ').len();
            let inline = if after_dash.trim().is_empty() {
                None
            } else {
                Some(ind + 1 + pad)
            };
            return Some(Node {
                line: idx,
                col: ind,
                inline_col: inline,
            });
        }
        seen += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
modules:
  http_2xx:
    prober: http
    http:
      method: GET
# a comment
targets:
- name: a
  module: http_2xx
-   name: b
    module: nope
    depends_on: [a]
heartbeats:
  - name: cron
    max_silence: 1h
";

    #[test]
    fn decode_errors_lead_with_their_position() {
        let e = serde_yaml_ng::from_str::<Vec<u32>>("- 1\n- x\n").unwrap_err();
        let m = decode_error("f.yml", &e);
        assert!(m.starts_with("f.yml:2:3: "), "{m}");
        assert!(!m.contains(" at line "), "{m}");
        assert_eq!(
            at(TEXT, "f.yml", &[Seg::Key("heartbeats"), Seg::Index(0)], "m"),
            "f.yml:14:5: m"
        );
        assert_eq!(at(TEXT, "f.yml", &[Seg::Key("nope")], "m"), "f.yml: m");
    }

    #[test]
    fn finds_keys_and_items() {
        use Seg::*;
        assert_eq!(
            locate(
                TEXT,
                &[Key("modules"), Key("http_2xx"), Key("http"), Key("method")]
            ),
            Some((5, 7))
        );
        assert_eq!(
            locate(TEXT, &[Key("targets"), Index(0), Key("name")]),
            Some((8, 3))
        );
        assert_eq!(
            locate(TEXT, &[Key("targets"), Index(1), Key("module")]),
            Some((11, 5))
        );
        assert_eq!(
            locate(TEXT, &[Key("targets"), Index(1), Key("depends_on")]),
            Some((12, 5))
        );
        assert_eq!(
            locate(TEXT, &[Key("heartbeats"), Index(0), Key("max_silence")]),
            Some((15, 5))
        );
        // Missing keys fall back to the deepest node found.
        assert_eq!(
            locate(TEXT, &[Key("targets"), Index(1), Key("labels")]),
            Some((10, 5))
        );
    }
}
