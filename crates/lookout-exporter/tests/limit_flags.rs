//! The exporter-wide limit flags in a running exporter: `/probe` and the continuous targets
//! both obey `--probe.max-redirects`; `--config.max-file-size` refuses a file at start-up and
//! on reload (the running configuration stays) and counts it; out-of-range values stop the
//! start with an error naming the flag. The probers' own behaviour under each limit is in
//! `probe_http.rs` (redirects) and `fault_targets.rs` (response heads).

mod common;
mod server_support;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use lookout_exporter::{RunOptions, Server};
use server_support::{Exporter, MODULES, eventually, get as http_get, post, sample};

/// A loopback server where `/hop/{n}` takes `n` redirects to reach 200 "ok".
async fn redirect_chain() -> std::net::SocketAddr {
    common::serve(Router::new().route(
        "/hop/{n}",
        get(|Path(n): Path<u32>| async move {
            if n == 0 {
                "ok".into_response()
            } else {
                Redirect::to(&format!("/hop/{}", n - 1)).into_response()
            }
        }),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_and_continuous_targets_obey_the_redirect_flag() {
    let chain = redirect_chain().await;
    let config = format!(
        "{MODULES}targets:
  - name: long_chain
    module: http_2xx
    target: http://{chain}/hop/3
    interval: 100ms
  - name: short_chain
    module: http_2xx
    target: http://{chain}/hop/2
    interval: 100ms
"
    );
    let exporter = Exporter::start_with(&config, |o| o.limits.max_redirects = 2).await;

    // /probe: two redirects pass, three do not.
    let ok = http_get(
        exporter.addr,
        &format!("/probe?module=http_2xx&target=http://{chain}/hop/2"),
    )
    .await;
    assert_eq!(
        sample(&ok.body, "probe_success", &[]),
        Some(1.0),
        "{}",
        ok.body
    );
    let refused = http_get(
        exporter.addr,
        &format!("/probe?module=http_2xx&target=http://{chain}/hop/3&debug=true"),
    )
    .await;
    assert!(
        refused
            .body
            .contains("limit of 2 redirects (--probe.max-redirects)"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("probe_success 0"), "{}", refused.body);

    // The continuous targets: the long chain is down for the limit, the short one up.
    let metrics = eventually("both targets probed", 100, || async {
        let m = exporter.metrics().await;
        let long = sample(&m, "up", &[("instance", "long_chain")]);
        let short = sample(&m, "up", &[("instance", "short_chain")]);
        (long == Some(0.0) && short == Some(1.0)).then_some(m)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_target_probe_failure_info",
            &[("instance", "long_chain"), ("reason", "too_many_redirects")]
        ),
        Some(1.0),
        "{metrics}"
    );
    // Counted once per failed probe by reason, and not as a limit hit of its own.
    assert!(
        sample(
            &metrics,
            "lookout_exporter_probe_failures_total",
            &[("reason", "too_many_redirects")]
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lookout_exporter_limit_hits_total{limit=\"too_many_redirects\"}"),
        "{metrics}"
    );
    exporter.shutdown().await;
}

fn options_for(dir: &tempfile::TempDir, config: &str) -> RunOptions {
    let path = dir.path().join("exporter.yml");
    std::fs::write(&path, config).expect("write config");
    let mut options = RunOptions::new(&path);
    options.listen_address = "127.0.0.1:0".into();
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_over_the_size_flag_is_refused_at_start_and_on_reload() {
    // At start-up: the error names the file, the limit and the flag.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = options_for(&dir, MODULES);
    options.limits.max_config_file_bytes = 64;
    let e = Server::bind(options)
        .await
        .err()
        .expect("a file over the limit stops the start")
        .to_string();
    assert!(e.contains("exporter.yml"), "{e}");
    assert!(
        e.contains("larger than the 64-byte configuration file size limit"),
        "{e}"
    );
    assert!(e.contains("--config.max-file-size"), "{e}");

    // The same file under a limit it fits.
    let limit = MODULES.len() as u64 + 100;
    let exporter = Exporter::start_with(MODULES, |o| o.limits.max_config_file_bytes = limit).await;
    let hits = |m: &str| {
        sample(
            m,
            "lookout_exporter_limit_hits_total",
            &[("limit", "config_file_size")],
        )
    };
    let metrics = exporter.metrics().await;
    assert_eq!(hits(&metrics), Some(0.0), "present before the first hit");

    // On reload: refused, counted, and the running configuration stays.
    let padding = "#".repeat(200);
    exporter.write_config(&format!(
        "{MODULES}  only_tcp:\n    prober: tcp\n    timeout: 1s\n{padding}\n"
    ));
    let reply = post(exporter.addr, "/-/reload").await;
    assert_eq!(reply.status, 500);
    assert!(
        reply
            .body
            .contains(&format!("larger than the {limit}-byte configuration file size limit; raise --config.max-file-size")),
        "{}",
        reply.body
    );
    let metrics = exporter.metrics().await;
    assert_eq!(hits(&metrics), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_config_last_reload_successful",
            &[]
        ),
        Some(0.0)
    );
    let old = http_get(
        exporter.addr,
        "/probe?module=tcp_connect&target=127.0.0.1:1",
    )
    .await;
    assert_eq!(old.status, 200, "the old modules still serve: {}", old.body);
    let new = http_get(exporter.addr, "/probe?module=only_tcp&target=127.0.0.1:1").await;
    assert_eq!(new.status, 400, "the refused file's module is not loaded");

    // Back under the limit, the reload succeeds and the counter stays.
    exporter.write_config(&format!(
        "{MODULES}  only_tcp:\n    prober: tcp\n    timeout: 1s\n"
    ));
    assert_eq!(post(exporter.addr, "/-/reload").await.status, 200);
    let new = http_get(exporter.addr, "/probe?module=only_tcp&target=127.0.0.1:1").await;
    assert_eq!(new.status, 200, "{}", new.body);
    assert_eq!(hits(&exporter.metrics().await), Some(1.0));
    exporter.shutdown().await;
}

/// A change to the default options.
type Tweak = fn(&mut RunOptions);

#[tokio::test]
async fn limits_out_of_range_stop_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(Tweak, &str); 3] = [
        (
            |o| o.limits.max_response_header_bytes = 100,
            "invalid --probe.max-response-header-bytes=100: must be between 8192 bytes",
        ),
        (
            |o| o.limits.max_response_header_fields = 0,
            "invalid --probe.max-response-header-fields=0: must be between 1 and 10000",
        ),
        (
            |o| o.limits.max_config_file_bytes = 0,
            "invalid --config.max-file-size=0: must be at least 1 byte",
        ),
    ];
    for (tweak, expected) in cases {
        let mut options = options_for(&dir, MODULES);
        tweak(&mut options);
        let e = Server::bind(options)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(expected), "{e}");
    }
}
