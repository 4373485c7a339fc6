//! PromQL: parse any text, then evaluate it as an instant query and as a short range query
//! over a small fixed storage (counters, gauges, histogram buckets, a stale marker, a gap),
//! with the sample limit and the timeout bounded as a server would.
//!
//! An input that starts with the byte 0xFF (never the start of UTF-8 text) is not a query
//! but decisions for the structure-aware generator (`gen/promql.rs`), which expands a few
//! bytes into deep nestings, long operator and unary chains and long label values; every
//! other input is the query text itself. Parsing and evaluation run on a thread with the
//! stack Lookout's evaluating threads have.
#![no_main]

#[path = "gen/promql.rs"]
mod promql_gen;
#[path = "gen/stack.rs"]
mod stack;

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lookout_promql::Labels;
use lookout_promql::engine::{self, Engine, EngineOptions};
use lookout_promql::storage::{STALE_NAN, Storage, StorageOptions};

/// Samples are 15 s apart over 30 minutes.
const STEP_MS: i64 = 15_000;
const END_MS: i64 = 30 * 60_000;

fn storage() -> &'static Storage {
    static STORAGE: OnceLock<Storage> = OnceLock::new();
    STORAGE.get_or_init(|| {
        let s = Storage::new(StorageOptions::default());
        let put = |labels: &[(&str, &str)], f: &dyn Fn(i64) -> Option<f64>| {
            let l = Labels::new(labels.iter().copied());
            let mut t = 0;
            while t <= END_MS {
                if let Some(v) = f(t) {
                    // A fixed, valid data set: an error here is a bug of the harness.
                    s.append(&l, t, v)
                        .unwrap_or_else(|e| panic!("seed sample: {e}"));
                }
                t += STEP_MS;
            }
        };
        for (inst, up) in [("a:9100", 1.0), ("b:9100", 0.0)] {
            put(
                &[("__name__", "up"), ("job", "node"), ("instance", inst)],
                &|_| Some(up),
            );
        }
        for (code, rate) in [("200", 10.0), ("500", 0.5)] {
            put(
                &[
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("code", code),
                ],
                &|t| Some(rate * (t / 1000) as f64 % 5000.0),
            );
        }
        put(&[("__name__", "temperature"), ("room", "a")], &|t| {
            Some(((t / STEP_MS) as f64).sin() * 20.0)
        });
        put(&[("__name__", "flaky"), ("job", "x")], &|t| match t {
            t if t == 10 * 60_000 => Some(STALE_NAN),
            t if (12 * 60_000..15 * 60_000).contains(&t) => None,
            t => Some((t % 7) as f64 - 3.0),
        });
        put(&[("__name__", "special"), ("kind", "nan")], &|_| {
            Some(f64::NAN)
        });
        put(&[("__name__", "special"), ("kind", "inf")], &|_| {
            Some(f64::INFINITY)
        });
        for (le, frac) in [("0.1", 0.3), ("0.5", 0.8), ("1", 0.95), ("+Inf", 1.0)] {
            put(
                &[
                    ("__name__", "latency_seconds_bucket"),
                    ("job", "api"),
                    ("le", le),
                ],
                &|t| Some(((t / STEP_MS) as f64 * 10.0 * frac).floor()),
            );
        }
        put(
            &[("__name__", "latency_seconds_count"), ("job", "api")],
            &|t| Some((t / STEP_MS) as f64 * 10.0),
        );
        s
    })
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(EngineOptions {
            max_samples: 200_000,
            timeout: Some(Duration::from_secs(1)),
            ..EngineOptions::default()
        })
    })
}

/// The engine for generated expressions: deep nestings of subqueries can each run until
/// the timeout, so theirs is short and only one in 16 is evaluated at all (every one is
/// parsed, which is where the depth bound stands); at a second each, CI's fixed run count
/// would take hours.
fn generated_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(EngineOptions {
            max_samples: 20_000,
            timeout: Some(Duration::from_millis(20)),
            ..EngineOptions::default()
        })
    })
}

/// The first byte of an input for the generator.
const GENERATE: u8 = 0xFF;

fn evaluate(query: &str, e: &Engine) {
    let s = storage();
    if let Ok(expr) = engine::parse(query) {
        let _ = e.exec_instant(s, &expr, query, 20 * 60_000);
    }
    let (start, end, step) = (15 * 60_000, 20 * 60_000, 60_000);
    if let Ok(expr) = engine::parse_for_step(query, step, end - start) {
        let _ = e.exec_range(s, &expr, query, start, end, step);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&GENERATE, decisions)) => {
            let query = promql_gen::expression(decisions);
            let run = decisions.first().is_some_and(|b| b % 16 == 0);
            stack::on_eval_stack(move || {
                if run {
                    evaluate(&query, generated_engine());
                } else {
                    let _ = engine::parse(&query);
                    let _ = engine::parse_for_step(&query, 60_000, 5 * 60_000);
                }
            });
        }
        _ => {
            let Ok(query) = std::str::from_utf8(data) else {
                return;
            };
            let query = query.to_string();
            stack::on_eval_stack(move || evaluate(&query, engine()));
        }
    }
});
