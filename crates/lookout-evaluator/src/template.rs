//! Alert label and annotation templates: Go `text/template` (through the `gtmpl` crate) with
//! Prometheus's variables (`$labels`, `$value`, `$externalLabels`, `$externalURL`) and
//! template functions (`humanize`, `query`, `reReplaceAll`, ...), formatting numbers the way
//! Go's `fmt` does so annotations read exactly as they would from Prometheus.
//!
//! `gtmpl` functions are plain `fn` pointers, so the per-expansion context (the external URL
//! and the `query` callback) lives in a thread-local set for the duration of one expansion
//! and restored afterwards.
//!
//! Output is checked against Prometheus's own Go templates (`promtool test rules`) in
//! `tests/rules_templates_promtool.rs`. `{{ $value }}` and `{{ .Value }}` print as Go's `%v`
//! does (`1.5e+09`). Known differences, from the `gtmpl` crate: other numbers printed
//! without a function (`{{ . | first | value }}`) use Rust's float formatting
//! (`1500000000`), and number literals written in a template that are negative fractions
//! or beyond 2^64 are misread. `humanize`, `printf` and the other functions match Go.

use std::cell::RefCell;
use std::collections::HashMap;

use gtmpl::{Context, Template, Value};
use gtmpl_value::{Func, FuncError};
use lookout_promql::Labels;
pub use lookout_promql::gofmt::{go_fmt_g, go_fmt_v};

use crate::datasource::QuerySample;

/// The `query` function's backend: runs an instant query at the rule's evaluation time.
pub type QueryFn = std::sync::Arc<dyn Fn(&str) -> Result<Vec<QuerySample>, String> + Send + Sync>;

/// What an alert template sees.
#[derive(Clone, Debug, Default)]
pub struct TemplateData {
    /// `$labels` / `.Labels`: the alert's series labels.
    pub labels: Labels,
    /// `$externalLabels`.
    pub external_labels: Labels,
    /// `$externalURL`.
    pub external_url: String,
    /// `$value` / `.Value`.
    pub value: f64,
    /// For a native-histogram sample, `$value` is the histogram instead (Prometheus 2.52
    /// and later), printed as `FloatHistogram.String()`.
    pub histogram: Option<String>,
}

struct ExpandContext {
    external_url: String,
    query: Option<QueryFn>,
}

thread_local! {
    static CONTEXT: RefCell<Option<ExpandContext>> = const { RefCell::new(None) };
}

/// Prometheus's convenience variables, prepended to every alert template.
const DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

fn prometheus_funcs() -> Vec<(&'static str, Func)> {
    vec![
        ("query", f_query as Func),
        ("first", f_first as Func),
        ("label", f_label as Func),
        ("value", f_value as Func),
        ("strvalue", f_strvalue as Func),
        ("args", f_args as Func),
        ("reReplaceAll", f_re_replace_all as Func),
        ("safeHtml", f_identity as Func),
        ("match", f_match as Func),
        ("title", f_title as Func),
        ("toUpper", f_to_upper as Func),
        ("toLower", f_to_lower as Func),
        ("graphLink", f_graph_link as Func),
        ("tableLink", f_table_link as Func),
        ("sortByLabel", f_sort_by_label as Func),
        ("stripPort", f_strip_port as Func),
        ("stripDomain", f_strip_domain as Func),
        ("humanize", f_humanize as Func),
        ("humanize1024", f_humanize1024 as Func),
        ("humanizeDuration", f_humanize_duration as Func),
        ("humanizePercentage", f_humanize_percentage as Func),
        ("humanizeTimestamp", f_humanize_timestamp as Func),
        ("toTime", f_to_time as Func),
        ("toDuration", f_to_duration as Func),
        ("parseDuration", f_parse_duration as Func),
        ("pathPrefix", f_path_prefix as Func),
        ("externalURL", f_external_url as Func),
        ("lookoutGoValue", f_go_value as Func),
        ("printf", f_printf as Func),
        ("urlquery", f_urlquery as Func),
    ]
}

/// Largest printf width or precision: Rust's formatter, which gtmpl formats with, panics
/// beyond `u16::MAX` (Go's own bound, `fmt`'s `tooLarge`, is 1,000,000).
const MAX_PRINTF_WIDTH: u64 = u16::MAX as u64;

/// `printf`, as gtmpl implements it, after doing what gtmpl does not:
///
/// * a width or precision (written, or taken from an argument with `*`, so possibly from a
///   query result) beyond [`MAX_PRINTF_WIDTH`] panics in the formatter, or overflows, and an
///   argument index `%[0]` underflows gtmpl's index arithmetic: both are errors here;
/// * gtmpl has no `%v`, `%g` or `%G` for floats (every sample value is one): those verbs
///   are formatted here as Go does and handed to gtmpl as strings;
/// * gtmpl copies `%%` through as two characters where Go writes one `%` (Prometheus
///   alerts commonly end `printf "%.0f%%" $value`): each `%%` stands in for a private-use
///   placeholder while gtmpl formats, and becomes `%` after.
fn f_printf(args: &[Value]) -> Result<Value, FuncError> {
    const PERCENT: &str = "\u{e000}lookout-percent\u{e000}";
    let Some(Value::String(format)) = args.first() else {
        return gtmpl::funcs::printf(args);
    };
    let verbs = printf_verbs(format, &args[1..]).map_err(err)?;
    let mut args = args.to_vec();
    let mut rewritten = String::with_capacity(format.len());
    let mut copied = 0;
    // Explicit `[n]` indexes may print one argument twice: those formats go to gtmpl as
    // they are.
    let sequential = !format.contains('[');
    for v in verbs.iter().filter(|_| sequential) {
        let Some(Value::Number(n)) = args.get(v.arg + 1) else {
            continue;
        };
        // Floats only: gtmpl prints integers itself.
        if n.as_u64().is_some() || n.as_i64().is_some() {
            continue;
        }
        let (Some(f), 'v' | 'g' | 'G', false) = (n.as_f64(), v.verb, v.star_precision) else {
            continue;
        };
        let mut text = match (v.verb, v.precision) {
            ('v' | 'g', None) => go_fmt_v(f),
            (_, None) => go_fmt_v(f).to_uppercase(),
            ('G', Some(p)) => go_fmt_g(f, p).to_uppercase(),
            (_, Some(p)) => go_fmt_g(f, p),
        };
        if !text.starts_with(['-', '+']) && !f.is_nan() {
            if v.plus {
                text.insert(0, '+');
            } else if v.space {
                text.insert(0, ' ');
            }
        }
        // Padded here: gtmpl pads strings on the wrong side (Rust's default for text).
        let width: usize = v.width.parse().unwrap_or(0);
        let pad = " ".repeat(width.saturating_sub(text.chars().count()));
        if v.minus {
            text.push_str(&pad);
        } else {
            text.insert_str(0, &pad);
        }
        rewritten.push_str(&format[copied..v.start]);
        rewritten.push('%');
        if v.width == "*" {
            rewritten.push_str(if v.minus { "-*" } else { "*" });
        }
        rewritten.push('s');
        copied = v.end;
        args[v.arg + 1] = Value::String(text);
    }
    rewritten.push_str(&format[copied..]);
    args[0] = Value::String(rewritten.replace("%%", PERCENT));
    match gtmpl::funcs::printf(&args)? {
        Value::String(out) => Ok(Value::String(out.replace(PERCENT, "%"))),
        other => Ok(other),
    }
}

