//! Scraping native histograms side by side with Debian's real `prometheus` (2.42).
//!
//! One loopback target serves, in the protobuf exposition when asked for it first and in
//! Prometheus text otherwise:
//! * `lookout_nh_seconds{path="a"}`: a native histogram with classic buckets beside it,
//!   whose counts grow, gain a new bucket and then reset, with explicit timestamps on a
//!   2-second grid (so that both scrapers store the same samples at the same times);
//! * `lookout_nh_seconds{path="b"}`: a constant native histogram without a timestamp that
//!   disappears a few seconds in (both must mark it stale);
//! * `lookout_classic_seconds`: a classic histogram only.
//!
//! Prometheus with `--enable-feature=native-histograms` scrapes it as job `nh`; Lookout's
//! job `nh` has `scrape_native_histograms: true`. Prometheus 2.42 has no
//! `always_scrape_classic_histograms`, so a second Prometheus without the feature (which
//! asks for text and stores the classic series) scrapes it as job `nh_classic`, beside
//! Lookout's job `nh_classic` with `always_scrape_classic_histograms: true`. Queries over
//! both HTTP APIs at the same evaluation times, between the samples' timestamps, must
//! answer the same: `histogram_count`, `histogram_sum`, `histogram_quantile` at several φ
//! and `histogram_fraction`, instant and over `rate`, the classic series, and the scrape
//! report series.

#[path = "../../lookout-promql/tests/common/nh_exposition.rs"]
mod nh_exposition;
#[path = "../../lookout-promql/tests/common/peer.rs"]
mod peer;
mod scrape_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use lookout_evaluator::scrape::ScrapeManager;
use lookout_evaluator::scrape_config::{ScrapeConfig, ScrapeDefaults};
use lookout_evaluator::web::{WebState, shared_registry};
use lookout_promql::protowire::{put_bytes, put_double, put_sint, put_uint, put_varint};
use lookout_promql::storage::{Storage, StorageOptions};
use nh_exposition::{PROTOBUF, put_buckets};
use prometheus_client::registry::Registry;
use scrape_support::{serve_loopback, start_prometheus_config_with, unix};

/// The grid of the explicit timestamps.
const STEP_MS: i64 = 2_000;
/// Step from which `path="a"` has a fifth bucket.
const NEW_BUCKET: i64 = 4;
/// Step at which `path="a"` and the classic histogram reset.
const RESET: i64 = 8;
/// Step from which `path="b"` is gone.
const GONE: i64 = 6;
/// Steps the test runs for.
const STEPS: i64 = 13;

/// Sparse buckets: `(index, count)`.
type Buckets = [(i32, u64)];
/// Zero count, negative and positive buckets, sum.
type NativeCounts = (u64, Vec<(i32, u64)>, Vec<(i32, u64)>, f64);
/// Schema, zero threshold, zero count, negative and positive buckets.
type NativeParts<'a> = (i32, f64, u64, &'a Buckets, &'a Buckets);

/// What the target serves at step `k`.
struct State {
    /// Step number of `ts`.
    k: i64,
    /// The step's timestamp (ms).
    ts: i64,
}

impl State {
    fn at(start_ms: i64) -> State {
        let now = now_ms();
        let ts = now - now.rem_euclid(STEP_MS);
        State {
            k: (ts.saturating_sub(start_ms) / STEP_MS).max(-1),
            ts,
        }
    }

    /// The counter base: grows by step, restarts at [`RESET`].
    fn base(&self) -> u64 {
        if self.k < RESET {
            self.k.max(0) as u64 + 1
        } else {
            (self.k - RESET) as u64 + 1
        }
    }

