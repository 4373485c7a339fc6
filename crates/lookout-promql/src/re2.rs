//! Go's RE2 regular-expression syntax, read by Rust's `regex` crate.
//!
//! Prometheus compiles every regex a user writes (label matchers, `label_replace`,
//! relabelling, the templates' `match` and `reReplaceAll`, blackbox_exporter's body
//! matchers) with Go's `regexp`. Rust's `regex` crate reads nearly the same language; where
//! the two differ on text that Go accepts, [`translate`] rewrites the pattern into the
//! equivalent Rust syntax:
//!
//! * a `{` that does not start a repetition (`{n}`, `{n,}`, `{n,m}`) is a literal in Go
//!   (`" {.*}$"`), an error in Rust: it is escaped;
//! * `\Q…\E` quotes its text literally in Go; Rust has no such form: the text is escaped;
//! * `\123` is an octal character code in Go (up to three digits, the first `0`–`7`), which
//!   Rust reads only with an option: it becomes `\x{53}`.
//!
//! The translation is linear and recursion-free; a pattern that is invalid in Go stays
//! invalid, so the compile error still comes from the `regex` crate.

use std::borrow::Cow;

/// `pattern` (Go RE2 syntax) in the syntax of Rust's `regex` crate.
pub fn translate(pattern: &str) -> Cow<'_, str> {
    if !pattern.contains(['{', '\\']) {
        return Cow::Borrowed(pattern);
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i = escape(&chars, i, &mut out),
            '[' => i = class(&chars, i, &mut out),
            '{' => {
                match repetition_end(&chars, i) {
                    Some(end) => out.extend(&chars[i..end]),
                    None => out.push_str("\\{"),
                }
                i = repetition_end(&chars, i).unwrap_or(i + 1);
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// Copies or rewrites the escape at `chars[i]` (a backslash); returns the next index.
fn escape(chars: &[char], i: usize, out: &mut String) -> usize {
    let Some(&next) = chars.get(i + 1) else {
        // A trailing backslash: invalid in both, left for the compiler to report.
        out.push('\\');
        return i + 1;
    };
    if next == 'Q' {
        // Literal text up to `\E` or the end.
        let mut j = i + 2;
        while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'E')) {
            out.push_str(&regex_escape(chars[j]));
            j += 1;
        }
        return if j < chars.len() { j + 2 } else { j };
    }
    if next.is_digit(8) {
        // Octal: `\0`, `\012`, `\123` (Go reads up to three octal digits; `\8` is not octal).
        let mut j = i + 1;
        let mut code = 0u32;
        while j < chars.len() && j < i + 4 && chars[j].is_digit(8) {
            code = code * 8 + chars[j].to_digit(8).unwrap_or(0);
            j += 1;
        }
        if next != '0' && j == i + 2 {
            // A single digit 1-7 is a backreference in Go: an error there, left as it is.
            out.push('\\');
            out.push(next);
            return i + 2;
        }
        out.push_str(&format!("\\x{{{code:x}}}"));
        return j;
    }
    out.push('\\');
    out.push(next);
    i + 2
}

/// Copies a character class starting at `chars[i]` (`[`) through its closing `]`.
fn class(chars: &[char], i: usize, out: &mut String) -> usize {
    let mut j = i + 1;
    out.push('[');
    if chars.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    // A `]` first in the class is a literal.
    if chars.get(j) == Some(&']') {
        out.push(']');
        j += 1;
    }
    while j < chars.len() {
        match chars[j] {
            ']' => {
                out.push(']');
                return j + 1;
            }
            '\\' => j = escape(chars, j, out),
            '[' if chars.get(j + 1) == Some(&':') => {
                // `[:alpha:]`: copied through its `:]`.
                let end = (j + 2..chars.len().saturating_sub(1))
                    .find(|&k| chars[k] == ':' && chars[k + 1] == ']')
                    .map_or(j + 1, |k| k + 2);
                out.extend(&chars[j..end]);
                j = end;
            }
            // `{` and `}` are literals in a class in both syntaxes; escaped for Rust's
            // warnings-free reading of nested classes.
            '[' => {
                out.push_str("\\[");
                j += 1;
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    j
}

/// The index after a repetition `{n}`, `{n,}` or `{n,m}` starting at `chars[i]`, if one does.
fn repetition_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let digits = |j: &mut usize| {
        let start = *j;
        while *j < chars.len() && chars[*j].is_ascii_digit() {
            *j += 1;
        }
        *j > start
    };
    if !digits(&mut j) {
        return None;
    }
    if chars.get(j) == Some(&',') {
        j += 1;
        digits(&mut j);
    }
    (chars.get(j) == Some(&'}')).then_some(j + 1)
}

fn regex_escape(c: char) -> String {
    regex::escape(c.encode_utf8(&mut [0; 4]))
}

/// Compiles `pattern` (Go RE2 syntax) anchored at both ends with `.` matching newlines, as
/// Prometheus compiles its label regexes (`^(?s:pattern)$`).
pub fn compile_anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?s:{})$", translate(pattern)))
}

/// Compiles `pattern` (Go RE2 syntax) unanchored, as Go's `regexp.Compile`.
pub fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&translate(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(go: &str, rust: &str) {
        assert_eq!(translate(go), rust, "{go}");
        assert!(regex::Regex::new(rust).is_ok(), "{rust}");
    }

    #[test]
    fn braces_that_are_not_repetitions_are_literals() {
        ok(" {.*}$", " \\{.*}$");
        ok("a{2}", "a{2}");
        ok("a{2,}", "a{2,}");
        ok("a{2,5}b{", "a{2,5}b\\{");
        ok("a{,5}", "a\\{,5}");
        ok("{}", "\\{}");
        ok("[{}]", "[{}]");
        ok("\\{x", "\\{x");
        assert!(compile(" {.*}$").unwrap().is_match("x {a}"));
    }

    #[test]
    fn quoted_text_and_octal_escapes() {
        ok("\\Qa.b\\E+", "a\\.b+");
        ok("\\Q(x", "\\(x");
        ok("\\101\\0", "\\x{41}\\x{0}");
        assert!(compile("^\\101$").unwrap().is_match("A"));
        ok("[\\101-\\132]", "[\\x{41}-\\x{5a}]");
        ok("[[:alpha:]]+", "[[:alpha:]]+");
    }

    #[test]
    fn plain_patterns_are_untouched() {
        assert!(matches!(translate("abc.*"), Cow::Borrowed(_)));
        ok("a\\.b\\d+", "a\\.b\\d+");
    }
}
