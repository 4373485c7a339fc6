//! End to end, with real processes on loopback: a target (an axum server in the test),
//! `lookout exporter` probing it, `lookout evaluator` with the shipped availability rules
//! (ServerDown's `for:` shortened so the test is quick), and Debian's
//! `prometheus-alertmanager` and `prometheus`.
//!
//! * Embedded mode: stop the target, see ServerDown pending, then firing, in the evaluator's
//!   `/api/v1/alerts` and received by Alertmanager; start the target again on the same port,
//!   see the alert resolved in both.
//! * A SIGKILL mid-`for`: after the restart the `for` timer is restored the way
//!   Prometheus's `RestoreForState` restores it from `ALERTS_FOR_STATE`: from the state file
//!   (memory-only storage), and from `ALERTS_FOR_STATE` in the write-ahead log (a data
//!   directory).
//! * Remote mode: Prometheus scrapes the exporter (`honor_labels: true`), the evaluator
//!   queries it (`--datasource.url`) and remote-writes `ALERTS` back; ServerDown fires,
//!   reaches Alertmanager, is visible in Prometheus, and resolves.
//!
//! Waits are bounded polls with generous limits (CI machines are slow); no test asserts how
//! long something took, only what Prometheus's semantics allow (an alert cannot fire before
//! `activeAt + for`).

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{
    HttpTarget, alertmanager_alerts, evaluator_alerts, eventually, free_port, get_json, has_labels,
    instant_query, now_secs, repo_root, restored, rfc3339_secs, start_alertmanager,
    start_evaluator, start_evaluator_on, start_exporter, start_prometheus, write_file,
};

/// Polling period for alert states.
const POLL: Duration = Duration::from_millis(200);
/// At most this many polls (two minutes) for any one state change.
const TRIES: usize = 600;
/// Tolerance for comparing times that went through float seconds.
const EPSILON: f64 = 0.002;

/// The labels identifying ServerDown for the test's target.
const SERVER_DOWN_WEB: [(&str, &str); 2] = [("alertname", "ServerDown"), ("instance", "web")];

/// The shipped `rules/availability.rules.yml` with ServerDown's `for: 1m` replaced by
/// `for: {hold}`; everything else (expression, labels, annotations, other rules) as shipped.
fn availability_rules(hold: &str) -> String {
    let path = repo_root().join("rules/availability.rules.yml");
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let start = shipped
        .find("- alert: ServerDown")
        .expect("the shipped availability rules define ServerDown");
    let end = shipped[start + 1..]
        .find("- alert:")
        .map_or(shipped.len(), |i| start + 1 + i);
    let at = start
        + shipped[start..end]
            .find("for: 1m")
            .expect("the shipped ServerDown waits `for: 1m`");
    format!(
        "{}for: {hold}{}",
        &shipped[..at],
        &shipped[at + "for: 1m".len()..]
    )
}

/// The exporter probing one HTTP target, `web` (job `web`), every 500 ms.
fn exporter_config(target: &str) -> String {
    format!(
        "modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
targets:
  - name: web
    module: http_2xx
    target: http://{target}/
    interval: 500ms
    labels:
      job: web
"
    )
}

/// The evaluator's configuration: 1 s evaluation interval, `rules.yml`, optionally a scrape
/// of the exporter (embedded mode) and an Alertmanager.
fn evaluator_config(exporter_port: Option<u16>, alertmanager_port: Option<u16>) -> String {
    let mut config = "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
  external_labels:
    monitor: e2e
rule_files:
  - rules.yml
"
    .to_string();
    if let Some(port) = exporter_port {
        config.push_str(&format!(
            "scrape_configs:
  - job_name: lookout-exporter
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{port}']
"
        ));
    }
    if let Some(port) = alertmanager_port {
        config.push_str(&format!(
            "alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{port}']
"
        ));
    }
    config
}

/// The ServerDown alert of `web` in the evaluator's `/api/v1/alerts`, if any.
async fn server_down(base: &str) -> Option<Option<Value>> {
    let alerts = evaluator_alerts(base).await?;
    Some(alerts.into_iter().find(|a| has_labels(a, &SERVER_DOWN_WEB)))
}

