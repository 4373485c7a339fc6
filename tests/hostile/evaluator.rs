//! Hostile input against the evaluator: scrape bodies, templates, deep YAML and the scrape
//! TLS settings. See `tests/hostile.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, ChildGuard, LOOKOUT, free_port, get_json, wait_ready, write_file};
use crate::support::Watchdog;

/// One series with `labels` labels: 2.3 MB for 200,000.
fn wide_series(labels: usize) -> String {
    let mut body = String::with_capacity(labels * 12 + 32);
    body.push_str("wide{");
    for i in 0..labels {
        body.push_str(&format!("l{i}=\"v\","));
    }
    body.push_str("} 1\n");
    body
}

/// A loopback scrape target that answers every request with `body`.
async fn serve_body(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the target");
    let addr = listener.local_addr().expect("target address");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `lookout evaluator` with `config` (and `extra` flags), its stdout piped; returns when it
/// is ready, with its base URL.
async fn start_evaluator(dir: &Path, config: &str, extra: &[&str]) -> (ChildGuard, String) {
    let port = free_port();
    write_file(dir, "evaluator.yml", config);
    let log = std::fs::File::create(dir.join("evaluator.log")).expect("log file");
    let mut args = common::evaluator_args(dir, port, "");
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = std::process::Command::new(LOOKOUT)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start lookout evaluator");
    let guard = ChildGuard(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready("lookout evaluator", &format!("{base}/-/ready")).await;
    (guard, base)
}

/// The active targets of `/api/v1/targets`.
async fn targets(base: &str) -> Option<Vec<Value>> {
    get_json(&format!("{base}/api/v1/targets")).await?["data"]["activeTargets"]
        .as_array()
        .cloned()
}

/// Sends SIGTERM and asserts that the evaluator is gone within `grace`; returns how long
/// it took.
async fn terminate_within(child: &mut ChildGuard, grace: Duration, what: &str) -> Duration {
    let sent = Instant::now();
    let status = child.terminate().await;
    let took = sent.elapsed();
    assert!(
        status.is_some() && took <= grace,
        "{what}: SIGTERM did not end the evaluator within {grace:?} (took {took:?}, {status:?})"
    );
    took
}

/// Finding 4: three targets that each serve one series of 200,000 labels. Parsing used to
/// be quadratic and ran on the runtime's workers outside the scrape timeout: the targets
/// stayed "unknown" and the whole evaluator froze (HTTP, rules, SIGTERM). Now each scrape
/// ends with a result or an error within its timeout, `/-/healthy` answers throughout and
/// SIGTERM ends the program promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_targets_of_200000_labels_neither_freeze_nor_outlive_their_timeout() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let body = wide_series(200_000);
    let mut addrs = Vec::new();
    for _ in 0..3 {
        addrs.push(serve_body(body.clone()).await);
    }
    let list: Vec<String> = addrs.iter().map(|a| format!("'{a}'")).collect();
    let config = format!(
        "global: {{scrape_interval: 3s, scrape_timeout: 2s}}\n\
         scrape_configs:\n  - job_name: wide\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let (mut child, base) = start_evaluator(dir.path(), &config, &[]).await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), None);
    let began = Instant::now();
    let seen = common::eventually(
        "three scraped targets",
        60,
        Duration::from_millis(250),
        || {
            let base = base.clone();
            async move {
                let t = targets(&base).await?;
                let done = t.len() == 3 && t.iter().all(|t| t["health"] != "unknown");
                done.then_some(t)
            }
        },
    )
    .await;
    let reported = began.elapsed();
    for t in &seen {
        let took = t["lastScrapeDuration"].as_f64().unwrap_or(f64::MAX);
        assert!(
            took <= 2.5,
            "a scrape outlived its 2s timeout ({took}s): {t}"
        );
        if t["health"] == "down" {
            // Parsing outlived the timeout (a debug build on a busy machine) or, rarely, the
            // transfer did.
            let error = t["lastError"].as_str().unwrap_or("");
            assert!(error.contains("timed out"), "unexpected error: {error}");
        }
    }
    // A few more scrapes under the watchdog, then SIGTERM.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = watchdog.finish("three 200,000-label targets");
    let stopped = terminate_within(&mut child, Duration::from_secs(5), "wide targets").await;
    eprintln!(
        "200,000-label targets: reported after {reported:?}, slowest /-/healthy {:?}, \
         SIGTERM took {stopped:?}; targets: {}",
        report.slowest,
        seen.iter()
            .map(|t| format!(
                "{} {}s {}",
                t["health"], t["lastScrapeDuration"], t["lastError"]
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// A rule file with one alerting rule per `(name, annotation)`, on `vector(1)`, evaluated
/// every second.
fn template_rules(rules: &[(&str, &str)]) -> String {
    let mut text = String::from("groups:\n  - name: hostile\n    interval: 1s\n    rules:\n");
    for (name, annotation) in rules {
        text.push_str(&format!(
            "      - alert: {name}\n        expr: vector(1)\n        annotations:\n          text: '{}'\n",
            annotation.replace('\'', "''")
        ));
    }
    text
}

/// Templates `a0` … `a{levels}`, each calling the next twice: 2^levels calls, no output.
fn exponential_template(levels: usize) -> String {
    let mut text = String::new();
    for i in 0..levels {
        let next = i + 1;
        text.push_str(&format!(
            "{{{{ define \"a{i}\" }}}}{{{{ template \"a{next}\" . }}}}{{{{ template \"a{next}\" . }}}}{{{{ end }}}}"
        ));
    }
    text.push_str(&format!(
        "{{{{ define \"a{levels}\" }}}}{{{{ end }}}}{{{{ template \"a0\" . }}}}"
    ));
    text
}

/// The `text` annotation of the alert `name` in `/api/v1/alerts`.
async fn annotation(base: &str, name: &str) -> Option<String> {
    let alerts = common::evaluator_alerts(base).await?;
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .and_then(|a| a["annotations"]["text"].as_str().map(str::to_string))
}

/// Finding 5: a template that calls itself (conditionally, so that no checker can know)
/// overflowed the stack and aborted the evaluator; one that calls itself twice per level
/// for 40 levels ran for ever on a runtime worker, and two of them froze the evaluator,
/// SIGTERM included. Now the first fails at the depth limit, the others at
/// `--rules.template.timeout`, `/-/healthy` answers throughout, and SIGTERM in the middle
/// of an expansion ends the program promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_and_exponential_templates_fail_alone_and_never_hold_the_evaluator() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let exponential = exponential_template(40);
    let rules = template_rules(&[
        (
            "Recursive",
            r#"{{ define "x" }}{{ if . }}{{ template "x" . }}{{ end }}{{ end }}{{ template "x" 1 }}"#,
        ),
        ("ExponentialA", &exponential),
        ("ExponentialB", &exponential),
    ]);
    let rule_file = write_file(dir.path(), "hostile.rules.yml", &rules);
    let config = format!("global: {{evaluation_interval: 1s}}\nrule_files: ['{rule_file}']\n");
    let (mut child, base) =
        start_evaluator(dir.path(), &config, &["--rules.template.timeout=2s"]).await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), None);
    let began = Instant::now();
    let depth = common::eventually(
        "the recursive template's error",
        60,
        Duration::from_millis(250),
        || {
            let base = base.clone();
            async move {
                annotation(&base, "Recursive")
                    .await
                    .filter(|t| !t.is_empty())
            }
        },
    )
    .await;
    assert!(
        depth.contains("exceeded maximum template depth"),
        "recursive template: {depth}"
    );
    for name in ["ExponentialA", "ExponentialB"] {
        let text = common::eventually("the timeout error", 60, Duration::from_millis(250), || {
            let base = base.clone();
            async move { annotation(&base, name).await.filter(|t| !t.is_empty()) }
        })
        .await;
        assert!(text.contains("--rules.template.timeout"), "{name}: {text}");
    }
    let stopped_after = began.elapsed();
    // The next evaluations are expanding again: SIGTERM now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = watchdog.finish("pathological templates");
    let took = terminate_within(&mut child, Duration::from_secs(5), "templates").await;
    eprintln!(
        "templates: depth error {depth:?}; both timeouts seen after {stopped_after:?}; \
         slowest /-/healthy {:?}; SIGTERM took {took:?}",
        report.slowest
    );
}

/// `rules check` refuses a template that always calls itself (Go's templates, and so
/// promtool, accept it and fail only when it runs), in milliseconds.
#[tokio::test]
async fn rules_check_refuses_a_template_that_always_calls_itself() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = template_rules(&[(
        "SelfCall",
        r#"{{ define "x" }}{{ template "x" . }}{{ end }}{{ template "x" . }}"#,
    )]);
    let file = write_file(dir.path(), "self.rules.yml", &rules);
    let began = Instant::now();
    let out = std::process::Command::new(LOOKOUT)
        .args(["rules", "check", &file])
        .output()
        .expect("run lookout rules check");
    let took = began.elapsed();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rules check accepted it: {text}");
    assert!(text.contains("always calls itself"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// `[` nested `depth` deep under `key`, closed again: 2 bytes a level.
fn deep_yaml(key: &str, depth: usize) -> String {
    format!("{key}: {}{}\n", "[".repeat(depth), "]".repeat(depth))
}

/// Finding 10: YAML nested 100,000 deep (200 KB) took libyaml's scanner 30–37 s of CPU to
/// reject (its simple-key stack is walked at every token: O(depth²)). Every YAML entry
/// point now refuses it in milliseconds, naming the file, the line and the limit.
#[tokio::test]
async fn yaml_nested_100000_deep_is_refused_in_milliseconds_everywhere() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |name: &str, text: String| write_file(dir.path(), name, &text);
    let rules = p("deep.rules.yml", deep_yaml("groups", 100_000));
    let tests = p("deep.test.yml", deep_yaml("tests", 100_000));
    let config = p("evaluator.yml", deep_yaml("rule_files", 100_000));
    let exporter = p("exporter.yml", deep_yaml("modules", 100_000));
    let web = p("web.yml", deep_yaml("tls_server_config", 100_000));
    let with_rules = p("with-rules.yml", format!("rule_files: ['{rules}']\n"));
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "rules check",
            vec!["rules", "check", &rules],
            "deep.rules.yml",
        ),
        ("rules test", vec!["rules", "test", &tests], "deep.test.yml"),
        (
            "evaluator --config.file",
            vec![
                "evaluator",
                "--config.file",
                &config,
                "--web.listen-address",
                &listen,
                "--storage.tsdb.path=",
            ],
            "evaluator.yml",
        ),
        (
            "evaluator rule_files",
            vec![
                "evaluator",
                "--config.file",
                &with_rules,
                "--web.listen-address",
                &listen,
                "--storage.tsdb.path=",
            ],
            "deep.rules.yml",
        ),
        (
            "exporter --config.file",
            vec![
                "exporter",
                "--config.file",
                &exporter,
                "--web.listen-address",
                &listen,
            ],
            "exporter.yml",
        ),
        (
            "exporter --web.config.file",
            vec![
                "exporter",
                "--web.config.file",
                &web,
                "--web.listen-address",
                &listen,
            ],
            "web.yml",
        ),
    ];
    let mut figures = Vec::new();
    for (what, args, file) in cases {
        let began = Instant::now();
        let mut child = ChildGuard(
            std::process::Command::new(LOOKOUT)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run lookout"),
        );
        let status = loop {
            if let Some(s) = child.0.try_wait().expect("wait") {
                break s;
            }
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "{what}: still running after 5s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = began.elapsed();
        let mut text = String::new();
        if let Some(mut out) = child.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        if let Some(mut err) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        assert!(!status.success(), "{what}: accepted: {text}");
        assert!(
            text.contains(file) && text.contains("line 1") && text.contains("more than 256 levels"),
            "{what}: the error does not name the file, line and limit: {text}"
        );
        figures.push(format!("{what} {took:?}"));
    }
    eprintln!("100,000-deep YAML refused: {}", figures.join(", "));
}

/// A rule file whose alert `Deep` carries `annotation` (written as a YAML literal block, so
/// the template text needs no quoting).
fn deep_template_rules(annotation: &str) -> String {
    format!(
        "groups:\n  - name: deep\n    rules:\n      - alert: Deep\n        expr: vector(1)\n        annotations:\n          summary: |-\n            {annotation}\n"
    )
}

/// The names of the alerting rules the evaluator has loaded.
async fn rule_names(base: &str) -> Option<Vec<String>> {
    let v = get_json(&format!("{base}/api/v1/rules")).await?;
    let mut names = Vec::new();
    for g in v["data"]["groups"].as_array()? {
        for r in g["rules"].as_array()? {
            names.push(r["name"].as_str()?.to_string());
        }
    }
    Some(names)
}

/// Finding: gtmpl's parser recursed once per nested `{{if}}`, `{{with}}`, `{{range}}`,
/// `{{else if}}` and `(`, so an annotation of 100,000 nested `{{if 1}}` overflowed the
/// stack and aborted `rules check`, the start and a reload. Now text nested deeper than 50
/// levels is refused before the parser recurses further, naming the file, the group, the
/// rule, the annotation and the limit: `rules check` fails, a reload is refused with the
/// old rules kept, and `/-/healthy` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_nested_100000_deep_are_refused_at_check_and_reload() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let n = 100_000;
    let deep_ifs = "{{ if 1 }}".repeat(n) + "x" + &"{{ end }}".repeat(n);
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
    let rule_file = write_file(
        dir.path(),
        "deep.rules.yml",
        &deep_template_rules("{{ $labels.instance }} is fine"),
    );
    let config = format!("global: {{evaluation_interval: 1s}}\nrule_files: ['{rule_file}']\n");
    let (mut child, base) = start_evaluator(dir.path(), &config, &[]).await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), None);
    let mut figures = Vec::new();
    for (what, text) in [("ifs", &deep_ifs), ("parentheses", &deep_parens)] {
        let file = write_file(
            dir.path(),
            "candidate.rules.yml",
            &deep_template_rules(text),
        );
        let began = Instant::now();
        let out = std::process::Command::new(LOOKOUT)
            .args(["rules", "check", &file])
            .output()
            .expect("run lookout rules check");
        let took = began.elapsed();
        let report = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: rules check accepted it");
        assert!(
            report.contains("candidate.rules.yml")
                && report.contains("\"Deep\"")
                && report.contains("annotation \"summary\"")
                && report.contains("template nesting deeper than 50 levels"),
            "{what}: rules check does not name the file, rule, annotation and limit: {report}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{what}: rules check took {took:?}"
        );
        figures.push(format!("rules check ({what}) {took:?}"));

        // The same text in the running evaluator's rule file, then a reload.
        std::fs::copy(&file, &rule_file).expect("replace the rule file");
        let began = Instant::now();
        let response = common::client()
            .post(format!("{base}/-/reload"))
            .send()
            .await
            .expect("reload answers");
        let took = began.elapsed();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_server_error(),
            "{what}: reload accepted: {status} {body}"
        );
        assert!(
            body.contains("template nesting deeper than 50 levels"),
            "{what}: {body}"
        );
        figures.push(format!("reload ({what}) {took:?}"));
        let names = rule_names(&base).await.expect("rules API");
        assert_eq!(names, ["Deep"], "{what}: the old rule is gone");
    }
    // The old template still expands.
    let text = common::eventually(
        "the old rule's annotation",
        60,
        Duration::from_millis(250),
        || {
            let base = base.clone();
            async move {
                let alerts = common::evaluator_alerts(&base).await?;
                alerts
                    .iter()
                    .find_map(|a| a["annotations"]["summary"].as_str().map(str::to_string))
            }
        },
    )
    .await;
    assert_eq!(text, " is fine");
    let report = watchdog.finish("deep templates");
    terminate_within(&mut child, Duration::from_secs(5), "deep templates").await;
    eprintln!(
        "100,000-deep templates refused: {}; slowest /-/healthy {:?}",
        figures.join(", "),
        report.slowest
    );
}