    /// `path="a"`: zero count, negative and positive buckets (schema 1), sum.
    fn a(&self) -> NativeCounts {
        let b = self.base();
        let mut positive = vec![(0, 2 * b + 1), (1, b), (3, 3 * b)];
        if self.k >= NEW_BUCKET {
            positive.push((5, b + 2));
        }
        (b, vec![(-1, b)], positive, b as f64 * 1.5)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `(le, cumulative)` classic buckets of `path="a"` (the `+Inf` one is the count).
fn a_classic(s: &State) -> (Vec<(f64, u64)>, u64) {
    let (zero, negative, positive, _) = s.a();
    let below_zero = zero + negative.iter().map(|b| b.1).sum::<u64>();
    let upto = |hi: i32| -> u64 {
        below_zero
            + positive
                .iter()
                .filter(|b| b.0 <= hi)
                .map(|b| b.1)
                .sum::<u64>()
    };
    let count = upto(i32::MAX);
    (vec![(1.0, upto(0)), (2.0, upto(2)), (4.0, upto(4))], count)
}

/// `lookout_classic_seconds`: `(le, cumulative)`, count and sum.
fn classic(s: &State) -> (Vec<(f64, u64)>, u64, f64) {
    let b = s.base();
    (
        vec![(0.1, b), (0.5, 3 * b), (2.5, 4 * b)],
        5 * b,
        b as f64 * 0.75,
    )
}

/// A `Histogram` message: count, sum, classic buckets, and the native parts if given.
fn histogram(
    count: u64,
    sum: f64,
    buckets: &[(f64, u64)],
    native: Option<NativeParts<'_>>,
) -> Vec<u8> {
    let mut h = Vec::new();
    put_uint(&mut h, 1, count);
    put_double(&mut h, 2, sum);
    for &(le, c) in buckets {
        let mut b = Vec::new();
        put_uint(&mut b, 1, c);
        put_double(&mut b, 2, le);
        put_bytes(&mut h, 3, &b);
    }
    if let Some((schema, threshold, zero, negative, positive)) = native {
        put_sint(&mut h, 5, i64::from(schema));
        put_double(&mut h, 6, threshold);
        put_uint(&mut h, 7, zero);
        put_buckets(&mut h, 9, negative);
        put_buckets(&mut h, 12, positive);
    }
    h
}

/// A `Metric` with one `path` label (if any), the histogram and a timestamp (0: none).
fn metric(path: Option<&str>, h: &[u8], ts: i64) -> Vec<u8> {
    let mut m = Vec::new();
    if let Some(path) = path {
        let mut l = Vec::new();
        put_bytes(&mut l, 1, b"path");
        put_bytes(&mut l, 2, path.as_bytes());
        put_bytes(&mut m, 1, &l);
    }
    put_bytes(&mut m, 7, h);
    if ts != 0 {
        put_uint(&mut m, 6, ts as u64);
    }
    m
}

fn family(out: &mut Vec<u8>, name: &str, metrics: &[Vec<u8>]) {
    let mut f = Vec::new();
    put_bytes(&mut f, 1, name.as_bytes());
    put_bytes(&mut f, 2, b"Native histograms for the scrape test.");
    put_uint(&mut f, 3, 4);
    for m in metrics {
        put_bytes(&mut f, 4, m);
    }
    put_varint(out, f.len() as u64);
    out.extend_from_slice(&f);
}

/// `path="b"`'s constant histogram: schema 0, buckets 1 and 2.
const B_POSITIVE: [(i32, u64); 2] = [(1, 4), (2, 2)];
const B_CLASSIC: [(f64, u64); 2] = [(2.0, 4), (4.0, 6)];

fn protobuf_body(s: &State) -> Vec<u8> {
    let (zero, negative, positive, sum) = s.a();
    let (a_buckets, a_count) = a_classic(s);
    let a = histogram(
        a_count,
        sum,
        &a_buckets,
        Some((1, 0.001, zero, &negative, &positive)),
    );
    let mut metrics = vec![metric(Some("a"), &a, s.ts)];
    if s.k < GONE {
        let b = histogram(6, 10.0, &B_CLASSIC, Some((0, 0.0, 0, &[], &B_POSITIVE)));
        metrics.push(metric(Some("b"), &b, 0));
    }
    let mut out = Vec::new();
    family(&mut out, "lookout_nh_seconds", &metrics);
    let (buckets, count, sum) = classic(s);
    let c = histogram(count, sum, &buckets, None);
    family(
        &mut out,
        "lookout_classic_seconds",
        &[metric(None, &c, s.ts)],
    );
    out
}

/// One classic histogram's lines of Prometheus text (`le` as Prometheus writes it).
fn text_histogram(
    name: &str,
    path: &str,
    buckets: &[(f64, u64)],
    count: u64,
    sum: f64,
    ts: i64,
) -> String {
    let ts = if ts == 0 {
        String::new()
    } else {
        format!(" {ts}")
    };
    let sep = if path.is_empty() { "" } else { "," };
    let mut out = String::new();
    for &(le, c) in buckets {
        out += &format!("{name}_bucket{{{path}{sep}le=\"{le:?}\"}} {c}{ts}\n");
    }
    out += &format!("{name}_bucket{{{path}{sep}le=\"+Inf\"}} {count}{ts}\n");
    out += &format!("{name}_count{{{path}}} {count}{ts}\n");
    out += &format!("{name}_sum{{{path}}} {sum:?}{ts}\n");
    out
}

/// The classic series of everything, as Prometheus text.
fn text_body(s: &State) -> String {
    let mut out = String::from("# TYPE lookout_nh_seconds histogram\n");
    let (a_buckets, a_count) = a_classic(s);
    let name = "lookout_nh_seconds";
    out += &text_histogram(name, "path=\"a\"", &a_buckets, a_count, s.a().3, s.ts);
    if s.k < GONE {
        out += &text_histogram(name, "path=\"b\"", &B_CLASSIC, 6, 10.0, 0);
    }
    out += "# TYPE lookout_classic_seconds histogram\n";
    let (buckets, count, sum) = classic(s);
    out += &text_histogram("lookout_classic_seconds", "", &buckets, count, sum, s.ts);
    out
}

/// Serves the target; its steps count from the time in `start_ms` (before it is set, every
/// sample is the first step's).
async fn serve_target(start_ms: Arc<AtomicI64>) -> String {
    serve_loopback(Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| async move {
            let s = State::at(start_ms.load(Ordering::SeqCst));
            let accept = headers
                .get("accept")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.starts_with("application/vnd.google.protobuf") {
                ([("content-type", PROTOBUF)], protobuf_body(&s))
            } else {
                let text = text_body(&s).into_bytes();
                ([("content-type", "text/plain; version=0.0.4")], text)
            }
        }),
    ))
    .await
}

