#![allow(dead_code)]
//! A structure-aware PromQL generator for the fuzz targets: a few input bytes expand into
//! expressions of the shapes that once crashed the evaluator, which byte-level mutation of
//! text seldom reaches within `-max_len`: nesting thousands of levels deep (`sum(sum(…))`,
//! `((…))`, nested calls, aggregations and subqueries), long operator chains
//! (`a + b + …`), long unary chains (`- - - x`), long label values and long names.
//!
//! Each byte read is a decision; an exhausted input reads as zeros, so every input gives
//! one expression and the same input always gives the same one. Counts are read as two
//! bytes, so a three-byte input can ask for a 5,000-level nesting; the whole text stays
//! under [`MAX_TEXT`] (the 1 MB the hostile tests send too).

/// Longest text generated.
pub const MAX_TEXT: usize = 1 << 20;

/// Reads decisions from the fuzzer's bytes.
pub struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, at: 0 }
    }

    /// The next byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// One of `choices`.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.byte()) % choices.len()]
    }

    /// A count below `most`, from two bytes.
    pub fn count(&mut self, most: usize) -> usize {
        let n = usize::from(self.byte()) << 8 | usize::from(self.byte());
        n % most.max(1)
    }
}

const METRICS: &[&str] = &[
    "up",
    "http_requests_total",
    "temperature",
    "flaky",
    "special",
    "latency_seconds_bucket",
    "nonexistent",
];
const LABELS: &[&str] = &["job", "instance", "code", "le", "kind", "room", "__name__"];
const MATCH_OPS: &[&str] = &["=", "!=", "=~", "!~"];
const BINARY_OPS: &[&str] = &[
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<=",
    "> bool",
    "and",
    "or",
    "unless",
    "atan2",
    "+ on(job)",
    "* ignoring(code) group_left",
];
/// Wrappers around an instant vector: opening and closing text.
const WRAPPERS: &[(&str, &str)] = &[
    ("sum(", ")"),
    ("(", ")"),
    ("-", ""),
    ("abs(", ")"),
    ("sum by (job) (", ")"),
    ("topk(2, ", ")"),
    ("count_values(\"v\", ", ")"),
    ("label_replace(", ", \"dst\", \"$1\", \"job\", \"(.*)\")"),
    ("label_join(", ", \"dst\", \",\", \"job\", \"code\")"),
    ("clamp_min(", ", 0)"),
    ("histogram_quantile(0.9, ", ")"),
    ("max_over_time((", ")[5m:1m])"),
    ("rate((", ")[2m:30s])"),
    ("vector(scalar(", "))"),
    ("sort_desc(", ")"),
    ("absent(", ")"),
    ("quantile(0.5, ", ")"),
    ("timestamp(", ")"),
    ("", " offset 1m"),
    ("", " + 1"),
];
const RANGE_FUNCTIONS: &[&str] = &[
    "rate",
    "increase",
    "delta",
    "irate",
    "deriv",
    "changes",
    "resets",
    "avg_over_time",
    "count_over_time",
    "last_over_time",
    "stddev_over_time",
    "absent_over_time",
];

/// Appends `text` unless the output would pass [`MAX_TEXT`].
fn push(out: &mut String, text: &str) {
    if out.len() + text.len() <= MAX_TEXT {
        out.push_str(text);
    }
}

/// Appends `text` `n` times (as many as fit).
fn repeat(out: &mut String, text: &str, n: usize) {
    let fit = (MAX_TEXT.saturating_sub(out.len())) / text.len().max(1);
    out.push_str(&text.repeat(n.min(fit)));
}

/// A label value: a short word or a long run of one character (at most `long` of them).
fn label_value(r: &mut Bytes, long: usize) -> String {
    match r.byte() % 4 {
        0 => String::new(),
        1 => r
            .pick(&["api", "a:9100", "200", "0.5", "+Inf", "node"])
            .to_string(),
        2 => r
            .pick(&["a", "é", ".", "\\\\", "ab|"])
            .repeat(r.count(long)),
        _ => format!("{}.*", r.pick(&["a", "b", "5", "n"])),
    }
}

