//! Query results written straight into one pre-sized buffer, byte for byte as Prometheus's
//! API writes them (`web/api/v1/json_codec.go`, `util/jsonutil`): field order
//! `status, data` and `resultType, result`; timestamps as seconds with at most three
//! decimals, written from the integer milliseconds; sample values as strings in Go's
//! `strconv` format ('f', shortest, or 'e' below 1e-6 and from 1e21 on; `NaN`, `+Inf`,
//! `-Inf`); strings escaped as jsoniter's standard-library configuration does (HTML
//! characters and U+2028/U+2029 included).
//!
//! Native histograms are written as Prometheus writes them (`marshalHistogram` in 2.42's
//! `web/api/v1/api.go`, `MarshalHistogram` in later releases' `util/jsonutil`, the same
//! shape): an instant sample as `"histogram":[t,{...}]` instead of `"value"`, a series' histogram
//! points as `"histograms":[[t,{...}],...]` after its `"values"` (a series may have both),
//! each `{"count":"c","sum":"s","buckets":[[rule,"lower","upper","count"],...]}` with the
//! non-empty buckets in ascending order (negative, zero, positive) and no `buckets` field when
//! there are none.
//!
//! A range query's answer is often several MB (one `[t,"v"]` pair per point): building a
//! `serde_json::Value` tree for it cost an allocation per point, per label and per value
//! string, and then a second pass to serialise; here every byte is written once.

use lookout_promql::Labels;
use lookout_promql::engine::value::Value;
use lookout_promql::histogram::FloatHistogram;

/// `{"status":"success","data":<v>}` for a query result.
pub fn success_value(v: &Value) -> Vec<u8> {
    success_value_in(v, 0)
}

/// Answers estimated at this size or more are encoded a share of their series per core
/// (see [`write_series_list`]); below it a thread's start costs more than it saves.
const PARALLEL_BYTES: usize = 1 << 20;