/// Waits until `web` is seen up through `query_base` (the evaluator or Prometheus).
async fn wait_web_up(query_base: &str) {
    eventually(
        &format!("up{{instance=\"web\"}} == 1 at {query_base}"),
        TRIES,
        POLL,
        || async {
            let result = instant_query(query_base, r#"up{job="web",instance="web"} == 1"#)
                .await
                .ok()?;
            (!result.is_empty()).then_some(())
        },
    )
    .await;
}

/// What the test saw of one ServerDown alert becoming active: the first observation while
/// pending, and the first while firing with the time it was observed.
struct Activation {
    pending: Value,
    firing: Value,
    firing_seen_at: f64,
}

/// Polls `/api/v1/alerts` until ServerDown{instance="web"} fires; it must have been seen
/// pending first, and keep the `activeAt` it had while pending.
async fn watch_activation(base: &str, hold_secs: f64) -> Activation {
    let mut pending: Option<Value> = None;
    let mut fired = None;
    for _ in 0..TRIES {
        if let Some(Some(alert)) = server_down(base).await {
            match alert["state"].as_str() {
                Some("pending") => {
                    pending.get_or_insert(alert);
                }
                Some("firing") => {
                    fired = Some((alert, now_secs()));
                    break;
                }
                other => panic!("unexpected alert state {other:?}: {alert}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let (firing, firing_seen_at) =
        fired.unwrap_or_else(|| panic!("ServerDown never fired; last pending: {pending:?}"));
    let pending = pending.unwrap_or_else(|| {
        panic!("ServerDown was never seen pending before firing (`for` ignored?): {firing}")
    });
    assert_eq!(
        pending["activeAt"], firing["activeAt"],
        "firing keeps the activeAt it had while pending"
    );
    let active_at = rfc3339_secs(&firing["activeAt"]);
    assert!(
        firing_seen_at + EPSILON >= active_at + hold_secs,
        "fired before activeAt + for: activeAt {active_at}, seen firing at {firing_seen_at}"
    );
    Activation {
        pending,
        firing,
        firing_seen_at,
    }
}

/// Checks the labels and annotations of a ServerDown alert for `web` (the shipped rule's).
fn assert_server_down_shape(alert: &Value) {
    assert!(
        has_labels(
            alert,
            &[
                ("alertname", "ServerDown"),
                ("instance", "web"),
                ("job", "web"),
                ("severity", "critical"),
            ]
        ),
        "{alert}"
    );
    assert_eq!(
        alert["annotations"]["summary"], "Server web is down",
        "{alert}"
    );
    assert_eq!(
        alert["annotations"]["description"], "web of job web has been down for more than 1 minute.",
        "{alert}"
    );
}

/// Waits until Alertmanager holds the firing ServerDown for `web` and checks what the
/// evaluator sent: external label, generatorURL, and `startsAt` = when it fired (Prometheus
/// sends `FiredAt`, which is at least `activeAt + for`).
async fn assert_received_by_alertmanager(
    alertmanager_port: u16,
    evaluator_base: &str,
    activation: &Activation,
    hold_secs: f64,
) {
    let received = eventually("ServerDown in Alertmanager", TRIES, POLL, || async {
        alertmanager_alerts(alertmanager_port)
            .await?
            .into_iter()
            .find(|a| has_labels(a, &SERVER_DOWN_WEB))
    })
    .await;
    assert_server_down_shape(&received);
    assert_eq!(received["labels"]["monitor"], "e2e", "{received}");
    assert_eq!(received["status"]["state"], "active", "{received}");
    assert!(
        received["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{evaluator_base}/graph?"))),
        "{received}"
    );
    let active_at = rfc3339_secs(&activation.firing["activeAt"]);
    let starts_at = rfc3339_secs(&received["startsAt"]);
    assert!(
        starts_at + EPSILON >= active_at + hold_secs
            && starts_at <= activation.firing_seen_at + 60.0,
        "startsAt {starts_at} is not when the alert fired (activeAt {active_at} + for {hold_secs}s, seen firing at {})",
        activation.firing_seen_at
    );
    assert!(
        rfc3339_secs(&received["endsAt"]) > now_secs(),
        "a firing alert's endsAt lies ahead: {received}"
    );
}

/// Waits until ServerDown for `web` is gone from the evaluator's active alerts and resolved
/// in Alertmanager (gone from its active alerts, or with `endsAt` in the past).
async fn assert_resolved(evaluator_base: &str, alertmanager_port: u16) {
    eventually(
        "ServerDown to leave the evaluator's alerts",
        TRIES,
        POLL,
        || async { server_down(evaluator_base).await?.is_none().then_some(()) },
    )
    .await;
    eventually(
        "ServerDown to be resolved in Alertmanager",
        TRIES,
        POLL,
        || async {
            let alerts = alertmanager_alerts(alertmanager_port).await?;
            let now = now_secs();
            alerts
                .iter()
                .filter(|a| has_labels(a, &SERVER_DOWN_WEB))
                .all(|a| rfc3339_secs(&a["endsAt"]) <= now)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_down_pending_firing_notified_and_resolved() {
    const HOLD: f64 = 10.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let mut target = HttpTarget::start().await;
    let (_exporter, exporter_port) =
        start_exporter(dir, &exporter_config(&target.addr.to_string())).await;
    let (_alertmanager, alertmanager_port) = start_alertmanager(dir).await;
    write_file(dir, "rules.yml", &availability_rules("10s"));
    write_file(
        dir,
        "evaluator.yml",
        &evaluator_config(Some(exporter_port), Some(alertmanager_port)),
    );
    let evaluator = start_evaluator(dir, free_port(), &[]).await;

    // The evaluator scrapes the exporter and sees the target up: nothing fires.
    wait_web_up(&evaluator.base).await;
    assert_eq!(server_down(&evaluator.base).await, Some(None));

    // The outage.
    target.stop().await;
    let activation = watch_activation(&evaluator.base, HOLD).await;
    assert_server_down_shape(&activation.pending);
    assert_server_down_shape(&activation.firing);
    assert_received_by_alertmanager(alertmanager_port, &evaluator.base, &activation, HOLD).await;

    // The target is back on the same port: resolved everywhere.
    target.restart().await;
    assert_resolved(&evaluator.base, alertmanager_port).await;
    wait_web_up(&evaluator.base).await;
}

/// The state file's entry for ServerDown{instance="web"}: (`timestamp_ms`, `active_at`).
fn saved_for_state(dir: &Path) -> Option<(i64, i64)> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    let alert = state["alerts"]
        .as_array()?
        .iter()
        .find(|a| has_labels(a, &SERVER_DOWN_WEB))?;
    Some((
        alert["timestamp_ms"].as_i64()?,
        alert["active_at"].as_i64()?,
    ))
}

/// The last `ALERTS_FOR_STATE` sample of ServerDown{instance="web"} in the evaluator's own
/// storage: (`timestamp_ms`, `active_at`).
async fn stored_for_state(base: &str) -> Option<(i64, i64)> {
    let expr = r#"ALERTS_FOR_STATE{alertname="ServerDown",instance="web"}[1m]"#;
    let series = instant_query(base, expr).await.ok()?;
    let last = series.first()?["values"].as_array()?.last()?.clone();
    let t = (last[0].as_f64()? * 1000.0).round() as i64;
    let v: f64 = last[1].as_str()?.parse().ok()?;
    Some((t, v as i64))
}

/// What the restore of ServerDown's `for` state started from: the saved `activeAt` and the
/// time of its last sample (`downAt`), both in seconds, how far `downAt` may be off (one
/// evaluation interval after a `kill -9` of a data directory's evaluator), and when the
/// evaluator was restarted.
struct Restore {
    saved_active_at: f64,
    down_at: f64,
    lost_interval: f64,
    restart: f64,
}

/// Checks the restored alert's `activeAt` as Prometheus's `RestoreForState` sets it, for an
/// alert with `for: hold` and a grace period `grace`; returns it.
fn assert_restored_active_at(alert: &Value, r: Restore, hold: f64, grace: f64) -> f64 {
    let Restore {
        saved_active_at,
        down_at,
        lost_interval,
        restart,
    } = r;
    let remaining = hold - (down_at - saved_active_at);
    let observed = now_secs();
    let active_at = rfc3339_secs(&alert["activeAt"]);
    // `ts` is the restore time, somewhere between the restart and now.
    let in_window =
        |ts_low: f64, ts_high: f64| active_at + EPSILON >= ts_low && active_at <= ts_high + EPSILON;
    if remaining <= 0.0 {
        // It had fired before the kill: activeAt is kept as it was.
        assert_eq!(active_at, saved_active_at, "{alert}");
    } else if remaining < grace {
        // Less than the grace period left: it fires one grace period after the restore.
        assert!(
            in_window(restart + grace - hold, observed + grace - hold),
            "activeAt {active_at} is not restore time + grace - for (restart {restart}, observed {observed}): {alert}"
        );
    } else {
        // Mid-`for`: activeAt moves forward by the downtime (restore time - downAt), so the
        // pending time before the kill counts and the rest is waited after the restart.
        let shifted_low = saved_active_at + (restart - down_at) - lost_interval;
        let shifted_high = saved_active_at + (observed - down_at) + lost_interval;
        assert!(
            in_window(shifted_low, shifted_high),
            "activeAt {active_at} is not the saved {saved_active_at} shifted by the downtime \
             (down at {down_at}, restarted {restart}, observed {observed}): {alert}"
        );
    }

    active_at
}

/// Where the killed evaluator keeps its `for` state.
#[derive(Clone, Copy, PartialEq)]
enum Kept {
    /// `--rules.state-file` (memory-only storage).
    StateFile,
    /// `ALERTS_FOR_STATE` in the write-ahead log of `--storage.tsdb.path`.
    Storage,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_timer_is_restored_from_the_state_file_after_sigkill_mid_for() {
    for_timer_is_restored_after_sigkill_mid_for(Kept::StateFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_timer_is_restored_from_the_storage_after_sigkill_mid_for() {
    for_timer_is_restored_after_sigkill_mid_for(Kept::Storage).await;
}

async fn for_timer_is_restored_after_sigkill_mid_for(kept: Kept) {
    const HOLD: f64 = 30.0;
    const GRACE: f64 = 1.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    // Nothing listens on the target's port: `web` is down from the start.
    let closed = format!("127.0.0.1:{}", free_port());
    let (_exporter, exporter_port) = start_exporter(dir, &exporter_config(&closed)).await;
    write_file(dir, "rules.yml", &availability_rules("30s"));
    write_file(
        dir,
        "evaluator.yml",
        &evaluator_config(Some(exporter_port), None),
    );
    // Prometheus does not restore rules whose `for` is shorter than the grace period (10m
    // by default); a 1 s grace period makes the 30 s ServerDown restorable.
    let flags = [
        "--rules.alert.for-grace-period".to_string(),
        "1s".to_string(),
    ];
    let data = dir.join("data").display().to_string();
    let storage = if kept == Kept::Storage {
        data.as_str()
    } else {
        ""
    };
    let mut evaluator = start_evaluator_on(dir, free_port(), storage, &flags).await;
    let saved = || async {
        match kept {
            Kept::StateFile => saved_for_state(dir),
            Kept::Storage => stored_for_state(&evaluator.base).await,
        }
    };

    // Pending, and the state file (or storage) has held it for a few seconds of pending time.
    let pending = eventually("ServerDown pending and saved", TRIES, POLL, || async {
        let alert = server_down(&evaluator.base).await??;
        assert_eq!(alert["state"], "pending", "killed too late: {alert}");
        let (timestamp_ms, active_at) = saved().await?;
        (timestamp_ms / 1000 - active_at >= 5).then_some(alert)
    })
    .await;
    assert_server_down_shape(&pending);
    // The last sample seen before the kill. A `kill -9` can lose the last evaluation's
    // (the write-ahead log's pending 100 ms), and one more evaluation may land between this
    // read and the kill: the restore's downAt is within one evaluation interval of it.
    let before_kill = saved().await.expect("saved for state");
    evaluator.process.kill();
    let (timestamp_ms, saved_active_at) = match kept {
        Kept::StateFile => saved_for_state(dir).expect("state file entry"),
        Kept::Storage => before_kill,
    };
    let lost_interval = if kept == Kept::Storage { 1.0 } else { 0.0 };
    assert_eq!(
        saved_active_at,
        rfc3339_secs(&pending["activeAt"]).floor() as i64,
        "ALERTS_FOR_STATE keeps activeAt in whole seconds"
    );
    // Prometheus's RestoreForState, in seconds: `downAt` is the sample's time truncated to
    // the second, `activeAt` its value.
    let down_at = (timestamp_ms.div_euclid(1000)) as f64;
    let saved_active_at = saved_active_at as f64;

    let restart = now_secs();
    let port = evaluator.port;
    drop(evaluator);
    let evaluator = start_evaluator_on(dir, port, storage, &flags).await;
    eventually(
        "the group to restore its for state",
        TRIES,
        POLL,
        || async {
            restored(&evaluator.base, "lookout-availability")
                .await
                .then_some(())
        },
    )
    .await;
    let alert = server_down(&evaluator.base)
        .await
        .flatten()
        .expect("ServerDown is active after the restore");
    let active_at = assert_restored_active_at(
        &alert,
        Restore {
            saved_active_at,
            down_at,
            lost_interval,
            restart,
        },
        HOLD,
        GRACE,
    );

    // It fires at the restored activeAt + for, keeping that activeAt.
    let firing = eventually("the restored ServerDown to fire", TRIES, POLL, || async {
        let alert = server_down(&evaluator.base).await??;
        if alert["state"] == "firing" {
            Some((alert, now_secs()))
        } else {
            assert_eq!(alert["state"], "pending", "{alert}");
            assert_eq!(
                rfc3339_secs(&alert["activeAt"]),
                active_at,
                "activeAt changed while pending: {alert}"
            );
            None
        }
    })
    .await;
    assert_eq!(
        rfc3339_secs(&firing.0["activeAt"]),
        active_at,
        "{}",
        firing.0
    );
    assert!(
        firing.1 + EPSILON >= active_at + HOLD,
        "fired before the restored activeAt + for: {}",
        firing.0
    );
    assert_server_down_shape(&firing.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_against_prometheus_fires_notifies_and_resolves() {
    const HOLD: f64 = 10.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    let mut target = HttpTarget::start().await;
    let (_exporter, exporter_port) =
        start_exporter(dir, &exporter_config(&target.addr.to_string())).await;
    let (_prometheus, prometheus_port) = start_prometheus(
        dir,
        &format!(
            "global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lookout-exporter
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{exporter_port}']
"
        ),
    )
    .await;
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let (_alertmanager, alertmanager_port) = start_alertmanager(dir).await;
    write_file(dir, "rules.yml", &availability_rules("10s"));
    write_file(
        dir,
        "evaluator.yml",
        &evaluator_config(None, Some(alertmanager_port)),
    );
    let evaluator = start_evaluator(
        dir,
        free_port(),
        &[
            "--datasource.url".to_string(),
            prometheus.clone(),
            "--remote-write.url".to_string(),
            format!("{prometheus}/api/v1/write"),
        ],
    )
    .await;

    // Prometheus scrapes the exporter with its labels; the evaluator queries Prometheus.
    wait_web_up(&prometheus).await;
    assert_eq!(server_down(&evaluator.base).await, Some(None));
    let rules = get_json(&format!("{}/api/v1/rules", evaluator.base))
        .await
        .expect("/api/v1/rules");
    assert!(
        rules["data"]["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "lookout-availability")),
        "{rules}"
    );

    target.stop().await;
    let activation = watch_activation(&evaluator.base, HOLD).await;
    assert_server_down_shape(&activation.firing);
    assert_received_by_alertmanager(alertmanager_port, &evaluator.base, &activation, HOLD).await;
    // The evaluator remote-writes ALERTS and ALERTS_FOR_STATE back to Prometheus.
    eventually("ALERTS in Prometheus", TRIES, POLL, || async {
        let result = instant_query(
            &prometheus,
            r#"ALERTS{alertname="ServerDown",instance="web",alertstate="firing",severity="critical"}"#,
        )
        .await
        .ok()?;
        (!result.is_empty()).then_some(())
    })
    .await;
    let for_state = instant_query(
        &prometheus,
        r#"ALERTS_FOR_STATE{alertname="ServerDown",instance="web"}"#,
    )
    .await
    .expect("query ALERTS_FOR_STATE");
    let active_at = rfc3339_secs(&activation.firing["activeAt"]).floor();
    assert!(
        for_state
            .iter()
            .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) == Some(active_at)),
        "ALERTS_FOR_STATE holds activeAt {active_at}: {for_state:?}"
    );

    target.restart().await;
    assert_resolved(&evaluator.base, alertmanager_port).await;
}
