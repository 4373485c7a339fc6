//! PromQL parse errors as Prometheus reports them: `1:9: parse error: unexpected "}" in
//! label matching, expected string`.
//!
//! promql-parser says "invalid promql query" for every grammar error, and its lexer's
//! messages carry no position. Here the position is found and the message rewritten in
//! Prometheus's words (its `promql/parser` lexer and the error productions of its yacc
//! grammar):
//!
//! * grammar errors: promql-parser's own tokens are read, and the first token after which
//!   no completion of the query parses is the unexpected one (an LR parser stops at the
//!   same token); its neighbours give Prometheus's context ("in label matching, expected
//!   string"). When every prefix can still be completed, the input ended too early;
//! * lexer errors: the offending character or token is found by a scan that skips string
//!   literals (`unclosed left parenthesis` is at the end of input, as in Prometheus);
//! * errors of the grammar's actions (unknown functions, argument counts, ranges of
//!   non-selectors) are placed at the function name or the bracket, with Go's quoting.
//!
//! Positions are byte offsets; [`ParseError`] prints 1-based line and byte column, as
//! Prometheus does.

use std::fmt;

use lrpar::{Lexeme, Lexer};
use promql_parser::parser::token::*;
use promql_parser::parser::{self, Expr};

/// promql-parser's message for any grammar error.
const INVALID: &str = "invalid promql query";

/// Past this many tokens the failing one is found by bisection rather than token by token.
const LINEAR_TOKENS: usize = 64;

/// Longest query (in bytes, each string literal counted as `"s"`) whose grammar error is
/// located: every trial parses a prefix again, a dozen completions at each step of the
/// bisection, so a 1 MiB query took over a second (fifteen under the fuzzer). Past it the
/// error is reported at the start, saying so.
pub const MAX_LOCATED_BYTES: usize = 64 << 10;

/// A parse error with Prometheus's position and wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the query (the query's length: at the end of input).
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in bytes as Prometheus counts.
    pub col: usize,
    /// What is wrong, without position (`unexpected <op:*>`).
    pub message: String,
}

impl fmt::Display for ParseError {
    /// `line:col: parse error: message`, as Prometheus prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: parse error: {}",
            self.line, self.col, self.message
        )
    }
}

/// Parses `query` with promql-parser; an error comes with Prometheus's position and words.
/// promql-parser recurses as deep as the expression: bound that first
/// ([`crate::engine::depth::check_depth`]), as the engine and the rules check do.
pub fn parse(query: &str) -> Result<Expr, ParseError> {
    parser::parse(query).map_err(|raw| explain(query, &raw))
}

/// Prometheus's position and wording for promql-parser's error `raw` on `query`.
pub fn explain(query: &str, raw: &str) -> ParseError {
    let (offset, message) = match parser::lex::lexer(query) {
        Err(_) => lexer_error(query, raw),
        Ok(_) if raw == INVALID => grammar_error(query),
        Ok(_) => action_error(query, raw),
    };
    let offset = offset.min(query.len());
    let before = &query.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    ParseError {
        offset,
        line,
        col: offset - line_start + 1,
        message,
    }
}

/// One token: id, start and end byte offsets.
#[derive(Clone, Copy, Debug)]
struct Tok {
    id: u16,
    start: usize,
    end: usize,
}

fn tokens(query: &str) -> Vec<Tok> {
    let Ok(lexer) = parser::lex::lexer(query) else {
        return Vec::new();
    };
    lexer
        .iter()
        .filter_map(Result::ok)
        .filter(|l| l.tok_id() != T_EOF)
        .map(|l| {
            let span = l.span();
            Tok {
                id: l.tok_id(),
                start: span.start(),
                end: span.end(),
            }
        })
        .collect()
}

/// Texts tried after a prefix to see whether it can still become a query.
const COMPLETIONS: &[&str] = &[
    "",
    " 1",
    " x",
    " \"s\"",
    "5m",
    " (x)",
    " (a) (x)",
    " a) (x)",
    "=\"s\"",
    " 1, x",
    " \"s\", x",
    " x)",
];

/// Whether `prefix` followed by one of [`COMPLETIONS`] and the closing brackets it needs
/// parses (semantic errors count as parsing: the grammar accepted the text).
fn viable(prefix: &str) -> bool {
    COMPLETIONS.iter().any(|c| {
        let text = format!("{prefix}{c}");
        let candidate = format!("{text}{}", closers(&text));
        parser::lex::lexer(&candidate).is_ok()
            && !matches!(parser::parse(&candidate), Err(m) if m == INVALID)
    })
}

