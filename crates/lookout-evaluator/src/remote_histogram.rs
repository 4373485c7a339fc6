//! Native histograms in the query results of a Prometheus-API server (remote mode).
//!
//! Prometheus writes a histogram sample as `"histogram": [<time>, {"count": "<n>", "sum":
//! "<n>", "buckets": [[<boundary rule>, "<lower>", "<upper>", "<count>"], ...]}]`: only the
//! populated buckets, in ascending order, by their boundaries. Rule 0 (`(lower, upper]`)
//! marks a positive bucket, 1 (`[lower, upper)`) a negative one, 3 (`[lower, upper]`) the
//! zero bucket `[-threshold, threshold]`; Prometheus never writes 2 (open on both sides) for
//! an exponential histogram. Neither the schema nor the zero threshold nor the counter reset
//! hint is written, so they are inferred:
//!
//! * the schema from the boundaries: bucket `i` of schema `s` is `(2^((i-1)/2^s), 2^(i/2^s)]`,
//!   so the ratio of a bucket's boundaries is `2^(2^-s)`, a different one for every schema;
//! * the zero threshold from the zero bucket; without one (it holds no observations), from a
//!   bucket that reaches into it (Prometheus shows only the part of such a bucket outside the
//!   zero bucket, so its inner boundary is the threshold); else 0, which gives the same
//!   buckets;
//! * the counter reset hint is left unknown.
//!
//! When the boundaries fit several schemas equally (no buckets, or only buckets cut by the
//! zero threshold) the highest is taken: every one of them gives the same buckets. Boundaries
//! that fit no schema are an error, never a guess. Custom-bucket histograms (schema -53) are
//! refused: the JSON leaves out their empty buckets, so their bounds cannot be recovered (and
//! remote write 1.0 has no field for them). The first bucket of one, `[-Inf, bound]`, or a
//! bound off every exponential grid gives that error; custom buckets whose populated
//! buckets all happen to lie on one exponential grid cannot be told from an exponential
//! histogram and are read as one, with the same boundaries and counts.

use lookout_promql::histogram::{
    Bucket, FloatHistogram, MAX_SCHEMA, MIN_SCHEMA, exponential_index_range,
};
use serde_json::Value;

/// Most buckets read per histogram (Prometheus's scrape `native_histogram_bucket_limit` is
/// typically 160; a histogram at schema 8 spanning nine orders of magnitude has ~7,700).
pub const MAX_HISTOGRAM_BUCKETS: usize = 16_384;

/// Why a histogram that fits no exponential schema is refused.
const CUSTOM_BUCKETS: &str = "custom-bucket histograms (schema -53) are not read in remote \
     mode, as the JSON leaves out their empty buckets and so their bounds";

/// How far, in bucket indexes, a boundary may lie from the exact one of its schema: the
/// rounding of Prometheus's bound table and of `log2` is ~1e-11 at schema 8, the nearest
/// other boundary is 1 away.
const INDEX_TOLERANCE: f64 = 1e-6;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    Negative,
    Zero,
    Positive,
}

/// One bucket of the JSON: its side and its boundaries as absolute values, the one nearer
/// to zero and the one farther from it (the zero bucket: 0 and its threshold).
#[derive(Clone, Copy, Debug)]
struct JsonBucket {
    side: Side,
    near: f64,
    far: f64,
    count: f64,
}

/// How a bucket's boundary nearer to zero fits a schema.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Near {
    /// On the grid.
    Exact,
    /// Above the grid: the bucket reaches into the zero bucket, this is the threshold.
    Clamped,
    /// 0: the lowest bucket of the schema, whose lower bound is below the smallest float.
    Underflow,
}

/// At most 40 characters of `s`, for error messages about hostile input.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn number(v: &Value, what: &str) -> Result<f64, String> {
    let Some(s) = v.as_str() else {
        return Err(format!("{what} is not a string"));
    };
    s.parse::<f64>()
        .map_err(|_| format!("{what} {:?} is not a number", excerpt(s)))
}

