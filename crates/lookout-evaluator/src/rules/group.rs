//! Rule groups: evaluation of all rules in order at one timestamp, staleness markers for
//! series that disappear, alert sending, and Prometheus's scheduling (`rules/group.go`):
//! evaluations happen at `base + offset + n * interval`, where `offset` is a hash of the
//! group's file and name, so many groups spread over the interval and every restart keeps
//! the same slots. Iterations that could not run in time are counted as missed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;

use crate::alert::Notify;
use crate::datasource::{Datasource, QuerySample};
use crate::rules::metrics::{GroupLabel, RuleMetrics};
use crate::rules::status::{GroupSnapshot, RuleHealth, RuleSnapshot};
use crate::rules::{Rule, RuleEvalError};
use lookout_promql::storage::STALE_NAN;

/// What every group of a manager shares.
pub struct GroupContext {
    /// Where queries go and rule outputs are stored.
    pub datasource: Arc<dyn Datasource>,
    /// Where alerts are sent.
    pub notifier: Arc<dyn Notify>,
    /// Minimum time between two sends of the same firing alert (Prometheus's
    /// `--rules.alert.resend-delay`, 1m by default).
    pub resend_delay: Duration,
    /// Evaluation metrics.
    pub metrics: RuleMetrics,
    /// Notified after every group iteration (the state-file writer listens).
    pub evaluated: Option<Arc<tokio::sync::Notify>>,
}

#[derive(Debug, Default)]
struct GroupStats {
    evaluation_duration: Duration,
    last_evaluation: Option<SystemTime>,
    last_eval_timestamp: Option<SystemTime>,
}

/// A group of rules evaluated together.
pub struct Group {
    name: String,
    file: String,
    interval: Duration,
    query_offset: Duration,
    limit: usize,
    rules: Vec<Rule>,
    /// Per rule, the series written by its last successful evaluation.
    series_in_previous_eval: Mutex<Vec<HashSet<Labels>>>,
    stats: Mutex<GroupStats>,
    /// Source text identity, to tell an unchanged group on reload.
    fingerprint: String,
    ctx: Arc<GroupContext>,
    metric_label: GroupLabel,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("interval", &self.interval)
            .finish()
    }
}

/// Prometheus's `labels.Labels.Hash()` of `{file=..., name=...}` (xxhash64 of
/// `name 0xff value 0xff` pairs).
pub fn group_hash(file: &str, name: &str) -> u64 {
    let mut b = Vec::with_capacity(file.len() + name.len() + 16);
    for (k, v) in [("file", file), ("name", name)] {
        b.extend_from_slice(k.as_bytes());
        b.push(0xff);
        b.extend_from_slice(v.as_bytes());
        b.push(0xff);
    }
    xxhash_rust::xxh64::xxh64(&b, 0)
}

fn nanos(t: SystemTime) -> i128 {
    crate::rules::restore::sub(t, UNIX_EPOCH)
}

fn from_nanos(n: i128) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos((-n) as u64)
    }
}

