//! The evaluator's query API side by side with Debian's real `prometheus`: the same samples
//! go into the embedded storage and (by remote write) into Prometheus, then the same
//! `/api/v1/query` and `/api/v1/query_range` requests must give the same JSON (values
//! compared with a relative tolerance). This is what Grafana sees when it uses the evaluator
//! as a Prometheus data source.
//!
//! Sample timestamps are offset from the query steps so that no sample sits exactly on a
//! range boundary: Prometheus 2.x (Debian's) closes ranges on the left, Prometheus 3 (whose
//! semantics the engine follows) opens them.

mod scrape_support;

use std::sync::Arc;
use std::time::Duration;

use lookout_evaluator::datasource::QuerySample;
use lookout_evaluator::remote_write::{RemoteWriteConfig, RemoteWriter};
use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::Labels;
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::registry::Registry;
use scrape_support::{eventually, start_prometheus_with};
use serde_json::Value;

fn sorted_result(v: &Value) -> Vec<Value> {
    let mut r: Vec<Value> = match &v["data"]["result"] {
        Value::Array(a) if v["data"]["resultType"] != "scalar" => a.clone(),
        other => vec![other.clone()],
    };
    r.sort_by_key(|x| x["metric"].to_string());
    r
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) if x.is_nan() && y.is_nan() => true,
            (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_api_matches_prometheus() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_prom, port) =
        start_prometheus_with(dir.path(), &[], &["--web.enable-remote-write-receiver"]).await;

    let mut registry = Registry::default();
    let writer = RemoteWriter::start(
        RemoteWriteConfig::new(format!("http://127.0.0.1:{port}/api/v1/write")),
        &mut registry,
    )
    .expect("remote writer");
    let storage = Arc::new(Storage::new(StorageOptions::default()));

    // 20 minutes of samples every 15 s, ending a minute ago, 7.321 s off the minute grid.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let end_s = now_s - now_s % 60 - 60;
    let start_s = end_s - 20 * 60;
    let mut t = start_s * 1000 + 7_321;
    let mut i = 0u32;
    while t <= end_s * 1000 {
        let f = f64::from(i);
        let mut samples = Vec::new();
        for (code, rate) in [("200", 10.0), ("500", 0.5)] {
            samples.push(QuerySample {
                labels: Labels::new([
                    ("__name__", "lookout_requests_total"),
                    ("code", code),
                    ("job", "api"),
                ]),
                value: if i > 40 && code == "200" {
                    (f - 40.0) * rate
                } else {
                    f * rate
                },
                histogram: None,
            });
        }
        for (le, share) in [("0.1", 0.5), ("0.5", 0.9), ("1", 0.97), ("+Inf", 1.0)] {
            samples.push(QuerySample {
                labels: Labels::new([
                    ("__name__", "lookout_latency_seconds_bucket"),
                    ("le", le),
                    ("job", "api"),
                ]),
                value: (f * 20.0 * share).floor(),
                histogram: None,
            });
        }
        samples.push(QuerySample {
            labels: Labels::new([("__name__", "lookout_temperature"), ("room", "a")]),
            value: 20.0 + (f / 3.0).sin() * 4.0,
            histogram: None,
        });
        if i < 50 {
            samples.push(QuerySample {
                labels: Labels::new([("__name__", "lookout_temperature"), ("room", "b")]),
                value: 18.5 + f / 10.0,
                histogram: None,
            });
        }
        if i <= 30 {
            // room c is switched off at i = 30: a staleness marker ends it at once.
            samples.push(QuerySample {
                labels: Labels::new([("__name__", "lookout_temperature"), ("room", "c")]),
                value: if i == 30 {
                    lookout_promql::storage::STALE_NAN
                } else {
                    17.0
                },
                histogram: None,
            });
        }
        for s in &samples {
            storage.append(&s.labels, t, s.value).expect("append");
        }
        writer.enqueue(&samples, t);
        t += 15_000;
        i += 1;
    }
    writer.flush().await.expect("remote write");

    let mut state = WebState::new(shared_registry(Registry::default()));
    state.storage = Some(storage);
    let ours = scrape_support::serve_api(state).await;
    let theirs = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let get = |base: String, path: String| {
        let client = client.clone();
        async move {
            let r = client.get(format!("{base}{path}")).send().await.ok()?;
            serde_json::from_slice::<Value>(&r.bytes().await.ok()?).ok()
        }
    };
    // Wait until Prometheus has the last sample.
    let probe = format!(
        "/api/v1/query?query=count(lookout_temperature)&time={}",
        end_s - 30
    );
    eventually(Duration::from_secs(20), || {
        let g = get(theirs.clone(), probe.clone());
        async move {
            g.await
                .filter(|v| v["data"]["result"][0]["value"][1] == "1")
        }
    })
    .await
    .expect("Prometheus ingested the samples");

    let queries = [
        "lookout_requests_total",
        "rate(lookout_requests_total[5m])",
        "sum by (code) (increase(lookout_requests_total[2m]))",
        "histogram_quantile(0.9, sum by (le) (rate(lookout_latency_seconds_bucket[5m])))",
        "avg_over_time(lookout_temperature[3m])",
        "lookout_temperature > 21",
        "max_over_time(lookout_temperature[10m]) - min_over_time(lookout_temperature[10m])",
        "count(lookout_temperature)",
        "sum(rate(lookout_requests_total{code=\"500\"}[5m])) / sum(rate(lookout_requests_total[5m]))",
        "topk(1, lookout_temperature)",
        "label_replace(lookout_temperature, \"where\", \"room-$1\", \"room\", \"(.*)\")",
        "deriv(lookout_temperature[5m])",
        "absent(lookout_missing)",
        "scalar(count(lookout_temperature)) * 2",
        "lookout_temperature offset 5m",
        "changes(lookout_temperature[10m])",
        "resets(lookout_requests_total[20m])",
        "quantile_over_time(0.5, lookout_temperature[10m])",
        "count_over_time(lookout_temperature[5m])",
        "sum without (le) (lookout_latency_seconds_bucket)",
        "lookout_requests_total / on (job, code) group_left lookout_requests_total",
        "time() - timestamp(lookout_temperature)",
    ];
    let range = format!("start={}&end={}&step=60", start_s + 300, end_s);
    let mut mismatches = Vec::new();
    for q in queries {
        let enc: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        for path in [
            format!("/api/v1/query_range?query={enc}&{range}"),
            format!("/api/v1/query?query={enc}&time={}", end_s - 90),
            format!("/api/v1/query?query={enc}&time={}", end_s + 600),
        ] {
            let a = get(ours.clone(), path.clone()).await.expect("our answer");
            let b = get(theirs.clone(), path.clone())
                .await
                .expect("Prometheus's answer");
            let same = a["status"] == b["status"]
                && a["data"]["resultType"] == b["data"]["resultType"]
                && {
                    let (x, y) = (sorted_result(&a), sorted_result(&b));
                    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| close(p, q))
                };
            if !same {
                mismatches.push(format!("{path}\n  ours:       {a}\n  prometheus: {b}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
