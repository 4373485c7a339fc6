//! Parsing of Prometheus's test-script language (`load`, `clear`, `eval …`, `expect …`).

use crate::labels::{Labels, METRIC_NAME};
use crate::storage::STALE_NAN;

/// A parse error in a script, with its 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ScriptError {
    ScriptError {
        line,
        message: message.into(),
    }
}

/// One value of a series description.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqValue {
    /// No sample at this step (`_`).
    Omitted,
    /// A float (stale markers are [`STALE_NAN`]).
    Float(f64),
    /// A native histogram (`{{…}}`).
    Histogram(Box<crate::histogram::notation::Parsed>),
}

/// A series line of a `load` block.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSeries {
    /// The series' labels.
    pub labels: Labels,
    /// Its values, one per step from time 0.
    pub values: Vec<SeqValue>,
    /// Start-timestamp offsets from each sample's time in ms (`None`: no start time),
    /// from the `metric@st` line before it or the block's standalone `@st` line (cycled);
    /// empty when there is neither.
    pub st_offsets: Vec<Option<i64>>,
}

/// A `load` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// 1-based line of the `load` command.
    pub line: usize,
    /// Interval between values in ms.
    pub step_ms: i64,
    /// `load_with_nhcb`: classic histograms also become native custom-bucket histograms.
    pub with_nhcb: bool,
    /// The series lines.
    pub series: Vec<LoadSeries>,
    /// Series that had start-timestamp (`@st`) lines.
    pub with_start_timestamps: Vec<Labels>,
}

/// Parses a start-timestamp offset sequence (the part after `metric@st`): `_`, `_xN`
/// (N omitted), `<dur>`, `<dur>xN` (N+1 equal), `<dur>+<dur>xN` / `<dur>-<dur>xN` (N+1
/// stepping), `*` / `*xN` (repeat the last offset), durations with an optional sign.
pub fn parse_st_offsets(s: &str, line: usize) -> Result<Vec<Option<i64>>, ScriptError> {
    let mut out: Vec<Option<i64>> = Vec::new();
    for item in s.split_whitespace() {
        let bad = |why: &str| err(line, format!("invalid ST item {item:?}: {why}"));
        let count = |n: &str| -> Result<usize, ScriptError> {
            match n.parse::<usize>() {
                Ok(n) if n < MAX_SERIES_VALUES => Ok(n),
                Ok(_) => Err(too_many_values(line)),
                Err(_) => Err(bad("invalid repeat count")),
            }
        };
        if out.len() > MAX_SERIES_VALUES {
            return Err(too_many_values(line));
        }
        if item == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = item.strip_prefix("_x") {
            let n = count(n)?;
            if n == 0 {
                return Err(bad("invalid repeat count"));
            }
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        let last = out.iter().rev().find_map(|o| *o).unwrap_or(0);
        if item == "*" {
            out.push(Some(last));
            continue;
        }
        if let Some(n) = item.strip_prefix("*x") {
            out.extend(std::iter::repeat_n(Some(last), count(n)? + 1));
            continue;
        }
        let (base, rest) = st_duration_prefix(item).ok_or_else(|| bad("invalid duration"))?;
        if rest.is_empty() {
            out.push(Some(base));
        } else if let Some(n) = rest.strip_prefix('x') {
            out.extend(std::iter::repeat_n(Some(base), count(n)? + 1));
        } else if rest.starts_with(['+', '-']) {
            let (delta, rest) = st_duration_prefix(rest).ok_or_else(|| bad("invalid step"))?;
            let n = rest
                .strip_prefix('x')
                .ok_or_else(|| bad("expected 'x<count>' after the step"))?;
            let mut off = base;
            for _ in 0..=count(n)? {
                out.push(Some(off));
                off = off
                    .checked_add(delta)
                    .ok_or_else(|| bad("offset out of range"))?;
            }
        } else {
            return Err(bad("unexpected character after the duration"));
        }
    }
    Ok(out)
}

/// A signed duration of one unit (`-1m`, `+30s`, `59999ms`) at the start of `s`, in ms,
/// and the rest (an `x` ends the unit).
fn st_duration_prefix(s: &str) -> Option<(i64, &str)> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let unit = body[digits..]
        .bytes()
        .take_while(|b| b.is_ascii_alphabetic() && *b != b'x')
        .count();
    let ms = parse_duration_ms(&body[..digits + unit]).ok()?;
    Some((if neg { -ms } else { ms }, &body[digits + unit..]))
}

