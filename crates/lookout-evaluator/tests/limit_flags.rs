//! The evaluator's limits with lowered values, on loopback: the embedded storage's series
//! cap against a real scrape of a target with more series than the cap (new series refused
//! and counted, existing series keep their samples), and `lookout_evaluator::run` with a
//! lowered series cap, query concurrency and rule/configuration file size limits: the
//! gauges and counters in `/metrics`, and reloads refused with the limit and flag named
//! while the running rules stay.

mod scrape_support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lookout_evaluator::limits::hits;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_evaluator::{EvaluatorOptions, run};
use lookout_promql::storage::{Queryable, Storage, StorageOptions};
use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use scrape_support::{eventually, free_port, serve_loopback};

/// Serves `body` at `/metrics` on a loopback port; returns `host:port`.
async fn start_target(body: String) -> String {
    serve_loopback(Router::new().route("/metrics", get(move || async move { body }))).await
}

fn name_is(name: &str) -> Vec<Matcher> {
    vec![Matcher::new(MatchOp::Equal, "__name__", name)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_with_more_series_than_the_cap_stores_only_the_cap() {
    // 30 series of `m` in one scrape, a cap of 10 series.
    let body: String = (0..30)
        .map(|i| format!("m{{i=\"{i:02}\"}} {i}\n"))
        .collect();
    let addr = start_target(body).await;
    let storage = Arc::new(Storage::new(StorageOptions {
        max_series: 10,
        ..StorageOptions::default()
    }));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> = serde_yaml_ng::from_str(&format!(
        "- job_name: big\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n  static_configs: [{{targets: ['{addr}']}}]\n"
    ))
    .expect("scrape config");
    let before = hits("storage_max_series");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");

    // Two scrapes at least: the series that got in take a second sample.
    let series = eventually(Duration::from_secs(20), || {
        let s = storage.select(&name_is("m"), 0, i64::MAX);
        async move { (!s.is_empty() && s.iter().all(|s| s.samples.len() >= 2)).then_some(s) }
    })
    .await
    .expect("a second scrape of the accepted series");
    let targets = manager.targets().await;
    manager.stop().await;

    // The first ten in exposition order got in; the other twenty were refused each
    // scrape. The report series (`up`, `scrape_duration_seconds`, ... five per target) are
    // exempt, so a full storage still says whether the target is up.
    assert_eq!(storage.num_series(), 15);
    let got: Vec<&str> = series.iter().filter_map(|s| s.labels.get("i")).collect();
    let want: Vec<String> = (0..10).map(|i| format!("{i:02}")).collect();
    assert_eq!(got, want);
    let up = storage.select(&name_is("up"), 0, i64::MAX);
    assert_eq!(up.len(), 1);
    // 1 at every scrape (the stop leaves a stale marker after them).
    let values: Vec<f64> = up[0]
        .samples
        .iter()
        .map(|s| s.v)
        .filter(|v| !v.is_nan())
        .collect();
    assert!(
        values.len() >= 2 && values.iter().all(|v| *v == 1.0),
        "{values:?}"
    );
    // The targets page says what was not kept.
    assert_eq!(targets.len(), 1);
    assert!(
        targets[0]
            .last_error
            .contains("20 samples of new series refused")
            && targets[0].last_error.contains("--storage.max-series"),
        "{}",
        targets[0].last_error
    );
    // Per refused sample: 20 of `m` per scrape, two scrapes at least (other tests of this
    // binary only add to the counter).
    assert!(
        hits("storage_max_series") >= before + 2 * 20,
        "{} refused",
        hits("storage_max_series") - before
    );
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

const RULES: &str = "groups:\n  - name: self\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_applies_the_lowered_limits_and_refuses_reloads_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A target of its own rather than the evaluator's /metrics: the first scrape must
    // succeed, or its report series (exempt, but counted) would fill the cap of 5 before
    // any scraped series, as happened when CI's first self-scrape came before the
    // listener was up.
    let body: String = (0..30)
        .map(|i| format!("m{{i=\"{i:02}\"}} {i}\n"))
        .collect();
    let target = start_target(body).await;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 500ms\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("evaluator.yml"), &config).unwrap();
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    let mut opts = EvaluatorOptions::new(dir.path().join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.state_file = None;
    opts.storage_max_series = 5;
    opts.query_max_concurrency = 3;
    opts.rules_max_file_bytes = 1024;
    opts.config_max_file_bytes = 1024;
    let before = hits("storage_max_series");
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = rx.await;
    }));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    // The target has 30 series: the storage stops at 5 scraped series plus the 5 report
    // series (`up`, ...), which are exempt, and the refusals are counted.
    let metrics = eventually(Duration::from_secs(30), || {
        let url = format!("{base}/metrics");
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            (metric_value(&text, "prometheus_tsdb_head_series") == Some(10.0)).then_some(text)
        }
    })
    .await
    .expect("the storage fills up to its cap");
    assert_eq!(
        metric_value(&metrics, "lookout_storage_max_series"),
        Some(5.0)
    );
    assert_eq!(
        metric_value(&metrics, "prometheus_engine_queries_concurrent_max"),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&metrics, "prometheus_engine_queries"),
        Some(0.0)
    );
    for limit in lookout_evaluator::limits::LIMIT_NAMES {
        let series = format!("lookout_evaluator_limit_hits_total{{limit=\"{limit}\"}}");
        assert!(metric_value(&metrics, &series).is_some(), "{series}");
    }
    assert!(hits("storage_max_series") > before);

    // A rule file over the 1 KiB limit: the reload is refused naming the limit and its
    // flag, and the running rules stay.
    reload_over_the_limit(
        &client,
        &base,
        &dir.path().join("rules.yml"),
        RULES,
        "rule_file_size",
        "1024-byte rule file size limit (--rules.max-file-size)",
    )
    .await;
    let rules = client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let rules: serde_json::Value = serde_json::from_slice(&rules).unwrap();
    assert_eq!(rules["data"]["groups"][0]["name"], "self");

    // The same for the configuration file.
    std::fs::write(dir.path().join("rules.yml"), RULES).unwrap();
    reload_over_the_limit(
        &client,
        &base,
        &dir.path().join("evaluator.yml"),
        &config,
        "config_file_size",
        "1024-byte configuration file size limit (--config.max-file-size)",
    )
    .await;
    // Back under the limits, the reload goes through.
    std::fs::write(dir.path().join("evaluator.yml"), &config).unwrap();
    let resp = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Writes `file` as `text` padded past 1 KiB and asks for a reload: it must be refused with
