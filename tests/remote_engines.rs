//! Remote mode end to end against two real query engines, with one test body: Debian's
//! `victoria-metrics` (single node) and `prometheus` (2.42, remote-write receiver on). Each
//! engine scrapes a loopback gauge target; `lookout evaluator --datasource.url` queries it
//! and remote-writes its rule outputs back to it (`--remote-write.url`); Alertmanager posts
//! to a loopback webhook.
//!
//! * The recording rule's output is queried back from the engine.
//! * Flipping the gauge to 0 makes `ScaleDown` pending; its `ALERTS_FOR_STATE` reaches the
//!   engine. The evaluator is SIGKILLed mid-`for` and restarted: the restored `activeAt`
//!   (Prometheus's `RestoreForState`: the saved one moved forward by the downtime) is older
//!   than the restart, so it fires on the original schedule, not a full `for` after the
//!   restart. `ALERTS{alertstate="firing"}` reaches the engine, the webhook gets one firing
//!   notification, and one resolved notification once the gauge is back to 1.
//! * Killed again after the resolution and restarted with the gauge at 0, the evaluator does
//!   not restore the finished episode (its `ALERTS_FOR_STATE` ended with a staleness
//!   marker): the alert is pending from after the restart.
//!
//! VictoriaMetrics's flags and quirks are listed at `common::start_victoria_metrics`.
//! The VictoriaMetrics test is skipped (with a message) when `victoria-metrics` is not on
//! `PATH`; `scripts/install-test-deps.sh` installs it.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{
    Evaluator, GaugeTarget, WebhookReceiver, evaluator_alerts, eventually, free_port, has_labels,
    instant_query, now_secs, on_path, restored, rfc3339_secs, start_alertmanager_webhook,
    start_evaluator, start_prometheus, start_victoria_metrics, write_file,
};

const POLL: Duration = Duration::from_millis(200);
/// At most this many polls (one minute) for any one state change.
const TRIES: usize = 300;
/// The alert's `for`, in seconds.
const HOLD: f64 = 15.0;
/// Pending time before the evaluator is killed.
const PENDING_BEFORE_KILL: f64 = 6.0;
const SERIES: &str = r#"lookout_scale_up{name="a"}"#;
const SCALE_DOWN: [(&str, &str); 2] = [("alertname", "ScaleDown"), ("name", "a")];

/// The query engine under test.
#[derive(Clone, Copy, Debug)]
enum Engine {
    VictoriaMetrics,
    Prometheus,
}

impl Engine {
    /// Starts the engine scraping `target` every second; returns it and its base URL.
    async fn start(self, dir: &Path, target: &str) -> (common::Process, String) {
        let scrape = format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: scale
    static_configs:
      - targets: ['{target}']
"
        );
        let (process, port) = match self {
            Engine::VictoriaMetrics => start_victoria_metrics(dir, &scrape).await,
            Engine::Prometheus => start_prometheus(dir, &scrape).await,
        };
        (process, format!("http://127.0.0.1:{port}"))
    }
}

/// A recording rule on the gauge and an alert on it with `for: 15s`.
const RULES: &str = r#"groups:
  - name: scale
    interval: 1s
    rules:
      - record: job:lookout_scale_up:sum
        expr: sum by (job) (lookout_scale_up)
      - alert: ScaleDown
        expr: lookout_scale_up == 0
        for: 15s
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.name }} is down"
"#;

/// The evaluator's flags in remote mode against `engine`; a 1 s grace period so that a
/// 15 s `for` is restored at all (Prometheus skips rules whose `for` is below it).
fn remote_flags(engine: &str) -> Vec<String> {
    [
        "--datasource.url",
        engine,
        "--remote-write.url",
        &format!("{engine}/api/v1/write"),
        "--rules.alert.for-grace-period",
        "1s",
    ]
    .map(str::to_string)
    .to_vec()
}

/// The alert's entry in the evaluator's `/api/v1/alerts` (`Some(None)` when not active).
async fn scale_down(base: &str) -> Option<Option<Value>> {
    let alerts = evaluator_alerts(base).await?;
    Some(alerts.into_iter().find(|a| has_labels(a, &SCALE_DOWN)))
}

