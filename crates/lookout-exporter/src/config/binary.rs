//! `!!binary` scalars in `query_response` steps (`send: !!binary AAAACATSFi8=`), as
//! blackbox_exporter's example `postgresql` module writes its SSLRequest.
//!
//! serde_yaml_ng hands a `!!binary` scalar over as its base64 text and drops the tag (a
//! core-schema tag is not an enum tag to it), so the loader finds the tags in the text: for
//! each `send` and `expect_bytes` of a `tcp` or `unix` step written in block style, it
//! looks right after the key for `!!binary` (or `!<tag:yaml.org,2002:binary>`) and then
//! decodes the base64. Any other `!!binary` in the file (on another setting, or where the
//! scanner cannot tell which setting it belongs to, as in flow style) is an error at its
//! line and column rather than text read as base64 or base64 read as text.

use base64::Engine as _;

use super::{ConfigError, Module, QueryResponse};
use lookout_web::yaml_locate::{Seg, locate_exact};

/// The ways YAML writes the binary tag.
const TAGS: [&str; 2] = ["!!binary", "!<tag:yaml.org,2002:binary>"];

/// Where binary tags appear in `text` (1-based line and byte column), outside comments and
/// quoted strings.
pub(super) fn tag_positions(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let (mut single, mut double) = (false, false);
        for (i, &c) in bytes.iter().enumerate() {
            let after_blank = i == 0 || matches!(bytes[i - 1], b' ' | b'\t');
            let escaped = i > 0 && bytes[i - 1] == b'\\';
            match c {
                b'\'' if !double => single = !single,
                b'"' if !single && (!double || !escaped) => double = !double,
                b'#' if !single && !double && after_blank => break,
                b'!' if !single
                    && !double
                    && (after_blank || matches!(bytes[i - 1], b'[' | b'{' | b',' | b':')) =>
                {
                    if let Some(tag) = TAGS.iter().find(|t| line[i..].starts_with(**t)) {
                        let end = i + tag.len();
                        if end == bytes.len() || matches!(bytes[end], b' ' | b'\t' | b',') {
                            found.push((n + 1, i + 1));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// The position of the binary tag on the value of the block-style key at `path`, if any.
fn tag_at(text: &str, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    let Some(Seg::Key(key)) = path.last() else {
        return None;
    };
    let (line_no, col) = locate_exact(text, path)?;
    let line = text.lines().nth(line_no - 1)?;
    let from_key = line.get(col - 1..)?;
    let after_key = [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .find_map(|k| from_key.strip_prefix(k.as_str()))?;
    let value = after_key
        .trim_start_matches([' ', '\t'])
        .strip_prefix(':')?
        .trim_start_matches([' ', '\t']);
    TAGS.iter()
        .any(|t| value.starts_with(*t))
        .then(|| (line_no, line.len() - value.len() + 1))
}

/// Decodes base64 as YAML's `!!binary` holds it (white space, line breaks included, ignored).
fn decode(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("!!binary value is not valid base64: {e}"))
}

/// Applies the binary tags of module `name`'s `tcp` and `unix` steps: a tagged `send`
/// becomes `send_bytes`, a tagged `expect_bytes` is decoded. Returns the tags it used.
pub(super) fn apply(
    text: &str,
    name: &str,
    module: &mut Module,
    at: &dyn Fn(&[Seg<'_>], String) -> ConfigError,
) -> Result<Vec<(usize, usize)>, ConfigError> {
    let mut used = Vec::new();
    let sections: [(&str, &mut Vec<QueryResponse>); 2] = [
        ("tcp", &mut module.tcp.query_response),
        ("unix", &mut module.unix.query_response),
    ];
    for (section, steps) in sections {
        for (i, step) in steps.iter_mut().enumerate() {
            let path = |key| {
                [
                    Seg::Key("modules"),
                    Seg::Key(name),
                    Seg::Key(section),
                    Seg::Key("query_response"),
                    Seg::Index(i),
                    Seg::Key(key),
                ]
            };
            let fail = |key, e: String| at(&path(key), format!("module {name:?}: {e}"));
            if let Some(pos) = step.send.as_ref().and_then(|_| tag_at(text, &path("send"))) {
                let text = step.send.take().unwrap_or_default();
                step.send_bytes = Some(decode(&text).map_err(|e| fail("send", e))?);
                used.push(pos);
            }
            if let Some(pos) = step
                .expect_bytes
                .as_ref()
                .and_then(|_| tag_at(text, &path("expect_bytes")))
            {
                let raw = step.expect_bytes.take().unwrap_or_default();
                let decoded =
                    decode(&String::from_utf8_lossy(&raw)).map_err(|e| fail("expect_bytes", e))?;
                if decoded.is_empty() {
                    return Err(fail("expect_bytes", "!!binary value is empty".into()));
                }
                step.expect_bytes = Some(decoded);
                used.push(pos);
            }
        }
    }
    Ok(used)
}

/// The error for a binary tag that [`apply`] did not use.
pub(super) fn unused_tag_error(origin: &str, (line, col): (usize, usize)) -> ConfigError {
    ConfigError::Invalid(format!(
        "{origin}:{line}:{col}: !!binary is supported only as the value of `send` or \
         `expect_bytes` in a tcp or unix query_response step, written in block style"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tags_outside_quotes_and_comments() {
        let text = "a: !!binary AAAA\nb: \"!!binary\" # !!binary\n- send: !<tag:yaml.org,2002:binary> QQ==\nc: x!!binary\n";
        assert_eq!(tag_positions(text), vec![(1, 4), (3, 9)]);
    }

    #[test]
    fn finds_the_tag_of_a_key() {
        let text = "modules:\n  m:\n    tcp:\n      query_response:\n      - send: !!binary AAAACATSFi8=\n      - expect_bytes: S\n";
        let path = |i, k| {
            [
                Seg::Key("modules"),
                Seg::Key("m"),
                Seg::Key("tcp"),
                Seg::Key("query_response"),
                Seg::Index(i),
                Seg::Key(k),
            ]
        };
        assert_eq!(tag_at(text, &path(0, "send")), Some((5, 15)));
        assert_eq!(tag_at(text, &path(1, "expect_bytes")), None);
        assert_eq!(
            decode("AAAA CATS\nFi8=").unwrap(),
            vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]
        );
        assert!(decode("not base64!").is_err());
    }
}