/// One verb of a printf format, as gtmpl's `sprintf` reads it.
struct PrintfVerb {
    /// Byte range of `%...verb` in the format.
    start: usize,
    end: usize,
    /// The verb character.
    verb: char,
    /// Index (0-based, after the format) of the argument the verb prints.
    arg: usize,
    plus: bool,
    minus: bool,
    space: bool,
    /// The width as written: digits, `*`, or empty.
    width: String,
    /// A written precision.
    precision: Option<usize>,
    /// The precision is `*` (taken from an argument).
    star_precision: bool,
}

/// Walks `format` the way gtmpl's `sprintf` does (verbs, flags, `[n]` indexes, `*`),
/// checking every width, precision and index against `args`.
fn printf_verbs(format: &str, args: &[Value]) -> Result<Vec<PrintfVerb>, String> {
    const VERBS: &str = "vVtTbcdoqxXUeEfFgGsp";
    let bad = |what: &str, n: &dyn std::fmt::Display| {
        format!("printf: {what} {n} in {format:?} is out of range (at most {MAX_PRINTF_WIDTH})")
    };
    // `[n]`: a 1-based argument index.
    let take_index = |spec: &mut &str, index: &mut usize| -> Result<(), String> {
        if let Some(inner) = spec.strip_prefix('[') {
            let close = inner.find(']').unwrap_or(inner.len());
            match inner[..close].parse::<u64>() {
                Ok(0) => return Err(bad("argument index", &0)),
                Ok(n) => *index = usize::try_from(n - 1).unwrap_or(usize::MAX),
                Err(_) => {} // gtmpl reports it
            }
            *spec = inner.get(close + 1..).unwrap_or("");
        }
        Ok(())
    };
    let mut verbs = Vec::new();
    let mut index = 0usize;
    let mut pos = 0;
    while let Some(at) = format[pos..].find('%') {
        let start = pos + at;
        let body = &format[start + 1..];
        if body.starts_with('%') {
            pos = start + 2;
            continue;
        }
        let Some(len) = body.find(|c: char| VERBS.contains(c)) else {
            break; // gtmpl reports the unterminated verb itself
        };
        let verb = body[len..].chars().next().unwrap_or('v');
        pos = start + 1 + len + verb.len_utf8();
        let flags_len = body[..len].len()
            - body[..len]
                .trim_start_matches(['#', '0', '+', '-', ' '])
                .len();
        let flags = &body[..flags_len];
        let mut spec = &body[flags_len..len];
        let mut v = PrintfVerb {
            start,
            end: pos,
            verb,
            arg: 0,
            plus: flags.contains('+'),
            minus: flags.contains('-'),
            space: flags.contains(' '),
            width: String::new(),
            precision: None,
            star_precision: false,
        };
        // Width, then precision: digits, or `*` taking the next argument.
        for precision in [false, true] {
            if precision {
                match spec.strip_prefix('.') {
                    Some(after) => spec = after,
                    None => break,
                }
            }
            let what = if precision { "precision" } else { "width" };
            take_index(&mut spec, &mut index)?;
            if let Some(after) = spec.strip_prefix('*') {
                spec = after;
                let arg = args.get(index);
                index = index.saturating_add(1);
                if let Some(n) = arg.and_then(gtmpl::from_value::<i64>) {
                    if n.unsigned_abs() > MAX_PRINTF_WIDTH {
                        return Err(bad(what, &n));
                    }
                }
                if precision {
                    v.star_precision = true;
                } else {
                    v.width = "*".to_string();
                }
            } else {
                let digits =
                    spec.len() - spec.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                if digits > 0 {
                    let n = match spec[..digits].parse::<u64>() {
                        Ok(n) if n <= MAX_PRINTF_WIDTH => n,
                        _ => return Err(bad(what, &&spec[..digits])),
                    };
                    if precision {
                        v.precision = usize::try_from(n).ok();
                    } else {
                        v.width = spec[..digits].to_string();
                    }
                    spec = &spec[digits..];
                } else if precision {
                    v.precision = Some(0);
                }
            }
        }
        take_index(&mut spec, &mut index)?;
        v.arg = index;
        index = index.saturating_add(1);
        verbs.push(v);
    }
    Ok(verbs)
}

fn new_template(name: &str) -> Template {
    let mut t = Template::with_name(name);
    t.add_funcs(&prometheus_funcs());
    t.max_parse_depth = crate::limits::MAX_TEMPLATE_NESTING;
    t
}

/// Parses `text` (with Prometheus's variable definitions prepended) without executing it, as
/// `promtool check rules` does. The error reads like Go's (`template: NAME:1: ...`).
pub fn check(name: &str, text: &str) -> Result<(), String> {
    if let Some(e) = lexer_guard(name, text) {
        return Err(e);
    }
    let mut t = new_template(name);
    t.parse(format!("{DEFS}{text}"))
        .map_err(|e| parse_error_text(name, text, e))?;
    // Go (and promtool) accept such a template and fail only when it runs, at the depth
    // limit: refusing it here says so before it is deployed.
    match t.unconditional_recursion() {
        Some(callee) => Err(format!(
            "template: {name}: template {callee:?} always calls itself again, so expanding it can only fail at the depth limit ({})",
            crate::limits::MAX_TEMPLATE_DEPTH
        )),
        None => Ok(()),
    }
}

/// Errors gtmpl's lexer cannot report itself (it hangs or panics on them), found by fuzzing:
/// see [`unclosed_action`] and [`unrecognized_character`].
fn lexer_guard(name: &str, text: &str) -> Option<String> {
    unclosed_action(name, text).or_else(|| unrecognized_character(name, text))
}

/// An error for a character outside ASCII where gtmpl's lexer would read it and step back:
/// its `backup` moves one byte, not one character, and then panics on a char boundary. Inside
/// an action (not in a string or comment) such a character is only accepted inside a word that
/// starts with an ASCII letter or `_` (`$labels.café`); elsewhere (`{{ ؑ }}`, `$é`, `1é`) it is
/// refused, with the message Go uses for characters it does not accept in actions.
fn unrecognized_character(name: &str, text: &str) -> Option<String> {
    let mut in_action = false;
    let mut quote: Option<char> = None;
    let mut in_comment = false;
    // Inside a run of letters, digits and `_`: whether it started with an ASCII letter or `_`.
    let mut word: Option<bool> = None;
    let mut line = 1;
    let mut action_line = 1;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        if !in_action {
            if text[i..].starts_with("{{") {
                in_action = true;
                action_line = line;
                word = None;
                chars.next();
            }
            continue;
        }
        if in_comment {
            if text[i..].starts_with("*/") {
                in_comment = false;
                chars.next();
            }
            continue;
        }
        if let Some(q) = quote {
            if c == '\\' && q != '`' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            word.get_or_insert(c.is_ascii_alphabetic() || c == '_');
            continue;
        }
        if !c.is_ascii() {
            if word == Some(true) && c.is_alphanumeric() {
                continue;
            }
            return Some(format!(
                "template: {name}:{line}: unrecognized character in action: U+{:04X}",
                c as u32
            ));
        }
        word = None;
        match c {
            '"' | '`' | '\'' => quote = Some(c),
            '/' if text[i..].starts_with("/*") => {
                in_comment = true;
                chars.next();
            }
            '}' if text[i..].starts_with("}}") => {
                in_action = false;
                chars.next();
            }
            _ => {}
        }
    }
    // The text ends inside an action: `}}` only inside a string or comment does not close
    // it (`{{ 'a }}' b`), and gtmpl's lexer spins at the end of such text too.
    if in_action {
        return Some(format!("template: {name}:{action_line}: unclosed action"));
    }
    None
}

