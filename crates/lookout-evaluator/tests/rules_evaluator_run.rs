//! `lookout_evaluator::run` in embedded mode on loopback: the evaluator scrapes its own
//! `/metrics`, an alert on `up` goes pending then firing in `/api/v1/alerts`, the state file
//! keeps its `for` timer, and after a restart the timer is restored from it (Prometheus's
//! rule: an alert that was already firing keeps its original `activeAt`). Also: a broken rule
//! file on reload keeps the running rules.

use std::path::Path;
use std::time::Duration;

use lookout_evaluator::{EvaluatorOptions, run};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_config(dir: &Path, port: u16, rules: &str) {
    std::fs::write(
        dir.join("evaluator.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels:\n    monitor: test\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yml"), rules).unwrap();
}

const RULES: &str = r#"groups:
  - name: self
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: SelfUp
        expr: job:up:sum == 1
        for: 2s
        labels:
          severity: info
        annotations:
          summary: "{{ $labels.job }} is up ({{ $value }})"
"#;

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), lookout_evaluator::RunError>>,
    base: String,
}

fn start(dir: &Path, port: u16) -> Running {
    let mut opts = EvaluatorOptions::new(dir.join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.external_url = Some(format!("http://127.0.0.1:{port}"));
    opts.state_file = Some(dir.join("state.json"));
    // A 2s `for` is restored only if the grace period is shorter.
    opts.for_grace_period = Duration::from_secs(1);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = rx.await;
    }));
    Running {
        stop,
        task,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// The value of `prometheus_rule_config_last_reload_successful` on `/metrics`.
async fn reload_metric(base: &str) -> f64 {
    let text = get_text(&format!("{base}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("prometheus_rule_config_last_reload_successful "))
        .unwrap_or_else(|| panic!("no reload metric in {text}"))
        .parse()
        .unwrap()
}

async fn get_json(url: &str) -> Option<serde_json::Value> {
    let resp = reqwest::get(url).await.ok()?;
    let body = resp.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Polls `/api/v1/alerts` until an alert in `state` shows up (or gives up after a minute).
async fn wait_for_alert(base: &str, state: &str) -> serde_json::Value {
    for _ in 0..600 {
        if let Some(v) = get_json(&format!("{base}/api/v1/alerts")).await
            && let Some(a) = v["data"]["alerts"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["state"] == state))
        {
            return a.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {state} alert at {base}");
}

fn parse_time(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_fires_and_its_timer_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, RULES);

    let first = start(dir.path(), port);
    let pending = wait_for_alert(&first.base, "pending").await;
    assert_eq!(pending["labels"]["alertname"], "SelfUp");
    assert_eq!(pending["labels"]["job"], "self");
    assert_eq!(pending["labels"]["severity"], "info");
    assert_eq!(pending["annotations"]["summary"], "self is up (1)");
    let firing = wait_for_alert(&first.base, "firing").await;
    let active_at = parse_time(&firing["activeAt"]);
    assert_eq!(active_at, parse_time(&pending["activeAt"]));

    // The state file holds the timer once the rule has been restored and evaluated.
    for _ in 0..600 {
        if std::fs::read_to_string(dir.path().join("state.json"))
            .is_ok_and(|s| s.contains("SelfUp"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.stop.send(()).unwrap();
    first.task.await.unwrap().unwrap();
    let saved = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(
        saved.contains(&format!("\"active_at\": {}", active_at.timestamp())),
        "{saved}"
    );

    // Restart: the first evaluation makes a new pending alert; after the second one the
    // restored timer shows the original activeAt (to the second), and it fires at once.
    let second = start(dir.path(), port);
    let firing = wait_for_alert(&second.base, "firing").await;
    assert_eq!(
        parse_time(&firing["activeAt"]).timestamp(),
        active_at.timestamp()
    );
    assert_eq!(parse_time(&firing["activeAt"]).timestamp_subsec_nanos(), 0);

    // A broken rule file is rejected by /-/reload; the running rules stay.
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: x\n    rules:\n      - record: bad name\n        expr: up\n",
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/-/reload", second.base))
        .send()
        .await
        .unwrap();
    assert!(!resp.status().is_success());
    // ... and says so where an operator looks: the metric and a banner on the page.
    assert_eq!(reload_metric(&second.base).await, 0.0);
    let page = get_text(&format!("{}/", second.base)).await;
    assert!(
        page.contains("Reloading the configuration failed at") && page.contains("rules.yml: 4:17"),
        "{page}"
    );
    let rules = get_json(&format!("{}/api/v1/rules", second.base))
        .await
        .unwrap();
    assert_eq!(rules["data"]["groups"][0]["name"], "self");
    assert_eq!(
        rules["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A valid change is applied.
    write_config(
        dir.path(),
        port,
        &RULES.replace("name: self", "name: renamed"),
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/-/reload", second.base))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let rules = get_json(&format!("{}/api/v1/rules", second.base))
        .await
        .unwrap();
    assert_eq!(rules["data"]["groups"][0]["name"], "renamed");
    assert_eq!(reload_metric(&second.base).await, 1.0);
    let page = get_text(&format!("{}/", second.base)).await;
    assert!(
        !page.contains("Reloading the configuration failed"),
        "{page}"
    );

    second.stop.send(()).unwrap();
    second.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_rules_stop_start_up_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(
        dir.path(),
        port,
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: sum(up\n",
    );
    let r = start(dir.path(), port);
    let err = r.task.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("rules.yml: 5:15: group \"g\", rule 1, \"X\": could not parse expression"),
        "{err}"
    );
}

#[tokio::test]
async fn rule_patterns_matching_nothing_are_shown_on_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port, RULES);
    let cfg = std::fs::read_to_string(dir.path().join("evaluator.yml")).unwrap();
    std::fs::write(
        dir.path().join("evaluator.yml"),
        cfg.replace("  - rules.yml\n", "  - ../../rules/*.rules.yml\n"),
    )
    .unwrap();
    let r = start(dir.path(), port);
    let mut page = String::new();
    for _ in 0..100 {
        if let Ok(resp) = reqwest::get(format!("{}/", r.base)).await {
            page = resp.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(page.contains("rules/*.rules.yml matches no file"), "{page}");
    assert!(page.contains("No rule groups are loaded"), "{page}");
    r.stop.send(()).unwrap();
    r.task.await.unwrap().unwrap();
}
