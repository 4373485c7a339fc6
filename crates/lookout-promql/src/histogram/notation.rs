//! The test-script notation of histograms, `{{schema:0 sum:5 count:4 z_bucket:1
//! z_bucket_w:0.001 buckets:[1 2 1] offset:1 n_buckets:[…] n_offset:… custom_values:[…]
//! counter_reset_hint:gauge}}`, and the series forms `{{…}}xN` and `{{…}}+{{…}}xN`
//! (`-` too), as Prometheus's test language and rule unit tests write them.
//!
//! The parser is a single pass over the text with no recursion; lists are bounded by
//! [`MAX_LIST`] and expansions by the caller's value limit.

use std::sync::Arc;

use super::{Bucket, CounterResetHint, FloatHistogram, Span};
use crate::engine::value::format_float;

/// Most numbers in one bucket or bound list.
pub const MAX_LIST: usize = 100_000;

/// A parsed histogram and whether its counter reset hint was written out (the test
/// harness compares the hint only then).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The histogram.
    pub h: FloatHistogram,
    /// `counter_reset_hint:` was given.
    pub hint_set: bool,
}

fn number(s: &str) -> Result<f64, String> {
    crate::promqltest::script::parse_number(s).ok_or_else(|| format!("bad number {s:?}"))
}

fn int(s: &str, key: &str) -> Result<i32, String> {
    let v: i64 = s
        .parse()
        .map_err(|_| format!("bad integer {s:?} for {key}"))?;
    i32::try_from(v).map_err(|_| format!("{key} {v} out of range"))
}

/// Splits `body` into `key:value` items; a value in brackets may hold spaces.
fn items(body: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("expected key:value in histogram at {rest:?}"))?;
        let key = rest[..colon].trim();
        let after = rest[colon + 1..].trim_start();
        let end = if after.starts_with('[') {
            after
                .find(']')
                .map(|i| i + 1)
                .ok_or_else(|| format!("unterminated list for {key}"))?
        } else {
            after.find(char::is_whitespace).unwrap_or(after.len())
        };
        out.push((key, &after[..end]));
        rest = after[end..].trim_start();
    }
    Ok(out)
}

fn list(v: &str, key: &str) -> Result<Vec<f64>, String> {
    let inner = v
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .ok_or_else(|| format!("expected a [list] for {key}"))?;
    let mut out = Vec::new();
    for tok in inner.split_whitespace() {
        if out.len() >= MAX_LIST {
            return Err(format!("{key} holds more than {MAX_LIST} numbers"));
        }
        out.push(number(tok)?);
    }
    Ok(out)
}

fn side(counts: Option<Vec<f64>>, offset: i32) -> Result<Vec<Bucket>, String> {
    let counts = counts.unwrap_or_default();
    let spans = [Span {
        offset,
        length: counts.len() as u32,
    }];
    FloatHistogram::buckets_from_spans(&spans, &counts)
        .ok_or_else(|| "bucket index out of range".to_string())
}

/// Parses the inside of `{{…}}`.
pub fn parse(body: &str) -> Result<Parsed, String> {
    let mut h = FloatHistogram::default();
    let mut hint_set = false;
    let (mut pos, mut neg) = (None, None);
    let (mut offset, mut n_offset) = (0, 0);
    for (key, v) in items(body)? {
        match key {
            "schema" => h.schema = int(v, key)?,
            "sum" => h.sum = number(v)?,
            "count" => h.count = number(v)?,
            "z_bucket" => h.zero_count = number(v)?,
            "z_bucket_w" => h.zero_threshold = number(v)?,
            "custom_values" => h.custom_values = Arc::from(list(v, key)?),
            "buckets" => pos = Some(list(v, key)?),
            "n_buckets" => neg = Some(list(v, key)?),
            "offset" => offset = int(v, key)?,
            "n_offset" => n_offset = int(v, key)?,
            "counter_reset_hint" => {
                hint_set = true;
                h.counter_reset_hint = match v {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::Reset,
                    "not_reset" => CounterResetHint::NotReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(format!("bad counter_reset_hint {other:?}")),
                };
            }
            other => return Err(format!("unknown histogram field {other:?}")),
        }
    }
    h.positive = side(pos, offset)?;
    h.negative = side(neg, n_offset)?;
    h.check_structure()?;
    Ok(Parsed { h, hint_set })
}

/// `base`, then `base` combined with `inc` (added, or subtracted with `negate`) `times`
/// times in a row: the values of `{{base}}+{{inc}}x<times>`, at most `keep` of them.
pub fn series(
    base: Parsed,
    inc: &Parsed,
    negate: bool,
    times: usize,
    keep: usize,
) -> Result<Vec<Parsed>, String> {
    let n = times.saturating_add(1).min(keep);
    let mut out = Vec::with_capacity(n);
    let hint_set = inc.hint_set;
    let mut cur = base.h;
    for i in 0..n {
        if i > 0 {
            if cur.schema > inc.h.schema {
                return Err(format!(
                    "error combining histograms: cannot merge from schema {} to {}",
                    inc.h.schema, cur.schema
                ));
            }
            let mut next = cur.clone();
            let r = if negate {
                next.sub(&inc.h)
            } else {
                next.add(&inc.h)
            };
            r.map_err(|e| e.to_string())?;
            cur = next;
        }
        out.push(Parsed {
            h: cur.clone(),
            hint_set,
        });
    }
    Ok(out)
}

