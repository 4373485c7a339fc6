//! Native histograms over the query API, side by side with Debian's Prometheus 2.42
//! (`--enable-feature=native-histograms`): Prometheus scrapes a loopback target serving
//! native histograms in the protobuf exposition (a zero bucket, negative buckets, counter
//! resets, a bucket appearing), writing 2 s blocks and its WAL; then it is stopped, its data
//! directory copied, and Prometheus (on the original) and Lookout's web API (on the copy, as
//! `--storage.tsdb.path`) answer the same `/api/v1/query` and `/api/v1/query_range` requests.
//! The answers must be the same bytes, or, where the order of a result is not defined or a
//! bucket boundary differs in its last digits (see [`round_bounds`]), the same JSON once
//! sorted by series and with boundaries rounded to 12 digits. Lookout runs with Prometheus 2's left-closed windows
//! (`--query.prometheus2-windows`), as Debian's Prometheus is 2.42.
//!
//! Skipped, saying so, when `prometheus` is not installed (a failure in CI).

#[path = "../../lookout-promql/tests/common/nh_exposition.rs"]
mod nh_exposition;
#[path = "../../lookout-promql/tests/common/peer.rs"]
mod peer;
mod scrape_support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::engine::{Engine, EngineOptions, WindowSemantics};
use lookout_promql::storage::wal::WalOptions;
use lookout_promql::storage::{Storage, StorageOptions};
use nh_exposition::{PROTOBUF, SCHEMA0, SCHEMA3, Shape};
use prometheus_client::registry::Registry;
use scrape_support::{eventually, serve_scrapes, start_prometheus_config_with};
use serde_json::Value;

/// `a`: schema 3 with client_golang's zero threshold and negative buckets, reset every 30
/// scrapes; `b`: schema 0 with a wide zero bucket, a negative bucket and bucket 6 appearing
/// from the 15th scrape of each round of 30.
const SHAPES: [Shape; 2] = [
    Shape {
        reset_every: Some(30),
        ..SCHEMA3
    },
    Shape {
        negative: &[-2],
        reset_every: Some(30),
        appears: Some((6, 15)),
        ..SCHEMA0
    },
];

const NAME: &str = "lookout_nh_seconds";

/// The expressions compared, instant and range.
const QUERIES: &[&str] = &[
    "lookout_nh_seconds",
    "lookout_nh_seconds{path=\"b\"}",
    "rate(lookout_nh_seconds[2s])",
    "increase(lookout_nh_seconds[3s])",
    "sum by (path) (rate(lookout_nh_seconds[2s]))",
    "sum(lookout_nh_seconds)",
    "last_over_time(lookout_nh_seconds[1s])",
    "histogram_count(rate(lookout_nh_seconds[2s]))",
    "histogram_sum(lookout_nh_seconds)",
    "histogram_quantile(0.9, rate(lookout_nh_seconds[2s]))",
    "histogram_quantile(0.5, sum(rate(lookout_nh_seconds[2s])))",
    "count_over_time(lookout_nh_seconds[2s])",
    // Floats and histograms in one result.
    "{__name__=~\"lookout_nh_seconds|up|scrape_samples_scraped\"}",
    // One series with floats at some steps and histograms at others.
    "sum by (path) (histogram_count(lookout_nh_seconds)) > 1000 or sum by (path) (lookout_nh_seconds)",
];

/// Where the engine follows Prometheus 3, not 2.42 (the README's Differences table).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Known {
    /// `histogram_quantile` interpolates exponentially within a bucket (2.42: linearly):
    /// the same series and times, values within 10 %.
    Interpolation,
    /// `rate`/`increase` of a histogram do not extrapolate below a count of zero (2.42
    /// extrapolates only floats so): each differing histogram is 2.42's scaled by one factor
    /// below 1, each differing float smaller.
    ExtrapolationToZero,
    /// `last_over_time` of histograms returns them (2.42 returns a float 0).
    LastOverTime,
}

fn known(query: &str) -> Option<Known> {
    if query.starts_with("histogram_quantile") {
        Some(Known::Interpolation)
    } else if query.contains("rate(") || query.contains("increase(") {
        Some(Known::ExtrapolationToZero)
    } else if query.starts_with("last_over_time") {
        Some(Known::LastOverTime)
    } else {
        None
    }
}