/// Reads bucket number `n` (from 1) of the JSON list.
fn parse_bucket(n: usize, v: &Value) -> Result<JsonBucket, String> {
    let shape = || format!("bucket {n} is not [boundary_rule, \"lower\", \"upper\", \"count\"]");
    let parts = v.as_array().filter(|a| a.len() == 4).ok_or_else(shape)?;
    let rule = parts[0].as_u64().filter(|r| *r <= 3).ok_or_else(shape)?;
    let lower = number(&parts[1], &format!("bucket {n}'s lower boundary"))?;
    let upper = number(&parts[2], &format!("bucket {n}'s upper boundary"))?;
    let count = number(&parts[3], &format!("bucket {n}'s count"))?;
    if !(lower < upper || (rule == 3 && lower == upper)) {
        return Err(format!(
            "bucket {n}'s boundaries {lower} and {upper} are not ascending"
        ));
    }
    let (side, near, far) = match rule {
        3 if lower == -upper && upper.is_finite() => (Side::Zero, 0.0, upper),
        0 if lower >= 0.0 => (Side::Positive, lower, upper),
        1 if upper <= 0.0 => (Side::Negative, -upper, -lower),
        _ => {
            return Err(format!(
                "bucket {n} [{lower}, {upper}] with boundary rule {rule} is not one of an \
                 exponential histogram; {CUSTOM_BUCKETS}"
            ));
        }
    };
    Ok(JsonBucket {
        side,
        near,
        far,
        count,
    })
}

/// `log2(x) * 2^s`, the bucket index `x` is the upper boundary of in schema `s`, when it is
/// whole (within [`INDEX_TOLERANCE`]).
fn boundary_index(x: f64, s: i32) -> Option<i64> {
    if x == f64::MAX {
        // The last bucket of finite numbers ends at the largest float, not at 2^1024.
        return Some(if s >= 0 { 1024 << s } else { 1024 >> -s });
    }
    let scaled = scaled_log2(x, s);
    let i = scaled.round();
    (scaled.is_finite() && (scaled - i).abs() <= INDEX_TOLERANCE).then_some(i as i64)
}

fn scaled_log2(x: f64, s: i32) -> f64 {
    if s >= 0 {
        x.log2() * f64::from(1u32 << s)
    } else {
        x.log2() / f64::from(1u32 << -s)
    }
}

/// The index of a side bucket in schema `s` and how its inner boundary fits; `None` when
/// its boundaries are not those of a bucket of `s`.
fn fit(b: &JsonBucket, s: i32) -> Option<(i32, Near)> {
    let (lo, hi) = exponential_index_range(s);
    let index = if b.far == f64::INFINITY {
        i64::from(hi)
    } else {
        boundary_index(b.far, s)?
    };
    let index = i32::try_from(index)
        .ok()
        .filter(|i| (lo..=hi).contains(i))?;
    if b.near == 0.0 {
        return (index == lo).then_some((index, Near::Underflow));
    }
    if boundary_index(b.near, s) == Some(i64::from(index) - 1) {
        return Some((index, Near::Exact));
    }
    let inner = scaled_log2(b.near, s);
    (inner > f64::from(index - 1) && inner < f64::from(index)).then_some((index, Near::Clamped))
}

