//! End to end: `lookout up` with its built-in configuration, started from an empty directory
//! on free loopback ports. It must print the URLs, serve the exporter's /metrics (with its
//! own and the evaluator's endpoints as targets) and the evaluator's API with every shipped
//! rule group loaded, write nothing in the working directory, and exit 0 on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{
    ChildGuard, LOOKOUT as BIN, free_addr, get_until, raw_get as get, sample, stdout_lines,
    up_command, wait_for_line,
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

/// `lookout init DIR`, which must succeed; its output.
fn init(dir: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .arg("init")
        .arg(dir)
        .output()
        .expect("run lookout init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `cmd` (a `lookout up`) in `cwd`: its stdout's lines, and the process.
fn spawn_up(
    cmd: &mut Command,
    cwd: &std::path::Path,
) -> (std::sync::mpsc::Receiver<String>, ChildGuard) {
    let mut child = cmd
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lookout up");
    (stdout_lines(&mut child), ChildGuard(child))
}

/// `lookout up` on these addresses, with `--config.dir DIR`.
fn up_in(dir: &std::path::Path, exporter: SocketAddr, evaluator: SocketAddr) -> Command {
    let mut cmd = up_command(exporter, evaluator);
    cmd.arg("--config.dir").arg(dir);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_exporter_and_evaluator_with_the_shipped_configuration() {
    let exporter = free_addr();
    let evaluator = free_addr();
    let cwd = tempfile::tempdir().expect("tempdir");
    let (rx, mut process) = spawn_up(&mut up_command(exporter, evaluator), cwd.path());

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
    assert!(init(&dir).contains("lookout up --config.dir"));
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
    let log = base.path().join("up.log");
    let child = up_in(&dir, exporter, evaluator)
        .current_dir(base.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start lookout up");
    let mut process = ChildGuard(child);
    let rules = get_until(evaluator, "/api/v1/rules", 100, |b| {
        b.contains("\"groups\"")
    })
    .await;
    // The files match the flags: no address warning.
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(!stderr.contains("warning:"), "{stderr}");
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

/// `lookout init DIR`, then `lookout up --config.dir DIR` on other ports than the files
/// name: the places that point at Lookout's default addresses are warned about, each
/// with its file:line:col and the flag, before the servers start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_warns_when_the_config_dir_watches_other_addresses_than_the_flags() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("lookout");
    init(&dir);
    let exporter = free_addr();
    let evaluator = free_addr();
    let log = base.path().join("up.log");
    let mut child = up_in(&dir, exporter, evaluator)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start lookout up");
    let rx = stdout_lines(&mut child);
    let mut process = ChildGuard(child);
    wait_for_line(&rx, "Ctrl-C");
    let _ = process.terminate().await;
    let stderr = std::fs::read_to_string(&log).expect("log");
    let exporter_yml = dir.join("exporter.yml").display().to_string();
    let evaluator_yml = dir.join("evaluator.yml").display().to_string();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    // The four exporter targets and the two scrape targets of the example.
    assert_eq!(warnings.len(), 6, "{stderr}");
    let expect = [
        (
            format!("{exporter_yml}:27:13: target 127.0.0.1:9115 "),
            "--web.listen-address.exporter",
            exporter,
        ),
        (
            format!("{evaluator_yml}:21:19: scrape target 127.0.0.1:9115 "),
            "--web.listen-address.exporter",
            exporter,
        ),
        (
            format!("{evaluator_yml}:24:19: scrape target 127.0.0.1:9095 "),
            "--web.listen-address.evaluator",
            evaluator,
        ),
    ];
    for (place, flag, listen) in expect {
        assert!(
            warnings.iter().any(|w| w.contains(&place)
                && w.contains(&format!("({flag} {listen})"))
                && w.contains(&format!("Write {listen} there"))),
            "{place}: {stderr}"
        );
    }
    // --config.check says the same and starts nothing.
    let out = up_in(&dir, exporter, evaluator)
        .arg("--config.check")
        .output()
        .expect("check");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("warning: ").count(), 6, "{err}");
}

/// `lookout up --config.check`: the built-in configuration and a directory's are checked
/// (configuration files and rule files), printed OK or with the error's place, exit 0 or
/// 1; nothing is started, even on ports in use.
#[test]
fn up_config_check_checks_both_files_and_the_rules() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr").to_string();
    let check = |dir: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "up",
            "--config.check",
            "--web.listen-address.evaluator",
            &busy,
        ]);
        if let Some(d) = dir {
            cmd.arg("--config.dir").arg(d);
        }
        let out = cmd.output().expect("run lookout up --config.check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = check(None);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("built-in exporter.yml: OK (")
            && out.contains("built-in evaluator.yml: OK (4 rule files"),
        "{out}"
    );

    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("d");
    init(&dir);
    let (code, out, err) = check(Some(&dir));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("evaluator.yml: OK ("), "{out}");

    // A broken rule file: named with its line, exit 1.
    std::fs::write(
        dir.join("rules/broken.rules.yml"),
        "groups:\n  - name: x\n    rules:\n      - record: bad name\n        expr: up\n",
    )
    .expect("write");
    let (code, out, err) = check(Some(&dir));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("broken.rules.yml: 4:"), "{err}");
    assert!(out.contains("exporter.yml: OK ("), "{out}");
    std::fs::remove_file(dir.join("rules/broken.rules.yml")).expect("rm");

    // A broken exporter configuration: file:line:col.
    let exporter_yml = dir.join("exporter.yml");
    let text = std::fs::read_to_string(&exporter_yml).expect("read");
    std::fs::write(
        &exporter_yml,
        text.replace("module: tcp_connect", "module: nope"),
    )
    .expect("write");
    let (code, out, err) = check(Some(&dir));
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("{}:", exporter_yml.display())),
        "{err}"
    );
    assert!(err.contains("nope"), "{err}");
    assert!(out.contains("evaluator.yml: OK ("), "{out}");
    drop(taken);
}

