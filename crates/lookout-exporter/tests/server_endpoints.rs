//! The exporter's HTTP endpoints against real loopback targets.

mod server_support;

use std::time::Duration;

use server_support::{Exporter, MODULES, Target, get, post, request, sample};

fn config(extra: &str) -> String {
    format!("{MODULES}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_blackbox_metrics_for_a_loopback_target() {
    let target = Target::start(Duration::ZERO).await;
    let exporter = Exporter::start(&config("")).await;

    let url = target.url("/");
    let reply = get(
        exporter.addr,
        &format!("/probe?module=http_2xx&target={url}"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    assert_eq!(
        sample(&reply.body, "probe_success", &[]),
        Some(1.0),
        "{}",
        reply.body
    );
    assert_eq!(
        sample(&reply.body, "probe_http_status_code", &[]),
        Some(200.0),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("# TYPE probe_success gauge"),
        "{}",
        reply.body
    );
    assert!(target.hits() >= 1);

    let failing = get(
        exporter.addr,
        &format!("/probe?module=http_2xx&target={}", target.url("/fail")),
    )
    .await;
    assert_eq!(failing.status, 200);
    assert_eq!(
        sample(&failing.body, "probe_success", &[]),
        Some(0.0),
        "{}",
        failing.body
    );

    // Both probes are counted in the exporter's own metrics.
    let metrics = exporter.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_probes_total",
            &[("result", "success")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_probes_total",
            &[("result", "failure")]
        ),
        Some(1.0),
        "{metrics}"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_rejects_bad_requests_with_400() {
    let exporter = Exporter::start(&config(
        "  with_host:\n    prober: http\n    http:\n      headers: {Host: a.example}\n",
    ))
    .await;

    let missing = get(exporter.addr, "/probe?module=http_2xx").await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.body.contains("Target parameter is missing"),
        "{}",
        missing.body
    );

    let unknown = get(exporter.addr, "/probe?module=nope&target=127.0.0.1:1").await;
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.body.contains("Unknown module \"nope\""),
        "{}",
        unknown.body
    );

    let bad_header = request(
        exporter.addr,
        "GET",
        "/probe?module=http_2xx&target=http://127.0.0.1:1/",
        &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
    )
    .await;
    assert_eq!(bad_header.status, 500);
    assert!(
        bad_header.body.contains("Failed to parse timeout"),
        "{}",
        bad_header.body
    );

    // As blackbox_exporter: ?hostname= contradicting the module's Host header is refused.
    let conflict = get(
        exporter.addr,
        "/probe?module=with_host&target=http://127.0.0.1:1/&hostname=b.example",
    )
    .await;
    assert_eq!(conflict.status, 400);
    assert!(
        conflict
            .body
            .contains("host header defined both in module configuration (a.example)"),
        "{}",
        conflict.body
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_post_and_fails_at_once_when_the_offset_eats_the_scrape_timeout() {
    let target = Target::start(Duration::ZERO).await;
    let exporter = Exporter::start(&config("  no_timeout:\n    prober: http\n")).await;
    let path = format!("/probe?module=no_timeout&target=http://{}/", target.addr);
    let posted = post(exporter.addr, &path).await;
    assert_eq!(posted.status, 200);
    assert_eq!(sample(&posted.body, "probe_success", &[]), Some(1.0));

    // 0.3 s of scrape timeout minus the 0.5 s offset, and no module timeout: no time at all.
    let eaten = request(
        exporter.addr,
        "GET",
        &path,
        &[("X-Prometheus-Scrape-Timeout-Seconds", "0.3")],
    )
    .await;
    assert_eq!(eaten.status, 200);
    assert_eq!(sample(&eaten.body, "probe_success", &[]), Some(0.0));
    assert_eq!(
        sample(&eaten.body, "probe_http_status_code", &[]),
        Some(0.0)
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_probe_shows_log_metrics_and_module() {
    let target = Target::start(Duration::ZERO).await;
    let config_text = config("");
    let exporter = Exporter::start(&config_text).await;
    let reply = get(
        exporter.addr,
        &format!(
            "/probe?module=http_2xx&debug=true&target={}",
            target.url("/")
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = &reply.body;
    let logs = body.find("Logs for the probe:").expect("log section");
    let metrics = body
        .find("Metrics that would have been returned:")
        .expect("metrics section");
    let module = body.find("Module configuration:").expect("module section");
    assert!(logs < metrics && metrics < module, "{body}");
    assert!(body.contains("probe_success 1"), "{body}");
    // The module as YAML in the configuration's schema: it reads back as the same module.
    let yaml = body[module..]
        .strip_prefix("Module configuration:\n")
        .expect("module section");
    assert!(
        yaml.starts_with("prober: http\ntimeout: 5s\nhttp:\n"),
        "{body}"
    );
    let indented: String = yaml.lines().map(|l| format!("    {l}\n")).collect();
    let pasted = format!("modules:\n  http_2xx:\n{indented}");
    let config = lookout_exporter::config::Config::parse(&pasted, "pasted.yml")
        .unwrap_or_else(|e| panic!("{e}\n{pasted}"));
    let original = lookout_exporter::config::Config::parse(&config_text, "exporter.yml")
        .expect("the exporter's own configuration");
    assert_eq!(
        format!("{:?}", config.modules["http_2xx"]),
        format!("{:?}", original.modules["http_2xx"])
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_requests_beyond_the_limit_get_503() {
    let target = Target::start(Duration::from_secs(3)).await;
    let exporter = Exporter::start_with(&config(""), |o| o.max_concurrent_probe_requests = 1).await;
    let addr = exporter.addr;
    let slow = target.url("/slow");
    let first =
        tokio::spawn(
            async move { get(addr, &format!("/probe?module=http_2xx&target={slow}")).await },
        );
    // Wait until the first probe holds the only permit (its request reached the target);
    // a second request sent before that could take the permit itself and refuse the first.
    server_support::eventually("the slow probe to reach its target", 100, || async {
        (target.slow_hits() >= 1).then_some(())
    })
    .await;
    let refused = server_support::eventually("a 503 while the slow probe runs", 100, || async {
        let reply = get(addr, "/probe?module=http_2xx&target=http://127.0.0.1:1/").await;
        (reply.status == 503).then_some(reply)
    })
    .await;
    assert!(
        refused.body.contains("--web.max-concurrent-probes"),
        "{}",
        refused.body
    );
    let first = first.await.expect("first probe");
    assert_eq!(first.status, 200);
    let metrics = exporter.metrics().await;
    assert!(
        sample(
            &metrics,
            "lookout_exporter_probe_requests_rejected_total",
            &[]
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_answer() {
    let exporter = Exporter::start(&config("")).await;
    let health = get(exporter.addr, "/health").await;
    assert_eq!(health.status, 200);
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("JSON health");
    assert_eq!(json["status"], "ok");
    assert!(
        json["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0),
        "{json}"
    );
    assert!(
        json["timestamp"].as_f64().is_some_and(|t| t > 1.6e9),
        "{json}"
    );
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(get(exporter.addr, "/-/healthy").await.status, 200);
    assert_eq!(get(exporter.addr, "/-/ready").await.status, 200);
    let metrics = exporter.metrics().await;
    assert!(
        metrics.contains("lookout_exporter_build_info{version="),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_record_pushes_and_refuse_unknown_names() {
    let exporter = Exporter::start(&config(
        "heartbeats:
  - name: backup
    max_silence: 1h
  - name: silent
    max_silence: 1ms
",
    ))
    .await;
    assert_eq!(post(exporter.addr, "/heartbeat/nightly").await.status, 404);
    assert_eq!(get(exporter.addr, "/heartbeat/nightly").await.status, 404);
    assert_eq!(
        request(exporter.addr, "PUT", "/heartbeat/backup", &[])
            .await
            .status,
        405
    );
    let metrics = exporter.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_heartbeat_last_seen_timestamp_seconds",
            &[("name", "backup")]
        ),
        None,
        "{metrics}"
    );
    assert_eq!(post(exporter.addr, "/heartbeat/backup").await.status, 200);
    let seen = |metrics: &str| {
        sample(
            metrics,
            "lookout_heartbeat_last_seen_timestamp_seconds",
            &[("name", "backup")],
        )
        .unwrap_or(0.0)
    };
    // `curl URL` in a cron job pushes with a GET; `curl -I URL` with a HEAD.
    for method in ["GET", "HEAD"] {
        let before = seen(&exporter.metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = request(exporter.addr, method, "/heartbeat/backup", &[]).await;
        assert_eq!(reply.status, 200, "{method}");
        let after = seen(&exporter.metrics().await);
        assert!(after > before, "{method}: {before} -> {after}");
    }
    let metrics = exporter.metrics().await;
    assert!(
        sample(
            &metrics,
            "lookout_heartbeat_last_seen_timestamp_seconds",
            &[("name", "backup")]
        )
        .is_some_and(|t| t > 1.6e9),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "up",
            &[("job", "heartbeat"), ("instance", "backup")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // `silent` allows 1 ms of silence and is never pushed.
    let down = server_support::eventually("the silent heartbeat to go down", 50, || async {
        let metrics = exporter.metrics().await;
        (sample(
            &metrics,
            "up",
            &[("job", "heartbeat"), ("instance", "silent")],
        ) == Some(0.0))
        .then_some(())
    })
    .await;
    let () = down;
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_reload_keeps_the_old_configuration() {
    let exporter = Exporter::start(&config("")).await;
    exporter.write_config("modules:\n  http_2xx:\n    prober: http\n    timeout: soon\n");
    let reply = post(exporter.addr, "/-/reload").await;
    assert_eq!(reply.status, 500);
    assert!(reply.body.contains("exporter.yml:4:"), "{}", reply.body);
    let metrics = exporter.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_config_last_reload_successful",
            &[]
        ),
        Some(0.0),
        "{metrics}"
    );
    // The old modules still serve.
    let probe = get(
        exporter.addr,
        "/probe?module=tcp_connect&target=127.0.0.1:1",
    )
    .await;
    assert_eq!(probe.status, 200, "{}", probe.body);

    // A good file reloads and the new module set replaces the old one.
    exporter.write_config("modules:\n  only_tcp:\n    prober: tcp\n    timeout: 1s\n");
    assert_eq!(post(exporter.addr, "/-/reload").await.status, 200);
    let metrics = exporter.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    let gone = get(
        exporter.addr,
        "/probe?module=tcp_connect&target=127.0.0.1:1",
    )
    .await;
    assert_eq!(gone.status, 400);
    assert_eq!(get(exporter.addr, "/-/reload").await.status, 405);
    exporter.shutdown().await;
}
