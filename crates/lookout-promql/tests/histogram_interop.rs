//! Native histograms on disk against Debian's Prometheus 2.42 as the oracle:
//!
//! * Prometheus (`--enable-feature=native-histograms`, 2 s blocks) scrapes a loopback
//!   target serving native histograms in the protobuf exposition (counter resets and a
//!   bucket appearing included); Lookout opens a copy of its data directory (blocks of
//!   integer histogram chunks and the WAL's histogram records) and must hold exactly the
//!   histogram samples Prometheus's API answered.
//! * Lookout writes histograms (its WAL and 2 h blocks of float histogram chunks);
//!   Prometheus started on a copy must answer exactly those samples, and
//!   `promtool tsdb dump` must read the directory (Prometheus 2.42's dump prints float
//!   samples only: it is compared on those).
//!
//! Skipped, saying so, when `prometheus` or `promtool` is not installed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::nh_exposition::{self, PROTOBUF, SCHEMA0, SCHEMA3, Shape};
use common::{free_port, have, http_get, promtool_dump, unsafe_sigterm};
use lookout_promql::histogram::{Bucket, FloatHistogram};
use lookout_promql::labels::Labels;
use lookout_promql::storage::wal::WalOptions;
use lookout_promql::storage::{Queryable, STALE_NAN, Storage, StorageOptions, is_stale};
use promql_parser::label::{MatchOp, Matcher};
use serde_json::Value;

/// A histogram sample as both sides can state it: timestamp, count and sum (bits), and
/// the non-empty buckets as (lower, upper, count), sorted. Bucket bounds are compared to
/// 12 significant digits: Prometheus takes them from a table a few units in the last place
/// off the correctly rounded values Lookout computes (see the README's Differences table).
type Hist = (i64, u64, u64, Vec<(String, String, u64)>);

fn bound(v: f64) -> String {
    format!("{v:.11e}")
}

fn from_lookout(t: i64, h: &FloatHistogram) -> Hist {
    let mut b: Vec<(String, String, u64)> = h
        .all_buckets()
        .iter()
        .filter(|b| b.count != 0.0)
        .map(|b| (bound(b.lower), bound(b.upper), b.count.to_bits()))
        .collect();
    b.sort_unstable();
    (t, h.count.to_bits(), h.sum.to_bits(), b)
}

fn num(v: &Value) -> f64 {
    v.as_str()
        .expect("a number as a string")
        .parse()
        .expect("a number")
}

fn from_prometheus(point: &Value) -> Hist {
    let t = (point[0].as_f64().expect("time") * 1000.0).round() as i64;
    let h = &point[1];
    let mut b: Vec<(String, String, u64)> = h["buckets"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|b| (bound(num(&b[1])), bound(num(&b[2])), num(&b[3]).to_bits()))
                .collect()
        })
        .unwrap_or_default();
    b.sort_unstable();
    (t, num(&h["count"]).to_bits(), num(&h["sum"]).to_bits(), b)
}

/// Series (Lookout's notation) → histogram samples up to `until` in `st`.
fn lookout_histograms(st: &Storage, name_re: &str, until: i64) -> BTreeMap<String, Vec<Hist>> {
    let m = Matcher::new(
        MatchOp::Re(regex::Regex::new(&format!("^(?s:{name_re})$")).unwrap()),
        "__name__",
        name_re,
    );
    st.select(&[m], i64::MIN, until)
        .into_iter()
        .filter(|s| !s.histograms.is_empty())
        .map(|s| {
            let h = s
                .histograms
                .iter()
                .map(|p| from_lookout(p.t, &p.h))
                .collect();
            (s.labels.to_string(), h)
        })
        .collect()
}

/// Equal histogram samples per series, or an account of the first difference.
fn assert_same_histograms(got: &BTreeMap<String, Vec<Hist>>, want: &BTreeMap<String, Vec<Hist>>) {
    for (k, w) in want {
        let g = got.get(k).unwrap_or_else(|| panic!("series {k} missing"));
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert_eq!(
                a,
                b,
                "series {k}, sample {i} of {} (want {})",
                g.len(),
                w.len()
            );
        }
        assert_eq!(g.len(), w.len(), "series {k}: samples");
    }
    assert_eq!(got.len(), want.len(), "series");
}