/// What an `expect` line asks about annotations or failures.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Any message.
    Any,
    /// Exactly this message.
    Message(String),
    /// A message matching this regular expression.
    Regex(String),
}

/// An `eval` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    /// 1-based line of the `eval` command.
    pub line: usize,
    /// The query.
    pub expr: String,
    /// Instant (`Some(t)`) or range query.
    pub instant_at: Option<i64>,
    /// Range start, end and step in ms (range queries, or `expect range vector`).
    pub range: Option<(i64, i64, i64)>,
    /// The instant query is expected to return a range vector.
    pub expect_range_vector: bool,
    /// Expected string result.
    pub expect_string: Option<String>,
    /// `eval_fail` or `expect fail`.
    pub fail: Option<Matcher>,
    /// Whether result order matters.
    pub ordered: bool,
    /// `expect warn` lines.
    pub warn: Vec<Matcher>,
    /// `expect info` lines.
    pub info: Vec<Matcher>,
    /// `expect no_warn`.
    pub no_warn: bool,
    /// `expect no_info`.
    pub no_info: bool,
    /// Expected scalar.
    pub expect_scalar: Option<f64>,
    /// Expected series (labels, values), in the order written.
    pub expected: Vec<(Labels, Vec<SeqValue>)>,
    /// An expected value is a native histogram.
    pub expects_histogram: bool,
}

/// A script command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Load series.
    Load(Load),
    /// Wipe the storage.
    Clear,
    /// Evaluate and compare.
    Eval(Box<Eval>),
}

use crate::duration::parse_duration_ms;

/// Parses a Go-syntax number (`1`, `-2.5e3`, `0x1F`, `Inf`, `NaN`).
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let lower = body.to_ascii_lowercase();
    let v = if let Some(hex) = lower.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()? as f64
    } else if lower == "inf" || lower == "infinity" {
        f64::INFINITY
    } else if lower == "nan" {
        f64::NAN
    } else {
        if !body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
        {
            return None;
        }
        body.replace('_', "").parse::<f64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Unquotes a Go string literal (`"…"`, `'…'` or `` `…` ``).
pub fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() < 2 {
        return None;
    }
    let q = s.chars().next()?;
    if !s.ends_with(q) || !matches!(q, '"' | '\'' | '`') {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    if q == '`' {
        return Some(inner.to_string());
    }
    let mut out = String::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut chars = inner.chars();
    let flush = |bytes: &mut Vec<u8>, out: &mut String| {
        if !bytes.is_empty() {
            out.push_str(&String::from_utf8_lossy(bytes));
            bytes.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut bytes, &mut out);
            out.push(c);
            continue;
        }
        let e = chars.next()?;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'x' => {
                let h: String = chars.by_ref().take(2).collect();
                bytes.push(u8::from_str_radix(&h, 16).ok()?);
                continue;
            }
            'u' => {
                let h: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
        flush(&mut bytes, &mut out);
    }
    flush(&mut bytes, &mut out);
    Some(out)
}

/// Splits a series description into its labels and the rest of the line.
fn parse_metric(s: &str, line: usize) -> Result<(Labels, &str), ScriptError> {
    let s = s.trim_start();
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    let name = &s[..name_end];
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !name.is_empty() {
        pairs.push((METRIC_NAME.to_string(), name.to_string()));
    }
    let mut rest = &s[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let b = body.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b',' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() {
                return Err(err(line, "unterminated label set"));
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            // Label name: identifier or quoted string.
            let (lname, ni) = if b[i] == b'"' {
                let end =
                    find_quote_end(body, i).ok_or_else(|| err(line, "bad quoted label name"))?;
                (
                    unquote(&body[i..=end]).ok_or_else(|| err(line, "bad quoted label name"))?,
                    end + 1,
                )
            } else {
                let st = i;
                if b[i].is_ascii_digit() || !(b[i].is_ascii_alphabetic() || b[i] == b'_') {
                    return Err(err(
                        line,
                        format!("unexpected character inside braces: '{}'", b[i] as char),
                    ));
                }
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                (body[st..i].to_string(), i)
            };
            i = ni;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                let end = find_quote_end(body, i).ok_or_else(|| err(line, "bad label value"))?;
                let v = unquote(&body[i..=end]).ok_or_else(|| err(line, "bad label value"))?;
                pairs.push((lname, v));
                i = end + 1;
            } else {
                // A lone quoted string is the metric name.
                pairs.push((METRIC_NAME.to_string(), lname));
            }
        }
        rest = &body[i..];
    } else if name.is_empty() {
        return Err(err(line, format!("cannot parse series description {s:?}")));
    }
    Ok((Labels::new(pairs), rest))
}

