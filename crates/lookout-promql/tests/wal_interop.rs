//! Lookout's WAL against Prometheus's own tools: `promtool tsdb dump` must read what
//! Lookout wrote, and Lookout must replay what Prometheus wrote. Skipped (with a message)
//! when `promtool` or `prometheus` is not installed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lookout_promql::labels::Labels;
use lookout_promql::storage::wal::WalOptions;
use lookout_promql::storage::{Queryable, Storage, StorageOptions};
use promql_parser::label::{MatchOp, Matcher};

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Series (Prometheus notation) → samples (t, value bits) in `st`.
fn lookout_dump(st: &Storage) -> BTreeMap<String, Vec<(i64, u64)>> {
    let m = Matcher::new(
        MatchOp::Re(regex::Regex::new("^(?s:.+)$").unwrap()),
        "__name__",
        ".+",
    );
    st.select(&[m], i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            let v = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            (s.labels.to_string(), v)
        })
        .collect()
}

/// `promtool tsdb dump DIR`, parsed: lines `{labels} value timestamp`.
fn promtool_dump(dir: &Path) -> BTreeMap<String, Vec<(i64, u64)>> {
    let out = Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool tsdb dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut series: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let close = line.rfind('}').expect("labels");
        let (labels, rest) = line.split_at(close + 1);
        let mut f = rest.split_whitespace();
        let v: f64 = f.next().unwrap().parse().unwrap();
        let t: i64 = f.next().unwrap().parse().unwrap();
        series
            .entry(canonical(labels))
            .or_default()
            .push((t, v.to_bits()));
    }
    series
}

/// `{a="x", b="y"}` as Lookout prints labels (`name{…}`).
fn canonical(braced: &str) -> String {
    let inner = braced.trim_start_matches('{').trim_end_matches('}');
    let mut pairs = Vec::new();
    for part in split_pairs(inner) {
        let (n, v) = part.split_once('=').unwrap();
        let v: String = serde_json::from_str(v).unwrap();
        pairs.push((n.trim().to_string(), v));
    }
    Labels::new(pairs).to_string()
}

/// Splits `a="x", b="y,z"` at the commas between pairs.
fn split_pairs(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_str, mut esc) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            ',' if !in_str => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

#[test]
fn promtool_reads_what_lookout_wrote() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 64 * 1024,
        ..WalOptions::default()
    };
    let st = Storage::open(StorageOptions::default(), dir.path(), opts).unwrap();
    let t0 = 1_700_000_000_000i64;
    for k in 0..300i64 {
        for i in 0..40 {
            let l = Labels::new([
                ("__name__", "http_requests_total"),
                ("instance", "host:9100"),
                ("code", if i % 2 == 0 { "200" } else { "500" }),
                ("i", &i.to_string()),
            ]);
            st.append(&l, t0 + k * 15_000, (k * i + k % 7) as f64 * 0.25)
                .unwrap();
        }
        st.append(
            &Labels::new([("__name__", "up"), ("quote", "a\"b,c=d")]),
            t0 + k * 15_000,
            1.0,
        )
        .unwrap();
    }
    let want = lookout_dump(&st);
    st.close_wal();
    drop(st);
    let got = promtool_dump(dir.path());
    assert_same(&got, &want);
}

#[test]
fn lookout_replays_what_prometheus_wrote() {
    if !have("prometheus") || !have("promtool") {
        eprintln!("SKIPPED: prometheus or promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    // SIGTERM: a clean stop; the head stays in the WAL (no block is cut this early).
    unsafe_sigterm(child.id());
    child.wait().unwrap();
    let want = promtool_dump(&data);
    let samples: usize = want.values().map(Vec::len).sum();
    assert!(
        want.len() > 50 && samples > want.len(),
        "prometheus scraped itself: {} series, {samples} samples",
        want.len()
    );
    eprintln!("prometheus wrote {} series, {samples} samples", want.len());
    let st = Storage::open(StorageOptions::default(), &data, WalOptions::default()).unwrap();
    let got = lookout_dump(&st);
    assert_eq!(st.wal_stats().unwrap().corruptions, 0);
    assert_same(&got, &want);
}

/// Equal dumps, or a short account of the first difference.
/// promtool prints every NaN as `NaN`, so NaN payloads (the staleness marker included)
/// are compared as one NaN.
fn assert_same(got: &BTreeMap<String, Vec<(i64, u64)>>, want: &BTreeMap<String, Vec<(i64, u64)>>) {
    let norm = |v: &Vec<(i64, u64)>| -> Vec<(i64, u64)> {
        v.iter()
            .map(|&(t, b)| {
                (
                    t,
                    if f64::from_bits(b).is_nan() {
                        f64::NAN.to_bits()
                    } else {
                        b
                    },
                )
            })
            .collect()
    };
    for (k, v) in want {
        assert_eq!(got.get(k).map(norm), Some(norm(v)), "series {k}");
    }
    assert_eq!(got.len(), want.len(), "extra series");
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Figures, not a check: WAL bytes per sample for a scrape-like load and the replay time.
/// `WAL_FIGURES_SERIES` series (default 10,000) × 100 samples at 15 s.
#[test]
#[ignore = "figures: cargo test --test wal_interop -- --ignored --nocapture"]
fn wal_figures() {
    let n: usize = std::env::var("WAL_FIGURES_SERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let st = Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
    let labels: Vec<Labels> = (0..n)
        .map(|i| {
            Labels::new([
                ("__name__", format!("node_metric_{}", i % 50)),
                ("instance", format!("host-{}:9100", i / 500)),
                ("job", "node".to_string()),
                ("cpu", (i % 8).to_string()),
                ("series", i.to_string()),
            ])
        })
        .collect();
    let t0 = 1_700_000_000_000i64;
    let start = std::time::Instant::now();
    for k in 0..100i64 {
        for (i, l) in labels.iter().enumerate() {
            // Counters, gauges with decimals and constants, as a node exporter gives.
            let v = match i % 3 {
                0 => (k * (i as i64 % 97 + 1)) as f64,
                1 => 0.5 + ((k * 7919 + i as i64) % 1000) as f64 / 1000.0,
                _ => 1.0,
            };
            st.append(l, t0 + k * 15_000, v).unwrap();
        }
    }
    st.close_wal();
    let ingest = start.elapsed();
    let stats = st.wal_stats().unwrap();
    drop(st);
    let samples = (n * 100) as f64;
    let start = std::time::Instant::now();
    let st = Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
    let replay = start.elapsed();
    assert_eq!(st.wal_stats().unwrap().replayed_samples, (n * 100) as u64);
    eprintln!(
        "{n} series x 100 samples: WAL {} bytes, {:.2} bytes/sample (series records included); ingest {:?}; replay {:?} ({:.0} samples/s)",
        stats.bytes_written,
        stats.bytes_written as f64 / samples,
        ingest,
        replay,
        samples / replay.as_secs_f64()
    );
}
