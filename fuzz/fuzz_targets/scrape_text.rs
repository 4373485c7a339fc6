//! The scrape parser, for both the Prometheus text format and OpenMetrics.
//!
//! Besides the raw input, inputs starting with a marker byte are expanded into the shapes
//! that once froze the evaluator but fit in no `-max_len`: one series with tens of
//! thousands of labels (0xFF) and one very long label value (0xFE). A superlinear parser
//! shows as a libFuzzer timeout on them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::scrape::textparse::{self, Format};

/// `wide{...}` with `count` labels whose names and values are taken from `seed`.
fn wide_series(count: usize, seed: &str) -> String {
    let mut body = String::from("wide{");
    for i in 0..count {
        body.push_str(&format!("l{i}_{seed}=\"{seed}\","));
    }
    body.push_str("} 1\n");
    body
}

/// Expands a marked input; `None` for a plain one.
fn expand(data: &[u8]) -> Option<String> {
    let (&mark, rest) = data.split_first()?;
    let count = rest
        .get(..2)
        .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let seed: String = String::from_utf8_lossy(rest.get(2..).unwrap_or(&[]))
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    match mark {
        0xFF => Some(wide_series(count, &seed)),
        0xFE => Some(format!("m{{a=\"{}\"}} 1\n", seed.repeat(count.max(1)))),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(text) = expand(data) {
        let parsed = textparse::parse(&text, Format::PrometheusText);
        assert!(parsed.is_ok(), "{:?}", parsed.err());
        let _ = textparse::parse(&format!("{text}# EOF\n"), Format::OpenMetrics);
        return;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = textparse::parse(text, Format::PrometheusText);
        let _ = textparse::parse(text, Format::OpenMetrics);
    }
});