/// [`success_value`] with the series split into `pieces` (0: one per core, for answers of
/// [`PARALLEL_BYTES`] or more).
fn success_value_in(v: &Value, pieces: usize) -> Vec<u8> {
    let size = estimate(v) + 64;
    let mut head = Vec::with_capacity(96);
    head.extend_from_slice(br#"{"status":"success","data":{"resultType":""#);
    head.extend_from_slice(v.type_name().as_bytes());
    head.extend_from_slice(br#"","result":"#);
    let mut out = match v {
        Value::Scalar { t, v } => {
            let mut out = head;
            write_point(&mut out, *t, *v);
            out
        }
        Value::String { t, s } => {
            let mut out = head;
            write_timed(&mut out, *t, |out| write_string(out, s));
            out
        }
        Value::Vector(vec) => write_series_list(head, size, vec, pieces, |out, _, s| {
            out.extend_from_slice(br#"{"metric":"#);
            write_labels(out, &s.metric);
            match &s.h {
                Some(h) => {
                    out.extend_from_slice(br#","histogram":"#);
                    write_histogram_point(out, s.t, h);
                }
                None => {
                    out.extend_from_slice(br#","value":"#);
                    write_point(out, s.t, s.f);
                }
            }
            out.push(b'}');
        }),
        Value::Matrix(m) => write_series_list(head, size, m, pieces, |out, stamps, s| {
            out.extend_from_slice(br#"{"metric":"#);
            write_labels(out, &s.metric);
            // As Prometheus: a series without float points has no `values` field.
            if !s.floats.is_empty() {
                out.extend_from_slice(br#","values":"#);
                write_array(out, &s.floats, |out, p| {
                    out.push(b'[');
                    stamps.write(out, p.t);
                    out.extend_from_slice(b",\"");
                    write_float(out, p.f);
                    out.extend_from_slice(b"\"]");
                });
            }
            if !s.histograms.is_empty() {
                out.extend_from_slice(br#","histograms":"#);
                write_array(out, &s.histograms, |out, p| {
                    write_histogram_point(out, p.t, &p.h)
                });
            }
            out.push(b'}');
        }),
    };
    out.extend_from_slice(b"}}");
    out
}

/// `head` followed by `[item,item,...]`, in a buffer of about `size` bytes. A large answer
/// (`size` of [`PARALLEL_BYTES`] or more, or any when `pieces` is set) is encoded in
/// contiguous shares of its items, one per core: the first share straight after `head` in
/// the buffer that becomes the answer, the others in buffers of their own appended to it,
/// so the bytes are the same as from one pass.
fn write_series_list<T: Sync>(
    head: Vec<u8>,
    size: usize,
    items: &[T],
    pieces: usize,
    each: impl Fn(&mut Vec<u8>, &mut Stamps, &T) + Sync,
) -> Vec<u8> {
    // Below PARALLEL_BYTES no share is large enough: one piece.
    let min = if size >= PARALLEL_BYTES {
        64
    } else {
        usize::MAX
    };
    let shares = lookout_promql::parallel::shares(items.len(), min, pieces);
    let per_share = size / shares.len().max(1);
    let head = &head;
    let mut encoded = lookout_promql::parallel::map(shares, |range| {
        let first = range.start == 0;
        let mut out = if first {
            let mut out = Vec::with_capacity(size + head.len());
            out.extend_from_slice(head);
            out.push(b'[');
            out
        } else {
            Vec::with_capacity(per_share)
        };
        let mut stamps = Stamps::default();
        for (i, item) in items[range].iter().enumerate() {
            if i > 0 || !first {
                out.push(b',');
            }
            each(&mut out, &mut stamps, item);
        }
        out
    })
    .into_iter();
    let mut out = encoded.next().unwrap_or_else(|| {
        let mut out = head.clone();
        out.push(b'[');
        out
    });
    for share in encoded {
        out.extend_from_slice(&share);
    }
    out.push(b']');
    out
}

/// Timestamps as [`write_timestamp`] writes them, remembered: the points of a range
/// query's series all fall on the same steps, so each step's text is made once per share
/// of the answer instead of once per point. Direct-mapped, 64 entries.
struct Stamps {
    keys: [i64; 64],
    lens: [u8; 64],
    text: [[u8; 24]; 64],
}

impl Default for Stamps {
    fn default() -> Self {
        // A length of 0 marks an empty slot.
        Stamps {
            keys: [i64::MIN; 64],
            lens: [0; 64],
            text: [[0; 24]; 64],
        }
    }
}

impl Stamps {
    fn write(&mut self, out: &mut Vec<u8>, t_ms: i64) {
        let slot = ((t_ms as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize;
        let len = usize::from(self.lens[slot]);
        if len > 0 && self.keys[slot] == t_ms {
            out.extend_from_slice(&self.text[slot][..len]);
            return;
        }
        let at = out.len();
        write_timestamp(out, t_ms);
        let written = &out[at..];
        if written.len() <= 24 {
            self.text[slot][..written.len()].copy_from_slice(written);
            self.lens[slot] = written.len() as u8;
            self.keys[slot] = t_ms;
        }
    }
}

/// A guess at the encoded size, so that the buffer rarely grows: about 30 bytes a point
/// (`[1700000000.123,"12.345678"]`), 60 a histogram and 70 each of its buckets
/// (`[0,"0.5452538663326288","0.5946035575013605","12"]`), and the label text plus
/// quoting per series.
fn estimate(v: &Value) -> usize {
    let labels = |l: &Labels| 16 + l.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>();
    let histogram = |h: &FloatHistogram| 60 + 70 * (h.positive.len() + h.negative.len() + 1);
    match v {
        Value::Scalar { .. } => 40,
        Value::String { s, .. } => 24 + s.len(),
        Value::Vector(vec) => vec
            .iter()
            .map(|s| labels(&s.metric) + 48 + s.h.as_deref().map_or(0, histogram))
            .sum(),
        Value::Matrix(m) => m
            .iter()
            .map(|s| {
                labels(&s.metric)
                    + 32
                    + s.floats.len() * 30
                    + s.histograms.iter().map(|p| histogram(&p.h)).sum::<usize>()
            })
            .sum(),
    }
}

/// `[item,item,...]`
fn write_array<T>(out: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

/// `[<seconds>,"<value>"]`
fn write_point(out: &mut Vec<u8>, t_ms: i64, f: f64) {
    out.push(b'[');
    write_timestamp(out, t_ms);
    out.extend_from_slice(b",\"");
    write_float(out, f);
    out.extend_from_slice(b"\"]");
}

/// `[<seconds>,{<histogram>}]`
fn write_histogram_point(out: &mut Vec<u8>, t_ms: i64, h: &FloatHistogram) {
    write_timed(out, t_ms, |out| write_histogram(out, h));
}

/// `[<seconds>,<what body writes>]`
fn write_timed(out: &mut Vec<u8>, t_ms: i64, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'[');
    write_timestamp(out, t_ms);
    out.push(b',');
    body(out);
    out.push(b']');
}

/// `{"count":"c","sum":"s","buckets":[[rule,"lower","upper","count"],...]}` as Prometheus's
/// `marshalHistogram`: buckets holding 0 left out, and the `buckets` field with them when
/// none is left.
pub fn write_histogram(out: &mut Vec<u8>, h: &FloatHistogram) {
    out.extend_from_slice(br#"{"count":""#);
    write_float(out, h.count);
    out.extend_from_slice(br#"","sum":""#);
    write_float(out, h.sum);
    out.push(b'"');
    let mut first = true;
    h.for_each_bucket(|side, b| {
        if b.count == 0.0 {
            return;
        }
        out.extend_from_slice(if first { br#","buckets":["# } else { b"," });
        first = false;
        out.push(b'[');
        out.push(b'0' + side.boundary_rule());
        for x in [b.lower, b.upper, b.count] {
            out.extend_from_slice(b",\"");
            write_float(out, x);
            out.push(b'"');
        }
        out.push(b']');
    });
    if !first {
        out.push(b']');
    }
    out.push(b'}');
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Prometheus's `MarshalTimestamp`: whole seconds, then `.` and the milliseconds padded to
/// three digits when there are any (`1.500`, `1.005`, `-0.250`).
pub fn write_timestamp(out: &mut Vec<u8>, t_ms: i64) {
    if t_ms < 0 {
        out.push(b'-');
    }
    let t = t_ms.unsigned_abs();
    write_u64(out, t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        out.push(b'.');
        if frac < 100 {
            out.push(b'0');
        }
        if frac < 10 {
            out.push(b'0');
        }
        write_u64(out, frac);
    }
}

/// Prometheus's `MarshalFloat` without the quotes: Go's `strconv.AppendFloat(f, fmt, -1,
/// 64)` with `fmt` 'e' when `|f| < 1e-6` or `|f| >= 1e21` (and not zero), 'f' otherwise.
/// The shortest digits that round-trip come from `ryu` (the same digits Go's shortest
/// formatting picks); only the layout is Go's.
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    if f.is_sign_negative() {
        out.push(b'-');
    }
    if f == 0.0 {
        out.push(b'0');
        return;
    }
    let abs = f.abs();
    // Whole numbers below 2^53 (counters, most gauges) are their own shortest digits.
    if abs < 9_007_199_254_740_992.0 && abs.fract() == 0.0 {
        write_u64(out, abs as u64);
        return;
    }
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(abs).as_bytes();
    // ryu writes `ddd.ddd`, `0.000ddd`, `ddd0000.0`, `d`, `de±x` or `d.ddde±x`: gather the
    // significant digits and the position of the decimal point relative to them
    // (value = 0.d1d2…dn × 10^point).
    let (mantissa, exp) = match s.iter().position(|&b| b == b'e') {
        Some(i) => (&s[..i], parse_exp(&s[i + 1..])),
        None => (s, 0),
    };
    let mut digits = [0u8; 24];
    let mut n = 0usize;
    let mut int_len = mantissa.len() as i32;
    for (i, &b) in mantissa.iter().enumerate() {
        if b == b'.' {
            int_len = i as i32;
        } else if n < digits.len() {
            digits[n] = b;
            n += 1;
        }
    }
    let mut point = int_len + exp;
    let mut first = 0usize;
    while first < n && digits[first] == b'0' {
        first += 1;
        point -= 1;
    }
    while n > first && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[first..n];
    if !(1e-6..1e21).contains(&abs) {
        // 'e': d[.ddd]e±XX, the exponent with at least two digits.
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = point - 1;
        out.extend_from_slice(if e < 0 { b"e-" } else { b"e+" });
        let e = e.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        write_u64(out, u64::from(e));
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', point - digits.len()));
        } else {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        }
    }
}

fn parse_exp(s: &[u8]) -> i32 {
    let (neg, s) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let e = s
        .iter()
        .fold(0i32, |acc, &b| acc * 10 + i32::from(b.wrapping_sub(b'0')));
    if neg { -e } else { e }
}

/// `{"name":"value",...}` in the label set's (name) order.
pub fn write_labels(out: &mut Vec<u8>, l: &Labels) {
    out.push(b'{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, k);
        out.push(b':');
        write_string(out, v);
    }
    out.push(b'}');
}

/// A JSON string as jsoniter's `ConfigCompatibleWithStandardLibrary` writes it: `"` and
/// `\` escaped, `\n` `\r` `\t` short, other control characters and `<` `>` `&` as
/// `\u00xx`, U+2028 and U+2029 as `\u2028` and `\u2029`.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..0x20 | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
                continue;
            }
            _ => None,
        };
        if let Some(e) = escape {
            out.extend_from_slice(&bytes[start..i]);
            if e.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(e);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_promql::engine::value::FPoint;

    fn float(f: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, f);
        String::from_utf8(out).unwrap()
    }

    fn ts(t: i64) -> String {
        let mut out = Vec::new();
        write_timestamp(&mut out, t);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_as_go_strconv_in_prometheus_marshal_float() {
        // Outputs of Go's strconv.FormatFloat with Prometheus's 'e'/'f' choice.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (100.0, "100"),
            (123456789.0, "123456789"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (-2.5e300, "-2.5e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1e-6, "0.000001"),
            (1.25e-6, "0.00000125"),
            (9.99e-7, "9.99e-07"),
            (1e-7, "1e-07"),
            (5e-324, "5e-324"),
            (0.30000000000000004, "0.30000000000000004"),
            (1234.5678, "1234.5678"),
            (1e16, "10000000000000000"),
            (12345678901234567.0, "12345678901234568"),
            (0.001234, "0.001234"),
            (2.0f64.powi(60), "1152921504606847000"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (f, want) in cases {
            assert_eq!(float(*f), *want, "{f:e}");
        }
    }

    #[test]
    fn floats_in_f_range_match_shortest_decimal_and_round_trip() {
        // Rust's `{}` is the shortest round-trip decimal without exponent: Go's 'f', -1.
        let mut x = 1e-6f64;
        while x < 1e21 {
            for f in [x, x * 1.000_000_7, -x * 3.3, x / 7.0 + 1.0] {
                if (1e-6..1e21).contains(&f.abs()) {
                    assert_eq!(float(f), format!("{f}"));
                }
                assert_eq!(float(f).parse::<f64>().unwrap(), f);
            }
            x *= 9.7;
        }
    }

    /// Whole numbers take a shortcut past `ryu`; the general path writes the same text.
    #[test]
    fn whole_numbers_are_written_as_by_the_general_path() {
        let mut n = 1u64;
        while n < 1 << 54 {
            for m in [n - 1, n, n + 1, n * 10, n * 7 + 3] {
                let f = m as f64;
                assert_eq!(float(f), format!("{f}"), "{m}");
                assert_eq!(float(-f), format!("{}", -f), "-{m}");
            }
            n *= 3;
        }
        assert_eq!(float(9_007_199_254_740_991.0), "9007199254740991");
        assert_eq!(float(9_007_199_254_740_992.0), "9007199254740992");
    }

    #[test]
    fn timestamps_as_prometheus_marshal_timestamp() {
        assert_eq!(ts(0), "0");
        assert_eq!(ts(1_700_000_000_000), "1700000000");
        assert_eq!(ts(1_700_000_000_500), "1700000000.500");
        assert_eq!(ts(1_700_000_000_050), "1700000000.050");
        assert_eq!(ts(1_700_000_000_005), "1700000000.005");
        assert_eq!(ts(-250), "-0.250");
        assert_eq!(ts(-1_500), "-1.500");
    }

    #[test]
    fn strings_escaped_as_jsoniter_standard_library() {
        let mut out = Vec::new();
        write_string(
            &mut out,
            "a\"b\\c\nd\re\tf\u{1}g<h>&i\u{2028}j\u{2029}kélan",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\nd\re\tf\u0001g\u003ch\u003e\u0026i\u2028j\u2029kélan""#.to_string()
        );
    }

    #[test]
    fn results_in_prometheus_field_order() {
        let l = Labels::new([("__name__", "up"), ("job", "a")]);
        let mut s = lookout_promql::engine::value::Series::default();
        s.metric = l;
        s.floats = vec![FPoint { t: 1_000, f: 1.0 }, FPoint { t: 16_500, f: 0.5 }];
        let v = Value::Matrix(vec![s]);
        assert_eq!(
            String::from_utf8(success_value(&v)).unwrap(),
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"a"},"values":[[1,"1"],[16.500,"0.5"]]}]}}"#
        );
        let v = Value::Scalar { t: 2_000, v: 3.0 };
        assert_eq!(
            String::from_utf8(success_value(&v)).unwrap(),
            r#"{"status":"success","data":{"resultType":"scalar","result":[2,"3"]}}"#
        );
        let v = Value::String {
            t: 2_000,
            s: "x".into(),
        };
        assert_eq!(
            String::from_utf8(success_value(&v)).unwrap(),
            r#"{"status":"success","data":{"resultType":"string","result":[2,"x"]}}"#
        );
        let v = Value::Vector(vec![]);
        assert_eq!(
            String::from_utf8(success_value(&v)).unwrap(),
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#
        );
    }

    fn histogram(text: &str) -> std::sync::Arc<FloatHistogram> {
        std::sync::Arc::new(lookout_promql::histogram::notation::parse(text).unwrap().h)
    }

    #[test]
    fn histograms_in_prometheus_shapes() {
        // Negative, zero and positive buckets in ascending order with their boundary rules;
        // an empty bucket left out; the bounds as computed (Prometheus's table has
        // 2.82842712474619 for 2^1.5, a unit in the last place lower: README, Differences).
        let h = histogram(
            "schema:1 count:10.5 sum:-3.25 z_bucket:2 z_bucket_w:0.001 buckets:[3 0 1.5] \
             offset:1 n_buckets:[4]",
        );
        let mut out = Vec::new();
        write_histogram(&mut out, &h);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"count":"10.5","sum":"-3.25","buckets":[[1,"-1","-0.7071067811865476","4"],[3,"-0.001","0.001","2"],[0,"1","1.4142135623730951","3"],[0,"2","2.8284271247461903","1.5"]]}"#
        );
        // No buckets: no `buckets` field. A bucket cut by the zero bucket starts at its edge.
        for (text, want) in [
            ("schema:0 count:0 sum:0", r#"{"count":"0","sum":"0"}"#),
            (
                "schema:0 count:1 sum:0.7 z_bucket_w:0.6 buckets:[1]",
                r#"{"count":"1","sum":"0.7","buckets":[[0,"0.6","1","1"]]}"#,
            ),
            (
                "schema:0 count:1 sum:NaN z_bucket:1",
                r#"{"count":"1","sum":"NaN","buckets":[[3,"-0","0","1"]]}"#,
            ),
        ] {
            let mut out = Vec::new();
            write_histogram(&mut out, &histogram(text));
            assert_eq!(String::from_utf8(out).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn vectors_and_matrices_with_histograms() {
        let h = histogram("schema:0 count:3 sum:2 buckets:[3]");
        let l = Labels::new([("__name__", "h")]);
        let mut s = lookout_promql::engine::value::Series::default();
        s.metric = l.clone();
        s.floats = vec![FPoint { t: 1_000, f: 1.0 }];
        s.histograms = vec![
            lookout_promql::engine::value::HPoint {
                t: 2_000,
                h: h.clone(),
            },
            lookout_promql::engine::value::HPoint {
                t: 3_500,
                h: h.clone(),
            },
        ];
        let mut only = s.clone();
        only.floats.clear();
        only.histograms.truncate(1);
        let hist = r#"{"count":"3","sum":"2","buckets":[[0,"0.5","1","3"]]}"#;
        assert_eq!(
            String::from_utf8(success_value(&Value::Matrix(vec![s, only]))).unwrap(),
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"__name__":"h"}},"values":[[1,"1"]],"histograms":[[2,{hist}],[3.500,{hist}]]}},{{"metric":{{"__name__":"h"}},"histograms":[[2,{hist}]]}}]}}}}"#
            )
        );
        // An instant vector from the engine: a histogram sample and a float one.
        let st = lookout_promql::storage::Storage::new(Default::default());
        st.append_histogram(&l, 4_000, h).unwrap();
        st.append(&Labels::new([("__name__", "f")]), 4_000, 7.0)
            .unwrap();
        let engine = lookout_promql::engine::Engine::new(Default::default());
        let Value::Vector(mut v) = engine
            .instant_query(&st, r#"{__name__=~"f|h"}"#, 5_000)
            .unwrap()
        else {
            panic!("a vector");
        };
        v.sort_by(|a, b| b.metric.cmp(&a.metric));
        assert_eq!(
            String::from_utf8(success_value(&Value::Vector(v))).unwrap(),
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"__name__":"h"}},"histogram":[5,{hist}]}},{{"metric":{{"__name__":"f"}},"value":[5,"7"]}}]}}}}"#
            )
        );
    }

    /// A large answer encoded in shares on several threads, and with remembered
    /// timestamps, is byte for byte what one pass writing every point gives.
    #[test]
    fn answers_in_shares_are_the_bytes_of_one_pass() {
        let h = histogram("schema:0 count:3 sum:2 buckets:[3]");
        let mut m = Vec::new();
        for i in 0..300i64 {
            let mut s = lookout_promql::engine::value::Series::default();
            s.metric = Labels::new([("__name__", "x"), ("i", &i.to_string())]);
            // Steps shared by every series, some series off the grid, negative and
            // sub-second times, more distinct times than remembered slots.
            s.floats = (0..(i % 90))
                .map(|k| FPoint {
                    t: if i % 7 == 0 {
                        -5_000 + k * 333 + i
                    } else {
                        1_000_000 + k * 15_000
                    },
                    f: (i * k) as f64 / 7.0,
                })
                .collect();
            if i % 11 == 0 {
                s.histograms = vec![lookout_promql::engine::value::HPoint {
                    t: 4_000 + i,
                    h: h.clone(),
                }];
            }
            m.push(s);
        }
        // What one pass writing every point with `write_point` gives.
        let mut want = br#"{"status":"success","data":{"resultType":"matrix","result":"#.to_vec();
        write_array(&mut want, &m, |out, s| {
            out.extend_from_slice(br#"{"metric":"#);
            write_labels(out, &s.metric);
            if !s.floats.is_empty() {
                out.extend_from_slice(br#","values":"#);
                write_array(out, &s.floats, |out, p| write_point(out, p.t, p.f));
            }
            if !s.histograms.is_empty() {
                out.extend_from_slice(br#","histograms":"#);
                write_array(out, &s.histograms, |out, p| {
                    write_histogram_point(out, p.t, &p.h)
                });
            }
            out.push(b'}');
        });
        want.extend_from_slice(b"}}");
        let v = Value::Matrix(m);
        for pieces in [1, 2, 3, 8, 1000] {
            assert!(success_value_in(&v, pieces) == want, "{pieces} pieces");
        }
        assert!(success_value(&v) == want);
        for (n, pieces) in [(0, 2), (1, 2), (2, 2), (5, 3)] {
            let st = lookout_promql::storage::Storage::new(Default::default());
            for i in 0..n {
                st.append(
                    &Labels::new([("__name__", "x"), ("i", &i.to_string())]),
                    1_000,
                    1.5,
                )
                .unwrap();
            }
            let engine = lookout_promql::engine::Engine::new(Default::default());
            let v = engine.instant_query(&st, "x", 1_000).unwrap();
            assert_eq!(success_value_in(&v, pieces), success_value_in(&v, 1), "{n}");
        }
    }
}
