//! The alert state machine, group evaluation and `for` restoration, driven by an in-memory
//! datasource (the datasource is an input of the rule engine; what is tested is the engine's
//! own logic). Expected transitions follow Prometheus's `rules/alerting.go`, `group.go` and
//! `manager.go` semantics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_evaluator::alert::{Alert, AlertState, Notify};
use lookout_evaluator::datasource::{
    Datasource, DatasourceError, DatasourceFuture, QuerySample, TimedSample,
};
use lookout_evaluator::rules::group::{Group, GroupContext};
use lookout_evaluator::rules::metrics::RuleMetrics;
use lookout_evaluator::rules::status::RuleHealth;
use lookout_evaluator::rules::{AlertingRule, RecordingRule, Rule, RuleEvalError};
use lookout_evaluator::state::{self, ForState, RestoreSource};
use lookout_promql::Labels;
use lookout_promql::storage::is_stale;

type Script =
    Box<dyn Fn(SystemTime, &[(Labels, SystemTime, f64)]) -> Vec<QuerySample> + Send + Sync>;

/// Expressions answer from scripts; appended samples are kept and visible to scripts.
#[derive(Default)]
struct FakeDatasource {
    scripts: Mutex<HashMap<String, Script>>,
    stored: Mutex<Vec<(Labels, SystemTime, f64)>>,
    queries: Mutex<Vec<(String, SystemTime)>>,
}

impl FakeDatasource {
    fn script(
        &self,
        expr: &str,
        f: impl Fn(SystemTime, &[(Labels, SystemTime, f64)]) -> Vec<QuerySample> + Send + Sync + 'static,
    ) {
        self.scripts
            .lock()
            .unwrap()
            .insert(expr.to_string(), Box::new(f));
    }

    fn stored_named(&self, name: &str) -> Vec<(Labels, SystemTime, f64)> {
        self.stored
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _, _)| l.metric_name() == Some(name))
            .cloned()
            .collect()
    }
}

