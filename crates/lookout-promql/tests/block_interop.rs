//! Lookout's blocks against Prometheus 2.42's own tools: `promtool tsdb list/analyze/dump`
//! and a Prometheus server read what Lookout wrote, and Lookout reads blocks made by
//! `promtool tsdb create-blocks-from openmetrics` and a directory Prometheus ran on.
//! Skipped (with a message) when `promtool` or `prometheus` is not installed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    assert_same, free_port, have, http_get, http_post, lookout_dump, promtool_dump, unsafe_sigterm,
};
use lookout_promql::labels::Labels;
use lookout_promql::storage::wal::WalOptions;
use lookout_promql::storage::{Storage, StorageOptions};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// 20 series × 7–9 h at 30 s ending now (Prometheus keeps recent data whatever its
/// retention), written through a directory: whole 2 h blocks are cut, the rest stays in
/// the head and the WAL.
fn lookout_dir(dir: &Path) -> BTreeMap<String, Vec<(i64, u64)>> {
    let st = Storage::open(StorageOptions::default(), dir, WalOptions::default()).unwrap();
    fill_hours(&st, 7);
    let blocks = st.block_stats().unwrap();
    assert!(blocks.blocks_loaded >= 2, "{blocks:?}");
    let want = lookout_dump(&st);
    st.close_wal();
    want
}

/// 20 series at 30 s from the 2 h boundary at or before `hours` ago up to now, then a wait
/// for the compactor thread to write the head blocks due. Starting on a boundary makes every
/// block a whole 2 h, whatever the time of day: Prometheus rewrites a block for its
/// tombstones only when it spans its whole range, and a first block a few seconds short of
/// 2 h once left nothing for it to rewrite.
fn fill_hours(st: &Storage, hours: i64) {
    const TWO_HOURS: i64 = 2 * 3600 * 1000;
    let now = now_ms();
    let t0 = (now - hours * 3600 * 1000).div_euclid(TWO_HOURS) * TWO_HOURS;
    for k in 0..(now - t0) / 30_000 {
        for i in 0..20 {
            let l = Labels::new([
                (
                    "__name__",
                    if i % 4 == 0 {
                        "up"
                    } else {
                        "http_requests_total"
                    },
                ),
                ("instance", &format!("host{i}:9100")),
                ("code", if i % 2 == 0 { "200" } else { "500" }),
            ]);
            let v = if i % 3 == 0 {
                (k * i) as f64
            } else {
                (k as f64 * 0.1).sin()
            };
            st.append(&l, t0 + k * 30_000, v).unwrap();
        }
    }
    assert!(
        st.wait_for_head_blocks(Duration::from_secs(30)),
        "head blocks not written"
    );
}

/// Options that keep blocks as they are found (reading tests: no leveled compaction).
fn no_compaction() -> StorageOptions {
    StorageOptions {
        max_block_duration: Duration::from_secs(2 * 3600),
        ..Default::default()
    }
}

/// `(ULID, minTime, maxTime, level)` of the blocks in `dir`, sorted by `minTime`.
fn block_metas(dir: &Path) -> Vec<(String, i64, i64, u64)> {
    let mut out: Vec<_> = read_metas(dir)
        .into_iter()
        .map(|m| {
            (
                m["ulid"].as_str().unwrap().to_string(),
                m["minTime"].as_i64().unwrap(),
                m["maxTime"].as_i64().unwrap(),
                m["compaction"]["level"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|m| m.1);
    out
}

/// The `meta.json` of every block in `dir`, each read once: polled while Prometheus
/// compacts, a block listed may be gone a moment later (it is then left out, as a block
/// not yet written is).
fn read_metas(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let Ok(text) = std::fs::read_to_string(p.join("meta.json")) else {
            continue;
        };
        out.push(serde_json::from_str(&text).unwrap());
    }
    out
}

#[test]
fn promtool_lists_and_dumps_a_compacted_directory() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let st = Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
    fill_hours(&st, 13);
    st.compact_blocks();
    let want = lookout_dump(&st);
    st.close_wal();
    drop(st);
    let metas = block_metas(dir.path());
    assert!(metas.iter().any(|m| m.3 >= 2), "{metas:?}");
    let list = promtool(&["tsdb", "list"], dir.path());
    assert_eq!(list.lines().count(), metas.len() + 1, "{list}");
    for m in &metas {
        assert!(list.contains(&m.0), "{} missing from {list}", m.0);
    }
    assert_same(&promtool_dump(dir.path()), &want);
    let st = Storage::open(no_compaction(), dir.path(), WalOptions::default()).unwrap();
    assert_same(&lookout_dump(&st), &want);
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn promtool_lists_analyzes_and_dumps_lookout_blocks() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let want = lookout_dir(dir.path());
    let list = promtool(&["tsdb", "list"], dir.path());
    let blocks = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().len() == 26)
        .count();
    assert!(blocks >= 2);
    assert_eq!(list.lines().count(), blocks + 1, "{list}");
    promtool(&["tsdb", "analyze"], dir.path());
    assert_same(&promtool_dump(dir.path()), &want);
}