/// Series → (float samples as (t, bits), histogram samples) of a range query's matrix.
type Matrix = BTreeMap<String, (Vec<(i64, u64)>, Vec<Hist>)>;

fn query_matrix(port: u16, selector: &str, at_ms: i64) -> Matrix {
    let q: String = format!("{selector}[1d]")
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let path = format!(
        "/api/v1/query?query={q}&time={}.{:03}",
        at_ms / 1000,
        at_ms % 1000
    );
    let body = http_get(port, &path).expect("Prometheus answers the query");
    let reply: Value = serde_json::from_str(&body).expect("JSON");
    let mut out = Matrix::new();
    for s in reply["data"]["result"].as_array().expect("a matrix") {
        let labels: Vec<(String, String)> = s["metric"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let floats = s["values"]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|p| {
                        let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                        (t, num(&p[1]).to_bits())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let hists = s["histograms"]
            .as_array()
            .map(|v| v.iter().map(from_prometheus).collect())
            .unwrap_or_default();
        out.insert(Labels::new(labels).to_string(), (floats, hists));
    }
    out
}

/// A Prometheus server, stopped (SIGTERM, then killed) when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(config: &Path, data: &Path, extra: &[&str]) -> Prometheus {
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/-/ready").is_none() {
            assert!(Instant::now() < deadline, "Prometheus not ready after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    fn stop(mut self) {
        unsafe_sigterm(self.child.id());
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The target's two histograms: `a` with negative buckets and a zero bucket of
/// client_golang's default width, `b` with a wide zero bucket and a bucket appearing in the
/// second half of each round; both start over every 25 scrapes (a counter reset).
const SHAPES: [Shape; 2] = [
    Shape {
        reset_every: Some(25),
        ..SCHEMA3
    },
    Shape {
        reset_every: Some(25),
        appears: Some((6, 12)),
        ..SCHEMA0
    },
];

/// The exposition at scrape `n`.
fn exposition(n: u64) -> Vec<u8> {
    nh_exposition::exposition(
        "lookout_nh_seconds",
        "Native histograms for the storage interop test.",
        &SHAPES,
        n,
    )
}

/// Serves [`exposition`] on loopback (one more scrape each request); returns the port.
fn serve_target() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let scrapes = Arc::new(AtomicU64::new(1));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = exposition(scrapes.fetch_add(1, Ordering::Relaxed));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {PROTOBUF}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    port
}

fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success());
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn lookout_reads_the_histograms_prometheus_scraped() {
    if !have("prometheus") {
        eprintln!("SKIPPED: prometheus not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = serve_target();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: nh\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let blocks = [
        "--storage.tsdb.min-block-duration=2s",
        "--storage.tsdb.max-block-duration=2s",
    ];
    let prom = Prometheus::start(&cfg, &data, &blocks);
    std::thread::sleep(Duration::from_secs(14));
    // A second back: every scrape that started before then has been committed.
    let at = now_ms() - 1000;
    let want = query_matrix(prom.port, "lookout_nh_seconds", at);
    prom.stop();
    let want: BTreeMap<String, Vec<Hist>> = want.into_iter().map(|(k, v)| (k, v.1)).collect();
    let samples: usize = want.values().map(Vec::len).sum();
    assert!(
        want.len() == 2 && samples > 50,
        "Prometheus scraped {samples} histograms: {want:?}"
    );
    eprintln!("Prometheus answered {samples} histogram samples");
    // Without the WAL, the blocks alone (integer histogram chunks) give the first part.
    let blocks_only = dir.path().join("blocks_only");
    copy_dir(&data, &blocks_only);
    std::fs::remove_dir_all(blocks_only.join("wal")).unwrap();
    let st = Storage::open(
        StorageOptions::default(),
        &blocks_only,
        WalOptions::default(),
    )
    .unwrap();
    assert_eq!(st.block_stats().unwrap().chunks_dropped, 0);
    let from_blocks = lookout_histograms(&st, "lookout_nh_seconds", at);
    drop(st);
    assert_eq!(from_blocks.len(), 2);
    for (k, v) in &from_blocks {
        assert!(v.len() >= 5, "{k}: {} samples in blocks", v.len());
        assert_eq!(v[..], want[k][..v.len()], "{k}");
    }
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    let st = Storage::open(StorageOptions::default(), &copy, WalOptions::default()).unwrap();
    assert_eq!(st.wal_stats().unwrap().corruptions, 0);
    assert_eq!(st.block_stats().unwrap().chunks_dropped, 0);
    let got = lookout_histograms(&st, "lookout_nh_seconds", at);
    assert_same_histograms(&got, &want);
    assert_eq!(st.block_stats().unwrap().chunks_dropped, 0);
}

/// Step `i`'s histogram as Lookout appends it: fractional counts, a reset every 100
/// steps, a bucket more in the second half of each round.
fn lookout_hist(i: i64) -> Arc<FloatHistogram> {
    let k = (i % 100) as f64;
    let mut positive = vec![
        Bucket {
            index: -2,
            count: 0.5 + k,
        },
        Bucket {
            index: 3,
            count: 2.25 * k,
        },
    ];
    if i % 100 >= 50 {
        positive.push(Bucket {
            index: 9,
            count: 1.0,
        });
    }
    let negative = vec![Bucket {
        index: 1,
        count: k / 3.0,
    }];
    let zero_count = 0.1 * k;
    let count = positive
        .iter()
        .chain(&negative)
        .map(|b| b.count)
        .sum::<f64>()
        + zero_count;
    Arc::new(FloatHistogram {
        schema: 2,
        zero_threshold: 0.001,
        zero_count,
        count,
        sum: 1.5 * k - 7.0,
        positive,
        negative,
        ..Default::default()
    })
}

#[test]
fn prometheus_reads_the_histograms_lookout_wrote() {
    if !have("prometheus") || !have("promtool") {
        eprintln!("SKIPPED: prometheus or promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let st = Storage::open(StorageOptions::default(), &data, WalOptions::default()).unwrap();
    // 7 h of 30 s steps ending a minute ago: three 2 h blocks and the WAL.
    let t0 = (now_ms() - 7 * 3_600_000 - 60_000) / 1000 * 1000;
    let steps = 7 * 120;
    let l = |name: &str| Labels::new([("__name__", name), ("job", "lookout")]);
    for i in 0..steps {
        let t = t0 + i * 30_000;
        st.append_histogram(&l("h"), t, lookout_hist(i)).unwrap();
        st.append(&l("f"), t, i as f64 * 0.5).unwrap();
        match (i / 60) % 2 {
            0 if i % 60 == 0 && i > 0 => st.append(&l("mixed"), t, STALE_NAN).unwrap(),
            0 => st.append(&l("mixed"), t, -(i as f64)).unwrap(),
            _ => st
                .append_histogram(&l("mixed"), t, lookout_hist(i + 7))
                .unwrap(),
        }
        if i % 120 == 119 {
            assert!(st.wait_for_head_blocks(Duration::from_secs(30)));
        }
    }
    let last = t0 + (steps - 1) * 30_000;
    assert_eq!(st.block_stats().unwrap().blocks_loaded, 3);
    let want_h = lookout_histograms(&st, "h|mixed", last);
    let want_f = common::lookout_dump(&st);
    st.close_wal();
    drop(st);
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);
    // promtool 2.42 prints a series' floats up to its first histogram: `f` whole.
    let dumped = promtool_dump(&copy);
    let f = l("f").to_string();
    assert_eq!(dumped.get(&f), want_f.get(&f));
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let prom = Prometheus::start(&cfg, &copy, &[]);
    let got = query_matrix(prom.port, r#"{job="lookout"}"#, last);
    prom.stop();
    let got_h: BTreeMap<String, Vec<Hist>> = got
        .iter()
        .filter(|(_, v)| !v.1.is_empty())
        .map(|(k, v)| (k.clone(), v.1.clone()))
        .collect();
    assert_eq!(got_h, want_h);
    // Floats too; a range selection leaves staleness markers out.
    for (k, (floats, _)) in &got {
        let mut want = want_f[k].clone();
        want.retain(|&(_, b)| !is_stale(f64::from_bits(b)));
        assert_eq!(floats, &want, "floats of {k}");
    }
    assert_eq!(got.len(), 3);
}