/// `lookout up --rules.state-file FILE` keeps the `for` timers of alerts across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_keeps_for_timers_in_the_state_file_across_restarts() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path();
    std::fs::write(
        dir.join("exporter.yml"),
        "heartbeats:\n  - name: job\n    max_silence: 1h\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("evaluator.yml"),
        "global:\n  evaluation_interval: 1s\nrule_files:\n  - always.rules.yml\n",
    )
    .expect("write");
    // `for` longer than the 10m grace period, so the timer is restored.
    std::fs::write(
        dir.join("always.rules.yml"),
        "groups:\n  - name: always\n    rules:\n      - alert: Always\n        expr: vector(1)\n        for: 1h\n",
    )
    .expect("write");
    let state = dir.join("state/alerts.json");
    std::fs::create_dir(dir.join("state")).expect("mkdir");
    let exporter = free_addr();
    let evaluator = free_addr();
    let start = || {
        ChildGuard(
            up_in(dir, exporter, evaluator)
                .arg("--rules.state-file")
                .arg(&state)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start lookout up"),
        )
    };
    let active_at = |body: &str| -> Option<i64> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let a = v["data"]["alerts"].as_array()?.first()?.clone();
        let t = chrono::DateTime::parse_from_rfc3339(a["activeAt"].as_str()?).ok()?;
        Some(t.timestamp())
    };
    let mut first = start();
    let body = get_until(evaluator, "/api/v1/alerts", 120, |b| active_at(b).is_some()).await;
    let before = active_at(&body).expect("activeAt");
    // Pending for a while before the restart, so that a timer started afresh would show.
    while chrono::Utc::now().timestamp() < before + 8 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let exit = first.terminate().await.expect("stopped");
    assert_eq!(exit.code(), Some(0));
    let saved = std::fs::read_to_string(&state).expect("state file written");
    assert!(saved.contains("Always"), "{saved}");

    let restarted_at = chrono::Utc::now().timestamp();
    let mut second = start();
    // The first evaluation makes a fresh pending alert; the next ones show the restored
    // timer: the original one moved forward by the downtime (Prometheus's rule), so it
    // started before this process did, where a fresh timer starts after.
    get_until(evaluator, "/api/v1/alerts", 120, |b| {
        active_at(b).is_some_and(|t| t < restarted_at - 2)
    })
    .await;
    let _ = second.terminate().await;
}

/// `cp -r examples/up somewhere` gives a directory that works there: its rules come along.
#[test]
fn the_example_works_when_copied_anywhere() {
    let base = tempfile::tempdir().expect("tempdir");
    let copy = base.path().join("else/where/my-lookout");
    std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo.join("examples/up"))
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    let out = Command::new(BIN)
        .args(["up", "--config.check", "--config.dir"])
        .arg(&copy)
        .output()
        .expect("run lookout up --config.check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{} rule files", shipped_rule_files())),
        "{text}"
    );
}

fn shipped_rule_files() -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    std::fs::read_dir(dir)
        .expect("rules/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".rules.yml"))
        })
        .count()
}

/// `lookout up` keeps the evaluator's history by default, in a directory per user and port
/// that does not depend on where it is started: a second start replays what the first
/// wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_keeps_history_in_the_per_user_directory_by_default() {
    let (exporter, evaluator) = (free_addr(), free_addr());
    let xdg = tempfile::tempdir().expect("tempdir");
    let data = xdg.path().join(format!("lookout/up-{}", evaluator.port()));
    for run in 0..2 {
        let cwd = tempfile::tempdir().expect("tempdir");
        // The default --storage.tsdb.path (auto), not up_command's memory only.
        let mut up = Command::new(BIN);
        up.args(["up", "--web.listen-address.exporter", &exporter.to_string()])
            .args(["--web.listen-address.evaluator", &evaluator.to_string()])
            .args(["--storage.tsdb.retention.size", "1GiB"])
            .env("XDG_DATA_HOME", xdg.path());
        let (rx, mut process) = spawn_up(&mut up, cwd.path());
        wait_for_line(&rx, "Ctrl-C");
        assert!(data.join("wal").is_dir() && data.join("lock").is_file());
        let figure = |m: &str, name| sample(m, name, &[]).unwrap_or(0.0);
        // The retention flags reach the evaluator `up` runs.
        let m = get_until(evaluator, "/metrics", 1, |_| true).await;
        assert_eq!(
            figure(&m, "prometheus_tsdb_retention_limit_bytes"),
            1073741824.0,
            "{m}"
        );
        if run == 1 {
            let m = get_until(evaluator, "/metrics", 1, |_| true).await;
            assert!(figure(&m, "lookout_tsdb_wal_replayed_samples") > 0.0, "{m}");
        }
        // The first scrapes are written before the stop.
        get_until(evaluator, "/metrics", 120, |m| {
            figure(m, "lookout_tsdb_wal_samples_written_total") > 0.0
        })
        .await;
        let status = process.terminate().await.expect("stops on SIGTERM");
        assert!(status.success(), "{status:?}");
        assert!(
            !cwd.path().join("data").exists(),
            "nothing in the working directory"
        );
    }
}