fn find_quote_end(s: &str, start: usize) -> Option<usize> {
    let b = s.as_bytes();
    let q = *b.get(start)?;
    if q != b'"' && q != b'\'' && q != b'`' {
        return None;
    }
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Most values one series line may expand to (`0+1x1000000` is a million and one): input
/// is expanded in memory, so an unbounded repeat count would exhaust it. A histogram
/// counts as many values as its [`value_weight`].
pub const MAX_SERIES_VALUES: usize = 2_000_000;

/// Most values the series lines of one script may expand to, all together (weighed as
/// for [`MAX_SERIES_VALUES`]).
pub const MAX_SCRIPT_VALUES: usize = 20_000_000;

fn too_many_values(line: usize) -> ScriptError {
    err(
        line,
        format!("series expands to more than {MAX_SERIES_VALUES} values"),
    )
}

fn too_many_histogram_values(line: usize, weight: usize) -> ScriptError {
    err(
        line,
        format!(
            "series expands to more than {MAX_SERIES_VALUES} values, counting each histogram as 1 + its buckets ({weight} here)"
        ),
    )
}

/// What one value counts for against [`MAX_SERIES_VALUES`] and [`MAX_SCRIPT_VALUES`]: 1,
/// and for a histogram 1 + its buckets, since every copy holds its own buckets.
pub fn value_weight(v: &SeqValue) -> usize {
    match v {
        SeqValue::Histogram(p) => histogram_weight(&p.h),
        SeqValue::Omitted | SeqValue::Float(_) => 1,
    }
}

fn histogram_weight(h: &crate::histogram::FloatHistogram) -> usize {
    1 + h.positive.len() + h.negative.len()
}

/// The [`value_weight`]s of `values` added up.
pub fn values_weight(values: &[SeqValue]) -> usize {
    values
        .iter()
        .fold(0usize, |n, v| n.saturating_add(value_weight(v)))
}

/// How many values a token expands to, when it repeats (`…xN`, `_xN`).
fn repeat_count(tok: &str) -> Option<usize> {
    let xpos = tok.rfind('x')?;
    let n: usize = tok[xpos + 1..].parse().ok()?;
    Some(if tok.starts_with('_') {
        n
    } else {
        n.saturating_add(1)
    })
}

/// Parses the values of a series description; with `keep`, only the first `keep` values
/// are expanded (the rest is still checked), so a repeat count far past what is read (a
/// unit test's `0x10000000` over a ten-minute test) costs nothing, and the
/// [`MAX_SERIES_VALUES`] limit applies only to the values kept (weighed by
/// [`value_weight`]). Also returns how many values the description has in full.
fn parse_values_upto(
    s: &str,
    line: usize,
    keep: Option<usize>,
) -> Result<(Vec<SeqValue>, usize), ScriptError> {
    let mut out = Vec::new();
    let mut total = 0usize;
    // The weight of `out`: its length plus the buckets of its histograms.
    let mut weight = 0usize;
    let mut rest = s.trim();
    let room = |out: &Vec<SeqValue>| keep.map_or(usize::MAX, |k| k.saturating_sub(out.len()));
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let limit = MAX_SERIES_VALUES.saturating_sub(weight);
            let (values, n, tail) = parse_histogram_item(rest, line, room(&out), limit)?;
            total = total.saturating_add(n);
            weight += values_weight(&values);
            out.extend(values);
            rest = tail.trim_start();
            continue;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let tok = &rest[..end];
        rest = rest[end..].trim_start();
        let room = room(&out);
        let all = repeat_count(tok).unwrap_or(1);
        total = total.saturating_add(all);
        if weight.saturating_add(all.min(room)) > MAX_SERIES_VALUES {
            return Err(too_many_values(line));
        }
        let values =
            parse_value_token(tok, room).ok_or_else(|| err(line, format!("bad value {tok:?}")))?;
        weight += values.len();
        out.extend(values);
    }
    Ok((out, total))
}

