//! End to end: `lookout up` with its built-in configuration, started from an empty directory
//! on free loopback ports. It must print the URLs, serve the exporter's /metrics (with its
//! own and the evaluator's endpoints as targets) and the evaluator's API with every shipped
//! rule group loaded, write nothing in the working directory, and exit 0 on SIGTERM.

mod common;

use std::process::{Command, Stdio};

use common::{
    ChildGuard, LOOKOUT as BIN, free_addr, get_until, raw_get as get, sample, stdout_lines,
    wait_for_line,
};

/// Group names declared in the shipped rule files (`  - name: X` lines).
fn shipped_groups() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("rules/") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with(".rules.yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("rule file");
        names.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("  - name: "))
                .map(|n| n.trim().trim_matches('"').to_string()),
        );
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_exporter_and_evaluator_with_the_shipped_configuration() {
    let exporter = free_addr();
    let evaluator = free_addr();
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args(["up", "--web.listen-address.exporter"])
        .arg(exporter.to_string())
        .arg("--web.listen-address.evaluator")
        .arg(evaluator.to_string())
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout up");
    let rx = stdout_lines(&mut child);
    let mut process = ChildGuard(child);

    // The URLs, printed once both halves listen.
    let text = wait_for_line(&rx, "Ctrl-C").join("\n");
    assert!(
        text.contains(&format!("status page       http://{evaluator}/")),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{evaluator}/api/v1/alerts")),
        "{text}"
    );
    assert!(
        text.contains(&format!("http://{exporter}/metrics")),
        "{text}"
    );

    // The exporter probes Lookout's own endpoints, the evaluator's included, on the chosen
    // ports (the built-in configuration's addresses are rewritten).
    get_until(exporter, "/metrics", 150, |m| {
        let up = |job, instance| sample(m, "up", &[("job", job), ("instance", instance)]);
        up("lookout-evaluator", "evaluator-health") == Some(1.0)
            && up("lookout-exporter", "exporter-health") == Some(1.0)
    })
    .await;

    // Every shipped rule group is loaded; the seed's alerts are among the rules.
    let groups = shipped_groups();
    assert!(groups.len() >= 4, "{groups:?}");
    let rules = get_until(evaluator, "/api/v1/rules", 50, |_| true).await;
    for g in &groups {
        assert!(
            rules.contains(&format!("\"name\":\"{g}\"")),
            "{g} missing: {rules}"
        );
    }
    for alert in ["ServerDown", "HighLatency"] {
        assert!(rules.contains(&format!("\"name\":\"{alert}\"")), "{rules}");
    }
    // Rule files sit at the same path at every start on this port (their path is part of
    // the `rule_group` label and of the alert state's keys).
    assert!(
        rules.contains(&format!(
            "-{}/rules/availability.rules.yml",
            evaluator.port()
        )),
        "{rules}"
    );

    // The evaluator scrapes the exporter (embedded storage, honor_labels): the exporter's
    // targets are queryable with their own job and instance labels.
    get_until(
        evaluator,
        "/api/v1/query?query=up%7Binstance%3D%22evaluator-health%22%7D",
        150,
        |b| b.contains(r#""job":"lookout-evaluator""#) && b.contains(r#""1"]"#),
    )
    .await;
    let page = get_until(evaluator, "/", 10, |b| b.contains("Lookout status")).await;
    assert!(page.contains("evaluator-health"), "{page}");

    // SIGTERM stops both halves cleanly.
    let exit = process
        .terminate()
        .await
        .expect("lookout up did not stop within 30s of SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(get(exporter, "/metrics").await.is_none());
    assert!(get(evaluator, "/-/healthy").await.is_none());

    // Nothing was written where it was started.
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .expect("read cwd")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "lookout up wrote {left:?}");
}

#[test]
fn up_refuses_a_config_dir_without_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["up", "--config.dir"])
        .arg(dir.path())
        .output()
        .expect("run lookout up");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exporter.yml: no such file"), "{err}");
}

#[test]
fn up_refuses_a_port_in_use_naming_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = Command::new(BIN)
        .args(["up", "--web.listen-address.exporter"])
        .arg(free_addr().to_string())
        .arg("--web.listen-address.evaluator")
        .arg(addr.to_string())
        .output()
        .expect("run lookout up");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{addr} is in use"))
            && err.contains("--web.listen-address.evaluator"),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
    // No banner pointing at whoever holds the port.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `lookout init DIR` writes an example that runs from wherever DIR is: its rules load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_an_example_that_runs_where_it_is_put() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("some/where/my-lookout");
    let out = Command::new(BIN)
        .arg("init")
        .arg(&dir)
        .output()
        .expect("run lookout init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("lookout up --config.dir"));
    // Written again: refused, nothing overwritten.
    let again = Command::new(BIN)
        .arg("init")
        .arg(&dir)
        .output()
        .expect("init");
    assert!(!again.status.success());

    // The files name the default ports; move them to free ones as a user would edit them.
    let exporter = free_addr();
    let evaluator = free_addr();
    for name in ["exporter.yml", "evaluator.yml"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("127.0.0.1:9115", &exporter.to_string())
            .replace("127.0.0.1:9095", &evaluator.to_string());
        std::fs::write(&path, text).expect("write");
    }
    let child = Command::new(BIN)
        .args(["up", "--web.listen-address.exporter"])
        .arg(exporter.to_string())
        .arg("--web.listen-address.evaluator")
        .arg(evaluator.to_string())
        .arg("--config.dir")
        .arg(&dir)
        .current_dir(base.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout up");
    let mut process = ChildGuard(child);
    let rules = get_until(evaluator, "/api/v1/rules", 100, |b| {
        b.contains("\"groups\"")
    })
    .await;
    for g in shipped_groups() {
        assert!(
            rules.contains(&format!("\"name\":\"{g}\"")),
            "{g} missing: {rules}"
        );
    }
    let page = get_until(evaluator, "/", 10, |b| b.contains("Lookout status")).await;
    assert!(!page.contains("No rule groups are loaded"), "{page}");
    let _ = process.terminate().await;
}
