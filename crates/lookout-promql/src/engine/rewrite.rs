//! Query text rewriting before promql-parser sees it, for syntax Prometheus accepts and
//! promql-parser does not:
//!
//! * duration expressions (experimental in Prometheus): `[5m + 1m]`, `[step() * 2]`,
//!   `offset min_of(range(), 1m)` are evaluated and replaced by literals. Inside
//!   `[range]`/`[range:step]` the whole text is an expression; after `offset` only one
//!   operand is (a literal, a parenthesised expression or a call, optionally signed), so
//!   `x offset 1m + 2` stays `(x offset 1m) + 2`. Bare numbers are seconds; `step()` and
//!   `range()` are the query's step and `end - start` (0 for instant queries);
//! * the `anchored`/`smoothed` selector modifiers, carried as a marker matcher
//!   ([`MODIFIER_LABEL`]) the engine reads and removes;
//! * the histogram trim operators `</` and `>/`, written as `<`/`>` with a marker matcher
//!   ([`TRIM_LABEL`]) on the left-hand selector (only a selector is supported there);
//! * `info()` label selectors whose matchers all match the empty string (marked with
//!   [`INFO_SELECTOR_LABEL`]);
//! * string literals whose `\x` escapes are invalid UTF-8 (marked so label-name checks
//!   reject them as Prometheus does).

use super::QueryError;

/// Marks the label selector argument of `info()`: Prometheus accepts `{data=~".*"}` there,
/// promql-parser rejects a selector whose matchers all match the empty string. The marker
/// matcher is ignored by `info()`.
pub(crate) const INFO_SELECTOR_LABEL: &str = "__lookout_info_selector__";