/// Go's `unclosed action` error when the text ends inside an action (`{{` with no `}}`
/// after it). Checked before gtmpl sees the text: its lexer never returns on some inputs
/// that end inside an action (`{{ 1.`, `{{ a b.`), found by fuzzing.
fn unclosed_action(name: &str, text: &str) -> Option<String> {
    let open = text.rfind("{{")?;
    if text[open + 2..].contains("}}") {
        return None;
    }
    let line = 1 + text[..open].matches('\n').count();
    Some(format!("template: {name}:{line}: unclosed action"))
}

/// Go's wording for parse errors: `template: NAME:LINE: message`. gtmpl's line counter is
/// unreliable, so a single-line template always reports line 1 as Go does.
fn parse_error_text(name: &str, text: &str, e: gtmpl::error::ParseError) -> String {
    match e {
        gtmpl::error::ParseError::WithContext(ctx, msg) => {
            let lines = 1 + text.matches('\n').count();
            let line = ctx.line.clamp(1, lines);
            format!("template: {name}:{line}: {}", msg.trim_end())
        }
        other => format!("template: {name}: {other}"),
    }
}

fn labels_value(l: &Labels) -> Value {
    Value::Map(
        l.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// A template parsed once (with Prometheus's variable definitions) and expanded many times.
pub struct CompiledTemplate {
    text: String,
    /// `None` when the text has no action and expands to itself.
    parsed: Option<Result<Template, String>>,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CompiledTemplate").field(&self.text).finish()
    }
}

impl CompiledTemplate {
    /// Parses `text` under template name `name` (`__alert_<AlertName>` for alert rules).
    pub fn new(name: &str, text: &str) -> CompiledTemplate {
        let parsed = text.contains("{{").then(|| {
            if let Some(e) = lexer_guard(name, text) {
                return Err(e);
            }
            let mut t = new_template(name);
            t.parse(format!("{DEFS}{}", print_value_like_go(text)))
                .map(|()| t)
                .map_err(|e| parse_error_text(name, text, e))
        });
        CompiledTemplate {
            text: text.to_string(),
            parsed,
        }
    }

    /// The template text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the template calls `query`.
    pub fn uses_query(&self) -> bool {
        self.parsed.is_some() && self.text.contains("query")
    }

    /// Expands the template for `data`; `query` backs the `query` function (`None`: calling
    /// `query` is an error). The output is bounded by the default
    /// [`crate::limits::MAX_TEMPLATE_OUTPUT_BYTES`].
    pub fn render(&self, data: &TemplateData, query: Option<QueryFn>) -> Result<String, String> {
        self.render_with_limit(data, query, crate::limits::MAX_TEMPLATE_OUTPUT_BYTES)
    }

    /// [`CompiledTemplate::render`] with an output limit of `max_bytes`
    /// (`--rules.template.max-output-bytes`): the expansion is written into a bounded
    /// buffer and stops as soon as it passes the limit, with an error naming it (counted in
    /// `lookout_evaluator_limit_hits_total{limit="template_output_size"}`).
    pub fn render_with_limit(
        &self,
        data: &TemplateData,
        query: Option<QueryFn>,
        max_bytes: usize,
    ) -> Result<String, String> {
        let bounds = Bounds {
            max_bytes,
            ..Bounds::default()
        };
        self.render_bounded(data, query, &bounds)
    }

    /// [`CompiledTemplate::render`] within `bounds`: besides the output limit, at most
    /// [`crate::limits::MAX_TEMPLATE_DEPTH`] nested `template` calls and
    /// [`crate::limits::TEMPLATE_STACK_BUDGET`] bytes of stack (`exceeded maximum template
    /// depth`, counted as `template_depth`), and no longer than the deadline or past the
    /// stop flag (counted as `template_timeout`), even when the template writes nothing.
    pub fn render_bounded(
        &self,
        data: &TemplateData,
        query: Option<QueryFn>,
        bounds: &Bounds<'_>,
    ) -> Result<String, String> {
        let max_bytes = bounds.max_bytes;
        let t = match &self.parsed {
            None if self.text.len() > max_bytes => {
                crate::limits::hit("template_output_size");
                return Err(crate::limits::template_output_error(max_bytes));
            }
            None => return Ok(self.text.clone()),
            Some(Err(e)) => return Err(e.clone()),
            Some(Ok(t)) => t,
        };
        let mut obj = HashMap::new();
        obj.insert("Labels".to_string(), labels_value(&data.labels));
        obj.insert(
            "ExternalLabels".to_string(),
            labels_value(&data.external_labels),
        );
        obj.insert(
            "ExternalURL".to_string(),
            Value::String(data.external_url.clone()),
        );
        let value = match &data.histogram {
            Some(h) => Value::String(h.clone()),
            None => Value::from(data.value),
        };
        obj.insert("Value".to_string(), value);
        let ctx = Context::from(Value::Object(obj));
        struct Guard(Option<ExpandContext>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let prev = self.0.take();
                CONTEXT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let prev = CONTEXT.with(|c| {
            c.borrow_mut().replace(ExpandContext {
                external_url: data.external_url.clone(),
                query,
            })
        });
        let _guard = Guard(prev);
        let mut out = crate::limits::CappedWriter::new(max_bytes);
        // gtmpl is third-party code running on query results: a panic in it (a bug like the
        // printf ones `f_printf` guards against) fails this expansion, not the evaluator.
        let limits = gtmpl::Limits {
            max_depth: crate::limits::MAX_TEMPLATE_DEPTH,
            deadline: bounds.deadline,
            stop: bounds.stop,
            max_stack: Some(crate::limits::TEMPLATE_STACK_BUDGET),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.execute_with_limits(&mut out, &ctx, limits)
                .map_err(|e| exec_error_text(e, bounds))
        }))
        .map_err(|_| "template expansion failed: the template engine panicked".to_string())?;
        if out.over() {
            crate::limits::hit("template_output_size");
            return Err(crate::limits::template_output_error(max_bytes));
        }
        result?;
        // Prometheus's label maps are `map[string]string`: a missing label is "", where
        // gtmpl prints Go's `<no value>` of untyped maps.
        String::from_utf8(out.into_inner())
            .map(|s| s.replace("<no value>", ""))
            .map_err(|e| format!("template output is not UTF-8: {e}"))
    }

    /// Expands; on failure returns Prometheus's `<error expanding template: ...>` text and
    /// logs a warning, as Prometheus does.
    pub fn render_or_error(&self, data: &TemplateData, query: Option<QueryFn>) -> String {
        self.render_or_error_with_limit(data, query, crate::limits::MAX_TEMPLATE_OUTPUT_BYTES)
    }

    /// [`CompiledTemplate::render_or_error`] with an output limit of `max_bytes`.
    pub fn render_or_error_with_limit(
        &self,
        data: &TemplateData,
        query: Option<QueryFn>,
        max_bytes: usize,
    ) -> String {
        let bounds = Bounds {
            max_bytes,
            ..Bounds::default()
        };
        self.render_or_error_bounded(data, query, &bounds)
    }

    /// [`CompiledTemplate::render_or_error`] within `bounds`.
    pub fn render_or_error_bounded(
        &self,
        data: &TemplateData,
        query: Option<QueryFn>,
        bounds: &Bounds<'_>,
    ) -> String {
        match self.render_bounded(data, query, bounds) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(err = %e, labels = %data.labels, "Expanding alert template failed");
                format!("<error expanding template: {e}>")
            }
        }
    }
}