/// A running Prometheus: stopped with SIGTERM by [`Prometheus::stop`], killed if a failed
/// assertion drops it first (so no server outlives its test).
struct Prometheus(Child);

impl Prometheus {
    /// SIGTERM, then waits for it to exit (it writes its head and closes its blocks).
    fn stop(mut self) {
        unsafe_sigterm(self.0.id());
        self.0.wait().unwrap();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Nothing to do after `stop` (the child has been waited for).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus on `data`, waits until it is ready.
fn start_prometheus(data: &Path, port: u16) -> Prometheus {
    start_prometheus_with(data, port, &[])
}

/// [`start_prometheus`] with more flags.
fn start_prometheus_with(data: &Path, port: u16, flags: &[&str]) -> Prometheus {
    let cfg = data.parent().unwrap().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let child = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=100y")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while http_get(port, "/-/ready").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prometheus did not get ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// The raw samples Prometheus answers for `selector[10h]` at `at_ms`, as a dump: every
/// sample [`fill_hours`] writes for up to 7 hours (it starts up to 2 h earlier).
fn prometheus_samples(port: u16, selector: &str, at_ms: i64) -> BTreeMap<String, Vec<(i64, u64)>> {
    let q: String = format!("{selector}[10h]")
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let path = format!(
        "/api/v1/query?query={q}&time={}.{:03}",
        at_ms / 1000,
        at_ms % 1000
    );
    let body = http_get(port, &path).expect("query answered");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = BTreeMap::new();
    for s in v["data"]["result"].as_array().unwrap() {
        let pairs: Vec<(String, String)> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let samples = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap() * 1000.0).round() as i64;
                let v: f64 = p[1].as_str().unwrap().parse().unwrap();
                (t, v.to_bits())
            })
            .collect();
        out.insert(Labels::new(pairs).to_string(), samples);
    }
    out
}

#[test]
fn prometheus_serves_lookout_blocks() {
    if !have("prometheus") {
        eprintln!("SKIPPED: prometheus not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let want = lookout_dir(&data);
    std::fs::remove_file(data.join("lock")).ok();
    let port = free_port();
    let child = start_prometheus(&data, port);
    let at = now_ms();
    let got = prometheus_samples(port, "{__name__=~\"up|http_requests_total\"}", at);
    let series = http_get(
        port,
        "/api/v1/series?match%5B%5D=%7B__name__%3D~%22.%2B%22%7D&start=0",
    )
    .expect("series answered");
    child.stop();
    let want: BTreeMap<String, Vec<(i64, u64)>> = want
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.into_iter()
                    .filter(|s| s.0 > at - 10 * 3600 * 1000)
                    .collect(),
            )
        })
        .collect();
    assert_same(&got, &want);
    let n = serde_json::from_str::<serde_json::Value>(&series).unwrap()["data"]
        .as_array()
        .unwrap()
        .len();
    assert!(n >= want.len(), "{n} series listed");
}

/// `DIR/data`, made by `promtool tsdb create-blocks-from openmetrics` from
/// [`openmetrics`].
fn backfilled(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    backfill(dir, &data, 0);
    data
}

/// Runs `promtool tsdb create-blocks-from openmetrics` into `data` on [`openmetrics`]
/// shifted by `shift_s` seconds.
fn backfill(dir: &Path, data: &Path, shift_s: i64) {
    let file = dir.join("data.om");
    openmetrics(&file, shift_s);
    create_blocks_from(&file, data);
}

/// `promtool tsdb create-blocks-from openmetrics FILE DATA`, which must succeed.
fn create_blocks_from(file: &Path, data: &Path) {
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(file)
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OpenMetrics file of 6 series × 5 h at 15 s ending two hours ago.
fn openmetrics(path: &Path, shift_s: i64) {
    let t0 = now_ms() / 1000 - 7 * 3600 + shift_s;
    let mut s = String::from("# TYPE backfilled gauge\n");
    for k in 0..(5 * 240) {
        for i in 0..6 {
            let v = if i % 2 == 0 {
                (k * i) as f64
            } else {
                (k as f64 * 0.7).cos()
            };
            s.push_str(&format!(
                "backfilled{{series=\"{i}\"}} {v} {}\n",
                t0 + k * 15
            ));
        }
    }
    s.push_str("# EOF\n");
    std::fs::write(path, s).unwrap();
}

#[test]
fn lookout_reads_blocks_made_by_promtool() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = backfilled(dir.path());
    // `promtool tsdb dump` wants a WAL directory, which create-blocks-from does not make.
    std::fs::create_dir_all(data.join("wal")).unwrap();
    let want = promtool_dump(&data);
    assert_eq!(want.len(), 6);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 6 * 5 * 240);
    let st = Storage::open(no_compaction(), &data, WalOptions::default()).unwrap();
    assert!(st.block_stats().unwrap().blocks_loaded >= 2);
    assert_same(&lookout_dump(&st), &want);
}

