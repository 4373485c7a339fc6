//! The PromQL engine benchmark (issue 3): 10,000 series of 15 s samples over 6 hours,
//! loaded into [`Storage`], and the engine timed on instant and range queries.
//!
//! The same binary writes the data set as OpenMetrics text, so Prometheus is loaded with
//! exactly the same samples (`bench/promql/run.sh` drives both sides and prints ratios).
//!
//! ```text
//! cargo bench -p lookout-promql --bench promql -- gen-openmetrics FILE
//! cargo bench -p lookout-promql --bench promql -- run [REPS [PROMETHEUS_HOST:PORT]]
//! cargo bench -p lookout-promql --bench promql -- profile QUERY instant|range N
//! cargo bench -p lookout-promql --bench promql -- write-blocks DIR
//! ```
//!
//! `write-blocks` appends the data set to a [`Storage`] opened on `DIR` (WAL included) and
//! persists the head as 2 h blocks, as the embedded evaluator does: bench/tsdb/run.sh
//! compares their size with the blocks promtool makes from `gen-openmetrics`'s file.
//!
//! With a Prometheus address, each query is also sent to that Prometheus, turn about with
//! Lookout's run of it, so that both sides see the same load on a shared machine.
//!
//! `run` prints one JSON object per line: first the load and memory figures, then per
//! query its median time and a fingerprint of the result (series count and sum of all
//! values) that the script compares with Prometheus's answer.

#[path = "support/common.rs"]
mod common;

use common::Rng;
use std::io::{BufWriter, Write};
use std::time::Instant;

use lookout_promql::Labels;
use lookout_promql::engine::{Engine, Value};
use lookout_promql::storage::{Queryable, Storage, StorageOptions};
use promql_parser::label::{MatchOp, Matcher};

/// 2026-01-01T00:00:00Z: start of the data.
const START_MS: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 15_000;
/// Six hours of 15 s samples, 00:00:00 to 05:59:45, so Prometheus's importer cuts exactly
/// three 2 h blocks.
const POINTS: i64 = 6 * 240;
/// Time of the last sample.
const LAST_MS: i64 = START_MS + (POINTS - 1) * STEP_MS;
/// Evaluation time of the instant queries and end of the range queries: 7.5 s after the
/// last sample, between scrapes, so that no sample sits on a window boundary. Prometheus
/// 2.42 closes range windows on the left (`[t-5m, t]`) where Prometheus 3, like Lookout,
/// leaves them open (`(t-5m, t]`); off the sample grid both give the same answers and the
/// results can be compared.
const END_MS: i64 = LAST_MS + 7_500;

const JOBS: usize = 10;
/// `x` instances per job: 10 × 500 = 5,000 counters.
const X_INSTANCES: usize = 500;
/// `h_bucket` instances per job: 10 × 45 × 10 buckets = 4,500 series.
const H_INSTANCES: usize = 45;
const LES: [&str; 10] = [
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];
/// `x_info{instance, team}`: one per instance, 500 series.
const TEAMS: usize = 20;

/// The queries of the issue, each run as an instant query at the end of the data and as a
/// range query over its last hour at a 1 m step.
pub const QUERIES: [&str; 5] = [
    "rate(x[5m])",
    "sum by (job) (rate(x[5m]))",
    "histogram_quantile(0.99, sum by (le, job) (rate(h_bucket[5m])))",
    "topk(10, rate(x[5m]))",
    "rate(x[5m]) * on(instance) group_left(team) x_info",
];

/// How one series' values evolve.
enum Kind {
    /// Counter with increments in 0..100.
    Counter,
    /// Cumulative histogram bucket: the increment of bucket `k` of a group is the group's
    /// increment for bucket `k - 1` plus 0..5, so buckets stay monotonic in `le`.
    Bucket { group: usize, k: usize },
    /// Constant 1.
    Info,
}

struct Gen {
    series: Vec<(Labels, Kind, Rng, f64)>,
    /// Per histogram group: the running increment while walking its buckets in `le` order.
    group_inc: Vec<f64>,
}

