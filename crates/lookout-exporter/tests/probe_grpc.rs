//! The gRPC prober against the loopback health server of `grpc_support` (h2c and TLS), for
//! what the differential harness cannot ask blackbox_exporter 0.23: metadata (a later
//! release's setting), the message size bound, the deadline, and the `/probe` policy.

mod common;
mod grpc_support;

use std::time::Duration;

use common::*;
use lookout_exporter::limits::Limits;
use lookout_exporter::prober::{ProbeReport, ProbeRequest, run};

async fn servers() -> (grpc_support::Ports, TestPki) {
    let pki = pki(&[b"h2"]);
    let ports = grpc_support::start(Some(pki.server_config.clone()))
        .await
        .expect("listen");
    (ports, pki)
}

fn grpc(extra: &str) -> lookout_exporter::config::Module {
    module(&format!(
        "prober: grpc\ngrpc:\n  preferred_ip_protocol: ip4\n{extra}"
    ))
}

fn status(r: &ProbeReport, name: &str) -> Option<f64> {
    labeled(
        r,
        "probe_grpc_healthcheck_response",
        &[("serving_status", name)],
    )
}

#[tokio::test]
async fn serving_over_h2c() {
    let (ports, _pki) = servers().await;
    let r = probe(&ports.plain.to_string(), &grpc("")).await;
    assert_success(&r);
    assert_eq!(status(&r, "SERVING"), Some(1.0));
    for other in ["UNKNOWN", "NOT_SERVING", "SERVICE_UNKNOWN"] {
        assert_eq!(status(&r, other), Some(0.0), "{other}");
    }
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(0.0));
    assert_eq!(value(&r, "probe_grpc_ssl"), Some(0.0));
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
    assert!(labeled(&r, "probe_grpc_duration_seconds", &[("phase", "check")]).is_some());
    assert!(labeled(&r, "probe_grpc_duration_seconds", &[("phase", "resolve")]).is_some());
    // No certificate, no expiry: a 0 would fire every certificate-expiry alert.
    assert_eq!(value(&r, "probe_ssl_earliest_cert_expiry"), None);

    // A URL target and a named service.
    let url = format!("http://localhost:{}/ignored", ports.plain.port());
    let r = probe(&url, &grpc("  service: service1")).await;
    assert_success(&r);
}

#[tokio::test]
async fn answers_that_fail_the_probe() {
    let (ports, _pki) = servers().await;
    let target = ports.plain.to_string();
    for (service, reason, code, serving) in [
        ("down", "grpc_not_serving", 0.0, Some("NOT_SERVING")),
        (
            "service-unknown",
            "grpc_not_serving",
            0.0,
            Some("SERVICE_UNKNOWN"),
        ),
        ("seven", "grpc_not_serving", 0.0, Some("7")),
        ("nosuch", "grpc_status", 5.0, None),
        ("http-503", "grpc_status", 14.0, None),
        ("garbage", "grpc_response", 13.0, None),
        ("compressed", "grpc_response", 13.0, None),
        ("no-trailers", "grpc_response", 13.0, None),
        ("huge", "grpc_response", 8.0, None),
        ("auth", "grpc_status", 16.0, None),
    ] {
        let r = probe(&target, &grpc(&format!("  service: {service}"))).await;
        assert_failure(&r, reason);
        assert_eq!(value(&r, "probe_grpc_status_code"), Some(code), "{service}");
        if let Some(name) = serving {
            assert_eq!(status(&r, name), Some(1.0), "{service}");
        } else {
            assert_eq!(status(&r, "SERVING"), Some(0.0), "{service}");
        }
    }
    // No health service at all.
    let r = probe(&ports.bare.to_string(), &grpc("")).await;
    assert_failure(&r, "grpc_status");
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(12.0));
}

#[tokio::test]
async fn connection_failures_are_unavailable() {
    let (ports, _pki) = servers().await;
    let closed = closed_port().await;
    let r = probe(&closed.to_string(), &grpc("")).await;
    assert_failure(&r, "connection_refused");
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(14.0));
    assert_eq!(status(&r, "SERVING"), Some(0.0));

    // h2c to the TLS port: no HTTP/2 connection.
    let tls = ports.tls.expect("tls").to_string();
    let r = probe(&tls, &grpc("")).await;
    assert_failure(&r, "http_request");
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(14.0));

    // Unresolvable: no call, so no serving statuses and status code 0, as blackbox_exporter.
    let r = probe("nonexistent.invalid:80", &grpc("")).await;
    assert_failure(&r, "dns_resolution");
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(0.0));
    assert_eq!(status(&r, "SERVING"), None);
}