/// Bounds on one expansion besides the fixed depth and stack limits.
#[derive(Clone, Copy, Debug)]
pub struct Bounds<'s> {
    /// Longest output (`--rules.template.max-output-bytes`).
    pub max_bytes: usize,
    /// When the expansion must have ended (`--rules.template.timeout` after the rule's
    /// expansions started).
    pub deadline: Option<std::time::Instant>,
    /// The time limit the deadline stands for, for the error.
    pub timeout: std::time::Duration,
    /// Set when the expansion is no longer wanted (the evaluator stops).
    pub stop: Option<&'s std::sync::atomic::AtomicBool>,
}

impl Default for Bounds<'_> {
    fn default() -> Self {
        Bounds {
            max_bytes: crate::limits::MAX_TEMPLATE_OUTPUT_BYTES,
            deadline: None,
            timeout: crate::limits::DEFAULT_TEMPLATE_TIMEOUT,
            stop: None,
        }
    }
}

/// gtmpl's execution error as the expansion's error, counting the limits it stands for.
fn exec_error_text(e: gtmpl::error::ExecError, bounds: &Bounds<'_>) -> String {
    use gtmpl::error::ExecError;
    match e {
        ExecError::MaxTemplateDepth(_) | ExecError::StackBudget(_) => {
            crate::limits::hit("template_depth");
            format!("{e} (a fixed limit)")
        }
        ExecError::DeadlineExceeded => {
            crate::limits::hit("template_timeout");
            crate::limits::template_timeout_error(bounds.timeout)
        }
        ExecError::Stopped => {
            "template expansion stopped: the rule evaluation was cancelled".into()
        }
        other => other.to_string(),
    }
}

/// Expands an alert template once. `query` backs the `query` function (None: `query` fails).
pub fn expand(
    name: &str,
    text: &str,
    data: &TemplateData,
    query: Option<QueryFn>,
) -> Result<String, String> {
    CompiledTemplate::new(name, text).render(data, query)
}

fn err(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::AtLeastXArgs(name.to_string(), i + 1))
}

fn str_arg(args: &[Value], i: usize, name: &str) -> Result<String, FuncError> {
    match arg(args, i, name)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        // A missing label: "" as in Go's map[string]string.
        Value::NoValue | Value::Nil => Ok(String::new()),
        other => Err(err(format!(
            "{name}: expected a string, got {}",
            type_name(other)
        ))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::NoValue | Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Object(_) | Value::Map(_) => "map",
        Value::Array(_) => "slice",
        Value::Function(_) => "func",
        Value::Number(_) => "float64",
    }
}

/// Prometheus's `convertToFloat`: numbers, numeric strings.
fn to_float(v: &Value) -> Result<f64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or_else(|| err("can't convert number to float")),
        Value::String(s) => parse_go_float(s)
            .ok_or_else(|| err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))),
        other => Err(err(format!("can't convert {} to float", type_name(other)))),
    }
}

fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn float_arg(args: &[Value], i: usize, name: &str) -> Result<f64, FuncError> {
    to_float(arg(args, i, name)?)
}

fn sample_value(s: &QuerySample) -> Value {
    let mut m = HashMap::new();
    m.insert("Labels".to_string(), labels_value(&s.labels));
    m.insert("Value".to_string(), Value::from(s.value));
    Value::Object(m)
}

fn f_query(args: &[Value]) -> Result<Value, FuncError> {
    let q = str_arg(args, 0, "query")?;
    let res = CONTEXT.with(|c| {
        let c = c.borrow();
        match c.as_ref().and_then(|c| c.query.clone()) {
            Some(f) => f(&q),
            None => Err("query is not available here".to_string()),
        }
    });
    let samples = res.map_err(err)?;
    Ok(Value::Array(samples.iter().map(sample_value).collect()))
}

fn f_first(args: &[Value]) -> Result<Value, FuncError> {
    match arg(args, 0, "first")? {
        Value::Array(a) => a
            .first()
            .cloned()
            .ok_or_else(|| err("first() called on vector with no elements")),
        Value::NoValue | Value::Nil => Err(err("first() called on vector with no elements")),
        other => Err(err(format!(
            "first: expected a vector, got {}",
            type_name(other)
        ))),
    }
}

fn sample_field<'a>(v: &'a Value, field: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) | Value::Map(m) => m.get(field),
        _ => None,
    }
}

fn f_label(args: &[Value]) -> Result<Value, FuncError> {
    let name = str_arg(args, 0, "label")?;
    let s = arg(args, 1, "label")?;
    Ok(sample_field(s, "Labels")
        .and_then(|l| sample_field(l, &name))
        .cloned()
        .unwrap_or(Value::String(String::new())))
}

fn f_value(args: &[Value]) -> Result<Value, FuncError> {
    let s = arg(args, 0, "value")?;
    sample_field(s, "Value")
        .cloned()
        .ok_or_else(|| err("value: expected a sample"))
}

fn f_strvalue(args: &[Value]) -> Result<Value, FuncError> {
    let s = arg(args, 0, "strvalue")?;
    Ok(sample_field(s, "Labels")
        .and_then(|l| sample_field(l, "__value__"))
        .cloned()
        .unwrap_or(Value::String(String::new())))
}

fn f_args(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Map(
        args.iter()
            .enumerate()
            .map(|(i, v)| (format!("arg{i}"), v.clone()))
            .collect(),
    ))
}

fn f_identity(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(str_arg(args, 0, "safeHtml")?))
}

fn compile(pattern: &str) -> Result<regex::Regex, FuncError> {
    lookout_promql::re2::compile(pattern).map_err(|e| err(format!("error parsing regexp: {e}")))
}

