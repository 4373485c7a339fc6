//! Lookout's own routing, grouping and inhibition, side by side with Debian's real
//! Alertmanager: the same route tree, receivers and inhibit rules, the same alerts; the
//! webhook notifications both send are compared. Also: `amtool config routes test` picks the
//! same receivers as Lookout's router, group timings (group_wait, group_interval,
//! repeat_interval), and the legacy `webhooks` list leaving out blocked dependants.

mod scrape_support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::notifier::route::{Route, RouteConfig};
use lookout_evaluator::notifier::{AlertingConfig, NotifierManager, NotifierOptions};
use lookout_promql::Labels;
use prometheus_client::registry::Registry;

type Received = Arc<Mutex<Vec<(String, Instant, serde_json::Value)>>>;

/// An axum server recording every POST to `/{prefix}/{receiver}`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    async fn hook(
        State(r): State<Received>,
        axum::extract::Path((prefix, name)): axum::extract::Path<(String, String)>,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        r.lock()
            .expect("lock")
            .push((format!("{prefix}/{name}"), Instant::now(), v));
        StatusCode::OK
    }
    let app = Router::new()
        .route("/{prefix}/{name}", post(hook))
        .with_state(received.clone());
    let addr = scrape_support::serve_loopback(app).await;
    (format!("http://{addr}"), received)
}

fn alert(pairs: &[(&str, &str)], firing: bool) -> Alert {
    let now = SystemTime::now();
    Alert {
        labels: Labels::new(pairs.iter().copied()),
        annotations: BTreeMap::from([("summary".to_string(), "s".to_string())]),
        starts_at: now - Duration::from_millis(100),
        ends_at: Some(if firing {
            now + Duration::from_secs(600)
        } else {
            now - Duration::from_millis(50)
        }),
        generator_url: String::new(),
    }
}

fn run(notifier: &NotifierManager) -> tokio::sync::oneshot::Sender<()> {
    scrape_support::run_notifier(notifier).0
}

/// The story's alerts: `api` is down (root cause), `lb` and `shop` behind it are blocked
/// (all three of team shop, whose route continues), a DNS target fails (the specific alert
/// inhibits the generic one), a latency warning.
fn outage(firing: bool) -> Vec<Alert> {
    vec![
        alert(
            &[
                ("alertname", "ServerDown"),
                ("instance", "api"),
                ("severity", "critical"),
                ("team", "shop"),
            ],
            firing,
        ),
        alert(
            &[
                ("alertname", "ServerBlocked"),
                ("instance", "lb"),
                ("blocked_by", "api"),
                ("severity", "warning"),
                ("team", "shop"),
            ],
            firing,
        ),
        alert(
            &[
                ("alertname", "ServerBlocked"),
                ("instance", "shop"),
                ("blocked_by", "lb"),
                ("severity", "warning"),
                ("team", "shop"),
            ],
            firing,
        ),
        alert(
            &[
                ("alertname", "DNSResolutionFailed"),
                ("instance", "dns-a"),
                ("nameserver", "127.0.0.1:53"),
                ("severity", "critical"),
            ],
            firing,
        ),
        alert(
            &[
                ("alertname", "ServerDown"),
                ("instance", "dns-a"),
                ("severity", "critical"),
            ],
            firing,
        ),
        alert(
            &[
                ("alertname", "HighLatency"),
                ("instance", "web"),
                ("severity", "warning"),
            ],
            firing,
        ),
    ]
}

const TREE: &str = "route:
  receiver: rest
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - match: {team: shop}
      receiver: shop-team
      group_by: ['...']
      continue: true
    - matchers: ['severity=\"critical\"']
      receiver: critical
      group_by: [alertname, instance]
    - match_re: {instance: 'web|db-.*'}
      receiver: web
receivers:
  - name: critical
    webhook_configs: [{url: 'BASE/critical', send_resolved: true}]
  - name: rest
    webhook_configs: [{url: 'BASE/rest', send_resolved: true}]
  - name: shop-team
    webhook_configs: [{url: 'BASE/shop-team'}]
  - name: web
    webhook_configs: [{url: 'BASE/web', send_resolved: true}]
inhibit_rules:
  - source_matchers: ['alertname=\"ServerDown\"']
    target_matchers: ['alertname=\"ServerBlocked\"']
  - source_matchers: ['alertname=\"DNSResolutionFailed\"']
    target_matchers: ['alertname=\"ServerDown\"']
    equal: [instance]
";

/// What a receiver was told: (receiver, group labels, status, alert label sets).
type Seen = BTreeSet<(String, String, String, BTreeSet<String>)>;