/// One `{{…}}` item with its optional `+{{…}}`/`-{{…}}` and `xN`: at most `room` values,
/// how many the item has in full, and the text after it. Values weighing more than `limit` all together (each 1 + the
/// buckets of the first histogram and of the increment, which bound the buckets of every
/// value) are an error raised before any is expanded.
fn parse_histogram_item(
    rest: &str,
    line: usize,
    room: usize,
    limit: usize,
) -> Result<(Vec<SeqValue>, usize, &str), ScriptError> {
    use crate::histogram::notation;
    let body_end = |s: &str| {
        s.find("}}")
            .ok_or_else(|| err(line, "unterminated histogram"))
    };
    let end = body_end(rest)?;
    let first = notation::parse(&rest[2..end]).map_err(|m| err(line, m))?;
    let mut tail = &rest[end + 2..];
    let mut inc = None;
    if let Some((t, negate)) = tail
        .strip_prefix('+')
        .map(|t| (t, false))
        .or_else(|| tail.strip_prefix('-').map(|t| (t, true)))
        && t.starts_with("{{")
    {
        let e2 = body_end(t)?;
        inc = Some((
            notation::parse(&t[2..e2]).map_err(|m| err(line, m))?,
            negate,
        ));
        tail = &t[e2 + 2..];
    }
    let mut times = None;
    if let Some(t) = tail.strip_prefix('x') {
        let n_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        times = Some(
            t[..n_end]
                .parse::<usize>()
                .map_err(|_| err(line, "bad histogram repeat count"))?,
        );
        tail = &t[n_end..];
    }
    let per_value = histogram_weight(&first.h)
        + inc
            .as_ref()
            .map_or(0, |(i, _)| i.h.positive.len() + i.h.negative.len());
    let all = times.map_or(1, |n| n.saturating_add(1));
    if all.min(room).saturating_mul(per_value) > limit {
        return Err(if per_value > 1 {
            too_many_histogram_values(line, per_value)
        } else {
            too_many_values(line)
        });
    }
    let hist = |p: notation::Parsed| SeqValue::Histogram(Box::new(p));
    let values = match (inc, times) {
        (Some((inc, negate)), Some(n)) => notation::series(first, &inc, negate, n, room)
            .map_err(|m| err(line, m))?
            .into_iter()
            .map(hist)
            .collect(),
        (Some(_), None) => return Err(err(line, "histogram increment without a repeat count")),
        (None, Some(n)) => vec![hist(first); n.saturating_add(1).min(room)],
        (None, None) => vec![hist(first); 1.min(room)],
    };
    Ok((values, all, tail))
}

/// The values of one token, at most `room` of them.
fn parse_value_token(tok: &str, room: usize) -> Option<Vec<SeqValue>> {
    let repeat = |v: SeqValue, n: usize| vec![v; n.min(room)];
    if tok == "_" {
        return Some(repeat(SeqValue::Omitted, 1));
    }
    if tok == "stale" {
        return Some(repeat(SeqValue::Float(STALE_NAN), 1));
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n.parse().ok()?;
        return Some(repeat(SeqValue::Omitted, n));
    }
    let Some(xpos) = tok.rfind('x') else {
        return parse_number(tok).map(|v| repeat(SeqValue::Float(v), 1));
    };
    let (head, n) = (&tok[..xpos], tok[xpos + 1..].parse::<usize>().ok()?);
    if head == "stale" {
        return Some(repeat(SeqValue::Float(STALE_NAN), n.saturating_add(1)));
    }
    if head == "_" {
        return Some(repeat(SeqValue::Omitted, n));
    }
    if let Some(v) = parse_number(head) {
        return Some(repeat(SeqValue::Float(v), n.saturating_add(1)));
    }
    // a+b or a-b: split at a sign that is not part of an exponent or a leading sign.
    let hb = head.as_bytes();
    let mut split = None;
    for i in 1..hb.len() {
        if (hb[i] == b'+' || hb[i] == b'-') && !matches!(hb[i - 1], b'e' | b'E') {
            split = Some(i);
        }
    }
    let i = split?;
    let a = parse_number(&head[..i])?;
    let mut b = parse_number(&head[i + 1..])?;
    if hb[i] == b'-' {
        b = -b;
    }
    let count = n.saturating_add(1).min(room);
    let mut v = Vec::with_capacity(count);
    let mut cur = a;
    for _ in 0..count {
        v.push(SeqValue::Float(cur));
        cur += b;
    }
    Some(v)
}

/// Parses a series line (`metric{labels} values…`).
pub fn parse_series(s: &str, line: usize) -> Result<LoadSeries, ScriptError> {
    parse_series_upto(s, line, None)
}

