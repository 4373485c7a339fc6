//! Parsers for the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text.
//!
//! Written here rather than taken from a crate: the crates on crates.io
//! (`prometheus-parse`, `openmetrics-parser`) either panic on malformed input, do not report
//! line numbers, or do not accept both formats. This parser works line by line over an
//! already size-bounded body, never panics, and returns the first error with its line and
//! column (1-based). Metadata lines (`# HELP`, `# TYPE`, `# UNIT`) are checked for shape and
//! otherwise ignored: the evaluator stores float samples only. OpenMetrics exemplars are
//! skipped.
//!
//! Parsing is linear in the body: a series with many labels checks its names for
//! duplicates through a hash set once it has more than a few (a scrape target can send one
//! series with hundreds of thousands of labels), and [`parse_until_stopped`] checks a stop
//! flag every few thousand lines and labels, so that the scrape loop can end a parse that
//! outlives its `scrape_timeout`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

use lookout_promql::Labels;
use lookout_promql::labels::METRIC_NAME;

/// Which exposition format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: millisecond integer timestamps, no `# EOF`.
    PrometheusText,
    /// `application/openmetrics-text`: second float timestamps, ends with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces; anything that is not OpenMetrics is
    /// read as Prometheus text, as Prometheus does.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::PrometheusText,
        }
    }
}

/// One parsed sample.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// The labels, with the metric name as `__name__`.
    pub labels: Labels,
    /// The value.
    pub value: f64,
    /// The explicit timestamp in milliseconds, if the line had one.
    pub timestamp_ms: Option<i64>,
}

/// A parse error with its position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in bytes).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// How many lines, or labels of one series, are parsed between two looks at the stop flag.
const STOP_CHECK_EVERY: usize = 1024;

/// The message of the error a stopped parse returns.
pub const STOPPED: &str = "parsing stopped before the end of the body";

/// Parses a whole body.
pub fn parse(body: &str, format: Format) -> Result<Vec<ParsedSample>, ParseError> {
    parse_until_stopped(body, format, &AtomicBool::new(false))
}

/// [`parse`] that gives up with an error ([`STOPPED`]) soon after `stop` is set: it looks
/// at the flag every [`STOP_CHECK_EVERY`] lines and every [`STOP_CHECK_EVERY`] labels of a
/// series.
pub fn parse_until_stopped(
    body: &str,
    format: Format,
    stop: &AtomicBool,
) -> Result<Vec<ParsedSample>, ParseError> {
    let mut out = Vec::new();
    for_each_sample(body, format, stop, |raw| {
        out.push(ParsedSample {
            labels: raw.labels()?,
            value: raw.value,
            timestamp_ms: raw.timestamp_ms,
        });
        Ok::<(), ParseError>(())
    })?;
    Ok(out)
}

/// One sample line before its labels are built: what a scrape cache looks up.
pub struct RawSample<'a> {
    /// The series exactly as the body writes it: the metric name and its label set.
    pub series: &'a str,
    /// The value.
    pub value: f64,
    /// The explicit timestamp in milliseconds, if the line had one.
    pub timestamp_ms: Option<i64>,
    /// The family the last `# TYPE` line before this sample declared, when it declared a
    /// `histogram` (what `convert_classic_histograms_to_nhcb` converts).
    pub histogram_family: Option<&'a str>,
    /// How many comment lines (metadata or not) came before this sample: a comment between
    /// two series of a classic histogram ends it, as in Prometheus's parser.
    pub comments: usize,
    line: usize,
    offset: usize,
    stop: &'a AtomicBool,
}

impl RawSample<'_> {
    /// The labels of [`RawSample::series`], with the metric name as `__name__`.
    pub fn labels(&self) -> Result<Labels, ParseError> {
        Cursor::new(self.series, self.line, self.offset, self.stop).series()
    }
}