/// The closing brackets that balance `text` (outside string literals).
fn closers(text: &str) -> String {
    let mut stack = Vec::new();
    scan(text, |i, c| {
        match c {
            b'(' => stack.push(')'),
            b'{' => stack.push('}'),
            b'[' => stack.push(']'),
            b')' | b'}' | b']' => {
                stack.pop();
            }
            _ => {}
        }
        let _ = i;
        false
    });
    stack.iter().rev().collect()
}

/// Calls `f` with every byte outside string literals and comments, in order, until it
/// returns true; returns that byte's offset. Returns the offset of an unterminated string's
/// quote as `Err`.
fn scan(text: &str, mut f: impl FnMut(usize, u8) -> bool) -> Option<Result<usize, usize>> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let open = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Some(Err(open)),
                        Some(b'\\') if c != b'`' => i += 2,
                        Some(&d) if d == c => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {
                if f(i, c) {
                    return Some(Ok(i));
                }
            }
        }
        i += 1;
    }
    None
}

/// The grammar error: the first token no completion can follow, or the end of input.
fn grammar_error(query: &str) -> (usize, String) {
    let toks = tokens(query);
    // The trials re-parse prefixes of the query, and the parser compiles every regex it
    // meets: a long one (20,000 characters took 13 s over all the trials) would be compiled
    // at each. They run on a skeleton where every string is "s": the grammar never looks
    // into a string, so the failing token is the same.
    let mut skeleton = String::with_capacity(query.len().min(1 << 16));
    let mut ends = Vec::with_capacity(toks.len());
    let mut last = 0;
    for t in &toks {
        skeleton.push_str(&query[last..t.start]);
        skeleton.push_str(match t.id {
            T_STRING => "\"s\"",
            _ => &query[t.start..t.end],
        });
        last = t.end;
        ends.push(skeleton.len());
    }
    if skeleton.len() > MAX_LOCATED_BYTES {
        return (
            0,
            format!(
                "{INVALID} (the error is not located in a query of {} bytes: at most {MAX_LOCATED_BYTES})",
                query.len()
            ),
        );
    }
    let fails = |k: usize| !viable(&skeleton[..ends[k]]);
    let bad = if toks.len() <= LINEAR_TOKENS {
        (0..toks.len()).find(|&k| fails(k))
    } else {
        let (mut lo, mut hi) = (0, toks.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fails(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        (lo < toks.len()).then_some(lo)
    };
    match bad {
        Some(k) => (
            toks[k].start,
            format!(
                "unexpected {}{}",
                describe(query, &toks[k]),
                context(&toks[..k])
            ),
        ),
        None => (
            query.len(),
            format!("unexpected end of input{}", context(&toks)),
        ),
    }
}

/// Go's `%q` of `s`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Prometheus's description of a token (`Item.desc()`): `identifier "x"`, `<op:+>`,
/// `<aggr:sum>`, `<by>`, `"}"`, `number "1"`.
fn describe(query: &str, t: &Tok) -> String {
    let text = &query[t.start..t.end];
    let ty = TokenType::new(t.id);
    let value = |kind: &str| {
        if text.chars().count() > 10 {
            let head: String = text.chars().take(10).collect();
            format!("{kind} {}...", go_quote(&head))
        } else {
            format!("{kind} {}", go_quote(text))
        }
    };
    match t.id {
        T_IDENTIFIER => format!("identifier {}", go_quote(text)),
        T_METRIC_IDENTIFIER => format!("metric identifier {}", go_quote(text)),
        T_NUMBER => value("number"),
        T_STRING => value("string"),
        T_DURATION => value("duration"),
        T_BY | T_WITHOUT | T_ON | T_IGNORING | T_GROUP_LEFT | T_GROUP_RIGHT | T_OFFSET | T_BOOL
        | T_START | T_END => format!("<{text}>"),
        _ if ty.is_aggregator() => format!("<aggr:{text}>"),
        _ if ty.is_operator() => format!("<op:{text}>"),
        _ => go_quote(text),
    }
}

/// Prometheus's context for an error after `before` (the tokens before the failing one),
/// from the error productions of its grammar: ` in label matching, expected string`.
fn context(before: &[Tok]) -> String {
    let id = |k: usize| before.len().checked_sub(k).map(|i| before[i].id);
    let in_context = |what: &str, expected: &str| format!(" in {what}, expected {expected}");
    match id(1) {
        Some(T_OFFSET) => return in_context("offset", "duration"),
        Some(T_SUB) if id(2) == Some(T_OFFSET) => return in_context("offset", "duration"),
        Some(T_AT) => return in_context("@", "timestamp"),
        Some(T_BY | T_WITHOUT | T_ON | T_IGNORING) => {
            return in_context("grouping opts", "\"(\"");
        }
        _ => {}
    }
    // The innermost open bracket and the token before it.
    let mut depth = 0usize;
    let mut open = None;
    for (i, t) in before.iter().enumerate().rev() {
        match t.id {
            T_RIGHT_PAREN | T_RIGHT_BRACE | T_RIGHT_BRACKET => depth += 1,
            T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET if depth > 0 => depth -= 1,
            T_LEFT_PAREN | T_LEFT_BRACE | T_LEFT_BRACKET => {
                open = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(open) = open else {
        return String::new();
    };
    let last = before.last().map(|t| t.id);
    match before[open].id {
        T_LEFT_BRACE => match last {
            Some(T_LEFT_BRACE | T_COMMA) => in_context("label matching", "identifier or \"}\""),
            Some(T_EQL | T_NEQ | T_EQL_REGEX | T_NEQ_REGEX) => {
                in_context("label matching", "string")
            }
            Some(T_STRING) => in_context("label matching", "\",\" or \"}\""),
            Some(_) => in_context("label matching", "label matching operator"),
            None => String::new(),
        },
        T_LEFT_PAREN
            if open > 0
                && matches!(
                    before[open - 1].id,
                    T_BY | T_WITHOUT | T_ON | T_IGNORING | T_GROUP_LEFT | T_GROUP_RIGHT
                ) =>
        {
            match last {
                Some(T_LEFT_PAREN | T_COMMA) => in_context("grouping opts", "label"),
                _ => in_context("grouping opts", "\",\" or \")\""),
            }
        }
        T_LEFT_BRACKET => {
            let inside: Vec<u16> = before[open + 1..].iter().map(|t| t.id).collect();
            match inside.as_slice() {
                [] => in_context("subquery selector", "duration"),
                [_] => in_context("subquery or range", "\":\" or \"]\""),
                [_, T_COLON] => in_context("subquery selector", "duration or \"]\""),
                _ => in_context("subquery selector", "\"]\""),
            }
        }
        _ => String::new(),
    }
}

/// Position and Prometheus's wording of a lexer error.
fn lexer_error(query: &str, raw: &str) -> (usize, String) {
    let end = query.len();
    if raw == "unexpected end of input inside brackets" {
        let message = if query.trim_end().ends_with('[') {
            "missing unit character in duration"
        } else {
            "unclosed left bracket"
        };
        return (end, message.to_string());
    }
    if raw.contains("end of input") || raw == "unclosed left parenthesis" {
        return (end, raw.to_string());
    }
    if raw.starts_with("unterminated quoted string") {
        let at = match scan(query, |_, _| false) {
            Some(Err(open)) => open,
            _ => 0,
        };
        return (at, "unterminated quoted string".to_string());
    }
    if let Some(bad) = raw.strip_prefix("bad number or duration syntax: ") {
        let at = find_token(query, bad).unwrap_or(0);
        let digits: String = bad
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let in_range = query[..at].trim_end().ends_with('[');
        let kind = if in_range {
            "bad duration syntax"
        } else {
            "bad number or duration syntax"
        };
        return (at, format!("{kind}: {}", go_quote(&digits)));
    }
    let unmatched = |close: u8, open: u8| {
        let mut depth = 0usize;
        match scan(query, |_, c| {
            if c == open {
                depth += 1;
            } else if c == close {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            }
            false
        }) {
            Some(Ok(at)) => at,
            _ => 0,
        }
    };
    match raw {
        // Prometheus's lexer reports it after the parenthesis (it emits the token first).
        "unexpected right parenthesis ')'" => {
            return (unmatched(b')', b'(') + 1, raw.to_string());
        }
        "unexpected right brace '}'" => {
            return (
                unmatched(b'}', b'{'),
                "unexpected character: '}'".to_string(),
            );
        }
        "unexpected right bracket ']'" => {
            return (
                unmatched(b']', b'['),
                "unexpected character: ']'".to_string(),
            );
        }
        _ => {}
    }
    // Anything else: the end of the shortest prefix that fails the same way.
    let at = query
        .char_indices()
        .map(|(i, c)| (i, i + c.len_utf8()))
        .take(1024)
        .find(|&(_, e)| matches!(parser::lex::lexer(&query[..e]), Err(m) if m == raw))
        .map_or(0, |(i, _)| i);
    (at, raw.to_string())
}

/// The offset of `token` in `query` outside strings, starting a token.
fn find_token(query: &str, token: &str) -> Option<usize> {
    let b = query.as_bytes();
    match scan(query, |i, _| {
        query.is_char_boundary(i)
            && query[i..].starts_with(token)
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
    }) {
        Some(Ok(at)) => Some(at),
        _ => None,
    }
}

/// A regex matcher that does not compile: at the label name, with Go's opening words.
fn regex_error(query: &str, re: &str) -> (usize, String) {
    let toks = tokens(query);
    let matcher = toks.windows(3).find(|w| {
        matches!(w[1].id, T_EQL_REGEX | T_NEQ_REGEX)
            && w[2].id == T_STRING
            && unquote(&query[w[2].start..w[2].end]) == re
    });
    let why = match crate::re2::compile_anchored(re) {
        Err(regex::Error::Syntax(s)) => s
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or("invalid")
            .to_string(),
        Err(e) => e.to_string(),
        Ok(_) => "invalid".to_string(),
    };
    // Go's words for the common mistakes (its `regexp/syntax` error codes); Prometheus
    // anchors the pattern as `^(?:…)$` before compiling it.
    let why = match why.as_str() {
        "unclosed group" => "missing closing )",
        "unopened group" => "unexpected )",
        "unclosed character class" => "missing closing ]",
        "repetition operator missing expression" => "missing argument to repetition operator",
        "invalid character class range" => "invalid character class range",
        "incomplete escape sequence, reached end of pattern prematurely" => {
            "trailing backslash at end of expression"
        }
        other => other,
    };
    (
        matcher.map_or(0, |w| w[0].start),
        format!("error parsing regexp: {why}: `^(?:{re})$`"),
    )
}

/// A string literal's text without its quotes (escapes left as they are).
fn unquote(literal: &str) -> &str {
    literal
        .get(1..literal.len().saturating_sub(1))
        .unwrap_or(literal)
}

/// Position and Prometheus's wording of an error raised by the grammar's actions.
fn action_error(query: &str, raw: &str) -> (usize, String) {
    if let Some(re) = raw.strip_prefix("illegal regex for ") {
        return regex_error(query, re);
    }
    if raw.contains("end of input") {
        return (query.len(), raw.to_string());
    }
    let toks = tokens(query);
    // Go quotes names with "…" where promql-parser writes '…'.
    let quoted = |s: &str| -> Option<String> { s.split('\'').nth(1).map(str::to_string) };
    let calls = |name: &str| -> Vec<usize> {
        toks.windows(2)
            .filter(|w| &query[w[0].start..w[0].end] == name && w[1].id == T_LEFT_PAREN)
            .map(|w| w[0].start)
            .collect()
    };
    let go_words = raw
        .split('\'')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                go_quote(part)
            } else {
                part.to_string()
            }
        })
        .collect::<String>();
    if raw.starts_with("unknown function with name")
        || raw.contains("argument(s) in call to")
        || raw.contains("in call to function")
    {
        let at = quoted(raw)
            .and_then(|name| calls(&name).first().copied())
            .unwrap_or(0);
        return (at, go_words);
    }
    if raw.contains("allowed before range") || raw.starts_with("ranges only allowed") {
        let at = toks
            .windows(2)
            .find(|w| {
                w[1].id == T_LEFT_BRACKET
                    && matches!(
                        w[0].id,
                        T_RIGHT_PAREN | T_RIGHT_BRACKET | T_DURATION | T_NUMBER
                    )
            })
            .map_or(0, |w| w[1].start);
        return (at, raw.to_string());
    }
    let at = quoted(raw)
        .and_then(|q| query.find(q.as_str()))
        .unwrap_or(0);
    (at, go_words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        parse(q).unwrap_err().to_string()
    }

    #[test]
    fn grammar_errors_name_the_unexpected_token_and_its_context() {
        for (q, want) in [
            ("up +", "1:5: parse error: unexpected end of input"),
            (
                "up{job=~}",
                "1:9: parse error: unexpected \"}\" in label matching, expected string",
            ),
            (
                "up{job=\"a\" instance=\"b\"}",
                "1:12: parse error: unexpected identifier \"instance\" in label matching, expected \",\" or \"}\"",
            ),
            (
                "up{=~\"a\"}",
                "1:4: parse error: unexpected <op:=~> in label matching, expected identifier or \"}\"",
            ),
            ("up 5", "1:4: parse error: unexpected number \"5\""),
            ("1 +* 2", "1:4: parse error: unexpected <op:*>"),
            ("up == == 1", "1:7: parse error: unexpected <op:==>"),
            (
                "x @ foo",
                "1:5: parse error: unexpected identifier \"foo\" in @, expected timestamp",
            ),
            (
                "sum without job (x)",
                "1:13: parse error: unexpected identifier \"job\" in grouping opts, expected \"(\"",
            ),
            ("up sum", "1:4: parse error: unexpected <aggr:sum>"),
            ("up by", "1:4: parse error: unexpected <by>"),
            (
                "up offset -",
                "1:12: parse error: unexpected end of input in offset, expected duration",
            ),
            ("up\n  + * 1", "2:5: parse error: unexpected <op:*>"),
        ] {
            assert_eq!(err(q), want, "{q}");
        }
    }

    /// A grammar error is located in a query up to the bound, and past it reported at the
    /// start without the trials (each would parse the whole query again).
    #[test]
    fn grammar_errors_are_located_up_to_the_bound() {
        let long = |n: usize| format!("x + {} 1", "y".repeat(n));
        let near = long(MAX_LOCATED_BYTES - 16);
        let e = parse(&near).unwrap_err();
        assert_eq!(e.offset, near.len() - 1, "{e}");
        let far = long(MAX_LOCATED_BYTES + 1);
        let e = parse(&far).unwrap_err();
        assert_eq!(e.offset, 0);
        assert_eq!(
            e.to_string(),
            format!(
                "1:1: parse error: invalid promql query (the error is not located in a query of {} bytes: at most 65536)",
                far.len()
            )
        );
    }

    #[test]
    fn lexer_errors_get_a_position() {
        for (q, want) in [
            (
                "sum(rate(x[5m])",
                "1:16: parse error: unclosed left parenthesis",
            ),
            ("x[5m", "1:5: parse error: unclosed left bracket"),
            ("up )", "1:5: parse error: unexpected right parenthesis ')'"),
            ("up}", "1:3: parse error: unexpected character: '}'"),
            ("x + \"abc", "1:5: parse error: unterminated quoted string"),
            ("x[5x]", "1:3: parse error: bad duration syntax: \"5\""),
            (
                "x offset 5z",
                "1:10: parse error: bad number or duration syntax: \"5\"",
            ),
        ] {
            assert_eq!(err(q), want, "{q}");
        }
    }

    #[test]
    fn action_errors_use_go_quotes_and_point_at_the_call() {
        assert_eq!(
            err("1 + foo(up)"),
            "1:5: parse error: unknown function with name \"foo\""
        );
        assert_eq!(
            err("x + rate()"),
            "1:5: parse error: expected 1 argument(s) in call to \"rate\", got 0"
        );
        assert_eq!(
            err("up[5m][5m]"),
            "1:7: parse error: ranges only allowed for vector selectors"
        );
        assert_eq!(
            err("up{a=~\"(\"}"),
            "1:4: parse error: error parsing regexp: missing closing ): `^(?:()$`"
        );
        assert_eq!(
            err("x offset"),
            "1:9: parse error: unexpected end of input in offset, expected duration"
        );
    }

    #[test]
    fn long_and_odd_queries_are_handled_quickly() {
        let started = std::time::Instant::now();
        // As deep as the engine's depth check lets through, and long.
        let long_term = format!("x{{a=\"{}\"}}", "v".repeat(4000));
        let big = format!("{} )", vec![long_term.as_str(); 200].join(" + "));
        assert!(parse(&big).is_err());
        let big = format!("{} 5", vec![long_term.as_str(); 200].join(" + "));
        assert_eq!(parse(&big).unwrap_err().offset, big.len() - 1);
        let big = format!("{} $", "x + ".repeat(200));
        assert!(parse(&big).is_err());
        for q in [
            "é[5é]",
            "x offset 5é",
            "\"é",
            "é{",
            "up{a=~\"é(\"}",
            "sum(é",
            "x[5m] @",
            "é $",
        ] {
            let _ = parse(q);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn long_regexes_are_not_compiled_at_every_trial() {
        // Found by fuzzing: the trials compiled this regex hundreds of times (13 s).
        let query = |n: usize| {
            format!(
                "sort_desc(quantile(-2, x{{__name__=~\"{}\",le!~\"\"}})) by (job) (Inf)) 1",
                ".".repeat(n)
            )
        };
        // The same error, at the same place after the regex, as with a one-dot regex.
        let (long, short) = (
            parse(&query(19_000)).unwrap_err(),
            parse(&query(1)).unwrap_err(),
        );
        assert_eq!(long.message, short.message);
        assert_eq!(long.offset, short.offset + 18_999, "{long} / {short}");
    }

    #[test]
    fn long_queries_are_bisected() {
        let q = format!("{} 5", vec!["x"; 300].join(" + "));
        let e = parse(&q).unwrap_err();
        assert_eq!(e.offset, q.len() - 1);
        assert_eq!(e.message, "unexpected number \"5\"");
    }
}
