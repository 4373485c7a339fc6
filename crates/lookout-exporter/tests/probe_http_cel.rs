//! `fail_if_body_json_matches_cel` / `fail_if_body_json_not_matches_cel` against a loopback
//! server, and their configuration errors.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use lookout_exporter::config::Config;
use lookout_exporter::limits::Limits;

/// The expression of blackbox_exporter's example `http_json_cel_match` module.
const EXAMPLE: &str = "body.foo == 'bar' && body.baz.startsWith('q')";

async fn app() -> std::net::SocketAddr {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let huge = format!("{{\"items\": [{}0]}}", "0,".repeat(200_000));
    serve(
        Router::new()
            .route(
                "/json",
                get(|| async { r#"{ "foo": "bar", "baz": "qux" }"# }),
            )
            .route(
                "/other",
                get(|| async { r#"{ "foo": "baz", "baz": "qux" }"# }),
            )
            .route("/text", get(|| async { "hello, lookout" }))
            .route("/deep", get(move || async move { deep }))
            .route("/huge", get(move || async move { huge })),
    )
    .await
}

fn not_matches(expr: &str) -> String {
    format!("prober: http\nhttp:\n  fail_if_body_json_not_matches_cel: \"{expr}\"")
}

#[tokio::test]
async fn blackbox_example_expression() {
    let addr = app().await;
    let m = module(&not_matches(EXAMPLE));
    let r = probe(&format!("http://{addr}/json"), &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_failed_due_to_cel"), Some(0.0));

    let r = probe(&format!("http://{addr}/other"), &m).await;
    assert_failure(&r, "body_cel");
    assert_eq!(value(&r, "probe_failed_due_to_cel"), Some(1.0));

    let matches = module(&format!(
        "prober: http\nhttp:\n  fail_if_body_json_matches_cel: \"{EXAMPLE}\""
    ));
    assert_failure(
        &probe(&format!("http://{addr}/json"), &matches).await,
        "body_cel",
    );
    assert_success(&probe(&format!("http://{addr}/other"), &matches).await);

    // Only modules with an expression publish the gauge, as blackbox_exporter.
    let plain = module("prober: http");
    let r = probe(&format!("http://{addr}/json"), &plain).await;
    assert_eq!(value(&r, "probe_failed_due_to_cel"), None);
}

#[tokio::test]
async fn bodies_that_are_not_json_or_too_deep_fail() {
    let addr = app().await;
    let m = module(&not_matches("true"));
    let r = probe(&format!("http://{addr}/text"), &m).await;
    assert_failure(&r, "body_cel");
    assert_eq!(value(&r, "probe_failed_due_to_cel"), Some(1.0));
    let r = probe(&format!("http://{addr}/deep"), &m).await;
    assert_failure(&r, "body_cel");
    assert_eq!(value(&r, "probe_failed_due_to_cel"), Some(1.0));
}

#[tokio::test]
async fn the_body_is_bounded_as_for_regexps() {
    let addr = app().await;
    let m = module(&not_matches("size(body.items) > 0"));
    let limits = Limits {
        max_regexp_body_bytes: 1024,
        ..Limits::default()
    };
    let r = probe_limited(&format!("http://{addr}/huge"), &m, limits).await;
    assert_failure(&r, "body_too_large");
    assert_eq!(value(&r, "probe_failed_due_to_cel"), Some(1.0));
    assert_success(&probe(&format!("http://{addr}/huge"), &m).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quadratic_expression_ends_at_the_deadline() {
    let addr = app().await;
    let m = module(&not_matches(
        "body.items.all(x, body.items.exists(y, x != y) || true)",
    ));
    let started = Instant::now();
    let r = probe_with(
        &format!("http://{addr}/huge"),
        &m,
        None,
        Duration::from_millis(1500),
    )
    .await;
    assert_failure(&r, "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The async workers stayed free: a cheap probe right after is answered at once.
    let cheap = module(&not_matches(EXAMPLE));
    let started = Instant::now();
    assert_success(&probe(&format!("http://{addr}/json"), &cheap).await);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

fn config_error(http: &str) -> String {
    let text = format!("modules:\n  m:\n    prober: http\n    http:\n{http}");
    match Config::parse(&text, "exporter.yml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_expressions_are_config_errors_with_their_position() {
    let e = config_error("      fail_if_body_json_matches_cel: \"body.foo ==\"\n");
    assert!(e.contains("exporter.yml:5:"), "{e}");
    assert!(e.contains("invalid CEL expression"), "{e}");

    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    let e = config_error(&format!(
        "      fail_if_body_json_not_matches_cel: \"{deep}\"\n"
    ));
    assert!(
        e.contains("exporter.yml:5:") && e.contains("40 deep"),
        "{e}"
    );

    let long = format!("body.a == '{}'", "x".repeat(5000));
    let e = config_error(&format!(
        "      fail_if_body_json_not_matches_cel: \"{long}\"\n"
    ));
    assert!(
        e.contains("exporter.yml:5:") && e.contains("bytes long"),
        "{e}"
    );

    let e = config_error("      fail_if_body_json_matches_cel: [1]\n");
    assert!(e.contains("exporter.yml:5:"), "{e}");
}

#[test]
fn blackbox_head_example_module_loads() {
    let text = format!(
        "modules:\n  http_json_cel_match:\n    prober: http\n    timeout: 5s\n    http:\n      \
         method: GET\n      fail_if_body_json_not_matches_cel: \"{EXAMPLE}\" \
         # {{ \"foo\": \"bar\", \"baz\": \"qux\" }}\n"
    );
    let config = Config::parse(&text, "example-head.yml").unwrap();
    let http = &config.modules["http_json_cel_match"].http;
    assert_eq!(
        http.fail_if_body_json_not_matches_cel
            .as_ref()
            .map(|p| p.source()),
        Some(EXAMPLE)
    );
}