/// The notation of `h` (compacted), as Prometheus prints histograms in test failures.
pub fn format(h: &FloatHistogram) -> String {
    format_with(h, format_float)
}

/// [`format`] with numbers written by `f`: `FloatHistogram.TestExpression()`, which
/// promtool's rule unit tests compare and print, writes them with Go's `%g`.
pub fn format_with(h: &FloatHistogram, f: fn(f64) -> String) -> String {
    let mut h = h.clone();
    h.compact();
    let mut res = Vec::new();
    if h.schema != 0 {
        res.push(format!("schema:{}", h.schema));
    }
    if h.count != 0.0 {
        res.push(format!("count:{}", f(h.count)));
    }
    if h.sum != 0.0 {
        res.push(format!("sum:{}", f(h.sum)));
    }
    if h.zero_count != 0.0 {
        res.push(format!("z_bucket:{}", f(h.zero_count)));
    }
    if h.zero_threshold != 0.0 {
        res.push(format!("z_bucket_w:{}", f(h.zero_threshold)));
    }
    let join = |v: &mut dyn Iterator<Item = f64>| v.map(f).collect::<Vec<_>>().join(" ");
    if h.uses_custom_buckets() {
        res.push(format!(
            "custom_values:[{}]",
            join(&mut h.custom_values.iter().copied())
        ));
    }
    if h.counter_reset_hint != CounterResetHint::Unknown {
        res.push(format!(
            "counter_reset_hint:{}",
            h.counter_reset_hint.word()
        ));
    }
    for (buckets, bkey, okey) in [
        (&h.positive, "buckets", "offset"),
        (&h.negative, "n_buckets", "n_offset"),
    ] {
        let Some(first) = buckets.first() else {
            continue;
        };
        if first.index != 0 {
            res.push(format!("{okey}:{}", first.index));
        }
        res.push(format!("{bkey}:[{}]", bucket_list(buckets, f).join(" ")));
    }
    format!("{{{{{}}}}}", res.join(" "))
}

/// The counts of sorted `buckets` as one list, written by `f`. Gaps are written as zeros
/// so that one span holds everything, as `TestExpression()` compacts to one span, while
/// the list stays within [`MAX_LIST`] numbers (what the parser reads back); a gap that
/// would take it past that is written `(N zeros)`, so a wide gap costs no memory.
fn bucket_list(buckets: &[Bucket], f: fn(f64) -> String) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(buckets.len());
    let Some(first) = buckets.first() else {
        return out;
    };
    let mut numbers = 0usize;
    let mut next = i64::from(first.index);
    for b in buckets {
        let gap = usize::try_from(i64::from(b.index) - next).unwrap_or(0);
        if gap > 0 && numbers.saturating_add(gap) < MAX_LIST {
            out.extend(std::iter::repeat_n(f(0.0), gap));
            numbers += gap;
        } else if gap > 0 {
            out.push(format!("({gap} zeros)"));
        }
        out.push(f(b.count));
        numbers += 1;
        next = i64::from(b.index) + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_the_notation() {
        let p = parse("schema:1 sum:5 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 0 2] offset:-1 n_buckets:[ 1 ] counter_reset_hint:gauge").unwrap();
        assert!(p.hint_set);
        assert_eq!(p.h.positive.len(), 3);
        assert_eq!(p.h.positive[0].index, -1);
        assert_eq!(
            format(&p.h),
            "{{schema:1 count:4 sum:5 z_bucket:1 z_bucket_w:0.001 counter_reset_hint:gauge offset:-1 buckets:[1 0 2] n_buckets:[1]}}"
        );
        assert!(parse("{{}}").is_err());
        assert!(parse("buckets:[1 2").is_err());
        assert!(parse("schema:99999999999").is_err());
        let e = parse("").unwrap();
        assert_eq!(e.h, FloatHistogram::default());
    }

    #[test]
    fn wide_gaps_are_written_without_filling_them() {
        let h = |indexes: &[i32]| FloatHistogram {
            positive: indexes
                .iter()
                .map(|&index| Bucket { index, count: 1.0 })
                .collect(),
            ..Default::default()
        };
        // Not a valid histogram (parse refuses it): the formatting alone stays small.
        let wide = format(&h(&[i32::MIN, 0, 1 << 30, i32::MAX]));
        assert_eq!(
            wide,
            "{{offset:-2147483648 buckets:[1 (2147483647 zeros) 1 (1073741823 zeros) 1 (1073741822 zeros) 1]}}"
        );
        // Up to the notation's list limit the gaps are zeros, as Prometheus writes them.
        let full = format(&h(&[0, (MAX_LIST - 1) as i32]));
        assert_eq!(full.matches(' ').count(), MAX_LIST - 1);
        let over = format(&h(&[0, MAX_LIST as i32]));
        assert_eq!(over, "{{buckets:[1 (99999 zeros) 1]}}");
        assert_eq!(format(&h(&[-1, 1, 2])), "{{offset:-1 buckets:[1 0 1 1]}}");
    }

    #[test]
    fn series_add_up() {
        let base = parse("schema:0 sum:4 count:4 buckets:[1 2 1]").unwrap();
        let inc = parse("sum:2 count:1 buckets:[1] offset:1").unwrap();
        let v = series(base, &inc, false, 3, usize::MAX).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(format(&v[3].h), "{{count:7 sum:10 buckets:[1 5 1]}}");
    }
}