fn f_re_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    let re = compile(&str_arg(args, 0, "reReplaceAll")?)?;
    let repl = str_arg(args, 1, "reReplaceAll")?;
    let text = str_arg(args, 2, "reReplaceAll")?;
    Ok(Value::String(
        re.replace_all(&text, repl.as_str()).into_owned(),
    ))
}

fn f_match(args: &[Value]) -> Result<Value, FuncError> {
    let re = compile(&str_arg(args, 0, "match")?)?;
    Ok(Value::Bool(re.is_match(&str_arg(args, 1, "match")?)))
}

/// Go's deprecated `strings.Title`: upper-cases the first letter of every word.
pub fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

fn f_title(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(go_title(&str_arg(args, 0, "title")?)))
}

fn f_to_upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(str_arg(args, 0, "toUpper")?.to_uppercase()))
}

fn f_to_lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(str_arg(args, 0, "toLower")?.to_lowercase()))
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `urlquery`: its arguments as `fmt.Sprint` prints them, through `url.QueryEscape`
/// (`+` for a space, `%2F` for a slash); gtmpl's own escapes a space as `%20` and keeps `/`.
fn f_urlquery(args: &[Value]) -> Result<Value, FuncError> {
    let mut text = String::new();
    let mut prev_string = true;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::String(_));
        // Sprint puts a space between operands when neither is a string.
        if i > 0 && !is_string && !prev_string {
            text.push(' ');
        }
        match a {
            Value::String(s) => text.push_str(s),
            Value::Number(_) => text.push_str(&go_fmt_v(to_float(a)?)),
            Value::Bool(b) => text.push_str(&b.to_string()),
            Value::NoValue | Value::Nil => text.push_str("<nil>"),
            other => {
                return Err(err(format!(
                    "urlquery: cannot print a {}",
                    type_name(other)
                )));
            }
        }
        prev_string = is_string;
    }
    Ok(Value::String(query_escape(&text)))
}

/// Prometheus's `strutil.TableLinkForExpression`.
pub fn table_link(expr: &str) -> String {
    format!("/graph?g0.expr={}&g0.tab=1", query_escape(expr))
}

/// Prometheus's `strutil.GraphLinkForExpression`.
pub fn graph_link(expr: &str) -> String {
    format!("/graph?g0.expr={}&g0.tab=0", query_escape(expr))
}

fn f_graph_link(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(graph_link(&str_arg(args, 0, "graphLink")?)))
}

fn f_table_link(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(table_link(&str_arg(args, 0, "tableLink")?)))
}

fn f_sort_by_label(args: &[Value]) -> Result<Value, FuncError> {
    let name = str_arg(args, 0, "sortByLabel")?;
    let mut v = match arg(args, 1, "sortByLabel")? {
        Value::Array(a) => a.clone(),
        other => {
            return Err(err(format!(
                "sortByLabel: expected a vector, got {}",
                type_name(other)
            )));
        }
    };
    let key = |s: &Value| -> String {
        sample_field(s, "Labels")
            .and_then(|l| sample_field(l, &name))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    v.sort_by_key(key);
    Ok(Value::Array(v))
}

/// Go's `net.SplitHostPort` host part, or the input when it has no port.
pub fn strip_port(host_port: &str) -> String {
    split_host_port(host_port)
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| host_port.to_string())
}

fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &rest[..end];
        let port = rest[end + 1..].strip_prefix(':')?;
        if port.contains(':') {
            return None;
        }
        return Some((host, port));
    }
    let i = s.rfind(':')?;
    let (host, port) = (&s[..i], &s[i + 1..]);
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Prometheus's `stripDomain`: keeps the first label of a host name (and the port); IP
/// addresses are returned as they are.
pub fn strip_domain(host_port: &str) -> String {
    let (host, port) = match split_host_port(host_port) {
        Some((h, p)) => (h, Some(p)),
        None => (host_port, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host_port.to_string();
    }
    let first = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) => {
            if first.contains(':') {
                format!("[{first}]:{p}")
            } else {
                format!("{first}:{p}")
            }
        }
        None => first.to_string(),
    }
}

fn f_strip_port(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(strip_port(&str_arg(args, 0, "stripPort")?)))
}

fn f_strip_domain(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(strip_domain(&str_arg(
        args,
        0,
        "stripDomain",
    )?)))
}

/// Rewrites actions that only print the alert value (`{{ $value }}`, `{{ .Value }}`) to
/// print it the way Go's `%v` does (`1.5e+09`), which gtmpl's own number printing does not.
fn print_value_like_go(text: &str) -> std::borrow::Cow<'_, str> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"\{\{(-?)(\s*)(\$value|\.Value)(\s*)(-?)\}\}").expect("constant pattern")
    });
    re.replace_all(text, "{{${1}${2}lookoutGoValue ${3}${4}${5}}}")
}

fn f_go_value(args: &[Value]) -> Result<Value, FuncError> {
    // A histogram sample's `$value` is already its text.
    if let Some(Value::String(s)) = args.first() {
        return Ok(Value::String(s.clone()));
    }
    Ok(Value::String(go_fmt_v(float_arg(
        args,
        0,
        "lookoutGoValue",
    )?)))
}

/// Prometheus's `humanize`.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, 4);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_fmt_g(v, 4))
}

/// Prometheus's `humanize1024`.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, 4);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_fmt_g(v, 4))
}

/// Prometheus's `humanizeDuration` (seconds in).
pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_fmt_g(v, 4);
    }
    if v == 0.0 {
        return format!("{}s", go_fmt_g(v, 4));
    }
    if v.abs() >= 1.0 {
        let mut sign = "";
        if v < 0.0 {
            sign = "-";
            v = -v;
        }
        let d = v as i64;
        let seconds = d % 60;
        let minutes = (d / 60) % 60;
        let hours = (d / 3600) % 24;
        let days = d / 86400;
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", go_fmt_g(v, 4));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_fmt_g(v, 4))
}

/// Go's `time.Time.String()` of a UTC time given in seconds since the epoch.
pub fn go_time_string(v: f64) -> Option<String> {
    if v.is_nan() || v.is_infinite() {
        return None;
    }
    // Prometheus goes through model.Time: nanoseconds truncated to milliseconds.
    let nanos_total = v * 1e9;
    if nanos_total > i64::MAX as f64 || nanos_total < i64::MIN as f64 {
        return None;
    }
    let ms = (nanos_total as i64) / 1_000_000;
    let secs = ms.div_euclid(1000);
    let nanos = (ms.rem_euclid(1000) * 1_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(secs, nanos)?;
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    Some(s)
}

fn f_humanize(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(humanize(float_arg(args, 0, "humanize")?)))
}

fn f_humanize1024(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(humanize1024(float_arg(
        args,
        0,
        "humanize1024",
    )?)))
}

fn f_humanize_duration(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(humanize_duration(float_arg(
        args,
        0,
        "humanizeDuration",
    )?)))
}

fn f_humanize_percentage(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg(args, 0, "humanizePercentage")?;
    Ok(Value::String(format!("{}%", go_fmt_g(v * 100.0, 4))))
}

fn f_humanize_timestamp(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg(args, 0, "humanizeTimestamp")?;
    Ok(Value::String(
        go_time_string(v).unwrap_or_else(|| go_fmt_g(v, 4)),
    ))
}