/// [`parse_series`] keeping only the first `keep` values (all when `None`): what a reader
/// that looks at a bounded time range needs.
pub fn parse_series_upto(
    s: &str,
    line: usize,
    keep: Option<usize>,
) -> Result<LoadSeries, ScriptError> {
    parse_series_counted(s, line, keep).map(|(series, _)| series)
}

/// [`parse_series_upto`], and how many values the description has in full (saturating at
/// `usize::MAX`), counted without expanding them: what a reader that expects a fixed
/// number of values reports when there are more.
pub fn parse_series_counted(
    s: &str,
    line: usize,
    keep: Option<usize>,
) -> Result<(LoadSeries, usize), ScriptError> {
    let (labels, rest) = parse_metric(s, line)?;
    let (values, total) = parse_values_upto(rest, line, keep)?;
    let series = LoadSeries {
        labels,
        values,
        st_offsets: Vec::new(),
    };
    Ok((series, total))
}

fn parse_matcher(rest: Option<&str>) -> Matcher {
    match rest {
        None => Matcher::Any,
        Some(r) => {
            let r = r.trim_start();
            if let Some(m) = r.strip_prefix("msg:") {
                Matcher::Message(m.trim().to_string())
            } else if let Some(m) = r.strip_prefix("regex:") {
                Matcher::Regex(m.trim().to_string())
            } else {
                Matcher::Any
            }
        }
    }
}

/// Parses a whole script.
pub fn parse_script(src: &str) -> Result<Vec<Command>, ScriptError> {
    let mut total_values = 0usize;
    let lines: Vec<String> = src
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let first = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if first == "clear" {
            cmds.push(Command::Clear);
            i += 1;
        } else if first.starts_with("load") {
            let (load, next) = parse_load(&lines, i, &first, &mut total_values)?;
            cmds.push(Command::Load(load));
            i = next;
        } else if first.starts_with("eval") {
            let (ev, next) = parse_eval(&lines, i)?;
            let expected = ev
                .expected
                .iter()
                .fold(0usize, |n, (_, v)| n.saturating_add(values_weight(v)));
            total_values = add_values(total_values, expected, i + 1)?;
            cmds.push(Command::Eval(Box::new(ev)));
            i = next;
        } else {
            return Err(err(i + 1, format!("invalid command {l:?}")));
        }
    }
    Ok(cmds)
}

/// A `load <step>` (or `load_with_nhcb`) command starting at `lines[i]`, with its series
/// and `@st` lines up to the next empty line; and the index of the line after it.
fn parse_load(
    lines: &[String],
    mut i: usize,
    first: &str,
    total_values: &mut usize,
) -> Result<(Load, usize), ScriptError> {
    let with_nhcb = first == "load_with_nhcb";
    let step = lines[i].split_whitespace().nth(1).unwrap_or("");
    let step_ms = parse_duration_ms(step)
        .map_err(|_| err(i + 1, format!("invalid step definition {step:?}")))?;
    let mut load = Load {
        line: i + 1,
        step_ms,
        with_nhcb,
        series: Vec::new(),
        with_start_timestamps: Vec::new(),
    };
    i += 1;
    // Offsets of a `metric@st` line, waiting for the series line they belong to,
    // and those of a standalone `@st` line, used (cycled) for later series.
    let mut pending: Option<(Labels, Vec<Option<i64>>, usize)> = None;
    let mut default_st: Vec<Option<i64>> = Vec::new();
    while i < lines.len() && !lines[i].is_empty() {
        let def = &lines[i];
        let ws = def.find(char::is_whitespace).unwrap_or(def.len());
        if def[..ws].ends_with("@st") {
            if let Some((_, _, at)) = &pending {
                return Err(err(*at, "@st line has no following sample line"));
            }
            let metric = &def[..ws - 3];
            let offsets = parse_st_offsets(&def[ws..], i + 1)?;
            if metric.is_empty() {
                default_st = offsets;
            } else {
                let (labels, _) = parse_metric(metric, i + 1)?;
                load.with_start_timestamps.push(labels.clone());
                pending = Some((labels, offsets, i + 1));
            }
            i += 1;
            continue;
        }
        let mut s = parse_series(def, i + 1)?;
        *total_values = add_values(*total_values, values_weight(&s.values), i + 1)?;
        match pending.take() {
            Some((labels, offsets, at)) => {
                if labels != s.labels {
                    return Err(err(
                        at,
                        "@st metric does not match the following sample line metric",
                    ));
                }
                if offsets.len() != s.values.len() {
                    return Err(err(
                        at,
                        format!(
                            "@st line has {} values but sample line has {}",
                            offsets.len(),
                            s.values.len()
                        ),
                    ));
                }
                s.st_offsets = offsets;
            }
            None if !default_st.is_empty() => {
                s.st_offsets = (0..s.values.len())
                    .map(|k| default_st[k % default_st.len()])
                    .collect();
            }
            None => {}
        }
        if let Some(existing) = load.series.iter_mut().find(|x| x.labels == s.labels) {
            *existing = s;
        } else {
            load.series.push(s);
        }
        i += 1;
    }
    if let Some((_, _, at)) = pending {
        return Err(err(at, "@st line has no following sample line"));
    }
    Ok((load, i))
}

