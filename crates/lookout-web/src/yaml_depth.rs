//! A linear pre-scan that bounds how deeply a YAML document nests before a YAML parser sees
//! it, shared by every YAML file Lookout reads (the evaluator's configuration, rule files,
//! `rules test` files, the exporter's configuration, `--web.config.file`).
//!
//! Why: libyaml's scanner (through `unsafe-libyaml`, under `serde_yaml_ng`) walks its whole
//! stack of possible simple keys at every token, one entry per open flow collection, so a
//! document of 100,000 nested `[` (200 KB) costs O(depth²): 30–37 s of CPU in a release
//! build before `serde_yaml_ng`'s own recursion limit (128) ever sees an event.
//!
//! The scan follows YAML closely enough to count nesting, not to validate: flow collections
//! (`[`, `{`) opened at the start of a node or inside another flow collection, block
//! nesting from indentation and from compact sequence and key indicators (`- - - x`),
//! skipping quoted scalars, comments and block scalars (`|`, `>`). It may count a level too
//! many for a plain scalar continued on more deeply indented lines, which is why the limit
//! ([`MAX_DEPTH`]) sits well above the 128 levels `serde_yaml_ng` decodes.

/// Deepest nesting accepted: twice the 128 levels `serde_yaml_ng` decodes at most, so no
/// document it could decode is refused here. Fixed (no flag): a deeper document cannot be
/// decoded whatever the limit.
pub const MAX_DEPTH: usize = 256;

/// A document nests deeper than the limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "line {line}, column {column}: YAML nested more than {limit} levels deep; refused before decoding (a fixed limit: YAML is decoded to at most 128 levels)"
)]
pub struct DepthError {
    /// 1-based line of the node that passed the limit.
    pub line: usize,
    /// 1-based column (in bytes).
    pub column: usize,
    /// The limit.
    pub limit: usize,
}

/// Checks that `text` nests at most [`MAX_DEPTH`] levels.
pub fn check(text: &str) -> Result<(), DepthError> {
    check_with_limit(text, MAX_DEPTH)
}

/// Where a scan is between lines.
#[derive(Default)]
struct Scan {
    /// Columns of the open block nodes.
    block: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<u8>,
    /// Inside a block scalar whose parent is indented this far.
    block_scalar: Option<usize>,
}

/// Checks that `text` nests at most `limit` levels (linear in the text).
pub fn check_with_limit(text: &str, limit: usize) -> Result<(), DepthError> {
    let mut scan = Scan::default();
    for (idx, line) in text.split('\n').enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let content = line[indent..].trim_end();
        if let Some(parent) = scan.block_scalar {
            if content.is_empty() || indent > parent {
                continue;
            }
            scan.block_scalar = None;
        }
        let mut pos = 0;
        if scan.quote.is_none() && scan.flow == 0 {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            while scan.block.last().is_some_and(|&c| c >= indent) {
                scan.block.pop();
            }
            scan.block.push(indent);
            pos = indent;
            // Compact nesting on one line: `- - x`, `? - x`.
            while matches!(bytes.get(pos), Some(b'-' | b'?'))
                && matches!(bytes.get(pos + 1), Some(b' ' | b'\t'))
            {
                pos += 2;
                while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
                    pos += 1;
                }
                scan.block.push(pos);
            }
            if scan.block.len() > limit {
                return Err(too_deep(idx, pos, limit));
            }
        }
        scan_line(&mut scan, bytes, pos, indent, idx, limit)?;
    }
    Ok(())
}

fn too_deep(idx: usize, pos: usize, limit: usize) -> DepthError {
    DepthError {
        line: idx + 1,
        column: pos + 1,
        limit,
    }
}

/// Scans one line from `pos`: quotes, comments, flow collections, a block scalar header.
fn scan_line(
    scan: &mut Scan,
    bytes: &[u8],
    mut pos: usize,
    indent: usize,
    idx: usize,
    limit: usize,
) -> Result<(), DepthError> {
    while pos < bytes.len() {
        let b = bytes[pos];
        if let Some(q) = scan.quote {
            if b == b'\\' && q == b'"' {
                pos += 1;
            } else if b == b'\'' && q == b'\'' && bytes.get(pos + 1) == Some(&b'\'') {
                pos += 1; // '' is a quote inside a single-quoted scalar
            } else if b == q {
                scan.quote = None;
            }
            pos += 1;
            continue;
        }
        let at_start =
            pos == 0 || matches!(bytes[pos - 1], b' ' | b'\t' | b'[' | b'{' | b',' | b':');
        match b {
            b'#' if at_start => return Ok(()),
            b'\'' | b'"' if at_start => scan.quote = Some(b),
            b'[' | b'{' if at_start || scan.flow > 0 => {
                scan.flow += 1;
                if scan.block.len() + scan.flow > limit {
                    return Err(too_deep(idx, pos, limit));
                }
            }
            b']' | b'}' => scan.flow = scan.flow.saturating_sub(1),
            b'|' | b'>' if at_start && scan.flow == 0 => {
                let rest = &bytes[pos + 1..];
                let header = rest
                    .iter()
                    .take_while(|&&c| c != b'#')
                    .all(|&c| matches!(c, b'-' | b'+' | b'0'..=b'9' | b' ' | b'\t'));
                if header {
                    scan.block_scalar = Some(indent);
                    return Ok(());
                }
            }
            _ => {}
        }
        pos += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_and_block_nesting_is_refused_fast() {
        for text in [
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a: {}", "{a: ".repeat(100_000)),
            format!("groups:\n{}x\n", "- ".repeat(100_000)),
        ] {
            let began = std::time::Instant::now();
            let e = check(&text).unwrap_err();
            // A guard against the scanner's quadratic cost (minutes at this depth), not a
            // speed measure: a loaded CI machine may be many times slower.
            assert!(began.elapsed() < std::time::Duration::from_secs(10));
            assert_eq!((e.line, e.limit), (e.line, MAX_DEPTH));
            assert!(e.to_string().contains("more than 256 levels"), "{e}");
        }
        let mut deep_block = String::new();
        for i in 0..300 {
            deep_block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        let e = check(&deep_block).unwrap_err();
        assert_eq!(e.line, 257);
    }

    #[test]
    fn ordinary_documents_pass() {
        let text = "groups:\n  - name: a # [[[[\n    rules:\n      - alert: X\n        expr: rate(x[5m]) > 0\n        annotations:\n          summary: 'it''s [down'\n          description: \"a \\\" [ {\"\n          text: |\n            [[[[[[ {{{{{\n          more: >-\n            [[[\n        labels: {a: [1, {b: 2}]}\n";
        assert_eq!(check_with_limit(text, 8), Ok(()));
        let nested = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(check(&nested), Ok(()));
    }
}