fn f_to_time(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg(args, 0, "toTime")?;
    go_time_string(v)
        .map(Value::String)
        .ok_or_else(|| err("value is NaN or Inf"))
}

fn f_to_duration(args: &[Value]) -> Result<Value, FuncError> {
    let v = float_arg(args, 0, "toDuration")?;
    if v.is_nan() || v.is_infinite() {
        return Err(err("value is NaN or Inf"));
    }
    Ok(Value::String(humanize_duration(v)))
}

fn f_parse_duration(args: &[Value]) -> Result<Value, FuncError> {
    let s = str_arg(args, 0, "parseDuration")?;
    let d = lookout_promql::duration::parse_duration(&s).map_err(|e| err(e.to_string()))?;
    Ok(Value::from(d.as_secs_f64()))
}

fn external_url() -> String {
    CONTEXT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|c| c.external_url.clone())
            .unwrap_or_default()
    })
}

fn f_path_prefix(_args: &[Value]) -> Result<Value, FuncError> {
    let u = external_url();
    let path = match u.find("://") {
        Some(i) => u[i + 3..].find('/').map(|j| u[i + 3 + j..].to_string()),
        None => Some(u),
    }
    .unwrap_or_default();
    Ok(Value::String(path))
}

fn f_external_url(_args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(external_url()))
}