/// Timestamps whose delta-of-delta is exactly +2^13, +2^16 or +2^19 ms: the top of each
/// narrow width of the XOR encoding, which Prometheus writes in that width. Lookout's readers
/// once read them as negative, shifting every later timestamp of the chunk.
#[test]
fn lookout_reads_the_widest_delta_of_deltas_promtool_writes() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (file, data) = (dir.path().join("edge.om"), dir.path().join("data"));
    let t0 = (now_ms() / 1000 - 7 * 3600) * 1000;
    let mut om = String::from("# TYPE edge gauge\n");
    for (case, late) in [8_192i64, 65_536, 524_288].into_iter().enumerate() {
        let mut t = t0;
        for k in 0..100 {
            // Every tenth sample comes `late` ms late: its delta-of-delta is +late, the
            // next one's -late.
            t += if k % 10 == 5 { 15_000 + late } else { 15_000 };
            om.push_str(&format!(
                "edge{{case=\"{case}\"}} {k} {}.{:03}\n",
                t / 1000,
                t % 1000
            ));
        }
    }
    om.push_str("# EOF\n");
    std::fs::write(&file, om).unwrap();
    create_blocks_from(&file, &data);
    std::fs::create_dir_all(data.join("wal")).unwrap();
    let want = promtool_dump(&data);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 300);
    let st = Storage::open(no_compaction(), &data, WalOptions::default()).unwrap();
    assert_same(&lookout_dump(&st), &want);
}