use scrape_support::instant_values as query;

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Whether `a` and `b` are in the same bucket of schema 1 (`path="a"`'s): Lookout
/// interpolates quantiles within a native histogram's exponential buckets exponentially, as
/// Prometheus 3 does, where Prometheus 2.42 interpolates linearly.
/// When the rank falls exactly between two populated buckets, Prometheus 3 (counting
/// from the top for φ ≥ 0.5) answers the lower bound of the upper one, 2.42 (counting from
/// the bottom) the upper bound of the lower one: both are bucket boundaries.
fn same_bucket(a: f64, b: f64) -> bool {
    let position = |v: f64| v.abs().log2() * 2.0;
    let boundary = |v: f64| (position(v) - position(v).round()).abs() < 1e-9;
    same(a, b)
        || (a.signum() == b.signum() && position(a).ceil() == position(b).ceil())
        || (a.signum() == b.signum() && boundary(a) && boundary(b))
}

/// Asserts that `expr` answers the same on both servers at `at`; returns how many series.
async fn compare(ours: &str, theirs: &str, expr: &str, at: SystemTime) -> usize {
    let native_quantile = expr.starts_with("histogram_quantile") && expr.contains("nh_seconds{");
    let same = if native_quantile { same_bucket } else { same };
    let (a, b) = (query(ours, expr, at).await, query(theirs, expr, at).await);
    let keys = |m: &BTreeMap<String, f64>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&a), keys(&b), "{expr} at {}", unix(at));
    for (k, v) in &a {
        assert!(
            same(*v, b[k]),
            "{expr}{k} at {}: ours {v}, Prometheus {}",
            unix(at),
            b[k]
        );
    }
    a.len()
}