/// A vector selector, `name{label op "value", …}` (matchers sometimes many or long).
fn selector(r: &mut Bytes, out: &mut String) {
    let name = r.pick(METRICS);
    let long_name;
    let name = if r.byte() % 8 == 0 {
        long_name = format!("m{}", "_".repeat(r.count(70_000)));
        &long_name
    } else {
        name
    };
    push(out, name);
    let matchers = match r.byte() % 4 {
        0 => 0,
        1 | 2 => 1 + usize::from(r.byte() % 3),
        _ => r.count(2_000),
    };
    if matchers == 0 {
        return;
    }
    push(out, "{");
    for i in 0..matchers {
        if out.len() >= MAX_TEXT / 2 {
            break;
        }
        if i > 0 {
            push(out, if r.byte() % 16 == 0 { " or " } else { "," });
        }
        let (name, op) = (r.pick(LABELS), r.pick(MATCH_OPS));
        // Regex values stay short enough to compile quickly: a pattern of 100 KB takes
        // promql-parser a large part of a second to compile, and the harness parses each
        // eval several times, so such inputs only report slowness, not bugs.
        let long = if op.contains('~') { 2_000 } else { 70_000 };
        let m = format!("{name}{op}{:?}", label_value(r, long));
        push(out, &m);
    }
    push(out, "}");
}

/// An instant-vector or scalar expression, nested at most `budget` generator levels (the
/// tree itself may be far deeper: nesting and chains are loops, not recursion).
pub fn expr(r: &mut Bytes, out: &mut String, budget: u8) {
    let kind = if budget == 0 {
        r.byte() % 2
    } else {
        r.byte() % 9
    };
    match kind {
        0 => selector(r, out),
        1 => push(
            out,
            r.pick(&["1", "0.5", "-2", "NaN", "Inf", "1e308", "0x10"]),
        ),
        2 => {
            // A long chain: a + b + c + …
            let n = r.count(6_000);
            let op = r.pick(BINARY_OPS);
            expr(r, out, budget - 1);
            for _ in 0..n {
                if out.len() >= MAX_TEXT - 64 {
                    break;
                }
                push(out, " ");
                push(
                    out,
                    if r.byte() % 4 == 0 {
                        r.pick(BINARY_OPS)
                    } else {
                        op
                    },
                );
                push(out, " ");
                selector(r, out);
            }
        }
        3 => {
            // Deep nesting of one wrapper.
            let (open, close) = r.pick(WRAPPERS);
            let n = r.count(6_000);
            repeat(out, open, n);
            expr(r, out, budget - 1);
            repeat(out, close, n);
        }
        4 => {
            // Deep nesting of a mix of wrappers: the closers mirror the openers.
            let n = r.count(3_000);
            let mut closers = Vec::with_capacity(n);
            for _ in 0..n {
                let (open, close) = r.pick(WRAPPERS);
                push(out, open);
                closers.push(close);
            }
            expr(r, out, budget - 1);
            for close in closers.iter().rev() {
                push(out, close);
            }
        }
        5 => {
            // A unary chain.
            let n = r.count(6_000);
            repeat(out, r.pick(&["-", "+", "- ", "-+"]), n);
            expr(r, out, budget - 1);
        }
        6 => {
            // A range function over a selector or a (nested) subquery.
            push(out, r.pick(RANGE_FUNCTIONS));
            push(out, "(");
            if r.byte() % 2 == 0 {
                selector(r, out);
            } else {
                push(out, "(");
                expr(r, out, budget - 1);
                push(out, ")");
            }
            push(
                out,
                r.pick(&[
                    "[5m]",
                    "[1m:15s]",
                    "[10m:]",
                    "[5m] offset -1m",
                    "[1m] @ 600",
                ]),
            );
            push(out, ")");
        }
        7 => {
            // A binary operation of two generated sides.
            push(out, "(");
            expr(r, out, budget - 1);
            push(out, ") ");
            push(out, r.pick(BINARY_OPS));
            push(out, " (");
            expr(r, out, budget - 1);
            push(out, ")");
        }
        _ => {
            // An aggregation with a generated parameter.
            push(out, r.pick(&["topk(", "bottomk(", "quantile(", "limitk("]));
            expr(r, out, budget - 1);
            push(out, r.pick(&[", ", ") by (job) ("]));
            expr(r, out, budget - 1);
            push(out, ")");
        }
    }
}

/// One generated expression from `data`.
pub fn expression(data: &[u8]) -> String {
    let mut out = String::new();
    expr(&mut Bytes::new(data), &mut out, 4);
    out
}