impl Gen {
    fn new() -> Gen {
        let mut series = Vec::new();
        let mut seed = 1u64;
        let mut push = |labels: Labels, kind: Kind, series: &mut Vec<_>| {
            let mut rng = Rng::new(seed);
            seed += 1;
            let start = match kind {
                Kind::Counter => (rng.next() % 100_000) as f64,
                Kind::Bucket { .. } => 0.0,
                Kind::Info => 1.0,
            };
            series.push((labels, kind, rng, start));
        };
        for j in 0..JOBS {
            for i in 0..X_INSTANCES {
                let l = Labels::new([
                    ("__name__", "x".to_string()),
                    ("job", format!("job-{j}")),
                    ("instance", format!("host-{i}:9100")),
                ]);
                push(l, Kind::Counter, &mut series);
            }
        }
        let mut group = 0;
        for j in 0..JOBS {
            for i in 0..H_INSTANCES {
                for (k, le) in LES.iter().enumerate() {
                    let l = Labels::new([
                        ("__name__", "h_bucket".to_string()),
                        ("job", format!("job-{j}")),
                        ("instance", format!("host-{i}:9100")),
                        ("le", le.to_string()),
                    ]);
                    push(l, Kind::Bucket { group, k }, &mut series);
                }
                group += 1;
            }
        }
        for i in 0..X_INSTANCES {
            let l = Labels::new([
                ("__name__", "x_info".to_string()),
                ("instance", format!("host-{i}:9100")),
                ("team", format!("team-{}", i % TEAMS)),
            ]);
            push(l, Kind::Info, &mut series);
        }
        Gen {
            series,
            group_inc: vec![0.0; group],
        }
    }