/// Calls `f` with every sample of `body`, in order, and returns how many there were. The
/// value and timestamp of every line are checked; the series text of each is checked only
/// by [`RawSample::labels`] (so a caller that has seen the same text before skips it), except
/// that it must be followed by a space. Stops as [`parse_until_stopped`] does.
pub fn for_each_sample<E: From<ParseError>>(
    body: &str,
    format: Format,
    stop: &AtomicBool,
    mut f: impl FnMut(RawSample<'_>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut seen_eof = false;
    let mut count = 0;
    let mut histogram_family = None;
    let mut comments = 0;
    for (idx, (raw_line, is_last)) in Lines(Some(body)).enumerate() {
        let line_no = idx + 1;
        if idx % STOP_CHECK_EVERY == 0 && stop.load(Ordering::Relaxed) {
            return Err(err(line_no, 1, STOPPED).into());
        }
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        if seen_eof {
            if line.is_empty() && is_last {
                continue;
            }
            return Err(err(line_no, 1, "unexpected data after # EOF").into());
        }
        let trimmed = if format == Format::PrometheusText {
            // Blanks are ASCII: the first other byte starts a character.
            let blanks = line
                .bytes()
                .take_while(|&b| b == b' ' || b == b'\t')
                .count();
            &line[blanks..]
        } else {
            line
        };
        if trimmed.is_empty() {
            if format == Format::OpenMetrics && !is_last {
                return Err(err(line_no, 1, "empty lines are not allowed in OpenMetrics").into());
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            if format == Format::OpenMetrics && rest == " EOF" {
                seen_eof = true;
                continue;
            }
            check_comment(rest, format, line_no)?;
            comments += 1;
            let mut words = rest.trim_start().splitn(3, [' ', '\t']);
            if words.next() == Some("TYPE") {
                let name = words.next();
                let typ = words.next().map(str::trim);
                histogram_family = name.filter(|_| typ == Some("histogram"));
            }
            continue;
        }
        let offset = line.len() - trimmed.len();
        let end = skim_series(trimmed);
        let mut cursor = Cursor::new(trimmed, line_no, offset, stop);
        cursor.pos = end;
        let raw = |(value, timestamp_ms)| RawSample {
            series: &trimmed[..end],
            value,
            timestamp_ms,
            histogram_family,
            comments,
            line: line_no,
            offset,
            stop,
        };
        match cursor.tail(format) {
            Ok(tail) => f(raw(tail))?,
            // What is wrong with the series comes first on the line.
            Err(e) => {
                raw((0.0, None)).labels()?;
                return Err(e.into());
            }
        }
        count += 1;
    }
    if format == Format::OpenMetrics && !seen_eof {
        let last = body.split('\n').count();
        return Err(err(last, 1, "OpenMetrics body does not end with # EOF").into());
    }
    Ok(count)
}

/// The lines of a body as `str::split('\n')` gives them, each with whether it is the last,
/// found with `memchr`.
struct Lines<'a>(Option<&'a str>);

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a str, bool);

    fn next(&mut self) -> Option<(&'a str, bool)> {
        let rest = self.0?;
        match memchr::memchr(b'\n', rest.as_bytes()) {
            // '\n' is ASCII, so both sides of it are character boundaries.
            Some(at) => {
                self.0 = Some(&rest[at + 1..]);
                Some((&rest[..at], false))
            }
            None => {
                self.0 = None;
                Some((rest, true))
            }
        }
    }
}