/// Adds `n` values to a script's running total, failing past [`MAX_SCRIPT_VALUES`].
fn add_values(total: usize, n: usize, line: usize) -> Result<usize, ScriptError> {
    let total = total.saturating_add(n);
    if total > MAX_SCRIPT_VALUES {
        return Err(err(
            line,
            format!("series in the script expand to more than {MAX_SCRIPT_VALUES} values"),
        ));
    }
    Ok(total)
}

fn parse_eval(lines: &[String], i: usize) -> Result<(Eval, usize), ScriptError> {
    let mut expected_values = 0usize;
    let l = &lines[i];
    let line = i + 1;
    let (head, rest) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
    let modifier = head
        .strip_prefix("eval")
        .unwrap_or("")
        .trim_start_matches('_');
    let rest = rest.trim_start();
    let mut ev = Eval {
        line,
        expr: String::new(),
        instant_at: None,
        range: None,
        expect_range_vector: false,
        expect_string: None,
        fail: None,
        ordered: modifier == "ordered",
        warn: Vec::new(),
        info: Vec::new(),
        no_warn: false,
        no_info: false,
        expect_scalar: None,
        expected: Vec::new(),
        expects_histogram: false,
    };
    if modifier == "fail" {
        ev.fail = Some(Matcher::Any);
    }
    if modifier == "warn" {
        ev.warn.push(Matcher::Any);
    }
    if modifier == "info" {
        ev.info.push(Matcher::Any);
    }
    parse_eval_query(rest, line, &mut ev)?;
    let mut j = i + 1;
    while j < lines.len() && !lines[j].is_empty() {
        parse_expect_line(&lines[j], j + 1, &mut ev, &mut expected_values)?;
        j += 1;
    }
    Ok((ev, j))
}

/// The query of an `eval instant at <t> <expr>` or `eval range from <a> to <b> step <s>
/// <expr>` line (`rest`: what follows `eval...`).
fn parse_eval_query(rest: &str, line: usize, ev: &mut Eval) -> Result<(), ScriptError> {
    if let Some(r) = rest.strip_prefix("instant") {
        let r = r.trim_start();
        let r = r
            .strip_prefix("at")
            .filter(|x| x.starts_with(char::is_whitespace))
            .ok_or_else(|| err(line, "eval instant without `at` is not supported"))?
            .trim_start();
        let (t, expr) = r
            .split_once(char::is_whitespace)
            .ok_or_else(|| err(line, "missing query"))?;
        ev.instant_at = Some(
            parse_duration_ms(t)
                .map_err(|_| err(line, format!("invalid timestamp definition {t:?}")))?,
        );
        ev.expr = expr.trim().to_string();
    } else if let Some(r) = rest.strip_prefix("range") {
        let words: Vec<&str> = r.split_whitespace().collect();
        if words.len() < 7 || words[0] != "from" || words[2] != "to" || words[4] != "step" {
            return Err(err(line, "invalid range evaluation command"));
        }
        let p = |s: &str| {
            parse_duration_ms(s).map_err(|_| err(line, format!("invalid duration {s:?}")))
        };
        ev.range = Some((p(words[1])?, p(words[3])?, p(words[5])?));
        // The query is everything after the step word.
        let idx = nth_word_end(r, 6);
        ev.expr = r[idx..].trim().to_string();
    } else {
        return Err(err(line, "invalid evaluation command"));
    }
    Ok(())
}