/// The buckets laid out in schema `s`: the zero threshold, the negative and positive
/// buckets, and whether a bucket fits `s` exactly (which only one schema can do); `None`
/// when the boundaries are not those of `s` with one zero threshold.
fn layout(
    sides: &[JsonBucket],
    s: i32,
    zero: Option<f64>,
) -> Option<(f64, Vec<Bucket>, Vec<Bucket>, bool)> {
    let negatives = sides.iter().filter(|b| b.side == Side::Negative).count();
    let mut threshold = zero;
    let mut exact = false;
    let (mut negative, mut positive) = (Vec::new(), Vec::new());
    for (k, b) in sides.iter().enumerate() {
        let (index, near) = fit(b, s)?;
        match near {
            Near::Exact => exact = true,
            Near::Underflow => {}
            Near::Clamped => {
                // Only the buckets next to the zero bucket can reach into it.
                let innermost = k + 1 == negatives || k == negatives;
                if !innermost || threshold.is_some_and(|t| t != b.near) {
                    return None;
                }
                threshold = Some(b.near);
            }
        }
        let bucket = Bucket {
            index,
            count: b.count,
        };
        match b.side {
            Side::Negative => negative.push(bucket),
            _ => positive.push(bucket),
        }
    }
    let threshold = threshold.unwrap_or(0.0);
    // Prometheus cuts every bucket at the threshold: none starts inside the zero bucket.
    if sides.iter().any(|b| b.near < threshold) {
        return None;
    }
    negative.reverse();
    Some((threshold, negative, positive, exact))
}

/// Checks the buckets ascend without overlapping, with at most one zero bucket.
fn check_order(buckets: &[JsonBucket]) -> Result<(), String> {
    let bounds = |b: &JsonBucket| match b.side {
        Side::Negative => (-b.far, -b.near),
        Side::Zero => (-b.far, b.far),
        Side::Positive => (b.near, b.far),
    };
    for (n, pair) in buckets.windows(2).enumerate() {
        if pair[0].side == Side::Zero && pair[1].side == Side::Zero {
            return Err(format!(
                "buckets {} and {} are both zero buckets",
                n + 1,
                n + 2
            ));
        }
        if bounds(&pair[0]).1 > bounds(&pair[1]).0 {
            return Err(format!(
                "bucket {} does not start after bucket {} ends: buckets must ascend without overlapping",
                n + 2,
                n + 1
            ));
        }
    }
    Ok(())
}

/// A histogram of a query result (the object after the time in `"histogram": [...]`).
pub fn histogram_from_json(v: &Value) -> Result<FloatHistogram, String> {
    let Some(obj) = v.as_object() else {
        return Err("histogram is not an object".into());
    };
    let count = number(obj.get("count").unwrap_or(&Value::Null), "histogram count")?;
    let sum = number(obj.get("sum").unwrap_or(&Value::Null), "histogram sum")?;
    let list: &[Value] = match obj.get("buckets") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => return Err("histogram buckets are not a list".into()),
    };
    if list.len() > MAX_HISTOGRAM_BUCKETS {
        return Err(format!(
            "histogram has {} buckets, more than the {MAX_HISTOGRAM_BUCKETS} read per sample",
            list.len()
        ));
    }
    let buckets = list
        .iter()
        .enumerate()
        .map(|(n, b)| parse_bucket(n + 1, b))
        .collect::<Result<Vec<_>, _>>()?;
    check_order(&buckets)?;
    let zero = buckets.iter().find(|b| b.side == Side::Zero);
    let sides: Vec<JsonBucket> = buckets
        .iter()
        .filter(|b| b.side != Side::Zero)
        .copied()
        .collect();
    let mut fallback = None;
    for s in (MIN_SCHEMA..=MAX_SCHEMA).rev() {
        if let Some((threshold, negative, positive, exact)) = layout(&sides, s, zero.map(|z| z.far))
        {
            let h = FloatHistogram {
                schema: s,
                zero_threshold: threshold,
                zero_count: zero.map_or(0.0, |z| z.count),
                count,
                sum,
                positive,
                negative,
                ..FloatHistogram::default()
            };
            if exact {
                return checked(h);
            }
            fallback.get_or_insert(h);
        }
    }
    match fallback {
        Some(h) => checked(h),
        None => Err(format!(
            "the bucket boundaries fit no exponential schema (-4 to 8) with one zero \
             threshold; {CUSTOM_BUCKETS}"
        )),
    }
}