/// Where the series text of a sample line ends: after the metric name and, if one follows,
/// the label set's closing brace (quoted strings and their escapes skipped). Malformed text
/// ends where the skim gives up; [`Cursor::series`] reports what is wrong with it.
fn skim_series(line: &str) -> usize {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
        i += 1;
    }
    if b.get(i) != Some(&b'{') {
        return i;
    }
    let mut quoted = false;
    i += 1;
    while i < b.len() {
        match (quoted, b[i]) {
            (true, b'\\') => i += 1,
            (_, b'"') => quoted = !quoted,
            (false, b'}') => return i + 1,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

fn err(line: usize, column: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        column,
        message: message.into(),
    }
}

fn check_comment(rest: &str, format: Format, line_no: usize) -> Result<(), ParseError> {
    let mut words = rest.trim_start().splitn(3, [' ', '\t']);
    let kind = words.next().unwrap_or("");
    let is_meta =
        matches!(kind, "HELP" | "TYPE") || (format == Format::OpenMetrics && kind == "UNIT");
    if !is_meta {
        if format == Format::OpenMetrics {
            return Err(err(
                line_no,
                1,
                format!("unknown comment {:?}", format!("#{rest}")),
            ));
        }
        return Ok(());
    }
    let name = words.next().unwrap_or("");
    if !is_metric_name(name) {
        return Err(err(
            line_no,
            3 + kind.len(),
            format!("invalid metric name {name:?} in {kind} line"),
        ));
    }
    if kind == "UNIT" {
        let unit = words.next().unwrap_or("").trim();
        if !unit.is_empty() && !name.ends_with(unit) {
            return Err(err(
                line_no,
                1,
                format!("unit {unit:?} not a suffix of metric {name:?}"),
            ));
        }
    }
    if kind == "TYPE" {
        let typ = words.next().unwrap_or("").trim();
        let ok = match format {
            Format::PrometheusText => {
                matches!(
                    typ,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                )
            }
            Format::OpenMetrics => matches!(
                typ,
                "counter"
                    | "gauge"
                    | "histogram"
                    | "gaugehistogram"
                    | "summary"
                    | "info"
                    | "stateset"
                    | "unknown"
            ),
        };
        if !ok {
            return Err(err(line_no, 1, format!("invalid metric type {typ:?}")));
        }
    }
    Ok(())
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The label pairs of one series, borrowed from the body where they have no escapes.
type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
    offset: usize,
    stop: &'a AtomicBool,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str, line: usize, offset: usize, stop: &'a AtomicBool) -> Self {
        Cursor {
            s,
            pos: 0,
            line,
            offset,
            stop,
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        err(self.line, self.offset + self.pos + 1, message)
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn ident(&mut self, metric: bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphanumeric() || c == b'_' || (metric && c == b':');
            let first_ok = !(self.pos == start && c.is_ascii_digit());
            if ok && first_ok {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.s[start..self.pos]
    }

    /// A quoted string, borrowed from the text unless it has escapes (one allocation per
    /// label would be most of the work on a series of 200,000 labels).
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected '\"'"));
        }
        self.pos += 1;
        let start = self.pos;
        let bytes = self.s.as_bytes();
        // '"' and '\\' are ASCII, so every index found is a character boundary.
        let Some(at) = bytes[start..].iter().position(|&b| b == b'"' || b == b'\\') else {
            self.pos = self.s.len();
            return Err(self.error("unterminated label value"));
        };
        if bytes[start + at] == b'"' {
            self.pos = start + at + 1;
            return Ok(Cow::Borrowed(&self.s[start..start + at]));
        }
        let mut out = String::from(&self.s[start..start + at]);
        let rest = &self.s[start + at..];
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + at + i + 1;
                    return Ok(Cow::Owned(out));
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((j, other)) => {
                        self.pos = start + at + j;
                        return Err(self.error(format!("invalid escape sequence '\\{other}'")));
                    }
                    None => break,
                },
                other => out.push(other),
            }
        }
        self.pos = self.s.len();
        Err(self.error("unterminated label value"))
    }

    /// The label set after the metric name, `{...}` (if there is one); a quoted name inside
    /// the braces (UTF-8 metric names) is put into `name`.
    /// Repeated names are left to the caller ([`Cursor::series`]), which finds them by
    /// sorting: `ends` gets where each pair ends, to say where the first repeat is.
    fn label_set(
        &mut self,
        name: &mut Cow<'a, str>,
        pairs: &mut Pairs<'a>,
        ends: &mut Vec<usize>,
    ) -> Result<(), ParseError> {
        if self.peek() != Some(b'{') {
            return Ok(());
        }
        self.pos += 1;
        loop {
            self.skip_blanks();
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'"') if name.is_empty() && pairs.is_empty() => {
                    *name = self.quoted()?;
                }
                Some(_) => {
                    let lname = if self.peek() == Some(b'"') {
                        self.quoted()?
                    } else {
                        Cow::Borrowed(self.ident(false))
                    };
                    if lname.is_empty() {
                        return Err(self.error("expected a label name"));
                    }
                    self.skip_blanks();
                    if self.peek() != Some(b'=') {
                        return Err(self.error(format!("expected '=' after label name {lname:?}")));
                    }
                    self.pos += 1;
                    self.skip_blanks();
                    let value = self.quoted()?;
                    if lname == METRIC_NAME {
                        return Err(self.error(format!("duplicate label name {lname:?}")));
                    }
                    pairs.push((lname, value));
                    ends.push(self.pos);
                    if pairs.len() % STOP_CHECK_EVERY == 0 && self.stop.load(Ordering::Relaxed) {
                        return Err(self.error(STOPPED));
                    }
                }
                None => return Err(self.error("unterminated label set")),
            }
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected ',' or '}' in label set")),
            }
        }
    }

    /// The metric name and label set at the start of the text, as labels.
    fn series(&mut self) -> Result<Labels, ParseError> {
        let mut name = Cow::Borrowed(self.ident(true));
        let (mut pairs, mut ends) = (Pairs::new(), Vec::new());
        let parsed = self.label_set(&mut name, &mut pairs, &mut ends);
        if let Err(e) = &parsed
            && e.message == STOPPED
        {
            return parsed.map(|()| Labels::default());
        }
        // Sorting a wide label set is the next uninterruptible step: look at the stop flag
        // before it too.
        if pairs.len() >= STOP_CHECK_EVERY && self.stop.load(Ordering::Relaxed) {
            return Err(self.error(STOPPED));
        }
        // A repeated name is the first error on the line when it comes before the one that
        // ended the label set, as if each name were checked as it came.
        // The metric name goes last: `__name__` inside the braces is refused above, so a
        // repeat is always a pair of the label set.
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .chain(std::iter::once((METRIC_NAME, name.as_ref())))
            .collect();
        let labels = Labels::try_from_distinct(&refs).map_err(|i| {
            err(
                self.line,
                self.offset + ends[i] + 1,
                format!("duplicate label name {:?}", refs[i].0),
            )
        });
        let labels = labels?;
        parsed?;
        if name.is_empty() {
            return Err(self.error("expected a metric name"));
        }
        if self.pos != self.s.len() {
            return Err(self.error("expected a space before the value"));
        }
        Ok(labels)
    }

    /// Where the word at the cursor ends: at the next blank or the end of the text.
    fn word_end(&self) -> usize {
        let rest = &self.s.as_bytes()[self.pos..];
        self.pos
            + rest
                .iter()
                .position(|&c| c == b' ' || c == b'\t')
                .unwrap_or(rest.len())
    }

    /// The value and timestamp after the series text (the cursor at its end).
    fn tail(&mut self, format: Format) -> Result<(f64, Option<i64>), ParseError> {
        if self.skip_blanks() == 0 {
            return Err(self.error("expected a space before the value"));
        }
        let value_start = self.pos;
        self.pos = self.word_end();
        let vtext = &self.s[value_start..self.pos];
        let value = parse_float(vtext).ok_or_else(|| {
            err(
                self.line,
                self.offset + value_start + 1,
                format!("invalid value {vtext:?}"),
            )
        })?;
        self.skip_blanks();
        let mut timestamp_ms = None;
        if self.peek().is_some() && self.peek() != Some(b'#') {
            let ts_start = self.pos;
            self.pos = self.word_end();
            let ttext = &self.s[ts_start..self.pos];
            let parsed = match format {
                Format::PrometheusText => ttext.parse::<i64>().ok(),
                Format::OpenMetrics => parse_float(ttext)
                    .filter(|f| f.is_finite())
                    .map(|secs| (secs * 1000.0).round() as i64),
            };
            timestamp_ms = Some(parsed.ok_or_else(|| {
                err(
                    self.line,
                    self.offset + ts_start + 1,
                    format!("invalid timestamp {ttext:?}"),
                )
            })?);
            self.skip_blanks();
        }
        match self.peek() {
            None => {}
            Some(b'#') if format == Format::OpenMetrics => {} // exemplar, ignored
            Some(_) => return Err(self.error("unexpected data after the sample")),
        }
        Ok((value, timestamp_ms))
    }
}

