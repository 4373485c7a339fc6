//! Query errors and annotations (warnings and infos).

use std::fmt;

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
    match position {
        Some((l, c)) => format!("parse error at line {l}, column {c} in `{query}`: {message}"),
        None => format!("parse error in `{query}`: {message}"),
    }
}

fn context_suffix(expr: &Option<String>) -> String {
    match expr {
        Some(e) => format!(" (in `{e}`)"),
        None => String::new(),
    }
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
