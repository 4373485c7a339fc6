//! Query errors and annotations (warnings and infos).

use std::fmt;

/// Most characters of a query or sub-expression an error message repeats. Prometheus
/// repeats none of the query (it names the position only); Lookout shows the text for
/// context, but never a whole 1 MB query: a longer text is cut to this many characters
/// around the error's position, with `…` where text was left out.
pub const MAX_ECHOED_CHARS: usize = 256;

/// Why a query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The expression does not parse.
    #[error("{}", parse_display(.query, .message, .position))]
    Parse {
        /// The query text.
        query: String,
        /// What the parser said.
        message: String,
        /// 1-based line and column where known.
        position: Option<(usize, usize)>,
    },
    /// Evaluation failed (Prometheus's message, plus the sub-expression that failed).
    #[error("{message}{}", context_suffix(.expr))]
    Eval {
        /// Prometheus's wording of the error.
        message: String,
        /// The sub-expression being evaluated when it failed, if known.
        expr: Option<String>,
    },
    /// The query would hold more samples in memory than allowed.
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(String),
}

fn parse_display(query: &str, message: &str, position: &Option<(usize, usize)>) -> String {
    let at = position.map(|(l, c)| char_index(query, l, c)).unwrap_or(0);
    let query = echoed(query, at);
    match position {
        Some((l, c)) => format!("parse error at line {l}, column {c} in `{query}`: {message}"),
        None => format!("parse error in `{query}`: {message}"),
    }
}

fn context_suffix(expr: &Option<String>) -> String {
    match expr {
        Some(e) => format!(" (in `{}`)", echoed(e, 0)),
        None => String::new(),
    }
}

/// The index (in characters) of 1-based line `line`, column `col` of `text`.
fn char_index(text: &str, line: usize, col: usize) -> usize {
    let mut index = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return index + col.saturating_sub(1);
        }
        index += l.chars().count() + 1;
    }
    index
}

/// `text`, or at most [`MAX_ECHOED_CHARS`] of it around character `at` with `…` for what
/// is left out.
pub(crate) fn echoed(text: &str, at: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ECHOED_CHARS {
        return text.into();
    }
    let total = text.chars().count();
    if total <= MAX_ECHOED_CHARS {
        return text.into();
    }
    let start = at
        .saturating_sub(MAX_ECHOED_CHARS / 4)
        .min(total - MAX_ECHOED_CHARS);
    let kept: String = text.chars().skip(start).take(MAX_ECHOED_CHARS).collect();
    let before = if start > 0 { "…" } else { "" };
    let after = if start + MAX_ECHOED_CHARS < total {
        "…"
    } else {
        ""
    };
    format!("{before}{kept}{after}").into()
}

impl QueryError {
    /// An evaluation error with Prometheus's message.
    pub fn eval(message: impl Into<String>) -> QueryError {
        QueryError::Eval {
            message: message.into(),
            expr: None,
        }
    }

    /// The bare message, worded like Prometheus's (what `expect fail msg:` compares).
    pub fn message(&self) -> String {
        match self {
            QueryError::Parse { message, .. } => message.clone(),
            QueryError::Eval { message, .. } => message.clone(),
            QueryError::TooManySamples(what) => {
                format!("query processing would load too many samples into memory in {what}")
            }
        }
    }

    /// Attaches the failing sub-expression unless a deeper one is already attached.
    pub(crate) fn with_expr(self, e: impl FnOnce() -> String) -> QueryError {
        match self {
            QueryError::Eval {
                message,
                expr: None,
            } => QueryError::Eval {
                message,
                expr: Some(e()),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_query_is_echoed_in_part_around_the_error() {
        let query = format!("sum({} +)", "a + ".repeat(250_000));
        let e = QueryError::Parse {
            query: query.clone(),
            message: "unexpected \")\"".into(),
            position: Some((1, query.chars().count())),
        };
        let shown = e.to_string();
        assert!(shown.len() < MAX_ECHOED_CHARS * 2, "{} bytes", shown.len());
        assert!(shown.contains("a + a +  +)`"), "{shown}");
        assert!(shown.starts_with("parse error at line 1, column 1000007 in `…"));
        let e = QueryError::Eval {
            message: "boom".into(),
            expr: Some(query),
        };
        assert!(e.to_string().len() < MAX_ECHOED_CHARS * 2);
        let short = QueryError::Parse {
            query: "sum(".into(),
            message: "m".into(),
            position: Some((1, 5)),
        };
        assert_eq!(
            short.to_string(),
            "parse error at line 1, column 5 in `sum(`: m"
        );
    }
}

/// Severity of an [`Annotation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnotationLevel {
    /// Something is probably wrong with the query or the data.
    Warning,
    /// Something might be wrong.
    Info,
}

/// A warning or info attached to a successful query, worded like Prometheus's annotations
/// (`PromQL warning: … (line:col)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Annotation {
    /// Warning or info.
    pub level: AnnotationLevel,
    /// The full text, prefix and position included.
    pub message: String,
}

impl fmt::Display for Annotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