fn seen(received: &Received, prefix: &str) -> Seen {
    received
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(path, _, v)| {
            let receiver = path.strip_prefix(&format!("{prefix}/"))?;
            let alerts = v["alerts"]
                .as_array()?
                .iter()
                .map(|a| format!("{}:{}", a["status"], a["labels"]))
                .collect();
            Some((
                receiver.to_string(),
                v["groupLabels"].to_string(),
                v["status"].to_string(),
                alerts,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_notifications_as_alertmanager() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (base, received) = receiver().await;
    let (_am, am_port) = scrape_support::start_alertmanager_with(
        dir.path(),
        &TREE.replace("BASE", &format!("{base}/am")),
    )
    .await;

    // One notifier feeds both: the Alertmanager, and Lookout's own routing.
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
        "alertmanagers:\n  - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n{}",
        TREE.replace("BASE", &format!("{base}/lookout"))
    ))
    .expect("config");
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("apply");
    let stop = run(&notifier);

    notifier.send(outage(true));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The rule manager re-sends firing alerts: no new notification.
    notifier.send(outage(true));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lookout = seen(&received, "lookout");
    let am = seen(&received, "am");
    assert_eq!(lookout, am, "firing: Lookout vs Alertmanager");
    // Inhibited alerts reached nobody; the root cause paged the critical receiver.
    let all = format!("{lookout:?}");
    assert!(!all.contains("ServerBlocked"), "{all}");
    assert!(
        !all.contains("\\\"ServerDown\\\",\\\"instance\\\":\\\"dns-a"),
        "{all}"
    );
    assert!(
        lookout.iter().any(|(r, _, _, a)| r == "critical"
            && a.iter()
                .any(|x| x.contains("ServerDown") && x.contains("api"))),
        "{all}"
    );
    assert_eq!(lookout.len(), 4, "one notification per group: {all}");
    let counts = |prefix: &str| {
        received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _, _)| p.starts_with(prefix))
            .count()
    };
    assert_eq!(counts("lookout/"), counts("am/"));

    // Everything resolves: each group is told once more, resolved.
    notifier.send(outage(false));
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let lookout = seen(&received, "lookout");
    let am = seen(&received, "am");
    assert_eq!(lookout, am, "resolved: Lookout vs Alertmanager");
    assert_eq!(
        lookout
            .iter()
            .filter(|(_, _, s, _)| s == "\"resolved\"")
            .count(),
        4,
        "{lookout:?}"
    );
    assert_eq!(counts("lookout/"), counts("am/"));
    let _ = stop.send(());
}

