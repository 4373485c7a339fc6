//! `/probe` and unix sockets: a path is refused unless it is a configured target or listed
//! in `probe_policy.allowed_unix_sockets`, with or without the rest of the policy.

mod server_support;

use server_support::{Exporter, get, sample};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A PING/PONG unix socket server in a fresh directory.
fn pong_socket(dir: &tempfile::TempDir, name: &str) -> String {
    let path = dir.path().join(name);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = s.into_split();
                let mut lines = BufReader::new(read).lines();
                if let Ok(Some(line)) = lines.next_line().await {
                    if line == "PING" {
                        let _ = write.write_all(b"PONG\n").await;
                    }
                }
            });
        }
    });
    path.display().to_string()
}

const PING: &str = "modules:\n  ping:\n    prober: unix\n    unix:\n      query_response:\n        - send: PING\n        - expect: PONG\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_need_configuring_or_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let configured = pong_socket(&dir, "configured.sock");
    let listed = pong_socket(&dir, "listed.sock");
    let other = pong_socket(&dir, "other.sock");
    let config = format!(
        "{PING}targets:\n  - name: local\n    module: ping\n    target: '{configured}'\n    interval: 1h\nprobe_policy:\n  allowed_unix_sockets: ['{listed}']\n"
    );
    let exporter = Exporter::start(&config).await;
    let probe = |target: &str| format!("/probe?module=ping&target={target}");

    let reply = get(exporter.addr, &probe(&other)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains("allowed_unix_sockets"),
        "{}",
        reply.body
    );
    for allowed in [&configured, &listed] {
        let reply = get(exporter.addr, &probe(allowed)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(
            sample(&reply.body, "probe_success", &[]),
            Some(1.0),
            "{}",
            reply.body
        );
    }
    let metrics = exporter.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "lookout_exporter_probe_requests_refused_total",
            &[("reason", "unix_socket")]
        ),
        Some(1.0),
        "{metrics}"
    );
    exporter.shutdown().await;

    // No policy at all: still refused.
    let exporter = Exporter::start(PING).await;
    let reply = get(exporter.addr, &probe(&other)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    exporter.shutdown().await;
}
