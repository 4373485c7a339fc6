//! `target_groups:` (discovered targets probed continuously) and `--targets.shard`.

mod server_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lookout_exporter::RunOptions;
use lookout_exporter::reload::{Exporter as Loaded, spawn_discovery_watcher};
use server_support::{Exporter, MODULES, Target, eventually};

fn group_config(file: &str) -> String {
    format!(
        "{MODULES}target_groups:
  - name: web
    module: http_quick
    interval: 200ms
    file_sd_configs: [{{files: ['{file}'], refresh_interval: 1h}}]
    relabel_configs:
      - source_labels: [__address__]
        regex: '(.*)'
        target_label: __param_target
        replacement: 'http://$1/'
      - source_labels: [name]
        target_label: instance
      - source_labels: [probe]
        regex: '(.+)'
        target_label: __param_module
"
    )
}

async fn wait_names(e: &Loaded, want: &[&str]) {
    for _ in 0..300 {
        let names: Vec<String> = e.scheduler.snapshot().keys().cloned().collect();
        if names == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "targets {:?}, wanted {want:?}",
        e.scheduler.snapshot().keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_targets_follow_the_file_and_unchanged_ones_keep_their_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yml");
    std::fs::write(
        &targets,
        "- targets: ['127.0.0.1:1']\n  labels: {name: a, team: x}\n",
    )
    .unwrap();
    let config = dir.path().join("exporter.yml");
    std::fs::write(&config, group_config("targets.yml")).unwrap();
    let mut options = RunOptions::new(&config);
    options.discovery.file_poll_interval = Duration::from_millis(30);
    let e = Arc::new(Loaded::load(&options).unwrap());
    let watcher = spawn_discovery_watcher(e.clone());
    e.start();
    wait_names(&e, &["a"]).await;
    let a = e.scheduler.snapshot()["a"].clone();
    assert_eq!(a.target.target, "http://127.0.0.1:1/");
    assert_eq!(a.target.module, "http_quick");
    assert_eq!(a.target.labels.get("team").map(String::as_str), Some("x"));

    // A new target (choosing its module); `a` keeps its slot, so its schedule and state.
    std::fs::write(
        &targets,
        "- targets: ['127.0.0.1:1']\n  labels: {name: a, team: x}\n- targets: ['127.0.0.1:2']\n  labels: {name: b, probe: http_2xx}\n",
    )
    .unwrap();
    wait_names(&e, &["a", "b"]).await;
    assert!(Arc::ptr_eq(&a, &e.scheduler.snapshot()["a"]));
    assert_eq!(e.scheduler.snapshot()["b"].target.module, "http_2xx");

    // A broken file keeps the last good targets.
    std::fs::write(&targets, "- targets: [unclosed\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_names(&e, &["a", "b"]).await;

    // `a` goes away.
    std::fs::write(
        &targets,
        "- targets: ['127.0.0.1:2']\n  labels: {name: b, probe: http_2xx}\n",
    )
    .unwrap();
    wait_names(&e, &["b"]).await;
    watcher.abort();
    e.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_probe_every_target_exactly_once() {
    let target = Target::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    let discovered: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"targets":["{}"],"labels":{{"name":"d{i}"}}}}"#,
                target.addr
            )
        })
        .collect();
    std::fs::write(&file, format!("[{}]", discovered.join(","))).unwrap();
    let mut config = group_config(&file.display().to_string());
    config.push_str("targets:\n");
    for i in 0..6 {
        config.push_str(&format!(
            "  - {{name: s{i}, module: http_quick, target: '{}', interval: 200ms}}\n",
            target.url("/")
        ));
    }
    let mut all: BTreeSet<String> = (0..12).map(|i| format!("d{i}")).collect();
    all.extend((0..6).map(|i| format!("s{i}")));

    let mut exporters = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3").parse().unwrap();
        exporters.push(
            Exporter::start_with(&config, |o| {
                o.shard = Some(shard);
                o.discovery.file_poll_interval = Duration::from_millis(50);
            })
            .await,
        );
    }
    let probed = eventually("every target probed by some shard", 600, || async {
        let mut per_shard = Vec::new();
        for e in &exporters {
            let m = e.metrics().await;
            let names: BTreeSet<String> = m
                .lines()
                .filter(|l| l.starts_with("up{"))
                .filter_map(|l| {
                    let rest = l.split("instance=\"").nth(1)?;
                    Some(rest.split('"').next()?.to_string())
                })
                .collect();
            per_shard.push(names);
        }
        let union: BTreeSet<String> = per_shard.iter().flatten().cloned().collect();
        (union == all).then_some(per_shard)
    })
    .await;
    let total: usize = probed.iter().map(BTreeSet::len).sum();
    assert_eq!(
        total,
        all.len(),
        "a target is probed by two shards: {probed:?}"
    );
    assert!(probed.iter().all(|s| !s.is_empty()), "{probed:?}");
    for e in exporters {
        e.shutdown().await;
    }
}

#[path = "../../lookout-discovery/tests/kubernetes/replay.rs"]
mod replay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_services_become_probe_targets_and_follow_watch_events() {
    let api = replay::Replay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("exporter.yml");
    std::fs::write(
        &config,
        format!(
            "{MODULES}target_groups:
  - name: k8s
    module: tcp_connect
    interval: 1h
    kubernetes_sd_configs:
      - role: service
        api_server: {}
        namespaces: {{names: [default]}}
    relabel_configs:
      - source_labels: [__meta_kubernetes_service_name, __meta_kubernetes_service_port_name]
        separator: '-'
        target_label: instance
",
            api.url()
        ),
    )
    .unwrap();
    let e = Arc::new(Loaded::load(&RunOptions::new(&config)).unwrap());
    let watcher = spawn_discovery_watcher(e.clone());
    e.start();
    wait_names(&e, &["web-http", "web-metrics"]).await;
    assert_eq!(
        e.scheduler.snapshot()["web-http"].target.target,
        "web.default.svc:80"
    );
    // The service loses a port (once the watch is open).
    for _ in 0..200 {
        if !api.calls("services").1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut svc = replay::fixture("services.json")["items"][0].clone();
    svc["metadata"]["resourceVersion"] = "2001".into();
    svc["spec"]["ports"].as_array_mut().unwrap().truncate(1);
    api.push("services", replay::event("MODIFIED", &svc));
    wait_names(&e, &["web-http"]).await;
    watcher.abort();
    e.stop();
}