#[test]
fn same_receivers_as_amtool() {
    let tree = "route:
  receiver: a
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: b
      continue: true
      routes:
        - match_re: {instance: 'db-[0-9]+'}
          receiver: d
    - match: {team: db}
      receiver: c
      routes:
        - matchers: ['instance!~\"db-.*\"', 'env=\"prod\"']
          receiver: e
    - matchers: ['team=~\"db|web\"']
      receiver: e
receivers: [{name: a}, {name: b}, {name: c}, {name: d}, {name: e}]
";
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("am.yml");
    std::fs::write(&file, tree).expect("write");
    #[derive(serde::Deserialize)]
    struct Doc {
        route: RouteConfig,
    }
    let doc: Doc = serde_yaml_ng::from_str(&tree[..tree.find("receivers:").expect("receivers")])
        .expect("route");
    let names: HashSet<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let route = Route::build(&doc.route, &names).expect("build");
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("severity", "critical")],
        &[("severity", "critical"), ("instance", "db-1")],
        &[
            ("severity", "critical"),
            ("instance", "db-x"),
            ("team", "db"),
        ],
        &[("team", "db"), ("env", "prod"), ("instance", "web-1")],
        &[("team", "db"), ("env", "prod"), ("instance", "db-1")],
        &[("team", "web")],
        &[
            ("severity", "critical"),
            ("team", "web"),
            ("instance", "db-22"),
        ],
    ];
    for labels in cases {
        let ours: Vec<String> = route
            .routes_for(&Labels::new(labels.iter().copied()))
            .iter()
            .map(|r| r.opts.receiver.clone())
            .collect();
        let out = std::process::Command::new("amtool")
            .arg("config")
            .arg("routes")
            .arg("test")
            .arg(format!("--config.file={}", file.display()))
            .args(labels.iter().map(|(k, v)| format!("{k}={v}")))
            .output()
            .expect("run amtool");
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(ours.join(","), theirs, "labels {labels:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_wait_interval_and_repeat() {
    let (base, received) = receiver().await;
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
        "route:\n  receiver: r\n  group_by: [alertname]\n  group_wait: 500ms\n  group_interval: 1s\n  repeat_interval: 3s\nreceivers:\n  - name: r\n    webhook_configs: [{{url: '{base}/t/r'}}]\n"
    ))
    .expect("config");
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("apply");
    let stop = run(&notifier);
    let t0 = Instant::now();
    let a1 = |firing| alert(&[("alertname", "A"), ("instance", "1")], firing);
    let a2 = |firing| alert(&[("alertname", "A"), ("instance", "2")], firing);
    notifier.send(vec![a1(true)]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    notifier.send(vec![a1(true), a2(true)]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let got = received.lock().expect("lock").clone();
        assert_eq!(got.len(), 2, "{got:?}");
        let first = got[0].1 - t0;
        assert!(
            first >= Duration::from_millis(450) && first < Duration::from_millis(900),
            "{first:?}"
        );
        assert_eq!(got[0].2["alerts"].as_array().map(Vec::len), Some(1));
        // The second alert waited for the group_interval, and came with the first.
        let second = got[1].1 - got[0].1;
        assert!(
            second >= Duration::from_millis(900) && second < Duration::from_millis(1400),
            "{second:?}"
        );
        assert_eq!(got[1].2["alerts"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            got[1].2["groupLabels"],
            serde_json::json!({"alertname": "A"})
        );
    }
    // Unchanged: nothing until repeat_interval (3s after the last notification).
    for _ in 0..3 {
        notifier.send(vec![a1(true), a2(true)]);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(received.lock().expect("lock").len(), 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let got = received.lock().expect("lock").clone();
        assert_eq!(got.len(), 3, "repeat_interval elapsed: {got:?}");
        let repeat = got[2].1 - got[1].1;
        assert!(repeat >= Duration::from_secs(3), "{repeat:?}");
    }
    notifier.send(vec![a1(false), a2(false)]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[3].2["status"], "resolved");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_webhooks_leave_out_blocked_dependants() {
    for (inhibit, expected) in [(true, 1), (false, 3)] {
        let (base, received) = receiver().await;
        let mut registry = Registry::default();
        let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
        let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
            "webhooks:\n  - {{url: '{base}/legacy/slack', format: slack}}\ndependency_inhibition: {inhibit}\n"
        ))
        .expect("config");
        notifier
            .apply_config(&cfg, &Labels::default())
            .expect("apply");
        notifier.send(outage(true)[..3].to_vec());
        notifier.flush().await;
        let got = received.lock().expect("lock").clone();
        assert_eq!(got.len(), 1);
        let text = got[0].2["text"].as_str().expect("text").to_string();
        assert!(text.starts_with(&format!("[FIRING:{expected}]")), "{text}");
        assert_eq!(text.contains("ServerBlocked"), !inhibit, "{text}");
    }
}

#[test]
fn config_errors_have_positions_or_paths() {
    let e = serde_yaml_ng::from_str::<AlertingConfig>(
        "route:\n  receiver: r\n  routes:\n    - matchers: ['severity=~\"(\"']\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 4"), "{e}");
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    let cfg: AlertingConfig = serde_yaml_ng::from_str(
        "route:\n  receiver: r\n  routes: [{receiver: nope}]\nreceivers: [{name: r}]\n",
    )
    .expect("decodes");
    let e = notifier
        .apply_config(&cfg, &Labels::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("route.routes[0]") && e.contains("nope"), "{e}");
    for (yaml, want) in [
        ("receivers: [{name: r}]\n", "no route"),
        (
            "route: {receiver: r}\nreceivers: [{name: r}, {name: r}]\n",
            "defined twice",
        ),
        (
            "webhooks: [{url: 'http://x/', send_resolved: false}]\n",
            "send_resolved",
        ),
        (
            "route: {receiver: r}\nreceivers: [{name: r, webhook_configs: [{url: 'http://x/', repeat_interval: 1h}]}]\n",
            "repeat_interval",
        ),
    ] {
        let cfg: AlertingConfig = serde_yaml_ng::from_str(yaml).expect("decodes");
        let e = notifier
            .apply_config(&cfg, &Labels::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn semantic_errors_in_the_file_name_line_and_column() {
    let text = "global:\n  evaluation_interval: 15s\nalerting:\n  route:\n    receiver: r\n    routes:\n      - receiver: r\n      - receiver: nope\n  receivers:\n    - name: r\n";
    let e = lookout_evaluator::config::EvaluatorConfig::parse(std::path::Path::new("e.yml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("e.yml:8:9: alerting.route.routes[1]: receiver \"nope\""),
        "{e}"
    );
    let text = "alerting:\n  route: {receiver: r}\n  receivers:\n    - name: r\n      email_configs:\n        - {to: a@x, from: b@x, smarthost: nohost}\n";
    let e = lookout_evaluator::config::EvaluatorConfig::parse(std::path::Path::new("e.yml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("e.yml:6:11: alerting.receivers[0]") && e.contains("smarthost"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_notify_again() {
    let (base, received) = receiver().await;
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    let yaml = format!(
        "route:\n  receiver: r\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 300ms\nreceivers:\n  - name: r\n    webhook_configs: [{{url: '{base}/t/r'}}]\n"
    );
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&yaml).expect("config");
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("apply");
    let stop = run(&notifier);
    let a = |firing| alert(&[("alertname", "A"), ("instance", "1")], firing);
    notifier.send(vec![a(true)]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(received.lock().expect("lock").len(), 1);
    // Reload: the groups are rebuilt from the known alerts, and what the receiver was told
    // is kept.
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("reload");
    notifier.send(vec![a(true)]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        received.lock().expect("lock").len(),
        1,
        "no repeat after a reload"
    );
    // The alert resolves after the reload: the receiver hears it.
    notifier.send(vec![a(false)]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = received.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].2["status"], "resolved");
    let _ = stop.send(());
}