fn number(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// Whether `got` (Lookout) differs from `want` (Prometheus 2.42) only as `kind` says.
fn differs_only_as(kind: Known, got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) if kind == Known::LastOverTime => {
            g.get("metric") == w.get("metric")
                && (g.contains_key("histogram") || g.contains_key("histograms"))
                && [w.get("value"), w.get("values")]
                    .into_iter()
                    .flatten()
                    .all(|v| v.to_string().contains("\"0\""))
        }
        (Value::Object(g), Value::Object(w))
            if kind == Known::ExtrapolationToZero && g.contains_key("buckets") =>
        {
            let factor = number(&g["count"]) / number(&w["count"]);
            let scaled = |a: &Value, b: &Value| {
                let (a, b) = (number(a), number(b));
                a == b || (a - factor * b).abs() <= 1e-9 * a.abs().max(b.abs())
            };
            factor > 0.0
                && factor <= 1.0
                && scaled(&g["sum"], &w["sum"])
                && g["buckets"].as_array().map(Vec::len) == w["buckets"].as_array().map(Vec::len)
                && g["buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .zip(w["buckets"].as_array().into_iter().flatten())
                    .all(|(x, y)| (0..3).all(|i| x[i] == y[i]) && scaled(&x[3], &y[3]))
        }
        (Value::Object(g), Value::Object(w)) => {
            g.len() == w.len()
                && g.iter()
                    .all(|(k, v)| w.get(k).is_some_and(|x| differs_only_as(kind, v, x)))
        }
        (Value::Array(g), Value::Array(w)) => {
            g.len() == w.len() && g.iter().zip(w).all(|(a, b)| differs_only_as(kind, a, b))
        }
        (Value::String(g), Value::String(w)) if g != w => {
            let (a, b) = (number(got), number(want));
            match kind {
                Known::Interpolation => (a - b).abs() <= 0.1 * b.abs(),
                Known::ExtrapolationToZero => a >= 0.0 && a < b,
                Known::LastOverTime => false,
            }
        }
        _ => got == want,
    }
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Bucket boundaries rounded to 12 significant digits: Prometheus takes its boundaries
/// from a table whose numbers can be a few units in the last place off the correctly
/// rounded powers of two Lookout computes (a difference in the README's Differences table).
fn round_bounds(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "buckets"
                    && let Value::Array(buckets) = x
                {
                    for b in buckets.iter_mut().filter_map(Value::as_array_mut) {
                        for i in [1, 2] {
                            if let Some(bound) = b.get_mut(i) {
                                *bound = Value::from(format!("{:.11e}", number(bound)));
                            }
                        }
                    }
                } else {
                    round_bounds(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(round_bounds),
        _ => {}
    }
}

/// The answer's result, each element sorted by its series (a scalar as one element).
fn sorted_result(v: &Value) -> Vec<Value> {
    let mut r: Vec<Value> = match &v["data"]["result"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    r.sort_by_key(|x| x["metric"].to_string());
    r
}

/// Milliseconds as the API's `time` parameter.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

async fn get_body(client: &reqwest::Client, url: &str) -> String {
    let r = client.get(url).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.text().await.expect("body")
}

/// Counts what Prometheus's answers showed, so that the test knows it compared them.
#[derive(Default, Debug)]
struct Seen {
    zero_buckets: usize,
    negative_buckets: usize,
    positive_buckets: usize,
    series_with_both: usize,
    vectors_with_both: usize,
    identical_bytes: usize,
    /// Equal once sorted by series and with bucket boundaries rounded ([`round_bounds`]).
    identical_with_bounds_rounded: usize,
}

impl Seen {
    fn note(&mut self, v: &Value) {
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let mut points = Vec::new();
        let (mut floats, mut hists) = (0, 0);
        for s in &result {
            if s["values"].is_array() && s["histograms"].is_array() {
                self.series_with_both += 1;
            }
            if s["value"].is_array() {
                floats += 1;
            }
            if let Some(h) = s.get("histogram") {
                hists += 1;
                points.push(h.clone());
            }
            for h in s["histograms"].as_array().into_iter().flatten() {
                points.push(h.clone());
            }
        }
        if floats > 0 && hists > 0 {
            self.vectors_with_both += 1;
        }
        for p in points {
            for b in p[1]["buckets"].as_array().into_iter().flatten() {
                match b[0].as_u64() {
                    Some(0) => self.positive_buckets += 1,
                    Some(1) => self.negative_buckets += 1,
                    Some(3) => self.zero_buckets += 1,
                    _ => panic!("boundary rule of {b}"),
                }
            }
        }
    }
}

/// Sends SIGTERM to `pid` (Prometheus then writes its WAL out and stops).
fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Prometheus scrapes the target 62 times (every 200 ms) and is stopped; returns the
/// directory, its data directory and the number of scrapes.
async fn scrape_with_prometheus() -> (tempfile::TempDir, std::path::PathBuf, u64) {
    let (target, scrapes) = serve_scrapes(PROTOBUF, |n| {
        nh_exposition::exposition(NAME, "Query API test.", &SHAPES, n)
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: nh\n    static_configs: [{{targets: ['{target}']}}]\n"
    );
    let flags = [
        "--enable-feature=native-histograms",
        "--storage.tsdb.min-block-duration=2s",
        "--storage.tsdb.max-block-duration=2s",
    ];
    let (mut prom, _) = start_prometheus_config_with(dir.path(), &config, &flags).await;
    // Two rounds of 30 scrapes: two counter resets, the bucket appearing twice.
    let scraped = eventually(Duration::from_secs(60), || {
        let n = scrapes.load(Ordering::SeqCst);
        async move { (n >= 62).then_some(()) }
    })
    .await;
    terminate(prom.0.id());
    let _ = prom.0.wait();
    let n = scrapes.load(Ordering::SeqCst);
    assert!(scraped.is_some(), "only {n} scrapes");
    let data = dir.path().join("prom-data");
    (dir, data, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_in_the_query_api_as_prometheus_writes_them() {
    if !peer::have("prometheus") {
        eprintln!("SKIPPED: prometheus not installed");
        return;
    }
    let (dir, data, scrapes) = scrape_with_prometheus().await;
    let copy = dir.path().join("lookout-data");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&data)
        .arg(&copy)
        .status()
        .expect("cp runs");
    assert!(status.success());

    // Prometheus again on its directory, scraping nothing.
    let (_prom, theirs) = start_prometheus_config_with(
        dir.path(),
        "global:\n  scrape_interval: 1h\n",
        &["--enable-feature=native-histograms"],
    )
    .await;
    let storage = Storage::open(StorageOptions::default(), &copy, WalOptions::default())
        .expect("Lookout opens the copy");
    let mut state = WebState::new(shared_registry(Registry::default()));
    state.storage = Some(Arc::new(storage));
    state.engine = Engine::new(EngineOptions {
        windows: WindowSemantics::Prometheus2,
        ..Default::default()
    });
    let ours = scrape_support::serve_api(state).await;

    let client = reqwest::Client::new();
    // The last scrape's time: queries end there.
    let last = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let url = format!("{theirs}/api/v1/query?query=max(timestamp(up))");
        async move {
            let v: Value = serde_json::from_str(&get_body(&client, &url).await).ok()?;
            let s: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            Some((s * 1000.0).round() as i64)
        }
    })
    .await
    .expect("Prometheus answers from its directory");

    let mut requests = Vec::new();
    for q in QUERIES {
        let enc = encode(q);
        for at in [last, last - 3_300, last - 6_000] {
            requests.push((
                *q,
                format!("/api/v1/query?query={enc}&time={}", seconds(at)),
            ));
        }
        for step in ["1", "0.7"] {
            let path = format!(
                "/api/v1/query_range?query={enc}&start={}&end={}&step={step}",
                seconds(last - 10_000),
                seconds(last)
            );
            requests.push((*q, path));
        }
    }
    let mut seen = Seen::default();
    let mut mismatches = Vec::new();
    let mut known_differences = Vec::new();
    for (query, path) in &requests {
        let want = get_body(&client, &format!("{theirs}{path}")).await;
        let got = get_body(&client, &format!("{ours}{path}")).await;
        let want_v: Value = serde_json::from_str(&want).expect("Prometheus's JSON");
        assert_eq!(want_v["status"], "success", "{path}: {want}");
        seen.note(&want_v);
        if got == want {
            seen.identical_bytes += 1;
            continue;
        }
        let mut got_v: Value = serde_json::from_str(&got).expect("Lookout's JSON");
        let mut want_v = want_v;
        round_bounds(&mut got_v);
        round_bounds(&mut want_v);
        let same_type = got_v["data"]["resultType"] == want_v["data"]["resultType"];
        let (g, w) = (sorted_result(&got_v), sorted_result(&want_v));
        if same_type && g == w {
            seen.identical_with_bounds_rounded += 1;
            continue;
        }
        match known(query) {
            Some(kind) if same_type && differs_only_as(kind, &Value::from(g), &Value::from(w)) => {
                known_differences.push(kind);
            }
            _ => mismatches.push(format!("{path}\n  Prometheus: {want}\n  Lookout:    {got}")),
        }
    }
    eprintln!(
        "{scrapes} scrapes, {} requests: {seen:?}; known differences: {known_differences:?}",
        requests.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} answers differ:\n{}",
        mismatches.len(),
        requests.len(),
        mismatches.join("\n")
    );
    assert!(seen.zero_buckets > 0 && seen.negative_buckets > 0 && seen.positive_buckets > 0);
    assert!(
        seen.series_with_both > 0,
        "no series with values and histograms"
    );
    assert!(
        seen.vectors_with_both > 0,
        "no vector with floats and histograms"
    );
    assert!(
        (seen.identical_bytes + seen.identical_with_bounds_rounded) * 2 > requests.len(),
        "{seen:?}"
    );
}
