//! `promtool test rules` files: strict YAML decoding, then every field the runner parses
//! before evaluating (start timestamps, input series in the `.test` load notation, the
//! expressions of `promql_expr_test`), and deeply nested YAML built from a marked input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::unittest::{self, format};
use lookout_promql::promqltest::script::parse_series;

fuzz_target!(|data: &[u8]| {
    // 0xFF: 64 levels of nested flow sequences a byte of input, at most 4,096, which the
    // depth pre-scan must refuse at once past 256 (libyaml alone takes O(depth²)). Capped so
    // that a marked input stays cheap; 100,000 levels is the hostile suite's test.
    if let Some((0xFF, rest)) = data.split_first() {
        let depth = (64 + rest.len() * 64).min(4096);
        let text = format!("tests: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let began = std::time::Instant::now();
        let _ = unittest::parse_test_file(&text);
        assert!(
            began.elapsed() < std::time::Duration::from_secs(2),
            "{depth} deep"
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = unittest::parse_test_file(text) else {
        return;
    };
    for tg in &file.tests {
        if let Some(ts) = &tg.start_timestamp {
            let _ = format::parse_start_timestamp(&ts.0);
        }
        for (i, s) in tg.input_series.iter().enumerate() {
            let _ = parse_series(&format!("{} {}", s.series.0, s.values.0), i + 2);
        }
        for t in &tg.promql_expr_test {
            let _ = lookout_promql::engine::parse(&t.expr.0);
            for s in &t.exp_samples {
                let _ = parse_series(&s.labels.0, 1);
            }
        }
        let _ = format::go_duration(tg.interval.map_or(0, |d| d.0));
    }
});