const SCRAPE_CONFIGS: &str = "
  - job_name: nh
    scrape_interval: 1s
    scrape_timeout: 1s
    scrape_native_histograms: true
    static_configs: [{targets: ['TARGET']}]
  - job_name: nh_classic
    scrape_interval: 1s
    scrape_timeout: 1s
    scrape_native_histograms: true
    always_scrape_classic_histograms: true
    static_configs: [{targets: ['TARGET']}]
";

fn prometheus_config(job: &str, target: &str) -> String {
    format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
}

/// The queries compared for the native histograms of `job`.
fn native_queries(job: &str) -> Vec<String> {
    let sel = format!("lookout_nh_seconds{{job=\"{job}\"}}");
    let rate = format!("rate({sel}[7500ms])");
    let mut out = Vec::new();
    for h in [sel.clone(), rate] {
        out.push(format!("histogram_count({h})"));
        out.push(format!("histogram_sum({h})"));
        for phi in ["0.1", "0.5", "0.9", "0.99"] {
            out.push(format!("histogram_quantile({phi}, {h})"));
        }
        out.push(format!("histogram_fraction(0, 2, {h})"));
        out.push(format!("histogram_fraction(-1, 0.5, {h})"));
    }
    out
}

/// The queries compared for the classic series of `job`.
fn classic_queries(job: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["lookout_nh_seconds", "lookout_classic_seconds"] {
        let m = format!("{{job=\"{job}\"}}");
        out.push(format!("{name}_bucket{m}"));
        out.push(format!("{name}_count{m}"));
        out.push(format!("{name}_sum{m}"));
        out.push(format!("rate({name}_bucket{m}[7500ms])"));
        out.push(format!(
            "histogram_quantile(0.9, rate({name}_bucket{m}[7500ms]))"
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_native_histograms_answer_as_in_prometheus() {
    if !peer::have("prometheus") {
        eprintln!("SKIPPED: prometheus is not installed (Debian package prometheus)");
        return;
    }
    let start = Arc::new(AtomicI64::new(i64::MAX));
    let target = serve_target(start.clone()).await;
    let dir_native = tempfile::tempdir().expect("temp dir");
    let dir_classic = tempfile::tempdir().expect("temp dir");
    let (_prom_native, theirs_native) = start_prometheus_config_with(
        dir_native.path(),
        &prometheus_config("nh", &target),
        &["--enable-feature=native-histograms"],
    )
    .await;
    let (_prom_classic, theirs_classic) = start_prometheus_config_with(
        dir_classic.path(),
        &prometheus_config("nh_classic", &target),
        &[],
    )
    .await;

    let storage = Arc::new(Storage::new(StorageOptions::default()));
    let mut registry = Registry::default();
    let manager = ScrapeManager::new(storage.clone(), &mut registry, 0);
    let cfgs: Vec<ScrapeConfig> =
        serde_yaml_ng::from_str(&SCRAPE_CONFIGS.replace("TARGET", &target)).expect("configs");
    manager
        .apply(&cfgs, &ScrapeDefaults::default())
        .await
        .expect("apply");
    let mut state = WebState::new(shared_registry(registry));
    state.storage = Some(storage);
    let ours = scrape_support::serve_api(state).await;
    // Every scraper has stored a sample (Prometheus starts its scrapes after its first
    // discovery update, up to 5 s in); the steps start on the grid, two steps ahead.
    for (base, q) in [
        (&ours, "lookout_classic_seconds_count{job=\"nh_classic\"}"),
        (&ours, "lookout_classic_seconds_count{job=\"nh\"}"),
        (&theirs_native, "lookout_classic_seconds_count"),
        (&theirs_classic, "lookout_classic_seconds_count"),
    ] {
        let stored = scrape_support::eventually(Duration::from_secs(30), || async {
            let got = query(base, q, SystemTime::now()).await;
            (!got.is_empty()).then_some(())
        })
        .await;
        assert!(stored.is_some(), "{base} did not scrape the target");
    }
    let start_ms = now_ms() / STEP_MS * STEP_MS + 2 * STEP_MS;
    start.store(start_ms, Ordering::SeqCst);

    // Run through every step, then compare at half-steps (between the samples' timestamps)
    // up to the last whole one.
    let end_ms = start_ms + STEPS * STEP_MS + 1_500;
    tokio::time::sleep(Duration::from_millis((end_ms - now_ms()).max(0) as u64)).await;
    let at = |k: i64| UNIX_EPOCH + Duration::from_millis((start_ms + k * STEP_MS + 1_000) as u64);
    let (mut compared, mut stale_checked) = (0, 0);
    for k in 3..STEPS {
        let t = at(k);
        for q in native_queries("nh") {
            compared += compare(&ours, &theirs_native, &q, t).await;
        }
        for q in classic_queries("nh_classic") {
            compared += compare(&ours, &theirs_classic, &q, t).await;
        }
        // Job nh stores no classic series of native histograms, as Prometheus 2.42.
        compare(
            &ours,
            &theirs_native,
            "lookout_nh_seconds_bucket{job=\"nh\"}",
            t,
        )
        .await;
        compared += compare(
            &ours,
            &theirs_native,
            "lookout_classic_seconds_count{job=\"nh\"}",
            t,
        )
        .await;
        // Lookout's nh_classic keeps the native histograms too.
        let native = query(
            &ours,
            "histogram_count(lookout_nh_seconds{job=\"nh_classic\"})",
            t,
        )
        .await;
        let want = query(&theirs_native, "histogram_count(lookout_nh_seconds)", t).await;
        assert_eq!(
            native.values().collect::<Vec<_>>(),
            want.values().collect::<Vec<_>>(),
            "at {}",
            unix(t)
        );
        if k > GONE {
            let b = "histogram_count(lookout_nh_seconds{path=\"b\"})";
            assert!(
                query(&ours, b, t).await.is_empty(),
                "b stale at {}",
                unix(t)
            );
            assert_eq!(compare(&ours, &theirs_native, b, t).await, 0);
            let b = "lookout_nh_seconds_count{path=\"b\"}";
            assert_eq!(compare(&ours, &theirs_classic, b, t).await, 0);
            stale_checked += 1;
        }
    }
    assert!(compared > 300, "{compared} series compared");
    assert!(stale_checked > 3);
    // The scrape report of the last scrape: a native histogram is one sample.
    let now = SystemTime::now();
    for (job, theirs) in [("nh", &theirs_native), ("nh_classic", &theirs_classic)] {
        for name in [
            "scrape_samples_scraped",
            "scrape_samples_post_metric_relabeling",
        ] {
            let q = format!("{name}{{job=\"{job}\"}}");
            let (a, b) = (query(&ours, &q, now).await, query(theirs, &q, now).await);
            let values = |m: &BTreeMap<String, f64>| m.values().copied().collect::<Vec<_>>();
            if job == "nh" {
                assert_eq!(values(&a), values(&b), "{q}");
            } else {
                // Prometheus without the feature stores the classic series of path a
                // (6); Lookout stores those and the native histogram.
                assert_eq!(values(&a), vec![values(&b)[0] + 1.0], "{q}");
            }
        }
    }
    manager.stop().await;
}