/// One line under an `eval`: an `expect ...` directive, a scalar, or an expected series
/// (counted into `expected_values`).
fn parse_expect_line(
    d: &str,
    dl: usize,
    ev: &mut Eval,
    expected_values: &mut usize,
) -> Result<(), ScriptError> {
    if let Some(r) = d.strip_prefix("expect range vector") {
        let w: Vec<&str> = r.split_whitespace().collect();
        if w.len() != 6 {
            return Err(err(dl, "invalid range vector definition"));
        }
        let p =
            |s: &str| parse_duration_ms(s).map_err(|_| err(dl, format!("invalid duration {s:?}")));
        ev.range = Some((p(w[1])?, p(w[3])?, p(w[5])?));
        ev.instant_at = Some(p(w[3])?);
        ev.expect_range_vector = true;
    } else if let Some(r) = d.strip_prefix("expect string") {
        ev.expect_string =
            Some(unquote(r.trim()).ok_or_else(|| err(dl, "expected string literal not valid"))?);
    } else if d.split(' ').next() == Some("expect") {
        let body = d["expect".len()..].trim_start();
        let (kind, tail) = match body.find(char::is_whitespace) {
            Some(p) => (&body[..p], Some(&body[p..])),
            None => (body, None),
        };
        let m = parse_matcher(tail);
        match kind {
            "fail" => ev.fail = Some(m),
            "ordered" => ev.ordered = true,
            "warn" => ev.warn.push(m),
            "info" => ev.info.push(m),
            "no_warn" => ev.no_warn = true,
            "no_info" => ev.no_info = true,
            other => return Err(err(dl, format!("invalid expect type {other:?}"))),
        }
    } else if let Some(f) = parse_number(d) {
        ev.expect_scalar = Some(f);
    } else {
        let s = parse_series(d, dl)?;
        if s.values.iter().any(|v| matches!(v, SeqValue::Histogram(_))) {
            ev.expects_histogram = true;
        }
        *expected_values = add_values(*expected_values, values_weight(&s.values), dl)?;
        ev.expected.push((s.labels, s.values));
    }
    Ok(())
}