/// a 500 naming the file and `message`, and the `limit` counter must rise.
async fn reload_over_the_limit(
    client: &reqwest::Client,
    base: &str,
    file: &std::path::Path,
    text: &str,
    limit: &'static str,
    message: &str,
) {
    let before = hits(limit);
    std::fs::write(file, format!("{text}#{}", "x".repeat(1024))).unwrap();
    let resp = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let body = resp.text().await.unwrap();
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(body.contains(&*name) && body.contains(message), "{body}");
    assert!(hits(limit) > before);
}

const RULE_TEST: &str = r#"rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: up{job="a"}
        values: 1 1
    promql_expr_test:
      - expr: job:up:sum
        eval_time: 1m
        exp_samples:
          - labels: job:up:sum{job="a"}
            value: 1
"#;

/// `rules check` and `rules test` read rule files, and `rules test` its test files, under
/// `--rules.max-file-size`, naming the limit when a file is over it.
#[test]
fn rules_check_and_rules_test_refuse_files_over_the_limit() {
    use lookout_evaluator::rules::check::check_files;
    use lookout_evaluator::unittest::{TestOptions, run_files};

    let dir = tempfile::tempdir().unwrap();
    // The rule file is padded past the test file's size, so one limit can sit between them.
    let rules = format!("{RULES}#{}\n", "x".repeat(2 * RULE_TEST.len()));
    std::fs::write(dir.path().join("rules.yml"), &rules).unwrap();
    std::fs::write(dir.path().join("test.yml"), RULE_TEST).unwrap();
    let rule_path = dir.path().join("rules.yml").display().to_string();
    let test_path = dir.path().join("test.yml").display().to_string();

    let check = |limit: u64| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = check_files(std::slice::from_ref(&rule_path), limit, &mut out, &mut err);
        (ok, String::from_utf8_lossy(&err).into_owned())
    };
    assert!(check(rules.len() as u64).0);
    let (ok, err) = check(rules.len() as u64 - 1);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "the file is larger than the {}-byte rule file size limit (--rules.max-file-size)",
            rules.len() - 1
        )),
        "{err}"
    );

    let test = |limit: u64| {
        let opts = TestOptions {
            max_file_bytes: limit,
            ..TestOptions::default()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary =
            run_files(std::slice::from_ref(&test_path), &opts, &mut out, &mut err).unwrap();
        (
            summary.exit_code(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    };
    assert_eq!(
        test(rules.len() as u64).0,
        0,
        "{}",
        test(rules.len() as u64).1
    );
    // Between the two sizes: the test file is read, its rule file is refused.
    let (code, err) = test(RULE_TEST.len() as u64);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule file size limit (--rules.max-file-size)"),
        "{err}"
    );
    // Below the test file's size: the test file itself is refused.
    let (code, err) = test(RULE_TEST.len() as u64 - 1);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule test file size limit (--rules.max-file-size)"),
        "{err}"
    );
}