impl Datasource for FakeDatasource {
    fn query<'a>(
        &'a self,
        expr: &'a str,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<QuerySample>> {
        Box::pin(async move {
            self.queries.lock().unwrap().push((expr.to_string(), at));
            let scripts = self.scripts.lock().unwrap();
            let f = scripts.get(expr).ok_or_else(|| DatasourceError::Query {
                expr: expr.to_string(),
                message: "unknown expression".to_string(),
            })?;
            let stored = self.stored.lock().unwrap().clone();
            Ok(f(at, &stored))
        })
    }

    fn append(&self, samples: &[QuerySample], at: SystemTime) -> Result<(), DatasourceError> {
        let mut s = self.stored.lock().unwrap();
        for q in samples {
            s.push((q.labels.clone(), at, q.value));
        }
        Ok(())
    }

    fn last_samples<'a>(
        &'a self,
        _selector: &'a str,
        lookback: Duration,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<TimedSample>> {
        Box::pin(async move {
            let mut last: BTreeMap<Labels, (SystemTime, f64)> = BTreeMap::new();
            for (l, t, v) in self.stored.lock().unwrap().iter() {
                if l.metric_name() == Some("ALERTS_FOR_STATE") && *t > at - lookback && *t <= at {
                    last.insert(l.clone(), (*t, *v));
                }
            }
            Ok(last
                .into_iter()
                .map(|(labels, (timestamp, value))| TimedSample {
                    labels,
                    timestamp,
                    value,
                })
                .collect())
        })
    }

    fn persists_rule_outputs(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct RecordingNotifier {
    sent: Mutex<Vec<Alert>>,
}

impl Notify for RecordingNotifier {
    fn send(&self, alerts: Vec<Alert>) {
        self.sent.lock().unwrap().extend(alerts);
    }
}

impl RecordingNotifier {
    fn take(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

const MIN: u64 = 60;

fn sample(pairs: &[(&str, &str)], v: f64) -> QuerySample {
    QuerySample {
        labels: Labels::new(pairs.iter().copied()),
        value: v,
        histogram: None,
    }
}

fn alerting_rule(name: &str, expr: &str, hold: u64, keep_firing_for: u64) -> AlertingRule {
    AlertingRule::new(
        name,
        expr,
        Duration::from_secs(hold),
        Duration::from_secs(keep_firing_for),
        BTreeMap::from([("severity".to_string(), "critical".to_string())]),
        BTreeMap::from([(
            "summary".to_string(),
            "{{ $labels.instance }} is down ({{ $value }})".to_string(),
        )]),
        Labels::new([("region", "eu")]),
        "http://lookout:9090",
        true,
    )
}

struct Fixture {
    ds: Arc<FakeDatasource>,
    notifier: Arc<RecordingNotifier>,
    group: Group,
}

fn fixture(rules: Vec<Rule>, interval: u64, limit: usize, ds: Arc<FakeDatasource>) -> Fixture {
    let notifier = Arc::new(RecordingNotifier::default());
    let ctx = Arc::new(GroupContext {
        datasource: ds.clone(),
        notifier: notifier.clone(),
        resend_delay: Duration::from_secs(60),
        metrics: RuleMetrics::default(),
        evaluated: None,
    });
    let group = Group::new(
        "g",
        "rules.yml",
        Duration::from_secs(interval),
        Duration::ZERO,
        limit,
        rules,
        String::new(),
        ctx,
    );
    Fixture {
        ds,
        notifier,
        group,
    }
}

/// `up == 0` returns instance "a" while `down` says so.
fn scripted_down(ds: &FakeDatasource, down: Arc<Mutex<bool>>) {
    ds.script("up == 0", move |_, _| {
        if *down.lock().unwrap() {
            vec![sample(
                &[("__name__", "up"), ("instance", "a"), ("job", "node")],
                0.0,
            )]
        } else {
            vec![]
        }
    });
}

fn the_rule(g: &Group) -> &AlertingRule {
    match &g.rules()[0] {
        Rule::Alerting(r) => r,
        Rule::Recording(_) => panic!("not an alerting rule"),
    }
}

#[tokio::test]
async fn pending_then_firing_after_for_then_resolved_and_kept_15_minutes() {
    let ds = Arc::new(FakeDatasource::default());
    let down = Arc::new(Mutex::new(true));
    scripted_down(&ds, down.clone());
    let f = fixture(
        vec![Rule::Alerting(alerting_rule(
            "ServerDown",
            "up == 0",
            5 * MIN,
            0,
        ))],
        MIN,
        0,
        ds,
    );
    let rule = the_rule(&f.group);

    f.group.eval(t(0)).await;
    let alerts = rule.active_alerts();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.state, AlertState::Pending);
    assert_eq!(a.active_at, t(0));
    assert_eq!(
        a.labels,
        Labels::new([
            ("alertname", "ServerDown"),
            ("instance", "a"),
            ("job", "node"),
            ("severity", "critical")
        ])
    );
    assert_eq!(a.annotations["summary"], "a is down (0)");
    assert!(
        f.notifier.take().is_empty(),
        "pending alerts are never sent"
    );
    let alerts_series = f.ds.stored_named("ALERTS");
    assert_eq!(alerts_series.len(), 1);
    assert_eq!(alerts_series[0].0.get("alertstate"), Some("pending"));
    let for_state = f.ds.stored_named("ALERTS_FOR_STATE");
    assert_eq!(for_state[0].2, 1_700_000_000.0);

    for m in 1..5 {
        f.group.eval(t(m * MIN)).await;
        assert_eq!(rule.state(), AlertState::Pending, "minute {m}");
    }
    f.group.eval(t(5 * MIN)).await;
    assert_eq!(rule.state(), AlertState::Firing);
    let sent = f.notifier.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].starts_at, t(5 * MIN));
    // ValidUntil = ts + 4 * max(interval, resend_delay).
    assert_eq!(sent[0].ends_at, Some(t(9 * MIN)));
    assert_eq!(
        sent[0].generator_url,
        "http://lookout:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
    );
    // The pending ALERTS series went stale when the state changed to firing.
    let stale: Vec<_> =
        f.ds.stored_named("ALERTS")
            .into_iter()
            .filter(|(l, ts, v)| {
                *ts == t(5 * MIN) && is_stale(*v) && l.get("alertstate") == Some("pending")
            })
            .collect();
    assert_eq!(stale.len(), 1);

    // Re-sent only after resend_delay has passed (strictly).
    f.group.eval(t(6 * MIN)).await;
    assert!(f.notifier.take().is_empty());
    f.group.eval(t(7 * MIN)).await;
    assert_eq!(f.notifier.take().len(), 1);

    // Resolved: sent at once with ends_at = resolved time.
    *down.lock().unwrap() = false;
    f.group.eval(t(8 * MIN)).await;
    let sent = f.notifier.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ends_at, Some(t(8 * MIN)));
    assert!(rule.active_alerts().is_empty());
    let current = rule.current_alerts();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].state, AlertState::Inactive);
    // Kept and re-sent for 15 minutes, then dropped.
    f.group.eval(t(9 * MIN)).await;
    assert!(f.notifier.take().is_empty());
    f.group.eval(t(10 * MIN)).await;
    assert_eq!(f.notifier.take().len(), 1);
    f.group.eval(t(23 * MIN)).await;
    assert_eq!(
        rule.current_alerts().len(),
        1,
        "15 minutes after resolving it is still kept"
    );
    f.group.eval(t(23 * MIN + 1)).await;
    assert!(rule.current_alerts().is_empty());
}

