//! The `.test` script language of Prometheus's `promqltest` (load, eval, expect, clear).
//!
//! Text inputs are parsed only. An input that starts with the byte 0xFF (never the start of
//! UTF-8 text) drives the generator instead: a script of a few series (long label values,
//! repeat notation, stale markers) and an eval of a generated expression (`gen/promql.rs`:
//! deep nestings, long chains) is parsed, and one in 64 run by the harness as `lookout
//! promqltest` runs it, on a thread with the stack Lookout's evaluating threads have.
#![no_main]

#[path = "gen/promql.rs"]
mod promql_gen;
#[path = "gen/stack.rs"]
mod stack;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lookout_promql::engine::EngineOptions;
use lookout_promql::promqltest::{harness_engine_options, parse_script, run_script_with};
use promql_gen::Bytes;

/// The first byte of an input for the generator.
const GENERATE: u8 = 0xFF;

const VALUES: &[&str] = &[
    "0+1x10",
    "1 2 3 _ stale 5",
    "0+10x100",
    "1x5 2x5",
    "NaN Inf -Inf 0",
    "_x3 1",
    "-1-1x20",
];

/// A script of generated series and one eval.
fn script(r: &mut Bytes) -> String {
    let mut s = format!("load {}\n", r.pick(&["1m", "15s", "5m"]));
    for i in 0..=r.byte() % 4 {
        let value = match r.byte() % 3 {
            0 => "a".to_string(),
            1 => "é".repeat(r.count(2_000)),
            _ => "x".repeat(r.count(4_000)),
        };
        let name = r.pick(&["up", "http_requests_total", "flaky", "m"]);
        s.push_str(&format!(
            "  {name}{{job={value:?},i=\"{i}\"}} {}\n",
            r.pick(VALUES)
        ));
    }
    let mut expr = String::new();
    promql_gen::expr(r, &mut expr, 3);
    let head = r.pick(&[
        "eval instant at 5m",
        "eval range from 0 to 10m step 1m",
        "eval_fail instant at 1m",
    ]);
    s.push_str(&format!("\n{head} {expr}\n"));
    if r.byte() % 2 == 0 {
        s.push_str("  {job=\"a\", i=\"0\"} 1\n");
    }
    s
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&GENERATE, decisions)) => {
            // Parsed, and run only one time in 64: running every generated script (the
            // harness evaluates each eval several times) made the target about a hundred
            // times slower, too slow for CI's fixed 500,000 inputs; `promql_eval` runs the
            // generated expressions on every input.
            let text = script(&mut Bytes::new(decisions));
            let run = decisions.first().is_some_and(|b| b % 64 == 0);
            let opts = EngineOptions {
                max_samples: 20_000,
                // Short: the harness runs each eval several times (`@` variants, a range
                // query), and a generated eval that runs into the limit must not make the
                // fixed-count CI run slow.
                timeout: Some(Duration::from_millis(20)),
                ..harness_engine_options()
            };
            stack::on_eval_stack(move || {
                if run {
                    let _ = run_script_with(&text, opts);
                } else {
                    let _ = parse_script(&text);
                }
            });
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = parse_script(text);
            }
        }
    }
});
