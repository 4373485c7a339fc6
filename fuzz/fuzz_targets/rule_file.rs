//! Rule files: YAML decoding, validation (expressions, durations, templates, label names)
//! and the duplicate-rule lint of `lookout rules check`.
//!
//! Inputs starting with a marker byte are expanded into shapes that once aborted or froze
//! the evaluator: YAML nested up to 4,096 deep (0xFF; refused by the depth pre-scan past
//! 256 levels) and templates of up to 11 definitions that call themselves, built from the
//! input's bytes (0xFE; checked, then expanded under a 1 ms deadline, which must hold).
//! The caps keep a marked input cheap, so that CI's fixed number of inputs runs in
//! minutes (100,000 deep and 63 definitions under 200 ms made some inputs cost 200 ms);
//! 100,000-deep YAML and unbounded recursion are the hostile suite's tests.
#![no_main]

use std::path::Path;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::rules::{check, file};
use lookout_evaluator::template::{Bounds, CompiledTemplate, TemplateData};

/// Deepest YAML built from a 0xFF input (the pre-scan refuses past 256).
const MAX_YAML_DEPTH: usize = 4096;
/// Time a 0xFE template may expand for.
const DEADLINE: Duration = Duration::from_millis(1);

/// A template of `levels` definitions, each calling the next (or itself) as the input's
/// bits say, once or twice, inside an `if` or not, with `body` in between.
fn recursive_template(levels: usize, shape: &[u8], body: &str) -> String {
    let mut text = String::new();
    for i in 0..levels {
        let bits = shape.get(i % shape.len().max(1)).copied().unwrap_or(0);
        let next = if bits & 1 == 0 { i + 1 } else { i };
        let call = format!("{{{{template \"t{next}\" .}}}}");
        let calls = if bits & 2 == 0 {
            call.clone()
        } else {
            format!("{call}{call}")
        };
        let calls = if bits & 4 == 0 {
            calls
        } else {
            format!("{{{{if .}}}}{calls}{{{{end}}}}")
        };
        text.push_str(&format!("{{{{define \"t{i}\"}}}}{body}{calls}{{{{end}}}}"));
    }
    text + &format!("{{{{define \"t{levels}\"}}}}{body}{{{{end}}}}{{{{template \"t0\" 1}}}}")
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xFF, rest)) => {
            let depth = (64 + rest.len() * 64).min(MAX_YAML_DEPTH);
            let text = format!("groups: {}{}\n", "[".repeat(depth), "]".repeat(depth));
            let began = Instant::now();
            let _ = file::parse_str(Path::new("deep.rules.yml"), &text);
            assert!(
                began.elapsed() < Duration::from_secs(2),
                "{depth} deep: {:?}",
                began.elapsed()
            );
        }
        Some((0xFE, rest)) if !rest.is_empty() => {
            let levels = usize::from(rest[0] % 12);
            let body: String = String::from_utf8_lossy(&rest[1..])
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(8)
                .collect();
            let text = recursive_template(levels, &rest[1..], &body);
            let _ = lookout_evaluator::template::check("t", &text);
            let bounds = Bounds {
                deadline: Some(Instant::now() + DEADLINE),
                timeout: DEADLINE,
                ..Bounds::default()
            };
            let began = Instant::now();
            let _ = CompiledTemplate::new("t", &text).render_bounded(
                &TemplateData::default(),
                None,
                &bounds,
            );
            assert!(
                began.elapsed() < Duration::from_secs(1),
                "{text}: {:?}",
                began.elapsed()
            );
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                if let Ok(f) = file::parse_str(Path::new("fuzz.rules.yml"), text) {
                    let _ = f.rule_count();
                    let _ = check::find_duplicates(&f.def);
                }
            }
        }
    }
});
