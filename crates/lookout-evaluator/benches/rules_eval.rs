//! Rule evaluation in embedded mode (issue 4): 1,000 rules (500 recording, 500 alerting with
//! templated annotations) in 10 groups, over 10,000 series held in the in-process storage,
//! evaluated through the same path `lookout evaluator` uses (rule groups → embedded
//! datasource → PromQL engine → storage appends, staleness and alert state).
//!
//! ```text
//! cargo bench -p lookout-evaluator --bench rules_eval -- [REPS]
//! ```
//!
//! Prints one JSON object per line: the set-up figures, then the median, minimum and maximum
//! wall time of one evaluation of all 1,000 rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::datasource::Datasource;
use lookout_evaluator::embedded::EmbeddedDatasource;
use lookout_evaluator::rules::group::{Group, GroupContext};
use lookout_evaluator::rules::metrics::RuleMetrics;
use lookout_evaluator::rules::{AlertingRule, RecordingRule, Rule};
use lookout_promql::Labels;
use lookout_promql::engine::Engine;
use lookout_promql::storage::{Storage, StorageOptions};

const JOBS: usize = 100;
const INSTANCES: usize = 100;
const STEP_MS: i64 = 15_000;
/// 30 minutes of 15 s samples.
const POINTS: i64 = 120;
const START_MS: i64 = 1_767_225_600_000;
const GROUPS: usize = 10;
const RULES_PER_GROUP: usize = 100;

struct Discard;

impl Notify for Discard {
    fn send(&self, alerts: Vec<Alert>) {
        std::hint::black_box(alerts);
    }
}

fn at_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);

    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let load = Instant::now();
    for j in 0..JOBS {
        for i in 0..INSTANCES {
            let labels = Labels::new([
                ("__name__", "up".to_string()),
                ("job", format!("job{j}")),
                ("instance", format!("host{i}:9100")),
            ]);
            // Instance 0 of every job is down, so each alert rule has an active alert.
            let v = if i == 0 { 0.0 } else { 1.0 };
            for p in 0..POINTS {
                storage
                    .append(&labels, START_MS + p * STEP_MS, v)
                    .expect("append benchmark data");
            }
        }
    }
    println!(
        "{{\"series\":{},\"samples\":{},\"load_seconds\":{:.3}}}",
        JOBS * INSTANCES,
        JOBS * INSTANCES * POINTS as usize,
        load.elapsed().as_secs_f64()
    );

    let ds: Arc<dyn Datasource> =
        Arc::new(EmbeddedDatasource::new(storage.clone(), Engine::default()));
    let ctx = Arc::new(GroupContext {
        datasource: ds,
        notifier: Arc::new(Discard),
        resend_delay: Duration::from_secs(60),
        metrics: RuleMetrics::default(),
        evaluated: None,
    });
    let mut groups = Vec::new();
    for g in 0..GROUPS {
        let mut rules = Vec::new();
        for r in 0..RULES_PER_GROUP {
            let n = g * RULES_PER_GROUP + r;
            let job = format!("job{}", n % JOBS);
            if r % 2 == 0 {
                rules.push(Rule::Recording(RecordingRule::new(
                    &format!("job:up:avg5m_{n}"),
                    &format!("avg by (job) (avg_over_time(up{{job=\"{job}\"}}[5m]))"),
                    BTreeMap::new(),
                )));
            } else {
                rules.push(Rule::Alerting(AlertingRule::new(
                    &format!("InstanceDown{n}"),
                    &format!("up{{job=\"{job}\"}} == 0"),
                    Duration::from_secs(300),
                    Duration::ZERO,
                    BTreeMap::from([("severity".to_string(), "critical".to_string())]),
                    BTreeMap::from([(
                        "summary".to_string(),
                        "{{ $labels.instance }} of {{ $labels.job }} is down ({{ $value | humanize }})"
                            .to_string(),
                    )]),
                    Labels::default(),
                    "http://lookout:9095",
                    true,
                )));
            }
        }
        groups.push(Group::new(
            &format!("group{g}"),
            "bench.rules.yml",
            Duration::from_secs(15),
            Duration::ZERO,
            0,
            rules,
            String::new(),
            ctx.clone(),
        ));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let last_ms = START_MS + (POINTS - 1) * STEP_MS;
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        // Successive evaluation slots after the last sample, within the 5m look-back.
        let ts = at_ms(last_ms + 1_000 + rep as i64 * 1_000);
        let start = Instant::now();
        runtime.block_on(async {
            for g in &groups {
                g.eval(ts).await;
            }
        });
        times.push(start.elapsed().as_secs_f64());
    }
    let failed: usize = groups
        .iter()
        .map(|g| {
            g.snapshot()
                .rules
                .iter()
                .filter(|r| match r {
                    lookout_evaluator::rules::status::RuleSnapshot::Alerting(a) => {
                        a.common.last_error.is_some()
                    }
                    lookout_evaluator::rules::status::RuleSnapshot::Recording(c) => {
                        c.last_error.is_some()
                    }
                })
                .count()
        })
        .sum();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{{\"rules\":{},\"reps\":{reps},\"median_seconds\":{:.4},\"min_seconds\":{:.4},\"max_seconds\":{:.4},\"failed_rules\":{failed},\"storage_series_after\":{}}}",
        GROUPS * RULES_PER_GROUP,
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        storage.stats().series
    );
}