#[tokio::test]
async fn pending_alert_that_disappears_is_dropped_not_resolved() {
    let ds = Arc::new(FakeDatasource::default());
    let down = Arc::new(Mutex::new(true));
    scripted_down(&ds, down.clone());
    let f = fixture(
        vec![Rule::Alerting(alerting_rule(
            "ServerDown",
            "up == 0",
            5 * MIN,
            0,
        ))],
        MIN,
        0,
        ds,
    );
    f.group.eval(t(0)).await;
    *down.lock().unwrap() = false;
    f.group.eval(t(MIN)).await;
    assert!(the_rule(&f.group).current_alerts().is_empty());
    assert!(f.notifier.take().is_empty());
    // Back again: a new pending alert with a new active_at.
    *down.lock().unwrap() = true;
    f.group.eval(t(2 * MIN)).await;
    assert_eq!(the_rule(&f.group).active_alerts()[0].active_at, t(2 * MIN));
}

#[tokio::test]
async fn zero_for_fires_on_first_evaluation() {
    let ds = Arc::new(FakeDatasource::default());
    scripted_down(&ds, Arc::new(Mutex::new(true)));
    let f = fixture(
        vec![Rule::Alerting(alerting_rule("ServerDown", "up == 0", 0, 0))],
        MIN,
        0,
        ds,
    );
    f.group.eval(t(0)).await;
    assert_eq!(the_rule(&f.group).state(), AlertState::Firing);
    assert_eq!(f.notifier.take().len(), 1);
}

/// A histogram sample's alert keeps the histogram (for the status page and templates) and
/// the value 0, as Prometheus's `Alert.Value` for a histogram sample.
#[tokio::test]
async fn a_histogram_alert_keeps_its_histogram() {
    use lookout_promql::histogram::FloatHistogram;
    let ds = Arc::new(FakeDatasource::default());
    ds.script("slow", |_, _| {
        let mut s = sample(&[("__name__", "latency"), ("instance", "a")], 0.0);
        s.histogram = Some(Arc::new(FloatHistogram {
            count: 4.0,
            sum: 2.5,
            ..FloatHistogram::default()
        }));
        vec![s]
    });
    let f = fixture(
        vec![Rule::Alerting(alerting_rule("Slow", "slow", 0, 0))],
        MIN,
        0,
        ds,
    );
    f.group.eval(t(0)).await;
    let snap = the_rule(&f.group).snapshot();
    let a = &snap.alerts[0];
    assert_eq!(a.value, 0.0);
    let h = a.histogram.as_deref().expect("the histogram is kept");
    assert_eq!((h.count, h.sum), (4.0, 2.5));
    assert!(
        a.annotations["summary"].contains("{count:4, sum:2.5"),
        "{:?}",
        a.annotations
    );
}

#[tokio::test]
async fn keep_firing_for_holds_the_alert_after_the_condition_clears() {
    let ds = Arc::new(FakeDatasource::default());
    let down = Arc::new(Mutex::new(true));
    scripted_down(&ds, down.clone());
    let f = fixture(
        vec![Rule::Alerting(alerting_rule(
            "ServerDown",
            "up == 0",
            0,
            3 * MIN,
        ))],
        MIN,
        0,
        ds,
    );
    let rule = the_rule(&f.group);
    f.group.eval(t(0)).await;
    assert_eq!(rule.state(), AlertState::Firing);
    *down.lock().unwrap() = false;
    f.group.eval(t(MIN)).await;
    let a = &rule.active_alerts()[0];
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!(a.keep_firing_since, Some(t(MIN)));
    f.group.eval(t(3 * MIN)).await;
    assert_eq!(rule.state(), AlertState::Firing, "2m < keep_firing_for");
    f.group.eval(t(4 * MIN)).await;
    assert_eq!(
        rule.state(),
        AlertState::Inactive,
        "3m >= keep_firing_for: resolved"
    );
    assert_eq!(rule.current_alerts()[0].resolved_at, Some(t(4 * MIN)));
    // Condition returning while kept firing resets keep_firing_since.
    *down.lock().unwrap() = true;
    f.group.eval(t(5 * MIN)).await;
    *down.lock().unwrap() = false;
    f.group.eval(t(6 * MIN)).await;
    *down.lock().unwrap() = true;
    f.group.eval(t(7 * MIN)).await;
    assert_eq!(rule.active_alerts()[0].keep_firing_since, None);
}

