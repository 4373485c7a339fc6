//! Continuous targets: scheduling, `up`, histograms, the cascade view and reconciliation on
//! reload, against loopback HTTP targets.

mod server_support;

use std::time::Duration;

use server_support::{Exporter, MODULES, Target, eventually, post, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_go_down_and_dependants_are_marked_blocked() {
    let lb = Target::start(Duration::ZERO).await;
    let app = Target::start(Duration::ZERO).await;
    let config = format!(
        "{MODULES}targets:
  - name: lb
    module: http_quick
    target: {lb}
    interval: 200ms
    labels:
      team: edge
  - name: app
    module: http_quick
    target: {app}
    interval: 200ms
    labels:
      job: shop
    depends_on: [lb]
",
        lb = lb.url("/"),
        app = app.url("/"),
    );
    let exporter = Exporter::start(&config).await;

    let metrics = eventually("both targets up", 100, || async {
        let m = exporter.metrics().await;
        let lb_up = sample(
            &m,
            "up",
            &[("job", "http_quick"), ("instance", "lb"), ("team", "edge")],
        );
        let app_up = sample(&m, "up", &[("job", "shop"), ("instance", "app")]);
        (lb_up == Some(1.0) && app_up == Some(1.0)).then_some(m)
    })
    .await;
    assert!(
        sample(
            &metrics,
            "http_request_duration_seconds_count",
            &[("job", "shop"), ("instance", "app")]
        )
        .is_some_and(|c| c >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "http_request_duration_seconds_bucket",
            &[("instance", "app"), ("le", "+Inf")]
        )
        .is_some_and(|c| c >= 1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "lookout_target_http_status_code",
            &[("instance", "app")]
        ),
        Some(200.0)
    );
    assert!(!metrics.contains("lookout_target_blocked{"), "{metrics}");

    // The app alone down: down, but not blocked (its dependency is up).
    app.stop();
    let metrics = eventually("app down", 100, || async {
        let m = exporter.metrics().await;
        (sample(&m, "up", &[("instance", "app")]) == Some(0.0)).then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "up", &[("instance", "lb")]), Some(1.0));
    assert!(!metrics.contains("lookout_target_blocked{"), "{metrics}");
    assert!(
        metrics.contains("lookout_target_probe_failure_info{job=\"shop\",instance=\"app\",reason="),
        "{metrics}"
    );

    // The load balancer down too: the app is blocked by it, the load balancer by nothing.
    lb.stop();
    let metrics = eventually("app blocked by lb", 100, || async {
        let m = exporter.metrics().await;
        (sample(
            &m,
            "lookout_target_blocked",
            &[("instance", "app"), ("blocked_by", "lb")],
        ) == Some(1.0))
        .then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "up", &[("instance", "lb")]), Some(0.0));
    assert_eq!(
        sample(&metrics, "lookout_target_blocked", &[("instance", "lb")]),
        None,
        "{metrics}"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_does_not_delay_the_others() {
    let slow = Target::start(Duration::from_secs(30)).await;
    let fast = Target::start(Duration::ZERO).await;
    let config = format!(
        "{MODULES}targets:
  - name: slow
    module: http_2xx
    target: {slow}
    interval: 100ms
  - name: fast
    module: http_2xx
    target: {fast}
    interval: 100ms
",
        slow = slow.url("/slow"),
        fast = fast.url("/"),
    );
    // One probe at a time in all: the slow probe must not hold up the fast target's probes
    // forever either, because its timeout is capped by its interval.
    let exporter = Exporter::start_with(&config, |o| o.target_probe_concurrency = 1).await;
    eventually("the fast target probed many times", 200, || async {
        (fast.hits() >= 10).then_some(())
    })
    .await;
    let metrics = eventually("skipped ticks of the slow target counted", 100, || async {
        let m = exporter.metrics().await;
        sample(&m, "lookout_exporter_probes_skipped_total", &[])
            .is_some_and(|s| s >= 1.0)
            .then_some(m)
    })
    .await;
    assert_eq!(
        sample(&metrics, "up", &[("instance", "fast")]),
        Some(1.0),
        "{metrics}"
    );
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_drops_series_of_removed_targets() {
    let one = Target::start(Duration::ZERO).await;
    let two = Target::start(Duration::ZERO).await;
    let both = format!(
        "{MODULES}targets:
  - name: one
    module: http_quick
    target: {one}
    interval: 100ms
  - name: two
    module: http_quick
    target: {two}
    interval: 100ms
",
        one = one.url("/"),
        two = two.url("/"),
    );
    let exporter = Exporter::start(&both).await;
    eventually("both up", 100, || async {
        let m = exporter.metrics().await;
        (sample(&m, "up", &[("instance", "one")]) == Some(1.0)
            && sample(&m, "up", &[("instance", "two")]) == Some(1.0))
        .then_some(())
    })
    .await;
    let metrics = exporter.metrics().await;
    assert_eq!(sample(&metrics, "lookout_exporter_targets", &[]), Some(2.0));

    exporter.write_config(&format!(
        "{MODULES}targets:
  - name: one
    module: http_quick
    target: {one}
    interval: 100ms
",
        one = one.url("/"),
    ));
    let reply = post(exporter.addr, "/-/reload").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let metrics = exporter.metrics().await;
    assert!(!metrics.contains("instance=\"two\""), "{metrics}");
    assert_eq!(
        sample(&metrics, "up", &[("instance", "one")]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "lookout_exporter_targets", &[]), Some(1.0));

    // The removed target is no longer probed.
    let hits = two.hits();
    let before = one.hits();
    eventually("the remaining target probed again", 100, || async {
        (one.hits() >= before + 3).then_some(())
    })
    .await;
    assert!(two.hits() <= hits + 1, "removed target still probed");
    exporter.shutdown().await;
}