fn mark_info_selectors(query: &str) -> String {
    let mut out = query.to_string();
    let mut search_from = 0;
    while let Some(p) = out[search_from..].find("info(").map(|p| p + search_from) {
        search_from = p + 5;
        if p > 0 {
            let prev = out.as_bytes()[p - 1];
            if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                continue;
            }
        }
        let open = p + 4;
        let close = matching_paren(&out, open);
        // The top-level comma of the call.
        let mut depth = 0i32;
        let mut comma = None;
        let mut i = open;
        let bytes = out.as_bytes();
        while i < close {
            match bytes[i] {
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' => depth -= 1,
                b'"' | b'\'' | b'`' => {
                    i = string_end(&out, i);
                    continue;
                }
                b',' if depth == 1 => {
                    comma = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(comma) = comma else { continue };
        let arg_start = comma + 1 + (out[comma + 1..].len() - out[comma + 1..].trim_start().len());
        if out.as_bytes().get(arg_start) == Some(&b'{') {
            out.insert_str(arg_start + 1, &format!("{INFO_SELECTOR_LABEL}=\"1\","));
        }
    }
    out
}

/// Rewrites the duration expressions of `query` into literals.
pub(crate) fn rewrite(query: &str, step_ms: i64, range_ms: i64) -> Result<String, QueryError> {
    let marked;
    let query = if query.contains("info(") {
        marked = mark_info_selectors(query);
        marked.as_str()
    } else {
        query
    };
    let ctx = Ctx { step_ms, range_ms };
    let b = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut i = 0;
    let mut brace_depth = 0usize;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let end = string_end(query, i);
                out.push_str(&mark_invalid_utf8(&query[i..end]));
                i = end;
            }
            b'{' => {
                brace_depth += 1;
                out.push('{');
                i += 1;
            }
            b'}' => {
                brace_depth = brace_depth.saturating_sub(1);
                out.push('}');
                i += 1;
            }
            b'[' if brace_depth == 0 => {
                let Some(close) = query[i..].find(']').map(|p| i + p) else {
                    out.push_str(&query[i..]);
                    break;
                };
                let inner = &query[i + 1..close];
                out.push('[');
                match split_top_colon(inner) {
                    Some((range, step)) => {
                        out.push_str(&ctx.literal(range)?);
                        out.push(':');
                        if !step.trim().is_empty() {
                            out.push_str(&ctx.literal(step)?);
                        }
                    }
                    None => out.push_str(&ctx.literal(inner)?),
                }
                out.push(']');
                i = close + 1;
            }
            _ if brace_depth == 0
                && (is_keyword_at(query, i, "anchored") || is_keyword_at(query, i, "smoothed")) =>
            {
                let word = &query[i..i + 8];
                if !mark_selector(&mut out, &word.to_ascii_lowercase()) {
                    // Not after a selector (a label called `anchored`, say): keep it.
                    out.push_str(word);
                }
                i += 8;
            }
            b'<' | b'>' if brace_depth == 0 && b.get(i + 1) == Some(&b'/') => {
                let which = if c == b'<' { "upper" } else { "lower" };
                if mark_selector_with(&mut out, TRIM_LABEL, which) {
                    out.push(' ');
                    out.push(c as char);
                    i += 2;
                } else {
                    out.push(c as char);
                    i += 1;
                }
            }
            _ if brace_depth == 0 && is_keyword_at(query, i, "offset") => {
                out.push_str(&query[i..i + 6]);
                i += 6;
                let (text, end) = offset_operand(query, i);
                if text.trim().is_empty() {
                    continue;
                }
                out.push(' ');
                out.push_str(&ctx.literal(text)?);
                i = end;
            }
            _ => {
                let ch = query[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

/// The label name of the matcher that carries `anchored`/`smoothed` through promql-parser,
/// which does not parse these modifiers: `x[5m] anchored` becomes
/// `x{__lookout_range_modifier__="anchored"}[5m]`. The engine removes the matcher before
/// selecting.
pub(crate) const MODIFIER_LABEL: &str = "__lookout_range_modifier__";

/// The label name of the matcher marking the left-hand selector of a trim operator:
/// `h </ 5` becomes `h{__lookout_trim__="upper"} < 5` (`>/` is `"lower"`). The engine
/// removes the matcher before selecting and applies the trim instead of the comparison.
pub(crate) const TRIM_LABEL: &str = "__lookout_trim__";

/// Adds the modifier matcher to the selector that ends `out`; `false` (and `out`
/// unchanged) when `out` does not end with a selector.
fn mark_selector(out: &mut String, modifier: &str) -> bool {
    mark_selector_with(out, MODIFIER_LABEL, modifier)
}

/// Adds the matcher `label="value"` to the selector that ends `out`; `false` (and `out`
/// unchanged) when `out` does not end with a selector.
fn mark_selector_with(out: &mut String, label: &str, value: &str) -> bool {
    let b = out.as_bytes().to_vec();
    let mut end = out.trim_end().len();
    // Skip trailing `offset <d>` / `@ <t>` modifiers (at most one of each).
    for _ in 0..2 {
        let tail = &out[..end];
        let word_start = tail
            .trim_end()
            .rfind(|c: char| c.is_whitespace() || c == '@')
            .map(|p| p + 1)
            .unwrap_or(0);
        let before = tail[..word_start].trim_end();
        let before = before.strip_suffix(['-', '+']).unwrap_or(before).trim_end();
        if before.ends_with('@') {
            end = before.len() - 1;
        } else if before
            .len()
            .checked_sub(6)
            .and_then(|at| before.get(at..))
            .is_some_and(|w| w.eq_ignore_ascii_case("offset"))
        {
            end = before.len() - 6;
        } else {
            break;
        }
        while end > 0 && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
    }
    // Skip a range `[...]`.
    if end > 0 && b[end - 1] == b']' {
        let Some(open) = out[..end].rfind('[') else {
            return false;
        };
        end = open;
        while end > 0 && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
    }
    let matcher = format!("{label}=\"{value}\"");
    if end > 0 && b[end - 1] == b'}' {
        let Some(open) = out[..end].rfind('{') else {
            return false;
        };
        let empty = out[open + 1..end - 1].trim().is_empty();
        let insert = if empty {
            matcher
        } else {
            format!("{matcher},")
        };
        out.insert_str(open + 1, &insert);
    } else if end > 0
        && (b[end - 1].is_ascii_alphanumeric() || b[end - 1] == b'_' || b[end - 1] == b':')
    {
        out.insert_str(end, &format!("{{{matcher}}}"));
    } else {
        return false;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    true
}

/// Marks string literals whose Go-style `\\x` escapes decode to invalid UTF-8 (Prometheus
/// keeps such bytes and rejects them as label names; promql-parser would decode each escape
/// to a valid character instead): the literal becomes [`INVALID_UTF8_MARK`] followed by
/// its escaped text.
fn mark_invalid_utf8(lit: &str) -> String {
    let Some(&quote) = lit.as_bytes().first() else {
        return lit.to_string();
    };
    if quote == b'`' || !lit.contains("\\x") {
        return lit.to_string();
    }
    // An unterminated literal (the query ends inside it) is left to the parser's error;
    // cutting its last byte could split a character (found by fuzzing).
    let Some(inner) = lit.get(1..).and_then(|r| r.strip_suffix(quote as char)) else {
        return lit.to_string();
    };
    let mut bytes = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x'
                && let Some(v) = inner
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(v);
                i += 4;
                continue;
            }
            // Other escapes decode to valid UTF-8; keep a placeholder byte.
            bytes.push(b'_');
            i += 2;
            continue;
        }
        bytes.push(b[i]);
        i += 1;
    }
    if std::str::from_utf8(&bytes).is_ok() {
        return lit.to_string();
    }
    let q = quote as char;
    format!("{q}{INVALID_UTF8_MARK}{}{q}", inner.replace('\\', "\\\\"))
}

/// First character of a string literal that was not valid UTF-8 in the query.
pub(crate) const INVALID_UTF8_MARK: char = '\u{e000}';

/// Whether `name` can be a label name (Prometheus 3: any non-empty valid UTF-8).
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with(INVALID_UTF8_MARK)
}

/// How a label name is shown in errors (invalid ones as written in the query).
pub(crate) fn shown_label_name(name: &str) -> &str {
    name.strip_prefix(INVALID_UTF8_MARK).unwrap_or(name)
}

/// Whether `word` starts at byte `i` as a whole word.
fn is_keyword_at(q: &str, i: usize, word: &str) -> bool {
    let b = q.as_bytes();
    let Some(s) = q.get(i..i + word.len()) else {
        return false;
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    s.eq_ignore_ascii_case(word)
        && (i == 0 || !ident(b[i - 1]))
        && b.get(i + word.len()).is_none_or(|c| !ident(*c))
}

fn string_end(q: &str, start: usize) -> usize {
    let b = q.as_bytes();
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn split_top_colon(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ':' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The operand of `offset` starting at `i`: optional sign, then a literal, a parenthesised
/// expression or a function call. Returns its text and end.
fn offset_operand(q: &str, i: usize) -> (&str, usize) {
    let b = q.as_bytes();
    let mut j = i;
    while j < b.len() && b[j].is_ascii_whitespace() {
        j += 1;
    }
    let start = j;
    while j < b.len() && (b[j] == b'-' || b[j] == b'+' || b[j].is_ascii_whitespace()) {
        j += 1;
    }
    if j < b.len() && b[j] == b'(' {
        j = matching_paren(q, j);
    } else {
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        if k < b.len() && b[k] == b'(' {
            j = matching_paren(q, k);
        }
    }
    (&q[start..j], j)
}

fn matching_paren(q: &str, open: usize) -> usize {
    let mut depth = 0i32;
    for (i, c) in q[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    q.len()
}

struct Ctx {
    step_ms: i64,
    range_ms: i64,
}

impl Ctx {
    /// The text as a duration literal: unchanged when it already is one.
    fn literal(&self, text: &str) -> Result<String, QueryError> {
        let t = text.trim();
        if is_plain_duration(t) {
            return Ok(t.to_string());
        }
        let mut p = Parser {
            toks: tokenize(t)?,
            pos: 0,
            ctx: self,
        };
        let secs = p.expr()?;
        if p.pos != p.toks.len() {
            return Err(bad(t));
        }
        if !secs.is_finite() {
            return Err(QueryError::eval(format!(
                "duration expression {t:?} is not a finite duration"
            )));
        }
        let ms = (secs * 1000.0).round();
        // Beyond i64 milliseconds the cast saturates and `-ms` overflows; Prometheus rejects
        // such durations as well.
        if ms.abs() >= i64::MAX as f64 {
            return Err(QueryError::eval(format!(
                "duration expression {t:?} is out of range"
            )));
        }
        let ms = ms as i64;
        // promql-parser rejects `0s`/`0ms` but takes a bare `0`.
        Ok(if ms == 0 {
            "0".to_string()
        } else if ms < 0 {
            format!("-{}ms", -ms)
        } else {
            format!("{ms}ms")
        })
    }
}

fn is_plain_duration(t: &str) -> bool {
    let body = t.strip_prefix('-').unwrap_or(t);
    !body.is_empty()
        && body.chars().next().is_some_and(|c| c.is_ascii_digit())
        && body.chars().any(|c| c.is_ascii_alphabetic())
        && body.chars().all(|c| c.is_ascii_alphanumeric())
}

fn bad(t: &str) -> QueryError {
    QueryError::eval(format!("invalid duration expression {t:?}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(char),
}

fn tokenize(t: &str) -> Result<Vec<Tok>, QueryError> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let word = &t[start..i];
            let v = match word.parse::<f64>() {
                Ok(v) => v,
                Err(_) => crate::duration::parse_duration_ms(word)
                    .ok()
                    .map(|ms| ms as f64 / 1000.0)
                    .ok_or_else(|| bad(t))?,
            };
            out.push(Tok::Num(v));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(t[start..i].to_ascii_lowercase()));
        } else if b"+-*/%^(),".contains(&c) {
            out.push(Tok::Op(c as char));
            i += 1;
        } else {
            return Err(bad(t));
        }
    }
    Ok(out)
}

struct Parser<'c> {
    toks: Vec<Tok>,
    pos: usize,
    ctx: &'c Ctx,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<char> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(c)) => Some(*c),
            _ => None,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), QueryError> {
        if self.peek_op() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(QueryError::eval(format!(
                "duration expression: expected {c:?}"
            )))
        }
    }

    /// sum := product (('+' | '-') product)*
    fn expr(&mut self) -> Result<f64, QueryError> {
        let mut v = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek_op() {
            self.pos += 1;
            let r = self.product()?;
            v = if op == '+' { v + r } else { v - r };
        }
        Ok(v)
    }

    /// product := unary (('*' | '/' | '%') unary)*
    fn product(&mut self) -> Result<f64, QueryError> {
        let mut v = self.unary()?;
        while let Some(op @ ('*' | '/' | '%')) = self.peek_op() {
            self.pos += 1;
            let r = self.unary()?;
            v = match op {
                '*' => v * r,
                '/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }

    /// unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<f64, QueryError> {
        match self.peek_op() {
            Some('-') => {
                self.pos += 1;
                Ok(-self.unary()?)
            }
            Some('+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    /// power := primary ('^' unary)?   (right-associative)
    fn power(&mut self) -> Result<f64, QueryError> {
        let base = self.primary()?;
        if self.peek_op() == Some('^') {
            self.pos += 1;
            let exp = self.unary()?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<f64, QueryError> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Num(v)) => {
                self.pos += 1;
                Ok(v)
            }
            Some(Tok::Op('(')) => {
                self.pos += 1;
                let v = self.expr()?;
                self.expect(')')?;
                Ok(v)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                self.expect('(')?;
                let v = match name.as_str() {
                    "step" => self.ctx.step_ms as f64 / 1000.0,
                    "range" => self.ctx.range_ms as f64 / 1000.0,
                    "min_of" | "max_of" => {
                        let a = self.expr()?;
                        self.expect(',')?;
                        let b = self.expr()?;
                        if name == "min_of" { a.min(b) } else { a.max(b) }
                    }
                    other => {
                        return Err(QueryError::eval(format!(
                            "unknown function {other}() in duration expression"
                        )));
                    }
                };
                self.expect(')')?;
                Ok(v)
            }
            _ => Err(QueryError::eval("duration expression: unexpected token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_operators_mark_their_left_hand_selector() {
        assert_eq!(
            rewrite("h </ 5", 0, 0).unwrap(),
            "h{__lookout_trim__=\"upper\"} < 5"
        );
        assert_eq!(
            rewrite("histogram_count(h{a=\"b\"} >/ on (a) f)", 0, 0).unwrap(),
            "histogram_count(h{__lookout_trim__=\"lower\",a=\"b\"} > on (a) f)"
        );
        // Not after a selector: left alone (and promql-parser rejects it).
        assert!(crate::engine::parse("(h) </ 5").is_err());
        assert!(crate::engine::parse("h </ 5").is_ok());
    }

    #[test]
    fn unterminated_string_with_escape_before_a_wide_character() {
        // Found by the promql_eval fuzz target: slicing off the closing quote split `И`.
        for lit in ["\"c\\x}\u{418}", "\"", "'\\x4", "\"\\xff\""] {
            let _ = mark_invalid_utf8(lit);
        }
        assert_eq!(mark_invalid_utf8("\"c\\x}\u{418}"), "\"c\\x}\u{418}");
        assert!(crate::engine::parse("{a=\"                  c\\x}\u{418}").is_err());
    }

    #[test]
    fn huge_duration_expressions_are_errors() {
        // Found by the promql_eval fuzz target: a huge negative duration overflowed `-ms`.
        for q in [
            "rate(x[1+(step()-4)*27777777777777777777777777777])",
            "rate(x[1+(step()+4)*27777777777777777777777777777])",
        ] {
            let e = rewrite(q, 60_000, 0).expect_err("out of range");
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn ordinary_queries_are_left_alone() {
        for q in [
            r#"sum by (job) (rate(http_requests_total{job=~"a|b", path="/x[1]"}[5m] offset 1h))"#,
            "x @ start()",
            "x @ 1609746000",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            r#"label_replace(x, "a", "$1", "b", "(.*)")"#,
            "max_over_time(x[5m:1m])",
            "x offset -5m",
            r#"{__name__=~"a.*"} offset 1d"#,
            "a and on(b) c",
            "rate(x[1h] offset 30m)",
            "info(up)",
            "count_values(\"v\", x)",
        ] {
            assert_eq!(rewrite(q, 60_000, 0).expect("rewrite"), q);
        }
    }

    #[test]
    fn ranges_and_offsets_are_rewritten() {
        let r = |q: &str| rewrite(q, 5_000, 10_000).expect("rewrite");
        assert_eq!(r("changes(x[26m+4m])"), "changes(x[1800000ms])");
        assert_eq!(r("x[5m]"), "x[5m]");
        assert_eq!(r("x[step()*2:1m]"), "x[10000ms:1m]");
        assert_eq!(r("x offset 100 + 2"), "x offset 100000ms + 2");
        assert_eq!(
            r("x offset -(min_of(step(), 2s)-5)+8000"),
            "x offset 3000ms+8000"
        );
        assert_eq!(
            r(r#"x{a=~"[0-9]"} offset 5m"#),
            r#"x{a=~"[0-9]"} offset 5m"#
        );
        assert_eq!(r("x offset -2 ^ 2"), "x offset -2000ms ^ 2");
        assert_eq!(
            r("m[1m] anchored"),
            format!("m{{{MODIFIER_LABEL}=\"anchored\"}}[1m]")
        );
        assert_eq!(r("sum by (anchored) (m)"), "sum by (anchored) (m)");
        assert_eq!(r("sum by (offset) (m)"), "sum by (offset) (m)");
        assert_eq!(
            r("m{a=\"b\"} @ 100 smoothed"),
            format!("m{{{MODIFIER_LABEL}=\"smoothed\",a=\"b\"}} @ 100")
        );
    }
}