#[tokio::test]
async fn same_labels_after_dropping_the_name_is_an_error() {
    let ds = Arc::new(FakeDatasource::default());
    ds.script("up == 0 or down == 1", |_, _| {
        vec![
            sample(&[("__name__", "up"), ("instance", "a")], 0.0),
            sample(&[("__name__", "down"), ("instance", "a")], 1.0),
        ]
    });
    let f = fixture(
        vec![Rule::Alerting(alerting_rule(
            "X",
            "up == 0 or down == 1",
            0,
            0,
        ))],
        MIN,
        0,
        ds,
    );
    f.group.eval(t(0)).await;
    let snap = f.group.snapshot();
    let lookout_evaluator::rules::status::RuleSnapshot::Alerting(a) = &snap.rules[0] else {
        panic!("alerting rule expected")
    };
    assert_eq!(a.common.health, RuleHealth::Err);
    assert_eq!(
        a.common.last_error.as_deref(),
        Some("vector contains metrics with the same labelset after applying alert labels")
    );
}

#[tokio::test]
async fn limit_exceeded_clears_alerts_and_fails() {
    let ds = Arc::new(FakeDatasource::default());
    ds.script("up == 0", |_, _| {
        vec![
            sample(&[("instance", "a")], 0.0),
            sample(&[("instance", "b")], 0.0),
        ]
    });
    let f = fixture(
        vec![Rule::Alerting(alerting_rule("X", "up == 0", 0, 0))],
        MIN,
        1,
        ds.clone(),
    );
    let r = the_rule(&f.group);
    let err = r
        .eval(t(0), Duration::ZERO, &(ds as Arc<dyn Datasource>), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, RuleEvalError::Limit(_)));
    assert_eq!(err.to_string(), "exceeded limit of 1 with 2 alerts");
    assert!(r.current_alerts().is_empty());
}

#[tokio::test]
async fn later_rules_see_earlier_results_and_vanished_series_go_stale() {
    let ds = Arc::new(FakeDatasource::default());
    let present = Arc::new(Mutex::new(true));
    let p = present.clone();
    ds.script("sum by (job) (up)", move |_, _| {
        if *p.lock().unwrap() {
            vec![sample(&[("job", "node")], 3.0)]
        } else {
            vec![]
        }
    });
    // Reads what the recording rule stored at the same timestamp.
    ds.script("job:up:sum < 5", |at, stored| {
        stored
            .iter()
            .filter(|(l, ts, v)| {
                l.metric_name() == Some("job:up:sum") && *ts == at && !is_stale(*v)
            })
            .map(|(l, _, v)| QuerySample {
                labels: l.clone(),
                value: *v,
                histogram: None,
            })
            .collect()
    });
    let rules = vec![
        Rule::Recording(RecordingRule::new(
            "job:up:sum",
            "sum by (job) (up)",
            BTreeMap::from([("team".to_string(), "ops".to_string())]),
        )),
        Rule::Alerting(alerting_rule("FewUp", "job:up:sum < 5", 0, 0)),
    ];
    let f = fixture(rules, MIN, 0, ds);
    f.group.eval(t(0)).await;
    let recorded = f.ds.stored_named("job:up:sum");
    assert_eq!(
        recorded,
        vec![(
            Labels::new([("__name__", "job:up:sum"), ("job", "node"), ("team", "ops")]),
            t(0),
            3.0
        )]
    );
    let Rule::Alerting(alert) = &f.group.rules()[1] else {
        panic!()
    };
    assert_eq!(
        alert.state(),
        AlertState::Firing,
        "the alert saw the recorded series"
    );

    *present.lock().unwrap() = false;
    f.group.eval(t(MIN)).await;
    let recorded = f.ds.stored_named("job:up:sum");
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].1, t(MIN));
    assert!(is_stale(recorded[1].2));
    // The ALERTS series of the resolved alert went stale too.
    let alerts = f.ds.stored_named("ALERTS");
    assert!(
        alerts
            .iter()
            .any(|(_, ts, v)| *ts == t(MIN) && is_stale(*v))
    );
    // A third evaluation adds no more stale markers.
    f.group.eval(t(2 * MIN)).await;
    assert_eq!(f.ds.stored_named("job:up:sum").len(), 2);
}