/// Expands one template; on failure returns Prometheus's error text and logs a warning.
pub fn expand_or_error(
    name: &str,
    text: &str,
    data: &TemplateData,
    query: Option<QueryFn>,
) -> String {
    CompiledTemplate::new(name, text).render_or_error(data, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_symbols_in_actions_are_errors_not_panics() {
        // Found by the rule_file fuzz target: gtmpl's lexer panicked on a char boundary.
        for text in [
            "{{ $labels.\u{611}bl }}",
            "{{ .\u{611} }}",
            "{{ $\u{611} }}",
            "{{ 1\u{611} }}",
            "{{\u{a0}}}",
        ] {
            let e = check("n", text).expect_err("unrecognized");
            assert!(e.contains("unrecognized character in action: U+"), "{e}");
            assert!(
                CompiledTemplate::new("n", text)
                    .parsed
                    .is_some_and(|p| p.is_err())
            );
        }
        assert_eq!(
            check("n", "ok\n{{ \u{611} }}").unwrap_err(),
            "template: n:2: unrecognized character in action: U+0611"
        );
        for text in [
            "\u{611} {{ $labels.a }} \u{611}",
            "{{ \"\u{611}\" }}",
            "{{ `\u{611}` }}",
            "{{/* \u{611} */}}",
            "{{ $labels.aé }}",
            "{{ \"a\\\"\u{611}\" }}",
        ] {
            assert!(check("n", text).is_ok(), "{text}");
        }
    }

    #[test]
    fn text_ending_inside_an_action_is_an_error_not_a_hang() {
        // Found by the rule_file fuzz target: gtmpl's lexer spun forever on these.
        for text in [
            "Probing {{ 1.",
            "{{ a b.",
            "x\n{{ $labels.a 1.",
            "{{ $labels.j + s 'ob }}) he 500ms threshold, 'or more than 5 mi",
            "{{ \"}}\" x",
            "{{/* }} */ x",
        ] {
            let e = check("__alert_A", text).expect_err("unclosed");
            assert!(e.ends_with("unclosed action"), "{e}");
            assert!(
                CompiledTemplate::new("__alert_A", text)
                    .parsed
                    .is_some_and(|p| p.is_err())
            );
        }
        assert_eq!(
            check("n", "x\n{{ $labels.a 1.").unwrap_err(),
            "template: n:2: unclosed action"
        );
        assert!(check("n", "{{ 1. }} and {{ $labels.a }}").is_ok());
    }

    fn data() -> TemplateData {
        TemplateData {
            labels: Labels::new([("instance", "web-1.example.com:9100"), ("job", "node")]),
            external_labels: Labels::new([("region", "eu")]),
            external_url: "http://lookout.example:9093/prefix".to_string(),
            value: 0.25,
            histogram: None,
        }
    }

    fn x(text: &str) -> String {
        expand("__alert_T", text, &data(), None).unwrap()
    }

    #[test]
    fn go_g_formatting() {
        assert_eq!(go_fmt_g(1234.567, 4), "1235");
        assert_eq!(go_fmt_g(12345.0, 4), "1.234e+04");
        assert_eq!(go_fmt_g(1.5, 4), "1.5");
        assert_eq!(go_fmt_g(0.0001234, 4), "0.0001234");
        assert_eq!(go_fmt_g(0.00001234, 4), "1.234e-05");
        assert_eq!(go_fmt_g(100.0, 4), "100");
        assert_eq!(go_fmt_g(-2.0, 4), "-2");
        assert_eq!(go_fmt_v(1e6), "1e+06");
        assert_eq!(go_fmt_v(123456.0), "123456");
        assert_eq!(go_fmt_v(1234567.0), "1.234567e+06");
        assert_eq!(go_fmt_v(0.0001), "0.0001");
        assert_eq!(go_fmt_v(0.00001), "1e-05");
        assert_eq!(go_fmt_v(0.25), "0.25");
    }

    #[test]
    fn humanize_like_prometheus() {
        // Expected strings from Prometheus's template_test.go.
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1234567.0), "1.235M");
        assert_eq!(humanize(12.0), "12");
        assert_eq!(humanize(0.1), "100m");
        assert_eq!(humanize(0.0001), "100u");
        assert_eq!(humanize(1e12), "1T");
        assert_eq!(humanize(f64::INFINITY), "+Inf");
        assert_eq!(humanize1024(1024.0), "1ki");
        assert_eq!(humanize1024(1048576.0), "1Mi");
        assert_eq!(humanize1024(0.5), "0.5");
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(1.0), "1s");
        assert_eq!(humanize_duration(60.0), "1m 0s");
        assert_eq!(humanize_duration(3600.0), "1h 0m 0s");
        assert_eq!(humanize_duration(86400.0), "1d 0h 0m 0s");
        assert_eq!(humanize_duration(86400.0 + 3661.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(0.1), "100ms");
        assert_eq!(humanize_duration(0.0001), "100us");
        assert_eq!(humanize_duration(-65.0), "-1m 5s");
        assert_eq!(humanize_duration(1.2345), "1.234s");
        assert_eq!(
            go_time_string(1435065584.128).as_deref(),
            Some("2015-06-23 13:19:44.128 +0000 UTC")
        );
        assert_eq!(
            go_time_string(0.0).as_deref(),
            Some("1970-01-01 00:00:00 +0000 UTC")
        );
    }

    #[test]
    fn variables_and_functions() {
        assert_eq!(
            x("{{ $labels.instance }} {{ .Labels.job }}"),
            "web-1.example.com:9100 node"
        );
        assert_eq!(x("{{ $value | humanizePercentage }}"), "25%");
        assert_eq!(
            x("{{ $externalLabels.region }} {{ $externalURL }}"),
            "eu http://lookout.example:9093/prefix"
        );
        assert_eq!(x("{{ $labels.instance | stripPort }}"), "web-1.example.com");
        assert_eq!(x("{{ $labels.instance | stripDomain }}"), "web-1:9100");
        assert_eq!(
            x("{{ \"aa bb\" | title }} {{ \"Ab\" | toUpper }} {{ \"Ab\" | toLower }}"),
            "Aa Bb AB ab"
        );
        assert_eq!(x("{{ reReplaceAll \"(a)b\" \"x$1\" \"abab\" }}"), "xaxa");
        assert_eq!(
            x("{{ if match \"^web\" $labels.instance }}yes{{ end }}"),
            "yes"
        );
        assert_eq!(x("{{ printf \"%.2f\" $value }}"), "0.25");
        assert_eq!(x("{{ pathPrefix }}"), "/prefix");
        assert_eq!(x("{{$value}} {{- .Value -}} !"), "0.250.25!");
        assert_eq!(x("{{ $labels.missing }}"), "");
        assert_eq!(x("{{ $labels.missing | toUpper }}"), "");
        assert_eq!(x("{{ with args 1 \"b\" }}{{ .arg1 }}{{ end }}"), "b");
        assert_eq!(x("{{ 1234567 | humanize }}"), "1.235M");
        assert_eq!(strip_domain("10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(table_link("up == 0"), "/graph?g0.expr=up+%3D%3D+0&g0.tab=1");
    }

    #[test]
    fn query_function_goes_through_the_callback() {
        let q: QueryFn = std::sync::Arc::new(|e: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(e, "up");
            Ok(vec![
                QuerySample {
                    labels: Labels::new([("instance", "b")]),
                    value: 2.0,
                    histogram: None,
                },
                QuerySample {
                    labels: Labels::new([("instance", "a")]),
                    value: 1.0,
                    histogram: None,
                },
            ])
        });
        let out = expand(
            "t",
            "{{ range query \"up\" | sortByLabel \"instance\" }}{{ .Labels.instance }}={{ .Value }} {{ end }}{{ query \"up\" | first | value }} {{ with query \"up\" }}{{ . | first | label \"instance\" }}{{ end }}",
            &data(),
            Some(q),
        )
        .unwrap();
        assert_eq!(out, "a=1 b=2 2 b");
    }

    #[test]
    fn printf_refuses_widths_the_formatter_cannot_take() {
        let x = |text: &str| CompiledTemplate::new("t", text).render(&data(), None);
        assert_eq!(
            x("{{ printf \"%5d|%-4s|%.2f\" 42 \"ab\" 1.5 }}").unwrap(),
            "   42|ab  |1.50"
        );
        assert_eq!(x("{{ printf \"%*d\" 3 7 }}").unwrap(), "  7");
        // `%%` is one `%`, as in Go.
        assert_eq!(
            x("{{ printf \"%.1f%% of %d%%\" 95.4 100 }}").unwrap(),
            "95.4% of 100%"
        );
        assert_eq!(x("{{ printf \"100%%\" }}").unwrap(), "100%");
        // Sample values print as Go prints a float64: whole, negative and fractional
        // values, %v and %g (which gtmpl cannot do for floats), %f on whole numbers.
        let with_value = |text: &str, value: f64| {
            let mut d = data();
            d.value = value;
            CompiledTemplate::new("t", text).render(&d, None).unwrap()
        };
        assert_eq!(with_value("{{ printf \"%.2f\" $value }}", 95.0), "95.00");
        assert_eq!(with_value("{{ printf \"%.0f%%\" $value }}", 95.4), "95%");
        assert_eq!(
            with_value("{{ $value }} {{ humanize $value }}", -0.5),
            "-0.5 -500m"
        );
        for (value, want) in [(-0.5, "-0.5"), (95.0, "95"), (1.5e9, "1.5e+09")] {
            assert_eq!(with_value("{{ printf \"%v\" $value }}", value), want);
        }
        assert_eq!(
            with_value(
                "{{ printf \"%.3g|%+v|%v %s\" $value $value $value \"x\" }}",
                1.23456
            ),
            "1.23|+1.23456|1.23456 x"
        );
        assert_eq!(
            with_value("{{ printf \"%6v|%-6v|%G\" $value $value $value }}", 1.5e-7),
            "1.5e-07|1.5e-07|1.5E-07"
        );
        assert_eq!(
            with_value("{{ printf \"%6v|%-6v|\" $value $value }}", 1.5),
            "   1.5|1.5   |"
        );
        assert_eq!(
            with_value("{{ if lt $value -0.1 }}negative{{ end }}", -0.5),
            "negative"
        );
        // A sample value compares with whole literals, which gtmpl reads as integers.
        assert_eq!(
            with_value(
                "{{ if gt $value 90.0 }}a{{ end }}{{ if lt $value 100 }}b{{ end }}{{ if eq $value 95.0 }}c{{ end }}",
                95.0
            ),
            "abc"
        );
        for bad in [
            "{{ printf \"%999999999999d\" 1 }}",
            "{{ printf \"%.2000000f\" 1.5 }}",
            "{{ printf \"%*d\" 99999999999 1 }}",
            "{{ printf \"%.*f\" -9223372036854775808 1.5 }}",
            "{{ printf \"%[0]d\" 1 }}",
        ] {
            let e = x(bad).unwrap_err();
            assert!(e.contains("out of range"), "{bad}: {e}");
        }
        // At the bound it still works, one past it is refused.
        assert_eq!(x("{{ printf \"%65535d\" 1 }}").unwrap().len(), 65_535);
        assert!(x("{{ printf \"%65536d\" 1 }}").is_err());
        assert!(x("{{ printf \"%.*f\" 65536 1.5 }}").is_err());
    }

    #[test]
    fn expansion_stops_as_soon_as_the_output_passes_the_limit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // `query "big"` returns 1000 samples; every iteration calls `query "tick"` (counted)
        // and writes 100 bytes, so a 1000-byte limit must stop after about 10 iterations
        // instead of building 100 kB first.
        let ticks = std::sync::Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let q: QueryFn = std::sync::Arc::new(move |e: &str| -> Result<Vec<QuerySample>, String> {
            if e == "tick" {
                t.fetch_add(1, Ordering::Relaxed);
                return Ok(Vec::new());
            }
            Ok((0..1000)
                .map(|i| QuerySample {
                    labels: Labels::new([("i", i.to_string().as_str())]),
                    value: f64::from(i),
                    histogram: None,
                })
                .collect())
        });
        let text = format!(
            "{{{{ range query \"big\" }}}}{{{{ with query \"tick\" }}}}{{{{ end }}}}{}{{{{ end }}}}",
            "x".repeat(100)
        );
        let tmpl = CompiledTemplate::new("__alert_Big", &text);
        let before = crate::limits::hits("template_output_size");
        let out = tmpl.render_or_error_with_limit(&data(), Some(q.clone()), 1000);
        assert_eq!(
            out,
            "<error expanding template: template output is larger than the 1000-byte template output limit (--rules.template.max-output-bytes); expansion stopped>"
        );
        assert!(ticks.load(Ordering::Relaxed) <= 11, "{ticks:?}");
        assert_eq!(crate::limits::hits("template_output_size"), before + 1);
        // Exactly at the limit is fine; the default limit takes the whole expansion.
        let small = CompiledTemplate::new("t", &"y".repeat(50));
        assert_eq!(
            small.render_with_limit(&data(), None, 50).unwrap().len(),
            50
        );
        assert!(small.render_with_limit(&data(), None, 49).is_err());
        let exact = CompiledTemplate::new("t", "{{ range query \"big\" }}ab{{ end }}");
        assert_eq!(
            exact
                .render_with_limit(&data(), Some(q.clone()), 2000)
                .unwrap()
                .len(),
            2000
        );
        assert!(exact.render_with_limit(&data(), Some(q), 1999).is_err());
        // A missing label prints "" and does not count.
        let missing = CompiledTemplate::new("t", "{{ $labels.nope }}{{ $labels.nope }}z");
        assert_eq!(missing.render_with_limit(&data(), None, 1).unwrap(), "z");
    }

    #[test]
    fn errors_read_like_go() {
        assert!(check("__alert_X", "{{ $labels.x").is_err());
        assert_eq!(
            check("__alert_A", "{{ nosuch }}").unwrap_err(),
            "template: __alert_A:1: function nosuch not defined"
        );
        assert!(check("__alert_X", "{{ nosuch }}").is_err());
        assert!(check("__alert_X", "{{ humanize $value }}").is_ok());
        let out = expand_or_error("t", "{{ query \"up\" | first }}", &data(), None);
        assert!(out.starts_with("<error expanding template: "), "{out}");
    }
}

