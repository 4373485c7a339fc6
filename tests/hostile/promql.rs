//! Hostile input: see `tests/hostile.rs`. Queries and rule expressions: trees deep enough
//! to overflow a thread's stack (refused by `--query.max-depth` before anything recursive
//! runs), and queries that run for minutes (stopped within milliseconds of their timeout or
//! of their client going away, freeing their `--query.max-concurrency` slot).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{self, Evaluator, free_port, write_file};
use crate::support::Watchdog;

/// A running `lookout evaluator` in embedded mode with `rules` and no scrape targets.
async fn start_evaluator(dir: &Path, rules: &str, extra: &[&str]) -> Evaluator {
    write_file(dir, "rules.yml", rules);
    let config = format!(
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - {}\n",
        dir.join("rules.yml").display()
    );
    write_file(dir, "evaluator.yml", &config);
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    common::start_evaluator(dir, free_port(), &extra).await
}

const GOOD_RULES: &str =
    "groups:\n  - name: g\n    rules:\n      - record: one\n        expr: vector(1)\n";

fn chain(n: usize) -> String {
    vec!["1"; n].join("+")
}

/// The deep shapes of the review: each would overflow an evaluating thread's stack.
fn deep_queries() -> Vec<(&'static str, String)> {
    vec![
        ("1+1+… ×2,500", chain(2_500)),
        ("up or up or … ×2,500", vec!["up"; 2_500].join(" or ")),
        (
            "1+(1+(…)) ×2,500",
            format!("{}1{}", "1+(".repeat(2_499), ")".repeat(2_499)),
        ),
        (
            "sum(sum(…)) ×3,000",
            format!("{}up{}", "sum(".repeat(3_000), ")".repeat(3_000)),
        ),
        ("1 MB chain 1+1+…", chain(500_000)),
    ]
}

/// GET `url` with `query` (POST as a form past 64 KiB, too long for a request line),
/// returning the status, body and how long the answer took.
async fn get(url: &str, query: &[(&str, &str)]) -> (u16, String, Duration) {
    let began = Instant::now();
    let long = query.iter().map(|(_, v)| v.len()).sum::<usize>() > 64 << 10;
    let request = if long {
        common::client().post(url).form(query)
    } else {
        common::client().get(url).query(query)
    };
    let r = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, body, began.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_queries_are_refused_before_they_reach_the_stack() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let ev = start_evaluator(dir.path(), GOOD_RULES, &[]).await;
    let watchdog = Watchdog::start(&format!("{}/-/healthy", ev.base), None);
    let query_url = format!("{}/api/v1/query", ev.base);
    let graph_url = format!("{}/graph", ev.base);
    for (what, q) in deep_queries() {
        let (status, body, took) = get(&query_url, &[("query", &q)]).await;
        eprintln!("{what}: /api/v1/query {status} in {took:?}");
        assert_eq!(status, 400, "{what}: {}", &body[..body.len().min(300)]);
        assert!(
            body.contains("expression nested deeper than the 256-level limit (--query.max-depth)"),
            "{what}: {}",
            &body[..body.len().min(300)]
        );
        assert!(took < Duration::from_secs(2), "{what}: took {took:?}");
        if q.len() < 64 << 10 {
            let (status, body, took) = get(&graph_url, &[("g0.expr", &q)]).await;
            eprintln!("{what}: /graph {status} in {took:?}");
            assert!(body.contains("(--query.max-depth)"), "{what} on /graph");
        }
    }
    // A 1 MB query within the limit: one long label value.
    let long = format!("up{{job=\"{}\"}}", "x".repeat(1 << 20));
    let (status, _, took) = get(&query_url, &[("query", &long)]).await;
    eprintln!("1 MB label value: {status} in {took:?}");
    assert_eq!(status, 200);
    // The deepest accepted chain evaluates; one more term is refused.
    let (status, body, _) = get(&query_url, &[("query", &chain(256))]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"256\""), "{body}");
    let (status, _, _) = get(&query_url, &[("query", &chain(257))]).await;
    assert_eq!(status, 400);
    let deepest_sum = format!("{}vector(1){}", "sum(".repeat(254), ")".repeat(254));
    let (status, body, _) = get(&query_url, &[("query", &deepest_sum)]).await;
    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let report = watchdog.finish("deep queries");
    eprintln!("watchdog: {report:?}");
    let (status, _, _) = get(&format!("{}/-/healthy", ev.base), &[]).await;
    assert_eq!(status, 200);
    drop(ev.process);
}

fn deep_rules() -> String {
    format!(
        "groups:\n  - name: g\n    rules:\n      - record: one\n        expr: vector(1)\n      - record: deep\n        expr: {}\n",
        chain(2_500)
    )
}