#[tokio::test]
async fn tls_with_a_ca_and_certificate_metrics() {
    let (ports, pki) = servers().await;
    let target = format!("localhost:{}", ports.tls.expect("tls").port());
    let ca = format!(
        "  tls: true\n  tls_config:\n    ca_file: '{}'",
        pki.ca_file.display()
    );
    let r = probe(&target, &grpc(&ca)).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_grpc_ssl"), Some(1.0));
    assert_eq!(
        value(&r, "probe_ssl_earliest_cert_expiry"),
        Some(pki.leaf_not_after as f64)
    );
    let tls13 = labeled(&r, "probe_tls_version_info", &[("version", "TLS 1.3")]);
    assert_eq!(tls13, Some(1.0));
    let names: Vec<&str> = r.recorder.metrics.iter().map(|m| m.name.as_str()).collect();
    assert!(names.contains(&"probe_ssl_last_chain_info"), "{names:?}");
    // blackbox_exporter's gRPC prober publishes neither.
    for absent in [
        "probe_tls_cipher_info",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
    ] {
        assert!(!names.contains(&absent), "{absent}");
    }

    // Without the CA the handshake fails: UNAVAILABLE, no certificate metrics.
    let r = probe(&target, &grpc("  tls: true")).await;
    assert_failure(&r, "tls_handshake");
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(14.0));
    assert_eq!(value(&r, "probe_grpc_ssl"), Some(0.0));
    assert_eq!(value(&r, "probe_ssl_earliest_cert_expiry"), None);

    // insecure_skip_verify, and a failing answer still reports the TLS it came over.
    let insecure = "  tls: true\n  tls_config: {insecure_skip_verify: true}\n  service: nosuch";
    let r = probe(&target, &grpc(insecure)).await;
    assert_failure(&r, "grpc_status");
    assert_eq!(value(&r, "probe_grpc_ssl"), Some(1.0));
    assert!(value(&r, "probe_ssl_earliest_cert_expiry").is_some());
}

#[tokio::test]
async fn metadata_is_sent_as_headers() {
    let (ports, _pki) = servers().await;
    let m = grpc(
        "  service: auth\n  metadata:\n    authorization: ['Bearer sesame']\n    x-tag: [a, b]\n    blob-bin: ['é']",
    );
    assert_success(&probe(&ports.plain.to_string(), &m).await);
}

#[tokio::test]
async fn ipv6_literal_targets_are_reached() {
    let (ports, _pki) = servers().await;
    let Some(v6) = ports.plain6 else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let r = probe(&format!("[::1]:{}", v6.port()), &module("prober: grpc")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(6.0));
}

#[tokio::test]
async fn without_a_grpc_section_there_is_no_fallback_to_ipv4() {
    let (ports, _pki) = servers().await;
    let target = format!("localhost:{}", ports.plain.port());
    let r = probe(&target, &module("prober: grpc")).await;
    assert_failure(&r, "dns_resolution");
    assert_success(&probe(&target, &module("prober: grpc\ngrpc: {}")).await);
}

#[tokio::test]
async fn the_deadline_ends_a_slow_call_as_deadline_exceeded() {
    let (ports, _pki) = servers().await;
    let started = std::time::Instant::now();
    let r = probe_with(
        &ports.plain.to_string(),
        &grpc("  service: slow"),
        None,
        Duration::from_millis(300),
    )
    .await;
    assert_failure(&r, "timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(value(&r, "probe_grpc_status_code"), Some(4.0));
}

#[tokio::test]
async fn the_probe_policy_is_checked_at_connect_time() {
    let (ports, _pki) = servers().await;
    let config = lookout_exporter::config::Config::parse(
        "modules:\n  g: {prober: grpc, grpc: {}}\nprobe_policy:\n  allowed_targets: ['10.0.0.0/8']\n",
        "p.yml",
    )
    .expect("config");
    let r = run(&ProbeRequest {
        target: &format!("localhost:{}", ports.plain.port()),
        module: &config.modules["g"],
        hostname: None,
        timeout: Duration::from_secs(5),
        limits: Limits::default(),
        policy: Some(&config.probe_policy),
    })
    .await;
    assert_failure(&r, "not_allowed");
    assert_eq!(status(&r, "SERVING"), None, "no call was made");
}

#[test]
fn bad_metadata_is_refused_where_it_is_written() {
    let text =
        "modules:\n  g:\n    prober: grpc\n    grpc:\n      metadata:\n        X-Upper: [v]\n";
    let e = lookout_exporter::config::Config::parse(text, "m.yml")
        .expect_err("uppercase key")
        .to_string();
    assert!(e.starts_with("m.yml:5:7: "), "{e}");
    assert!(e.contains("\"X-Upper\""), "{e}");
    let e = lookout_exporter::config::Config::parse(
        "modules:\n  g:\n    prober: grpc\n    grpc:\n      servce: x\n",
        "m.yml",
    )
    .expect_err("unknown field")
    .to_string();
    assert!(e.contains("m.yml:5:"), "{e}");
}