#[tokio::test]
async fn failing_query_marks_the_rule_unhealthy_and_keeps_series() {
    let ds = Arc::new(FakeDatasource::default());
    let rules = vec![Rule::Recording(RecordingRule::new(
        "x",
        "nope",
        BTreeMap::new(),
    ))];
    let f = fixture(rules, MIN, 0, ds);
    f.group.eval(t(0)).await;
    let snap = f.group.snapshot();
    let lookout_evaluator::rules::status::RuleSnapshot::Recording(r) = &snap.rules[0] else {
        panic!()
    };
    assert_eq!(r.health, RuleHealth::Err);
    assert!(
        r.last_error
            .as_deref()
            .unwrap_or("")
            .contains("unknown expression")
    );
}

#[tokio::test]
async fn query_offset_shifts_queries_and_outputs() {
    let ds = Arc::new(FakeDatasource::default());
    ds.script("vector(1)", |_, _| vec![sample(&[], 1.0)]);
    let notifier = Arc::new(RecordingNotifier::default());
    let ctx = Arc::new(GroupContext {
        datasource: ds.clone(),
        notifier,
        resend_delay: Duration::from_secs(60),
        metrics: RuleMetrics::default(),
        evaluated: None,
    });
    let g = Group::new(
        "g",
        "f",
        Duration::from_secs(60),
        Duration::from_secs(30),
        0,
        vec![Rule::Recording(RecordingRule::new(
            "one",
            "vector(1)",
            BTreeMap::new(),
        ))],
        String::new(),
        ctx,
    );
    g.eval(t(MIN)).await;
    assert_eq!(ds.queries.lock().unwrap()[0].1, t(30));
    assert_eq!(ds.stored_named("one")[0].1, t(30));
}

#[test]
fn evaluation_slots_are_stable_and_in_the_past() {
    let ds = Arc::new(FakeDatasource::default());
    let f = fixture(vec![], MIN, 0, ds);
    let now = t(12345);
    let slot = f.group.eval_timestamp(now);
    assert!(slot <= now);
    assert!(now.duration_since(slot).unwrap() < Duration::from_secs(MIN));
    let later = f.group.eval_timestamp(now + Duration::from_secs(3600 + 7));
    let diff = later.duration_since(slot).unwrap();
    assert_eq!(diff.as_nanos() % Duration::from_secs(MIN).as_nanos(), 0);
}

/// Restores after the second evaluation at `now`, for an alert whose saved state says it
/// became active at `active_at` and was last seen at `last_seen`.
async fn restored_active_at(
    hold: u64,
    active_at: u64,
    last_seen: u64,
    now: u64,
    saved_by_datasource: bool,
) -> SystemTime {
    let ds = Arc::new(FakeDatasource::default());
    scripted_down(&ds, Arc::new(Mutex::new(true)));
    let labels = Labels::new([
        ("alertname", "ServerDown"),
        ("instance", "a"),
        ("job", "node"),
        ("severity", "critical"),
    ]);
    let rule = alerting_rule("ServerDown", "up == 0", hold, 0);
    rule.set_restored(false);
    let f = fixture(vec![Rule::Alerting(rule)], MIN, 0, ds.clone());
    let source = if saved_by_datasource {
        let mut l = labels.clone();
        l.set("__name__", "ALERTS_FOR_STATE");
        ds.append(
            &[QuerySample {
                labels: l,
                value: t(active_at).duration_since(UNIX_EPOCH).unwrap().as_secs() as f64,
                histogram: None,
            }],
            t(last_seen),
        )
        .unwrap();
        RestoreSource::Datasource(ds.clone())
    } else {
        RestoreSource::Saved(Arc::new(HashMap::from([(
            labels,
            ForState {
                timestamp: t(last_seen),
                value: t(active_at).duration_since(UNIX_EPOCH).unwrap().as_secs() as f64,
            },
        )])))
    };
    f.group.eval(t(now - MIN)).await;
    f.group.eval(t(now)).await;
    // Before restoration nothing is written to ALERTS / ALERTS_FOR_STATE.
    assert!(f.ds.stored_named("ALERTS").is_empty());
    state::restore_for_state(
        &f.group,
        &source,
        t(now),
        Duration::from_secs(3600),
        Duration::from_secs(600),
    )
    .await;
    let rule = the_rule(&f.group);
    assert!(rule.restored());
    rule.active_alerts()[0].active_at
}

