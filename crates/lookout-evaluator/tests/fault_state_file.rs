//! A half-written or corrupt `for`-state file never stops the evaluator nor corrupts the
//! state: `lookout_evaluator::run` on loopback starts with a truncated state file (the error
//! names the file and position), evaluates, and leaves a valid file behind; a write
//! interrupted before its rename leaves the previous state readable. Also: a rule file over
//! the size limit is refused with the limit named.
//!
//! The SIGKILL-mid-`for` restart of the real binary is `tests/evaluator_e2e.rs`
//! (`for_timer_is_restored_after_sigkill_mid_for`); a clean restart through this entry point
//! is `rules_evaluator_run.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use lookout_evaluator::state::{ForState, read_state_file, write_state_file};
use lookout_evaluator::{EvaluatorOptions, run};
use lookout_promql::Labels;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

const RULES: &str = r#"groups:
  - name: self
    rules:
      - alert: SelfUp
        expr: up == 1
        for: 1s
"#;

fn write_config(dir: &Path, port: u16) {
    std::fs::write(
        dir.join("evaluator.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\nscrape_configs:\n  - job_name: self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules.yml"), RULES).unwrap();
}

fn sample_state(active_at: f64) -> HashMap<Labels, ForState> {
    let mut m = HashMap::new();
    m.insert(
        Labels::new([("alertname", "SelfUp"), ("instance", "x"), ("job", "self")]),
        ForState {
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            value: active_at,
        },
    );
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_state_file_is_reported_and_replaced_by_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    // A valid file cut in the middle, as a crash of a non-atomic writer would leave it.
    write_state_file(&state_path, &sample_state(1_699_999_000.0)).unwrap();
    let full = std::fs::read(&state_path).unwrap();
    std::fs::write(&state_path, &full[..full.len() / 2]).unwrap();
    let err = read_state_file(&state_path).unwrap_err().to_string();
    assert!(
        err.contains("state.json") && err.contains("line"),
        "the error names the file and the position: {err}"
    );

    let port = free_port();
    write_config(dir.path(), port);
    let mut opts = EvaluatorOptions::new(dir.path().join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.external_url = Some(format!("http://127.0.0.1:{port}"));
    opts.state_file = Some(state_path.clone());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(opts, async move {
        let _ = rx.await;
    }));

    // It starts and evaluates: SelfUp fires on its own scrape.
    let base = format!("http://127.0.0.1:{port}");
    let mut fired = false;
    for _ in 0..600 {
        if let Ok(resp) = reqwest::get(format!("{base}/api/v1/alerts")).await
            && let Ok(body) = resp.bytes().await
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && v["data"]["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["state"] == "firing"))
        {
            fired = true;
            break;
        }
        assert!(!task.is_finished(), "the evaluator stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fired, "SelfUp never fired");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // The file written on the way out is whole and holds the live alert.
    let state = read_state_file(&state_path).unwrap();
    assert!(
        state
            .keys()
            .any(|l| l.get("alertname") == Some("SelfUp") && l.get("job") == Some("self")),
        "{state:?}"
    );
}

#[test]
fn an_interrupted_write_leaves_the_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let old = sample_state(1_699_999_000.0);
    write_state_file(&path, &old).unwrap();
    // A writer killed after creating its temporary file but before the rename.
    let tmp = dir.path().join(".state.json.tmp");
    std::fs::write(
        &tmp,
        b"{\"version\": 1, \"alerts\": [{\"labels\": {\"alertn",
    )
    .unwrap();
    assert_eq!(read_state_file(&path).unwrap(), old);
    // The next write replaces both.
    let new = sample_state(1_699_999_500.0);
    write_state_file(&path, &new).unwrap();
    assert_eq!(read_state_file(&path).unwrap(), new);
    assert!(!tmp.exists());
}

#[tokio::test]
async fn a_rule_file_over_the_size_limit_is_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port);
    // A lowered `--rules.max-file-size` keeps the test small.
    let limit = 4096u64;
    // Valid YAML (a comment) just over the limit.
    let mut big = String::from(RULES);
    big.push('#');
    big.extend(std::iter::repeat_n('x', limit as usize));
    std::fs::write(dir.path().join("rules.yml"), big).unwrap();
    let before = lookout_evaluator::limits::hits("rule_file_size");
    let mut opts = EvaluatorOptions::new(dir.path().join("evaluator.yml"));
    opts.listen_address = format!("127.0.0.1:{port}");
    opts.state_file = None;
    opts.rules_max_file_bytes = limit;
    let err = run(opts, async {}).await.unwrap_err().to_string();
    assert!(
        err.contains("rules.yml")
            && err.contains(&format!(
                "{limit}-byte rule file size limit (--rules.max-file-size)"
            )),
        "{err}"
    );
    assert!(lookout_evaluator::limits::hits("rule_file_size") > before);
}