/// The first value of an instant query's result, if any.
async fn first_value(engine: &str, expr: &str) -> Option<f64> {
    let result = instant_query(engine, expr).await.ok()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// Waits until the engine holds `expr` with value `want`.
async fn wait_value(engine: &str, expr: &str, want: f64) {
    eventually(
        &format!("{expr} = {want} in {engine}"),
        TRIES,
        POLL,
        || async { (first_value(engine, expr).await == Some(want)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_as_remote_engine_end_to_end() {
    if !on_path("victoria-metrics") {
        assert!(
            std::env::var_os("CI").is_none(),
            "victoria-metrics is not installed, and CI needs it (scripts/install-test-deps.sh)"
        );
        eprintln!(
            "SKIPPED: victoria-metrics is not installed \
             (apt-get install victoria-metrics, or scripts/install-test-deps.sh)"
        );
        return;
    }
    end_to_end(Engine::VictoriaMetrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_as_remote_engine_end_to_end() {
    end_to_end(Engine::Prometheus).await;
}

/// The shared test body.
async fn end_to_end(engine: Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let target = GaugeTarget::start(&[SERIES], 1.0).await;
    let (_engine, base) = engine.start(dir, &target.addr).await;
    let webhook = WebhookReceiver::start().await;
    let (_alertmanager, am_port) = start_alertmanager_webhook(dir, &webhook.url).await;
    write_file(dir, "rules.yml", RULES);
    write_file(
        dir,
        "evaluator.yml",
        &format!(
            "global:
  evaluation_interval: 1s
  external_labels:
    cluster: scale
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
"
        ),
    );
    let flags = remote_flags(&base);
    let evaluator = start_evaluator(dir, free_port(), &flags).await;

    // The recording rule ran on the engine's data and its output was written back.
    wait_value(&base, r#"job:lookout_scale_up:sum{job="scale"}"#, 1.0).await;

    target.set(SERIES, 0.0);
    let active_at = pending_with_saved_state(&evaluator, &base).await;
    let killed_at = now_secs();
    let evaluator = restart(evaluator, dir, &flags).await;
    let fired_at = fires_on_the_restored_schedule(&evaluator, active_at, killed_at).await;
    eprintln!("{engine:?}: active at {active_at}, killed at {killed_at}, fired at {fired_at}");

    let firing = webhook.wait_for("firing", &SCALE_DOWN).await;
    assert_eq!(firing["labels"]["cluster"], "scale", "{firing}");
    assert_eq!(firing["annotations"]["summary"], "a is down", "{firing}");
    // A new series: VictoriaMetrics 1.79 makes one searchable 5-10 s after it is written.
    wait_value(
        &base,
        r#"ALERTS{alertname="ScaleDown",alertstate="firing",severity="page"}"#,
        1.0,
    )
    .await;

    target.set(SERIES, 1.0);
    webhook.wait_for("resolved", &SCALE_DOWN).await;
    assert_eq!(scale_down(&evaluator.base).await, Some(None));
    assert_eq!(
        webhook.alerts("firing", &SCALE_DOWN).len(),
        1,
        "one firing notification"
    );
    resolved_episode_is_not_restored(evaluator, dir, &flags, &target, &base).await;
}

/// The alert resolved (its `ALERTS_FOR_STATE` ended with a staleness marker). Killed, the
/// gauge down again, restarted: the resolved episode is not restored (it would fire at
/// once, its `for` long spent); the alert is pending from after the restart.
async fn resolved_episode_is_not_restored(
    mut evaluator: Evaluator,
    dir: &Path,
    flags: &[String],
    target: &GaugeTarget,
    engine: &str,
) {
    eventually("ALERTS_FOR_STATE to go stale", TRIES, POLL, || async {
        let left = instant_query(engine, "ALERTS_FOR_STATE").await.ok()?;
        left.is_empty().then_some(())
    })
    .await;
    evaluator.process.kill();
    let killed_at = now_secs();
    target.set(SERIES, 0.0);
    wait_value(engine, SERIES, 0.0).await;
    let evaluator = restart(evaluator, dir, flags).await;
    let alert = eventually(
        "ScaleDown after the second restart",
        TRIES,
        POLL,
        || async { scale_down(&evaluator.base).await.flatten() },
    )
    .await;
    assert_eq!(
        alert["state"], "pending",
        "restored the resolved episode: {alert}"
    );
    assert!(
        rfc3339_secs(&alert["activeAt"]) >= killed_at,
        "activeAt is from before the restart: {alert}"
    );
}

/// Waits until the alert is pending and has been for a few seconds, with its
/// `ALERTS_FOR_STATE` (value: `activeAt` in whole seconds) in the engine; returns `activeAt`.
async fn pending_with_saved_state(evaluator: &Evaluator, engine: &str) -> f64 {
    let pending = eventually("ScaleDown pending", TRIES, POLL, || async {
        scale_down(&evaluator.base).await.flatten()
    })
    .await;
    assert_eq!(pending["state"], "pending", "{pending}");
    let active_at = rfc3339_secs(&pending["activeAt"]);
    let for_state = r#"ALERTS_FOR_STATE{alertname="ScaleDown",name="a"}"#;
    wait_value(engine, for_state, active_at.floor()).await;
    eventually("a few seconds of pending", TRIES, POLL, || async {
        let alert = scale_down(&evaluator.base).await??;
        assert_eq!(alert["state"], "pending", "killed too late: {alert}");
        (now_secs() >= active_at + PENDING_BEFORE_KILL).then_some(())
    })
    .await;
    active_at
}

/// SIGKILLs the evaluator (if still running) and starts it again on the same port with the
/// same flags; returns once its rule group has restored its `for` state.
async fn restart(mut evaluator: Evaluator, dir: &Path, flags: &[String]) -> Evaluator {
    evaluator.process.kill();
    let port = evaluator.port;
    drop(evaluator);
    let evaluator = start_evaluator(dir, port, flags).await;
    eventually(
        "the group to restore its for state",
        TRIES,
        POLL,
        || async { restored(&evaluator.base, "scale").await.then_some(()) },
    )
    .await;
    evaluator
}

/// After the restart: `activeAt` is the saved one moved forward by the downtime, so older
/// than the restart; the alert fires at that `activeAt + for`, well before `restart + for`.
/// Returns when it fired (as observed).
async fn fires_on_the_restored_schedule(
    evaluator: &Evaluator,
    saved_active_at: f64,
    killed_at: f64,
) -> f64 {
    let alert = eventually("ScaleDown after the restart", TRIES, POLL, || async {
        scale_down(&evaluator.base).await.flatten()
    })
    .await;
    let restored_at = now_secs();
    let active_at = rfc3339_secs(&alert["activeAt"]);
    assert!(
        active_at + 0.002 >= saved_active_at.floor()
            && active_at <= saved_active_at + (restored_at - killed_at) + 2.0,
        "activeAt {active_at} is not the saved {saved_active_at} moved forward by the \
         downtime (killed at {killed_at}, seen again at {restored_at}): {alert}"
    );
    // A fresh activation would come after the restart; the restored one, pending for six
    // seconds before the kill and moved forward by a shorter downtime, is older than the kill.
    assert!(
        active_at < killed_at,
        "activeAt {active_at} was not restored (killed at {killed_at}): {alert}"
    );
    let (firing, fired_at) = eventually("the restored ScaleDown to fire", TRIES, POLL, || async {
        let alert = scale_down(&evaluator.base).await??;
        (alert["state"] == "firing").then(|| (alert, now_secs()))
    })
    .await;
    assert_eq!(rfc3339_secs(&firing["activeAt"]), active_at, "{firing}");
    assert!(
        fired_at + 0.002 >= active_at + HOLD,
        "fired before activeAt + for: {firing}"
    );
    assert!(
        fired_at < restored_at + HOLD - 2.0,
        "fired a full `for` after the restart, as if nothing was restored: {firing}"
    );
    fired_at
}
