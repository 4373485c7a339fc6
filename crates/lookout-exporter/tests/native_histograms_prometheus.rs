//! `/metrics` scraped by two real Prometheus servers (Debian's `prometheus`, 2.42): one with
//! `--enable-feature=native-histograms`, which asks for protobuf first, and one without,
//! which gets the OpenMetrics text. Both see the same series with the same values, except
//! that the per-target histograms (`http_request_duration_seconds`,
//! `dns_resolution_duration_seconds`) are native histograms in the first: Prometheus 2.42
//! takes a histogram with native buckets as a native histogram only and drops its classic
//! buckets (it has no `scrape_classic_histograms`, which came in 2.45). So the native
//! histograms are compared with the classic ones at the same state of the exporter: a
//! histogram's count identifies its state (each probe adds one), and at every count both
//! servers saw, `histogram_count`/`histogram_sum` of the first must equal `_count`/`_sum` of
//! the second.
//!
//! Skipped, saying so, when `prometheus` is not installed (CI installs it and fails
//! without it).

#[path = "../../lookout-promql/tests/common/peer.rs"]
mod peer;
mod server_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use server_support::{Exporter, MODULES, Target, eventually, nameserver, request, try_request};

/// What Prometheus 2.42 sends with native histograms on (scrape/scrape.go).
const PROTOBUF_ACCEPT: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// And without.
const TEXT_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const HISTOGRAMS: [&str; 2] = [
    "http_request_duration_seconds",
    "dns_resolution_duration_seconds",
];

