//! Go's formatting of float64 values where Prometheus's output depends on it: `%v`/`%g`
//! (`strconv.FormatFloat(v, 'g', …)`) in annotations, histogram strings, templates and
//! promtool's messages. Rust's `{}` never uses an exponent, so `1e+06` would read `1000000`.

/// Go's `fmt.Sprint(v)` of a float64 (`%v`, i.e. `strconv.FormatFloat(v, 'g', -1, 64)`):
/// shortest digits, exponent form when the decimal exponent is below -4 or at least 6.
pub fn go_fmt_v(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let s = format!("{:e}", v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    go_float_text(v < 0.0, &digits, exp, !(-4..6).contains(&exp))
}

/// Go's `fmt.Sprintf("%.<prec>g", v)`.
pub fn go_fmt_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let prec = prec.max(1);
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` rounds exactly, like Go's decimal conversion.
    let s = format!("{:.*e}", prec - 1, v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = prec as i32;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    go_float_text(v < 0.0, &digits, exp, exp < -4 || exp >= eprec)
}

/// Writes the decimal `digits` (no leading zeros) with decimal exponent `exp` the way Go's
/// `%g` does: `d.ddde±XX` when `scientific`, otherwise as `%f` with just the digits given.
fn go_float_text(negative: bool, digits: &str, exp: i32, scientific: bool) -> String {
    let sign = if negative { "-" } else { "" };
    let nd = digits.len() as i32;
    if scientific {
        let mut m = digits[..1].to_string();
        if nd > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let dp = exp + 1;
    let out = if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        format!("{}.{}", &digits[..dp as usize], &digits[dp as usize..])
    };
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_form_switches_to_an_exponent_as_go_does() {
        assert_eq!(go_fmt_v(1073741824.0), "1.073741824e+09");
        assert_eq!(go_fmt_v(100000.0), "100000");
        assert_eq!(go_fmt_v(1e6), "1e+06");
        assert_eq!(go_fmt_v(0.0001), "0.0001");
        assert_eq!(go_fmt_v(0.00001), "1e-05");
        assert_eq!(go_fmt_v(-2.5), "-2.5");
        assert_eq!(go_fmt_v(f64::INFINITY), "+Inf");
    }
}