#[tokio::test]
async fn restore_shifts_active_at_by_the_downtime() {
    // for 30m; pending for 5m before going down at 10m; back at 20m: 25m remain.
    for by_ds in [true, false] {
        let at = restored_active_at(30 * MIN, 5 * MIN, 10 * MIN, 20 * MIN, by_ds).await;
        assert_eq!(at, t(15 * MIN), "datasource={by_ds}");
    }
}

#[tokio::test]
async fn restore_gives_at_least_the_grace_period() {
    // for 30m; pending 25m when it went down: 5m remain < 10m grace => fires 10m after now.
    let now = 40 * MIN;
    let at = restored_active_at(30 * MIN, 5 * MIN, 30 * MIN, now, false).await;
    assert_eq!(at, t(now + 10 * MIN - 30 * MIN));
}

#[tokio::test]
async fn restore_keeps_active_at_of_alerts_that_were_firing() {
    let at = restored_active_at(30 * MIN, 5 * MIN, 50 * MIN, 60 * MIN, false).await;
    assert_eq!(at, t(5 * MIN));
}

#[tokio::test]
async fn restore_ignores_state_older_than_the_outage_tolerance() {
    // Last seen 2h before now: the alert keeps the active_at of its first evaluation.
    let now = 3 * 3600;
    let at = restored_active_at(30 * MIN, 0, 3600 - 1, now, false).await;
    assert_eq!(at, t(now - MIN));
}

#[tokio::test]
async fn restore_skips_rules_shorter_than_the_grace_period() {
    let now = 20 * MIN;
    let at = restored_active_at(5 * MIN, 0, 10 * MIN, now, false).await;
    assert_eq!(at, t(now - MIN));
}

/// Embedded mode after a restart: the storage is empty, so the evaluations around the
/// restore (at `restart` and `restart + 1m`) see no data; the alert first appears at
/// `appears`. The saved state (from the state file) says it became active at `active_at`
/// and was last seen at `last_seen`. Returns the alert right after it appeared and the
/// `ALERTS_FOR_STATE` value written at that evaluation.
async fn late_alert(
    hold: u64,
    active_at: u64,
    last_seen: u64,
    restart: u64,
    appears: u64,
) -> (
    Fixture,
    lookout_evaluator::rules::alerting::ActiveAlert,
    f64,
) {
    let ds = Arc::new(FakeDatasource::default());
    let down = Arc::new(Mutex::new(false));
    scripted_down(&ds, down.clone());
    let labels = Labels::new([
        ("alertname", "ServerDown"),
        ("instance", "a"),
        ("job", "node"),
        ("severity", "critical"),
    ]);
    let rule = alerting_rule("ServerDown", "up == 0", hold, 0);
    rule.set_restored(false);
    let f = fixture(vec![Rule::Alerting(rule)], MIN, 0, ds.clone());
    let saved = ForState {
        timestamp: t(last_seen),
        value: t(active_at).duration_since(UNIX_EPOCH).unwrap().as_secs() as f64,
    };
    let source = RestoreSource::Saved(Arc::new(HashMap::from([(labels.clone(), saved)])));
    f.group.eval(t(restart)).await;
    f.group.eval(t(restart + MIN)).await;
    state::restore_for_state(
        &f.group,
        &source,
        t(restart + MIN),
        Duration::from_secs(3600),
        Duration::from_secs(600),
    )
    .await;
    let rule = the_rule(&f.group);
    assert!(rule.restored());
    assert!(rule.active_alerts().is_empty());
    // Nothing to restore yet: the saved state waits for the alert.
    let pending = rule.pending_restore().expect("saved state kept pending");
    assert_eq!(pending.entries.get(&labels), Some(&saved));
    // Evaluations without data leave it pending.
    for m in (restart + 2 * MIN..appears).step_by(MIN as usize) {
        f.group.eval(t(m)).await;
        assert!(rule.active_alerts().is_empty());
    }
    *down.lock().unwrap() = true;
    f.group.eval(t(appears)).await;
    let alerts = rule.active_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].labels, labels);
    // Applied once: nothing left pending.
    assert_eq!(rule.pending_restore(), None);
    let written =
        f.ds.stored_named("ALERTS_FOR_STATE")
            .into_iter()
            .find(|(_, at, _)| *at == t(appears))
            .map(|(_, _, v)| v)
            .expect("ALERTS_FOR_STATE written when the alert appears");
    let alert = alerts[0].clone();
    (f, alert, written)
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs() as f64
}