#[cfg(test)]
mod execution_limits {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    fn exponential(levels: usize) -> String {
        let mut text = String::new();
        for i in 0..levels {
            let n = i + 1;
            text.push_str(&format!(
                "{{{{define \"a{i}\"}}}}{{{{template \"a{n}\" .}}}}{{{{template \"a{n}\" .}}}}{{{{end}}}}"
            ));
        }
        text + &format!("{{{{define \"a{levels}\"}}}}{{{{end}}}}{{{{template \"a0\" .}}}}")
    }

    #[test]
    fn recursion_stops_at_the_depth_limit_on_a_small_stack() {
        // A spawn_blocking thread's stack (2 MiB), in whatever build runs the tests.
        let text = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let t = CompiledTemplate::new(
                    "t",
                    r#"{{define "x"}}{{if .}}{{with .}}{{template "x" .}}{{end}}{{end}}{{end}}{{template "x" 1}}"#,
                );
                t.render(&TemplateData::default(), None)
            })
            .expect("thread")
            .join()
            .expect("no stack overflow");
        let e = text.unwrap_err();
        assert!(e.contains("exceeded maximum template depth"), "{e}");
        // Calls that end within the limit still work.
        let t = CompiledTemplate::new("t", r#"{{define "y"}}y{{end}}{{template "y"}}"#);
        assert_eq!(t.render(&TemplateData::default(), None).unwrap(), "y");
    }

    #[test]
    fn an_expansion_that_writes_nothing_stops_at_the_deadline_and_the_stop_flag() {
        let t = CompiledTemplate::new("t", &exponential(40));
        let bounds = Bounds {
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            timeout: Duration::from_millis(200),
            ..Bounds::default()
        };
        let began = Instant::now();
        let e = t
            .render_bounded(&TemplateData::default(), None, &bounds)
            .unwrap_err();
        assert!(e.contains("--rules.template.timeout"), "{e}");
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        let stop = AtomicBool::new(true);
        let bounds = Bounds {
            stop: Some(&stop),
            ..Bounds::default()
        };
        let e = t
            .render_bounded(&TemplateData::default(), None, &bounds)
            .unwrap_err();
        assert!(e.contains("stopped"), "{e}");
    }

    #[test]
    fn check_refuses_templates_that_always_call_themselves() {
        for text in [
            r#"{{define "x"}}{{template "x" .}}{{end}}{{template "x" .}}"#,
            r#"{{define "a"}}{{template "b"}}{{end}}{{define "b"}}x{{template "a"}}{{end}}{{template "a"}}"#,
        ] {
            let e = check("t", text).unwrap_err();
            assert!(e.contains("always calls itself"), "{text}: {e}");
        }
        for text in [
            r#"{{define "x"}}{{if .}}{{template "x" .}}{{end}}{{end}}{{template "x" 1}}"#,
            r#"{{define "x"}}{{template "x" .}}{{end}}no call"#,
            &exponential(5),
        ] {
            assert!(check("t", text).is_ok(), "{text}");
        }
    }
}

#[cfg(test)]
mod nesting_limit {
    use super::*;
    use std::time::{Duration, Instant};

    fn nested_ifs(levels: usize) -> String {
        "{{if 1}}".repeat(levels) + "x" + &"{{end}}".repeat(levels)
    }

    fn nested_parens(levels: usize) -> String {
        format!("{{{{{}1{}}}}}", "(".repeat(levels), ")".repeat(levels))
    }

    /// On a 2 MiB thread (a runtime worker's), in whatever build runs the tests.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no stack overflow")
    }

    #[test]
    fn nesting_up_to_the_limit_parses_and_expands_on_a_small_stack() {
        let limit = crate::limits::MAX_TEMPLATE_NESTING;
        let out = on_small_stack(move || {
            let ifs = CompiledTemplate::new("t", &nested_ifs(limit));
            let parens = CompiledTemplate::new("t", &nested_parens(limit));
            (
                ifs.render(&TemplateData::default(), None),
                parens.render(&TemplateData::default(), None),
            )
        });
        assert_eq!(out.0.as_deref(), Ok("x"));
        assert_eq!(out.1.as_deref(), Ok("1"));
    }

    #[test]
    fn deeper_text_is_refused_in_linear_time_naming_the_limit() {
        let chain = "{{if 0}}".to_string() + &"{{else if 0}}".repeat(100_000) + "{{end}}";
        let texts = [
            nested_ifs(crate::limits::MAX_TEMPLATE_NESTING + 1),
            nested_ifs(100_000),
            "{{with 1}}{{range .}}".repeat(50_000),
            nested_parens(100_000),
            chain,
            "{{block \"b\" 1}}".repeat(100_000),
        ];
        for text in texts {
            let began = Instant::now();
            let (checked, compiled) = on_small_stack(move || {
                let checked = check("__alert_Deep", &text);
                let compiled = CompiledTemplate::new("__alert_Deep", &text)
                    .render(&TemplateData::default(), None);
                (checked, compiled)
            });
            for e in [checked.unwrap_err(), compiled.unwrap_err()] {
                assert!(
                    e.starts_with(
                        "template: __alert_Deep:1: template nesting deeper than 50 levels"
                    ),
                    "{e}"
                );
            }
            // A guard against quadratic work (100,000 levels would take minutes), not a
            // speed measure: each text takes about 0.1 s, and a loaded CI machine may be
            // many times slower.
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "{:?}",
                began.elapsed()
            );
        }
    }
}
