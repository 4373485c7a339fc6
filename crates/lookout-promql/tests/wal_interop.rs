//! Lookout's WAL against Prometheus's own tools: `promtool tsdb dump` must read what
//! Lookout wrote, and Lookout must replay what Prometheus wrote. Skipped (with a message)
//! when `promtool` or `prometheus` is not installed.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{assert_same, have, lookout_dump, promtool_dump, unsafe_sigterm};
use lookout_promql::labels::Labels;
use lookout_promql::storage::wal::WalOptions;
use lookout_promql::storage::{Storage, StorageOptions};

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