/// Byte index just after the n-th (0-based) whitespace-separated word of `s`.
fn nth_word_end(s: &str, n: usize) -> usize {
    let mut count = 0;
    let mut in_word = false;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if in_word {
                count += 1;
                if count == n {
                    return i;
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_repeat_counts_are_errors_not_allocations() {
        // Found by the promqltest_script fuzz target: `1+1x…` allocated its count up front.
        for line in [
            "m 1+1x1391393939393939",
            "m _x99999999999999",
            "m 1x18446744073709551615",
            "m {{schema:0}}x99999999999",
        ] {
            let e = parse_series(line, 3).expect_err("too many values");
            assert_eq!(e.line, 3);
            assert!(e.message.contains("more than"), "{}", e.message);
        }
        // The same for start-timestamp offsets (`@st` lines).
        for st in [
            "_x55655555555555555",
            "*x99999999999",
            "1s+1sx9999999999",
            "1m-1mx99999999",
        ] {
            let e = parse_st_offsets(st, 4).expect_err("too many offsets");
            assert!(e.message.contains("more than"), "{}", e.message);
        }
        let script = "load 4s\n  s\n  @st _x55655555555555555\n  @st _x5565555555555\n";
        assert!(parse_script(script).is_err());
        let many = format!("load 1m\n{}", "  m 0+1x1999999\n".repeat(11));
        let e = parse_script(&many).expect_err("script total");
        assert!(e.message.contains("in the script"), "{}", e.message);
        assert_eq!(
            parse_series("m 0+1x1999999", 1).map(|s| s.values.len()),
            Ok(2_000_000)
        );
    }

    /// `{{schema:8 buckets:[1 1 …]}}` with `n` buckets.
    fn buckets(n: usize) -> String {
        format!("{{{{schema:8 buckets:[{}]}}}}", vec!["1"; n].join(" "))
    }

    #[test]
    fn histograms_count_by_their_buckets_against_the_limits() {
        // 100,001 copies of 100,000 buckets would be 160 GB: refused before expanding.
        let big = buckets(100_000);
        for line in [
            format!("m {big}x100000"),
            format!("m 1 2 {big}+{big}x99999"),
        ] {
            let e = parse_series(&line, 7).expect_err("too many values");
            assert_eq!(e.line, 7);
            assert!(
                e.message.starts_with("series expands to more than 2000000 values, counting each histogram as 1 + its buckets"),
                "{}",
                e.message
            );
        }
        let e = parse_series(&format!("m {big}+{big}x99"), 2).unwrap_err();
        assert!(e.message.ends_with("(200001 here)"), "{}", e.message);
        // 20,000 values of 1 + 99 buckets are exactly the limit; one more is past it,
        // and so is a float after them.
        let h = buckets(99);
        let s = parse_series(&format!("m {h}x19999"), 1).unwrap();
        assert_eq!(values_weight(&s.values), MAX_SERIES_VALUES);
        assert!(parse_series(&format!("m {h}x20000"), 1).is_err());
        assert!(parse_series(&format!("m {h}x19999 1"), 1).is_err());
        assert!(parse_series(&format!("m 1 {h}x19999"), 1).is_err());
        // Only the values kept count; all are counted.
        let line = format!("m {big}x100000 _x5 1+1x2 2");
        let (s, all) = parse_series_counted(&line, 1, Some(3)).unwrap();
        assert_eq!((s.values.len(), all), (3, 100_010));
        // A script's total weighs histograms too: 19,999,990 floats and one histogram
        // of 10 buckets are one value past the script limit.
        let mut script = format!("load 1m\n{}", "  m 0+1x1999998\n".repeat(10));
        script.push_str(&format!("  h {}\n", buckets(10)));
        let e = parse_script(&script).expect_err("script total");
        assert_eq!(e.line, 12);
        assert!(e.message.contains("in the script"), "{}", e.message);
    }

    #[test]
    fn value_sequences_expand() {
        let s = parse_series("m{a=\"b\"} 1+2x2 _ stale 5x1 -1-1x1 _x2", 1).unwrap();
        assert_eq!(s.labels.get("a"), Some("b"));
        let f: Vec<String> = s
            .values
            .iter()
            .map(|v| match v {
                SeqValue::Omitted => "_".to_string(),
                SeqValue::Float(f) if crate::storage::is_stale(*f) => "stale".to_string(),
                SeqValue::Float(f) => f.to_string(),
                SeqValue::Histogram(_) => "h".to_string(),
            })
            .collect();
        assert_eq!(
            f,
            ["1", "3", "5", "_", "stale", "5", "5", "-1", "-2", "_", "_"]
        );
    }

    #[test]
    fn durations_and_numbers() {
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_number("0x10"), Some(16.0));
        assert!(parse_number("-Inf").is_some_and(|v| v == f64::NEG_INFINITY));
        assert_eq!(unquote("\"a\\\"b\""), Some("a\"b".to_string()));
    }

    #[test]
    fn eval_blocks() {
        let cmds = parse_script(
            "load 5m\n  m 1 2\n\neval range from 0 to 10m step 5m sum(m)\n  expect no_warn\n  {} 1 2\n",
        )
        .unwrap();
        assert_eq!(cmds.len(), 2);
        let Command::Eval(ev) = &cmds[1] else {
            panic!("not an eval")
        };
        assert_eq!(ev.expr, "sum(m)");
        assert_eq!(ev.range, Some((0, 600_000, 300_000)));
        assert!(ev.no_warn);
    }

    #[test]
    fn start_timestamp_lines() {
        let ms = |v: &[Option<i64>]| v.to_vec();
        assert_eq!(
            parse_st_offsets("_ -30s-1mx2 +1m 0 -0ms 1ms-1mx1 -59999msx1 * _x2", 1).unwrap(),
            ms(&[
                None,
                Some(-30_000),
                Some(-90_000),
                Some(-150_000),
                Some(60_000),
                Some(0),
                Some(0),
                Some(1),
                Some(-59_999),
                Some(-59_999),
                Some(-59_999),
                Some(-59_999),
                None,
                None,
            ])
        );
        assert!(parse_st_offsets("1m+", 3).is_err());
        assert!(parse_st_offsets("_x0", 3).is_err());

        let cmds =
            parse_script("load 1m\n  m@st _ -1m\n  m 1 2\n  @st 5s\n  n 1 2\n  o 3\n").unwrap();
        let Command::Load(load) = &cmds[0] else {
            panic!("not a load")
        };
        let offsets: Vec<Vec<Option<i64>>> =
            load.series.iter().map(|s| s.st_offsets.clone()).collect();
        assert_eq!(
            offsets,
            [
                vec![None, Some(-60_000)],
                vec![Some(5_000), Some(5_000)],
                vec![Some(5_000)]
            ]
        );
        // The @st line must match the series line after it, value for value.
        let e = parse_script("load 1m\n  m@st 0\n  n 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_script("load 1m\n  m@st 0 0\n  m 1\n").is_err());
        assert!(parse_script("load 1m\n  m@st 0\n").is_err());
    }
}
