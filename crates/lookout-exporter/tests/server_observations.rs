//! What continuous DNS and HTTPS targets publish on `/metrics`: per-nameserver resolution
//! histograms, the answers of resolvers that disagree, and certificate expiry.

#[path = "common/mod.rs"]
mod common;
mod server_support;

use std::net::Ipv4Addr;

use server_support::{Exporter, MODULES, eventually, nameserver, sample};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolvers_that_disagree_are_visible_side_by_side() {
    let first = nameserver(Ipv4Addr::new(192, 0, 2, 1)).await;
    let second = nameserver(Ipv4Addr::new(192, 0, 2, 2)).await;
    let config = format!(
        "{MODULES}targets:
  - name: resolver-a
    module: dns_shop
    target: {first}
    interval: 200ms
    labels:
      job: dns-watch
      team: edge
      domain: clashes-with-the-series-own
  - name: resolver-b
    module: dns_shop
    target: {second}
    interval: 200ms
"
    );
    let exporter = Exporter::start(&config).await;
    let first_ns = first.to_string();
    let second_ns = second.to_string();
    let metrics = eventually("both resolvers answered", 100, || async {
        let m = exporter.metrics().await;
        (sample(&m, "up", &[("instance", "resolver-a")]) == Some(1.0)
            && sample(&m, "up", &[("instance", "resolver-b")]) == Some(1.0))
        .then_some(m)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "dns_answer_info",
            &[
                ("job", "dns-watch"),
                ("instance", "resolver-a"),
                ("team", "edge"),
                ("domain", "shop.example.test"),
                ("nameserver", &first_ns),
                ("answer", "192.0.2.1"),
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "dns_answer_info",
            &[
                // No `job` label: the module's name, as on up{job,instance}.
                ("job", "dns_shop"),
                ("instance", "resolver-b"),
                ("nameserver", &second_ns),
                ("answer", "192.0.2.2"),
            ]
        ),
        Some(1.0),
        "{metrics}"
    );
    // A target label named like one of the series' own labels gives way to it (and is kept
    // on the series that have no label of that name).
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("dns_answer_info{"))
    {
        assert!(!line.contains("clashes-with"), "{line}");
        assert_eq!(line.matches("domain=").count(), 1, "{line}");
    }
    for (job, instance, ns) in [
        ("dns-watch", "resolver-a", &first_ns),
        ("dns_shop", "resolver-b", &second_ns),
    ] {
        assert!(
            sample(
                &metrics,
                "dns_resolution_duration_seconds_count",
                &[("job", job), ("instance", instance), ("nameserver", ns)]
            )
            .is_some_and(|c| c >= 1.0),
            "{metrics}"
        );
    }
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_targets_publish_their_certificate_expiry() {
    let pki = common::pki(&[b"http/1.1"]);
    let addr = common::serve_https(pki.server_config.clone()).await;
    let config = format!(
        "modules:
  https_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
      fail_if_not_ssl: true
      tls_config:
        ca_file: {ca}
targets:
  - name: secure
    module: https_2xx
    target: https://{addr}/
    interval: 200ms
",
        ca = pki.ca_file.display(),
    );
    let exporter = Exporter::start(&config).await;
    let metrics = eventually("the HTTPS target up", 100, || async {
        let m = exporter.metrics().await;
        (sample(&m, "up", &[("instance", "secure")]) == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "probe_ssl_earliest_cert_expiry",
            &[("job", "https_2xx"), ("instance", "secure")]
        ),
        Some(pki.leaf_not_after as f64),
        "{metrics}"
    );
    exporter.shutdown().await;
}
