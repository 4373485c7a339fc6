//! The native-histogram data set of the PromQL bench (issue 15): 5,000 native histogram
//! series (`nh_seconds`, schema 3, as client libraries expose request latencies) of 15 s
//! samples over three hours, written as a data directory in Prometheus's TSDB format.
//!
//! ```text
//! cargo bench -p lookout-promql --bench promql_nh -- write DIR
//! ```
//!
//! `write` appends the data set to a [`Storage`] opened on `DIR` (WAL included) and
//! persists every full 2 h range as a block, as the embedded evaluator does; the last hour
//! stays in the write-ahead log. bench/promql/nh.sh starts Lookout's evaluator and
//! Prometheus 2.42 on copies of that directory (Prometheus reads Lookout's float histogram
//! chunks and WAL records: `tests/histogram_interop.rs`) and times the same queries over
//! both HTTP APIs, so both answer from the same samples.

#[path = "support/common.rs"]
mod common;

use common::Rng;
use std::sync::Arc;
use std::time::Instant;

use lookout_promql::Labels;
use lookout_promql::histogram::{Bucket, CounterResetHint, FloatHistogram};

/// 2026-01-01T00:00:00Z: start of the data, on a 2 h block boundary.
const START_MS: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 15_000;
/// Three hours of 15 s samples: one 2 h block and an hour in the WAL.
const POINTS: i64 = 3 * 240;
const JOBS: usize = 10;
/// Instances per job: 10 × 500 = 5,000 histogram series.
const INSTANCES: usize = 500;
/// Schema 3: bucket boundaries grow by 2^(1/8), about 9 %.
const SCHEMA: i32 = 3;
/// Observations fall between 2^-5 s (31 ms) and 1 s: bucket indexes -39..=0, 40 buckets.
const LOW_INDEX: i32 = -39;
const BUCKETS: usize = 40;

/// One series' cumulative state.
struct Series {
    labels: Labels,
    rng: Rng,
    counts: [f64; BUCKETS],
    count: f64,
    sum: f64,
}

impl Series {
    /// Adds 5..=24 observations, each `2^u` for `u` in [-5, 0), skewed towards the fast
    /// end the way latencies are.
    fn observe(&mut self) {
        let n = 5 + self.rng.next() % 20;
        for _ in 0..n {
            let u = -5.0 * self.rng.unit() * self.rng.unit();
            let x = u.exp2();
            // Bucket i holds (2^((i-1)/8), 2^(i/8)].
            let i = ((u * 8.0).ceil() as i32).clamp(LOW_INDEX, 0);
            self.counts[(i - LOW_INDEX) as usize] += 1.0;
            self.count += 1.0;
            self.sum += x;
        }
    }

    fn histogram(&self) -> FloatHistogram {
        FloatHistogram {
            schema: SCHEMA,
            zero_threshold: 2f64.powi(-128),
            zero_count: 0.0,
            count: self.count,
            sum: self.sum,
            positive: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0.0)
                .map(|(k, &count)| Bucket {
                    index: LOW_INDEX + k as i32,
                    count,
                })
                .collect(),
            negative: Vec::new(),
            custom_values: Arc::from(Vec::new()),
            counter_reset_hint: CounterResetHint::Unknown,
        }
    }
}

fn write(dir: &str) -> Result<(), String> {
    let storage = common::open_storage(dir)?;
    let mut series: Vec<Series> = (0..JOBS * INSTANCES)
        .map(|k| Series {
            labels: Labels::new([
                ("__name__", "nh_seconds".to_string()),
                ("job", format!("job-{}", k / INSTANCES)),
                ("instance", format!("host-{}:9100", k % INSTANCES)),
            ]),
            rng: Rng::new(k as u64 + 1),
            counts: [0.0; BUCKETS],
            count: 0.0,
            sum: 0.0,
        })
        .collect();
    let start = Instant::now();
    for p in 0..POINTS {
        let t = START_MS + p * STEP_MS;
        for s in &mut series {
            s.observe();
            storage
                .append_histogram(&s.labels, t, Arc::new(s.histogram()))
                .map_err(|e| e.to_string())?;
        }
    }
    storage.sync_wal();
    let appended = start.elapsed();
    let start = Instant::now();
    storage.persist_head();
    println!(
        "{{\"kind\":\"write-nh\",\"series\":{},\"samples\":{},\"append_seconds\":{:.3},\"persist_seconds\":{:.3},\"last_ms\":{}}}",
        series.len(),
        series.len() as i64 * POINTS,
        appended.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        START_MS + (POINTS - 1) * STEP_MS
    );
    Ok(())
}

fn main() {
    let args = common::args();
    let result = match (args.first().map(String::as_str), args.get(1)) {
        (Some("write"), Some(dir)) => write(dir),
        _ => Err("usage: write DIR".to_string()),
    };
    if let Err(e) = result {
        eprintln!("promql_nh bench: {e}");
        std::process::exit(1);
    }
}