#[test]
fn rules_check_and_rules_test_refuse_a_deep_rule_with_file_and_line() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = write_file(dir.path(), "deep.yml", &deep_rules());
    let began = Instant::now();
    let out = std::process::Command::new(common::LOOKOUT)
        .args(["rules", "check", &rules])
        .output()
        .expect("run rules check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("rules check in {:?}: {text}", began.elapsed());
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("deep.yml: 7:"), "{text}");
    assert!(
        text.contains("256-level limit (--query.max-depth)"),
        "{text}"
    );

    let test = write_file(
        dir.path(),
        "deep_test.yml",
        "rule_files:\n  - deep.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series: []\n    promql_expr_test:\n      - expr: one\n        eval_time: 0m\n        exp_samples:\n          - labels: one\n            value: 1\n",
    );
    let out = std::process::Command::new(common::LOOKOUT)
        .args(["rules", "test", &test])
        .current_dir(dir.path())
        .output()
        .expect("run rules test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("(--query.max-depth)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_deep_rule_is_refused_and_the_old_rules_stay() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let ev = start_evaluator(dir.path(), GOOD_RULES, &[]).await;
    let watchdog = Watchdog::start(&format!("{}/-/healthy", ev.base), None);
    write_file(dir.path(), "rules.yml", &deep_rules());
    let r = common::client()
        .post(format!("{}/-/reload", ev.base))
        .send()
        .await
        .expect("reload");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("(--query.max-depth)"), "{body}");
    // Rules still evaluate: the old `one` keeps being written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let one = common::instant_query(&ev.base, "one")
        .await
        .expect("query one");
    assert_eq!(one.len(), 1);
    let rules = common::get_json(&format!("{}/api/v1/rules", ev.base))
        .await
        .expect("rules");
    assert!(!rules.to_string().contains("\"deep\""), "{rules}");
    watchdog.finish("reload with a deep rule");
}

/// The process's CPU time (user + system) so far, from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which is in parentheses): utime is the 14th field of
    // the line, stime the 15th, both in clock ticks.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(100)
        .max(1);
    Duration::from_millis(ticks * 1000 / hz)
}

/// Nested subqueries over a constant: 86,400 × 86,400 evaluations, hours of CPU.
const EXPENSIVE: &str = "max_over_time((max_over_time(vector(1)[1d:1s]))[1d:1s])";

/// Waits until the process's CPU time stops growing (less than 30 ms over 500 ms);
/// returns how long that took.
async fn cpu_settles(pid: u32, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let before = cpu_time(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grew = cpu_time(pid).saturating_sub(before);
        if grew < Duration::from_millis(30) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < within,
            "the query kept running: CPU grew by {grew:?} in 500 ms, {:?} after it should stop",
            began.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_or_abandoned_query_stops_and_frees_its_slot() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ev = start_evaluator(dir.path(), GOOD_RULES, &["--query.max-concurrency=1"]).await;
    let pid = ev.process.id();
    let watchdog = Watchdog::start(&format!("{}/-/healthy", ev.base), None);
    let url = format!("{}/api/v1/query", ev.base);

    // The query's own timeout.
    let (status, body, took) = get(&url, &[("query", EXPENSIVE), ("timeout", "1s")]).await;
    eprintln!("timeout=1s: {status} in {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(took < Duration::from_millis(1_500), "503 after {took:?}");
    let settled = cpu_settles(pid, Duration::from_secs(2)).await;
    eprintln!("CPU settled {settled:?} after the 503");
    let (status, body, took) = get(&url, &[("query", "1+1")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_secs(1),
        "the slot was still held: {took:?}"
    );

    // The client goes away (the query's own timeout is the default 2m).
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .no_proxy()
        .build()
        .expect("client");
    let r = impatient
        .get(&url)
        .query(&[("query", EXPENSIVE)])
        .send()
        .await;
    assert!(r.is_err(), "the expensive query answered: {r:?}");
    let settled = cpu_settles(pid, Duration::from_secs(2)).await;
    eprintln!("CPU settled {settled:?} after the client left");
    let (status, body, took) = get(&url, &[("query", "1+1")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        took < Duration::from_secs(1),
        "the slot was still held: {took:?}"
    );
    watchdog.finish("expensive queries");

    // SIGTERM while an expensive query runs: the program ends within its grace.
    let attack = tokio::spawn({
        let url = url.clone();
        async move {
            let _ = common::client()
                .get(&url)
                .query(&[("query", EXPENSIVE)])
                .send()
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = sigterm_and_wait(pid, Duration::from_secs(3), "an expensive query").await;
    eprintln!("ended {took:?} after SIGTERM");
    attack.abort();
    ev.process.kill();
}

/// A rule whose expression runs for hours: `/-/healthy` answers while it runs, and SIGTERM
/// ends the evaluator within its grace instead of waiting for the evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_evaluator_while_a_rule_runs_for_hours() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = format!(
        "groups:\n  - name: heavy\n    rules:\n      - record: heavy\n        expr: {EXPENSIVE}\n"
    );
    let ev = start_evaluator(dir.path(), &rules, &[]).await;
    let pid = ev.process.id();
    let watchdog = Watchdog::start(&format!("{}/-/healthy", ev.base), None);
    // Let the group start its evaluation and keep a core busy with it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cpu_time(pid).saturating_sub(before) > Duration::from_millis(100),
        "the heavy rule is not running"
    );
    watchdog.finish("a rule running for hours");
    let took = sigterm_and_wait(pid, Duration::from_secs(5), "a rule evaluating").await;
    eprintln!("ended {took:?} after SIGTERM");
}

/// Sends SIGTERM to `pid` and waits until it has exited (gone, or a zombie awaiting its
/// reaper); fails naming `what` if that takes longer than `within`.
async fn sigterm_and_wait(pid: u32, within: Duration, what: &str) -> Duration {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let began = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < within,
            "still running {within:?} after SIGTERM with {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