fn checked(h: FloatHistogram) -> Result<FloatHistogram, String> {
    h.check_structure()?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_promql::histogram::notation;
    use serde_json::json;

    /// A histogram's JSON as Prometheus writes it: its non-empty buckets in ascending
    /// order, cut at the zero threshold, with their boundary rules.
    fn render(h: &FloatHistogram) -> Value {
        let text = |v: f64| match v {
            f64::INFINITY => "+Inf".to_string(),
            f64::NEG_INFINITY => "-Inf".to_string(),
            v => format!("{v}"),
        };
        let buckets: Vec<Value> = h
            .all_buckets()
            .into_iter()
            .filter(|b| b.count != 0.0)
            .map(|b| {
                let rule = if b.lower == -b.upper {
                    3
                } else if b.upper <= 0.0 {
                    1
                } else {
                    0
                };
                json!([rule, text(b.lower), text(b.upper), text(b.count)])
            })
            .collect();
        let mut v = json!({"count": text(h.count), "sum": text(h.sum)});
        if !buckets.is_empty() {
            v["buckets"] = Value::Array(buckets);
        }
        v
    }

    fn notation(text: &str) -> FloatHistogram {
        notation::parse(text).unwrap().h
    }

    fn refused(v: Value, why: &str) {
        let e = histogram_from_json(&v).unwrap_err();
        assert!(e.contains(why), "{v}: {e}");
    }

    #[test]
    fn every_schema_round_trips() {
        for s in MIN_SCHEMA..=MAX_SCHEMA {
            for text in [
                format!("schema:{s} sum:12.5 count:9 buckets:[1 2 0 3] offset:-2"),
                format!(
                    "schema:{s} sum:-3 count:10 z_bucket:2 z_bucket_w:1e-20 \
                     buckets:[1 1.5] offset:3 n_buckets:[2 0.5 3] n_offset:-1"
                ),
                format!("schema:{s} sum:1 count:3 buckets:[1 2] offset:1 n_buckets:[0.25]"),
                // A bucket near 2^-900, the largest one and the overflow bucket of
                // infinities.
                format!(
                    "schema:{s} count:3 buckets:[1] offset:{} n_buckets:[1 1] n_offset:{}",
                    if s >= 0 { -900 << s } else { -(900 >> -s) },
                    exponential_index_range(s).1 - 1
                ),
            ] {
                let mut h = notation(&text);
                h.compact();
                let got =
                    histogram_from_json(&render(&h)).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(got, h, "{text}");
            }
        }
    }

    #[test]
    fn prometheus_json_is_read() {
        // What Prometheus 2.42 answered for `rate(h[1m])` of a schema-3 histogram with
        // client_golang's default zero threshold (2^-128) in this crate's remote-mode test.
        let v = json!({"count": "3.1719999999999997", "sum": "0.2257", "buckets": [
            [1, "-0.17677669529663687", "-0.1621049443313762", "0.4066666666666666"],
            [1, "-0.1051120519067143", "-0.0963881765879963", "0.3456666666666666"],
            [1, "-0.0963881765879963", "-0.08838834764831843", "0.2846666666666666"],
            [3, "-2.938735877055719e-39", "2.938735877055719e-39", "0.1423333333333333"],
            [0, "0.4204482076268572", "0.45850202160233555", "0.10166666666666666"],
            [0, "0.45850202160233555", "0.5", "0.16266666666666665"],
            [0, "0.7071067811865475", "0.7711054127039704", "0.22366666666666665"],
            [0, "0.9170040432046711", "1", "0.2846666666666666"],
            [0, "1", "1.0905077326652577", "0.3456666666666666"],
            [0, "1.0905077326652577", "1.189207115002721", "0.4066666666666666"],
            [0, "2", "2.1810154653305154", "0.4676666666666666"]]});
        let h = histogram_from_json(&v).unwrap();
        assert_eq!(h.schema, 3);
        assert_eq!(h.zero_threshold, 2f64.powi(-128));
        assert_eq!(h.zero_count, 0.1423333333333333);
        assert_eq!((h.count, h.sum), (3.1719999999999997, 0.2257));
        let indexes = |b: &[Bucket]| b.iter().map(|b| b.index).collect::<Vec<_>>();
        assert_eq!(indexes(&h.negative), [-27, -26, -20]);
        assert_eq!(indexes(&h.positive), [-9, -8, -3, 0, 1, 2, 9]);
        assert_eq!(h.negative[2].count, 0.4066666666666666);
        assert_eq!(h.positive[6].count, 0.4676666666666666);
    }

    #[test]
    fn thresholds_come_from_cut_buckets() {
        // Schema 0 bucket 0 is (0.5, 1]; a threshold of 0.7 shows it as (0.7, 1].
        let h = notation("schema:0 z_bucket_w:0.7 buckets:[1 1] count:2");
        let v = render(&h);
        assert_eq!(v["buckets"][0], json!([0, "0.7", "1", "1"]));
        let got = histogram_from_json(&v).unwrap();
        assert_eq!((got.schema, got.zero_threshold), (0, 0.7));
        assert_eq!(got, h);
        // The same threshold cutting a negative bucket, with no zero bucket shown.
        let h = notation("schema:0 z_bucket_w:0.7 n_buckets:[1 1] count:2");
        assert_eq!(histogram_from_json(&render(&h)).unwrap(), h);
        // Disagreeing thresholds, a cut that is not next to zero, a bucket inside the
        // zero bucket.
        let cut = |rule, lower: &str, upper: &str| json!([rule, lower, upper, "1"]);
        for buckets in [
            json!([cut(1, "-1", "-0.7"), cut(0, "0.8", "1")]),
            json!([cut(3, "-0.6", "0.6"), cut(0, "0.7", "1")]),
            json!([cut(0, "0.7", "1"), cut(0, "1", "2"), cut(0, "2.5", "4")]),
        ] {
            refused(
                json!({"count": "3", "sum": "1", "buckets": buckets}),
                "fit no",
            );
        }
        let inside = json!([cut(3, "-0.6", "0.6"), cut(0, "0.25", "0.5")]);
        refused(
            json!({"count": "2", "sum": "1", "buckets": inside}),
            "overlapping",
        );
    }

    #[test]
    fn undecidable_schemas_take_the_highest() {
        let empty = histogram_from_json(&json!({"count": "0", "sum": "0"})).unwrap();
        assert_eq!((empty.schema, empty.zero_threshold), (MAX_SCHEMA, 0.0));
        assert_eq!(empty.count, 0.0);
        let zero = json!({"count": "2", "sum": "0", "buckets": [[3, "-0.001", "0.001", "2"]]});
        let h = histogram_from_json(&zero).unwrap();
        assert_eq!((h.schema, h.zero_threshold, h.zero_count), (8, 0.001, 2.0));
        // Only a cut bucket: every schema whose bucket holds the cut renders the same.
        let h = notation("schema:-2 z_bucket_w:0.7 buckets:[1] count:1");
        let v = render(&h);
        let got = histogram_from_json(&v).unwrap();
        assert_eq!(render(&got), v);
        // Schema 1's bucket (0.707, 1] cannot hold a cut at 0.7; schema 0's (0.5, 1] can.
        assert_eq!(got.schema, 0);
        // A zero threshold of 0 shows the zero bucket as [-0, 0].
        let v = json!({"count": "1", "sum": "0", "buckets": [[3, "-0", "0", "1"]]});
        assert_eq!(histogram_from_json(&v).unwrap().zero_count, 1.0);
    }

    #[test]
    fn hostile_histograms_are_refused() {
        let with = |buckets: Value| json!({"count": "1", "sum": "1", "buckets": buckets});
        let many = vec![json!([0, "1", "2", "1"]); MAX_HISTOGRAM_BUCKETS + 1];
        refused(
            with(Value::Array(many)),
            "more than the 16384 read per sample",
        );
        refused(
            json!({"count": 1, "sum": "1"}),
            "histogram count is not a string",
        );
        refused(
            json!({"count": "1", "sum": "x1"}),
            "histogram sum \"x1\" is not a number",
        );
        refused(json!({"count": "1"}), "histogram sum is not a string");
        refused(json!(["1", "1"]), "not an object");
        refused(
            json!({"count": "1", "sum": "1", "buckets": {}}),
            "not a list",
        );
        let long = "9".repeat(10_000) + "x";
        let e = histogram_from_json(&with(json!([[0, "1", long, "1"]]))).unwrap_err();
        assert!(e.contains("upper boundary") && e.len() < 200, "{e}");
        for bad in [
            json!([[0, "1", "2"]]),
            json!([[0, "1", "2", "1", "1"]]),
            json!([[4, "1", "2", "1"]]),
            json!([["0", "1", "2", "1"]]),
            json!([[-1, "1", "2", "1"]]),
            json!(["0 1 2 1"]),
        ] {
            refused(with(bad), "is not [boundary_rule");
        }
        refused(with(json!([[0, "2", "1", "1"]])), "not ascending");
        refused(with(json!([[0, "NaN", "1", "1"]])), "not ascending");
        refused(
            with(json!([[0, "1", "2", "one"]])),
            "count \"one\" is not a number",
        );
        refused(
            with(json!([[0, "1", "2", "1"], [0, "1.5", "2", "1"]])),
            "overlapping",
        );
        refused(
            with(json!([[0, "2", "4", "1"], [0, "1", "2", "1"]])),
            "overlapping",
        );
        refused(
            with(json!([[3, "-0", "0", "1"], [3, "-0", "0", "1"]])),
            "both zero buckets",
        );
        refused(
            with(json!([[0, "1", "3", "1"]])),
            "fit no exponential schema",
        );
        refused(
            with(json!([[0, "1", "2", "1"], [0, "2", "5", "1"]])),
            "fit no",
        );
        // A schema-0 bucket beside a schema-1 one.
        refused(
            with(json!([
                [0, "1", "2", "1"],
                [0, "2", "2.82842712474619", "1"]
            ])),
            "fit no",
        );
        // Indexes past what a float reaches, at schema 0 bucket 1025 is the overflow bucket.
        refused(with(json!([[0, "1e300", "+Inf", "1"]])), "fit no");
        // The lowest bucket of schema 0, (2^-1075, 2^-1074], starts at 0 in floats.
        let lowest = json!([[0, "0", "5e-324", "1"], [0, "1", "2", "1"]]);
        let h = histogram_from_json(&with(lowest)).unwrap();
        assert_eq!((h.schema, h.positive[0].index), (0, -1074));
        refused(
            with(json!([[0, "0", "1e-300", "1"], [0, "1", "2", "1"]])),
            "fit no",
        );
        let overflow = format!("{}", f64::MAX);
        assert!(histogram_from_json(&with(json!([[0, overflow, "+Inf", "1"]]))).is_ok());
    }

    #[test]
    fn custom_buckets_are_refused_with_the_reason() {
        let with = |buckets: Value| json!({"count": "1", "sum": "1", "buckets": buckets});
        // Prometheus 3 writes a custom-bucket histogram's first bucket as [-Inf, bound],
        // later ones as (bound, bound]; bounds may be negative; rule 2 is never written.
        for bad in [
            json!([[3, "-Inf", "0.1", "1"]]),
            json!([[0, "-5", "-1", "1"]]),
            json!([[0, "5", "+Inf", "1"]]),
            json!([[2, "1", "2", "1"]]),
            json!([[1, "1", "2", "1"]]),
        ] {
            refused(
                with(bad),
                "custom-bucket histograms (schema -53) are not read",
            );
        }
    }
}