    /// Advances every series by one step and calls `f` with each (series index, value).
    /// Step 0 yields the start values.
    fn step(&mut self, first: bool, mut f: impl FnMut(usize, f64)) {
        for (idx, (_, kind, rng, v)) in self.series.iter_mut().enumerate() {
            if !first {
                match kind {
                    Kind::Counter => *v += (rng.next() % 100) as f64,
                    Kind::Bucket { group, k } => {
                        let inc = &mut self.group_inc[*group];
                        if *k == 0 {
                            *inc = 0.0;
                        }
                        *inc += (rng.next() % 5) as f64;
                        *v += *inc;
                    }
                    Kind::Info => {}
                }
            }
            f(idx, *v);
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// OpenMetrics exposition of the whole data set, time step by time step.
fn gen_openmetrics(path: &str) -> std::io::Result<()> {
    let mut data = Gen::new();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    // Render each series' label part once.
    let heads: Vec<String> = data
        .series
        .iter()
        .map(|(l, _, _, _)| {
            let mut s = l.metric_name().unwrap_or_default().to_string();
            s.push('{');
            let pairs: Vec<String> = l
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            s.push_str(&pairs.join(","));
            s.push('}');
            s
        })
        .collect();
    let mut err = Ok(());
    for p in 0..POINTS {
        let t = START_MS + p * STEP_MS;
        data.step(p == 0, |idx, v| {
            if err.is_ok() {
                err = writeln!(out, "{} {} {}.{:03}", heads[idx], v, t / 1000, t % 1000);
            }
        });
        err.as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    }
    writeln!(out, "# EOF")?;
    out.flush()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Series count and sum of all values (NaN skipped) of a result.
fn fingerprint(v: &Value) -> (usize, f64) {
    let sum = |it: &mut dyn Iterator<Item = f64>| it.filter(|f| !f.is_nan()).sum::<f64>();
    match v {
        Value::Vector(vec) => (vec.len(), sum(&mut vec.iter().map(|s| s.f))),
        Value::Matrix(m) => (
            m.len(),
            sum(&mut m.iter().flat_map(|s| s.floats.iter().map(|p| p.f))),
        ),
        Value::Scalar { v, .. } => (1, *v),
        Value::String { .. } => (1, 0.0),
    }
}

/// One query's answer from Prometheus.
struct PromAnswer {
    /// Prometheus's own engine time (`stats=all` → `timings.execTotalTime`): parsing,
    /// preparation, evaluation and sorting, without HTTP and JSON encoding.
    exec_ms: f64,
    /// The HTTP round trip, JSON decoding here excluded.
    wall_ms: f64,
    series: usize,
    sum: f64,
}

/// Percent-encodes a query-string value.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `q` on the Prometheus at `addr` (host:port) as an instant query at [`END_MS`] or a
/// range query over its last hour, over plain HTTP/1.0 on loopback.
fn prometheus_query(addr: &str, q: &str, range: bool) -> Result<PromAnswer, String> {
    use std::io::Read;
    let secs = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let path = if range {
        format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=60&stats=all",
            url_encode(q),
            secs(END_MS - 3_600_000),
            secs(END_MS)
        )
    } else {
        format!(
            "/api/v1/query?query={}&time={}&stats=all",
            url_encode(q),
            secs(END_MS)
        )
    };
    let t0 = Instant::now();
    let mut conn =
        std::net::TcpStream::connect(addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let body_at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP body from {addr}"))?;
    let doc: serde_json::Value = serde_json::from_slice(&resp[body_at + 4..])
        .map_err(|e| format!("Prometheus answer to {q}: {e}"))?;
    if doc["status"] != "success" {
        return Err(format!("Prometheus failed {q}: {doc}"));
    }
    let data = &doc["data"];
    let exec_ms = data["stats"]["timings"]["execTotalTime"]
        .as_f64()
        .ok_or_else(|| format!("no stats in Prometheus's answer to {q}"))?
        * 1e3;
    let result = data["result"].as_array().cloned().unwrap_or_default();
    let mut sum = 0.0;
    for s in &result {
        let points: Vec<&serde_json::Value> = match s.get("values").and_then(|v| v.as_array()) {
            Some(vals) => vals.iter().collect(),
            None => s.get("value").into_iter().collect(),
        };
        for p in points {
            let f: f64 = p[1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            if !f.is_nan() {
                sum += f;
            }
        }
    }
    Ok(PromAnswer {
        exec_ms,
        wall_ms,
        series: result.len(),
        sum,
    })
}

/// The whole data set in a new [`Storage`], and the number of samples appended.
fn load_storage() -> Result<(Storage, u64), String> {
    let storage = Storage::new(StorageOptions::default());
    let mut data = Gen::new();
    let labels: Vec<Labels> = data.series.iter().map(|s| s.0.clone()).collect();
    let mut samples = 0u64;
    for p in 0..POINTS {
        let t = START_MS + p * STEP_MS;
        let mut failed = None;
        data.step(p == 0, |idx, v| {
            if let Err(e) = storage.append(&labels[idx], t, v) {
                failed = Some(e.to_string());
            }
            samples += 1;
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok((storage, samples))
}

/// Runs one query as an instant query at the end of the data or as the range query of
/// `run`, as the same `Engine` call `run` times.
fn query_once(engine: &Engine, storage: &Storage, q: &str, range: bool) -> Result<Value, String> {
    if range {
        engine
            .range_query(storage, q, END_MS - 3_600_000, END_MS, 60_000)
            .map(Value::Matrix)
    } else {
        engine.instant_query(storage, q, END_MS)
    }
    .map_err(|e| format!("{q}: {e}"))
}

/// `profile QUERY instant|range N`: loads the data, then runs one query `N` times and
/// prints its median, so a profiler (`perf record`, callgrind) sees mostly that query.
fn profile(q: &str, kind: &str, n: usize) -> Result<(), String> {
    let range = match kind {
        "instant" => false,
        "range" => true,
        other => {
            return Err(format!(
                "unknown query kind {other:?}: use instant or range"
            ));
        }
    };
    let (storage, _) = load_storage()?;
    let engine = Engine::default();
    let mut times = Vec::with_capacity(n);
    let mut fp = (0, 0.0);
    for _ in 0..n.max(1) {
        let t0 = Instant::now();
        let v = query_once(&engine, &storage, q, range)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        fp = fingerprint(&v);
    }
    println!(
        "{{\"kind\":\"profile\",\"query\":{q:?},\"range\":{range},\"runs\":{},\"median_ms\":{:.3},\"series\":{},\"sum\":{:e}}}",
        times.len(),
        median(times),
        fp.0,
        fp.1
    );
    Ok(())
}

fn run(reps: usize, prom: Option<&str>) -> Result<(), String> {
    let rss_before = rss_bytes();
    let load = Instant::now();
    let (storage, samples) = load_storage()?;
    let load_s = load.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let st = storage.stats();
    println!(
        "{{\"kind\":\"load\",\"series\":{},\"samples\":{},\"load_seconds\":{:.3},\"chunk_bytes\":{},\"index_bytes\":{},\"bytes_per_sample\":{:.4},\"bytes_per_series\":{:.1},\"rss_delta_bytes\":{}}}",
        st.series,
        samples,
        load_s,
        st.chunk_bytes,
        st.index_bytes,
        st.bytes_per_sample,
        st.bytes_per_series,
        rss_after.saturating_sub(rss_before),
    );
    // Storage alone: the selections the queries make (instant: 5 m; range: 1 h + 5 m).
    for (name, sel) in [("x", "x"), ("h_bucket", "h_bucket")] {
        let matchers = [Matcher::new(MatchOp::Equal, "__name__", sel)];
        for window in [300_000, 3_900_000] {
            let mut times = Vec::with_capacity(reps);
            let mut n = 0;
            for rep in 0..=reps {
                let t0 = Instant::now();
                let got = storage.select(&matchers, END_MS - window, END_MS);
                let el = t0.elapsed().as_secs_f64() * 1e3;
                if rep > 0 {
                    times.push(el);
                }
                n = got.iter().map(|s| s.samples.len()).sum::<usize>();
            }
            println!(
                "{{\"kind\":\"select\",\"selector\":\"{name}\",\"window_s\":{},\"median_ms\":{:.3},\"samples\":{n}}}",
                window / 1000,
                median(times)
            );
        }
    }
    let engine = Engine::default();
    for q in QUERIES {
        for range in [false, true] {
            let mut times = Vec::with_capacity(reps);
            let mut prom_exec = Vec::with_capacity(reps);
            let mut prom_wall = Vec::with_capacity(reps);
            let mut fp = (0, 0.0);
            let mut prom_fp = (0, 0.0);
            // Lookout and Prometheus take turns, so both see the same background load.
            for rep in 0..=reps {
                let t0 = Instant::now();
                let v = query_once(&engine, &storage, q, range)?;
                let el = t0.elapsed().as_secs_f64() * 1e3;
                fp = fingerprint(&v);
                drop(v);
                // On a thread of its own: its HTTP buffers and JSON tree are allocated in
                // another allocator arena, so they do not reshape the heap Lookout's next
                // run allocates from (Prometheus's side runs in a process of its own).
                let prom = match prom {
                    Some(addr) => Some(
                        std::thread::scope(|s| s.spawn(|| prometheus_query(addr, q, range)).join())
                            .map_err(|_| format!("{q}: the Prometheus query thread panicked"))??,
                    ),
                    None => None,
                };
                // The first run warms up and is not timed.
                if rep > 0 {
                    times.push(el);
                    if let Some(p) = &prom {
                        prom_exec.push(p.exec_ms);
                        prom_wall.push(p.wall_ms);
                    }
                }
                if let Some(p) = prom {
                    prom_fp = (p.series, p.sum);
                }
            }
            let prom_part = if prom.is_some() {
                format!(
                    ",\"prom_exec_ms\":{:.3},\"prom_wall_ms\":{:.3},\"prom_series\":{},\"prom_sum\":{:e}",
                    median(prom_exec),
                    median(prom_wall),
                    prom_fp.0,
                    prom_fp.1
                )
            } else {
                String::new()
            };
            println!(
                "{{\"kind\":\"{}\",\"query\":{:?},\"median_ms\":{:.3},\"series\":{},\"sum\":{:e}{prom_part}}}",
                if range { "range" } else { "instant" },
                q,
                median(times),
                fp.0,
                fp.1
            );
        }
    }
    println!(
        "{{\"kind\":\"meta\",\"start_ms\":{START_MS},\"end_ms\":{END_MS},\"range_start_ms\":{},\"step_ms\":60000}}",
        END_MS - 3_600_000
    );
    Ok(())
}

/// The data set appended to a [`Storage`] on `dir` with its WAL, then every full 2 h range
/// persisted as a block (the last range stays in the head, as in the evaluator). The
/// compactor thread cuts blocks while the data is appended, once the head spans 1.5
/// ranges, so the append time does not include their writing (it runs beside it) and
/// `persist_head` writes what the thread has not written yet.
fn write_blocks(dir: &str) -> Result<(), String> {
    let storage = common::open_storage(dir)?;
    let mut data = Gen::new();
    let labels: Vec<Labels> = data.series.iter().map(|s| s.0.clone()).collect();
    let start = Instant::now();
    let mut failed = None;
    for p in 0..POINTS {
        let t = START_MS + p * STEP_MS;
        data.step(p == 0, |idx, v| {
            if let Err(e) = storage.append(&labels[idx], t, v) {
                failed.get_or_insert(e.to_string());
            }
        });
    }
    if let Some(e) = failed {
        return Err(e);
    }
    storage.sync_wal();
    let appended = start.elapsed();
    let start = Instant::now();
    storage.persist_head();
    let persisted = start.elapsed();
    let b = storage
        .block_stats()
        .ok_or("the storage has no blocks directory")?;
    println!(
        "{{\"kind\":\"write-blocks\",\"blocks\":{},\"blocks_bytes\":{},\"append_seconds\":{:.3},\"persist_seconds\":{:.3}}}",
        b.blocks_loaded,
        b.blocks_bytes,
        appended.as_secs_f64(),
        persisted.as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args = common::args();
    let result = match args.first().map(String::as_str) {
        Some("gen-openmetrics") => match args.get(1) {
            Some(path) => gen_openmetrics(path).map_err(|e| format!("writing {path}: {e}")),
            None => Err("usage: gen-openmetrics FILE".to_string()),
        },
        Some("run") | None => {
            let reps = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
            run(reps, args.get(2).map(String::as_str))
        }
        Some("profile") => match (args.get(1), args.get(2), args.get(3)) {
            (Some(q), Some(kind), Some(n)) => match n.parse() {
                Ok(n) => profile(q, kind, n),
                Err(_) => Err(format!("profile: {n:?} is not a number of runs")),
            },
            _ => Err("usage: profile QUERY instant|range N".to_string()),
        },
        Some("write-blocks") => match args.get(1) {
            Some(dir) => write_blocks(dir),
            None => Err("usage: write-blocks DIR".to_string()),
        },
        Some(other) => Err(format!(
            "unknown command {other:?}: use gen-openmetrics FILE, run [REPS [HOST:PORT]], profile QUERY instant|range N or write-blocks DIR"
        )),
    };
    if let Err(e) = result {
        eprintln!("promql bench: {e}");
        std::process::exit(1);
    }
}