#[tokio::test]
async fn saved_state_is_applied_when_the_alert_appears_after_the_restore() {
    // for 30m; pending 5m when it went down at 10m; restarted at 19m with an empty storage;
    // the first scrape lands at 25m. Downtime 10m..25m moves active_at to 20m: 25m remain.
    let (f, alert, written) = late_alert(30 * MIN, 5 * MIN, 10 * MIN, 19 * MIN, 25 * MIN).await;
    assert_eq!(alert.active_at, t(20 * MIN));
    assert_eq!(alert.state, AlertState::Pending);
    assert_eq!(written, unix(t(20 * MIN)));
    let rule = the_rule(&f.group);
    f.group.eval(t(49 * MIN)).await;
    assert_eq!(rule.active_alerts()[0].state, AlertState::Pending);
    f.group.eval(t(50 * MIN)).await;
    assert_eq!(rule.active_alerts()[0].state, AlertState::Firing);
    assert_eq!(rule.active_alerts()[0].active_at, t(20 * MIN));
}

#[tokio::test]
async fn late_alert_that_had_fired_keeps_active_at_and_fires_again() {
    let (f, alert, written) = late_alert(30 * MIN, 5 * MIN, 50 * MIN, 60 * MIN, 64 * MIN).await;
    assert_eq!(alert.active_at, t(5 * MIN));
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(written, unix(t(5 * MIN)));
    let sent = f.notifier.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].starts_at, t(64 * MIN));
}

#[tokio::test]
async fn late_alert_gets_the_grace_period() {
    // for 30m; pending 25m when it went down at 30m: 5m remain < 10m grace, counted from
    // the evaluation where it appears (42m): it fires at 52m.
    let (f, alert, _) = late_alert(30 * MIN, 5 * MIN, 30 * MIN, 40 * MIN, 42 * MIN).await;
    assert_eq!(alert.active_at, t(42 * MIN + 10 * MIN - 30 * MIN));
    let rule = the_rule(&f.group);
    f.group.eval(t(51 * MIN)).await;
    assert_eq!(rule.active_alerts()[0].state, AlertState::Pending);
    f.group.eval(t(52 * MIN)).await;
    assert_eq!(rule.active_alerts()[0].state, AlertState::Firing);
}

#[tokio::test]
async fn late_alert_beyond_the_outage_tolerance_starts_afresh() {
    // Last saved at 10m; it appears at 71m, more than 1h later: a new alert.
    let (_, alert, written) = late_alert(30 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 71 * MIN).await;
    assert_eq!(alert.active_at, t(71 * MIN));
    assert_eq!(written, unix(t(71 * MIN)));
}