#[test]
fn lookout_compacts_overlapping_blocks_made_by_promtool() {
    if !have("promtool") {
        eprintln!("SKIPPED: promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Twice into one directory, 7 s apart: every block overlaps another.
    backfill(dir.path(), &data, 0);
    backfill(dir.path(), &data, 7);
    std::fs::create_dir_all(data.join("wal")).unwrap();
    let before = block_metas(&data);
    let overlap = before.windows(2).any(|w| w[1].1 < w[0].2);
    assert!(overlap, "{before:?}");
    let want = promtool_dump(&data);
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 2 * 6 * 5 * 240);
    let st = Storage::open(no_compaction(), &data, WalOptions::default()).unwrap();
    assert_same(&lookout_dump(&st), &want);
    // The compactor started at open may have merged them already; this waits for it.
    st.compact_blocks();
    assert!(st.block_stats().unwrap().compactions >= 1);
    assert_same(&lookout_dump(&st), &want);
    st.close_wal();
    drop(st);
    let after = block_metas(&data);
    assert!(after.windows(2).all(|w| w[1].1 >= w[0].2), "{after:?}");
    assert!(after.len() < before.len(), "{before:?} → {after:?}");
    assert_same(&promtool_dump(&data), &want);
}

#[test]
fn lookout_reads_a_directory_prometheus_ran_on() {
    if !have("promtool") || !have("prometheus") {
        eprintln!("SKIPPED: prometheus or promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = backfilled(dir.path());
    let port = free_port();
    let child = start_prometheus(&data, port);
    std::thread::sleep(Duration::from_secs(2));
    child.stop();
    let want = promtool_dump(&data);
    let st = Storage::open(no_compaction(), &data, WalOptions::default()).unwrap();
    assert!(st.block_stats().unwrap().blocks_loaded >= 2);
    assert_same(&lookout_dump(&st), &want);
}

/// `(minTime, maxTime, level, numTombstones)` of the blocks in `dir`, sorted.
fn block_shapes(dir: &Path) -> Vec<(i64, i64, u64, u64)> {
    let mut out: Vec<_> = read_metas(dir)
        .into_iter()
        .map(|m| {
            (
                m["minTime"].as_i64().unwrap(),
                m["maxTime"].as_i64().unwrap(),
                m["compaction"]["level"].as_u64().unwrap(),
                m["stats"]["numTombstones"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    out.sort();
    out
}

/// Prometheus 2.42 deletes series through its admin API, which leaves tombstones in the
/// blocks (here Lookout's own 2 h blocks, without their WAL). On two copies of that
/// directory, Prometheus and Lookout (2 h blocks only, so that nothing else is compacted)
/// rewrite the same blocks without the deleted data, and both directories then hold what
/// Prometheus answered after the deletion.
#[test]
fn lookout_rewrites_blocks_with_tombstones_as_prometheus_does() {
    if !have("promtool") || !have("prometheus") {
        eprintln!("SKIPPED: prometheus or promtool not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    lookout_dir(&data);
    std::fs::remove_dir_all(data.join("wal")).unwrap();
    std::fs::remove_file(data.join("lock")).ok();
    let two_hours = [
        "--web.enable-admin-api",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h",
    ];
    let port = free_port();
    let child = start_prometheus_with(&data, port, &two_hours);
    // Two of 20 series everywhere (over 5 % of the series of every block), a third for
    // an hour.
    let hour_ago = now_ms() / 1000 - 3600;
    for path in [
        "/api/v1/admin/tsdb/delete_series?match[]=%7Binstance%3D~%22host%281%7C3%29%3A9100%22%7D"
            .to_string(),
        format!(
            "/api/v1/admin/tsdb/delete_series?match[]=%7Binstance%3D%22host2%3A9100%22%7D&start={}&end={}",
            hour_ago - 5 * 3600,
            hour_ago - 4 * 3600
        ),
    ] {
        http_post(port, &path, "204").expect("delete_series answered 204");
    }
    let want = prometheus_samples(port, "{__name__=~\"up|http_requests_total\"}", now_ms());
    child.stop();
    assert_eq!(want.len(), 18, "two series are gone");
    let before = block_shapes(&data);
    assert!(before.iter().all(|b| b.3 >= 2), "{before:?}");

    let (theirs, ours) = (dir.path().join("theirs"), dir.path().join("ours"));
    for to in [&theirs, &ours] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(&data)
            .arg(to)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // Prometheus compacts a minute after it starts.
    let child = start_prometheus_with(&theirs, free_port(), &two_hours);
    let st = Storage::open(no_compaction(), &ours, WalOptions::default()).unwrap();
    st.compact_blocks();
    assert_same(&lookout_dump(&st), &want);
    st.close_wal();
    drop(st);
    let start = Instant::now();
    while block_shapes(&theirs).iter().all(|b| b.2 == 1) {
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "Prometheus rewrote no block: {:?}",
            block_shapes(&theirs)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let a second rewrite, if Prometheus plans one, happen too.
    std::thread::sleep(Duration::from_secs(2));
    child.stop();
    let (theirs_after, ours_after) = (block_shapes(&theirs), block_shapes(&ours));
    eprintln!("blocks before {before:?}, after {ours_after:?}");
    assert_eq!(ours_after, theirs_after, "blocks before: {before:?}");
    assert_ne!(ours_after, before);
    assert_same(&promtool_dump(&ours), &want);
    assert_same(&promtool_dump(&theirs), &want);
}

/// Figures, not a check: bytes per sample in blocks and in the WAL, and the time to write
/// one 2 h block. `BLOCK_FIGURES_SERIES` series (default 2,000) × 2 h at 15 s.
#[test]
#[ignore = "figures: cargo test --release --test block_interop -- --ignored --nocapture"]
fn block_figures() {
    let n: usize = std::env::var("BLOCK_FIGURES_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let st = Storage::open(StorageOptions::default(), dir.path(), WalOptions::default()).unwrap();
    let t0 = (now_ms() / 7_200_000 - 2) * 7_200_000;
    let labels: Vec<Labels> = (0..n)
        .map(|i| {
            Labels::new([
                ("__name__", format!("metric_{}", i % 50)),
                ("instance", format!("host{}:9100", i / 50)),
            ])
        })
        .collect();
    for k in 0..481i64 {
        for (i, l) in labels.iter().enumerate() {
            let v = match i % 3 {
                0 => (k * (i as i64 % 7)) as f64,
                1 => (k as f64 * 0.01 + i as f64).sin(),
                _ => 1.0,
            };
            st.append(l, t0 + k * 15_000, v).unwrap();
        }
    }
    st.sync_wal();
    let wal = st.wal_stats().unwrap();
    let start = Instant::now();
    st.persist_head();
    let took = start.elapsed();
    let b = st.block_stats().unwrap();
    let samples = (n * 480) as f64;
    eprintln!(
        "{n} series, {} samples: block {} bytes ({:.2} B/sample) written in {took:?}; WAL {:.2} B/sample",
        n * 480,
        b.blocks_bytes,
        b.blocks_bytes as f64 / samples,
        wal.bytes_written as f64 / wal.samples_written as f64
    );
}