impl Group {
    /// Creates a group.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        file: &str,
        interval: Duration,
        query_offset: Duration,
        limit: usize,
        rules: Vec<Rule>,
        fingerprint: String,
        ctx: Arc<GroupContext>,
    ) -> Group {
        let n = rules.len();
        let metric_label = RuleMetrics::group_label(file, name);
        ctx.metrics.rules.get_or_create(&metric_label).set(n as f64);
        ctx.metrics
            .interval
            .get_or_create(&metric_label)
            .set(interval.as_secs_f64());
        Group {
            name: name.to_string(),
            file: file.to_string(),
            interval: if interval.is_zero() {
                Duration::from_secs(60)
            } else {
                interval
            },
            query_offset,
            limit,
            rules,
            series_in_previous_eval: Mutex::new(vec![HashSet::new(); n]),
            stats: Mutex::new(GroupStats::default()),
            fingerprint,
            ctx,
            metric_label,
        }
    }

    /// Stops the template expansions of its alerting rules, running and to come (the
    /// evaluator stops and must not wait for them).
    pub fn cancel_expansions(&self) {
        for rule in &self.rules {
            if let Rule::Alerting(r) = rule {
                r.cancel_expansions();
            }
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it came from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Evaluation interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Query offset.
    pub fn query_offset(&self) -> Duration {
        self.query_offset
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Identity of the definition: same file, name, interval, offset, limit and rules.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The evaluation slot at or before `now` (Prometheus's `EvalTimestamp`).
    pub fn eval_timestamp(&self, now: SystemTime) -> SystemTime {
        let interval = self.interval.as_nanos() as i128;
        let offset = (group_hash(&self.file, &self.name) as u128 % interval as u128) as i128;
        let adj = nanos(now) - offset;
        let base = adj - adj.rem_euclid(interval);
        from_nanos(base + offset)
    }

    /// Evaluates every rule at `ts`, in order: each rule's results are stored before the
    /// next rule runs, so later rules see them. Failures are recorded per rule and do not
    /// stop the group.
    pub async fn eval(&self, ts: SystemTime) {
        let ds = &self.ctx.datasource;
        let mut samples_total = 0usize;
        for (i, rule) in self.rules.iter().enumerate() {
            let started_wall = SystemTime::now();
            let started = Instant::now();
            self.ctx
                .metrics
                .evaluations
                .get_or_create(&self.metric_label)
                .inc();
            let result = match rule {
                Rule::Alerting(r) => r.eval(ts, self.query_offset, ds, self.limit).await,
                Rule::Recording(r) => r.eval(ts, self.query_offset, ds, self.limit).await,
            };
            let outcome = match result {
                Err(e) => Err(e),
                Ok(vector) => {
                    samples_total += vector.len();
                    if let Rule::Alerting(r) = rule {
                        let alerts = r.alerts_to_send(ts, self.ctx.resend_delay, self.interval);
                        if !alerts.is_empty() {
                            self.ctx.notifier.send(alerts);
                        }
                    }
                    self.store(i, vector, ts)
                }
            };
            match outcome {
                Ok(()) => rule.info().set_health(RuleHealth::Ok, None),
                Err(e) => {
                    self.ctx
                        .metrics
                        .evaluation_failures
                        .get_or_create(&self.metric_label)
                        .inc();
                    tracing::warn!(group = %self.name, file = %self.file, rule = rule.name(), index = i, err = %e, "Evaluating rule failed");
                    rule.info().set_health(RuleHealth::Err, Some(e.to_string()));
                }
            }
            rule.info().set_evaluation(started_wall, started.elapsed());
        }
        self.ctx
            .metrics
            .last_samples
            .get_or_create(&self.metric_label)
            .set(samples_total as f64);
    }

    /// Appends a rule's output plus staleness markers for its series that disappeared.
    fn store(
        &self,
        i: usize,
        vector: Vec<QuerySample>,
        ts: SystemTime,
    ) -> Result<(), RuleEvalError> {
        let at = ts - self.query_offset;
        let returned: HashSet<Labels> = vector.iter().map(|s| s.labels.clone()).collect();
        let mut prev = self
            .series_in_previous_eval
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut batch = vector;
        if let Some(previous) = prev.get(i) {
            let mut stale: Vec<&Labels> = previous.difference(&returned).collect();
            stale.sort();
            batch.extend(stale.into_iter().map(|l| QuerySample {
                labels: l.clone(),
                value: STALE_NAN,
                histogram: None,
            }));
        }
        if batch.is_empty() {
            if let Some(p) = prev.get_mut(i) {
                p.clear();
            }
            return Ok(());
        }
        self.ctx
            .datasource
            .append(&batch, at)
            .map_err(RuleEvalError::Append)?;
        if let Some(p) = prev.get_mut(i) {
            *p = returned;
        }
        Ok(())
    }

    /// Prometheus's iteration: counts it, evaluates, records durations.
    pub async fn iterate(&self, ts: SystemTime) {
        self.ctx
            .metrics
            .iterations_scheduled
            .get_or_create(&self.metric_label)
            .inc();
        let start_wall = SystemTime::now();
        let start = Instant::now();
        self.eval(ts).await;
        let took = start.elapsed();
        self.ctx
            .metrics
            .last_duration
            .get_or_create(&self.metric_label)
            .set(took.as_secs_f64());
        self.ctx
            .metrics
            .last_evaluation
            .get_or_create(&self.metric_label)
            .set(nanos(start_wall) as f64 / 1e9);
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.evaluation_duration = took;
        st.last_evaluation = Some(start_wall);
        st.last_eval_timestamp = Some(ts);
        drop(st);
        if let Some(n) = &self.ctx.evaluated {
            n.notify_one();
        }
    }

    /// Counts iterations missed between `last` and now; returns the next evaluation time.
    fn next_slot(&self, last: SystemTime) -> SystemTime {
        let since = nanos(SystemTime::now()) - nanos(last);
        let interval = self.interval.as_nanos() as i128;
        let missed = (since / interval - 1).max(0);
        if missed > 0 {
            self.ctx
                .metrics
                .iterations_missed
                .get_or_create(&self.metric_label)
                .inc_by(missed as u64);
            self.ctx
                .metrics
                .iterations_scheduled
                .get_or_create(&self.metric_label)
                .inc_by(missed as u64);
        }
        from_nanos(nanos(last) + (missed + 1) * interval)
    }

    /// Runs the group until `stop` fires: waits for its first slot, evaluates, and — when
    /// `restore` is given — restores `for` state after the second evaluation, as Prometheus
    /// does (the first one may lack data). Saved state of alerts that have not appeared by
    /// then stays pending on the rule (see [`crate::state`]).
    pub async fn run(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        restore: Option<Box<dyn FnOnce(Arc<Group>) -> RestoreFuture + Send>>,
    ) {
        let mut eval_ts = self.eval_timestamp(SystemTime::now()) + self.interval;
        if !sleep_until(eval_ts, &mut stop).await {
            return;
        }
        if !self.iterate_or_stop(eval_ts, &mut stop).await {
            return;
        }
        if let Some(restore) = restore {
            if !sleep_until(eval_ts + self.interval, &mut stop).await {
                return;
            }
            eval_ts = self.next_slot(eval_ts);
            if !self.iterate_or_stop(eval_ts, &mut stop).await {
                return;
            }
            let started = Instant::now();
            restore(self.clone()).await;
            self.ctx
                .metrics
                .last_restore_duration
                .get_or_create(&self.metric_label)
                .set(started.elapsed().as_secs_f64());
        }
        loop {
            let target = eval_ts + self.interval;
            if !sleep_until(target, &mut stop).await {
                return;
            }
            eval_ts = self.next_slot(eval_ts);
            if !self.iterate_or_stop(eval_ts, &mut stop).await {
                return;
            }
        }
    }

    /// Runs one iteration unless `stop` fires first; then the iteration is dropped, which
    /// cancels its running query and template expansions, so a shutdown never waits for an
    /// evaluation that may run until its query timeout. False when stopped.
    async fn iterate_or_stop(
        &self,
        ts: SystemTime,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = self.iterate(ts) => true,
            _ = stop.changed() => false,
        }
    }

    /// Every series the group wrote last (to mark them stale when the group goes away).
    pub fn last_series(&self) -> Vec<Labels> {
        let prev = self
            .series_in_previous_eval
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Labels> = prev.iter().flatten().cloned().collect();
        v.sort();
        v
    }

    /// Copies alert state and staleness bookkeeping from the group this one replaces
    /// (Prometheus's `CopyState`): rules match by name and labels, duplicates in order.
    pub fn copy_state(&self, from: &Group) {
        {
            let src = from.stats.lock().unwrap_or_else(|e| e.into_inner());
            let mut dst = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            dst.evaluation_duration = src.evaluation_duration;
            dst.last_evaluation = src.last_evaluation;
        }
        let from_prev = from
            .series_in_previous_eval
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut used = vec![false; from.rules.len()];
        let mut prev = self
            .series_in_previous_eval
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (i, rule) in self.rules.iter().enumerate() {
            let id = rule.identity();
            let Some(fi) = from
                .rules
                .iter()
                .enumerate()
                .position(|(fi, r)| !used[fi] && r.identity() == id)
            else {
                continue;
            };
            used[fi] = true;
            if let (Some(p), Some(src)) = (prev.get_mut(i), from_prev.get(fi)) {
                *p = src.clone();
            }
            if let (Rule::Alerting(to), Rule::Alerting(src)) = (rule, &from.rules[fi]) {
                to.set_alerts(src.current_alerts());
                to.set_pending_restore(src.pending_restore());
            }
        }
    }

    /// A read-only view for the API.
    pub fn snapshot(&self) -> GroupSnapshot {
        let st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        GroupSnapshot {
            name: self.name.clone(),
            file: self.file.clone(),
            interval: self.interval,
            query_offset: self.query_offset,
            limit: self.limit,
            rules: self
                .rules
                .iter()
                .map(|r| match r {
                    Rule::Alerting(a) => RuleSnapshot::Alerting(a.snapshot()),
                    Rule::Recording(rr) => RuleSnapshot::Recording(rr.snapshot()),
                })
                .collect(),
            evaluation_duration: st.evaluation_duration,
            last_evaluation: st.last_evaluation,
        }
    }

    /// The evaluation timestamp of the last iteration.
    pub fn last_eval_timestamp(&self) -> Option<SystemTime> {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_eval_timestamp
    }
}

/// The future a restore callback returns.
pub type RestoreFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Sleeps until the wall-clock time `t`; false if `stop` fired first.
async fn sleep_until(t: SystemTime, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let wait = t
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stop.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_file_and_name() {
        assert_ne!(group_hash("rules.yml", "g"), group_hash("rules.yml", "h"));
        assert_ne!(group_hash("a.yml", "g"), group_hash("b.yml", "g"));
        assert_eq!(group_hash("rules.yml", "g"), group_hash("rules.yml", "g"));
    }
}