#[tokio::test]
async fn pending_saved_state_expires_after_the_outage_tolerance_and_survives_a_reload() {
    let ds = Arc::new(FakeDatasource::default());
    scripted_down(&ds, Arc::new(Mutex::new(false)));
    let labels = Labels::new([
        ("alertname", "ServerDown"),
        ("instance", "a"),
        ("job", "node"),
        ("severity", "critical"),
    ]);
    let rule = alerting_rule("ServerDown", "up == 0", 30 * MIN, 0);
    rule.set_restored(false);
    let old = fixture(vec![Rule::Alerting(rule)], MIN, 0, ds.clone());
    let saved = ForState {
        timestamp: t(10 * MIN),
        value: unix(t(5 * MIN)),
    };
    let source = RestoreSource::Saved(Arc::new(HashMap::from([(labels.clone(), saved)])));
    old.group.eval(t(20 * MIN)).await;
    old.group.eval(t(21 * MIN)).await;
    state::restore_for_state(
        &old.group,
        &source,
        t(21 * MIN),
        Duration::from_secs(3600),
        Duration::from_secs(600),
    )
    .await;
    // The state file keeps it while it waits (a second restart would still restore it).
    old.group.iterate(t(22 * MIN)).await;
    let old_group = Arc::new(old.group);
    assert_eq!(
        state::collect_for_state(std::slice::from_ref(&old_group)).get(&labels),
        Some(&saved)
    );
    // A reload carries it over to the new group.
    let new = fixture(
        vec![Rule::Alerting(alerting_rule(
            "ServerDown",
            "up == 0",
            30 * MIN,
            0,
        ))],
        MIN,
        0,
        ds.clone(),
    );
    new.group.copy_state(&old_group);
    let rule = the_rule(&new.group);
    assert_eq!(
        rule.pending_restore().map(|p| p.entries),
        Some(HashMap::from([(labels.clone(), saved)]))
    );
    // Still within the tolerance at 70m, gone at 70m + 1s.
    rule.eval(
        t(70 * MIN),
        Duration::ZERO,
        &(ds.clone() as Arc<dyn Datasource>),
        0,
    )
    .await
    .unwrap();
    assert!(rule.pending_restore().is_some());
    rule.eval(
        t(70 * MIN + 1),
        Duration::ZERO,
        &(ds.clone() as Arc<dyn Datasource>),
        0,
    )
    .await
    .unwrap();
    assert_eq!(rule.pending_restore(), None);
}

#[tokio::test]
async fn remote_restore_leaves_nothing_pending() {
    let ds = Arc::new(FakeDatasource::default());
    scripted_down(&ds, Arc::new(Mutex::new(false)));
    let mut l = Labels::new([
        ("__name__", "ALERTS_FOR_STATE"),
        ("alertname", "ServerDown"),
        ("instance", "a"),
        ("job", "node"),
        ("severity", "critical"),
    ]);
    ds.append(
        &[QuerySample {
            labels: l.clone(),
            value: unix(t(5 * MIN)),
            histogram: None,
        }],
        t(10 * MIN),
    )
    .unwrap();
    l.remove("__name__");
    let rule = alerting_rule("ServerDown", "up == 0", 30 * MIN, 0);
    rule.set_restored(false);
    let f = fixture(vec![Rule::Alerting(rule)], MIN, 0, ds.clone());
    f.group.eval(t(20 * MIN)).await;
    f.group.eval(t(21 * MIN)).await;
    state::restore_for_state(
        &f.group,
        &RestoreSource::Datasource(ds.clone()),
        t(21 * MIN),
        Duration::from_secs(3600),
        Duration::from_secs(600),
    )
    .await;
    assert!(the_rule(&f.group).restored());
    assert_eq!(the_rule(&f.group).pending_restore(), None);
}

#[tokio::test]
async fn a_changed_group_takes_over_alerts_and_staleness_bookkeeping() {
    let ds = Arc::new(FakeDatasource::default());
    let down = Arc::new(Mutex::new(true));
    scripted_down(&ds, down.clone());
    let old = fixture(
        vec![Rule::Alerting(alerting_rule("ServerDown", "up == 0", 0, 0))],
        MIN,
        0,
        ds.clone(),
    );
    old.group.eval(t(0)).await;
    let before = the_rule(&old.group).active_alerts();
    assert_eq!(before[0].state, AlertState::Firing);

    // Same rule, new interval: a different group definition.
    let new = fixture(
        vec![Rule::Alerting(alerting_rule("ServerDown", "up == 0", 0, 0))],
        2 * MIN,
        0,
        ds.clone(),
    );
    new.group.copy_state(&old.group);
    assert_eq!(the_rule(&new.group).active_alerts(), before);
    assert_eq!(new.group.last_series(), old.group.last_series());

    // The condition clears: the new group resolves the alert it inherited and marks the
    // old group's ALERTS series stale.
    *down.lock().unwrap() = false;
    new.group.eval(t(2 * MIN)).await;
    let a = &the_rule(&new.group).current_alerts()[0];
    assert_eq!(a.state, AlertState::Inactive);
    assert_eq!(a.resolved_at, Some(t(2 * MIN)));
    let stale: Vec<_> = ds
        .stored_named("ALERTS")
        .into_iter()
        .filter(|(_, ts, v)| *ts == t(2 * MIN) && is_stale(*v))
        .collect();
    assert_eq!(stale.len(), 1);
}
