//! Helpers of the crash-safety tests (`tests/crash_kill9.rs`, `tests/wal_corruption.rs`):
//! a scrape target that logs every sample it serves, `lookout evaluator` scraping it into a
//! data directory, the samples the evaluator holds, and the layout of a WAL segment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Process, client, evaluator_args, free_port, instant_query, wait_ready, write_file};

/// The metric the target serves.
pub const METRIC: &str = "crash_counter";

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The value of the `n`th sample served: a known function, not the index itself, so a
/// sample restored under the wrong timestamp cannot pass.
pub fn value_of(n: usize) -> f64 {
    n as f64 * 1.25 + 0.5
}

#[derive(Default)]
struct Log {
    served: Vec<(i64, f64)>,
}

/// A loopback target whose `/metrics` answers `crash_counter V T` with an explicit,
/// strictly increasing timestamp `T` (now, in ms) and `V = value_of(n)`; every answer is
/// logged. While frozen it answers 503, so nothing new is scraped.
pub struct CountingTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingTarget {
    /// Starts the target on a free loopback port.
    pub async fn start() -> CountingTarget {
        let log = Arc::new(Mutex::new(Log::default()));
        let frozen = Arc::new(AtomicBool::new(false));
        let (l, f) = (log.clone(), frozen.clone());
        let handler = move || {
            let (log, frozen) = (l.clone(), f.clone());
            async move {
                if frozen.load(Ordering::SeqCst) {
                    return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let t = log
                    .served
                    .last()
                    .map_or(now_ms(), |l| now_ms().max(l.0 + 1));
                let v = value_of(log.served.len());
                log.served.push((t, v));
                Ok(format!("# TYPE {METRIC} counter\n{METRIC} {v} {t}\n"))
            }
        };
        let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target");
        let addr = listener.local_addr().expect("target address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingTarget {
            addr,
            log,
            frozen,
            task,
        }
    }

    /// Every (timestamp in ms, value) served so far, oldest first.
    pub fn served(&self) -> Vec<(i64, f64)> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.served.clone()
    }

    /// Stops (or resumes) serving samples.
    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

impl Drop for CountingTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes `dir/evaluator.yml`: scrape `target` every `interval_ms`, no rules.
pub fn write_scrape_config(dir: &Path, target: SocketAddr, interval_ms: u64) {
    let config = format!(
        "global:\n  scrape_interval: {interval_ms}ms\n  scrape_timeout: {interval_ms}ms\n\
         scrape_configs:\n  - job_name: crash\n    static_configs:\n      - targets: ['{target}']\n"
    );
    write_file(dir, "evaluator.yml", &config);
}

/// A running `lookout evaluator` in embedded mode and its base URL.
pub struct Evaluator {
    /// The process (its log is `dir/evaluator.log`, appended by every start).
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Evaluator {
    /// Starts `lookout evaluator` with `dir/evaluator.yml` and data directory `data` on
    /// `port` (0: a free one); returns when it is ready.
    pub async fn start(dir: &Path, data: &Path, port: u16) -> Evaluator {
        let port = if port == 0 { free_port() } else { port };
        let base = format!("http://127.0.0.1:{port}");
        let args = evaluator_args(dir, port, &data.display().to_string());
        let process = Process::lookout("evaluator", &args, dir);
        wait_ready("lookout evaluator", &format!("{base}/-/ready")).await;
        Evaluator { process, base }
    }

    /// Every sample of [`METRIC`] it holds (the last hour), by timestamp in ms.
    pub async fn stored(&self) -> BTreeMap<i64, f64> {
        self.held(METRIC).await
    }

    /// When a scrape failed (`up` 0; a scrape that timed out after the target answered
    /// among them), by timestamp in ms, over the last hour.
    pub async fn failed_scrapes(&self) -> Vec<i64> {
        let up = self.held("up").await;
        up.into_iter()
            .filter(|&(_, v)| v == 0.0)
            .map(|(t, _)| t)
            .collect()
    }

    /// Every sample of the one series `metric` it holds (the last hour), by timestamp in ms.
    async fn held(&self, metric: &str) -> BTreeMap<i64, f64> {
        let result = instant_query(&self.base, &format!("{metric}[1h]"))
            .await
            .unwrap_or_else(|e| panic!("querying {metric}[1h]: {e}"));
        let mut out = BTreeMap::new();
        for series in &result {
            for pair in series["values"].as_array().into_iter().flatten() {
                let t = pair[0].as_f64().expect("a timestamp");
                let v: f64 = pair[1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a value");
                out.insert((t * 1000.0).round() as i64, v);
            }
        }
        out
    }

    /// The text of its `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics");
        response.text().await.expect("the /metrics body")
    }

    /// Waits (at most 10 s) until it holds at least `n` samples of [`METRIC`].
    pub async fn wait_for_samples(&self, n: usize) {
        for _ in 0..100 {
            if self.stored().await.len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the evaluator did not scrape {n} samples within 10 s");
    }
}

/// Asserts that every sample in `stored` was served with exactly that value.
pub fn assert_only_served(stored: &BTreeMap<i64, f64>, served: &[(i64, f64)]) {
    let served: BTreeMap<i64, f64> = served.iter().copied().collect();
    for (t, v) in stored {
        match served.get(t) {
            Some(s) if s.to_bits() == v.to_bits() => {}
            Some(s) => panic!("sample at {t} ms holds {v}, the target served {s}"),
            None => panic!("sample at {t} ms ({v}) was never served"),
        }
    }
}

/// The segments of WAL directory `wal`, ascending.
pub fn segments(wal: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(wal)
        .expect("read the WAL directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    out.sort();
    out
}

/// WAL page size (Prometheus's).
const PAGE: usize = 32 * 1024;
/// Fragment header: type, length (2 bytes), CRC32 (4 bytes).
const HEADER: usize = 7;

/// Offset and length (header included) of every record fragment of a WAL segment.
pub fn fragments(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < segment.len() {
        let left_in_page = PAGE - pos % PAGE;
        if left_in_page < HEADER || segment[pos] == 0 {
            pos += left_in_page;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([segment[pos + 1], segment[pos + 2]]));
        out.push((pos, HEADER + len));
        pos += HEADER + len;
    }
    out
}