/// A Prometheus server, killed when dropped.
struct Prometheus {
    addr: SocketAddr,
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

impl Prometheus {
    /// Starts Prometheus scraping `exporter` every 250 ms, on loopback only.
    async fn start(dir: &Path, name: &str, exporter: SocketAddr, native: bool) -> Prometheus {
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "global:
  scrape_interval: 250ms
  scrape_timeout: 250ms
scrape_configs:
  - job_name: lookout
    honor_labels: true
    static_configs:
      - targets: ['{exporter}']
"
            ),
        )
        .expect("write prometheus config");
        let addr = free_port();
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("{name}-data")).display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if native {
            command.arg("--enable-feature=native-histograms");
        }
        let child = command.spawn().expect("start prometheus");
        let prometheus = Prometheus { addr, child };
        eventually(&format!("{name} ready"), 150, || async {
            let reply = prometheus.get("/-/ready").await?;
            (reply.status == 200).then_some(())
        })
        .await;
        prometheus
    }

    /// A GET within 5 s, `None` when it fails.
    async fn get(&self, path: &str) -> Option<server_support::Reply> {
        let reply = try_request(self.addr, "GET", path, &[]);
        tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .ok()
            .flatten()
    }

    /// The `data` of an API call (`path` with its query string), `None` while unavailable.
    async fn api(&self, path: &str) -> Option<Value> {
        let reply = self.get(path).await?;
        let json: Value = serde_json::from_str(&reply.body).ok()?;
        (reply.status == 200 && json["status"] == "success").then(|| json["data"].clone())
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await
            .unwrap_or_else(|| panic!("query {expr} failed"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query's result matrix over the last `seconds`, one step every 50 ms.
    async fn query_range(&self, expr: &str, end: f64, seconds: f64) -> Vec<Value> {
        let path = format!(
            "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step=0.05",
            encode(expr),
            end - seconds
        );
        let data = self
            .api(&path)
            .await
            .unwrap_or_else(|| panic!("query_range {expr} failed"));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Every series stored, as `name{labels}` strings.
    async fn series(&self) -> BTreeSet<String> {
        let data = self
            .api(&format!(
                "/api/v1/series?match[]={}",
                encode("{__name__=~\".+\"}")
            ))
            .await
            .expect("series");
        data.as_array()
            .expect("series list")
            .iter()
            .map(|labels| key(labels, None))
            .collect()
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `name{k="v",...}` of a label set (sorted by the JSON object's order, which Prometheus
/// sorts), with `rename` replacing the name when given.
fn key(labels: &Value, rename: Option<&str>) -> String {
    let map = labels.as_object().expect("labels");
    let name = rename.unwrap_or_else(|| map["__name__"].as_str().unwrap_or_default());
    let rest: Vec<String> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// Per series (without its name), the `(count, sum)` pairs a range query pair gave at the
/// same steps, keyed by count.
fn count_to_sum(counts: &[Value], sums: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let sums_by_series: BTreeMap<String, &Value> = sums
        .iter()
        .map(|s| (key(&s["metric"], Some("")), &s["values"]))
        .collect();
    for series in counts {
        let id = key(&series["metric"], Some(""));
        let sum_at: BTreeMap<String, String> = sums_by_series
            .get(&id)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p[0].to_string(),
                    p[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let entry = out.entry(id).or_default();
        for point in series["values"].as_array().into_iter().flatten() {
            let count = point[1].as_str().unwrap_or_default().to_string();
            if let Some(sum) = sum_at.get(&point[0].to_string()) {
                let previous = entry.insert(count.clone(), sum.clone());
                assert!(
                    previous.as_ref().is_none_or(|p| p == sum),
                    "two sums for count {count}: {previous:?} and {sum}"
                );
            }
        }
    }
    out
}

/// Per histogram series of the first server, how many states (counts) both servers saw over
/// the 10 s before the last two; panics when, at one of them, the native histogram's sum is
/// not the classic one's.
async fn common_states(native: &Prometheus, classic: &Prometheus) -> BTreeMap<String, usize> {
    // Two seconds back (a scrape times out after 250 ms): every scrape stamped before then
    // is stored, so the count and the sum queries, sent one after the other, read the same
    // samples.
    let end = now() - 2.0;
    let mut out = BTreeMap::new();
    for h in HISTOGRAMS {
        let native_pairs = count_to_sum(
            &native
                .query_range(&format!("histogram_count({h})"), end, 10.0)
                .await,
            &native
                .query_range(&format!("histogram_sum({h})"), end, 10.0)
                .await,
        );
        let classic_pairs = count_to_sum(
            &classic.query_range(&format!("{h}_count"), end, 10.0).await,
            &classic.query_range(&format!("{h}_sum"), end, 10.0).await,
        );
        for (series, by_count) in &native_pairs {
            // The second server may not hold the series yet: no state in common so far.
            let other = classic_pairs.get(series).cloned().unwrap_or_default();
            let mut common = 0;
            for (count, sum) in by_count {
                if let Some(classic_sum) = other.get(count) {
                    assert_eq!(sum, classic_sum, "{h}{series} at count {count}");
                    common += 1;
                }
            }
            out.insert(format!("{h}{series}"), common);
        }
    }
    out
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_reach_prometheus_beside_the_same_classic_series() {
    if !peer::have("prometheus") {
        eprintln!("SKIPPED: prometheus is not installed (Debian package prometheus)");
        return;
    }
    let started = Instant::now();
    let target = Target::start(Duration::from_millis(30)).await;
    let resolver = nameserver(Ipv4Addr::new(192, 0, 2, 7)).await;
    let config = format!(
        "{MODULES}targets:
  - name: fast
    module: http_2xx
    target: {}
    interval: 1s
    labels:
      team: web
  - name: slow
    module: http_2xx
    target: {}
    interval: 1s
  - name: broken
    module: http_2xx
    target: {}
    interval: 1s
  - name: resolver
    module: dns_shop
    target: {resolver}
    interval: 1s
",
        target.url("/"),
        target.url("/slow"),
        target.url("/fail"),
    );
    let exporter = Exporter::start(&config).await;

    // The negotiation, as each server will ask.
    let reply = request(
        exporter.addr,
        "GET",
        "/metrics",
        &[("Accept", PROTOBUF_ACCEPT)],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        )
    );
    assert_eq!(reply.header("vary"), Some("Accept"));
    let reply = request(exporter.addr, "GET", "/metrics", &[("Accept", TEXT_ACCEPT)]).await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(reply.body.ends_with("# EOF\n"));

    let dir = tempfile::tempdir().expect("temp dir");
    let native = Prometheus::start(dir.path(), "native", exporter.addr, true).await;
    let classic = Prometheus::start(dir.path(), "classic", exporter.addr, false).await;

    // Until both hold four probes' worth of every per-target histogram.
    eventually("four observations in both servers", 300, || async {
        let n = native
            .query("histogram_count(http_request_duration_seconds) >= 4 or histogram_count(dns_resolution_duration_seconds) >= 4")
            .await;
        let c = classic
            .query("http_request_duration_seconds_count >= 4 or dns_resolution_duration_seconds_count >= 4")
            .await;
        (n.len() == 4 && c.len() == 4).then_some(())
    })
    .await;
    // One more scrape each, so both stored every series the exporter has by now.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The same series, the histograms' classic ones standing as native ones in the first.
    let classic_series = classic.series().await;
    let mut expected = BTreeSet::new();
    for series in &classic_series {
        let family = HISTOGRAMS
            .iter()
            .find(|h| series.starts_with(&format!("{h}_")) && !series.contains("le="));
        match family {
            Some(h) if series.starts_with(&format!("{h}_count{{")) => {
                expected.insert(series.replacen(&format!("{h}_count"), h, 1));
            }
            Some(_) => {}
            None if HISTOGRAMS
                .iter()
                .any(|h| series.starts_with(&format!("{h}_bucket{{"))) => {}
            None => {
                expected.insert(series.clone());
            }
        }
    }
    let native_series = native.series().await;
    assert_eq!(
        native_series.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "only in the native-histogram server"
    );
    assert_eq!(
        expected.difference(&native_series).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "missing from the native-histogram server"
    );
    for wanted in [
        "http_request_duration_seconds{instance=\"fast\",job=\"http_2xx\",team=\"web\"}",
        "lookout_exporter_build_info{",
        "lookout_exporter_probes_total{",
        "lookout_exporter_probe_duration_seconds_bucket{",
        "lookout_target_probe_failure_info{instance=\"broken\"",
        "dns_answer_info{",
        "dns_resolution_duration_seconds{instance=\"resolver\"",
    ] {
        assert!(
            native_series.iter().any(|s| s.starts_with(wanted)),
            "{wanted} missing: {native_series:#?}"
        );
    }

    // Series whose values do not move once every target was probed: the same values.
    let steady = "{__name__=~\"up|lookout_target_http_status_code|lookout_exporter_build_info|\
                  lookout_exporter_targets|lookout_exporter_config_last_reload_success_timestamp_seconds|\
                  lookout_exporter_limit_hits_total|lookout_target_probe_failure_info|dns_answer_info\"}";
    let values = |result: Vec<Value>| -> BTreeMap<String, String> {
        result
            .iter()
            .map(|s| (key(&s["metric"], None), s["value"][1].to_string()))
            .collect()
    };
    let classic_values = values(classic.query(steady).await);
    assert_eq!(values(native.query(steady).await), classic_values);
    assert!(classic_values.len() >= 12, "{classic_values:#?}");

    // At each state both servers saw, the native histogram's count and sum are the classic
    // histogram's; polled until every histogram went through three states in both (each
    // server scrapes four times per probe, so most states are seen by both).
    let common = eventually("three common states of every histogram", 100, || async {
        let common = common_states(&native, &classic).await;
        (common.len() == 4 && common.values().all(|n| *n >= 3)).then_some(common)
    })
    .await;
    assert!(common.keys().any(|k| k.contains("broken")), "{common:?}");

    // The native buckets are schema 3: each bucket is 2^(1/8) times as wide as the last.
    let result = native
        .query("http_request_duration_seconds{instance=\"slow\"}")
        .await;
    let buckets = result[0]["histogram"][1]["buckets"]
        .as_array()
        .expect("native buckets")
        .clone();
    assert!(!buckets.is_empty());
    for bucket in &buckets {
        let bound = |i: usize| bucket[i].as_str().unwrap().parse::<f64>().unwrap();
        let ratio = bound(2) / bound(1);
        assert!((ratio - 2f64.powf(0.125)).abs() < 1e-9, "{bucket}");
        // The slow target sleeps 30 ms before answering.
        assert!(bound(2) > 0.03, "{bucket}");
    }

    exporter.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took {:?}",
        started.elapsed()
    );
}