/// Go's `strconv.ParseFloat` spellings: decimal and exponent forms, `NaN`, `+Inf`, `-Inf`.
fn parse_float(s: &str) -> Option<f64> {
    if let Some(v) = plain_decimal(s.as_bytes()) {
        return Some(v);
    }
    match s {
        "" => None,
        _ if s.eq_ignore_ascii_case("nan") => Some(f64::NAN),
        _ if s.eq_ignore_ascii_case("+inf") || s.eq_ignore_ascii_case("inf") => Some(f64::INFINITY),
        _ if s.eq_ignore_ascii_case("-inf") => Some(f64::NEG_INFINITY),
        _ => {
            if s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
            {
                if s.contains('_') {
                    s.replace('_', "").parse::<f64>().ok()
                } else {
                    s.parse::<f64>().ok()
                }
            } else {
                None
            }
        }
    }
}

/// The powers of ten that are exact doubles.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Most values a target writes, `[-+]digits[.digits]`, read without `f64::from_str`: when
/// the digits make an integer m below 2⁵³ and at most 22 of them follow the point, m and
/// 10^k are exact doubles and the one division m / 10^k is rounded once, correctly, as
/// `from_str` rounds (Clinger's fast path): the same bits. `None` for anything else.
fn plain_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let (mut m, mut n, mut point) = (0u64, 0usize, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' if n < 19 => {
                m = m * 10 + u64::from(c - b'0');
                n += 1;
            }
            b'.' if point.is_none() && i > 0 => point = Some(i + 1),
            _ => return None,
        }
    }
    let frac = match point {
        Some(p) if p == digits.len() => return None,
        Some(p) => digits.len() - p,
        None if n == 0 => return None,
        None => 0,
    };
    if m >= 1 << 53 || frac >= EXACT_POW10.len() {
        return None;
    }
    let v = m as f64 / EXACT_POW10[frac];
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let body = "# HELP up Whether up.\n# TYPE up gauge\nup 1\n\
                    http_requests_total{code=\"200\",path=\"/a\\\"b\"} 1027 1395066363000\n\
                    weird{a=\"x\",} -Inf\n  # a comment\nspace_after{} 3  \n";
        let s = parse(body, Format::PrometheusText).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].labels.to_string(), "up{}");
        assert_eq!(s[1].labels.get("path"), Some("/a\"b"));
        assert_eq!(s[1].timestamp_ms, Some(1395066363000));
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert_eq!(s[3].value, 3.0);
    }

    #[test]
    fn openmetrics() {
        let body = "# TYPE foo_seconds counter\n# UNIT foo_seconds seconds\nfoo_total{a=\"b\"} 17.5 1520879607.789 # {id=\"x\"} 1.0\nfoo_created 1.5e9\n# EOF\n";
        let s = parse(body, Format::OpenMetrics).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].timestamp_ms, Some(1520879607789));
        assert!(parse("foo 1\n", Format::OpenMetrics).is_err());
        assert!(parse("# EOF\nfoo 1\n", Format::OpenMetrics).is_err());
        assert!(parse("# UNIT temp celsius\n# EOF\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("ok 1\nbad{a=\"x} 1\n", Format::PrometheusText).unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("ok 1\nbad{a=x} 1\n", Format::PrometheusText).unwrap_err();
        assert_eq!((e.line, e.column), (2, 7));
        let e = parse("m abc\n", Format::PrometheusText).unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        assert!(parse("m{a=\"1\",a=\"2\"} 1\n", Format::PrometheusText).is_err());
        assert!(parse("m 1 2 3\n", Format::PrometheusText).is_err());
        assert!(parse("# TYPE m bogus\n", Format::PrometheusText).is_err());
        assert!(parse("{\"\u{e9}\" 1\n", Format::PrometheusText).is_err());
    }

    /// Repeated names are found by sorting once the label set is read, but reported as a
    /// check per name would: the first repeat in the text, at its value's end, and before a
    /// later error on the line.
    #[test]
    fn a_repeated_label_name_is_reported_where_it_first_repeats() {
        let e = parse(
            "m{b=\"1\",a=\"2\",a=\"3\",b=\"4\"} 1\n",
            Format::PrometheusText,
        )
        .unwrap_err();
        assert_eq!(e.message, "duplicate label name \"a\"");
        assert_eq!(e.column, 20);
        let e = parse("m{a=\"1\",a=\"2\",b=3} 1\n", Format::PrometheusText).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.column),
            ("duplicate label name \"a\"", 14)
        );
        let e = parse("m{a=\"1\",b=3,a=\"2\"} 1\n", Format::PrometheusText).unwrap_err();
        assert!(e.message.contains("expected '\"'"), "{e}");
        let e = parse("m{__name__=\"x\"} 1\n", Format::PrometheusText).unwrap_err();
        assert_eq!(e.message, "duplicate label name \"__name__\"");
        let e = parse("m{a=\"\",a=\"2\"} 1\n", Format::PrometheusText).unwrap_err();
        assert_eq!(e.message, "duplicate label name \"a\"");
    }

    #[test]
    fn escaped_and_plain_values_and_quoted_names() {
        let body = "{\"my.metric\",z=\"a\\\\b\\nc\\\"d\",\"x.y\"=\"\u{e9}\",e=\"\"} 1\n";
        let s = parse(body, Format::PrometheusText).unwrap();
        assert_eq!(s[0].labels.metric_name(), Some("my.metric"));
        assert_eq!(s[0].labels.get("z"), Some("a\\b\nc\"d"));
        assert_eq!(s[0].labels.get("x.y"), Some("\u{e9}"));
        assert_eq!(s[0].labels.get("e"), None);
        assert_eq!(s[0].labels.len(), 3);
    }

    /// `parse_float` before [`plain_decimal`]: what its values must stay bit for bit.
    fn reference_parse_float(s: &str) -> Option<f64> {
        match s {
            "" => None,
            _ if s.eq_ignore_ascii_case("nan") => Some(f64::NAN),
            _ if s.eq_ignore_ascii_case("+inf") || s.eq_ignore_ascii_case("inf") => {
                Some(f64::INFINITY)
            }
            _ if s.eq_ignore_ascii_case("-inf") => Some(f64::NEG_INFINITY),
            _ if s.bytes().all(|b| {
                b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_')
            }) =>
            {
                s.replace('_', "").parse::<f64>().ok()
            }
            _ => None,
        }
    }

    fn assert_same_value(text: &str) {
        let got = parse_float(text).map(f64::to_bits);
        let want = reference_parse_float(text).map(f64::to_bits);
        assert_eq!(got, want, "{text:?}");
    }

    /// Strings of digits, points and signs, from a fixed xorshift sequence.
    fn decimal_strings(count: usize) -> Vec<String> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"0123456789012345678901234567890123456789.-+e_";
        let mut out = Vec::with_capacity(count * 4);
        for _ in 0..count {
            let len = 1 + (next() % 26) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char)
                .collect();
            out.push(s);
            let f = f64::from_bits(next());
            let g = (next() % 1_000_000_000) as f64 / 7.0;
            out.push(format!("{f}"));
            out.push(format!("{g}"));
            out.push(format!("{:.3}", g));
            out.push(format!("-{}", next() >> (next() % 64)));
        }
        out
    }

    /// The fast path reads integers and decimals to the same bits as `f64::from_str`.
    #[test]
    fn values_are_the_same_bits_as_from_str() {
        let edges = [
            "0",
            "-0",
            "+0",
            "0.0",
            "-0.0",
            "1",
            "1.",
            ".5",
            "-.5",
            "+.5",
            "-",
            "+",
            ".",
            "..",
            "1..2",
            "1.2.3",
            "0.1",
            "0.3",
            "2.5",
            "-2.5",
            "123.456",
            "1e5",
            "1E-5",
            "1_000",
            "1_0.5",
            "9007199254740991",
            "9007199254740992",
            "9007199254740993",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "1.0000000000000000000000",
            "00000000000000000000000000001",
            "4503599627370495.5",
            "4503599627370497.5",
            "0.1000000000000000055511151231257827",
            "179769313486231570000000000000000000000",
            "NaN",
            "nan",
            "+Inf",
            "-inf",
            "Inf",
            "infinity",
            "0x10",
            "1 ",
            " 1",
            "",
        ];
        for text in edges {
            assert_same_value(text);
        }
        // The fast path is taken, and keeps the sign of zero.
        assert_eq!(plain_decimal(b"142.857"), Some(142.857));
        assert_eq!(
            plain_decimal(b"-0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        assert_eq!(plain_decimal(b"1e5"), None);
        for text in decimal_strings(20_000) {
            assert_same_value(&text);
        }
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/scrape_text");
        let files = std::fs::read_dir(corpus).expect("the fuzz corpus of scrape_text");
        for file in files {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            for word in String::from_utf8_lossy(&bytes).split_ascii_whitespace() {
                assert_same_value(word);
            }
        }
    }

    #[test]
    fn never_panics_on_truncated_input() {
        let body = "a{b=\"c\\\\\",d=\"\u{e9}\"} 1 2\n";
        for end in 0..=body.len() {
            if let Some(prefix) = body.get(..end) {
                let _ = parse(prefix, Format::PrometheusText);
                let _ = parse(prefix, Format::OpenMetrics);
            }
        }
    }
}

#[cfg(test)]
mod wide_series {
    use super::*;

    fn wide(labels: usize) -> String {
        let mut body = String::from("wide{");
        for i in 0..labels {
            body.push_str(&format!("l{i}=\"v\","));
        }
        body.push_str("} 1\n");
        body
    }

    /// A target sent one series of 200,000 labels: the duplicate check was a linear search
    /// per label (O(N²)), so it took minutes; now the time grows with N.
    #[test]
    fn parse_time_grows_linearly_with_the_labels_of_a_series() {
        for n in [10_000, 40_000, 200_000] {
            let body = wide(n);
            let began = std::time::Instant::now();
            let parsed = parse(&body, Format::PrometheusText).unwrap();
            let took = began.elapsed();
            eprintln!("{n} labels: {took:?}");
            assert_eq!(parsed[0].labels.len(), n + 1);
            assert!(
                took < std::time::Duration::from_secs(20),
                "{n} labels took {took:?}"
            );
        }
        let dup = wide(100).replace("l99=", "l3=");
        let e = parse(&dup, Format::PrometheusText).unwrap_err();
        assert!(e.message.contains("duplicate label name \"l3\""), "{e}");
    }

    #[test]
    fn a_set_stop_flag_ends_the_parse() {
        let stop = AtomicBool::new(true);
        let e = parse_until_stopped(&wide(5000), Format::PrometheusText, &stop).unwrap_err();
        assert_eq!(e.message, STOPPED);
    }
}
